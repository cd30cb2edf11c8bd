/**
 * `npm run bench`: every figure next to a baseline measured in the same run, medians, ratios.
 * `--quick` runs smaller workloads. Live (lab) figures need root and the lab; they are skipped
 * with a note when `--engine-only` is given.
 */
import { runEngineBench } from './engine.js';
import { benchLive } from './live.js';

const quick = process.argv.includes('--quick');
const engineOnly = process.argv.includes('--engine-only');

function table(rows: Array<Record<string, string | number>>): string {
  const cols = Object.keys(rows[0] ?? {});
  const cell = (v: string | number) => (typeof v === 'number' ? (Math.abs(v) >= 100 ? v.toFixed(0) : v.toFixed(2)) : v);
  const widths = cols.map((c) => Math.max(c.length, ...rows.map((r) => String(cell(r[c]!)).length)));
  const line = (vals: string[]) => '| ' + vals.map((v, i) => v.padEnd(widths[i]!)).join(' | ') + ' |';
  return [line(cols), '|' + widths.map((w) => '-'.repeat(w + 2)).join('|') + '|', ...rows.map((r) => line(cols.map((c) => String(cell(r[c]!)))))].join('\n');
}

async function main(): Promise<void> {
  console.log(`tapgate bench (${quick ? 'quick' : 'full'}) — node ${process.version}, ${new Date().toISOString()}`);
  console.log('\nEngine, in process (median of runs; ratio against pass-through in the same run):');
  const rows = runEngineBench(quick ? { segments: 5000, runs: 3 } : {});
  const base = rows.find((r) => r.name.startsWith('pass-through'))!;
  console.log(
    table(
      rows.map((r) => ({
        case: r.name,
        'segments/s': Math.round(r.segPerSec),
        'MB/s': r.mbPerSec,
        'vs pass-through': r.segPerSec / base.segPerSec,
      })),
    ),
  );
  if (engineOnly) return;
  if (process.getuid?.() !== 0) {
    console.log('\nLive (lab) figures skipped: they need root (namespaces, TAPs).');
    return;
  }
  console.log('\nLive, iperf3 client → server through the lab (median; ratio against the kernel bridge in the same run):');
  const live = await benchLive(quick ? { seconds: 2, runs: 1, log: (l) => console.error(l) } : { log: (l) => console.error(l) });
  console.log(table(live.map((r) => ({ path: r.name, 'Gbit/s': r.gbps, 'vs bridge': r.ratio }))));
}

await main();
