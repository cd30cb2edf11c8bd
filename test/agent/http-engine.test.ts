/**
 * The http agent inside the real stream engine (src/stream), over a simulated TCP with loss,
 * duplication, reordering and small segments (test/helpers/tcpsim.ts): the receivers get
 * well-framed, rewritten messages whatever the segmentation, the engine's hold-back and
 * retransmission machinery included; with the default hold timeout (flushes mid-header) the
 * output is still well framed.
 */
import { describe, expect, it } from 'vitest';
import { httpFactory } from '../../src/agent/http/agent.js';
import type { HttpConfig } from '../../src/agent/http/config.js';
import { mulberry32 } from '../../src/util/prng.js';
import { simulate } from '../helpers/tcpsim.js';
import { CTX, decode, shape } from './http-helpers.js';

const CFG: HttpConfig = {
  response: { replace: [{ find: 'Hello world', with: 'Hi there' }], setHeaders: { 'X-Rewritten-By': 'tapgate' } },
  request: { replace: [{ find: 'secret', with: '[redacted]' }] },
  maxBufferedBody: 64,
};

const big = 'Hello world, '.repeat(40);
const C2S = 'GET /a HTTP/1.1\r\nHost: lab\r\n\r\nGET /b HTTP/1.1\r\nHost: lab\r\n\r\nPOST /c HTTP/1.1\r\nHost: lab\r\nContent-Length: 13\r\n\r\nthe secret isGET /d HTTP/1.1\r\nHost: lab\r\n\r\n';
const S2C =
  'HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\nHello world\n' +
  `HTTP/1.1 200 OK\r\nContent-Length: ${big.length}\r\n\r\n${big}` +
  'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nHello \r\n6\r\nworld!\r\n0\r\n\r\n' +
  'HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nbye\r\n';

/** Each response is sent once its request has arrived (as the server reads it): a server answers what it received. */
const RESPONSE_ENDS = [...S2C.matchAll(/HTTP\/1\.1 200/g)].map((m) => m.index).slice(1).concat(S2C.length);
const ANSWERS = (received: Uint8Array): number => [0, ...RESPONSE_ENDS][decode(Buffer.from(received), 'request').msgs.length]!;

function once(seed: number, limits: Record<string, number>) {
  const rand = mulberry32(seed);
  return simulate({
    rand,
    data: [Buffer.from(C2S, 'latin1'), Buffer.from(S2C, 'latin1')],
    isn: [0xfffffff0 - seed, 7 + seed],
    mss: 1 + (seed % 23),
    loss: 0.08,
    dup: 0.05,
    reorder: 0.25,
    sack: seed % 2 === 0,
    agent: httpFactory.create(CFG, CTX),
    limits,
    answers: ANSWERS,
  });
}

describe('http agent in the stream engine over a lossy, reordering TCP', () => {
  it('every seed: the client reads four complete responses, rewritten; the server four requests', () => {
    let want: unknown;
    for (let seed = 1; seed <= 30; seed++) {
      const r = once(seed, { holdTimeoutMs: 1e9 });
      expect(r.errors).toEqual([]);
      expect(r.finished).toBe(true);
      const resp = decode(Buffer.from(r.received[1]), 'response');
      const req = decode(Buffer.from(r.received[0]), 'request');
      expect(resp.msgs.map((m) => m.body.toString())).toEqual(['Hi there\n', 'Hi there, '.repeat(40), 'Hi there!', 'bye\r\n']);
      expect(req.msgs.map((m) => m.body.toString())).toEqual(['', '', 'the [redacted] is', '']);
      const s = { resp: shape(resp, { anyFraming: true }), req: shape(req, { anyFraming: true }) };
      if (want === undefined) want = s;
      else expect(s).toEqual(want);
    }
  });

  it('with the default hold timeout (header sections may be flushed mid-way): still well framed, never a body of the wrong length', () => {
    for (let seed = 1; seed <= 15; seed++) {
      const r = once(seed, {});
      expect(r.errors).toEqual([]);
      const resp = decode(Buffer.from(r.received[1]), 'response');
      expect(resp.msgs).toHaveLength(4);
      expect(resp.rest.length).toBe(0);
      expect(decode(Buffer.from(r.received[0]), 'request').msgs).toHaveLength(4);
    }
  });

  it('cluster failover (the gateway dies three times mid-transfer; a node restores the snapshot): the same messages arrive', () => {
    for (let seed = 1; seed <= 15; seed++) {
      let restores = 0;
      const r = simulate({
        rand: mulberry32(seed),
        data: [Buffer.from(C2S, 'latin1'), Buffer.from(S2C, 'latin1')],
        isn: [100 + seed, 0xffffff00],
        mss: 1 + (seed % 23),
        loss: 0.05,
        dup: 0.02,
        reorder: 0.2,
        sack: true,
        agent: httpFactory.create(CFG, CTX),
        limits: { holdTimeoutMs: 1e9 },
        answers: ANSWERS,
        failover: {
          times: [5 + seed, 30 + seed * 3, 80],
          periodMs: 20,
          gapMs: 10,
          restore: (st) => {
            restores++;
            return httpFactory.restore(CFG, CTX, st);
          },
        },
      });
      expect(r.errors).toEqual([]);
      expect(r.finished).toBe(true);
      expect(restores).toBe(3);
      expect(decode(Buffer.from(r.received[1]), 'response').msgs.map((m) => m.body.toString())).toEqual(['Hi there\n', 'Hi there, '.repeat(40), 'Hi there!', 'bye\r\n']);
      expect(decode(Buffer.from(r.received[0]), 'request').msgs.map((m) => m.body.toString())).toEqual(['', '', 'the [redacted] is', '']);
    }
  });
});
