/**
 * Request smuggling (RFC 9112 §6.3, §11.2) and the cases of public write-ups (Watchfire 2005
 * "HTTP Request Smuggling"; PortSwigger's CL.TE / TE.CL / TE.TE obfuscations; chunk-extension
 * and bare-LF desyncs): every message leaves the agent with one unambiguous framing, or is
 * refused — never forwarded as sent. The check for "unambiguous": what the server receives
 * decodes under a *strict* HTTP/1.1 parser (CRLF only, no obs-fold, one framing) into exactly the
 * messages the agent saw; a refused message never reaches its end (the server cannot act on it).
 */
import { describe, expect, it } from 'vitest';
import type { RefuseReason } from '../../src/agent/http/counters.js';
import { c2s, decode, hv, run, s2c } from './http-helpers.js';

const req = (head: string, body = '') => `POST /x HTTP/1.1\r\nHost: a\r\n${head}\r\n${body}`;
const NEXT = 'GET /next HTTP/1.1\r\nHost: a\r\n\r\n';

/** A request the agent must normalise: the server reads these messages, strictly. */
function normalised(text: string) {
  const r = run({}, [c2s(text)]);
  const d = decode(r.c2s, 'request');
  expect(d.rest.toString('latin1')).toBe('');
  return { msgs: d.msgs, counters: r.counters, out: r.c2s.toString('latin1') };
}

/** A request the agent must refuse: nothing of it (nor after it) reaches the server. */
function refused(text: string, reason: RefuseReason, before = '') {
  const r = run({}, [c2s(before + text + NEXT)]);
  expect(r.c2s.toString('latin1')).toBe(before);
  expect(r.counters.refused[reason]).toBe(1);
  expect(r.counters.refusedRequests).toBe(1);
}

describe('smuggling: Content-Length and Transfer-Encoding together (RFC 9112 §6.3 point 3)', () => {
  it('CL.TE (front end reads Content-Length): Content-Length removed, the body is chunked, "G" starts the next request', () => {
    const { msgs, counters, out } = normalised(req('Content-Length: 6\r\nTransfer-Encoding: chunked\r\n', '0\r\n\r\nG') + 'POST / HTTP/1.1\r\nHost: a\r\n\r\n');
    expect(out).not.toMatch(/Content-Length/i);
    expect(msgs.map((m) => [m.start, m.framing, m.body.toString()])).toEqual([
      ['POST /x HTTP/1.1', 'chunked', ''],
      ['GPOST / HTTP/1.1', 'none', ''],
    ]);
    expect(counters.teWithCl).toBe(1);
  });

  it('TE.CL (back end reads Content-Length): the same normalisation: the whole chunked body is one message', () => {
    const { msgs } = normalised(req('Content-Length: 3\r\nTransfer-Encoding: chunked\r\n', '8\r\nSMUGGLED\r\n0\r\n\r\n') + NEXT);
    expect(msgs.map((m) => m.body.toString())).toEqual(['SMUGGLED', '']);
    expect(msgs).toHaveLength(2);
  });

  it('in a response too: Content-Length removed beside chunked', () => {
    const r = run({}, [c2s(NEXT), s2c('HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n')]);
    const m = decode(r.s2c, 'response').msgs[0]!;
    expect(hv(m, 'Content-Length')).toEqual([]);
    expect(m.body.toString()).toBe('ok');
  });
});

