/**
 * The http agent's result must not depend on how the streams are cut (pg-protocol's tests: the
 * same bytes split at every offset) nor on snapshot/restore between any two bytes (the cluster
 * moves connections mid-header, mid-chunk, mid-body). What peers read is compared as decoded
 * messages (chunk boundaries of a re-chunked body follow the cuts; their content does not), and
 * byte for byte where no framing can change (a rewritten Content-Length body keeps its length
 * only when it arrived whole with its header, so elsewhere it may come chunked). Then resync
 * after a gap.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { httpFactory, type HttpAgent } from '../../src/agent/http/agent.js';
import type { HttpConfig } from '../../src/agent/http/config.js';
import { AgentDriver, applyEdits } from '../helpers/agent-driver.js';
import { b, c2s, CTX, decode, framingBlind, run, s2c, shape, type Step } from './http-helpers.js';

const RULES: HttpConfig = {
  response: { replace: [{ find: 'Hello world', with: 'Hi there' }, { regex: 'n[0-9]+', with: '<$&>', maxMatch: 6 }], setHeaders: { 'X-R': '1' }, removeHeaders: ['Server'] },
  request: { replace: [{ find: 'secret', with: '[redacted]' }], setHeaders: { 'X-Via': 'tg' } },
  maxBufferedBody: 24,
};

interface Scenario {
  name: string;
  cfg: HttpConfig;
  steps: Step[];
  /** Request methods the responses answer (HEAD / CONNECT change framing). */
  methods?: string[];
  /** No framing that depends on the cuts: the output must be identical byte for byte. */
  exact?: boolean;
}

const get = (p: string) => `GET ${p} HTTP/1.1\r\nHost: a\r\nAccept-Encoding: gzip\r\n\r\n`;

const SCENARIOS: Scenario[] = [
  {
    name: 'keep-alive, Content-Length fixed (the issue)',
    cfg: RULES,
    steps: [c2s(get('/a') + get('/b')), s2c('HTTP/1.1 200 OK\r\nServer: x\r\nContent-Length: 11\r\n\r\nHello worldHTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\nn1 Hello world.')],
  },
  {
    name: 'large body re-framed as chunked, then a small one',
    cfg: RULES,
    steps: [c2s(get('/a') + get('/b')), s2c('HTTP/1.1 200 OK\r\nContent-Length: 41\r\n\r\nHello world n12345 Hello world n1 Hello wHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nn7')],
  },
  {
    name: 'chunked re-chunked: matches across chunks, extensions, trailers',
    cfg: RULES,
    steps: [c2s(get('/')), s2c('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;a=b\r\nHell\r\n3\r\no w\r\n8\r\norld n42\r\n0\r\nX-T: 1\r\n\r\n')],
  },
  {
    name: 'HEAD, 204, 304, 100, pipelined',
    cfg: RULES,
    steps: [
      c2s('HEAD / HTTP/1.1\r\nHost: a\r\n\r\n' + get('/1') + get('/2') + get('/3')),
      s2c('HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nHTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nHello world'),
    ],
    methods: ['HEAD', 'GET', 'GET', 'GET'],
  },
  {
    name: 'upload: small fixed, chunked re-chunked',
    cfg: RULES,
    steps: [c2s('POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9\r\n\r\nmy secretPOST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nsec\r\n4\r\nret!\r\n0\r\n\r\n')],
  },
  {
    name: 'HTTP/1.0 close-delimited response',
    cfg: RULES,
    steps: [c2s('GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n'), s2c('HTTP/1.0 200 OK\r\n\r\nHello world and n99 and Hello world')],
    exact: true,
  },
  {
    name: 'smuggling normalised: CL.TE, bare LF, obs-fold, duplicate Content-Length',
    cfg: {},
    steps: [c2s('POST / HTTP/1.1\nHost: a\nX: a\n b\nContent-Length: 6\nTransfer-Encoding: chunked\n\n0\n\nGPOST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2, 2\r\n\r\nhi')],
    exact: true,
  },
  {
    name: 'smuggling refused mid-stream (bad chunk size), responses before it flow',
    cfg: RULES,
    steps: [c2s(get('/') + 'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0x3\r\nabc\r\n0\r\n\r\n' + get('/x')), s2c('HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nHello world')],
  },
  {
    name: 'Upgrade to a tunnel',
    cfg: RULES,
    steps: [c2s('GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n'), s2c('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\nHello world'), c2s('Hello world')],
    exact: true,
  },
];

