/**
 * TCP segment header and options (RFC 9293 §3.1; MSS RFC 9293 §3.7.1; window scale and
 * timestamps RFC 7323; SACK RFC 2018; checksum RFC 1071 with the IPv4 pseudo-header, incremental
 * update RFC 1624).
 *
 *   0 src port  2 dst port  4 seq  8 ack  12 doff(4) rsvd(3) NS(1)  13 CWR ECE URG ACK PSH RST SYN FIN
 *   14 window  16 checksum  18 urgent pointer  20 options (doff*4 - 20)  doff*4 payload
 *
 * The view spans exactly one segment (the IPv4 payload: its length is the TCP length of the
 * pseudo-header). `parse` validates the data offset and the option list's structure, so the
 * option walkers below never fail. Like Linux `tcp_parse_options`, a known option kind with a
 * length that does not fit its kind (MSS of 3 bytes...) is not an error: it is carried as an
 * `unknown` option, byte-exact, and the structured getters ignore it.
 */

import { csumReplace16, csumReplace32, csumReplaceBytes, finish, fold16, ipv4PseudoHeaderSum, sum16, sumReplace16, sumReplace32 } from './checksum.js';
import { get16, get32, set16, set32 } from './bytes.js';
import { WireError } from './error.js';
import { IP_PROTO_TCP } from './ipv4.js';
import type { Seq } from './seq.js';

export const TCP_HEADER_LEN = 20;
export const TCP_MAX_HEADER_LEN = 60;
export const TCP_MAX_OPTIONS_LEN = 40;
/** Offset of the checksum field in the TCP header (virtio csum_offset). */
export const TCP_CHECKSUM_OFFSET = 16;

/** Flag bits as returned by `TcpSegment.flags` (NS is bit 8, from byte 12). */
export const TCP_FIN = 0x01;
export const TCP_SYN = 0x02;
export const TCP_RST = 0x04;
export const TCP_PSH = 0x08;
export const TCP_ACK = 0x10;
export const TCP_URG = 0x20;

export const TcpFlag = {
  FIN: TCP_FIN,
  SYN: TCP_SYN,
  RST: TCP_RST,
  PSH: TCP_PSH,
  ACK: TCP_ACK,
  URG: TCP_URG,
  ECE: 0x040,
  CWR: 0x080,
  NS: 0x100,
} as const;

/** Option kinds (IANA "TCP Option Kind Numbers"). */
export const TcpOptionKind = {
  EOL: 0,
  NOP: 1,
  MSS: 2,
  WSCALE: 3,
  SACK_PERMITTED: 4,
  SACK: 5,
  TIMESTAMPS: 8,
} as const;

/** TCP-MD5 signature (RFC 2385) and TCP-AO (RFC 5925) option kinds. */
const TCP_OPTION_MD5 = 19;
const TCP_OPTION_AO = 29;
/** Multipath TCP (RFC 8684) option kind. */
export const TCP_OPTION_MPTCP = 30;
/** `TcpSegment.guardedOptions` bits: TCP-MD5 or TCP-AO, Multipath TCP. */
export const OPT_SIGNED = 1;
export const OPT_MPTCP = 2;

const SRC_PORT = 0;
const DST_PORT = 2;
const SEQ = 4;
const ACK = 8;
const DOFF_FLAGS = 12;
const FLAGS = 13;
const WINDOW = 14;
const CHECKSUM = 16;
const URGENT = 18;

/** "SYN|ACK"-style rendering of a flag set, for logs. */
export function tcpFlagsToString(flags: number): string {
  let s = '';
  for (const [name, bit] of FLAG_NAMES) if (flags & bit) s += (s ? '|' : '') + name;
  return s || '-';
}
const FLAG_NAMES: ReadonlyArray<readonly [string, number]> = Object.entries(TcpFlag);

/** A SACK block [left, right) in sequence space. */
export interface SackBlock {
  readonly left: Seq;
  readonly right: Seq;
}

