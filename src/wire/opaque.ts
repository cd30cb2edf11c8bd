/**
 * What a frame the gateway does not decode may carry: TCP it cannot inspect. The decoder
 * (frame.ts) hands such frames back as `other` (an EtherType it does not parse: IPv6, PPPoE
 * sessions, MPLS) or `ipv4-other` (an IPv4 protocol other than TCP: tunnels among them); this
 * module names the classes a rule could be bypassed through, so the gateway's policy can drop
 * them (engine/policy.ts). Pure: no state, no judgement of its own.
 *
 * - `ipv6-tcp`: TCP over IPv6 the decoder did not return as `tcp` (wire/frame.ts DecodeOptions.ipv6:
 *   fragments, AH, a Routing header in flight, a broken chain; all of it when not asked to), found by walking the extension headers (RFC 8200 §4: Hop-by-Hop,
 *   Routing, Fragment, Destination Options; AH per RFC 4302 §2.2, whose payload is in the
 *   clear; wire/ipv6.ts walkIpv6, within its bounds); with the ports when the TCP header is there (a
 *   non-first fragment has none); also, without ports, a fragment that does not show what it
 *   carries (a later one whose Fragment header names an extension header, a first one whose
 *   chain or UDP header is cut: RFC 7112);
 * - tunnels that carry IP (and so TCP) the gateway does not unwrap: IPv4 or IPv6 protocol 4
 *   (IP-in-IP, RFC 2003), 41 (IPv6 in IP, RFC 4213), 47 (GRE, RFC 2784), 51 (AH) around TCP,
 *   97/115/137 (EtherIP, L2TPv3, MPLS-in-IP), UDP to the ports of L2TP, GTP-U, Teredo, GRE-in-UDP,
 *   VXLAN (also Linux's default port), VXLAN-GPE, Geneve and MPLS-in-UDP (`UDP_TUNNEL`), the
 *   EtherTypes 0x8864 (PPPoE session, RFC 2516) and 0x8847/0x8848 (MPLS, RFC 3032), and IP in an
 *   802.3 frame's LLC/SNAP header (RFC 1042).
 * Anything else (ICMP, UDP, ARP, ESP whose payload nobody can read, unknown EtherTypes) is not
 * a way around a TCP rule and gets null.
 */

import { get16 } from './bytes.js';
import { ETHERTYPE_IPV4, ETHERTYPE_IPV6 } from './ethernet.js';
import { IP_PROTO_TCP, IP_PROTO_UDP } from './ipv4.js';
import { IP_PROTO_AH, IPV6_HEADER_LEN, isIpv6ExtensionHeader, walkIpv6 } from './ipv6.js';

export type OpaqueClass =
  | 'ipv6-tcp'
  | 'ip-in-ip'
  | 'ipv6-in-ip'
  | 'gre'
  | 'ah'
  | 'etherip'
  | 'l2tp'
  | 'mpls-in-ip'
  | 'vxlan'
  | 'vxlan-gpe'
  | 'geneve'
  | 'gtp-u'
  | 'teredo'
  | 'mpls-in-udp'
  | 'pppoe'
  | 'mpls'
  | 'llc-snap';

export interface Opaque {
  cls: OpaqueClass;
  /** TCP ports of an `ipv6-tcp` packet when its header is present. */
  srcPort?: number;
  dstPort?: number;
}

export const ETHERTYPE_PPPOE_SESSION = 0x8864;
export const ETHERTYPE_MPLS = 0x8847;
export const ETHERTYPE_MPLS_MULTICAST = 0x8848;

const IP_PROTO_IPIP = 4;
const IP_PROTO_IPV6 = 41;
const IP_PROTO_GRE = 47;
const UDP_VXLAN = 4789;
const UDP_GENEVE = 6081;

/** IP protocols that carry IP or Ethernet frames: 97 EtherIP (RFC 3378), 115 L2TPv3 (RFC 3931), 137 MPLS-in-IP (RFC 4023). */
const TUNNEL: Readonly<Record<number, OpaqueClass>> = {
  [IP_PROTO_IPIP]: 'ip-in-ip',
  [IP_PROTO_IPV6]: 'ipv6-in-ip',
  [IP_PROTO_GRE]: 'gre',
  97: 'etherip',
  115: 'l2tp',
  137: 'mpls-in-ip',
};
/**
 * UDP destination ports of tunnels: 1701 L2TP (RFC 2661), 2152 GTP-U (3GPP TS 29.281), 3544
 * Teredo (RFC 4380), 4754 GRE-in-UDP (RFC 8086), 4789 VXLAN (RFC 7348), 4790 VXLAN-GPE, 6081
 * Geneve (RFC 8926), 6635 MPLS-in-UDP (RFC 7510), 8472 VXLAN on Linux's default port (`ip link
 * add … type vxlan` without `dstport`; flannel).
 */
const UDP_TUNNEL: ReadonlyMap<number, OpaqueClass> = new Map<number, OpaqueClass>([
  [1701, 'l2tp'],
  [2152, 'gtp-u'],
  [3544, 'teredo'],
  [4754, 'gre'],
  [UDP_VXLAN, 'vxlan'],
  [4790, 'vxlan-gpe'],
  [UDP_GENEVE, 'geneve'],
  [6635, 'mpls-in-udp'],
  [8472, 'vxlan'],
]);

