/**
 * IPv6 (RFC 8200): the fixed header as a zero-copy view, the extension-header chain walked with
 * bounds and the checks a security gateway makes on it, the pseudo-header sum of upper-layer
 * checksums, and addresses as text (RFC 5952 out, strict RFC 4291 §2.2 in).
 *
 *   0 ver/traffic class/flow label  4 payload length  6 next header  7 hop limit  8 src  24 dst
 *   40 extension headers, then the upper-layer header
 *
 * The chain (`walkIpv6`): Hop-by-Hop (0, only first, §4.1), Routing (43), Fragment (44),
 * Destination Options (60) and AH (51, RFC 4302: its payload is in the clear) are walked; ESP
 * (50), No Next Header (59) and anything else end it as the upper layer. Walking stops with an
 * error when the chain runs past the packet, exceeds `IPV6_MAX_EXT_HEADERS` headers or
 * `IPV6_MAX_EXT_BYTES` bytes (a chain longer than any real one hides what it carries). Findings
 * that a receiver or a gateway must drop on are reported without stopping the walk (`drop`):
 * - `ipv6-hbh-not-first`: Hop-by-Hop anywhere but right after the fixed header (§4.1);
 * - `ipv6-rh0`: a Routing header of type 0 with segments left (RFC 5095 deprecates it: a
 *   source-routed amplifier);
 * - `ipv6-option-unknown`: an option whose type is unknown here and whose action bits (§4.2:
 *   01, 10, 11) tell the receiver to discard the packet — the receiver would never see what the
 *   gateway inspected — and `ipv6-option-bad` for TLVs that run past their header;
 * - `ipv6-first-fragment-incomplete`: a first fragment that does not hold the whole chain up to
 *   and including the upper-layer header's first bytes (RFC 7112, RFC 8200 §4.5);
 * - `ipv6-fragment-bad`: a fragment whose length is not a multiple of 8 though more follow.
 * A later fragment (offset ≠ 0) ends the walk at its Fragment header: what follows is the middle
 * of the payload; `upperProto` is then the Fragment header's Next Header.
 */

import { get16, get32, set16 } from './bytes.js';
import { sum16 } from './checksum.js';
import { IP_PROTO_TCP, IP_PROTO_UDP, ipv4ToString, parseIpv4 } from './ipv4.js';
import { TCP_HEADER_LEN } from './tcp.js';

export const IPV6_HEADER_LEN = 40;
export const IPV6_ADDR_LEN = 16;

export const IP_PROTO_HOPOPTS = 0;
export const IP_PROTO_ROUTING = 43;
export const IP_PROTO_FRAGMENT = 44;
export const IP_PROTO_ESP = 50;
export const IP_PROTO_AH = 51;
export const IP_PROTO_ICMPV6 = 58;
export const IP_PROTO_NONE = 59;
export const IP_PROTO_DSTOPTS = 60;

/** Extension headers walked at most (RFC 7112 wants the chain in the first fragment; real chains have 0–3). */
export const IPV6_MAX_EXT_HEADERS = 8;
/** Bytes of extension headers walked at most. */
export const IPV6_MAX_EXT_BYTES = 1024;

/** Option types this walk knows (RFC 8200 §4.2 Pad1/PadN; RFC 2473 tunnel limit; RFC 2711 router alert; RFC 2675 jumbo; RFC 6275 home address). */
const KNOWN_OPTIONS: ReadonlySet<number> = new Set([0x00, 0x01, 0x04, 0x05, 0xc2, 0xc9]);
/** Mobile IPv6's Home Address destination option (RFC 6275 §6.3). */
const OPT_HOME_ADDRESS = 0xc9;

/** Why a walk stopped (the chain cannot be followed). */
export type Ipv6ChainError = 'ipv6-chain-truncated' | 'ipv6-chain-too-long' | 'ipv6-chain-too-big';
/** What a gateway drops on though the chain could be followed (see the file comment). */
export type Ipv6ChainDrop =
  | 'ipv6-hbh-not-first'
  | 'ipv6-rh0'
  | 'ipv6-option-unknown'
  | 'ipv6-option-bad'
  | 'ipv6-first-fragment-incomplete'
  | 'ipv6-fragment-bad';

