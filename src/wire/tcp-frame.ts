/**
 * Builds Ethernet/IPv4/TCP and Ethernet/IPv6/TCP frames from plain fields (for the JIT warm-up,
 * benchmarks, fuzzing and tests): uses the wire reprs, so every frame has correct checksums (or
 * the partial checksum a TAP with offloads hands over, `checksum: 'partial'`; with `gsoSize`, the
 * virtio-net header of a GSO frame in front; with `needsCsum` (IPv4), the virtio-net header of a single
 * segment with a partial checksum, as a local stack with offloads sends even its pure ACKs).
 */
import { set16 } from './bytes.js';
import { finish, fold16, sum16 } from './checksum.js';
import { ETHERTYPE_IPV4, ETHERTYPE_IPV6, EthernetRepr } from './ethernet.js';
import { ipv6KeyBytes, type IpAddr } from './ip.js';
import { IP_PROTO_TCP, Ipv4Repr } from './ipv4.js';
import { emitIpv6Header, IPV6_HEADER_LEN, ipv6PseudoHeaderSum } from './ipv6.js';
import { TCP_CHECKSUM_OFFSET, TcpRepr, type TcpChecksumMode, type TcpOption } from './tcp.js';
import { VirtioNetHdrRepr, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_NONE, VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_LEN } from './virtio.js';

export interface TcpFrameSpec {
  /** IPv4 as a number; IPv6 as its key (wire/ip.ts; both addresses of one family). */
  src: IpAddr;
  dst: IpAddr;
  srcPort: number;
  dstPort: number;
  seq: number;
  ack?: number;
  flags: number;
  window?: number;
  options?: readonly TcpOption[];
  payload?: Uint8Array;
  /** Bytes left free before the Ethernet header (a virtio-net header the caller writes). */
  headroom?: number;
  srcMac?: Uint8Array;
  dstMac?: Uint8Array;
  checksum?: TcpChecksumMode;
  /**
   * IPv4 only: a GSO frame as a TAP with offloads hands it over (wire/virtio.ts) — a virtio-net
   * header at the end of the headroom (at least VIRTIO_NET_HDR_LEN) with NEEDS_CSUM, GSO TCPv4 of
   * segments of this size, and the checksum partial (`checksum` is not read).
   */
  gsoSize?: number;
  /**
   * IPv4 only: NEEDS_CSUM without GSO (`gsoSize` absent), as a TAP with offloads hands over every
   * other segment a local stack sends (a pure ACK, a short answer): the virtio-net header says so
   * and the checksum is partial.
   */
  needsCsum?: boolean;
  /** IPv6 only: extension headers between the fixed header and TCP (raw, chained to TCP), and the fixed header's Next Header for them. */
  ipv6ExtHeaders?: Uint8Array;
  ipv6FirstHeader?: number;
}

const MAC_A = new Uint8Array([2, 0, 0, 0, 0, 1]);
const MAC_B = new Uint8Array([2, 0, 0, 0, 0, 2]);

export function tcpFrame(s: TcpFrameSpec): Uint8Array {
  const tcp = new TcpRepr({
    srcPort: s.srcPort,
    dstPort: s.dstPort,
    seq: s.seq >>> 0,
    ack: (s.ack ?? 0) >>> 0,
    flags: s.flags,
    window: s.window ?? 65535,
    options: s.options ?? [],
    payload: s.payload ?? new Uint8Array(0),
  });
  const head = s.headroom ?? 0;
  if (typeof s.src === 'string' || typeof s.dst === 'string') return tcp6Frame(s, tcp, head);
  const ip = new Ipv4Repr({ src: s.src, dst: s.dst, protocol: IP_PROTO_TCP, payloadLen: tcp.bufferLen(), ttl: 64, dontFrag: true });
  const eth = new EthernetRepr(s.dstMac ?? MAC_B, s.srcMac ?? MAC_A, ETHERTYPE_IPV4);
  const out = new Uint8Array(head + eth.bufferLen() + ip.bufferLen() + tcp.bufferLen());
  let o = head + eth.emit(out.subarray(head));
  o += ip.emit(out.subarray(o));
  const gso = s.gsoSize;
  const partial = gso !== undefined || s.needsCsum === true;
  tcp.emit(out.subarray(o), s.src, s.dst, partial ? 'partial' : (s.checksum ?? 'full'));
  if (partial) {
    if (head < VIRTIO_NET_HDR_LEN) throw new RangeError(`tcpFrame: a GSO or NEEDS_CSUM frame needs ${VIRTIO_NET_HDR_LEN} bytes of headroom, not ${head}`);
    const l4 = o - head;
    // Linux fills hdr_len for GSO frames only (virtio_net_hdr_from_skb).
    new VirtioNetHdrRepr({
      flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
      gsoType: gso !== undefined ? VIRTIO_NET_HDR_GSO_TCPV4 : VIRTIO_NET_HDR_GSO_NONE,
      hdrLen: gso !== undefined ? l4 + tcp.bufferLen() - (s.payload?.length ?? 0) : 0,
      gsoSize: gso ?? 0,
      csumStart: l4,
      csumOffset: TCP_CHECKSUM_OFFSET,
    }).emit(out.subarray(head - VIRTIO_NET_HDR_LEN));
  }
  return out;
}

/** The IPv6 frame of `s` (no extension headers; `extHeaders`: raw bytes put between the fixed header and TCP, whose first byte must be TCP's Next Header chain). */
function tcp6Frame(s: TcpFrameSpec, tcp: TcpRepr, head: number): Uint8Array {
  const eth = new EthernetRepr(s.dstMac ?? MAC_B, s.srcMac ?? MAC_A, ETHERTYPE_IPV6);
  const ext = s.ipv6ExtHeaders ?? new Uint8Array(0);
  const tcpLen = tcp.bufferLen();
  const out = new Uint8Array(head + eth.bufferLen() + IPV6_HEADER_LEN + ext.length + tcpLen);
  const l3 = head + eth.emit(out.subarray(head));
  emitIpv6Header(out, l3, ext.length + tcpLen, ext.length > 0 ? s.ipv6FirstHeader! : IP_PROTO_TCP, ipv6KeyBytes(s.src as string), ipv6KeyBytes(s.dst as string));
  out.set(ext, l3 + IPV6_HEADER_LEN);
  const l4 = l3 + IPV6_HEADER_LEN + ext.length;
  tcp.emit(out.subarray(l4), 0, 0, 'none');
  const pseudo = ipv6PseudoHeaderSum(out, l3 + 8, l3 + 24, IP_PROTO_TCP, tcpLen);
  const mode = s.checksum ?? 'full';
  if (mode === 'full') set16(out, l4 + TCP_CHECKSUM_OFFSET, finish(sum16(out, l4, l4 + tcpLen, pseudo)));
  else if (mode === 'partial') set16(out, l4 + TCP_CHECKSUM_OFFSET, fold16(pseudo));
  return out;
}
