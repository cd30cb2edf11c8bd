/**
 * The replace agent's literal search (replace.ts Scan), native when the addon `native/search.cc`
 * is built:
 * - `replaceLiterals`: the whole scan of a segment under literal rules alone (matches, joined
 *   edits, their bytes) in one call; null without the addon (the agent scans in JS then).
 * - `findAll`: the starts of a pattern's occurrences at or after `from` (overlapping ones too), in
 *   order, as many as fit an Int32Array: for the JS scan (a regex among the rules), one call per
 *   segment and rule however dense the matches; the addon's far search (AVX2 on the pattern's
 *   first and last bytes, glibc memmem without it: two to three times Buffer.indexOf's speed over
 *   bytes that do not match), or Buffer.indexOf without the addon (a checkout where `npm
 *   install` did not build addons): the same answers. `literalSearchBackend` says which runs.
 */
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

type FindAll = (hay: Uint8Array, pat: Uint8Array, from: number, out: Int32Array) => number;
type ReplaceLiteralsNative = (
  buf: Uint8Array, lowered: Uint8Array, pats: Uint8Array, rules: Int32Array, outs: Uint8Array,
  flags: number, mergeGap: number, mergeSpan: number, res: Int32Array, scratch: Uint8Array,
) => number;
interface Native {
  findAll?: FindAll;
  replaceLiterals?: ReplaceLiteralsNative;
}

/** <repo>/build/Release/search.node, from src/agent/ and dist/agent/ alike. */
const ADDON = fileURLToPath(new URL('../../build/Release/search.node', import.meta.url));

/** Buffer.indexOf: the same answers as the addon's (tests compare both). */
export const findAllJs: FindAll = (hay, pat, from, out) => {
  const h = Buffer.from(hay.buffer, hay.byteOffset, hay.byteLength);
  let k = 0;
  for (let i = h.indexOf(pat, from); i >= 0 && k < out.length; i = h.indexOf(pat, i + 1)) out[k++] = i;
  return k;
};

function loadNative(): Native | null {
  if (process.env.TAPGATE_JS_SEARCH === '1' || !existsSync(ADDON)) return null;
  try {
    const m = createRequire(import.meta.url)(ADDON) as Native;
    return typeof m.findAll === 'function' && typeof m.replaceLiterals === 'function' ? m : null;
  } catch {
    return null;
  }
}

const addon = loadNative();

/** The native search, or null when the addon is not built (or TAPGATE_JS_SEARCH=1). */
export const findAllNative: FindAll | null = addon?.findAll ?? null;

/** Which search runs: `native` (the addon) or `js` (Buffer.indexOf). */
export const literalSearchBackend: 'native' | 'js' = addon !== null ? 'native' : 'js';

/**
 * Starts of `pat` in `hay` at or after `from` (pat not empty), into `out`; returns the count
 * (out.length: there may be more, ask again from one past the last).
 */
export const findAll: FindAll = findAllNative ?? findAllJs;

/** A set of literal rules packed for `replaceLiterals` (made once per compiled rule set). */
export interface PackedLiterals {
  pats: Buffer;
  /** Per rule: pattern offset, length, case-insensitive (0/1), output offset, length. */
  rules: Int32Array;
  outs: Buffer;
  anyCi: boolean;
  /** Shortest pattern, longest output (the sizes of a scan's results). */
  minPat: number;
  maxOut: number;
}

export function packLiterals(rules: readonly { pat: Buffer; ci: boolean; out: Buffer }[]): PackedLiterals {
  const t = new Int32Array(rules.length * 5);
  let po = 0;
  let oo = 0;
  rules.forEach((r, i) => {
    t.set([po, r.pat.length, r.ci ? 1 : 0, oo, r.out.length], i * 5);
    po += r.pat.length;
    oo += r.out.length;
  });
  return {
    pats: Buffer.concat(rules.map((r) => r.pat)),
    rules: t,
    outs: Buffer.concat(rules.map((r) => r.out)),
    anyCi: rules.some((r) => r.ci),
    minPat: Math.min(...rules.map((r) => r.pat.length)),
    maxOut: Math.max(0, ...rules.map((r) => r.out.length)),
  };
}

/** What one native scan found: edits [at, len) of buf → scratch bytes [from, to). */
export interface LiteralScan {
  edits: number;
  matches: number;
  hold: number;
  /** [at, len, from, to] per edit. */
  res: Int32Array;
  /** The edits' bytes (valid until the next scan). */
  scratch: Buffer;
}

let res = new Int32Array(1024);
let scratch = Buffer.allocUnsafeSlow(1 << 16);
/** The most the scratch buffers grow to (bytes each): a scan that could need more (long
 *  outputs of short patterns, a huge buffer) is sized to this, and one that really needs more
 *  is done by the JS scan instead. */
const SCRATCH_MAX = 4 << 20;

/**
 * The replace agent's whole scan of a buffer under literal rules alone (replace.ts Scan.run,
 * EditRun), in one native call: null when the addon is not built (the agent scans in JS then);
 * null too for more than 64 rules, or a scan whose output outgrows SCRATCH_MAX.
 */
export function replaceLiterals(p: PackedLiterals, buf: Buffer, lowered: Buffer | null, final: boolean, join: boolean, mergeGap: number, mergeSpan: number): LiteralScan | null {
  const f = addon?.replaceLiterals;
  if (f === undefined || p.rules.length > 64 * 5) return null;
  // Every match is at least minPat bytes and becomes at most maxOut bytes (gaps are copied once).
  const maxEdits = Math.floor(buf.length / p.minPat) + 1;
  if ((4 + 4 * maxEdits) * 4 > SCRATCH_MAX) return null;
  if (res.length < 4 + 4 * maxEdits) res = new Int32Array(4 + 4 * maxEdits);
  const bound = Math.min(buf.length + maxEdits * p.maxOut, SCRATCH_MAX);
  if (scratch.length < bound) scratch = Buffer.allocUnsafeSlow(Math.min(Math.max(bound, scratch.length * 2), SCRATCH_MAX));
  const r = f(buf, lowered ?? buf, p.pats, p.rules, p.outs, (final ? 1 : 0) | (join ? 2 : 0), mergeGap, mergeSpan, res, scratch);
  // More output than SCRATCH_MAX: the JS scan (which allocates as it goes) does this buffer.
  if (r === -3) return null;
  if (r !== 0) throw new Error(`replace: the native literal scan failed (${r}: addon bug)`);
  return { edits: res[0]!, matches: res[1]!, hold: res[2]!, res, scratch };
}