describe('smuggling: TE.TE obfuscations (one side must not see chunked where the other does)', () => {
  const cases: [string, string, RefuseReason][] = [
    ['unknown coding "xchunked"', 'Transfer-Encoding: xchunked\r\n', 'transferEncoding'],
    ['chunked not last', 'Transfer-Encoding: chunked, identity\r\n', 'transferEncoding'],
    ['a second field line with another coding', 'Transfer-Encoding: chunked\r\nTransfer-encoding: cow\r\n', 'transferEncoding'],
    ['chunked twice', 'Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n', 'transferEncoding'],
    ['space before the colon', 'Transfer-Encoding : chunked\r\n', 'wsBeforeColon'],
    ['tab before the colon', 'Transfer-Encoding\t: chunked\r\n', 'wsBeforeColon'],
    ['a vertical tab before the value', 'Transfer-Encoding:\x0bchunked\r\n', 'fieldValue'],
    ['a name with no colon (LF inside the name)', 'Transfer-Encoding\r\n: chunked\r\n', 'fieldName'],
    ['an empty value', 'Transfer-Encoding: \r\n', 'transferEncoding'],
    ['a quoted coding', 'Transfer-Encoding: "chunked"\r\n', 'transferEncoding'],
  ];
  it.each(cases)('%s: refused', (_w, head, reason) => refused(req(head, '0\r\n\r\n'), reason));

  // TE.0 (a review, 2026-12-07): gunicorn 20.1 and 21.2 compare the value with "chunked", read no
  // body for these, and take the chunk-size line for a request line (`ABC ;x="/ HTTP/1.1"`); the
  // chunk data then carried a whole request past the agent's rules.
  const te0: [string, string][] = [
    ['another coding before chunked', 'Transfer-Encoding: gzip, chunked\r\n'],
    ['identity before chunked', 'Transfer-Encoding: identity, chunked\r\n'],
    ['a parameter on chunked (RFC 9112 §7.1)', 'Transfer-Encoding: chunked;a=b\r\n'],
  ];
  it.each(te0)('TE.0, %s: refused', (_w, head) => refused(req(head, '0\r\n\r\n'), 'transferEncoding'));

  it('TE.0, list forms every parser does not read as chunked (",chunked", "chunked,", a trailing tab, two lines): forwarded as one canonical line', () => {
    for (const head of ['Transfer-Encoding: ,chunked\r\n', 'Transfer-Encoding: chunked,\r\n', 'Transfer-Encoding: chunked\t\r\n', 'Transfer-Encoding: \r\nTransfer-Encoding: chunked\r\n', 'transfer-encoding: Chunked \r\n']) {
      const { msgs, counters, out } = normalised(req(head, '3\r\nabc\r\n0\r\n\r\n') + NEXT);
      expect(out).toContain('\r\nTransfer-Encoding: chunked\r\n');
      expect(out.match(/transfer-encoding/gi)).toHaveLength(1);
      expect(msgs.map((m) => m.body.toString())).toEqual(['abc', '']);
      expect(counters.transferEncodingFixed).toBe(1);
    }
    // The usual line is left as it is.
    const { counters, out } = normalised(req('Transfer-Encoding: chunked\r\n', '3\r\nabc\r\n0\r\n\r\n'));
    expect(out).toBe(req('Transfer-Encoding: chunked\r\n', '3\r\nabc\r\n0\r\n\r\n'));
    expect(counters.transferEncodingFixed).toBe(0);
  });

  it('in a response: chunked after another coding refused (Python reads it close-delimited), odd list forms made canonical', () => {
    const bad = run({}, [c2s(NEXT), s2c('HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n')]);
    expect(bad.counters.refused.transferEncoding).toBe(1);
    for (const te of ['chunked,', 'chunked\t', ', chunked']) {
      const r = run({}, [c2s(NEXT + NEXT), s2c(`HTTP/1.1 200 OK\r\nTransfer-Encoding: ${te}\r\n\r\n2\r\nok\r\n0\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n`)]);
      const d = decode(r.s2c, 'response');
      expect(hv(d.msgs[0]!, 'Transfer-Encoding')).toEqual(['chunked']);
      expect(d.msgs.map((m) => [m.start, m.body.toString()])).toEqual([['HTTP/1.1 200 OK', 'ok'], ['HTTP/1.1 204 No Content', '']]);
      expect(r.counters.transferEncodingFixed).toBe(1);
    }
  });

  it('Transfer-Encoding in HTTP/1.0 is refused (RFC 9112 §6.1: framing faulty)', () => {
    refused('POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n', 'teHttp10');
  });

  it('case and optional whitespace are not obfuscation: "CHUNKED" with a tab after the colon is chunked', () => {
    const { msgs } = normalised(req('Transfer-Encoding:\tCHUNKED \r\n', '3\r\nabc\r\n0\r\n\r\n'));
    expect(msgs[0]!.body.toString()).toBe('abc');
  });

  it('whitespace before the colon in a response is removed, not forwarded (RFC 9112 §5.1)', () => {
    const r = run({}, [c2s(NEXT), s2c('HTTP/1.1 200 OK\r\nTransfer-Encoding : chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n')]);
    expect(r.s2c.toString()).toContain('\r\nTransfer-Encoding: chunked\r\n');
    expect(decode(r.s2c, 'response').msgs[0]!.body.toString()).toBe('ok');
    expect(r.counters.wsBeforeColon).toBe(1);
  });

  it('a whitespace-preceded line after the request-line is removed unprocessed (RFC 9112 §2.2)', () => {
    const { msgs, counters, out } = normalised('POST /x HTTP/1.1\r\n Transfer-Encoding: chunked\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello');
    expect(out).not.toContain('Transfer-Encoding');
    expect(msgs[0]!.body.toString()).toBe('hello');
    expect(counters.wsLines).toBe(1);
  });

  it('obs-fold hiding Transfer-Encoding in another field: folded into it (RFC 9112 §5.2), framing by Content-Length', () => {
    const { msgs, counters } = normalised(req('X-Pad: a\r\n Transfer-Encoding: chunked\r\nContent-Length: 5\r\n', 'hello'));
    expect(hv(msgs[0]!, 'X-Pad')).toEqual(['a  Transfer-Encoding: chunked']);
    expect(hv(msgs[0]!, 'Transfer-Encoding')).toEqual([]);
    expect(msgs[0]!.body.toString()).toBe('hello');
    expect(counters.obsFold).toBe(1);
  });

  it('a bare CR is not a line end: "X: a<CR>Transfer-Encoding: chunked" is one field (CR → SP, RFC 9112 §2.2)', () => {
    const { msgs, counters } = normalised(req('X: a\rTransfer-Encoding: chunked\r\nContent-Length: 5\r\n', 'hello'));
    expect(hv(msgs[0]!, 'X')).toEqual(['a Transfer-Encoding: chunked']);
    expect(msgs[0]!.body.toString()).toBe('hello');
    expect(counters.bareCR).toBe(1);
  });

  it('a bare LF is a line end for the agent, so it gets its CR: every parser then sees the same fields', () => {
    const { msgs, counters } = normalised('POST /x HTTP/1.1\nHost: a\nX: a\nTransfer-Encoding: chunked\n\n5\nhello\n0\n\n' + NEXT);
    expect(msgs.map((m) => [m.start, m.body.toString()])).toEqual([
      ['POST /x HTTP/1.1', 'hello'],
      ['GET /next HTTP/1.1', ''],
    ]);
    expect(counters.bareLF).toBe(9); // 5 in the header, 3 in the chunked body, 1 ending the trailers
  });

  it('NUL in a value becomes SP (RFC 9110 §5.5); other control characters are refused', () => {
    const { msgs, counters } = normalised(req('X: a\0b\r\nContent-Length: 0\r\n'));
    expect(hv(msgs[0]!, 'X')).toEqual(['a b']);
    expect(counters.nulInValue).toBe(1);
    refused(req('X: a\x01b\r\n'), 'fieldValue');
  });
});