export type TcpOption =
  /** End of option list; `padding` is the rest of the header after it, raw. */
  | { readonly kind: 'eol'; readonly padding: Uint8Array }
  | { readonly kind: 'nop' }
  | { readonly kind: 'mss'; readonly mss: number }
  | { readonly kind: 'wscale'; readonly shift: number }
  | { readonly kind: 'sack-permitted' }
  | { readonly kind: 'sack'; readonly blocks: readonly SackBlock[] }
  | { readonly kind: 'timestamps'; readonly tsval: number; readonly tsecr: number }
  /** Any other kind, or a known kind with an unfitting length: `code`, then `data` after the length byte. */
  | { readonly kind: 'unknown'; readonly code: number; readonly data: Uint8Array };

/** Whether a known option kind has a length that fits it (unknown kinds: any length >= 2). */
function lengthFits(code: number, len: number): boolean {
  switch (code) {
    case TcpOptionKind.MSS:
      return len === 4;
    case TcpOptionKind.WSCALE:
      return len === 3;
    case TcpOptionKind.SACK_PERMITTED:
      return len === 2;
    case TcpOptionKind.SACK:
      return len >= 10 && (len - 2) % 8 === 0;
    case TcpOptionKind.TIMESTAMPS:
      return len === 10;
    default:
      return true;
  }
}

/** Zero-copy view of one TCP segment. */
export class TcpSegment {
  /** Offset of the SACK option, -1 if none, -2 if not looked up yet (layout never changes). */
  private sackOff = -2;

  private constructor(readonly buf: Uint8Array) {}

  static parse(buf: Uint8Array): TcpSegment | WireError<'tcp'> {
    return TcpSegment.check(buf) ?? new TcpSegment(buf);
  }

  /** The checks of `parse`: header length, data offset, option structure. */
  static check(buf: Uint8Array): WireError<'tcp'> | null {
    const n = buf.length;
    if (n < TCP_HEADER_LEN) return new WireError('tcp', 'tcp-truncated', `segment of ${n} bytes < 20`);
    const doff = buf[DOFF_FLAGS]! >>> 4;
    if (doff < 5) return new WireError('tcp', 'tcp-bad-data-offset', `data offset ${doff} < 5`);
    const hl = doff * 4;
    if (hl > n) {
      return new WireError('tcp', 'tcp-data-offset-exceeds-segment', `header of ${hl} bytes, segment has ${n}`);
    }
    let i = TCP_HEADER_LEN;
    while (i < hl) {
      const k = buf[i]!;
      if (k === TcpOptionKind.EOL) break;
      if (k === TcpOptionKind.NOP) {
        i++;
        continue;
      }
      if (i + 1 >= hl) {
        return new WireError('tcp', 'tcp-option-overflow', `option ${k} at ${i} has no length byte`);
      }
      const l = buf[i + 1]!;
      if (l < 2) return new WireError('tcp', 'tcp-option-bad-length', `option ${k} at ${i} has length ${l}`);
      if (i + l > hl) {
        return new WireError('tcp', 'tcp-option-overflow', `option ${k} at ${i} of length ${l} runs past header ${hl}`);
      }
      i += l;
    }
    return null;
  }

  /** View over a buffer already known to pass `check`. */
  static unchecked(buf: Uint8Array): TcpSegment {
    return new TcpSegment(buf);
  }

