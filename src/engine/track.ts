/**
 * The tracking stage of the data path, in two steps around the gateway's own decisions (agents,
 * the mid-stream policy, event tallies):
 * - `find`: the segment's connection in the flow table (flow/table.ts), or what happens to a
 *   segment without one: a SYN the full table refuses (dropped, counted), a bare SYN with a new
 *   ISN on a confirmed connection (passed untracked so the receiver can answer it with a
 *   challenge ACK, RFC 5961 §4; never with data), a segment the full table cannot track (the
 *   mid-stream policy decides when a rule matches it). Cluster ownership is asked here: a node
 *   tracks only connections it owns, from the side they arrive on; one it takes over from
 *   another node is handed back to the gateway to import (`import`), never imported from here.
 *   A live gateway (`sided`) also learns per connection which TAP its client's segments arrive
 *   on, from the server's SYN-ACK paired with the SYN it answers (or a connection's first
 *   segment picked up mid-stream); a segment of a connection an agent inspects arriving on the
 *   other side than its sender's is dropped (`wrongSide`): in a bridge each endpoint lives on one
 *   side, so that segment was forged by a host on the far side, and taken, it would let one
 *   endpoint speak for the other to the tracker (a forged RST or FIN of the peer's closes the
 *   tracked connection while both endpoints keep it, a forged ACK releases bytes the peer never
 *   got). A segment of a 4-tuple whose inspected handshake left the table unconfirmed is not a
 *   connection seen mid-stream either (`handshake-expired`, flow/table.ts `inspected`).
 * - `judge`: would the receiver take this RST or FIN (flow/window.ts)? Only then does it end
 *   anything. Out of the window it is dropped; a RST in the window but not exact is forwarded
 *   untracked (the receiver answers it with a challenge ACK). While a new connection's SYN waits
 *   for its answer, the two segments by which the endpoints clear an old connection on the same
 *   4-tuple pass untracked (`staleSegments`): the server's challenge ACK to the SYN (RFC 5961
 *   §4, sent by a server that still has the old connection open: the client's RST or FIN was
 *   lost) and the client's RST answering it (<SEQ=SEG.ACK><CTL=RST>, RFC 9293 §3.10.7.3), which
 *   resets the old connection; the client's SYN, retransmitted a second later, then finds the
 *   server free. Dropped, they would stall the new connection for as long as the client retries
 *   its SYN (two minutes on Linux). Neither carries data; neither is learnt by the tracker.
 *   Everything else is tracked.
 */
import type { ClusterHooks, ClusterImport, RawTuple } from './gateway.js';
import { endpoints, type Warn } from './admit.js';
import type { Side } from './emit.js';
import type { Policy } from './policy.js';
import type { Endpoint, Flow, FlowTable, SynOptions } from '../flow/table.js';
import type { Verdict } from '../flow/window.js';
import type { FrameTcp } from '../wire/frame.js';
import { seqAdd } from '../wire/seq.js';
import { OPT_SIGNED, TCP_ACK, TCP_FIN, TCP_OPTION_MPTCP, TCP_RST, TCP_SYN } from '../wire/tcp.js';

/** What the stream engine tells the tracker of a rewritten connection (stream/connection.ts). */
export interface AckView {
  readonly ready: boolean;
  /** The receiver's ACK in the sender's original numbering. */
  ackOriginal(side: 0 | 1, ack: number): number;
  /** The ACK acknowledges more than was sent to that receiver. */
  ackBeyondSent(side: 0 | 1, ack: number): boolean;
}

/** The gateway's counters this stage adds to. */
export interface TrackCounters {
  notOwner: number;
  synRefused: number;
  straySyn: number;
  wrongSide: number;
  tcpInvalid: Record<string, number>;
  rstNotExact: number;
  rstAccepted: number;
  staleSegments: number;
  unproven: number;
  signed: number;
  mptcp: number;
  mptcpStripped: number;
}

export type Found<C> =
  /** Dropped here (counted, logged). */
  | { kind: 'drop' }
  /** Passed on unchanged, untracked. */
  | { kind: 'pass' }
  | { kind: 'flow'; flow: Flow<C>; side: 0 | 1; isNew: boolean }
  /** A connection another node had: import it (ClusterImport), then `find` again. */
  | { kind: 'import'; imp: ClusterImport };

