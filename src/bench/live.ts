/**
 * Live figures through real namespaces (issue 7), every one next to its baselines measured in
 * the same run:
 *
 * Throughput — iperf3 (TCP, client → server, `seconds` s, median of `runs`; one flow, and with
 * `flows` also N parallel flows, `iperf3 -P N`, rows named `<path> ×N`):
 * - `kernel bridge`: a veth pair joins br-c and br-s directly (no gateway attached);
 * - `C forwarder`: bench/tapfwd.c (compiled here with `cc -O2`) on tap-c/tap-s in place of the
 *   gateway, with and without the vnet header (TSO);
 * - `Node proxy`: a routed topology of its own (client 10.201.1.1/24 — proxy 10.201.1.254 |
 *   10.201.2.254 — server 10.201.2.1/24, forwarding on in the proxy namespace) with
 *   dist/bench/proxy.js listening in the middle and piping sockets both ways; also the kernel
 *   routing the same topology;
 * - `Node forwarder`: src/bench/nodefwd.ts, the TAP addon forwarding every frame unchanged with
 *   the live gateway's I/O structure and no gateway (GSO): the floor of any Node.js program here;
 * - `tapgate`: `tapgate run` with a replace rule on the iperf3 (and HTTP) port whose pattern
 *   never occurs in iperf3's payload (the agent sees every byte, rewrites none), GSO on and off;
 *   and GSO on without a rule (pass-through), for reference.
 * Latency — ping RTT (iputils ping, `runs` rounds of `pings` probes 10 ms apart; the median of the
 * rounds' medians) via the kernel bridge,
 * the C forwarder (with and without vnet header), the Node forwarder and tapgate (GSO, rule).
 * New connections/s — wrk (1 thread, `wrkConns` connections, `Connection: close`, so every
 * request is a new TCP connection) against nginx (`return 200`, keepalive off) in the server
 * namespace, via the kernel bridge, the C forwarder (GSO), the Node forwarder and tapgate (rule on the port); median
 * of `runs`.
 * Profile (`profile: true`) — one more iperf3 run through tapgate (GSO, rule) started with
 * `node --cpu-prof`; top self-time functions.
 *
 * Needs root, iproute2, iperf3, iputils-ping, cc (gcc), wrk and nginx (nginx-light), and a
 * built dist/. Missing wrk/nginx skip the connections/s rows with a note. Both topologies are
 * removed at the end, also on error (labDown).
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gatewayArgv } from '../lab/gateway-argv.js';
import { LAB_IFACES, labDown, labExec, labKill, labSpawn, labUp, nsName } from '../lab/lab.js';
import { profiledArgv, readProfileDir, type ProfileEntry } from './profile.js';

export type LivePart = 'iperf' | 'ping' | 'wrk' | 'proxy';
export const LIVE_PARTS: readonly LivePart[] = ['iperf', 'ping', 'wrk', 'proxy'];
export type ProfileWorkload = 'iperf' | 'wrk' | 'ping';

export interface LiveRow {
  name: string;
  value: number;
  /** The individual runs (the value is their median). */
  runs: number[];
}

export interface LiveReport {
  throughput: LiveRow[];
  latency: LiveRow[];
  connsPerSec: LiveRow[];
  notes: string[];
  profile?: ProfileEntry[] | undefined;
  /** The workload the profile was taken under. */
  profileWorkload?: ProfileWorkload | undefined;
}