  get srcPort(): number {
    return get16(this.buf, SRC_PORT);
  }
  get dstPort(): number {
    return get16(this.buf, DST_PORT);
  }
  get seq(): Seq {
    return get32(this.buf, SEQ);
  }
  get ack(): Seq {
    return get32(this.buf, ACK);
  }
  /** Data offset in 32-bit words. */
  get dataOffset(): number {
    return this.buf[DOFF_FLAGS]! >>> 4;
  }
  get headerLen(): number {
    return (this.buf[DOFF_FLAGS]! >>> 4) * 4;
  }
  /** The three reserved bits of byte 12 (kept byte-exact). */
  get reserved(): number {
    return (this.buf[DOFF_FLAGS]! >>> 1) & 7;
  }
  /** The nine flag bits, `TcpFlag.*`. */
  get flags(): number {
    return ((this.buf[DOFF_FLAGS]! & 1) << 8) | this.buf[FLAGS]!;
  }
  get window(): number {
    return get16(this.buf, WINDOW);
  }
  get checksum(): number {
    return get16(this.buf, CHECKSUM);
  }
  get urgent(): number {
    return get16(this.buf, URGENT);
  }
  /** Raw option bytes (zero copy). */
  get optionBytes(): Uint8Array {
    return this.buf.subarray(TCP_HEADER_LEN, this.headerLen);
  }
  get payload(): Uint8Array {
    return this.buf.subarray(this.headerLen);
  }
  get payloadLen(): number {
    return this.buf.length - this.headerLen;
  }
  /** Sequence space the segment occupies: payload + SYN + FIN. */
  get seqLen(): number {
    const f = this.buf[FLAGS]!;
    return this.payloadLen + (f & TcpFlag.SYN ? 1 : 0) + (f & TcpFlag.FIN ? 1 : 0);
  }

  // ---- options, no allocation ----

  /**
   * Offset (from the start of the segment) of the first option of kind `code` whose length
   * fits the kind, or -1. For EOL/NOP, the first such byte before the end of the list.
   */
  findOption(code: number): number {
    const b = this.buf;
    const hl = this.headerLen;
    let i = TCP_HEADER_LEN;
    while (i < hl) {
      const k = b[i]!;
      if (k === code && (k <= 1 || lengthFits(k, b[i + 1]!))) return i;
      if (k === TcpOptionKind.EOL) return -1;
      if (k === TcpOptionKind.NOP) i++;
      else i += b[i + 1]!;
    }
    return -1;
  }

  /**
   * The options a gateway cannot inspect around, found in one walk of the list (every segment
   * with options asks, most of them for nothing): `OPT_SIGNED` for a TCP-MD5 (RFC 2385) or TCP-AO
   * (RFC 5925) option (a receiver without the key drops the segment, one rewritten fails its
   * check), `OPT_MPTCP` for a Multipath TCP option (RFC 8684: the receiver orders the bytes by
   * the DSS mappings' data sequence numbers and joins other subflows' bytes in, not by TCP order).
   */
  guardedOptions(): number {
    const b = this.buf;
    const hl = this.headerLen;
    let m = 0;
    let i = TCP_HEADER_LEN;
    while (i < hl) {
      const k = b[i]!;
      if (k === TcpOptionKind.EOL) break;
      if (k === TcpOptionKind.NOP) {
        i++;
        continue;
      }
      if (lengthFits(k, b[i + 1]!)) {
        if (k === TCP_OPTION_MD5 || k === TCP_OPTION_AO) m |= OPT_SIGNED;
        else if (k === TCP_OPTION_MPTCP) m |= OPT_MPTCP;
      }
      i += b[i + 1]!;
    }
    return m;
  }

  /** Carries a TCP-MD5 or TCP-AO option (`guardedOptions`). */
  signed(): boolean {
    return (this.guardedOptions() & OPT_SIGNED) !== 0;
  }

  /** Carries a Multipath TCP option (`guardedOptions`). */
  mptcp(): boolean {
    return (this.guardedOptions() & OPT_MPTCP) !== 0;
  }

  /**
   * Overwrites every option of kind `code` with NOPs (the header keeps its length). The checksum
   * stays right (RFC 1624) unless `partial`: a NEEDS_CSUM frame's field holds the pseudo-header
   * sum only, and the device sums the header later. Returns whether anything changed.
   */
  nopOptions(code: number, partial: boolean): boolean {
    let changed = false;
    for (let o = this.findOption(code); o >= 0; o = this.findOption(code)) {
      const end = o + this.buf[o + 1]!;
      const old = this.buf.slice(o, end);
      this.buf.fill(TcpOptionKind.NOP, o, end);
      if (!partial) this.setChecksum(csumReplaceBytes(this.checksum, old, this.buf.subarray(o, end), o));
      changed = true;
    }
    return changed;
  }

