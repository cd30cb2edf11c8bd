/**
 * What `replay` does to the records of everyday captures before the gateway sees them, each
 * counted (`CaptureFixCounters`, in the replay summary):
 * - cooked and loopback link layers (Linux SLL / SLL2 from `tcpdump -i any`, BSD NULL / LOOP)
 *   become raw IP: the gateway parses Ethernet and raw IP; a record whose link protocol is not
 *   IP (ARP in a cooked capture) is not replayed (`linkNotIp`);
 * - an Ethernet frame check sequence (4 bytes after the frame, when they are the CRC-32 of
 *   it) is stripped (`fcsStripped`), so are 4 zero bytes in its place (`fcsZeroStripped`: some
 *   capture drivers keep the FCS's room, not its value);
 * - an IPv4 total length of 0 in a complete record (captured on a sending host with TCP
 *   segmentation offload: the NIC fills it in) gets the record's real length and a new header
 *   checksum (`tsoLengthFixed`);
 * - with `--checksums auto`, TCP segments from a host whose segments are consistently wrong
 *   (`offloadingHosts`: captured before the NIC computed them) get their checksums filled in, as
 *   the wire had them (`offloadChecksumsFilled`); every other bad checksum is still dropped.
 * Pure functions over one record; the caller owns the copy they may change.
 */

import { hasValidFcs } from '../wire/crc32.js';
import { ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, EthernetFrame } from '../wire/ethernet.js';
import { WireError } from '../wire/error.js';
import { decodeFrame, type FrameTcp, type LinkType } from '../wire/frame.js';
import { finish, sum16 } from '../wire/checksum.js';
import { set16 } from '../wire/bytes.js';
import { pseudoHeaderSum, type IpAddr } from '../wire/ip.js';
import { TCP_CHECKSUM_OFFSET } from '../wire/tcp.js';
import { IP_PROTO_TCP, Ipv4Packet } from '../wire/ipv4.js';
import type { PcapLink } from './pcap.js';

export function newCaptureFixCounters() {
  return {
    linkConverted: 0,
    linkNotIp: 0,
    fcsStripped: 0,
    /** Four zero bytes where the FCS goes (its room kept, its value not), stripped. */
    fcsZeroStripped: 0,
    tsoLengthFixed: 0,
    offloadChecksumsFilled: 0,
  };
}
export type CaptureFixCounters = ReturnType<typeof newCaptureFixCounters>;

/** Address families of IPv6 in BSD loopback headers (Linux, NetBSD/OpenBSD, FreeBSD, macOS). */
const AF_INET = 2;
const AF_INET6 = new Set([10, 24, 28, 30]);
/** The shortest Ethernet frame without its FCS: shorter frames are padded to it. */
const ETH_MIN = 60;

/** A link the gateway parses as it is (the others are converted by `toReplayable`). */
export function isGatewayLink(l: PcapLink): l is LinkType {
  return l === 'ethernet' || l === 'raw-ipv4';
}

/** `l` when the gateway parses it as it is; an error otherwise (for captures known to be Ethernet or raw IP). */
export function gatewayLink(l: PcapLink): LinkType {
  if (!isGatewayLink(l)) throw new Error(`link ${l}: Ethernet or raw IP expected (replay converts it: toReplayable)`);
  return l;
}

export interface Replayable {
  link: LinkType;
  data: Uint8Array;
}

/**
 * The record as the gateway takes it (its link, the bytes without link extras), or null when
 * it is not IP on a cooked / loopback link. `complete`: the record holds the whole frame (its
 * captured length is its length on the wire).
 */
export function toReplayable(link: PcapLink, data: Uint8Array, complete: boolean, c: CaptureFixCounters): Replayable | null {
  switch (link) {
    case 'ethernet':
      return { link, data: fixEthernet(data, complete, c) };
    case 'raw-ipv4':
      return { link, data: complete ? fixTsoLength(data, 0, c) : data };
    case 'linux-sll':
      return cooked(data, 16, data.length >= 16 ? (data[14]! << 8) | data[15]! : -1, complete, c);
    case 'linux-sll2':
      return cooked(data, 20, data.length >= 20 ? (data[0]! << 8) | data[1]! : -1, complete, c);
    case 'null':
    case 'loop': {
      if (data.length < 4) return notIp(c);
      const be = ((data[0]! << 24) | (data[1]! << 16) | (data[2]! << 8) | data[3]!) >>> 0;
      const le = ((data[3]! << 24) | (data[2]! << 16) | (data[1]! << 8) | data[0]!) >>> 0;
      // NULL is in the capturing host's byte order: a family fits in 16 bits, so the order
      // whose value does is the right one. LOOP is always network order.
      const af = link === 'loop' ? be : be <= 0xffff ? be : le;
      const et = af === AF_INET ? ETHERTYPE_IPV4 : AF_INET6.has(af) ? ETHERTYPE_IPV6 : -1;
      return cooked(data, 4, et, complete, c);
    }
  }
}

function notIp(c: CaptureFixCounters): null {
  c.linkNotIp++;
  return null;
}

function cooked(data: Uint8Array, hdr: number, etherType: number, complete: boolean, c: CaptureFixCounters): Replayable | null {
  if (data.length < hdr || (etherType !== ETHERTYPE_IPV4 && etherType !== ETHERTYPE_IPV6)) return notIp(c);
  c.linkConverted++;
  const ip = data.subarray(hdr);
  return { link: 'raw-ipv4', data: complete && etherType === ETHERTYPE_IPV4 ? fixTsoLength(ip, 0, c) : ip };
}

