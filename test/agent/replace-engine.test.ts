/**
 * The replace agent's regex engines (src/agent/regex-engine.ts) against V8's RegExp: on random
 * patterns and texts, the linear Pike VM and the budgeted backtracking VM find exactly the match
 * and captures that `RegExp` finds sticky at the same position of the same window, and the
 * linear search finds the first start where it does. Then what the engines cost on hostile
 * input, and the counters.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { createAgent, makeRegistry, newReplaceCounters } from '../../src/agent/registry.js';
import { backtrackRun, BUDGET_EXCEEDED, compilePattern, PikeVM, shortestMatch, type CompiledPattern } from '../../src/agent/regex-engine.js';
import { compileReplaceRules, createReplace, replaceFactory, type ReplaceCounters, type ReplaceRule } from '../../src/agent/replace.js';
import type { Agent, AgentContext, AgentOutput, Direction, Edit } from '../../src/agent/types.js';
import { applyEdits } from '../helpers/agent-driver.js';

const compiled = (p: string, f: string): CompiledPattern => {
  const cp = compilePattern(p, f);
  if (typeof cp === 'string') throw new Error(cp);
  return cp;
};

/** What V8 finds sticky at `at` in s[lo, hi), as slot pairs relative to s (-1 = unset). */
function native(p: string, f: string, s: string, lo: number, at: number, hi: number): number[] | null {
  const re = new RegExp(p, `${f}dy`);
  re.lastIndex = at - lo;
  const m = re.exec(s.substring(lo, hi));
  if (m === null) return null;
  return m.indices!.flatMap((r) => (r === undefined ? [-1, -1] : [r[0] + lo, r[1] + lo]));
}

/** The first q in [from, to) (indices after the context byte) where V8 matches non-empty in q's window. */
function nativeSearch(p: string, f: string, s: string, off: number, from: number, to: number, mm: number): number {
  for (let q = from; q < to; q++) {
    const at = q + off;
    const lo = at > 0 ? at - 1 : 0;
    const m = native(p, f, s, lo, at, Math.min(at + mm, s.length));
    if (m !== null && m[1]! > m[0]!) return q;
  }
  return -1;
}

const groupSlots = (caps: Int32Array | null, groups: number): number[] | null =>
  caps === null ? null : Array.from(caps.subarray(0, 2 * (groups + 1)));

// Patterns from a small grammar over a small alphabet, so that matches and near-matches are common.
const atom = fc.constantFrom('a', 'b', 'A', '.', '[ab]', '[^a]', '\\w', '\\s', '\\xe9', '[\\xc9b]', 'ab', 'ba');
const assertion = fc.constantFrom('^', '$', '\\b', '\\B');
const quant = fc.constantFrom('*', '+', '?', '{0,2}', '{1,3}', '{2}', '*?', '+?', '??', '{0,2}?', '{1,}');
const patternArb = (withNonLinear: boolean): fc.Arbitrary<string> =>
  fc.letrec<{ re: string; term: string }>((tie) => ({
    re: fc.oneof(
      { depthSize: 'small', withCrossShrink: true },
      tie('term'),
      fc.tuple(tie('term'), tie('term')).map(([x, y]) => x + y),
      fc.tuple(tie('term'), tie('re')).map(([x, y]) => `${x}|${y}`),
    ),
    term: fc.oneof(
      { depthSize: 'small', withCrossShrink: true },
      atom,
      atom,
      assertion,
      fc.tuple(tie('term'), quant).map(([x, q]) => (/[*+?}]$/.test(x) ? `(?:${x})${q}` : `(?:${x})${q}`)),
      tie('re').map((x) => `(${x})`),
      tie('re').map((x) => `(?:${x})`),
      ...(withNonLinear
        ? [
            tie('re').map((x) => `(?=${x})`),
            tie('re').map((x) => `(?!${x})`),
            tie('re').map((x) => `(?<=${x})`),
            tie('re').map((x) => `(?<!${x})`),
            fc.constantFrom('\\1', '\\2'),
          ]
        : []),
    ),
  })).re;

