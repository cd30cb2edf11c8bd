/**
 * The first stage of the data path: admission. One frame as it came from a side — size, virtio
 * header, wire decoding, and the drops a security gateway makes before any state is touched —
 * becomes an admitted frame for the stages after it, or nothing (dropped, counted by reason,
 * logged rate-limited). It keeps no state of its own besides the counters it adds to.
 *
 * Malformed frames are dropped and counted by reason (a security gateway does not forward what it
 * cannot parse); with `verifyChecksums: false` (captures taken with checksum offload) checksums
 * are not checked, and rewritten frames get correct ones anyway.
 *
 * Hostile input (issue 6). Every drop has a counter in `stats()` and a rate-limited warn line
 * (util/ratelog.ts: a flood costs counter increments, not a log line per frame):
 * - frames larger than `limits.maxFrameBytes` (`malformed['frame-oversized']`), and IPv4 packets
 *   followed by more bytes than Ethernet minimum-size padding (`malformed['ipv4-trailing-bytes']`:
 *   a packet whose total length says less than the frame holds is lying about one of the two;
 *   what a receiver makes of the extra bytes is not ours to guess), besides every wire error of
 *   decodeFrame under its own reason code (truncations, bad IHL / data offset, total lengths
 *   that lie, IPv4 and TCP option lists running past the header, bad checksums);
 * - IPv4 and IPv6 fragments of TCP (`tcpFragmentsDropped`), first or not: the gateway does not reassemble,
 *   and a rewriting gateway must not let TCP bytes it never saw in order reach an endpoint (a
 *   fragmented segment would bypass the rules). Dropping is safe because the endpoints use PMTU
 *   discovery (DF set, RFC 1191): a TCP sender never needs fragmentation on the lab's or a
 *   bridged segment's equal-MTU path. Reassembly (bounded, with timeouts, overlaps refused as in
 *   RFC 5722's spirit) would be the alternative for paths that fragment; it is not needed here and
 *   is a classic source of evasion and memory exhaustion. Non-TCP fragments are bridged as is;
 * - TCP segments with flag combinations no TCP sends (`badFlags` by class: `null` (no flags),
 *   `syn-fin`, `syn-rst`, `rst-fin`, and `fin-no-ack` / `psh-no-ack` / `urg-no-ack`: a segment
 *   without ACK must carry SYN or RST, RFC 9293 §3.10.7), port 0, the same endpoint as source and
 *   destination ("land"), or a broadcast/multicast/unspecified address (`badEndpoints`). These
 *   are scans and stack attacks; dropping them before the flow table also keeps them out of it;
 * - a partial checksum that is not TCP's (`virtio-csum-not-tcp`), GSO that is not TCPv4 with a
 *   partial sum (`virtio-bad-gso`), a bad virtio header, a frame from the wrong segment (cluster
 *   loop suppression, `wrongSide`);
 * - what the policy says of traffic that cannot be inspected (wire/opaque.ts, engine/policy.ts),
 *   TCP with an IPv4 source route in flight among it (`policy.sourceRouted`).
 *
 * TAP GSO (`vnetHdr: true`, docs/ARCHITECTURE.md §6): every frame in and out starts with the 10-byte
 * virtio_net_hdr (wire/virtio.ts). A GSO frame (gso_type TCPV4, up to 64 KiB) is ONE segment to
 * the stream engine. Frames flagged NEEDS_CSUM (partial checksum) or DATA_VALID are decoded
 * without checksum verification; others are verified as usual. What Linux puts in a partial TCP
 * checksum field was checked on this kernel by reading GSO frames from a TAP (tcp_v4_send_check
 * → `th->check = ~tcp_v4_check(skb->len, saddr, daddr, 0)`): the folded, NOT complemented,
 * pseudo-header sum WITH the full TCP length (header + all payload of the super-frame); hdr_len
 * is Ethernet + IP + TCP header length, csum_start the TCP header, csum_offset 16. The kernel's
 * GSO code (tcp_gso_segment) adjusts that sum from the super-frame length to each segment's.
 * (Hardware TSO drivers use a pseudo-header sum without the length; virtio/TAP does not.)
 * How frames leave with a vnet header (GSO kept, partial sums, splits): engine/emit.ts.
 */
