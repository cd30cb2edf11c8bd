/**
 * Counters the agents of one gateway share reach its statistics and its log: a regex rule on the
 * opt-in backtracking engine whose step budget runs out is counted (`agents.replace`) and logged
 * (rate-limited), and the connection is reset (or, with `budgetExceeded: pass`, the traffic
 * passes); matches of replace and http agents, and what
 * the http agents did, add up across connections (`agents.replace.matches`, `agents.http`).
 */
import { describe, expect, it } from 'vitest';
import { gzipSync } from 'node:zlib';
import { ACK, Harness, RST, fakeLogger, payloadOf } from '../hostile/harness.js';

const BUDGET_CONFIG = `
rules:
  - match: { port: 80 }
    agent: replace
    replace:
      - { regex: "(a|aa)+(?=b)", with: "X", maxMatch: 64, engine: backtracking, maxSteps: 200, budgetExceeded: pass }
`;

describe('gateway: agent counters', () => {
  it('a backtracking regex out of steps (budgetExceeded: reset, the default): both ends reset, the bytes from that start never pass, counted', () => {
    const h = new Harness({}, {}, BUDGET_CONFIG.replace(', budgetExceeded: pass', ''));
    const c = h.connect(40002);
    const text = 'ab ab ' + 'a'.repeat(100) + 'b';
    h.send(c.data(0, 0, text), 0);
    h.advance(5000);
    const out = h.out.filter((g) => g.to === 1).map((g) => payloadOf(g.frame)).join('');
    expect(out).toBe('Xb Xb ');
    expect(h.out.filter((g) => (g.frame[14 + 20 + 13]! & RST) !== 0).map((g) => g.to).sort()).toEqual([0, 1]);
    const st = h.gw.stats();
    expect(st.agents.replace.regexBudgetResets).toBe(1);
    expect(st.agents.replace.regexBudgetExceeded).toBeGreaterThan(0);
    expect(st.gateway.aborted).toBe(1);
  });

  it('a backtracking regex out of steps with budgetExceeded: pass is counted in stats().agents.replace and logged; the bytes pass', () => {
    const lines: Array<{ o: Record<string, unknown>; m: string }> = [];
    const h = new Harness({}, { log: fakeLogger(lines) }, BUDGET_CONFIG);
    expect(h.gw.stats().agents.replace.regexBudgetExceeded).toBe(0);
    const c = h.connect(40000);
    const text = 'a'.repeat(300) + '\n';
    h.send(c.data(0, 0, text), 0);
    h.advance(5000); // the hold timeout decides what is held
    const out = h.out.filter((g) => g.to === 1).map((g) => payloadOf(g.frame)).join('');
    expect(out).toBe(text);
    const n = h.gw.stats().agents.replace.regexBudgetExceeded;
    expect(n).toBeGreaterThan(0);
    expect(lines.some((l) => l.m.includes('step budget'))).toBe(true);
  });

  it('a linear-engine rule never counts', () => {
    const h = new Harness({}, {}, `
rules:
  - match: { port: 80 }
    agent: replace
    replace:
      - { regex: "(a|aa)+b", with: "X", maxMatch: 64 }
`);
    const c = h.connect(40001);
    h.send(c.data(0, 0, 'a'.repeat(3000)), 0);
    h.advance(5000);
    expect(h.gw.stats().agents.replace.regexBudgetExceeded).toBe(0);
  });

  it('matches and http message counts of every connection add up in stats().agents', () => {
    const h = new Harness({}, {}, `
rules:
  - match: { port: 80 }
    agent: http
    http:
      response:
        replace:
          - { find: "Hello world", with: "Hi there" }
          - { regex: "(a|aa)+(?=b)", with: "X", maxMatch: 64, engine: backtracking, maxSteps: 200, budgetExceeded: pass }
`);
    const req = 'GET / HTTP/1.1\r\nHost: a\r\n\r\n';
    const body = 'Hello world Hello world\n' + 'a'.repeat(100) + '\n';
    for (const port of [40010, 40011]) {
      const c = h.connect(port);
      h.send(c.data(0, 0, req), 0);
      h.send(c.data(1, 0, `HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n${body}`, req.length), 1);
    }
    h.advance(5000);
    const http = h.gw.stats().agents.http;
    expect(http).toMatchObject({ requests: 2, responses: 2, bodiesRewritten: 2, bodyMatches: 4, framedFixedLength: 2 });
    expect(http.regexBudgetExceeded).toBeGreaterThan(0);
    const out = h.out.filter((g) => g.to === 0).map((g) => payloadOf(g.frame)).join('');
    expect(out.split('Hi there Hi there\n').length).toBe(3);

    const h2 = new Harness({}, {}, 'rules:\n  - match: { port: 80 }\n    agent: replace\n    replace: [ { find: "Hello world", with: "Hi there" } ]\n');
    const r = h2.connect(40012);
    h2.send(r.data(0, 0, 'Hello world, Hello world, Hello world'), 0);
    h2.advance(5000);
    expect(h2.gw.stats().agents.replace.matches).toBe(3);
  });

  it('http bodies being decoded (decode): counted gateway-wide while they are, and freed when their connection leaves the table', () => {
    const h = new Harness({}, {}, 'rules:\n  - match: { port: 80 }\n    agent: http\n    http:\n      decode: true\n      response:\n        replace: [ { find: "Hello world", with: "Hi there" } ]\n');
    const req = 'GET / HTTP/1.1\r\nHost: a\r\nAccept-Encoding: gzip\r\n\r\n';
    const z = gzipSync(Buffer.from('Hello world\n'.repeat(20_000)));
    const conns = [40020, 40021].map((port) => {
      const c = h.connect(port);
      h.send(c.data(0, 0, req), 0);
      const resp = Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: ${z.length}\r\n\r\n`, 'latin1'), z.subarray(0, 200)]);
      h.send(c.data(1, 0, resp, req.length), 1);
      return { c, at: resp.length };
    });
    expect(h.gw.stats().agents.http).toMatchObject({ bodiesDecoded: 2, decodingNow: 2 });
    for (const { c, at } of conns) h.send(c.frame(1, { flags: RST | ACK, seq: (c.isnS + 1 + at) >>> 0, ack: (c.isnC + 1 + req.length) >>> 0 }), 1);
    h.advance(600_000);
    expect(h.gw.stats().agents.http.decodingNow).toBe(0);
  });
});
