/**
 * The engine against a reference TCP pair (test/helpers/tcpsim.ts): random data, random rules,
 * random segmentation, reordering, duplication, loss with retransmissions re-segmented
 * differently, SACK on and off. What must hold: each receiver's stream equals the expected
 * rewritten stream, no ACK/SACK covers more than was sent, the connection always finishes, and
 * the command lists are pruned back to (almost) nothing once everything is acknowledged.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { replaceFactory } from '../../src/agent/replace.js';
import { mulberry32 } from '../../src/util/prng.js';
import { literalAgent } from '../helpers/literal-agent.js';
import { abcData, simulate } from '../helpers/tcpsim.js';


const ISNS = [0, 1, 0xffffffff, 0xfffffff0, 0x7fffffff, 123456789];

describe('engine against a reference TCP pair', () => {
  it('delivers the rewritten streams under loss, reordering, duplication, SACK on/off', () => {
    fc.assert(
      fc.property(
        fc.record({
          seed: fc.integer(),
          len0: fc.integer({ min: 0, max: 3000 }),
          len1: fc.integer({ min: 0, max: 1500 }),
          find: fc.stringMatching(/^[ab]{1,4}$/),
          repl: fc.stringMatching(/^[abXYZ]{0,7}$/),
          isn0: fc.constantFrom(...ISNS),
          isn1: fc.constantFrom(...ISNS),
          mss: fc.integer({ min: 1, max: 40 }),
          loss: fc.constantFrom(0, 0.02, 0.1),
          reorder: fc.constantFrom(0, 0.1, 0.3),
          dup: fc.constantFrom(0, 0.05),
          sack: fc.boolean(),
        }),
        (c) => {
          const rand = mulberry32(c.seed);
          const d0 = abcData(rand, c.len0);
          const d1 = abcData(rand, c.len1);
          const res = simulate({
            rand,
            data: [d0, d1],
            isn: [c.isn0, c.isn1],
            mss: c.mss,
            loss: c.loss,
            dup: c.dup,
            reorder: c.reorder,
            sack: c.sack,
            agent: literalAgent(c.find, c.repl),
            // A hold timeout flushes a partial match on purpose; here only equality is tested.
            limits: { holdTimeoutMs: 1e9 },
          });
          const expected = (d: Uint8Array) => Buffer.from(d).toString('latin1').split(c.find).join(c.repl);
          expect(res.errors).toEqual([]);
          expect(res.finished).toBe(true);
          expect(Buffer.from(res.received[0]).toString('latin1')).toBe(expected(d0));
          expect(Buffer.from(res.received[1]).toString('latin1')).toBe(expected(d1));
          expect(res.finalCommands).toBeLessThanOrEqual(2);
        },
      ),
      { numRuns: 300, seed: 42 },
    );
  });
});

/** Reference for several literal rules: earliest start wins, then the rule listed first. */
function replaceAll(s: string, rules: Array<{ find: string; with: string }>): string {
  let out = '';
  let i = 0;
  while (i < s.length) {
    let hit: { find: string; with: string } | undefined;
    for (const r of rules) if (s.startsWith(r.find, i)) { hit = r; break; }
    if (hit) {
      out += hit.with;
      i += hit.find.length;
    } else out += s[i++];
  }
  return out;
}

describe('engine with the real replace agent', () => {
  it('delivers streams rewritten by several literal rules under impairment', () => {
    fc.assert(
      fc.property(
        fc.record({
          seed: fc.integer(),
          rules: fc.array(fc.record({ find: fc.stringMatching(/^[abc]{1,5}$/), with: fc.stringMatching(/^[xyzab]{0,8}$/) }), { minLength: 1, maxLength: 3 }),
          mss: fc.integer({ min: 1, max: 60 }),
          loss: fc.constantFrom(0, 0.05),
          reorder: fc.constantFrom(0, 0.25),
          sack: fc.boolean(),
          isn: fc.constantFrom(...ISNS),
        }),
        (c) => {
          const rand = mulberry32(c.seed);
          const d0 = abcData(rand, 1500);
          const d1 = abcData(rand, 700);
          const ctx = { flowId: 't', client: { addr: '10.0.0.1', port: 1 }, server: { addr: '10.0.0.2', port: 2 }, directions: new Set(['c2s', 's2c'] as const) };
          const agent = replaceFactory.create(c.rules, ctx);
          const res = simulate({ rand, data: [d0, d1], isn: [c.isn, 0xfffffff0], mss: c.mss, loss: c.loss, dup: 0.02, reorder: c.reorder, sack: c.sack, agent, limits: { holdTimeoutMs: 1e9 } });
          expect(res.errors).toEqual([]);
          expect(res.finished).toBe(true);
          expect(Buffer.from(res.received[0]).toString('latin1')).toBe(replaceAll(Buffer.from(d0).toString('latin1'), c.rules));
          expect(Buffer.from(res.received[1]).toString('latin1')).toBe(replaceAll(Buffer.from(d1).toString('latin1'), c.rules));
          expect(res.finalCommands).toBeLessThanOrEqual(2);
        },
      ),
      { numRuns: 150, seed: 7 },
    );
  });
});
