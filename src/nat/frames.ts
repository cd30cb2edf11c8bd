/**
 * NAT applied to frames: the glue between the wire views and the pure NatTable (./nat.ts). What
 * is translated per packet, ARP, and masquerade's layer-2 ownership (MasqL2) are described in
 * docs/ARCHITECTURE.md §6 ("NAT on frames"). Invariants kept here: every frame is rewritten IN
 * PLACE with RFC 1624 incremental checksum updates (csumReplace16/32 for full checksums,
 * sumReplace16/32 for a partial checksum, virtio NEEDS_CSUM, whose field holds the uncomplemented
 * pseudo-header sum); no real address of a mapping ever crosses to the other side (dropped:
 * `real-address`, `arp-real-address`, `masquerade-untranslated`); every table here is bounded and
 * counted.
 */
import { get16, get32, set16, set32 } from '../wire/bytes.js';
import { cidrContains } from '../wire/cidr.js';
import { ETHERTYPE_ARP, ETHERTYPE_IPV6, isVlanTpid, macToString, parseMac, VLAN_TAG_LEN } from '../wire/ethernet.js';
import type { IpAddr } from '../wire/ip.js';
import type { Masquerade, NatProto, NatSide, NatTable, Tuple } from './nat.js';
import { csumReplace16, csumReplace32, finish, sum16, sumReplace32 } from '../wire/checksum.js';
import { ARP_LEN, ARP_OP_REPLY, ARP_OP_REQUEST, ArpRepr, type ArpPacket } from '../wire/arp.js';

const IP_PROTO_ICMP = 1;
const IP_PROTO_TCP = 6;
const IP_PROTO_UDP = 17;

export type NatDropReason =
  | 'table-full' | 'ports-exhausted' | 'no-entry' | 'real-address' | 'fragment' | 'arp-real-address'
  | 'no-mac' | 'masquerade-untranslated'
  /** An ICMP error not sent to the source of the packet it quotes (Linux: nf_conntrack_inet_error). */
  | 'icmp-unrelated'
  /** NPTv6: an address whose interface identifier is all 0xFFFF (RFC 6296 §3.4): no checksum-neutral word. */
  | 'nptv6-untranslatable';

export type NatFrameResult =
  | { kind: 'pass' }
  /** Rewritten in place (`entry`: the NAT entry that translated it, when one did). */
  | { kind: 'translated'; entry?: number }
  /** Taken by the gateway (an ARP request it answered, a reply it delivered): not forwarded. */
  | { kind: 'consumed' }
  | { kind: 'drop'; reason: NatDropReason };

const other = (s: NatSide): NatSide => (s === 0 ? 1 : 0);

/** ICMP query types whose identifier is at offset 4 (echo, timestamp, info, address mask). */
const ICMP_QUERY = new Set([0, 8, 13, 14, 15, 16, 17, 18]);
const ICMP_ERROR = new Set([3, 4, 5, 11, 12]);
/** The query types that ask (their answers are the type + 1): only these open an entry, only from its initiator. */
const ICMP_REQUEST = new Set([8, 13, 15, 17]);


/**
 * IPv4 options carry addresses (Record Route, Timestamp, source routes) that no translation
 * rewrites: a host echoes a Record Route with its own address in it (ping -R, a SYN-ACK). They
 * become NOPs (same length), the header checksum recomputed.
 */
function scrubOptions(b: Uint8Array, l3: number): void {
  const ihl = (b[l3]! & 0x0f) * 4;
  if (ihl <= 20) return;
  b.fill(1, l3 + 20, l3 + ihl);
  set16(b, l3 + 10, 0);
  set16(b, l3 + 10, finish(sum16(b, l3, l3 + ihl)));
}

/** Is `a` a real (hidden) address of a 1:1 mapping whose hosts are on `side`? */
export function isHiddenReal(nat: NatTable, side: NatSide, a: number): boolean {
  return nat.realMapping(side, a) >= 0;
}

