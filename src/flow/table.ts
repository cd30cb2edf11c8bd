/**
 * The connection table and passive tracking of both halves of every TCP connection
 * (RFC 9293 §3.3.2 states, seen from the middle; gVisor's tcpconntrack is the model). One
 * connection's record is ./flow.ts, its plain-data form and check ./json.ts, the RST/FIN
 * judgement ./window.ts.
 *
 * A connection is keyed by its 4-tuple (in either direction). The client is the side that sent
 * the first SYN (for simultaneous open: the first SYN seen), unless the server's SYN-ACK answers
 * the other side's SYN instead (`reorient`: that first SYN was forged). Each half records what it announced
 * in its SYN (ISN, MSS, window scale, SACK-permitted, timestamps) and whether it closed. A
 * connection first seen mid-stream (no SYN) is tracked with `midstream` set: no agent may rewrite
 * it, since positions in its streams are unknown.
 *
 * The table is bounded (`maxConnections`); a SYN that would exceed it is refused (dropped,
 * counted): a security gateway must not let a connection it would have rewritten through
 * unrewritten. Idle and closing connections expire on `expire(now)`.
 *
 * SYN floods: a connection is *embryonic* until it is confirmed — its handshake completed (the
 * client's ACK of the SYN-ACK), or, picked up mid-stream, a segment was seen from each side.
 * Embryonic entries have their own cap (`maxHalfOpen`: a SYN beyond it is refused, counted, and a
 * mid-stream segment beyond it is passed untracked, as when the table is full) and their own
 * short timeout (`synTimeoutMs`, from creation, whatever was sent since: retransmitted SYNs do
 * not keep an entry alive). So a flood of spoofed SYNs (or of SYN/RST pairs, or of ACKs for
 * random 4-tuples) holds at most `maxHalfOpen` entries for at most `synTimeoutMs`, and the rest
 * of the table stays for confirmed and new legitimate connections; nothing is ever evicted to
 * make room (evicting an entry with an agent would let the rest of its connection through
 * unrewritten as a mid-stream one). For the same reason an inspected connection that leaves
 * before it was confirmed leaves its 4-tuple behind for a while (`inspected`): what comes late
 * for it is not taken up as a connection seen mid-stream.
 *
 * A bare SYN with a new ISN for a *confirmed* connection that is not closing is not a new
 * connection (RFC 9293 §3.10.7.4 / RFC 5961 §4: the receiver answers it with a challenge ACK):
 * it is reported `stray-syn` and the state is left alone, as Linux conntrack ignores it. Taking
 * it as a new connection would let one spoofed SYN with a known 4-tuple reset the tracking (and
 * the rewriting) of a live connection.
 */
import { seqAdd, seqDiff, seqGe, seqToOffset, type Seq } from '../wire/seq.js';
import { TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN } from '../wire/tcp.js';
import { judge, type Verdict, type WindowView } from './window.js';
import { Flow, flowKey, plainHalf, TrackedHalf, tupleHash, type Endpoint } from './flow.js';
import { endpointJson, validFlowJson, type FlowJson } from './json.js';
import type { IpAddr } from '../wire/ip.js';

export * from './flow.js';

/**
 * How far past the SYN's TSval a RST answering it may echo: 2^20 timestamp ticks, 17 minutes at
 * Linux's 1 kHz clock (retransmitted SYNs carry later TSvals).
 */
const SYN_TS_SPAN = 2 ** 20;
/** How far one segment may move a learnt window edge (see FlowTable.observe): 1 GiB. */
const LEARN_SPAN = 2 ** 30;

export type { FlowJson } from './json.js';


export interface SynOptions {
  mss: number | undefined;
  wscale: number | undefined;
  sackPermitted: boolean;
  timestamps: boolean;
  /** TSval of the timestamps option, when present. */
  tsval?: number | undefined;
}

/** A half takes what its SYN says (`synTs`: and its TSval as the SYN's, a client's first). */
function learnSynOptions(h: TrackedHalf, opts: SynOptions, synTs: boolean): void {
  if (opts.mss !== undefined) h.mss = opts.mss;
  h.wscale = opts.wscale !== undefined ? Math.min(opts.wscale, 14) : -1;
  h.sackPermitted = opts.sackPermitted;
  h.timestamps = opts.timestamps;
  if (synTs && opts.tsval !== undefined) h.synTs = opts.tsval;
}

export interface TableLimits {
  maxConnections: number;
  idleTimeoutMs: number;
  closingTimeoutMs: number;
  /** How long a connection closed both ways (or reset) stays (default: closingTimeoutMs). */
  closedTimeoutMs?: number;
  /** Lifetime of an embryonic entry (default: idleTimeoutMs). */
  synTimeoutMs?: number;
  /** Embryonic entries at once (default: no cap beyond maxConnections). */
  maxHalfOpen?: number;
}

