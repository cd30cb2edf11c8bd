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
}

export function newFlowCounters() {
  return {
    created: 0,
    midstream: 0,
    /** SYNs refused because the table was full. */
    tableFull: 0,
    /** Non-SYN segments of unknown connections not tracked because the table was full. */
    untrackedFull: 0,
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
  | { kind: 'refused' }
  | { kind: 'untracked' };

export class FlowTable<C = unknown> {
  private readonly flows = new Map<string, Flow<C>>();
  /** How many connections each 4-tuple has had (for ids "…#1", "…#2"). */
  private readonly reuse = new Map<string, number>();
  readonly counters = newFlowCounters();
  /** Called when a flow leaves the table (runtime cleanup: queue budgets). */
  onRemove: ((f: Flow<C>) => void) | undefined;

  constructor(private readonly limits: TableLimits) {}

  get size(): number {
    return this.flows.size;
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
      const fresh = f.state === 'closed' || f.state === 'closing' || (h.isn !== undefined && h.isn !== seq && f.state !== 'syn-sent');
      if (fresh) {
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
        return { kind: 'refused' };
      }
      this.counters.untrackedFull++;
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

  remove(f: Flow<C>): void {
    if (this.flows.get(f.key) === f) this.flows.delete(f.key);
    this.onRemove?.(f);
  }

  /** Removes idle and long-closed connections. */
  expire(nowMs: number): number {
    let n = 0;
    for (const f of this.flows.values()) {
      if (f.state === 'closed' || f.state === 'closing') {
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