const textArb = fc.array(fc.constantFrom('a', 'b', 'A', ' ', '\n', '\r', '\xe9', '\xc9', '_'), { maxLength: 12 }).map((a) => a.join(''));

describe('shortestMatch (a config refuses a rule that could never match)', () => {
  it('no non-empty JavaScript match of a pattern is shorter, and a pattern with none it calls empty-only matches only empty (fast-check)', () => {
    fc.assert(
      fc.property(patternArb(true), fc.constantFrom('', 'i', 'm', 's'), fc.array(textArb, { minLength: 1, maxLength: 4 }), (p, f, texts) => {
        const cp = compilePattern(p, f);
        if (typeof cp === 'string') return;
        const min = shortestMatch(cp.main);
        const re = new RegExp(p, `${f}y`);
        for (const t of texts) {
          for (let i = 0; i < t.length; i++) {
            re.lastIndex = i;
            const m = re.exec(t);
            if (m !== null && m[0].length > 0) expect(m[0].length).toBeGreaterThanOrEqual(min);
          }
        }
      }),
      { seed: 0x5407, numRuns: 3000 },
    );
    expect(shortestMatch((compilePattern('Authorization: Bearer \\S+', '') as CompiledPattern).main)).toBe(23);
    expect(shortestMatch((compilePattern('a{3,}|bb', '') as CompiledPattern).main)).toBe(2);
    expect(shortestMatch((compilePattern('a*', '') as CompiledPattern).main)).toBe(1);
    for (const empty of ['^', '\\b', '(?:)', '^|$', '(?=a)']) expect(shortestMatch((compilePattern(empty, '') as CompiledPattern).main)).toBe(Infinity);
  });
});
const flagsArb = fc.constantFrom('', 'i', 'm', 's', 'u', 'im', 'is', 'iu', 'msu');
const caseArb = (nonLinear: boolean) =>
  fc.record({ p: patternArb(nonLinear), f: flagsArb, s: textArb, cut: fc.tuple(fc.nat(), fc.nat(), fc.nat()) }).map(({ p, f, s, cut }) => {
    const lo = cut[0] % (s.length + 1);
    const at = lo + (cut[1] % (s.length - lo + 1));
    const hi = at + (cut[2] % (s.length - at + 1));
    return { p, f, s, lo, at, hi };
  });

const valid = (p: string, f: string): boolean => {
  try {
    new RegExp(p, f);
    return true;
  } catch {
    return false;
  }
};

