/**
 * Shared by the end-to-end tests in the lab: the namespaces present, sha256 helpers, temporary
 * directories and random files, the gateway (`tapgate run` from the sources, tsx) started in a lab
 * and its statistics (SIGUSR1), a python http.server, polling until a service answers, where two
 * contents first differ, and the replace-rule text whose patterns fall across segment and
 * GSO-frame boundaries.
 */
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, createReadStream, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { labExec, labKill, labSpawn, labStateDir, labUp, type LabInfo, type LabOptions, type LabRole } from '../../src/lab/lab.js';
import { REPO } from '../lab/e2e-env.js';

/** The CLI entry point, run from the sources (so the tests do not depend on a fresh dist/). */
export const MAIN = join(REPO, 'src/cli/main.ts');

export const sha = (b: Uint8Array | string): string => createHash('sha256').update(b).digest('hex');

export const shaFile = (path: string): Promise<string> =>
  new Promise((res, rej) => {
    const h = createHash('sha256');
    createReadStream(path).on('data', (c) => h.update(c)).on('end', () => res(h.digest('hex'))).on('error', rej);
  });

export function netnsList(): string[] {
  return spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout.split('\n').map((l) => l.split(' ')[0]!).filter(Boolean);
}

/** A new temporary directory, world-readable (the lab's servers run as other users). */
export function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  chmodSync(dir, 0o755);
  return dir;
}

/** Writes `size` random bytes to `path` (with `mode` if given) and returns them. */
export function randomFile(path: string, size: number, mode?: number): Buffer<ArrayBuffer> {
  const data = randomBytes(size);
  writeFileSync(path, data);
  if (mode !== undefined) chmodSync(path, mode);
  return data;
}

/** `tapgate run` between the lab's TAPs tap-c and tap-s, from the sources (`env`: set for it). */
export function gatewayArgv(config: string, extra: string[] = [], env: Record<string, string> = {}): string[] {
  const vars = Object.entries(env).map(([k, v]) => `${k}=${v}`);
  return [...(vars.length > 0 ? ['env', ...vars] : []), process.execPath, '--import', 'tsx', MAIN, 'run', '--tap', 'tap-c', '--tap', 'tap-s', '--config', config, ...extra];
}

/** The lab `prefix` with the gateway running `config`, waiting until it has attached both TAPs. */
export function labUpWithGateway(prefix: string, config: string, extra: string[] = [], opts: Omit<LabOptions, 'prefix' | 'gatewayCommand'> = {}): Promise<LabInfo> {
  return labUp({ prefix, gatewayCommand: gatewayArgv(config, extra), cwd: REPO, attachTimeoutMs: 30_000, ...opts });
}

/** Stops the lab's gateway and starts it again with another config or options (same lab). */
export async function restartGateway(prefix: string, config: string, extra: string[] = [], env: Record<string, string> = {}): Promise<LabInfo> {
  await labKill(prefix, 'gateway');
  return labUp({ prefix, gatewayCommand: gatewayArgv(config, extra, env), cwd: REPO, attachTimeoutMs: 30_000 });
}

export type GatewayStats = Record<string, Record<string, any>>;

/** Gateway pids whose 'gateway running' line was seen (gatewayStats asks each once). */
const seenRunning = new Set<string>();

/**
 * Waits until the gateway `pid` logged that it runs: a SIGUSR1 before finds the listener that
 * keeps Node's inspector off and prints nothing (src/cli/signals.ts). The lab is up once the TAPs
 * are attached, before the warm-up ends; under --queues a queue process may already forward
 * while another warms up and the supervisor waits for it.
 */
function awaitRunning(log: string, pid: number): void {
  const key = `${log}:${pid}`;
  if (seenRunning.has(key)) return;
  const end = Date.now() + 30_000;
  const mine = (line: string): boolean => line.includes(`"pid":${pid},`) && line.includes('"msg":"gateway running');
  while (!readFileSync(log, 'utf8').split('\n').some(mine)) {
    if (Date.now() > end) throw new Error(`the gateway (pid ${pid}) did not log that it runs within 30 s; log:\n${readFileSync(log, 'utf8').slice(-3000)}`);
    spawnSync('sleep', ['0.05']);
  }
  seenRunning.add(key);
}