export function newFlowCounters() {
  return {
    created: 0,
    midstream: 0,
    /** SYNs refused because the table was full. */
    tableFull: 0,
    /** Non-SYN segments of unknown connections not tracked because the table was full. */
    untrackedFull: 0,
    /** SYNs refused because `maxHalfOpen` embryonic connections were in the table. */
    halfOpenFull: 0,
    /** Non-SYN segments of unknown connections not tracked because of `maxHalfOpen`. */
    untrackedHalfOpen: 0,
    /** Embryonic connections removed by `synTimeoutMs`. */
    expiredHalfOpen: 0,
    /** Bare SYNs with a new ISN on a confirmed connection: not a new connection, ignored. */
    straySyn: 0,
    expiredIdle: 0,
    expiredClosed: 0,
    /** A new SYN replaced a closed/closing connection with the same 4-tuple. */
    reused: 0,
    /** Closed connections removed early to make room for a new one (the table was full). */
    evictedClosed: 0,
    simultaneousOpen: 0,
    /**
     * Entries re-made with the other side as the client: the first SYN was not the connection's
     * (forged from the server toward the client ahead of the client's own; `reorient`).
     */
    reoriented: 0,
    /** importFlow refused because the table was full. */
    importRefused: 0,
    /** Connections closed by a RST that carried data again afterwards: the RST did not end them. */
    rstRevived: 0,
    /** Segments of a 4-tuple whose inspected connection left unconfirmed, not taken up mid-stream (see `inspected`). */
    handshakeExpired: 0,
    /** Such 4-tuples forgotten early to stay within their cap (`tomb`). */
    handshakeTombsEvicted: 0,
  };
}
export type FlowCounters = ReturnType<typeof newFlowCounters>;


export type LookupResult<C> =
  | { kind: 'flow'; flow: Flow<C>; side: 0 | 1; isNew: boolean }
  /** A SYN refused: the table (`table-full`) or the embryonic cap (`half-open-full`) is full. */
  | { kind: 'refused'; why: 'table-full' | 'half-open-full' }
  | { kind: 'untracked' }
  /** A bare SYN with a new ISN for a confirmed, open connection: not tracked (see the file comment). */
  | { kind: 'stray-syn'; flow: Flow<C>; side: 0 | 1 }
  /** A segment (not a SYN) of a 4-tuple whose inspected handshake expired a moment ago: not a mid-stream connection. */
  | { kind: 'handshake-expired' };

/**
 * How long an expired inspected handshake's 4-tuple is kept (`FlowTable.inspected`): longer than a
 * Linux server keeps the handshake (63 s: 5 SYN-ACK retransmissions) and than its SYN cookies
 * accept the final ACK (up to about 3 minutes).
 */
export const HANDSHAKE_TOMB_MS = 240_000;

/** A bucket of the table: one flow, or (4-tuples with the same hash, rare) several. */
type Bucket<C> = Flow<C> | Flow<C>[];

export class FlowTable<C = unknown> {
  /** Keyed by tupleHash (a small integer: no string per lookup or per entry). */
  private readonly flows = new Map<number, Bucket<C>>();
  private count = 0;
  /**
   * Connections closed both ways or reset, oldest first: when the table is full, a new SYN takes
   * the place of the oldest of them (what Linux conntrack's early drop does with unassured
   * entries) rather than being refused while the table waits for closed entries to expire.
   */
  private readonly closed = new Set<Flow<C>>();
  /**
   * For 4-tuples whose last connection left the table: how many connections they had (for ids
   * "…#1", "…#2"). A live flow carries its own number (`gen`).
   */
  private readonly reuse = new Map<string, number>();
  /** IPv6 addresses in use by flows, one string each (intern). */
  private readonly v6 = new Map<string, { key: string; refs: number }>();
  readonly counters = newFlowCounters();
  /**
   * Called when a flow leaves the table (runtime cleanup: queue budgets); `remade`: by `reorient`,
   * whose new entry is the same connection (not one that ended: no flow event, not counted again).
   */
  onRemove: ((f: Flow<C>, remade: boolean) => void) | undefined;
  /** Within `reorient`'s removal of the entry it re-makes. */
  private remaking = false;
  /**
   * Whether a closed flow's streams really ended (the engine reached both FINs); undefined =
   * closed is ended. A SYN replaces only a flow that ended.
   */
  ended: ((f: Flow<C>) => boolean) | undefined;
  /**
   * For a flow picked up mid-stream: true = the sender of its first segment is the client,
   * false = the receiver, undefined = no opinion (the lower port is taken as the server's).
   */
  orientMidstream: ((src: Endpoint, dst: Endpoint) => boolean | undefined) | undefined;
  /**
   * Whether an agent inspects the flow. An inspected connection that leaves the table before it
   * was confirmed (its handshake expired after `synTimeoutMs`, or it closed by a RST and expired,
   * or was evicted or replaced; see `remove`) leaves its 4-tuple behind for HANDSHAKE_TOMB_MS: a
   * later segment of it other than a new SYN (the client's final ACK and data, sent late on
   * purpose: a Linux server keeps the handshake 63 s, and SYN cookies accept an ACK for minutes)
   * is `handshake-expired`, not a connection picked up mid-stream, which `policy.midstream: pass`
   * would let through uninspected. A new SYN that opens a connection clears it.
   */
  inspected: ((f: Flow<C>) => boolean) | undefined;
  /** 4-tuples (flowKey) of inspected connections that left unconfirmed → when they are forgotten, oldest first. */
  private readonly tombs = new Map<string, number>();
  /** Embryonic (not yet confirmed) connections in the table. */
  private embryonic = 0;

