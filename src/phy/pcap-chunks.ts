/**
 * The pcap reader's input as bytes: chunks from a file or any async iterable, consumed front to
 * back with at most one record/block buffered (./pcap-read.ts).
 */
import { PcapFormatError } from './pcap-format.js';

// ---------------------------------------------------------------------------------------------
// Chunked byte source

/** Signal to stop reading: carries the error item to yield last. */
export class Stop {
  constructor(readonly error: PcapFormatError) {}
}

/**
 * Bytes from an async chunk iterator, consumed front to back. `fill(n)` makes n bytes
 * available (false at EOF), `take(n)` returns them as one contiguous view and consumes them.
 */
export class ByteSource {
  private readonly it: AsyncIterator<Uint8Array>;
  private chunks: Uint8Array[] = [];
  private head = 0; // consumed bytes of chunks[0]
  private avail = 0;
  private eof = false;
  /** Absolute offset of the next unconsumed byte. */
  offset = 0;

  constructor(source: AsyncIterable<Uint8Array>) {
    this.it = source[Symbol.asyncIterator]();
  }

  get available(): number {
    return this.avail;
  }

  /** Ensure `n` bytes are buffered; false if the input ends first (what is there stays). */
  async fill(n: number): Promise<boolean> {
    while (this.avail < n && !this.eof) {
      let r: IteratorResult<Uint8Array>;
      try {
        r = await this.it.next();
      } catch (e) {
        // Whatever the source throws (ENOENT, EISDIR, a stream error) is an input problem.
        this.eof = true;
        const msg = e instanceof Error ? e.message : String(e);
        throw new Stop(new PcapFormatError('io', this.offset + this.avail, `cannot read capture: ${msg}`));
      }
      if (r.done === true) {
        this.eof = true;
        break;
      }
      const c = r.value;
      if (c.byteLength === 0) continue;
      this.chunks.push(c);
      this.avail += c.byteLength;
    }
    return this.avail >= n;
  }

  /** A contiguous view of the next `n` buffered bytes, consumed. Caller checked `fill(n)`. */
  take(n: number): Uint8Array {
    if (n > this.avail) throw new Error(`ByteSource.take(${n}) with ${this.avail} buffered`);
    if (n === 0) return new Uint8Array(0);
    const first = this.chunks[0];
    if (first.byteLength - this.head < n) {
      // Spans chunks: merge just enough of them into one.
      const merged = new Uint8Array(n);
      let got = 0;
      let i = 0;
      let start = this.head;
      while (got < n) {
        const c = this.chunks[i];
        const k = Math.min(c.byteLength - start, n - got);
        merged.set(c.subarray(start, start + k), got);
        got += k;
        if (start + k === c.byteLength) {
          i++;
          start = 0;
        } else {
          start += k;
        }
      }
      // Drop the fully consumed chunks, keep the partially consumed one.
      this.chunks.splice(0, i);
      this.head = start;
      this.avail -= n;
      this.offset += n;
      if (this.chunks.length > 0 && this.head === this.chunks[0].byteLength) {
        this.chunks.shift();
        this.head = 0;
      }
      return merged;
    }
    const view = first.subarray(this.head, this.head + n);
    this.head += n;
    this.avail -= n;
    this.offset += n;
    if (this.head === first.byteLength) {
      this.chunks.shift();
      this.head = 0;
    }
    return view;
  }

  /** A copy of the next min(n, available) bytes, not consumed. */
  peek(n: number): Uint8Array {
    const out = new Uint8Array(Math.min(n, this.avail));
    let got = 0;
    let start = this.head;
    for (const c of this.chunks) {
      if (got >= out.byteLength) break;
      const k = Math.min(c.byteLength - start, out.byteLength - got);
      out.set(c.subarray(start, start + k), got);
      got += k;
      start = 0;
    }
    return out;
  }

  /** Stop the underlying iterator (closes the file). */
  async close(): Promise<void> {
    if (!this.eof && this.it.return !== undefined) {
      this.eof = true;
      await this.it.return();
    }
  }
}

