/**
 * The replace agent's regex engines (src/agent/regex-engine.ts) against V8's RegExp: on random
 * patterns and texts, the linear Pike VM and the budgeted backtracking VM find exactly the match
 * and captures that `RegExp` finds sticky at the same position of the same window.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { backtrackRun, BUDGET_EXCEEDED, compilePattern, PikeVM, type CompiledPattern } from '../../src/agent/regex-engine.js';
import { compileReplaceRules, replaceFactory, type ReplaceCounters, type ReplaceRule } from '../../src/agent/replace.js';
import type { AgentContext, Direction, Edit } from '../../src/agent/types.js';

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

  it('engine: backtracking gives up an attempt after maxSteps, counted, and goes on', () => {
    const data = Buffer.from(`${'a'.repeat(40)}xb${'a'.repeat(3)}b`, 'latin1');
    const rule: ReplaceRule = { regex: '(a|aa)+(?=b)', with: 'X', maxMatch: 64, engine: 'backtracking', maxSteps: 1000 };
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

  it('the budget counter travels in the snapshot (only once non-zero)', () => {
    const rules: ReplaceRule[] = [{ regex: '(a|aa)+(?=b)', with: 'X', maxMatch: 64, engine: 'backtracking', maxSteps: 100 }];
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
