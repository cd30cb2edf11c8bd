/**
 * The NAT stage of the data path: every admitted IPv4 packet and ARP frame translated in place
 * (./frames.ts on the pure NatTable of ./nat.ts), then layer-2 ownership of masquerade
 * addresses (MasqL2: proxy ARP, MAC rewriting). It answers whether the frame goes on and, for
 * TCP, the flow table's view of the connection: each endpoint by its real address on its own
 * side (the source as it arrived, the destination after translation). Drops are counted by
 * reason (`natDropped`) and logged rate-limited; frames the stage makes itself (ARP answers,
 * relayed requests) go out through the emit stage.
 *
 * Configured by `config.nat` (issue 5, docs/ARCHITECTURE.md §6; side 0 = client side = the
 * first TAP): RFC 1624 incremental checksum updates, partial sums adjusted with sumReplace32, so
 * every frame leaves translated — passed-through, header-rewritten and rebuilt ones alike
 * (rebuilt frames take the translated template's addresses). Drops are counted in `natDropped` by reason. The flow table,
 * rule selection and the agents see ONE view of a NATed connection: each endpoint by its REAL
 * address on its own side — the source as it arrived (before source NAT) and the destination
 * after destination NAT. E.g. with the client 10.200.0.1 mapped to 10.200.0.101, the flow is
 * 10.200.0.1 ⇄ 10.200.0.2 in both directions, rules match 10.200.0.1, and the ftp agent's
 * context holds 10.200.0.1 (what natFtpHooks expects). The ftp agent then gets NAT-backed hooks
 * (natFtpHooks: PORT/EPRT/227/229 endpoints translated, expectations registered in the NAT)
 * unless a registry is passed in. With masquerade on Ethernet, MasqL2 (nat/frames.ts) owns the
 * shared address at layer 2 after the IPv4 translation: proxy ARP for it with a MAC of its own
 * (answers go back out of the side they came from), source MACs of masqueraded hosts rewritten
 * to it, replies given the real host's MAC (learnt per real address, bounded), the hosts' ARP
 * requests relayed as the shared address and the replies delivered to each asker; `nat.l2` in
 * `stats()` counts it.
 */
import { endpoints, type Admitted, type Warn } from '../engine/admit.js';
import type { Emit, Emitter, Side } from '../engine/emit.js';
import { decodeFrame, type LinkType } from '../wire/frame.js';
import { ipv4ToString } from '../wire/ipv4.js';
import { get16 } from '../wire/bytes.js';
import { ETHERTYPE_IPV6 } from '../wire/ethernet.js';
import { ipv6Key, type IpAddr } from '../wire/ip.js';
import { IPV6_HEADER_LEN } from '../wire/ipv6.js';
import { nptv6Addresses, nptv6Packet } from './nptv6.js';
import { MasqL2, natArp, natIpv4, type NatDropReason, type NatFrameResult } from './frames.js';
import type { NatTable } from './nat.js';

/** The flow table's endpoints for a translated TCP segment. */
export interface NatView {
  src: { addr: IpAddr; port: number };
  dst: { addr: IpAddr; port: number };
  /** The NAT entry that translated it (the gateway settles it when the connection closes). */
  entry?: number;
}

/** The gateway's counters the stage adds to. */
export interface NatStageCounters {
  natTranslated: number;
  natDropped: Partial<Record<NatDropReason, number>>;
}

/** What the stage decided: the frame goes on (with the view of a translated TCP segment), or not. */
export type NatOutcome = { go: true; view?: NatView } | { go: false };

const GO: NatOutcome = Object.freeze({ go: true });
const STOP: NatOutcome = Object.freeze({ go: false });

export class NatStage {
  /** Masquerade at layer 2; null without masquerade or Ethernet. */
  readonly masqL2: MasqL2 | null;

  constructor(
    readonly table: NatTable,
    link: LinkType,
    private readonly counters: NatStageCounters,
    private readonly warn: Warn,
    /** Bytes of virtio header in front of every frame (0 or 10). */
    private readonly vh: number,
    /** Where the frames the stage makes itself leave (engine/emit.ts). */
    private readonly out: Emitter,
  ) {
    this.masqL2 = table.cfg.masquerade.length > 0 && link === 'ethernet' ? new MasqL2(table) : null;
  }

