/**
 * The pure parts of the http agent: grammar (RFC 9112 §3, §4, §7.1; RFC 9110 §5, §8.6), header
 * sections cut into units with their normalised bytes, and the message body length of §6.3.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parseBlock } from '../../src/agent/http/block.js';
import { EditBuilder } from '../../src/agent/http/edits.js';
import { requestFraming, responseFraming } from '../../src/agent/http/framing.js';
import { connectionOptions, parseChunkLine, parseContentLength, parseRequestLine, parseStatusLine, parseTransferCodings } from '../../src/agent/http/syntax.js';

const B = (s: string) => Buffer.from(s, 'latin1');

describe('http syntax', () => {
  it('request-line: strict single SP, HTTP/x.y', () => {
    expect(parseRequestLine('GET /a?b=c HTTP/1.1')).toEqual({ method: 'GET', target: '/a?b=c', version: { major: 1, minor: 1 } });
    expect(parseRequestLine('OPTIONS * HTTP/1.0')?.target).toBe('*');
    expect(parseRequestLine('CONNECT h:443 HTTP/1.1')?.method).toBe('CONNECT');
    expect(parseRequestLine('GET /caf\xc3\xa9 HTTP/1.1')?.target).toBe('/caf\xc3\xa9'); // raw UTF-8 path
    for (const bad of ['GET / HTTP/1.1 ', 'GET  / HTTP/1.1', 'GET /', 'GET / HTTP/1', 'G(T / HTTP/1.1', 'GET /a b HTTP/1.1', 'GET /\x00 HTTP/1.1', '']) {
      expect(parseRequestLine(bad), JSON.stringify(bad)).toBeUndefined();
    }
  });

  it('status-line: reason optional, three digits', () => {
    expect(parseStatusLine('HTTP/1.1 200 OK')).toEqual({ version: { major: 1, minor: 1 }, status: 200 });
    expect(parseStatusLine('HTTP/1.0 404')?.status).toBe(404);
    expect(parseStatusLine('HTTP/1.1 204 ')?.status).toBe(204);
    for (const bad of ['HTTP/1.1 20 OK', 'HTTP/1.1  200 OK', 'http/1.1 200 OK', 'HTTP/1.1 200 O\x01K', 'ICY 200 OK']) expect(parseStatusLine(bad)).toBeUndefined();
  });

  it('Content-Length: one value, repeated equal values canonicalised, anything else an error', () => {
    expect(parseContentLength(['42'])).toEqual({ ok: true, n: 42, canonical: true });
    expect(parseContentLength(['42, 42'])).toEqual({ ok: true, n: 42, canonical: false });
    expect(parseContentLength(['42', '42'])).toEqual({ ok: true, n: 42, canonical: false });
    expect(parseContentLength(['0042'])).toEqual({ ok: true, n: 42, canonical: false });
    expect(parseContentLength(['0'])).toEqual({ ok: true, n: 0, canonical: true });
    for (const bad of [['1', '2'], ['1,2'], ['+1'], ['1 2'], [''], ['1,'], ['1e3'], ['1234567890123456']]) expect(parseContentLength(bad).ok, JSON.stringify(bad)).toBe(false);
  });

  it('Transfer-Encoding: codings lower-cased, parameters allowed, empty elements skipped', () => {
    expect(parseTransferCodings(['gzip, Chunked'])).toEqual(['gzip', 'chunked']);
    expect(parseTransferCodings(['x;q="a,b"', ', chunked'])).toEqual(['x', 'chunked']);
    for (const bad of [['chunked;'], ['"chunked"'], ['chun ked'], ['chunked\x0b']]) expect(parseTransferCodings(bad)).toBeUndefined();
  });

  it('chunk-size line: hex size, extensions per grammar, ≤ 2^53', () => {
    expect(parseChunkLine('1a')).toBe(26);
    expect(parseChunkLine('0')).toBe(0);
    expect(parseChunkLine('FF ; name = "v\\"al" ;x')).toBe(255);
    expect(parseChunkLine('00000000000000ff')).toBe(255);
    for (const bad of ['', ' 5', '5 ', '0x5', '5;', '5;=a', '5;a=', '5;a="b', '5\r', '-1', '10000000000000000', '20000000000000']) {
      expect(parseChunkLine(bad), JSON.stringify(bad)).toBeUndefined();
    }
  });

  it('connection options: tokens, lower case; a non-token makes the field unusable', () => {
    expect([...connectionOptions(['Keep-Alive, Upgrade', 'close'])!]).toEqual(['keep-alive', 'upgrade', 'close']);
    expect(connectionOptions(['a b'])).toBeUndefined();
  });
});

describe('http header sections: units and normalised bytes', () => {
  it('reads the usual lines from the text as the general path reads them (units, errors, tallies)', () => {
    // Lines from pieces that hit every branch: CRLF and bare LF, bare CR, NUL, folds, whitespace
    // lines and whitespace before the colon, bad name and value bytes, missing colons.
    const piece = fc.constantFrom('Host', 'X-A', 'b', ':', ' ', '\t', '\r', '\0', '\x01', '\xe9', 'v', '(', ' : ', '::');
    const line = fc.tuple(fc.array(piece, { maxLength: 6 }), fc.constantFrom('\r\n', '\n')).map(([p, end]) => p.join('') + end);
    const start = fc.constantFrom('GET / HTTP/1.1\r\n', 'GET / HTTP/1.1\n', 'GET /\r HTTP/1.1\r\n', 'HTTP/1.1 200 OK\r\n', 'HTTP/1.0 204 No\rpe\r\n', 'HTTP/2 200\r\n', '');
    fc.assert(
      fc.property(start, fc.array(line, { maxLength: 8 }), fc.constantFrom('request', 'response', 'trailer') as fc.Arbitrary<'request' | 'response' | 'trailer'>, (st, lines, kind) => {
        const text = (kind === 'trailer' ? '' : st) + lines.filter((l) => l !== '\r\n' && l !== '\n').join('') + '\r\n';
        if (kind !== 'trailer' && st === '') return;
        const general = parseBlock(B(text), 7, kind, false);
        expect(parseBlock(B(text), 7, kind)).toEqual(general);
      }),
      { numRuns: 3000 },
    );
  });

  it('a clean section: one unit per line, nothing to normalise', () => {
    const pb = parseBlock(B('GET / HTTP/1.1\r\nHost: a\r\nX-A:  b \r\n\r\n'), 100, 'request');
    expect(pb.error).toBeUndefined();
    expect(pb.units.map((u) => [u.kind, u.at, u.len, u.norm, u.name, u.value])).toEqual([
      ['start', 100, 16, null, '', ''],
      ['field', 116, 9, null, 'host', 'a'],
      ['field', 125, 10, null, 'x-a', 'b'],
      ['end', 135, 2, null, '', ''],
    ]);
  });

  it('obs-fold joins lines into one unit; bare LF, bare CR and NUL are normalised', () => {
    const pb = parseBlock(B('HTTP/1.1 200 OK\nA: 1\r\n 2\r\nB: x\ry\0\n\n'), 0, 'response');
    expect(pb.units.map((u) => [u.kind, u.norm?.toString('latin1') ?? null])).toEqual([
      ['start', 'HTTP/1.1 200 OK\r\n'],
      ['field', 'A: 1  2\r\n'],
      ['field', 'B: x y \r\n'],
      ['end', '\r\n'],
    ]);
    expect(pb.tally).toEqual({ bareLF: 3, bareCR: 1, nulInValue: 1, obsFold: 1, wsBeforeColon: 0, wsLines: 0 });
  });

  it('whitespace-preceded lines after the start-line become removal units; space before a colon: removed in responses, refused in requests', () => {
    const pb = parseBlock(B('HTTP/1.1 200 OK\r\n X: 1\r\n\tY: 2\r\nZ : 3\r\n\r\n'), 0, 'response');
    expect(pb.units.map((u) => [u.kind, u.norm?.toString('latin1') ?? null])).toEqual([
      ['start', null],
      ['ws', ''],
      ['ws', ''],
      ['field', 'Z: 3\r\n'],
      ['end', null],
    ]);
    expect(parseBlock(B('GET / HTTP/1.1\r\nZ : 3\r\n\r\n'), 0, 'request').error).toBe('wsBeforeColon');
  });

  it('refusals: bad start-line, version, field name, control characters', () => {
    expect(parseBlock(B('HELLO\r\n\r\n'), 0, 'request').error).toBe('startLine');
    expect(parseBlock(B('GET / HTTP/3.0\r\n\r\n'), 0, 'request').error).toBe('version');
    expect(parseBlock(B('GET / HTTP/1.1\r\nno colon\r\n\r\n'), 0, 'request').error).toBe('fieldName');
    expect(parseBlock(B('GET / HTTP/1.1\r\n: empty name\r\n\r\n'), 0, 'request').error).toBe('fieldName');
    expect(parseBlock(B('GET / HTTP/1.1\r\nA\x7f: b\r\n\r\n'), 0, 'request').error).toBe('fieldName');
    expect(parseBlock(B('GET / HTTP/1.1\r\nA: b\x1bc\r\n\r\n'), 0, 'request').error).toBe('fieldValue');
    expect(parseBlock(B('X: 1\r\n\r\n'), 0, 'trailer').units.map((u) => u.kind)).toEqual(['field', 'end']);
  });
});

describe('http framing (RFC 9112 §6.3)', () => {
  const req = (h: string) => requestFraming(parseBlock(B(`POST / HTTP/1.1\r\n${h}\r\n`), 0, 'request'));
  const resp = (h: string, head = false, connect = false) => responseFraming(parseBlock(B(`${h}\r\n`), 0, 'response'), { head, connect });

  it('requests: chunked wins over Content-Length (removed), lengths, nothing', () => {
    expect(req('Transfer-Encoding: chunked\r\nContent-Length: 5\r\n')).toMatchObject({ body: { kind: 'chunked' }, drop: [{ unit: 2, why: 'teWithCl' }] });
    expect(req('Content-Length: 5\r\n').body).toEqual({ kind: 'length', n: 5 });
    expect(req('Content-Length: 0\r\n').body).toEqual({ kind: 'none' });
    expect(req('').body).toEqual({ kind: 'none' });
    expect(req('Content-Length: 5\r\nContent-Length: 5\r\n')).toMatchObject({ clFix: { unit: 1, n: 5 }, drop: [{ unit: 2, why: 'contentLengthFixed' }] });
    expect(req('Transfer-Encoding: gzip\r\n').error).toBe('transferEncoding');
    expect(requestFraming(parseBlock(B('POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n'), 0, 'request')).error).toBe('teHttp10');
  });

  it('responses: bodyless statuses and HEAD, close-delimited, chunked not last', () => {
    expect(resp('HTTP/1.1 200 OK\r\nContent-Length: 3\r\n', true).body).toEqual({ kind: 'none' });
    expect(resp('HTTP/1.1 204 No Content\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n').drop.map((d) => d.unit)).toEqual([1, 2]);
    expect(resp('HTTP/1.1 304 Not Modified\r\nContent-Length: 3\r\n').drop).toEqual([]);
    expect(resp('HTTP/1.1 200 OK\r\n', false, true).body).toEqual({ kind: 'none' });
    expect(resp('HTTP/1.1 200 OK\r\n').body).toEqual({ kind: 'close' });
    expect(resp('HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 9\r\n')).toMatchObject({ body: { kind: 'close' }, codings: ['gzip'] });
    expect(resp('HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n').error).toBe('contentLength');
  });
});

describe('http edit builder', () => {
  it('merges touching edits (an insertion after a deletion, a header before a replacement), refuses going back', () => {
    const ob = new EditBuilder();
    ob.add(0, 3);
    ob.add(3, 0, B('5\r\n'));
    ob.add(3, 2, B('xy'));
    ob.add(9, 0, B('\r\n'));
    ob.add(9, 0); // nothing
    expect(ob.take().map((e) => [e.at, e.len, Buffer.from(e.data).toString()])).toEqual([
      [0, 5, '5\r\nxy'],
      [9, 0, '\r\n'],
    ]);
    expect(() => ob.add(4, 1)).toThrow(/agent bug/);
  });

  it('cutFrom keeps a pure insertion at the cut (it ends the message before)', () => {
    const ob = new EditBuilder();
    ob.add(5, 0, B('0\r\n\r\n'));
    ob.cutFrom(5);
    expect(ob.take()).toHaveLength(1);
    const o2 = new EditBuilder();
    o2.add(1, 1);
    o2.add(5, 2);
    o2.cutFrom(5);
    expect(o2.take().map((e) => e.at)).toEqual([1]);
  });
});