/** Ethernet: the FCS stripped when present, then the TSO length fixed. */
function fixEthernet(data: Uint8Array, complete: boolean, c: CaptureFixCounters): Uint8Array {
  const e = EthernetFrame.parse(data);
  if (e instanceof WireError) return data;
  const l3 = e.headerLen;
  const et = e.etherType;
  // Where the frame's content ends, when its protocol says so (else: FCS not looked for).
  let end = -1;
  if (et === ETHERTYPE_IPV4 && data.length >= l3 + 20) end = l3 + ((data[l3 + 2]! << 8) | data[l3 + 3]!);
  else if (et === ETHERTYPE_IPV6 && data.length >= l3 + 40) end = l3 + 40 + ((data[l3 + 4]! << 8) | data[l3 + 5]!);
  else if (et === ETHERTYPE_ARP) end = l3 + 28;
  // Exactly 4 bytes beyond the packet (and its minimum-size padding): the FCS when they are its
  // CRC-32, or zeros (capture drivers that keep the FCS's room but not its value; Wireshark
  // reads them as an FCS too).
  if (end > l3 && complete && data.length - Math.max(end, ETH_MIN) === 4) {
    const n = data.length;
    const zero = data[n - 1] === 0 && data[n - 2] === 0 && data[n - 3] === 0 && data[n - 4] === 0;
    if (zero || hasValidFcs(data)) {
      if (zero) c.fcsZeroStripped++;
      else c.fcsStripped++;
      data = data.subarray(0, n - 4);
    }
  }
  return et === ETHERTYPE_IPV4 && complete ? fixTsoLength(data, l3, c) : data;
}

/** An IPv4 total length of 0 (TSO on the capturing host) → the record's length from l3. */
function fixTsoLength(data: Uint8Array, l3: number, c: CaptureFixCounters): Uint8Array {
  if (data.length < l3 + 20 || data[l3]! >>> 4 !== 4 || data[l3 + 2] !== 0 || data[l3 + 3] !== 0) return data;
  const hl = (data[l3]! & 0x0f) * 4;
  const len = data.length - l3;
  if (hl < 20 || len < hl || len > 0xffff || data[l3 + 9] !== IP_PROTO_TCP) return data;
  const out = data.slice();
  const ip = Ipv4Packet.unchecked(out.subarray(l3));
  ip.setTotalLen(len);
  ip.fillChecksum();
  c.tsoLengthFixed++;
  return out;
}

/** The record's TCP segment (IPv4 or IPv6), decoded (checksums not verified), or null. */
function tcpIn(r: Replayable): FrameTcp | null {
  const d = decodeFrame(r.data, { link: r.link, verifyChecksums: false, ipv6: true });
  return d.kind === 'tcp' ? d : null;
}

/** The segment's TCP checksum is right (and, for IPv4, its header checksum). */
function checksumsOk(r: Replayable, t: FrameTcp): boolean {
  if (t.ip !== null) return t.ip.verifyChecksum() && t.tcp.verifyChecksum(t.ip.src, t.ip.dst);
  return finish(sum16(r.data, t.l4Off, t.ipEnd, pseudoHeaderSum(r.data, t.l3Off, IP_PROTO_TCP, t.ipEnd - t.l4Off))) === 0;
}

/**
 * Per source (either family): TCP segments with a right and a wrong checksum (the first pass of
 * `--checksums auto`).
 */
export class ChecksumSurvey {
  private readonly seen = new Map<IpAddr, { good: number; bad: number }>();

  add(r: Replayable): void {
    const t = tcpIn(r);
    if (t === null) return;
    const ok = checksumsOk(r, t);
    let e = this.seen.get(t.src);
    if (e === undefined) this.seen.set(t.src, (e = { good: 0, bad: 0 }));
    if (ok) e.good++;
    else e.bad++;
  }

  /**
   * Hosts whose checksums are consistently wrong: at least 2 bad and at most 1 in 20 right (a
   * host with checksum offload has every captured segment wrong; an attacker's few bad
   * segments among good ones are not offload, and stay dropped).
   */
  offloadingHosts(): Map<IpAddr, { good: number; bad: number }> {
    const out = new Map<IpAddr, { good: number; bad: number }>();
    for (const [h, e] of this.seen) if (e.bad >= 2 && e.good * 20 <= e.bad) out.set(h, { ...e });
    return out;
  }
}

/** Fills in the TCP (and IPv4 header) checksum of a segment from one of `hosts` (in place). */
export function fillOffloadedChecksums(r: Replayable, hosts: ReadonlyMap<IpAddr, unknown>, c: CaptureFixCounters): void {
  const t = tcpIn(r);
  if (t === null || !hosts.has(t.src)) return;
  const tcpOld = t.tcp.checksum;
  if (t.ip === null) {
    set16(r.data, t.l4Off + TCP_CHECKSUM_OFFSET, 0);
    set16(r.data, t.l4Off + TCP_CHECKSUM_OFFSET, finish(sum16(r.data, t.l4Off, t.ipEnd, pseudoHeaderSum(r.data, t.l3Off, IP_PROTO_TCP, t.ipEnd - t.l4Off))));
    if (t.tcp.checksum !== tcpOld) c.offloadChecksumsFilled++;
    return;
  }
  const ipOld = t.ip.checksum;
  t.tcp.fillChecksum(t.ip.src, t.ip.dst);
  t.ip.fillChecksum();
  if (t.tcp.checksum !== tcpOld || t.ip.checksum !== ipOld) c.offloadChecksumsFilled++;
}
