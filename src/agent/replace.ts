/**
 * The `replace` agent: literal and regex find/replace on each direction's byte stream, with a
 * result that does not depend on how the stream was cut into `feed` calls. Its semantics
 * (leftmost match, rule order, the regex window of `maxMatch` bytes, the two regex engines), what
 * it holds back while undecided and how it avoids rescanning are in docs/ARCHITECTURE.md §3
 * ("The replace agent"). Invariants kept here: at most len(find)-1 bytes (literal) or
 * maxMatch-1 bytes (regex) are held per rule; a match is accepted only when no earlier start is
 * undecided; the snapshot is the position, the held tail and the byte before it.
 */

import type {
  Agent,
  AgentContext,
  AgentFactory,
  AgentOutput,
  Direction,
  Edit,
  FlushReason,
} from './types.js';
import { NO_EDITS } from './types.js';
import { backtrackRun, BUDGET_EXCEEDED, Candidates, compilePattern, PikeVM, SearchState, shortestMatch, type CompiledPattern } from './regex-engine.js';
import { FEW_RULES, findAll, packLiterals, replaceLiterals, type LiteralScan, type PackedLiterals } from './literal-search.js';
import { transientBytes, transientConcat } from '../util/bytes.js';

export interface LiteralRule {
  find: string;
  with: string;
  ignoreCase?: boolean;
}

export interface RegexRule {
  regex: string;
  with: string;
  /** Longest match found, in bytes: 1..MAX_MATCH_LIMIT. Also the hold-back bound (maxMatch - 1). */
  maxMatch: number;
  /** Subset of REGEX_FLAGS. */
  flags?: string;
  /**
   * 'linear' (Pike VM, no backreferences or lookarounds) or 'backtracking' (everything, each
   * match attempt stopped after maxSteps). Absent: linear when the pattern allows it, else
   * backtracking with DEFAULT_MAX_STEPS (the config loader demands it be written).
   */
  engine?: RegexEngine;
  /** Backtracking only: steps one match attempt may take, 1..MAX_STEPS_LIMIT. */
  maxSteps?: number;
  /**
   * Backtracking only: what a match attempt stopped by maxSteps does. 'reset' (the default: the
   * bytes from that start were not inspected) gives the connection up, those bytes never pass;
   * 'pass' takes it as no match there. Counted either way (regexBudgetExceeded).
   */
  budgetExceeded?: BudgetExceeded;
}

export type RegexEngine = 'linear' | 'backtracking';
export const BUDGET_EXCEEDED_ACTIONS = ['reset', 'pass'] as const;
export type BudgetExceeded = (typeof BUDGET_EXCEEDED_ACTIONS)[number];

export type ReplaceRule = LiteralRule | RegexRule;
export type ReplaceConfig = readonly ReplaceRule[];

export const MAX_MATCH_LIMIT = 65536;
export const REGEX_FLAGS = 'imsu';
export const REGEX_ENGINES: readonly RegexEngine[] = ['linear', 'backtracking'];
/**
 * Default step budget of a backtracking match attempt: a few times what an ordinary pattern
 * needs in a 1,000-byte window, far below what a catastrophic one needs (fib(64) for
 * `(a|aa)+b` over 64 bytes). One step is one instruction, about 10 ns.
 */
export const DEFAULT_MAX_STEPS = 10_000;
export const MAX_STEPS_LIMIT = 10_000_000;

/**
 * The agent's counters: each agent keeps its own (the snapshot carries them), and adds to the
 * gateway-wide object given to `createReplace`, if any.
 */
export function newReplaceCounters() {
  return {
    /** Backtracking match attempts stopped by their maxSteps budget, taken as no match there. */
    regexBudgetExceeded: 0,
    /** Matches replaced (several close ones may travel as one edit: see `EditRun`). */
    matches: 0,
    /**
     * Matches a forced decision split (a hold timeout or limit released their start undecided)
     * that the bytes after it completed: the rest never passed, the connection was given up.
     */
    splitMatches: 0,
    /** Connections given up at a match attempt stopped by its budget (budgetExceeded: reset). */
    regexBudgetResets: 0,
    /**
     * Segments where the one-pass scan of a long list of literals (literal-search.ts FEW_RULES)
     * met input crafted against it (a candidate of its longest length at every byte) and the rest
     * was scanned by the list's Aho–Corasick automata (past 64 rules), rule by rule, or in JS
     * (automata too big): the same answers, at their cost.
     */
    longListFallbacks: 0,
  };
}
export type ReplaceCounters = ReturnType<typeof newReplaceCounters>;

export interface ReplaceOptions {
  /** Gateway-wide counters every agent of the factory adds to (not carried by snapshots). */
  counters?: ReplaceCounters | undefined;
  /**
   * How the linear engine finds the leftmost match: 'unanchored' (default, one pass over the
   * text) or 'per-start' (the Pike VM run at every candidate start: O(text × maxMatch × pattern)),
   * kept for the benchmark and the differential tests.
   */
  linearSearch?: 'unanchored' | 'per-start';
  /**
   * Join close matches into one edit (see MERGE_GAP): what the gateway's factories do. Off, every
   * match is its own edit (the agent's tests compare edit lists, which joining makes depend on
   * how the stream was cut; the bytes do not).
   */
  joinMatches?: boolean;
  /**
   * Literal rules alone are scanned by the addon in one call per segment (literal-search.ts
   * replaceLiterals) when it is built and the segment has NATIVE_SCAN_MIN_BYTES or more, or
   * there are more than FEW_RULES of them (the JS scan searches for each rule in turn);
   * 'always': every segment; 'automaton': every segment, by the rule set's Aho–Corasick
   * automata (what does a long list's segment the one-pass scan gives up); false: always the JS
   * scan (the tests compare them).
   */
  nativeScan?: boolean | 'always' | 'automaton';
}

/**
 * Below this many bytes the JS scan runs even where the addon could: one native call has a fixed
 * cost (its ten arguments, a copy of the edits' bytes, its result buffers) that a short segment
 * with a match or two does not earn back in the gateway. Measured 2026-12-06: under wrk -c10000
 * (small requests, one match per answer) the gateway served 26,055 against 24,343 req/s (medians
 * of three alternating runs) with it, and its profile's replace matcher time halved. In isolation
 * the two are within ±15 % either way on 256-byte segments (`dist/bench/scan.js`: native 10 %
 * faster over 1,000 agents in turn; by hand, JS 150–450 ns faster per feed). A dense body gains
 * from 256 bytes on (1 KiB, 22 matches: 2.3 against 4.0 µs per feed) and by 2.5× from 16 KiB.
 */
export const NATIVE_SCAN_MIN_BYTES = 1024;

/** One problem with a rule: which field, and what is wrong. */
export interface RuleProblem {
  field: 'find' | 'regex' | 'with' | 'maxMatch' | 'flags' | 'ignoreCase' | 'engine' | 'maxSteps' | 'budgetExceeded' | 'rule';
  message: string;
}

/** The state `snapshot` returns (version 1). */
export interface ReplaceSnapshot {
  v: 1;
  dirs: Record<Direction, { pos: number; undecided: number; prev: number; tail: string; forced?: ForcedJson }>;
  /** Present once a counter is non-zero. */
  counters?: ReplaceCounters;
}