function compare(sc: Scenario, got: ReturnType<typeof run>, want: ReturnType<typeof run>): void {
  if (sc.exact) {
    expect(got.c2s.toString('latin1')).toBe(want.c2s.toString('latin1'));
    expect(got.s2c.toString('latin1')).toBe(want.s2c.toString('latin1'));
  } else {
    const o = { anyFraming: true };
    expect(shape(decode(got.c2s, 'request'), o)).toEqual(shape(decode(want.c2s, 'request'), o));
    expect(shape(decode(got.s2c, 'response', sc.methods), o)).toEqual(shape(decode(want.s2c, 'response', sc.methods), o));
  }
  expect(framingBlind({ ...got.counters })).toEqual(framingBlind({ ...want.counters }));
}

describe('http: the same output however the streams are cut', () => {
  it('the scenarios decode as intended in one piece', () => {
    const whole = SCENARIOS.map((sc) => run(sc.cfg, sc.steps));
    expect(decode(whole[0]!.s2c, 'response').msgs.map((m) => m.body.toString())).toEqual(['Hi there', '<n1> Hi there.']);
    expect(decode(whole[1]!.s2c, 'response').msgs.map((m) => m.body.toString())).toEqual(['Hi there <n12345> Hi there <n1> Hello w', '<n7>']);
    expect(decode(whole[2]!.s2c, 'response').msgs[0]!.body.toString()).toBe('Hi there <n42>');
    expect(decode(whole[4]!.c2s, 'request').msgs.map((m) => m.body.toString())).toEqual(['my [redacted]', '[redacted]!']);
    expect(decode(whole[5]!.s2c, 'response').msgs[0]!.body.toString()).toBe('Hi there and <n99> and Hi there');
    expect(decode(whole[6]!.c2s, 'request').msgs.map((m) => m.start)).toEqual(['POST / HTTP/1.1', 'GPOST / HTTP/1.1']);
    // The upload is refused at its bad size line: the server has a body that never ends.
    const refused = decode(whole[7]!.c2s, 'request');
    expect(refused.msgs.map((m) => m.start)).toEqual(['GET / HTTP/1.1']);
    expect(refused.rest.toString()).toMatch(/^POST \/ HTTP\/1\.1\r\n[^]*\r\n\r\n$/);
    expect(whole[8]!.s2c.toString()).toMatch(/\r\n\r\nHello world$/);
  });

  for (const sc of SCENARIOS) {
    it(`${sc.name}: every step split at every offset`, () => {
      const want = run(sc.cfg, sc.steps);
      sc.steps.forEach((st, i) => {
        for (let k = 1; k < st.data.length; k++) {
          compare(sc, run(sc.cfg, sc.steps, { cuts: (j) => (j === i ? [k, Infinity] : [Infinity]) }), want);
        }
      });
    });

    it(`${sc.name}: one byte at a time, snapshot/restore (through JSON) after every byte`, () => {
      const want = run(sc.cfg, sc.steps);
      compare(sc, run(sc.cfg, sc.steps, { cuts: (_j, n) => Array(n).fill(1), snapshot: true }), want);
    });
  }

  it('random cuts and random snapshot points (fast-check)', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: SCENARIOS.length - 1 }),
        fc.array(fc.integer({ min: 1, max: 40 }), { minLength: 1, maxLength: 60 }),
        fc.boolean(),
        (k, sizes, snapshot) => {
          const sc = SCENARIOS[k]!;
          compare(sc, run(sc.cfg, sc.steps, { cuts: (j) => sizes.slice(j % sizes.length).concat(sizes), snapshot }), run(sc.cfg, sc.steps));
        },
      ),
      { numRuns: 300, seed: 16 },
    );
  });

  it('random message streams (bodies, framings, match positions) cut at random: decoded output identical (fast-check)', () => {
    const piece = fc.constantFrom('Hello world', 'Hello', ' world', 'n12', 'abc', '\r\n', 'x'.repeat(30));
    const body = fc.array(piece, { maxLength: 6 }).map((a) => a.join(''));
    const resp = fc.record({ body, kind: fc.constantFrom('cl', 'chunked') }).map(({ body: bd, kind }) =>
      kind === 'cl'
        ? `HTTP/1.1 200 OK\r\nContent-Length: ${bd.length}\r\n\r\n${bd}`
        : `HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n${bd.length === 0 ? '' : `${bd.length.toString(16)}\r\n${bd}\r\n`}0\r\n\r\n`,
    );
    fc.assert(
      fc.property(fc.array(resp, { minLength: 1, maxLength: 4 }), fc.array(fc.integer({ min: 1, max: 23 }), { minLength: 1, maxLength: 30 }), (resps, sizes) => {
        const steps = [c2s(resps.map(() => get('/')).join('')), s2c(resps.join(''))];
        const want = run(RULES, steps);
        const d = decode(want.s2c, 'response');
        expect(d.rest.length).toBe(0);
        expect(d.msgs).toHaveLength(resps.length);
        for (const m of d.msgs) expect(m.body.toString()).not.toContain('Hello world');
        const got = run(RULES, steps, { cuts: () => sizes });
        expect(shape(decode(got.s2c, 'response'), { anyFraming: true })).toEqual(shape(d, { anyFraming: true }));
        // Held at most: a header section (< 80 bytes here) with a fixlen body (≤ 24), or a
        // matcher tail (≤ 10 body bytes) with the chunk framing between them.
        expect(got.maxHeld.s2c).toBeLessThanOrEqual(80 + 24);
      }),
      { numRuns: 200, seed: 1616 },
    );
  });
});

