/**
 * One-call decoder for the engine's per-packet path: Ethernet (or raw IP) → ARP | IPv4 → TCP
 * | IPv6 → TCP (when asked: `ipv6`), with optional checksum verification (RFC 1071, with the
 * family's pseudo-header). It classifies, it does not judge: a well-formed frame the gateway does
 * not rewrite (UDP, ICMP, IPv4 fragments, IPv6 it cannot rewrite whole, unknown EtherTypes) comes
 * back as `ipv4-other` / `other` to be bridged as is; only frames that are malformed at a layer
 * the gateway must understand come back as `error`.
 *
 * A TCP header inside an IPv4 fragment is never decoded: a first fragment may hold only part
 * of it, and rewriting a fragment without its siblings would corrupt the segment. Nor is TCP
 * whose packet has a source route in flight (`route`): its header's destination is a hop.
 *
 * Per call: the result object and the views of the layers present (no closures, no copies).
 * With TAP GSO / NEEDS_CSUM (virtio.ts) the TCP checksum holds a partial sum: pass
 * `verifyChecksums: false` for such frames (and for DATA_VALID ones, already verified).
 */

import { ArpPacket } from './arp.js';
import { WireError } from './error.js';
import { ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, EthernetFrame } from './ethernet.js';
import { IP_PROTO_TCP, IPV4_MIN_HEADER_LEN, Ipv4Packet, sourceRoute } from './ipv4.js';
import { TcpSegment } from './tcp.js';
import { finish, sum16 } from './checksum.js';
import { ipv6Key, type IpAddr } from './ip.js';
import { Ipv6Packet, ipv6PseudoHeaderSum, walkIpv6 } from './ipv6.js';

export type LinkType = 'ethernet' | 'raw-ipv4';

export interface DecodeOptions {
  link: LinkType;
  verifyChecksums: boolean;
  /**
   * Decode TCP over IPv6 (`tcp` with `ip6`); otherwise every IPv6 packet comes back as `other`.
   * Only a packet the gateway can rewrite whole is decoded: no fragment header, no
   * Authentication Header, no Routing header with segments left, a clean extension-header chain
   * (wire/ipv6.ts walkIpv6); anything else stays `other` (wire/opaque.ts classifies it).
   */
  ipv6?: boolean;
}
// With `ipv6`, an IPv6 packet a security gateway must not forward is an `error` (RFC 8200 and
// the walk's findings, wire/ipv6.ts): a Routing header type 0 with segments left (RFC 5095), an
// unknown option whose action bits say discard, a Hop-by-Hop header not first, a first fragment
// without the whole chain (RFC 7112), a bad fragment, a truncated chain, and TCP in fragments
// (never reassembled, as for IPv4: `ipv6-tcp-fragment`). An atomic fragment (RFC 6946) is a
// whole packet.

interface FrameIpBase {
  /** Null for `raw-ipv4`. */
  readonly eth: EthernetFrame | null;
  /** The IPv4 packet, viewed over [l3Off, end of buffer) (trailing padding included). */
  readonly ip: Ipv4Packet;
  /** Offset of the IPv4 header in the buffer. */
  readonly l3Off: number;
  /** Offset of the IPv4 payload (transport header) in the buffer. */
  readonly l4Off: number;
  /** End of the IPv4 packet (l3Off + total length); bytes after it are link padding. */
  readonly ipEnd: number;
  /** Bytes after the IPv4 total length (Ethernet minimum-size padding). */
  readonly paddingLen: number;
}

interface FrameTcpBase {
  readonly kind: 'tcp';
  /** Null for `raw-ipv4`. */
  readonly eth: EthernetFrame | null;
  /** Offset of the IP header in the buffer. */
  readonly l3Off: number;
  /** Offset of the TCP header in the buffer (after IPv4 options, after IPv6 extension headers). */
  readonly l4Off: number;
  /** End of the IP packet; bytes after it are link padding. */
  readonly ipEnd: number;
  readonly paddingLen: number;
  /** The addresses (wire/ip.ts IpAddr: a number for IPv4, a key string for IPv6). */
  readonly src: IpAddr;
  readonly dst: IpAddr;
  /** The segment, viewed over [l4Off, ipEnd). */
  readonly tcp: TcpSegment;
  /** Offset of the TCP payload in the buffer. */
  readonly payloadOff: number;
  readonly payloadLen: number;
}