  constructor(private readonly limits: TableLimits) {}

  get size(): number {
    return this.count;
  }

  /** Embryonic (half-open or unconfirmed mid-stream) connections in the table. */
  get halfOpen(): number {
    return this.embryonic;
  }

  /** Every flow (flows may be removed while iterating). */
  *values(): IterableIterator<Flow<C>> {
    for (const b of this.flows.values()) {
      if (b instanceof Flow) yield b;
      else for (const f of b.slice()) yield f;
    }
  }

  /** The flow of the 4-tuple {a, b} (either direction), if any; changes nothing. */
  peek(a: Endpoint, b: Endpoint): Flow<C> | undefined {
    return this.find(a, b, tupleHash(a.addr, a.port, b.addr, b.port));
  }

  /** The flow of the 4-tuple {a, b} (either direction), if any. */
  private find(a: Endpoint, b: Endpoint, h: number): Flow<C> | undefined {
    const bucket = this.flows.get(h);
    if (bucket === undefined) return undefined;
    if (bucket instanceof Flow) return bucket.is(a, b) ? bucket : undefined;
    for (const f of bucket) if (f.is(a, b)) return f;
    return undefined;
  }

  /**
   * An IPv6 address as the table's flows hold it: one string per address for all of them (each
   * frame decodes its own), so an IPv6 entry costs about what an IPv4 one does. One entry per
   * address in use, so at most two per flow: bounded by maxConnections.
   */
  private intern(e: Endpoint): Endpoint {
    const a = e.addr;
    if (typeof a === 'number') return e;
    let x = this.v6.get(a);
    if (x === undefined) this.v6.set(a, (x = { key: a, refs: 0 }));
    x.refs++;
    return { addr: x.key, port: e.port };
  }

  private release(a: IpAddr): void {
    if (typeof a === 'number') return;
    const x = this.v6.get(a);
    if (x !== undefined && --x.refs === 0) this.v6.delete(a);
  }

  /** Distinct IPv6 addresses of the flows in the table. */
  get ipv6Addresses(): number {
    return this.v6.size;
  }

  /** The number a new entry of the 4-tuple `key` (flowKey) carries: the next after its last (`reuse`), taken. */
  private takeGen(key: string | undefined): number {
    if (key === undefined) return 0;
    const r = this.reuse.get(key);
    if (r === undefined) return 0;
    this.reuse.delete(key); // the new flow carries it from now on
    return r;
  }

  private insert(f: Flow<C>, h: number): void {
    const bucket = this.flows.get(h);
    if (bucket === undefined) this.flows.set(h, f);
    else if (bucket instanceof Flow) this.flows.set(h, [bucket, f]);
    else bucket.push(f);
    this.count++;
  }

  /** Takes `f` out of its bucket; false when it is not in the table. */
  private unlink(f: Flow<C>): boolean {
    const h = f.hash();
    const bucket = this.flows.get(h);
    if (bucket === undefined) return false;
    if (bucket instanceof Flow) {
      if (bucket !== f) return false;
      this.flows.delete(h);
    } else {
      const i = bucket.indexOf(f);
      if (i < 0) return false;
      bucket.splice(i, 1);
      if (bucket.length === 1) this.flows.set(h, bucket[0]!);
    }
    this.count--;
    this.release(f.clientAddr);
    this.release(f.serverAddr);
    return true;
  }

