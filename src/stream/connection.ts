/**
 * The rewriting of one TCP connection: both stream directions plus the header translations that
 * tie them together (docs/ARCHITECTURE.md §2):
 * - sequence numbers of data, FIN and RST follow F of the sender's direction;
 * - ACKs follow G of the reverse direction; SACK blocks are translated conservatively (never
 *   claim bytes the receiver did not get: RFC 2018 blocks shrink inward); the advertised window's
 *   right edge is translated too (RFC 7323 scaling applied); the urgent pointer follows F (or, by default, is cleared with URG: `urgentInline`).
 *
 * Sequence numbers are converted to positions here, once, with `wire/seq`; the directions work in
 * positions. Headers come in and go out as plain `TcpFields`; building frames is the caller's job.
 */
import type { Agent, Direction } from '../agent/types.js';
import { type Half } from '../flow/table.js';
import { TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, TCP_URG } from '../wire/tcp.js';
import { offsetToSeq, seqToOffset, type Seq } from '../wire/seq.js';
import type { GlobalBudget, StreamCounters } from './counters.js';
import { StreamDirection, type DirectionJson, type Release } from './direction.js';
import type { Limits } from './limits.js';

/** The TCP header fields the engine reads and rewrites. */
export interface TcpFields {
  seq: Seq;
  ack: Seq;
  flags: number;
  window: number;
  urgent: number;
  /** SACK blocks as [left, right) sequence numbers, or null when the segment has none. */
  sack: Array<[Seq, Seq]> | null;
}

export interface TcpOut<T> {
  tag: T;
  fields: TcpFields;
  payload: Uint8Array;
  /** Payload differs from the original segment's (the frame must be rebuilt). */
  changed: boolean;
  /** Gateway-originated (flushed held bytes): a data segment built on the template `tag`. */
  synth: boolean;
}

/** The connection's agent gave up on it (AgentOutput.abort): the gateway resets both ends (engine/abort.ts). */
export interface ConnAbort {
  /** The agent's reason. */
  reason: string;
  /** The two RSTs went out: what either end sends now is answered, not forwarded. */
  sent: boolean;
  /** Per side (0: client, 1: server): RSTs sent in answer to its segments since (bounded by the
   *  gateway), the ACK last answered and when. */
  answers: [number, number];
  lastAck: [number, number];
  lastMs: [number, number];
}

const DIRS: readonly [Direction, Direction] = ['c2s', 's2c'];
const EMPTY = new Uint8Array(0);

/** Both directions' state (the agent's is its own snapshot, kept beside it by the caller). */
export interface ConnectionJson {
  v: 1;
  dirs: [DirectionJson, DirectionJson];
  /** Present once the agent gave up on the connection. */
  abort?: ConnAbort;
}

export class Connection<T extends { fields: TcpFields }> {
  /** dirs[0]: client → server (data the client sends); dirs[1]: server → client. */
  readonly dirs: [StreamDirection<T>, StreamDirection<T>];
  /** Last fields seen from each side (for the ACK of gateway-originated segments), kept only
   *  while that side's direction may originate one (StreamDirection.originating). */
  private lastFields: [TcpFields | null, TcpFields | null] = [null, null];
  /** The owner's name for what made this connection rewritten (the gateway: its rule), for statistics. */
  label: string | null = null;
  /** Set when the agent gives up on the connection (from then on nothing is forwarded). */
  abort: ConnAbort | null = null;
  /**
   * Urgent data reaches the receiver inline (`policy.urgent`): URG and the urgent pointer are
   * cleared, else translated through F. Set by the owner from the connection's config.
   */
  urgentInline = true;

  constructor(
    private readonly halves: [Half, Half],
    readonly agent: Agent | null,
    limits: Limits,
    private readonly counters: StreamCounters,
    budget: GlobalBudget,
    retain?: (tag: T) => T,
    /**
     * Gives a kept template the timestamps (RFC 7323) of a later segment of its sender that
     * carried no data (a pure ACK passes without becoming the template): a segment the gateway
     * originates from the template must not carry a TSval older than one its receiver already
     * took (PAWS, RFC 7323 §5: Linux drops it, and the stream stalls until the sender sends again).
     */
    private readonly stamp?: (template: T, from: T) => void,
  ) {
    this.dirs = [
      new StreamDirection<T>(DIRS[0], agent, limits, counters, budget, retain),
      new StreamDirection<T>(DIRS[1], agent, limits, counters, budget, retain),
    ];
  }

