/**
 * The replace agent's literal search (replace.ts Scan), native when the addon `native/search.cc`
 * is built:
 * - `replaceLiterals`: the whole scan of a segment under literal rules alone (matches, joined
 *   edits, their bytes) in one call; null without the addon (the agent scans in JS then). Past
 *   64 rules what the one-pass scan gives up (and every segment of a set it does not take) goes
 *   to the set's Aho–Corasick automata (`literalAutomaton`, made once per set, kept here).
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
  index?: Int32Array | null, any?: Uint8Array | null, automaton?: object,
) => number;
interface Native {
  findAll?: FindAll;
  replaceLiterals?: ReplaceLiteralsNative;
  /** The Aho–Corasick automata of a packed rule set (native/search.cc), or null (too big); an addon built before them has none. */
  literalAutomaton?: (pats: Uint8Array, rules: Int32Array) => object | null;
  /** The addon takes the one-pass index (native/search.cc Many); an addon built before it does not. */
  many?: boolean;
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
  /** More than FEW_RULES rules: the index of their first bytes (manyIndex), else null. */
  many: { index: Int32Array; any: Uint8Array } | null;
  /**
   * Past 64 rules, the Aho–Corasick automata of the set (native/search.cc literalAutomaton),
   * made the first time a scan needs them: undefined until then, null when they would take
   * more than its memory bound (the JS scan then does what they would).
   */
  automaton?: object | null;
}

/**
 * Up to this many rules the native scan searches for each rule on its own (a vector search per
 * rule, 25 GB/s over bytes that do not match: fastest for a few); past it, one pass looks every
 * position up by its first two bytes (native/search.cc Many), 1–3 GB/s whatever the number of
 * rules. Measured on 64 KiB of English words (`node --expose-gc dist/bench/scan.js`, and per
 * segment by hand): 8 rules 53 µs each way, 64 rules 323 µs searched one by one against 36 µs
 * in one pass, 1,000 rules 35–71 µs (the JS scan, which had them past 64: 5 ms).
 */
export const FEW_RULES = 8;

/**
 * The longest pattern the one-pass scan takes: a position that begins a candidate costs a hash
 * of up to this many bytes (a hostile input can make every position one), and the end of a
 * segment up to this many partial checks. A set with a longer pattern is scanned as before (per
 * rule up to 64 rules, past them in JS), where a long pattern costs its own search only
 * (measured by a review: one rule of 10,000 bytes in a set of 9, over 64 KiB of its first byte,
 * took 700 ms per segment in one pass, 0.1 ms per rule).
 */
export const MANY_MAX_PATTERN = 64;

/** Whether a rule set is scanned in one pass (the addon takes it, more than FEW_RULES, none too long). */
function onePass(rules: readonly { pat: Buffer }[]): boolean {
  return addon?.many === true && rules.length > FEW_RULES && rules.every((r) => r.pat.length <= MANY_MAX_PATTERN);
}

/** Heads by byte (native/search.cc kH1). */
const H1 = 257;

/** FNV-1a of bytes, and the table slot of a pattern (native/search.cc SlotOf). */
function fnv(b: Uint8Array): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < b.length; i++) h = Math.imul(h ^ b[i]!, 0x01000193) >>> 0;
  return h;
}
function slotOf(h: number, len: number, bits: number): number {
  return Math.imul(h ^ Math.imul(len, 0x9e3779b1), 0x85ebca6b) >>> (32 - bits);
}

/**
 * The index of `Many` (native/search.cc, where its layout is): per kind (case-sensitive, then
 * case-insensitive with lowered patterns), the one-byte patterns by their byte, the longer ones by
 * their first byte and by their first two bytes (the distinct pairs sorted, each with its
 * patterns' distinct lengths and its rules), and every pattern in a hash table by its bytes
 * (chains ascending by rule; a pattern a rule before it has too is left out: it never wins).
 * Its size grows with the rules, but for `any`'s 64 KiB.
 */
