/**
 * The classic-pcap writer: the header and records encoded, and a stream writer that waits for
 * 'drain' so a producer that awaits every write never buffers without bound.
 */
import { createWriteStream } from 'node:fs';
import { once } from 'node:events';
import { finished } from 'node:stream/promises';
import type { Writable } from 'node:stream';
import { DEFAULT_MAX_RECORD, dv, linkTypeFromLink, NS_PER_S, PCAP_HEADER_LEN, PCAP_MAGIC_MICRO, PCAP_MAGIC_NANO, PCAP_RECORD_HEADER_LEN, type PcapLink } from './pcap-format.js';

// ---------------------------------------------------------------------------------------------
// Writer (classic pcap)

export interface PcapWriterOptions {
  /** Link type of every record: a `PcapLink` or a raw link-type number. Default 'ethernet'. */
  link?: PcapLink | number;
  /** Timestamp resolution: 'micro' (magic a1b2c3d4, default) or 'nano' (a1b23c4d). */
  precision?: 'micro' | 'nano';
  /** Snap length written in the header; longer records are truncated to it. Default 262144. */
  snaplen?: number;
  /** Byte order of the file. Default 'le'. */
  byteOrder?: 'le' | 'be';
}

export interface PcapWriteRecord {
  data: Uint8Array;
  /** Nanoseconds since the Unix epoch (>= 0). Truncated to microseconds in a micro file. */
  tsNs: bigint;
  /** Original length; default `data.length`. Never below the written captured length. */
  origLen?: number;
}

/** The 24-byte classic pcap file header. */
export function encodePcapHeader(opts: PcapWriterOptions = {}): Uint8Array {
  const le = (opts.byteOrder ?? 'le') === 'le';
  const out = new Uint8Array(PCAP_HEADER_LEN);
  const v = dv(out);
  v.setUint32(0, opts.precision === 'nano' ? PCAP_MAGIC_NANO : PCAP_MAGIC_MICRO, le);
  v.setUint16(4, 2, le);
  v.setUint16(6, 4, le);
  v.setInt32(8, 0, le); // thiszone: always UTC
  v.setUint32(12, 0, le); // sigfigs
  v.setUint32(16, opts.snaplen ?? DEFAULT_MAX_RECORD, le);
  const link = opts.link ?? 'ethernet';
  v.setUint32(20, typeof link === 'number' ? link : linkTypeFromLink(link), le);
  return out;
}

/** One record (16-byte header + captured bytes) in classic pcap encoding. */
export function encodePcapRecord(rec: PcapWriteRecord, opts: PcapWriterOptions = {}): Uint8Array {
  const le = (opts.byteOrder ?? 'le') === 'le';
  const nano = opts.precision === 'nano';
  const snaplen = opts.snaplen ?? DEFAULT_MAX_RECORD;
  if (rec.tsNs < 0n) throw new RangeError(`pcap timestamp ${rec.tsNs} ns is before the epoch`);
  const sec = rec.tsNs / NS_PER_S;
  if (sec > 0xffff_ffffn) throw new RangeError(`pcap timestamp ${rec.tsNs} ns does not fit 32-bit seconds`);
  const fracNs = rec.tsNs % NS_PER_S;
  const caplen = snaplen === 0 ? rec.data.byteLength : Math.min(rec.data.byteLength, snaplen);
  const origLen = Math.max(rec.origLen ?? rec.data.byteLength, caplen);
  const out = new Uint8Array(PCAP_RECORD_HEADER_LEN + caplen);
  const v = dv(out);
  v.setUint32(0, Number(sec), le);
  v.setUint32(4, Number(nano ? fracNs : fracNs / 1000n), le);
  v.setUint32(8, caplen, le);
  v.setUint32(12, origLen, le);
  out.set(caplen === rec.data.byteLength ? rec.data : rec.data.subarray(0, caplen), PCAP_RECORD_HEADER_LEN);
  return out;
}

/**
 * Streams classic pcap records to a file or `Writable`. `write` resolves once the stream can
 * take more (it waits for 'drain' when the stream's buffer is full), so a producer that awaits
 * every write never buffers without bound. Stream errors reject the pending or next call.
 */
export class PcapWriter {
  private readonly out: Writable;
  private readonly opts: PcapWriterOptions;
  private failure: Error | undefined;
  private closed = false;
  /** The wait for room in the stream that writes finding it full share (waitForRoom). */
  private room: Promise<void> | undefined;
  /** Records written so far. */
  records = 0;
  /** Bytes handed to the stream so far (header included). */
  bytes = 0;

  private constructor(out: Writable, opts: PcapWriterOptions) {
    this.out = out;
    this.opts = opts;
    out.on('error', (e: Error) => {
      this.failure ??= e;
    });
    const h = encodePcapHeader(opts);
    out.write(h);
    this.bytes += h.byteLength;
  }

  /** Create (truncate) `path` and write the file header. Rejects if the file cannot be opened. */
  static async open(path: string, opts: PcapWriterOptions = {}): Promise<PcapWriter> {
    const s = createWriteStream(path, { flags: 'w' });
    await Promise.race([
      once(s, 'ready'),
      once(s, 'error').then(([e]) => {
        throw e;
      }),
    ]);
    return new PcapWriter(s, opts);
  }

  /** Write to an existing stream (ended by `close()`). */
  static fromStream(out: Writable, opts: PcapWriterOptions = {}): PcapWriter {
    return new PcapWriter(out, opts);
  }

  async write(rec: PcapWriteRecord): Promise<void> {
    if (this.closed) throw new Error('PcapWriter.write after close');
    if (this.failure !== undefined) throw this.failure;
    const buf = encodePcapRecord(rec, this.opts);
    this.records++;
    this.bytes += buf.byteLength;
    if (!this.out.write(buf)) await (this.room ??= this.waitForRoom());
    if (this.failure !== undefined) throw this.failure;
  }

  /**
   * One wait for the stream's 'drain' shared by every write that found it full (a producer that
   * does not await each write would otherwise add listeners per write); whichever event comes
   * first, the other listeners are removed.
   */
  private async waitForRoom(): Promise<void> {
    const ac = new AbortController();
    const { signal } = ac;
    try {
      await Promise.race([
        once(this.out, 'drain', { signal }),
        once(this.out, 'error', { signal }).then(([e]) => {
          throw e;
        }),
        once(this.out, 'close', { signal }),
      ]);
    } finally {
      ac.abort();
      this.room = undefined;
    }
  }

  /** Flush and close the underlying stream. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.out.end();
    await finished(this.out);
    if (this.failure !== undefined) throw this.failure;
  }
}
