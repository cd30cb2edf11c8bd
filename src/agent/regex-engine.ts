/**
 * Regex engines for the replace agent: a JavaScript pattern (flags from "imsu") compiled once into
 * a small instruction program, run on latin1 text (one char per byte) by one of two executors:
 * - `PikeVM`: a Pike VM (Thompson NFA simulation with captures, threads kept in priority order),
 *   time O(window length × program size) whatever the input: no catastrophic backtracking. Its
 *   `search` finds the leftmost start whose window has a match in one pass over the text, whatever
 *   the window length; `run` then gives that match and its captures. It cannot run
 *   backreferences or lookarounds (`nonLinear` names the first one).
 * - `backtrackRun`: a backtracking VM over the same program (plus backreferences and lookarounds)
 *   that stops after a budget of steps and says so: the caller counts it as given up.
 * Both give exactly what ECMAScript's RegExp gives on the same string (ECMA-262 §22.2.2): the
 * leftmost-first (priority) match, captures reset at every iteration of their quantifier, and an
 * optional iteration that matches the empty string failing (RepeatMatcher). Character atoms are
 * not reimplemented: each one's set of latin1 chars is taken from V8 itself (the atom alone run
 * on all 256 chars with the rule's flags), so case folding (`i`, with or without `u`), `.` with
 * `s`, `\w`, `\s`, `\p{…}` are V8's by construction. Parsing is @eslint-community/regexpp.
 */

import { RegExpParser, type AST } from '@eslint-community/regexpp';

// Instruction codes.
const CHAR = 0; // consume one char forward if in set
const CHARB = 1; // consume one char backward (lookbehind bodies)
const SPLIT = 2; // try x, then y
const JMP = 3;
const SAVE = 4; // slot a = position
const RESET = 5; // slots [a, b) = -1 (captures of a quantified atom, at every iteration)
const ENTER = 6; // register a = position (start of an optional iteration)
const CHECK = 7; // fail if register a = position (the optional iteration matched empty)
const ASSERT = 8; // a = assertion kind
const BACKREF = 9; // a = group, b = 1 backward
const LOOK = 10; // a = sub-program, b = bit 0 negate, bit 1 behind
const MATCH = 11;

const A_BOL = 0;
const A_EOL = 1;
const A_BOL_M = 2;
const A_EOL_M = 3;
const A_WORD = 4;
const A_NOT_WORD = 5;

/**
 * Largest program (instructions, counted repetitions expanded). The Pike VM's memory and step
 * cost are proportional to it; `a{1000}` is about 1,000 instructions.
 */
export const MAX_PROGRAM = 20_000;

export interface Program {
  ops: Uint8Array;
  a: Int32Array;
  b: Int32Array;
  /** Char sets of CHAR/CHARB (256 entries of 0/1), null elsewhere. */
  sets: (Uint8Array | null)[];
  /**
   * Pike VM only: per instruction, the registers of the optional iterations it lies inside,
   * outermost first (see `pikeRun`), or null.
   */
  encl: (Int32Array | null)[];
}

export interface CompiledPattern {
  main: Program;
  /** Lookaround bodies (LOOK's a), each ending in MATCH. */
  subs: Program[];
  /** Capture groups, not counting group 0. */
  groups: number;
  /** Slots: 2 per group (0 = the whole match), then one register per quantifier. */
  slots: number;
  /** Deepest nesting of optional iterations (the Pike VM's dedup width is this + 1). */
  depth: number;
  names: ReadonlyMap<string, number>;
  /** The first backreference or lookaround (the Pike VM cannot run it), or undefined. */
  nonLinear: { what: string; offset: number } | undefined;
  /** Chars that can start a non-empty match (a superset). */
  first: Uint8Array;
  /** Chars that can end a non-empty match (a superset). */
  last: Uint8Array;
  /** Char sets every match starts with, in order (up to 16; may be empty). */
  prefix: Uint8Array[];
  /** The leading sets of `prefix` that are single chars, as bytes, when there are 2 or more; else null. */
  literal: Buffer | null;
  /** Canonical char per char for case-insensitive backreferences, or null. */
  canon: Uint8Array | null;
}

// ---------------------------------------------------------------------------------------------
// Compiling

interface Ins {
  op: number;
  a: number;
  b: number;
  set: Uint8Array | null;
  encl: Int32Array | null;
}

/** Thrown inside the compiler for a pattern it refuses (too large). */
class CompileRefusal extends Error {}

/**
 * Compile `source` with `flags` (already accepted by `new RegExp`). Returns an error message
 * when regexpp cannot parse it or the program would be too large.
 */