export interface TrackOptions<C> {
  flows: FlowTable<C>;
  counters: TrackCounters;
  warn: Warn;
  policy: () => Policy;
  cluster: ClusterHooks | null;
  /**
   * Frames arrive on the TAP of their sender's side (the live gateway; a capture replayed has
   * one side only): a tracked connection's segment from the other side is dropped (`wrongSide`).
   * A cluster node checks this itself (ClusterHooks.tcpLocal).
   */
  sided?: boolean;
}

/**
 * The TAP the client's SYN came in on, for the two ISNs the flow table answers for in SYN-SENT
 * (flow/table.ts: the first SYN's `isn`, and `altIsn`, the latest other one): each the first
 * copy's of its ISN.
 */
interface SynSides {
  isn: [seq: number, from: Side] | null;
  alt: [seq: number, from: Side] | null;
  /**
   * Side 1's SYNs (a simultaneous open, or the real client's after a SYN forged from the server):
   * the first ISN's and the latest other one's, with their options, see `reoriented`.
   */
  rev: [seq: number, from: Side, opts: SynOptions][];
}

/** What a SYN's options say (flow/table.ts learns them). */
function synOptions(tcp: FrameTcp['tcp']): SynOptions {
  const ts = tcp.tsval();
  return { mss: tcp.mss() ?? undefined, wscale: tcp.windowScale() ?? undefined, sackPermitted: tcp.sackPermitted(), timestamps: ts !== null, tsval: ts ?? undefined };
}

export class Tracker<C extends AckView> {
  /** `sided`: per connection in SYN-SENT, the TAPs its client ISNs' SYNs came in on (fromOwnSide). */
  private readonly syns = new WeakMap<Flow<C>, SynSides>();

  constructor(private readonly o: TrackOptions<C>) {}

