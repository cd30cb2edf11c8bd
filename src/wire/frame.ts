/**
 * One-call decoder for the engine's per-packet path: Ethernet (or raw IPv4) → ARP | IPv4 →
 * TCP, with optional checksum verification (RFC 1071). It classifies, it does not judge: a
 * well-formed frame the gateway does not rewrite (IPv6, UDP, ICMP, IPv4 fragments, unknown
 * EtherTypes) comes back as `ipv4-other` / `other` to be bridged as is; only frames that are
 * malformed at a layer the gateway must understand come back as `error`.
 *
 * A TCP header inside an IPv4 fragment is never decoded: a first fragment may hold only part
 * of it, and rewriting a fragment without its siblings would corrupt the segment.
 *
 * Per call: the result object and the views of the layers present (no closures, no copies).
 * With TAP GSO / NEEDS_CSUM (virtio.ts) the TCP checksum holds a partial sum: pass
 * `verifyChecksums: false` for such frames (and for DATA_VALID ones, already verified).
 */

import { ArpPacket } from './arp.js';
import { WireError } from './error.js';
import { ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, EthernetFrame } from './ethernet.js';
import { IP_PROTO_TCP, Ipv4Packet } from './ipv4.js';
import { TcpSegment } from './tcp.js';

export type LinkType = 'ethernet' | 'raw-ipv4';

export interface DecodeOptions {
  link: LinkType;
  verifyChecksums: boolean;
}

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

export interface FrameTcp extends FrameIpBase {
  readonly kind: 'tcp';
  /** The segment, viewed over [l4Off, ipEnd). */
  readonly tcp: TcpSegment;
  /** Offset of the TCP payload in the buffer. */
  readonly payloadOff: number;
  readonly payloadLen: number;
}

export interface FrameIpv4Other extends FrameIpBase {
  readonly kind: 'ipv4-other';
  readonly protocol: number;
  readonly isFragment: boolean;
  /** Fragment offset in bytes (0 for a first fragment or an unfragmented packet). */
  readonly fragOffset: number;
  readonly moreFrags: boolean;
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
export type FrameErrorLayer = 'ethernet' | 'arp' | 'ipv4' | 'tcp';

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
    if (et !== ETHERTYPE_IPV4) return { kind: 'other', eth: e, etherType: et, l3Off };
  } else if (buf.length > 0 && buf[0]! >>> 4 === 6) {
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

  if (proto !== IP_PROTO_TCP || frag) {
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
    tcp,
    l3Off,
    l4Off,
    ipEnd,
    paddingLen,
    payloadOff: l4Off + thl,
    payloadLen: tl - hl - thl,
  };
}