  /**
   * Finds or creates the flow of a segment from `src` to `dst`. A SYN without ACK creates a new
   * flow (or replaces a closed one); anything else for an unknown 4-tuple creates a mid-stream
   * flow.
   */
  lookup(src: Endpoint, dst: Endpoint, flags: number, seq: Seq, nowMs: number): LookupResult<C> {
    const hash = tupleHash(src.addr, src.port, dst.addr, dst.port);
    let f = this.find(src, dst, hash);
    const syn = (flags & (TCP_SYN | TCP_ACK)) === TCP_SYN;
    if (f && (flags & TCP_SYN) && !syn) {
      // A SYN-ACK with a new ISN on a confirmed connection: not an answer to anything the
      // endpoints have open (they challenge-ACK it, RFC 5961 §4); it must not reset the tracked ISN.
      const side = f.sideOf(src);
      const h = f.halves[side];
      // Nor, before the final ACK, a second SYN-ACK of the server's with another ISN than the
      // first: the client took the first (it answers this one with a challenge ACK), and
      // learning this one would shift every position of the server's stream (bytes sent below
      // the first ISN would reach the agent, never the client).
      // (Unless the client sent its SYN again since: it did not get the first; SYN cookies
      // answer a later SYN with another ISN.)
      const answered = side === 1 && f.state === 'syn-received' && !f.midstream && !f.halves[0].synAgain;
      if ((f.confirmed || answered) && h.isn !== undefined && h.isn !== seq) {
        this.counters.straySyn++;
        return { kind: 'stray-syn', flow: f, side };
      }
    }
    if (f && syn) {
      const side = f.sideOf(src);
      const h = f.halves[side];
      // Only a connection that really ended (closed both ways, or reset) makes room for a new
      // one: a half-closed one, or one whose FINs were seen but not reached, is still
      // synchronized, and its endpoints answer a SYN with a challenge ACK (RFC 5961 §4) — so
      // one spoofed FIN and SYN cannot restart its tracking. Once it ended, any SYN starts a new
      // one, whatever its ISN: a host with no socket left for the 4-tuple (or the client's side
      // in TIME-WAIT) takes a SYN that repeats the old ISN as a new connection, and on the old
      // entry (its engine released once settled) that connection's data would pass uninspected.
      const closing = f.state === 'closed' && (f.halves[0].rstSeen || f.halves[1].rstSeen || (this.finsAcked(f) && (this.ended?.(f) ?? true)));
      if (f.state === 'syn-sent' && side === 0 && h.isn !== undefined && h.isn !== seq) {
        // Another ISN before any answer: a forged SYN, or the client starting over. The first
        // stays tracked; the other is remembered, and the SYN-ACK's ACK decides (observe).
        h.altIsn = seq;
        this.counters.straySyn++;
        return { kind: 'stray-syn', flow: f, side };
      }
      // A flow picked up mid-stream has no ISN of this side: any SYN is a new one.
      const newIsn = (h.isn !== undefined ? h.isn !== seq : f.midstream) && f.state !== 'syn-sent';
      // From SYN-RECEIVED on, the server is synchronized too: a SYN with another ISN is not
      // taken (Linux's tcp_check_req drops or resets it, RFC 9293 §3.10.7.4 challenges it).
      const synced = f.confirmed || f.state === 'syn-received';
      if (newIsn && !closing && synced) {
        this.counters.straySyn++;
        return { kind: 'stray-syn', flow: f, side };
      }
      if (closing || newIsn) {
        this.remove(f, nowMs);
        this.counters.reused++;
        f = undefined;
      } else if (side === 1 && f.state === 'syn-sent') {
        // Simultaneous open (RFC 9293 §3.5, figure 8): both sides sent a SYN.
        this.counters.simultaneousOpen++;
      }
    }
    if (f) {
      f.lastMs = nowMs;
      return { kind: 'flow', flow: f, side: f.sideOf(src), isNew: false };
    }
    // The 4-tuple's key, for the maps of 4-tuples without a live entry (made once, when one is in use).
    const key = this.tombs.size > 0 || this.reuse.size > 0 ? flowKey(src, dst) : undefined;
    if (!syn && key !== undefined && this.tombs.has(key)) {
      this.counters.handshakeExpired++;
      return { kind: 'handshake-expired' };
    }
    if (this.count >= this.limits.maxConnections && syn && this.closed.size > 0) {
      const oldest = this.closed.values().next().value as Flow<C>;
      this.remove(oldest, nowMs);
      this.counters.evictedClosed++;
    }
    if (this.count >= this.limits.maxConnections) {
      if (syn) {
        this.counters.tableFull++;
        return { kind: 'refused', why: 'table-full' };
      }
      this.counters.untrackedFull++;
      return { kind: 'untracked' };
    }
    if (this.embryonic >= (this.limits.maxHalfOpen ?? Infinity)) {
      if (syn) {
        this.counters.halfOpenFull++;
        return { kind: 'refused', why: 'half-open-full' };
      }
      this.counters.untrackedHalfOpen++;
      return { kind: 'untracked' };
    }
    const n = this.takeGen(key);
    const midstream = !syn;
    // Mid-stream: who opened is unknown; `orientMidstream` may know (the side a rule names as
    // the client), else the lower port is taken as the server's (a guess).
    const srcIsClient = !midstream || (this.orientMidstream?.(src, dst) ?? dst.port <= src.port);
    const [client, server] = srcIsClient ? [src, dst] : [dst, src];
    f = new Flow<C>(this.intern(client), this.intern(server), midstream, nowMs, n);
    this.insert(f, hash);
    // A new SYN on a 4-tuple whose handshake expired: that one is over (only now, once it is in).
    if (key !== undefined) this.tombs.delete(key);
    this.embryonic++;
    this.counters.created++;
    if (midstream) this.counters.midstream++;
    return { kind: 'flow', flow: f, side: f.sideOf(src), isNew: true };
  }

