/**
 * A contiguous window of bytes addressed by absolute stream position, appended at the front and
 * released from the back: [start, end). Knows nothing about TCP (smoltcp's `storage/` idea).
 * Used for the held-back (undecided) bytes, for the processed-but-unacknowledged bytes that
 * inline normalisation compares retransmissions against, and for the command list's replacement
 * bytes (positions there count replacement bytes, not stream bytes). It copies what it is given: callers'
 * buffers (TAP batches) are reused.
 *
 * Storage is one ring per store (capacity a power of two, at least 256 bytes), doubled when an
 * append does not fit. An empty store holds no ring (idle connections cost nothing here). Rings
 * released by an emptied store go to a bounded module-level free list, keyed by capacity, and the
 * next store needing that capacity reuses one. At multi-Gbit/s a fresh buffer per appended 64 KiB
 * frame meant page faults on newly mapped memory and GC pressure; with small keep-alive requests
 * every request's store took a new ring and emptied at its ACK, and making their backing stores
 * (Node's 8 KiB pool slabs, one per 32 rings of 256 bytes) was 7 % of the gateway's time. Reused,
 * a connection's memory stays mapped and hot. Every ring has its own backing store, so a ring
 * kept for long (an idle connection's held bytes, the free list) pins nothing else.
 */

import { ownBytes } from '../util/bytes.js';

/** Smallest ring. */
const MIN_CAPACITY = 256;
/**
 * Bounds of the free list: rings per capacity (more of the small ones: one per connection with a
 * request in flight), and bytes, small and large rings apart (small ones must not crowd out the
 * large rings a bulk flow reuses).
 */
const POOL_MAX_BYTES = 64 * 1024 * 1024;
const POOL_MAX_SMALL_BYTES = 8 * 1024 * 1024;
const POOL_MAX_PER_CAPACITY = 64;
const POOL_MAX_PER_SMALL_CAPACITY = 1024;
/** Rings in a row used below a quarter before the next one starts at half the size (ByteStore.reset). */
const UNDERUSED_RINGS = 8;
/** Rings below this capacity are small. */
const SMALL_CAPACITY = 64 * 1024;

/** Free rings by capacity. */
const pool = new Map<number, Uint8Array[]>();
/** Bytes in the free list: small rings, large rings. */
let pooledSmall = 0;
let pooledLarge = 0;

/** What the free list did: rings taken from it, put into it, and discarded (list full). */
export const bytestorePool = { reused: 0, released: 0, dropped: 0 };

/** Bytes currently held by the free list. */
export function bytestorePoolBytes(): number {
  return pooledSmall + pooledLarge;
}

/** Rings currently in the free list. */
export function bytestorePoolRings(): number {
  let n = 0;
  for (const free of pool.values()) n += free.length;
  return n;
}

/** Empties the free list and zeroes its counters (tests). */
export function clearBytestorePool(): void {
  pool.clear();
  pooledSmall = pooledLarge = 0;
  bytestorePool.reused = 0;
  bytestorePool.released = 0;
  bytestorePool.dropped = 0;
}

function acquireRing(capacity: number): Uint8Array {
  const free = pool.get(capacity);
  if (free !== undefined && free.length > 0) {
    if (capacity < SMALL_CAPACITY) pooledSmall -= capacity;
    else pooledLarge -= capacity;
    bytestorePool.reused++;
    return free.pop()!;
  }
  return ownBytes(capacity);
}

function releaseRing(ring: Uint8Array): void {
  const capacity = ring.length;
  let free = pool.get(capacity);
  if (free === undefined) pool.set(capacity, (free = []));
  const small = capacity < SMALL_CAPACITY;
  const full = small
    ? free.length >= POOL_MAX_PER_SMALL_CAPACITY || pooledSmall + capacity > POOL_MAX_SMALL_BYTES
    : free.length >= POOL_MAX_PER_CAPACITY || pooledLarge + capacity > POOL_MAX_BYTES;
  if (full) {
    bytestorePool.dropped++;
    return;
  }
  free.push(ring);
  if (small) pooledSmall += capacity;
  else pooledLarge += capacity;
  bytestorePool.released++;
}

/** Below this many bytes, `firstDifference` compares with a loop rather than Buffer.compare. */
const NATIVE_COMPARE_MIN = 64;

/** Index of the first difference of a[ai, ai+n) and b[bi, bi+n), or -1. */
function diffAt(a: Uint8Array, ai: number, b: Uint8Array, bi: number, n: number): number {
  if (n >= NATIVE_COMPARE_MIN) {
    const x = Buffer.from(a.buffer, a.byteOffset + ai, n);
    const y = Buffer.from(b.buffer, b.byteOffset + bi, n);
    if (Buffer.compare(x, y) === 0) return -1;
  }
  for (let i = 0; i < n; i++) if (a[ai + i] !== b[bi + i]) return i;
  return -1;
}

export class ByteStore {
  /** The ring, null exactly when the store is empty. */
  private ring: Uint8Array | null = null;
  /** Index in the ring of the byte at `start`. */
  private head = 0;
  /** Position of the first stored byte. */
  start = 0;
  /** Position just after the last stored byte. */
  end = 0;
  /** Most bytes held by the current ring, and the capacity to start the next ring with. */
  private peak = 0;
  private hint = 0;
  /** Rings in a row that held less than a quarter of their capacity. */
  private underused = 0;

  /** `hint`: the capacity of the first ring (a predecessor's nextCapacity). */
  constructor(start = 0, hint = 0) {
    this.start = start;
    this.end = start;
    this.hint = hint;
  }

  /** The capacity an empty store's next ring starts with (for a successor store). */
  get nextCapacity(): number {
    return this.ring === null ? this.hint : this.ring.length;
  }

