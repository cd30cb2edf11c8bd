/**
 * Cluster membership as one node sees it: the nodes heard from (heartbeats carry NodeInfo), who
 * is dead (silent for `deadMs` while this node's own sync connection is up, silent and known
 * to have lost its sync connection: declareDead, or fenced by its own word), and the view — the
 * sorted ids of the ready, non-draining nodes, this one included when it may own connections —
 * from which rendezvous hashing (./rendezvous.ts) names each connection's owner. Pure: no I/O,
 * time passed in; the node (./node.ts) logs and counts what it reports. An incarnation found dead
 * is dead for good: its late heartbeats (a partition's backlog) are ignored; the node comes
 * back as a new incarnation (another `startedMs`).
 */
import { ownerOf, stringKey } from './rendezvous.js';

/** What a node says of itself in its heartbeat. */
export interface NodeInfo {
  id: string;
  lastMs: number;
  startedMs: number;
  draining: boolean;
  ready: boolean;
  owned: number;
  spares: number;
  lagMs: number;
  /** The NATS server its heartbeat connection is on (./beat.ts; absent from older nodes). */
  natsServer?: string;
  /** Set by the heartbeat worker (./beat.ts): when it was sent, and whether its lease is lost. */
  sentMs?: number;
  fenced?: boolean;
}

/** Dead nodes (when they were last heard) and dead incarnations remembered at most. */
const MAX_LAST_HEARD = 1024;

const incKey = (m: NodeInfo): string => `${m.id}@${m.startedMs}`;
/** Owner answers cached per host at most (cleared on every view change). */
const MAX_OWNER_CACHE = 65536;

export class Membership {
  readonly members = new Map<string, NodeInfo>();
  /** Sorted ids of the nodes that own connections now. */
  private v: string[] = [];
  private readonly ownerCache = new Map<number, boolean>();
  private nonTcp = false;
  /** When dead nodes were last heard (frames since then were forwarded by nobody). */
  private readonly lastHeard = new Map<string, number>();
  /**
   * Incarnations found dead (`id@startedMs`): never members again; with, when known, the time
   * after which they surely forwarded nothing (`quietSince`).
   */
  private readonly deadIncs = new Map<string, number | undefined>();

  constructor(readonly self: string) {}

  get view(): readonly string[] {
    return this.v;
  }

  /** This node forwards non-TCP frames (one node of the view does). */
  get nonTcpMine(): boolean {
    return this.nonTcp;
  }

  /**
   * A heartbeat arrived at `now`: true when it changes who may own connections; null when it is
   * ignored (of an incarnation found dead, or fenced: see `fenced`).
   */
  heard(h: NodeInfo, now: number): boolean | null {
    if (h.fenced === true || this.deadIncs.has(incKey(h))) return null;
    const prev = this.members.get(h.id);
    if (prev !== undefined && prev.startedMs !== h.startedMs && h.id !== this.self) {
      // An older incarnation than the member (a backlog overtaken by its successor): dead.
      if (h.startedMs < prev.startedMs) {
        this.deadInc(h);
        return null;
      }
      // A new incarnation: the one before is dead (it lost its lease, or it restarted) and
      // forwards nothing since.
      this.forget(prev, now);
    }
    this.members.set(h.id, { ...h, lastMs: now });
    return prev === undefined || prev.draining !== h.draining || prev.ready !== h.ready;
  }

  /**
   * Nodes silent for more than `deadMs` at `now` are removed; returns them with how long they
   * were silent. They may have forwarded until `leaseMs` after they were last heard (quietSince).
   */
  expire(now: number, deadMs: number, leaseMs = 0): { id: string; startedMs: number; silentMs: number }[] {
    const dead: { id: string; startedMs: number; silentMs: number }[] = [];
    for (const [id, m] of this.members) {
      if (id === this.self || now - m.lastMs <= deadMs) continue;
      this.forget(m, m.lastMs + leaseMs);
      dead.push({ id, startedMs: m.startedMs, silentMs: now - m.lastMs });
    }
    return dead;
  }