function manyIndex(rules: readonly { pat: Buffer; ci: boolean }[]): { index: Int32Array; any: Uint8Array } {
  const one: number[][][] = [];
  const first: number[][][] = [];
  const two: Map<number, number[]>[] = [];
  for (let kind = 0; kind < 2; kind++) {
    one.push(Array.from({ length: H1 - 1 }, () => []));
    first.push(Array.from({ length: H1 - 1 }, () => []));
    two.push(new Map());
  }
  rules.forEach((r, i) => {
    const kind = r.ci ? 1 : 0;
    const p = r.pat;
    if (p.length === 1) one[kind]![p[0]!]!.push(i);
    else {
      first[kind]![p[0]!]!.push(i);
      const k = (p[0]! << 8) | p[1]!;
      const l = two[kind]!.get(k);
      if (l === undefined) two[kind]!.set(k, [i]);
      else l.push(i);
    }
  });
  const keys = two.map((m) => [...m.keys()].sort((a, b) => a - b));
  const head: number[] = [keys[0]!.length, keys[1]!.length, 0, 0, 0, 0, 0, 0, 0];
  const lens: number[] = [];
  const lists: number[] = [];
  const heads = (ls: readonly (readonly number[])[], into: number[]): void => {
    for (const l of ls) {
      head.push(into.length);
      for (const x of l) into.push(x);
    }
    head.push(into.length);
  };
  for (let kind = 0; kind < 2; kind++) {
    heads(one[kind]!, lists);
    heads(first[kind]!, lists);
  }
  for (let kind = 0; kind < 2; kind++) {
    const ls = keys[kind]!.map((k) => two[kind]!.get(k)!);
    for (const k of keys[kind]!) head.push(k);
    heads(ls.map((l) => [...new Set(l.map((r) => rules[r]!.pat.length))].sort((a, b) => a - b)), lens);
    heads(ls, lists);
  }
  // The hash table: at least twice as many slots as patterns.
  let bits = 1;
  while (1 << bits < 2 * rules.length) bits++;
  const table = new Int32Array(1 << bits).fill(-1);
  const tail = new Int32Array(1 << bits).fill(-1);
  const chain = new Int32Array(rules.length).fill(-1);
  const seen = new Set<string>();
  rules.forEach((r, i) => {
    if (r.pat.length < 2) return;
    const id = `${r.ci ? 1 : 0}:${r.pat.toString('latin1')}`;
    if (seen.has(id)) return;
    seen.add(id);
    const slot = slotOf(fnv(r.pat), r.pat.length, bits);
    if (table[slot] === -1) table[slot] = i;
    else chain[tail[slot]!] = i;
    tail[slot] = i;
  });
  const offLens = head.length;
  head[2] = bits;
  head[3] = offLens;
  head[4] = lens.length;
  head[5] = offLens + lens.length;
  head[6] = lists.length;
  head[7] = head[5] + lists.length;
  head[8] = head[7] + table.length;
  const index = new Int32Array(head[8] + rules.length);
  index.set(head);
  index.set(lens, head[3]);
  index.set(lists, head[5]);
  index.set(table, head[7]);
  index.set(chain, head[8]);
  const any = new Uint8Array(65536);
  rules.forEach((r) => {
    const p = r.pat;
    if (p.length >= 2) any[(p[0]! << 8) | p[1]!]! |= r.ci ? 2 : 1;
    else {
      // Bit 2 is read at the buffer's own bytes: a case-insensitive byte both ways.
      const bytes = r.ci && p[0]! >= 0x61 && p[0]! <= 0x7a ? [p[0]!, p[0]! - 0x20] : [p[0]!];
      for (const b of bytes) for (let k = 0; k < 256; k++) any[(b << 8) | k]! |= 4;
    }
  });
  return { index, any };
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
    minPat: rules.reduce((m, r) => Math.min(m, r.pat.length), Infinity),
    maxOut: rules.reduce((m, r) => Math.max(m, r.out.length), 0),
    many: onePass(rules) ? manyIndex(rules) : null,
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
  /** The one-pass scan met input crafted against it and did the rest rule by rule. */
  bailed: boolean;
}