function isLlcSnapIp(b: Uint8Array, o: number): boolean {
  if (b.length - o < 8 || b[o] !== 0xaa || b[o + 1] !== 0xaa || b[o + 2] !== 0x03 || b[o + 3] !== 0 || b[o + 4] !== 0 || b[o + 5] !== 0) return false;
  const t = get16(b, o + 6);
  return t === ETHERTYPE_IPV4 || t === ETHERTYPE_IPV6;
}

/** An EtherType the decoder hands back undecoded, with its payload at `l3Off`. */
export function opaqueEtherType(buf: Uint8Array, etherType: number, l3Off: number): Opaque | null {
  // An 802.3 length instead of an EtherType, with the LLC/SNAP header of IP (RFC 1042: DSAP/SSAP
  // 0xaa, UI, OUI 0, then the EtherType): IP in it is not decoded here, and a host SHOULD take it
  // (RFC 1122 §2.3.3; Linux does not). Other SNAP frames (CDP's OUI…) are not IP.
  if (etherType < 0x0600 && isLlcSnapIp(buf, l3Off)) return { cls: 'llc-snap' };
  if (etherType === ETHERTYPE_PPPOE_SESSION) return { cls: 'pppoe' };
  if (etherType === ETHERTYPE_MPLS || etherType === ETHERTYPE_MPLS_MULTICAST) return { cls: 'mpls' };
  if (etherType === ETHERTYPE_IPV6) return opaqueIpv6(buf, l3Off);
  return null;
}

/**
 * An IPv4 packet of protocol `proto` whose payload starts at `l4Off` and ends at `end`
 * (`first`: not a later fragment, so a UDP or AH header is there).
 */
export function opaqueIpv4(buf: Uint8Array, proto: number, l4Off: number, end: number, first: boolean): Opaque | null {
  return upper(buf, proto, l4Off, end, first);
}

/** The class of what an IPv6 packet at `off` carries (see the file comment), or null. */
export function opaqueIpv6(buf: Uint8Array, off: number): Opaque | null {
  if (buf.length - off < IPV6_HEADER_LEN || buf[off]! >>> 4 !== 6) return null;
  const w = walkIpv6(buf, off);
  // A chain longer than any real one: whatever it hides, it is not inspected.
  if (w.error === 'ipv6-chain-too-long' || w.error === 'ipv6-chain-too-big') return { cls: 'ipv6-tcp' };
  // A chain that stops short is not harmless once a Fragment header was seen: the rest of it
  // (and the upper-layer header) may come in the next fragment (RFC 7112 forbids it; not every
  // receiver drops it), so it is not inspected. Unfragmented, the receiver drops it.
  if (w.error !== null) {
    if (w.fragment !== null) return { cls: 'ipv6-tcp' };
    // A header whose length points past the end: what it names next is judged with no bytes
    // (TCP: not inspected, fail closed); a chain cut before a header: the receiver drops it.
    if (w.end - w.upperOff < 8) return null;
    const nx = buf[w.upperOff]!;
    return isIpv6ExtensionHeader(nx) ? null : upper(buf, nx, w.end, w.end, true);
  }
  if (w.fragment !== null && w.fragment.offset !== 0) {
    // A later fragment holds the middle of the payload after its Fragment header, never
    // headers: what it carries was named in the first fragment.
    return isIpv6ExtensionHeader(w.upperProto) ? { cls: 'ipv6-tcp' } : upper(buf, w.upperProto, w.upperOff, w.end, false);
  }
  // A first fragment without the whole UDP header: its port (VXLAN? Geneve?) is in the next one.
  if (w.fragment !== null && w.upperProto === IP_PROTO_UDP && w.end - w.upperOff < 8) return { cls: 'ipv6-tcp' };
  return upper(buf, w.upperProto, w.upperOff, w.end, true);
}

function upper(buf: Uint8Array, proto: number, l4Off: number, end: number, first: boolean): Opaque | null {
  if (proto === IP_PROTO_TCP) {
    // Only reached for IPv6 (IPv4 TCP is decoded); a later fragment has no ports.
    return first && end - l4Off >= 4 ? { cls: 'ipv6-tcp', srcPort: get16(buf, l4Off), dstPort: get16(buf, l4Off + 2) } : { cls: 'ipv6-tcp' };
  }
  const t = TUNNEL[proto];
  if (t !== undefined) return { cls: t };
  if (proto === IP_PROTO_AH) {
    // IPv4 AH (RFC 4302): the protected packet follows in the clear; TCP inside is a bypass.
    // A later fragment has no AH header to read (its first fragment was classified).
    if (!first || end - l4Off < 8) return null;
    const inner = buf[l4Off]!;
    if (inner === IP_PROTO_TCP || inner === IP_PROTO_AH) return { cls: 'ah' };
    // What AH protects is judged as if it were there: VXLAN or GRE-in-UDP inside AH carries TCP too.
    const ahLen = (buf[l4Off + 1]! + 2) * 4;
    return end - l4Off >= ahLen && upper(buf, inner, l4Off + ahLen, end, first) !== null ? { cls: 'ah' } : null;
  }
  if (proto === IP_PROTO_UDP && first && end - l4Off >= 8) {
    const cls = UDP_TUNNEL.get(get16(buf, l4Off + 2));
    if (cls !== undefined) return { cls };
  }
  return null;
}