  /** Both ISNs are known: positions can be computed for both directions. */
  get ready(): boolean {
    return this.halves[0].isn !== undefined && this.halves[1].isn !== undefined;
  }

  /** Original stream position of a sequence number sent by `side` (0 = first data byte). */
  private pos(side: 0 | 1, s: Seq): number {
    const d = this.dirs[side];
    return seqToOffset(s, this.halves[side].isn!, d.x + 1) - 1;
  }
  private seqOf(side: 0 | 1, pos: number): Seq {
    return offsetToSeq(pos + 1, this.halves[side].isn!);
  }

  /**
   * One segment from `side`. SYN segments pass with their sequence number unchanged (the ISN
   * is not translated); everything else goes through the engine. Releases are appended to `out`.
   */
  handle(side: 0 | 1, f: TcpFields, payload: Uint8Array, tag: T, nowMs: number, out: TcpOut<T>[], rstTaken = true): void {
    const d = this.dirs[side];
    if ((f.flags & TCP_RST) && !rstTaken) {
      // A RST its receiver will not take (flow/window.ts: in the window, not exact). It is
      // forwarded at its translated position, so the receiver answers it with a challenge ACK
      // (RFC 5961 §3.2) as it would without the gateway, and it touches nothing here: not the
      // stream, not the ACK translation (its ACK field is ignored by the receiver, and may be
      // spoofed), not the last fields a gateway-originated segment copies. Its text is
      // diagnostic, not data (RFC 9293 §3.10.7.4): not forwarded.
      const fields = { ...f, seq: this.seqOf(side, d.mapEmpty(this.pos(side, f.seq))) };
      out.push({ tag, fields, payload: EMPTY, changed: payload.length > 0, synth: false });
      return;
    }
    this.lastFields[side] = f;
    if (f.flags & TCP_SYN) {
      // The SYN itself: seq unchanged; a SYN-ACK's ACK (client ISN + 1) maps to itself. Data on
      // a SYN (TCP Fast Open) is not rewritable before the handshake: it is dropped from the
      // segment so the sender retransmits it after the handshake (RFC 7413 §4.2 fallback).
      const fields = { ...f, sack: f.sack };
      if (f.flags & TCP_ACK) fields.ack = this.translateAck(side, f.ack);
      if (f.flags & TCP_URG) {
        // An urgent pointer on a SYN-ACK points into the data to come: a Linux receiver in
        // SYN-SENT takes it (tcp_urg after the handshake's ACK) and drops the byte before it
        // from the stream (without SO_OOBINLINE), a byte the agent reads. Its positions are not
        // translatable either (no command exists yet): cleared, under either policy.
        fields.flags &= ~TCP_URG;
        fields.urgent = 0;
        this.counters.urgentInlined++;
      }
      out.push({ tag, fields, payload: payload.length > 0 ? new Uint8Array(0) : payload, changed: payload.length > 0, synth: false });
      this.dropFields(side);
      return;
    }
    const hasData = payload.length > 0 || (f.flags & (TCP_FIN | TCP_RST)) !== 0;
    if (!hasData) {
      const t = d.template;
      if (t !== undefined) this.stamp?.(t, tag);
      out.push({ tag, fields: this.translate(side, f, d.mapEmpty(this.pos(side, f.seq)), 0), payload, changed: false, synth: false });
      this.dropFields(side);
      return;
    }
    const rel: Release<T>[] = [];
    d.onSegment(
      { pos: this.pos(side, f.seq), payload, fin: (f.flags & TCP_FIN) !== 0, rst: (f.flags & TCP_RST) !== 0, tag },
      nowMs,
      rel,
    );
    for (const r of rel) out.push(this.emit(side, r));
    this.dropFields(side);
    this.takeAbort(side);
    if (d.takeWake()) {
      // The agent's answer decided what the other direction holds: flushed now, not at its hold
      // timeout (a segment originated on that side's template, after this segment's release).
      const other = (1 - side) as 0 | 1;
      const od = this.dirs[other];
      const orel: Release<T>[] = [];
      od.flushNow('answer', nowMs, orel);
      for (const r of orel) out.push(this.emit(other, r));
      this.dropFields(other);
      this.takeAbort(other);
    }
  }