/** Where the L4 checksum is, or -1 (none / not in the packet). */
function l4CsumOff(proto: number, l4Off: number, ipEnd: number): number {
  if (proto === IP_PROTO_TCP) return l4Off + 18 <= ipEnd ? l4Off + 16 : -1;
  if (proto === IP_PROTO_UDP) return l4Off + 8 <= ipEnd ? l4Off + 6 : -1;
  return -1;
}

export interface PacketRef {
  buf: Uint8Array;
  l3Off: number;
  l4Off: number;
  ipEnd: number;
  /** Not a first fragment (no L4 header here) or a first fragment of several. */
  fragment: boolean;
  /** The L4 checksum field holds a partial sum (virtio NEEDS_CSUM at the L4 header). */
  partial: boolean;
  /** TCP flags (for the NAT's TCP timeouts). */
  tcpFlags?: number;
}

/** Translates one IPv4 packet from `from` in place (IP options of a translated packet scrubbed). */
export function natIpv4(nat: NatTable, p: PacketRef, from: NatSide, now: number): NatFrameResult {
  const r = natIpv4Addrs(nat, p, from, now);
  if (r.kind === 'translated') scrubOptions(p.buf, p.l3Off);
  return r;
}

function natIpv4Addrs(nat: NatTable, p: PacketRef, from: NatSide, now: number): NatFrameResult {
  const b = p.buf;
  const proto = b[p.l3Off + 9]!;
  const src = get32(b, p.l3Off + 12);
  const dst = get32(b, p.l3Off + 16);
  if (isHiddenReal(nat, other(from), dst)) return { kind: 'drop', reason: 'real-address' };
  if (p.fragment) {
    const [s, d] = nat.oneToOneAddrs(from, src, dst);
    if (s === src && d === dst) {
      const masq = nat.masqueradeOf(from, src) >= 0 || nat.isMasqAddress(dst, from);
      return masq ? { kind: 'drop', reason: 'fragment' } : { kind: 'pass' };
    }
    rewriteAddrs(p, proto, s, d, !isFirstFragment(p));
    return { kind: 'translated' };
  }
  const l4 = p.l4Off;
  // Nothing to translate: to the shared address that is one without an entry.
  const untranslated = (): NatFrameResult => (nat.isMasqAddress(dst, from) ? { kind: 'drop', reason: 'no-entry' } : { kind: 'pass' });
  let np: NatProto;
  let sport: number;
  let dport: number;
  if (proto === IP_PROTO_TCP || proto === IP_PROTO_UDP) {
    if (l4 + 4 > p.ipEnd) return untranslated();
    np = proto === IP_PROTO_TCP ? 'tcp' : 'udp';
    sport = get16(b, l4);
    dport = get16(b, l4 + 2);
  } else if (proto === IP_PROTO_ICMP) {
    if (l4 + 8 > p.ipEnd) return untranslated();
    const type = b[l4]!;
    if (ICMP_ERROR.has(type)) return natIcmpError(nat, p, from, now);
    if (!ICMP_QUERY.has(type)) {
      const [s, d] = nat.oneToOneAddrs(from, src, dst);
      if (s === src && d === dst) return untranslated();
      rewriteAddrs(p, proto, s, d, true);
      return { kind: 'translated' };
    }
    np = 'icmp';
    sport = dport = get16(b, l4 + 4);
  } else {
    const [s, d] = nat.oneToOneAddrs(from, src, dst);
    if (s === src && d === dst) return untranslated();
    rewriteAddrs(p, proto, s, d, true);
    return { kind: 'translated' };
  }
  const pkt = {
    proto: np, src, sport, dst, dport, from,
    ...(p.tcpFlags !== undefined ? { tcpFlags: p.tcpFlags } : {}),
    ...(np === 'icmp' ? { icmpRequest: ICMP_REQUEST.has(b[l4]!) } : {}),
  };
  const v = nat.translate(pkt, now);
  if (v.kind === 'none') return { kind: 'pass' };
  if (v.kind === 'drop') return { kind: 'drop', reason: v.reason };
  const t = v.tuple;
  rewriteAddrs(p, proto, t.src, t.dst, false);
  if (np === 'icmp') {
    if (t.sport !== sport) {
      set16(b, l4 + 4, t.sport);
      set16(b, l4 + 2, csumReplace16(get16(b, l4 + 2), sport, t.sport));
    }
  } else {
    const co = l4CsumOff(proto, l4, p.ipEnd);
    const noCsum = proto === IP_PROTO_UDP && co >= 0 && get16(b, co) === 0;
    for (const [off, old, nw] of [[l4, sport, t.sport], [l4 + 2, dport, t.dport]] as const) {
      if (old === nw) continue;
      set16(b, off, nw);
      if (co >= 0 && !noCsum && !p.partial) set16(b, co, udpFix(proto, csumReplace16(get16(b, co), old, nw)));
    }
  }
  return v.entry !== undefined ? { kind: 'translated', entry: v.entry } : { kind: 'translated' };
}