  /**
   * A TCP frame the gateway made (engine/abort.ts, virtio header included), translated in place
   * as if it arrived on `from`; false when NAT drops it (counted as any frame it drops).
   */
  originated(frame: Uint8Array, from: Side, nowMs: number, link: LinkType, emit: Emit): boolean {
    const d = decodeFrame(frame.subarray(this.vh), { link, verifyChecksums: false, ipv6: true });
    if (d.kind !== 'tcp') return false;
    return this.frame({ kind: 'tcp', d, partial: false, gsoType: 0, gsoSize: 0 }, frame, from, nowMs, link, emit).go;
  }

  /** Translates `frame` (as admitted, from `from`) in place. */
  frame(ad: Admitted, frame: Uint8Array, from: Side, nowMs: number, link: LinkType, emit: Emit): NatOutcome {
    const vh = this.vh;
    const l2 = this.masqL2 !== null && link === 'ethernet' ? this.masqL2 : null;
    switch (ad.kind) {
      case 'tcp': {
        const d = ad.d;
        if (d.ip === null) return this.ipv6(frame, d.l3Off, d.ipEnd, from, nowMs, link, () => endpoints(d), d.tcp.srcPort, d.tcp.dstPort);
        const what = (): Record<string, unknown> => endpoints(d);
        const srcA = d.ip.src;
        const dstA = d.ip.dst;
        const srcP = d.tcp.srcPort;
        if (l2 !== null && l2.insideBound(frame.subarray(vh), from, dstA)) return this.stops({ kind: 'drop', reason: 'real-address' }, nowMs, what) ? STOP : GO;
        const r = natIpv4(this.table, {
          buf: frame, l3Off: d.l3Off + vh, l4Off: d.l4Off + vh, ipEnd: d.ipEnd + vh, fragment: false, partial: ad.partial, tcpFlags: d.tcp.flags,
        }, from, nowMs);
        if (this.stops(r, nowMs, what)) return STOP;
        if (l2 !== null) {
          const r2 = l2.ipv4(frame.subarray(vh), from, srcA, dstA, d.ip.src, d.ip.dst);
          if (r2.kind === 'drop') return this.l2Drop(r2, frame, d.l3Off, from, dstA, d.ip.dst, nowMs, what, emit);
        }
        return r.kind === 'translated' ? { go: true, view: { src: { addr: srcA, port: srcP }, dst: { addr: d.ip.dst, port: d.tcp.dstPort }, ...(r.entry !== undefined ? { entry: r.entry } : {}) } } : GO;
      }
      case 'ipv4-other': {
        const d = ad.d;
        const srcA = d.ip.src;
        const dstA = d.ip.dst;
        const what = (): Record<string, unknown> => ({ src: ipv4ToString(srcA), dst: ipv4ToString(dstA), proto: d.protocol });
        if (l2 !== null && l2.insideBound(frame.subarray(vh), from, dstA)) return this.stops({ kind: 'drop', reason: 'real-address' }, nowMs, what) ? STOP : GO;
        const r = natIpv4(this.table, {
          buf: frame, l3Off: d.l3Off + vh, l4Off: d.l4Off + vh, ipEnd: d.ipEnd + vh, fragment: d.isFragment, partial: ad.partial,
        }, from, nowMs);
        if (this.stops(r, nowMs, what)) return STOP;
        if (l2 !== null) {
          const r2 = l2.ipv4(frame.subarray(vh), from, srcA, dstA, d.ip.src, d.ip.dst);
          if (r2.kind === 'drop') return this.l2Drop(r2, frame, d.l3Off, from, dstA, d.ip.dst, nowMs, what, emit);
        }
        return GO;
      }
      case 'arp': {
        const d = ad.d;
        const what = (): Record<string, unknown> => ({ arpSender: ipv4ToString(d.arp.senderIp), arpTarget: ipv4ToString(d.arp.targetIp) });
        if (this.masqL2 !== null) {
          const m = this.masqL2.arp(frame.subarray(vh), d.l3Off, d.arp, from);
          for (const f of m.back) this.out.made(f, from, emit);
          for (const f of m.across) this.out.made(f, (1 - from) as Side, emit);
          if (this.stops(m.r, nowMs, what)) return STOP;
        }
        return this.stops(natArp(this.table, d.arp, from), nowMs, what) ? STOP : GO;
      }
      case 'other': {
        const d = ad.d;
        if (d.etherType === ETHERTYPE_IPV6 && this.table.cfg.nptv6.length > 0) {
          const l3 = vh + d.l3Off;
          const end = frame.length >= l3 + IPV6_HEADER_LEN ? Math.min(frame.length, l3 + IPV6_HEADER_LEN + get16(frame, l3 + 4)) - vh : 0;
          if (end > 0 && !this.ipv6(frame, d.l3Off, end, from, nowMs, link, () => ({ etherType: 'ipv6' })).go) return STOP;
        }
        return l2 !== null && this.stops(l2.other(frame.subarray(vh), from), nowMs, () => ({})) ? STOP : GO;
      }
    }
  }

