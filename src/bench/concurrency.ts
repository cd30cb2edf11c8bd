/**
 * Concurrency at scale, live (issue 18): many keep-alive connections through a rule, next to the
 * Node forwarder (the TAP addon forwarding every frame, no gateway) measured in the same run.
 *
 * - `wrk ×C`: `wrk -t2 -cC` (HTTP/1.1 keep-alive, `wrkSeconds`) against nginx (`return 200`) in
 *   the server namespace: requests/s, and the gateway's resident memory per live connection
 *   (the highest RSS sampled during the run minus the RSS before it, over C). Interleaved
 *   rounds, medians; each path started afresh per round and measured twice, the first wrk run
 *   after its start and a second ("warm") once the first's closes went through.
 * - `open ×N`: conngen.ts opens N connections (spread over four nginx ports, so that the
 *   client's source ports suffice), one request each, and keeps them open; then one more request
 *   on every one of them (requests/s over N live connections). RSS per tracked connection:
 *   after the opening minus before it, over N. The gateway's own count of active flows
 *   (`tapgate_flows_active` from `--metrics`) says they were all tracked.
 * - Table full (tapgate only; its `limits.maxConnections` is N): `extra` more connections are
 *   opened; each must fail (the SYN refused, counted in `tapgate_flows_table_full_total`) and
 *   every one of the N live connections must still answer afterwards.
 *
 * - The same for tapgate with a process per TAP queue (`run --queues N`, the lab's TAPs made
 *   multi-queue), its RSS the sum of its processes'; not the table-full part (a table each).
 *
 * Every answer's body is checked: the rule (`tapgate-ok` → `TAPGATE-OK`, same length so the
 * framing holds) must have rewritten it through tapgate, and nothing must have changed it
 * through the Node forwarder. Needs root, wrk, nginx, curl and a built dist/.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { gatewayArgv } from '../lab/gateway-argv.js';
import { LAB_IFACES, labDown, labExec, labKill, labSpawn, labStateDir, labUp, nsName, readPidFile } from '../lab/lab.js';
import { sleep, tail } from '../lab/sys.js';
import { fileLimit, nginxConf, NODEFWD_JS, parseWrk } from './live.js';
import { profiledArgv, readProfileDir, type ProfileEntry } from './profile.js';

const CONNGEN_JS = fileURLToPath(new URL('../../dist/bench/conngen.js', import.meta.url));
const SERVER = '10.200.0.2';
/** wrk's port, and the ports the opened connections are spread over (all under the rule). */
const WRK_PORT = 8080;
const OPEN_PORTS = [8081, 8082, 8083, 8084];
const METRICS = '127.0.0.1:9479';
/** What nginx answers, and what the rule makes of it (same length: the framing holds). */
const BODY = 'tapgate-ok\n';
const REWRITTEN = 'TAPGATE-OK\n';

export function concurrencyRuleYaml(maxConnections: number): string {
  return `# npm run bench (concurrency): a rule on every measured port, rewriting nginx's answer
limits:
  maxConnections: ${maxConnections}
rules:
  - match: { port: [${[WRK_PORT, ...OPEN_PORTS].join(', ')}] }
    agent: replace
    replace:
      - { find: "tapgate-ok", with: "TAPGATE-OK" }
`;
}

export interface ConcurrencyOptions {
  /** wrk's connections. Default 10,000. */
  wrkConns?: number;
  wrkSeconds?: number;
  /** Connections opened and held. Default 100,000. */
  open?: number;
  /** Connections tried beyond a full table. Default 1,000. */
  extra?: number;
  /** Also measure tapgate with `run --queues N` (1: not). Default 2. */
  queues?: number;
  /** How long conngen waits for a connection's answer (its SYN retransmitted included). Default 5 s. */
  answerTimeoutMs?: number;
  runs?: number;
  prefix?: string;
  log?: (line: string) => void;
  /** Measure (default true); false with `profile`: the profile alone. */
  measure?: boolean;
  /** After the measurements: a CPU profile of tapgate (rule, one process) under wrk ×`wrkConns` (10 s at least). */
  profile?: boolean;
  /** Where to keep the profile's .cpuprofile. */
  keepProfile?: string;
}

