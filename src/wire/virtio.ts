/**
 * The virtio-net header that a TAP device opened with IFF_VNET_HDR puts before every frame
 * (virtio spec 1.2 §5.1.6 "struct virtio_net_hdr"; Linux include/uapi/linux/virtio_net.h,
 * drivers/net/tun.c). It carries GSO (one super-frame of up to 64 KiB standing for many
 * segments) and checksum offload state (NEEDS_CSUM: a partial checksum to be completed).
 *
 *   0 flags u8  1 gso_type u8  2 hdr_len u16  4 gso_size u16  6 csum_start u16  8 csum_offset u16
 *
 * The u16 fields are in the TAP's virtio byte order: native endian unless TUNSETVNETLE/BE is
 * used, i.e. little-endian on x86 and arm64, the default here. With TUNSETVNETHDRSZ 12 a
 * `num_buffers` u16 follows (`VIRTIO_NET_HDR_MRG_LEN`); this view reads the first 10 bytes.
 */

import { get16, get16le, set16, set16le } from './bytes.js';
import { finish, sum16 } from './checksum.js';
import { WireError } from './error.js';

export const VIRTIO_NET_HDR_LEN = 10;
export const VIRTIO_NET_HDR_MRG_LEN = 12;

export const VIRTIO_NET_HDR_F_NEEDS_CSUM = 1;
export const VIRTIO_NET_HDR_F_DATA_VALID = 2;

export const VIRTIO_NET_HDR_GSO_NONE = 0;
export const VIRTIO_NET_HDR_GSO_TCPV4 = 1;
export const VIRTIO_NET_HDR_GSO_UDP = 3;
export const VIRTIO_NET_HDR_GSO_TCPV6 = 4;
export const VIRTIO_NET_HDR_GSO_UDP_L4 = 5;
export const VIRTIO_NET_HDR_GSO_ECN = 0x80;

const FLAGS = 0;
const GSO_TYPE = 1;
const HDR_LEN = 2;
const GSO_SIZE = 4;
const CSUM_START = 6;
const CSUM_OFFSET = 8;

/** Zero-copy view of a virtio-net header. */
export class VirtioNetHdr {
  private constructor(
    readonly buf: Uint8Array,
    readonly littleEndian: boolean,
  ) {}

  private get16(o: number): number {
    return this.littleEndian ? get16le(this.buf, o) : get16(this.buf, o);
  }
  private set16(o: number, v: number): void {
    if (this.littleEndian) set16le(this.buf, o, v);
    else set16(this.buf, o, v);
  }

  static parse(buf: Uint8Array, littleEndian = true): VirtioNetHdr | WireError<'virtio'> {
    if (buf.length < VIRTIO_NET_HDR_LEN) {
      return new WireError('virtio', 'virtio-truncated', `header of ${buf.length} bytes < 10`);
    }
    return new VirtioNetHdr(buf, littleEndian);
  }

  get flags(): number {
    return this.buf[FLAGS]!;
  }
  get needsCsum(): boolean {
    return (this.buf[FLAGS]! & VIRTIO_NET_HDR_F_NEEDS_CSUM) !== 0;
  }
  get dataValid(): boolean {
    return (this.buf[FLAGS]! & VIRTIO_NET_HDR_F_DATA_VALID) !== 0;
  }
  /** gso_type including the ECN bit. */
  get gsoType(): number {
    return this.buf[GSO_TYPE]!;
  }
  get hdrLen(): number {
    return this.get16(HDR_LEN);
  }
  get gsoSize(): number {
    return this.get16(GSO_SIZE);
  }
  get csumStart(): number {
    return this.get16(CSUM_START);
  }
  get csumOffset(): number {
    return this.get16(CSUM_OFFSET);
  }

  setFlags(v: number): void {
    this.buf[FLAGS] = v;
  }
  setGsoType(v: number): void {
    this.buf[GSO_TYPE] = v;
  }
  setHdrLen(v: number): void {
    this.set16(HDR_LEN, v);
  }
  setGsoSize(v: number): void {
    this.set16(GSO_SIZE, v);
  }
  setCsumStart(v: number): void {
    this.set16(CSUM_START, v);
  }
  setCsumOffset(v: number): void {
    this.set16(CSUM_OFFSET, v);
  }
}

export interface VirtioNetHdrInit {
  flags?: number;
  gsoType?: number;
  hdrLen?: number;
  gsoSize?: number;
  csumStart?: number;
  csumOffset?: number;
}

export class VirtioNetHdrRepr {
  flags: number;
  gsoType: number;
  hdrLen: number;
  gsoSize: number;
  csumStart: number;
  csumOffset: number;

