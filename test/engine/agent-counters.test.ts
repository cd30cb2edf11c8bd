/**
 * Counters the agents of one gateway share reach its statistics and its log: a regex rule on the
 * opt-in backtracking engine whose step budget runs out is counted (`agents.replace`) and logged
 * (rate-limited), and the traffic still passes.
 */
import { describe, expect, it } from 'vitest';
import { Harness, fakeLogger, payloadOf } from '../hostile/harness.js';

const BUDGET_CONFIG = `
rules:
  - match: { port: 80 }
    agent: replace
    replace:
      - { regex: "(a|aa)+(?=b)", with: "X", maxMatch: 64, engine: backtracking, maxSteps: 200 }
`;

describe('gateway: agent counters', () => {
  it('a backtracking regex out of steps is counted in stats().agents.replace and logged; the bytes pass', () => {
    const lines: Array<{ o: Record<string, unknown>; m: string }> = [];
    const h = new Harness({}, { log: fakeLogger(lines) }, BUDGET_CONFIG);
    expect(h.gw.stats().agents.replace.regexBudgetExceeded).toBe(0);
    const c = h.connect(40000);
    const text = 'a'.repeat(300) + '\n';
    h.send(c.data(0, 0, text), 0);
    h.advance(5000); // the hold timeout decides what is held
    const out = h.out.filter((g) => g.to === 1).map((g) => payloadOf(g.frame)).join('');
    expect(out).toBe(text);
    const n = h.gw.stats().agents.replace.regexBudgetExceeded;
    expect(n).toBeGreaterThan(0);
    expect(lines.some((l) => l.m.includes('step budget'))).toBe(true);
  });

  it('a linear-engine rule never counts', () => {
    const h = new Harness({}, {}, `
rules:
  - match: { port: 80 }
    agent: replace
    replace:
      - { regex: "(a|aa)+b", with: "X", maxMatch: 64 }
`);
    const c = h.connect(40001);
    h.send(c.data(0, 0, 'a'.repeat(3000)), 0);
    h.advance(5000);
    expect(h.gw.stats().agents.replace.regexBudgetExceeded).toBe(0);
  });
});
