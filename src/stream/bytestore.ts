/**
 * A contiguous window of bytes addressed by absolute stream position, appended at the front and
 * released from the back: [start, end). Knows nothing about TCP (smoltcp's `storage/` idea).
 * Used for the held-back (undecided) bytes and for the processed-but-unacknowledged bytes that
 * inline normalisation compares retransmissions against. It copies what it is given: callers'
 * buffers (TAP batches) are reused.
 */
import { copyBytes } from '../util/bytes.js';

/** The chunks of every empty store (shared, never written: `append` replaces it first). */
const NO_CHUNKS = Object.freeze([]) as unknown as Uint8Array[];

export class ByteStore {
  private chunks: Uint8Array[] = NO_CHUNKS;
  /** Position of chunks[0][0]. */
  start = 0;
  /** Position just after the last stored byte. */
  end = 0;

  /** `longLived`: bytes may stay for long (held bytes of an idle connection): see copyBytes. */
  constructor(start = 0, private readonly longLived = false) {
    this.start = start;
    this.end = start;
  }

  get size(): number {
    return this.end - this.start;
  }

  /** Empties the store and moves it to `pos`. */
  reset(pos: number): void {
    this.chunks = NO_CHUNKS;
    this.start = pos;
    this.end = pos;
  }

  /** Appends bytes at `end` (copied). */
  append(data: Uint8Array): void {
    if (data.length === 0) return;
    if (this.chunks === NO_CHUNKS) this.chunks = [];
    this.chunks.push(copyBytes(data, this.longLived));
    this.end += data.length;
  }

  /** Drops every byte below `pos`. */
  dropBelow(pos: number): void {
    if (pos <= this.start) return;
    if (pos >= this.end) {
      this.reset(Math.max(pos, this.end));
      if (pos > this.end) return;
      return;
    }
    let cut = pos - this.start;
    let i = 0;
    while (i < this.chunks.length && cut >= this.chunks[i]!.length) {
      cut -= this.chunks[i]!.length;
      i++;
    }
    if (i > 0) this.chunks.splice(0, i);
    if (cut > 0) this.chunks[0] = this.chunks[0]!.subarray(cut);
    this.start = pos;
  }

  /** Copies bytes [from, to) (clipped to what is stored) into a new array. */
  read(from: number, to: number): Uint8Array {
    const a = Math.max(from, this.start);
    const b = Math.min(to, this.end);
    if (b <= a) return new Uint8Array(0);
    const out = new Uint8Array(b - a);
    let pos = this.start;
    let o = 0;
    for (const c of this.chunks) {
      const cEnd = pos + c.length;
      if (cEnd > a && pos < b) {
        const s = Math.max(a, pos) - pos;
        const e = Math.min(b, cEnd) - pos;
        out.set(c.subarray(s, e), o);
        o += e - s;
      }
      pos = cEnd;
      if (pos >= b) break;
    }
    return out;
  }

  /**
   * Compares `data` (at stream position `at`) with the stored bytes where they overlap. Returns
   * -1 when every overlapping byte is equal, else the position of the first differing byte.
   */
  firstDifference(at: number, data: Uint8Array): number {
    const a = Math.max(at, this.start);
    const b = Math.min(at + data.length, this.end);
    if (b <= a) return -1;
    let pos = this.start;
    for (const c of this.chunks) {
      const cEnd = pos + c.length;
      if (cEnd > a && pos < b) {
        const s = Math.max(a, pos);
        const e = Math.min(b, cEnd);
        for (let p = s; p < e; p++) {
          if (c[p - pos] !== data[p - at]) return p;
        }
      }
      pos = cEnd;
      if (pos >= b) break;
    }
    return -1;
  }
}