describe('regex engines agree with V8 RegExp', () => {
  it('Pike VM: same match and captures as RegExp on random linear patterns', () => {
    fc.assert(
      fc.property(caseArb(false), ({ p, f, s, lo, at, hi }) => {
        if (!valid(p, f)) return;
        const cp = compiled(p, f);
        expect(cp.nonLinear).toBeUndefined();
        const got = groupSlots(new PikeVM(cp).run(s, lo, at, hi), cp.groups);
        expect({ p, f, got }).toEqual({ p, f, got: native(p, f, s, lo, at, hi) });
      }),
      { seed: 4242, numRuns: 3000 },
    );
  });

  it('linear search: the first start in [from, to) whose window RegExp matches (non-empty), on random linear patterns', () => {
    fc.assert(
      fc.property(
        fc.record({ p: patternArb(false), f: flagsArb, s: textArb, mm: fc.integer({ min: 1, max: 12 }), ctx: fc.boolean(), cut: fc.tuple(fc.nat(), fc.nat()) }),
        ({ p, f, s, mm, ctx, cut }) => {
          if (!valid(p, f)) return;
          const off = ctx && s.length > 0 ? 1 : 0; // s[0] is the context byte
          const buf = Buffer.from(s.slice(off), 'latin1');
          const from = cut[0] % (buf.length + 1);
          const to = from + (cut[1] % (buf.length - from + 1));
          const got = new PikeVM(compiled(p, f)).search(() => s, buf, off, from, to, mm);
          expect({ p, f, s, mm, got }).toEqual({ p, f, s, mm, got: nativeSearch(p, f, s, off, from, to, mm) });
        },
      ),
      { seed: 5150, numRuns: 3000 },
    );
  });

  it('linear search: a start dropped for an earlier one at the same thread is not lost when that one\'s window ends', () => {
    // The textbook unanchored simulation keeps start 0 at each meeting, loses 1-3 with it at 4
    // and reports "dcd" at 4; RegExp in the windows finds "ddcd" at 3.
    const s = 'dddddcd';
    expect(new PikeVM(compiled('d*cd', '')).search(() => s, Buffer.from(s, 'latin1'), 0, 0, s.length, 4)).toBe(3);
    expect(nativeSearch('d*cd', '', s, 0, 0, s.length, 4)).toBe(3);
    // `$` at a window's end: only windows of even length from an "a" match (maxMatch 5: none
    // until the data ends).
    const t = 'abababab';
    expect(new PikeVM(compiled('(?:ab)+$', '')).search(() => t, Buffer.from(t, 'latin1'), 0, 0, t.length, 5)).toBe(4);
    expect(nativeSearch('(?:ab)+$', '', t, 0, 0, t.length, 5)).toBe(4);
  });

  it('linear search: a start inside the literal prefix of an earlier one is still tried', () => {
    // The search steps over a literal prefix found by Buffer.indexOf at once, but not over a
    // start inside it: "aba" at 0 fails ($ at 3, and no "x" for the loop to the end of the
    // data), "aba" at 2 matches.
    for (const [p, s, want] of [['aba$', 'ababa', 2], ['aba(?:[^x]*x|$)', 'ababa', 2], ['aa\\bb?', 'aaaaa b', 3], ['(a)ab\\B', 'aaabab', 1]] as const) {
      expect({ p, got: new PikeVM(compiled(p, '')).search(() => s, Buffer.from(s, 'latin1'), 0, 0, s.length, 8) }).toEqual({ p, got: want });
      expect(nativeSearch(p, '', s, 0, 0, s.length, 8)).toBe(want);
    }
  });

  it('linear search: same answer as the Pike VM run at every start, with many classes of starts (counters, nested loops, window-end assertions)', () => {
    // Long texts and windows: more than 32 classes (several groups), merges, heaps. RegExp would
    // backtrack for minutes on some of these; `run` is checked against it above.
    const k = fc.integer({ min: 3, max: 80 });
    const families = fc.oneof(
      k.map((n) => `.{${n}}c`),
      k.map((n) => `[ab ]{2,${n + 2}}c`),
      k.map((n) => `.{${n}}$`),
      k.map((n) => `(?:[^a]*a){${Math.ceil(n / 4)}}`),
      k.map((n) => `(?:.*a){${Math.ceil(n / 4)}}\\b`),
      k.map((n) => `(?:[ab]{2}){${n}}(?:c|$)`),
      k.map((n) => `[^c]{${n},}c`),
      k.map((n) => `(?:ab|ba){1,${n}}\\B`),
      k.map((n) => `(a|aa)+(?:c|b{${n}})`),
    );
    const longText = fc
      .tuple(fc.array(fc.constantFrom(...'aaabbbbbbbbbb  '), { maxLength: 600, size: 'max' }), fc.array(fc.nat(), { maxLength: 5 }), fc.constantFrom('c', 'a', ' '))
      .map(([a, at, c]) => {
        for (const i of at) if (a.length > 0) a[i % a.length] = c;
        return a.join('');
      });
    fc.assert(
      fc.property(families, fc.constantFrom('', 'm', 's'), longText, fc.integer({ min: 1, max: 300 }), fc.boolean(), (p, f, s, mm, ctx) => {
        const cp = compiled(p, f);
        const off = ctx && s.length > 0 ? 1 : 0;
        const buf = Buffer.from(s.slice(off), 'latin1');
        const vm = new PikeVM(cp);
        let want = -1;
        for (let q = 0; q < buf.length && want < 0; q++) {
          const at = q + off;
          const m = vm.run(s, at > 0 ? at - 1 : 0, at, Math.min(at + mm, s.length));
          if (m !== null && m[1]! > m[0]!) want = q;
        }
        expect({ p, f, mm, got: new PikeVM(cp).search(() => s, buf, off, 0, buf.length, mm) }).toEqual({ p, f, mm, got: want });
      }),
      { seed: 1871, numRuns: 250 },
    );
  });

  it('backtracking VM: same match and captures as RegExp, lookarounds and backreferences included', () => {
    fc.assert(
      fc.property(caseArb(true), ({ p, f, s, lo, at, hi }) => {
        if (!valid(p, f)) return;
        const cp = compiled(p, f);
        const r = backtrackRun(cp, s, lo, at, hi, { left: 1_000_000 });
        expect(r).not.toBe(BUDGET_EXCEEDED);
        const got = groupSlots(r as Int32Array | null, cp.groups);
        expect({ p, f, got }).toEqual({ p, f, got: native(p, f, s, lo, at, hi) });
      }),
      { seed: 777, numRuns: 3000 },
    );
  });
});

