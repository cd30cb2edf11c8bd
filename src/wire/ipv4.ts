/**
 * IPv4 header (RFC 791; checksum RFC 1071; fragments RFC 791 §2.3, RFC 815).
 *
 *   0 ver/ihl  1 dscp/ecn  2 total length  4 id  6 flags/frag offset  8 ttl  9 proto
 *   10 checksum  12 src  16 dst  20 options (ihl*4 - 20, kept byte-exact)
 *
 * A frame may be longer than the IPv4 total length (Ethernet pads to 60 bytes): that trailer is
 * allowed and reported (`paddingLen`). A total length that claims more than the frame holds, or
 * less than the header, is an error: such a packet lies about where its payload ends.
 */

import { finish, sum16 } from './checksum.js';
import { get16, get32, set16, set32 } from './bytes.js';
import { WireError } from './error.js';

export const IPV4_MIN_HEADER_LEN = 20;
export const IPV4_MAX_OPTIONS_LEN = 40;

export const IP_PROTO_ICMP = 1;
export const IP_PROTO_TCP = 6;
export const IP_PROTO_UDP = 17;

const VER_IHL = 0;
const TOS = 1;
const TOTAL_LEN = 2;
const IDENT = 4;
const FLAGS_FRAG = 6;
const TTL = 8;
const PROTO = 9;
const CHECKSUM = 10;
const SRC = 12;
const DST = 16;

const FLAG_DF = 0x4000;
const FLAG_MF = 0x2000;
const FRAG_MASK = 0x1fff;

/** Dotted quad of a uint32 address. */
export function ipv4ToString(a: number): string {
  return `${a >>> 24}.${(a >>> 16) & 0xff}.${(a >>> 8) & 0xff}.${a & 0xff}`;
}

/**
 * Parses a strict dotted quad ("10.0.0.1") into a uint32; null on anything else (no leading
 * zeros, which some parsers read as octal; no shorthand forms).
 */
export function parseIpv4(s: string): number | null {
  const parts = s.split('.');
  if (parts.length !== 4) return null;
  let a = 0;
  for (const p of parts) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p)) return null;
    const v = Number(p);
    if (v > 255) return null;
    a = a * 256 + v;
  }
  return a;
}

/** Loose and strict source route options (RFC 791 §3.1: types 131 and 137). */
export const IPV4_OPT_LSRR = 0x83;
export const IPV4_OPT_SSRR = 0x89;

/**
 * Where a source-routed IPv4 packet may go when its route is not yet done: a Loose or Strict
 * Source Route option (RFC 791 §3.1) whose pointer is not past its length. The header's
 * destination is then only the next hop, and a host that honours the option (Linux with
 * `accept_source_route`) sends the packet on. The addresses, deduplicated: every one from the
 * pointer on as Linux reads them (net/ipv4/ip_options.c `ip_options_rcv_srr`: at pointer - 1, then
 * every 4 bytes, while a whole address fits — it checks only that the pointer is at least 4, not
 * that it is aligned), the option's last four bytes (where every route Linux completes ends) and
 * the last whole address at the aligned offsets; the header's destination when the option holds
 * none. null: no route in flight (no such option, or its route done). `buf` holds the packet at
 * `off` and passed `Ipv4Packet.check` (its option list is well formed). Allocates only for a
 * packet that has such an option.
 */
export function sourceRoute(buf: Uint8Array, off = 0): number[] | null {
  const hl = (buf[off + VER_IHL]! & 0x0f) * 4;
  let i = IPV4_MIN_HEADER_LEN;
  while (i < hl) {
    const k = buf[off + i]!;
    if (k === 0) break;
    if (k === 1) {
      i++;
      continue;
    }
    const l = buf[off + i + 1]!;
    const ptr = buf[off + i + 2]!;
    if ((k === IPV4_OPT_LSRR || k === IPV4_OPT_SSRR) && l >= 3 && ptr <= l) {
      const o = off + i;
      const out: number[] = [];
      const add = (at: number): void => {
        const a = get32(buf, o + at);
        if (!out.includes(a)) out.push(a);
      };
      for (let at = Math.max(ptr, 1) - 1; at + 4 <= l; at += 4) add(at);
      if (l >= 7) add(l - 4);
      const aligned = 3 + Math.floor((l - 3) / 4) * 4 - 4;
      if (aligned >= 3) add(aligned);
      if (out.length === 0) out.push(get32(buf, off + DST));
      return out;
    }
    i += l;
  }
  return null;
}

/** Zero-copy view of an IPv4 packet; after `parse` the header and total length are consistent. */
export class Ipv4Packet {
  private constructor(readonly buf: Uint8Array) {}

  static parse(buf: Uint8Array): Ipv4Packet | WireError<'ipv4'> {
    const err = Ipv4Packet.check(buf);
    return err ?? new Ipv4Packet(buf);
  }

