/**
 * Agents answer with transient bytes (agent/types.ts Edit.data; util/bytes.ts), which the live
 * loop recycles after every written batch (and the test suite poisons, TAPGATE_DEBUG_POISON=1 in
 * vitest.config.ts). Driven as the live loop does, recycling after every call, the replace and
 * http agents must give the same bytes as without recycling: nothing they keep past a call (a
 * held tail, a fixlen body's edits, a compiled case-insensitive pattern) may be transient.
 */
import { describe, expect, it } from 'vitest';
import { createReplace } from '../../src/agent/replace.js';
import { httpFactory } from '../../src/agent/http/agent.js';
import type { Agent, Direction, Edit } from '../../src/agent/types.js';
import { transientRecycle } from '../../src/util/bytes.js';
import { mulberry32 } from '../../src/util/prng.js';
import { applyEdits } from '../helpers/agent-driver.js';

type Step = { dir: Direction; data: Buffer };
/** Feeds the steps cut as `cuts` says (each piece's buffer overwritten after its call), then FIN. */
function drive(mk: () => Agent, steps: Step[], cuts: number[][], recycle: boolean): Record<Direction, Buffer> {
  const a = mk();
  const fed = { c2s: 0, s2c: 0 };
  const edits: Record<Direction, Edit[]> = { c2s: [], s2c: [] };
  const all: Record<Direction, Buffer[]> = { c2s: [], s2c: [] };
  const take = (dir: Direction, out: { edits: Edit[] }) => {
    for (const e of out.edits) edits[dir].push({ at: e.at, len: e.len, data: Buffer.from(e.data) });
    if (recycle) transientRecycle();
  };
  steps.forEach((st, i) => {
    all[st.dir].push(st.data);
    let p = 0;
    for (const n of cuts[i]!) {
      if (p >= st.data.length) break;
      const piece = Buffer.from(st.data.subarray(p, Math.min(st.data.length, p + n)));
      take(st.dir, a.feed(st.dir, fed[st.dir], piece));
      piece.fill(0x7e);
      fed[st.dir] += piece.length;
      p += piece.length;
    }
    if (p < st.data.length) {
      const piece = Buffer.from(st.data.subarray(p));
      take(st.dir, a.feed(st.dir, fed[st.dir], piece));
      fed[st.dir] += piece.length;
    }
  });
  for (const dir of ['c2s', 's2c'] as const) take(dir, a.flush(dir, 'fin'));
  return { c2s: applyEdits(Buffer.concat(all.c2s), edits.c2s), s2c: applyEdits(Buffer.concat(all.s2c), edits.s2c) };
}
const CTX = { flowId: 'x', client: { addr: '1.1.1.1', port: 1 }, server: { addr: '2.2.2.2', port: 2 }, directions: new Set<Direction>(['c2s', 's2c']) };

function text(rand: () => number, n: number): Buffer {
  const words = ['Secret', 'SECRET', 'secret', 'sec', 'Hello world', 'hello', ' ', 'abc', 'x\r\n', 'token=', '12345'];
  let s = '';
  while (s.length < n) s += words[Math.floor(rand() * words.length)];
  return Buffer.from(s.slice(0, n), 'latin1');
}
function randCuts(rand: () => number, len: number): number[] {
  const out: number[] = [];
  let t = 0;
  while (t < len) {
    const n = rand() < 0.3 ? 1 + Math.floor(rand() * 6) : 1 + Math.floor(rand() * 3000);
    out.push(n);
    t += n;
  }
  return out;
}

describe('transient bytes do not outlive the call that made them', () => {
  it('replace agent (native and JS scans, case-insensitive, regex, joined edits)', () => {
    const rules = [
      { find: 'secret', with: '[redacted-long-replacement]', ignoreCase: true },
      { find: 'Hello world', with: 'Hi' },
      { regex: 'token=([0-9]+)', with: 'token=<$1>', maxMatch: 32 },
    ];
    const lit = [{ find: 'secret', with: '[R]', ignoreCase: true }, { find: 'hello', with: 'HELLO!!' }];
    for (let seed = 1; seed <= 200; seed++) {
      const rand = mulberry32(seed);
      const r = seed % 2 ? rules : lit;
      const ns = seed % 3 === 0 ? 'always' : seed % 3 === 1 ? undefined : false;
      const data = text(rand, 2000 + Math.floor(rand() * 20000));
      const steps = [{ dir: 'c2s' as Direction, data }];
      const cuts = [randCuts(rand, data.length)];
      const mk = () => createReplace({ joinMatches: true, nativeScan: ns as never }).create(r as never, CTX);
      const want = drive(mk, steps, cuts, false);
      const got = drive(mk, steps, cuts, true);
      expect(got.c2s.toString('latin1')).toBe(want.c2s.toString('latin1'));
    }
  });

  it('http agent: fixlen request bodies across calls, chunked and close-delimited responses', () => {
    const cfg = {
      request: { replace: [{ find: 'secret', with: '[redacted-long-replacement]', ignoreCase: true }] },
      response: { replace: [{ find: 'Hello world', with: 'Hi' }, { find: 'secret', with: 'SSSSSSSSSSSSSSSSSS', ignoreCase: true }] },
      maxBufferedBody: 65536,
    };
    for (let seed = 1; seed <= 200; seed++) {
      const rand = mulberry32(seed);
      const b1 = text(rand, 500 + Math.floor(rand() * 5000));
      const b2 = text(rand, 500 + Math.floor(rand() * 5000));
      const b3 = text(rand, 500 + Math.floor(rand() * 5000));
      const b4 = text(rand, 500 + Math.floor(rand() * 5000));
      const chunked = (b: Buffer) => {
        const parts: Buffer[] = [];
        for (let i = 0; i < b.length; i += 700) {
          const c = b.subarray(i, i + 700);
          parts.push(Buffer.from(c.length.toString(16) + '\r\n'), c, Buffer.from('\r\n'));
        }
        parts.push(Buffer.from('0\r\n\r\n'));
        return Buffer.concat(parts);
      };
      const steps: Step[] = [
        { dir: 'c2s', data: Buffer.concat([Buffer.from(`POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: ${b1.length}\r\n\r\n`), b1]) },
        { dir: 's2c', data: Buffer.concat([Buffer.from('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n'), chunked(b2)]) },
        { dir: 'c2s', data: Buffer.concat([Buffer.from(`POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: ${b3.length}\r\n\r\n`), b3]) },
        { dir: 's2c', data: Buffer.concat([Buffer.from('HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n'), b4]) },
      ];
      const cuts = steps.map((s) => randCuts(rand, s.data.length));
      const mk = () => httpFactory.create(cfg as never, CTX);
      const want = drive(mk, steps, cuts, false);
      const got = drive(mk, steps, cuts, true);
      expect(got.c2s.toString('latin1')).toBe(want.c2s.toString('latin1'));
      expect(got.s2c.toString('latin1')).toBe(want.s2c.toString('latin1'));
      expect(want.c2s.toString('latin1')).not.toMatch(/secret/i);
    }
  });
});