describe('http: snapshot/restore at the hard places', () => {
  const text = 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nHello \r\n5\r\nworld\r\n0\r\n\r\n';
  const places: [string, number][] = [
    ['mid-header', text.indexOf('Transfer') + 4],
    ['mid-chunk-size line', text.indexOf('6\r') + 1],
    ['mid-chunk, inside a held match', text.indexOf('Hello') + 3],
    ['between chunks, match still open', text.indexOf('5\r\n')],
    ['mid-trailers', text.length - 1],
  ];
  it.each(places)('%s: the restored agent continues identically', (_w, at) => {
    const a = httpFactory.create(RULES, CTX) as HttpAgent;
    new AgentDriver(a, 'c2s').feed(b(get('/')));
    const d = new AgentDriver(a, 's2c');
    d.feed(b(text.slice(0, at)));
    const snap = JSON.parse(JSON.stringify(a.snapshot())) as unknown;
    d.agent = httpFactory.restore(RULES, CTX, snap);
    d.feed(b(text.slice(at)));
    d.flush();
    expect(decode(applyEdits(b(text), d.edits), 'response').msgs[0]!.body.toString()).toBe('Hi there');
  });
});

describe('http: resync after a gap (cluster takeover from a snapshot that is behind)', () => {
  function gap(cfg: HttpConfig, head: string, restBefore: string, skipped: string, after: string) {
    const a = httpFactory.create(cfg, CTX) as HttpAgent;
    new AgentDriver(a, 'c2s').feed(b(get('/')));
    const d = new AgentDriver(a, 's2c');
    d.feed(b(head + restBefore));
    const restored = httpFactory.restore(cfg, CTX, JSON.parse(JSON.stringify(a.snapshot()))) as HttpAgent;
    const pos = d.fed + skipped.length;
    restored.resync('s2c', pos);
    const d2 = new AgentDriver(restored, 's2c');
    d2.fed = d2.undecided = pos;
    d2.feed(b(after));
    d2.flush();
    return { a: restored, out: applyEdits(b(head + restBefore + skipped + after), [...d.edits, ...d2.edits]).toString('latin1'), d2 };
  }

  it('inside a Content-Length body: parsing goes on; the next response is rewritten', () => {
    // The first body passes (content-coded, unrewritable: pass): a body of known length with nothing held.
    const cfg: HttpConfig = { response: { replace: [{ find: 'Hello world', with: 'Hi' }] }, unrewritable: 'pass' };
    const { a, out } = gap(cfg, 'HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 30\r\n\r\n', 'aaaaa', 'bbbbbbbbbb', 'c'.repeat(15) + 'HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nHello world');
    expect(a.counters.resyncKept).toBe(1);
    expect(out).toMatch(/\r\n\r\nHi$/);
  });

  it('inside chunk data: goes on to the chunk end, then parses the next size line', () => {
    const { a, out } = gap({}, 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\n', 'abc', 'def', 'ghij\r\n0\r\n\r\n');
    expect(a.counters.resyncKept).toBe(1);
    expect(a.phase('s2c')).toBe('start');
    expect(out).toMatch(/0\r\n\r\n$/);
  });

  it('waiting for the answer to CONNECT when s2c already has it (a tunnel): c2s goes on as a tunnel', () => {
    const a = httpFactory.create({}, CTX) as HttpAgent;
    a.feed('c2s', 0, b('CONNECT h:443 HTTP/1.1\r\nHost: h\r\n\r\n'));
    a.feed('s2c', 0, b('HTTP/1.1 200 OK\r\n\r\n'));
    expect(a.phase('c2s')).toBe('await');
    a.resync('c2s', 500);
    expect(a.phase('c2s')).toBe('tunnel');
    expect(a.feed('c2s', 500, b('\x16\x03\x01'))).toEqual({ edits: [], undecidedFrom: 503 });
  });

  it('where messages start is unknown: responses pass as a tunnel, requests are refused (counted)', () => {
    const { a } = gap({}, 'HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n', 'abc', 'HTTP/1.1 200 OK\r\n', 'Content-Length: 0\r\n\r\n');
    expect(a.phase('s2c')).toBe('tunnel');
    expect(a.counters.resyncLost).toBe(1);
    const c = httpFactory.create({}, CTX) as HttpAgent;
    c.feed('c2s', 0, b(get('/')));
    c.resync('c2s', 100);
    expect(c.feed('c2s', 100, b(get('/'))).edits).toEqual([{ at: 100, len: get('/').length, data: Buffer.alloc(0) }]);
    expect(c.counters.refused.resync).toBe(1);
  });

  it('the refused requests after a lost resync give up on the connection (AgentOutput.abort), once, even across a snapshot', () => {
    const c = httpFactory.create({}, CTX) as HttpAgent;
    c.feed('c2s', 0, b(get('/')));
    c.resync('c2s', 100);
    // Published before the next request came: the node that continues gives up as this one would.
    const r = httpFactory.restore({}, CTX, JSON.parse(JSON.stringify(c.snapshot()))) as HttpAgent;
    const out = r.feed('c2s', 100, b(get('/')));
    expect(out.abort).toBe('http-refused:resync');
    expect(r.feed('c2s', 100 + get('/').length, b(get('/'))).abort).toBeUndefined();
    expect(() => httpFactory.restore({}, CTX, { ...c.snapshot(), dirs: { ...c.snapshot().dirs, c2s: { ...c.snapshot().dirs.c2s, abort: 5 } } })).toThrow(/abort/);
  });
});
