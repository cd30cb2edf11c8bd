/**
 * Found by a review (2026-12-07): what a forced decision (a hold timeout or limit releasing held
 * bytes "as if the stream ended there") and long windows do to a regex rule.
 * - A match that ends at or before the cut but depends on what follows it (a lookahead, `\b`,
 *   `\B`) failed at the cut and was never looked at again: "a key" released at a pause, then
 *   "x b", and `key\B` reached the receiver as "a keyx b", nothing counted. The agent now keeps
 *   the region each forced decision decided and the matches it made; a match the real stream
 *   makes starting in such a region that the decision did not make gives the connection up
 *   (`replace:split-match`, as a match across the cut does), so the receiver never gets the bytes
 *   that would complete it.
 * - One rule holding a long window (`maxMatch` 65535) made every other regex rule search the whole
 *   held tail again at every segment, up to its step budget per start (62,671 budget give-ups per
 *   1,448-byte segment instead of 1,356): no start past the first undecided one can be taken, so
 *   no rule searches past it now.
 */
import { describe, expect, it } from 'vitest';
import { createReplace, newReplaceCounters, replaceFactory, replaceRuleProblems, type ReplaceRule } from '../../src/agent/replace.js';
import { parseConfig } from '../../src/config/index.js';
import type { AgentContext, AgentOutput, Direction } from '../../src/agent/types.js';
import { applyEdits } from '../helpers/agent-driver.js';

const CTX: AgentContext = { flowId: 't', client: { addr: '10.0.0.1', port: 1 }, server: { addr: '10.0.0.2', port: 2 }, directions: new Set<Direction>(['c2s', 's2c']) };
type Step = string | 'timeout' | 'limit' | 'snapshot';

/** What the receiver gets, the agent driven as the engine drives it (a flush releases all held bytes); stops at an abort. */
function drive(rules: ReplaceRule[], steps: Step[]): { out: string; aborted: boolean } {
  let a = replaceFactory.create(rules, CTX);
  let orig = Buffer.alloc(0);
  let h = 0;
  const parts: Buffer[] = [];
  const take = (r: AgentOutput, upTo: number): boolean => {
    parts.push(applyEdits(orig.subarray(h, upTo), r.edits.map((e) => ({ ...e, at: e.at - h }))));
    h = upTo;
    return r.abort !== undefined;
  };
  for (const s of [...steps, 'fin']) {
    let ab = false;
    if (s === 'snapshot') a = replaceFactory.restore(rules, CTX, JSON.parse(JSON.stringify(a.snapshot())));
    else if (s === 'timeout' || s === 'limit' || s === 'fin') ab = take(a.flush('c2s', s), orig.length);
    else {
      const d = Buffer.from(s, 'latin1');
      const r = a.feed('c2s', orig.length, d);
      orig = Buffer.concat([orig, d]);
      ab = take(r, r.undecidedFrom ?? orig.length);
    }
    if (ab) return { out: Buffer.concat(parts).toString('latin1'), aborted: true };
  }
  return { out: Buffer.concat(parts).toString('latin1'), aborted: false };
}

describe('a forced decision and a match that depends on what comes after the cut', () => {
  const cases: [string, ReplaceRule, string, string, string][] = [
    ['\\B after a word byte (linear)', { regex: 'key\\B', with: 'K', maxMatch: 4 }, 'a key', 'x b', 'a Kx b'],
    ['\\b after a non-word byte (linear)', { regex: 'token=\\b', with: 'token=REDACTED;', maxMatch: 7 }, 'a token=', 'abc', 'a token=REDACTED;abc'],
    ['a lookahead (backtracking)', { regex: 'secret(?=\\r\\n)', with: 'XXXXXX', maxMatch: 8, engine: 'backtracking' }, 'token secret', '\r\nmore', 'token XXXXXX\r\nmore'],
  ];
  for (const [what, rule, first, rest, rewritten] of cases) {
    it(`${what}: rewritten without a pause; after a timeout or limit flush the connection is given up, the completing bytes never pass`, () => {
      expect(drive([rule], [first, rest])).toEqual({ out: rewritten, aborted: false });
      for (const flush of ['timeout', 'limit'] as const) {
        for (const steps of [[first, flush, rest], [first, flush, 'snapshot', rest]] as Step[][]) {
          const r = drive([rule], steps);
          expect(r.aborted, `${flush} ${steps.join('|')}`).toBe(true);
          expect(rest.length > 0 && r.out.endsWith(first) && !r.out.includes(rest)).toBe(true);
        }
      }
    });
  }

  it('a match the forced decision made itself is not a reason to give up (a literal, a rule without lookaround)', () => {
    expect(drive([{ regex: 'ab+', with: 'X', maxMatch: 6 }], ['x abb', 'timeout', 'c'])).toEqual({ out: 'x Xc', aborted: false });
    expect(drive([{ find: 'abc', with: 'X' }], ['x ab', 'timeout', 'd'])).toEqual({ out: 'x abd', aborted: false });
  });
});

