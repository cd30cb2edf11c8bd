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

import type { LinkType } from '../wire/frame.js';
import { finish, ipv4PseudoHeaderSum, sum16 } from '../wire/checksum.js';
import { hasValidFcs } from '../wire/crc32.js';
import { ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, isVlanTpid, VLAN_TAG_LEN } from '../wire/ethernet.js';
import { IP_PROTO_TCP } from '../wire/ipv4.js';
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
const ETH_HEADER_LEN = 14;
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
  let l3 = ETH_HEADER_LEN;
  if (data.length < l3) return data;
  let et = (data[12]! << 8) | data[13]!;
  while (isVlanTpid(et) && data.length >= l3 + VLAN_TAG_LEN) {
    et = (data[l3 + 2]! << 8) | data[l3 + 3]!;
    l3 += VLAN_TAG_LEN;
  }
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
  out[l3 + 2] = len >>> 8;
  out[l3 + 3] = len & 0xff;
  setIpChecksum(out, l3, hl);
  c.tsoLengthFixed++;
  return out;
}

function setIpChecksum(b: Uint8Array, l3: number, hl: number): void {
  b[l3 + 10] = b[l3 + 11] = 0;
  const s = finish(sum16(b, l3, l3 + hl));
  b[l3 + 10] = s >>> 8;
  b[l3 + 11] = s & 0xff;
}

/** The IPv4 TCP segment in a replayable record: its offsets, or null. */
function tcpIn(r: Replayable): { l3: number; hl: number; end: number; src: number } | null {
  const d = r.data;
  let l3 = 0;
  if (r.link === 'ethernet') {
    l3 = ETH_HEADER_LEN;
    if (d.length < l3) return null;
    let et = (d[12]! << 8) | d[13]!;
    while (isVlanTpid(et) && d.length >= l3 + VLAN_TAG_LEN) {
      et = (d[l3 + 2]! << 8) | d[l3 + 3]!;
      l3 += VLAN_TAG_LEN;
    }
    if (et !== ETHERTYPE_IPV4) return null;
  }
  if (d.length < l3 + 20 || d[l3]! >>> 4 !== 4 || d[l3 + 9] !== IP_PROTO_TCP) return null;
  const hl = (d[l3]! & 0x0f) * 4;
  const end = l3 + ((d[l3 + 2]! << 8) | d[l3 + 3]!);
  // Fragments and truncated records are left to the gateway's own checks.
  if ((((d[l3 + 6]! << 8) | d[l3 + 7]!) & 0x3fff) !== 0 || hl < 20 || end > d.length || end < l3 + hl + 20) return null;
  const src = ((d[l3 + 12]! << 24) | (d[l3 + 13]! << 16) | (d[l3 + 14]! << 8) | d[l3 + 15]!) >>> 0;
  return { l3, hl, end, src };
}

function tcpSum(d: Uint8Array, t: { l3: number; hl: number; end: number }): number {
  const l4 = t.l3 + t.hl;
  const dst = ((d[t.l3 + 16]! << 24) | (d[t.l3 + 17]! << 16) | (d[t.l3 + 18]! << 8) | d[t.l3 + 19]!) >>> 0;
  const src = ((d[t.l3 + 12]! << 24) | (d[t.l3 + 13]! << 16) | (d[t.l3 + 14]! << 8) | d[t.l3 + 15]!) >>> 0;
  return sum16(d, l4, t.end, ipv4PseudoHeaderSum(src, dst, IP_PROTO_TCP, t.end - l4));
}

/**
 * Per IPv4 source: TCP segments with a right and a wrong checksum (the first pass of
 * `--checksums auto`).
 */
export class ChecksumSurvey {
  private readonly seen = new Map<number, { good: number; bad: number }>();

  add(r: Replayable): void {
    const t = tcpIn(r);
    if (t === null) return;
    const ok = finish(tcpSum(r.data, t)) === 0 && finish(sum16(r.data, t.l3, t.l3 + t.hl)) === 0;
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
  offloadingHosts(): Map<number, { good: number; bad: number }> {
    const out = new Map<number, { good: number; bad: number }>();
    for (const [h, e] of this.seen) if (e.bad >= 2 && e.good * 20 <= e.bad) out.set(h, { ...e });
    return out;
  }
}

/** Fills in the TCP (and IPv4 header) checksum of a segment from one of `hosts` (in place). */
export function fillOffloadedChecksums(r: Replayable, hosts: ReadonlyMap<number, unknown>, c: CaptureFixCounters): void {
  const t = tcpIn(r);
  if (t === null || !hosts.has(t.src)) return;
  const d = r.data;
  const ck = t.l3 + t.hl + 16;
  const old = (d[ck]! << 8) | d[ck + 1]!;
  const ipOld = (d[t.l3 + 10]! << 8) | d[t.l3 + 11]!;
  d[ck] = d[ck + 1] = 0;
  const s = finish(tcpSum(d, t));
  d[ck] = s >>> 8;
  d[ck + 1] = s & 0xff;
  setIpChecksum(d, t.l3, t.hl);
  if (s !== old || ((d[t.l3 + 10]! << 8) | d[t.l3 + 11]!) !== ipOld) c.offloadChecksumsFilled++;
}
