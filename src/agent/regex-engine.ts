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
  /** The source of the first lookbehind whose body may match more than one character, or undefined. */
  longLookbehind: string | undefined;
  /**
   * Whether a match may read the character before its start (an anchor `^`, a word boundary, a
   * lookbehind, anywhere in the pattern): where that character is unknown (after a cluster
   * resync gap) no match of it may start.
   */
  looksBack: boolean;
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
 * The fewest chars a non-empty match of the program can take (assertions, lookarounds and
 * backreferences taken as passable and empty: a lower bound), or Infinity when no path to MATCH
 * reads a char: the pattern can only match the empty string (or nothing). A 0-1 breadth-first
 * walk over (instruction, a char read yet).
 */
export function shortestMatch(p: Program): number {
  const n = p.ops.length;
  const dist = new Float64Array(2 * n).fill(Infinity);
  dist[0] = 0;
  // The deque of the walk: states reached by an empty step are taken first (a stack, all at the
  // distance being taken), those one char further after them (a queue, in distance order).
  const front: number[] = [];
  const dq: number[] = [0];
  let head = 0;
  const relax = (to: number, d: number, zero: boolean): void => {
    if (d < dist[to]!) {
      dist[to] = d;
      if (zero) front.push(to);
      else dq.push(to);
    }
  };
  while (front.length > 0 || head < dq.length) {
    const st = front.length > 0 ? front.pop()! : dq[head++]!;
    const pc = st >> 1;
    const read = st & 1;
    const d = dist[st]!;
    const op = p.ops[pc]!;
    if (op === MATCH) {
      if (read === 1) return d;
      continue;
    }
    if (op === CHAR || op === CHARB) relax(((pc + 1) << 1) | 1, d + 1, false);
    else if (op === SPLIT) {
      relax((p.a[pc]! << 1) | read, d, true);
      relax((p.b[pc]! << 1) | read, d, true);
    } else if (op === JMP) relax((p.a[pc]! << 1) | read, d, true);
    else if (pc + 1 < n) relax(((pc + 1) << 1) | read, d, true);
  }
  return Infinity;
}

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

  /** An atom's byte set; one that matches no byte (outside a negative lookaround) is refused. */
  const atomSet = (e: AST.Node, raw: string, neg: boolean): Uint8Array => {
    const set = charSet(raw);
    if (!neg && set.indexOf(1) < 0) {
      const lone = e.type === 'Character' && e.value >= 0xd800 && e.value <= 0xdfff;
      throw new CompileRefusal(
        `${lone ? `U+${e.value.toString(16).toUpperCase()} (half of a surrogate pair)` : `"${e.raw}"`} matches no byte: a rule's pattern runs on bytes read as latin1 (one character per byte, \\x00-\\xff), ` +
          'so a character above \\xff is never seen; for UTF-8 text write its bytes, e.g. "€" as "\\xe2\\x82\\xac"',
      );
    }
    return set;
  };

  const compileInto = (out: Ins[], body: AST.Alternative[], backward: boolean, neg = false): void => {
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
          // By its value: the raw text of an Annex B escape may not stand alone ("\\c" is "\\").
          emit(backward ? CHARB : CHAR, 0, 0, atomSet(e, e.value > 0xffff ? `\\u{${e.value.toString(16)}}` : `\\u${e.value.toString(16).padStart(4, '0')}`, neg));
          return;
        case 'CharacterClass':
        case 'CharacterSet':
        case 'ExpressionCharacterClass':
          emit(backward ? CHARB : CHAR, 0, 0, atomSet(e, e.raw, neg));
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
            compileInto(sub, e.alternatives, e.kind === 'lookbehind', neg || e.negate);
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
    longLookbehind: longLookbehind(ast, multiline)?.raw,
    looksBack: looksBack(ast),
    first,
    last,
    prefix,
    literal,
    canon,
  };
}

/**
 * The first lookbehind that may look further back than the one character of context a rule has,
 * or null. Not only its body's width counts: inside a lookbehind, `\\b`, `\\B` and `^` with `m`
 * read the character before where they stand, `^` without `m` (the stream start) cannot be told
 * from the window's first character once anything stands right of it, and a nested lookaround's
 * own reach adds to the characters right of it.
 */
function longLookbehind(n: AST.Node, multiline: boolean): AST.LookbehindAssertion | null {
  if (n.type === 'Assertion' && n.kind === 'lookbehind' && Math.max(...n.alternatives.map((a) => reachBack(a.elements, 0, multiline))) > 1) return n;
  for (const c of children(n)) {
    const l = longLookbehind(c, multiline);
    if (l !== null) return l;
  }
  return null;
}

/** Whether `n` holds a `^`, `\\b`, `\\B` or lookbehind (see CompiledPattern.looksBack). */
function looksBack(n: AST.Node): boolean {
  if (n.type === 'Assertion' && (n.kind === 'start' || n.kind === 'word' || n.kind === 'lookbehind')) return true;
  return children(n).some(looksBack);
}

/**
 * How many characters before the lookbehind's position `els` (a lookbehind body, matched right to
 * left) may read, `w` characters already consumed right of it. Infinity: unbounded, or a `^`
 * without `m` with characters right of it.
 */