describe('a long window does not make other rules search its held tail again', () => {
  it('a backtracking rule behind a maxMatch-65535 rule gives up no more starts per segment than alone', () => {
    const perSegment = (withBig: boolean): number => {
      const counters = newReplaceCounters();
      const bt: ReplaceRule = { regex: '(a|aa)+bc', with: 'X', maxMatch: 64, engine: 'backtracking', maxSteps: 100 };
      const big: ReplaceRule = { regex: 'Server: [^\\r]*', with: 'Server: x', maxMatch: 65535 };
      const a = createReplace({ counters, joinMatches: true }).create(withBig ? [big, bt] : [bt], CTX);
      const data = Buffer.from(('a'.repeat(62) + 'c').repeat(600), 'latin1');
      const seg = 1448;
      let last = 0;
      for (let p = 0; p < data.length; p += seg) {
        const before = counters.regexBudgetExceeded;
        a.feed('c2s', p, data.subarray(p, p + seg));
        last = counters.regexBudgetExceeded - before;
      }
      return last;
    };
    const alone = perSegment(false);
    expect(alone).toBeGreaterThan(0);
    expect(perSegment(true)).toBeLessThanOrEqual(alone * 1.1 + 10);
  });
});

describe('lookbehinds: a rule sees one byte before a match', () => {
  it('one longer than a byte is refused with what to do instead (it never held: the README example never matched); one byte is taken', () => {
    for (const regex of ['(?<=Host: )[^\\r]+', '(?<!ab)x', '(?<=a+)b', '(?<=(a|bc))d', '(?<=\\1(a))b']) {
      const p = replaceRuleProblems({ regex, with: 'x', maxMatch: 100, engine: 'backtracking' });
      expect(p.map((x) => x.field), regex).toEqual(['regex']);
      expect(p[0]!.message).toMatch(/lookbehind .* more than one byte.*capture group/);
    }
    for (const regex of ['(?<=:)x', '(?<![a-z])x', '(?<=(?:a|b))c', '(?<=\\b)x']) expect(replaceRuleProblems({ regex, with: 'x', maxMatch: 100, engine: 'backtracking' }), regex).toEqual([]);
    expect(() => parseConfig('rules:\n  - agent: replace\n    match: { port: 80 }\n    replace:\n      - { regex: "(?<=Host: )[^\\\\r]+", with: "x", maxMatch: 100, engine: backtracking }\n', 'lb.yaml')).toThrow(/lookbehind/);
  });

  it('a lookbehind whose assertions read further back is refused too (\\b, ^, a nested lookbehind): they matched otherwise than JS', () => {
    for (const regex of ['(?<=(?<=a)b)c', '(?<=^a)b', '(?<=\\ba)b', '(?<=\\Ba)b']) {
      const p = replaceRuleProblems({ regex, with: 'x', maxMatch: 10, engine: 'backtracking' });
      expect(p.map((x) => x.field), regex).toEqual(['regex']);
      expect(p[0]!.message).toMatch(/lookbehind .* more than one byte back/);
    }
  });

  it('a character no byte can be (above \\xff: bytes are read as latin1) and a $<name> the regex lacks are refused', () => {
    for (const [regex, flags] of [['€', ''], ['\\p{Script=Greek}', 'u'], ['a\\u2192b', '']] as const) {
      const p = replaceRuleProblems({ regex, with: 'x', maxMatch: 10, ...(flags ? { flags } : {}) });
      expect(p.map((x) => x.field), regex).toEqual(['regex']);
      expect(p[0]!.message).toMatch(/matches no byte.*latin1/);
    }
    expect(replaceRuleProblems({ regex: '(?!€)a', with: 'x', maxMatch: 10, engine: 'backtracking' })).toEqual([]);
    const t = replaceRuleProblems({ regex: '(?<n>x)', with: '[$<nmae>]', maxMatch: 4 });
    expect(t.map((x) => [x.field, x.message])).toEqual([['with', expect.stringMatching(/\$<nmae>.*names no group.*n/)]]);
    expect(replaceRuleProblems({ regex: '(?<n>x)', with: '[$<n>]', maxMatch: 4 })).toEqual([]);
  });

  it('what the README does instead: the context matched and put back', () => {
    const s = 'GET / HTTP/1.1\r\nHost: secret.internal\r\n\r\n';
    expect(drive([{ regex: '(Host: )[^\\r]+', with: '$1example.org', maxMatch: 100 }], [s])).toEqual({ out: 'GET / HTTP/1.1\r\nHost: example.org\r\n\r\n', aborted: false });
    expect(drive([{ regex: '(?<=:)x', with: 'y', maxMatch: 2, engine: 'backtracking' }], ['a:x bx :', 'x'])).toEqual({ out: 'a:y bx :y', aborted: false });
  });
});

describe('Annex B escapes', () => {
  it('"\\c" not followed by a letter is a backslash, as JS reads it: the config loads and the rule matches what RegExp matches', () => {
    const s = 'x a\\c1 y \\c z';
    for (const regex of ['a\\c1', '\\c', '[\\c]']) {
      const expected = s.replace(new RegExp(regex, 'g'), 'R');
      expect(() => parseConfig(`rules:\n  - agent: replace\n    match: { port: 80 }\n    replace:\n      - { regex: ${JSON.stringify(regex)}, with: "R", maxMatch: 4 }\n`, 'c.yaml')).not.toThrow();
      expect(drive([{ regex, with: 'R', maxMatch: 4 }], [s]).out, regex).toBe(expected);
    }
  });
});