/** TCP over IPv4. */
export interface FrameTcp4 extends FrameTcpBase {
  readonly ip: Ipv4Packet;
  readonly ip6: null;
  readonly src: number;
  readonly dst: number;
}

/** TCP over IPv6 (only with DecodeOptions.ipv6). */
export interface FrameTcp6 extends FrameTcpBase {
  readonly ip: null;
  readonly ip6: Ipv6Packet;
  readonly src: string;
  readonly dst: string;
}

export type FrameTcp = FrameTcp4 | FrameTcp6;

export interface FrameIpv4Other extends FrameIpBase {
  readonly kind: 'ipv4-other';
  readonly protocol: number;
  readonly isFragment: boolean;
  /** Fragment offset in bytes (0 for a first fragment or an unfragmented packet). */
  readonly fragOffset: number;
  readonly moreFrags: boolean;
  /**
   * A TCP packet with a source route in flight: where it may go (wire/ipv4.ts sourceRoute). Such a
   * packet is not decoded as TCP — its header names only the next hop, so a rule would be judged
   * against the wrong host — and is left to the policy; null otherwise.
   */
  readonly route: readonly number[] | null;
}

export interface FrameArp {
  readonly kind: 'arp';
  readonly eth: EthernetFrame;
  readonly arp: ArpPacket;
  readonly l3Off: number;
}

export interface FrameOther {
  readonly kind: 'other';
  /** Null for `raw-ipv4` (an IPv6 packet on a raw IP link). */
  readonly eth: EthernetFrame | null;
  /** The EtherType after VLAN tags; for `raw-ipv4`, 0x86dd for IPv6. */
  readonly etherType: number;
  readonly l3Off: number;
}

export type DecodedFrame = FrameTcp | FrameIpv4Other | FrameArp | FrameOther | WireError<FrameErrorLayer>;
export type FrameErrorLayer = 'ethernet' | 'arp' | 'ipv4' | 'ipv6' | 'tcp';

export function decodeFrame(buf: Uint8Array, opts: DecodeOptions): DecodedFrame {
  let eth: EthernetFrame | null = null;
  let l3Off = 0;
  if (opts.link === 'ethernet') {
    const e = EthernetFrame.parse(buf);
    if (e instanceof WireError) return e;
    eth = e;
    l3Off = e.headerLen;
    const et = e.etherType;
    if (et === ETHERTYPE_ARP) {
      const a = ArpPacket.parse(buf.subarray(l3Off));
      if (a instanceof WireError) return a;
      return { kind: 'arp', eth: e, arp: a, l3Off };
    }
    if (et === ETHERTYPE_IPV6 && opts.ipv6 === true) return decodeIpv6(buf, eth, l3Off, opts);
    if (et !== ETHERTYPE_IPV4) return { kind: 'other', eth: e, etherType: et, l3Off };
  } else if (buf.length > 0 && buf[0]! >>> 4 === 6) {
    if (opts.ipv6 === true) return decodeIpv6(buf, null, 0, opts);
    return { kind: 'other', eth: null, etherType: ETHERTYPE_IPV6, l3Off: 0 };
  }

  const l3 = l3Off === 0 ? buf : buf.subarray(l3Off);
  const ipErr = Ipv4Packet.check(l3);
  if (ipErr) return ipErr;
  const ip = Ipv4Packet.unchecked(l3);
  if (opts.verifyChecksums && !ip.verifyChecksum()) {
    return new WireError('ipv4', 'ipv4-bad-checksum', `header checksum 0x${ip.checksum.toString(16)}`);
  }
  const hl = ip.headerLen;
  const tl = ip.totalLen;
  const l4Off = l3Off + hl;
  const ipEnd = l3Off + tl;
  const paddingLen = buf.length - ipEnd;
  const proto = ip.protocol;
  const frag = ip.isFragment;

  const route = proto === IP_PROTO_TCP && !frag && hl > IPV4_MIN_HEADER_LEN ? sourceRoute(l3) : null;
  if (proto !== IP_PROTO_TCP || frag || route !== null) {
    return {
      kind: 'ipv4-other',
      eth,
      ip,
      l3Off,
      l4Off,
      ipEnd,
      paddingLen,
      protocol: proto,
      isFragment: frag,
      fragOffset: ip.fragOffset,
      moreFrags: ip.moreFrags,
      route,
    };
  }

  const seg = buf.subarray(l4Off, ipEnd);
  const tcpErr = TcpSegment.check(seg);
  if (tcpErr) return tcpErr;
  const tcp = TcpSegment.unchecked(seg);
  if (opts.verifyChecksums && !tcp.verifyChecksum(ip.src, ip.dst)) {
    return new WireError('tcp', 'tcp-bad-checksum', `checksum 0x${tcp.checksum.toString(16)}`);
  }
  const thl = tcp.headerLen;
  return {
    kind: 'tcp',
    eth,
    ip,
    ip6: null,
    src: ip.src,
    dst: ip.dst,
    tcp,
    l3Off,
    l4Off,
    ipEnd,
    paddingLen,
    payloadOff: l4Off + thl,
    payloadLen: tl - hl - thl,
  };
}