export interface Ipv6Fragment {
  /** Offset of this fragment's data in the original payload, in bytes. */
  offset: number;
  more: boolean;
  id: number;
}

export interface Ipv6Chain {
  /** The chain stopped here: the rest cannot be read (the other fields are as far as it got). */
  error: Ipv6ChainError | null;
  /** The first finding to drop on, if any. */
  drop: Ipv6ChainDrop | null;
  /** Next Header value of the upper layer (or of the data after a later fragment's header). */
  upperProto: number;
  /** Offset of the upper-layer header (or of a later fragment's data). */
  upperOff: number;
  /** End of the packet: fixed header + payload length, within the buffer. */
  end: number;
  /** Extension headers walked. */
  headers: number;
  fragment: Ipv6Fragment | null;
  /** Offset of the address the packet is finally for (a Routing header's last segment), else the fixed header's destination. */
  finalDstOff: number;  /** An Authentication Header was walked through (RFC 4302: what follows it is authenticated). */
  ah: boolean;
  /** Offset of a Home Address option's address (Mobile IPv6): the pseudo-header's source; -1 when none. */
  homeAddrOff: number;
  /** A Routing header with segments left whose final destination is not read (not types 0, 2, 4). */
  routed: boolean;
}

/**
 * Walks the chain of the IPv6 packet at `off` (its fixed header must be there: `Ipv6Packet`).
 * `upperMin`: bytes of the upper-layer header a first fragment must hold (RFC 7112: the whole
 * chain; 20 for TCP's fixed header, 8 for UDP, 4 for ICMPv6), per protocol.
 */
export function walkIpv6(buf: Uint8Array, off: number, upperMin: (proto: number) => number = defaultUpperMin): Ipv6Chain {
  const end = Math.min(buf.length, off + IPV6_HEADER_LEN + get16(buf, off + 4));
  const c: Ipv6Chain = { error: null, drop: null, upperProto: buf[off + 6]!, upperOff: off + IPV6_HEADER_LEN, end, headers: 0, fragment: null, finalDstOff: off + 24, ah: false, homeAddrOff: -1, routed: false };
  let next = c.upperProto;
  let p = c.upperOff;
  for (;;) {
    if (!isIpv6ExtensionHeader(next)) break;
    if (c.headers === IPV6_MAX_EXT_HEADERS) return stop(c, 'ipv6-chain-too-long', next, p);
    if (p - (off + IPV6_HEADER_LEN) >= IPV6_MAX_EXT_BYTES) return stop(c, 'ipv6-chain-too-big', next, p);
    if (end - p < 8) return stop(c, 'ipv6-chain-truncated', next, p);
    const len = next === IP_PROTO_FRAGMENT ? 8 : next === IP_PROTO_AH ? (buf[p + 1]! + 2) * 4 : (buf[p + 1]! + 1) * 8;
    if (next === IP_PROTO_AH) c.ah = true;
    if (end - p < len) return stop(c, 'ipv6-chain-truncated', next, p);
    if (next === IP_PROTO_HOPOPTS && c.headers > 0) drop(c, 'ipv6-hbh-not-first');
    if (next === IP_PROTO_HOPOPTS || next === IP_PROTO_DSTOPTS) {
      const o = checkOptions(buf, p + 2, p + len, next === IP_PROTO_DSTOPTS ? c : null);
      if (o !== null) drop(c, o);
    } else if (next === IP_PROTO_ROUTING) {
      const type = buf[p + 2]!;
      const left = buf[p + 3]!;
      if (type === 0 && left > 0) drop(c, 'ipv6-rh0');
      // Types 0 and 2 (RFC 6275) carry addresses after 8 bytes; the last one is where the packet is finally for.
      if ((type === 0 || type === 2) && left > 0 && len >= 8 + IPV6_ADDR_LEN) c.finalDstOff = p + len - IPV6_ADDR_LEN;
      // A Segment Routing Header (type 4, RFC 8754): Segment List[0], right after its 8 bytes, is the last segment.
      else if (type === 4 && left > 0 && len >= 8 + IPV6_ADDR_LEN) c.finalDstOff = p + 8;
      // Any other routing with segments left (RPL, type 3, RFC 6554: compressed addresses; unknown
      // types): the packet is for another address than the fixed header's, which cannot be read here.
      else if (left > 0) c.routed = true;
    } else if (next === IP_PROTO_FRAGMENT) {
      const w = get16(buf, p + 2);
      const f: Ipv6Fragment = { offset: w & 0xfff8, more: (w & 1) === 1, id: get32(buf, p + 4) };
      c.fragment = f;
      c.headers++;
      next = buf[p]!;
      p += 8;
      // Atomic fragments (offset 0, no more: RFC 6946) are whole packets.
      if (f.more && (end - p) % 8 !== 0) drop(c, 'ipv6-fragment-bad');
      if (f.offset !== 0) {
        c.upperProto = next;
        c.upperOff = p;
        return c;
      }
      continue;
    }
    c.headers++;
    next = buf[p]!;
    p += len;
  }
  c.upperProto = next;
  c.upperOff = p;
  if (c.fragment !== null && c.fragment.more && end - p < upperMin(next)) drop(c, 'ipv6-first-fragment-incomplete');
  return c;
}