let res = new Int32Array(1024);
let scratch = Buffer.allocUnsafeSlow(1 << 16);
/** The most the scratch buffers grow to (bytes each): a scan that could need more (long
 *  outputs of short patterns, a huge buffer) is sized to this, and one that really needs more
 *  is done by the JS scan instead. */
const SCRATCH_MAX = 4 << 20;

/** The automata of `p` (made at the first call), or null: too big, or an addon without them. */
function automatonOf(p: PackedLiterals): object | null {
  if (p.automaton === undefined) p.automaton = addon?.literalAutomaton?.(p.pats, p.rules) ?? null;
  return p.automaton;
}

/**
 * The replace agent's whole scan of a buffer under literal rules alone (replace.ts Scan.run,
 * EditRun), in one native call: null when the addon is not built (the agent scans in JS then),
 * or for a scan whose output outgrows SCRATCH_MAX; 'bailed' when the one-pass scan of more than
 * 64 rules met input crafted against it and the set's automata could not be made (the agent
 * scans this buffer in JS). Past 64 rules the automata (native/search.cc AcScan) do what the
 * one-pass scan gives up, and the whole buffer for a set it does not take (a pattern longer than
 * MANY_MAX_PATTERN); `automaton`: they do every buffer (tests and the scan bench compare; an error
 * when they cannot be made).
 */
export function replaceLiterals(p: PackedLiterals, buf: Buffer, lowered: Buffer | null, final: boolean, join: boolean, mergeGap: number, mergeSpan: number, automaton = false): LiteralScan | 'bailed' | null {
  const f = addon?.replaceLiterals;
  if (f === undefined) return null;
  // Searched rule by rule, the addon takes at most 64; past them the automata do a set Many does not take.
  const whole = automaton || (p.many === null && p.rules.length > 64 * 5);
  const ac = (whole ? automatonOf(p) : p.automaton) ?? undefined;
  if (whole && ac === undefined) {
    // Asked for by name (tests, the scan bench): no silent JS scan in their place.
    if (automaton) throw new Error('replace: the automata of this rule set could not be made (over their memory bound, or an addon without them)');
    return null;
  }
  // Every match is at least minPat bytes and becomes at most maxOut bytes (gaps are copied once).
  const maxEdits = Math.floor(buf.length / p.minPat) + 1;
  if ((4 + 4 * maxEdits) * 4 > SCRATCH_MAX) return null;
  if (res.length < 4 + 4 * maxEdits) res = new Int32Array(4 + 4 * maxEdits);
  const bound = Math.min(buf.length + maxEdits * p.maxOut, SCRATCH_MAX);
  if (scratch.length < bound) scratch = Buffer.allocUnsafeSlow(Math.min(Math.max(bound, scratch.length * 2), SCRATCH_MAX));
  const flags = (final ? 1 : 0) | (join ? 2 : 0) | (whole ? 4 : 0);
  const index = p.many?.index ?? null;
  const any = p.many?.any ?? null;
  let r = f(buf, lowered ?? buf, p.pats, p.rules, p.outs, flags, mergeGap, mergeSpan, res, scratch, index, any, ac);
  if (r === -4) {
    // The one-pass scan gave up past 64 rules before the automata were made: made now, once.
    const a = automatonOf(p);
    if (a === null) return 'bailed';
    r = f(buf, lowered ?? buf, p.pats, p.rules, p.outs, flags, mergeGap, mergeSpan, res, scratch, index, any, a);
  }
  // More output than SCRATCH_MAX: the JS scan (which allocates as it goes) does this buffer.
  if (r === -3) return null;
  // 1: the one-pass scan bailed out and the rest was done by the automata or rule by rule.
  if (r !== 0 && r !== 1) throw new Error(`replace: the native literal scan failed (${r}: addon bug)`);
  return { edits: res[0]!, matches: res[1]!, hold: res[2]!, res, scratch, bailed: r === 1 };
}
