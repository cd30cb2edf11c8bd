/**
 * The replace agent's scan of literal rules, native (native/search.cc `replaceLiterals`, one call
 * per segment: `nativeScan: 'always'`) against the JS scan in the same run (`nativeScan: false`:
 * Scan and EditRun, the occurrences from `findAll`), the rule set's Aho–Corasick automata alone
 * (`nativeScan: 'automaton'`: what scans a long list's segments the one-pass scan gives up), and
 * what the gateway runs (the default: the
 * native scan from NATIVE_SCAN_MIN_BYTES on): over 64 MiB fed in 64 KiB segments (what TAP GSO
 * hands over), random bytes under a pattern that never matches (the iperf3 benchmark's rule) and
 * a dense text body (a match every 59 bytes, joined edits), the HTTP benchmark's own body (two
 * matches on every 91-byte line); and
 * 16 MiB of 256-byte segments with one match each, fed to 1,000 agents in turn (small keep-alive
 * requests and responses on many connections); and 8 MiB of English words under 8, 64 and 1,000
 * rules (a redaction list: each rule searched on its own up to FEW_RULES, one pass past it), and
 * 1 MiB of the prefix all 1,000 rules share, repeated, and 1 MiB of a run of their first byte
 * (a list's hostile inputs).
 * GiB/s, medians of `runs` timed runs after one warm-up run, each path's runs together.
 *
 *   npm run build && node --expose-gc dist/bench/scan.js [--runs N]
 */
import { randomBytes } from 'node:crypto';
import { createReplace, NATIVE_SCAN_MIN_BYTES, type ReplaceRule } from '../agent/replace.js';
import { literalSearchBackend } from '../agent/literal-search.js';
import type { AgentContext, Direction } from '../agent/types.js';
import { NEVER_PATTERN } from './live.js';
import { HTTP_REWRITES, makeBody } from './http.js';

const CTX: AgentContext = {
  flowId: 'bench',
  client: { addr: '10.0.0.1', port: 40000 },
  server: { addr: '10.0.0.2', port: 80 },
  directions: new Set<Direction>(['s2c']),
};
const SEGMENT = 65_536;
const SEGMENTS = 1024;
/** The small segments: 16 MiB of them. */
const SMALL = 256;
const SMALLS = 65_536;

interface Case {
  name: string;
  rules: ReplaceRule[];
  /** Agents fed in turn, a segment each (connections sharing the gateway); default 1. */
  agents?: number;
  /** Made when the case runs (one case's 64 MiB at a time). */
  segments: () => Buffer[];
}

function cases(): Case[] {
  const line = 'Hello world, and a line of a dense body with many matches\n';
  const dense = Buffer.from(line.repeat(Math.ceil(SEGMENT / line.length)).slice(0, SEGMENT), 'latin1');
  const small = Buffer.alloc(SMALL, 'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n');
  small.write('Hello world', SMALL - 40, 'latin1');
  const words = 'alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu'.split(' ');
  const text = Buffer.from(Array.from({ length: 12_000 }, (_, i) => words[(i * 7919) % words.length] + (i % 13 === 0 ? '.\n' : ' ')).join('').slice(0, SEGMENT), 'latin1');
  const list = (n: number): ReplaceRule[] => Array.from({ length: n }, (_, i) => ({ find: i === 0 ? 'papa echo' : `secret-${i}-${words[i % words.length]!}`, with: 'X' }));
  const many = (n: number): Case => ({ name: `English words, ${n.toLocaleString('en-US')} rules (a match every 166 bytes)`, rules: list(n), segments: () => Array.from({ length: SEGMENTS / 8 }, () => text) });
  return [
    { name: `random bytes, "${NEVER_PATTERN}" (never matches)`, rules: [{ find: NEVER_PATTERN, with: 'REWRITTEN' }], segments: () => Array.from({ length: SEGMENTS }, () => randomBytes(SEGMENT)) },
    {
      name: 'dense text, "Hello world" every 59 bytes and "Good bye!" (none)',
      rules: [{ find: 'Hello world', with: 'Hi there' }, { find: 'Good bye!', with: 'Farewell' }],
      segments: () => Array.from({ length: SEGMENTS }, () => dense),
    },
    {
      name: 'the HTTP bench\'s dense body (big.txt: "Hello world" and "Good bye!" on every 91-byte line)',
      rules: [...HTTP_REWRITES],
      segments: () => {
        const body = makeBody(SEGMENT * SEGMENTS);
        return Array.from({ length: SEGMENTS }, (_, i) => body.subarray(i * SEGMENT, (i + 1) * SEGMENT));
      },
    },
    {
      name: '256-byte segments, one "Hello world" each, over 1,000 connections in turn',
      agents: 1000,
      rules: [{ find: 'Hello world', with: 'Hi there' }, { find: 'Good bye!', with: 'Farewell' }],
      segments: () => Array.from({ length: SMALLS }, () => small),
    },
    many(8),
    many(64),
    many(1000),
    {
      // Hostile input for a long list: the prefix its rules share, over and over (each position
      // starts a candidate of every rule; the one-pass scan tries a hash per length there).
      name: '"secret-" repeated, 1,000 rules that all begin with it (none matches)',
      rules: list(1000).slice(1),
      segments: () => Array.from({ length: SEGMENTS / 64 }, () => Buffer.from('secret-'.repeat(Math.ceil(SEGMENT / 7)).slice(0, SEGMENT), 'latin1')),
    },
    {
      // Worse: every byte begins a candidate of the longest length (64), so the one-pass scan
      // gives each segment up after 8 bytes hashed per byte, and the JS scan does it.
      name: 'a run of "a", 1,000 rules "a"×60 + 4 digits (none matches; the one-pass scan gives up)',
      rules: Array.from({ length: 1000 }, (_, i) => ({ find: 'a'.repeat(60) + String(i).padStart(4, '0'), with: 'X' })),
      segments: () => Array.from({ length: SEGMENTS / 64 }, () => Buffer.alloc(SEGMENT, 'a')),
    },
  ];
}