function stop(c: Ipv6Chain, e: Ipv6ChainError, next: number, p: number): Ipv6Chain {
  c.error = e;
  c.upperProto = next;
  c.upperOff = p;
  if (c.fragment !== null && c.fragment.offset === 0 && e === 'ipv6-chain-truncated') c.drop ??= 'ipv6-first-fragment-incomplete';
  return c;
}

/** The first finding is the one reported. */
function drop(c: Ipv6Chain, d: Ipv6ChainDrop): void {
  c.drop ??= d;
}

/** The headers the walk goes through (RFC 8200 §4; AH, RFC 4302, whose payload is in the clear). */
export function isIpv6ExtensionHeader(n: number): boolean {
  return n === IP_PROTO_HOPOPTS || n === IP_PROTO_ROUTING || n === IP_PROTO_FRAGMENT || n === IP_PROTO_DSTOPTS || n === IP_PROTO_AH;
}

function defaultUpperMin(proto: number): number {
  return proto === IP_PROTO_TCP ? TCP_HEADER_LEN : proto === IP_PROTO_UDP ? 8 : proto === IP_PROTO_ICMPV6 ? 4 : 0;
}

/**
 * The TLV options in [p, end) of a Hop-by-Hop or Destination Options header; in the latter
 * (`c`), a Home Address option (RFC 6275 §6.3) is noted: it is the source the upper layer's
 * pseudo-header uses.
 */
function checkOptions(buf: Uint8Array, p: number, end: number, c: Ipv6Chain | null): Ipv6ChainDrop | null {
  while (p < end) {
    const t = buf[p]!;
    if (t === 0) {
      p++;
      continue;
    }
    if (end - p < 2 || p + 2 + buf[p + 1]! > end) return 'ipv6-option-bad';
    if (t === OPT_HOME_ADDRESS && c !== null && buf[p + 1] === IPV6_ADDR_LEN) c.homeAddrOff = p + 2;
    // The two high bits say what a node that does not know the option does: 00 skips it.
    if (!KNOWN_OPTIONS.has(t) && t >>> 6 !== 0) return 'ipv6-option-unknown';
    p += 2 + buf[p + 1]!;
  }
  return null;
}

/**
 * Writes a fixed header at `off`: version 6, traffic class and flow label 0, `payloadLen` bytes
 * after it, Next Header `next`, hop limit 64, the 16-byte addresses.
 */
export function emitIpv6Header(b: Uint8Array, off: number, payloadLen: number, next: number, src: Uint8Array, dst: Uint8Array): void {
  b.fill(0, off, off + 8);
  b[off] = 0x60;
  set16(b, off + 4, payloadLen);
  b[off + 6] = next;
  b[off + 7] = 64;
  b.set(src, off + 8);
  b.set(dst, off + 24);
}

