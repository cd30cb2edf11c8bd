/**
 * Cluster takeover at the engine level (src/cluster/node.ts, docs/ARCHITECTURE.md §5), against the reference
 * TCP pair (test/helpers/tcpsim.ts): the gateway dies at random moments, nothing is forwarded for
 * a while, and a new connection continues from the last snapshot — which is taken before every
 * release that depends on a new command (the invariant) and otherwise only every `periodMs`, so
 * it is usually *behind* what was released. With the highest ACK each side sent meanwhile it
 * skips ahead (StreamDirection.skipTo, Agent.resync). What must hold: each receiver gets exactly
 * the rewritten stream, no ACK/SACK ever claims bytes the receiver lacks, the connection finishes.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { gunzipSync, gzipSync } from 'node:zlib';
import { httpFactory } from '../../src/agent/http/agent.js';
import type { HttpConfig } from '../../src/agent/http/config.js';
import { replaceFactory } from '../../src/agent/replace.js';
import type { AgentContext, Direction } from '../../src/agent/types.js';
import { mulberry32 } from '../../src/util/prng.js';
import { decode } from '../agent/http-helpers.js';
import { abcData, simulate } from '../helpers/tcpsim.js';

const CTX: AgentContext = {
  flowId: 'sim',
  client: { addr: '10.0.0.1', port: 1 },
  server: { addr: '10.0.0.2', port: 2 },
  directions: new Set<Direction>(['c2s', 's2c']),
};

describe('takeover from a spare snapshot (behind, with observed ACKs)', () => {
  it('delivers exactly the rewritten streams through repeated failovers, under loss and reordering', () => {
    let skips = 0;
    let skipped = 0;
    fc.assert(
      fc.property(
        fc.record({
          seed: fc.integer(),
          len0: fc.integer({ min: 200, max: 4000 }),
          len1: fc.integer({ min: 0, max: 2000 }),
          find: fc.stringMatching(/^[ab]{1,4}$/),
          repl: fc.stringMatching(/^[abXYZ]{0,7}$/),
          isn0: fc.constantFrom(0, 0xffffffff, 0xfffffff0, 123456789),
          isn1: fc.constantFrom(0, 0x7fffffff),
          mss: fc.integer({ min: 1, max: 60 }),
          loss: fc.constantFrom(0, 0.02, 0.1),
          reorder: fc.constantFrom(0, 0.2),
          sack: fc.boolean(),
          periodMs: fc.constantFrom(1, 20, 200),
          gapMs: fc.constantFrom(0, 5, 100),
          window: fc.constantFrom(150, 600, 4000),
          kills: fc.array(fc.integer({ min: 1, max: 400 }), { minLength: 1, maxLength: 4 }),
        }),
        (c) => {
          const rand = mulberry32(c.seed);
          const d0 = abcData(rand, c.len0);
          const d1 = abcData(rand, c.len1);
          const cfg = [{ find: c.find, with: c.repl }];
          const res = simulate({
            rand,
            data: [d0, d1],
            isn: [c.isn0, c.isn1],
            mss: c.mss,
            loss: c.loss,
            dup: 0,
            reorder: c.reorder,
            sack: c.sack,
            agent: replaceFactory.create(cfg, CTX),
            limits: { holdTimeoutMs: 1e9 },
            window: c.window,
            failover: { times: c.kills, periodMs: c.periodMs, gapMs: c.gapMs, restore: (st) => replaceFactory.restore(cfg, CTX, st) },
          });
          const expected = (d: Uint8Array): string => Buffer.from(d).toString('latin1').split(c.find).join(c.repl);
          expect(res.errors).toEqual([]);
          expect(res.finished).toBe(true);
          expect(Buffer.from(res.received[0]).toString('latin1')).toBe(expected(d0));
          expect(Buffer.from(res.received[1]).toString('latin1')).toBe(expected(d1));
          skips += res.counters.adoptSkips;
          skipped += res.counters.adoptSkippedBytes;
        },
      ),
      { numRuns: 300, seed: 7 },
    );
    // The behind-snapshot path really ran (a takeover that never skips proves little).
    expect(skips).toBeGreaterThan(20);
    expect(skipped).toBeGreaterThan(200);
  });

  it('a snapshot behind the receiver is moved forward by the observed ACK (skip counted), not re-decided', () => {
    const rand = mulberry32(5);
    // No match for the first 1500 bytes: no command, so the only snapshot is the one after the
    // handshake (period 10 s), far behind when the gateway dies at 60 ms.
    const text = 'xyzxy'.repeat(300) + 'xyzab'.repeat(100);
    const d0 = new Uint8Array(Buffer.from(text, 'latin1'));
    const cfg = [{ find: 'ab', with: 'ABAB' }];
    const res = simulate({
      rand,
      data: [d0, new Uint8Array(0)],
      isn: [1000, 2000],
      mss: 30,
      loss: 0,
      dup: 0,
      reorder: 0,
      sack: true,
      agent: replaceFactory.create(cfg, CTX),
      limits: { holdTimeoutMs: 1e9 },
      window: 150,
      failover: { times: [20], periodMs: 10_000, gapMs: 10, restore: (st) => replaceFactory.restore(cfg, CTX, st) },
    });
    expect(res.errors).toEqual([]);
    expect(res.finished).toBe(true);
    expect(Buffer.from(res.received[0]).toString('latin1')).toBe(text.split('ab').join('ABAB'));
    expect(res.counters.adoptSkips).toBeGreaterThanOrEqual(1);
    expect(res.counters.adoptSkippedBytes).toBeGreaterThan(0);
    expect(res.counters.agentError).toBe(0);
  });
});

describe('takeover inside a gzip body the http agent decodes (decode: state that moves with the connection)', () => {
  it('delivers a response whose decoded body is exactly the rewrite, through repeated failovers under loss and reordering', () => {
    const cfg: HttpConfig = { response: { replace: [{ find: 'ab', with: 'XYZ' }, { find: 'cc', with: '' }] }, decode: true };
    let takeovers = 0;
    fc.assert(
      fc.property(
        fc.record({
          seed: fc.integer(),
          len: fc.integer({ min: 500, max: 30_000 }),
          chunked: fc.boolean(),
          level: fc.constantFrom(0, 1, 9),
          mss: fc.integer({ min: 20, max: 1400 }),
          loss: fc.constantFrom(0, 0.05),
          reorder: fc.constantFrom(0, 0.2),
          periodMs: fc.constantFrom(1, 20, 200),
          kills: fc.array(fc.integer({ min: 1, max: 300 }), { minLength: 1, maxLength: 4 }),
        }),
        (c) => {
          const rand = mulberry32(c.seed);
          const plain = Buffer.from(abcData(rand, c.len));
          const z = gzipSync(plain, { level: c.level });
          const req = Buffer.from('GET /x HTTP/1.1\r\nHost: lab\r\nAccept-Encoding: gzip\r\n\r\n', 'latin1');
          const body = c.chunked ? Buffer.concat([Buffer.from(`${z.length.toString(16)}\r\n`), z, Buffer.from('\r\n0\r\n\r\n')]) : z;
          const resp = Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n${c.chunked ? 'Transfer-Encoding: chunked' : `Content-Length: ${z.length}`}\r\n\r\n`, 'latin1'), body]);
          const res = simulate({
            rand,
            data: [new Uint8Array(req), new Uint8Array(resp)],
            isn: [1000, 0xfffffff0],
            mss: c.mss,
            loss: c.loss,
            dup: 0,
            reorder: c.reorder,
            sack: true,
            agent: httpFactory.create(cfg, CTX),
            limits: { holdTimeoutMs: 1e9 },
            window: 4000,
            failover: { times: c.kills, periodMs: c.periodMs, gapMs: 5, restore: (st) => httpFactory.restore(cfg, CTX, st) },
          });
          expect(res.errors).toEqual([]);
          expect(res.finished).toBe(true);
          expect(res.counters.agentError).toBe(0);
          const got = decode(Buffer.from(res.received[1]), 'response');
          expect(got.msgs).toHaveLength(1);
          const want = plain.toString('latin1').split('ab').join('XYZ').split('cc').join('');
          expect(gunzipSync(got.msgs[0]!.body).toString('latin1')).toBe(want);
          takeovers += c.kills.length;
        },
      ),
      { numRuns: 60, seed: 3 },
    );
    expect(takeovers).toBeGreaterThan(60);
  });
});
