/**
 * pcap and pcapng capture files: a streaming reader and a classic-pcap writer.
 *
 * This is where recorded frames enter the gateway (`tapgate replay`) and where captures of both
 * sides leave it. Formats, read first:
 *  - classic pcap: draft-ietf-opsawg-pcap (the "libpcap" format, magics a1b2c3d4 / a1b23c4d);
 *  - pcapng: draft-ietf-opsawg-pcapng (SHB, IDB, EPB, SPB, the obsolete PB);
 *  - link types: https://www.tcpdump.org/linktypes.html.
 *
 * Reader design:
 *  - Streaming: bytes come from a file (read in 64 KiB chunks) or any `AsyncIterable<Uint8Array>`
 *    such as a `Readable`; at most one record/block (bounded by `maxBlockBytes`) is buffered.
 *  - Items, not exceptions: the iterator yields `{kind: 'record'}` items and, if the input is bad
 *    (truncated, corrupt, unsupported, unreadable), exactly one final `{kind: 'error'}` item and
 *    then ends. Nothing after a corrupt length can be trusted, so there is no resync. A caller
 *    counts the error and keeps everything yielded before it. The iterator only throws for bugs.
 *  - Time: `tsNs` is a `bigint` of nanoseconds since the Unix epoch. A `number` cannot hold
 *    today's epoch in ns exactly (1.7e18 > 2^53), and replay feeds this time into the engine, so
 *    it must round-trip losslessly (nanosecond pcap → reader → writer → same bytes).
 *  - `data` is a fresh copy owned by the caller (the engine rewrites frames in place).
 */
import { createReadStream, createWriteStream } from 'node:fs';
import { once } from 'node:events';
import { finished } from 'node:stream/promises';
import type { Writable } from 'node:stream';

// ---------------------------------------------------------------------------------------------
// Link types

/**
 * What a record's bytes start with: an Ethernet header, directly an IP header, or a link header
 * replay turns into raw IP (./capture-fixup.ts): Linux cooked v1/v2 (`tcpdump -i any`), BSD
 * loopback (NULL: a host-order address family; LOOP: network order).
 */
export type PcapLink = 'ethernet' | 'raw-ipv4' | 'linux-sll' | 'linux-sll2' | 'null' | 'loop';

export const LINKTYPE_ETHERNET = 1;
/** LINKTYPE_RAW: raw IP (v4 here; the wire parser rejects anything else). */
export const LINKTYPE_RAW = 101;
/** DLT_RAW as it appears literally in some files: 12 (most BSDs), 14 (OpenBSD). */
export const DLT_RAW_12 = 12;
export const DLT_RAW_14 = 14;
/** LINKTYPE_IPV4 / LINKTYPE_IPV6: raw IP of one version (the raw-IP parser tells them apart). */
export const LINKTYPE_IPV4 = 228;
export const LINKTYPE_IPV6 = 229;
export const LINKTYPE_NULL = 0;
export const LINKTYPE_LOOP = 108;
export const LINKTYPE_LINUX_SLL = 113;
export const LINKTYPE_LINUX_SLL2 = 276;

const LINK_NAMES: Readonly<Record<number, string>> = {
  0: 'NULL (BSD loopback)',
  1: 'ETHERNET',
  6: 'IEEE802_5',
  9: 'PPP',
  12: 'DLT_RAW',
  14: 'DLT_RAW (OpenBSD)',
  101: 'RAW',
  105: 'IEEE802_11',
  108: 'LOOP (OpenBSD loopback)',
  113: 'LINUX_SLL (tcpdump -i any)',
  127: 'IEEE802_11_RADIOTAP',
  228: 'IPV4',
  229: 'IPV6',
  276: 'LINUX_SLL2 (tcpdump -i any)',
};

/** The `PcapLink` a link-type number maps to, or undefined if tapgate cannot replay it. */
export function linkFromLinkType(linkType: number): PcapLink | undefined {
  switch (linkType) {
    case LINKTYPE_ETHERNET:
      return 'ethernet';
    case LINKTYPE_RAW:
    case DLT_RAW_12:
    case DLT_RAW_14:
    case LINKTYPE_IPV4:
    case LINKTYPE_IPV6:
      return 'raw-ipv4';
    case LINKTYPE_LINUX_SLL:
      return 'linux-sll';
    case LINKTYPE_LINUX_SLL2:
      return 'linux-sll2';
    case LINKTYPE_NULL:
      return 'null';
    case LINKTYPE_LOOP:
      return 'loop';
    default:
      return undefined;
  }
}