/** An IPv6 packet at `l3Off`: TCP the gateway can rewrite whole (see DecodeOptions.ipv6), else `other`. */
function decodeIpv6(buf: Uint8Array, eth: EthernetFrame | null, l3Off: number, opts: DecodeOptions): DecodedFrame {
  const l3 = l3Off === 0 ? buf : buf.subarray(l3Off);
  const ip6 = Ipv6Packet.parse(l3);
  if (ip6 === null) return new WireError('ipv6', 'ipv6-truncated', `${l3.length} bytes`);
  const w = walkIpv6(buf, l3Off);
  if (w.drop !== null) return new WireError('ipv6', w.drop, `next header ${w.upperProto} at ${w.upperOff - l3Off}`);
  if (w.error === 'ipv6-chain-truncated') return new WireError('ipv6', w.error, `${w.headers} extension headers, ${w.end - l3Off} bytes`);
  const atomic = w.fragment !== null && w.fragment.offset === 0 && !w.fragment.more;
  if (w.fragment !== null && !atomic && w.upperProto === IP_PROTO_TCP) {
    return new WireError('ipv6', 'ipv6-tcp-fragment', `fragment id ${w.fragment.id} offset ${w.fragment.offset}${w.fragment.more ? ', more' : ''}`);
  }
  if (w.upperProto !== IP_PROTO_TCP || w.error !== null || (w.fragment !== null && !atomic) || w.ah || w.routed) return { kind: 'other', eth, etherType: ETHERTYPE_IPV6, l3Off };
  const l4Off = w.upperOff;
  const ipEnd = w.end;
  const seg = buf.subarray(l4Off, ipEnd);
  const tcpErr = TcpSegment.check(seg);
  if (tcpErr) return tcpErr;
  const tcp = TcpSegment.unchecked(seg);
  // The pseudo-header takes the final destination (a Routing header's last address) and a Home
  // Address option's source (Mobile IPv6), RFC 8200 §8.1.
  const pSrc = w.homeAddrOff >= 0 ? w.homeAddrOff : l3Off + 8;
  if (opts.verifyChecksums && finish(sum16(seg, 0, seg.length, ipv6PseudoHeaderSum(buf, pSrc, w.finalDstOff, IP_PROTO_TCP, seg.length))) !== 0) {
    return new WireError('tcp', 'tcp-bad-checksum', `checksum 0x${tcp.checksum.toString(16)}`);
  }
  // Rewritten frames are rebuilt with the fixed header's addresses: a packet whose pseudo-header
  // takes others (a Routing header in flight, Mobile IPv6) is left to the policy, never rewritten.
  if (w.finalDstOff !== l3Off + 24 || w.homeAddrOff >= 0) return { kind: 'other', eth, etherType: ETHERTYPE_IPV6, l3Off };
  const thl = tcp.headerLen;
  return {
    kind: 'tcp',
    eth,
    ip: null,
    ip6,
    src: ipv6Key(buf, l3Off + 8),
    dst: ipv6Key(buf, l3Off + 24),
    tcp,
    l3Off,
    l4Off,
    ipEnd,
    paddingLen: buf.length - ipEnd,
    payloadOff: l4Off + thl,
    payloadLen: ipEnd - l4Off - thl,
  };
}