function reachBack(els: readonly AST.Element[], w: number, multiline: boolean): number {
  let need = w;
  for (let i = els.length - 1; i >= 0; i--) {
    const e = els[i]!;
    switch (e.type) {
      case 'Assertion':
        if (e.kind === 'word' || (e.kind === 'start' && multiline)) need = Math.max(need, w + 1);
        else if (e.kind === 'start' && w > 0) return Infinity;
        else if (e.kind === 'lookbehind') need = Math.max(need, ...e.alternatives.map((a) => reachBack(a.elements, w, multiline)));
        else if (e.kind === 'lookahead' && hasAssertion(e)) {
          // A lookahead reads forward from here; one with assertions inside is taken (conservatively)
          // as if its body stood left of here.
          need = Math.max(need, ...e.alternatives.map((a) => reachBack([...a.elements].reverse(), w, multiline)));
        }
        break;
      case 'Group':
      case 'CapturingGroup':
        need = Math.max(need, ...e.alternatives.map((a) => reachBack(a.elements, w, multiline)));
        w += maxWidth(e);
        break;
      case 'Quantifier': {
        const width = maxWidth(e);
        if (width === Infinity) return Infinity;
        // Every iteration may stand anywhere up to the quantifier's full width.
        need = Math.max(need, reachBack([e.element], w + width - maxWidth(e.element), multiline));
        w += width;
        break;
      }
      case 'Backreference':
        return Infinity;
      default:
        w += maxWidth(e);
    }
    need = Math.max(need, w);
  }
  return need;
}

/** Whether an assertion (anchor, word boundary, lookaround) is inside the node's children. */
function hasAssertion(n: AST.Node): boolean {
  return children(n).some((c) => c.type === 'Assertion' || hasAssertion(c));
}

