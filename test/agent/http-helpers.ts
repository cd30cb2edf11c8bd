/**
 * Helpers for the http agent tests: a connection driver (one contract-checking AgentDriver per
 * direction on one agent, pieces cut as asked, snapshot/restore between pieces) and a strict
 * HTTP/1.1 decoder for what the peers receive (CRLF only, no obs-fold, exact framing), so a test
 * can say "the client reads these messages" rather than compare bytes.
 */
import { expect } from 'vitest';
import { httpFactory, type HttpAgent } from '../../src/agent/http/agent.js';
import type { HttpConfig } from '../../src/agent/http/config.js';
import type { HttpCounters } from '../../src/agent/http/counters.js';
import type { AgentContext, Direction } from '../../src/agent/types.js';
import { AgentDriver, applyEdits } from '../helpers/agent-driver.js';

export const CTX: AgentContext = {
  flowId: 'http#1',
  client: { addr: '10.200.0.1', port: 40000 },
  server: { addr: '10.200.0.2', port: 80 },
  directions: new Set<Direction>(['c2s', 's2c']),
};

export const b = (s: string): Buffer => Buffer.from(s, 'latin1');

export interface Step {
  dir: Direction;
  data: Buffer;
}
export const c2s = (s: string | Buffer): Step => ({ dir: 'c2s', data: typeof s === 'string' ? b(s) : s });
export const s2c = (s: string | Buffer): Step => ({ dir: 's2c', data: typeof s === 'string' ? b(s) : s });

export interface RunOpts {
  /** Piece sizes for step i (the last piece takes the rest); default: one piece. */
  cuts?: (step: number, len: number) => number[];
  /** Snapshot (through JSON) and restore after every piece. */
  snapshot?: boolean;
  /** Flush both directions at the end (FIN). Default true. */
  fin?: boolean;
  /** Called after every piece (for mid-run checks). */
  after?: (a: HttpAgent, step: number) => void;
}

export interface RunResult {
  c2s: Buffer;
  s2c: Buffer;
  counters: HttpCounters;
  agent: HttpAgent;
  /** The most bytes held (fed - undecidedFrom) at any answer, per direction. */
  maxHeld: Record<Direction, number>;
}

export function run(cfg: HttpConfig | undefined, steps: readonly Step[], o: RunOpts = {}): RunResult {
  let agent = httpFactory.create(cfg, CTX) as HttpAgent;
  const d = { c2s: new AgentDriver(agent, 'c2s'), s2c: new AgentDriver(agent, 's2c') };
  const orig = { c2s: [] as Buffer[], s2c: [] as Buffer[] };
  const maxHeld = { c2s: 0, s2c: 0 };
  steps.forEach((st, i) => {
    orig[st.dir].push(st.data);
    const sizes = o.cuts?.(i, st.data.length) ?? [st.data.length];
    let p = 0;
    for (let k = 0; k < sizes.length && p < st.data.length; k++) {
      const n = k === sizes.length - 1 ? st.data.length - p : Math.min(sizes[k]!, st.data.length - p);
      d[st.dir].feed(st.data.subarray(p, p + n));
      p += n;
      maxHeld[st.dir] = Math.max(maxHeld[st.dir], d[st.dir].fed - d[st.dir].undecided);
      if (o.snapshot) {
        const snap = JSON.parse(JSON.stringify(agent.snapshot())) as unknown;
        agent = httpFactory.restore(cfg, CTX, snap) as HttpAgent;
        d.c2s.agent = d.s2c.agent = agent;
      }
      o.after?.(agent, i);
    }
  });
  if (o.fin !== false) {
    d.c2s.flush();
    d.s2c.flush();
  }
  return {
    c2s: applyEdits(Buffer.concat(orig.c2s), d.c2s.edits),
    s2c: applyEdits(Buffer.concat(orig.s2c), d.s2c.edits),
    counters: agent.counters,
    agent,
    maxHeld,
  };
}

// ---------------------------------------------------------------------------------------------
// A strict decoder of what a peer receives

export interface Msg {
  start: string;
  headers: [string, string][];
  body: Buffer;
  framing: 'length' | 'chunked' | 'close' | 'none';
  trailers: [string, string][];
  /** Chunk sizes as framed (chunked only). */
  chunks: number[];
}

export interface Decoded {
  msgs: Msg[];
  /** Bytes after the last complete message (a message cut short, or garbage). */
  rest: Buffer;
}

/** Header value(s) of a message, case-insensitive. */
export function hv(m: Msg, name: string): string[] {
  return m.headers.filter(([n]) => n.toLowerCase() === name.toLowerCase()).map(([, v]) => v);
}

function readLine(buf: Buffer, p: number): { line: string; next: number } | undefined {
  const lf = buf.indexOf(0x0a, p);
  if (lf < 0) return undefined;
  expect(lf > p && buf[lf - 1] === 0x0d, `bare LF at ${lf}`).toBe(true);
  const line = buf.toString('latin1', p, lf - 1);
  expect(line.includes('\r'), `bare CR in ${JSON.stringify(line)}`).toBe(false);
  return { line, next: lf + 1 };
}