export interface LiveBenchOptions {
  /** Seconds per iperf3 run. Default 5. */
  seconds?: number;
  /** Parallel iperf3 flows per throughput case: a row each (`<path> ×N` for N > 1). Default [1]. */
  flows?: readonly number[];
  /** Parallel flows of the profiled iperf3 run. Default 1. */
  profileFlows?: number;
  /** Runs per throughput / connections-per-second case (median). Default 3. */
  runs?: number;
  /** Pings per latency case (median). Default 200. */
  pings?: number;
  /** Seconds per wrk run. Default 5. */
  wrkSeconds?: number;
  /** wrk connections. Default 16. */
  wrkConns?: number;
  /**
   * Record and summarize a CPU profile of tapgate (GSO, rule) under a workload: `true` or
   * 'iperf' = one iperf3 run, 'wrk' = one wrk run (short connections), 'ping' = one ping run.
   */
  profile?: boolean | ProfileWorkload | undefined;
  /**
   * Only these live parts (default all): 'iperf' (throughput rows), 'ping' (latency), 'wrk'
   * (connections/s), 'proxy' (routed topology: kernel router, Node proxy). The bridge, C
   * forwarder and tapgate cases run only where a selected part needs them; a tapgate case still
   * gets its unmeasured 1 s iperf3 warm-up (JIT) when its iperf rows are skipped.
   */
  only?: ReadonlySet<LivePart> | undefined;
  /** Copy the .cpuprofile there (for a closer look in DevTools or summarizeProfileFile). */
  keepProfile?: string | undefined;
  /** Lab prefix. Default 'tgbench'; the proxy topology uses 'tgbpx'. */
  prefix?: string;
  proxyPrefix?: string;
  /** Progress lines. */
  log?: (line: string) => void;
}

export const IPERF_PORT = 5201;
export const HTTP_PORT = 8080;
/** Never occurs in iperf3's payload: the rule is engaged (every byte scanned) but never rewrites. */
export const NEVER_PATTERN = 'tapgate-bench-never-matches';

export const BENCH_RULE_YAML = `# npm run bench: a replace rule that is engaged on the measured ports but (almost) never matches
rules:
  - match: { port: [${IPERF_PORT}, ${HTTP_PORT}] }
    agent: replace
    replace:
      - { find: "${NEVER_PATTERN}", with: "REWRITTEN" }
`;

/** bench/tapfwd.c of this checkout, from src/bench/ and dist/bench/ alike. */
export const TAPFWD_SOURCE = fileURLToPath(new URL('../../bench/tapfwd.c', import.meta.url));
/** dist/bench/proxy.js (the proxy runs from the build). */
const PROXY_JS = fileURLToPath(new URL('../../dist/bench/proxy.js', import.meta.url));
/** dist/bench/nodefwd.js: the minimal Node forwarder on the TAP addon. */
export const NODEFWD_JS = fileURLToPath(new URL('../../dist/bench/nodefwd.js', import.meta.url));

/** Compiles bench/tapfwd.c with `cc -O2` into `dir`; returns the binary's path. */
export function compileTapfwd(dir: string): string {
  const out = join(dir, 'tapfwd');
  const r = spawnSync('cc', ['-O2', '-Wall', '-pthread', '-o', out, TAPFWD_SOURCE], { encoding: 'utf8' });
  if (r.error !== undefined) throw new Error(`cannot run cc (Debian: apt-get install gcc): ${r.error.message}`);
  if (r.status !== 0) throw new Error(`cc -O2 bench/tapfwd.c failed: ${r.stderr}`);
  return out;
}

/**
 * nginx answering `return 200 BODY` on `listen` (one address:port or several). By default for
 * new connections/s: keep-alive off, one worker of 4,096 connections. `keepAlive`: connections
 * stay open (300 s, any number of requests); `connections`: worker_connections; `workers`: worker
 * processes sharing the listening ports (`reuseport`: the kernel spreads connections over them),
 * for more connections than one process may have files.
 */
export function nginxConf(
  dir: string,
  listen: string | readonly string[],
  opts: { keepAlive?: boolean; connections?: number; workers?: number; body?: string } = {},
): string {
  const conns = opts.connections ?? 4096;
  const workers = opts.workers ?? 1;
  const reuse = workers > 1 ? ' reuseport' : '';
  const listens = (typeof listen === 'string' ? [listen] : listen).map((l) => `    listen ${l} backlog=${Math.min(conns * workers, 65535)}${reuse};`).join('\n');
  const keepAlive = opts.keepAlive === true ? 'keepalive_timeout 300s;\n  keepalive_requests 1000000;' : 'keepalive_timeout 0;';
  return `worker_processes ${workers};
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/nginx-error.log warn;
worker_rlimit_nofile ${Math.min(conns + 1024, fileLimit())};
events { worker_connections ${conns}; }
http {
  access_log off;
  ${keepAlive}
  client_body_temp_path ${dir}/nginx-body;
  proxy_temp_path ${dir}/nginx-proxy;
  fastcgi_temp_path ${dir}/nginx-fastcgi;
  uwsgi_temp_path ${dir}/nginx-uwsgi;
  scgi_temp_path ${dir}/nginx-scgi;
  server {
${listens}
    location / { return 200 "${opts.body ?? 'ok\\n'}"; }
  }
}
`;
}