  /**
   * A SYN-ACK from side 0 (flags, seq, ack) answering side 1's SYN while side 0's own SYN is
   * unanswered, with another ISN than that SYN's: side 0's endpoint did not send the SYN that
   * made the entry (in a simultaneous open each side's SYN-ACK repeats its own SYN's ISN), so
   * the connection is side 1's: it sent the SYN its peer answers. See `reorient`.
   */
  answersReverseSyn(f: Flow<C>, side: 0 | 1, flags: number, seq: Seq, ack: Seq): boolean {
    if (side !== 0 || (flags & (TCP_SYN | TCP_ACK | TCP_RST)) !== (TCP_SYN | TCP_ACK)) return false;
    if (f.confirmed || f.midstream || f.state !== 'syn-sent') return false;
    const [h0, h1] = f.halves;
    return h1.isn !== undefined && ack === seqAdd(h1.isn, 1) && h0.isn !== seq;
  }

  /**
   * Re-makes `f` with its side 1 as the client: who sent the first SYN the table saw is not who
   * opened the connection (a SYN forged from the server toward the client ahead of the client's:
   * taken as the client, the server would have chosen which rule, and which direction of it,
   * applies to the real client's connection). The entry is removed (onRemove, `remade`; no
   * tombstone: it was never a connection) and a new one made, with its number, from side 1's
   * SYN, whose ISN is `clientIsn` (the one the server's SYN-ACK acknowledges) and whose options
   * are `opts` (that SYN's, when the caller kept them: side 1's half holds its latest SYN's).
   * Returns the new entry, in SYN-SENT.
   */
  reorient(f: Flow<C>, clientIsn: Seq, nowMs: number, opts?: SynOptions): Flow<C> {
    const client = f.server;
    const server = f.client;
    const half = plainHalf(f.halves[1]);
    const synTs = f.halves[1].synTs;
    this.remaking = true;
    try {
      this.remove(f);
    } finally {
      this.remaking = false;
    }
    const hash = tupleHash(client.addr, client.port, server.addr, server.port);
    // The same connection: its number stays (not the 4-tuple's next).
    const nf = new Flow<C>(this.intern(client), this.intern(server), false, nowMs, f.gen);
    const h = nf.halves[0];
    Object.assign(h, half);
    h.isn = clientIsn;
    h.finSeen = false;
    h.rstSeen = false;
    h.synTs = synTs;
    // The options of the SYN the server answered (side 1 keeps its latest SYN's, which may be another).
    if (opts !== undefined) {
      h.synTs = undefined;
      learnSynOptions(h, opts, true);
    }
    h.setEnd(1);
    this.insert(nf, hash);
    this.embryonic++;
    this.counters.reoriented++;
    return nf;
  }

  /** The flow as plain JSON-able data (see FlowJson; `conn` is not part of it). */
  exportFlow(f: Flow<C>): FlowJson {
    const half = plainHalf;
    return {
      v: 1,
      client: endpointJson(f.client),
      server: endpointJson(f.server),
      midstream: f.midstream,
      state: f.state,
      halves: [half(f.halves[0]), half(f.halves[1])],
      confirmed: f.confirmed,
      seen: f.seen,
      ...(f.clientFrom === undefined ? {} : { clientFrom: f.clientFrom }),
      createdMs: f.createdMs,
      lastMs: f.lastMs,
      closedMs: f.closedMs,
    };
  }

  /**
   * Inserts a flow saved by exportFlow (another node's), replacing an entry of the same 4-tuple
   * (onRemove is called for it). `nowMs` counts as activity (lastMs is at least nowMs). Returns
   * null, counted (`importRefused`), when the table is full; throws on a malformed snapshot.
   */
  importFlow(j: FlowJson, nowMs: number): Flow<C> | null {
    const v = validFlowJson(j);
    const hash = tupleHash(v.client.addr, v.client.port, v.server.addr, v.server.port);
    const old = this.find(v.client, v.server, hash);
    if (old === undefined && this.count >= this.limits.maxConnections) {
      this.counters.importRefused++;
      return null;
    }
    if (old !== undefined) this.remove(old);
    const gen = this.takeGen(this.reuse.size > 0 ? flowKey(v.client, v.server) : undefined);
    const f = new Flow<C>(this.intern(v.client), this.intern(v.server), v.midstream, v.createdMs, gen);
    f.state = v.state;
    Object.assign(f.halves[0], v.halves[0]);
    Object.assign(f.halves[1], v.halves[1]);

    f.seenMask = (v.seen[0] ? 1 : 0) | (v.seen[1] ? 2 : 0);
    if (v.clientFrom !== undefined) f.clientFrom = v.clientFrom;
    f.lastMs = Math.max(v.lastMs, nowMs);
    f.closedMs = v.closedMs;
    f.confirmed = v.confirmed;
    this.insert(f, hash);
    if (f.state === 'closed') this.closed.add(f);
    if (!f.confirmed) this.embryonic++;
    return f;
  }

