/**
 * Connections an agent gave up on (AgentOutput.abort: the http agent refused a request, which it
 * cannot answer, or a response whose header already went out): the gateway resets both ends so
 * neither waits for bytes that will never come, and from then on forwards nothing of the
 * connection. Called by gateway.ts beside the rewrite stage; the frames it makes leave through
 * emit.ts (and, under NAT, are translated by nat/stage.ts first).
 *
 * - At the abort (the segment whose bytes made the agent give up, after its own releases went
 *   out): a RST to that segment's receiver, built on its headers, at the sequence number after
 *   everything released to it (Connection.endSeq); and a RST back to its sender, built on the
 *   same headers reversed, at the sequence number after everything released to *it*. An
 *   endpoint that got all of it takes the RST (RFC 9293 §3.10.7.4: SEG.SEQ = RCV.NXT); one with
 *   bytes still in flight answers with a challenge ACK (RFC 5961 §3.2), which comes next.
 *   "Released" is what left this node (data, FIN), at least what the receiver acknowledged.
 * - An abort decided in a timer (a hold timeout made the agent decide) is sent from the timer,
 *   built on the segment a direction keeps while it holds bytes (either direction's serves: the
 *   RST to the other end is built on it reversed).
 * - After it: every segment of the connection is dropped (counted). One with an ACK is answered
 *   with a RST at its acknowledgment number, its sender's own RCV.NXT (RFC 9293 §3.10.7.1,
 *   "<SEQ=SEG.ACK><CTL=RST>"): exact, so a challenge ACK or a late segment closes that end. At
 *   most MAX_ANSWERS per end, the same ACK once per REANSWER_MS (a window in flight carries one
 *   ACK); RSTs are never answered.
 * - The flow table closes the connection as reset (flow/table.ts `reset`): it leaves after
 *   closedTimeoutMs like any reset one.
 *
 * The RSTs carry no options and no ACK flag (a RST is validated by its sequence number alone in
 * every synchronized state); the link-layer header is the template's (MACs swapped going back,
 * VLAN tags kept), the IP header a plain one (IPv4 without options, DF; IPv6 without extension
 * headers), with full checksums and a zero virtio header (no GSO, no partial sum).
 */
import type { Flow, FlowTable } from '../flow/table.js';
import type { NatStage } from '../nat/stage.js';
import type { Connection } from '../stream/connection.js';
import { get16, get32, set16 } from '../wire/bytes.js';
import { finish, sum16 } from '../wire/checksum.js';
import type { FrameTcp, LinkType } from '../wire/frame.js';
import { ipVersion, pseudoHeaderSum } from '../wire/ip.js';
import { IP_PROTO_TCP, IPV4_MIN_HEADER_LEN, Ipv4Repr } from '../wire/ipv4.js';
import { emitIpv6Header, IPV6_HEADER_LEN } from '../wire/ipv6.js';
import { TCP_ACK, TCP_CHECKSUM_OFFSET, TCP_HEADER_LEN, TCP_RST, TcpRepr } from '../wire/tcp.js';
import type { Warn } from './admit.js';
import type { Emit, Emitter, SegTag, Side } from './emit.js';

/** RSTs sent in answer to one end's segments of an aborted connection, at most. */
export const MAX_ANSWERS = 16;
/** The same ACK from the same end is answered again only after this long. */
export const REANSWER_MS = 100;

const TTL = 64;

/** The gateway's counters this stage adds to. */
export interface AbortCounters {
  /** Connections reset because their agent gave up on them. */
  aborted: number;
  /** RSTs the gateway made (two per abort, then one per answered segment). */
  rstOriginated: number;
  /** Segments of aborted connections dropped. */
  abortDropped: number;
}

export interface AbortOptions {
  counters: AbortCounters;
  flows: FlowTable<Connection<SegTag>>;
  emitter: Emitter;
  /** Translates what goes back to a sender under NAT; null without NAT. */
  nat: () => NatStage | null;
  warn: Warn;
  link: LinkType;
  /** Bytes of virtio header in front of every frame (0 or 10). */
  vh: number;
  /** The event log, if any. */
  event?: ((ev: Record<string, unknown>, nowMs: number) => void) | undefined;
}

/** The headers a RST is built on: a frame and where its IP and TCP headers start (virtio header included). */
interface Template {
  frame: Uint8Array;
  l3Off: number;
  l4Off: number;
}

export class Aborter {
  constructor(private readonly o: AbortOptions) {}

  /**
   * `f`'s agent gave up (its Connection.abort is set, not yet sent) while a segment `d` from
   * `side`, arrived on `from`, was handled (its releases already sent): a RST to each end built
   * on it.
   */
  start(f: Flow<Connection<SegTag>>, side: 0 | 1, d: FrameTcp, frame: Uint8Array, from: Side, nowMs: number, emit: Emit): void {
    this.reset(f, side, this.template(d, frame), from, nowMs, emit);
  }

  /**
   * `f`'s agent gave up in a timer (a hold timeout made it decide): a RST to each end built on
   * the segment a direction keeps for originating (there is one: the agent was holding bytes).
   * Without one the abort waits for the connection's next segment.
   */
  fromTimer(f: Flow<Connection<SegTag>>, nowMs: number, emit: Emit): void {
    const t = f.conn!.template();
    if (t === null) return;
    this.reset(f, t.side, t.tag, t.tag.from, nowMs, emit);
  }

