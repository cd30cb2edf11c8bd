/**
 * `npm run bench`: every figure next to baselines measured in the same run, medians, ratios
 * (issue 7). Sections: engine (in process), the frame path right after the JIT warm-up (child
 * process, warm.ts), memory per idle tracked connection (child process with --expose-gc), live
 * (lab: throughput, latency, connections/s; needs root), the goals.
 *
 *   npm run bench [-- --quick] [--engine-only] [--profile[=iperf|wrk|ping|http|http-wrk|conc]] [--no-live] [--no-memory]
 *                    [--only engine,memory,iperf,ping,wrk,proxy,conc,http] [--keep-profile FILE]
 *                    [--flows 1,8,32] [--profile-flows N]
 *
 * `--quick` runs smaller workloads (about 1.5 minutes instead of about 4); `--engine-only` only
 * the engine table; `--profile` adds a CPU profile of tapgate under iperf3 (`--profile=wrk`:
 * under wrk's short connections, `--profile=ping`: under ping) with the top self-time
 * functions, `--keep-profile FILE` keeps the .cpuprofile. `--only` runs just the listed parts
 * (e.g. `--only wrk,ping`: bridge, C forwarder and tapgate for connections/s and latency, in
 * about a minute). `http` is the HTTP rewriting section (issue 16, http.ts: tapgate's http agent,
 * mitmproxy and nginx sub_filter side by side, about 4.5 minutes, 2–3 with --quick;
 * `--profile=http` profiles tapgate under its 50 MiB downloads, `--profile=http-wrk` under its
 * small keep-alive requests). `conc` is the concurrency section (issue 18, concurrency.ts: 10,000
 * keep-alive connections under wrk and 100,000 held open, tapgate with a rule against the Node
 * forwarder: requests/s, RSS per connection, the table full; about 3 minutes; `--profile=conc`
 * profiles tapgate with the rule under its wrk run). `--flows 1,8,32` measures every throughput path with that many
 * parallel iperf3 flows too (rows `<path> ×N`, compared with the baselines of as many flows;
 * issue 18), `--profile-flows N` profiles tapgate under N flows. Progress goes to stderr, the
 * tables to stdout.
 */
import { cpus, loadavg } from 'node:os';
import { runEngineBench } from './engine.js';
import { runWarmBench } from './warm.js';
import { runRuleBench } from './rules.js';
import { benchConcurrency } from './concurrency.js';
import { printConcurrency } from './concurrency-print.js';
import { benchHttp } from './http.js';
import { printHttp } from './http-print.js';
import { benchLive, flowsRow, LIVE_PARTS, MQ_QUEUES, MQ_TAPGATE_PATH, rowFlows, type LivePart, type LiveReport, type LiveRow, type ProfileWorkload } from './live.js';
import { runMemoryBench, type MemoryResult } from './memory.js';

const args = process.argv.slice(2);
const USAGE =
  'usage: npm run bench [-- --quick] [--engine-only] [--profile[=iperf|wrk|ping|http|http-wrk|conc]] [--no-live] [--no-memory]\n' +
  '                     [--only engine,memory,iperf,ping,wrk,proxy,conc,http] [--keep-profile FILE] [--flows 1,8,32] [--profile-flows N]';
