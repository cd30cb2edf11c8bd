/**
 * The http agent in the stream engine on a keep-alive connection: a message must be complete
 * on the wire as soon as its last original byte is released — with no FIN and no later segment
 * in that direction, because the peer waits for this message before it sends anything that
 * would make the other side send more. Found end to end (test/e2e/http-agent.test.ts): a
 * Content-Length body re-framed as chunked whose last byte ended a segment got its last chunk
 * (`\r\n0\r\n\r\n`) as an insertion at the end of the data fed, which the engine sends with the
 * segment starting there (stream/commands.ts) — the next response, which never came: curl
 * waited for the end of the body, nginx for the next request.
 */
import { describe, expect, it } from 'vitest';
import { httpFactory } from '../../src/agent/http/agent.js';
import type { HttpConfig } from '../../src/agent/http/config.js';
import type { Direction } from '../../src/agent/types.js';
import { newStreamCounters } from '../../src/stream/counters.js';
import { StreamDirection, type Release } from '../../src/stream/direction.js';
import { DEFAULT_LIMITS } from '../../src/stream/limits.js';
import { CTX, decode, hv } from './http-helpers.js';

const CFG: HttpConfig = {
  response: { replace: [{ find: 'Hello world', with: 'Hi there' }] },
  request: { replace: [{ find: 'secret', with: '[redacted]' }] },
  maxBufferedBody: 16,
};

/** Both directions of one connection through the engine; `send` returns what the receiver has so far. */
function connection() {
  const agent = httpFactory.create(CFG, CTX);
  const counters = newStreamCounters();
  const mk = (d: Direction) => new StreamDirection<string>(d, agent, { ...DEFAULT_LIMITS }, counters, { queueBytes: 0, storeBytes: 0 });
  const dirs = { c2s: mk('c2s'), s2c: mk('s2c') };
  const sent = { c2s: 0, s2c: 0 };
  const got = { c2s: Buffer.alloc(0), s2c: Buffer.alloc(0) };
  const send = (d: Direction, segments: string[]): Buffer => {
    for (const s of segments) {
      const out: Release<string>[] = [];
      dirs[d].onSegment({ pos: sent[d], payload: Buffer.from(s, 'latin1'), fin: false, rst: false, tag: '' }, 0, out);
      sent[d] += s.length;
      for (const r of out) {
        // Releases come in order here (no loss): append at their new position.
        expect(r.newPos).toBe(got[d].length);
        got[d] = Buffer.concat([got[d], r.payload]);
      }
    }
    return got[d];
  };
  return { send, counters };
}

describe('http agent: a message is complete without a later segment (keep-alive)', () => {
  const body = 'xx Hello world xx Hello world xxxx'; // 34 bytes > maxBufferedBody: re-framed as chunked
  const response = `HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n`;

  for (const [name, cut] of [
    ['header and body in one segment', [response + body]],
    ['body alone in its segment', [response, body]],
    ['the body ends with a one-byte segment', [response, body.slice(0, -1), body.slice(-1)]],
    ['a match ends the body', [response, body.slice(0, 20), body.slice(20)]],
  ] as const) {
    it(`response, Content-Length re-framed as chunked: ${name}`, () => {
      const c = connection();
      c.send('c2s', ['GET / HTTP/1.1\r\nHost: lab\r\n\r\n']);
      const got = c.send('s2c', [...cut]);
      const d = decode(got, 'response');
      expect(d.msgs).toHaveLength(1);
      expect(d.rest.length).toBe(0);
      expect(hv(d.msgs[0]!, 'transfer-encoding')).toEqual(['chunked']);
      expect(d.msgs[0]!.body.toString('latin1')).toBe('xx Hi there xx Hi there xxxx');
      expect(c.counters.agentViolation + c.counters.agentError).toBe(0);
    });
  }

  it('the body ending exactly at a pattern end, matched whole in the last segment', () => {
    const c = connection();
    c.send('c2s', ['GET / HTTP/1.1\r\nHost: lab\r\n\r\n']);
    const b2 = 'xxxxxxxxxxxxxxxxxxxx Hello world';
    const got = c.send('s2c', [`HTTP/1.1 200 OK\r\nContent-Length: ${b2.length}\r\n\r\n`, b2]);
    const d = decode(got, 'response');
    expect(d.msgs.map((m) => m.body.toString('latin1'))).toEqual(['xxxxxxxxxxxxxxxxxxxx Hi there']);
    expect(d.rest.length).toBe(0);
  });

  it('request: an upload re-framed as chunked (server known to speak HTTP/1.1) reaches the server whole', () => {
    const c = connection();
    c.send('c2s', ['GET / HTTP/1.1\r\nHost: lab\r\n\r\n']);
    c.send('s2c', ['HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok']);
    const up = 'the secret is out, the secret is in';
    const got = c.send('c2s', [`POST /u HTTP/1.1\r\nHost: lab\r\nContent-Length: ${up.length}\r\n\r\n`, up]);
    const d = decode(got, 'request');
    expect(d.msgs).toHaveLength(2);
    expect(d.rest.length).toBe(0);
    expect(hv(d.msgs[1]!, 'transfer-encoding')).toEqual(['chunked']);
    expect(d.msgs[1]!.body.toString('latin1')).toBe('the [redacted] is out, the [redacted] is in');
  });
});