// ---------------------------------------------------------------------------------------------
// Compiled rules

/** A piece of a replacement template: literal bytes, a group number, or a group name. */
type TplPart = Buffer | number | string;

interface CompiledLiteral {
  kind: 'lit';
  /** Pattern bytes (ASCII-lowered when ci). */
  pat: Buffer;
  /** KMP failure function of pat. */
  fail: Int32Array;
  ci: boolean;
  out: Buffer;
}

interface CompiledRegex {
  kind: 're';
  maxMatch: number;
  cp: CompiledPattern;
  /** The linear engine, or null: backtracking with maxSteps. */
  pike: PikeVM | null;
  maxSteps: number;
  /** An attempt stopped by maxSteps gives the connection up (budgetExceeded: reset). */
  failClosed: boolean;
  tpl: TplPart[];
}

type CompiledRule = CompiledLiteral | CompiledRegex;

function isRegexRule(r: ReplaceRule): r is RegexRule {
  return typeof (r as RegexRule).regex === 'string';
}

/**
 * Everything wrong with one rule (empty = valid). The config loader reports these with file
 * positions; `compileReplaceRules` throws on the first. A config's rule also sets
 * `requireEngine` (the engine a pattern needs must be chosen) and `refuseDead`: refused when it
 * could never match (only the empty string, or a shortest match longer than maxMatch), its bytes
 * passing unrewritten while the config reads as if they were caught; the agent itself runs such a
 * rule (it never matches).
 */
export function replaceRuleProblems(rule: unknown, opts: { requireEngine?: boolean; refuseDead?: boolean } = {}): RuleProblem[] {
  const out: RuleProblem[] = [];
  if (typeof rule !== 'object' || rule === null) {
    return [{ field: 'rule', message: 'expected an object with `find` or `regex`' }];
  }
  const r = rule as Record<string, unknown>;
  const hasFind = r['find'] !== undefined;
  const hasRegex = r['regex'] !== undefined;
  if (hasFind === hasRegex) {
    out.push({ field: 'rule', message: 'expected exactly one of `find` (literal) or `regex`' });
    return out;
  }
  if (typeof r['with'] !== 'string') out.push({ field: 'with', message: 'expected a string' });
  if (hasFind) {
    if (typeof r['find'] !== 'string' || r['find'] === '') {
      out.push({ field: 'find', message: 'expected a non-empty string' });
    }
    if (r['ignoreCase'] !== undefined && typeof r['ignoreCase'] !== 'boolean') {
      out.push({ field: 'ignoreCase', message: 'expected a boolean' });
    }
    return out;
  }
  const mm = r['maxMatch'];
  if (mm === undefined) {
    out.push({ field: 'maxMatch', message: `required for a regex rule: the longest match in bytes, 1 to ${MAX_MATCH_LIMIT}` });
  } else if (typeof mm !== 'number' || !Number.isInteger(mm) || mm < 1 || mm > MAX_MATCH_LIMIT) {
    out.push({ field: 'maxMatch', message: `expected an integer from 1 to ${MAX_MATCH_LIMIT}` });
  }
  const flags = r['flags'] ?? '';
  if (typeof flags !== 'string') {
    out.push({ field: 'flags', message: `expected a string of flags from "${REGEX_FLAGS}"` });
    return out;
  }
  for (let i = 0; i < flags.length; i++) {
    const f = flags[i]!;
    if (!REGEX_FLAGS.includes(f) || flags.indexOf(f) !== i) {
      out.push({
        field: 'flags',
        message: `flag "${f}" ${REGEX_FLAGS.includes(f) ? 'repeated' : 'not allowed'}; allowed: "${REGEX_FLAGS}"`,
      });
      return out;
    }
  }
  if (typeof r['regex'] !== 'string' || r['regex'] === '') {
    out.push({ field: 'regex', message: 'expected a non-empty string' });
    return out;
  }
  let re: RegExp;
  try {
    re = new RegExp(r['regex'], flags);
  } catch (e) {
    out.push({ field: 'regex', message: `does not compile: ${(e as Error).message}` });
    return out;
  }
  const engine = r['engine'];
  if (engine !== undefined && !REGEX_ENGINES.includes(engine as RegexEngine)) {
    out.push({ field: 'engine', message: `expected one of: ${REGEX_ENGINES.join(', ')}` });
  }
  const steps = r['maxSteps'];
  if (steps !== undefined) {
    if (typeof steps !== 'number' || !Number.isInteger(steps) || steps < 1 || steps > MAX_STEPS_LIMIT) {
      out.push({ field: 'maxSteps', message: `expected an integer from 1 to ${MAX_STEPS_LIMIT}` });
    } else if (engine !== 'backtracking') {
      out.push({ field: 'maxSteps', message: 'applies to engine: backtracking only (the linear engine needs no budget)' });
    }
  }
  const onBudget = r['budgetExceeded'];
  if (onBudget !== undefined) {
    if (!BUDGET_EXCEEDED_ACTIONS.includes(onBudget as BudgetExceeded)) {
      out.push({ field: 'budgetExceeded', message: `expected one of: ${BUDGET_EXCEEDED_ACTIONS.join(', ')}` });
    } else if (engine !== 'backtracking') {
      out.push({ field: 'budgetExceeded', message: 'applies to engine: backtracking only (the linear engine needs no budget)' });
    }
  }
  const cp = compilePattern(r['regex'], flags);
  if (typeof cp === 'string') {
    out.push({ field: 'regex', message: cp });
    return out;
  }
  if (cp.nonLinear !== undefined && engine !== 'backtracking' && (engine === 'linear' || opts.requireEngine === true)) {
    out.push({ field: 'regex', message: linearRefusal(cp.nonLinear) });
  }
  if (cp.longLookbehind !== undefined) {
    const raw = cp.longLookbehind.length > 24 ? `${cp.longLookbehind.slice(0, 21)}...` : cp.longLookbehind;
    out.push({ field: 'regex', message: `lookbehind "${raw}" can look more than one byte back (its body, or a \\b, \\B, ^ or lookaround inside it), and a rule sees one byte before a match: it would never hold (negated: always); match the context and put it back with a capture group, e.g. "(Host: )[^\\r]+" with "$1example.org"` });
  }
  // A rule that can never match passes every byte it was written to catch (a review, 2026-12-07:
  // `Authorization: Bearer \S+` with maxMatch 16 was accepted and never fired).
  const shortest = opts.refuseDead === true ? shortestMatch(cp.main) : 0;
  if (shortest === Infinity) {
    out.push({ field: 'regex', message: 'can only match the empty string, and empty matches are ignored: it would never rewrite anything' });
  } else if (typeof mm === 'number' && Number.isInteger(mm) && shortest > mm) {
    out.push({ field: 'maxMatch', message: `${mm} is shorter than the shortest match of the regex (${shortest} bytes): a match longer than maxMatch is never found, so it would never rewrite anything` });
  }
  if (typeof r['with'] === 'string') {
    const p = parseTemplate(r['with'], re);
    if (typeof p === 'string') out.push({ field: 'with', message: p });
  }
  return out;
}