/** A bad argument or a missing tool: one line on stderr and the usage, no stack trace. */
function fail(message: string, usage = false): never {
  console.error(`tapgate bench: ${message}${usage ? `\n${USAGE}` : ''}`);
  process.exit(2);
}
if (args.includes('--help') || args.includes('-h')) {
  console.log(USAGE);
  process.exit(0);
}
const FLAGS = ['--quick', '--engine-only', '--no-live', '--no-memory', '--profile'];
const VALUED = ['--only', '--keep-profile', '--flows', '--profile-flows'];
for (let i = 0; i < args.length; i++) {
  const a = args[i]!;
  if (FLAGS.includes(a) || a.startsWith('--profile=') || VALUED.some((v) => a.startsWith(`${v}=`))) continue;
  if (VALUED.includes(a)) {
    if (args[i + 1] === undefined) fail(`${a} needs a value`, true);
    i++;
    continue;
  }
  fail(`unknown argument ${a}`, true);
}
const quick = args.includes('--quick');
const engineOnly = args.includes('--engine-only');
/** `--name value` or `--name=value`. */
function argValue(name: string): string | undefined {
  const i = args.indexOf(name);
  if (i >= 0) return args[i + 1];
  return args.find((a) => a.startsWith(`${name}=`))?.slice(name.length + 1);
}
const profArg = args.find((a) => a === '--profile' || a.startsWith('--profile='));
type HttpProfile = 'http' | 'http-wrk';
const profile: ProfileWorkload | HttpProfile | 'conc' | undefined =
  profArg === undefined ? undefined : profArg === '--profile' ? 'iperf' : (profArg.slice('--profile='.length) as ProfileWorkload | HttpProfile | 'conc');
if (profile !== undefined && !['iperf', 'wrk', 'ping', 'http', 'http-wrk', 'conc'].includes(profile)) {
  fail(`--profile=${profile}: expected iperf, wrk, ping, http, http-wrk or conc`);
}
/** `--profile=http` / `=http-wrk` belong to the HTTP section, `conc` to the concurrency section, the others to the live section. */
const httpProfile = profile === 'http' ? 'download' : profile === 'http-wrk' ? 'wrk' : undefined;
const concProfile = profile === 'conc';
const liveProfile = httpProfile !== undefined || concProfile ? undefined : (profile as ProfileWorkload | undefined);
const keepProfile = argValue('--keep-profile');
/** `--flows 1,8,32`: throughput rows with that many parallel iperf3 flows (default 1). */
const flowsArg = argValue('--flows');
const flows = flowsArg === undefined ? [1] : flowsArg.split(',').map(Number);
for (const n of flows) if (!Number.isInteger(n) || n < 1 || n > 128) fail(`--flows ${flowsArg}: expected numbers of flows in 1..128, e.g. 1,8,32`);
/** `--profile-flows N`: parallel flows of the profiled iperf3 run (default 1). */
const profileFlows = Number(argValue('--profile-flows') ?? 1);
if (!Number.isInteger(profileFlows) || profileFlows < 1 || profileFlows > 128) fail(`--profile-flows: expected 1..128`);
const onlyArg = argValue('--only');
const ONLY_PARTS = ['engine', 'memory', ...LIVE_PARTS, 'conc', 'http'];
const only = onlyArg === undefined ? undefined : new Set(onlyArg.split(',').filter((x) => x !== ''));
for (const p of only ?? []) if (!ONLY_PARTS.includes(p)) fail(`--only ${p}: expected some of ${ONLY_PARTS.join(',')}`);
const liveOnly = only === undefined ? undefined : new Set(LIVE_PARTS.filter((p) => only.has(p))) as ReadonlySet<LivePart>;
const noEngine = only !== undefined && !only.has('engine');
const noLive = args.includes('--no-live') || (liveOnly !== undefined && liveOnly.size === 0 && liveProfile === undefined);
/** The HTTP section: measured when selected, or run for its profile alone (`--only= --profile=http`). */
const httpMeasure = !args.includes('--no-live') && (only === undefined || only.has('http'));
const httpRun = httpMeasure || (!args.includes('--no-live') && httpProfile !== undefined);
/** The concurrency section (concurrency.ts): in the full run and with `--only conc`, or for its profile alone (`--only= --profile=conc`). */
const concMeasure = !args.includes('--no-live') && (only === undefined || only.has('conc'));
const concRun = concMeasure || (!args.includes('--no-live') && concProfile);
const noMemory = args.includes('--no-memory') || (only !== undefined && !only.has('memory'));

type Cell = string | number;