/** GiB/s of one run: the segments fed to fresh agents (c.agents in turn), as the gateway's factory makes them. */
function once(c: Case, segments: Buffer[], nativeScan: boolean | 'always' | 'automaton'): number {
  // The other path's garbage is not collected on this one's time (node --expose-gc).
  (globalThis as { gc?: () => void }).gc?.();
  const f = createReplace({ joinMatches: true, nativeScan });
  const agents = Array.from({ length: c.agents ?? 1 }, () => ({ a: f.create(c.rules, CTX), pos: 0 }));
  let bytes = 0;
  let edits = 0;
  const t = process.hrtime.bigint();
  for (let i = 0; i < segments.length; i++) {
    const s = segments[i]!;
    const x = agents[i % agents.length]!;
    edits += x.a.feed('s2c', x.pos, s).edits.length;
    x.pos += s.length;
    bytes += s.length;
  }
  const s = Number(process.hrtime.bigint() - t) / 1e9;
  if (edits < 0) throw new Error('unreachable');
  return (bytes / 2 ** 30) / s;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

export function runScanBench(runs = 5): { name: string; js: number; native: number; automata: number; byDefault: number }[] {
  return cases().map((c) => {
    // One path's runs together: interleaved, the JS scan's garbage slows the native runs by half.
    const segments = c.segments();
    const block = (nativeScan: boolean | 'always' | 'automaton') => {
      once(c, segments, nativeScan);
      return median(Array.from({ length: runs }, () => once(c, segments, nativeScan)));
    };
    const js = block(false);
    const native = block('always');
    const automata = block('automaton');
    const byDefault = block(true);
    return { name: c.name, js, native, automata, byDefault };
  });
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const i = process.argv.indexOf('--runs');
  const runs = i >= 0 ? Number(process.argv[i + 1]) : 5;
  console.log(`replace agent, literal rules (median GiB/s of ${runs} runs; search backend: ${literalSearchBackend}; default: native from ${NATIVE_SCAN_MIN_BYTES} bytes):`);
  console.log('| input | JS scan | native scan | native / JS | automata | default | default / best |');
  console.log('|---|---|---|---|---|---|---|');
  for (const r of runScanBench(runs)) {
    console.log(`| ${r.name} | ${r.js.toFixed(2)} | ${r.native.toFixed(2)} | ${(r.native / r.js).toFixed(2)} | ${r.automata.toFixed(2)} | ${r.byDefault.toFixed(2)} | ${(r.byDefault / Math.max(r.js, r.native)).toFixed(2)} |`);
  }
}