/**
 * The gateway's statistics line, printed on SIGUSR1 into the lab's gateway.log once it runs. The
 * pid is read from the lab's gateway.pid unless given.
 */
export function gatewayStats(prefix: string, pid?: number): GatewayStats {
  const target = pid ?? (JSON.parse(readFileSync(join(labStateDir(prefix), 'gateway.pid'), 'utf8')).pid as number);
  const log = join(labStateDir(prefix), 'gateway.log');
  awaitRunning(log, target);
  const before = readFileSync(log, 'utf8').length;
  process.kill(target, 'SIGUSR1');
  const end = Date.now() + 5000;
  while (Date.now() < end) {
    const text = readFileSync(log, 'utf8').slice(before);
    // Only whole lines: the gateway may be in the middle of writing the statistics line.
    const lines = text.split('\n');
    lines.pop();
    for (const line of lines) {
      if (line.startsWith('{"uptimeS"')) return JSON.parse(line) as GatewayStats;
    }
    spawnSync('sleep', ['0.05']);
  }
  throw new Error(`the gateway printed no statistics on SIGUSR1; log:\n${readFileSync(log, 'utf8').slice(-3000)}`);
}

/** python3 -m http.server in the lab's server namespace (process name `http<port>`). */
export function startHttpServer(prefix: string, bind: string, port: number | string, dir: string): number {
  return labSpawn(prefix, 'server', `http${port}`, ['python3', '-m', 'http.server', String(port), '--bind', bind, '--directory', dir]);
}

/**
 * Runs `attempt` every `intervalMs` until `done` says so; after `timeoutMs` throws the error
 * `fail` describes. Returns the successful attempt's result.
 */
export async function waitUntil<R>(timeoutMs: number, intervalMs: number, attempt: () => Promise<R>, done: (r: R) => boolean, fail: (r: R) => string): Promise<R> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const r = await attempt();
    if (done(r)) return r;
    if (Date.now() > end) throw new Error(fail(r));
    await new Promise((res) => setTimeout(res, intervalMs));
  }
}

/**
 * Waits until `url` answers 200 to curl run inside the lab's server namespace (not through the
 * gateway: no refused connection crosses it while the server starts).
 */