function isFirstFragment(p: PacketRef): boolean {
  const fo = get16(p.buf, p.l3Off + 6) & 0x1fff;
  return fo === 0;
}

const udpFix = (proto: number, c: number): number => (proto === IP_PROTO_UDP && c === 0 ? 0xffff : c);

/** Sets src/dst with IPv4 header and (unless `noL4`) TCP/UDP pseudo-header checksum updates. */
function rewriteAddrs(p: PacketRef, proto: number, s: number, d: number, noL4: boolean): void {
  const b = p.buf;
  const co = noL4 ? -1 : l4CsumOff(proto, p.l4Off, p.ipEnd);
  const noCsum = proto === IP_PROTO_UDP && co >= 0 && get16(b, co) === 0;
  for (const [off, nw] of [[p.l3Off + 12, s], [p.l3Off + 16, d]] as const) {
    const old = get32(b, off);
    if (old === nw) continue;
    set32(b, off, nw);
    set16(b, p.l3Off + 10, csumReplace32(get16(b, p.l3Off + 10), old, nw));
    if (co >= 0 && !noCsum) {
      const c = get16(b, co);
      set16(b, co, p.partial ? sumReplace32(c, old, nw) : udpFix(proto, csumReplace32(c, old, nw)));
    }
  }
}

/** An ICMP error from `from` quoting a packet that left on `from` (see the file comment). */
function natIcmpError(nat: NatTable, p: PacketRef, from: NatSide, now: number): NatFrameResult {
  const b = p.buf;
  const l4 = p.l4Off;
  const i3 = l4 + 8;
  if (i3 + 20 > p.ipEnd) return { kind: 'pass' };
  const ihl = (b[i3]! & 0x0f) * 4;
  const i4 = i3 + ihl;
  if (ihl < 20 || i4 > p.ipEnd) return { kind: 'pass' };
  const iproto = b[i3 + 9]!;
  const isrc = get32(b, i3 + 12);
  const idst = get32(b, i3 + 16);
  const outerSrc = get32(b, p.l3Off + 12);
  const outerDst = get32(b, p.l3Off + 16);
  // The quoted packet as a reply arriving from `from`: invert(inner).
  let np: NatProto | undefined;
  let isp = 0;
  let idp = 0;
  if ((iproto === IP_PROTO_TCP || iproto === IP_PROTO_UDP) && i4 + 4 <= p.ipEnd) {
    np = iproto === IP_PROTO_TCP ? 'tcp' : 'udp';
    isp = get16(b, i4);
    idp = get16(b, i4 + 2);
  } else if (iproto === IP_PROTO_ICMP && i4 + 8 <= p.ipEnd && ICMP_QUERY.has(b[i4]!)) {
    np = 'icmp';
    isp = idp = get16(b, i4 + 4);
  }
  let t: Tuple | undefined;
  if (np !== undefined) t = nat.lookup(from, { proto: np, src: idst, sport: idp, dst: isrc, dport: isp }, now);
  // An error goes to the source of the packet it quotes; one about a packet no entry translated
  // must neither reach a masqueraded host (nor the shared address) nor quote one going out.
  if (t !== undefined && outerDst !== isrc) return { kind: 'drop', reason: 'icmp-unrelated' };
  if (t === undefined && (nat.isMasqAddress(isrc, from) || nat.hiderOf(from === 0 ? 1 : 0, isrc) >= 0 || nat.hiderOf(from, idst) >= 0)) {
    return { kind: 'drop', reason: 'no-entry' };
  }
  // New inner = invert(t): src = t.dst, sport = t.dport, dst = t.src, dport = t.sport.
  let nsrc: number;
  let ndst: number;
  let nsp = isp;
  let ndp = idp;
  if (t !== undefined) {
    nsrc = t.dst;
    ndst = t.src;
    nsp = t.dport;
    ndp = t.sport;
  } else {
    const [rs, rd] = nat.oneToOneAddrs(from, idst, isrc);
    nsrc = rd;
    ndst = rs;
  }
  const [os] = nat.oneToOneAddrs(from, outerSrc, outerDst);
  const mi = nat.masqueradeOf(from, outerSrc);
  const masq = mi < 0 ? undefined : nat.cfg.masquerade[mi];
  const nOuterSrc = os !== outerSrc ? os : masq !== undefined ? masq.address : outerSrc;
  const nOuterDst = nsrc;
  if (nsrc === isrc && ndst === idst && nsp === isp && ndp === idp && nOuterSrc === outerSrc && nOuterDst === outerDst) {
    return isHiddenReal(nat, other(from), outerDst) ? { kind: 'drop', reason: 'real-address' } : { kind: 'pass' };
  }
  // Inner header: addresses (inner IPv4 checksum), ports/id, inner L4 checksum when quoted.
  const ico = l4CsumOff(iproto, i4, p.ipEnd);
  const iNoCsum = iproto === IP_PROTO_UDP && ico >= 0 && get16(b, ico) === 0;
  for (const [off, nw] of [[i3 + 12, nsrc], [i3 + 16, ndst]] as const) {
    const old = get32(b, off);
    if (old === nw) continue;
    set32(b, off, nw);
    set16(b, i3 + 10, csumReplace32(get16(b, i3 + 10), old, nw));
    if (ico >= 0 && !iNoCsum) set16(b, ico, udpFix(iproto, csumReplace32(get16(b, ico), old, nw)));
  }
  if (np === 'icmp') {
    if (nsp !== isp && i4 + 8 <= p.ipEnd) {
      set16(b, i4 + 4, nsp);
      set16(b, i4 + 2, csumReplace16(get16(b, i4 + 2), isp, nsp));
    }
  } else if (np !== undefined) {
    for (const [off, old, nw] of [[i4, isp, nsp], [i4 + 2, idp, ndp]] as const) {
      if (old === nw) continue;
      set16(b, off, nw);
      if (ico >= 0 && !iNoCsum) set16(b, ico, udpFix(iproto, csumReplace16(get16(b, ico), old, nw)));
    }
  }
  // The quoted header's options (a Record Route the hidden host filled in) go as the packet's do.
  scrubOptions(b, i3);
  // Outer addresses (no pseudo-header for ICMP), then the ICMP checksum over the message.
  for (const [off, nw] of [[p.l3Off + 12, nOuterSrc], [p.l3Off + 16, nOuterDst]] as const) {
    const old = get32(b, off);
    if (old === nw) continue;
    set32(b, off, nw);
    set16(b, p.l3Off + 10, csumReplace32(get16(b, p.l3Off + 10), old, nw));
  }
  set16(b, l4 + 2, 0);
  set16(b, l4 + 2, finish(sum16(b, l4, p.ipEnd)));
  return { kind: 'translated' };
}