  /** MSS option value, or null. */
  mss(): number | null {
    const o = this.findOption(TcpOptionKind.MSS);
    return o < 0 ? null : get16(this.buf, o + 2);
  }
  /** Window scale shift as sent (not clamped to 14: that is the tracker's job), or null. */
  windowScale(): number | null {
    const o = this.findOption(TcpOptionKind.WSCALE);
    return o < 0 ? null : this.buf[o + 2]!;
  }
  sackPermitted(): boolean {
    return this.findOption(TcpOptionKind.SACK_PERMITTED) >= 0;
  }
  /** TSval, or null without a timestamps option. */
  tsval(): number | null {
    const o = this.findOption(TcpOptionKind.TIMESTAMPS);
    return o < 0 ? null : get32(this.buf, o + 2);
  }
  /** TSecr, or null without a timestamps option. */
  tsecr(): number | null {
    const o = this.findOption(TcpOptionKind.TIMESTAMPS);
    return o < 0 ? null : get32(this.buf, o + 6);
  }

  /** Offset of the SACK option inside the segment (its kind byte), or -1. */
  sackOptionOffset(): number {
    if (this.sackOff === -2) this.sackOff = this.findOption(TcpOptionKind.SACK);
    return this.sackOff;
  }
  sackBlockCount(): number {
    const o = this.sackOptionOffset();
    return o < 0 ? 0 : (this.buf[o + 1]! - 2) >>> 3;
  }
  /** Left edge of SACK block i (0 <= i < sackBlockCount(), else a caller bug: throws). */
  sackLeft(i: number): Seq {
    return get32(this.buf, this.sackEdge(i, 0));
  }
  sackRight(i: number): Seq {
    return get32(this.buf, this.sackEdge(i, 4));
  }
  private sackEdge(i: number, which: 0 | 4): number {
    if (!(i >= 0 && i < this.sackBlockCount())) {
      throw new RangeError(`SACK block ${i} of ${this.sackBlockCount()}`);
    }
    return this.sackOptionOffset() + 2 + i * 8 + which;
  }

  /** All options in order, decoded (allocates; byte fields alias the segment). */
  options(): TcpOption[] {
    const b = this.buf;
    const hl = this.headerLen;
    const out: TcpOption[] = [];
    let i = TCP_HEADER_LEN;
    while (i < hl) {
      const k = b[i]!;
      if (k === TcpOptionKind.EOL) {
        out.push({ kind: 'eol', padding: b.subarray(i + 1, hl) });
        break;
      }
      if (k === TcpOptionKind.NOP) {
        out.push({ kind: 'nop' });
        i++;
        continue;
      }
      const l = b[i + 1]!;
      if (!lengthFits(k, l)) {
        out.push({ kind: 'unknown', code: k, data: b.subarray(i + 2, i + l) });
      } else {
        switch (k) {
          case TcpOptionKind.MSS:
            out.push({ kind: 'mss', mss: get16(b, i + 2) });
            break;
          case TcpOptionKind.WSCALE:
            out.push({ kind: 'wscale', shift: b[i + 2]! });
            break;
          case TcpOptionKind.SACK_PERMITTED:
            out.push({ kind: 'sack-permitted' });
            break;
          case TcpOptionKind.SACK: {
            const blocks: SackBlock[] = [];
            for (let j = i + 2; j < i + l; j += 8) blocks.push({ left: get32(b, j), right: get32(b, j + 4) });
            out.push({ kind: 'sack', blocks });
            break;
          }
          case TcpOptionKind.TIMESTAMPS:
            out.push({ kind: 'timestamps', tsval: get32(b, i + 2), tsecr: get32(b, i + 6) });
            break;
          default:
            out.push({ kind: 'unknown', code: k, data: b.subarray(i + 2, i + l) });
        }
      }
      i += l;
    }
    return out;
  }

