/**
 * Builds Ethernet/IPv4/TCP frames from plain fields (for the JIT warm-up, benchmarks, fuzzing and
 * tests): uses the wire reprs, so every frame has correct checksums (or the partial checksum a
 * TAP with offloads hands over, `checksum: 'partial'`).
 */
import { ETHERTYPE_IPV4, EthernetRepr } from './ethernet.js';
import { IP_PROTO_TCP, Ipv4Repr } from './ipv4.js';
import { TcpRepr, type TcpChecksumMode, type TcpOption } from './tcp.js';

export interface TcpFrameSpec {
  src: number;
  dst: number;
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
  const ip = new Ipv4Repr({ src: s.src, dst: s.dst, protocol: IP_PROTO_TCP, payloadLen: tcp.bufferLen(), ttl: 64, dontFrag: true });
  const eth = new EthernetRepr(s.dstMac ?? MAC_B, s.srcMac ?? MAC_A, ETHERTYPE_IPV4);
  const head = s.headroom ?? 0;
  const out = new Uint8Array(head + eth.bufferLen() + ip.bufferLen() + tcp.bufferLen());
  let o = head + eth.emit(out.subarray(head));
  o += ip.emit(out.subarray(o));
  tcp.emit(out.subarray(o), s.src, s.dst, s.checksum ?? 'full');
  return out;
}
