/**
 * The connection table and passive tracking of both halves of every TCP connection
 * (RFC 9293 §3.3.2 states, seen from the middle; gVisor's tcpconntrack is the model).
 *
 * A connection is keyed by its 4-tuple (in either direction). The client is the side that sent
 * the first SYN (for simultaneous open: the first SYN seen). Each half records what it announced
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
 * unrewritten as a mid-stream one).
 *
 * A bare SYN with a new ISN for a *confirmed* connection that is not closing is not a new
 * connection (RFC 9293 §3.10.7.4 / RFC 5961 §4: the receiver answers it with a challenge ACK):
 * it is reported `stray-syn` and the state is left alone, as Linux conntrack ignores it. Taking
 * it as a new connection would let one spoofed SYN with a known 4-tuple reset the tracking (and
 * the rewriting) of a live connection.
 */
import type { Seq } from '../wire/seq.js';

export const TCP_FIN = 0x01;
export const TCP_SYN = 0x02;
export const TCP_RST = 0x04;
export const TCP_PSH = 0x08;
export const TCP_ACK = 0x10;
export const TCP_URG = 0x20;

export interface Endpoint {
  addr: number;
  port: number;
}

/** What one side announced and did. Field names follow RFC 9293 where there is one. */
export interface Half {
  /** ISN of this side (known once its SYN was seen). */
  isn: Seq | undefined;
  /** MSS option from its SYN (RFC 9293 §3.7.1; 536 when absent). */
  mss: number;
  /** Window scale shift from its SYN (RFC 7323 §2), or −1 when it sent none. */
  wscale: number;
  sackPermitted: boolean;
  timestamps: boolean;
  finSeen: boolean;
  rstSeen: boolean;
}

export type FlowState = 'syn-sent' | 'syn-received' | 'established' | 'closing' | 'closed';

export class Flow<C = unknown> {
  state: FlowState;
  readonly halves: [Half, Half];
  /** Runtime: the connection's stream engine when an agent rewrites it. */
  conn: C | null = null;
  lastMs: number;
  /** Closing started (both FINs, or a RST) at this time. */
  closedMs = 0;
  readonly createdMs: number;
  /** Handshake completed, or (mid-stream) both sides seen: no longer counts as half-open. */
  confirmed = false;
  /** A segment was seen from side 0 / side 1 (mid-stream confirmation). */
  readonly seen: [boolean, boolean] = [false, false];
  constructor(
    readonly key: string,
    readonly id: string,
    readonly client: Endpoint,
    readonly server: Endpoint,
    readonly midstream: boolean,
    nowMs: number,
  ) {
    this.state = midstream ? 'established' : 'syn-sent';
    this.halves = [newHalf(), newHalf()];
    this.lastMs = nowMs;
    this.createdMs = nowMs;
  }

  /** 0 when the segment came from the client, 1 from the server. */
  sideOf(src: Endpoint): 0 | 1 {
    return src.addr === this.client.addr && src.port === this.client.port ? 0 : 1;
  }

  /** Wscale is in force only if both SYNs carried the option (RFC 7323 §2.2). */
  get windowScaling(): boolean {
    return this.halves[0].wscale >= 0 && this.halves[1].wscale >= 0;
  }
}

function newHalf(): Half {
  return { isn: undefined, mss: 536, wscale: -1, sackPermitted: false, timestamps: false, finSeen: false, rstSeen: false };
}

export interface SynOptions {
  mss: number | undefined;
  wscale: number | undefined;
  sackPermitted: boolean;
  timestamps: boolean;
}

export interface TableLimits {
  maxConnections: number;
  idleTimeoutMs: number;
  closingTimeoutMs: number;
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
    simultaneousOpen: 0,
  };
}
export type FlowCounters = ReturnType<typeof newFlowCounters>;

export function flowKey(a: Endpoint, b: Endpoint): string {
  // Canonical order so both directions find the same entry.
  if (a.addr < b.addr || (a.addr === b.addr && a.port <= b.port)) {
    return `${a.addr}:${a.port}-${b.addr}:${b.port}`;
  }
  return `${b.addr}:${b.port}-${a.addr}:${a.port}`;
}

export function ipv4Str(a: number): string {
  return `${a >>> 24}.${(a >>> 16) & 255}.${(a >>> 8) & 255}.${a & 255}`;
}

export type LookupResult<C> =
  | { kind: 'flow'; flow: Flow<C>; side: 0 | 1; isNew: boolean }
  /** A SYN refused: the table (`table-full`) or the embryonic cap (`half-open-full`) is full. */
  | { kind: 'refused'; why: 'table-full' | 'half-open-full' }
  | { kind: 'untracked' }
  /** A bare SYN with a new ISN for a confirmed, open connection: not tracked (see the file comment). */
  | { kind: 'stray-syn'; flow: Flow<C>; side: 0 | 1 };

export class FlowTable<C = unknown> {
  private readonly flows = new Map<string, Flow<C>>();
  /** How many connections each 4-tuple has had (for ids "…#1", "…#2"). */
  private readonly reuse = new Map<string, number>();
  readonly counters = newFlowCounters();
  /** Called when a flow leaves the table (runtime cleanup: queue budgets). */
  onRemove: ((f: Flow<C>) => void) | undefined;
  /** Embryonic (not yet confirmed) connections in the table. */
  private embryonic = 0;