/** Why the linear engine refuses a pattern, and what to do. */
function linearRefusal(n: { what: string; offset: number }): string {
  return (
    `the linear engine cannot run the ${n.what} at pattern index ${n.offset}: lookarounds and ` +
    'backreferences need backtracking, which can take exponential time; rewrite the pattern ' +
    'without it, or set `engine: backtracking` (each match attempt then stops after `maxSteps` ' +
    `steps, default ${DEFAULT_MAX_STEPS}, counted as regexBudgetExceeded; the connection is then ` +
    'reset unless the rule says `budgetExceeded: pass`)'
  );
}

/**
 * Compiled rules per config object: a rule set is compiled once, not per connection (the
 * compiled form is read-only; the RegExps' lastIndex is set before every use). Configs are not
 * mutated after loading.
 */
const compiledCache = new WeakMap<object, readonly CompiledRule[]>();

function compiledRules(cfg: unknown): readonly CompiledRule[] {
  if (typeof cfg !== 'object' || cfg === null) return compileReplaceRules(cfg);
  let c = compiledCache.get(cfg);
  if (c === undefined) {
    c = compileReplaceRules(cfg);
    compiledCache.set(cfg, c);
  }
  return c;
}

/** Validate and compile; throws an Error naming the rule on the first problem. */
export function compileReplaceRules(cfg: unknown): CompiledRule[] {
  if (!Array.isArray(cfg) || cfg.length === 0) {
    throw new Error('replace: expected a non-empty list of rules');
  }
  return cfg.map((rule: unknown, i: number): CompiledRule => {
    const problems = replaceRuleProblems(rule);
    if (problems.length > 0) {
      const p = problems[0]!;
      throw new Error(`replace: rule ${i}: ${p.field}: ${p.message}`);
    }
    const r = rule as ReplaceRule;
    if (!isRegexRule(r)) {
      const ci = r.ignoreCase === true;
      const raw = Buffer.from(r.find, 'utf8');
      const pat = ci ? asciiLower(raw, Buffer.allocUnsafeSlow(raw.length)) : raw;
      return { kind: 'lit', pat, fail: kmpFailure(pat), ci, out: Buffer.from(r.with, 'utf8') };
    }
    const flags = r.flags ?? '';
    const tpl = parseTemplate(r.with, new RegExp(r.regex, flags)) as TplPart[];
    const cp = compilePattern(r.regex, flags) as CompiledPattern;
    const linear = r.engine === 'linear' || (r.engine === undefined && cp.nonLinear === undefined);
    return {
      kind: 're',
      maxMatch: r.maxMatch,
      cp,
      pike: linear ? new PikeVM(cp) : null,
      maxSteps: r.maxSteps ?? DEFAULT_MAX_STEPS,
      failClosed: r.budgetExceeded !== 'pass',
      tpl,
    };
  });
}

/**
 * Split a replacement template into parts, following GetSubstitution (ECMA-262) for `$$`, `$&`,
 * `$n`, `$nn`, `$<name>`. Returns an error message for "$`" and "$'".
 */
function parseTemplate(t: string, re: RegExp): TplPart[] | string {
  const probe = new RegExp(`${re.source}|`, re.flags.replace(/[gy]/g, '')).exec('')!;
  const groups = probe.length - 1;
  const named = probe.groups !== undefined;
  const parts: TplPart[] = [];
  let lit = '';
  const pushLit = (): void => {
    if (lit !== '') parts.push(Buffer.from(lit, 'utf8'));
    lit = '';
  };
  for (let i = 0; i < t.length; i++) {
    const c = t[i]!;
    if (c !== '$' || i + 1 >= t.length) {
      lit += c;
      continue;
    }
    const n = t[i + 1]!;
    if (n === '$') {
      lit += '$';
      i++;
    } else if (n === '&') {
      pushLit();
      parts.push(0);
      i++;
    } else if (n === '`' || n === "'") {
      return `"$${n}" is not supported in a stream (the text around a match is not known)`;
    } else if (n >= '0' && n <= '9') {
      const two = i + 2 < t.length && t[i + 2]! >= '0' && t[i + 2]! <= '9' ? Number(n + t[i + 2]) : -1;
      const one = Number(n);
      if (two >= 1 && two <= groups) {
        pushLit();
        parts.push(two);
        i += 2;
      } else if (one >= 1 && one <= groups) {
        pushLit();
        parts.push(one);
        i++;
      } else {
        lit += '$';
      }
    } else if (n === '<' && named) {
      const end = t.indexOf('>', i + 2);
      if (end < 0) {
        lit += '$';
      } else {
        const name = t.slice(i + 2, end);
        // JavaScript puts nothing for a name the regex lacks: in a config that is a typo that
        // silently deletes the matched text.
        if (!Object.hasOwn(probe.groups!, name)) return `"$<${name}>" names no group of the regex (its named groups: ${Object.keys(probe.groups!).join(', ')})`;
        pushLit();
        parts.push(name);
        i = end;
      }
    } else {
      lit += '$';
    }
  }
  pushLit();
  return parts;
}

/** The replacement for a match: `caps` are slot pairs into the latin1 string `s`. */
function expand(tpl: TplPart[], caps: Int32Array, s: string, names: ReadonlyMap<string, number>): Buffer {
  if (tpl.length === 1 && Buffer.isBuffer(tpl[0])) return tpl[0];
  const bufs: Buffer[] = [];
  for (const p of tpl) {
    if (Buffer.isBuffer(p)) bufs.push(p);
    else {
      const g = typeof p === 'number' ? p : names.get(p);
      if (g === undefined) continue;
      const cs = caps[2 * g]!;
      const ce = caps[2 * g + 1]!;
      if (cs >= 0 && ce > cs) bufs.push(Buffer.from(s.substring(cs, ce), 'latin1'));
    }
  }
  return bufs.length === 1 ? bufs[0]! : Buffer.concat(bufs);
}

function kmpFailure(p: Uint8Array): Int32Array {
  const f = new Int32Array(p.length);
  let k = 0;
  for (let i = 1; i < p.length; i++) {
    while (k > 0 && p[i] !== p[k]) k = f[k - 1]!;
    if (p[i] === p[k]) k++;
    f[i] = k;
  }
  return f;
}

/** A Buffer over the same bytes. */
function asBuffer(t: Uint8Array): Buffer {
  return Buffer.from(t.buffer, t.byteOffset, t.length);
}

