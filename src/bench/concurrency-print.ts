/**
 * The concurrency section's tables and goal lines (concurrency.ts; issue 18): requests/s and
 * resident memory per live connection, tapgate with a rule against the Node forwarder.
 */
import type { ConcurrencyReport } from './concurrency.js';
import { median } from './live.js';

type Cell = string | number;
type Table = (rows: Array<Record<string, Cell>>) => string;

const kib = (b: number): number => b / 1024;

/** Prints the tables; returns the goal lines. */
export function printConcurrency(rep: ConcurrencyReport, table: Table): string[] {
  const nf = rep.paths.find((p) => p.path.startsWith('Node forwarder'));
  const tg = rep.paths.find((p) => p.path === 'tapgate GSO, rule');
  const tq = rep.paths.find((p) => p.path.startsWith('tapgate') && p !== tg);
  const ratio = (a: number, b: number | undefined): number => (b !== undefined && b > 0 ? a / b : NaN);
  if (rep.paths.every((p) => p.wrkRps.length === 0 && p.opened === 0)) {
    // The profile alone (`--only= --profile=conc`): nothing measured.
    printProfile(rep, table);
    for (const n of rep.notes) console.log(`note: ${n}`);
    return [];
  }
  console.log(
    `\nConcurrency: wrk -t2 -c${rep.wrkConns} keep-alive against nginx (median of runs: each the first run after the path's start, and "warm" the second, after every close; ` +
      `RSS: the gateway's highest resident set during the first run minus before it, per connection):`,
  );
  console.log(
    table(
      rep.paths.map((p) => ({
        path: p.path,
        'req/s': median(p.wrkRps),
        runs: p.wrkRps.map((x) => x.toFixed(0)).join(' '),
        'vs Node fwd': ratio(median(p.wrkRps), nf && median(nf.wrkRps)),
        'warm req/s': median(p.wrkRpsWarm),
        'warm runs': p.wrkRpsWarm.map((x) => x.toFixed(0)).join(' '),
        'warm vs Node fwd': ratio(median(p.wrkRpsWarm), nf && median(nf.wrkRpsWarm)),
        'RSS KiB/conn': kib(median(p.wrkRssPerConn)),
        'wrk errors': String(p.wrkErrors),
      })),
    ),
  );
  console.log(`\nConcurrency: ${rep.open} keep-alive connections opened and held (conngen.ts, one request each), then one request on every one:`);
  console.log(
    table(
      rep.paths.map((p) => ({
        path: p.path,
        opened: String(p.opened),
        failed: String(p.openFailed),
        'opened/s': (p.opened / p.openMs) * 1000,
        tracked: p.tracked === undefined ? '-' : String(p.tracked),
        'RSS KiB/conn': kib(p.rssPerTracked),
        'round req/s': p.roundRps,
        'vs Node fwd': ratio(p.roundRps, nf?.roundRps),
        'round failed': String(p.roundFailed),
      })),
    ),
  );
  const goals: string[] = [];
  const verdict = (ok: boolean) => (ok ? 'HOLDS' : 'MISSED');
  if (tg?.full !== undefined) {
    const f = tg.full;
    console.log(
      `Table full (limits.maxConnections ${rep.open}): ${f.failed} of ${f.tried} more connections failed, ${f.tableFull} SYNs refused (tableFull); ` +
        `afterwards ${f.answeredAfter} of ${f.of} live connections answered`,
    );
    // Opens that failed earlier (a SYN lost in a burst past its retries) left entries that are
    // free or will be (expired, or closed and taken over by a new SYN): as many of the extra
    // connections may take them.
    const free = Math.max(0, rep.open - (tg.opened ?? rep.open));
    goals.push(
      `table full: every extra connection refused (but for ${free} free entries) and every live one answering: ${f.failed}/${f.tried} refused, ${f.answeredAfter}/${f.of} answered — ` +
        verdict(f.failed >= f.tried - free && f.tableFull >= f.failed && f.answeredAfter === f.of),
    );
  }
  if (tg !== undefined && nf !== undefined) {
    const r = ratio(median(tg.wrkRps), median(nf.wrkRps));
    goals.push(`requests/s with ${rep.wrkConns} connections ≥ 0.8× Node forwarder: ${median(tg.wrkRps).toFixed(0)} vs ${median(nf.wrkRps).toFixed(0)} (×${r.toFixed(2)}) — ${verdict(r >= 0.8)}`);
    const rw = ratio(median(tg.wrkRpsWarm), median(nf.wrkRpsWarm));
    goals.push(`… warm (the second run after each start): ${median(tg.wrkRpsWarm).toFixed(0)} vs ${median(nf.wrkRpsWarm).toFixed(0)} (×${rw.toFixed(2)}) — ${verdict(rw >= 0.8)}`);
    const w = kib(median(tg.wrkRssPerConn));
    goals.push(`RSS per live connection ≤ 2 KiB with a rule (wrk ×${rep.wrkConns}): ${w.toFixed(2)} KiB — ${verdict(w <= 2)}`);
    const o = kib(tg.rssPerTracked);
    goals.push(`RSS per live connection ≤ 2 KiB with a rule (${tg.opened} held): ${o.toFixed(2)} KiB — ${verdict(o <= 2)}`);
  }
  if (tq !== undefined && nf !== undefined) {
    const r = ratio(median(tq.wrkRps), median(nf.wrkRps));
    const rw = ratio(median(tq.wrkRpsWarm), median(nf.wrkRpsWarm));
    goals.push(`… ${tq.path}: ${median(tq.wrkRps).toFixed(0)} req/s (×${r.toFixed(2)} the Node forwarder; warm ×${rw.toFixed(2)}), RSS ${kib(median(tq.wrkRssPerConn)).toFixed(2)} / ${kib(tq.rssPerTracked).toFixed(2)} KiB per connection — ${verdict(r >= 0.8)}`);
  }
  for (const n of rep.notes) console.log(`note: ${n}`);
  printProfile(rep, table);
  return goals;
}

function printProfile(rep: ConcurrencyReport, table: Table): void {
  if (rep.profile === undefined) return;
  console.log(`\nCPU profile of tapgate (GSO, rule) under wrk -c${rep.wrkConns} (${rep.profile.rps.toFixed(0)} req/s profiled): top self time (idle excluded)`);
  console.log(table(rep.profile.entries.map((p) => ({ function: p.fn, where: p.where, 'self ms': p.selfMs, '%': p.pct }))));
}