const CTX: AgentContext = {
  flowId: 'test',
  client: { addr: '10.0.0.1', port: 40000 },
  server: { addr: '10.0.0.2', port: 80 },
  directions: new Set<Direction>(['c2s', 's2c']),
};

/** Feed `data` in MSS-sized pieces and flush; the edits, the agent's counters and the time taken. */
function feedAll(rules: ReplaceRule[], data: Buffer): { edits: Edit[]; counters: ReplaceCounters; ms: number } {
  const agent = replaceFactory.create(rules, CTX) as ReturnType<typeof replaceFactory.create> & { counters: ReplaceCounters };
  const edits: Edit[] = [];
  const t0 = performance.now();
  for (let p = 0; p < data.length; p += 1448) edits.push(...agent.feed('c2s', p, data.subarray(p, p + 1448)).edits);
  edits.push(...agent.flush('c2s', 'fin').edits);
  return { edits, counters: { ...agent.counters }, ms: performance.now() - t0 };
}

describe('replace agent: regexes cannot stall the event loop', () => {
  it('(a|aa)+b with maxMatch 64 over 64 KiB of "a" finishes at once and changes nothing', () => {
    // RegExp needs about fib(64) steps per window here: years per segment.
    const { edits, ms } = feedAll([{ regex: '(a|aa)+b', with: 'X', maxMatch: 64 }], Buffer.alloc(65536, 'a'));
    expect(edits).toEqual([]);
    expect(ms).toBeLessThan(500);
  });

  it('(a|aa)+b with a "b" in every window but never after an "a" run: linear, changes nothing', () => {
    const data = Buffer.from(`${'a'.repeat(40)}xb`.repeat(1561), 'latin1');
    const { edits, ms } = feedAll([{ regex: '(a|aa)+b', with: 'X', maxMatch: 64 }], data);
    expect(edits).toEqual([]);
    expect(ms).toBeLessThan(3000);
  });

  it('the linear engine still replaces what it should, with captures and named groups', () => {
    const data = Buffer.from('xx aab ab b aaab', 'latin1');
    const { edits } = feedAll([{ regex: '(?<run>(a|aa)+)b', with: '<$<run>|$2>', maxMatch: 8 }], data);
    expect(edits.map((e) => [e.at, e.len, Buffer.from(e.data).toString('latin1')])).toEqual([
      [3, 3, '<aa|a>'], // as RegExp: the last iteration of (a|aa) took one "a"
      [7, 2, '<a|a>'],
      [12, 4, '<aaa|a>'],
    ]);
  });

  it('engine: backtracking with budgetExceeded: pass gives up an attempt after maxSteps, counted, and goes on', () => {
    const data = Buffer.from(`${'a'.repeat(40)}xb${'a'.repeat(3)}b`, 'latin1');
    const rule: ReplaceRule = { regex: '(a|aa)+(?=b)', with: 'X', maxMatch: 64, engine: 'backtracking', maxSteps: 1000, budgetExceeded: 'pass' };
    const { edits, counters, ms } = feedAll([rule], data);
    // The attempts on the 40-byte run need ~fib(40) steps: given up. The 3-byte run matches.
    expect(counters.regexBudgetExceeded).toBeGreaterThan(20);
    expect(edits.map((e) => [e.at, e.len])).toEqual([[42, 3]]);
    expect(ms).toBeLessThan(1000);
    // The same attempts with a budget large enough are not given up.
    const big = feedAll([{ ...rule, maxSteps: 10_000_000 }], Buffer.from('aaaaab', 'latin1'));
    expect(big.counters.regexBudgetExceeded).toBe(0);
    expect(big.edits.map((e) => [e.at, e.len])).toEqual([[0, 5]]);
  });

  it('engine: backtracking by default gives the connection up at an attempt stopped by maxSteps: the bytes from its start never pass', () => {
    const rule: ReplaceRule = { regex: '(a|aa)+b', with: 'X', maxMatch: 64, engine: 'backtracking', maxSteps: 200 };
    const counters = newReplaceCounters();
    const text = `ab ab aab ${'a'.repeat(40)}xb ab`;
    for (const cut of [text.length, 12, 1]) {
      // Fed whole, in two pieces, or byte by byte: the edits before the stopped attempt apply,
      // the rest is deleted, the agent says why.
      const a = createReplace({ counters }).create([rule], CTX);
      const edits: Edit[] = [];
      let abort: string | undefined;
      for (let p = 0; p < text.length && abort === undefined; p += cut) {
        const o = a.feed('c2s', p, Buffer.from(text.slice(p, p + cut), 'latin1'));
        edits.push(...o.edits);
        abort = o.abort;
      }
      if (abort === undefined) {
        const o = a.flush('c2s', 'fin');
        edits.push(...o.edits);
        abort = o.abort;
      }
      expect(abort).toBe('replace:regex-budget');
      expect(applyEdits(Buffer.from(text, 'latin1'), edits).toString('latin1')).toBe('X X X ');
    }
    expect(counters.regexBudgetResets).toBe(3);
    expect(counters.regexBudgetExceeded).toBeGreaterThanOrEqual(3);
    // A budget large enough: no give-up, no reset.
    const big = feedAll([{ ...rule, maxSteps: 10_000_000 }], Buffer.from('aaaaab', 'latin1'));
    expect(big.counters.regexBudgetResets).toBe(0);
    expect(big.edits.map((e) => [e.at, e.len])).toEqual([[0, 6]]);
    // An edit reaching past the stopped start (joined matches) goes with the bytes after it.
    const joined = createReplace({ joinMatches: true }).create([rule, { find: 'zz', with: 'Z' }], CTX);
    const t2 = `ab ab ${'a'.repeat(40)}xb zz`;
    const fed = joined.feed('c2s', 0, Buffer.from(t2, 'latin1')); // the run's windows end past the data: decided at the end
    const o = joined.flush('c2s', 'fin');
    expect(o.abort).toBe('replace:regex-budget');
    expect(applyEdits(Buffer.from(t2, 'latin1'), [...fed.edits, ...o.edits]).toString('latin1')).toBe('X X ');
  });

  it('a stopped attempt fails closed after a pause too: the forced decision\'s check scans its start again, and stops there as well', () => {
    // "x(?:a|a)*b" is exponential over the a's; "xa+c" is the real match. A hold timeout after
    // "x" decides it; the check of what the bytes after make of it must not pass the stopped start.
    const rule: ReplaceRule = { regex: 'x(?:a|a)*b|xa+c', with: 'HIT', maxMatch: 40, engine: 'backtracking', maxSteps: 500 };
    const text = `x${'a'.repeat(30)}c${'z'.repeat(20)}`;
    for (const pause of [false, true]) {
      const a = createReplace({}).create([rule], CTX);
      const outs: AgentOutput[] = [a.feed('c2s', 0, Buffer.from('x'))];
      if (pause) outs.push(a.flush('c2s', 'timeout'));
      outs.push(a.feed('c2s', 1, Buffer.from(text.slice(1), 'latin1')), a.flush('c2s', 'fin'));
      expect(outs.map((o) => o.abort).filter((x) => x !== undefined)).toEqual(['replace:regex-budget']);
      expect(applyEdits(Buffer.from(text, 'latin1'), outs.flatMap((o) => o.edits)).toString('latin1')).not.toContain('aaaac');
    }
  });

  it('a stopped start that a match of the scan covers, or an earlier rule takes, was inspected: no reset, whatever the cut', () => {
    const text = `${'a'.repeat(40)}xb${'z'.repeat(70)}`;
    for (const piece of [text.length, 7, 1]) {
      const counters = newReplaceCounters();
      const a = createReplace({ counters }).create([{ find: 'a'.repeat(40), with: 'L' }, { regex: '(a|aa)+b', with: 'R', maxMatch: 64, engine: 'backtracking', maxSteps: 200 }], CTX);
      const outs: AgentOutput[] = [];
      for (let p = 0; p < text.length; p += piece) outs.push(a.feed('c2s', p, Buffer.from(text.slice(p, p + piece))));
      outs.push(a.flush('c2s', 'fin'));
      expect(outs.map((o) => o.abort).filter((x) => x !== undefined)).toEqual([]);
      expect(applyEdits(Buffer.from(text), outs.flatMap((o) => o.edits)).toString()).toBe(`Lxb${'z'.repeat(70)}`);
      expect(counters.regexBudgetResets).toBe(0);
    }
    // At the same start a later rule's match does not cover the earlier rule's stopped attempt.
    const b = createReplace({}).create([{ regex: '(a|aa)+b', with: 'R', maxMatch: 64, engine: 'backtracking', maxSteps: 200 }, { find: 'a'.repeat(40), with: 'L' }], CTX);
    const o = [b.feed('c2s', 0, Buffer.from(text)), b.flush('c2s', 'fin')];
    expect(o.map((x) => x.abort).filter((x) => x !== undefined)).toEqual(['replace:regex-budget']);
  });

  // Crafted for each pattern: every window holds a byte that can end a match (nothing is
  // skipped) and threads die late or live to the window's end. The edits expected: none, or
  // each "c" alone for (a|a)*c, or for the two that need a window's end on a pair boundary (odd
  // maxMatch: never) one match reaching the end of the data, decided by the flush.
  const KIB = 256 * 1024;
  const tile = (unit: string): Buffer => Buffer.from(unit.repeat(Math.ceil(KIB / unit.length)).slice(0, KIB), 'latin1');
  const none = (): [number, number][] => [];
  const atEnd = (edits: Edit[]): [number, number][] => (edits.length === 1 ? [[edits[0]!.at + edits[0]!.len, 1]] : []);
  const hostile: { re: string; input: (mm: number) => Buffer; want: (data: Buffer) => [number, number][]; got?: (e: Edit[]) => [number, number][] }[] = [
    { re: '(a|aa)+b', input: () => tile(`${'a'.repeat(40)}xb`), want: none },
    { re: '(a+)+b', input: () => tile(`${'a'.repeat(40)}xb`), want: none },
    { re: '(a|a)*c', input: () => tile(`${'a'.repeat(40)}xbc`), want: (d) => [...d.keys()].filter((i) => d[i] === 0x63).map((i) => [i, 1]) },
    // Fewer than 20 "a" in any window: all the counts of "a" alive at once.
    { re: '(.*a){20}', input: (mm) => tile(`a${'b'.repeat(Math.floor(mm / 19))}`), want: none },
    { re: '[^z]*zq', input: () => tile(`${'a'.repeat(30)}q`), want: none }, // threads live to every window's end
    { re: '(?:[ab]{2})+$', input: () => tile('ab'), want: () => [[KIB, 1]], got: atEnd },
    { re: '(?:\\w\\w)+\\b', input: () => tile('ab'), want: () => [[KIB, 1]], got: atEnd },
  ];
  it.each(hostile.flatMap((h) => [63, 4095, 65535].map((mm) => ({ ...h, mm }))))(
    '$re, maxMatch $mm, over 256 KiB in 1448-byte segments: well under a second, whatever maxMatch',
    ({ re, mm, input, want, got }) => {
      // The bound is generous (CI); what it catches is a return of the O(text × maxMatch) cost
      // (a search per start, or the held tail read again at every segment): minutes here.
      const data = input(mm);
      feedAll([{ regex: re, with: 'X', maxMatch: mm }], data.subarray(0, 16 * 1024)); // JIT warm-up
      const { edits, ms } = feedAll([{ regex: re, with: 'X', maxMatch: mm }], data);
      console.log(`replace-engine: ${re} maxMatch ${mm}: ${ms.toFixed(0)} ms for 256 KiB (${((ms * 1000) / 256).toFixed(0)} µs/KiB), ${edits.length} edits`);
      expect(ms).toBeLessThan(1500);
      expect((got ?? ((e: Edit[]) => e.map((x): [number, number] => [x.at, x.len])))(edits)).toEqual(want(data));
    },
    20_000,
  );

  it('the budget counter travels in the snapshot (only once non-zero)', () => {
    const rules: ReplaceRule[] = [{ regex: '(a|aa)+(?=b)', with: 'X', maxMatch: 64, engine: 'backtracking', maxSteps: 100, budgetExceeded: 'pass' }];
    const a = replaceFactory.create(rules, CTX);
    expect(a.snapshot()).not.toHaveProperty('counters');
    a.feed('c2s', 0, Buffer.alloc(100, 'a'));
    const snap = JSON.parse(JSON.stringify(a.snapshot())) as { counters: ReplaceCounters };
    expect(snap.counters.regexBudgetExceeded).toBeGreaterThan(0);
    const r = replaceFactory.restore(rules, CTX, snap) as unknown as { counters: ReplaceCounters };
    expect(r.counters).toEqual(snap.counters);
  });

  it('without `engine`, the agent API runs a lookaround pattern with the budgeted backtracking engine; engine: linear refuses it', () => {
    const [r] = compileReplaceRules([{ regex: 'a(?=b)', with: 'X', maxMatch: 4 }]);
    expect(r).toMatchObject({ kind: 're', pike: null, maxSteps: 10_000 });
    const [l] = compileReplaceRules([{ regex: '(a|aa)+b', with: 'X', maxMatch: 4 }]);
    expect(l).toMatchObject({ kind: 're' });
    expect((l as { pike: unknown }).pike).toBeInstanceOf(PikeVM);
    expect(() => compileReplaceRules([{ regex: 'a(?=b)', with: 'X', maxMatch: 4, engine: 'linear' }])).toThrow(
      /rule 0: regex: the linear engine cannot run the lookahead "\(\?=b\)" at pattern index 1/,
    );
  });
});