  /** What is known of the direction `side` sends: its progress and its receiver's answers. */
  private view(f: Flow<C>, side: 0 | 1): WindowView {
    const s = f.halves[side];
    const r = f.halves[1 - side]!;
    return { end: s.endSet ? s.end : undefined, ack: r.ackSet ? r.ack : undefined, fin: s.finOffset, maxWin: r.maxWindow(f.windowScaling) };
  }

  /**
   * Both FINs acknowledged, as far as the learnt edges tell (each side's ACK covers the other's
   * end, FIN included): until then an endpoint is in LAST-ACK or FIN-WAIT, not closed, and
   * answers a SYN with a challenge ACK.
   */
  private finsAcked(f: Flow<C>): boolean {
    const [a, b] = f.halves;
    const acked = (s: TrackedHalf, r: TrackedHalf): boolean => !r.endSet || !s.ackSet || s.ack >= r.end;
    return acked(a, b) && acked(b, a);
  }

  /** Offset of `seq` in the sequence space of `side` (NaN when nothing of it is known yet). */
  private offsetOf(f: Flow<C>, side: 0 | 1, seq: Seq): number {
    const h = f.halves[side];
    const base = h.base;
    if (base === undefined) return NaN;
    const r = f.halves[1 - side]!;
    return seqToOffset(seq, base, h.endSet ? h.end : r.ackSet ? r.ack : 1);
  }

  /**
   * Would the receiver take this RST or FIN from `side` (flow/window.ts)? Call it before `track`;
   * only a segment judged `accept` or `rst-close` should be tracked with its RST/FIN flags.
   */
  judge(f: Flow<C>, side: 0 | 1, flags: number, seq: Seq, ack: Seq, len: number, tsecr: number | null = null): Verdict {
    const rst = (flags & TCP_RST) !== 0;
    const fin = (flags & TCP_FIN) !== 0;
    if (!rst && !fin) return 'accept';
    // A RST answering the client's SYN: taken only with an ACK of exactly that SYN (RFC 9293
    // §3.10.7.3) and, when it carries timestamps and the SYN did, an echo of a time since the
    // SYN was sent (Linux's check in tcp_rcv_synsent_state_process; RFC 7323 §5.3): a RST
    // forged from the SYN alone echoes something else, and the client ignores it.
    const client = f.halves[0];
    const synSent = rst && side === 1 && f.state === 'syn-sent' && !f.midstream;
    // A zero echo is not checked (Linux: `rcv_tsecr && !between(...)`).
    const echoOk = tsecr === null || tsecr === 0 || client.synTs === undefined || (seqGe(tsecr, client.synTs) && seqDiff(tsecr, client.synTs) <= SYN_TS_SPAN);
    const ackOfSyn = synSent && (flags & TCP_ACK) !== 0 && client.isn !== undefined && ack === seqAdd(client.isn, 1) && echoOk;
    const v = judge(this.view(f, side), rst, fin, this.offsetOf(f, side, seq), len, synSent, ackOfSyn);
    if (v === 'accept' && fin && (flags & TCP_ACK) && !this.ackAcceptable(f, side, ack)) return 'fin-bad-ack';
    return v;
  }

  /**
   * Would the receiver take the ACK of a segment from `side` (RFC 5961 §5.2: SND.UNA −
   * MAX.SND.WND ≤ SEG.ACK ≤ SND.NXT)? A segment whose ACK it refuses is dropped by the
   * receiver, FIN and all.
   */
  private ackAcceptable(f: Flow<C>, side: 0 | 1, ack: Seq): boolean {
    const s = f.halves[side];
    const r = f.halves[1 - side]!;
    if (!r.endSet) return true;
    const a = this.offsetOf(f, (1 - side) as 0 | 1, ack);
    const w = Math.max(s.maxWindow(f.windowScaling), r.maxWindow(f.windowScaling));
    // SND.NXT is exact from the middle (everything the receiver sent passed here); the lower
    // edge is known less precisely: a window of slack.
    return a <= r.end && (!s.ackSet || a >= s.ack - w);
  }