  get size(): number {
    return this.end - this.start;
  }

  /** Bytes of the ring (0 when empty). */
  get capacity(): number {
    return this.ring === null ? 0 : this.ring.length;
  }

  /** Empties the store and moves it to `pos`. */
  reset(pos: number): void {
    const ring = this.ring;
    if (ring !== null) {
      // The next ring starts at this one's capacity (a busy connection empties its store at
      // every full ACK: it must not grow again step by step, copying, each time), at half of it
      // after UNDERUSED_RINGS rings in a row held less than a quarter of it (a burst long ago
      // does not keep a big ring). Halved at the first such ring, a bulk flow whose bytes in
      // flight come and go (iperf3, 8 flows) grew its ring back, copying, a fifth of the bytes
      // it stored over again.
      this.underused = this.peak * 4 > ring.length ? 0 : this.underused + 1;
      const halve = this.underused >= UNDERUSED_RINGS;
      if (halve) this.underused = 0;
      this.hint = halve ? ring.length >>> 1 : ring.length;
      this.peak = 0;
      releaseRing(ring);
      this.ring = null;
    }
    this.head = 0;
    this.start = pos;
    this.end = pos;
  }

  /** Appends bytes at `end` (copied). */
  append(data: Uint8Array): void {
    const n = data.length;
    if (n === 0) return;
    const size = this.end - this.start;
    let ring = this.ring;
    if (ring === null || size + n > ring.length) ring = this.grow(size + n);
    if (size + n > this.peak) this.peak = size + n;
    const cap = ring.length;
    let tail = this.head + size;
    if (tail >= cap) tail -= cap;
    const first = cap - tail;
    if (n <= first) ring.set(data, tail);
    else {
      ring.set(data.subarray(0, first), tail);
      ring.set(data.subarray(first), 0);
    }
    this.end += n;
  }

  /** Replaces the ring with one of at least `need` bytes holding the live bytes from index 0. */
  private grow(need: number): Uint8Array {
    let cap = this.ring === null && this.hint > MIN_CAPACITY ? this.hint : MIN_CAPACITY;
    while (cap < need) cap *= 2;
    return this.moveTo(cap);
  }

  /** The live bytes moved to a new ring of `cap` bytes (at index 0); the old ring released. */
  private moveTo(cap: number): Uint8Array {
    const ring = acquireRing(cap);
    const old = this.ring;
    if (old !== null) {
      const size = this.end - this.start;
      const first = Math.min(size, old.length - this.head);
      ring.set(old.subarray(this.head, this.head + first), 0);
      if (first < size) ring.set(old.subarray(0, size - first), first);
      releaseRing(old);
    }
    this.ring = ring;
    this.head = 0;
    return ring;
  }

  /**
   * The live bytes moved to the smallest ring that holds them, and the capacity a next ring
   * would start with forgotten: for a store left holding a few bytes of a ring that a bulk
   * transfer grew (an idle connection must not keep megabytes for them).
   */
  shrink(): void {
    this.hint = 0;
    this.underused = 0;
    const ring = this.ring;
    if (ring === null) return;
    const size = this.end - this.start;
    let cap = MIN_CAPACITY;
    while (cap < size) cap *= 2;
    if (cap < ring.length) this.moveTo(cap);
    this.peak = size;
  }

  /** Drops every byte below `pos`. */
  dropBelow(pos: number): void {
    if (pos <= this.start) return;
    if (pos >= this.end) {
      this.reset(pos);
      return;
    }
    const ring = this.ring!;
    let h = this.head + (pos - this.start);
    if (h >= ring.length) h -= ring.length;
    this.head = h;
    this.start = pos;
  }

  /** Copies bytes [from, to) (clipped to what is stored) into a new array. */
  read(from: number, to: number): Uint8Array {
    const a = Math.max(from, this.start);
    const b = Math.min(to, this.end);
    if (b <= a) return new Uint8Array(0);
    const ring = this.ring!;
    const n = b - a;
    const out = new Uint8Array(n);
    let i = this.head + (a - this.start);
    if (i >= ring.length) i -= ring.length;
    const first = Math.min(n, ring.length - i);
    out.set(ring.subarray(i, i + first), 0);
    if (first < n) out.set(ring.subarray(0, n - first), first);
    return out;
  }

  /** Copies bytes [from, to), which must be stored, into dst at `off` (no allocation). */
  copyTo(from: number, to: number, dst: Uint8Array, off: number): void {
    if (from < this.start || to > this.end || to < from) throw new Error(`bytestore: [${from}, ${to}) not held in [${this.start}, ${this.end})`);
    const n = to - from;
    if (n === 0) return;
    const ring = this.ring!;
    let i = this.head + (from - this.start);
    if (i >= ring.length) i -= ring.length;
    const first = Math.min(n, ring.length - i);
    dst.set(ring.subarray(i, i + first), off);
    if (first < n) dst.set(ring.subarray(0, n - first), off + first);
  }

  /**
   * Compares `data` (at stream position `at`) with the stored bytes where they overlap. Returns
   * -1 when every overlapping byte is equal, else the position of the first differing byte.
   */
  firstDifference(at: number, data: Uint8Array): number {
    const a = Math.max(at, this.start);
    const b = Math.min(at + data.length, this.end);
    if (b <= a) return -1;
    const ring = this.ring!;
    const n = b - a;
    let i = this.head + (a - this.start);
    if (i >= ring.length) i -= ring.length;
    const first = Math.min(n, ring.length - i);
    let d = diffAt(ring, i, data, a - at, first);
    if (d >= 0) return a + d;
    if (first < n) {
      d = diffAt(ring, 0, data, a - at + first, n - first);
      if (d >= 0) return a + first + d;
    }
    return -1;
  }
}