describe('replace agent: the linear search kept from segment to segment', () => {
  it('gives the edits of the Pike VM run at every start, for random cuts, snapshots and rule sets', () => {
    // The search stops at the end of each segment with its threads and goes on with the next;
    // a snapshot drops that (restore starts over). `linearSearch: 'per-start'` is the reference.
    const k = fc.integer({ min: 1, max: 60 });
    const regex = fc.oneof(
      k.map((n) => `.{${n}}c`),
      k.map((n) => `.{${n}}$`),
      k.map((n) => `(?:[^a]*a){${Math.ceil(n / 3)}}\\b`),
      k.map((n) => `(?:[ab]{2}){${n}}(?:c|$)`),
      k.map((n) => `[^c]{${n},}c`),
      fc.constantFrom('(a|aa)+c', 'b*c', 'a+', '\\bab', 'ba?$', '(?:a|b)*?c', '(a)|b', '^a', '(?<x>b)a*c', '[ab]*', 'a|', 'x?'),
    );
    const rule = fc.record({ regex, with: fc.constantFrom('X', '', '$&$&'), maxMatch: fc.integer({ min: 1, max: 250 }), flags: fc.constantFrom('', 'm', 's', 'i') });
    const stream = fc.array(fc.constantFrom(...'aaabbbbbbbbbb  c\n'), { maxLength: 500, size: 'max' }).map((a) => Buffer.from(a.join(''), 'latin1'));
    const run = (linearSearch: 'unanchored' | 'per-start', rules: ReplaceRule[], s: Buffer, cuts: number[], snaps: Set<number>): string[] => {
      const f = createReplace({ linearSearch });
      let a = f.create(rules, CTX);
      const out: string[] = [];
      const take = (es: readonly Edit[]) => es.forEach((e) => out.push(`${e.at}+${e.len}=${Buffer.from(e.data).toString('latin1')}`));
      let p = 0;
      [...cuts.filter((c) => c > 0 && c < s.length), s.length].forEach((end, i) => {
        if (end > p) take(a.feed('c2s', p, s.subarray(p, end)).edits);
        p = Math.max(p, end);
        if (snaps.has(i)) a = f.restore(rules, CTX, JSON.parse(JSON.stringify(a.snapshot())));
      });
      take(a.flush('c2s', 'fin').edits);
      return out;
    };
    fc.assert(
      fc.property(fc.array(rule, { minLength: 1, maxLength: 3 }), stream, fc.uniqueArray(fc.nat(500), { maxLength: 40 }), fc.array(fc.nat(40), { maxLength: 3 }), (rules, s, cuts, snaps) => {
        cuts.sort((x, y) => x - y);
        expect(run('unanchored', rules, s, cuts, new Set(snaps))).toEqual(run('per-start', rules, s, cuts, new Set()));
      }),
      { seed: 90210, numRuns: 300 },
    );
  });
});

