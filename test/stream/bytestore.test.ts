/**
 * Issue 7: ByteStore as a growable ring with a pooled free list. A model-based property against
 * a trivial reference (the live bytes + start), free-list reuse and bounds, empty stores holding
 * nothing, and appends copying the caller's bytes.
 */
import { afterEach, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { ByteStore, bytestorePool, bytestorePoolBytes, bytestorePoolRings, clearBytestorePool } from '../../src/stream/bytestore.js';

type Op =
  | { k: 'append'; len: number; seed: number }
  | { k: 'drop'; f: number }
  | { k: 'slide'; jitter: number; seed: number }
  | { k: 'reset'; rel: number }
  | { k: 'shrink' }
  | { k: 'read'; a: number; b: number }
  | { k: 'diff'; a: number; len: number; flip: number; mode: 'equal' | 'flip' | 'random' };

/** Deterministic pseudo-random bytes. */
function bytes(len: number, seed: number): Uint8Array {
  const out = new Uint8Array(len);
  let x = seed | 1;
  for (let i = 0; i < len; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

/** Reference: the live bytes and the position of the first one. */
class Model {
  data = new Uint8Array(0);
  constructor(public start: number) {}
  get end(): number {
    return this.start + this.data.length;
  }
  append(d: Uint8Array): void {
    const n = new Uint8Array(this.data.length + d.length);
    n.set(this.data);
    n.set(d, this.data.length);
    this.data = n;
  }
  dropBelow(pos: number): void {
    if (pos <= this.start) return;
    if (pos >= this.end) {
      this.start = pos;
      this.data = new Uint8Array(0);
      return;
    }
    this.data = this.data.slice(pos - this.start);
    this.start = pos;
  }
  reset(pos: number): void {
    this.start = pos;
    this.data = new Uint8Array(0);
  }
  read(from: number, to: number): Uint8Array {
    const a = Math.max(from, this.start);
    const b = Math.min(to, this.end);
    return b <= a ? new Uint8Array(0) : this.data.slice(a - this.start, b - this.start);
  }
  firstDifference(at: number, d: Uint8Array): number {
    const a = Math.max(at, this.start);
    const b = Math.min(at + d.length, this.end);
    for (let p = a; p < b; p++) if (this.data[p - this.start] !== d[p - at]) return p;
    return -1;
  }
}

/** A fraction in [lo, hi] (not fc.double: it favours the bounds, too rarely crossing the seam). */
const frac = (lo: number, hi: number) => fc.integer({ min: 0, max: 1_000_000 }).map((i) => lo + ((hi - lo) * i) / 1_000_000);

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 2, arbitrary: fc.record({ k: fc.constant('append' as const), len: fc.oneof({ weight: 3, arbitrary: fc.integer({ min: 0, max: 300 }) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 200_000 }) }), seed: fc.integer() }) },
  // A sliding window (append about a chunk, then release all but a window): makes the ring wrap.
  { weight: 8, arbitrary: fc.record({ k: fc.constant('slide' as const), jitter: frac(0, 1), seed: fc.integer() }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('drop' as const), f: frac(-0.2, 1.2) }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('reset' as const), rel: fc.integer({ min: -1000, max: 1000 }) }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('shrink' as const) }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('read' as const), a: frac(-0.2, 1.2), b: frac(-0.2, 1.2) }) },
  {
    weight: 4,
    arbitrary: fc.record({
      k: fc.constant('diff' as const),
      a: frac(-0.2, 1.2),
      len: frac(0, 1.3),
      flip: frac(0, 1),
      mode: fc.constantFrom('equal' as const, 'flip' as const, 'random' as const),
    }),
  },
);

/** The chunk size and window (a few chunks) of a run's sliding-window ops: small or large. */
const slideArb = fc
  .record({ chunk: fc.oneof(fc.integer({ min: 1, max: 1000 }), fc.integer({ min: 1, max: 70_000 })), chunks: fc.integer({ min: 1, max: 6 }) })
  .map(({ chunk, chunks }) => ({ chunk, window: chunk * chunks }));

afterEach(() => clearBytestorePool());