export interface ConcurrencyPath {
  path: string;
  /** wrk: requests/s per round (the first run after the path's start), and RSS per connection (bytes) per round. */
  wrkRps: number[];
  /** wrk: requests/s of the second run after each start (every close of the first went through). */
  wrkRpsWarm: number[];
  wrkRssPerConn: number[];
  wrkErrors: number;
  /** The opened connections. */
  opened: number;
  openFailed: number;
  openMs: number;
  /** Flows the gateway counted active with every connection open (tapgate only). */
  tracked?: number;
  /** Flows it counted active just before the opens (left by the warm-up; tapgate only). */
  trackedBefore?: number;
  rssPerTracked: number;
  /** One request on each open connection. */
  roundRps: number;
  roundFailed: number;
  /** Table full (tapgate only). */
  full?: { tried: number; failed: number; tableFull: number; answeredAfter: number; of: number };
}

export interface ConcurrencyReport {
  wrkConns: number;
  open: number;
  paths: ConcurrencyPath[];
  notes: string[];
  /** Top self time of tapgate under wrk (`profile`), with the requests/s of the profiled run. */
  profile?: { entries: ProfileEntry[]; rps: number };
}

/** Resident set of a process and its children (the queue processes of `run --queues`), bytes. */
function rssOf(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (m === null) throw new Error(`no VmRSS for pid ${pid}`);
  let kids: number[] = [];
  try {
    kids = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter((x) => x !== '').map(Number);
  } catch {
    /* no children file: the process alone */
  }
  return Number(m[1]) * 1024 + kids.reduce((a, k) => a + rssOf(k), 0);
}

interface GenAnswer {
  ok: number;
  failed: number;
  ms: number;
  open: number;
  why: Record<string, number>;
}

/** One conngen.ts process in the client namespace, driven one command at a time. */
class GenProcess {
  private readonly child: ChildProcessWithoutNullStreams;
  private readonly waiting: Array<(o: Record<string, unknown>) => void> = [];
  private stderr = '';

  constructor(prefix: string, expect: string, timeoutMs: number, parallel: number) {
    const argv = [process.execPath, CONNGEN_JS, SERVER, OPEN_PORTS.join(','), expect.replace(/\n/g, '\\n'), '--parallel', String(parallel), '--timeout-ms', String(timeoutMs)];
    this.child = spawn('ip', ['netns', 'exec', nsName(prefix, 'client'), ...argv], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.child.stderr.setEncoding('utf8').on('data', (d: string) => (this.stderr += d));
    createInterface({ input: this.child.stdout }).on('line', (l) => this.waiting.shift()?.(JSON.parse(l) as Record<string, unknown>));
    this.child.on('close', () => {
      for (const w of this.waiting.splice(0)) w({ error: `conngen exited: ${this.stderr.slice(-500)}` });
    });
  }

  ask(cmd: string): Promise<GenAnswer> {
    return new Promise((resolve, reject) => {
      this.waiting.push((o) => (typeof o.error === 'string' ? reject(new Error(o.error)) : resolve(o as never)));
      this.child.stdin.write(`${cmd}\n`);
    });
  }

  async quit(): Promise<void> {
    const closed = new Promise((r) => this.child.on('close', r));
    this.child.stdin.end('quit\n');
    await Promise.race([closed, new Promise((r) => setTimeout(r, 10_000))]);
    this.child.kill('SIGKILL');
  }
}

/**
 * Enough conngen.ts processes for `conns` connections: a process may not have more open files
 * than the hard limit (fileLimit), which root cannot raise without CAP_SYS_RESOURCE. Commands go
 * to all; answers are summed (ms: the slowest).
 */
class Generator {
  private readonly procs: GenProcess[];

