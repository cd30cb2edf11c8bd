/**
 * The streaming pcap / pcapng reader (see ./pcap.ts for the contract: items, not exceptions;
 * bigint nanosecond time; data owned by the caller).
 */
import { createReadStream } from 'node:fs';
import { ByteSource, Stop } from './pcap-chunks.js';
import {
  DEFAULT_MAX_RECORD,
  dv,
  linkFromLinkType,
  NS_PER_S,
  PCAP_HEADER_LEN,
  PCAP_MAGIC_MICRO,
  PCAP_MAGIC_MODIFIED,
  PCAP_MAGIC_NANO,
  PCAP_RECORD_HEADER_LEN,
  PCAPNG_BOM,
  PCAPNG_EPB,
  PCAPNG_IDB,
  PCAPNG_PB,
  PCAPNG_SHB,
  PCAPNG_SPB,
  PcapFormatError,
  unsupportedLinkMessage,
  type PcapItem,
  type PcapLink,
  type PcapRecord,
} from './pcap-format.js';

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

const DEFAULT_MAX_BLOCK = 16 * 1024 * 1024;
const DEFAULT_CHUNK = 64 * 1024;

// ---------------------------------------------------------------------------------------------
// Reader

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