  /** The connection of a segment from `src` to `dst` (as the flow table sees them), arriving on `from`. */
  find(d: FrameTcp, src: Endpoint, dst: Endpoint, from: Side, raw: RawTuple, nowMs: number, partial = false): Found<C> {
    const { flows, counters: c, cluster: cl } = this.o;
    const flags = d.tcp.flags;
    const guarded = d.tcp.headerLen > 20 ? d.tcp.guardedOptions() : 0;
    if (guarded !== 0 && this.o.policy().covers(src, dst)) {
      if (guarded & OPT_SIGNED) {
        // TCP-MD5 / TCP-AO on a connection a rule covers: the receiver checks what the gateway
        // cannot (a RST it would drop for want of a key, taken here, would end the tracking of a
        // connection both ends keep; SYNs it drops would fill the handshake's records), and a
        // rewritten segment fails the check anyway. Uninspectable: dropped.
        c.signed++;
        this.o.warn('tcp-signed', nowMs, () => ({ ...endpoints(d), flags }), 'TCP-MD5/TCP-AO segment of a connection a rule covers: dropped (cannot be inspected)');
        return { kind: 'drop' };
      }
      // Multipath TCP (RFC 8684) on a connection a rule covers: the receiver orders a subflow's
      // bytes by its DSS mappings' data sequence numbers and joins other subflows' bytes in, so
      // what the agent reads in TCP order is not what the application reads ("world" mapped
      // after "Hello " reads "Hello world"), and a rewrite breaks the mappings. Taken out of
      // SYNs (MP_CAPABLE, MP_JOIN: the endpoints fall back to plain TCP, RFC 8684 §3.7);
      // anything else carrying it is dropped.
      if (flags & TCP_SYN) {
        d.tcp.nopOptions(TCP_OPTION_MPTCP, partial);
        c.mptcpStripped++;
      } else {
        c.mptcp++;
        this.o.warn('tcp-mptcp', nowMs, () => ({ ...endpoints(d), flags }), 'Multipath TCP segment of a connection a rule covers: dropped (cannot be inspected)');
        return { kind: 'drop' };
      }
    }
    if (cl !== null && flows.peek(src, dst) === undefined) {
      const s0 = from === 0 ? src : dst;
      const n = cl.tcpNew(from, s0, from === 0 ? dst : src, flags);
      if (n === false) {
        c.notOwner++;
        return { kind: 'drop' };
      }
      // Taken over from another node: imported by the gateway, then found again.
      if (n !== true) return { kind: 'import', imp: n };
    }
    const r = flows.lookup(src, dst, flags, d.tcp.seq, nowMs);
    switch (r.kind) {
      case 'refused':
        c.synRefused++;
        this.o.warn(`syn-refused:${r.why}`, nowMs, () => ({ why: r.why, ...endpoints(d), halfOpen: flows.halfOpen, flows: flows.size }), 'SYN refused: connection table full');
        return { kind: 'drop' };
      case 'handshake-expired':
        // Not a connection seen mid-stream: its handshake went through the agent's rule and
        // stalled past synTimeoutMs (flow/table.ts `inspected`).
        this.o.warn('handshake-expired', nowMs, () => ({ ...endpoints(d) }), 'segment of a connection whose inspected handshake expired: dropped, not taken up mid-stream');
        return { kind: 'drop' };
      case 'stray-syn':
        if (!this.fromOwnSide(r.flow, r.side, from, d, nowMs)) return { kind: 'drop' };
        c.straySyn++;
        this.o.warn('stray-syn', nowMs, () => ({ flow: r.flow.id, seq: d.tcp.seq }), 'SYN with a new ISN on an established connection: not tracked');
        // A second SYN-ACK before the handshake completed (flow/table.ts lookup) is dropped: a
        // client that lost the first would take this one, and its positions would not be ours.
        if ((flags & TCP_ACK) && !r.flow.confirmed) return { kind: 'drop' };
        return d.payloadLen === 0 ? { kind: 'pass' } : { kind: 'drop' };
      case 'untracked': {
        // The table has no room: a connection a rule matches cannot be inspected.
        const policy = this.o.policy();
        if (policy.covers(src, dst)) {
          const action = policy.count('midstream', policy.midstreamAction === 'pass' ? 'pass' : 'drop');
          this.o.warn(`policy:midstream-untracked`, nowMs, () => ({ action, ...endpoints(d) }), 'segment of an untracked connection a rule matches (table full)');
          if (action === 'drop') return { kind: 'drop' };
        }
        return { kind: 'pass' };
      }
    }
    if (cl !== null && !cl.tcpLocal(r.flow, r.side, from, raw)) {
      c.wrongSide++;
      return { kind: 'drop' };
    }
    const ro = this.reoriented(r.flow, r.side, from, d, nowMs);
    if (ro !== null) return ro;
    if (!this.fromOwnSide(r.flow, r.side, from, d, nowMs)) return { kind: 'drop' };
    if (this.unproven(r.flow, d)) {
      c.unproven++;
      this.o.warn('unproven', nowMs, () => ({ flow: r.flow.id, ...endpoints(d) }), 'segment of a connection whose handshake has not crossed the gateway, that a rule covers the other way round: dropped');
      return { kind: 'drop' };
    }
    return r;
  }

  /**
   * Live (`sided`): a connection a rule covers (as its entry is oriented, or the other way round)
   * whose handshake has not crossed the gateway: no SYN-ACK paired with a SYN from the other TAP,
   * so `clientFrom` is unknown. That is the entry a host on the client's segment makes with
   * segments forged "from the server" (a SYN, with or without a forged answer and final ACK from
   * that same segment): taken as oriented, the server's port and address would choose the rule
   * (none, or the wrong direction of one) and the real client's handshake would pass as a stray
   * of it. Until a paired SYN-ACK proves the orientation (`fromOwnSide`, `reoriented`), only the
   * handshake passes: bare SYNs and SYN-ACKs (a covered entry's SYN data is stripped by the
   * engine; an uncovered one's is dropped), and an unconfirmed entry's bare ACKs and RSTs (the
   * answer to a SYN, an old connection's clearing: judged as they are). Data, FINs and anything
   * after a confirmation that never paired are dropped. A cluster node checks sides itself.
   */
  private unproven(f: Flow<C>, d: FrameTcp): boolean {
    if (this.o.sided !== true || this.o.cluster !== null || f.midstream || f.clientFrom !== undefined) return false;
    const flags = d.tcp.flags;
    if (flags & TCP_SYN) {
      if (d.payloadLen === 0) return false;
      // SYN data (TFO): a connection a rule covers as oriented gets its rule and the engine
      // strips the data (the client sends it again after the handshake); a wrong-way entry's
      // (only the other orientation covered) would reach the server uninspected.
      if (f.conn !== null || ((flags & TCP_ACK) === 0 && this.o.policy().matches(f.client, f.server))) return false;
    } else if (!f.confirmed && d.payloadLen === 0 && (flags & TCP_FIN) === 0) return false;
    return this.covered(f);
  }

