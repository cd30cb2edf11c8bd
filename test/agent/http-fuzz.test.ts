/**
 * Hostile input: streams of HTTP messages (every framing, odd fields and start-lines) lightly
 * mutated (a bare LF, a byte inserted or dropped), cut at random,
 * interleaved both ways, with flushes (hold timeouts) and snapshot/restore in between. The agent
 * must never throw (the engine would turn it off), must keep the contract of agent/types.ts on
 * every answer (checked by AgentDriver), and must not hold more than its bounds.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { httpFactory, type HttpAgent } from '../../src/agent/http/agent.js';
import type { HttpConfig } from '../../src/agent/http/config.js';
import type { Direction } from '../../src/agent/types.js';
import { AgentDriver } from '../helpers/agent-driver.js';
import { CTX } from './http-helpers.js';

const CFG: HttpConfig = {
  response: { replace: [{ find: 'Hello', with: 'Bye' }, { regex: 'a+b', with: '<$&>', maxMatch: 9 }], setHeaders: { X: '1' } },
  request: { replace: [{ find: 'ab', with: 'abab' }] },
  maxHeaderBytes: 256,
  maxBufferedBody: 32,
  maxChunkLine: 64,
  maxPipeline: 4,
};
/** The same, bodies the rules cannot rewrite passing (the default refuses them). */
const CFG_PASS: HttpConfig = { ...CFG, unrewritable: 'pass' };

const REQ_LINES = ['GET / HTTP/1.1', 'HEAD /h HTTP/1.1', 'POST /p HTTP/1.1', 'GET / HTTP/1.0', 'CONNECT h:1 HTTP/1.1', 'GET  / HTTP/1.1', 'GET / HTTP/1.1'];
const STATUS_LINES = ['HTTP/1.1 200 OK', 'HTTP/1.0 200 OK', 'HTTP/1.1 204 N', 'HTTP/1.1 304 N', 'HTTP/1.1 100 C', 'HTTP/1.1 101 S', 'HTTP/1.1 206 P', 'HTTP/1.1 200 OK'];
const FIELDS = [
  'Host: a', 'Upgrade: x', 'Expect: 100-continue', 'Connection: close', 'Connection: keep-alive', 'Content-Encoding: gzip', 'X: y\r\n fold',
  'Transfer-Encoding : chunked', 'Content-Length: 5, 5', 'Accept-Encoding: gzip', 'Range: bytes=1-2', 'Content-Length: 3', 'X-Long: ' + 'l'.repeat(90),
];
const WORDS = ['Hello', 'aaab', 'ab', 'xyz', 'Hel', 'lo', 'aa', 'b', '\r\n', '0\r\n'];

/** One message: a start-line, fields, and a body framed by Content-Length, chunked, or nothing. */
const message = (lines: string[]) =>
  fc
    .record({
      start: fc.constantFrom(...lines),
      fields: fc.array(fc.constantFrom(...FIELDS), { maxLength: 3 }),
      framing: fc.constantFrom('cl', 'chunked', 'none'),
      body: fc.array(fc.constantFrom(...WORDS), { maxLength: 12 }).map((w) => w.join('')),
      cuts: fc.array(fc.integer({ min: 1, max: 9 }), { minLength: 1, maxLength: 5 }),
    })
    .map(({ start, fields, framing, body, cuts }) => {
      const f = [...fields];
      let b = '';
      if (framing === 'cl') {
        f.push(`Content-Length: ${body.length}`);
        b = body;
      } else if (framing === 'chunked') {
        f.push('Transfer-Encoding: chunked');
        for (let p = 0, k = 0; p < body.length; k++) {
          const n = Math.min(cuts[k % cuts.length]!, body.length - p);
          b += `${n.toString(16)}\r\n${body.slice(p, p + n)}\r\n`;
          p += n;
        }
        b += '0\r\n\r\n';
      }
      return `${start}\r\n${f.map((x) => x + '\r\n').join('')}\r\n${b}`;
    });