export function table(rows: Array<Record<string, Cell>>): string {
  const cols = Object.keys(rows[0] ?? {});
  const cell = (v: Cell | undefined) =>
    v === undefined ? '' : typeof v === 'number' ? (!Number.isFinite(v) ? '-' : Math.abs(v) >= 100 ? v.toFixed(0) : v.toFixed(2)) : v;
  const widths = cols.map((c) => Math.max(c.length, ...rows.map((r) => String(cell(r[c])).length)));
  const line = (vals: string[]) => '| ' + vals.map((v, i) => v.padEnd(widths[i]!)).join(' | ') + ' |';
  return [line(cols), '|' + widths.map((w) => '-'.repeat(w + 2)).join('|') + '|', ...rows.map((r) => line(cols.map((c) => String(cell(r[c])))))].join('\n');
}

const find = (rows: LiveRow[], prefix: string): LiveRow | undefined => rows.find((r) => r.name.startsWith(prefix));
const ratio = (a: LiveRow | undefined, b: LiveRow | undefined): number => (a && b && b.value > 0 ? a.value / b.value : NaN);

/** The issue's earlier measurements on this box (for orientation only; ratios use this run). */
const ISSUE_BASELINE: Record<string, string> = {
  'kernel bridge': '~9.8',
  'C forwarder 1500': '~0.76',
  'C forwarder GSO': '~7.1',
  'Node proxy': '~3.5',
};
const issue = (name: string): string => Object.entries(ISSUE_BASELINE).find(([k]) => name.startsWith(k))?.[1] ?? '';