  constructor(prefix: string, conns: number, expect: string, timeoutMs: number) {
    const n = Math.max(1, Math.ceil(conns / perProcess()));
    this.procs = Array.from({ length: n }, () => new GenProcess(prefix, expect, timeoutMs, Math.max(50, Math.floor(400 / n))));
  }

  /** `open N` split over the processes, or a command for each. */
  async ask(cmd: string): Promise<GenAnswer> {
    const m = /^open (\d+)$/.exec(cmd);
    const n = this.procs.length;
    const answers = await Promise.all(
      this.procs.map((p, i) => (m === null ? p.ask(cmd) : p.ask(`open ${Math.floor(Number(m[1]) / n) + (i < Number(m[1]) % n ? 1 : 0)}`))),
    );
    const sum: GenAnswer = { ok: 0, failed: 0, ms: 0, open: 0, why: {} };
    for (const a of answers) {
      sum.ok += a.ok;
      sum.failed += a.failed;
      sum.open += a.open;
      sum.ms = Math.max(sum.ms, a.ms);
      for (const [k, v] of Object.entries(a.why)) sum.why[k] = (sum.why[k] ?? 0) + v;
    }
    return sum;
  }

  async quit(): Promise<void> {
    await Promise.all(this.procs.map((p) => p.quit()));
  }
}

/** Connections per process (conngen, an nginx worker), under the file limit with room to spare. */
function perProcess(): number {
  return Math.max(100, Math.floor(fileLimit() * 0.75));
}

/** A metric of the gateway's `--metrics` endpoint (scraped from inside the gw namespace). */
async function metric(prefix: string, name: string): Promise<number> {
  const r = await labExec(prefix, 'gw', ['curl', '-s', '--max-time', '10', `http://${METRICS}/metrics`], { timeoutMs: 15_000 });
  const m = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(r.stdout);
  if (m === null) throw new Error(`metric ${name} not found at ${METRICS}: ${r.stdout.slice(0, 200)} ${r.stderr}`);
  return Number(m[1]);
}

/** How many TCP sockets are in each state, per namespace ("client: ESTAB 3, TIME-WAIT 100; server: …"), listeners left out. */
async function socketStates(prefix: string): Promise<string> {
  const out: string[] = [];
  for (const ns of ['client', 'server'] as const) {
    const r = await labExec(prefix, ns, ['ss', '-Htan'], { timeoutMs: 30_000 });
    const n = new Map<string, number>();
    for (const line of r.stdout.split('\n')) {
      const st = line.split(/\s+/)[0];
      if (st !== undefined && st !== '' && st !== 'LISTEN') n.set(st, (n.get(st) ?? 0) + 1);
    }
    out.push(`${ns}: ${[...n].map(([k, v]) => `${k} ${v}`).join(', ') || 'none'}`);
  }
  return out.join('; ');
}

/** The gateway's last log lines, without its periodic statistics. */
function gatewayLog(prefix: string): string {
  return tail(join(labStateDir(prefix), 'gateway.log'), 400).split('\n').filter((l) => !l.startsWith('{"uptimeS"')).slice(-20).join('\n');
}

/** wrk's figures, or an error with what it said. */
function parseWrkOrThrow(r: { stdout: string; stderr: string; code: number | null }): ReturnType<typeof parseWrk> {
  try {
    return parseWrk(r.stdout);
  } catch {
    throw new Error(`wrk failed (exit ${r.code}): ${(r.stderr || r.stdout).slice(0, 500)}`);
  }
}

export async function benchConcurrency(opts: ConcurrencyOptions = {}): Promise<ConcurrencyReport> {
  const wrkConns = opts.wrkConns ?? 10_000;
  const wrkSeconds = opts.wrkSeconds ?? 5;
  const open = opts.open ?? 100_000;
  const extra = opts.extra ?? 1000;
  const runs = opts.runs ?? 3;
  const P = opts.prefix ?? 'tgbconc';
  const log = opts.log ?? (() => {});
  const notes: string[] = [];
  let profile: ConcurrencyReport['profile'];
  if (wrkConns > perProcess()) throw new Error(`wrk ×${wrkConns}: more connections than one process may open here (hard file limit ${fileLimit()})`);
  const tmp = mkdtempSync(join(tmpdir(), 'tapgate-conc-'));
  const config = join(tmp, 'conc.yaml');
  writeFileSync(config, concurrencyRuleYaml(open));
  const queues = opts.queues ?? 2;
  const cases = [
    { path: 'Node forwarder GSO (addon only)', tapgate: false, queues: 1, argv: [process.execPath, NODEFWD_JS, LAB_IFACES.tapClient, LAB_IFACES.tapServer, '--vnet'] },
    { path: 'tapgate GSO, rule', tapgate: true, queues: 1, argv: gatewayArgv({ vnetHdr: true, config, metrics: METRICS }) },
    // A process per TAP queue (run --queues): each has its own table of maxConnections, so the
    // table-full part is not run for it.
    ...(queues > 1 ? [{ path: `tapgate GSO, rule, --queues ${queues}`, tapgate: true, queues, argv: gatewayArgv({ vnetHdr: true, config, metrics: METRICS, queues }) }] : []),
  ];
  const paths: ConcurrencyPath[] = cases.map((c) => ({
    path: c.path, wrkRps: [], wrkRpsWarm: [], wrkRssPerConn: [], wrkErrors: 0, opened: 0, openFailed: 0, openMs: 0, rssPerTracked: NaN, roundRps: NaN, roundFailed: 0,
  }));
  const gatewayPid = (): number => {
    const p = readPidFile(labStateDir(P), 'gateway');
    if (p === undefined || !p.alive) throw new Error('the gateway is not running');
    return p.pid;
  };
  const wrk = (conns: number, seconds: number) =>
    labExec(P, 'client', ['wrk', '-t2', `-c${conns}`, `-d${seconds}s`, '--timeout', '10s', `http://${SERVER}:${WRK_PORT}/`], {
      timeoutMs: (seconds + 60) * 1000,
    });
  /**
   * Waits until every connection's close went through (100,000 take a few seconds) before the gateway stops: a close cut off
   * leaves sockets whose retransmissions the next gateway would take up as mid-stream entries
   * (filling its table) and server sockets that answer a reused 4-tuple's SYN with an ACK. (A
   * first version expired closed connections after 1 s: the server's retransmitted FINs, after
   * the final ACKs were lost in the burst, then met no connection and were dropped as mid-stream
   * segments under the rule, and 15,000 server sockets stayed in LAST-ACK.)
   */
  const closed = async (): Promise<void> => {
    const t0 = Date.now();
    const deadline = t0 + 60_000;
    for (;;) {
      // The client's sockets all closed (TIME-WAIT), no client close in progress at the server.
      // (wrk leaves some server sockets established that its client never had; nginx closes them
      // 60 s later, and their FINs, for connections nobody tracks, stay in FIN-WAIT: not waited for.)
      let busy = 0;
      for (const [ns, closing] of [['client', /^(?!LISTEN|TIME-WAIT)\S/], ['server', /^(LAST-ACK|CLOSE-WAIT)/]] as const) {
        const r = await labExec(P, ns, ['ss', '-Htan'], { timeoutMs: 30_000 });
        for (const line of r.stdout.split('\n')) if (closing.test(line)) busy++;
      }
      if (busy === 0) {
        log(`closes done in ${Date.now() - t0} ms`);
        return;
      }
      if (Date.now() > deadline) {
        notes.push(`${busy} sockets still closing after 60 s`);
        return;
      }
      await sleep(500);
    }
  };
  const sh = (ns: string, ...kv: string[]) => labExec(P, ns as 'client', ['sysctl', '-q', '-w', ...kv]);
  try {
    await labDown(P);
    await labUp({ prefix: P });
    // Many connections: every source port, TIME_WAIT ports reused, deep accept queues.
    await sh('client', 'net.ipv4.ip_local_port_range=1024 65535', 'net.ipv4.tcp_tw_reuse=1');
    await sh('server', 'net.core.somaxconn=65535', 'net.ipv4.tcp_max_syn_backlog=65535');
    writeFileSync(join(tmp, 'nginx.conf'), nginxConf(tmp, [WRK_PORT, ...OPEN_PORTS].map((p) => `${SERVER}:${p}`), {
      keepAlive: true,
      connections: perProcess(),
      // reuseport spreads connections unevenly: room for a third more per worker.
      workers: Math.ceil(((open + extra + wrkConns) * 1.34) / perProcess()),
      body: BODY.replace('\n', '\\n'),
    }));
    labSpawn(P, 'server', 'nginx', ['nginx', '-p', tmp, '-c', join(tmp, 'nginx.conf')]);
    await sleep(500);
    const up = async (i: number): Promise<void> => {
      await labUp({ prefix: P, config: { queues: cases[i]!.queues }, gatewayCommand: cases[i]!.argv });
      await wrk(100, 1); // JIT warm-up, ARP
      await sleep(300);
    };

    // wrk with many keep-alive connections, interleaved rounds. Each start of a path is measured
    // twice: its first wrk run at full load (the gateway's table, pools and code paths new to
    // 10,000 connections: its resident memory grows here) and, once every close went through,
    // a second one (a middle box that has been running: the "warm" figures).
    const measure = opts.measure !== false;
    for (let round = 0; measure && round < runs; round++) {
      for (let i = 0; i < cases.length; i++) {
        await up(i);
        const pth = paths[i]!;
        try {
          for (const warm of [false, true]) {
            const what = `${pth.path} wrk ×${wrkConns} round ${round + 1}${warm ? ', warm' : ''}`;
            try {
              const pid = gatewayPid();
              const before = rssOf(pid);
              let peak = before;
              const sampler = setInterval(() => (peak = Math.max(peak, rssOf(pid))), 100);
              const r = await wrk(wrkConns, wrkSeconds);
              clearInterval(sampler);
              if (r.code === null) {
                // wrk still running a minute after its duration: the round is left out, said in
                // the notes; the other rounds stand. (Seen before the tracker let an old
                // connection's challenge ACK through: wrk's first connect met a server socket its
                // previous round's lost RST had left open.)
                notes.push(`${what}: wrk did not finish within ${wrkSeconds + 60} s (killed); round left out`);
                log(`${what}: wrk killed after ${wrkSeconds + 60} s`);
                continue;
              }
              const w = parseWrkOrThrow(r);
              const alive = readPidFile(labStateDir(P), 'gateway')?.alive === true;
              if (w.rps === 0 || !alive) {
                // Nothing answered for the whole round, or the gateway is gone: what wrk and the gateway said.
                notes.push(`${what}: ${w.rps} req/s, gateway ${alive ? 'running' : 'gone'}; wrk: ${r.stdout.trim()} ${r.stderr.trim()}; gateway log:\n${gatewayLog(P)}`);
              }
              (warm ? pth.wrkRpsWarm : pth.wrkRps).push(w.rps);
              if (!warm) pth.wrkRssPerConn.push((peak - before) / wrkConns);
              pth.wrkErrors += w.errors;
              log(`${what}: ${w.rps.toFixed(0)} req/s, RSS +${((peak - before) / 2 ** 20).toFixed(1)} MiB (${w.errors} errors)`);
              if (w.errors > w.requests / 100) notes.push(`${what}: ${w.errors} errors in ${w.requests} requests`);
            } finally {
              await closed();
            }
          }
        } finally {
          await labKill(P, 'gateway');
        }
      }
    }

    // Many connections opened and held, one pass each.
    for (let i = 0; measure && i < cases.length; i++) {
      const c = cases[i]!;
      const pth = paths[i]!;
      await up(i);
      const gen = new Generator(P, open + extra, c.tapgate ? REWRITTEN : BODY, opts.answerTimeoutMs ?? 5000);
      try {
        const pid = gatewayPid();
        // The warm-up's connections leave the table first (closed ones stay closedTimeoutMs,
        // 10 s): the table holds the opened connections alone, and is full with them.
        if (c.tapgate) {
          await sleep(11_000);
          pth.trackedBefore = await metric(P, 'tapgate_flows_active');
          if (pth.trackedBefore > 0) notes.push(`${pth.path}: ${pth.trackedBefore} flows still tracked before the opens; sockets: ${await socketStates(P)}`);
        }
        const before = rssOf(pid);
        const o = await gen.ask(`open ${open}`);
        pth.opened = o.ok;
        pth.openFailed = o.failed;
        pth.openMs = o.ms;
        await sleep(1000);
        pth.rssPerTracked = (rssOf(pid) - before) / Math.max(1, o.ok);
        if (c.tapgate) {
          pth.tracked = await metric(P, 'tapgate_flows_active');
          if (pth.tracked !== o.ok + pth.trackedBefore!) notes.push(`${pth.path}: ${pth.tracked} flows tracked with ${o.ok} opened (${pth.trackedBefore} before); sockets: ${await socketStates(P)}`);
        }
        log(`${pth.path}: opened ${o.ok} in ${o.ms} ms (${o.failed} failed ${JSON.stringify(o.why)}), RSS +${(pth.rssPerTracked * o.ok / 2 ** 20).toFixed(1)} MiB, tracked ${pth.tracked ?? '-'} (${pth.trackedBefore ?? '-'} before)`);
        if (o.failed > 0) notes.push(`${pth.path}: ${o.failed} of ${open} connections failed to open: ${JSON.stringify(o.why)}`);
        const r = await gen.ask('round');
        pth.roundRps = (r.ok / r.ms) * 1000;
        pth.roundFailed = r.failed;
        log(`${pth.path}: one request on each of ${o.ok}: ${r.ok} answered in ${r.ms} ms (${r.failed} failed ${JSON.stringify(r.why)})`);
        if (c.tapgate && c.queues === 1) {
          const full0 = await metric(P, 'tapgate_flows_table_full_total');
          const x = await gen.ask(`open ${extra}`);
          const tableFull = (await metric(P, 'tapgate_flows_table_full_total')) - full0;
          const after = await gen.ask('round');
          pth.full = { tried: extra, failed: x.failed, tableFull, answeredAfter: after.ok, of: x.open };
          log(`${pth.path}: table full: ${x.failed} of ${extra} more failed (${JSON.stringify(x.why)}), ${tableFull} SYNs refused; then ${after.ok} of ${x.open} answered`);
        }
      } finally {
        await gen.quit();
        await closed();
        await labKill(P, 'gateway');
      }
    }

    // A CPU profile of tapgate (rule, one process) under wrk's many connections.
    if (opts.profile === true) {
      const profDir = join(tmp, 'prof');
      await labUp({ prefix: P, gatewayCommand: profiledArgv(cases[1]!.argv, profDir) });
      await wrk(100, 1);
      // 10 s at least: start-up and the JIT warm-up are a fixed ~1 s of the profile.
      const w = parseWrkOrThrow(await wrk(wrkConns, Math.max(10, wrkSeconds)));
      log(`profiled wrk ×${wrkConns} (tapgate GSO, rule, --cpu-prof): ${w.rps.toFixed(0)} req/s`);
      await closed();
      await labKill(P, 'gateway', { graceMs: 15_000 }); // SIGTERM: a graceful exit writes the profile
      const entries = readProfileDir(profDir, opts.keepProfile);
      if (entries === undefined) notes.push('profile: no .cpuprofile written');
      else profile = { entries, rps: w.rps };
    }
  } finally {
    await labDown(P);
    rmSync(tmp, { recursive: true, force: true });
  }
  return { wrkConns, open, paths, notes, ...(profile !== undefined ? { profile } : {}) };
}