/**
 * ARP crossing from `from` (see the file comment): real addresses of 1:1 mappings on `from`
 * become their mapped ones; mapped addresses of mappings on the other side become real; a
 * request from `from` for a real address of the other side is dropped.
 */
export function natArp(nat: NatTable, arp: ArpPacket, from: NatSide): NatFrameResult {
  const s = arp.senderIp;
  const t = arp.targetIp;
  if (isHiddenReal(nat, other(from), t) || isHiddenReal(nat, other(from), s)) return { kind: 'drop', reason: 'arp-real-address' };
  const ns = mapArpAddr(nat, from, s);
  const nt = mapArpAddr(nat, from, t);
  if (ns === s && nt === t) return { kind: 'pass' };
  arp.setSenderIp(ns);
  arp.setTargetIp(nt);
  return { kind: 'translated' };
}

/** An address in an ARP payload from `from`: a real one of that side → mapped, a mapped one of the other side → real (the first mapping that names it). */
function mapArpAddr(nat: NatTable, from: NatSide, a: number): number {
  const i = nat.realMapping(from, a);
  const j = nat.mappedMapping(from === 0 ? 1 : 0, a);
  if (i < 0 && j < 0) return a;
  const m = nat.cfg.oneToOne;
  if (j < 0 || (i >= 0 && i < j)) return (m[i]!.mapped.addr | (a & ~m[i]!.real.mask)) >>> 0;
  return (m[j]!.real.addr | (a & ~m[j]!.mapped.mask)) >>> 0;
}