export function compilePattern(source: string, flags: string): CompiledPattern | string {
  let ast: AST.Pattern;
  try {
    ast = new RegExpParser({ ecmaVersion: 2023 }).parsePattern(source, 0, source.length, { unicode: flags.includes('u') });
  } catch (e) {
    return `cannot be analysed: ${(e as Error).message}`;
  }
  const atomFlags = flags.replace(/[gym]/g, '');
  const setCache = new Map<string, Uint8Array>();
  const names = new Map<string, number>();
  const groupIndex = new Map<AST.CapturingGroup, number>();
  let groups = 0;
  let nonLinear: CompiledPattern['nonLinear'];
  let backrefs = false;
  // Number the groups in source order first: a backreference may precede its group.
  const walk = (n: AST.Node): void => {
    if (n.type === 'CapturingGroup') {
      groupIndex.set(n, ++groups);
      if (n.name !== null) names.set(n.name, groups);
    }
    if (n.type === 'Backreference') backrefs = true;
    if ((n.type === 'Backreference' || (n.type === 'Assertion' && (n.kind === 'lookahead' || n.kind === 'lookbehind'))) && nonLinear === undefined) {
      const what = n.type === 'Backreference' ? `backreference "${n.raw}"` : `${n.kind} "${n.raw.length > 24 ? `${n.raw.slice(0, 21)}...` : n.raw}"`;
      nonLinear = { what, offset: n.start };
    }
    for (const c of children(n)) walk(c);
  };
  walk(ast);
  const regBase = 2 * (groups + 1);
  let regs = 0;
  let depth = 0;
  let total = 0;
  const subs: Ins[][] = [];
  const multiline = flags.includes('m');

  const charSet = (raw: string): Uint8Array => {
    let s = setCache.get(raw);
    if (s === undefined) {
      s = new Uint8Array(256);
      const re = new RegExp(`^(?:${raw})$`, atomFlags);
      for (let c = 0; c < 256; c++) s[c] = re.test(String.fromCharCode(c)) ? 1 : 0;
      setCache.set(raw, s);
    }
    return s;
  };

  const compileInto = (out: Ins[], body: AST.Alternative[], backward: boolean): void => {
    const stack: number[] = []; // registers of the optional iterations being emitted
    const emit = (op: number, a = 0, b = 0, set: Uint8Array | null = null): number => {
      if (++total > MAX_PROGRAM) {
        throw new CompileRefusal(`too large: more than ${MAX_PROGRAM} instructions once counted repetitions are expanded; lower the {n,m} counts`);
      }
      out.push({ op, a, b, set, encl: stack.length > 0 ? Int32Array.from(stack) : null });
      return out.length - 1;
    };
    const alts = (as: readonly AST.Alternative[]): void => {
      const jumps: number[] = [];
      for (let i = 0; i < as.length; i++) {
        if (i < as.length - 1) {
          const sp = emit(SPLIT);
          out[sp]!.a = out.length;
          seq(as[i]!.elements);
          jumps.push(emit(JMP));
          out[sp]!.b = out.length;
        } else seq(as[i]!.elements);
      }
      for (const j of jumps) out[j]!.a = out.length;
    };
    const seq = (els: readonly AST.Element[]): void => {
      if (backward) for (let i = els.length - 1; i >= 0; i--) element(els[i]!);
      else for (const e of els) element(e);
    };
    const groupSlots = (n: AST.Node): [number, number] => {
      let lo = Infinity;
      let hi = -Infinity;
      const visit = (x: AST.Node): void => {
        if (x.type === 'CapturingGroup') {
          const g = groupIndex.get(x)!;
          lo = Math.min(lo, 2 * g);
          hi = Math.max(hi, 2 * g + 2);
        }
        for (const c of children(x)) visit(c);
      };
      visit(n);
      return lo === Infinity ? [0, 0] : [lo, hi];
    };
    const element = (e: AST.Element): void => {
      switch (e.type) {
        case 'Character':
        case 'CharacterClass':
        case 'CharacterSet':
        case 'ExpressionCharacterClass':
          emit(backward ? CHARB : CHAR, 0, 0, charSet(e.raw));
          return;
        case 'Group':
          alts(e.alternatives);
          return;
        case 'CapturingGroup': {
          const g = groupIndex.get(e)!;
          emit(SAVE, backward ? 2 * g + 1 : 2 * g);
          alts(e.alternatives);
          emit(SAVE, backward ? 2 * g : 2 * g + 1);
          return;
        }
        case 'Quantifier':
          quantifier(e);
          return;
        case 'Backreference':
          emit(BACKREF, groupIndex.get(e.resolved as AST.CapturingGroup)!, backward ? 1 : 0);
          return;
        case 'Assertion':
          if (e.kind === 'start') emit(ASSERT, multiline ? A_BOL_M : A_BOL);
          else if (e.kind === 'end') emit(ASSERT, multiline ? A_EOL_M : A_EOL);
          else if (e.kind === 'word') emit(ASSERT, e.negate ? A_NOT_WORD : A_WORD);
          else if (e.kind === 'lookahead' || e.kind === 'lookbehind') {
            const sub: Ins[] = [];
            subs.push(sub);
            const idx = subs.length - 1;
            compileInto(sub, e.alternatives, e.kind === 'lookbehind');
            sub.push({ op: MATCH, a: 0, b: 0, set: null, encl: null });
            emit(LOOK, idx, (e.negate ? 1 : 0) | (e.kind === 'lookbehind' ? 2 : 0));
          }
          return;
        default:
          throw new CompileRefusal(`unsupported element ${(e as AST.Node).type}`);
      }
    };
    const quantifier = (q: AST.Quantifier): void => {
      const [lo, hi] = groupSlots(q.element);
      const iteration = (): void => {
        if (hi > lo) emit(RESET, lo, hi);
        element(q.element);
      };
      for (let i = 0; i < q.min; i++) iteration();
      if (q.max === q.min) return;
      // The empty check (ENTER/CHECK) only matters when an iteration can match empty.
      const reg = nullable(q.element) ? regBase + regs++ : -1;
      const split = (): number => emit(SPLIT);
      const body = (sp: number): void => {
        // Greedy: the iteration first; lazy: skipping first. Fixed up below.
        out[sp]!.a = out.length;
        if (reg < 0) {
          iteration();
          return;
        }
        emit(ENTER, reg);
        stack.push(reg);
        depth = Math.max(depth, stack.length);
        iteration();
        emit(CHECK, reg);
        stack.pop();
      };
      const exits: number[] = [];
      if (q.max === Infinity) {
        const sp = split();
        body(sp);
        emit(JMP, sp);
        exits.push(sp);
      } else {
        for (let i = q.min; i < q.max; i++) {
          const sp = split();
          body(sp);
          exits.push(sp);
        }
      }
      for (const sp of exits) {
        const ins = out[sp]!;
        ins.b = out.length;
        if (!q.greedy) [ins.a, ins.b] = [ins.b, ins.a];
      }
    };
    alts(body);
  };

  const main: Ins[] = [];
  try {
    // Slot 0 is the start and slot 1 the position of MATCH: the executors fill them in.
    compileInto(main, ast.alternatives, false);
    main.push({ op: MATCH, a: 0, b: 0, set: null, encl: null });
  } catch (e) {
    if (e instanceof CompileRefusal) return e.message;
    throw e;
  }
  const prog = toProgram(main);
  const { first, last } = firstLast(prog);
  const prefix = prefixSets(prog);
  const single = prefix.map((set) => (set.reduce((a, b) => a + b, 0) === 1 ? set.indexOf(1) : -1));
  const lead = single.findIndex((c) => c < 0);
  const lit = lead < 0 ? single : single.slice(0, lead);
  const literal = lit.length >= 2 ? Buffer.from(lit) : null;
  let canon: Uint8Array | null = null;
  if (flags.includes('i') && backrefs) {
    canon = new Uint8Array(256);
    for (let c = 0; c < 256; c++) {
      const s = charSet(`\\x${c.toString(16).padStart(2, '0')}`);
      canon[c] = s.indexOf(1);
    }
  }
  return {
    main: prog,
    subs: subs.map(toProgram),
    groups,
    slots: regBase + regs,
    depth,
    names,
    nonLinear,
    first,
    last,
    prefix,
    literal,
    canon,
  };
}