  /** The checks of `parse`, without building the view. */
  static check(buf: Uint8Array): WireError<'ipv4'> | null {
    const n = buf.length;
    if (n < IPV4_MIN_HEADER_LEN) {
      return new WireError('ipv4', 'ipv4-truncated', `packet of ${n} bytes < 20`);
    }
    const vi = buf[VER_IHL]!;
    if (vi >>> 4 !== 4) return new WireError('ipv4', 'ipv4-bad-version', `version ${vi >>> 4}`);
    const hl = (vi & 0x0f) * 4;
    if (hl < IPV4_MIN_HEADER_LEN) return new WireError('ipv4', 'ipv4-bad-ihl', `IHL ${vi & 0x0f} < 5`);
    if (hl > n) {
      return new WireError('ipv4', 'ipv4-header-exceeds-frame', `header of ${hl} bytes, packet has ${n}`);
    }
    const tl = (buf[TOTAL_LEN]! << 8) | buf[TOTAL_LEN + 1]!;
    if (tl < hl) {
      return new WireError('ipv4', 'ipv4-total-length-below-header', `total length ${tl} < header ${hl}`);
    }
    if (tl > n) {
      return new WireError('ipv4', 'ipv4-total-length-exceeds-frame', `total length ${tl} > ${n} bytes`);
    }
    // The option list must be well formed (RFC 791 §3.1; Linux ip_options_compile refuses the
    // same): EOL ends it, NOP is one byte, every other option has a length byte >= 2 that
    // stays inside the header. Options are carried byte-exact, never interpreted here.
    let i = IPV4_MIN_HEADER_LEN;
    while (i < hl) {
      const k = buf[i]!;
      if (k === 0) break;
      if (k === 1) {
        i++;
        continue;
      }
      if (i + 1 >= hl) return new WireError('ipv4', 'ipv4-option-overflow', `option ${k} at ${i} has no length byte`);
      const l = buf[i + 1]!;
      if (l < 2) return new WireError('ipv4', 'ipv4-option-bad-length', `option ${k} at ${i} has length ${l}`);
      if (i + l > hl) {
        return new WireError('ipv4', 'ipv4-option-overflow', `option ${k} at ${i} of length ${l} runs past header ${hl}`);
      }
      i += l;
    }
    return null;
  }

  /** View over a buffer already known to pass `check` (hot paths that checked it themselves). */
  static unchecked(buf: Uint8Array): Ipv4Packet {
    return new Ipv4Packet(buf);
  }

  get version(): number {
    return this.buf[VER_IHL]! >>> 4;
  }
  get headerLen(): number {
    return (this.buf[VER_IHL]! & 0x0f) * 4;
  }
  get dscp(): number {
    return this.buf[TOS]! >>> 2;
  }
  get ecn(): number {
    return this.buf[TOS]! & 3;
  }
  get totalLen(): number {
    return get16(this.buf, TOTAL_LEN);
  }
  get ident(): number {
    return get16(this.buf, IDENT);
  }
  get dontFrag(): boolean {
    return (get16(this.buf, FLAGS_FRAG) & FLAG_DF) !== 0;
  }
  get moreFrags(): boolean {
    return (get16(this.buf, FLAGS_FRAG) & FLAG_MF) !== 0;
  }
  /** The reserved ("evil", RFC 3514) flag bit. */
  get reservedFlag(): boolean {
    return (get16(this.buf, FLAGS_FRAG) & 0x8000) !== 0;
  }
  /** Fragment offset in bytes (the field counts 8-byte units). */
  get fragOffset(): number {
    return (get16(this.buf, FLAGS_FRAG) & FRAG_MASK) * 8;
  }
  /** A fragment (first, middle or last): its payload is not a whole transport segment. */
  get isFragment(): boolean {
    return (get16(this.buf, FLAGS_FRAG) & (FLAG_MF | FRAG_MASK)) !== 0;
  }
  get ttl(): number {
    return this.buf[TTL]!;
  }
  get protocol(): number {
    return this.buf[PROTO]!;
  }
  get checksum(): number {
    return get16(this.buf, CHECKSUM);
  }
  get src(): number {
    return get32(this.buf, SRC);
  }
  get dst(): number {
    return get32(this.buf, DST);
  }
  /** Option bytes, raw (zero copy). */
  get options(): Uint8Array {
    return this.buf.subarray(IPV4_MIN_HEADER_LEN, this.headerLen);
  }
  /** The payload, up to the total length (zero copy). */
  get payload(): Uint8Array {
    return this.buf.subarray(this.headerLen, this.totalLen);
  }
  get payloadLen(): number {
    return this.totalLen - this.headerLen;
  }
  /** Bytes of the buffer past the total length (Ethernet padding). */
  get paddingLen(): number {
    return this.buf.length - this.totalLen;
  }

  /** The header checksum is correct (the header sums to 0xffff). */
  verifyChecksum(): boolean {
    return finish(sum16(this.buf, 0, this.headerLen)) === 0;
  }
  /** Computes and stores the header checksum. */
  fillChecksum(): void {
    set16(this.buf, CHECKSUM, 0);
    set16(this.buf, CHECKSUM, finish(sum16(this.buf, 0, this.headerLen)));
  }