/** Messages, then a few mutations: a CRLF made a bare LF, a byte inserted, a byte dropped. */
const stream = (lines: string[]) =>
  fc
    .record({
      msgs: fc.array(message(lines), { maxLength: 5 }),
      muts: fc.array(fc.record({ at: fc.nat(), kind: fc.constantFrom('lf', 'ins', 'del'), byte: fc.integer({ min: 0, max: 255 }) }), { maxLength: 3 }),
    })
    .map(({ msgs, muts }) => {
      let s = msgs.join('');
      for (const m of muts) {
        if (s.length === 0) break;
        const at = m.at % s.length;
        if (m.kind === 'lf') {
          const i = s.indexOf('\r\n', at);
          if (i >= 0) s = s.slice(0, i) + s.slice(i + 1);
        } else if (m.kind === 'ins') s = s.slice(0, at) + String.fromCharCode(m.byte) + s.slice(at);
        else s = s.slice(0, at) + s.slice(at + 1);
      }
      return Buffer.from(s, 'latin1');
    });

type Op = { dir: Direction; n: number } | { flush: Direction } | { snapshot: true };
const op: fc.Arbitrary<Op> = fc.oneof(
  { weight: 8, arbitrary: fc.record({ dir: fc.constantFrom<Direction>('c2s', 's2c'), n: fc.integer({ min: 1, max: 50 }) }) },
  { weight: 1, arbitrary: fc.record({ flush: fc.constantFrom<Direction>('c2s', 's2c') }) },
  { weight: 1, arbitrary: fc.constant({ snapshot: true as const }) },
);

/** What the runs reached: the property must exercise rewriting, tunnels and refusals. */
const SEEN = new Set<string>();

describe('http agent under hostile input', () => {
  it('never throws, keeps the agent contract, stays within its bounds (fast-check)', () => {
    fc.assert(
      fc.property(stream(REQ_LINES), stream(STATUS_LINES), fc.array(op, { maxLength: 80 }), fc.boolean(), (a, z, ops, pass) => {
        const cfg = pass ? CFG_PASS : CFG;
        let agent = httpFactory.create(cfg, CTX) as HttpAgent;
        const d = { c2s: new AgentDriver(agent, 'c2s'), s2c: new AgentDriver(agent, 's2c') };
        const data = { c2s: a, s2c: z };
        for (const o of ops) {
          if ('snapshot' in o) {
            agent = httpFactory.restore(cfg, CTX, JSON.parse(JSON.stringify(agent.snapshot()))) as HttpAgent;
            d.c2s.agent = d.s2c.agent = agent;
          } else if ('flush' in o) d[o.flush].flush();
          else {
            const dr = d[o.dir];
            const piece = data[o.dir].subarray(dr.fed, dr.fed + o.n);
            if (piece.length > 0) dr.feed(piece);
            // A header (256) with a fixlen body (32); or a matcher tail (≤ 8 body bytes) with the
            // chunk framing between them (≤ 64 + CRLF each); or 256 after CONNECT.
            expect(dr.fed - dr.undecided).toBeLessThanOrEqual(256 + 32 + 9 * 66);
          }
        }
        for (const dir of ['c2s', 's2c'] as const) {
          const dr = d[dir];
          if (dr.fed < data[dir].length) dr.feed(data[dir].subarray(dr.fed));
          dr.flush();
        }
        const c = agent.counters as unknown as Record<string, number>;
        for (const k of ['bodiesRewritten', 'framedFixedLength', 'framedChunked', 'rechunked', 'tunnels', 'refusedRequests', 'refusedResponses', 'informational', 'passEncoded']) if (c[k]! > 0) SEEN.add(k);
        if (agent.counters.refused.encoded > 0) SEEN.add('refused.encoded');
      }),
      { numRuns: 1500, seed: 4242 },
    );
    expect([...SEEN].sort()).toEqual(['bodiesRewritten', 'framedChunked', 'framedFixedLength', 'informational', 'passEncoded', 'rechunked', 'refused.encoded', 'refusedRequests', 'refusedResponses', 'tunnels']);
  });
});