  /**
   * Nodes silent for more than `suspectMs` at `now` whose heartbeat connection is on NATS server
   * `server` (to be probed: only that server can tell their connection is gone rather than
   * moving to another server), this one excluded.
   */
  silent(now: number, suspectMs: number, server: string): string[] {
    const out: string[] = [];
    for (const [id, m] of this.members) if (id !== this.self && now - m.lastMs > suspectMs && server !== '' && m.natsServer === server) out.push(id);
    return out;
  }

  /**
   * Node `id` is known dead at `now` (its sync connection is gone) unless it was heard after
   * `sinceMs` (when the check began): removed like an expired one; returns how long it was silent.
   */
  declareDead(id: string, sinceMs: number, now: number): number | null {
    const m = this.members.get(id);
    if (m === undefined || id === this.self || m.lastMs > sinceMs) return null;
    this.forget(m);
    return now - m.lastMs;
  }

  /**
   * A heartbeat saying its node lost its lease (./beat.ts): that incarnation, if a member, is
   * dead now; returns how long it was silent (null: not a member).
   */
  fenced(h: NodeInfo, now: number): number | null {
    const m = this.members.get(h.id);
    if (h.fenced !== true || m === undefined || m.startedMs !== h.startedMs || h.id === this.self) return null;
    this.forget(m, now); // it says so: nothing from it after this
    return now - m.lastMs;
  }

  /** A dead node leaves the members; when it was last heard is remembered (bounded), and that its incarnation is dead. */
  private forget(m: NodeInfo, quietMs?: number): void {
    this.members.delete(m.id);
    if (this.lastHeard.size >= MAX_LAST_HEARD) this.lastHeard.clear();
    this.lastHeard.set(m.id, m.lastMs);
    this.deadInc(m, quietMs);
  }

  private deadInc(m: NodeInfo, quietMs?: number): void {
    if (this.deadIncs.size >= MAX_LAST_HEARD) this.deadIncs.clear();
    this.deadIncs.set(incKey(m), quietMs);
  }

  /**
   * After when dead incarnation `startedMs` of node `id` surely forwarded nothing, if known
   * (silent: until its lease ran out; fenced or succeeded: when that was heard); undefined for
   * one found gone by its connections (a dead process: from its last heartbeat, lastHeardOf).
   */
  quietSince(id: string, startedMs: number): number | undefined {
    return this.deadIncs.get(`${id}@${startedMs}`);
  }

  /** After an outage of this node's own sync connection: every node seen before gets a fresh deadline. */
  freshen(now: number): void {
    for (const m of this.members.values()) m.lastMs = now;
  }

  /** When a dead node was last heard, if it is remembered. */
  lastHeardOf(id: string): number | undefined {
    return this.lastHeard.get(id);
  }

  /** Whether the node `id` in its incarnation `startedMs` is still a member. */
  alive(id: string, startedMs: number): boolean {
    const m = this.members.get(id);
    return m !== undefined && m.startedMs === startedMs;
  }

  /** Recomputes the view with this node `ready` / `draining`; true when it changed. */
  recompute(ready: boolean, draining: boolean): boolean {
    const v = [...this.members.values()].filter((m) => m.id !== this.self && m.ready && !m.draining).map((m) => m.id);
    if (ready && !draining) v.push(this.self);
    v.sort();
    if (v.join(',') === this.v.join(',')) return false;
    this.v = v;
    this.ownerCache.clear();
    this.nonTcp = ownerOf(stringKey('non-tcp'), v) === this.self;
    return true;
  }

  /** The owner of connections of side-0 host `host`, or undefined with an empty view. */
  ownerOf(host: number): string | undefined {
    return ownerOf(host, this.v);
  }

  ownsHost(host: number): boolean {
    let m = this.ownerCache.get(host);
    if (m === undefined) {
      m = ownerOf(host, this.v) === this.self;
      if (this.ownerCache.size >= MAX_OWNER_CACHE) this.ownerCache.clear();
      this.ownerCache.set(host, m);
    }
    return m;
  }
}