/** The link-type number the writer records for a `PcapLink`. */
export function linkTypeFromLink(link: PcapLink): number {
  switch (link) {
    case 'ethernet':
      return LINKTYPE_ETHERNET;
    case 'raw-ipv4':
      return LINKTYPE_RAW;
    case 'linux-sll':
      return LINKTYPE_LINUX_SLL;
    case 'linux-sll2':
      return LINKTYPE_LINUX_SLL2;
    case 'null':
      return LINKTYPE_NULL;
    case 'loop':
      return LINKTYPE_LOOP;
  }
}

function linkTypeName(linkType: number): string {
  const name = LINK_NAMES[linkType];
  return name === undefined ? `${linkType}` : `${linkType} (${name})`;
}

function unsupportedLinkMessage(linkType: number): string {
  return (
    `unsupported link type ${linkTypeName(linkType)}: tapgate replays ` +
    `1 (ETHERNET), 101/12/14/228/229 (raw IP), 113/276 (LINUX_SLL, SLL2) and 0/108 (NULL, LOOP)`
  );
}

// ---------------------------------------------------------------------------------------------
// Items and errors

export interface PcapRecord {
  readonly kind: 'record';
  /** The captured bytes (at most the snap length; a copy the caller owns). */
  readonly data: Uint8Array;
  /** The frame's length on the wire (>= data.length). */
  readonly origLen: number;
  /** Nanoseconds since the Unix epoch (see the file comment for why bigint). */
  readonly tsNs: bigint;
  readonly link: PcapLink;
  /** pcapng interface id within its section; 0 for classic pcap. */
  readonly interfaceId: number;
  /** pcapng section index (0-based, counts SHBs); 0 for classic pcap. */
  readonly section: number;
  /** Byte offset of the record header / block in the input. */
  readonly offset: number;
}

export type PcapErrorCode =
  /** The input could not be read (missing file, permission, stream error). */
  | 'io'
  /** Fewer bytes than a file header. */
  | 'short-header'
  /** Not a pcap/pcapng magic number. */
  | 'bad-magic'
  /** A version this reader does not know. */
  | 'unsupported-version'
  /** The input ends inside a record header, record or block. */
  | 'truncated'
  /** A pcapng block length that is impossible or disagrees with its trailer. */
  | 'bad-block-length'
  /** Captured length above the snap length or the reader's limit. */
  | 'record-too-large'
  /** A record/block whose fields contradict each other (caplen > origLen, bad options…). */
  | 'bad-record'
  /** A link type other than Ethernet / raw IPv4. */
  | 'unsupported-link-type'
  /** A pcapng packet referencing an interface no IDB declared. */
  | 'unknown-interface';

/** Malformed or unreadable capture input. `offset` is where the bad structure starts. */
export class PcapFormatError extends Error {
  override readonly name = 'PcapFormatError';
  readonly code: PcapErrorCode;
  readonly offset: number;
  constructor(code: PcapErrorCode, offset: number, message: string) {
    super(`${message} (at byte offset ${offset})`);
    this.code = code;
    this.offset = offset;
  }
}

export interface PcapErrorItem {
  readonly kind: 'error';
  readonly error: PcapFormatError;
}

export type PcapItem = PcapRecord | PcapErrorItem;

export type PcapFileFormat = 'pcap' | 'pcapng';

export interface PcapReaderStats {
  /** Detected from the first bytes; undefined until then (or if unrecognised). */
  format: PcapFileFormat | undefined;
  /** 'le' / 'be' of the (last) header; pcapng sections may differ. */
  byteOrder: 'le' | 'be' | undefined;
  /** Timestamp resolution of classic pcap ('micro' / 'nano'); undefined for pcapng. */
  precision: 'micro' | 'nano' | undefined;
  /** Classic pcap: the header's link type; pcapng: the first IDB's. */
  linkType: number | undefined;
  /** Classic pcap header snap length (0 for pcapng). */
  snaplen: number;
  records: number;
  /** Bytes consumed from the input so far. */
  bytes: number;
  /** pcapng blocks skipped because they carry no packets (NRB, ISB, DSB, custom, unknown…). */
  skippedBlocks: number;
  sections: number;
  errors: number;
}