  /**
   * A segment of a connection whose agent gave up: dropped. When the abort came from a timer
   * without a template, its RSTs are sent now, built on this segment; else the segment is
   * answered with a RST where it says its sender is.
   */
  segment(f: Flow<Connection<SegTag>>, side: 0 | 1, d: FrameTcp, frame: Uint8Array, from: Side, nowMs: number, emit: Emit): void {
    this.o.counters.abortDropped++;
    const a = f.conn!.abort!;
    if (!a.sent) return this.start(f, side, d, frame, from, nowMs, emit);
    const flags = d.tcp.flags;
    if (flags & TCP_RST || !(flags & TCP_ACK) || a.answers[side] >= MAX_ANSWERS) return;
    // A window of segments in flight carries one ACK: answered once (again after REANSWER_MS,
    // should that RST be lost), so the budget lasts for what comes later (a challenge ACK).
    const ack = d.tcp.ack;
    if (a.lastAck[side] === ack && nowMs - a.lastMs[side] < REANSWER_MS) return;
    a.answers[side]++;
    a.lastAck[side] = ack;
    a.lastMs[side] = nowMs;
    this.back(this.template(d, frame), ack, from, nowMs, emit);
  }

  /** The RSTs of an abort, built on `t` (a segment from `side` that arrived on `from`). */
  private reset(f: Flow<Connection<SegTag>>, side: 0 | 1, t: Template, from: Side, nowMs: number, emit: Emit): void {
    const conn = f.conn!;
    const a = conn.abort!;
    a.sent = true;
    const o = this.o;
    o.counters.aborted++;
    this.send(resetFrame(t, o.vh, false, conn.endSeq(side)), (1 - from) as Side, emit);
    this.back(t, conn.endSeq((1 - side) as 0 | 1), from, nowMs, emit);
    o.flows.reset(f, nowMs);
    o.warn('abort', nowMs, () => ({ flow: f.id, reason: a.reason }), 'connection reset by the gateway: its agent gave up on it');
    o.event?.({ event: 'abort', flow: f.id, reason: a.reason }, nowMs);
  }

  private template(d: FrameTcp, frame: Uint8Array): Template {
    const vh = this.o.vh;
    return { frame, l3Off: d.l3Off + vh, l4Off: d.l4Off + vh };
  }

  /** A RST back to the sender of the template's segment (which arrived on `to`). */
  private back(t: Template, seq: number, to: Side, nowMs: number, emit: Emit): void {
    const fr = resetFrame(t, this.o.vh, true, seq);
    // Under NAT the template's addresses are the receiver side's: the reversed frame is what a
    // reply would be before translation, so it is translated as one arriving from the other side.
    const nat = this.o.nat();
    if (nat !== null && !nat.originated(fr, (1 - to) as Side, nowMs, this.o.link, emit)) return;
    this.send(fr, to, emit);
  }

  private send(fr: Uint8Array, to: Side, emit: Emit): void {
    this.o.counters.rstOriginated++;
    this.o.emitter.own(fr, to, emit);
  }
}

/**
 * A RST at `seq` built on the template's headers (`reverse`: going back to its sender), with a
 * zero virtio header of `vh` bytes in front.
 */
export function resetFrame(t: Template, vh: number, reverse: boolean, seq: number): Uint8Array {
  const tpl = t.frame;
  const l2 = t.l3Off - vh;
  const v6 = ipVersion(tpl, t.l3Off) === 6;
  const l3 = vh + l2;
  const l4 = l3 + (v6 ? IPV6_HEADER_LEN : IPV4_MIN_HEADER_LEN);
  const out = new Uint8Array(l4 + TCP_HEADER_LEN);
  out.set(tpl.subarray(vh, t.l3Off), vh);
  if (reverse && l2 >= 12) {
    out.set(tpl.subarray(vh + 6, vh + 12), vh);
    out.set(tpl.subarray(vh, vh + 6), vh + 6);
  }
  // Addresses: IPv4 at 12 and 16 (4 bytes), IPv6 at 8 and 24 (16 bytes).
  const aOff = v6 ? 8 : 12;
  const aLen = v6 ? 16 : 4;
  const a = tpl.subarray(t.l3Off + aOff, t.l3Off + aOff + aLen);
  const b = tpl.subarray(t.l3Off + aOff + aLen, t.l3Off + aOff + 2 * aLen);
  const [src, dst] = reverse ? [b, a] : [a, b];
  if (v6) emitIpv6Header(out, l3, TCP_HEADER_LEN, IP_PROTO_TCP, src, dst);
  else new Ipv4Repr({ src: get32(src, 0), dst: get32(dst, 0), protocol: IP_PROTO_TCP, payloadLen: TCP_HEADER_LEN, ttl: TTL }).emit(out.subarray(l3));
  const sp = get16(tpl, t.l4Off);
  const dp = get16(tpl, t.l4Off + 2);
  new TcpRepr({ srcPort: reverse ? dp : sp, dstPort: reverse ? sp : dp, seq, flags: TCP_RST, window: 0 }).emit(out.subarray(l4), 0, 0, 'none');
  set16(out, l4 + TCP_CHECKSUM_OFFSET, finish(sum16(out, l4, l4 + TCP_HEADER_LEN, pseudoHeaderSum(out, l3, IP_PROTO_TCP, TCP_HEADER_LEN))));
  return out;
}