  /**
   * The server's SYN-ACK to a client whose SYN the table saw second, after a SYN "from the server"
   * (forged on the client's segment, or by the client itself): the entry took the server for the
   * client, so the server's address and port would choose the rule (a `serverPort: 80` rule would
   * not match, a `direction: s2c` one would rewrite the requests) and the connection would run
   * uninspected. The entry is re-made with the real client as the client (flow/table.ts
   * `reorient`), as a new connection the gateway attaches its rule to. Live (`sided`), the
   * gateway sees the TAPs: the SYN-ACK acknowledges exactly a SYN of side 1's that came in on
   * the other TAP (it answers that SYN across the gateway), and side 0's own SYN was not its
   * sender's (it came in on that other TAP too, or the SYN-ACK does not repeat its ISN): a real
   * simultaneous open (each SYN on its sender's side, each SYN-ACK repeating it) is left as it
   * is, and the answer can come before or after anything forged on the client's segment (what
   * comes of such an entry meanwhile is held to its handshake: `unproven`). Without TAPs (a
   * replayed capture), the SYN-ACK must answer side 1's SYN with another ISN than side 0's
   * (flow/table.ts `answersReverseSyn`). A cluster node learns sides from its first segment and
   * drops the server's SYN-ACK as from the wrong side there (the handshake fails, closed).
   */
  private reoriented(f: Flow<C>, side: 0 | 1, from: Side, d: FrameTcp, nowMs: number): Found<C> | null {
    const tcp = d.tcp;
    const flags = tcp.flags;
    if (this.o.cluster !== null || side !== 0 || (flags & (TCP_SYN | TCP_ACK | TCP_RST)) !== (TCP_SYN | TCP_ACK) || f.confirmed || f.midstream) return null;
    let clientFrom: Side | undefined;
    let opts: SynOptions | undefined;
    const acked = seqAdd(tcp.ack, -1);
    if (this.o.sided === true) {
      // The SYN-ACK answers (exactly) a SYN of side 1's from the other TAP, and side 0's own SYN
      // was not its sender's: it came in on that other TAP too (its claimed sender lives on the
      // SYN-ACK's side), or this SYN-ACK does not repeat its ISN.
      const m = this.syns.get(f);
      if (f.clientFrom !== undefined || m === undefined) return null;
      const syn = m.rev.find(([seq, at]) => seq === acked && at !== from);
      if (syn === undefined) return null;
      // A real simultaneous open: side 0's SYN came in on this SYN-ACK's own TAP, which repeats
      // its ISN. That pairing proves the sides too (side 1's SYN came in on the other TAP, which
      // only the far host can send): side 1's own SYN-ACK may be lost before the gateway.
      if (m.isn !== null && m.isn[1] === from && m.isn[0] === tcp.seq) {
        f.clientFrom = from;
        this.syns.delete(f);
        return null;
      }
      clientFrom = syn[1];
      opts = syn[2];
    } else if (!this.o.flows.answersReverseSyn(f, side, flags, tcp.seq, tcp.ack)) return null;
    const nf = this.o.flows.reorient(f, acked, nowMs, opts);
    this.syns.delete(f);
    if (clientFrom !== undefined) nf.clientFrom = clientFrom;
    this.o.warn('reoriented', nowMs, () => ({ flow: nf.id, ...endpoints(d) }), 'the first SYN of a connection was not its client\'s (the server answered the other one): the entry is re-made with the real client');
    return { kind: 'flow', flow: nf, side: 1, isNew: true };
  }