  /** The agent's abort from `side`'s direction, if it gave one (the first reason stays). */
  private takeAbort(side: 0 | 1): void {
    const a = this.dirs[side].takeAbort();
    if (a !== null) this.abort ??= { reason: a, sent: false, answers: [0, 0], lastAck: [-1, -1], lastMs: [0, 0] };
  }

  /**
   * The sequence number that follows everything released from `side` (new numbering): where its
   * receiver's next byte is once all of it arrived (a RST the gateway sends it goes there). Not
   * what is only counted: an insertion waiting at the front for the sender's next segment.
   */
  endSeq(side: 0 | 1): Seq {
    const d = this.dirs[side];
    // What the receiver acknowledged is at least that (a node that took the connection over
    // released nothing yet).
    return this.seqOf(side, Math.max(d.sentEnd, d.rcvAckNew));
  }

  /** A segment kept as a template for gateway-originated ones (either direction's), with the
   *  side it came from; none unless some direction may originate (held bytes). */
  template(): { tag: T; side: 0 | 1 } | null {
    for (const side of [0, 1] as const) {
      const tag = this.dirs[side].template;
      if (tag !== undefined) return { tag, side };
    }
    return null;
  }

  /**
   * After `restore`: the segment another node kept as `side`'s template, so a hold timeout (or an
   * abort decided in one) can originate a segment before that side sends again.
   */
  adoptTemplate(side: 0 | 1, tag: T): void {
    const d = this.dirs[side];
    d.adoptTemplate(tag);
    if (d.template === tag) this.lastFields[side] ??= tag.fields;
  }

  /** The latest header fields seen from `side` while its direction may originate (else null). */
  fieldsOf(side: 0 | 1): TcpFields | null {
    return this.lastFields[side];
  }

  /** Forgets `side`'s last fields unless its direction may originate a segment (memory). */
  private dropFields(side: 0 | 1): void {
    if (!this.dirs[side].originating) this.lastFields[side] = null;
  }

  /**
   * An ACK from `side` as the other side's original sequence space has it (what the tracker
   * compares that side's RSTs with): the ACK counts the rewritten stream the receiver got.
   * Changes nothing.
   */
  ackOriginal(side: 0 | 1, ack: Seq): Seq {
    const other = (1 - side) as 0 | 1;
    if (this.halves[other].isn === undefined) return ack;
    return this.seqOf(other, this.dirs[other].unmap(this.pos(other, ack)));
  }

  /**
   * An ACK from `side` of more than the other direction released (new numbering): its receiver
   * would refuse it (RFC 5961 §5.2, SEG.ACK > SND.NXT). `ackOriginal` cannot tell (G clamps to
   * what was processed), so the gateway asks this on a rewritten connection.
   */
  ackBeyondSent(side: 0 | 1, ack: Seq): boolean {
    const other = (1 - side) as 0 | 1;
    if (this.halves[other].isn === undefined) return false;
    const rev = this.dirs[other];
    // Beyond both numberings: a replayed capture's receiver acknowledges the original stream.
    return this.pos(other, ack) > Math.max(rev.mapEnd(rev.x), rev.x);
  }

  /** The owner did not run for `ms` until `nowMs` (StreamDirection.outage). */
  outage(ms: number, nowMs: number): void {
    this.dirs[0].outage(ms, nowMs);
    this.dirs[1].outage(ms, nowMs);
  }

