/**
 * The command list keeps its commands' replacement bytes in a pooled ring of its own
 * (stream/commands.ts `store`): copied in by `add`, released as commands are pruned or capped.
 * A model-based property against the list as it was (each command holding its own copy of its
 * bytes): the same rewritten payloads and mappings through appends, merges, prunes, caps and the
 * ring's wrap and growth; and the bytes given to `add` may be reused by the caller at once.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { CommandList } from '../../src/stream/commands.js';
import { bytestorePool, clearBytestorePool } from '../../src/stream/bytestore.js';
import { mulberry32 } from '../../src/util/prng.js';

/** Reference: the commands with their own bytes, the seed's mapping done the plain way. */
class Model {
  cmds: { org: number; orgLen: number; data: Uint8Array }[] = [];
  add(org: number, orgLen: number, data: Uint8Array): void {
    const last = this.cmds[this.cmds.length - 1];
    if (last !== undefined && last.org === org && last.orgLen === 0) {
      last.orgLen = orgLen;
      last.data = Buffer.concat([last.data, data]);
      return;
    }
    this.cmds.push({ org, orgLen, data: Uint8Array.from(data) });
  }
  /** Original bytes [a, b) of `orig` rewritten (commands starting in [a, b], the FIN's spot when fin). */
  rewrite(a: number, payload: Uint8Array, fin: boolean): Buffer {
    const b = a + payload.length;
    const stop = fin ? b + 1 : b;
    const parts: Uint8Array[] = [];
    let pos = a;
    for (const c of this.cmds) {
      const end = c.org + c.orgLen;
      if (c.org >= stop || (c.org < a && end <= a && !(c.orgLen === 0 && c.org === a))) continue;
      if (c.org > pos) parts.push(payload.subarray(pos - a, c.org - a));
      if (c.org >= a) parts.push(c.data);
      pos = Math.max(pos, Math.min(end, b), c.org >= a ? c.org : pos);
    }
    if (pos < b) parts.push(payload.subarray(pos - a));
    return Buffer.concat(parts);
  }
}

function randomBytes(rnd: () => number, n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = (rnd() * 256) | 0;
  return out;
}

afterEach(() => clearBytestorePool());