  /**
   * NPTv6 (./nptv6.ts) on the IPv6 packet at `l3Off` (offsets without the virtio header), ending
   * at `end`; with ports (TCP) the flow table's view: the source as it arrived, the destination
   * after translation.
   */
  private ipv6(frame: Uint8Array, l3Off: number, end: number, from: Side, nowMs: number, link: LinkType, what: () => Record<string, unknown>, srcPort?: number, dstPort?: number): NatOutcome {
    const rules = this.table.cfg.nptv6;
    if (rules.length === 0) return GO;
    const eth = frame.subarray(this.vh);
    const src = srcPort !== undefined ? ipv6Key(eth, l3Off + 8) : null;
    // TCP needs its fixed header only (no second walk of a chain the decoder walked already).
    const r = src !== null ? nptv6Addresses(rules, eth, l3Off, from) : nptv6Packet(rules, eth, l3Off, end, from, link === 'ethernet');
    if (r === 'untranslatable') return this.stops({ kind: 'drop', reason: 'nptv6-untranslatable' }, nowMs, what) ? STOP : GO;
    // TCP from a masqueraded side crosses only with its source translated (MasqL2.other's rule
    // for the rest of IPv6: the host's address and MAC would show).
    if (src !== null && this.masqL2 !== null && this.table.cfg.masquerade.some((m) => m.side === from) && ipv6Key(eth, l3Off + 8) === src) {
      return this.stops({ kind: 'drop', reason: 'masquerade-untranslated' }, nowMs, what) ? STOP : GO;
    }
    if (r === 'none') return GO;
    this.counters.natTranslated++;
    if (src === null) return GO;
    return { go: true, view: { src: { addr: src, port: srcPort! }, dst: { addr: ipv6Key(eth, l3Off + 24), port: dstPort! } } };
  }

  /**
   * A frame masquerade's layer 2 refused (counted, logged); when the refusal is a host's unknown
   * MAC, the gateway asks for it (MasqL2.resolve) out of the hosts' side.
   */
  private l2Drop(r: NatFrameResult & { kind: 'drop' }, frame: Uint8Array, l3Off: number, from: Side, dst0: number, dst1: number, nowMs: number, what: () => Record<string, unknown>, emit: Emit): NatOutcome {
    this.stops(r, nowMs, what);
    if (r.reason === 'no-mac') {
      const req = this.masqL2!.resolve(frame.subarray(this.vh), l3Off, from, dst0, dst1, nowMs);
      if (req !== null) this.out.made(req, (1 - from) as Side, emit);
    }
    return STOP;
  }

  /** A TCP frame this node does not forward: masquerade still learns its sender's MAC. */
  observe(frame: Uint8Array, from: Side, src: number, link: LinkType): void {
    if (this.masqL2 !== null && link === 'ethernet') this.masqL2.observe(frame.subarray(this.vh), from, src);
  }

  /** Counts a translation; true = the frame stops here (consumed, or dropped: counted and logged). */
  private stops(r: NatFrameResult, nowMs: number, what: () => Record<string, unknown>): boolean {
    if (r.kind === 'translated') this.counters.natTranslated++;
    else if (r.kind === 'consumed') return true;
    else if (r.kind === 'drop') {
      const reason: NatDropReason = r.reason;
      const c = this.counters.natDropped;
      c[reason] = (c[reason] ?? 0) + 1;
      this.warn(`nat:${reason}`, nowMs, () => ({ reason, ...what() }), 'packet dropped by NAT');
      return true;
    }
    return false;
  }
}