  /**
   * Learns the window edges from a segment from `side` that was let through (after `track`, so a
   * SYN's ISN is known): the sender's highest sequence and its ACK of the other side (the window
   * is the largest the receiver may advertise, from its window scale). RSTs teach nothing. The edges are not part of a cluster snapshot: a node continuing
   * a connection learns them again from the traffic (until then RSTs are forwarded, not taken).
   * A segment with data (or a SYN) on a connection a RST closed revives it:
   * that RST was not the end the tracker took it for (the endpoint ignored it, or answered it
   * with a challenge ACK).
   */
  observe(f: Flow<C>, side: 0 | 1, flags: number, seq: Seq, ack: Seq, len: number): void {
    if (flags & TCP_RST) return;
    const s = f.halves[side];
    const r = f.halves[1 - side]!;
    if ((flags & (TCP_SYN | TCP_ACK)) === (TCP_SYN | TCP_ACK) && r.altIsn !== undefined) {
      // The SYN-ACK says which of the client's ISNs the server took.
      if (ack === seqAdd(r.altIsn, 1)) {
        r.isn = r.altIsn;
        r.setEnd(1);
      }
      r.altIsn = undefined;
    }
    if (s.base === undefined) s.midBase = seqAdd(seq, -1);
    const off = this.offsetOf(f, side, seq);
    const end = off + len + (flags & TCP_SYN ? 1 : 0) + (flags & TCP_FIN ? 1 : 0);
    // The edges only move forward, and by less than LEARN_SPAN: a segment forged 2^31 away
    // teaches nothing, while what the tracker missed (a connection continued on another cluster
    // node, a capture with holes) is caught up with at the next segment. A forged segment inside
    // the span can only widen the window, which makes judgements more lenient (a RST forwarded
    // rather than dropped), never closes anything.
    if (!s.endSet || (end > s.end && end - s.end < LEARN_SPAN)) s.setEnd(end, (flags & TCP_FIN) !== 0);
    if (flags & TCP_ACK) {
      if (r.base === undefined) r.midBase = seqAdd(ack, -1);
      const a = this.offsetOf(f, (1 - side) as 0 | 1, ack);
      if (!s.ackSet || (a > s.ack && a - s.ack < LEARN_SPAN)) s.setAck(a);
    }
    if ((len > 0 || flags & TCP_SYN) && f.state === 'closed' && (s.rstSeen || r.rstSeen)) {
      // Data, or the handshake going on (a SYN-ACK after a RST forged to answer the SYN).
      s.rstSeen = false;
      r.rstSeen = false;
      f.closedMs = 0;
      this.closed.delete(f);
      this.counters.rstRevived++;
      if (flags & TCP_SYN && !f.confirmed) f.state = side === 1 ? 'syn-received' : 'syn-sent';
      else {
        f.state = s.finSeen || r.finSeen ? 'closing' : 'established';
        this.confirm(f);
      }
    }
  }

  /** Updates the tracked state with a segment from `side`. */
  track(f: Flow<C>, side: 0 | 1, flags: number, seq: Seq, opts: SynOptions | undefined, nowMs: number): void {
    const h = f.halves[side];
    if (flags & TCP_SYN) {
      if (side === 0 && !(flags & TCP_ACK) && f.state === 'syn-received' && h.isn === seq) h.synAgain = true;
      else if (side === 1 && (flags & TCP_ACK)) f.halves[0].synAgain = false;
      // A confirmed connection's ISNs are settled (lookup turns SYNs with new ones away).
      if (!f.confirmed || h.isn === undefined) h.isn = seq;
      if (opts) learnSynOptions(h, opts, !(flags & TCP_ACK) && h.synTs === undefined);
      // The answer to the other side's SYN. Usually the server's (side 1); side 0's when the
      // first SYN the table saw went the other way (a simultaneous open, or a SYN forged from
      // the server toward the client ahead of the client's own that `reorient` could not tell
      // from one: on a cluster node): then side 0's next ACK confirms below, as the client's would. Left in SYN-SENT, the running connection would
      // expire after synTimeoutMs.
      if ((flags & TCP_ACK) && f.state === 'syn-sent' && (side === 1 || f.halves[1].isn !== undefined)) f.state = 'syn-received';
    } else if ((flags & TCP_ACK) && f.state === 'syn-received' && side === 0) {
      f.state = 'established';
      f.halves[0].synTs = undefined;
      this.confirm(f);
    }
    if (f.midstream && (f.seenMask & (1 << side)) === 0) {
      f.seenMask |= 1 << side;
      if (f.seenMask === 3) this.confirm(f);
    }
    if (flags & TCP_RST) {
      h.rstSeen = true;
      if (f.state !== 'closed') this.close(f, nowMs);
    } else if (flags & TCP_FIN) {
      h.finSeen = true;
      if (f.halves[0].finSeen && f.halves[1].finSeen) {
        if (f.state !== 'closed') this.close(f, nowMs);
      } else if (f.state !== 'closed') f.state = 'closing';
    }
    f.lastMs = nowMs;
  }

  /** The gateway reset both ends (engine/abort.ts): closed as by a RST each end took. */
  reset(f: Flow<C>, nowMs: number): void {
    f.halves[0].rstSeen = true;
    f.halves[1].rstSeen = true;
    if (f.state !== 'closed') this.close(f, nowMs);
    f.lastMs = nowMs;
  }