  constructor(private readonly limits: TableLimits) {}

  get size(): number {
    return this.flows.size;
  }

  /** Embryonic (half-open or unconfirmed mid-stream) connections in the table. */
  get halfOpen(): number {
    return this.embryonic;
  }

  values(): IterableIterator<Flow<C>> {
    return this.flows.values();
  }

  /**
   * Finds or creates the flow of a segment from `src` to `dst`. A SYN without ACK creates a new
   * flow (or replaces a closed one); anything else for an unknown 4-tuple creates a mid-stream
   * flow.
   */
  lookup(src: Endpoint, dst: Endpoint, flags: number, seq: Seq, nowMs: number): LookupResult<C> {
    const key = flowKey(src, dst);
    let f = this.flows.get(key);
    const syn = (flags & (TCP_SYN | TCP_ACK)) === TCP_SYN;
    if (f && syn) {
      const side = f.sideOf(src);
      const h = f.halves[side];
      const closing = f.state === 'closed' || f.state === 'closing';
      const newIsn = h.isn !== undefined && h.isn !== seq && f.state !== 'syn-sent';
      if (newIsn && !closing && f.confirmed) {
        this.counters.straySyn++;
        return { kind: 'stray-syn', flow: f, side };
      }
      if (closing || newIsn) {
        this.remove(f);
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
    if (this.flows.size >= this.limits.maxConnections) {
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
    const n = this.reuse.get(key) ?? 0;
    this.reuse.set(key, n + 1);
    if (this.reuse.size > this.limits.maxConnections * 2) this.reuse.clear();
    const midstream = !syn;
    // Mid-stream: we cannot know who opened; take the lower port as the server's (a guess).
    const [client, server] = midstream && dst.port > src.port ? [dst, src] : [src, dst];
    const id = `${ipv4Str(client.addr)}.${client.port}-${ipv4Str(server.addr)}.${server.port}${n > 0 ? `#${n}` : ''}`;
    f = new Flow<C>(key, id, { ...client }, { ...server }, midstream, nowMs);
    this.flows.set(key, f);
    this.embryonic++;
    this.counters.created++;
    if (midstream) this.counters.midstream++;
    return { kind: 'flow', flow: f, side: f.sideOf(src), isNew: true };
  }

  /** Updates the tracked state with a segment from `side`. */
  track(f: Flow<C>, side: 0 | 1, flags: number, seq: Seq, opts: SynOptions | undefined, nowMs: number): void {
    const h = f.halves[side];
    if (flags & TCP_SYN) {
      h.isn = seq;
      if (opts) {
        if (opts.mss !== undefined) h.mss = opts.mss;
        h.wscale = opts.wscale !== undefined ? Math.min(opts.wscale, 14) : -1;
        h.sackPermitted = opts.sackPermitted;
        h.timestamps = opts.timestamps;
      }
      if (side === 1 && (flags & TCP_ACK) && f.state === 'syn-sent') f.state = 'syn-received';
    } else if ((flags & TCP_ACK) && f.state === 'syn-received' && side === 0) {
      f.state = 'established';
      this.confirm(f);
    }
    if (f.midstream && !f.seen[side]) {
      f.seen[side] = true;
      if (f.seen[0] && f.seen[1]) this.confirm(f);
    }
    if (flags & TCP_RST) {
      h.rstSeen = true;
      if (f.state !== 'closed') {
        f.state = 'closed';
        f.closedMs = nowMs;
      }
    } else if (flags & TCP_FIN) {
      h.finSeen = true;
      if (f.halves[0].finSeen && f.halves[1].finSeen) {
        if (f.state !== 'closed') {
          f.state = 'closed';
          f.closedMs = nowMs;
        }
      } else if (f.state !== 'closed') f.state = 'closing';
    }
    f.lastMs = nowMs;
  }

  private confirm(f: Flow<C>): void {
    if (f.confirmed) return;
    f.confirmed = true;
    this.embryonic--;
  }

  remove(f: Flow<C>): void {
    if (this.flows.get(f.key) !== f) return;
    this.flows.delete(f.key);
    if (!f.confirmed) this.embryonic--;
    this.onRemove?.(f);
  }

  /** Removes idle and long-closed connections. */
  expire(nowMs: number): number {
    let n = 0;
    const synTimeout = this.limits.synTimeoutMs ?? this.limits.idleTimeoutMs;
    for (const f of this.flows.values()) {
      if (!f.confirmed && nowMs - f.createdMs > synTimeout) {
        // Whatever its state (a SYN answered by a RST is `closed` but was never a connection).
        this.remove(f);
        this.counters.expiredHalfOpen++;
        n++;
      } else if (f.state === 'closed' || f.state === 'closing') {
        const since = f.state === 'closed' ? f.closedMs : f.lastMs;
        if (nowMs - since > this.limits.closingTimeoutMs || nowMs - f.lastMs > this.limits.closingTimeoutMs) {
          this.remove(f);
          this.counters.expiredClosed++;
          n++;
        }
      } else if (nowMs - f.lastMs > this.limits.idleTimeoutMs) {
        this.remove(f);
        this.counters.expiredIdle++;
        n++;
      }
    }
    return n;
  }
}
