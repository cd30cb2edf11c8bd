/**
 * Hostile coded bodies through a gateway (the http agent with `decode`): gzip bodies bit-flipped,
 * cut, spliced with random bytes, or random altogether, in segments of random sizes. Whatever
 * comes, the gateway neither throws nor breaks the agent contract, every frame it emits is well
 * formed, and what the client gets is never the pattern: either a complete gzip body that decodes
 * to the rewrite, or a refusal (a 502, or a reset with an incomplete body), counted; of a body
 * cut short, the part the client can decode is the start of the rewrite.
 */
import { constants, gunzipSync, gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { mulberry32 } from '../../src/util/prng.js';
import { decode } from '../agent/http-helpers.js';
import { Harness, payloadOf } from './harness.js';

const CONFIG = `
rules:
  - match: { port: 80 }
    agent: http
    http:
      decode: true
      response:
        replace: [ { find: "Hello world", with: "Hi there" } ]
`;
const REQ = 'GET / HTTP/1.1\r\nHost: a\r\nAccept-Encoding: gzip\r\n\r\n';
/** About 110 KB that codes to 26–29 KB (over maxBufferedBody: streamed, not held whole). */
const PLAIN = Buffer.from(Array.from({ length: 4000 }, (_, i) => `Hello world ${(i * 7919) % 100_003} of ${(i * 104_729) % 99_991}.\n`).join(''), 'latin1');
const REWRITTEN = Buffer.from(PLAIN.toString('latin1').split('Hello world').join('Hi there'), 'latin1');

/** A hostile coded body, one of several kinds, from `rnd`. */
function hostileBody(rnd: () => number): { kind: string; z: Buffer } {
  const good = gzipSync(PLAIN, { level: 1 + Math.floor(rnd() * 9) });
  const pick = Math.floor(rnd() * 5);
  const z = Buffer.from(good);
  switch (pick) {
    case 0: {
      for (let k = 1 + Math.floor(rnd() * 4); k > 0; k--) z[Math.floor(rnd() * z.length)]! ^= 1 << Math.floor(rnd() * 8);
      return { kind: 'bit flips', z };
    }
    case 1:
      return { kind: 'cut', z: z.subarray(0, Math.floor(rnd() * z.length)) };
    case 2: {
      const at = Math.floor(rnd() * z.length);
      const junk = Buffer.from(Array.from({ length: 1 + Math.floor(rnd() * 64) }, () => Math.floor(rnd() * 256)));
      return { kind: 'spliced', z: Buffer.concat([z.subarray(0, at), junk, z.subarray(at)]) };
    }
    case 3:
      return { kind: 'random', z: Buffer.from(Array.from({ length: 1 + Math.floor(rnd() * 3000) }, () => Math.floor(rnd() * 256))) };
    default:
      return { kind: 'valid', z: good };
  }
}

/**
 * What a client decodes of an incomplete response (its header, then a chunked or plain body cut
 * anywhere): the chunk data joined, inflated as far as it goes.
 */
function partialPlain(rest: Buffer): Buffer {
  const h = rest.indexOf('\r\n\r\n');
  if (h < 0) return Buffer.alloc(0);
  const head = rest.subarray(0, h).toString('latin1');
  let body = rest.subarray(h + 4);
  if (/transfer-encoding: chunked/i.test(head)) {
    const parts: Buffer[] = [];
    let p = 0;
    for (;;) {
      const lf = body.indexOf('\r\n', p);
      if (lf < 0) break;
      const n = parseInt(body.toString('latin1', p, lf), 16);
      if (!(n > 0)) break;
      parts.push(body.subarray(lf + 2, Math.min(body.length, lf + 2 + n)));
      p = lf + 2 + n + 2;
      if (p > body.length) break;
    }
    body = Buffer.concat(parts);
  }
  try {
    return gunzipSync(body, { finishFlush: constants.Z_SYNC_FLUSH });
  } catch {
    return Buffer.alloc(0);
  }
}

describe('hostile coded bodies (http decode) through the gateway', () => {
  it('never crash, never break the contract, never deliver the pattern: the rewrite or a refusal', () => {
    const kinds = new Map<string, { ok: number; refused: number }>();
    /** Decoded bytes clients got of refused bodies (the prefix check ran on something). */
    let partial = 0;
    for (let seed = 1; seed <= 60; seed++) {
      const rnd = mulberry32(seed);
      const { kind, z } = hostileBody(rnd);
      const chunked = rnd() < 0.5;
      const h = new Harness({}, {}, CONFIG);
      const c = h.connect(40000 + seed);
      h.send(c.data(0, 0, REQ), 0);
      const body = chunked ? Buffer.concat([Buffer.from(`${z.length.toString(16)}\r\n`), z, Buffer.from('\r\n0\r\n\r\n')]) : z;
      const resp = Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n${chunked ? 'Transfer-Encoding: chunked' : `Content-Length: ${z.length}`}\r\n\r\n`, 'latin1'), body]);
      for (let p = 0; p < resp.length; ) {
        const n = Math.min(resp.length - p, 1 + Math.floor(rnd() * 1400));
        h.send(c.data(1, p, resp.subarray(p, p + n), REQ.length), 1);
        p += n;
      }
      h.advance(60_000); // hold timeouts, and whatever the agent decided
      const s = h.gw.stats();
      expect(s.stream.agentError, `seed ${seed} (${kind})`).toBe(0);
      expect(s.stream.agentViolation, `seed ${seed} (${kind})`).toBe(0);
      // What the client got, in order (no loss here: the frames to side 0 carry it in order).
      const got = Buffer.from(h.out.filter((g) => g.to === 0).map((g) => payloadOf(g.frame)).join(''), 'latin1');
      const d = decode(got, 'response');
      const tally = kinds.get(kind) ?? { ok: 0, refused: 0 };
      kinds.set(kind, tally);
      const m = d.msgs[0];
      if (m !== undefined && m.start.startsWith('HTTP/1.1 200')) {
        // A complete 200: its body is a gzip stream of the rewrite.
        expect(gunzipSync(m.body).equals(REWRITTEN), `seed ${seed} (${kind})`).toBe(true);
        tally.ok++;
      } else {
        // A 502, or a reset with the body incomplete: refused, counted, and no pattern got out.
        const http = s.agents.http;
        expect(http.refused.coding + http.refused.truncated + http.refused.codingRatio, `seed ${seed} (${kind})`).toBeGreaterThan(0);
        expect(got.includes(Buffer.from('Hello world')), `seed ${seed} (${kind})`).toBe(false);
        // What the client could decode of the cut body is rewritten too.
        const plain = partialPlain(d.rest);
        // Of a body cut short, what it got is the rewrite's start. (Corrupt data decodes to
        // something else until its check value says so, for the gateway as for any client.)
        if (kind === 'cut') {
          expect(REWRITTEN.subarray(0, plain.length).equals(plain), `seed ${seed} (${kind}): what the client decodes is a prefix of the rewrite`).toBe(true);
          partial += plain.length;
        }
        tally.refused++;
      }
    }
    // Every kind came up; valid bodies all went through, random ones were all refused.
    expect([...kinds.keys()].sort()).toEqual(['bit flips', 'cut', 'random', 'spliced', 'valid']);
    expect(kinds.get('valid')!.refused).toBe(0);
    expect(kinds.get('random')!.ok).toBe(0);
    expect(partial).toBeGreaterThan(0);
  });
});