  /** Timers of both directions; gateway-originated segments go to `out`. */
  tick(nowMs: number, out: TcpOut<T>[]): void {
    if (this.abort !== null) return;
    for (const side of [0, 1] as const) {
      const rel: Release<T>[] = [];
      this.dirs[side].tick(nowMs, rel);
      for (const r of rel) out.push(this.emit(side, r));
      this.takeAbort(side);
    }
  }

  /** The next timer (none once aborted: nothing is originated towards a connection being reset). */
  nextTimerMs(): number {
    if (this.abort !== null) return Infinity;
    return Math.min(this.dirs[0].nextTimerMs(), this.dirs[1].nextTimerMs());
  }

  /** Commands created in both directions (grows whenever a release depends on a new one). */
  get changes(): number {
    return this.dirs[0].changes + this.dirs[1].changes;
  }

  /** Stream positions processed in both directions (grows while the connection moves data). */
  get progress(): number {
    return this.dirs[0].x + this.dirs[1].x;
  }

  toJSON(withStore = true): ConnectionJson {
    const j: ConnectionJson = { v: 1, dirs: [this.dirs[0].toJSON(withStore), this.dirs[1].toJSON(withStore)] };
    const a = this.abort;
    if (a !== null) j.abort = { ...a, answers: [...a.answers], lastAck: [...a.lastAck], lastMs: [...a.lastMs] };
    return j;
  }

  /**
   * State from `toJSON` (on a connection built with the same halves and a restored agent), at a
   * cluster takeover at `nowMs`: hold timers restart then (StreamDirection.restore).
   */
  restore(j: ConnectionJson, nowMs: number): void {
    if (j?.v !== 1 || !Array.isArray(j.dirs) || j.dirs.length !== 2) throw new Error('connection: bad snapshot (expected { v: 1, dirs: [2] })');
    this.dirs[0].restore(j.dirs[0], nowMs);
    this.dirs[1].restore(j.dirs[1], nowMs);
    const a = j.abort;
    if (a !== undefined) {
      const pair = (v: unknown): v is [number, number] => Array.isArray(v) && v.length === 2 && v.every((n) => Number.isSafeInteger(n));
      if (typeof a?.reason !== 'string' || typeof a.sent !== 'boolean' || !pair(a.answers) || !pair(a.lastAck) || !pair(a.lastMs)) throw new Error('connection: bad snapshot (abort)');
      this.abort = { reason: a.reason, sent: a.sent, answers: [...a.answers], lastAck: [...a.lastAck], lastMs: [...a.lastMs] };
    }
  }

  /**
   * Takeover (cluster): the highest ACK each side sent while another node owned the connection
   * (seen on the shared segment), as if it had passed here — a direction restored from a
   * snapshot that is behind skips ahead to what its receiver already has (StreamDirection.skipTo).
   */
  adoptAcks(acks: readonly [Seq | undefined, Seq | undefined]): void {
    for (const side of [0, 1] as const) {
      const a = acks[side];
      const other = (1 - side) as 0 | 1;
      if (a === undefined || this.halves[other].isn === undefined) continue;
      this.dirs[other].onReceiverAck(this.pos(other, a));
    }
  }

  /**
   * Both directions settled (StreamDirection.settled): forwarding the rest of this connection
   * unchanged is exactly what this engine would do, so a closed connection can let it go early.
   */
  get settled(): boolean {
    return this.dirs[0].settled && this.dirs[1].settled;
  }

  /** Both directions' FINs were reached in order (not merely seen): both streams really ended. */
  get ended(): boolean {
    return this.dirs[0].finProcessed && this.dirs[1].finProcessed;
  }

  dispose(): void {
    this.dirs[0].dispose();
    this.dirs[1].dispose();
  }

  /** Fields of a released segment: its own header's; for a gateway-originated one, the latest
   *  header seen from that side (its ACK is the freshest). */
  private emit(side: 0 | 1, r: Release<T>): TcpOut<T> {
    const base = r.synth ? (this.lastFields[side] ?? r.tag.fields) : r.tag.fields;
    let f = this.translate(side, base, r.newPos, r.payload.length);
    if (r.synth) {
      f = { ...f, flags: TCP_ACK | 0x08, urgent: 0, sack: null };
    } else if (!r.fin && (f.flags & TCP_FIN)) {
      f = { ...f, flags: f.flags & ~TCP_FIN };
    }
    if (!r.rst) {
      // What left this node (data, FIN): where a RST to its receiver goes (endSeq).
      const d = this.dirs[side];
      const end = r.newPos + r.payload.length + (r.fin ? 1 : 0);
      if (end > d.sentEnd) d.sentEnd = end;
    }
    return { tag: r.tag, fields: f, payload: r.payload, changed: r.changed, synth: r.synth };
  }