/** b ASCII-lowered into `out` (a compiled pattern's own memory; by default transient, for a scan). */
function asciiLower(b: Uint8Array, out = asBuffer(transientBytes(b.length))): Buffer {
  for (let i = 0; i < b.length; i++) {
    const c = b[i]!;
    out[i] = c >= 0x41 && c <= 0x5a ? c | 0x20 : c;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The scanner: one pass over the bytes [base, base + buf.length) of a direction

/**
 * "No position" among the scan's indices in buf (RuleEvent.start, ScanResult.resetAt, the scan's
 * limit): above any index (a scanned buffer is a segment plus held bytes, far below it; Scan.run
 * refuses one of NO_POS bytes or more, which only the agent's API could be given) and, unlike
 * Infinity, a small integer. A field that once holds a double makes V8 box every value of it (a
 * heap number for each read that escapes), and from RuleEvent.start such boxed positions spread
 * into the edits, the commands and the stream engine's fields: the representation of those
 * changed at a gateway's first real traffic, after the JIT warm-up, and threw the optimised frame
 * path away (the first 50 MiB of a dense rewrite ran at about 250 MB/s instead of 300 in process).
 */
const NO_POS = 0x3fffffff;

/** Next event of one rule from a position: a decided match, an undecided start, or nothing. */
interface RuleEvent {
  /** Index in buf; NO_POS = no match and nothing undecided from the position on. */
  start: number;
  len: number;
  decided: boolean;
  out: Buffer;
}

const NONE: RuleEvent = Object.freeze({ start: NO_POS, len: 0, decided: true, out: Buffer.alloc(0) });
const EMPTY = Buffer.alloc(0);

/**
 * Close matches travel as one edit: an edit is a command in the engine's list (per-command work
 * on every segment, ACK and retransmission), and a body with a match every few dozen bytes made
 * that work, not the scan, the cost. Matches at most MERGE_GAP bytes apart are joined, with the
 * original bytes between them copied into the replacement, while the joined original range stays
 * within MERGE_SPAN bytes: that bounds what a receiver's ACK inside the range makes the sender
 * resend (the engine maps such an ACK to the range's start). The output bytes are the same.
 */
export const MERGE_GAP = 256;
export const MERGE_SPAN = 2048;

/**
 * Where a joined edit's bytes are assembled (then copied out once): scans run one at a time, and
 * an edit owns its copy before the next scan starts.
 */
let scratch = Buffer.allocUnsafe(16384);

/** Builds the edit list of one scan, joining close matches (see MERGE_GAP). */
class EditRun {
  readonly edits: Edit[] = [];
  matches = 0;
  /** The open edit: original range [at, end) in buf positions; its output is `first` alone, or
   *  scratch[from, from + len) once a second match joined it. */
  private at = -1;
  private end = -1;
  private first: Uint8Array = EMPTY;
  private len = -1;
  /** scratch[0, from) holds the bytes of this scan's closed joined edits; the open one's follow. */
  private from = 0;
  /** Per joined edit: its index in `edits` and its bytes' [from, to) in scratch. */
  private readonly joined: number[] = [];

  constructor(
    private readonly buf: Buffer,
    private readonly base: number,
    private readonly join: boolean,
  ) {}

  add(start: number, len: number, out: Uint8Array): void {
    this.matches++;
    if (this.join && this.at >= 0 && start - this.end <= MERGE_GAP && start + len - this.at <= MERGE_SPAN) {
      if (this.len < 0) {
        this.len = 0;
        this.put(this.first);
      }
      this.reserve(start - this.end + out.length);
      this.len += this.buf.copy(scratch, this.from + this.len, this.end, start);
      scratch.set(out, this.from + this.len);
      this.len += out.length;
      this.end = start + len;
      return;
    }
    this.close();
    this.at = start;
    this.end = start + len;
    this.first = out;
    this.len = -1;
  }

  /** The edits; the joined ones share one copy of their bytes (transient: the engine copies). */
  finish(): Edit[] {
    this.close();
    const j = this.joined;
    if (j.length > 0) {
      const own = transientBytes(this.from);
      own.set(scratch.subarray(0, this.from));
      for (let k = 0; k < j.length; k += 3) this.edits[j[k]!]!.data = own.subarray(j[k + 1]!, j[k + 2]!);
    }
    return this.edits;
  }

  private put(b: Uint8Array): void {
    this.reserve(b.length);
    scratch.set(b, this.from + this.len);
    this.len += b.length;
  }

  private reserve(n: number): void {
    const used = this.from + this.len;
    if (used + n <= scratch.length) return;
    const bigger = Buffer.allocUnsafe(Math.max(scratch.length * 2, used + n));
    scratch.copy(bigger, 0, 0, used);
    scratch = bigger;
  }

  private close(): void {
    if (this.at < 0) return;
    if (this.len >= 0) {
      this.joined.push(this.edits.length, this.from, this.from + this.len);
      this.from += this.len;
      this.edits.push({ at: this.base + this.at, len: this.end - this.at, data: EMPTY });
    } else this.edits.push({ at: this.base + this.at, len: this.end - this.at, data: this.first });
    this.at = -1;
  }
}

interface ScanResult {
  edits: Edit[];
  /** Matches in them. */
  matches: number;
  /** Index in buf where the undecided tail starts (buf.length = nothing held). */
  hold: number;
  /** Backtracking attempts stopped by their budget. */
  giveUps: number;
  /** Index in buf of the first such attempt of a rule that fails closed (NO_POS: none). */
  resetAt: number;
  /** The one-pass scan of a long list gave up on this buffer (ReplaceCounters.longListFallbacks). */
  bailed?: boolean;
}

/** Occurrence starts fetched per call of findAll, per literal rule (scratch: a scan runs alone). */
const OCC_BATCH = 256;
const occScratch: Int32Array[] = [];

/**
 * The occurrences of one literal rule's pattern in a scanned buffer, in order, fetched from
 * literal-search.ts a batch at a time: a segment costs one search call per rule, not one per match.
 */
class Occurrences {
  private n = 0;
  private i = 0;
  /** Where the next batch starts (one past the last start fetched); -1: none left. */
  private from = 0;

  constructor(
    private readonly hay: Buffer,
    private readonly pat: Buffer,
    private readonly out: Int32Array,
  ) {}

  /** The first occurrence starting at or after `pos`, or -1. */
  first(pos: number): number {
    const out = this.out;
    for (;;) {
      while (this.i < this.n) {
        const s = out[this.i]!;
        if (s >= pos) return s;
        this.i++;
      }
      if (this.from < 0) return -1;
      const n = findAll(this.hay, this.pat, Math.max(pos, this.from), out);
      if (n < 0) throw new Error('replace: the literal search refused its arguments (addon bug)');
      this.n = n;
      this.i = 0;
      this.from = n === out.length ? out[n - 1]! + 1 : -1;
      if (n === 0) return -1;
    }
  }
}

/** A rule set of literals alone, packed for the native scan (null: a regex among them). */
const packedCache = new WeakMap<readonly CompiledRule[], PackedLiterals | null>();
function packedOf(rules: readonly CompiledRule[]): PackedLiterals | null {
  let p = packedCache.get(rules);
  if (p === undefined) {
    p = rules.every((r) => r.kind === 'lit') ? packLiterals(rules as readonly CompiledLiteral[]) : null;
    packedCache.set(rules, p);
  }
  return p;
}

/**
 * The edits of a native scan, their bytes copied out of its scratch (reused by the next scan)
 * into transient bytes: the engine copies an answer's bytes into its commands' store
 * (agent/types.ts), so they need not outlive the batch, and hot memory is reused.
 */
function nativeResult(s: LiteralScan, base: number): ScanResult {
  const edits: Edit[] = new Array(s.edits);
  const r = s.res;
  const used = s.edits > 0 ? r[4 + 4 * (s.edits - 1) + 3]! : 0;
  const own = used > 0 ? transientBytes(used) : EMPTY;
  if (used > 0) own.set(s.scratch.subarray(0, used));
  for (let i = 0, k = 4; i < s.edits; i++, k += 4) edits[i] = { at: base + r[k]!, len: r[k + 1]!, data: own.subarray(r[k + 2]!, r[k + 3]!) };
  return { edits, matches: s.matches, hold: s.hold, giveUps: 0, resetAt: NO_POS, bailed: s.bailed };
}

class Scan {
  private lowered: Buffer | undefined;
  private str: string | undefined;
  /** 1 when str starts with the context byte before buf, else 0. */
  private readonly off: number;
  private giveUps = 0;
  /** The native one-pass scan gave this buffer up (replaceLiterals 'bailed'): the JS scan does it. */
  private bailed = false;
  /**
   * Starts where an attempt of a fail-closed rule was given up, and the rule's index, not yet
   * known to be covered (run: a match taken over them, or at them by an earlier rule, would have
   * been taken anyway; one the scan passes uncovered was not inspected).
   */
  private readonly stopped: number[] = [];
  private readonly stoppedRule: number[] = [];
  private limit = NO_POS;
  /** Per rule, its candidate starts in buf (searches come at increasing positions). */
  private readonly cands: (Candidates | undefined)[] = [];
  /** Per literal rule, its occurrences in buf. */
  private readonly occ: (Occurrences | undefined)[] = [];

  constructor(
    private readonly buf: Buffer,
    private readonly prev: number,
    private readonly final: boolean,
    private readonly perStart: boolean,
    /** Per rule, where the linear search stopped (kept from feed to feed; created by the first
     *  regex rule that searches, so literal rules keep none). */
    private readonly kept: Pick<DirState, 'searches'>,
    private readonly join: boolean,
  ) {
    this.off = prev >= 0 ? 1 : 0;
  }

  run(rules: readonly CompiledRule[], base: number, native: boolean, automaton = false): ScanResult {
    // Far above anything the gateway feeds (a segment and the held bytes before it).
    if (this.buf.length >= NO_POS) throw new RangeError(`replace: a scan of ${this.buf.length} bytes (at most ${NO_POS - 1})`);
    // No start at or after `limit` can be accepted by this scan: a regex rule is undecided from
    // n - maxMatch + 1 on. A rule's search stops there (else a backtracking rule retries, at every
    // feed, every start another rule's long window holds back).
    this.limit = NO_POS;
    if (!this.final) for (const r of rules) if (r.kind === 're') this.limit = Math.min(this.limit, this.buf.length - r.maxMatch + 1);
    const packed = native ? packedOf(rules) : null;
    if (packed !== null) {
      const lowered = packed.anyCi ? (this.lowered ??= asciiLower(this.buf)) : null;
      const s = replaceLiterals(packed, this.buf, lowered, this.final, this.join, MERGE_GAP, MERGE_SPAN, automaton);
      if (s === 'bailed') this.bailed = true;
      else if (s !== null) return nativeResult(s, base);
    }
    const run = new EditRun(this.buf, base, this.join);
    const ev: (RuleEvent | undefined)[] = new Array(rules.length);
    let pos = 0;
    for (;;) {
      let best: RuleEvent = NONE;
      let bestR = rules.length;
      for (let r = 0; r < rules.length; r++) {
        let e = ev[r];
        if (e === undefined || e.start < pos) ev[r] = e = this.next(rules[r]!, r, pos, base);
        if (e.start < best.start) {
          best = e; // strict: at equal starts the earlier rule stays
          bestR = r;
        }
      }
      const done = best.start === NO_POS || !best.decided;
      const hold = best.start === NO_POS ? this.buf.length : best.start;
      // A stopped start the scan passes uncovered: decide cuts there, nothing from it is taken.
      const resetAt = this.stopped.length > 0 ? this.uncovered(done ? hold : best.start, done ? hold : best.start + best.len, done ? -1 : bestR) : NO_POS;
      if (done || resetAt !== NO_POS) return { edits: run.finish(), matches: run.matches, hold, giveUps: this.giveUps, resetAt, bailed: this.bailed };
      run.add(best.start, best.len, best.out);
      pos = best.start + best.len;
    }
  }

  /**
   * The first stopped start before `start` (nothing is taken there), or at it when the stopped
   * rule comes before rule `r` (it would have won there): NO_POS when none. Starts the match
   * [start, end) covers are forgotten (and, at the end of a scan, those from the hold on: they
   * are scanned again with more bytes).
   */
  private uncovered(start: number, end: number, r: number): number {
    const q = this.stopped;
    const qr = this.stoppedRule;
    let first = NO_POS;
    let k = 0;
    for (let i = 0; i < q.length; i++) {
      if (q[i]! < start || (q[i] === start && qr[i]! < r)) first = Math.min(first, q[i]!);
      else if (q[i]! >= end) {
        q[k] = q[i]!;
        qr[k++] = qr[i]!;
      }
    }
    q.length = qr.length = k;
    return first;
  }

  private next(rule: CompiledRule, r: number, pos: number, base: number): RuleEvent {
    return rule.kind === 'lit' ? this.nextLiteral(rule, r, pos) : this.nextRegex(rule, r, pos, base);
  }

  private nextLiteral(rule: CompiledLiteral, r: number, pos: number): RuleEvent {
    const hay = rule.ci ? (this.lowered ??= asciiLower(this.buf)) : this.buf;
    const pat = rule.pat;
    const m = pat.length;
    const occ = (this.occ[r] ??= new Occurrences(hay, pat, (occScratch[r] ??= new Int32Array(OCC_BATCH))));
    const i = occ.first(pos);
    if (i >= 0) return { start: i, len: m, decided: true, out: rule.out };
    if (this.final) return NONE;
    // No complete match: the longest suffix (starting at or after pos) that is a proper prefix
    // of the pattern is undecided. Fewer than m bytes are looked at, so k < m.
    const n = hay.length;
    const fail = rule.fail;
    let k = 0;
    for (let j = Math.max(pos, n - m + 1); j < n; j++) {
      const c = hay[j]!;
      while (k > 0 && pat[k] !== c) k = fail[k - 1]!;
      if (pat[k] === c) k++;
    }
    return k > 0 ? { start: n - k, len: 0, decided: false, out: EMPTY } : NONE;
  }

  /**
   * The leftmost decided match from pos, else the first undecided start. The linear engine
   * searches all candidate starts in one pass and runs the Pike VM once, at the start found, for
   * the match and its captures; the backtracking engine is tried at each candidate in turn.
   */
  private nextRegex(rule: CompiledRegex, r: number, at: number, base: number): RuleEvent {
    const n = this.buf.length;
    // The byte before buf unknown (a resync gap): no match that may read it starts at buf[0].
    const pos = this.prev === PREV_UNKNOWN && rule.cp.looksBack ? Math.max(at, 1) : at;
    // Starts below decidedEnd have their whole window available.
    const decidedEnd = this.final ? n : Math.min(Math.max(pos, n - rule.maxMatch + 1), Math.max(pos, this.limit) + 1);
    const candidates = (this.cands[r] ??= new Candidates(rule.cp, this.buf, rule.maxMatch));
    if (rule.pike !== null && !this.perStart) {
      const state = ((this.kept.searches ??= [])[r] ??= new SearchState());
      const opts = { base, final: this.final, state, candidates };
      const q = rule.pike.search(() => this.text(), this.buf, this.off, pos, decidedEnd, rule.maxMatch, opts);
      if (q >= 0) {
        const e = this.windowMatch(rule, r, q);
        if (e === undefined) throw new Error(`replace: the linear search found a match at ${q} that the Pike VM does not (engine bug)`);
        return e;
      }
    } else {
      for (let q = candidates.next(pos, decidedEnd); q >= 0; q = candidates.next(q + 1, decidedEnd)) {
        const e = this.windowMatch(rule, r, q);
        if (e) return e;
      }
    }
    if (this.final || decidedEnd >= n) return NONE;
    return { start: decidedEnd, len: 0, decided: false, out: EMPTY };
  }

  /** The data as latin1, preceded by the context byte when there is one. */
  private text(): string {
    return (this.str ??= (this.off ? String.fromCharCode(this.prev) : '') + this.buf.toString('latin1'));
  }

  /** The rule's match at buf index q, seen through its window, or undefined. */
  private windowMatch(rule: CompiledRegex, ri: number, q: number): RuleEvent | undefined {
    const s = this.text();
    const at = q + this.off;
    const lo = at > 0 ? at - 1 : 0;
    const hi = Math.min(at + rule.maxMatch, s.length);
    let caps: Int32Array | null;
    if (rule.pike !== null) caps = rule.pike.run(s, lo, at, hi);
    else {
      const r = backtrackRun(rule.cp, s, lo, at, hi, { left: rule.maxSteps });
      if (r === BUDGET_EXCEEDED) {
        this.giveUps++;
        if (rule.failClosed) {
          this.stopped.push(q);
          this.stoppedRule.push(ri);
        }
        return undefined;
      }
      caps = r;
    }
    if (caps === null || caps[1] === caps[0]) return undefined;
    return { start: q, len: caps[1]! - caps[0]!, decided: true, out: expand(rule.tpl, caps, s, rule.cp.names) };
  }
}

// ---------------------------------------------------------------------------------------------
// The agent

interface DirState {
  /** End of the data fed: the next `feed` must start here. */
  pos: number;
  /** Start of the undecided tail (the last answer's undecidedFrom). */
  undecided: number;
  /** Bytes [undecided, pos). */
  tail: Buffer;
  /** The byte at undecided - 1 (regex context), -1 at the stream start, PREV_UNKNOWN after a
   *  resync gap until a byte is decided. */
  prev: number;
  /** Runtime, not state: per rule, where its linear search stopped (see `SearchState`); null
   *  until a regex rule searches (literal rules keep none: an idle connection's size). */
  searches: (SearchState | undefined)[] | null;
  /** After a forced decision (hold timeout or limit), what may still show it split a match. */
  forced: Forced | null;
}

/**
 * A hold timeout or limit decided a tail that may have been the start of a match (the seed's
 * method can only wait or decide). The rule's promise holds only if no match crosses such a
 * point: the bytes from the earliest start still undecided there are kept and scanned with what
 * comes (and, at the next flush, as if the stream ended there: what that flush would release
 * must not complete a match either), until every start before the last point is decided. A
 * match found across a point is a pattern the stream would have carried split: the agent gives
 * up on the connection (fail closed).
 */
interface Forced {
  /** Positions of the forced decisions still open (ascending; each the end of the data fed then). */
  points: number[];
  /** Original bytes [pos - bytes.length, pos): from the earliest start undecided at a point. */
  bytes: Buffer;
  /** The byte before them (regex context), -1 at the stream start. */
  prev: number;
  /**
   * Runtime, not state: where the check's linear searches stopped, for all rules and for each
   * rule alone (as `DirState.searches`), so a sender dribbling bytes after a forced decision
   * costs what the normal scan costs, not a rescan of the kept bytes per feed.
   */
  searches: Pick<DirState, 'searches'>;
  alone: Pick<DirState, 'searches'>[];
  /** Flat [from, to) pairs: the tails the forced decisions decided as if the stream ended there. */
  regions: number[];
  /** Flat [at, len) pairs: the matches those decisions replaced (each its own, not joined). */
  made: number[];
}

function forcedOf(points: number[], bytes: Buffer, prev: number, regions: number[] = [], made: number[] = []): Forced {
  return { points, bytes, prev, searches: { searches: null }, alone: [], regions, made };
}

interface ForcedJson {
  points: number[];
  prev: number;
  bytes: string;
  regions?: number[];
  made?: number[];
}

/**
 * `DirState.prev` after a cluster resync gap: the byte before is not known (not the stream start,
 * where `^` and `\b` would match): a regex rule that reads it (CompiledPattern.looksBack) takes no
 * match starting at the first byte after the gap; literal rules are not affected.
 */
const PREV_UNKNOWN = -2;

function freshDir(): DirState {
  return { pos: 0, undecided: 0, tail: EMPTY, prev: -1, searches: null, forced: null };
}

/** The state of a direction never fed (shared, read-only: `st` copies it before a change). */
const FRESH: Readonly<DirState> = Object.freeze(freshDir());

class ReplaceAgent implements Agent {
  /** Per-direction state, created on the first non-empty feed (an idle connection holds none). */
  private c2s: DirState | null;
  private s2c: DirState | null;
  /** Created on the first count (most connections never count anything). */
  private ctr: ReplaceCounters | null;

  constructor(
    private readonly rules: readonly CompiledRule[],
    private readonly dirs: ReadonlySet<Direction>,
    private readonly opts: ReplaceOptions,
    st?: Record<Direction, DirState>,
    counters?: ReplaceCounters,
  ) {
    this.c2s = st?.c2s ?? null;
    this.s2c = st?.s2c ?? null;
    this.ctr = counters ?? null;
  }

  get name(): string {
    return 'replace';
  }

  rewrites(): number {
    return this.ctr?.matches ?? 0;
  }

  get counters(): ReplaceCounters {
    return (this.ctr ??= newReplaceCounters());
  }

  /** The state of `dir` for reading (FRESH when never fed). */
  private peek(dir: Direction): Readonly<DirState> {
    return (dir === 'c2s' ? this.c2s : this.s2c) ?? FRESH;
  }

  /** The state of `dir` for changing (created on first use). */
  private st(dir: Direction): DirState {
    if (dir === 'c2s') return (this.c2s ??= freshDir());
    return (this.s2c ??= freshDir());
  }

  feed(dir: Direction, pos: number, data: Uint8Array): AgentOutput {
    if (!this.dirs.has(dir)) return NO_EDITS;
    const cur = this.peek(dir);
    if (pos !== cur.pos) {
      throw new Error(`replace: ${dir} fed at ${pos}, expected ${cur.pos} (engine bug)`);
    }
    if (data.length === 0) return { edits: [], undecidedFrom: cur.undecided };
    const st = this.st(dir);
    const chunk = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    const f = st.forced;
    const why = f !== null ? this.crossed(st, f, asBuffer(transientConcat([f.bytes, chunk])), st.pos - f.bytes.length, false) : false;
    if (why !== false) {
      // The rest of the match (or of what was not inspected) never passes: what is held and
      // what came are deleted, the connection given up.
      st.pos = pos + data.length;
      return this.gaveUp(st, { at: st.undecided, len: st.pos - st.undecided, data: EMPTY }, why);
    }
    // The held tail and the new bytes are scanned as one (transient: decide keeps copies).
    const buf = st.tail.length > 0 ? asBuffer(transientConcat([st.tail, chunk])) : chunk;
    st.pos = pos + data.length;
    return this.decide(st, buf, false);
  }

  flush(dir: Direction, reason: FlushReason): AgentOutput {
    if (!this.dirs.has(dir)) return NO_EDITS;
    const cur = this.peek(dir);
    if (cur.tail.length === 0 && cur.forced === null) return { edits: [], undecidedFrom: cur.pos };
    const st = this.st(dir);
    const tail = st.tail;
    const tailPrev = st.prev;
    const f = st.forced;
    // What this flush releases must not complete a match across an earlier point: checked as if
    // the stream ended here (a regex window not yet complete is cut, as the flush cuts it).
    const why = f !== null ? this.crossed(st, f, f.bytes, st.pos - f.bytes.length, true) : false;
    if (why !== false) return this.gaveUp(st, { at: st.undecided, len: st.pos - st.undecided, data: EMPTY }, why);
    const forcedNow = reason !== 'fin' && reason !== 'rst' && tail.length > 0;
    const from0 = st.undecided;
    // What this forced decision replaces, match by match: a match the rest of the stream makes
    // (a lookahead, \b, \B or $ that saw the cut as the end) that is not one of these was released unreplaced.
    const made: number[] = [];
    if (forcedNow) {
      const es = new Scan(tail, tailPrev, true, this.opts.linearSearch === 'per-start', { searches: null }, false).run(this.rules, from0, false).edits;
      for (const e of es) made.push(e.at, e.len);
    }
    const out = tail.length > 0 ? this.decide(st, tail, true) : { edits: [], undecidedFrom: st.pos };
    if (out.abort !== undefined) return out;
    if (reason === 'fin' || reason === 'rst') {
      st.forced = null;
      return out;
    }
    // Still open: starts before an earlier point that more bytes may complete.
    if (f !== null) this.crossed(st, f, f.bytes, st.pos - f.bytes.length, false);
    const open = st.forced;
    if (open === null) {
      if (tail.length > 0) st.forced = forcedOf([st.pos], tail, tailPrev, [from0, st.pos], made);
    } else if (tail.length > open.bytes.length) st.forced = forcedOf([...open.points, st.pos], tail, tailPrev, [...open.regions, ...(forcedNow ? [from0, st.pos] : [])], [...open.made, ...made]);
    else {
      if (open.points[open.points.length - 1] !== st.pos) open.points.push(st.pos); // a second flush with nothing fed between: one point
      if (forcedNow) {
        open.regions.push(from0, st.pos);
        open.made.push(...made);
      }
    }
    return out;
  }

  /**
   * Whether `buf` (original bytes from stream position `start`, ending where the data fed ends)
   * holds a match across one of `f`'s points. Not final: also what stays open of `f` (null once
   * every start before its last point is decided).
   */
  private crossed(st: DirState, f: Forced, buf: Buffer, start: number, final: boolean): false | 'split-match' | 'regex-budget' {
    // Each match its own edit (not joined), on the JS scan, with search states of its own (a
    // final check's are thrown away): a check only, nothing of it is counted.
    const perStart = this.opts.linearSearch === 'per-start';
    const inRegion = (at: number): boolean => {
      for (let i = 0; i < f.regions.length; i += 2) if (at >= f.regions[i]! && at < f.regions[i + 1]!) return true;
      return false;
    };
    const made = (e: Edit): boolean => {
      for (let i = 0; i < f.made.length; i += 2) if (f.made[i] === e.at && f.made[i + 1] === e.len) return true;
      return false;
    };
    const across = (edits: readonly Edit[]) => edits.some((e) => f.points.some((p) => e.at < p && e.at + e.len > p) || (inRegion(e.at) && !made(e)));
    const scan = new Scan(buf, f.prev, final, perStart, final ? { searches: null } : f.searches, false);
    const { edits, hold, resetAt } = scan.run(this.rules, start, false);
    if (across(edits)) return 'split-match';
    const last = f.points[f.points.length - 1]!;
    // An attempt stopped by its budget at a start a forced decision decided: that start is
    // never scanned again (the normal scan goes on from the last point), so it was not inspected.
    if (start + resetAt < last) return 'regex-budget';
    const from = start + hold;
    // An undecided start (a longer rule's prefix: "abcdefgh" over "abcd") stops the leftmost
    // scan and hides a later match across a point (of "bcd") that the normal scan, restarted at
    // the point, releases: each rule alone from there.
    if (this.rules.length > 1 && from < last) {
      const rest = buf.subarray(hold);
      const prev = hold > 0 ? buf[hold - 1]! : f.prev;
      for (let r = 0; r < this.rules.length; r++) {
        const kept = final ? { searches: null } : (f.alone[r] ??= { searches: null });
        const alone = new Scan(rest, prev, final, perStart, kept, false).run([this.rules[r]!], from, false);
        if (across(alone.edits)) return 'split-match';
        if (from + alone.resetAt < last) return 'regex-budget';
      }
    }
    if (final) return false;
    const points = f.points.filter((p) => p > from);
    if (points.length === 0) st.forced = null;
    else {
      f.points = points;
      const keptR: number[] = [];
      for (let i = 0; i < f.regions.length; i += 2) if (f.regions[i + 1]! > from) keptR.push(f.regions[i]!, f.regions[i + 1]!);
      f.regions = keptR;
      const keptM: number[] = [];
      for (let i = 0; i < f.made.length; i += 2) if (f.made[i]! >= from) keptM.push(f.made[i]!, f.made[i + 1]!);
      f.made = keptM;
      f.bytes = Buffer.from(buf.subarray(hold));
      f.prev = hold > 0 ? buf[hold - 1]! : f.prev;
      st.forced = f;
    }
    return false;
  }

  /**
   * The agent gives up on the connection: a match a forced decision split, or a match attempt
   * stopped by its budget (`budgetExceeded: reset`). `kept`: the edits decided before; `del`
   * deletes what is not released yet from there.
   */
  private gaveUp(st: DirState, del: Edit, why: 'split-match' | 'regex-budget' = 'split-match', kept: Edit[] = []): AgentOutput {
    st.forced = null;
    st.undecided = st.pos;
    st.tail = EMPTY;
    st.prev = PREV_UNKNOWN;
    const counter = why === 'split-match' ? 'splitMatches' : 'regexBudgetResets';
    this.counters[counter]++;
    const all = this.opts.counters;
    if (all !== undefined) all[counter]++;
    if (del.len > 0) kept.push(del);
    return { edits: kept, undecidedFrom: st.pos, abort: `replace:${why}` };
  }

  private decide(st: DirState, buf: Buffer, final: boolean): AgentOutput {
    const base = st.undecided;
    const scan = new Scan(buf, st.prev, final, this.opts.linearSearch === 'per-start', st, this.opts.joinMatches === true);
    const ns = this.opts.nativeScan;
    const native = ns === 'always' || ns === 'automaton' || (ns !== false && (buf.length >= NATIVE_SCAN_MIN_BYTES || this.rules.length > FEW_RULES));
    const { edits, matches, hold, giveUps, resetAt, bailed } = scan.run(this.rules, base, native, ns === 'automaton');
    if (bailed === true) {
      this.counters.longListFallbacks++;
      if (this.opts.counters !== undefined) this.opts.counters.longListFallbacks++;
    }
    if (giveUps > 0 || matches > 0) {
      const own = this.counters;
      own.regexBudgetExceeded += giveUps;
      own.matches += matches;
      const all = this.opts.counters;
      if (all !== undefined) {
        all.regexBudgetExceeded += giveUps;
        all.matches += matches;
      }
    }
    if (resetAt !== NO_POS) {
      // A start whose attempt was stopped: the bytes from it were not inspected and never pass
      // (nor those of an edit that reaches it); the edits before it still apply.
      let cut = base + resetAt;
      const kept: Edit[] = [];
      for (const e of edits) {
        if (e.at + e.len <= cut) kept.push(e);
        else {
          if (e.at < cut) cut = e.at;
          break;
        }
      }
      return this.gaveUp(st, { at: cut, len: st.pos - cut, data: EMPTY }, 'regex-budget', kept);
    }
    if (hold > 0) {
      st.prev = buf[hold - 1]!;
      st.undecided = base + hold;
      // Copy: the caller may reuse its buffer, and a concat would pin the whole chunk.
      st.tail = hold < buf.length ? Buffer.from(buf.subarray(hold)) : EMPTY;
    } else if (buf !== st.tail) {
      st.tail = Buffer.from(buf);
    }
    return { edits, undecidedFrom: st.undecided };
  }

  /** Cluster takeover after a gap (types.ts): a match in progress is abandoned. */
  resync(dir: Direction, pos: number): void {
    const st = this.st(dir);
    st.pos = pos;
    st.undecided = pos;
    st.tail = EMPTY;
    st.prev = pos === 0 ? -1 : PREV_UNKNOWN;
    st.searches = null;
    st.forced = null;
  }

  snapshot(): ReplaceSnapshot {
    const d = (s: Readonly<DirState>) => ({
      pos: s.pos,
      undecided: s.undecided,
      prev: s.prev,
      tail: s.tail.toString('base64'),
      ...(s.forced !== null ? { forced: { points: [...s.forced.points], prev: s.forced.prev, bytes: s.forced.bytes.toString('base64'), regions: [...s.forced.regions], made: [...s.forced.made] } } : {}),
    });
    const snap: ReplaceSnapshot = { v: 1, dirs: { c2s: d(this.peek('c2s')), s2c: d(this.peek('s2c')) } };
    if (this.ctr !== null && (Object.values(this.ctr).some((v) => v > 0))) snap.counters = { ...this.ctr };
    return snap;
  }
}

function restoreDir(x: unknown, dir: Direction): DirState {
  const o = x as Record<string, unknown> | null;
  const bad = (why: string): never => {
    throw new Error(`replace: bad snapshot (${dir}: ${why})`);
  };
  if (typeof o !== 'object' || o === null) return bad('not an object');
  const { pos, undecided, prev, tail, forced } = o;
  if (!Number.isSafeInteger(pos) || !Number.isSafeInteger(undecided)) return bad('positions');
  if (!isByteOrNone(prev)) return bad('prev');
  if (typeof tail !== 'string') return bad('tail');
  const t = Buffer.from(tail, 'base64');
  if ((undecided as number) < 0 || (undecided as number) + t.length !== pos) return bad('tail length');
  // prev is -1 at the stream start, PREV_UNKNOWN after a cluster resync gap (a node before it
  // wrote -1 there: read as unknown).
  if ((undecided as number) === 0 && prev !== -1) return bad('prev at stream start');
  const before = (undecided as number) > 0 && prev === -1 ? PREV_UNKNOWN : (prev as number);
  let f: Forced | null = null;
  if (forced !== undefined) {
    const j = forced as Partial<ForcedJson> | null;
    if (typeof j !== 'object' || j === null || typeof j.bytes !== 'string' || !Array.isArray(j.points) || !isByteOrNone(j.prev)) return bad('forced');
    const bytes = Buffer.from(j.bytes, 'base64');
    const from = (pos as number) - bytes.length;
    // Its bytes end where the data fed ends; its points lie after their start, ascending.
    const pts = j.points as unknown[];
    let last = from;
    const ok = bytes.length > 0 && from >= 0 && pts.length > 0 && pts.length <= bytes.length &&
      pts.every((p) => Number.isSafeInteger(p) && (p as number) > last && (p as number) <= (pos as number) && ((last = p as number), true));
    if (!ok) return bad('forced bounds');
    // As prev: -1 at the stream start only (where an older node's -1 after a gap is unknown).
    if (from === 0 && j.prev !== -1) return bad('forced prev at stream start');
    const fprev = from > 0 && j.prev === -1 ? PREV_UNKNOWN : (j.prev as number);
    const ints = (x: unknown): number[] => (Array.isArray(x) && x.length % 2 === 0 && x.every((v) => Number.isSafeInteger(v) && (v as number) >= 0) ? (x as number[]) : bad('forced regions'));
    f = forcedOf(pts as number[], bytes, fprev, j.regions === undefined ? [] : ints(j.regions), j.made === undefined ? [] : ints(j.made));
  }
  return { pos: pos as number, undecided: undecided as number, prev: before, tail: t, searches: null, forced: f };
}

function isByteOrNone(v: unknown): boolean {
  return Number.isInteger(v) && (v as number) >= PREV_UNKNOWN && (v as number) <= 255;
}

/** A replace factory whose agents add to `opts.counters` (the registry makes one per gateway). */
export function createReplace(opts: ReplaceOptions = {}): AgentFactory<ReplaceConfig> {
  return {
    name: 'replace',
    create(cfg: ReplaceConfig, ctx: AgentContext): Agent {
      return new ReplaceAgent(compiledRules(cfg), ctx.directions, opts);
    },
    restore(cfg: ReplaceConfig, ctx: AgentContext, state: unknown): Agent {
      return restoreReplace(cfg, ctx, state, opts);
    },
  };
}

/** Without gateway-wide counters. */
export const replaceFactory: AgentFactory<ReplaceConfig> = createReplace();

/** An agent from `snapshot()` output; its own counters resume, the gateway's are not touched. */
function restoreReplace(cfg: ReplaceConfig, ctx: AgentContext, state: unknown, opts: ReplaceOptions): Agent {
  const s = state as Partial<ReplaceSnapshot> | null;
  if (typeof s !== 'object' || s === null || s.v !== 1 || typeof s.dirs !== 'object') {
    throw new Error('replace: bad snapshot (expected { v: 1, dirs })');
  }
  const st = { c2s: restoreDir(s.dirs.c2s, 'c2s'), s2c: restoreDir(s.dirs.s2c, 's2c') };
  const c = s.counters;
  let counters: ReplaceCounters | undefined;
  if (typeof c === 'object' && c !== null) {
    counters = newReplaceCounters();
    // A field missing (a snapshot of an older node) or not a count starts at 0.
    for (const k of Object.keys(counters) as (keyof ReplaceCounters)[]) {
      const v = (c as Partial<ReplaceCounters>)[k];
      if (Number.isSafeInteger(v) && v! >= 0) counters[k] = v!;
    }
  }
  return new ReplaceAgent(compiledRules(cfg), ctx.directions, opts, st, counters);
}
