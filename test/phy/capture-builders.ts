/**
 * Hand-made capture files for the pcap reader tests: pcapng blocks in either byte order (the
 * writer under test only writes classic pcap), raw classic pcap headers with arbitrary fields,
 * and a tiny Ethernet/IPv4/TCP peek for checking which connections a capture holds.
 */

export type Order = 'le' | 'be';

function u32(v: number, o: Order): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, v >>> 0, o === 'le');
  return b;
}

function u16(v: number, o: Order): Uint8Array {
  const b = new Uint8Array(2);
  new DataView(b.buffer).setUint16(0, v, o === 'le');
  return b;
}

export function concat(parts: Uint8Array[]): Uint8Array {
  const n = parts.reduce((a, p) => a + p.byteLength, 0);
  const out = new Uint8Array(n);
  let p = 0;
  for (const x of parts) {
    out.set(x, p);
    p += x.byteLength;
  }
  return out;
}

function pad4(b: Uint8Array): Uint8Array {
  const n = (b.byteLength + 3) & ~3;
  if (n === b.byteLength) return b;
  const out = new Uint8Array(n);
  out.set(b);
  return out;
}

/** A pcapng option (code, value), padded. */
export function option(code: number, value: Uint8Array, o: Order): Uint8Array {
  return concat([u16(code, o), u16(value.byteLength, o), pad4(value)]);
}

export function endOfOptions(o: Order): Uint8Array {
  return concat([u16(0, o), u16(0, o)]);
}

/** A generic pcapng block: type, total length, body (padded), total length. */
export function block(type: number, body: Uint8Array, o: Order): Uint8Array {
  const b = pad4(body);
  const len = 12 + b.byteLength;
  return concat([u32(type, o), u32(len, o), b, u32(len, o)]);
}

export function shb(o: Order): Uint8Array {
  const body = concat([
    u32(0x1a2b3c4d, o),
    u16(1, o),
    u16(0, o),
    u32(0xffffffff, o), // section length -1 (unknown), 64-bit
    u32(0xffffffff, o),
  ]);
  return block(0x0a0d0d0a, body, o);
}

export interface IdbOptions {
  linkType: number;
  snaplen?: number;
  /** if_tsresol byte (e.g. 6, 9, 0x80 | 20). Omitted → default 10^-6. */
  tsresol?: number;
  /** if_tsoffset in seconds. */
  tsoffset?: bigint;
}

export function idb(opts: IdbOptions, o: Order): Uint8Array {
  const parts = [u16(opts.linkType, o), u16(0, o), u32(opts.snaplen ?? 0, o)];
  const opt: Uint8Array[] = [];
  if (opts.tsresol !== undefined) opt.push(option(9, Uint8Array.of(opts.tsresol), o));
  if (opts.tsoffset !== undefined) {
    const v = new Uint8Array(8);
    new DataView(v.buffer).setBigInt64(0, opts.tsoffset, o === 'le');
    opt.push(option(14, v, o));
  }
  if (opt.length > 0) parts.push(...opt, endOfOptions(o));
  return block(1, concat(parts), o);
}

/** Enhanced Packet Block; `ts` is in the interface's units. */
export function epb(ifId: number, ts: bigint, data: Uint8Array, o: Order, origLen = data.byteLength): Uint8Array {
  const body = concat([
    u32(ifId, o),
    u32(Number(ts >> 32n), o),
    u32(Number(ts & 0xffffffffn), o),
    u32(data.byteLength, o),
    u32(origLen, o),
    pad4(data),
    // An opt_comment, to check options after the data are skipped.
    option(1, new TextEncoder().encode('hand-made'), o),
    endOfOptions(o),
  ]);
  return block(6, body, o);
}

export function spb(data: Uint8Array, o: Order, origLen = data.byteLength): Uint8Array {
  return block(3, concat([u32(origLen, o), pad4(data)]), o);
}

/** A classic pcap file header with arbitrary fields. */
export function pcapHeader(o: Order, magic: number, snaplen: number, linkType: number): Uint8Array {
  return concat([u32(magic, o), u16(2, o), u16(4, o), u32(0, o), u32(0, o), u32(snaplen, o), u32(linkType, o)]);
}

export function pcapRecordHeader(o: Order, sec: number, frac: number, caplen: number, origLen: number): Uint8Array {
  return concat([u32(sec, o), u32(frac, o), u32(caplen, o), u32(origLen, o)]);
}

/** "src:port>dst:port" of an Ethernet/IPv4/TCP frame, or undefined. */
export function tcpTuple(frame: Uint8Array, link: 'ethernet' | 'raw-ipv4'): string | undefined {
  const ip = link === 'ethernet' ? 14 : 0;
  if (link === 'ethernet' && (frame[12] !== 0x08 || frame[13] !== 0x00)) return undefined;
  if (frame.byteLength < ip + 20 || frame[ip] >> 4 !== 4 || frame[ip + 9] !== 6) return undefined;
  const ihl = (frame[ip] & 0x0f) * 4;
  const t = ip + ihl;
  const port = (i: number): number => (frame[i] << 8) | frame[i + 1];
  const addr = (i: number): string => Array.from(frame.subarray(i, i + 4)).join('.');
  return `${addr(ip + 12)}:${port(t)}>${addr(ip + 16)}:${port(t + 2)}`;
}

/** TCP flags byte of an Ethernet/IPv4/TCP frame. */
export function tcpFlags(frame: Uint8Array): number {
  const ihl = (frame[14] & 0x0f) * 4;
  return frame[14 + ihl + 13];
}