describe('smuggling: Content-Length values (RFC 9112 §6.3 point 5, RFC 9110 §8.6)', () => {
  const bad: [string, string][] = [
    ['two lines, different values', 'Content-Length: 6\r\nContent-Length: 5\r\n'],
    ['a list with different values', 'Content-Length: 5, 6\r\n'],
    ['a sign', 'Content-Length: +5\r\n'],
    ['negative', 'Content-Length: -1\r\n'],
    ['hexadecimal', 'Content-Length: 0x5\r\n'],
    ['two numbers', 'Content-Length: 5 5\r\n'],
    ['a fraction', 'Content-Length: 5.0\r\n'],
    ['empty', 'Content-Length: \r\n'],
    ['larger than 2^53', 'Content-Length: 99999999999999999999\r\n'],
  ];
  it.each(bad)('%s: refused', (_w, head) => refused(req(head, 'hello'), 'contentLength'));

  it('the same value repeated ("5, 5", or two lines) or leading zeros: one plain Content-Length', () => {
    for (const head of ['Content-Length: 5, 5\r\n', 'Content-Length: 5\r\nContent-Length: 5\r\n', 'Content-Length: 005\r\n']) {
      const { msgs, out } = normalised(req(head, 'hello') + NEXT);
      expect(out.match(/Content-Length: [^\r]*/g)).toEqual(['Content-Length: 5']);
      expect(msgs.map((m) => m.body.toString())).toEqual(['hello', '']);
    }
  });

  it('in a response, differing values are a 502 to the client (RFC 9112 §6.3 point 5)', () => {
    const r = run({}, [c2s(NEXT), s2c('HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 50\r\n\r\nhello')]);
    expect(decode(r.s2c, 'response').msgs[0]!.start).toBe('HTTP/1.1 502 Bad Gateway');
    expect(r.s2c.toString()).not.toContain('hello');
  });
});