  // ---- checksum ----

  /** The checksum verifies against the IPv4 pseudo-header of `src` → `dst`. */
  verifyChecksum(src: number, dst: number): boolean {
    const acc = ipv4PseudoHeaderSum(src, dst, IP_PROTO_TCP, this.buf.length);
    return finish(sum16(this.buf, 0, this.buf.length, acc)) === 0;
  }
  /** Computes and stores the full checksum. */
  fillChecksum(src: number, dst: number): void {
    set16(this.buf, CHECKSUM, 0);
    const acc = ipv4PseudoHeaderSum(src, dst, IP_PROTO_TCP, this.buf.length);
    set16(this.buf, CHECKSUM, finish(sum16(this.buf, 0, this.buf.length, acc)));
  }
  /**
   * Stores the partial checksum for offload (virtio-net NEEDS_CSUM with csum_start = the TCP
   * header, csum_offset = 16): the folded, uncomplemented pseudo-header sum; the device adds
   * the segment.
   */
  fillPartialChecksum(src: number, dst: number): void {
    set16(this.buf, CHECKSUM, fold16(ipv4PseudoHeaderSum(src, dst, IP_PROTO_TCP, this.buf.length)));
  }

  // ---- in-place setters: the checksum field is NOT touched ----

  setSrcPort(v: number): void {
    set16(this.buf, SRC_PORT, v);
  }
  setDstPort(v: number): void {
    set16(this.buf, DST_PORT, v);
  }
  setSeq(v: Seq): void {
    set32(this.buf, SEQ, v >>> 0);
  }
  setAck(v: Seq): void {
    set32(this.buf, ACK, v >>> 0);
  }
  /** Sets the nine flag bits; the data offset and reserved bits are kept. */
  setFlags(f: number): void {
    this.buf[DOFF_FLAGS] = (this.buf[DOFF_FLAGS]! & 0xfe) | ((f >>> 8) & 1);
    this.buf[FLAGS] = f & 0xff;
  }
  setWindow(v: number): void {
    set16(this.buf, WINDOW, v);
  }
  setUrgent(v: number): void {
    set16(this.buf, URGENT, v);
  }
  setChecksum(v: number): void {
    set16(this.buf, CHECKSUM, v);
  }
  setSackLeft(i: number, v: Seq): void {
    set32(this.buf, this.sackEdge(i, 0), v >>> 0);
  }
  setSackRight(i: number, v: Seq): void {
    set32(this.buf, this.sackEdge(i, 4), v >>> 0);
  }

  // ---- rewrite = set + RFC 1624 eqn. 3 on a complete checksum ----
  //
  // Use these when the checksum field holds a full checksum (frames from the wire, or TAP
  // without NEEDS_CSUM). When it holds a partial checksum (NEEDS_CSUM), use the plain setters
  // for header fields (the device sums the header itself) and `adjustChecksum*(…, true)` only
  // for pseudo-header changes (NAT of an address, a changed TCP length).

  rewriteSrcPort(v: number): void {
    this.adjustChecksum16(this.srcPort, v);
    this.setSrcPort(v);
  }
  rewriteDstPort(v: number): void {
    this.adjustChecksum16(this.dstPort, v);
    this.setDstPort(v);
  }
  rewriteSeq(v: Seq): void {
    this.adjustChecksum32(this.seq, v);
    this.setSeq(v);
  }
  rewriteAck(v: Seq): void {
    this.adjustChecksum32(this.ack, v);
    this.setAck(v);
  }
  rewriteFlags(f: number): void {
    const old = get16(this.buf, DOFF_FLAGS);
    this.setFlags(f);
    this.adjustChecksum16(old, get16(this.buf, DOFF_FLAGS));
  }
  rewriteWindow(v: number): void {
    this.adjustChecksum16(this.window, v);
    this.setWindow(v);
  }
  rewriteUrgent(v: number): void {
    this.adjustChecksum16(this.urgent, v);
    this.setUrgent(v);
  }
  rewriteSackBlock(i: number, left: Seq, right: Seq): void {
    this.adjustChecksum32(this.sackLeft(i), left);
    this.setSackLeft(i, left);
    this.adjustChecksum32(this.sackRight(i), right);
    this.setSackRight(i, right);
  }