export interface PcapReaderOptions {
  /**
   * Largest captured length accepted for one record: a guard against a corrupt length making
   * the reader buffer gigabytes. Default 262144, libpcap's and Wireshark's maximum snap length.
   */
  maxRecordBytes?: number;
  /** Largest pcapng block accepted (any type). Default 16 MiB. */
  maxBlockBytes?: number;
  /** Read size when reading a file path. Default 64 KiB. */
  chunkBytes?: number;
}

/** A file path, or a byte stream (a `Readable` is an `AsyncIterable<Buffer>`). */
export type PcapSource = string | AsyncIterable<Uint8Array>;

const DEFAULT_MAX_RECORD = 262_144;
const DEFAULT_MAX_BLOCK = 16 * 1024 * 1024;
const DEFAULT_CHUNK = 64 * 1024;

// ---------------------------------------------------------------------------------------------
// Chunked byte source

/** Signal to stop reading: carries the error item to yield last. */
class Stop {
  constructor(readonly error: PcapFormatError) {}
}

/**
 * Bytes from an async chunk iterator, consumed front to back. `fill(n)` makes n bytes
 * available (false at EOF), `take(n)` returns them as one contiguous view and consumes them.
 */
class ByteSource {
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

function dv(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

// ---------------------------------------------------------------------------------------------
// Reader

const PCAP_MAGIC_MICRO = 0xa1b2c3d4;
const PCAP_MAGIC_NANO = 0xa1b23c4d;
const PCAP_MAGIC_MODIFIED = 0xa1b2cd34; // Kuznetzov's patched libpcap: 24-byte record headers
const PCAPNG_SHB = 0x0a0d0d0a;
const PCAPNG_BOM = 0x1a2b3c4d;
const PCAPNG_IDB = 0x00000001;
const PCAPNG_PB = 0x00000002; // obsolete Packet Block
const PCAPNG_SPB = 0x00000003;
const PCAPNG_EPB = 0x00000006;

const PCAP_HEADER_LEN = 24;
const PCAP_RECORD_HEADER_LEN = 16;

const NS_PER_S = 1_000_000_000n;

interface Interface {
  linkType: number;
  link: PcapLink | undefined;
  snaplen: number;
  /** ns = units * mul / div + offsetNs */
  mul: bigint;
  div: bigint;
  offsetNs: bigint;
}

/**
 * A single-use async iterable over the records of a pcap or pcapng input (see the file comment
 * for the item/error contract). `stats` is updated as items are produced.
 */
export class PcapReader implements AsyncIterable<PcapItem> {
  readonly stats: PcapReaderStats = {
    format: undefined,
    byteOrder: undefined,
    precision: undefined,
    linkType: undefined,
    snaplen: 0,
    records: 0,
    bytes: 0,
    skippedBlocks: 0,
    sections: 0,
    errors: 0,
  };
  private readonly source: PcapSource;
  private readonly maxRecord: number;
  private readonly maxBlock: number;
  private readonly chunk: number;
  private used = false;

  constructor(source: PcapSource, opts: PcapReaderOptions = {}) {
    this.source = source;
    this.maxRecord = opts.maxRecordBytes ?? DEFAULT_MAX_RECORD;
    this.maxBlock = opts.maxBlockBytes ?? DEFAULT_MAX_BLOCK;
    this.chunk = opts.chunkBytes ?? DEFAULT_CHUNK;
  }

  [Symbol.asyncIterator](): AsyncGenerator<PcapItem, void, undefined> {
    if (this.used) throw new Error('PcapReader is single-use: create a new one to read again');
    this.used = true;
    return this.run();
  }

  private async *run(): AsyncGenerator<PcapItem, void, undefined> {
    const input =
      typeof this.source === 'string'
        ? createReadStream(this.source, { highWaterMark: this.chunk })
        : this.source;
    const src = new ByteSource(input);
    try {
      const inner = this.parse(src);
      for (;;) {
        let r: IteratorResult<PcapRecord, void>;
        try {
          r = await inner.next();
        } catch (e) {
          if (e instanceof Stop) {
            this.stats.errors++;
            this.stats.bytes = src.offset;
            yield { kind: 'error', error: e.error };
            return;
          }
          throw e;
        }
        this.stats.bytes = src.offset;
        if (r.done === true) return;
        this.stats.records++;
        yield r.value;
      }
    } finally {
      await src.close().catch(() => undefined);
    }
  }

  private async *parse(src: ByteSource): AsyncGenerator<PcapRecord, void, undefined> {
    if (!(await src.fill(4))) {
      const n = src.available;
      throw new Stop(
        new PcapFormatError('short-header', 0, `not a capture file: only ${n} byte(s), need at least 4 for the magic number`),
      );
    }
    const peek = await peekU32(src);
    const le = peek.le;
    const be = peek.be;
    if (le === PCAPNG_SHB) {
      this.stats.format = 'pcapng';
      yield* this.parsePcapng(src);
    } else if (le === PCAP_MAGIC_MICRO || le === PCAP_MAGIC_NANO) {
      yield* this.parsePcap(src, true, le === PCAP_MAGIC_NANO);
    } else if (be === PCAP_MAGIC_MICRO || be === PCAP_MAGIC_NANO) {
      yield* this.parsePcap(src, false, be === PCAP_MAGIC_NANO);
    } else if (le === PCAP_MAGIC_MODIFIED || be === PCAP_MAGIC_MODIFIED) {
      throw new Stop(
        new PcapFormatError('bad-magic', 0, 'modified ("Kuznetzov") pcap (magic a1b2cd34) is not supported; convert with editcap -F pcap'),
      );
    } else {
      throw new Stop(
        new PcapFormatError('bad-magic', 0, `not a pcap/pcapng file: magic 0x${le.toString(16).padStart(8, '0')}`),
      );
    }
  }

  // --- classic pcap -------------------------------------------------------------------------

  private async *parsePcap(src: ByteSource, le: boolean, nano: boolean): AsyncGenerator<PcapRecord, void, undefined> {
    this.stats.format = 'pcap';
    this.stats.byteOrder = le ? 'le' : 'be';
    this.stats.precision = nano ? 'nano' : 'micro';
    if (!(await src.fill(PCAP_HEADER_LEN))) {
      throw new Stop(
        new PcapFormatError('short-header', 0, `pcap file header is ${PCAP_HEADER_LEN} bytes, file has only ${src.available}`),
      );
    }
    const h = dv(src.take(PCAP_HEADER_LEN));
    const major = h.getUint16(4, le);
    const minor = h.getUint16(6, le);
    if (major !== 2) {
      throw new Stop(new PcapFormatError('unsupported-version', 4, `unsupported pcap version ${major}.${minor} (expected 2.x)`));
    }
    const snaplen = h.getUint32(16, le);
    // The upper bits of the link-type field carry FCS information (pcap draft §4); the link
    // type proper is the low 16 bits.
    const linkType = h.getUint32(20, le) & 0xffff;
    this.stats.snaplen = snaplen;
    this.stats.linkType = linkType;
    const link = linkFromLinkType(linkType);
    if (link === undefined) {
      throw new Stop(new PcapFormatError('unsupported-link-type', 20, unsupportedLinkMessage(linkType)));
    }
    const fracMul = nano ? 1n : 1000n;
    const fracLimit = nano ? 1_000_000_000 : 1_000_000;
    // A snap length of 0 (some writers) or above our limit means "no limit but ours".
    const limit = snaplen === 0 ? this.maxRecord : Math.min(snaplen, this.maxRecord);

    for (;;) {
      const at = src.offset;
      if (!(await src.fill(PCAP_RECORD_HEADER_LEN))) {
        if (src.available === 0) return; // clean end between records
        throw new Stop(
          new PcapFormatError('truncated', at, `truncated record header: file ends after ${src.available} of ${PCAP_RECORD_HEADER_LEN} bytes`),
        );
      }
      const r = dv(src.take(PCAP_RECORD_HEADER_LEN));
      const sec = r.getUint32(0, le);
      const frac = r.getUint32(4, le);
      const caplen = r.getUint32(8, le);
      const origLen = r.getUint32(12, le);
      if (caplen > limit) {
        const why = snaplen !== 0 && caplen > snaplen ? `the file's snap length ${snaplen}` : `the reader's limit ${this.maxRecord}`;
        throw new Stop(new PcapFormatError('record-too-large', at, `record captured length ${caplen} exceeds ${why}`));
      }
      if (caplen > origLen) {
        throw new Stop(new PcapFormatError('bad-record', at, `record captured length ${caplen} exceeds its original length ${origLen}`));
      }
      if (frac >= fracLimit) {
        throw new Stop(
          new PcapFormatError('bad-record', at, `record timestamp fraction ${frac} is not below ${fracLimit} (${nano ? 'nano' : 'micro'}second file)`),
        );
      }
      if (!(await src.fill(caplen))) {
        throw new Stop(
          new PcapFormatError('truncated', at, `truncated record: captured length ${caplen} but the file ends after ${src.available} bytes of data`),
        );
      }
      const data = src.take(caplen).slice();
      yield {
        kind: 'record',
        data,
        origLen,
        tsNs: BigInt(sec) * NS_PER_S + BigInt(frac) * fracMul,
        link,
        interfaceId: 0,
        section: 0,
        offset: at,
      };
    }
  }

  // --- pcapng -------------------------------------------------------------------------------

  private async *parsePcapng(src: ByteSource): AsyncGenerator<PcapRecord, void, undefined> {
    let le = true;
    let section = -1;
    let ifaces: Interface[] = [];
    let lastTs = 0n;
    for (;;) {
      const at = src.offset;
      if (!(await src.fill(8))) {
        if (src.available === 0) return;
        throw new Stop(new PcapFormatError('truncated', at, `truncated block header: file ends after ${src.available} of 8 bytes`));
      }
      // Block type is palindromic for the SHB, so it reads the same in either byte order.
      const pre = dv(await peekBytes(src, 8));
      if (pre.getUint32(0, le) === PCAPNG_SHB) {
        // The SHB fixes the byte order of its section: read the byte-order magic first.
        if (!(await src.fill(12))) {
          throw new Stop(new PcapFormatError('truncated', at, 'truncated section header block: file ends before the byte-order magic'));
        }
        const bom = dv(await peekBytes(src, 12));
        if (bom.getUint32(8, true) === PCAPNG_BOM) le = true;
        else if (bom.getUint32(8, false) === PCAPNG_BOM) le = false;
        else {
          throw new Stop(
            new PcapFormatError('bad-magic', at + 8, `pcapng section header has a bad byte-order magic 0x${bom.getUint32(8, false).toString(16)}`),
          );
        }
      } else if (section < 0) {
        throw new Stop(new PcapFormatError('bad-magic', at, 'pcapng file does not start with a section header block'));
      }
      const type = pre.getUint32(0, le);
      const len = pre.getUint32(4, le);
      const minLen = type === PCAPNG_SHB ? 28 : 12;
      if (len < minLen || len % 4 !== 0) {
        throw new Stop(
          new PcapFormatError('bad-block-length', at, `pcapng block type 0x${type.toString(16)} has an impossible length ${len} (must be >= ${minLen} and a multiple of 4)`),
        );
      }
      if (len > this.maxBlock) {
        throw new Stop(
          new PcapFormatError('bad-block-length', at, `pcapng block type 0x${type.toString(16)} length ${len} exceeds the reader's limit ${this.maxBlock}`),
        );
      }
      if (!(await src.fill(len))) {
        throw new Stop(
          new PcapFormatError('truncated', at, `truncated pcapng block type 0x${type.toString(16)}: length ${len} but the file ends after ${src.available} bytes`),
        );
      }
      const block = src.take(len);
      const bv = dv(block);
      const trailer = bv.getUint32(len - 4, le);
      if (trailer !== len) {
        throw new Stop(
          new PcapFormatError('bad-block-length', at, `pcapng block type 0x${type.toString(16)} length lies: header says ${len}, trailer says ${trailer}`),
        );
      }
      const body = block.subarray(8, len - 4);
      const b = dv(body);

      switch (type) {
        case PCAPNG_SHB: {
          const major = b.getUint16(4, le);
          const minor = b.getUint16(6, le);
          if (major !== 1) {
            throw new Stop(new PcapFormatError('unsupported-version', at + 12, `unsupported pcapng version ${major}.${minor} (expected 1.x)`));
          }
          section++;
          ifaces = [];
          this.stats.sections++;
          this.stats.byteOrder = le ? 'le' : 'be';
          break;
        }
        case PCAPNG_IDB: {
          if (body.byteLength < 8) {
            throw new Stop(new PcapFormatError('bad-record', at, `interface description block body is ${body.byteLength} bytes, need 8`));
          }
          const linkType = b.getUint16(0, le);
          const snaplen = b.getUint32(4, le);
          const iface: Interface = {
            linkType,
            link: linkFromLinkType(linkType),
            snaplen,
            mul: 1000n, // default if_tsresol = 6: microseconds
            div: 1n,
            offsetNs: 0n,
          };
          const optErr = parseOptions(body.subarray(8), le, (code, value) => {
            if (code === 9 && value.byteLength >= 1) {
              // if_tsresol: MSB clear → 10^-v seconds, set → 2^-v seconds.
              const v = value[0];
              const e = v & 0x7f;
              if ((v & 0x80) === 0) {
                if (e <= 9) {
                  iface.mul = 10n ** BigInt(9 - e);
                  iface.div = 1n;
                } else {
                  iface.mul = 1n;
                  iface.div = 10n ** BigInt(e - 9);
                }
              } else {
                iface.mul = NS_PER_S;
                iface.div = 1n << BigInt(e);
              }
            } else if (code === 14 && value.byteLength >= 8) {
              // if_tsoffset: seconds added to every timestamp of this interface.
              iface.offsetNs = dv(value).getBigInt64(0, le) * NS_PER_S;
            }
          });
          if (optErr !== undefined) {
            throw new Stop(new PcapFormatError('bad-record', at, `interface description block: ${optErr}`));
          }
          ifaces.push(iface);
          if (this.stats.linkType === undefined) this.stats.linkType = linkType;
          break;
        }
        case PCAPNG_EPB:
        case PCAPNG_PB: {
          if (body.byteLength < 20) {
            throw new Stop(new PcapFormatError('bad-record', at, `packet block body is ${body.byteLength} bytes, need 20`));
          }
          const ifId = type === PCAPNG_EPB ? b.getUint32(0, le) : b.getUint16(0, le);
          const tsUnits = (BigInt(b.getUint32(4, le)) << 32n) | BigInt(b.getUint32(8, le));
          const caplen = b.getUint32(12, le);
          const origLen = b.getUint32(16, le);
          const iface = this.iface(ifaces, ifId, at, section);
          if (caplen > body.byteLength - 20) {
            throw new Stop(
              new PcapFormatError('bad-record', at, `packet block captured length ${caplen} runs past its block (${body.byteLength - 20} bytes of data room)`),
            );
          }
          this.checkCaplen(caplen, iface.snaplen, at);
          if (caplen > origLen) {
            throw new Stop(new PcapFormatError('bad-record', at, `packet block captured length ${caplen} exceeds its original length ${origLen}`));
          }
          const tsNs = (tsUnits * iface.mul) / iface.div + iface.offsetNs;
          lastTs = tsNs;
          yield {
            kind: 'record',
            data: body.slice(20, 20 + caplen),
            origLen,
            tsNs,
            link: iface.link as PcapLink,
            interfaceId: ifId,
            section,
            offset: at,
          };
          break;
        }
        case PCAPNG_SPB: {
          if (body.byteLength < 4) {
            throw new Stop(new PcapFormatError('bad-record', at, `simple packet block body is ${body.byteLength} bytes, need 4`));
          }
          const origLen = b.getUint32(0, le);
          const iface = this.iface(ifaces, 0, at, section);
          // The SPB has no captured length: it is min(original length, snap length) (pcapng §4.4).
          const caplen = iface.snaplen === 0 ? origLen : Math.min(origLen, iface.snaplen);
          if (caplen > body.byteLength - 4) {
            throw new Stop(
              new PcapFormatError('bad-record', at, `simple packet block of ${origLen} bytes runs past its block (${body.byteLength - 4} bytes of data room)`),
            );
          }
          this.checkCaplen(caplen, 0, at);
          yield {
            kind: 'record',
            data: body.slice(4, 4 + caplen),
            origLen,
            // The SPB carries no timestamp; reuse the previous packet's so injected time never
            // goes backwards (0 if it is the first packet).
            tsNs: lastTs,
            link: iface.link as PcapLink,
            interfaceId: 0,
            section,
            offset: at,
          };
          break;
        }
        default:
          // NRB, ISB, DSB, systemd journal, custom and future blocks carry no frames to replay.
          this.stats.skippedBlocks++;
          break;
      }
    }
  }

  private iface(ifaces: Interface[], id: number, at: number, section: number): Interface {
    const iface = ifaces[id];
    if (iface === undefined) {
      throw new Stop(
        new PcapFormatError('unknown-interface', at, `packet block references interface ${id} but section ${section} declares ${ifaces.length} interface(s)`),
      );
    }
    if (iface.link === undefined) {
      throw new Stop(new PcapFormatError('unsupported-link-type', at, `interface ${id}: ${unsupportedLinkMessage(iface.linkType)}`));
    }
    return iface;
  }

  private checkCaplen(caplen: number, snaplen: number, at: number): void {
    if (snaplen !== 0 && caplen > snaplen) {
      throw new Stop(new PcapFormatError('record-too-large', at, `packet captured length ${caplen} exceeds the interface snap length ${snaplen}`));
    }
    if (caplen > this.maxRecord) {
      throw new Stop(new PcapFormatError('record-too-large', at, `packet captured length ${caplen} exceeds the reader's limit ${this.maxRecord}`));
    }
  }
}

/** pcapng options: (code u16, length u16, value padded to 4)*, ended by code 0 or the body. */
function parseOptions(opts: Uint8Array, le: boolean, each: (code: number, value: Uint8Array) => void): string | undefined {
  const v = dv(opts);
  let p = 0;
  while (p + 4 <= opts.byteLength) {
    const code = v.getUint16(p, le);
    const len = v.getUint16(p + 2, le);
    if (code === 0) return undefined; // opt_endofopt
    const end = p + 4 + len;
    if (end > opts.byteLength) return `option ${code} of length ${len} runs past the block`;
    each(code, opts.subarray(p + 4, end));
    p = p + 4 + ((len + 3) & ~3);
  }
  return undefined;
}

/** Peek the first 4 bytes as u32 in both byte orders (without consuming). */
async function peekU32(src: ByteSource): Promise<{ le: number; be: number }> {
  const v = dv(await peekBytes(src, 4));
  return { le: v.getUint32(0, true), be: v.getUint32(0, false) };
}

/** A copy of the next `n` bytes (fewer at EOF), not consumed. Only used on headers. */
async function peekBytes(src: ByteSource, n: number): Promise<Uint8Array> {
  await src.fill(n);
  return src.peek(n);
}

/** A reader over a file path or byte stream. */
export function readPcap(source: PcapSource, opts: PcapReaderOptions = {}): PcapReader {
  return new PcapReader(source, opts);
}

export interface PcapReadAllResult {
  records: PcapRecord[];
  /** Set if the input ended with an error; `records` holds everything before it. */
  error?: PcapFormatError;
  stats: PcapReaderStats;
}

/** Read a whole capture into memory (tests, small files). Never throws for bad input. */
export async function readPcapAll(source: PcapSource, opts: PcapReaderOptions = {}): Promise<PcapReadAllResult> {
  const reader = new PcapReader(source, opts);
  const records: PcapRecord[] = [];
  for await (const item of reader) {
    if (item.kind === 'error') return { records, error: item.error, stats: reader.stats };
    records.push(item);
  }
  return { records, stats: reader.stats };
}

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
    if (!this.out.write(buf)) {
      // Whichever event comes first, the other listeners are removed (no listener leak).
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
      }
    }
    if (this.failure !== undefined) throw this.failure;
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