describe('smuggling: chunk sizes and chunk data (RFC 9112 §7.1)', () => {
  const chunked = (body: string) => req('Transfer-Encoding: chunked\r\n', body);
  const bad: [string, string][] = [
    ['"0x" prefix', '0x5\r\nhello\r\n0\r\n\r\n'],
    ['whitespace after the size (no extension)', '5 \r\nhello\r\n0\r\n\r\n'],
    ['a sign', '+5\r\nhello\r\n0\r\n\r\n'],
    ['an empty size', '\r\nhello\r\n0\r\n\r\n'],
    ['more than 16 hex digits (wraps a 64-bit parser)', '10000000000000005\r\nhello\r\n0\r\n\r\n'],
    ['a size over 2^53', 'fffffffffffffff\r\nhello\r\n0\r\n\r\n'],
    ['an extension without a name', '5;\r\nhello\r\n0\r\n\r\n'],
    ['an unterminated quoted extension (a bare LF inside)', '5;a="x\nhello\r\n0\r\n\r\n'],
    ['a bare CR in the size line', '5\r;x\r\nhello\r\n0\r\n\r\n'],
    ['chunk data longer than its size', '5\r\nhelloXX\r\n0\r\n\r\n'],
    ['chunk data shorter than its size', '7\r\nhello\r\n0\r\n\r\n'],
  ];
  it.each(bad)('%s: refused from that point on', (_w, body) => {
    const r = run({}, [c2s(chunked(body) + NEXT)]);
    expect(r.counters.refused.chunk).toBe(1);
    // Whatever left before the error, the server never sees the message end nor what follows.
    expect(r.c2s.toString()).not.toContain('/next');
    expect(decode(r.c2s, 'request').msgs).toHaveLength(0);
  });

  it('valid extensions (token and quoted values, spaces around ";" and "=") pass', () => {
    const { msgs } = normalised(chunked('5 ; a = b ;c="d;\\"e"\r\nhello\r\n0;last\r\n\r\n'));
    expect(msgs[0]!.body.toString()).toBe('hello');
  });

  it('a chunked response with an invalid size: the client sees the body cut, never a wrong next message', () => {
    const r = run({}, [c2s(NEXT + NEXT), s2c('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\nzz\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n')]);
    expect(r.s2c.toString()).toBe('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok');
    expect(r.counters.refusedResponses).toBe(1);
  });
});

describe('smuggling: request-line and Host (RFC 9112 §3, §3.2)', () => {
  const bad: [string, string, RefuseReason][] = [
    ['two spaces', 'GET  / HTTP/1.1\r\nHost: a\r\n\r\n', 'startLine'],
    ['a trailing space', 'GET / HTTP/1.1 \r\nHost: a\r\n\r\n', 'startLine'],
    ['a tab as separator', 'GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n', 'startLine'],
    ['a bare CR before the line end', 'GET / HTTP/1.1\r\r\nHost: a\r\n\r\n', 'startLine'],
    ['HTTP/0.9 (no version)', 'GET /\r\n\r\n', 'startLine'],
    ['lower-case "http/1.1"', 'GET / http/1.1\r\nHost: a\r\n\r\n', 'startLine'],
    ['HTTP/2.0 in an HTTP/1 request-line', 'GET / HTTP/2.0\r\nHost: a\r\n\r\n', 'version'],
    ['two Host lines', 'GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n', 'multipleHost'],
  ];
  it.each(bad)('%s: refused', (_w, text, reason) => refused(text, reason, NEXT));
});