/** Zero-copy view of an IPv6 fixed header; after `parse` the payload length fits the buffer. */
export class Ipv6Packet {
  private constructor(readonly buf: Uint8Array) {}

  /** Null when `buf` holds no whole IPv6 header or a payload length past its end. */
  static parse(buf: Uint8Array): Ipv6Packet | null {
    if (buf.length < IPV6_HEADER_LEN || buf[0]! >>> 4 !== 6) return null;
    if (IPV6_HEADER_LEN + get16(buf, 4) > buf.length) return null;
    return new Ipv6Packet(buf);
  }

  get trafficClass(): number {
    return (get16(this.buf, 0) >>> 4) & 0xff;
  }
  get flowLabel(): number {
    return get32(this.buf, 0) & 0xfffff;
  }
  get payloadLength(): number {
    return get16(this.buf, 4);
  }
  get nextHeader(): number {
    return this.buf[6]!;
  }
  get hopLimit(): number {
    return this.buf[7]!;
  }
  get src(): Uint8Array {
    return this.buf.subarray(8, 24);
  }
  get dst(): Uint8Array {
    return this.buf.subarray(24, 40);
  }
}

/**
 * The accumulator of the IPv6 pseudo-header (RFC 8200 §8.1): source, the final destination (the
 * last address of a Routing header when there is one, `walkIpv6`'s finalDstOff), the
 * upper-layer length as 32 bits and the Next Header value.
 */
export function ipv6PseudoHeaderSum(buf: Uint8Array, srcOff: number, dstOff: number, proto: number, l4len: number): number {
  let acc = sum16(buf, srcOff, srcOff + IPV6_ADDR_LEN);
  acc = sum16(buf, dstOff, dstOff + IPV6_ADDR_LEN, acc);
  return acc + (l4len >>> 16) + (l4len & 0xffff) + (proto & 0xff);
}

/** RFC 5952 text of the address at `off`: lower case, no leading zeros, the longest run (≥ 2) of zero groups as `::` (the first of equal runs), IPv4-mapped as `::ffff:a.b.c.d`. */
export function ipv6ToString(a: Uint8Array, off = 0): string {
  const g: number[] = [];
  for (let i = 0; i < 8; i++) g.push(get16(a, off + 2 * i));
  if (g[0] === 0 && g[1] === 0 && g[2] === 0 && g[3] === 0 && g[4] === 0 && g[5] === 0xffff) return `::ffff:${ipv4ToString(get32(a, off + 12))}`;
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (xs: number[]): string => xs.map((x) => x.toString(16)).join(':');
  if (best < 0) return hex(g);
  return `${hex(g.slice(0, best))}::${hex(g.slice(best + bestLen))}`;
}

/** Strict RFC 4291 §2.2 text → 16 bytes; null on anything else (no zone index, no brackets, one `::`, groups of 1–4 hex digits, an IPv4 tail only last). */
export function parseIpv6(s: string): Uint8Array | null {
  if (s.length < 2 || s.length > 45) return null;
  const halves = s.split('::');
  if (halves.length > 2) return null;
  const groups = (t: string, last: boolean): number[] | null => {
    if (t === '') return [];
    const out: number[] = [];
    const parts = t.split(':');
    for (let i = 0; i < parts.length; i++) {
      const p = parts[i]!;
      if (last && i === parts.length - 1 && p.includes('.')) {
        const v4 = parseIpv4(p);
        if (v4 === null) return null;
        out.push(v4 >>> 16, v4 & 0xffff);
      } else if (/^[0-9a-fA-F]{1,4}$/.test(p)) out.push(parseInt(p, 16));
      else return null;
    }
    return out;
  };
  const head = groups(halves[0]!, halves.length === 1);
  const tail = halves.length === 2 ? groups(halves[1]!, true) : [];
  if (head === null || tail === null) return null;
  const n = head.length + tail.length;
  if (halves.length === 1 ? n !== 8 : n > 7) return null;
  const all = [...head, ...Array<number>(8 - n).fill(0), ...tail];
  const out = new Uint8Array(16);
  all.forEach((x, i) => set16(out, 2 * i, x));
  return out;
}
