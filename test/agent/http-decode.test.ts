/**
 * The http agent's `decode` (issue 16's stretch): gzip and deflate bodies are decoded, rewritten
 * and coded again, in pieces, with the framing kept right and state that survives a snapshot
 * at any byte; what does not decode is refused, never forwarded as it came.
 */
import { deflateRawSync, deflateSync, gunzipSync, gzipSync, inflateRawSync, inflateSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { createHttp, httpFactory, type HttpAgent } from '../../src/agent/http/agent.js';
import { newHttpCounters } from '../../src/agent/http/counters.js';
import type { HttpConfig } from '../../src/agent/http/config.js';
import { mulberry32 } from '../../src/util/prng.js';
import { simulate } from '../helpers/tcpsim.js';
import { b, c2s, CTX, decode, hv, run, s2c, type RunOpts } from './http-helpers.js';

const DECODE: HttpConfig = {
  response: { replace: [{ find: 'Hello world', with: 'Hi there' }] },
  request: { replace: [{ find: 'secret', with: '[redacted]' }] },
  decode: true,
};
const get = (path: string, extra = '') => `GET ${path} HTTP/1.1\r\nHost: lab\r\nAccept-Encoding: gzip, br\r\n${extra}\r\n`;
const head = (fields: string) => b(`HTTP/1.1 200 OK\r\n${fields}\r\n`);

/** A text with many matches, some across any cut. */
function text(n: number, seed = 1): string {
  const rnd = mulberry32(seed);
  const words = ['Hello world', 'Hello', ' world', 'lorem ipsum ', 'Hello worl', 'd\n', 'x'.repeat(40)];
  let s = '';
  while (s.length < n) s += words[Math.floor(rnd() * words.length)]!;
  return s.slice(0, n);
}
const rewrite = (s: string) => s.split('Hello world').join('Hi there');

function chunked(body: Buffer, size: number): Buffer {
  const parts: Buffer[] = [];
  for (let i = 0; i < body.length; i += size) {
    const c = body.subarray(i, i + size);
    parts.push(b(`${c.length.toString(16)}\r\n`), c, b('\r\n'));
  }
  parts.push(b('0\r\n\r\n'));
  return Buffer.concat(parts);
}

/** Random cuts (1..max bytes) for every step. */
const cuts = (seed: number, max: number): NonNullable<RunOpts['cuts']> => {
  const rnd = mulberry32(seed);
  return (_i, n) => {
    const out: number[] = [];
    for (let s = 0; s < n; ) {
      const k = 1 + Math.floor(rnd() * max);
      out.push(k);
      s += k;
    }
    return out;
  };
};

const DECODERS = { gzip: gunzipSync, deflate: inflateSync, raw: inflateRawSync };

describe('http decode: coded responses are rewritten in their coding', () => {
  const plain = text(200_000);
  const cases = [
    { name: 'gzip, Content-Length (re-framed chunked)', coding: 'gzip', body: gzipSync(plain), framing: (z: Buffer) => [head(`Content-Encoding: gzip\r\nContent-Length: ${z.length}\r\n`), z] },
    { name: 'gzip, chunked', coding: 'gzip', body: gzipSync(plain), framing: (z: Buffer) => [head('Content-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n'), chunked(z, 3000)] },
    { name: 'deflate (zlib), Content-Length', coding: 'deflate', body: deflateSync(plain), framing: (z: Buffer) => [head(`Content-Encoding: deflate\r\nContent-Length: ${z.length}\r\n`), z] },
    { name: 'deflate without the zlib wrapper, chunked', coding: 'raw', body: deflateRawSync(plain), framing: (z: Buffer) => [head('Content-Encoding: deflate\r\nTransfer-Encoding: chunked\r\n'), chunked(z, 777)] },
    { name: 'x-gzip, stored blocks only', coding: 'gzip', body: gzipSync(plain, { level: 0 }), framing: (z: Buffer) => [head(`Content-Encoding: x-gzip\r\nContent-Length: ${z.length}\r\n`), z] },
  ] as const;
  for (const c of cases) {
    for (const snapshot of [false, true]) {
      it(`${c.name}${snapshot ? ', snapshot and restore after every piece' : ''}`, () => {
        const resp = Buffer.concat(c.framing(c.body));
        const r = run(DECODE, [c2s(get('/a')), s2c(resp)], { cuts: cuts(snapshot ? 7 : 3, snapshot ? 4000 : 1500), snapshot });
        const d = decode(r.s2c, 'response');
        expect(d.rest.length).toBe(0);
        const m = d.msgs[0]!;
        expect(m.framing).toBe('chunked');
        expect(hv(m, 'Content-Encoding')).toEqual([c.coding === 'gzip' ? hv(decode(resp, 'response').msgs[0]!, 'Content-Encoding')[0] : 'deflate']);
        const got = DECODERS[c.coding](m.body).toString('latin1');
        expect(got === rewrite(plain), 'the decoded body is exactly the rewrite').toBe(true);
        expect(r.counters).toMatchObject({ bodiesRewritten: 1, bodiesDecoded: 1, bodyMatches: snapshot ? expect.any(Number) : plain.split('Hello world').length - 1 });
      });
    }
  }

  it('a small body that came whole keeps Content-Length, fixed to the new coded length', () => {
    const z = gzipSync('<p>Hello world</p>');
    const r = run(DECODE, [c2s(get('/')), s2c(Buffer.concat([head(`Content-Encoding: gzip\r\nContent-Length: ${z.length}\r\n`), z]))]);
    const m = decode(r.s2c, 'response').msgs[0]!;
    expect(m.framing).toBe('length');
    expect(gunzipSync(m.body).toString()).toBe('<p>Hi there</p>');
    expect(r.counters.framedFixedLength).toBe(1);
  });

  it('gzip members with every header field, one after another, decode as one body', () => {
    const member = (s: string) => {
      const z = gzipSync(s);
      // FEXTRA, FNAME, FCOMMENT and FHCRC set, with their fields after the fixed 10 bytes.
      const h = Buffer.from(z.subarray(0, 10));
      h[3] = 4 | 8 | 16 | 2;
      return Buffer.concat([h, b('\x03\x00abc'), b('name.txt\x00'), b('a comment\x00'), b('\x00\x00'), z.subarray(10)]);
    };
    const z = Buffer.concat([member(text(5000, 2)), member(text(7000, 3))]);
    const r = run(DECODE, [c2s(get('/')), s2c(Buffer.concat([head(`Content-Encoding: gzip\r\nContent-Length: ${z.length}\r\n`), z]))], { cuts: cuts(5, 50) });
    const m = decode(r.s2c, 'response').msgs[0]!;
    expect(gunzipSync(m.body).toString()).toBe(rewrite(text(5000, 2) + text(7000, 3)));
  });

  it('HTTP/1.0: close-delimited, the coded body ends with the connection', () => {
    const plain = text(50_000, 4);
    const z = gzipSync(plain);
    const r = run(DECODE, [c2s('GET / HTTP/1.0\r\nAccept-Encoding: gzip\r\n\r\n'), s2c(Buffer.concat([b('HTTP/1.0 200 OK\r\nContent-Encoding: gzip\r\n\r\n'), z]))], { cuts: cuts(6, 2000) });
    const m = decode(r.s2c, 'response').msgs[0]!;
    expect(m.framing).toBe('close');
    expect(gunzipSync(m.body).toString()).toBe(rewrite(plain));
  });

  it('keep-alive goes on after a coded response: the next identity response is rewritten too', () => {
    const z = gzipSync(text(40_000, 8));
    const r = run(DECODE, [
      c2s(get('/a') + get('/b')),
      s2c(Buffer.concat([head(`Content-Encoding: gzip\r\nContent-Length: ${z.length}\r\n`), z, b('HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\nHello world\n')])),
    ], { cuts: cuts(9, 3000) });
    const d = decode(r.s2c, 'response');
    expect(d.rest.length).toBe(0);
    expect(gunzipSync(d.msgs[0]!.body).toString()).toBe(rewrite(text(40_000, 8)));
    expect(d.msgs[1]!.body.toString()).toBe('Hi there\n');
  });

  it('holds at most the undecided tail: the hold timeout sends what the matcher held, coded', () => {
    const z = gzipSync('abc Hello wor');
    const r = run(DECODE, [c2s(get('/')), s2c(Buffer.concat([head('Content-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n'), b(`${z.length.toString(16)}\r\n`), z, b('\r\n')]))], { fin: false });
    // Everything up to the last coded byte went out; that byte is held with the tail "Hello wor".
    expect(r.maxHeld.s2c).toBeGreaterThan(0);
    expect(r.maxHeld.s2c).toBeLessThanOrEqual(3);
  });
});

describe('http decode: requests', () => {
  it.each([
    ['gzip, deflate, br, zstd', 'gzip, deflate'],
    ['br', 'identity'],
    ['*', 'gzip, deflate'],
    ['gzip;q=0, *;q=0.5', 'gzip;q=0, deflate;q=0.5'],
    ['br, *;q=0', '*;q=0'],
    ['*, *;q=0.5', 'gzip, deflate'],
    ['br, *;q=0.0.0', 'identity'],
    ['deflate, *;q=0.2', 'deflate, gzip;q=0.2'],
    ['gzip, *;q=0', 'gzip, *;q=0'],
    ['identity', 'identity'],
    [null, 'identity'],
  ])('Accept-Encoding %j is sent as %j (RFC 9110 §12.5.3: what the agent decodes, no more)', (sent, got) => {
    const r = run(DECODE, [c2s(`GET / HTTP/1.1\r\nHost: lab\r\n${sent === null ? '' : `Accept-Encoding: ${sent}\r\n`}\r\n`)]);
    expect(hv(decode(r.c2s, 'request').msgs[0]!, 'Accept-Encoding')).toEqual([got]);
    expect(r.counters.acceptEncodingFiltered).toBe(sent === got ? 0 : 1);
  });

  it('Accept-Encoding offers only what the agent decodes; identity when nothing is left', () => {
    const r = run(DECODE, [c2s(get('/a') + 'GET /b HTTP/1.1\r\nHost: lab\r\nAccept-Encoding: br\r\nTE: gzip\r\n\r\nGET /c HTTP/1.1\r\nHost: lab\r\nAccept-Encoding: gzip;q=1.0, deflate\r\n\r\n')]);
    const d = decode(r.c2s, 'request');
    expect(d.msgs.map((m) => hv(m, 'Accept-Encoding'))).toEqual([['gzip'], ['identity'], ['gzip;q=1.0, deflate']]);
    expect(hv(d.msgs[1]!, 'TE')).toEqual([]);
    expect(r.counters.acceptEncodingFiltered).toBe(2);
  });

  it('a gzip-coded upload is rewritten with request rules', () => {
    const z = gzipSync('token=secret&more=secret');
    const r = run({ ...DECODE, assumeHttp11Server: true }, [c2s(Buffer.concat([b(`POST /u HTTP/1.1\r\nHost: lab\r\nContent-Encoding: gzip\r\nContent-Length: ${z.length}\r\n\r\n`), z]))]);
    const m = decode(r.c2s, 'request').msgs[0]!;
    expect(gunzipSync(m.body).toString()).toBe('token=[redacted]&more=[redacted]');
  });
});

describe('http decode: what does not decode is refused, never passed', () => {
  const plain = text(100_000, 10);
  const respond = (z: Buffer) => s2c(Buffer.concat([head(`Content-Encoding: gzip\r\nContent-Length: ${z.length}\r\n`), z]));

  it('an empty coded body stays empty (chunked, close-delimited)', () => {
    const r = run(DECODE, [c2s(get('/')), s2c(Buffer.concat([head('Content-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n'), b('0\r\n\r\n')]))]);
    const m = decode(r.s2c, 'response').msgs[0]!;
    expect(m.body.length).toBe(0);
    expect(r.counters.refused.coding).toBe(0);
    const c = run(DECODE, [c2s('GET / HTTP/1.0\r\n\r\n'), s2c('HTTP/1.0 200 OK\r\nContent-Encoding: gzip\r\n\r\n')]);
    expect(decode(c.s2c, 'response').msgs[0]!.body.length).toBe(0);
    expect(c.counters.refused.coding).toBe(0);
  });

  it('bytes after the gzip data are dropped and counted; the body is rewritten', () => {
    const z = Buffer.concat([gzipSync('Hello world'), b('\n\n')]);
    const r = run(DECODE, [c2s(get('/')), respond(z)]);
    const m = decode(r.s2c, 'response').msgs[0]!;
    expect(gunzipSync(m.body).toString()).toBe('Hi there');
    expect(r.counters.codedTrailingBytes).toBe(2);
  });

  it('a small held body cut short by FIN becomes a 502 (its header was still held)', () => {
    const z = gzipSync('Hello world');
    // An HTTP/1.0 keep-alive answer: neither chunked nor close-delimited, so the body is held.
    const r = run(DECODE, [c2s(get('/')), s2c(Buffer.concat([b(`HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Encoding: gzip\r\nContent-Length: ${z.length}\r\n\r\n`), z.subarray(0, z.length - 5)]))]);
    expect(r.maxHeld.s2c).toBeGreaterThan(z.length - 5);
    const m = decode(r.s2c, 'response').msgs[0]!;
    expect(m.start).toBe('HTTP/1.1 502 Bad Gateway');
    expect(hv(m, 'X-Tapgate-Refused')).toEqual(['truncated']);
  });

  it('cut short by FIN where the client could not tell: a coded body (even before its first byte), an identity body re-framed as close-delimited: reset', () => {
    const z = gzipSync(plain);
    const cases: [string, Buffer][] = [
      ['coded, nothing of it', Buffer.concat([head(`Content-Encoding: gzip\r\nContent-Length: ${z.length}\r\n`)])],
      ['coded, half of it', Buffer.concat([head(`Content-Encoding: gzip\r\nContent-Length: ${z.length}\r\n`), z.subarray(0, z.length >> 1)])],
      ['identity, re-framed close-delimited', Buffer.concat([head(`Content-Length: ${plain.length}\r\n`), b(plain.slice(0, 30_000))])],
    ];
    for (const [what, resp] of cases) {
      const a = httpFactory.create(DECODE, CTX);
      a.feed('c2s', 0, b('GET / HTTP/1.0\r\n\r\n'));
      a.feed('s2c', 0, resp);
      const out = a.flush('s2c', 'fin');
      expect(out.abort, what).toBe('http-refused:truncated');
      expect((a as HttpAgent).counters.refused.truncated, what).toBe(1);
    }
  });

  it('cut short by FIN inside a re-chunked identity body: no reset (the missing last chunk tells), the event says truncated', () => {
    const events: Record<string, unknown>[] = [];
    const a = httpFactory.create(DECODE, { ...CTX, event: (e) => events.push(e) });
    a.feed('c2s', 0, b(get('/')));
    a.feed('s2c', 0, Buffer.concat([head(`Content-Length: ${plain.length}\r\n`), b(plain.slice(0, 30_000))]));
    const out = a.flush('s2c', 'fin');
    expect(out.abort).toBeUndefined();
    expect(events).toContainEqual(expect.objectContaining({ event: 'http', framing: 'chunked', truncated: true }));
  });

  it('a bad CRC-32 at the end: the connection is reset, the trailer is not made good', () => {
    const z = gzipSync(plain);
    z[z.length - 8]! ^= 1;
    const r = run(DECODE, [c2s(get('/')), respond(z)], { cuts: cuts(11, 5000) });
    expect(r.counters.refused.coding).toBe(1);
    const m = decode(r.s2c, 'response');
    expect(m.msgs).toHaveLength(0); // the chunked body never ends
    expect(r.s2c.includes(b('0\r\n\r\n'))).toBe(false);
  });

  it('corrupt deflate data in a small held body becomes a 502', () => {
    const z = gzipSync('Hello world');
    z[12] = 0xff; // an invalid block type
    const r = run(DECODE, [c2s(get('/')), respond(z)]);
    const m = decode(r.s2c, 'response').msgs[0]!;
    expect(m.start).toBe('HTTP/1.1 502 Bad Gateway');
    expect(hv(m, 'X-Tapgate-Refused')).toEqual(['coding']);
  });

  it('a body cut short (FIN inside the coded data) is refused', () => {
    const z = gzipSync(plain);
    const r = run(DECODE, [c2s('GET / HTTP/1.0\r\n\r\n'), s2c(Buffer.concat([b('HTTP/1.0 200 OK\r\nContent-Encoding: gzip\r\n\r\n'), z.subarray(0, z.length - 4)]))]);
    expect(r.counters.refused.coding).toBe(1);
  });

  it('a decoded match a hold timeout split: refused (splitMatch), the rest never passes', () => {
    const plain = `${'x'.repeat(3000)}Hello world${'y'.repeat(100)}`;
    const z = gzipSync(plain, { level: 0 }); // stored: decoded byte i is coded byte 15 + i
    const resp = Buffer.concat([head('Content-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n'), chunked(z, 1 << 16)]);
    const cut = resp.indexOf(b('Hello wo')) + 'Hello wo'.length;
    const a = httpFactory.create(DECODE, CTX) as HttpAgent;
    a.feed('c2s', 0, b(get('/')));
    a.feed('s2c', 0, resp.subarray(0, cut));
    expect(a.flush('s2c', 'timeout').abort).toBeUndefined();
    const rest = a.feed('s2c', cut, resp.subarray(cut));
    expect(rest.abort).toBe('http-refused:splitMatch');
    expect(a.counters.refused.splitMatch).toBe(1);
  });

  it('a zip bomb stops at maxDecodedRatio', () => {
    const z = gzipSync(Buffer.alloc(20 << 20, 'a'));
    const r = run({ ...DECODE, maxDecodedRatio: 50 }, [c2s(get('/')), respond(z)], { cuts: cuts(12, 1400) });
    expect(r.counters.refused.codingRatio).toBe(1);
  });

  it('the ratio bound is per connection direction: many small bodies each decoding to 1 MiB are refused at the second, and after a snapshot too', () => {
    const z = gzipSync(Buffer.alloc(1 << 20, 0x61), { level: 9 });
    const steps = [];
    for (let i = 0; i < 20; i++) steps.push(c2s(get('/')), respond(z));
    for (const opts of [{}, { snapshot: true }] as RunOpts[]) {
      const r = run(DECODE, steps, opts);
      expect(r.counters.refused.codingRatio).toBe(1);
      expect(r.counters.bodiesDecoded).toBeLessThanOrEqual(2);
    }
    // Uploads under request rules, likewise.
    const up = (body: Buffer) => c2s(Buffer.concat([b(`POST / HTTP/1.1\r\nHost: a\r\nContent-Encoding: gzip\r\nContent-Length: ${body.length}\r\n\r\n`), body]));
    const r = run(DECODE, Array.from({ length: 20 }, () => up(z)));
    expect(r.counters.refused.codingRatio).toBe(1);
  });

  it('50,000 one-byte gzip members: one decoder window for all, decoded pieces coded together (bounded work, the text exact)', () => {
    const one = gzipSync(Buffer.from('x'));
    const z = Buffer.concat(Array.from({ length: 50_000 }, () => one));
    const r = run(DECODE, [c2s(get('/')), respond(z)], { cuts: (_i, n) => Array.from({ length: Math.ceil(n / 65536) }, () => 65536) });
    const m = decode(r.s2c, 'response').msgs[0]!;
    expect(gunzipSync(m.body).toString()).toBe('x'.repeat(50_000));
    // The gateway's own coding: far fewer flushes than members.
    expect(m.body.length).toBeLessThan(z.length / 10);
  });

  it('without decode a gzip body is refused as before (encoded)', () => {
    const z = gzipSync(plain);
    const r = run({ ...DECODE, decode: false }, [c2s(get('/')), respond(z)]);
    expect(r.counters.refused.encoded).toBe(1);
    expect(decode(r.c2s, 'request').msgs[0]!.headers).toContainEqual(['Accept-Encoding', 'identity']);
  });

  it('a cluster takeover after a gap inside a coded body gives the connection up', () => {
    const z = gzipSync(plain);
    const resp = Buffer.concat([head(`Content-Encoding: gzip\r\nContent-Length: ${z.length}\r\n`), z]);
    const req = b(get('/'));
    const a = httpFactory.create(DECODE, CTX);
    a.feed('c2s', 0, req);
    a.feed('s2c', 0, resp.subarray(0, 2000));
    const restored = httpFactory.restore(DECODE, CTX, JSON.parse(JSON.stringify(a.snapshot())));
    restored.resync!('s2c', 4000);
    const out = restored.feed('s2c', 4000, resp.subarray(4000, 5000));
    expect(out.abort).toBe('http-refused:resync');
    expect(out.edits).toEqual([{ at: 4000, len: 1000, data: expect.anything() }]);
    expect((restored as HttpAgent).counters.refused.resync).toBe(1);
  });
});

describe('http decode: through the engine (the reference TCP pair)', () => {
  const plain = text(60_000, 21);
  const z = gzipSync(plain);
  const req = Buffer.from('GET / HTTP/1.0\r\nAccept-Encoding: gzip\r\n\r\n', 'latin1');
  const closeResp = Buffer.concat([b('HTTP/1.0 200 OK\r\nContent-Encoding: gzip\r\n\r\n'), z]);
  const sim = (resp: Buffer, holdTimeoutMs: number, seed: number) =>
    simulate({
      rand: mulberry32(seed),
      data: [new Uint8Array(req), new Uint8Array(resp)],
      isn: [7, 0xfffffff0],
      mss: 1000,
      loss: 0,
      dup: 0,
      reorder: 0,
      sack: true,
      agent: httpFactory.create(DECODE, CTX),
      limits: { holdTimeoutMs },
      window: 8000,
    });

  it('a close-delimited coded body gets its final block and trailer at the FIN, nothing held or not', () => {
    for (const [hold, seed] of [[1e9, 1], [1, 2], [1, 3]] as const) {
      const r = sim(closeResp, hold, seed);
      expect(r.errors).toEqual([]);
      expect(r.finished).toBe(true);
      const m = decode(Buffer.from(r.received[1]), 'response').msgs[0]!;
      expect(m.framing).toBe('close');
      expect(gunzipSync(m.body).toString('latin1') === rewrite(plain), `hold ${hold}`).toBe(true);
    }
  });

  it('a close-delimited coded body cut short: the connection is reset, no valid end is made up', () => {
    const r = sim(closeResp.subarray(0, closeResp.length - 100), 1e9, 4);
    const m = decode(Buffer.from(r.received[1]), 'response').msgs[0]!;
    expect(() => gunzipSync(m.body)).toThrow();
  });
});

describe('http decode: the gateway-wide bound on bodies being decoded (maxDecoding)', () => {
  it('counts bodies being decoded across connections, refuses one over the bound as not decodable, frees places at the body end, at dispose and on import', () => {
    const total = newHttpCounters();
    const f = createHttp(total);
    const cfg: HttpConfig = { ...DECODE, maxDecoding: 2 };
    const z = gzipSync(text(50_000, 30));
    const headOnly = Buffer.concat([head(`Content-Encoding: gzip\r\nContent-Length: ${z.length}\r\n`), z.subarray(0, 100)]);
    const open = () => {
      const a = f.create(cfg, CTX);
      a.feed('c2s', 0, b(get('/')));
      return { a, out: a.feed('s2c', 0, headOnly) };
    };
    const x = open();
    const y = open();
    expect(total.decodingNow).toBe(2);
    const w = open();
    expect(total.decodingNow).toBe(2);
    expect(total.decodeLimited).toBe(1);
    expect((w.a as HttpAgent).counters.refused.encoded).toBe(1);
    expect(decode(Buffer.from(w.out.edits[0]!.data), 'response').msgs[0]!.start).toBe('HTTP/1.1 502 Bad Gateway');
    // x's body ends: its place is free again.
    x.a.feed('s2c', headOnly.length, z.subarray(100));
    expect(total.decodingNow).toBe(1);
    // y moves to another node: disposed here, taken there (whatever the bound).
    const snap = JSON.parse(JSON.stringify(y.a.snapshot())) as unknown;
    y.a.dispose!();
    expect(total.decodingNow).toBe(0);
    const y2 = f.restore(cfg, CTX, snap);
    expect(total.decodingNow).toBe(1);
    y2.dispose!();
    y2.dispose!();
    expect(total.decodingNow).toBe(0);
  });
});