/**
 * The hard limit on open files of this process (and of what it starts): /proc/self/limits. Raising
 * it needs CAP_SYS_RESOURCE, which a container may not give even to root (this machine: 20,000).
 */
export function fileLimit(): number {
  try {
    const m = /^Max open files\s+\S+\s+(\d+|unlimited)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
    if (m !== null) return m[1] === 'unlimited' ? 1 << 20 : Number(m[1]);
  } catch {
    /* not Linux */
  }
  return 1024;
}

/** The throughput row of `path` with `n` parallel flows: the path's name for one, `<path> ×n` else. */
export function flowsRow(path: string, n: number): string {
  return n === 1 ? path : `${path} ×${n}`;
}

/** The number of parallel flows a throughput row was measured with (flowsRow). */
export function rowFlows(row: string): number {
  const m = / ×(\d+)$/.exec(row);
  return m === null ? 1 : Number(m[1]);
}

/** iperf3 -J output → receiver goodput in bit/s. */
export function parseIperf(json: string): number {
  const j = JSON.parse(json) as { end?: { sum_received?: { bits_per_second?: number } }; error?: string };
  const bps = j.end?.sum_received?.bits_per_second;
  if (typeof bps !== 'number') throw new Error(j.error ?? 'no end.sum_received in iperf3 output');
  return bps;
}

/** iputils ping output → RTTs in ms. */
export function parsePing(out: string): number[] {
  const rtts: number[] = [];
  for (const m of out.matchAll(/time=([\d.]+) ms/g)) rtts.push(Number(m[1]));
  return rtts;
}

/** wrk output → requests/s, and socket errors / non-2xx (a run with many is suspicious). */
export function parseWrk(out: string): { rps: number; errors: number; requests: number } {
  const m = /Requests\/sec:\s+([\d.]+)/.exec(out);
  if (!m) throw new Error(`no Requests/sec in wrk output: ${out.slice(0, 500)}`);
  let errors = 0;
  const se = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  if (se) errors += Number(se[1]) + Number(se[3]) + Number(se[4]); // read errors: the server's close
  const nx = /Non-2xx or 3xx responses: (\d+)/.exec(out);
  if (nx) errors += Number(nx[1]);
  const rq = /(\d+) requests in/.exec(out);
  return { rps: Number(m[1]), errors, requests: rq ? Number(rq[1]) : 0 };
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const h = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[h]! : (s[h - 1]! + s[h]!) / 2;
}

function sh(argv: string[], allowFail = false): void {
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8' });
  if (r.status !== 0 && !allowFail) throw new Error(`\`${argv.join(' ')}\` failed: ${r.stderr || r.error?.message}`);
}