import type { Limits } from '../stream/limits.js';
import { decodeFrame, type FrameArp, type FrameIpv4Other, type FrameOther, type FrameTcp, type LinkType } from '../wire/frame.js';
import { get16 } from '../wire/bytes.js';
import { IP_PROTO_TCP, ipv4ToString } from '../wire/ipv4.js';
import { endpointToString, type IpAddr } from '../wire/ip.js';
import { opaqueEtherType, opaqueIpv4, type Opaque } from '../wire/opaque.js';
import { TCP_ACK, TCP_CHECKSUM_OFFSET, TCP_FIN, TCP_RST, TCP_SYN, TCP_URG } from '../wire/tcp.js';
import {
  VIRTIO_NET_HDR_F_DATA_VALID,
  VIRTIO_NET_HDR_F_NEEDS_CSUM,
  VIRTIO_NET_HDR_GSO_ECN,
  VIRTIO_NET_HDR_GSO_NONE,
  VIRTIO_NET_HDR_GSO_TCPV4,
  VIRTIO_NET_HDR_GSO_TCPV6,
  VirtioNetHdrRepr,
} from '../wire/virtio.js';
import type { Side } from './emit.js';
import type { Policy } from './policy.js';

/**
 * Bytes after the IPv4 packet are accepted only as Ethernet minimum-size padding: up to a frame
 * of 60 bytes, 64 with slack for an 802.1Q tag or a trailing FCS on a minimum-size frame.
 */
const ETH_PADDED_MIN = 64;

/** A frame the stages after admission handle. Offsets in `d` do not include the virtio header. */
/** A TCP frame let in: decoded, and what its virtio header said (partial checksum, GSO). */
export interface AdmittedTcp {
  kind: 'tcp';
  d: FrameTcp;
  partial: boolean;
  gsoType: number;
  gsoSize: number;
}

export type Admitted =
  | AdmittedTcp
  | { kind: 'ipv4-other'; d: FrameIpv4Other; partial: boolean }
  | { kind: 'arp'; d: FrameArp }
  | { kind: 'other'; d: FrameOther };

/** The gateway's counters admission adds to. */
export interface AdmitCounters {
  oversized: number;
  wrongSide: number;
  malformed: Record<string, number>;
  badFlags: Record<string, number>;
  badEndpoints: Record<string, number>;
  tcp: number;
  nonTcp: number;
  partialIn: number;
  gsoIn: number;
  tcpFragmentsDropped: number;
}

/** How a drop is logged (the gateway's rate-limited log and event log). */
export type Warn = (key: string, nowMs: number, obj: () => Record<string, unknown>, msg: string) => void;

export interface AdmitOptions {
  counters: AdmitCounters;
  limits: Limits;
  /** Bytes of virtio header in front of every frame (0 or 10). */
  vh: number;
  /** Verify checksums of frames the device did not vouch for. */
  verify: boolean;
  /** Decode TCP over IPv6 (wire/frame.ts DecodeOptions.ipv6); otherwise it is opaque to the policy. */
  ipv6: boolean;
  warn: Warn;
  /** The policy in force (a reload replaces it). */
  policy: () => Policy;
  /** Cluster loop suppression: false = the frame came from a segment it must not come from. */
  fromSegment?: ((frame: Uint8Array, from: Side) => boolean) | undefined;
}

export class Admission {
  /** The virtio header of the frame being admitted (read into, not allocated, per frame). */
  private readonly vnetIn = new VirtioNetHdrRepr();

  constructor(private readonly o: AdmitOptions) {}

