/**
 * Messages a peer reads another way than the agent would have (found by a review, 2026-12-07),
 * each with "Hello world" where the client would read it if the agent's reading and the peer's
 * came apart: a response no request waits for, a Transfer-Encoding whose chunked is not final,
 * CONNECT / Upgrade that are no tunnel request, and a snapshot taken after two forced decisions.
 */
import { describe, expect, it } from 'vitest';
import { httpFactory, type HttpAgent } from '../../src/agent/http/agent.js';
import { CTX, c2s, run, s2c } from './http-helpers.js';

const HELLO = { response: { replace: [{ find: 'Hello world', with: 'Hi there' }] } };
const CURL = 'Host: h\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n';

describe('a response no request waits for', () => {
  it('ends the connection: Connection: close, and what the server sends after it is deleted (a HEAD sent later takes it for its answer)', () => {
    const early = 'HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n';
    const leak = 'HTTP/1.1 200 OK\r\nX-Leak: Hello world\r\nContent-Length: 0\r\n\r\n';
    const r = run(HELLO, [s2c(early), c2s(`HEAD /a HTTP/1.1\r\n${CURL}`), c2s(`GET /b HTTP/1.1\r\n${CURL}`), s2c(`HTTP/1.1 200 OK\r\nContent-Length: ${leak.length}\r\n\r\n${leak}`)]);
    expect(r.s2c.toString('latin1')).toBe('HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
    expect(r.counters.unpairedResponses).toBe(1);
    expect(r.counters.afterCloseBytes).toBeGreaterThan(0);
  });

  it('a keep-alive of its own is replaced by close', () => {
    const r = run(HELLO, [s2c('HTTP/1.1 408 Request Timeout\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n')]);
    expect(r.s2c.toString('latin1')).toBe('HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
  });
});

describe('Transfer-Encoding with chunked not final in a response', () => {
  for (const unrewritable of ['refuse', 'pass'] as const) {
    it(`is refused (unrewritable: ${unrewritable}): RFC 9112 reads it to the close, curl and nginx as chunked, so the next response would pass as body`, () => {
      const r = run({ ...HELLO, unrewritable }, [
        c2s(`GET /a HTTP/1.1\r\n${CURL}`),
        s2c('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, identity\r\n\r\n5\r\nabcde\r\n0\r\n\r\n'),
        c2s(`GET /b HTTP/1.1\r\n${CURL}`),
        s2c('HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\nHello world\n'),
      ]);
      expect(r.counters.refused.transferEncoding).toBe(1);
      expect(r.s2c.toString('latin1')).not.toContain('Hello world');
      expect(r.s2c.toString('latin1')).not.toContain('abcde');
    });
  }

  it('a coding without chunked is still read to the close (passed with unrewritable: pass)', () => {
    const r = run({ ...HELLO, unrewritable: 'pass' }, [c2s(`GET /a HTTP/1.1\r\n${CURL}`), s2c('HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nxyz')]);
    expect(r.counters.passTransferCoded).toBe(1);
    expect(r.counters.refused.transferEncoding).toBe(0);
  });
});

describe('CONNECT and Upgrade that ask for no tunnel', () => {
  it('CONNECT with an origin-form target is refused as a bad request line (its 2xx would be read as an ordinary answer)', () => {
    const r = run(HELLO, [c2s(`CONNECT /x HTTP/1.1\r\n${CURL}`), s2c('HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nHello world')]);
    expect(r.counters.refused.startLine).toBe(1);
    expect(r.s2c.toString('latin1')).not.toContain('Hello world');
  });

  it('CONNECT host:port (and an IPv6 literal) is a tunnel request', () => {
    for (const target of ['example.org:443', '[2001:db8::1]:8443', '10.0.0.1:22']) {
      const r = run(HELLO, [c2s(`CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n\r\n`), s2c('HTTP/1.1 200 Connection established\r\n\r\n'), c2s('tunnel bytes'), s2c('Hello world')]);
      expect(r.counters.tunnels).toBe(1);
      expect(r.s2c.toString('latin1')).toContain('Hello world'); // a tunnel is passed (README, counted)
    }
  });

  it('Upgrade without the upgrade connection option: a 101 to it is unexpected (refused), the bytes after it never pass as a tunnel', () => {
    const r = run(HELLO, [c2s(`GET /x HTTP/1.1\r\nUpgrade: foo\r\n${CURL}`), s2c('HTTP/1.1 101 Switching Protocols\r\nUpgrade: foo\r\n\r\nHello world')]);
    expect(r.counters.refused.unexpected101).toBe(1);
    expect(r.s2c.toString('latin1')).not.toContain('Hello world');
  });

  it('Upgrade with Connection: upgrade is a tunnel request', () => {
    const r = run(HELLO, [c2s(`GET /x HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n${CURL}`), s2c('HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n')]);
    expect(r.counters.tunnels).toBe(1);
  });
});

describe('forced decisions', () => {
  it('two hold timeouts with no body byte between them leave a snapshot that restores', () => {
    const a = httpFactory.create(HELLO, CTX) as HttpAgent;
    const pos = { c2s: 0, s2c: 0 };
    const feed = (d: 'c2s' | 's2c', s: string) => {
      a.feed(d, pos[d], Buffer.from(s, 'latin1'));
      pos[d] += s.length;
    };
    feed('c2s', 'GET / HTTP/1.1\r\nHost: a\r\n\r\n');
    feed('s2c', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nHel\r\n');
    a.flush('s2c', 'timeout');
    feed('s2c', '2\r\n'); // framing only: the body matcher gets nothing
    a.flush('s2c', 'timeout');
    const snap = JSON.parse(JSON.stringify(a.snapshot())) as unknown;
    expect(() => httpFactory.restore(HELLO, CTX, snap)).not.toThrow();
  });
});