  /**
   * Accounts in the checksum field for a 16-bit word covered by it (header, payload or
   * pseudo-header) changing from `oldWord` to `newWord`. `partial`: the field holds a
   * partial (uncomplemented) sum, see above.
   */
  adjustChecksum16(oldWord: number, newWord: number, partial = false): void {
    const c = get16(this.buf, CHECKSUM);
    set16(this.buf, CHECKSUM, partial ? sumReplace16(c, oldWord, newWord) : csumReplace16(c, oldWord, newWord));
  }
  /** `adjustChecksum16` for a 32-bit field (seq, ack, SACK edge, IPv4 address). */
  adjustChecksum32(oldU32: number, newU32: number, partial = false): void {
    const c = get16(this.buf, CHECKSUM);
    set16(this.buf, CHECKSUM, partial ? sumReplace32(c, oldU32, newU32) : csumReplace32(c, oldU32, newU32));
  }
}

// ---- options encoding ----

function optionLen(o: TcpOption): number {
  switch (o.kind) {
    case 'eol':
      return 1 + o.padding.length;
    case 'nop':
      return 1;
    case 'mss':
      return 4;
    case 'wscale':
      return 3;
    case 'sack-permitted':
      return 2;
    case 'sack':
      return 2 + 8 * o.blocks.length;
    case 'timestamps':
      return 10;
    case 'unknown':
      return 2 + o.data.length;
  }
}

/** Encoded length of an option list, padded to a multiple of 4 (zero bytes = EOL). */
export function tcpOptionsLen(opts: readonly TcpOption[]): number {
  let n = 0;
  for (const o of opts) n += optionLen(o);
  return (n + 3) & ~3;
}

/**
 * Writes an option list at `off` of `into`, byte-exact for a decoded list, zero-padded to a
 * multiple of 4; returns the bytes written. Throws on a caller bug (too long, bad option).
 */
export function emitTcpOptions(opts: readonly TcpOption[], into: Uint8Array, off: number): number {
  const total = tcpOptionsLen(opts);
  if (total > TCP_MAX_OPTIONS_LEN) throw new RangeError(`TCP options of ${total} bytes > 40`);
  if (off + total > into.length) throw new RangeError(`emitTcpOptions: buffer too small`);
  let i = off;
  for (const o of opts) {
    switch (o.kind) {
      case 'eol':
        into[i++] = 0;
        into.set(o.padding, i);
        i += o.padding.length;
        break;
      case 'nop':
        into[i++] = 1;
        break;
      case 'mss':
        into[i] = 2;
        into[i + 1] = 4;
        into[i + 2] = o.mss >>> 8;
        into[i + 3] = o.mss & 0xff;
        i += 4;
        break;
      case 'wscale':
        into[i] = 3;
        into[i + 1] = 3;
        into[i + 2] = o.shift;
        i += 3;
        break;
      case 'sack-permitted':
        into[i] = 4;
        into[i + 1] = 2;
        i += 2;
        break;
      case 'sack':
        if (o.blocks.length < 1 || o.blocks.length > 4) throw new RangeError(`SACK with ${o.blocks.length} blocks`);
        into[i] = 5;
        into[i + 1] = 2 + 8 * o.blocks.length;
        i += 2;
        for (const bl of o.blocks) {
          set32(into, i, bl.left);
          set32(into, i + 4, bl.right);
          i += 8;
        }
        break;
      case 'timestamps':
        into[i] = 8;
        into[i + 1] = 10;
        set32(into, i + 2, o.tsval);
        set32(into, i + 6, o.tsecr);
        i += 10;
        break;
      case 'unknown':
        if (o.code <= 1 || o.code > 255) throw new RangeError(`unknown option with code ${o.code}`);
        into[i] = o.code;
        into[i + 1] = 2 + o.data.length;
        into.set(o.data, i + 2);
        i += 2 + o.data.length;
        break;
    }
  }
  into.fill(0, i, off + total);
  return total;
}