/** Whether the node can match the empty string (lookarounds and backreferences can). */
function nullable(n: AST.Node): boolean {
  switch (n.type) {
    case 'Character':
    case 'CharacterClass':
    case 'CharacterSet':
    case 'ExpressionCharacterClass':
      return false;
    case 'Group':
    case 'CapturingGroup':
      return n.alternatives.some((a) => a.elements.every(nullable));
    case 'Quantifier':
      return n.min === 0 || nullable(n.element);
    default:
      return true;
  }
}

function children(n: AST.Node): AST.Node[] {
  switch (n.type) {
    case 'Pattern':
    case 'Group':
    case 'CapturingGroup':
      return n.alternatives;
    case 'Alternative':
      return n.elements;
    case 'Quantifier':
      return [n.element];
    case 'Assertion':
      return n.kind === 'lookahead' || n.kind === 'lookbehind' ? n.alternatives : [];
    default:
      return [];
  }
}

function toProgram(ins: Ins[]): Program {
  const n = ins.length;
  const p: Program = { ops: new Uint8Array(n), a: new Int32Array(n), b: new Int32Array(n), sets: new Array(n), encl: new Array(n) };
  for (let i = 0; i < n; i++) {
    const x = ins[i]!;
    p.ops[i] = x.op;
    p.a[i] = x.a;
    p.b[i] = x.b;
    p.sets[i] = x.set;
    p.encl[i] = x.encl;
  }
  return p;
}

/** The chain of CHAR instructions from the start, before any branch (assertions skipped). */
function prefixSets(p: Program): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let pc = 0; pc < p.ops.length && out.length < 16; pc++) {
    const op = p.ops[pc];
    if (op === CHAR) out.push(p.sets[pc]!);
    else if (op !== SAVE && op !== ASSERT && op !== RESET) break;
  }
  return out;
}

/** The chars a non-empty match can start / end with, over-approximated (assertions pass). */
function firstLast(p: Program): { first: Uint8Array; last: Uint8Array } {
  const n = p.ops.length;
  const first = new Uint8Array(256);
  const last = new Uint8Array(256);
  const or = (dst: Uint8Array, src: Uint8Array | null): void => {
    if (src === null) dst.fill(1);
    else for (let c = 0; c < 256; c++) dst[c] |= src[c]!;
  };
  // Forward over epsilon edges from the start.
  const seen = new Uint8Array(n);
  const todo = [0];
  while (todo.length > 0) {
    const pc = todo.pop()!;
    if (seen[pc]) continue;
    seen[pc] = 1;
    const op = p.ops[pc]!;
    if (op === CHAR) or(first, p.sets[pc]!);
    else if (op === BACKREF) or(first, null);
    else if (op === SPLIT) todo.push(p.a[pc]!, p.b[pc]!);
    else if (op === JMP) todo.push(p.a[pc]!);
    else if (op !== MATCH) todo.push(pc + 1);
  }
  // Backward over epsilon edges from MATCH: a consuming instruction whose successor reaches it.
  const preds: number[][] = Array.from({ length: n }, () => []);
  for (let pc = 0; pc < n; pc++) {
    const op = p.ops[pc]!;
    if (op === SPLIT) preds[p.a[pc]!]!.push(pc), preds[p.b[pc]!]!.push(pc);
    else if (op === JMP) preds[p.a[pc]!]!.push(pc);
    else if (op !== MATCH && op !== CHAR && op !== BACKREF && pc + 1 < n) preds[pc + 1]!.push(pc);
  }
  const reach = new Uint8Array(n);
  const back = [n - 1];
  while (back.length > 0) {
    const pc = back.pop()!;
    if (reach[pc]) continue;
    reach[pc] = 1;
    for (const q of preds[pc]!) back.push(q);
  }
  for (let pc = 0; pc + 1 < n; pc++) {
    if (!reach[pc + 1]) continue;
    if (p.ops[pc] === CHAR) or(last, p.sets[pc]!);
    else if (p.ops[pc] === BACKREF) or(last, null);
  }
  return { first, last };
}