// ---------------------------------------------------------------------------------------------
// Masquerade at layer 2 (see the file comment).

/** The gateway's MAC for a masquerade address: locally administered unicast 02:74:a:b:c:d. */
export function masqMac(address: number): Uint8Array {
  return Uint8Array.of(0x02, 0x74, address >>> 24, (address >>> 16) & 0xff, (address >>> 8) & 0xff, address & 0xff);
}

const macKey = (b: Uint8Array, o: number): number => b[o]! * 2 ** 40 + b[o + 1]! * 2 ** 32 + get32(b, o + 2);
const BROADCAST_KEY = 0xffff_ffff_ffff;

export function newMasqL2Counters() {
  return {
    /** Real addresses whose MAC is known (gauge). */
    macs: 0,
    /** A new real address not learnt: the table was full. */
    macTableFull: 0,
    /** ARP requests for a masquerade address answered by the gateway. */
    arpAnswered: 0,
    /** ARP requests of masqueraded hosts relayed as the shared address. */
    arpRelayed: 0,
    /** ARP replies to the shared address delivered to the hosts that asked. */
    arpDelivered: 0,
    /** Pending askers not recorded: the table was full. */
    arpPendingFull: 0,
    /**
     * ARP requests the gateway sent as the shared address for a host whose MAC it did not know
     * when a reply to it arrived (that reply was dropped, counted as `no-mac`; at most one request
     * per host and second).
     */
    arpResolve: 0,
    /** Hosts' MACs learnt from a connection's cluster snapshot (a node that never heard them). */
    macsImported: 0,
  };
}

/** A masqueraded host's MAC as a connection's snapshot carries it (engine/gateway.ts ConnectionState). */
export interface HostMac {
  addr: number;
  /** aa:bb:cc:dd:ee:ff */
  mac: string;
}

interface Asker {
  ip: number;
  mac: Uint8Array;
}

/** Rule `m` hides host `a` (one of its sources, not its shared address). */
const hides = (m: Masquerade, a: number): boolean => m.address !== a && m.sources.some((c) => cidrContains(c, a));

/** Masquerade at layer 2: the gateway's MACs, the real hosts' MACs, relayed ARP (bounded). */
export class MasqL2 {
  readonly counters = newMasqL2Counters();
  /** Real address → MAC. */
  private readonly macs = new Map<number, Uint8Array>();
  private readonly macSet = new Set<number>();
  /** Target address of a relayed request → hosts that asked. */
  private readonly pending = new Map<number, Asker[]>();
  /** Real address → when the gateway last asked for its MAC (ARP resolution, bounded). */
  private readonly resolving = new Map<number, number>();
  private readonly gwMacs: Uint8Array[];

  constructor(private readonly nat: NatTable, readonly maxHosts = 4096) {
    this.gwMacs = nat.cfg.masquerade.map((m) => masqMac(m.address));
  }

  /** The rule whose hidden hosts on `side` include `a` (and `a` is not a shared address). */
  private ruleOfSource(side: NatSide, a: number): number {
    return this.nat.hiderOf(side, a);
  }