export type TcpChecksumMode = 'full' | 'partial' | 'none';

export interface TcpReprInit {
  srcPort: number;
  dstPort: number;
  seq: Seq;
  /** Sent as is, meaningful with ACK set (default 0). */
  ack?: Seq;
  flags: number;
  window: number;
  urgent?: number;
  reserved?: number;
  options?: readonly TcpOption[];
  payload?: Uint8Array;
}

/** The TCP header (and payload reference) as a small value; byte fields alias the parsed buffer. */
export class TcpRepr {
  srcPort: number;
  dstPort: number;
  seq: Seq;
  ack: Seq;
  flags: number;
  window: number;
  urgent: number;
  reserved: number;
  options: readonly TcpOption[];
  payload: Uint8Array;

  constructor(i: TcpReprInit) {
    this.srcPort = i.srcPort;
    this.dstPort = i.dstPort;
    this.seq = i.seq >>> 0;
    this.ack = (i.ack ?? 0) >>> 0;
    this.flags = i.flags;
    this.window = i.window;
    this.urgent = i.urgent ?? 0;
    this.reserved = i.reserved ?? 0;
    this.options = i.options ?? [];
    this.payload = i.payload ?? new Uint8Array(0);
  }

  /** `verify`: the IPv4 addresses to check the checksum against, or null not to check. */
  static parse(s: TcpSegment, verify: { src: number; dst: number } | null = null): TcpRepr | WireError<'tcp'> {
    if (verify && !s.verifyChecksum(verify.src, verify.dst)) {
      return new WireError('tcp', 'tcp-bad-checksum', `checksum 0x${s.checksum.toString(16)}`);
    }
    return new TcpRepr({
      srcPort: s.srcPort,
      dstPort: s.dstPort,
      seq: s.seq,
      ack: s.ack,
      flags: s.flags,
      window: s.window,
      urgent: s.urgent,
      reserved: s.reserved,
      options: s.options(),
      payload: s.payload,
    });
  }

  headerLen(): number {
    return TCP_HEADER_LEN + tcpOptionsLen(this.options);
  }
  /** Header + payload: the TCP length. */
  bufferLen(): number {
    return this.headerLen() + this.payload.length;
  }

  /**
   * Writes header and payload at the start of `into` (which must be at least `bufferLen()`:
   * the checksum covers exactly that many bytes) and fills the checksum per `mode`; returns
   * the segment length.
   */
  emit(into: Uint8Array, ipSrc: number, ipDst: number, mode: TcpChecksumMode = 'full'): number {
    const hl = this.headerLen();
    const len = hl + this.payload.length;
    if (into.length < len) throw new RangeError(`TcpRepr.emit: buffer ${into.length} < ${len}`);
    set16(into, SRC_PORT, this.srcPort);
    set16(into, DST_PORT, this.dstPort);
    set32(into, SEQ, this.seq);
    set32(into, ACK, this.ack);
    into[DOFF_FLAGS] = ((hl >>> 2) << 4) | ((this.reserved & 7) << 1) | ((this.flags >>> 8) & 1);
    into[FLAGS] = this.flags & 0xff;
    set16(into, WINDOW, this.window);
    set16(into, CHECKSUM, 0);
    set16(into, URGENT, this.urgent);
    emitTcpOptions(this.options, into, TCP_HEADER_LEN);
    into.set(this.payload, hl);
    const seg = into.subarray(0, len);
    if (mode !== 'none') {
      const v = TcpSegment.unchecked(seg);
      if (mode === 'full') v.fillChecksum(ipSrc, ipDst);
      else v.fillPartialChecksum(ipSrc, ipDst);
    }
    return len;
  }
}