  /** `frame` as it arrived on `from`, or null when it is dropped (counted and logged). */
  admit(frame: Uint8Array, from: Side, nowMs: number, link: LinkType): Admitted | null {
    const c = this.o.counters;
    const vh = this.o.vh;
    const max = this.o.limits.maxFrameBytes;
    if (frame.length - vh > max) {
      c.oversized++;
      this.malformed('frame-oversized', nowMs, () => `frame of ${frame.length - vh} bytes > maxFrameBytes ${max}`);
      return null;
    }
    if (this.o.fromSegment !== undefined && !this.o.fromSegment(frame, from)) {
      c.wrongSide++;
      return null;
    }
    let verify = this.o.verify;
    let flags = 0;
    let gsoType = VIRTIO_NET_HDR_GSO_NONE;
    let gsoSize = 0;
    let csumStart = 0;
    let csumOffset = 0;
    if (vh !== 0) {
      const r = this.vnetIn;
      const err = VirtioNetHdrRepr.readInto(frame, frame.length - vh, r);
      if (err !== null) {
        this.malformed(err.reason, nowMs, () => err.detail);
        return null;
      }
      flags = r.flags;
      gsoType = r.gsoType;
      gsoSize = r.gsoSize;
      csumStart = r.csumStart;
      csumOffset = r.csumOffset;
      // A partial sum cannot verify; DATA_VALID says the device already did.
      if (flags & (VIRTIO_NET_HDR_F_NEEDS_CSUM | VIRTIO_NET_HDR_F_DATA_VALID)) verify = false;
    }
    const eth = vh === 0 ? frame : frame.subarray(vh);
    const d = decodeFrame(eth, { link, verifyChecksums: verify, ipv6: this.o.ipv6 });
    if (d.kind === 'tcp' || d.kind === 'ipv4-other') {
      const allowed = link === 'ethernet' ? Math.max(0, ETH_PADDED_MIN - d.ipEnd) : 0;
      if (d.paddingLen > allowed) {
        const v = d.kind === 'tcp' && d.ip6 !== null ? 6 : 4;
        this.malformed(`ipv${v}-trailing-bytes`, nowMs, () => `${d.paddingLen} bytes after an IPv${v} packet of ${d.ipEnd - d.l3Off}`);
        return null;
      }
    }
    switch (d.kind) {
      case 'error':
        // IPv6 TCP in fragments is dropped as IPv4's is (never reassembled), and counted alike.
        if (d.reason === 'ipv6-tcp-fragment') c.tcpFragmentsDropped++;
        this.malformed(d.reason, nowMs, () => d.detail);
        return null;
      case 'tcp': {
        const tcp = d.tcp;
        const bf = badFlagClass(tcp.flags);
        if (bf !== null) {
          this.impossible('flags', bf, nowMs, () => endpoints(d));
          return null;
        }
        const be = badEndpointClass(d.src, d.dst, tcp.srcPort, tcp.dstPort);
        if (be !== null) {
          this.impossible('endpoints', be, nowMs, () => endpoints(d));
          return null;
        }
        c.tcp++;
        const partial = (flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) !== 0;
        const gso = (gsoType & ~VIRTIO_NET_HDR_GSO_ECN) !== VIRTIO_NET_HDR_GSO_NONE;
        if (partial) {
          c.partialIn++;
          // The rewrite paths assume the partial sum is the TCP checksum (Linux always does
          // this for TCP); anything else cannot be rewritten safely.
          if (csumStart !== d.l4Off || csumOffset !== TCP_CHECKSUM_OFFSET) {
            this.malformed('virtio-csum-not-tcp', nowMs, () => `csum_start ${csumStart} csum_offset ${csumOffset}, TCP at ${d.l4Off}`);
            return null;
          }
        }
        if (gso) {
          const want = d.ip6 === null ? VIRTIO_NET_HDR_GSO_TCPV4 : VIRTIO_NET_HDR_GSO_TCPV6;
          if ((gsoType & ~VIRTIO_NET_HDR_GSO_ECN) !== want || gsoSize === 0 || !partial) {
            this.malformed('virtio-bad-gso', nowMs, () => `gso_type 0x${gsoType.toString(16)} gso_size ${gsoSize} flags ${flags} on IPv${d.ip6 === null ? 4 : 6} TCP`);
            return null;
          }
          c.gsoIn++;
        }
        return { kind: 'tcp', d, partial, gsoType: gso ? gsoType : VIRTIO_NET_HDR_GSO_NONE, gsoSize: gso ? gsoSize : 0 };
      }
      case 'ipv4-other': {
        if (d.protocol === IP_PROTO_TCP && d.isFragment) {
          // Every fragment of a TCP packet carries protocol 6 (and Linux reassembles only
          // fragments with equal protocols), so this drops every piece.
          c.tcpFragmentsDropped++;
          this.o.warn('tcp-fragment', nowMs, () => ({
            src: ipv4ToString(d.ip.src), dst: ipv4ToString(d.ip.dst), id: d.ip.ident, fragOffset: d.fragOffset, moreFrags: d.moreFrags,
          }), 'IPv4 fragment of TCP dropped (not reassembled)');
          return null;
        }
        c.nonTcp++;
        if (d.route !== null) {
          if (this.sourceRoutedDropped(eth, d, d.route, nowMs)) return null;
        } else {
          const o = opaqueIpv4(eth, d.protocol, d.l4Off, d.ipEnd, d.fragOffset === 0);
          if (o !== null && this.opaqueDropped(o, nowMs, () => ({ src: ipv4ToString(d.ip.src), dst: ipv4ToString(d.ip.dst), proto: d.protocol }))) return null;
        }
        return { kind: 'ipv4-other', d, partial: (flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) !== 0 && csumStart === d.l4Off };
      }
      case 'arp':
        c.nonTcp++;
        return { kind: 'arp', d };
      default: {
        c.nonTcp++;
        const o = opaqueEtherType(eth, d.etherType, d.l3Off);
        if (o !== null && this.opaqueDropped(o, nowMs, () => ({ etherType: `0x${d.etherType.toString(16)}` }))) return null;
        return { kind: 'other', d };
      }
    }
  }

