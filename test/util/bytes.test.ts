/**
 * util/bytes.ts: `transientBytes` never hands a byte out twice until `transientRecycle` (the live
 * loop's, once a batch is written), then cuts its kept slabs again from their start (no new
 * memory); big pieces get their own store; `copyBytes` copies.
 */
import { describe, expect, it } from 'vitest';
import { copyBytes, ownBytes, transientBytes, transientRecycle } from '../../src/util/bytes.js';

interface Piece {
  buf: ArrayBufferLike;
  from: number;
  to: number;
}
const piece = (b: Uint8Array): Piece => ({ buf: b.buffer, from: b.byteOffset, to: b.byteOffset + b.length });

function overlapping(ps: Piece[]): [Piece, Piece] | null {
  const byBuf = new Map<ArrayBufferLike, Piece[]>();
  for (const p of ps) byBuf.set(p.buf, [...(byBuf.get(p.buf) ?? []), p]);
  for (const list of byBuf.values()) {
    list.sort((a, b) => a.from - b.from);
    for (let i = 1; i < list.length; i++) if (list[i]!.from < list[i - 1]!.to) return [list[i - 1]!, list[i]!];
  }
  return null;
}

describe('transientBytes', () => {
  it('without a recycle no two pieces overlap, across more than every kept slab (20 MiB of pieces)', () => {
    transientRecycle();
    const ps: Piece[] = [];
    let total = 0;
    let seed = 7;
    while (total < 20 << 20) {
      seed = (seed * 1103515245 + 12345) >>> 0;
      const n = 1 + (seed % (70 * 1024));
      const b = transientBytes(n);
      expect(b.length).toBe(n);
      ps.push(piece(b));
      total += n;
    }
    expect(overlapping(ps)).toBeNull();
  });

  it('after a recycle the kept slabs are cut again from their start: no new memory', () => {
    transientRecycle();
    const first = transientBytes(64 * 1024);
    const second = transientBytes(64 * 1024);
    expect(second.buffer).toBe(first.buffer);
    expect(second.byteOffset).toBe(first.byteOffset + 64 * 1024);
    // Enough to need a second slab in this batch.
    const more: Uint8Array[] = [];
    for (let i = 0; i < 20; i++) more.push(transientBytes(64 * 1024));
    const used = new Set([first.buffer, ...more.map((m) => m.buffer)]);
    expect(used.size).toBe(2);
    transientRecycle();
    const again = transientBytes(100);
    expect(again.buffer).toBe(first.buffer);
    expect(again.byteOffset).toBe(first.byteOffset);
    // The next batch's second slab is the same one as before too.
    const again2: Uint8Array[] = [];
    for (let i = 0; i < 20; i++) again2.push(transientBytes(64 * 1024));
    expect(new Set([again.buffer, ...again2.map((m) => m.buffer)])).toEqual(used);
  });

  it('under TAPGATE_DEBUG_POISON (the suite sets it) a recycle overwrites what was handed out', () => {
    expect(process.env['TAPGATE_DEBUG_POISON']).toBe('1');
    transientRecycle();
    const a = transientBytes(1000);
    a.fill(1);
    const b = transientBytes(3000);
    b.fill(2);
    transientRecycle();
    expect(a.every((x) => x === 0xa5)).toBe(true);
    expect(b.every((x) => x === 0xa5)).toBe(true);
  });

  it('a piece over 256 KiB has its own backing store', () => {
    transientRecycle();
    const small = transientBytes(10);
    const big = transientBytes(256 * 1024 + 1);
    expect(big.buffer).not.toBe(small.buffer);
    expect(big.byteOffset).toBe(0);
    expect(big.buffer.byteLength).toBe(256 * 1024 + 1);
  });
});

describe('copyBytes and ownBytes', () => {
  it('copy: equal bytes, not the same memory; own bytes have their own store', () => {
    const src = new Uint8Array([1, 2, 3, 4]);
    const c = copyBytes(src);
    expect([...c]).toEqual([1, 2, 3, 4]);
    src[0] = 9;
    expect(c[0]).toBe(1);
    const o = ownBytes(5000);
    expect(o.buffer.byteLength).toBe(5000);
  });
});