  // In-place setters: none touches the checksum; see checksum.ts csumReplace16/32 for the
  // incremental update (RFC 1624) or call fillChecksum().
  setTotalLen(v: number): void {
    set16(this.buf, TOTAL_LEN, v);
  }
  setIdent(v: number): void {
    set16(this.buf, IDENT, v);
  }
  setTtl(v: number): void {
    this.buf[TTL] = v;
  }
  setChecksum(v: number): void {
    set16(this.buf, CHECKSUM, v);
  }
  setSrc(a: number): void {
    set32(this.buf, SRC, a >>> 0);
  }
  setDst(a: number): void {
    set32(this.buf, DST, a >>> 0);
  }
  setDontFrag(df: boolean): void {
    const w = get16(this.buf, FLAGS_FRAG);
    set16(this.buf, FLAGS_FRAG, df ? w | FLAG_DF : w & ~FLAG_DF);
  }
}

export interface Ipv4ReprInit {
  src: number;
  dst: number;
  protocol: number;
  payloadLen: number;
  ttl?: number;
  ident?: number;
  dscp?: number;
  ecn?: number;
  dontFrag?: boolean;
  moreFrags?: boolean;
  reservedFlag?: boolean;
  /** Fragment offset in bytes, a multiple of 8. */
  fragOffset?: number;
  /** Raw option bytes, a multiple of 4, at most 40. */
  options?: Uint8Array;
}

/** The IPv4 header as a small value. `options` aliases the parsed buffer (zero copy). */
export class Ipv4Repr {
  src: number;
  dst: number;
  protocol: number;
  payloadLen: number;
  ttl: number;
  ident: number;
  dscp: number;
  ecn: number;
  dontFrag: boolean;
  moreFrags: boolean;
  reservedFlag: boolean;
  fragOffset: number;
  options: Uint8Array;

  constructor(i: Ipv4ReprInit) {
    this.src = i.src >>> 0;
    this.dst = i.dst >>> 0;
    this.protocol = i.protocol;
    this.payloadLen = i.payloadLen;
    this.ttl = i.ttl ?? 64;
    this.ident = i.ident ?? 0;
    this.dscp = i.dscp ?? 0;
    this.ecn = i.ecn ?? 0;
    this.dontFrag = i.dontFrag ?? true;
    this.moreFrags = i.moreFrags ?? false;
    this.reservedFlag = i.reservedFlag ?? false;
    this.fragOffset = i.fragOffset ?? 0;
    this.options = i.options ?? new Uint8Array(0);
  }

  static parse(p: Ipv4Packet, verifyChecksum = true): Ipv4Repr | WireError<'ipv4'> {
    if (verifyChecksum && !p.verifyChecksum()) {
      return new WireError('ipv4', 'ipv4-bad-checksum', `checksum 0x${p.checksum.toString(16)}`);
    }
    return new Ipv4Repr({
      src: p.src,
      dst: p.dst,
      protocol: p.protocol,
      payloadLen: p.payloadLen,
      ttl: p.ttl,
      ident: p.ident,
      dscp: p.dscp,
      ecn: p.ecn,
      dontFrag: p.dontFrag,
      moreFrags: p.moreFrags,
      reservedFlag: p.reservedFlag,
      fragOffset: p.fragOffset,
      options: p.options,
    });
  }

  headerLen(): number {
    return IPV4_MIN_HEADER_LEN + this.options.length;
  }
  /** Header length only: the payload is the caller's to write after it. */
  bufferLen(): number {
    return this.headerLen();
  }

  /** Writes the header (with a correct checksum) at the start of `into`; returns its length. */
  emit(into: Uint8Array): number {
    const ol = this.options.length;
    if (ol % 4 !== 0 || ol > IPV4_MAX_OPTIONS_LEN) {
      throw new RangeError(`Ipv4Repr.emit: options of ${ol} bytes (must be a multiple of 4, <= 40)`);
    }
    if (this.fragOffset % 8 !== 0 || this.fragOffset > FRAG_MASK * 8) {
      throw new RangeError(`Ipv4Repr.emit: fragment offset ${this.fragOffset}`);
    }
    const hl = IPV4_MIN_HEADER_LEN + ol;
    const tl = hl + this.payloadLen;
    if (tl > 0xffff) throw new RangeError(`Ipv4Repr.emit: total length ${tl} > 65535`);
    if (into.length < hl) throw new RangeError(`Ipv4Repr.emit: buffer ${into.length} < ${hl}`);
    into[VER_IHL] = 0x40 | (hl >>> 2);
    into[TOS] = ((this.dscp & 0x3f) << 2) | (this.ecn & 3);
    set16(into, TOTAL_LEN, tl);
    set16(into, IDENT, this.ident);
    set16(into, 
      FLAGS_FRAG,
      (this.reservedFlag ? 0x8000 : 0) |
        (this.dontFrag ? FLAG_DF : 0) |
        (this.moreFrags ? FLAG_MF : 0) |
        (this.fragOffset / 8),
    );
    into[TTL] = this.ttl;
    into[PROTO] = this.protocol;
    set16(into, CHECKSUM, 0);
    set32(into, SRC, this.src);
    set32(into, DST, this.dst);
    into.set(this.options, IPV4_MIN_HEADER_LEN);
    set16(into, CHECKSUM, finish(sum16(into, 0, hl)));
    return hl;
  }
}