  private ruleOfAddress(otherSide: NatSide, a: number): number {
    return this.nat.cfg.masquerade.findIndex((m: Masquerade) => m.side !== otherSide && m.address === a);
  }

  /** Is this MAC one of a masqueraded host seen so far? */
  knownMac(eth: Uint8Array, off: number): boolean {
    return this.macSet.has(macKey(eth, off));
  }

  macOf(ip: number): Uint8Array | undefined {
    return this.macs.get(ip);
  }

  private learn(ip: number, eth: Uint8Array, off: number): void {
    const k = macKey(eth, off);
    if (k === BROADCAST_KEY || (eth[off]! & 1) !== 0 || k === 0) return;
    const cur = this.macs.get(ip);
    if (cur !== undefined && macKey(cur, 0) === k) return;
    if (cur === undefined && this.macs.size >= this.maxHosts) {
      this.counters.macTableFull++;
      return;
    }
    if (cur !== undefined) this.macSet.delete(macKey(cur, 0));
    this.macs.set(ip, eth.slice(off, off + 6));
    this.macSet.add(k);
    this.counters.macs = this.macs.size;
  }

  /** The MACs known of the masqueraded hosts among `addrs` (a connection's endpoints), for its snapshot. */
  exportMacs(addrs: readonly IpAddr[]): HostMac[] {
    const out: HostMac[] = [];
    for (const a of addrs) {
      if (typeof a !== 'number') continue;
      const mac = this.macs.get(a);
      if (mac !== undefined) out.push({ addr: a, mac: macToString(mac) });
    }
    return out;
  }

  /**
   * MACs a connection's snapshot carries, learnt where this node knows none (a MAC heard here is
   * as fresh or fresher): a node that restarted, or never saw the host speak, can address the
   * replies of a connection it takes over while the host is silent. Throws on a bad entry.
   */
  importMacs(list: readonly HostMac[]): void {
    if (!Array.isArray(list)) throw new Error('bad state: macs');
    for (const h of list) {
      const mac = typeof h?.mac === 'string' ? parseMac(h.mac) : null;
      if (mac === null || !Number.isInteger(h.addr) || h.addr < 0 || h.addr > 0xffff_ffff) throw new Error('bad state: macs');
      if (this.macs.has(h.addr) || !this.nat.cfg.masquerade.some((m) => hides(m, h.addr))) continue;
      const before = this.macs.size;
      this.learn(h.addr, mac, 0);
      if (this.macs.size > before) this.counters.macsImported++;
    }
  }

  /**
   * A reply to the shared address `dst0` arrived from `from` for host `dst` whose MAC is unknown
   * (dropped as `no-mac`): an ARP request for it as the shared address, to send out of the hosts' side with
   * the dropped frame's layer 2 header (`eth`, `l3Off`: VLAN tags kept) — at most one per host and
   * second; null otherwise. Its answer teaches every node the MAC (`arp`), so the sender's next
   * retransmission gets through.
   */
  resolve(eth: Uint8Array, l3Off: number, from: NatSide, dst0: number, dst: number, nowMs: number): Uint8Array | null {
    const ai = this.ruleOfAddress(from, dst0);
    if (ai < 0) return null;
    const last = this.resolving.get(dst);
    if (last !== undefined && nowMs - last < 1000) return null;
    if (last === undefined && this.resolving.size >= this.maxHosts) {
      const oldest = this.resolving.keys().next().value as number;
      this.resolving.delete(oldest);
    }
    this.resolving.delete(dst);
    this.resolving.set(dst, nowMs);
    const gw = this.gwMacs[ai]!;
    const typeOff = l3Off - 2;
    const f = new Uint8Array(l3Off + ARP_LEN);
    f.set(eth.subarray(0, typeOff));
    f.fill(0xff, 0, 6);
    f.set(gw, 6);
    set16(f, typeOff, ETHERTYPE_ARP);
    new ArpRepr(ARP_OP_REQUEST, gw, this.nat.cfg.masquerade[ai]!.address, new Uint8Array(6), dst).emit(f.subarray(l3Off));
    this.counters.arpResolve++;
    return f;
  }