/** The most characters the node can match (Infinity: unbounded, or a backreference). */
function maxWidth(n: AST.Node): number {
  switch (n.type) {
    case 'Character':
    case 'CharacterClass':
    case 'CharacterSet':
    case 'ExpressionCharacterClass':
      return 1;
    case 'Alternative':
      return n.elements.reduce((a, e) => a + maxWidth(e), 0);
    case 'Group':
    case 'CapturingGroup':
      return Math.max(0, ...n.alternatives.map(maxWidth));
    case 'Quantifier': {
      const w = maxWidth(n.element);
      return w === 0 ? 0 : n.max === Infinity ? Infinity : w * n.max;
    }
    case 'Backreference':
      return Infinity;
    default:
      return 0; // assertions
  }
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

  // `search` scratch (per-connection state is in SearchState). Arrays indexed by instruction
  // are valid where their stamp equals the current generation.
  /** The pattern has `$`, `\b` or `\B`: at a window's end they see the end of input. */
  private readonly endSensitive: boolean;
  /** Per instruction, a pseudo-random word: a thread set hashes to the sum over its members. */
  private readonly pcHash: Int32Array;
  private readonly lab: Int32Array; // classes that reached the instruction
  private readonly done: Int32Array; // classes already followed from it
  private readonly labStamp: Int32Array;
  private readonly onStack: Int32Array;
  private labGen = 0;
  private readonly stack: Int32Array;
  private readonly chars: Int32Array; // CHAR instructions reached
  private readonly mark: Int32Array;
  private markGen = 0;
  private readonly dfs: Int32Array;
  private readonly succ: Int32Array; // one class's threads for the next position
  private readonly taken: Int32Array; // one class's threads, taken out of its group
  private readonly idx: Int32Array;
  private hashes: Int32Array = new Int32Array(64);
  private counts: Int32Array = new Int32Array(64);
  private tblCls: Int32Array = new Int32Array(64);
  private tblStamp: Int32Array = new Int32Array(64);
  private tblGen = 0;
  private readonly scratch = new SearchState();
  private heapTmp: Int32Array = new Int32Array(64);
  private stopAt = 0;
  private survivors = 0; // stepGroup: the classes that have threads for the next position
  /** Length of the literal prefix (0: none), the instruction after it, its assertions (pc, offset). */
  private readonly litLength: number;
  private readonly litEnd: number;
  private readonly litAsserts: Int32Array;

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
      x ^= x << 13; // xorshift32: a fixed sequence, so every node hashes alike
      x ^= x >>> 17;
      x ^= x << 5;
      this.pcHash[pc] = x;
    }
    this.lab = new Int32Array(m);
    this.done = new Int32Array(m);
    this.labStamp = new Int32Array(m);
    this.onStack = new Int32Array(m);
    this.stack = new Int32Array(m);
    this.chars = new Int32Array(m);
    this.mark = new Int32Array(m);
    // A walk pushes its seeds (at most m) and at most two successors per instruction it visits.
    this.dfs = new Int32Array(3 * m + 2);
    this.succ = new Int32Array(m);
    this.taken = new Int32Array(m);
    this.idx = new Int32Array(m);
    // The literal prefix is a straight line of CHAR, SAVE, RESET, ASSERT (`prefixSets`).
    const asserts: number[] = [];
    let pc = 0;
    for (let k = 0; cp.literal !== null && k < cp.literal.length; pc++) {
      if (cp.main.ops[pc] === CHAR) k++;
      else if (cp.main.ops[pc] === ASSERT) asserts.push(pc, k);
    }
    this.litLength = cp.literal?.length ?? 0;
    this.litEnd = pc;
    this.litAsserts = Int32Array.from(asserts);
  }

  /**
   * The leftmost start q in [from, to) whose window has a non-empty match, or -1: what `run`
   * would say at each q in turn, in one pass over the text. `buf` is the text as bytes, `text()`
   * the same as latin1 preceded by the context byte when `off` is 1 (buf[q] is s[q + off]; only
   * made when a start is tried: candidates are found in `buf`); q's
   * window ends at q + off + maxMatch in `s`, or at the end of `s` (with `final`: the data ends
   * the stream; else only starts whose window is complete are decided). With a `state` and
   * `final` false, the search leaves there where it stopped at the end of the data, and the next
   * search of the same stream with that state (`base`: stream offset of buf[0]) goes on from
   * there instead of reading the data again.
   *
   * Not the textbook unanchored Pike VM (one thread list, a new lowest-priority thread per start,
   * the earlier start kept when two threads meet): two threads of different starts that meet
   * have the same future only without windows. The earlier start's window ends first, and the
   * later start dropped in its favour may still have matched: `d*cd` with maxMatch 4 on
   * "dddddcd" matches "ddcd" at 3 in RegExp's windows, the textbook simulation drops starts 1-3
   * into start 0, loses them when start 0's window ends at 4 and reports "dcd" at 4. And at a
   * window's end `$`, `\b` and `\B` see the end of input, which depends on the start too.
   *
   * So the simulation merges starts, not threads. A *class* is a set of live starts whose thread
   * sets are equal, as sets of instructions: whether a match exists does not depend on priority,
   * captures or the empty-iteration check (ECMA-262 RepeatMatcher step 2.b; skipping the empty
   * iteration reaches the same places). Equal sets stay equal, so a class never splits; classes
   * whose sets become equal merge. A class keeps its starts in a pairing heap, earliest on top.
   * At each position: the start whose window ends there gets its last chance (the closure with
   * the end of input there, when the pattern can tell) and leaves; a class reaching MATCH makes
   * its earliest start a success; the threads step over the char. A new start brings the
   * threads that come before its empty match in priority order (an empty match hides every
   * lower-priority one, and an empty match is no match here). Once a start succeeded no start is
   * added, and only classes holding earlier starts go on.
   *
   * Up to 32 classes share one thread list (a *group*), each thread labelled with a bit per class
   * that has it, so one walk serves them all: the work per position is the walk over the union
   * of their threads, O(program). Merging equal classes is checked when their number has doubled
   * (cost: the sum of their set sizes, amortized). More than 32 distinct classes take one group
   * per 32: that happens for thread sets that count positions (`.{1000}`: one class per counter
   * value, at most maxMatch), and costs one walk per group.
   */
  search(text: () => string, buf: Buffer, off: number, from: number, to: number, maxMatch: number, opts: SearchOptions = {}): number {
    const base = opts.base ?? 0;
    const final = opts.final ?? true;
    const keep = opts.state !== undefined && !final;
    const st = opts.state ?? this.scratch;
    const A = base - off; // stream offset of s[0]
    const len = buf.length + off;
    let s = '';
    const fromS = from + off;
    const cand = opts.candidates ?? new Candidates(this.cp, buf, maxMatch);
    let pos = 0;
    let next = fromS; // starts from here on are yet to be considered
    let best = Infinity; // the earliest start that matched
    // Threads alive need the text from where they wait; with none alive only `next` matters (the
    // loop moves to the next start first), so a search that found nothing resumes whatever the
    // new text's start (a held tail that moved on: a sender dribbling bytes is not rescanned).
    const resumable = st.classes === 0 || (st.at - A >= off && st.at - A <= len);
    if (opts.state !== undefined && st.at >= 0 && resumable && st.next - A <= len && st.from <= A + fromS && (st.best < 0 || st.best >= A + fromS)) {
      pos = Math.max(st.at - A, 0);
      next = Math.max(st.next - A, fromS);
      if (st.best >= 0) best = st.best - A;
      this.trim(st, A + fromS);
    } else st.reset(A + fromS);
    st.at = -1; // until the search stops at the end of the data
    let inj = this.nextStart(cand, next, to, off, keep, st.classes === 0); // the next start to add
    for (;;) {
      if (st.classes === 0) {
        // Nothing alive: go to the next start.
        if (best !== Infinity) break;
        if (inj < 0) return this.stop(st, keep, A, pos, this.stopAt, best, off, to);
        pos = inj;
        if (s === '') s = text();
        const L = this.litLength;
        if (L > 0 && pos + L <= len) {
          // Its literal prefix is there (Buffer.indexOf): its threads begin after it, unless
          // another start falls inside it.
          const after = this.nextStart(cand, pos + 1, to, off, keep, false);
          if (after < 0 || after >= pos + L) {
            if (!this.literalHolds(s, pos)) {
              inj = this.nextStart(cand, pos + 1, to, off, keep, true);
              continue;
            }
            this.succ[0] = this.litEnd;
            this.newClass(st, A + pos, 1);
            pos += L;
            inj = after;
          }
        }
      }
      if (s === '') s = text();
      if (pos >= len && !final) {
        // The end of the data so far: the start whose window ends here is decided now.
        best = this.expire(st, s, pos, A, pos - maxMatch, true, best);
        return this.stop(st, keep, A, pos, pos, best, off, to);
      }
      const atEnd = pos >= len;
      const ch = atEnd ? -1 : s.charCodeAt(pos);
      const ends = pos - maxMatch; // the start whose window ends at pos
      if (this.endSensitive && !atEnd) best = this.expire(st, s, pos, A, ends, true, best);
      for (const g of st.groups) {
        if (g.alive === 0) continue;
        const m = this.stepGroup(g, s, pos, len, ch) & g.alive;
        for (let x = m; x !== 0; x &= x - 1) {
          const bit = 31 - Math.clz32(x & -x);
          // Every start of the class matched; the earliest counts.
          best = Math.min(best, st.key[g.heap[bit]!]! - A);
          st.kill(g, bit);
        }
        // Classes left without threads: none of their starts can match.
        for (let x = g.alive & ~this.survivors; x !== 0 && !atEnd; x &= x - 1) st.kill(g, 31 - Math.clz32(x & -x));
      }
      if (!this.endSensitive || atEnd) best = this.expire(st, s, pos, A, ends, false, best);
      if (atEnd) break;
      if (best !== Infinity) st.prune(A + best);
      if (pos === inj) {
        if (best === Infinity) this.addStart(st, s, pos, A, Math.min(pos + maxMatch, len), ch);
        inj = this.nextStart(cand, pos + 1, to, off, keep, false);
      }
      st.dropEmptyGroups();
      pos++;
      // Idle now: the next start must have a byte that can end a match in the data so far.
      if (st.classes === 0 && inj >= 0 && best === Infinity) inj = this.nextStart(cand, inj, to, off, keep, true);
    }
    return this.stop(st, keep, A, pos, pos, best, off, to);
  }

  /** Whether the assertions inside the literal prefix hold for a start at pos. */
  private literalHolds(s: string, pos: number): boolean {
    const la = this.litAsserts;
    for (let i = 0; i < la.length; i += 2) {
      if (!assertion(this.cp.main.a[la[i]!]!, s, 0, s.length, pos + la[i + 1]!)) return false;
    }
    return true;
  }

  /**
   * The search's answer; with `keep`, where it stopped goes into `st`, which then holds no more
   * memory than its live starts need (it lives as long as the connection).
   */
  private stop(st: SearchState, keep: boolean, A: number, at: number, next: number, best: number, off: number, to: number): number {
    const found = best !== Infinity && best - off < to;
    if (keep && !found) {
      st.at = A + at;
      st.next = A + next;
      st.best = best === Infinity ? -1 : A + best;
    }
    if (st !== this.scratch) st.shrink();
    return found ? best - off : -1;
  }

  /**
   * The next start to add at or after s index i, or -1 (this.stopAt: from where none was
   * considered). Below `to` the candidates (`Candidates`); when keeping state, undecided starts
   * too: while threads are alive any that can begin a match (the simulation passes them anyway),
   * when idle only those with a byte that can end a match in the data so far.
   */
  private nextStart(cand: Candidates, i: number, to: number, off: number, keep: boolean, idle: boolean): number {
    let q = i - off;
    if (q < to) {
      const c = cand.next(q, to);
      if (c >= 0) return c + off;
      q = to;
    }
    const n = cand.length;
    if (!keep) {
      this.stopAt = n + off;
      return -1;
    }
    q = cand.nextBegin(q);
    if (q >= n || (idle && !cand.endsAfter(q))) {
      this.stopAt = q + off;
      return -1;
    }
    return q + off;
  }

  /**
   * One step of group g at pos: the walk over its threads (`hi` = end of input for the
   * assertions), the threads for pos + 1 over `ch` (-1: none). Returns the classes that reached
   * MATCH.
   */
  private stepGroup(g: Group, s: string, pos: number, hi: number, ch: number): number {
    const { ops, a, b, sets } = this.cp.main;
    const lab = this.lab;
    const done = this.done;
    const stamp = this.labStamp;
    const onStack = this.onStack;
    const stack = this.stack;
    const chars = this.chars;
    if (++this.labGen === 0x7fffffff) {
      stamp.fill(0);
      onStack.fill(0);
      this.labGen = 1;
    }
    const gen = this.labGen;
    let top = 0;
    for (let i = 0; i < g.n; i++) {
      const l = g.labels[i]! & g.alive;
      if (l === 0) continue;
      const pc = g.pcs[i]!;
      stamp[pc] = gen;
      lab[pc] = l;
      done[pc] = 0;
      onStack[pc] = gen;
      stack[top++] = pc;
    }
    let matched = 0;
    let nc = 0;
    while (top > 0) {
      const pc = stack[--top]!;
      onStack[pc] = 0;
      const l = lab[pc]!;
      const d = l & ~done[pc]!; // classes not followed from here yet
      if (d === 0) continue;
      const op = ops[pc]!;
      if (op === CHAR) {
        if (done[pc] === 0) chars[nc++] = pc;
        done[pc] = l;
        continue;
      }
      done[pc] = l;
      let t1 = -1;
      let t2 = -1;
      switch (op) {
        case MATCH:
          matched |= d;
          break;
        case SPLIT:
          t1 = a[pc]!;
          t2 = b[pc]!;
          break;
        case JMP:
          t1 = a[pc]!;
          break;
        case ASSERT:
          if (assertion(a[pc]!, s, 0, hi, pos)) t1 = pc + 1;
          break;
        case SAVE:
        case ENTER:
        case RESET:
        case CHECK: // not applied: see `search`
          t1 = pc + 1;
          break;
        default:
          throw new Error(`regex: instruction ${op} in a linear program (compiler bug)`);
      }
      // Give the classes d to t1 and t2 (written out twice: this loop is the hot one).
      if (t1 >= 0) {
        if (stamp[t1] !== gen) {
          stamp[t1] = gen;
          lab[t1] = d;
          done[t1] = 0;
          onStack[t1] = gen;
          stack[top++] = t1;
        } else if ((lab[t1]! | d) !== lab[t1]) {
          lab[t1]! |= d;
          if (onStack[t1] !== gen) {
            onStack[t1] = gen;
            stack[top++] = t1;
          }
        }
      }
      if (t2 >= 0) {
        if (stamp[t2] !== gen) {
          stamp[t2] = gen;
          lab[t2] = d;
          done[t2] = 0;
          onStack[t2] = gen;
          stack[top++] = t2;
        } else if ((lab[t2]! | d) !== lab[t2]) {
          lab[t2]! |= d;
          if (onStack[t2] !== gen) {
            onStack[t2] = gen;
            stack[top++] = t2;
          }
        }
      }
    }
    let k = 0;
    let survivors = 0;
    if (ch >= 0) {
      g.reserve(nc);
      for (let i = 0; i < nc; i++) {
        const pc = chars[i]!;
        if (sets[pc]![ch] === 1) {
          g.next[k] = pc + 1;
          survivors |= g.nextLabels[k++] = lab[pc]!;
        }
      }
    }
    g.swap(k);
    this.survivors = survivors;
    return matched;
  }

  /**
   * The start `e` leaves (its window ends at pos); with `check`, it gets its last chance first:
   * its class's threads walked with pos as the end of input.
   */
  private expire(st: SearchState, s: string, pos: number, A: number, e: number, check: boolean, best: number): number {
    if (e < 0) return best;
    for (const g of st.groups) {
      for (let x = g.alive; x !== 0; x &= x - 1) {
        const bit = 31 - Math.clz32(x & -x);
        const root = g.heap[bit]!;
        if (st.key[root] !== A + e) continue;
        if (check && e < best) {
          let k = 0;
          for (let i = 0; i < g.n; i++) if ((g.labels[i]! >>> bit) & 1) this.taken[k++] = g.pcs[i]!;
          if (this.closure(this.taken, k, s, pos, pos, -1) < 0) best = e;
        }
        const r = st.deleteMin(root, this.heapScratch(st));
        if (r < 0) st.kill(g, bit);
        else {
          g.heap[bit] = r;
          g.size[bit]!--;
          st.live--;
        }
        return best;
      }
    }
    return best;
  }

  /** A new start at pos (window end hi): a class of its own, merged later if it has an equal. */
  private addStart(st: SearchState, s: string, pos: number, A: number, hi: number, ch: number): void {
    const k = this.startSet(s, pos, hi, ch);
    if (k > 0) this.newClass(st, A + pos, k);
  }

  /** A class for start `key` (stream offset) with the threads this.succ[0, k). */
  private newClass(st: SearchState, key: number, k: number): void {
    let g = st.groups.length > 0 ? st.groups[st.groups.length - 1]! : undefined;
    if (g === undefined || g.alive === -1) {
      if (st.classes >= 8) this.mergeClasses(st);
      g = st.groups.find((x) => x.alive !== -1) ?? st.addGroup(this.cp.main.ops.length);
    }
    const bit = 31 - Math.clz32(~g.alive & (g.alive + 1)); // lowest free bit
    const mask = 1 << bit;
    // A freed bit may still label threads: clear it, then index the group's threads.
    if (++this.markGen === 0x7fffffff) {
      this.mark.fill(0);
      this.markGen = 1;
    }
    const gen = this.markGen;
    for (let i = 0; i < g.n; i++) {
      g.labels[i]! &= ~mask;
      this.mark[g.pcs[i]!] = gen;
      this.idx[g.pcs[i]!] = i;
    }
    g.reserve(g.n + k);
    for (let i = 0; i < k; i++) {
      const pc = this.succ[i]!;
      if (this.mark[pc] === gen) g.labels[this.idx[pc]!]! |= mask;
      else {
        g.pcs[g.n] = pc;
        g.labels[g.n++] = mask;
      }
    }
    g.alive |= mask;
    g.heap[bit] = st.newNode(key);
    g.size[bit] = 1;
    st.classes++;
    st.live++;
    if (st.classes >= 2 * st.classesAtMerge + 8) this.mergeClasses(st);
  }

  /**
   * The threads a start at `pos` begins with, stepped over `ch`, into this.succ (returns how
   * many): all of them when its walk has no MATCH, else those before its empty match in
   * priority order.
   */
  private startSet(s: string, pos: number, hi: number, ch: number): number {
    this.taken[0] = 0;
    const k = this.closure(this.taken, 1, s, pos, hi, ch);
    if (k >= 0) return k;
    const { ops, sets } = this.cp.main;
    const init = new Int32Array(this.cp.slots).fill(-1);
    init[0] = pos;
    this.cur.n = 0;
    this.bump();
    this.add(this.cur, 0, init, pos, s, 0, hi);
    const gen = this.nextMark(); // a pc may be listed more than once (different iteration keys)
    let n = 0;
    for (let i = 0; i < this.cur.n; i++) {
      const pc = this.cur.pcs[i]!;
      if (ops[pc] === MATCH) break;
      if (ch >= 0 && sets[pc]![ch] === 1 && this.mark[pc] !== gen) {
        this.mark[pc] = gen;
        this.succ[n++] = pc + 1;
      }
    }
    return n;
  }

  /**
   * Walk from pcs[0, count) at pos, `hi` being the end of input for the assertions, every
   * instruction once. -1 when MATCH is reached; else the successors of the CHAR threads that
   * accept `ch` (-1: none) are put in this.succ and their number returned.
   */
  private closure(pcs: Int32Array, count: number, s: string, pos: number, hi: number, ch: number): number {
    const { ops, a, b, sets } = this.cp.main;
    const mark = this.mark;
    const dfs = this.dfs;
    const succ = this.succ;
    const gen = this.nextMark();
    let n = 0;
    let top = 0;
    for (let i = count - 1; i >= 0; i--) dfs[top++] = pcs[i]!;
    while (top > 0) {
      const pc = dfs[--top]!;
      if (mark[pc] === gen) continue;
      mark[pc] = gen;
      switch (ops[pc]) {
        case CHAR:
          if (ch >= 0 && sets[pc]![ch] === 1) succ[n++] = pc + 1;
          break;
        case MATCH:
          return -1;
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
    return n;
  }

  /** Starts before `from` leave (a later search began past them). */
  private trim(st: SearchState, from: number): void {
    for (const g of st.groups) {
      for (let x = g.alive; x !== 0; x &= x - 1) {
        const bit = 31 - Math.clz32(x & -x);
        let root = g.heap[bit]!;
        while (root >= 0 && st.key[root]! < from) {
          root = st.deleteMin(root, this.heapScratch(st));
          g.size[bit]!--;
          st.live--;
        }
        if (root < 0) st.kill(g, bit);
        else g.heap[bit] = root;
      }
    }
    st.dropEmptyGroups();
    st.compact();
  }

  /**
   * Merge the classes whose thread sets are equal (any groups): sets hashed as the sum of their
   * instructions' words, equal hashes compared exactly.
   */
  private mergeClasses(st: SearchState): void {
    const groups = st.groups;
    const slots = 32 * groups.length;
    if (this.hashes.length < slots) {
      this.hashes = new Int32Array(2 * slots);
      this.counts = new Int32Array(2 * slots);
    }
    const hashes = this.hashes;
    const counts = this.counts;
    hashes.fill(0, 0, slots);
    counts.fill(0, 0, slots);
    groups.forEach((g, gi) => {
      for (let i = 0; i < g.n; i++) {
        const h = this.pcHash[g.pcs[i]!]!;
        for (let x = g.labels[i]! & g.alive; x !== 0; x &= x - 1) {
          const j = 32 * gi + 31 - Math.clz32(x & -x);
          hashes[j] = (hashes[j]! + h) | 0;
          counts[j]!++;
        }
      }
    });
    let size = this.tblCls.length;
    while (size < 2 * st.classes) size *= 2;
    if (size > this.tblCls.length) {
      this.tblCls = new Int32Array(size);
      this.tblStamp = new Int32Array(size);
      this.tblGen = 0;
    }
    if (++this.tblGen === 0x7fffffff) {
      this.tblStamp.fill(0);
      this.tblGen = 1;
    }
    const mask = size - 1;
    groups.forEach((g, gi) => {
      for (let x = g.alive; x !== 0; x &= x - 1) {
        const bit = 31 - Math.clz32(x & -x);
        const j = 32 * gi + bit;
        const h = (hashes[j]! + counts[j]!) | 0;
        let i = h & mask;
        let merged = false;
        for (; this.tblStamp[i] === this.tblGen; i = (i + 1) & mask) {
          const o = this.tblCls[i]!;
          if (hashes[o] !== hashes[j] || counts[o] !== counts[j]) continue;
          const og = groups[o >>> 5]!;
          const obit = o & 31;
          if (!this.sameClass(og, obit, g, bit)) continue;
          og.heap[obit] = st.meld(og.heap[obit]!, g.heap[bit]!);
          og.size[obit]! += g.size[bit]!;
          g.alive &= ~(1 << bit);
          st.classes--;
          merged = true;
          break;
        }
        if (!merged) {
          this.tblStamp[i] = this.tblGen;
          this.tblCls[i] = j;
        }
      }
    });
    st.dropEmptyGroups();
    st.classesAtMerge = st.classes;
  }

  /** Whether class (g, bit) and class (h, hbit) have the same threads (their counts are equal). */
  private sameClass(g: Group, bit: number, h: Group, hbit: number): boolean {
    const gen = this.nextMark();
    for (let i = 0; i < g.n; i++) if ((g.labels[i]! >>> bit) & 1) this.mark[g.pcs[i]!] = gen;
    for (let i = 0; i < h.n; i++) if ((h.labels[i]! >>> hbit) & 1 && this.mark[h.pcs[i]!] !== gen) return false;
    return true;
  }

  /** Scratch for `st.deleteMin`. */
  private heapScratch(st: SearchState): Int32Array {
    if (this.heapTmp.length < st.nodeCount) this.heapTmp = new Int32Array(2 * st.nodeCount);
    return this.heapTmp;
  }

  private nextMark(): number {
    if (++this.markGen === 0x7fffffff) {
      this.mark.fill(0);
      this.markGen = 1;
    }
    return this.markGen;
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

export interface SearchOptions {
  /** Stream offset of buf[0] (positions in `state` are stream offsets). Default 0. */
  base?: number;
  /** The data ends the stream (a flush): windows are cut there. Default true. */
  final?: boolean;
  /** Where the previous search of this stream stopped; updated. Used when `final` is false. */
  state?: SearchState;
  /** The candidates of `buf` for this pattern and maxMatch, shared by searches at increasing `from`. */
  candidates?: Candidates;
}

/** A copy of x, `size` long. */
function resized(x: Int32Array, size: number): Int32Array {
  const y = new Int32Array(size);
  y.set(x.subarray(0, Math.min(x.length, size)));
  return y;
}

/**
 * Up to 32 classes sharing one thread list: thread i waits at instruction pcs[i] for the classes
 * whose bits are set in labels[i].
 */
class Group {
  pcs: Int32Array;
  labels: Int32Array;
  n = 0;
  next: Int32Array;
  nextLabels: Int32Array;
  /** Bits of the live classes (-1: all 32). */
  alive = 0;
  /** Per bit: root of the class's heap of starts, and how many starts it holds. */
  readonly heap = new Int32Array(32);
  readonly size = new Int32Array(32);

  constructor(private readonly max: number) {
    const cap = Math.min(max, 32);
    this.pcs = new Int32Array(cap);
    this.labels = new Int32Array(cap);
    this.next = new Int32Array(cap);
    this.nextLabels = new Int32Array(cap);
  }

  /** Room for `count` threads (never more than the program has instructions). */
  reserve(count: number): void {
    if (count <= this.pcs.length) return;
    const cap = Math.min(this.max, Math.max(count, 2 * this.pcs.length));
    this.pcs = resized(this.pcs, cap);
    this.labels = resized(this.labels, cap);
    this.next = resized(this.next, cap);
    this.nextLabels = resized(this.nextLabels, cap);
  }

  /** next[0, n) becomes the thread list. */
  swap(n: number): void {
    [this.pcs, this.next] = [this.next, this.pcs];
    [this.labels, this.nextLabels] = [this.nextLabels, this.labels];
    this.n = n;
  }
}

/**
 * Where `PikeVM.search` stopped at the end of the data, to go on from there when more comes:
 * the runtime state of one rule on one direction of a connection, never in a snapshot (without
 * it, a search reads the held data again). Positions are stream offsets. Memory: nothing when no
 * start is alive; else 12 bytes per heap node, at most twice the live starts (which are at most
 * maxMatch: 1.5 MB at 65535 when every start stays alive), and the thread lists (16 bytes per
 * instruction of the program, per 32 classes).
 */
export class SearchState {
  /** Where the threads wait (the end of the data searched); -1: nothing to resume. */
  at = -1;
  /** Where the search began: every start from here to `next`, but the live ones and `best`, has no match. */
  from = 0;
  next = 0;
  /** The earliest start known to match (not decided yet when kept), -1: none. */
  best = -1;
  groups: Group[] = [];
  private spare: Group[] = [];
  classes = 0;
  classesAtMerge = 0;
  /** Starts in the heaps. */
  live = 0;
  // Pairing heaps of starts: node i holds start key[i].
  key: Int32Array = new Int32Array(16);
  private child: Int32Array = new Int32Array(16);
  private sib: Int32Array = new Int32Array(16);
  private nodes = 0;

  get nodeCount(): number {
    return this.nodes;
  }

  /**
   * Keep memory for the live starts only: when there is nothing to resume, one small group and
   * small heap arrays at most (what most searches use: kept, not made again).
   */
  shrink(): void {
    if (this.classes === 0 || this.at < 0) {
      for (const g of this.groups) this.spare.push(g);
      this.groups.length = 0;
      this.classes = 0;
      this.live = 0;
      this.nodes = 0;
      if (this.spare.length > 1 || (this.spare.length === 1 && this.spare[0]!.pcs.length > 256)) {
        this.spare = this.spare.filter((g) => g.pcs.length <= 256).slice(0, 1);
      }
      if (this.key.length > 1024) {
        this.key = new Int32Array(16);
        this.child = new Int32Array(16);
        this.sib = new Int32Array(16);
      }
      return;
    }
    this.spare.length = 0;
    this.compact();
  }

  reset(from: number): void {
    this.at = -1;
    this.from = from;
    this.next = from;
    this.best = -1;
    for (const g of this.groups) this.spare.push(g);
    this.groups.length = 0;
    this.classes = 0;
    this.classesAtMerge = 0;
    this.live = 0;
    this.nodes = 0;
  }

  addGroup(max: number): Group {
    const g = this.spare.pop() ?? new Group(max);
    g.n = 0;
    g.alive = 0;
    this.groups.push(g);
    return g;
  }

  dropEmptyGroups(): void {
    if (this.groups.every((g) => g.alive !== 0)) return;
    let j = 0;
    for (const g of this.groups) {
      if (g.alive !== 0) this.groups[j++] = g;
      else this.spare.push(g);
    }
    this.groups.length = j;
  }

  /** The class leaves with its starts (matched, or none left that can beat the best). */
  kill(g: Group, bit: number): void {
    g.alive &= ~(1 << bit);
    this.classes--;
    this.live -= g.size[bit]!;
  }

  /** Kill the classes whose earliest start is not before `best`. */
  prune(best: number): void {
    for (const g of this.groups) {
      for (let x = g.alive; x !== 0; x &= x - 1) {
        const bit = 31 - Math.clz32(x & -x);
        if (this.key[g.heap[bit]!]! >= best) this.kill(g, bit);
      }
    }
  }

  newNode(key: number): number {
    // Full: renumber when a third is garbage (amortized O(1) per node), else grow.
    if (this.nodes === this.key.length && this.nodes >= this.live + (this.live >> 1) + 64) this.compact(true);
    if (this.nodes === this.key.length) {
      const size = 2 * this.key.length;
      this.key = resized(this.key, size);
      this.child = resized(this.child, size);
      this.sib = resized(this.sib, size);
    }
    const i = this.nodes++;
    this.key[i] = key;
    this.child[i] = -1;
    this.sib[i] = -1;
    return i;
  }

  meld(x: number, y: number): number {
    if (x < 0) return y;
    if (y < 0) return x;
    if (this.key[y]! < this.key[x]!) [x, y] = [y, x];
    this.sib[y] = this.child[x]!;
    this.child[x] = y;
    return x;
  }

  /**
   * The heap without its root (pairing heap: children melded in pairs, then right to left);
   * `tmp` is scratch, at least as long as the number of nodes.
   */
  deleteMin(root: number, tmp: Int32Array): number {
    let k = 0;
    for (let c = this.child[root]!; c >= 0; ) {
      const d = this.sib[c]!;
      this.sib[c] = -1;
      if (d < 0) {
        tmp[k++] = c;
        break;
      }
      const next = this.sib[d]!;
      this.sib[d] = -1;
      tmp[k++] = this.meld(c, d);
      c = next;
    }
    if (k === 0) return -1;
    let r = tmp[--k]!;
    while (k > 0) r = this.meld(tmp[--k]!, r);
    return r;
  }

  /** Renumber the nodes, in arrays of twice the live starts, when most are gone (or `now`). */
  compact(now = false): void {
    if (!now && this.nodes <= 2 * this.live + 1024) return;
    const keys: number[][] = [];
    for (const g of this.groups) {
      for (let x = g.alive; x !== 0; x &= x - 1) {
        const bit = 31 - Math.clz32(x & -x);
        const ks: number[] = [];
        const todo = [g.heap[bit]!];
        while (todo.length > 0) {
          for (let c = todo.pop()!; c >= 0; c = this.sib[c]!) {
            ks.push(this.key[c]!);
            if (this.child[c]! >= 0) todo.push(this.child[c]!);
          }
        }
        keys.push(ks);
      }
    }
    this.nodes = 0;
    const size = Math.max(16, 2 * this.live + 64);
    this.key = new Int32Array(size);
    this.child = new Int32Array(size);
    this.sib = new Int32Array(size);
    let i = 0;
    for (const g of this.groups) {
      for (let x = g.alive; x !== 0; x &= x - 1) {
        const bit = 31 - Math.clz32(x & -x);
        let root = -1;
        for (const k of keys[i++]!) root = this.meld(root, this.newNode(k));
        g.heap[bit] = root;
      }
    }
  }
}

/**
 * The starts in a buffer worth trying: the byte can begin a match (`first`; the literal prefix,
 * when there is one, found with Buffer.indexOf, memchr-like), the fixed `prefix` fits, and the
 * window holds a byte that can end a match (`last`). So a pattern such as `(a|aa)+b` costs one
 * pass over a run of "a" without "b". Called with increasing q (one buffer, any number of
 * searches), `next` is O(1) amortized.
 */
export class Candidates {
  // The first literal occurrence at or after litFrom (buf.length: none), and the first index at
  // or after lastFrom holding a byte in `last`: valid for any q in [xFrom, xAt].
  private litFrom = 0;
  private litAt = -1;
  private lastFrom = 0;
  private lastAt = -1;

  constructor(
    private readonly cp: CompiledPattern,
    private readonly buf: Buffer,
    private readonly maxMatch: number,
  ) {}

  get length(): number {
    return this.buf.length;
  }

  /** The first candidate in [q, to), whose window lies inside the buffer, or -1. */
  next(q: number, to: number): number {
    const { first, prefix, literal } = this.cp;
    const buf = this.buf;
    const n = buf.length;
    const mm = this.maxMatch;
    next: for (; q < to; q++) {
      if (literal !== null) {
        q = this.literalAt(q);
        if (q >= to) return -1;
      } else if (first[buf[q]!] === 0) continue;
      const end = Math.min(q + mm, n); // the window
      for (let k = 0; k < prefix.length; k++) {
        if (q + k >= end || prefix[k]![buf[q + k]!] === 0) continue next;
      }
      if (!this.endsAfter(q)) return -1;
      if (this.lastAt >= q + mm) {
        q = this.lastAt - mm; // the next window that reaches lastAt starts at lastAt - mm + 1
        continue;
      }
      return q;
    }
    return -1;
  }

  /** The first index at or after q that can begin a match as far as the buffer goes, or its length. */
  nextBegin(q: number): number {
    const literal = this.cp.literal;
    const n = this.buf.length;
    if (literal === null) {
      while (q < n && !this.begins(q)) q++;
      return q;
    }
    for (;;) {
      const i = this.literalAt(q);
      if (i >= n) break;
      if (this.begins(i)) return i;
      q = i + 1;
    }
    // Or the literal cut by the end of the buffer.
    for (q = Math.max(q, n - literal.length + 1); q < n; q++) if (this.begins(q)) return q;
    return n;
  }

  /** Whether q can begin a match as far as the buffer goes (its window may go beyond). */
  begins(q: number): boolean {
    const { first, prefix } = this.cp;
    const buf = this.buf;
    if (first[buf[q]!] === 0) return false;
    for (let k = 0; k < prefix.length && q + k < buf.length; k++) {
      if (k >= this.maxMatch || prefix[k]![buf[q + k]!] === 0) return false;
    }
    return true;
  }

  /** Whether a byte that can end a match lies at or after q (this.lastAt: the first). */
  endsAfter(q: number): boolean {
    const buf = this.buf;
    const last = this.cp.last;
    if (q < this.lastFrom || q > this.lastAt) {
      let i = q;
      while (i < buf.length && last[buf[i]!] === 0) i++;
      this.lastFrom = q;
      this.lastAt = i;
    }
    return this.lastAt < buf.length;
  }

  /** The first occurrence of the literal prefix at or after q (Buffer.indexOf), or buf.length. */
  private literalAt(q: number): number {
    if (q < this.litFrom || q > this.litAt) {
      const i = this.buf.indexOf(this.cp.literal!, q);
      this.litFrom = q;
      this.litAt = i < 0 ? this.buf.length : i;
    }
    return this.litAt;
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
