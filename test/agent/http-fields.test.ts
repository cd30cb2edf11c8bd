/**
 * Where `removeHeaders` and `setHeaders` apply besides a message's header section (found by a
 * review, 2026-12-07): the fields of 1xx responses (curl 7.88 stores the Set-Cookie of a 103 or a
 * 101 in its cookie jar; browsers take the one of a WebSocket handshake's 101) and trailer fields
 * in either direction (Node, Go and curl's `-D` hand them to the application; Apache merged request
 * trailers into the headers past `RequestHeader unset`, CVE-2013-5704). A field the rule removes or
 * sets never crosses there either; a 1xx gets no field added.
 */
import { describe, expect, it } from 'vitest';
import type { HttpConfig } from '../../src/agent/http/config.js';
import { c2s, run, s2c, type RunOpts } from './http-helpers.js';

const CFG: HttpConfig = {
  response: { removeHeaders: ['Set-Cookie', 'X-Secret'], setHeaders: { 'X-Frame-Options': 'DENY' } },
  request: { removeHeaders: ['Authorization'], setHeaders: { 'X-User': 'anon' } },
};
const text = (x: Buffer) => x.toString('latin1');
/** One piece, and every byte on its own with a snapshot after each. */
const WAYS: RunOpts[] = [{}, { cuts: (_i, n) => Array.from({ length: n }, () => 1), snapshot: true }];

describe('header rules on 1xx responses and trailers', () => {
  it('a 103 Early Hints: its Set-Cookie and X-Secret removed, its X-Frame-Options removed and none added; the final response as always', () => {
    for (const o of WAYS) {
      const r = run(CFG, [
        c2s('GET / HTTP/1.1\r\nHost: a\r\n\r\n'),
        s2c('HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\nSet-Cookie: sid=secret1; Path=/\r\nX-Secret: leaked\r\nX-Frame-Options: ALLOWALL\r\n\r\nHTTP/1.1 200 OK\r\nSet-Cookie: b=2\r\nContent-Length: 2\r\n\r\nok'),
      ], o);
      expect(text(r.s2c)).toBe('HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Frame-Options: DENY\r\n\r\nok');
    }
  });

  it('a 100 Continue and a 101 Switching Protocols lose the fields the rule removes', () => {
    const r = run(CFG, [
      c2s('POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n'),
      s2c('HTTP/1.1 100 Continue\r\nSet-Cookie: sid=secret2\r\n\r\n'),
    ]);
    expect(text(r.s2c)).not.toContain('secret2');
    const u = run(CFG, [
      c2s('GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n'),
      s2c('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSet-Cookie: sid=secret4\r\n\r\n'),
    ]);
    expect(text(u.s2c)).toBe('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n');
  });

  it('trailer fields the rule removes or sets are removed, in responses and requests', () => {
    for (const o of WAYS) {
      const r = run(CFG, [
        c2s('POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nAuthorization: Basic YWRtaW46YWRtaW4=\r\nX-User: admin\r\nX-Trace: 1\r\n\r\n'),
        s2c('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nSet-Cookie: sid=secret3\r\nX-Frame-Options: ALLOWALL\r\nX-Check: 1\r\n\r\n'),
      ], o);
      expect(text(r.c2s)).toBe('POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nX-User: anon\r\n\r\n2\r\nok\r\n0\r\nX-Trace: 1\r\n\r\n');
      expect(text(r.s2c)).toBe('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Frame-Options: DENY\r\n\r\n2\r\nok\r\n0\r\nX-Check: 1\r\n\r\n');
    }
  });
});