  /**
   * An IPv4 frame from a masqueraded side for one of that side's own hosts (a flooded unicast, a
   * cache pointed at the other side): not for the other side, whose NAT would send it there
   * with the host's real address as its destination.
   */
  insideBound(eth: Uint8Array, from: NatSide, dst: number): boolean {
    if (!this.nat.cfg.masquerade.some((m) => m.side === from)) return false;
    return this.knownMac(eth, 0) || (this.macs.has(dst) && this.ruleOfSource(from, dst) >= 0);
  }

  /**
   * Learning only, for frames another cluster node forwards: every node keeps the masqueraded
   * hosts' MACs, so the one that takes a connection over can address replies at once.
   */
  observe(eth: Uint8Array, from: NatSide, src: number): void {
    if (this.ruleOfSource(from, src) >= 0) this.learn(src, eth, 6);
  }

  /**
   * Layer 2 of an IPv4 frame (`eth` = the Ethernet frame, translated in place by natIpv4
   * already) from `from`: `src0`/`dst0` as it arrived, `src1`/`dst1` as it leaves.
   */
  ipv4(eth: Uint8Array, from: NatSide, src0: number, dst0: number, src1: number, dst1: number): NatFrameResult {
    const ri = this.ruleOfSource(from, src0);
    if (ri >= 0) {
      this.learn(src0, eth, 6);
      const m = this.nat.cfg.masquerade[ri]!;
      if (src1 === src0) return { kind: 'drop', reason: 'masquerade-untranslated' };
      if (src1 === m.address) eth.set(this.gwMacs[ri]!, 6);
      return { kind: 'translated' };
    }
    const ai = this.ruleOfAddress(from, dst0);
    if (ai >= 0) {
      if (dst1 === dst0) return { kind: 'pass' };
      const mac = this.macs.get(dst1);
      if (mac === undefined) return { kind: 'drop', reason: 'no-mac' };
      eth.set(mac, 0);
      return { kind: 'translated' };
    }
    if (this.ruleOfSource(other(from), dst0) >= 0) return { kind: 'drop', reason: 'real-address' };
    return { kind: 'pass' };
  }

  /**
   * A non-IPv4, non-ARP frame from `from`: a masqueraded host's MAC must not cross. IPv6 from the
   * masquerade side does not cross at all unless NPTv6 translates that side: there is no IPv6
   * masquerade, and a host's first IPv6 frames (router and neighbour solicitations, MLD reports,
   * sent before its MAC is learnt from IPv4) would show its MAC and addresses to the other side.
   */
  other(eth: Uint8Array, from: NatSide): NatFrameResult {
    if (!this.nat.cfg.masquerade.some((m) => m.side === from)) return { kind: 'pass' };
    if (this.knownMac(eth, 6)) return { kind: 'drop', reason: 'masquerade-untranslated' };
    if (etherTypeOf(eth) === ETHERTYPE_IPV6 && !this.nat.cfg.nptv6.some((m) => m.side === from)) return { kind: 'drop', reason: 'masquerade-untranslated' };
    return { kind: 'pass' };
  }