  /**
   * With `sided` (and no cluster, which checks itself): false when a segment of `f` from `side`
   * arrived on the other TAP than its sender's (counted `wrongSide`, logged). Where the client is
   * is learnt from the server's SYN-ACK, paired with the client's SYN it answers: the SYN-ACK
   * must come in on the other TAP than that SYN (else it is dropped, never learnt from). Not from
   * a SYN alone (one forged ahead of the client's on the far segment), nor from a RST or FIN (one
   * forged in SYN-SENT would lock the real handshake out until the entry expired, and the
   * connection could then be picked up mid-stream). A connection picked up mid-stream learns it
   * from its first segment. Only a connection a rule covers is checked (one an agent inspects,
   * or one the mid-stream policy passes or drops: `covered`; what no rule covers is bridged as it
   * comes), and nothing before its sides are known.
   */
  private fromOwnSide(f: Flow<C>, side: 0 | 1, from: Side, d: FrameTcp, nowMs: number): boolean {
    if (this.o.sided !== true || this.o.cluster !== null) return true;
    const known = f.clientFrom;
    if (known === undefined) {
      const flags = d.tcp.flags & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN);
      if (f.midstream) {
        f.clientFrom = (side === 0 ? from : 1 - from) as 0 | 1;
        return true;
      }
      if (side === 0 && flags === TCP_SYN) {
        this.noteSyn(f, d.tcp.seq, from);
        return true;
      }
      if (side === 1 && flags === TCP_SYN) {
        // A SYN the other way (a simultaneous open, or the real client's after a SYN forged
        // from the server): its TAP, for `reoriented`.
        let m = this.syns.get(f);
        if (m === undefined) this.syns.set(f, (m = { isn: null, alt: null, rev: [] }));
        const seq = d.tcp.seq;
        if (m.rev.length === 0) m.rev.push([seq, from, synOptions(d.tcp)]);
        else if (m.rev[0]![0] !== seq && m.rev[1]?.[0] !== seq) m.rev[1] = [seq, from, synOptions(d.tcp)];
        return true;
      }
      // The server's answer to a SYN (SYN-ACK, RST+ACK) comes in on the other TAP than that SYN.
      // Nothing else is judged here: a bare ACK (the server's challenge ACK to the client's SYN,
      // about an older SYN forged on its segment) must reach the client, and the client's RST
      // to it (at that older SYN's number) the server, to clear the way; a RST at the client's
      // own ISN closes nothing the SYN-ACK does not revive (flow/table.ts observe).
      if (side !== 1 || (flags & TCP_ACK) === 0 || (flags & (TCP_SYN | TCP_RST)) === 0) return true;
      const syns = this.syns.get(f);
      const acked = seqAdd(d.tcp.ack, -1);
      const syn = syns?.isn?.[0] === acked ? syns.isn[1] : syns?.alt?.[0] === acked ? syns.alt[1] : undefined;
      if (syn === undefined) return true;
      // A rule in either orientation: a forged answer must not move the handshake on in the
      // orientation that no rule covers (see `reoriented`).
      if (syn === from) return !this.covered(f) || this.wrongSide(f, from, d, nowMs);
      if (flags === (TCP_SYN | TCP_ACK)) {
        f.clientFrom = syn;
        this.syns.delete(f);
      }
      return true;
    }
    if (known === (side === 0 ? from : 1 - from)) return true;
    // Also a connection no agent inspects that a rule covers (one picked up mid-stream that the
    // policy passes or drops): a forged segment from the far side would confirm it.
    if (f.conn === null && !this.covered(f)) return true;
    return this.wrongSide(f, from, d, nowMs);
  }

  /** The TAP a client's SYN came in on, for the ISN the table keeps it as (after its lookup). */
  private noteSyn(f: Flow<C>, seq: number, from: Side): void {
    let m = this.syns.get(f);
    if (m === undefined) this.syns.set(f, (m = { isn: null, alt: null, rev: [] }));
    const h = f.halves[0];
    if (h.isn === undefined || h.isn === seq) {
      if (m.isn === null || m.isn[0] !== seq) m.isn = [seq, from];
    } else if (h.altIsn === seq && (m.alt === null || m.alt[0] !== seq)) m.alt = [seq, from];
  }

  /**
   * An agent inspects `f`, or a rule covered it either way round when first asked (`Flow.covered`:
   * a reload that adds a rule does not make a connection in flight unproven).
   */
  private covered(f: Flow<C>): boolean {
    if (f.conn !== null) return true;
    let c = f.covered;
    if (c === undefined) f.covered = c = this.o.policy().covers(f.client, f.server);
    return c;
  }

  private wrongSide(f: Flow<C>, from: Side, d: FrameTcp, nowMs: number): false {
    this.o.counters.wrongSide++;
    this.o.warn('wrong-side', nowMs, () => ({ flow: f.id, from, ...endpoints(d) }), 'segment of a tracked connection arrived on the other side than its sender\'s (forged): dropped');
    return false;
  }

  /**
   * Judges a segment of `f` from `side` and tracks it: the verdict of flow/window.ts ('accept',
   * 'rst-close', 'rst-not-exact', ...), 'stale' for an old connection's segment to forward
   * unchanged and untracked (see the file comment), or null when it is dropped (counted, logged).
   */
  judge(f: Flow<C>, side: 0 | 1, d: FrameTcp, nowMs: number): Verdict | 'stale' | null {
    const { flows, counters: c } = this.o;
    const tcp = d.tcp;
    const flags = tcp.flags;
    const seq = tcp.seq;
    if (f.state === 'syn-sent' && !f.midstream && d.payloadLen === 0 && this.stale(f, side, flags, seq)) {
      c.staleSegments++;
      this.o.warn('stale', nowMs, () => ({ flow: f.id, side, flags, seq }), 'segment of an old connection on the 4-tuple passed while the SYN waits for its answer');
      return 'stale';
    }
    const opts = flags & TCP_SYN ? synOptions(tcp) : undefined;
    const len = d.payloadLen;
    // On a rewritten connection the receiver's ACKs count the rewritten stream; the tracker
    // learns them in the sender's original numbering, as the sender's RSTs and FINs carry it.
    const conn = f.conn;
    const ack = conn !== null && conn.ready ? conn.ackOriginal(side, tcp.ack) : tcp.ack;
    let verdict: Verdict = (flags & (TCP_RST | TCP_FIN)) === 0 ? 'accept' : flows.judge(f, side, flags, seq, ack, len, tcp.tsecr());
    if (verdict === 'accept' && (flags & (TCP_FIN | TCP_ACK)) === (TCP_FIN | TCP_ACK) && conn !== null && conn.ready && conn.ackBeyondSent(side, tcp.ack)) {
      // The upper edge in the receiver's (rewritten) numbering, which the tracker does not see.
      verdict = 'fin-bad-ack';
    }
    if (verdict === 'rst-out-of-window' || verdict === 'fin-out-of-window' || verdict === 'fin-bad-ack') {
      const ti = c.tcpInvalid;
      ti[verdict] = (ti[verdict] ?? 0) + 1;
      this.o.warn(`tcp-invalid:${verdict}`, nowMs, () => ({ flow: f.id, class: verdict, seq, ...endpoints(d) }), 'segment outside the window dropped');
      return null;
    }
    if (verdict === 'rst-not-exact') {
      // Forwarded (the receiver answers with a challenge ACK) but not tracked: the connection
      // stays open and inspected.
      c.rstNotExact++;
      this.o.warn('rst-not-exact', nowMs, () => ({ flow: f.id, seq, ...endpoints(d) }), 'RST not at the expected sequence number: forwarded, connection kept');
    } else {
      if (verdict === 'rst-close') c.rstAccepted++;
      flows.track(f, side, flags, seq, opts, nowMs);
      flows.observe(f, side, flags, seq, ack, len);
    }
    return verdict;
  }

  /**
   * Before the server answered the client's SYN (`f` in SYN-SENT): the server's bare ACK (its
   * challenge ACK from an old connection), or the client's RST other than at its SYN's next
   * sequence number (its answer to that ACK; a RST right after the SYN is judged as usual).
   */
  private stale(f: Flow<C>, side: 0 | 1, flags: number, seq: number): boolean {
    if (side === 1) return (flags & (TCP_SYN | TCP_RST | TCP_FIN | TCP_ACK)) === TCP_ACK;
    const isn = f.halves[0].isn;
    return (flags & (TCP_SYN | TCP_RST)) === TCP_RST && isn !== undefined && seq !== seqAdd(isn, 1);
  }
}