  /**
   * TCP whose source route is still in flight (wire/frame.ts `route`): first the checks every TCP
   * segment gets (impossible flags; impossible endpoints, towards the hop its header names),
   * then the policy — covered when a rule matches it towards the hop or an address of the route,
   * in either orientation (by ports alone on a gateway with NAT, whose rules see translated
   * addresses). True = dropped (counted and logged).
   */
  private sourceRoutedDropped(buf: Uint8Array, d: FrameIpv4Other, route: readonly number[], nowMs: number): boolean {
    const ports = d.ipEnd - d.l4Off >= 4;
    const sport = ports ? get16(buf, d.l4Off) : undefined;
    const dport = ports ? get16(buf, d.l4Off + 2) : undefined;
    const what = (): Record<string, unknown> => ({
      src: ipv4ToString(d.ip.src), hop: ipv4ToString(d.ip.dst), route: route.map(ipv4ToString), ...(ports ? { srcPort: sport, dstPort: dport } : {}),
    });
    const bf = d.ipEnd - d.l4Off >= 14 ? badFlagClass(buf[d.l4Off + 13]!) : null;
    if (bf !== null) {
      this.impossible('flags', bf, nowMs, what);
      return true;
    }
    const be = sport !== undefined && dport !== undefined ? badEndpointClass(d.ip.src, d.ip.dst, sport, dport) : null;
    if (be !== null) {
      this.impossible('endpoints', be, nowMs, what);
      return true;
    }
    const action = this.o.policy().sourceRouted(d.ip.src, [d.ip.dst, ...route], sport, dport);
    if (action === 'pass') return false;
    this.o.warn('policy:source-routed', nowMs, () => ({ class: 'source-routed', ...what() }), 'TCP with a source route a rule may cover cannot be inspected: dropped (policy)');
    return true;
  }

  /** A TCP segment dropped for impossible flags or endpoints (badFlagClass / badEndpointClass `cls`): counted and logged. */
  private impossible(what: 'flags' | 'endpoints', cls: string, nowMs: number, detail: () => Record<string, unknown>): void {
    const counts = what === 'flags' ? this.o.counters.badFlags : this.o.counters.badEndpoints;
    counts[cls] = (counts[cls] ?? 0) + 1;
    this.o.warn(`bad-${what}:${cls}`, nowMs, () => ({ class: cls, ...detail() }), `TCP segment with impossible ${what} dropped`);
  }