export function waitForLocalServer(prefix: string, url: string, timeoutMs = 15_000): Promise<unknown> {
  return waitUntil(timeoutMs, 100,
    () => labExec(prefix, 'server', ['curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '2', url]),
    (r) => r.stdout === '200',
    (r) => `${url} does not answer in the server namespace: ${r.stdout} ${r.stderr}`);
}

/** Where `got` first differs from `exp` (latin1), with 20 bytes of context: for error messages. */
export function firstDifference(got: Uint8Array | string, exp: Uint8Array | string): string {
  const g = typeof got === 'string' ? got : Buffer.from(got).toString('latin1');
  const e = typeof exp === 'string' ? exp : Buffer.from(exp).toString('latin1');
  let i = 0;
  while (i < g.length && i < e.length && g[i] === e[i]) i++;
  return `lengths ${g.length}/${e.length}, first difference at byte ${i}: got ${JSON.stringify(g.slice(Math.max(0, i - 20), i + 20))}, expected ${JSON.stringify(e.slice(Math.max(0, i - 20), i + 20))}`;
}

/** The replace rule's patterns (see rewriteText). */
export const FIND_SHORT = 'needle-long-word';
export const WITH_SHORT = 'pin';
export const FIND_LONG = 'cat';
export const WITH_LONG = 'a much longer replacement text for cat';

/**
 * Text where the patterns fall everywhere, including across 1448-byte segments and GSO frames.
 * It starts with a space and ends with a whole pattern, so no match spans two copies of it.
 */
export function rewriteText(size: number): string {
  const parts: string[] = [];
  let n = 0;
  let i = 0;
  while (n < size) {
    // Filler of varying length walks the occurrences through every offset of a segment.
    const filler = 'x'.repeat((i * 37) % 1500) + ` ${i} `;
    const p = i % 3 === 0 ? FIND_SHORT : i % 3 === 1 ? FIND_LONG : `${FIND_LONG}${FIND_SHORT}`;
    parts.push(filler, p);
    n += filler.length + p.length;
    i++;
  }
  return parts.join('');
}

/** The replace agent picks the leftmost match; these patterns never overlap each other. */
export function expectedRewrite(s: string): string {
  return s.split(FIND_SHORT).join(WITH_SHORT).split(FIND_LONG).join(WITH_LONG);
}

/**
 * The TCP counters of a lab namespace's kernel: /proc/net/snmp `Tcp:` and /proc/net/netstat
 * `TcpExt:` by name (e.g. `EstabResets`, `TCPChallengeACK`), as that namespace counts them.
 */
export async function nsTcpCounters(prefix: string, role: LabRole): Promise<Record<string, number>> {
  const r = await labExec(prefix, role, ['cat', '/proc/net/snmp', '/proc/net/netstat']);
  if (r.code !== 0) throw new Error(`cannot read the TCP counters of ${role}: ${r.stderr}`);
  const out: Record<string, number> = {};
  const lines = r.stdout.split('\n').map((l) => l.trim().split(/\s+/));
  for (let i = 0; i + 1 < lines.length; i++) {
    const [key, ...names] = lines[i]!;
    const [key2, ...values] = lines[i + 1]!;
    // Each table is a line of names followed by a line of values under the same key.
    if (key !== key2 || (key !== 'Tcp:' && key !== 'TcpExt:') || !/^-?\d+$/.test(values[0] ?? '')) continue;
    names.forEach((n, j) => (out[n] = Number(values[j])));
    i++;
  }
  return out;
}

/**
 * A sink (python, run in the server namespace: `sink.py ADDR PORT`, IPv4 or IPv6): reads one
 * connection to EOF at a time and answers "<sha256> <length>\n".
 */
export const SINK_PY = `
import hashlib, socket, sys
s = socket.socket(socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(8)
while True:
    c, _ = s.accept()
    h = hashlib.sha256(); n = 0
    while True:
        d = c.recv(1 << 16)
        if not d: break
        h.update(d); n += len(d)
    c.sendall(("%s %d\\n" % (h.hexdigest(), n)).encode()); c.close()
`;

/**
 * Sends a file to a sink, half-closes, prints its answer: `send.py ADDR PORT FILE [CUTS]`. With
 * CUTS (a JSON file of chunk lengths) the file goes in those chunks, Nagle off and 2 ms apart,
 * so each chunk is a segment of its own: a pattern cut inside, segment by segment.
 */
export const SEND_PY = `
import json, socket, sys, time
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=60)
data = open(sys.argv[3], 'rb').read()
if len(sys.argv) > 4:
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    o = 0
    for n in json.load(open(sys.argv[4])):
        c.sendall(data[o:o + n]); o += n; time.sleep(0.002)
    c.sendall(data[o:])
else:
    c.sendall(data)
c.shutdown(socket.SHUT_WR)
r = b''
while True:
    d = c.recv(4096)
    if not d: break
    r += d
print(r.decode().strip())
`;

/** Chunk lengths that cut every occurrence of the patterns in `s` inside, at a position moving through it. */
export function cutsInsidePatterns(s: string): number[] {
  const at: number[] = [];
  for (const p of [FIND_SHORT, FIND_LONG]) {
    let i = 0;
    for (let k = s.indexOf(p); k >= 0; k = s.indexOf(p, k + 1), i++) at.push(k + 1 + (i % (p.length - 1)));
  }
  at.sort((a, b) => a - b);
  const out: number[] = [];
  let last = 0;
  for (const a of at) {
    if (a > last) out.push(a - last);
    last = Math.max(last, a);
  }
  return out;
}