describe('replace agent: counters', () => {
  const rules: ReplaceRule[] = [{ regex: '(a|aa)+(?=b)', with: 'X', maxMatch: 64, engine: 'backtracking', maxSteps: 100, budgetExceeded: 'pass' }];
  const counted = (a: Agent): number => (a as Agent & { counters: ReplaceCounters }).counters.regexBudgetExceeded;

  it('budget give-ups add to the gateway-wide counters of the factory; each agent keeps and snapshots its own', () => {
    const shared = newReplaceCounters();
    const f = createReplace({ counters: shared });
    const a = f.create(rules, CTX);
    const b = f.create(rules, CTX);
    a.feed('c2s', 0, Buffer.alloc(100, 'a'));
    b.feed('s2c', 0, Buffer.alloc(200, 'a'));
    expect(counted(a)).toBeGreaterThan(0);
    expect(counted(b)).toBeGreaterThan(counted(a));
    expect(shared.regexBudgetExceeded).toBe(counted(a) + counted(b));
    // A restored agent resumes its own count (counted already on the node that made it) and adds
    // only what it counts afterwards.
    const snap = JSON.parse(JSON.stringify(a.snapshot())) as { counters: ReplaceCounters };
    expect(snap.counters.regexBudgetExceeded).toBe(counted(a));
    const before = shared.regexBudgetExceeded;
    const r = f.restore(rules, CTX, snap);
    expect(shared.regexBudgetExceeded).toBe(before);
    r.feed('c2s', 100, Buffer.alloc(100, 'a'));
    expect(shared.regexBudgetExceeded - before).toBe(counted(r) - snap.counters.regexBudgetExceeded);
    expect(counted(r) - snap.counters.regexBudgetExceeded).toBeGreaterThan(0);
  });

  it('a registry made with replaceCounters gives them to its replace agents; the default registry counts per agent only', () => {
    const shared = newReplaceCounters();
    const a = createAgent('replace', rules, CTX, makeRegistry({ replaceCounters: shared }));
    a.feed('c2s', 0, Buffer.alloc(100, 'a'));
    expect(shared.regexBudgetExceeded).toBe(counted(a));
    expect(shared.regexBudgetExceeded).toBeGreaterThan(0);
    const d = createAgent('replace', rules, CTX);
    d.feed('c2s', 0, Buffer.alloc(100, 'a'));
    expect(counted(d)).toBeGreaterThan(0);
    expect(shared.regexBudgetExceeded).toBe(counted(a));
  });
});