// ---------------------------------------------------------------------------------------------
// Running. The text is s[lo, hi): lo is the start of input for `^` and lookbehinds, hi the end
// for `$` and lookaheads; the match is sticky at `at`. Result: the slots (slot 0/1 = the match),
// or null for no match.

const isLineTerm = (c: number): boolean => c === 0x0a || c === 0x0d;
const isWord = (c: number): boolean =>
  (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || (c >= 0x30 && c <= 0x39) || c === 0x5f;

function assertion(kind: number, s: string, lo: number, hi: number, pos: number): boolean {
  switch (kind) {
    case A_BOL:
      return pos === lo;
    case A_EOL:
      return pos === hi;
    case A_BOL_M:
      return pos === lo || isLineTerm(s.charCodeAt(pos - 1));
    case A_EOL_M:
      return pos === hi || isLineTerm(s.charCodeAt(pos));
    default: {
      const a = pos > lo && isWord(s.charCodeAt(pos - 1));
      const b = pos < hi && isWord(s.charCodeAt(pos));
      return (a !== b) === (kind === A_WORD);
    }
  }
}

/**
 * Reusable Pike VM state for one pattern (the agent is single-threaded; one scan at a time).
 * `seen` is the per-position dedup table: a thread is identified by its instruction and by how
 * many of the optional iterations around it began at the current position (`freshKey`): two
 * threads equal in both have the same future (captures never influence matching here), so the
 * later one, of lower priority, is dropped. That keeps the work per position O(program).
 */
export class PikeVM {
  private readonly seen: Int32Array;
  private gen = 0;
  private readonly width: number;
  // Thread lists (current position, next position) and the epsilon-walk stack: preallocated and
  // used with explicit counts (setting an array's length is a runtime call).
  private cur: ThreadList;
  private nxt: ThreadList;
  private readonly stackPc: Int32Array;
  private readonly stackCaps: Int32Array[];
  // `search` state, reused from search to search (see there).
  /** The pattern has `$`, `\b` or `\B`: a window's end is not what the text says there. */
  private readonly endSensitive: boolean;
  /** Per instruction, a pseudo-random word: a thread set hashes to the sum over its members. */
  private readonly pcHash: Int32Array;
  private readonly mark: Int32Array;
  private markGen = 0;
  private readonly dfs: Int32Array;
  private clsA: ClassList = newClassList();
  private clsB: ClassList = newClassList();
  // Open addressing from a thread set's hash to its class, valid where tblStamp = tblGen.
  private tblCls: Int32Array = new Int32Array(16);
  private tblStamp: Int32Array = new Int32Array(16);
  private tblGen = 0;
  // Pairing heaps of starts (nodes in injection order; hKey = the start).
  private hKey: Int32Array = new Int32Array(64);
  private hChild: Int32Array = new Int32Array(64);
  private hSib: Int32Array = new Int32Array(64);
  private hTmp: Int32Array = new Int32Array(64);
  private nodes = 0;

  constructor(private readonly cp: CompiledPattern) {
    if (cp.nonLinear !== undefined) throw new Error(`regex: the Pike VM cannot run a ${cp.nonLinear.what} (compiler bug)`);
    this.width = cp.depth + 1;
    const m = cp.main.ops.length;
    const cap = m * this.width;
    this.seen = new Int32Array(cap);
    this.cur = { pcs: new Int32Array(cap), caps: new Array<Int32Array>(cap), n: 0 };
    this.nxt = { pcs: new Int32Array(cap), caps: new Array<Int32Array>(cap), n: 0 };
    // Each instruction is pushed at most once per walk (dedup), SPLIT pushes two.
    this.stackPc = new Int32Array(2 * cap + 2);
    this.stackCaps = new Array<Int32Array>(2 * cap + 2);
    let endSensitive = false;
    for (let pc = 0; pc < m; pc++) {
      const k = cp.main.a[pc]!;
      if (cp.main.ops[pc] === ASSERT && (k === A_EOL || k === A_EOL_M || k === A_WORD || k === A_NOT_WORD)) endSensitive = true;
    }
    this.endSensitive = endSensitive;
    this.pcHash = new Int32Array(m);
    for (let pc = 0, x = 0x9e3779b9 | 0; pc < m; pc++) {
      x ^= x << 13; // xorshift32: fixed sequence, no Math.random (same hashes on every node)
      x ^= x >>> 17;
      x ^= x << 5;
      this.pcHash[pc] = x;
    }
    this.mark = new Int32Array(m);
    // A walk pushes its seeds (at most m) and at most two successors per instruction it visits.
    this.dfs = new Int32Array(3 * m + 2);
  }

  /**
   * The leftmost start q in [from, to) whose window has a non-empty match, or -1; what `run` at q
   * would say, for every q in turn, in one pass over the text. `buf` is the text as bytes, `s`
   * the same as latin1 preceded by the context byte when `off` is 1, so buf[q] is s[q + off];
   * q's window is s[.., q + off + maxMatch), cut at the end of `s`.
   *
   * Why not the textbook unanchored Pike VM (one thread list, a new lowest-priority thread per
   * start, the earlier start kept when two threads meet): two threads of different starts that
   * meet have the same future only without windows. The earlier one's window ends first; when it
   * ends, the later start that was dropped in its favour may still have matched (`d*cd`, maxMatch
   * 4, "dddddcd": RegExp in the windows finds "ddcd" at 3; the textbook simulation loses starts
   * 1-3 with start 0 at its window end and reports "dcd" at 4). And `$`, `\b`, `\B` see the end of
   * input at a window's end, which differs per start.
   *
   * So the simulation merges starts, not threads: a *class* is the set of live starts whose thread
   * sets are equal (as sets of instructions: whether a match exists does not depend on priority,
   * captures or the empty-iteration check, RepeatMatcher's step 2.b, since skipping an empty
   * iteration leads to the same places). Equal sets stay equal, so a class never splits; classes
   * whose sets become equal merge. Each class keeps its starts in a pairing heap, the earliest on
   * top. Per position, every class takes one step; the start whose window ends there first gets
   * its last chance (the closure with the end of input at that position, when it differs) and
   * leaves its class; a class reaching MATCH makes its earliest start a success. A new start joins
   * with the threads that come before its empty match in priority order (an empty match hides
   * every lower-priority one, and the agent ignores empty matches). Once a start succeeded no new
   * start is added, and only classes holding earlier starts go on.
   *
   * Work per position: the closures of the live classes. That is one class for the patterns whose
   * thread set forgets where it started (`(a|aa)+b`, `(a+)+b`, `[^x]*y` once started), a few for
   * `(.*a){20}` (one per number of "a" seen, capped at 20); it grows with maxMatch only for sets
   * that count positions (`.{1000}`: at most one class per counter value). Never more than `run`
   * at every start.
   */
  search(s: string, buf: Buffer, off: number, from: number, to: number, maxMatch: number): number {
    const cand = new Candidates(this.cp, buf, maxMatch);
    let inj = cand.next(from, to); // next start to add
    if (inj < 0) return -1;
    const len = s.length;
    let cur = this.clsA;
    let nxt = this.clsB;
    cur.n = 0;
    cur.used = 0;
    this.nodes = 0;
    let best = Infinity; // the earliest start that matched (s index)
    let pos = inj + off;
    for (;;) {
      const atEnd = pos >= len;
      const ch = atEnd ? -1 : s.charCodeAt(pos);
      const ends = pos - maxMatch; // the start whose window ends at pos
      nxt.n = 0;
      nxt.used = 0;
      this.newTable(cur.n + 1);
      for (let c = 0; c < cur.n; c++) {
        let root = cur.heap[c]!;
        if (this.hKey[root]! >= best) continue; // cannot give an earlier start
        if (this.endSensitive && this.hKey[root] === ends && !atEnd) {
          if (this.closure(cur.pool, cur.off[c]!, cur.len[c]!, s, pos, pos, -1, nxt)) best = ends;
          root = this.deleteMin(root);
          if (root < 0) continue;
        }
        const at0 = nxt.used;
        if (this.closure(cur.pool, cur.off[c]!, cur.len[c]!, s, pos, len, ch, nxt)) {
          // Every start of the class matched; the others come later.
          best = Math.min(best, this.hKey[root]!);
          nxt.used = at0;
          continue;
        }
        if (this.hKey[root] === ends) root = this.deleteMin(root); // its window ends: no further char
        if (root < 0 || nxt.used === at0) {
          nxt.used = at0;
          continue;
        }
        this.addClass(nxt, at0, root);
      }
      if (inj >= 0 && inj + off === pos) {
        if (best === Infinity) {
          const at0 = nxt.used;
          this.startSet(s, pos, Math.min(pos + maxMatch, len), ch, nxt);
          if (nxt.used > at0) this.addClass(nxt, at0, this.newNode(pos));
        }
        inj = cand.next(inj + 1, to);
      }
      const t = cur;
      cur = nxt;
      nxt = t;
      if (atEnd) break;
      pos++;
      if (cur.n === 0) {
        if (best !== Infinity || inj < 0) break;
        pos = inj + off; // nothing alive: skip to the next candidate
      }
    }
    this.clsA = cur;
    this.clsB = nxt;
    return best === Infinity ? -1 : best - off;
  }

  /**
   * Follow epsilon edges from pcs[from, from + count) at `pos`, `hi` being the end of input for
   * the assertions, every instruction once (see `search` for why the empty-iteration CHECK is not
   * applied). True when MATCH is reached; else the successors of the CHAR threads that accept `ch`
   * (-1: none) are appended to `out`.
   */
  private closure(pcs: Int32Array, from: number, count: number, s: string, pos: number, hi: number, ch: number, out: ClassList): boolean {
    const { ops, a, b, sets } = this.cp.main;
    const mark = this.mark;
    const dfs = this.dfs;
    const gen = this.nextMark();
    reserve(out, ops.length);
    const pool = out.pool;
    let used = out.used;
    let top = 0;
    for (let i = from + count - 1; i >= from; i--) dfs[top++] = pcs[i]!;
    while (top > 0) {
      const pc = dfs[--top]!;
      if (mark[pc] === gen) continue;
      mark[pc] = gen;
      switch (ops[pc]) {
        case CHAR:
          if (ch >= 0 && sets[pc]![ch] === 1) pool[used++] = pc + 1;
          break;
        case MATCH:
          return true;
        case SPLIT:
          dfs[top++] = b[pc]!;
          dfs[top++] = a[pc]!;
          break;
        case JMP:
          dfs[top++] = a[pc]!;
          break;
        case ASSERT:
          if (assertion(a[pc]!, s, 0, hi, pos)) dfs[top++] = pc + 1;
          break;
        case SAVE:
        case ENTER:
        case RESET:
        case CHECK:
          dfs[top++] = pc + 1;
          break;
        default:
          throw new Error(`regex: instruction ${ops[pc]} in a linear program (compiler bug)`);
      }
    }
    out.used = used;
    return false;
  }

  /**
   * The threads a start at `pos` begins with, advanced over `ch`, appended to `out`: all of them
   * when its closure has no MATCH, else those before its (empty) match in priority order.
   */
  private startSet(s: string, pos: number, hi: number, ch: number, out: ClassList): void {
    const at0 = out.used;
    if (!this.closure(ZERO, 0, 1, s, pos, hi, ch, out)) return;
    out.used = at0;
    const { ops, sets } = this.cp.main;
    const init = new Int32Array(this.cp.slots).fill(-1);
    init[0] = pos;
    this.cur.n = 0;
    this.bump();
    this.add(this.cur, 0, init, pos, s, 0, hi);
    const gen = this.nextMark(); // a pc may be listed more than once (different iteration keys)
    let used = out.used;
    for (let i = 0; i < this.cur.n; i++) {
      const pc = this.cur.pcs[i]!;
      if (ops[pc] === MATCH) break;
      if (ch >= 0 && sets[pc]![ch] === 1 && this.mark[pc] !== gen) {
        this.mark[pc] = gen;
        out.pool[used++] = pc + 1;
      }
    }
    out.used = used;
  }

  /** Make pool[start, used) a class with the starts of heap `root`, or merge it into its equal. */
  private addClass(list: ClassList, start: number, root: number): void {
    const pool = list.pool;
    const count = list.used - start;
    let h = count;
    for (let i = start; i < list.used; i++) h = (h + this.pcHash[pool[i]!]!) | 0;
    const mask = this.tblCls.length - 1;
    let i = h & mask;
    for (; this.tblStamp[i] === this.tblGen; i = (i + 1) & mask) {
      const c = this.tblCls[i]!;
      if (list.hash[c] === h && list.len[c] === count && this.sameSet(pool, list.off[c]!, start, count)) {
        list.heap[c] = this.meld(list.heap[c]!, root);
        list.used = start;
        return;
      }
    }
    if (list.n === list.off.length) growClasses(list);
    const c = list.n++;
    list.off[c] = start;
    list.len[c] = count;
    list.hash[c] = h;
    list.heap[c] = root;
    this.tblStamp[i] = this.tblGen;
    this.tblCls[i] = c;
  }

  private sameSet(pool: Int32Array, x: number, y: number, count: number): boolean {
    const gen = this.nextMark();
    for (let i = 0; i < count; i++) this.mark[pool[x + i]!] = gen;
    for (let i = 0; i < count; i++) if (this.mark[pool[y + i]!] !== gen) return false;
    return true;
  }

  /** An empty hash table for up to `classes` classes (load at most 1/2). */
  private newTable(classes: number): void {
    if (this.tblCls.length < 2 * classes) {
      let size = this.tblCls.length;
      while (size < 2 * classes) size *= 2;
      this.tblCls = new Int32Array(size);
      this.tblStamp = new Int32Array(size);
      this.tblGen = 0;
    }
    if (++this.tblGen === 0x7fffffff) {
      this.tblStamp.fill(0);
      this.tblGen = 1;
    }
  }

  private nextMark(): number {
    if (++this.markGen === 0x7fffffff) {
      this.mark.fill(0);
      this.markGen = 1;
    }
    return this.markGen;
  }

  private newNode(key: number): number {
    if (this.nodes === this.hKey.length) {
      this.hKey = grow(this.hKey);
      this.hChild = grow(this.hChild);
      this.hSib = grow(this.hSib);
      this.hTmp = new Int32Array(this.hKey.length);
    }
    const i = this.nodes++;
    this.hKey[i] = key;
    this.hChild[i] = -1;
    this.hSib[i] = -1;
    return i;
  }

  private meld(x: number, y: number): number {
    if (x < 0) return y;
    if (y < 0) return x;
    if (this.hKey[y]! < this.hKey[x]!) [x, y] = [y, x];
    this.hSib[y] = this.hChild[x]!;
    this.hChild[x] = y;
    return x;
  }

  /** The heap without its root (pairing heap: children melded in pairs, then right to left). */
  private deleteMin(root: number): number {
    const tmp = this.hTmp;
    let k = 0;
    for (let c = this.hChild[root]!; c >= 0; ) {
      const d = this.hSib[c]!;
      this.hSib[c] = -1;
      if (d < 0) {
        tmp[k++] = c;
        break;
      }
      const next = this.hSib[d]!;
      this.hSib[d] = -1;
      tmp[k++] = this.meld(c, d);
      c = next;
    }
    if (k === 0) return -1;
    let r = tmp[--k]!;
    while (k > 0) r = this.meld(tmp[--k]!, r);
    return r;
  }

  run(s: string, lo: number, at: number, hi: number): Int32Array | null {
    const ops = this.cp.main.ops;
    const sets = this.cp.main.sets;
    let matched: Int32Array | null = null; // thread slots are never written once made: no copy
    let matchEnd = -1;
    const init = new Int32Array(this.cp.slots).fill(-1);
    init[0] = at;
    this.cur.n = 0;
    this.bump();
    this.add(this.cur, 0, init, at, s, lo, hi);
    for (let pos = at; this.cur.n > 0; pos++) {
      const c = pos < hi ? s.charCodeAt(pos) : -1;
      const cur = this.cur;
      const nx = this.nxt;
      nx.n = 0;
      this.bump();
      for (let i = 0; i < cur.n; i++) {
        const pc = cur.pcs[i]!;
        if (ops[pc] === MATCH) {
          matched = cur.caps[i]!;
          matchEnd = pos;
          break; // lower-priority threads are cut
        }
        if (c >= 0 && sets[pc]![c] === 1) this.add(nx, pc + 1, cur.caps[i]!, pos + 1, s, lo, hi);
      }
      this.nxt = cur;
      this.cur = nx;
      if (c < 0) break;
    }
    if (matched === null) return null;
    const out = matched.slice();
    out[1] = matchEnd;
    return out;
  }

  private bump(): void {
    if (++this.gen === 0x7fffffff) {
      this.seen.fill(0);
      this.gen = 1;
    }
  }

  /** Follow epsilon edges from pc in priority order; queue consuming and MATCH threads. */
  private add(list: ThreadList, pc0: number, caps0: Int32Array, pos: number, s: string, lo: number, hi: number): void {
    const p = this.cp.main;
    const sp = this.stackPc;
    const sc = this.stackCaps;
    const seen = this.seen;
    const gen = this.gen;
    const width = this.width;
    let top = 0;
    sp[0] = pc0;
    sc[0] = caps0;
    top = 1;
    while (top > 0) {
      top--;
      const pc = sp[top]!;
      let caps = sc[top]!;
      const encl = p.encl[pc];
      let key = 0;
      if (encl !== null) {
        key = encl.length;
        for (let i = 0; i < encl.length; i++) {
          if (caps[encl[i]!] === pos) {
            key = i;
            break;
          }
        }
      }
      const k = pc * width + key;
      if (seen[k] === gen) continue;
      seen[k] = gen;
      switch (p.ops[pc]) {
        case CHAR:
        case MATCH:
          list.pcs[list.n] = pc;
          list.caps[list.n++] = caps;
          break;
        case SPLIT:
          sp[top] = p.b[pc]!;
          sc[top++] = caps;
          sp[top] = p.a[pc]!;
          sc[top++] = caps;
          break;
        case JMP:
          sp[top] = p.a[pc]!;
          sc[top++] = caps;
          break;
        case SAVE:
        case ENTER:
          caps = caps.slice();
          caps[p.a[pc]!] = pos;
          sp[top] = pc + 1;
          sc[top++] = caps;
          break;
        case RESET:
          caps = caps.slice();
          caps.fill(-1, p.a[pc]!, p.b[pc]!);
          sp[top] = pc + 1;
          sc[top++] = caps;
          break;
        case CHECK:
          if (caps[p.a[pc]!] !== pos) {
            sp[top] = pc + 1;
            sc[top++] = caps;
          }
          break;
        case ASSERT:
          if (assertion(p.a[pc]!, s, lo, hi, pos)) {
            sp[top] = pc + 1;
            sc[top++] = caps;
          }
          break;
        default:
          throw new Error(`regex: instruction ${p.ops[pc]} in a linear program (compiler bug)`);
      }
    }
  }
}

interface ThreadList {
  pcs: Int32Array;
  caps: Int32Array[];
  n: number;
}

const ZERO = Int32Array.of(0);

/** `search`'s classes at one position: class c's thread set is pool[off[c], off[c] + len[c]). */
interface ClassList {
  n: number;
  off: Int32Array;
  len: Int32Array;
  hash: Int32Array;
  /** Root of the pairing heap of the class's starts. */
  heap: Int32Array;
  pool: Int32Array;
  used: number;
}

function newClassList(): ClassList {
  return { n: 0, off: new Int32Array(8), len: new Int32Array(8), hash: new Int32Array(8), heap: new Int32Array(8), pool: new Int32Array(256), used: 0 };
}

/** A copy of x twice as long. */
function grow(x: Int32Array): Int32Array {
  const y = new Int32Array(x.length * 2);
  y.set(x);
  return y;
}

function growClasses(l: ClassList): void {
  l.off = grow(l.off);
  l.len = grow(l.len);
  l.hash = grow(l.hash);
  l.heap = grow(l.heap);
}

/** Room for `extra` more entries in the pool. */
function reserve(l: ClassList, extra: number): void {
  if (l.used + extra <= l.pool.length) return;
  let size = l.pool.length * 2;
  while (size < l.used + extra) size *= 2;
  const p = new Int32Array(size);
  p.set(l.pool.subarray(0, l.used));
  l.pool = p;
}

/**
 * The starts in a buffer worth trying: the byte can begin a match (`first`; the literal prefix,
 * when there is one, found with Buffer.indexOf, memchr-like), the fixed `prefix` fits, and the
 * window holds a byte that can end a match (`last`). So a pattern such as `(a|aa)+b` costs one
 * pass over a run of "a" without "b". Called with increasing q, `next` is O(1) amortized.
 */
export class Candidates {
  private litAt = -1; // the first literal occurrence at or after the last q (buf.length: none)
  private lastAt = -1; // the first index at or after the last q holding a byte in `last`

  constructor(
    private readonly cp: CompiledPattern,
    private readonly buf: Buffer,
    private readonly maxMatch: number,
  ) {}

  /** The first candidate in [q, to), or -1. */
  next(q: number, to: number): number {
    const { first, last, prefix, literal } = this.cp;
    const buf = this.buf;
    const n = buf.length;
    const mm = this.maxMatch;
    next: for (; q < to; q++) {
      if (literal !== null) {
        if (this.litAt < q) {
          const i = buf.indexOf(literal, q);
          this.litAt = i < 0 ? n : i;
        }
        q = this.litAt;
        if (q >= to) return -1;
      } else if (first[buf[q]!] === 0) continue;
      const end = Math.min(q + mm, n); // the window
      for (let k = 0; k < prefix.length; k++) {
        if (q + k >= end || prefix[k]![buf[q + k]!] === 0) continue next;
      }
      if (this.lastAt < q) {
        let i = q;
        while (i < n && last[buf[i]!] === 0) i++;
        this.lastAt = i;
      }
      if (this.lastAt >= n) return -1;
      if (this.lastAt >= q + mm) {
        q = this.lastAt - mm; // the next window that reaches lastAt starts at lastAt - mm + 1
        continue;
      }
      return q;
    }
    return -1;
  }
}

/** `backtrackRun`'s answer when the step budget ran out. */
export const BUDGET_EXCEEDED = 'budget';

/** Steps left for one match attempt (shared with the lookaround bodies it runs). */
export interface StepBudget {
  left: number;
}

/**
 * The backtracking VM: ECMAScript's own algorithm, with an explicit backtrack stack (no
 * recursion per char) and one step per instruction executed. Returns the slots, null, or
 * BUDGET_EXCEEDED when `budget.left` reached 0.
 */
export function backtrackRun(
  cp: CompiledPattern,
  s: string,
  lo: number,
  at: number,
  hi: number,
  budget: StepBudget,
): Int32Array | null | typeof BUDGET_EXCEEDED {
  const caps = new Int32Array(cp.slots).fill(-1);
  caps[0] = at;
  return exec(cp, cp.main, s, lo, at, hi, caps, budget, true);
}

function exec(
  cp: CompiledPattern,
  p: Program,
  s: string,
  lo: number,
  at: number,
  hi: number,
  caps: Int32Array,
  budget: StepBudget,
  main: boolean,
): Int32Array | null | typeof BUDGET_EXCEEDED {
  const { ops, a, b, sets } = p;
  // Entries of three numbers: (-1, pc, pos) a branch to resume; (slot, old value, 0) an undo.
  const stack: number[] = [];
  let pc = 0;
  let pos = at;
  for (;;) {
    if (--budget.left < 0) return BUDGET_EXCEEDED;
    let ok = true;
    switch (ops[pc]) {
      case CHAR:
        if (pos < hi && sets[pc]![s.charCodeAt(pos)] === 1) {
          pos++;
          pc++;
        } else ok = false;
        break;
      case CHARB:
        if (pos > lo && sets[pc]![s.charCodeAt(pos - 1)] === 1) {
          pos--;
          pc++;
        } else ok = false;
        break;
      case SPLIT:
        stack.push(-1, b[pc]!, pos);
        pc = a[pc]!;
        break;
      case JMP:
        pc = a[pc]!;
        break;
      case SAVE:
      case ENTER:
        stack.push(a[pc]!, caps[a[pc]!]!, 0);
        caps[a[pc]!] = pos;
        pc++;
        break;
      case RESET:
        for (let i = a[pc]!; i < b[pc]!; i++) {
          if (caps[i] !== -1) {
            stack.push(i, caps[i]!, 0);
            caps[i] = -1;
          }
        }
        pc++;
        break;
      case CHECK:
        if (caps[a[pc]!] === pos) ok = false;
        else pc++;
        break;
      case ASSERT:
        if (assertion(a[pc]!, s, lo, hi, pos)) pc++;
        else ok = false;
        break;
      case BACKREF: {
        const g = a[pc]!;
        const cs = caps[2 * g]!;
        const ce = caps[2 * g + 1]!;
        if (cs >= 0 && ce >= 0) {
          const len = ce - cs;
          const from = b[pc] === 1 ? pos - len : pos;
          if (from < lo || from + len > hi) ok = false;
          else {
            const canon = cp.canon;
            for (let i = 0; i < len && ok; i++) {
              const x = s.charCodeAt(cs + i);
              const y = s.charCodeAt(from + i);
              ok = canon === null ? x === y : canon[x] === canon[y];
            }
            if (ok) pos = b[pc] === 1 ? from : from + len;
          }
        }
        if (ok) pc++;
        break;
      }
      case LOOK: {
        const inner = caps.slice();
        const r = exec(cp, cp.subs[a[pc]!]!, s, lo, pos, hi, inner, budget, false);
        if (r === BUDGET_EXCEEDED) return r;
        const negate = (b[pc]! & 1) === 1;
        if ((r === null) !== negate) ok = false;
        else {
          if (r !== null) {
            // A positive lookaround's captures stay (ECMA-262: it is atomic, not undone).
            for (let i = 0; i < r.length; i++) {
              if (r[i] !== caps[i]) {
                stack.push(i, caps[i]!, 0);
                caps[i] = r[i]!;
              }
            }
          }
          pc++;
        }
        break;
      }
      case MATCH:
        if (main) caps[1] = pos;
        return caps;
    }
    if (ok) continue;
    // Backtrack: undo to the latest branch.
    for (;;) {
      if (stack.length === 0) return null;
      const z = stack.pop()!;
      const y = stack.pop()!;
      const x = stack.pop()!;
      if (x === -1) {
        pc = y;
        pos = z;
        break;
      }
      caps[x] = y;
    }
  }
}