function printLive(live: LiveReport): string[] {
  const T = live.throughput;
  const T1 = T.filter((r) => rowFlows(r.name) === 1);
  const cg = find(T1, 'C forwarder GSO');
  const np = find(T1, 'Node proxy');
  // Each row against the baselines with as many flows.
  const base = (r: LiveRow, path: string): LiveRow | undefined => T.find((x) => x.name.startsWith(path) && rowFlows(x.name) === rowFlows(r.name));
  if (T.length > 0) {
    console.log('\nThroughput: iperf3, TCP client → server, one flow (and `×N`: N parallel flows) (median Gbit/s; ratios against rows of this run with as many flows):');
    console.log(
      table(
        T.map((r) => ({
          path: r.name,
          'Gbit/s': r.value,
          runs: r.runs.map((x) => x.toFixed(2)).join(' '),
          'vs C fwd GSO': ratio(r, base(r, 'C forwarder GSO')),
          'vs Node proxy': ratio(r, base(r, 'Node proxy')),
          'vs bridge': ratio(r, base(r, 'kernel bridge')),
          'issue (earlier)': rowFlows(r.name) === 1 ? issue(r.name) : '',
        })),
      ),
    );
  }
  const L = live.latency;
  const lcg = find(L, 'C forwarder GSO');
  const lc1 = find(L, 'C forwarder 1500');
  const lbr = find(L, 'kernel bridge');
  const lnf = find(L, 'Node forwarder');
  if (L.length > 0) {
    console.log('\nLatency: ping RTT client → server (µs; median of the rounds\' medians):');
    console.log(
      table(
        L.map((r) => ({
          path: r.name,
          'RTT µs': r.value,
          runs: r.runs.map((x) => x.toFixed(0)).join(' '),
          'vs C fwd GSO': ratio(r, lcg),
          'vs C fwd 1500': ratio(r, lc1),
          'vs Node fwd': ratio(r, lnf),
          'vs bridge': ratio(r, lbr),
          'issue (earlier)': r.name.startsWith('kernel') ? '~58' : r.name.startsWith('C forwarder') ? '~124' : '',
        })),
      ),
    );
  }
  const C = live.connsPerSec;
  const cbr = find(C, 'kernel bridge');
  if (C.length > 0) {
    console.log('\nNew connections/s: wrk, Connection: close, nginx `return 200` (median of runs):');
    const ccg = find(C, 'C forwarder GSO');
    console.log(
      table(
        C.map((r) => ({ path: r.name, 'conn/s': r.value, runs: r.runs.map((x) => x.toFixed(0)).join(' '), 'vs bridge': ratio(r, cbr), 'vs C fwd GSO': ratio(r, ccg) })),
      ),
    );
  }
  if (live.profile !== undefined) {
    console.log(`\nCPU profile of tapgate (GSO, rule) under ${live.profileWorkload ?? 'iperf'}: top self time (idle excluded)`);
    console.log(table(live.profile.map((p) => ({ function: p.fn, where: p.where, 'self ms': p.selfMs, '%': p.pct }))));
  }
  for (const n of live.notes) console.log(`note: ${n}`);

  const tg = find(T1, 'tapgate GSO, rule');
  const goals: string[] = [];
  const verdict = (ok: boolean) => (ok ? 'HOLDS' : 'MISSED');
  if (tg && np) goals.push(`throughput ≥ Node proxy: ${tg.value.toFixed(2)} vs ${np.value.toFixed(2)} Gbit/s (×${ratio(tg, np).toFixed(2)}) — ${verdict(tg.value >= np.value)}`);
  if (tg && cg) goals.push(`throughput ≥ ½ C forwarder GSO: ${tg.value.toFixed(2)} vs ${(cg.value / 2).toFixed(2)} Gbit/s (×${ratio(tg, cg).toFixed(2)}) — ${verdict(tg.value >= cg.value / 2)}`);
  // Issue 18: with many flows, the rule path at the C forwarder's speed.
  for (const n of [...new Set(T.map((r) => rowFlows(r.name)))].filter((n) => n > 1)) {
    const t = T.find((r) => r.name === flowsRow('tapgate GSO, rule', n));
    const c = T.find((r) => r.name === flowsRow('C forwarder GSO (vnet hdr)', n));
    if (t && c) goals.push(`throughput with ${n} flows ≥ C forwarder GSO: ${t.value.toFixed(2)} vs ${c.value.toFixed(2)} Gbit/s (×${ratio(t, c).toFixed(2)}) — ${verdict(t.value >= c.value)}`);
    const q = T.find((r) => r.name === flowsRow(MQ_TAPGATE_PATH, n));
    if (q && c) goals.push(`… with ${n} flows and --queues ${MQ_QUEUES}: ${q.value.toFixed(2)} vs ${c.value.toFixed(2)} Gbit/s (×${ratio(q, c).toFixed(2)}; ×${t ? ratio(q, t).toFixed(2) : '-'} of one process) — ${verdict(q.value >= c.value)}`);
  }
  const ltg = find(L, 'tapgate GSO, rule');
  if (ltg && lcg) {
    // The floor of any Node program on the addon, measured in the same rounds: says how much of
    // the gap is the runtime's and how much the gateway's own.
    const floor = lnf ? `; Node forwarder (addon only) ${lnf.value.toFixed(0)} µs, ×${ratio(lnf, lcg).toFixed(2)} of C, tapgate ×${ratio(ltg, lnf).toFixed(2)} of it` : '';
    goals.push(`ping RTT ≤ 1.5× C forwarder GSO: ${ltg.value.toFixed(0)} vs ${lcg.value.toFixed(0)} µs (×${ratio(ltg, lcg).toFixed(2)}) — ${verdict(ltg.value <= 1.5 * lcg.value)}${floor}`);
  }
  const ctg = find(C, 'tapgate GSO, rule');
  if (ctg && cbr) goals.push(`connections/s ≥ ½ kernel bridge: ${ctg.value.toFixed(0)} vs ${cbr.value.toFixed(0)} (×${ratio(ctg, cbr).toFixed(2)}) — ${verdict(ctg.value >= cbr.value / 2)}`);
  return goals;
}

