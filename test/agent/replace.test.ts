/**
 * The replace agent's result must not depend on how the stream is cut: fed in random pieces, one
 * byte at a time, or snapshotted and restored in between, it must produce exactly the edits of a
 * naive reference that scans the whole stream at once.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  compileReplaceRules,
  createReplace,
  MERGE_GAP,
  MERGE_SPAN,
  newReplaceCounters,
  replaceFactory,
  replaceRuleProblems,
  type ReplaceRule,
} from '../../src/agent/replace.js';
import type { Agent, AgentContext, AgentOutput, Direction, Edit } from '../../src/agent/types.js';
import { AgentDriver, applyEdits } from '../helpers/agent-driver.js';

const BOTH: AgentContext = {
  flowId: 'test',
  client: { addr: '10.0.0.1', port: 40000 },
  server: { addr: '10.0.0.2', port: 21 },
  directions: new Set<Direction>(['c2s', 's2c']),
};

// ---------------------------------------------------------------------------------------------
// Reference: scan the whole stream; at each position (earliest start first) try the rules in
// order; the first that matches there wins; continue after the match.

interface RefEdit {
  at: number;
  len: number;
  data: Buffer;
}

function asciiFold(c: number): number {
  return c >= 0x41 && c <= 0x5a ? c | 0x20 : c;
}

function refMatchAt(rule: ReplaceRule, s: Buffer, q: number): { len: number; out: Buffer } | undefined {
  if ('find' in rule) {
    const p = Buffer.from(rule.find, 'utf8');
    if (q + p.length > s.length) return undefined;
    for (let i = 0; i < p.length; i++) {
      const a = s[q + i]!;
      const b = p[i]!;
      if (rule.ignoreCase ? asciiFold(a) !== asciiFold(b) : a !== b) return undefined;
    }
    return { len: p.length, out: Buffer.from(rule.with, 'utf8') };
  }
  // The window: one byte of context before q, at most maxMatch bytes from q.
  const str = s.toString('latin1');
  const ws = q > 0 ? q - 1 : 0;
  const w = str.substring(ws, Math.min(s.length, q + rule.maxMatch));
  const re = new RegExp(rule.regex, (rule.flags ?? '') + 'y');
  re.lastIndex = q - ws;
  const m = re.exec(w);
  if (m === null || m[0].length === 0) return undefined;
  const len = m[0].length;
  re.lastIndex = q - ws;
  const replaced = w.replace(re, rule.with); // JS's own $-substitution
  const repl = replaced.slice(q - ws, replaced.length - (w.length - (q - ws + len)));
  return { len, out: Buffer.from(repl, 'latin1') }; // templates in the random tests are ASCII
}

function reference(rules: readonly ReplaceRule[], s: Buffer): RefEdit[] {
  const edits: RefEdit[] = [];
  let pos = 0;
  while (pos < s.length) {
    let found: RefEdit | undefined;
    for (let q = pos; q < s.length && found === undefined; q++) {
      for (const r of rules) {
        const m = refMatchAt(r, s, q);
        if (m) {
          found = { at: q, len: m.len, data: m.out };
          break;
        }
      }
    }
    if (found === undefined) break;
    edits.push(found);
    pos = found.at + found.len;
  }
  return edits;
}

// The driver (contract checks on every answer) is test/helpers/agent-driver.ts.

function run(
  rules: readonly ReplaceRule[],
  s: Buffer,
  cuts: readonly number[],
  snapshotAfter: ReadonlySet<number> = new Set(),
  factory = replaceFactory,
): Edit[] {
  const d = new AgentDriver(factory.create(rules, BOTH));
  let p = 0;
  const ends = [...cuts.filter((c) => c > 0 && c < s.length), s.length];
  ends.forEach((end, i) => {
    if (end > p) d.feed(s.subarray(p, end));
    p = Math.max(p, end);
    if (snapshotAfter.has(i)) {
      const state = JSON.parse(JSON.stringify(d.agent.snapshot())) as unknown;
      d.agent = factory.restore(rules, BOTH, state);
    }
  });
  d.flush();
  return d.edits;
}

const norm = (es: readonly Edit[]) => es.map((e) => ({ at: e.at, len: e.len, data: Buffer.from(e.data).toString('hex') }));

// ---------------------------------------------------------------------------------------------
// Generators: a small alphabet so that matches, overlaps and near-matches are frequent.

const streamArb = fc
  .array(fc.constantFrom(0x61, 0x62, 0x61, 0x62, 0x61, 0x20, 0x41, 0x0a, 0xff), { maxLength: 90 })
  .map((a) => Buffer.from(a));

const literalArb: fc.Arbitrary<ReplaceRule> = fc.record(
  {
    find: fc.array(fc.constantFrom('a', 'b', 'A', ' '), { minLength: 1, maxLength: 5 }).map((a) => a.join('')),
    with: fc.constantFrom('', 'X', 'XYZWV', 'é', 'ab'),
    ignoreCase: fc.boolean(),
  },
  { requiredKeys: ['find', 'with'] },
);

const regexArb: fc.Arbitrary<ReplaceRule> = fc.record(
  {
    regex: fc.constantFrom(
      'a+b', '(a)b*', 'ba?', '[ab]{2}', 'a(b|a)a', '(?<x>b)a*', 'b+$', '\\ba', 'a(?=b)', 'a(?!b)',
      '^a', '(?<=b)a', 'a\\xff', '[^ ]*', 'a.*b', 'b\\n?a', '(a|ab)(c|bcd)?',
    ),
    with: fc.constantFrom('', 'X', '$1$1', '$&Y$&', 'Q$<x>', '$$', 'LONGER-TEXT'),
    maxMatch: fc.integer({ min: 1, max: 7 }),
    flags: fc.constantFrom('', 'i', 'm', 's', 'im'),
  },
  { requiredKeys: ['regex', 'with', 'maxMatch'] },
);

const rulesArb = fc.array(fc.oneof(literalArb, literalArb, regexArb), { minLength: 1, maxLength: 4 });

const caseArb = streamArb.chain((s) =>
  fc.record({
    s: fc.constant(s),
    rules: rulesArb,
    cuts: fc.uniqueArray(fc.integer({ min: 1, max: Math.max(1, s.length) }), { maxLength: 12 }).map((c) => c.sort((a, b) => a - b)),
    snaps: fc.uniqueArray(fc.nat(12), { maxLength: 4 }),
  }),
);

describe('replace agent: chunking never changes the result', () => {
  it('random pieces = every single byte = one piece = the whole-stream reference', () => {
    fc.assert(
      fc.property(caseArb, ({ s, rules }) => {
        const want = norm(reference(rules, s));
        const every = Array.from({ length: s.length }, (_, i) => i);
        expect(norm(run(rules, s, []))).toEqual(want);
        expect(norm(run(rules, s, every))).toEqual(want);
      }),
      { seed: 0x7a96a7e, numRuns: 400 },
    );
  });

  it('random cut points give the reference output', () => {
    fc.assert(
      fc.property(caseArb, ({ s, rules, cuts }) => {
        const ref = reference(rules, s);
        const got = run(rules, s, cuts);
        expect(norm(got)).toEqual(norm(ref));
        expect(applyEdits(s, got).equals(applyEdits(s, ref))).toBe(true);
      }),
      { seed: 20240611, numRuns: 600 },
    );
  });

  it('snapshot/restore (through JSON) at random points changes nothing', () => {
    fc.assert(
      fc.property(caseArb, ({ s, rules, cuts, snaps }) => {
        const want = norm(reference(rules, s));
        expect(norm(run(rules, s, cuts, new Set(snaps)))).toEqual(want);
        const every = Array.from({ length: s.length }, (_, i) => i);
        expect(norm(run(rules, s, every, new Set(every.filter((i) => i % 3 === 0))))).toEqual(want);
      }),
      { seed: 1337, numRuns: 300 },
    );
  });

  it('literal-only rule sets over a 2-letter alphabet (dense overlaps)', () => {
    const s2 = fc.array(fc.constantFrom(0x61, 0x62), { maxLength: 120 }).map((a) => Buffer.from(a));
    const lit = fc.record({
      find: fc.array(fc.constantFrom('a', 'b'), { minLength: 1, maxLength: 6 }).map((a) => a.join('')),
      with: fc.constantFrom('', 'Z', 'ZZZZZZZ'),
    });
    fc.assert(
      fc.property(s2, fc.array(lit, { minLength: 1, maxLength: 5 }), (s, rules) => {
        const every = Array.from({ length: s.length }, (_, i) => i);
        expect(norm(run(rules, s, every))).toEqual(norm(reference(rules, s)));
      }),
      { seed: 99, numRuns: 400 },
    );
  });
});

describe('replace agent: close matches joined into one edit (the gateway\'s factories)', () => {
  it('the same bytes and match count as one edit per match, whatever the cuts and snapshots', () => {
    fc.assert(
      fc.property(caseArb, ({ s, rules, cuts, snaps }) => {
        const counters = newReplaceCounters();
        const joined = run(rules, s, cuts, new Set(snaps), createReplace({ joinMatches: true, counters }));
        const ref = reference(rules, s);
        expect(applyEdits(s, joined).equals(applyEdits(s, ref))).toBe(true);
        expect(counters.matches).toBe(ref.length);
        expect(joined.length).toBeLessThanOrEqual(ref.length);
      }),
      { seed: 4242, numRuns: 400 },
    );
  });

  it('a body with a match every few dozen bytes: spans of at most MERGE_SPAN, gaps over MERGE_GAP kept apart', () => {
    const line = 'Hello world, filler Good bye! more filler text\n';
    const far = 'x'.repeat(MERGE_GAP + 1);
    const s = Buffer.from(line.repeat(20_000) + far + 'Hello world' + far, 'latin1');
    const rules = [
      { find: 'Hello world', with: 'Hi there' },
      { find: 'Good bye!', with: 'Farewell, and thanks for all the fish!' },
    ];
    const cuts = Array.from({ length: Math.ceil(s.length / 1448) }, (_, i) => i * 1448);
    const counters = newReplaceCounters();
    const joined = run(rules, s, cuts, new Set(), createReplace({ joinMatches: true, counters }));
    const ref = reference(rules, s);
    expect(counters.matches).toBe(40_001);
    expect(applyEdits(s, joined).equals(applyEdits(s, ref))).toBe(true);
    // A 1448-byte piece holds ~60 matches; joined, a few edits per piece.
    expect(joined.length).toBeLessThan(ref.length / 10);
    for (const e of joined) expect(e.len).toBeLessThanOrEqual(MERGE_SPAN);
    // The last match, more than MERGE_GAP bytes after the others, is an edit of its own.
    expect(joined[joined.length - 1]).toMatchObject({ at: s.length - far.length - 11, len: 11 });
  });
});

describe('replace agent: behaviour', () => {
  const feedAll = (agent: Agent, dir: Direction, chunks: string[]): AgentOutput[] => {
    let pos = 0;
    return chunks.map((c) => {
      const b = Buffer.from(c, 'latin1');
      const out = agent.feed(dir, pos, b);
      pos += b.length;
      return out;
    });
  };

  it('holds back "PORT 40, " when it arrives alone, then replaces the whole command (seed, Figure 7 text)', () => {
    const agent = replaceFactory.create(
      [{ find: 'PORT 40, 4, 4, 5, 4, 123', with: 'PORT 10, 10, 11, 1, 1, 12' }],
      BOTH,
    );
    const [first, second] = feedAll(agent, 'c2s', ['PORT 40, ', '4, 4, 5, 4, 123\r\n']);
    expect(first!.edits).toEqual([]);
    expect(first!.undecidedFrom).toBe(0); // all of "PORT 40, " is held
    expect(second!.edits).toHaveLength(1);
    expect(second!.edits[0]!.at).toBe(0);
    expect(second!.edits[0]!.len).toBe(24);
    expect(Buffer.from(second!.edits[0]!.data).toString()).toBe('PORT 10, 10, 11, 1, 1, 12');
    expect(second!.undecidedFrom).toBe(26);
  });

  it('releases "PORT 40, " when the rest does not match', () => {
    const agent = replaceFactory.create([{ find: 'PORT 40, 4, 4, 5, 4, 123', with: 'X' }], BOTH);
    const [first, second] = feedAll(agent, 'c2s', ['PORT 40, ', '1, 1, 1, 3, 3\r\n']);
    expect(first!.undecidedFrom).toBe(0);
    expect(second!.edits).toEqual([]);
    expect(second!.undecidedFrom).toBe(24);
  });

  it('holds only the suffix that is a prefix of a pattern', () => {
    const agent = replaceFactory.create([{ find: 'Hello world', with: 'Hi there' }], BOTH);
    const [o] = feedAll(agent, 'c2s', ['xxHelloHel']);
    expect(o!.undecidedFrom).toBe(7);
  });

  it('"Hello world" → "Hi there" split at every byte (seed walk-through)', () => {
    const s = Buffer.from('Hello world');
    const edits = run([{ find: 'Hello world', with: 'Hi there' }], s, Array.from({ length: 11 }, (_, i) => i));
    expect(applyEdits(s, edits).toString()).toBe('Hi there');
  });

  it('edits only the directions of its rule; the other passes without hold', () => {
    const ctx: AgentContext = { ...BOTH, directions: new Set<Direction>(['s2c']) };
    const agent = replaceFactory.create([{ find: 'ab', with: 'X' }], ctx);
    expect(agent.feed('c2s', 0, Buffer.from('xaba'))).toEqual({ edits: [] });
    expect(agent.flush('c2s', 'fin')).toEqual({ edits: [] });
    const out = agent.feed('s2c', 0, Buffer.from('xaba'));
    expect(out.edits.map((e) => [e.at, e.len])).toEqual([[1, 2]]);
    expect(out.undecidedFrom).toBe(3);
  });

  it('a regex match is accepted only when its window is complete; flush decides the tail', () => {
    const agent = replaceFactory.create([{ regex: 'a+', with: '<$&>', maxMatch: 4 }], BOTH);
    const d = new AgentDriver(agent);
    expect(d.feed(Buffer.from('xaa')).edits).toEqual([]); // "aa" could still grow
    expect(d.feed(Buffer.from('a')).undecidedFrom).toBe(1);
    const out = d.feed(Buffer.from('aaa')); // window at 1 complete: "aaaa"
    expect(out.edits.map((e) => [e.at, e.len, Buffer.from(e.data).toString()])).toEqual([[1, 4, '<aaaa>']]);
    expect(out.undecidedFrom).toBe(5);
    const f = d.flush();
    expect(f.edits.map((e) => [e.at, e.len, Buffer.from(e.data).toString()])).toEqual([[5, 2, '<aa>']]);
    expect(f.undecidedFrom).toBe(7);
  });

  it('a regex never matches more than maxMatch bytes (a pattern needing more is not found)', () => {
    const s = Buffer.from('Server: abcdefghij\r\nServer: x\r\n');
    const edits = run([{ regex: 'Server: [^\\r]*\\r', with: 'Server: tapgate\r', maxMatch: 12 }], s, [3, 9, 17]);
    expect(applyEdits(s, edits).toString()).toBe('Server: abcdefghij\r\nServer: tapgate\r\n');
  });

  it('captured bytes are emitted as they were, literal replacement text as UTF-8', () => {
    const s = Buffer.from([0x78, 0xe9, 0xff, 0x79]);
    const edits = run([{ regex: 'x([\\xe9\\xff]+)y', with: 'é[$1]', maxMatch: 10 }], s, [2]);
    expect([...applyEdits(s, edits)]).toEqual([0xc3, 0xa9, 0x5b, 0xe9, 0xff, 0x5d]);
  });

  it('literal find/with are UTF-8 bytes; ignoreCase folds ASCII only', () => {
    const s = Buffer.from('Ünïcode HELLO hello Ü', 'utf8');
    const edits = run(
      [{ find: 'Ünïcode', with: 'U' }, { find: 'hello', with: 'hi', ignoreCase: true }, { find: 'ü', with: '?', ignoreCase: true }],
      s,
      [1, 2, 3],
    );
    expect(applyEdits(s, edits).toString('utf8')).toBe('U hi hi Ü');
  });

  it('at equal starts the rule listed first wins, even if shorter', () => {
    const s = Buffer.from('abcd');
    const edits = run([{ find: 'ab', with: '1' }, { find: 'abcd', with: '2' }], s, [1]);
    expect(applyEdits(s, edits).toString()).toBe('1cd');
  });

  it('continues correctly after a mid-stream (timeout) flush the next bytes do not complete', () => {
    const agent = replaceFactory.create([{ find: 'abc', with: 'X' }], BOTH);
    agent.feed('c2s', 0, Buffer.from('zab'));
    expect(agent.flush('c2s', 'timeout')).toEqual({ edits: [], undecidedFrom: 3 }); // "ab" decided as is
    const out = agent.feed('c2s', 3, Buffer.from('xabc'));
    expect(out.abort).toBeUndefined();
    expect(out.edits.map((e) => [e.at, e.len])).toEqual([[4, 3]]);
  });

  it('throws on a feed at the wrong position (engine bug)', () => {
    const agent = replaceFactory.create([{ find: 'a', with: 'b' }], BOTH);
    agent.feed('c2s', 0, Buffer.from('xyz'));
    expect(() => agent.feed('c2s', 2, Buffer.from('q'))).toThrow(/expected 3/);
  });

  it('snapshot is plain JSON data: tail as base64 and positions', () => {
    const agent = replaceFactory.create([{ find: 'PORT 40, 4', with: 'X' }], BOTH);
    agent.feed('c2s', 0, Buffer.from('xPORT 40, '));
    const snap = agent.snapshot();
    expect(JSON.parse(JSON.stringify(snap))).toEqual(snap);
    expect(snap).toMatchObject({
      v: 1,
      dirs: { c2s: { pos: 10, undecided: 1, prev: 0x78, tail: Buffer.from('PORT 40, ').toString('base64') } },
    });
    expect(() => replaceFactory.restore([{ find: 'a', with: 'b' }], BOTH, { v: 2 })).toThrow(/bad snapshot/);
  });

  it('rejects bad rules with the field at fault', () => {
    expect(replaceRuleProblems({ find: '', with: 'x' })).toEqual([{ field: 'find', message: 'expected a non-empty string' }]);
    expect(replaceRuleProblems({ regex: '(', with: 'x', maxMatch: 3 })[0]!.field).toBe('regex');
    expect(replaceRuleProblems({ regex: 'a', with: 'x', maxMatch: 0 })[0]!.field).toBe('maxMatch');
    expect(replaceRuleProblems({ regex: 'a', with: 'x', maxMatch: 3, flags: 'g' })[0]!.field).toBe('flags');
    expect(replaceRuleProblems({ regex: 'a', with: "$'", maxMatch: 3 })[0]!.field).toBe('with');
    expect(replaceRuleProblems({ find: 'a', regex: 'a', with: 'x' })[0]!.field).toBe('rule');
    expect(() => compileReplaceRules([])).toThrow(/non-empty/);
    expect(() => compileReplaceRules([{ find: 'a', with: 'b' }, { regex: '[', with: '', maxMatch: 2 }])).toThrow(/rule 1: regex/);
  });

  it('handles a multi-MB stream in MSS-sized pieces quickly, same result as one piece', () => {
    const n = 8 << 20;
    const s = Buffer.alloc(n);
    let x = 12345;
    for (let i = 0; i < n; i++) {
      x = (x * 1103515245 + 12345) >>> 0;
      s[i] = 0x61 + ((x >>> 16) % 26);
    }
    const marks = ['Hello world', 'Server: nginx/1.2\r', 'PORT 40, 4, 4, 5, 4, 123'];
    for (let i = 0; i < 2000; i++) s.write(marks[i % 3]!, (i * 4099) % (n - 40), 'latin1');
    const rules: ReplaceRule[] = [
      { find: 'Hello world', with: 'Hi there' },
      { find: 'port 40, 4, 4, 5, 4, 123', with: 'PORT 10, 10, 11, 1, 1, 12', ignoreCase: true },
      { regex: 'Server: [^\\r]*', with: 'Server: tapgate', maxMatch: 200 },
    ];
    const cuts: number[] = [];
    for (let p = 1460; p < n; p += 1460) cuts.push(p);
    const t0 = performance.now();
    const got = run(rules, s, cuts);
    const ms = performance.now() - t0;
    const one = run(rules, s, []);
    expect(norm(got)).toEqual(norm(one));
    expect(got.length).toBeGreaterThan(1900);
    expect(ms).toBeLessThan(20_000);
  });
});

describe('replace agent: a match a forced decision split (fail closed)', () => {
  const split = (out: AgentOutput) => out.abort === 'replace:split-match';

  it('a hold timeout releases "needle-lo"; "ng-word" completes it: the rest is deleted and the agent gives up, counted', () => {
    const counters = newReplaceCounters();
    const agent = createReplace({ counters }).create([{ find: 'needle-long-word', with: 'pin' }], BOTH);
    expect(agent.feed('s2c', 0, Buffer.from('xx needle-lo')).undecidedFrom).toBe(3);
    expect(agent.flush('s2c', 'timeout')).toEqual({ edits: [], undecidedFrom: 12 });
    const out = agent.feed('s2c', 12, Buffer.from('ng-word yy'));
    expect(split(out)).toBe(true);
    expect(out.edits).toEqual([{ at: 12, len: 10, data: Buffer.alloc(0) }]);
    expect(counters.splitMatches).toBe(1);
    expect((agent.snapshot() as { counters: { splitMatches: number } }).counters.splitMatches).toBe(1);
    // The other direction is not concerned.
    expect(split(agent.feed('c2s', 0, Buffer.from('needle-long-word')))).toBe(false);
  });

  it('completed over several feeds, and across a second forced decision; settled once no start before the point is open', () => {
    const agent = replaceFactory.create([{ find: 'needle-long-word', with: 'pin' }], BOTH);
    agent.feed('c2s', 0, Buffer.from('needle'));
    agent.flush('c2s', 'timeout');
    expect(split(agent.feed('c2s', 6, Buffer.from('-lo')))).toBe(false);
    agent.flush('c2s', 'limit');
    expect(split(agent.feed('c2s', 9, Buffer.from('ng-wo')))).toBe(false);
    expect(split(agent.feed('c2s', 14, Buffer.from('rd')))).toBe(true);

    const b = replaceFactory.create([{ find: 'needle-long-word', with: 'pin' }], BOTH);
    b.feed('c2s', 0, Buffer.from('needle-lo'));
    b.flush('c2s', 'timeout');
    expect(split(b.feed('c2s', 9, Buffer.from('ng-wore')))).toBe(false); // not the pattern: settled
    const later = b.feed('c2s', 16, Buffer.from(' needle-long-word'));
    expect(split(later)).toBe(false);
    expect(later.edits.map((e) => [e.at, e.len])).toEqual([[17, 16]]);
  });

  it('a match starting after the point, or before it and decided, is not a split', () => {
    const agent = replaceFactory.create([{ find: 'abc', with: 'X' }], BOTH);
    expect(agent.feed('c2s', 0, Buffer.from('zabcab')).edits.map((e) => [e.at, e.len])).toEqual([[1, 3]]);
    agent.flush('c2s', 'timeout'); // "ab" as it stands
    expect(split(agent.feed('c2s', 6, Buffer.from('x')))).toBe(false);
    const ab = agent.feed('c2s', 7, Buffer.from('abca'));
    expect(ab.edits.map((e) => [e.at, e.len])).toEqual([[7, 3]]);
    expect(agent.feed('c2s', 11, Buffer.from('bc')).edits.map((e) => [e.at, e.len])).toEqual([[10, 3]]);
    agent.flush('c2s', 'timeout');
    const out = agent.feed('c2s', 13, Buffer.from('xabc'));
    expect(split(out)).toBe(false);
    expect(out.edits.map((e) => [e.at, e.len])).toEqual([[14, 3]]);
  });

  it('a regex match whose end the timeout cut off (a header value): the rest is refused', () => {
    const rules = [{ regex: 'Server: [^\\r]*\\r', with: 'Server: tapgate\r', maxMatch: 40 }];
    const agent = replaceFactory.create(rules, BOTH);
    agent.feed('s2c', 0, Buffer.from('HTTP/1.1 200 OK\r\nServer: ng'));
    agent.flush('s2c', 'timeout'); // no \r yet: no match, decided as it stood
    // Its window is not complete (maxMatch 40): held, not released...
    const more = agent.feed('s2c', 27, Buffer.from('inx\r\n'));
    expect(split(more)).toBe(false);
    expect(more.undecidedFrom).toBe(27);
    // ...and what the next flush would release completes it: refused then, at a timeout as at the end.
    for (const reason of ['timeout', 'fin'] as const) {
      const b = replaceFactory.restore(rules, BOTH, agent.snapshot());
      const f = b.flush('s2c', reason);
      expect(split(f)).toBe(true);
      expect(f.edits).toEqual([{ at: 27, len: 5, data: Buffer.alloc(0) }]);
    }
    // Or the bytes that complete its window.
    expect(split(agent.feed('s2c', 32, Buffer.alloc(40, 0x61)))).toBe(true);
  });

  it('after a resync gap the byte before is unknown: no ^, \\b or lookbehind match starts at the gap, other rules do', () => {
    const out = (rules: ReplaceRule[], text: string, snap = false): string => {
      let a: Agent = replaceFactory.create(rules, BOTH);
      a.feed('c2s', 0, Buffer.from('first part '));
      if (snap) a = replaceFactory.restore(rules, BOTH, JSON.parse(JSON.stringify(a.snapshot())));
      // Bytes 11..99 were released by another node: unseen here.
      a.resync!('c2s', 100);
      const o: AgentOutput[] = [a.feed('c2s', 100, Buffer.from(text)), a.flush('c2s', 'fin')];
      return applyEdits(Buffer.from(text), o.flatMap((x) => x.edits).map((e) => ({ ...e, at: e.at - 100 }))).toString('latin1');
    };
    for (const snap of [false, true]) {
      // What came before the gap may have been "x" (no boundary, not a line start): no match here.
      expect(out([{ regex: '^token', maxMatch: 16, with: 'T' }], 'token token', snap)).toBe('token token');
      expect(out([{ regex: '\\btoken', maxMatch: 16, with: 'T' }], 'token token', snap)).toBe('token T');
      expect(out([{ regex: '\\Btoken', maxMatch: 16, with: 'T' }], 'token xtoken', snap)).toBe('token xT');
      expect(out([{ regex: '(?<=a)b', maxMatch: 16, with: 'B' }], 'bab', snap)).toBe('baB');
      expect(out([{ regex: '^line', flags: 'm', maxMatch: 16, with: 'L' }], 'line\nline', snap)).toBe('line\nL');
      // Rules that do not read the byte before match at the gap.
      expect(out([{ regex: 'tok(en)', maxMatch: 16, with: 'T$1' }], 'token', snap)).toBe('Ten');
      expect(out([{ find: 'token', with: 'T' }], 'token', snap)).toBe('T');
    }
    // Fed from the stream start the same rules match there.
    const a = replaceFactory.create([{ regex: '^token\\b', maxMatch: 16, with: 'T' }], BOTH);
    expect(applyEdits(Buffer.from('token x'), [...a.feed('c2s', 0, Buffer.from('token x')).edits, ...a.flush('c2s', 'fin').edits]).toString()).toBe('T x');
    // A snapshot of a node that wrote -1 after a gap is read as unknown; -1 nowhere else but at 0.
    const b = replaceFactory.create([{ regex: '^token', maxMatch: 16, with: 'T' }], BOTH);
    b.feed('c2s', 0, Buffer.from('abc'));
    const snap = JSON.parse(JSON.stringify(b.snapshot()));
    snap.dirs.c2s = { ...snap.dirs.c2s, pos: 50, undecided: 50, prev: -1, tail: '' };
    const r = replaceFactory.restore([{ regex: '^token', maxMatch: 16, with: 'T' }], BOTH, snap);
    expect([...r.feed('c2s', 50, Buffer.from('token')).edits, ...r.flush('c2s', 'fin').edits]).toEqual([]);
    snap.dirs.c2s.prev = -3;
    expect(() => replaceFactory.restore([{ regex: '^token', maxMatch: 16, with: 'T' }], BOTH, snap)).toThrow(/bad snapshot \(c2s: prev\)/);
    // The same for a forced decision's bytes: an older node's -1 after a gap (resync at 100, "to",
    // a hold timeout) is unknown; -2 where they start the stream is refused.
    const b64 = (t: string) => Buffer.from(t).toString('base64');
    const forced = (prev: number, at: number) => ({
      v: 1,
      dirs: {
        c2s: { pos: at + 2, undecided: at + 2, prev: 0x6f, tail: '', forced: { points: [at + 2], prev, bytes: b64('to'), regions: [at, at + 2], made: [] } },
        s2c: { pos: 0, undecided: 0, prev: -1, tail: '' },
      },
    });
    for (const prev of [-2, -1]) {
      const f = replaceFactory.restore([{ regex: '^token', maxMatch: 16, with: 'T' }], BOTH, forced(prev, 100));
      expect(f.feed('c2s', 102, Buffer.from(`ken${'z'.repeat(20)}`)).abort).toBeUndefined();
    }
    expect(() => replaceFactory.restore([{ regex: '^token', maxMatch: 16, with: 'T' }], BOTH, forced(-2, 0))).toThrow(/bad snapshot \(c2s: forced prev at stream start\)/);
  });

  it('what is kept of the forced tail moves with the snapshot; fin, rst and resync end it', () => {
    const rules = [{ find: 'needle-long-word', with: 'pin' }];
    const a = replaceFactory.create(rules, BOTH);
    a.feed('c2s', 0, Buffer.from('x needle-lo'));
    a.flush('c2s', 'timeout');
    const snap = JSON.parse(JSON.stringify(a.snapshot()));
    // The region the flush decided as if the stream ended there, and the matches it made (none).
    expect(snap.dirs.c2s.forced).toEqual({ points: [11], prev: 0x20, bytes: Buffer.from('needle-lo').toString('base64'), regions: [2, 11], made: [] });
    expect(split(replaceFactory.restore(rules, BOTH, snap).feed('c2s', 11, Buffer.from('ng-word')))).toBe(true);
    for (const end of ['fin', 'rst'] as const) {
      const b = replaceFactory.restore(rules, BOTH, snap);
      b.flush('c2s', end);
      expect(split(b.feed('c2s', 11, Buffer.from('ng-word')))).toBe(false);
    }
    const c = replaceFactory.restore(rules, BOTH, snap);
    c.resync!('c2s', 20);
    expect(split(c.feed('c2s', 20, Buffer.from('ng-word')))).toBe(false);
    // A hostile snapshot: bytes that do not end where the data fed ends, a point outside them.
    const ok = snap.dirs.c2s.forced;
    for (const forced of [{ ...ok, bytes: 'AAAAAAAAAAAAAAAAAAAA' }, { ...ok, points: [2] }, { ...ok, points: [12] }, { ...ok, points: [9, 8] }, { ...ok, points: [] }, { ...ok, points: ['11'] }, { ...ok, prev: 300 }, { ...ok, bytes: '' }, { ...ok, regions: [2] }, { ...ok, made: [-1, 3] }, { ...ok, regions: 'x' }, 'x']) {
      const bad = JSON.parse(JSON.stringify(snap));
      bad.dirs.c2s.forced = forced;
      expect(() => replaceFactory.restore(rules, BOTH, bad)).toThrow(/bad snapshot \(c2s: forced/);
    }
  });

  it('gives up with what it holds deleted too: a regex window still open when the match completes ("sec" | "ret")', () => {
    const agent = replaceFactory.create([{ regex: 'secret', with: 'X', maxMatch: 64 }], BOTH);
    agent.feed('c2s', 0, Buffer.from('hello sec'));
    agent.flush('c2s', 'timeout');
    const held = agent.feed('c2s', 9, Buffer.from('ret'));
    // Either the check sees it at once, or "ret" is held and the next bytes make it give up
    // with "ret" deleted: never released.
    const out = held.abort !== undefined ? held : agent.feed('c2s', 12, Buffer.alloc(80, 0x79));
    expect(split(out)).toBe(true);
    expect(out.edits).toEqual([{ at: 9, len: out.edits[0]!.at + out.edits[0]!.len - 9, data: Buffer.alloc(0) }]);
  });

  it('a longer rule\'s open prefix does not hide a shorter rule\'s match across the point (each rule alone)', () => {
    const a = replaceFactory.create([{ find: 'abcdefgh', with: 'X' }, { find: 'bcd', with: 'Y' }], BOTH);
    a.feed('c2s', 0, Buffer.from('abc'));
    a.flush('c2s', 'timeout');
    expect(split(a.feed('c2s', 3, Buffer.from('d')))).toBe(true);
    const b = replaceFactory.create([{ find: 'Authorization: Bearer', with: 'X', ignoreCase: true }, { find: 'bear', with: 'Y', ignoreCase: true }], BOTH);
    b.feed('c2s', 0, Buffer.from('authorization: Be'));
    b.flush('c2s', 'timeout');
    expect(split(b.feed('c2s', 17, Buffer.from('ar')))).toBe(true);
  });

  it('property: after forced decisions at random points, no pattern ever passes; the agent gives up only on a pattern across a point', () => {
    const pats = ['abc', 'bcab', 'cc'];
    const rules = pats.map((find) => ({ find, with: 'X' }));
    fc.assert(
      fc.property(
        fc.string({ unit: fc.constantFrom('a', 'b', 'c'), minLength: 1, maxLength: 60 }),
        fc.array(fc.integer({ min: 1, max: 59 }), { maxLength: 6 }),
        fc.array(fc.integer({ min: 1, max: 59 }), { maxLength: 4 }),
        (text, cuts, forcedAt) => {
          const s = Buffer.from(text);
          const points = [...new Set([...cuts, ...forcedAt].filter((p) => p < s.length))].sort((x, y) => x - y);
          const forced = new Set(forcedAt.filter((p) => p < s.length));
          const agent = replaceFactory.create(rules, BOTH);
          const edits: Edit[] = [];
          let gaveUpAt = -1;
          let at = 0;
          for (const p of [...points, s.length]) {
            const out = agent.feed('c2s', at, s.subarray(at, p));
            edits.push(...out.edits.map((e) => ({ ...e, data: Buffer.from(e.data) })));
            if (out.abort !== undefined) {
              gaveUpAt = at;
              break;
            }
            at = p;
            if (forced.has(p)) edits.push(...agent.flush('c2s', 'timeout').edits.map((e) => ({ ...e, data: Buffer.from(e.data) })));
          }
          if (gaveUpAt < 0) edits.push(...agent.flush('c2s', 'fin').edits);
          const upto = gaveUpAt < 0 ? s.length : gaveUpAt;
          // What the receiver got: the stream up to where the agent gave up, edits applied
          // (the give-up's own edit deletes the rest of its feed).
          const got = applyEdits(s.subarray(0, upto), edits.filter((e) => e.at < upto)).toString();
          for (const p of pats) expect(got.includes(p), `${JSON.stringify(text)} forced at ${[...forced]} cut at ${points}: ${got}`).toBe(false);
          if (gaveUpAt >= 0) {
            const crossing = [...forced].some((q) => q < gaveUpAt + 1 && pats.some((p) => {
              for (let i = Math.max(0, q - p.length + 1); i < q; i++) if (text.startsWith(p, i) && i + p.length > q) return true;
              return false;
            }));
            expect(crossing, `gave up without a pattern across a forced point: ${JSON.stringify(text)}`).toBe(true);
          }
        },
      ),
      { numRuns: 3000 },
    );
  });

  it('property: random rules (literal, ignoreCase, regex), cuts, forced decisions, snapshots and scan options: what the receiver gets never holds a pattern, and the contract holds', () => {
    type Step = { feed: string } | { flush: 'timeout' | 'limit' } | { snap: true };
    const alpha = ['a', 'b', 'c', 'A', 'B'];
    const pat = fc.string({ unit: fc.constantFrom('a', 'b', 'c'), minLength: 1, maxLength: 6 });
    const rule: fc.Arbitrary<ReplaceRule> = fc.oneof(
      fc.tuple(pat, fc.integer({ min: 0, max: 6 })).map(([p, extra]) => ({ regex: p, with: 'Z', maxMatch: p.length + extra })),
      fc.tuple(pat, pat, fc.integer({ min: 0, max: 4 })).map(([p, q, extra]) => ({ regex: `${p}|${q}`, with: 'Z', maxMatch: Math.max(p.length, q.length) + extra })),
      fc.tuple(pat, fc.boolean()).map(([find, ci]) => ({ find, with: 'Z', ...(ci ? { ignoreCase: true } : {}) })),
    );
    const step: fc.Arbitrary<Step> = fc.oneof(
      { weight: 5, arbitrary: fc.string({ unit: fc.constantFrom(...alpha), minLength: 1, maxLength: 5 }).map((feed) => ({ feed })) },
      { weight: 2, arbitrary: fc.constantFrom<'timeout' | 'limit'>('timeout', 'limit').map((flush) => ({ flush })) },
      { weight: 1, arbitrary: fc.constant({ snap: true as const }) },
    );
    const opts = fc.record({ nativeScan: fc.constantFrom<boolean | 'always'>(false, 'always'), joinMatches: fc.boolean(), linearSearch: fc.constantFrom<'unanchored' | 'per-start'>('unanchored', 'per-start') });
    const holds = (out: string, rules: ReplaceRule[]) =>
      rules.some((r) => ('find' in r ? (r.ignoreCase ? out.toLowerCase().includes(r.find.toLowerCase()) : out.includes(r.find)) : new RegExp(r.regex).test(out)));
    fc.assert(
      fc.property(fc.array(rule, { minLength: 1, maxLength: 3 }), fc.array(step, { minLength: 1, maxLength: 14 }), opts, (rules, steps, o) => {
        const f = createReplace(o);
        let agent = f.create(rules, BOTH);
        let orig = Buffer.alloc(0);
        let h = 0; // what the engine released: [0, h)
        const out: Buffer[] = [];
        const take = (r: AgentOutput, m: number, flushed: boolean): boolean => {
          const u = flushed ? m : (r.undecidedFrom ?? m);
          expect(u).toBeGreaterThanOrEqual(h);
          let prev = h;
          for (const e of r.edits) {
            expect(e.at >= prev && e.at + e.len <= u, 'edit inside the undecided region').toBe(true);
            prev = e.at + e.len;
          }
          out.push(applyEdits(orig.subarray(h, u), r.edits.map((e) => ({ ...e, at: e.at - h }))));
          h = u;
          return r.abort !== undefined;
        };
        let gaveUp = false;
        for (const s of [...steps, { flush: 'fin' as const }]) {
          if ('snap' in s) agent = f.restore(rules, BOTH, JSON.parse(JSON.stringify(agent.snapshot())));
          else if ('feed' in s) {
            const data = Buffer.from(s.feed, 'latin1');
            const r = agent.feed('c2s', orig.length, new Uint8Array(data));
            orig = Buffer.concat([orig, data]);
            gaveUp = take(r, orig.length, false);
          } else if (s.flush === 'fin' || h < orig.length) gaveUp = take(agent.flush('c2s', s.flush), orig.length, true);
          if (gaveUp) break;
        }
        const got = Buffer.concat(out).toString('latin1');
        expect(holds(got, rules), `${JSON.stringify({ rules, steps, o })}: ${got}`).toBe(false);
      }),
      { numRuns: 4000 },
    );
  });
});