describe('smuggling: responses that must not carry a body', () => {
  it('204 / 304 / 1xx with Transfer-Encoding: the field is removed, so no lax client reads a body', () => {
    const r = run({}, [
      c2s(NEXT + NEXT + NEXT),
      s2c('HTTP/1.1 100 Continue\r\nTransfer-Encoding: chunked\r\n\r\nHTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\nHTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n'),
      s2c('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok'),
    ]);
    expect(r.s2c.toString()).not.toMatch(/Transfer-Encoding|Content-Length: 5/);
    expect(decode(r.s2c, 'response').msgs.map((m) => m.start.slice(9, 12))).toEqual(['100', '204', '304', '200']);
  });

  it('a refused request is not answered from here: later requests are dropped, earlier responses still flow', () => {
    const r = run({}, [c2s(NEXT + req('Content-Length: 1\r\nContent-Length: 2\r\n') + NEXT), s2c('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok')]);
    expect(r.c2s.toString()).toBe(NEXT);
    expect(decode(r.s2c, 'response').msgs[0]!.body.toString()).toBe('ok');
    expect(r.agent.phase('c2s')).toBe('refused');
  });
});

describe('smuggling: what a review found (2026-12-07)', () => {
  it('a status code under 100 is no informational answer: refused (Node and Go took "099" for the final answer, the real one for its body)', () => {
    const r = run({ response: { replace: [{ find: 'secret', with: 'XXXXXX' }] } }, [c2s(NEXT), s2c('HTTP/1.1 099 X\r\n\r\nHTTP/1.1 200 OK\r\nX-Leak: secret\r\nContent-Length: 6\r\n\r\nsecret')]);
    expect(r.s2c.toString('latin1')).not.toContain('secret');
    expect(r.s2c.toString('latin1')).not.toContain('099');
    expect(r.counters.refused.startLine).toBe(1);
  });

  it('removeHeaders and setHeaders take the spelling with "_" for "-" too (CGI, WSGI and Rack read both as one variable)', () => {
    const cfg = { request: { removeHeaders: ['X-Remote-User'], setHeaders: { 'X-Auth-Role': 'guest' } } };
    const r = run(cfg, [c2s('GET / HTTP/1.1\r\nHost: a\r\nX_Remote_User: admin\r\nX-Remote-User: admin\r\nX_Auth_Role: admin\r\nX_Other: kept\r\n\r\n')]);
    const out = r.c2s.toString('latin1');
    expect(out).not.toMatch(/remote.user/i);
    expect(out.match(/auth.role/gi)).toHaveLength(1);
    expect(out).toContain('\r\nX-Auth-Role: guest\r\n');
    expect(out).toContain('\r\nX_Other: kept\r\n');
  });
});

describe('smuggling: connection options (RFC 9110 §7.6.1)', () => {
  it('an option naming a field the rule sets or removes, or a framing field, is dropped: the next hop would remove that field', () => {
    const cfg = { request: { setHeaders: { 'X-Auth-Role': 'guest' }, removeHeaders: ['X-Remote-User'] } };
    const r = run(cfg, [c2s('GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Auth-Role, x_remote_user, Content-Length\r\n\r\n' + NEXT)]);
    const out = r.c2s.toString('latin1');
    expect(out).toContain('\r\nConnection: keep-alive\r\n');
    expect(out).toContain('\r\nX-Auth-Role: guest\r\n');
    expect(r.counters.connectionOptionsRemoved).toBe(1);
    expect(decode(r.c2s, 'request').msgs.map((m) => m.start)).toEqual(['GET / HTTP/1.1', 'GET /next HTTP/1.1']);
    // Options naming nothing the rule manages stay as they are.
    const plain = run(cfg, [c2s('GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Other\r\n\r\n')]);
    expect(plain.c2s.toString('latin1')).toContain('\r\nConnection: keep-alive, X-Other\r\n');
    expect(plain.counters.connectionOptionsRemoved).toBe(0);
    // In a response too, and a list left empty goes whole.
    const resp = run({ response: { setHeaders: { 'X-Frame-Options': 'DENY' } } }, [c2s(NEXT), s2c('HTTP/1.1 200 OK\r\nConnection: X-Frame-Options\r\nContent-Length: 2\r\n\r\nok')]);
    expect(resp.s2c.toString('latin1')).not.toMatch(/Connection:/);
    expect(resp.s2c.toString('latin1')).toContain('\r\nX-Frame-Options: DENY\r\n');
  });
});

