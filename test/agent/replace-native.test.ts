/**
 * The native scan of literal rules (native/search.cc replaceLiterals, agent/literal-search.ts)
 * against the JS scan it replaces (agent/replace.ts Scan, EditRun): over random streams cut at
 * random points, random rule sets (overlapping patterns, prefixes of each other, case-insensitive
 * ones, empty outputs), joined or not, both give the same edits, the same undecided starts and
 * the same counts, feed by feed and at the final flush.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { createReplace, NATIVE_SCAN_MIN_BYTES, newReplaceCounters, type ReplaceRule } from '../../src/agent/replace.js';
import { FEW_RULES, literalSearchBackend, packLiterals, replaceLiterals } from '../../src/agent/literal-search.js';
import type { AgentContext, AgentOutput } from '../../src/agent/types.js';

const CTX: AgentContext = {
  flowId: 't',
  client: { addr: '10.0.0.1', port: 40000 },
  server: { addr: '10.0.0.2', port: 80 },
  directions: new Set(['c2s', 's2c']),
};

const show = (o: AgentOutput) => ({ from: o.undecidedFrom, edits: o.edits.map((e) => [e.at, e.len, Buffer.from(e.data).toString('latin1')]) });

function run(rules: ReplaceRule[], chunks: string[], join: boolean, nativeScan: boolean | 'always' | 'automaton') {
  const counters = newReplaceCounters();
  const a = createReplace({ joinMatches: join, nativeScan, counters }).create(rules, CTX);
  const outs = [];
  let pos = 0;
  for (const c of chunks) {
    outs.push(show(a.feed('s2c', pos, Buffer.from(c, 'latin1'))));
    pos += c.length;
  }
  outs.push(show(a.flush('s2c', 'fin')));
  return { outs, matches: counters.matches };
}

describe('native literal scan', () => {
  it('runs here (the addon is built by npm install)', () => {
    expect(literalSearchBackend).toBe('native');
  });

  it('gives the JS scan\'s edits, holds and counts', () => {
    const word = fc.stringMatching(/^[abAB]{1,4}$/);
    const rule = fc.record({ find: word, with: fc.stringMatching(/^[xyz]{0,5}$/), ignoreCase: fc.boolean() });
    fc.assert(
      fc.property(fc.array(rule, { minLength: 1, maxLength: 4 }), fc.array(fc.stringMatching(/^[abAB-]{0,40}$/), { minLength: 1, maxLength: 6 }), fc.boolean(), (rules, chunks, join) => {
        const js = run(rules, chunks, join, false);
        const native = run(rules, chunks, join, 'always');
        expect(native).toEqual(js);
      }),
      { numRuns: 2000 },
    );
  });

  it('more than FEW_RULES rules (one pass looking positions up by their first bytes): the JS scan\'s edits, holds and counts', () => {
    const word = fc.stringMatching(/^[abcAB\x00\xff]{1,5}$/);
    const rule = fc.record({ find: word, with: fc.stringMatching(/^[xyz]{0,5}$/), ignoreCase: fc.boolean() });
    fc.assert(
      fc.property(
        fc.array(rule, { minLength: FEW_RULES + 1, maxLength: FEW_RULES + 40 }),
        fc.array(fc.stringMatching(/^[abcAB\x00\xff-]{0,60}$/), { minLength: 1, maxLength: 6 }),
        fc.boolean(),
        (rules, chunks, join) => {
          const js = run(rules, chunks, join, false);
          // 'always' and the default alike (many rules go native whatever the segment's size).
          expect(run(rules, chunks, join, 'always')).toEqual(js);
          expect(run(rules, chunks, join, true)).toEqual(js);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('the Aho–Corasick automata of a rule set (what scans a long list\'s segments the one-pass scan gives up): the JS scan\'s edits, holds and counts', () => {
    // Few rules and many, prefixes and suffixes of each other, the same pattern twice and both
    // ways of case, one-byte patterns: every segment through the automata.
    const word = fc.stringMatching(/^[abcAB\x00\xff]{1,6}$/);
    const rule = fc.record({ find: word, with: fc.stringMatching(/^[xyz]{0,5}$/), ignoreCase: fc.boolean() });
    fc.assert(
      fc.property(
        fc.array(rule, { minLength: 1, maxLength: 30 }),
        fc.array(fc.stringMatching(/^[abcAB\x00\xff-]{0,60}$/), { minLength: 1, maxLength: 6 }),
        fc.boolean(),
        (rules, chunks, join) => {
          expect(run(rules, chunks, join, 'automaton')).toEqual(run(rules, chunks, join, false));
        },
      ),
      { numRuns: 1500 },
    );
    // Periodic patterns, long ones held across segments.
    const periodic = fc.stringMatching(/^[ab]{1,14}$/);
    fc.assert(
      fc.property(fc.array(periodic, { minLength: 1, maxLength: 6 }), fc.array(fc.stringMatching(/^[ab]{0,60}$/), { minLength: 1, maxLength: 6 }), (pats, chunks) => {
        const rules = pats.map((find, i) => ({ find, with: `<${i}>` }));
        expect(run(rules, chunks, false, 'automaton')).toEqual(run(rules, chunks, false, false));
      }),
      { numRuns: 800 },
    );
  });

  it('past 64 rules, input crafted against the one-pass scan and a set it does not take (a pattern longer than it takes): the automata give the JS scan\'s answers', () => {
    // 300 rules a×(50..62)+letter, one of them far longer: no one-pass index, every segment through the automata.
    const long = Array.from({ length: 300 }, (_, i) => ({ find: 'a'.repeat(50 + (i % 13)) + String.fromCharCode(0x62 + (i % 20)), with: `<${i}>` }));
    const text = 'Hello world. ' + 'a'.repeat(20_000) + 'c Hello world ' + 'a'.repeat(52) + 'b' + ' Hello world ' + 'a'.repeat(30);
    const cuts = [text.slice(0, 7000), text.slice(7000, 20_040), text.slice(20_040)];
    for (const rules of [[{ find: 'Hello world', with: 'Hi' }, ...long], [{ find: 'Hello world', with: 'Hi' }, ...long, { find: 'b'.repeat(100) + 'a', with: 'B' }]]) {
      const js = run(rules, cuts, true, false);
      expect(js.matches).toBeGreaterThanOrEqual(4);
      expect(run(rules, cuts, true, 'always')).toEqual(js);
      expect(run(rules, cuts, true, true)).toEqual(js);
      expect(run(rules, [text], true, 'automaton')).toEqual(run(rules, [text], true, false));
    }
  });

  it('the automata are made once per rule set, within their memory bound: a set too big for them keeps the JS scan', () => {
    const pack = (pats: string[]) => packLiterals(pats.map((p) => ({ pat: Buffer.from(p, 'latin1'), ci: false, out: Buffer.from('x') })));
    const small = pack(Array.from({ length: 100 }, (_, i) => `k${i}-`));
    const text = Buffer.from('k1- k42- k99- k100-', 'latin1');
    const r = replaceLiterals(small, text, null, true, false, 0, 0, true);
    expect(r).not.toBeNull();
    expect(r !== null && r !== 'bailed' ? r.matches : -1).toBe(3); // k100- is none of k0- … k99-
    const made = small.automaton;
    expect(made).toBeTruthy();
    replaceLiterals(small, text, null, true, false, 0, 0, true);
    expect(small.automaton).toBe(made);
    // 300 patterns of 1,000 bytes over every byte value: about 300 MB of table, over the 64 MiB
    // bound. A set the one-pass scan does not take (patterns over 64 bytes): the JS scan does it.
    let seed = 7;
    const rnd = (): number => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) >>> 24;
    const big = pack(Array.from({ length: 300 }, () => String.fromCharCode(...Array.from({ length: 1000 }, rnd))));
    expect(replaceLiterals(big, text, null, true, false, 0, 0)).toBeNull();
    expect(big.automaton).toBeNull();
    // Asked for by name, it is an error rather than the JS scan in their place.
    expect(() => replaceLiterals(big, text, null, true, false, 0, 0, true)).toThrow(/could not be made/);
  });

  it('holds the same tail as the JS scan for long periodic patterns (the held suffix found by KMP, in linear time)', () => {
    const word = fc.stringMatching(/^[ab]{5,14}$/);
    fc.assert(
      fc.property(fc.array(word, { minLength: 1, maxLength: 3 }), fc.array(fc.stringMatching(/^[ab]{0,60}$/), { minLength: 1, maxLength: 6 }), (pats, chunks) => {
        const rules = pats.map((find) => ({ find, with: 'x' }));
        expect(run(rules, chunks, false, 'always')).toEqual(run(rules, chunks, false, false));
      }),
      { numRuns: 1000 },
    );
    // A 64 KiB pattern a…aZ over 64 KiB segments a…ab: each segment holds nothing, in linear time.
    const rules = [{ find: 'a'.repeat(65535) + 'Z', with: 'x' }];
    const seg = 'a'.repeat(65535) + 'b';
    expect(run(rules, [seg, seg, seg], false, 'always')).toEqual(run(rules, [seg, seg, seg], false, false));
  });

  it('gives the JS scan\'s answers over long segments: matches far apart and near, false candidates of the rare byte', () => {
    // Segments of up to 3,000 bytes over a four-letter alphabet: a rule's next match is searched
    // near the last one by its rarest byte (which occurs everywhere here: the fall-back to memmem
    // after a few false candidates) and past 512 bytes by memmem alone.
    const word = fc.stringMatching(/^[abcd]{1,12}$/);
    const rule = fc.record({ find: word, with: fc.stringMatching(/^[xyz]{0,5}$/), ignoreCase: fc.boolean() });
    const filler = fc.tuple(fc.constantFrom('a', 'b', 'c', 'd', 'ab', 'abc', 'dddd', 'acbd'), fc.integer({ min: 1, max: 400 })).map(([w, k]) => w.repeat(k));
    const segment = fc.array(filler, { minLength: 1, maxLength: 12 }).map((xs) => xs.join('').slice(0, 3000));
    fc.assert(
      fc.property(fc.array(rule, { minLength: 1, maxLength: 3 }), fc.array(segment, { minLength: 1, maxLength: 4 }), fc.boolean(), (rules, chunks, join) => {
        expect(run(rules, chunks, join, 'always')).toEqual(run(rules, chunks, join, false));
      }),
      { numRuns: 400 },
    );
  });

  it('joins a dense body\'s matches as the JS scan does (gaps and spans at their limits)', () => {
    const body = ('Hello world' + '-'.repeat(250)).repeat(40) + 'Hello wor';
    const rules = [{ find: 'Hello world', with: 'Hi there' }, { find: 'o w', with: '0_w' }];
    for (const cut of [1, 7, 1000, body.length]) {
      const chunks: string[] = [];
      for (let i = 0; i < body.length; i += cut) chunks.push(body.slice(i, i + cut));
      expect(run(rules, chunks, true, 'always')).toEqual(run(rules, chunks, true, false));
    }
  });

  it('by default, a stream whose feeds straddle NATIVE_SCAN_MIN_BYTES switches between the scans with the same answers', () => {
    const body = ('Hello world' + '-'.repeat(40) + 'Good bye!').repeat(200);
    const rules = [{ find: 'Hello world', with: 'Hi there' }, { find: 'Good bye!', with: 'Farewell' }];
    // Feeds under and over the threshold, each ending inside a pattern (a held tail joins the next).
    const sizes = [NATIVE_SCAN_MIN_BYTES - 5, 30, NATIVE_SCAN_MIN_BYTES + 3, 7, 3000, NATIVE_SCAN_MIN_BYTES - 1, 200];
    const chunks: string[] = [];
    for (let i = 0, k = 0; i < body.length; i += sizes[k % sizes.length]!, k++) chunks.push(body.slice(i, i + sizes[k % sizes.length]!));
    const byDefault = run(rules, chunks, true, true);
    expect(byDefault).toEqual(run(rules, chunks, true, false));
    expect(byDefault).toEqual(run(rules, chunks, true, 'always'));
    expect(byDefault.matches).toBe(400);
  });

  it('more than FEW_RULES rules: a case-sensitive and a case-insensitive rule with the same pattern (one table slot) each match only what they should', () => {
    const filler = Array.from({ length: FEW_RULES }, (_, i) => ({ find: `zz${i}q`, with: '-' }));
    const rules = [...filler, { find: 'ab', with: '1' }, { find: 'ab', with: '2', ignoreCase: true }, { find: 'AB', with: '3' }];
    const text = 'xAB ab aB Ab AB';
    for (const nativeScan of ['always', true] as const) {
      const r = run(rules, [text.slice(0, 5), text.slice(5)], false, nativeScan);
      expect(r).toEqual(run(rules, [text.slice(0, 5), text.slice(5)], false, false));
      expect(r.outs.flatMap((o) => o.edits.map((e) => e[2])).join('')).toBe('21222');
    }
  });

  it('more than FEW_RULES rules, input crafted against the one-pass scan (a candidate of the longest length at every byte): the same answers, the rest scanned rule by rule or in JS', () => {
    for (const n of [FEW_RULES + 1, 64, 65, 300]) {
      const rules = Array.from({ length: n }, (_, i) => ({ find: i === 0 ? 'Hello world' : 'a'.repeat(50 + (i % 13)) + String.fromCharCode(0x62 + (i % 20)), with: `<${i}>` }));
      rules.push({ find: 'a'.repeat(40) + 'c', with: '<C>' });
      const text = 'Hello world. ' + 'a'.repeat(20_000) + 'c Hello world ' + 'a'.repeat(52) + 'b' + ' Hello world ' + 'a'.repeat(30);
      for (const cuts of [[text], [text.slice(0, 7000), text.slice(7000, 20_040), text.slice(20_040)]]) {
        const js = run(rules, cuts, true, false);
        expect(run(rules, cuts, true, 'always')).toEqual(js);
        expect(js.matches).toBeGreaterThanOrEqual(4);
      }
      // The one-pass scan gave the 'a' run up (counted), and ordinary text it keeps.
      const counters = newReplaceCounters();
      const a = createReplace({ nativeScan: 'always', counters }).create(rules, CTX);
      a.feed('s2c', 0, Buffer.from(text, 'latin1'));
      expect(counters.longListFallbacks).toBe(1);
      const b = createReplace({ nativeScan: 'always', counters }).create(rules, CTX);
      b.feed('s2c', 0, Buffer.from('Hello world, and a line of text with no run of a. '.repeat(2000), 'latin1'));
      expect(counters.longListFallbacks).toBe(1);
    }
  });

  it('a set of more than 64 rules, prefixes of each other (k1- in k12-): the same answers as the JS scan', () => {
    const rules = Array.from({ length: 70 }, (_, i) => ({ find: `k${i}-`, with: `<${i}>` }));
    const text = Array.from({ length: 200 }, (_, i) => `k${(i * 7) % 75}-`).join('.');
    expect(run(rules, [text.slice(0, 333), text.slice(333)], true, 'always')).toEqual(run(rules, [text.slice(0, 333), text.slice(333)], true, false));
    expect(run(rules, [text], true, 'always').matches).toBeGreaterThan(150);
  });

  it('keeps its scratch bounded: long outputs of short patterns are scanned natively up to 4 MiB, then by the JS scan', () => {
    // The worst case (every byte a match of a 1-byte pattern, each 8 KiB out) would be 537 MB.
    const big = 'x'.repeat(8192);
    const rules = [{ find: '\t', with: ' ' }, { find: '</head>', with: big }];
    const text = ('a\tb</head>' + '-'.repeat(500)).repeat(120);
    expect(run(rules, [text], true, 'always')).toEqual(run(rules, [text], true, false));
    // 200 matches × 64 KiB = 13 MB of output: more than the scratch may hold.
    const huge = [{ find: 'a', with: 'y'.repeat(65_536) }];
    const r = run(huge, ['a'.repeat(200)], true, 'always');
    expect(r).toEqual(run(huge, ['a'.repeat(200)], true, false));
    expect(r.matches).toBe(200);
  });
});