function printMemory(mem: MemoryResult[]): string[] {
  console.log('\nMemory per idle tracked connection (in process, full handshakes, heap + ArrayBuffers after forced GC):');
  console.log(
    table(
      mem.map((m) => ({
        case: `${m.rule ? 'replace rule (Connection + 2 directions)' : 'no rule (flow tracking only)'}${m.ipv6 ? ', IPv6' : ''}${m.exchange ? ', after one request/response' : ''}`,
        connections: m.connections,
        tracked: m.tracked,
        'with engine': m.withEngine,
        'bytes/conn': m.bytesPerConn,
        'heap/conn': m.heapPerConn,
        'ArrayBuffer/conn': m.arrayBuffersPerConn,
        'vs 1 KiB goal': m.bytesPerConn / 1024,
      })),
    ),
  );
  return mem
    .filter((m) => m.rule)
    .map((r) => `memory ≤ 1 KiB per idle connection (rule, ${r.ipv6 ? 'IPv6' : 'IPv4'}${r.exchange ? ', after one request/response' : ''}, ${r.connections}): ${r.bytesPerConn} B — ${r.bytesPerConn <= 1024 ? 'HOLDS' : 'MISSED'}`);
}

/**
 * A lab section of its own (`run`: selected), measured and printed by `measure`, which returns
 * its goal lines. It needs root; a failure is printed loudly and the other sections' figures
 * stand (exit code 1).
 */
async function labSection(run: boolean, root: boolean, title: string, tag: string, measure: (log: (l: string) => void) => Promise<string[]>): Promise<string[]> {
  if (!run) return [];
  if (!root) {
    console.log(`\n${title} section skipped: it needs root (namespaces, TAPs).`);
    return [];
  }
  try {
    return await measure((l) => console.error(`  ${tag}: ${l}`));
  } catch (e) {
    console.log(`\n!!! ${title} section FAILED: ${(e as Error).message}`);
    process.exitCode = 1;
    return [];
  }
}