  /** All zero: no GSO, checksums complete. */
  constructor(i: VirtioNetHdrInit = {}) {
    this.flags = i.flags ?? 0;
    this.gsoType = i.gsoType ?? VIRTIO_NET_HDR_GSO_NONE;
    this.hdrLen = i.hdrLen ?? 0;
    this.gsoSize = i.gsoSize ?? 0;
    this.csumStart = i.csumStart ?? 0;
    this.csumOffset = i.csumOffset ?? 0;
  }

  /**
   * Validates the GSO type and, when `frameLen` (bytes after the header) is given and
   * NEEDS_CSUM is set, that the checksum field lies inside the frame.
   */
  static parse(h: VirtioNetHdr, frameLen?: number): VirtioNetHdrRepr | WireError<'virtio'> {
    const r = new VirtioNetHdrRepr();
    return VirtioNetHdrRepr.readInto(h.buf, frameLen ?? Infinity, r, h.littleEndian) ?? r;
  }

  /**
   * `parse` without the view and without allocating: reads and validates the header at the start
   * of `buf` into `into` (the per-frame path reuses one Repr). `frameLen`: bytes after the header
   * (Infinity skips the checksum-field check). On error `into` is left partly written.
   */
  static readInto(buf: Uint8Array, frameLen: number, into: VirtioNetHdrRepr, littleEndian = true): WireError<'virtio'> | null {
    if (buf.length < VIRTIO_NET_HDR_LEN) {
      return new WireError('virtio', 'virtio-truncated', `header of ${buf.length} bytes < 10`);
    }
    const g = littleEndian ? get16le : get16;
    const flags = buf[FLAGS]!;
    const gsoType = buf[GSO_TYPE]!;
    const base = gsoType & ~VIRTIO_NET_HDR_GSO_ECN;
    if (
      base !== VIRTIO_NET_HDR_GSO_NONE &&
      base !== VIRTIO_NET_HDR_GSO_TCPV4 &&
      base !== VIRTIO_NET_HDR_GSO_UDP &&
      base !== VIRTIO_NET_HDR_GSO_TCPV6 &&
      base !== VIRTIO_NET_HDR_GSO_UDP_L4
    ) {
      return new WireError('virtio', 'virtio-bad-gso-type', `gso_type 0x${gsoType.toString(16)}`);
    }
    const csumStart = g(buf, CSUM_START);
    const csumOffset = g(buf, CSUM_OFFSET);
    if ((flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) !== 0 && csumStart + csumOffset + 2 > frameLen) {
      return new WireError(
        'virtio',
        'virtio-bad-csum-offset',
        `csum_start ${csumStart} + csum_offset ${csumOffset} + 2 > frame of ${frameLen}`,
      );
    }
    into.flags = flags;
    into.gsoType = gsoType;
    into.hdrLen = g(buf, HDR_LEN);
    into.gsoSize = g(buf, GSO_SIZE);
    into.csumStart = csumStart;
    into.csumOffset = csumOffset;
    return null;
  }

  bufferLen(): number {
    return VIRTIO_NET_HDR_LEN;
  }

  emit(into: Uint8Array, littleEndian = true): number {
    if (into.length < VIRTIO_NET_HDR_LEN) throw new RangeError(`VirtioNetHdrRepr.emit: buffer ${into.length} < 10`);
    const put = littleEndian ? set16le : set16;
    into[FLAGS] = this.flags;
    into[GSO_TYPE] = this.gsoType;
    put(into, HDR_LEN, this.hdrLen);
    put(into, GSO_SIZE, this.gsoSize);
    put(into, CSUM_START, this.csumStart);
    put(into, CSUM_OFFSET, this.csumOffset);
    return VIRTIO_NET_HDR_LEN;
  }
}

/**
 * Completes a partial checksum in software, as the device would for NEEDS_CSUM: sums
 * `frame[csumStart..]` (whose checksum field holds the pseudo-header sum) and stores the
 * complement at `csumStart + csumOffset`. Throws if the field is outside the frame (validate
 * with `VirtioNetHdrRepr.parse(h, frame.length)` first).
 */
export function completePartialChecksum(frame: Uint8Array, csumStart: number, csumOffset: number): void {
  const at = csumStart + csumOffset;
  if (at + 2 > frame.length) throw new RangeError(`checksum field at ${at} outside frame of ${frame.length}`);
  const c = finish(sum16(frame, csumStart, frame.length));
  frame[at] = c >>> 8;
  frame[at + 1] = c & 0xff;
}