describe('CommandList: replacement bytes in a pooled ring', () => {
  it('rewrites as a list of owned copies would, through merges, prunes, caps, wraps and growth', () => {
    for (let seed = 1; seed <= 30; seed++) {
      const rnd = mulberry32(seed);
      const list = new CommandList();
      const model = new Model();
      // The original stream, generated as far as needed.
      const orig: number[] = [];
      const byteAt = (p: number): number => {
        while (orig.length <= p) orig.push((rnd() * 256) | 0);
        return orig[p]!;
      };
      let next = 0; // commands may start here or later
      let acked = 0; // original bytes acknowledged (prune point)
      for (let step = 0; step < 400; step++) {
        const r = rnd();
        if (r < 0.5) {
          // A command: replacement, deletion or insertion (sometimes an insertion then a command
          // at the same position, which merge).
          const org = next + ((rnd() * 40) | 0);
          const orgLen = rnd() < 0.25 ? 0 : 1 + ((rnd() * 30) | 0);
          const size = rnd() < 0.2 ? 0 : rnd() < 0.1 ? 500 + ((rnd() * 3000) | 0) : (rnd() * 60) | 0;
          if (orgLen === 0 && size === 0) continue;
          const data = randomBytes(rnd, size);
          list.add(org, orgLen, data, step);
          model.add(org, orgLen, data);
          data.fill(0xee); // the caller reuses its buffer at once
          next = org + orgLen;
          if (orgLen === 0 && rnd() < 0.5) {
            const more = randomBytes(rnd, (rnd() * 20) | 0);
            const len = 1 + ((rnd() * 10) | 0);
            list.add(org, len, more, step);
            model.add(org, len, more);
            next = org + len;
          }
        } else if (r < 0.8) {
          // A segment somewhere not yet acknowledged.
          const a = acked + ((rnd() * Math.max(1, next + 50 - acked)) | 0);
          const n = (rnd() * 200) | 0;
          const payload = Uint8Array.from({ length: n }, (_, i) => byteAt(a + i));
          const fin = rnd() < 0.1;
          const got = Buffer.from(list.rewrite(a, payload, fin));
          expect(got.equals(model.rewrite(a, payload, fin)), `seed ${seed} step ${step}: rewrite(${a}, ${n})`).toBe(true);
        } else if (r < 0.97) {
          // The receiver acknowledges up to some point: commands wholly below it go.
          acked = Math.min(next, acked + ((rnd() * 80) | 0));
          list.prune(acked);
          model.cmds = model.cmds.filter((c) => !(c.org + c.orgLen <= acked && c.org < acked));
          if (acked > 0) {
            // What the ring holds is exactly the live commands' bytes.
            const live = model.cmds;
            const held = live.reduce((s, c) => s + c.data.length, 0);
            expect(list.dataBytes, `seed ${seed} step ${step}: bytes held`).toBe(held);
          }
        } else {
          // The cap erases the oldest beyond 3 commands.
          list.cap(3, 0, step);
          model.cmds = model.cmds.slice(Math.max(0, model.cmds.length - 3));
          acked = Math.max(acked, list.erasedPos);
        }
        expect(list.length).toBe(model.cmds.length);
      }
    }
  });

  it('copies what it is given, and gives its ring back when every command is pruned', () => {
    const list = new CommandList();
    const hello = Buffer.from('Hi there');
    list.add(0, 11, hello, 0);
    hello.fill(0);
    const payload = Buffer.from('Hello world, and more');
    expect(Buffer.from(list.rewrite(0, payload, false)).toString()).toBe('Hi there, and more');
    expect(list.dataBytes).toBe(8);
    expect(list.dataCapacity).toBeGreaterThan(0);
    const released = bytestorePool.released;
    expect(list.prune(11)).toBe(1);
    expect(list.dataBytes).toBe(0);
    expect(list.dataCapacity).toBe(0);
    expect(bytestorePool.released).toBe(released + 1);
    // The floor keeps the offset: the next byte maps 3 earlier.
    expect(list.map(12)).toBe(9);
  });

  it('a list left with one small command (or none) keeps no ring sized for the bulk transfer before it', () => {
    const list = new CommandList();
    const big = new Uint8Array(2000).fill(0x41);
    for (let i = 0; i < 600; i++) list.add(i * 3000, 1000, big, 0); // 1.2 MB of replacement bytes
    expect(list.dataCapacity).toBeGreaterThanOrEqual(1 << 20);
    const front = 600 * 3000;
    list.add(front, 0, Buffer.from('tail'), 0); // an insertion at the front (a flushed hold)
    list.prune(front); // the receiver caught up: all but the insertion
    expect(list.length).toBe(1);
    expect(list.dataCapacity).toBe(256);
    expect(Buffer.from(list.rewrite(front, Buffer.from('xy'), false)).toString()).toBe('tailxy');
    expect(list.prune(front + 1)).toBe(1);
    expect(list.dataCapacity).toBe(0);
    list.add(front + 10, 1, Buffer.from('z'), 0); // the next command starts small again
    expect(list.dataCapacity).toBe(256);
  });

  it('an untouched payload comes back as itself, a single kept piece as a view of it', () => {
    const list = new CommandList();
    list.add(100, 5, new Uint8Array(0), 0);
    const p = Buffer.from('0123456789');
    expect(list.rewrite(0, p, false)).toBe(p);
    const cut = list.rewrite(95, p, false); // [95, 105): the deletion takes [100, 105)
    expect(Buffer.from(cut).toString()).toBe('01234');
    expect(cut.buffer).toBe(p.buffer);
  });
});