async function main(): Promise<void> {
  const t0 = Date.now();
  const load = () => loadavg()[0]!.toFixed(2);
  console.log(`tapgate bench (${quick ? 'quick' : 'full'}) — node ${process.version}, ${cpus().length} CPUs, load ${load()}, ${new Date().toISOString()}`);
  if (loadavg()[0]! > 0.5) console.log('note: the machine is busy (load average > 0.5): absolute figures suffer; ratios less so');
  if (!noEngine) {
    console.log('\nEngine, in process (median of runs; ratio against pass-through in the same run):');
    const rows = runEngineBench(quick ? { segments: 5000, runs: 3 } : {});
    const base = rows.find((r) => r.name.startsWith('pass-through'))!;
    const bulk = rows.filter((r) => !r.name.startsWith('short') && !r.name.startsWith('keep-alive'));
    const byName = (n: string) => rows.find((r) => r.name === n)!;
    console.log(
      table(
        bulk.map((r) => ({
          case: r.name,
          'segments/s': Math.round(r.segPerSec),
          'MB/s': r.mbPerSec,
          'vs pass-through': r.segPerSec / base.segPerSec,
        })),
      ),
    );
    const short = rows.filter((r) => r.name.startsWith('short'));
    const sbase = short.find((r) => r.name.endsWith('decode only'))!;
    console.log('\nShort connections (11 frames each: handshake, request, response, close), in process:');
    console.log(
      table(
        short.map((r) => ({
          case: r.name.replace('short connections: ', ''),
          'frames/s': Math.round(r.segPerSec),
          'connections/s': Math.round(r.segPerSec / 11),
          'vs decode only': r.segPerSec / sbase.segPerSec,
        })),
      ),
    );
    const ka = rows.filter((r) => r.name.startsWith('keep-alive'));
    const kbase = ka.find((r) => r.name.endsWith('decode only'))!;
    console.log('\nKeep-alive requests over many live connections (3 frames each: request, response, ACK; every frame on another connection), in process:');
    console.log(
      table(
        ka.map((r) => ({
          case: r.name.replace('keep-alive requests: ', ''),
          'requests/s': Math.round(r.segPerSec),
          'µs/request': 1e6 / r.segPerSec,
          'vs decode only': r.segPerSec / kbase.segPerSec,
        })),
      ),
    );
    const v6 = byName('IPv6: replace rule, in order').segPerSec / byName('replace rule, in order').segPerSec;
    const v6c = byName('short connections: replace rule, IPv6').segPerSec / byName('short connections: replace rule').segPerSec;
    console.log(`IPv6 vs IPv4 with a rule: throughput ×${v6.toFixed(2)} (goal ≥ 0.9: ${v6 >= 0.9 ? 'HOLDS' : 'MISSED'}), connections/s ×${v6c.toFixed(2)}`);
    const warm = runWarmBench(quick ? { mib: 20 } : {});
    console.log(`\nRight after the JIT warm-up (a fresh process: the http agent's dense rewrite, ${warm.mib} MiB per pass through one connection, GSO frames; warm-up ${warm.warmupMs.toFixed(0)} ms):`);
    console.log(table(warm.passes.map((r, i) => ({ pass: String(i + 1), 'MB/s': r, 'vs last pass': r / warm.passes[warm.passes.length - 1]! }))));
    console.log('\nLong rule lists, in process (median µs; speed-up against the baseline of the same run):');
    console.log(table(runRuleBench(quick ? { runs: 3 } : {}).map((r) => ({ case: r.name, 'µs': r.us, 'vs baseline': r.speedup }))));
  }
  if (engineOnly) return;
  const goals: string[] = [];
  if (!noMemory) goals.push(...printMemory(runMemoryBench(quick ? 20_000 : 100_000)));
  const root = process.getuid?.() === 0;
  if (noLive) {
    // nothing
  } else if (!root) {
    console.log('\nLive (lab) figures skipped: they need root (namespaces, TAPs).');
  } else {
    const log = (l: string) => console.error(`  ${l}`);
    const live = await benchLive(
      {
        ...(quick ? { seconds: 2, runs: 3, pings: 100, wrkSeconds: 2 } : { seconds: 5, runs: 3, pings: 200, wrkSeconds: 5 }),
        profile: liveProfile,
        profileFlows,
        flows,
        keepProfile,
        only: liveOnly,
        log,
      },
    );
    goals.unshift(...printLive(live));
  }
  const concGoals = await labSection(concRun, root, 'Concurrency', 'conc', async (log) =>
    printConcurrency(
      await benchConcurrency({
        ...(quick ? { wrkSeconds: 2, open: 20_000, runs: 3 } : { wrkSeconds: 5, open: 100_000, runs: 3 }),
        measure: concMeasure,
        profile: concProfile,
        ...(concProfile && keepProfile !== undefined ? { keepProfile } : {}),
        log,
      }),
      table,
    ),
  );
  const httpGoals = await labSection(httpRun, root, 'HTTP rewriting', 'http', async (log) =>
    printHttp(
      await benchHttp({
        ...(quick ? { runs: 3, wrkSeconds: 2, keepAliveProbeSeconds: 5 } : { runs: 3, wrkSeconds: 5, keepAliveProbeSeconds: 10 }),
        measure: httpMeasure,
        profile: httpProfile,
        keepProfile: httpProfile !== undefined ? keepProfile : undefined,
        log,
      }),
      table,
    ),
  );
  if (goals.length > 0) console.log(`\nGoals (issue 7):\n${goals.map((g) => `  - ${g}`).join('\n')}`);
  if (concGoals.length > 0) console.log(`\nGoals (issue 18, concurrency):\n${concGoals.map((g) => `  - ${g}`).join('\n')}`);
  if (httpGoals.length > 0) console.log(`\nGoals (issue 16, HTTP rewriting):\n${httpGoals.map((g) => `  - ${g}`).join('\n')}`);
  console.log(`\n(${((Date.now() - t0) / 1000).toFixed(0)} s; load average at the end ${load()})`);
}

await main().catch((e: unknown) => fail(e instanceof Error ? e.message : String(e)));