  /**
   * ARP from `from` (`eth` = the Ethernet frame, `arp` a view into it). Returns the verdict for
   * the frame itself and frames to send: `back` (to `from`), `across` (to the other side).
   */
  arp(eth: Uint8Array, arpOff: number, arp: ArpPacket, from: NatSide): { r: NatFrameResult; back: Uint8Array[]; across: Uint8Array[] } {
    const none = { back: [] as Uint8Array[], across: [] as Uint8Array[] };
    const op = arp.operation;
    const spa = arp.senderIp;
    const tpa = arp.targetIp;
    // A masqueraded host speaking.
    const ri = this.ruleOfSource(from, spa);
    if (ri >= 0) {
      this.learn(spa, arp.senderMac, 0);
      // The answer to the gateway's own request (resolve): learnt, taken.
      if (op === ARP_OP_REPLY && this.ruleOfAddress(other(from), tpa) >= 0) return { r: { kind: 'consumed' }, ...none };
      // Replies, requests for the shared address or for a neighbour of its own side stay there.
      if (op !== ARP_OP_REQUEST || (this.ruleOfSource(from, tpa) >= 0 && this.macs.has(tpa)) || this.ruleOfAddress(other(from), tpa) >= 0 || spa === tpa) {
        return { r: { kind: 'drop', reason: 'arp-real-address' }, ...none };
      }
      const m = this.nat.cfg.masquerade[ri]!;
      // Asked as the other side knows it (natArp maps a published server's address next): its
      // reply comes from that address.
      const key = mapArpAddr(this.nat, from, tpa);
      let list = this.pending.get(key);
      if (list === undefined) {
        if (this.pending.size >= this.maxHosts) {
          // Targets that never answered would hold the table for good: the oldest goes.
          this.counters.arpPendingFull++;
          this.pending.delete(this.pending.keys().next().value as number);
        }
        list = [];
        this.pending.set(key, list);
      }
      if (!list.some((a) => a.ip === spa)) {
        if (list.length >= 64) list.shift();
        list.push({ ip: spa, mac: arp.senderMac.slice() });
      }
      const gw = this.gwMacs[ri]!;
      eth.set(gw, 6);
      arp.setSenderMac(gw);
      arp.setSenderIp(m.address);
      this.counters.arpRelayed++;
      return { r: { kind: 'translated' }, ...none };
    }
    // The other side claiming a masqueraded host's address (or the shared one) as its own: it
    // would point the hosts' caches for it at a MAC of that side.
    if (this.macs.has(spa) || this.ruleOfAddress(from, spa) >= 0) return { r: { kind: 'drop', reason: 'arp-real-address' }, ...none };
    // The other side about a shared address.
    const ai = this.ruleOfAddress(from, tpa);
    if (ai >= 0) {
      const gw = this.gwMacs[ai]!;
      if (op === ARP_OP_REQUEST) {
        if (spa === tpa) return { r: { kind: 'drop', reason: 'arp-real-address' }, ...none }; // a conflict probe: not ours to answer
        const f = eth.slice();
        const rep = f.subarray(arpOff);
        f.set(eth.subarray(6, 12), 0);
        f.set(gw, 6);
        set16(rep, 6, ARP_OP_REPLY);
        rep.set(eth.subarray(arpOff + 8, arpOff + 14), 18); // tha := requester's sha
        set32(rep, 24, spa);
        rep.set(gw, 8);
        set32(rep, 14, tpa);
        this.counters.arpAnswered++;
        return { r: { kind: 'consumed' }, back: [f], across: [] };
      }
      if (op === ARP_OP_REPLY) {
        const askers = this.pending.get(spa) ?? [];
        this.pending.delete(spa);
        // The sender as the askers know it (a published server: its mapped address).
        const as = mapArpAddr(this.nat, from, spa);
        const across = askers.map((a) => {
          const f = eth.slice();
          f.set(a.mac, 0);
          const rep = f.subarray(arpOff);
          set32(rep, 14, as);
          rep.set(a.mac, 18);
          set32(rep, 24, a.ip);
          return f;
        });
        this.counters.arpDelivered += across.length;
        return { r: { kind: 'consumed' }, back: [], across };
      }
      return { r: { kind: 'drop', reason: 'arp-real-address' }, ...none };
    }
    // The other side asking for a masqueraded host.
    if (this.ruleOfSource(other(from), tpa) >= 0 && (op === ARP_OP_REQUEST || this.macs.has(tpa))) {
      return { r: { kind: 'drop', reason: 'arp-real-address' }, ...none };
    }
    return { r: { kind: 'pass' }, ...none };
  }
}

/** The EtherType of an Ethernet frame after its 802.1Q/802.1ad tags (0 when cut short). */
function etherTypeOf(eth: Uint8Array): number {
  let o = 12;
  while (o + 2 <= eth.length && isVlanTpid(get16(eth, o))) o += VLAN_TAG_LEN;
  return o + 2 <= eth.length ? get16(eth, o) : 0;
}