  /** Translates seq (to `newPos`), ack, window, SACK and urgent pointer of a segment from `side`. */
  private translate(side: 0 | 1, f: TcpFields, newPos: number, newLen: number): TcpFields {
    const other = (1 - side) as 0 | 1;
    const out: TcpFields = { seq: this.seqOf(side, newPos), ack: f.ack, flags: f.flags, window: f.window, urgent: f.urgent, sack: f.sack };
    if (f.flags & TCP_ACK) {
      const rev = this.dirs[other];
      const ackNew = this.pos(other, f.ack);
      const ackOrg = rev.onReceiverAck(ackNew);
      out.ack = this.seqOf(other, ackOrg);
      this.counters.acksTranslated++;
      // Window: the right edge ack + wnd (in the reverse direction's new space) → original space.
      const shift = this.windowShift(side);
      const edgeNew = ackNew + f.window * 2 ** shift;
      const edgeRaw = edgeNew >= rev.mapEnd(rev.x) ? edgeNew - rev.cmds.offsetAfterLast() : rev.unmap(edgeNew);
      // The sender may have no more unacknowledged than the normalisation store keeps to check
      // its retransmissions (StreamDirection.handle drops what goes past): the window ends there.
      const cap = ackOrg + rev.maxUnacked;
      const edgeOrg = Math.min(edgeRaw, cap);
      if (edgeRaw > cap) this.counters.windowClamped++;
      rev.receiverEdge(edgeRaw, ackOrg);
      let w = Math.floor(Math.max(0, edgeOrg - ackOrg) / 2 ** shift);
      if (w === 0 && f.window > 0 && edgeOrg > ackOrg && edgeOrg === edgeRaw) w = 1;
      out.window = Math.min(w, 0xffff);
      if (f.sack) {
        const blocks: Array<[Seq, Seq]> = [];
        for (const [l, r] of f.sack) {
          const lNew = this.pos(other, l);
          const rNew = this.pos(other, r);
          // Conservative: [min p with F(p) ≥ L, max p with F(p) ≤ R).
          const lo = rev.cmds.unmap(lNew - 1, Infinity) + 1;
          const hi = rev.unmap(rNew);
          if (hi > lo) {
            blocks.push([this.seqOf(other, lo), this.seqOf(other, hi)]);
            this.counters.sackTranslated++;
          } else this.counters.sackDropped++;
        }
        out.sack = blocks;
      }
    }
    if (!(f.flags & TCP_URG)) return out;
    if (this.urgentInline) {
      out.flags &= ~TCP_URG;
      out.urgent = 0;
      this.counters.urgentInlined++;
    } else if (f.urgent > 0) {
      const d = this.dirs[side];
      const origPos = this.pos(side, f.seq) + f.urgent;
      const u = d.map(origPos) - newPos;
      out.urgent = Math.max(0, Math.min(u, 0xffff));
      if (u <= 0 || newLen === 0) out.flags &= ~TCP_URG;
    }
    return out;
  }

  private windowShift(side: 0 | 1): number {
    const a = this.halves[0].wscale;
    const b = this.halves[1].wscale;
    return a >= 0 && b >= 0 ? this.halves[side].wscale : 0;
  }

  /** ACK of a SYN-ACK (client ISN + 1) or of anything before data: through G as usual. */
  private translateAck(side: 0 | 1, ack: Seq): Seq {
    const other = (1 - side) as 0 | 1;
    if (this.halves[other].isn === undefined) return ack;
    const rev = this.dirs[other];
    return this.seqOf(other, rev.onReceiverAck(this.pos(other, ack)));
  }
}