  /** The policy on a frame wire/opaque.ts classified: true = dropped (counted and logged). */
  private opaqueDropped(o: Opaque, nowMs: number, what: () => Record<string, unknown>): boolean {
    const action = this.o.policy().opaque(o.cls, o.srcPort, o.dstPort);
    if (action === 'pass') return false;
    this.o.warn(`policy:${o.cls}`, nowMs, () => ({ class: o.cls, ...(o.dstPort !== undefined ? { srcPort: o.srcPort, dstPort: o.dstPort } : {}), ...what() }), 'traffic a rule may cover cannot be inspected: dropped (policy)');
    return true;
  }

  private malformed(reason: string, nowMs: number, detail: () => string): void {
    const c = this.o.counters;
    c.malformed[reason] = (c.malformed[reason] ?? 0) + 1;
    this.o.warn(`malformed:${reason}`, nowMs, () => ({ reason, detail: detail() }), 'malformed frame dropped');
  }
}

/** A TCP segment's endpoints and flags, for log lines. */
export function endpoints(d: FrameTcp): Record<string, unknown> {
  return { src: endpointToString(d.src, d.tcp.srcPort), dst: endpointToString(d.dst, d.tcp.dstPort), flags: d.tcp.flags };
}

/**
 * The class of a flag combination no TCP sends (RFC 9293 §3.1, §3.10.7), or null. Only the six
 * classic bits count; ECE/CWR/NS are ECN's business.
 */
export function badFlagClass(flags: number): string | null {
  const f = flags & 0x3f;
  if (f === 0) return 'null';
  if ((f & (TCP_SYN | TCP_FIN)) === (TCP_SYN | TCP_FIN)) return 'syn-fin';
  if ((f & (TCP_SYN | TCP_RST)) === (TCP_SYN | TCP_RST)) return 'syn-rst';
  if ((f & (TCP_RST | TCP_FIN)) === (TCP_RST | TCP_FIN)) return 'rst-fin';
  // Without ACK a segment must be a SYN (opening) or a RST (answering a segment without ACK).
  if ((f & (TCP_ACK | TCP_SYN | TCP_RST)) === 0) return f & TCP_FIN ? 'fin-no-ack' : f & TCP_URG ? 'urg-no-ack' : 'psh-no-ack';
  return null;
}

/** A TCP endpoint pair no TCP connection can have, or null. */
export function badEndpointClass(src: IpAddr, dst: IpAddr, srcPort: number, dstPort: number): string | null {
  if (srcPort === 0 || dstPort === 0) return 'port-zero';
  if (src === dst && srcPort === dstPort) return 'land';
  if (typeof src === 'string' || typeof dst === 'string') return martian6(src as string) || martian6(dst as string) ? 'martian' : null;
  // 224/4 multicast, 240/4 reserved and broadcast: TCP is unicast (RFC 1122 §4.2.3.10); 0/8 as
  // a source is "this host", never on the wire for TCP.
  if (src >>> 28 >= 0xe || dst >>> 28 >= 0xe || src >>> 24 === 0 || dst >>> 24 === 0) return 'martian';
  return null;
}

/**
 * An IPv6 address (its key, wire/ip.ts) TCP never uses on a link: multicast ff00::/8 (TCP is
 * unicast), the unspecified address and loopback ::1 (RFC 4291 §2.5.2–3), IPv4-mapped
 * ::ffff:0:0/96 (RFC 4291 §2.5.5.2: never on the wire).
 */
function martian6(a: string): boolean {
  if (a.charCodeAt(0) >>> 8 === 0xff) return true;
  for (let i = 0; i < 5; i++) if (a.charCodeAt(i) !== 0) return false;
  const g5 = a.charCodeAt(5);
  if (g5 === 0xffff) return true;
  return g5 === 0 && a.charCodeAt(6) === 0 && a.charCodeAt(7) <= 1;
}