function readFields(buf: Buffer, p: number): { fields: [string, string][]; next: number } | undefined {
  const fields: [string, string][] = [];
  for (;;) {
    const l = readLine(buf, p);
    if (l === undefined) return undefined;
    p = l.next;
    if (l.line === '') return { fields, next: p };
    const m = /^([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*(.*?)[ \t]*$/.exec(l.line);
    expect(m, `field line ${JSON.stringify(l.line)}`).not.toBeNull();
    fields.push([m![1]!, m![2]!]);
  }
}

/**
 * Messages of one direction as a strict HTTP/1.1 recipient reads them. `methods`: the request
 * methods the responses answer, in order (HEAD and CONNECT change framing).
 */
export function decode(buf: Buffer, kind: 'request' | 'response', methods: readonly string[] = []): Decoded {
  const msgs: Msg[] = [];
  let p = 0;
  let mi = 0;
  for (;;) {
    const start = p;
    const l = readLine(buf, p);
    if (l === undefined) break;
    const f = readFields(buf, l.next);
    if (f === undefined) break;
    const m: Msg = { start: l.line, headers: f.fields, body: Buffer.alloc(0), framing: 'none', trailers: [], chunks: [] };
    p = f.next;
    let status = 0;
    let method = '';
    if (kind === 'response') {
      const s = /^HTTP\/1\.[01] (\d{3})/.exec(l.line);
      expect(s, `status line ${JSON.stringify(l.line)}`).not.toBeNull();
      status = Number(s![1]);
      if (status >= 200 || status === 101) method = methods[mi++] ?? 'GET';
    } else expect(l.line).toMatch(/^[A-Z]+ \S+ HTTP\/1\.[01]$/);
    const te = hv(m, 'transfer-encoding');
    const cl = hv(m, 'content-length');
    const bodyless = kind === 'response' && (method === 'HEAD' || status < 200 || status === 204 || status === 304 || (method === 'CONNECT' && status < 300));
    let complete = true;
    if (bodyless) m.framing = 'none';
    else if (te.length > 0) {
      expect(cl, 'Content-Length beside Transfer-Encoding').toEqual([]);
      expect(te.join(',').toLowerCase().replace(/\s/g, '')).toBe('chunked');
      m.framing = 'chunked';
      const parts: Buffer[] = [];
      complete = false;
      for (;;) {
        const sl = readLine(buf, p);
        if (sl === undefined) break;
        expect(sl.line).toMatch(/^[0-9a-fA-F]+([ \t]*;.*)?$/);
        const n = parseInt(sl.line, 16);
        p = sl.next;
        if (n === 0) {
          const t = readFields(buf, p);
          if (t === undefined) break;
          m.trailers = t.fields;
          p = t.next;
          complete = true;
          break;
        }
        if (p + n + 2 > buf.length) break;
        m.chunks.push(n);
        parts.push(buf.subarray(p, p + n));
        expect(buf.toString('latin1', p + n, p + n + 2), 'CRLF after chunk data').toBe('\r\n');
        p += n + 2;
      }
      m.body = Buffer.concat(parts);
    } else if (cl.length > 0) {
      expect(cl).toHaveLength(1);
      expect(cl[0]).toMatch(/^[0-9]+$/);
      const n = Number(cl[0]);
      m.framing = 'length';
      if (p + n > buf.length) complete = false;
      else {
        m.body = buf.subarray(p, p + n);
        p += n;
      }
    } else if (kind === 'response') {
      m.framing = 'close';
      m.body = buf.subarray(p);
      p = buf.length;
    }
    if (!complete) {
      p = start;
      break;
    }
    msgs.push(m);
    if (kind === 'response' && (status === 101 || (method === 'CONNECT' && status >= 200 && status < 300))) break;
  }
  return { msgs, rest: buf.subarray(p) };
}

/**
 * Comparable form of decoded messages (bodies as text, chunk boundaries left out). Of an
 * incomplete last message only the first line counts: how much of a refused message left before
 * its refusal depends on what earlier answers had decided.
 */
/**
 * What a peer reads, for comparison. `anyFraming`: a rewritten Content-Length body may arrive
 * with its length fixed or chunked (fixed only when it came whole with its header, which depends
 * on how the stream was cut): the framing and its fields are left out.
 */
export function shape(d: Decoded, o: { anyFraming?: boolean } = {}): unknown {
  const framed = (m: Msg) => o.anyFraming === true && (m.framing === 'length' || m.framing === 'chunked');
  const FRAMING = new Set(['content-length', 'transfer-encoding']);
  return {
    msgs: d.msgs.map((m) =>
      framed(m)
        ? { start: m.start, headers: m.headers.filter(([k]) => !FRAMING.has(k.toLowerCase())), body: m.body.toString('latin1'), framing: 'framed', trailers: m.trailers }
        : { start: m.start, headers: m.headers, body: m.body.toString('latin1'), framing: m.framing, trailers: m.trailers },
    ),
    rest: d.rest.toString('latin1').split('\r\n')[0],
  };
}

/** Counters, with how rewritten Content-Length bodies were framed summed (see shape's anyFraming). */
export function framingBlind(c: Record<string, unknown>): Record<string, unknown> {
  const { framedFixedLength, framedChunked, ...rest } = c;
  return { ...rest, framedLength: Number(framedFixedLength ?? 0) + Number(framedChunked ?? 0) };
}