describe('ByteStore ring', () => {
  it('behaves like the reference model (growth and wrap-around included)', () => {
    let wrapped = 0; // differences found past the seam of a ring whose live bytes wrap around
    let grown = 0;
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 1_000_000 }), slideArb, fc.array(opArb, { minLength: 1, maxLength: 60, size: 'max' }), (start, slide, ops) => {
        const s = new ByteStore(start);
        const m = new Model(start);
        let lastCap = 0;
        for (const op of ops) {
          const isWrapped = (s as unknown as { head: number }).head + s.size > s.capacity;
          /** A position relative to the window [start - 1000, end + 1000]. */
          const at = (f: number) => Math.round(m.start - 1000 + f * (m.data.length + 2000));
          switch (op.k) {
            case 'append': {
              const d = bytes(op.len, op.seed);
              s.append(d);
              m.append(d);
              d.fill(0xaa); // the caller reuses its buffer
              break;
            }
            case 'slide': {
              const d = bytes(Math.round(slide.chunk * (0.5 + op.jitter)), op.seed);
              s.append(d);
              m.append(d);
              d.fill(0x55);
              s.dropBelow(m.end - slide.window);
              m.dropBelow(m.end - slide.window);
              break;
            }
            case 'drop': {
              const p = at(op.f);
              s.dropBelow(p);
              m.dropBelow(p);
              break;
            }
            case 'shrink': {
              // The bytes stay; the ring is the smallest power of two (≥ 256) that holds them.
              s.shrink();
              let cap = 256;
              while (cap < m.data.length) cap *= 2;
              expect(s.capacity).toBe(m.data.length === 0 ? 0 : cap);
              break;
            }
            case 'reset':
              s.reset(m.start + op.rel);
              m.reset(m.start + op.rel);
              break;
            case 'read': {
              const a = at(op.a);
              const b = at(op.b);
              expect(Buffer.from(s.read(a, b)).equals(Buffer.from(m.read(a, b)))).toBe(true);
              // copyTo: the same bytes in place (held ranges), a clear error outside them.
              const lo = Math.max(a, m.start);
              const hi = Math.min(b, m.end);
              if (hi >= lo) {
                const dst = new Uint8Array(hi - lo + 3).fill(7);
                s.copyTo(lo, hi, dst, 2);
                expect(Buffer.from(dst.subarray(2, 2 + hi - lo)).equals(Buffer.from(m.read(lo, hi)))).toBe(true);
                expect([dst[0], dst[1], dst[dst.length - 1]]).toEqual([7, 7, 7]);
              }
              if (a < m.start && b > a) expect(() => s.copyTo(a, Math.min(b, m.end), new Uint8Array(b - a), 0)).toThrow(/not held/);
              break;
            }
            case 'diff': {
              const a = at(op.a);
              const len = Math.round(op.len * (m.data.length + 100));
              let d: Uint8Array;
              if (op.mode === 'random') d = bytes(len, a);
              else {
                // The stored bytes where [a, a+len) overlaps them, zeros elsewhere.
                d = new Uint8Array(len);
                const stored = m.read(a, a + len);
                const o = Math.max(0, m.start - a);
                if (stored.length > 0) d.set(stored, o);
                // One flipped byte in the overlap (anywhere when there is none).
                const [fo, fn] = stored.length > 0 ? [o, stored.length] : [0, len];
                if (op.mode === 'flip' && fn > 0) d[fo + Math.min(fn - 1, Math.floor(op.flip * fn))]! ^= 0x01;
              }
              const want = m.firstDifference(a, d);
              expect(s.firstDifference(a, d)).toBe(want);
              // A difference found past the ring's seam.
              if (isWrapped && want >= 0 && want - s.start >= s.capacity - (s as unknown as { head: number }).head) wrapped++;
              break;
            }
          }
          expect(s.start).toBe(m.start);
          expect(s.end).toBe(m.end);
          expect(s.size).toBe(m.data.length);
          const cap = s.capacity;
          if (m.data.length === 0) expect(cap).toBe(0);
          else {
            expect(cap).toBeGreaterThanOrEqual(Math.max(256, m.data.length));
            expect(cap & (cap - 1)).toBe(0); // a power of two
          }
          if (cap > lastCap && lastCap > 0) grown++;
          lastCap = cap;
        }
        expect(Buffer.from(s.read(-Infinity, Infinity)).equals(Buffer.from(m.data))).toBe(true);
      }),
      { numRuns: 300 },
    );
    expect(wrapped).toBeGreaterThan(0);
    expect(grown).toBeGreaterThan(0);
  });

  it('handles a wrapped window deterministically: read and firstDifference across the seam', () => {
    const s = new ByteStore(1000);
    const all = bytes(400, 7);
    s.append(all.subarray(0, 200));
    s.dropBelow(1150); // head at 150 of 256
    s.append(all.subarray(200, 400)); // 50 + 200 = 250 bytes: wraps
    expect(s.capacity).toBe(256);
    expect(Buffer.from(s.read(1150, 1400)).equals(Buffer.from(all.subarray(150, 400)))).toBe(true);
    expect(s.firstDifference(1150, all.subarray(150, 400))).toBe(-1);
    for (const i of [0, 105, 106, 107, 200, 249]) {
      const d = all.slice(150, 400);
      d[i]! ^= 0x80;
      expect(s.firstDifference(1150, d)).toBe(1150 + i);
    }
    // Exactly full (256 of 256, wrapped), then one byte more doubles the ring, unwrapping it.
    const more = bytes(6, 9);
    s.append(more);
    expect(s.size).toBe(256);
    expect(s.capacity).toBe(256);
    const want = Buffer.concat([all.subarray(150, 400), more]);
    expect(Buffer.from(s.read(0, 2000)).equals(want)).toBe(true);
    s.append(new Uint8Array([42]));
    expect(s.capacity).toBe(512);
    expect(Buffer.from(s.read(0, 2000)).equals(Buffer.concat([want, Buffer.from([42])]))).toBe(true);
    expect(s.firstDifference(1100, Buffer.concat([Buffer.alloc(50), want, Buffer.from([42])]))).toBe(-1);
  });

  it('an empty store holds no ring', () => {
    const s = new ByteStore(10);
    expect(s.capacity).toBe(0);
    s.append(new Uint8Array(0));
    expect(s.capacity).toBe(0);
    s.append(new Uint8Array(10));
    expect(s.capacity).toBe(256);
    s.dropBelow(20);
    expect(s.capacity).toBe(0);
    s.append(new Uint8Array(300));
    expect(s.capacity).toBe(512);
    s.reset(0);
    expect(s.capacity).toBe(0);
    expect((s as unknown as { ring: unknown }).ring).toBeNull();
  });

  it('copies what it is given: the caller may overwrite its array', () => {
    const s = new ByteStore(0);
    const buf = Buffer.from('hello world');
    s.append(buf);
    buf.fill(0);
    const big = new Uint8Array(100_000).fill(3);
    s.append(big);
    big.fill(9);
    expect(Buffer.from(s.read(0, 11)).toString()).toBe('hello world');
    expect(s.read(11, 100_011).every((x) => x === 3)).toBe(true);
    // read returns a copy too.
    const r = s.read(0, 5);
    r.fill(0);
    expect(Buffer.from(s.read(0, 5)).toString()).toBe('hello');
  });

  it('starts the next ring at the last one\'s size, at half after 8 rings in a row held less than a quarter', () => {
    const s = new ByteStore(0);
    const chunk = new Uint8Array(64 << 10);
    for (let i = 0; i < 16; i++) s.append(chunk); // 1 MiB, grown step by step
    expect(s.capacity).toBe(1 << 20);
    s.dropBelow(s.end); // everything acknowledged: the ring goes back
    expect(s.capacity).toBe(0);
    s.append(chunk);
    expect(s.capacity, 'no regrowth from 256 bytes for a busy connection').toBe(1 << 20);
    // Rings that held 64 KiB of 1 MiB: a bulk flow's bytes in flight come and go, its ring stays.
    for (let i = 1; i < 8; i++) {
      s.dropBelow(s.end);
      s.append(chunk);
      expect(s.capacity, `underused ring ${i}`).toBe(1 << 20);
    }
    // A well-used ring starts the count again.
    for (let i = 0; i < 7; i++) s.append(chunk);
    s.dropBelow(s.end);
    for (let i = 0; i < 7; i++) {
      s.append(new Uint8Array(10));
      s.dropBelow(s.end);
    }
    s.append(new Uint8Array(10));
    expect(s.capacity).toBe(1 << 20);
    s.dropBelow(s.end); // the 8th underused ring in a row
    s.append(new Uint8Array(10));
    expect(s.capacity).toBe(512 << 10);
    for (let i = 0; i < 8; i++) {
      s.reset(s.end);
      s.append(new Uint8Array(10));
    }
    expect(s.capacity).toBe(256 << 10);
    s.shrink();
    s.reset(s.end);
    s.append(new Uint8Array(10));
    expect(s.capacity, 'shrink forgets the size').toBe(256);
  });

  it('reuses a released ring from the free list', () => {
    const chunk = new Uint8Array(64 * 1024).fill(1);
    const a = new ByteStore(0);
    for (let i = 0; i < 16; i++) a.append(chunk);
    expect(a.capacity).toBe(1024 * 1024);
    const before = bytestorePool.reused;
    a.dropBelow(a.end); // drains: the 1 MiB ring goes to the free list
    expect(a.capacity).toBe(0);
    expect(bytestorePoolBytes()).toBeGreaterThanOrEqual(1024 * 1024);
    const ring = (a as unknown as { ring: Uint8Array | null }).ring;
    expect(ring).toBeNull();
    const b = new ByteStore(0);
    for (let i = 0; i < 16; i++) b.append(chunk);
    expect(b.capacity).toBe(1024 * 1024);
    expect(bytestorePool.reused).toBeGreaterThan(before);
    expect(b.read(0, b.end).every((x) => x === 1)).toBe(true);
  });

  it('reuses a small ring: a store emptied at its ACK hands its ring to the next request', () => {
    const a = new ByteStore(0);
    a.append(new Uint8Array(100).fill(7));
    const ringOf = (s: ByteStore) => (s as unknown as { ring: Uint8Array | null }).ring;
    const first = ringOf(a);
    expect(first?.length).toBe(256);
    a.dropBelow(a.end);
    expect(bytestorePoolBytes()).toBe(256);
    const b = new ByteStore(5000);
    b.append(new Uint8Array(200).fill(9));
    expect(ringOf(b)).toBe(first);
    expect(bytestorePool.reused).toBe(1);
    expect(b.read(5000, 5200).every((x) => x === 9)).toBe(true);
    // Its own backing store: a kept ring pins no shared slab.
    expect(first!.buffer.byteLength).toBe(256);
    // Bounded per capacity.
    const many = Array.from({ length: 1100 }, () => {
      const s = new ByteStore(0);
      s.append(new Uint8Array(10));
      return s;
    });
    for (const s of many) s.reset(100);
    expect(bytestorePoolBytes()).toBe(1024 * 256);
    expect(bytestorePoolRings()).toBe(1024);
    expect(bytestorePool.dropped).toBe(1100 - 1024);
  });

  it('small rings have their own byte budget: a full list of them does not crowd out a large ring', () => {
    // 1,024 rings of each small capacity would be 64 MiB: bounded at 8 MiB.
    for (let cap = 256; cap < 64 * 1024; cap *= 2) {
      const stores = Array.from({ length: 1024 }, () => {
        const s = new ByteStore(0);
        s.append(new Uint8Array(cap));
        return s;
      });
      for (const s of stores) s.reset(1e6);
    }
    expect(bytestorePoolBytes()).toBeLessThanOrEqual(8 * 1024 * 1024);
    const big = new ByteStore(0);
    big.append(new Uint8Array(1 << 20));
    const before = bytestorePoolBytes();
    big.reset(1e7);
    expect(bytestorePoolBytes(), 'the 1 MiB ring is kept').toBe(before + (1 << 20));
  });

  it('keeps the free list within its bound when many stores release at once', () => {
    const chunk = new Uint8Array(1024 * 1024);
    const stores: ByteStore[] = [];
    for (let i = 0; i < 40; i++) {
      const s = new ByteStore(0);
      for (let j = 0; j < 2; j++) s.append(chunk); // 2 MiB ring each: 80 MiB in all
      expect(s.capacity).toBe(2 * 1024 * 1024);
      stores.push(s);
    }
    for (const s of stores) s.reset(0);
    expect(bytestorePoolBytes()).toBeLessThanOrEqual(64 * 1024 * 1024);
    expect(bytestorePool.dropped).toBeGreaterThan(0);
    expect(bytestorePool.released).toBeGreaterThan(0);
    // Many small-capacity (64 KiB) rings: bounded per capacity.
    clearBytestorePool();
    const small = Array.from({ length: 200 }, () => {
      const s = new ByteStore(0);
      s.append(new Uint8Array(40_000));
      s.append(new Uint8Array(20_000));
      expect(s.capacity).toBe(64 * 1024);
      return s;
    });
    for (const s of small) s.dropBelow(1e6);
    expect(bytestorePool.released).toBeLessThan(200);
    expect(bytestorePool.dropped).toBe(200 - bytestorePool.released);
    expect(bytestorePoolBytes()).toBe(bytestorePool.released * 64 * 1024);
  });
});