  private close(f: Flow<C>, nowMs: number): void {
    f.state = 'closed';
    f.closedMs = nowMs;
    this.closed.add(f);
  }

  private confirm(f: Flow<C>): void {
    if (f.confirmed) return;
    f.confirmed = true;
    this.embryonic--;
  }

  /**
   * Takes `f` out of the table (expired, replaced, or moved to another node): onRemove is called.
   * Nothing happens when `f` is not (or no longer) in the table. With `nowMs` (the table's own
   * removals: expiry, replacement, eviction; not a connection moved to another cluster node): an
   * inspected connection that was never confirmed leaves its 4-tuple behind (see `inspected`).
   */
  remove(f: Flow<C>, nowMs?: number): void {
    if (!this.unlink(f)) return;
    if (nowMs !== undefined && !f.confirmed && !f.midstream && this.inspected?.(f) === true) this.tomb(f.key, nowMs);
    this.closed.delete(f);
    if (!f.confirmed) this.embryonic--;
    // A later connection of this 4-tuple gets the next number (one re-made keeps it).
    if (!this.remaking) {
      this.reuse.set(f.key, f.gen + 1);
      if (this.reuse.size > this.limits.maxConnections * 2) this.reuse.clear();
    }
    this.onRemove?.(f, this.remaking);
  }

  /**
   * Keeps an expired inspected handshake's 4-tuple (see `inspected`): at most as many as
   * `maxHalfOpen` handshakes leaving as soon as they can (`synTimeoutMs`, or `closedTimeoutMs`
   * after a RST) leave in HANDSHAKE_TOMB_MS.
   */
  private tomb(key: string, nowMs: number): void {
    this.tombs.delete(key);
    this.tombs.set(key, nowMs + HANDSHAKE_TOMB_MS);
    // An embryonic entry leaves after synTimeoutMs, or after closedTimeoutMs once a RST closed it.
    const soonest = Math.min(this.limits.synTimeoutMs ?? this.limits.idleTimeoutMs, this.limits.closedTimeoutMs ?? this.limits.closingTimeoutMs);
    if (this.tombs.size > (this.limits.maxHalfOpen ?? 25_000) * Math.ceil(HANDSHAKE_TOMB_MS / Math.max(1, soonest))) {
      this.tombs.delete(this.tombs.keys().next().value as string);
      this.counters.handshakeTombsEvicted++;
    }
  }

  /** 4-tuples of expired inspected handshakes kept (see `inspected`). */
  get handshakeTombs(): number {
    return this.tombs.size;
  }

  /** Removes idle and long-closed connections. */
  expire(nowMs: number): number {
    let n = 0;
    // Oldest first, all kept as long: stop at the first one still due later.
    for (const [key, until] of this.tombs) {
      if (until > nowMs) break;
      this.tombs.delete(key);
    }
    const synTimeout = this.limits.synTimeoutMs ?? this.limits.idleTimeoutMs;
    for (const f of this.values()) {
      if (!f.confirmed && nowMs - f.createdMs > synTimeout) {
        // Whatever its state (a SYN answered by a RST is `closed` but was never a connection).
        this.remove(f, nowMs);
        this.counters.expiredHalfOpen++;
        n++;
      } else if (f.state === 'closed' || f.state === 'closing') {
        // Closed: reset, or both FINs acknowledged — `closedTimeoutMs` from the close, or from a
        // segment after it (a retransmitted FIN whose final ACK was lost beyond the gateway);
        // both FINs seen but one not acknowledged (its final ACK lost before the gateway), the
        // other side retransmits its FIN for up to two minutes (Linux: an orphan's 8 tries with
        // doubling timeouts): as long as a closing connection, so every retransmission still
        // meets its connection and is translated, never dropped as an unknown one.
        // A clean close's later segments restart its time, up to closingTimeoutMs after the close.
        const reset = f.halves[0].rstSeen || f.halves[1].rstSeen;
        const closed = f.state === 'closed' && (reset || this.finsAcked(f));
        let since = f.lastMs;
        if (closed) since = reset ? f.closedMs : Math.min(Math.max(f.closedMs, f.lastMs), f.closedMs + this.limits.closingTimeoutMs);
        const timeout = closed ? (this.limits.closedTimeoutMs ?? this.limits.closingTimeoutMs) : this.limits.closingTimeoutMs;
        if (nowMs - since > timeout || nowMs - f.lastMs > this.limits.closingTimeoutMs) {
          this.remove(f, nowMs);
          this.counters.expiredClosed++;
          n++;
        }
      } else if (nowMs - f.lastMs > this.limits.idleTimeoutMs) {
        this.remove(f, nowMs);
        this.counters.expiredIdle++;
        n++;
      }
    }
    return n;
  }
}