function have(bin: string, arg = '--version'): boolean {
  return spawnSync(bin, [arg], { stdio: 'ignore' }).error === undefined;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function benchLive(opts: LiveBenchOptions = {}): Promise<LiveReport> {
  const seconds = opts.seconds ?? 5;
  const runs = opts.runs ?? 3;
  const pings = opts.pings ?? 200;
  const wrkSeconds = opts.wrkSeconds ?? 5;
  const wrkConns = opts.wrkConns ?? 16;
  const P = opts.prefix ?? 'tgbench';
  const PX = opts.proxyPrefix ?? 'tgbpx';
  const log = opts.log ?? (() => {});
  const part = (p: LivePart): boolean => opts.only === undefined || opts.only.has(p);
  const doIperf = part('iperf');
  const doPing = part('ping');
  const profWorkload: ProfileWorkload | undefined = opts.profile === true ? 'iperf' : opts.profile === false ? undefined : opts.profile;
  for (const [bin, pkg, arg] of [['iperf3', 'iperf3', '--version'], ['ping', 'iputils-ping', '-V'], ['cc', 'gcc', '--version']] as const) {
    if (!have(bin, arg)) throw new Error(`${bin} is not installed (Debian: apt-get install ${pkg})`);
  }
  const notes: string[] = [];
  const withWrk = part('wrk') || profWorkload === 'wrk' ? have('wrk', '-v') && have('nginx', '-v') : false;
  if (!withWrk && (part('wrk') || profWorkload === 'wrk')) notes.push('connections/s skipped: needs wrk and nginx (Debian: apt-get install wrk nginx-light)');

  const tmp = mkdtempSync(join(tmpdir(), 'tapgate-bench-'));
  const report: LiveReport = { throughput: [], latency: [], connsPerSec: [], notes };
  try {
    const tapfwd = compileTapfwd(tmp);
    const config = join(tmp, 'bench.yaml');
    writeFileSync(config, BENCH_RULE_YAML);
    const server = '10.200.0.2';

    // Rounds, interleaved: every path is measured once per round, in the same order, so a load
    // change on the shared box moves every path's figures alike instead of one path's (a path
    // measured as one block against its baseline minutes later was a coin toss: ping baselines
    // moved 75 ↔ 121 µs between runs). Each value is the median over the rounds.
    const results = new Map<string, { tp: number[]; lat: number[]; cps: number[] }>();
    const rec = (name: string) => {
      let r = results.get(name);
      if (r === undefined) results.set(name, (r = { tp: [], lat: [], cps: [] }));
      return r;
    };
    const flows = opts.flows ?? [1];
    const iperfOnce = async (prefix: string, dst: string, name: string, round: number): Promise<void> => {
      // One unmeasured second first: JIT warm-up for the Node rows, ARP and caches for all.
      await labExec(prefix, 'client', ['iperf3', '-c', dst, '-p', String(IPERF_PORT), '-t', '1'], { timeoutMs: 20_000 });
      if (!doIperf) return;
      for (const n of flows) {
        const row = flowsRow(name, n);
        const r = await labExec(prefix, 'client', ['iperf3', '-c', dst, '-p', String(IPERF_PORT), '-t', String(seconds), '-P', String(n), '-J'], {
          timeoutMs: (seconds + 20) * 1000,
        });
        let bps: number;
        try {
          bps = parseIperf(r.stdout);
        } catch (e) {
          // One run that did not finish (killed at its timeout: a stalled connection) is left
          // out and said, not the whole bench: the row's median is of the runs that finished.
          const why = `${(e as Error).message}${r.stdout === '' ? ` (no output: stopped after ${seconds + 20} s)` : ''} ${r.stderr.slice(0, 300)}`.trim();
          notes.push(`iperf3 ${row} round ${round + 1} failed, left out: ${why}`);
          log(`${row} round ${round + 1}: FAILED (${why})`);
          continue;
        }
        rec(row).tp.push(bps / 1e9);
        log(`${row} round ${round + 1}: ${(bps / 1e9).toFixed(2)} Gbit/s`);
      }
    };
    const pingOnce = async (name: string, round: number): Promise<void> => {
      if (!doPing) return;
      // One round of `pings` probes; the value is the median of the rounds' medians.
      const r = await labExec(P, 'client', ['ping', '-n', '-c', String(pings), '-i', '0.01', '-W', '1', server], { timeoutMs: pings * 50 + 10_000 });
      const rtts = parsePing(r.stdout).map((ms) => ms * 1000);
      if (rtts.length < pings / 2) throw new Error(`ping (${name}): ${rtts.length}/${pings} answered: ${r.stderr || r.stdout.slice(-300)}`);
      // The first probe may wait for ARP: the median does not care.
      rec(name).lat.push(median(rtts));
      log(`${name} ping round ${round + 1}: median ${median(rtts).toFixed(1)} µs (${rtts.length}/${pings})`);
    };
    const wrkOnce = async (name: string, round: number): Promise<void> => {
      if (!withWrk || !part('wrk')) return;
      const r = await labExec(
        P,
        'client',
        ['wrk', '-t1', `-c${wrkConns}`, `-d${wrkSeconds}s`, '-H', 'Connection: close', `http://${server}:${HTTP_PORT}/`],
        { timeoutMs: (wrkSeconds + 20) * 1000 },
      );
      const w = parseWrk(r.stdout);
      if (w.errors > w.requests / 100) notes.push(`${name} wrk round ${round + 1}: ${w.errors} errors in ${w.requests} requests`);
      rec(name).cps.push(w.rps);
      log(`${name} wrk round ${round + 1}: ${w.rps.toFixed(0)} conn/s (${w.errors} errors)`);
      await sleep(500);
    };

    // ---- The labs: bridged (bridge, C forwarder, tapgate) and routed (kernel router, proxy) ----
    await labDown(P);
    await labUp({ prefix: P });
    const cns = nsName(P, 'client');
    // Many short connections: a wide port range, and TIME_WAIT ports reused for new ones.
    sh(['ip', 'netns', 'exec', cns, 'sysctl', '-q', '-w', 'net.ipv4.ip_local_port_range=1024 65535']);
    sh(['ip', 'netns', 'exec', cns, 'sysctl', '-q', '-w', 'net.ipv4.tcp_tw_reuse=1']);
    sh(['ip', 'netns', 'exec', nsName(P, 'server'), 'sysctl', '-q', '-w', 'net.core.somaxconn=4096'], true);
    labSpawn(P, 'server', 'iperf3', ['iperf3', '-s', '-B', server, '-p', String(IPERF_PORT)]);
    if (withWrk) {
      writeFileSync(join(tmp, 'nginx.conf'), nginxConf(tmp, `${server}:${HTTP_PORT}`));
      labSpawn(P, 'server', 'nginx', ['nginx', '-p', tmp, '-c', join(tmp, 'nginx.conf')]);
    }
    const routed = doIperf && part('proxy');
    if (routed) {
      await buildRouted(PX);
      labSpawn(PX, 'server', 'iperf3', ['iperf3', '-s', '-B', '10.201.2.1', '-p', String(IPERF_PORT)]);
    }
    await sleep(500);
    const gw = nsName(P, 'gw');

    interface Path {
      name: string;
      /** Measured here (iperf rows are measured for every path when iperf is on). */
      lat: boolean;
      wrk: boolean;
      up: () => Promise<void>;
      down: () => Promise<void>;
      /** iperf3 target: the bridged lab's server or the routed lab's. */
      prefix: string;
      dst: string;
    }
    const bridged = (name: string, lat: boolean, wrkToo: boolean, up: () => Promise<void>, down: () => Promise<void>): Path =>
      ({ name, lat, wrk: wrkToo, up, down, prefix: P, dst: server });
    const paths: Path[] = [];
    if (doIperf || doPing || part('wrk')) {
      paths.push(bridged('kernel bridge', true, true, async () => {
        sh(['ip', '-n', gw, 'link', 'add', 'bx-c', 'type', 'veth', 'peer', 'name', 'bx-s']);
        sh(['ip', '-n', gw, 'link', 'set', 'bx-c', 'master', LAB_IFACES.bridgeClient, 'up']);
        sh(['ip', '-n', gw, 'link', 'set', 'bx-s', 'master', LAB_IFACES.bridgeServer, 'up']);
      }, async () => sh(['ip', '-n', gw, 'link', 'del', 'bx-c'])));
      for (const vnet of [false, true]) {
        // The C forwarder's connections/s (GSO only): what any single-threaded TAP forwarder
        // reaches here, for orientation next to the goal's kernel-bridge baseline.
        paths.push(bridged(`C forwarder ${vnet ? 'GSO (vnet hdr)' : '1500 (no vnet hdr)'}`, true, vnet, async () => {
          await labUp({ prefix: P, gatewayCommand: [tapfwd, LAB_IFACES.tapClient, LAB_IFACES.tapServer, ...(vnet ? ['--vnet'] : [])] });
        }, async () => void (await labKill(P, 'gateway'))));
      }
      // Issue 18's multi-queue evaluation: the same C forwarder with one thread per TAP queue
      // (the lab makes its TAPs multi-queue for it, plain again for the next path), throughput only.
      if (doIperf) {
        paths.push(bridged(MQ_PATH, false, false, async () => {
          await labUp({ prefix: P, config: { queues: MQ_QUEUES }, gatewayCommand: [tapfwd, LAB_IFACES.tapClient, LAB_IFACES.tapServer, '--vnet', '--queues', String(MQ_QUEUES)] });
        }, async () => void (await labKill(P, 'gateway'))));
      }
      // The runtime's floor: a Node program forwarding frames with the addon and nothing else.
      paths.push(bridged('Node forwarder GSO (addon only)', true, true, async () => {
        await labUp({ prefix: P, gatewayCommand: [process.execPath, NODEFWD_JS, LAB_IFACES.tapClient, LAB_IFACES.tapServer, '--vnet'] });
      }, async () => void (await labKill(P, 'gateway'))));
      const tapgateCases = [
        { name: 'tapgate GSO, rule', vnetHdr: true, rule: true, lat: true, wrk: true },
        { name: 'tapgate no GSO, rule', vnetHdr: false, rule: true, lat: true, wrk: false },
        { name: 'tapgate GSO, no rule', vnetHdr: true, rule: false, lat: false, wrk: false },
      ];
      for (const c of tapgateCases) {
        if (!doIperf && !(c.lat && doPing) && !(c.wrk && part('wrk'))) continue;
        paths.push(bridged(c.name, c.lat, c.wrk, async () => {
          await labUp({ prefix: P, gatewayCommand: gatewayArgv({ vnetHdr: c.vnetHdr, ...(c.rule ? { config } : {}) }) });
        }, async () => void (await labKill(P, 'gateway'))));
      }
      // Issue 18: tapgate with a process per TAP queue (`run --queues`), throughput only.
      if (doIperf) {
        paths.push(bridged(MQ_TAPGATE_PATH, false, false, async () => {
          await labUp({ prefix: P, config: { queues: MQ_QUEUES }, gatewayCommand: gatewayArgv({ vnetHdr: true, config, queues: MQ_QUEUES }) });
        }, async () => void (await labKill(P, 'gateway'))));
      }
    }
    if (routed) {
      paths.push({ name: 'kernel router (routed)', lat: false, wrk: false, up: async () => {}, down: async () => {}, prefix: PX, dst: '10.201.2.1' });
      paths.push({
        name: 'Node proxy (net pipe)', lat: false, wrk: false, prefix: PX, dst: '10.201.1.254',
        up: async () => {
          labSpawn(PX, 'gw', 'proxy', [process.execPath, PROXY_JS, '10.201.1.254', String(IPERF_PORT), '10.201.2.1', String(IPERF_PORT)]);
          await sleep(700);
        },
        down: async () => void (await labKill(PX, 'proxy')),
      });
    }
    for (let round = 0; round < runs; round++) {
      for (const path of paths) {
        await path.up();
        try {
          await iperfOnce(path.prefix, path.dst, path.name, round);
          if (path.lat) await pingOnce(path.name, round);
          if (path.wrk) await wrkOnce(path.name, round);
        } finally {
          await path.down();
        }
      }
    }
    for (const n of flows) {
      for (const path of paths) {
        const r = results.get(flowsRow(path.name, n));
        if (r !== undefined && r.tp.length > 0) report.throughput.push({ name: flowsRow(path.name, n), value: median(r.tp), runs: r.tp });
      }
    }
    for (const path of paths) {
      const r = results.get(path.name);
      if (r === undefined) continue;
      if (r.lat.length > 0) report.latency.push({ name: path.name, value: median(r.lat), runs: r.lat });
      if (r.cps.length > 0) report.connsPerSec.push({ name: path.name, value: median(r.cps), runs: r.cps });
    }

    if (profWorkload !== undefined && (profWorkload !== 'wrk' || withWrk)) {
      // The profile covers the process's whole life: start-up (module loading) is a fixed ~0.5 s,
      // diluted by the workload; the event loop's idle time is left out of the summary.
      const profDir = join(tmp, 'prof');
      await labUp({ prefix: P, gatewayCommand: profiledArgv(gatewayArgv({ vnetHdr: true, config }), profDir) });
      if (profWorkload === 'iperf') {
        const pf = opts.profileFlows ?? 1;
        const r = await labExec(P, 'client', ['iperf3', '-c', server, '-p', String(IPERF_PORT), '-t', String(seconds), '-P', String(pf), '-J'], {
          timeoutMs: (seconds + 20) * 1000,
        });
        log(`profiled run (tapgate GSO, rule, --cpu-prof, iperf3 ×${pf}): ${(parseIperf(r.stdout) / 1e9).toFixed(2)} Gbit/s`);
      } else if (profWorkload === 'wrk') {
        const r = await labExec(
          P,
          'client',
          ['wrk', '-t1', `-c${wrkConns}`, `-d${wrkSeconds}s`, '-H', 'Connection: close', `http://${server}:${HTTP_PORT}/`],
          { timeoutMs: (wrkSeconds + 20) * 1000 },
        );
        log(`profiled run (tapgate GSO, rule, --cpu-prof, wrk): ${parseWrk(r.stdout).rps.toFixed(0)} conn/s`);
      } else {
        const r = await labExec(P, 'client', ['ping', '-n', '-c', String(pings), '-i', '0.01', '-W', '1', server], { timeoutMs: pings * 50 + 10_000 });
        log(`profiled run (tapgate GSO, rule, --cpu-prof, ping): median ${median(parsePing(r.stdout).map((ms) => ms * 1000)).toFixed(1)} µs`);
      }
      await labKill(P, 'gateway', { graceMs: 15_000 }); // SIGTERM: a graceful exit writes the profile
      const entries = readProfileDir(profDir, opts.keepProfile);
      if (entries === undefined) notes.push('profile: no .cpuprofile written');
      else {
        report.profile = entries;
        report.profileWorkload = profWorkload;
      }
    }
    await labDown(P);
    await labDown(PX);
  } finally {
    await labDown(P);
    await labDown(PX);
    rmSync(tmp, { recursive: true, force: true });
  }
  return report;
}

/** The C forwarder with a thread per TAP queue (issue 18's multi-queue evaluation). */
export const MQ_QUEUES = 2;
export const MQ_PATH = `${MQ_QUEUES}-queue C forwarder GSO (a thread per queue)`;
export const MQ_TAPGATE_PATH = `tapgate GSO, rule, --queues ${MQ_QUEUES}`;

/**
 * Client and server in different subnets, routed by the `gw` namespace (where the Node proxy
 * listens): ${p}-client eth0 10.201.1.1/24 ─ vc 10.201.1.254 [${p}-gw] vs 10.201.2.254 ─ eth0
 * 10.201.2.1/24 ${p}-server. Namespace names follow the lab's, so labExec/labSpawn/labDown work.
 */
export async function buildRouted(p: string): Promise<void> {
  await labDown(p);
  const ns = { client: nsName(p, 'client'), server: nsName(p, 'server'), gw: nsName(p, 'gw') };
  for (const n of Object.values(ns)) {
    sh(['ip', 'netns', 'add', n]);
    sh(['ip', '-n', n, 'link', 'set', 'lo', 'up']);
    sh(['ip', 'netns', 'exec', n, 'sysctl', '-q', '-w', 'net.ipv6.conf.all.disable_ipv6=1'], true);
  }
  const sides = [
    { end: ns.client, veth: 'vc', mine: '10.201.1.1/24', gwAddr: '10.201.1.254' },
    { end: ns.server, veth: 'vs', mine: '10.201.2.1/24', gwAddr: '10.201.2.254' },
  ];
  for (const s of sides) {
    sh(['ip', '-n', ns.gw, 'link', 'add', s.veth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', s.end]);
    sh(['ip', '-n', s.end, 'addr', 'add', s.mine, 'dev', 'eth0']);
    sh(['ip', '-n', s.end, 'link', 'set', 'eth0', 'mtu', '1500', 'up']);
    sh(['ip', '-n', s.end, 'route', 'add', 'default', 'via', s.gwAddr]);
    sh(['ip', '-n', ns.gw, 'addr', 'add', `${s.gwAddr}/24`, 'dev', s.veth]);
    sh(['ip', '-n', ns.gw, 'link', 'set', s.veth, 'mtu', '1500', 'up']);
  }
  sh(['ip', 'netns', 'exec', ns.gw, 'sysctl', '-q', '-w', 'net.ipv4.ip_forward=1']);
}