describe('smuggling: a second review (2026-12-07)', () => {
  const cfg = { request: { setHeaders: { 'X-Auth-Role': 'guest' }, removeHeaders: ['X-Remote-User'] }, response: { setHeaders: { 'X-Frame-Options': 'DENY' } } };

  it('a Connection list that does not parse still loses the options naming managed fields (proxies split it at commas, spaces and ";")', () => {
    for (const v of ['close X-Auth-Role', 'X-Auth-Role, @', 'X-Auth-Role, "x"', 'X-Auth-Role;q=1, close']) {
      const r = run(cfg, [c2s(`GET / HTTP/1.1\r\nHost: a\r\nConnection: ${v}\r\n\r\n`), s2c('HTTP/1.1 200 OK\r\nConnection: X-Frame-Options x\r\nContent-Length: 0\r\n\r\n')]);
      const out = r.c2s.toString('latin1');
      expect(out.match(/^Connection:.*$/im)?.[0] ?? '').not.toMatch(/auth/i);
      expect(out).toContain('\r\nX-Auth-Role: guest\r\n');
      expect(r.s2c.toString('latin1')).not.toMatch(/^Connection:.*frame/im);
      expect(r.counters.connectionOptionsRemoved).toBe(2);
    }
  });

  it('names are told apart as CGI-style gateways tell them: "_" and other bytes for "-", in the config too', () => {
    const r = run(cfg, [c2s("GET / HTTP/1.1\r\nHost: a\r\nX.Auth.Role: admin\r\nX~Remote~User: admin\r\nX'Remote'User: root\r\n\r\n")]);
    expect(r.c2s.toString('latin1')).toBe('GET / HTTP/1.1\r\nHost: a\r\nX-Auth-Role: guest\r\n\r\n');
    for (const c of [{ request: { removeHeaders: ['X_Remote_User'] } }, { request: { setHeaders: { 'X-Auth_Role': 'guest' } } }]) {
      const x = run(c, [c2s('GET / HTTP/1.1\r\nHost: a\r\nX-Remote-User: admin\r\nX_Auth-Role: admin\r\nX-Auth-Role: admin\r\n\r\n')]);
      const out = x.c2s.toString('latin1');
      if ('removeHeaders' in c.request) expect(out).not.toMatch(/remote.user/i);
      else expect(out.match(/auth.role/gi)).toHaveLength(1);
    }
  });

  it('connection management fields do not cross as trailers; a Content-Length with whitespace after it goes out plain', () => {
    const r = run(cfg, [c2s('POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nConnection: X-Auth-Role\r\nKeep-Alive: 1\r\nUpgrade: x\r\nX-T: kept\r\n\r\nPOST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\t\r\n\r\nabc')]);
    const out = r.c2s.toString('latin1');
    expect(out).not.toMatch(/Connection|Keep-Alive|Upgrade/);
    expect(out).toContain('\r\nX-T: kept\r\n');
    expect(out).toContain('\r\nContent-Length: 3\r\n');
    expect(out).not.toContain('\t');
    expect(decode(r.c2s, 'request').msgs.map((m) => m.body.toString())).toEqual(['', 'abc']);
  });
});

describe('smuggling: Content-Length of answers without a body', () => {
  it('HEAD and 304: a valid Content-Length is kept (one plain value), an invalid one removed (Node refuses the answer)', () => {
    const HEAD = 'HEAD / HTTP/1.1\r\nHost: a\r\n\r\n';
    const r = run({}, [c2s(HEAD + HEAD + NEXT + NEXT), s2c('HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5,6\r\n\r\nHTTP/1.1 304 Not Modified\r\nContent-Length: 0,0\r\n\r\nHTTP/1.1 304 Not Modified\r\nContent-Length: x\r\n\r\n')]);
    expect(r.s2c.toString('latin1')).toBe('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nHTTP/1.1 200 OK\r\n\r\nHTTP/1.1 304 Not Modified\r\nContent-Length: 0\r\n\r\nHTTP/1.1 304 Not Modified\r\n\r\n');
    expect(r.counters.refusedResponses).toBe(0);
  });
});
