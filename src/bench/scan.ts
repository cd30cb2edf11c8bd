/**
 * The replace agent's scan of literal rules, native (native/search.cc `replaceLiterals`, one call
 * per segment) against the JS scan in the same run (`nativeScan: false`: Scan and EditRun, the
 * occurrences from `findAll`), over 64 MiB fed in 64 KiB segments (what TAP GSO hands over):
 * random bytes under a pattern that never matches (the iperf3 benchmark's rule), and a dense
 * text body (a match every 59 bytes, joined edits: like the HTTP benchmark's body). GiB/s, medians
 * of `runs` timed runs after one warm-up run, each path's runs together.
 *
 *   npm run build && node --expose-gc dist/bench/scan.js [--runs N]
 */
import { randomBytes } from 'node:crypto';
import { createReplace, type ReplaceRule } from '../agent/replace.js';
import { literalSearchBackend } from '../agent/literal-search.js';
import type { AgentContext, Direction } from '../agent/types.js';
import { NEVER_PATTERN } from './live.js';

const CTX: AgentContext = {
  flowId: 'bench',
  client: { addr: '10.0.0.1', port: 40000 },
  server: { addr: '10.0.0.2', port: 80 },
  directions: new Set<Direction>(['s2c']),
};
const SEGMENT = 65_536;
const SEGMENTS = 1024;

interface Case {
  name: string;
  rules: ReplaceRule[];
  /** Made when the case runs (one case's 64 MiB at a time). */
  segments: () => Buffer[];
}

function cases(): Case[] {
  const line = 'Hello world, and a line of a dense body with many matches\n';
  const dense = Buffer.from(line.repeat(Math.ceil(SEGMENT / line.length)).slice(0, SEGMENT), 'latin1');
  return [
    { name: `random bytes, "${NEVER_PATTERN}" (never matches)`, rules: [{ find: NEVER_PATTERN, with: 'REWRITTEN' }], segments: () => Array.from({ length: SEGMENTS }, () => randomBytes(SEGMENT)) },
    {
      name: 'dense text, "Hello world" every 59 bytes and "Good bye!" (none)',
      rules: [{ find: 'Hello world', with: 'Hi there' }, { find: 'Good bye!', with: 'Farewell' }],
      segments: () => Array.from({ length: SEGMENTS }, () => dense),
    },
  ];
}

/** GiB/s of one run: every segment fed to a fresh agent, as the gateway's factory makes it. */
function once(c: Case, segments: Buffer[], nativeScan: boolean): number {
  // The other path's garbage is not collected on this one's time (node --expose-gc).
  (globalThis as { gc?: () => void }).gc?.();
  const a = createReplace({ joinMatches: true, nativeScan }).create(c.rules, CTX);
  let pos = 0;
  let edits = 0;
  const t = process.hrtime.bigint();
  for (const s of segments) {
    edits += a.feed('s2c', pos, s).edits.length;
    pos += s.length;
  }
  const s = Number(process.hrtime.bigint() - t) / 1e9;
  if (edits < 0) throw new Error('unreachable');
  return (pos / 2 ** 30) / s;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

export function runScanBench(runs = 5): { name: string; js: number; native: number }[] {
  return cases().map((c) => {
    // One path's runs together: interleaved, the JS scan's garbage slows the native runs by half.
    const segments = c.segments();
    const block = (nativeScan: boolean) => {
      once(c, segments, nativeScan);
      return median(Array.from({ length: runs }, () => once(c, segments, nativeScan)));
    };
    const js = block(false);
    const native = block(true);
    return { name: c.name, js, native };
  });
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const i = process.argv.indexOf('--runs');
  const runs = i >= 0 ? Number(process.argv[i + 1]) : 5;
  console.log(`replace agent, literal rules, 64 MiB in 64 KiB segments (median GiB/s of ${runs} runs; search backend: ${literalSearchBackend}):`);
  console.log('| input | JS scan | native scan | native / JS |');
  console.log('|---|---|---|---|');
  for (const r of runScanBench(runs)) console.log(`| ${r.name} | ${r.js.toFixed(2)} | ${r.native.toFixed(2)} | ${(r.native / r.js).toFixed(2)} |`);
}
