/**
 * Tables and goal lines of the HTTP rewriting section (http.ts), every ratio against a row of the
 * same run. Returns the goal lines (issue 16); a skipped section prints why, a failed one says so
 * loudly and sets a failing exit code.
 */
import { HTTP_PATH_NAMES, HTTP_REWRITES, SMALL_BODY, type HttpReport } from './http.js';
import type { LiveRow } from './live.js';

type Cell = string | number;
type Table = (rows: Array<Record<string, Cell>>) => string;

const byName = (rows: LiveRow[], name: string): LiveRow | undefined => rows.find((r) => r.name === name);
const ratio = (a: LiveRow | undefined, b: LiveRow | undefined): number => (a && b && b.value > 0 ? a.value / b.value : NaN);

/** MB of the original body per CPU second of the middle box's processes (NaN: none ran). */
function perCpu(rep: HttpReport, name: string, cpuRows = rep.cpuSeconds): number {
  const c = byName(cpuRows, name)?.value;
  return c !== undefined && c > 0 ? rep.bodyBytes / 1e6 / c : NaN;
}

export function printHttp(rep: HttpReport, table: Table): string[] {
  const title = 'HTTP rewriting (issue 16): tapgate http agent, mitmproxy, nginx sub_filter';
  if (rep.skipped !== undefined) {
    console.log(`\n${title}: SKIPPED — ${rep.skipped}.`);
    return [];
  }
  const rules = HTTP_REWRITES.map((r) => `"${r.find}" → "${r.with}"`).join(', ');
  console.log(`\n${title}\n  rewrite: ${rules}; ${rep.versions.join('; ')}`);
  if (rep.failed !== undefined) {
    console.log(`\n!!! HTTP rewriting section FAILED: ${rep.failed}\n!!! nothing was measured.`);
    process.exitCode = 1;
    return [`HTTP: the paths do not produce identical bodies — FAILED (no figures)`];
  }
  if (rep.verify.length > 0) {
    const shas = new Set(rep.verify.filter((v) => v.path !== HTTP_PATH_NAMES.direct && v.path !== HTTP_PATH_NAMES['tapgate-pass']).map((v) => v.bigSha));
    console.log(`  bodies: every rewriting path gave the expected bytes (50 MiB: sha256 ${[...shas].map((s) => s.slice(0, 16) + '…').join(', ')}; the sparse and the small body too, and the 50 MiB gzip-coded when asked for it); the paths without rewrite gave the original`);
    for (const v of rep.verify) {
      if (v.path === HTTP_PATH_NAMES.direct || v.path === HTTP_PATH_NAMES['tapgate-pass']) continue;
      console.log(`  keep-alive 50 MiB download (no Connection: close), ${v.path}: ${v.keepAliveSeconds === undefined ? `NOT COMPLETE after ${rep.keepAliveProbeSeconds} s (curl gave up)` : `${v.keepAliveSeconds.toFixed(2)} s`}`);
    }
  }
  const T = rep.throughput;
  const tg = byName(T, HTTP_PATH_NAMES.tapgate);
  const mi = byName(T, HTTP_PATH_NAMES.mitmproxy);
  const ng = byName(T, HTTP_PATH_NAMES.nginx);
  /** One table of downloads: MB/s, the middle box's CPU, ratios against rows of the same table. */
  const downloads = (title: string, rows: LiveRow[], cpuRows: LiveRow[], direct: boolean): void => {
    if (rows.length === 0) return;
    const m = byName(rows, HTTP_PATH_NAMES.mitmproxy);
    const n = byName(rows, HTTP_PATH_NAMES.nginx);
    const d = byName(rows, HTTP_PATH_NAMES.direct);
    console.log(`\n${title}`);
    console.log(
      table(
        rows.map((r) => ({
          path: r.name,
          'MB/s': r.value,
          runs: r.runs.map((x) => x.toFixed(1)).join(' '),
          'gw CPU s': byName(cpuRows, r.name)?.value ?? NaN,
          'MB per gw CPU s': perCpu(rep, r.name, cpuRows),
          'vs mitmproxy': ratio(r, m),
          'vs nginx sub_filter': ratio(r, n),
          ...(direct ? { 'vs direct': ratio(r, d) } : {}),
        })),
      ),
    );
  };
  downloads(
    `HTTP, one 50 MiB response body with ${rep.matches.toLocaleString('en-US')} matches (curl, Connection: close; MB/s = 10^6 bytes of the original body per second, median of rounds):`,
    T,
    rep.cpuSeconds,
    true,
  );
  const W = rep.warmThroughput;
  const wmi = byName(W, HTTP_PATH_NAMES.mitmproxy);
  const wng = byName(W, HTTP_PATH_NAMES.nginx);
  const wtg = byName(W, HTTP_PATH_NAMES.tapgate);
  downloads('HTTP, the same 50 MiB again right after, through the same process (warm: its JIT, memory pools and caches; same columns):', W, rep.warmCpuSeconds, true);
  downloads(
    'HTTP, the same 50 MiB asked for gzip (curl --compressed; the origin codes at level 1; tapgate decodes, rewrites and codes again, so does the mitmproxy addon with zlib, nginx asks its upstream for identity and codes the rewrite; MB/s of the decoded body; same columns):',
    rep.gzipThroughput,
    rep.gzipCpuSeconds,
    true,
  );
  downloads(
    `HTTP, the same 50 MiB with few matches (${rep.sparseMatches.toLocaleString('en-US')}, one of each per 64 KiB): the scan without the edits (same columns):`,
    rep.sparseThroughput,
    rep.sparseCpuSeconds,
    false,
  );
  const R = rep.rps;
  const L = rep.latency;
  if (R.length > 0) {
    const rmi = byName(R, HTTP_PATH_NAMES.mitmproxy);
    const rng = byName(R, HTTP_PATH_NAMES.nginx);
    const rdi = byName(R, HTTP_PATH_NAMES.direct);
    const ldi = byName(L, HTTP_PATH_NAMES.direct);
    console.log(
      `\nHTTP, small keep-alive requests (${Buffer.byteLength(SMALL_BODY)}-byte body, one match of each): wrk -t1 -c16 requests/s; wrk -t1 -c1 median latency (medians of rounds):`,
    );
    console.log(
      table(
        R.map((r) => {
          const l = byName(L, r.name);
          return {
            path: r.name,
            'req/s': r.value,
            runs: r.runs.map((x) => x.toFixed(0)).join(' '),
            'vs mitmproxy': ratio(r, rmi),
            'vs nginx sub_filter': ratio(r, rng),
            'vs direct': ratio(r, rdi),
            'p50 µs (c1)': l?.value ?? NaN,
            'added µs vs direct': l && ldi ? l.value - ldi.value : NaN,
          };
        }),
      ),
    );
  }
  if (rep.profile !== undefined) {
    const under = rep.profileWorkload === 'wrk' ? 'wrk -c16, small keep-alive requests' : 'the 50 MiB downloads';
    console.log(`\nCPU profile of tapgate (http agent) under ${under}: top self time (idle excluded)`);
    console.log(table(rep.profile.map((p) => ({ function: p.fn, where: p.where, 'self ms': p.selfMs, '%': p.pct }))));
  }
  for (const n of rep.notes) console.log(`note: ${n}`);

  const goals: string[] = [];
  const verdict = (ok: boolean) => (ok ? 'HOLDS' : 'MISSED');
  // The CPU figures say the same without the box's load: MB per CPU second of each middle box.
  const cpu = (a: LiveRow, b: LiveRow, rows = rep.cpuSeconds): string => {
    const x = perCpu(rep, a.name, rows);
    const y = perCpu(rep, b.name, rows);
    return Number.isFinite(x) && Number.isFinite(y) ? `; per CPU second ${x.toFixed(0)} vs ${y.toFixed(0)} MB, ×${(x / y).toFixed(2)}` : '';
  };
  if (tg && mi) goals.push(`HTTP throughput ≥ 3× mitmproxy's: tapgate ${tg.value.toFixed(1)} vs mitmproxy ${mi.value.toFixed(1)} MB/s (×${ratio(tg, mi).toFixed(2)}${cpu(tg, mi)}) — ${verdict(tg.value >= 3 * mi.value)}`);
  if (tg && ng) goals.push(`HTTP throughput ≥ nginx sub_filter's: tapgate ${tg.value.toFixed(1)} vs nginx ${ng.value.toFixed(1)} MB/s (×${ratio(tg, ng).toFixed(2)}${cpu(tg, ng)}) — ${verdict(tg.value >= ng.value)}`);
  if (wtg && wmi) goals.push(`HTTP throughput ≥ 3× mitmproxy's, warm (the second download): tapgate ${wtg.value.toFixed(1)} vs mitmproxy ${wmi.value.toFixed(1)} MB/s (×${ratio(wtg, wmi).toFixed(2)}${cpu(wtg, wmi, rep.warmCpuSeconds)}) — ${verdict(wtg.value >= 3 * wmi.value)}`);
  if (wtg && wng) goals.push(`HTTP throughput ≥ nginx sub_filter's, warm: tapgate ${wtg.value.toFixed(1)} vs nginx ${wng.value.toFixed(1)} MB/s (×${ratio(wtg, wng).toFixed(2)}${cpu(wtg, wng, rep.warmCpuSeconds)}) — ${verdict(wtg.value >= wng.value)}`);
  const ka = rep.verify.find((v) => v.path === HTTP_PATH_NAMES.tapgate);
  if (ka !== undefined && ka.keepAliveSeconds === undefined) {
    goals.push(`HTTP keep-alive: tapgate's 50 MiB response did not complete within ${rep.keepAliveProbeSeconds} s on a keep-alive connection (see bench/README.md) — BROKEN`);
  }
  return goals;
}
