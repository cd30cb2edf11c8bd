/**
 * A gateway node of a cluster (docs/ARCHITECTURE.md §5: membership, ownership, state transfer,
 * the sync invariant, takeover, hand-over, loops). All nodes see every frame of both segments;
 * each TCP connection has one owner, the only node that forwards and rewrites it; one node
 * forwards everything that is not TCP. This class answers the gateway's cluster hooks
 * (engine/gateway.ts ClusterHooks), publishes local connections' state, keeps the others' as
 * spare copies (./spares.ts) and takes them over; membership is ./membership.ts, NATS ./bus.ts,
 * loop suppression ./loop.ts. The invariant it keeps: no byte is released whose rewriting
 * depends on a command the spares might not have (frames wait, bounded by `syncHoldMs`, for the
 * acknowledgement of the publication that carries it).
 */
import type { Logger } from 'pino';
import type { Endpoint, Flow } from '../flow/table.js';
import type { Tuple } from '../nat/nat.js';
import type { ClusterImport, ConnectionState, Emit, Gateway, RawTuple, Side } from '../engine/gateway.js';
import type { ClusterAttach } from '../engine/live.js';
import { TCP_ACK, TCP_SYN } from '../wire/tcp.js';
import { HeartbeatWorker } from './beat.js';
import { clusterSubject, NatsBus } from './bus.js';
import { LoopGuard, tcpDigest } from './loop.js';
import { Membership, type NodeInfo } from './membership.js';
import { hostKey } from './rendezvous.js';
import { SpareStore, tupleKey, type Spare } from './spares.js';
export type { NodeInfo } from './membership.js';

export interface ClusterOptions {
  url: string;
  nodeId: string;
  log: Logger;
  /** Cluster name: subjects and the bucket are namespaced by it. Default 'tapgate'. */
  name?: string;
  /** Heartbeats this often (from a worker thread: ./beat.ts). Default 20 ms. */
  heartbeatMs?: number;
  /** A node not heard for this long is asked about: dead at once if its sync connection is gone. Default 50 ms. */
  suspectMs?: number;
  /** A node not heard for this long is dead, connection or not (a host down, a partition). Default 400 ms. */
  deadMs?: number;
  /**
   * The lease (./beat.ts): this node forwards nothing once this long has passed since the send
   * time of its latest heartbeat heard back from NATS — fenced before any other node may take
   * its connections over (deadMs after they last heard it); it rejoins as a new incarnation.
   * Less than deadMs. 0: no fencing (a node cut off from NATS forwards on beside the new owners).
   * Default three quarters of deadMs (300 ms).
   */
  leaseMs?: number;
  /** This node's event loop held this long: its heartbeats stop (it is taken for dead). Default 1000 ms. */
  stallMs?: number;
  /** Longest a frame waits for its snapshot's acknowledgement before it goes anyway. */
  syncHoldMs?: number;
  /** Snapshots at least this often while a connection changes. */
  periodMs?: number;
  /** How long a new owner waits for the old owner's final state before importing its spare. */
  handoffWaitMs?: number;
  loopWindowMs?: number;
  /** Bounds: frames held for sync or hand-over (bytes, all connections). */
  maxHeldBytes?: number;
  /** Bound on spare copies kept. */
  maxSpares?: number;
  /** How far back the frames replayed at takeover go (ms), and the bytes kept per connection / in all. */
  recentMs?: number;
  recentBytesPerConn?: number;
  recentBytesTotal?: number;
  /** JetStream replicas of the bucket (3 in production with 3 NATS servers). */
  replicas?: number;
  /**
   * The cluster's clock, Unix ms (default Date.now): heartbeats, snapshots' `ms` and every
   * timeout here are compared across nodes, so it is wall-clock time, read only through this.
   */
  now?: () => number;
}

/** What goes into the bucket for one connection. */
export interface ClusterSnapshot {
  v: 1;
  owner: string;
  /** The owner's incarnation (its start time): a node restarted with the same id is another. */
  ownerEpoch: number;
  /** Increases with every publication by one owner. */
  seq: number;
  /** Unix ms of the publication. */
  ms: number;
  /** The ownership key: side-0 host (rendezvous.ts hostKey: an IPv4 address, or an IPv6 address's hash). */
  host: number;
  /** The connection's frames as they arrive on side 0 / side 1 (before NAT), when seen. */
  raw: [RawTuple | null, RawTuple | null];
  /** Final state of a hand-over: the node that takes over (null otherwise). */
  final: string | null;
  /**
   * With a final state: the digest (./loop.ts tcpDigest) of the last frame the old owner
   * handled from side 0 / side 1. The new owner held the connection's frames meanwhile; those up
   * to these the old owner forwarded already, and are not sent again.
   */
  handled?: [number | null, number | null];
  state: ConnectionState;
}

interface Held {
  frame: Uint8Array;
  to: Side;
  /** Publication seq this frame waits for. */
  need: number;
  sinceMs: number;
}

interface LocalRec {
  key: string;
  host: number;
  clientFrom: Side;
  raw: [RawTuple | null, RawTuple | null];
  pubSeq: number;
  ackedSeq: number;
  /** Publication the next frames wait for (0 = none). */
  needSeq: number;
  pubChanges: number;
  pubProgress: number;
  pubState: string;
  lastPubMs: number;
  queue: Held[];
  holdEmit: Emit | null;
  /** Given to another node (its removal from the table must not delete the bucket entry). */
  handedOff: boolean;
  /** Digest of the last frame handled from side 0 / side 1 (ClusterSnapshot.handled). */
  lastSeen: [number | undefined, number | undefined];
}

interface Waiting {
  sinceMs: number;
  frames: Array<{ frame: Uint8Array; from: Side }>;
}

export function newClusterCounters() {
  return {
    published: 0,
    publishErrors: 0,
    acked: 0,
    /** Frames that waited for a snapshot acknowledgement, and how long (sum, max ms). */
    heldFrames: 0,
    heldMsSum: 0,
    heldMsMax: 0,
    /** Frames released without their snapshot acknowledged (sync outage past syncHoldMs, or the bound; without fencing only). */
    unsyncedReleases: 0,
    /** With fencing: frames dropped rather than released without their snapshot (past syncHoldMs, the bound, a hand-over). */
    syncDrops: 0,
    heldOverflow: 0,
    takeovers: 0,
    takeoverFailed: 0,
    handoffs: 0,
    /** Connections whose frames waited for a hand-over's final state (held untranslated, replayed at takeover). */
    handoffWaits: 0,
    /** Frames of a connection in hand-over found only after NAT: dropped (the sender retransmits). */
    handoffDrops: 0,
    handoffTimeouts: 0,
    /** Frames held for a hand-over that the old owner had forwarded before it handed over: not sent again. */
    handoffSkipped: 0,
    replayed: 0,
    /** Frames of other nodes' connections kept for replay, and those not kept (a bound). */
    recentKept: 0,
    recentDropped: 0,
    sparesKept: 0,
    sparesRefused: 0,
    /** Spare copies dropped because a new connection (SYN) reused their 4-tuple. */
    sparesStale: 0,
    /** SYNs of new connections left to the sender's retransmission in the first heartbeats after
     *  this node became ready (the others may not count it yet: both would take the SYN). */
    joinGraceDrops: 0,
    badSnapshots: 0,
    loopDrops: 0,
    /** Frames the loop guard could not remember (its tables full within the window): a copy of one coming back would pass. */
    loopGuardFull: 0,
    viewChanges: 0,
    nodesDead: 0,
    /** Of nodesDead: found dead by their sync connection being gone (probe), before deadMs. */
    nodesGone: 0,
    /** Silent nodes asked about (probe). */
    probes: 0,
    /** Timer rounds that ran late (this loop was held): no one was judged dead in them. */
    lateTimers: 0,
    /** Of nodesDead: said so themselves (their heartbeat: lease lost). */
    nodesFenced: 0,
    /** Heartbeats of an incarnation found dead (a partition's backlog), ignored. */
    staleHeartbeats: 0,
    /** Times this node lost its lease and stopped forwarding (then rejoined as a new incarnation). */
    fences: 0,
    /** Frames not forwarded because this node's lease had run out (and frames it held then). */
    fencedDrops: 0,
    /** Snapshots stored again after a put failed (the frames waiting for it wait on). */
    republished: 0,
  };
}

/**
 * After joining, new connections' SYNs are left to their retransmission this long: the others
 * hear the joining node's ready heartbeat within a few heartbeats, on a loaded box later.
 */
const JOIN_GRACE_MS = 300;

/**
 * A peer's missing connection proves its death only once this node's own connection has been up
 * this long: after a NATS restart every connection comes back, each in its own time.
 */
const PROBE_TRUST_MS = 2000;

const enc = new TextEncoder();
const dec = new TextDecoder();

/**
 * The bucket key of a connection (NATS KV keys: letters, digits, `-_=./`): an IPv4 address as
 * its number, an IPv6 address as its 32 hex digits.
 */
function connKey(a: Endpoint, b: Endpoint): string {
  return `c.${addrKeyText(a.addr)}_${a.port}.${addrKeyText(b.addr)}_${b.port}`;
}

function addrKeyText(a: number | string): string {
  if (typeof a === 'number') return String(a);
  let s = 'x';
  for (let i = 0; i < a.length; i++) s += a.charCodeAt(i).toString(16).padStart(4, '0');
  return s;
}

/** The NAT's tuple of a frame (NAT is IPv4's: an IPv6 connection has none). */
function asTuple(t: RawTuple | null): Tuple | undefined {
  return t === null || typeof t.src !== 'number' || typeof t.dst !== 'number' ? undefined : { proto: 'tcp', src: t.src, sport: t.sport, dst: t.dst, dport: t.dport };
}


export class ClusterNode implements ClusterAttach {
  readonly counters = newClusterCounters();
  readonly id: string;
  private readonly o: Required<Omit<ClusterOptions, 'log' | 'now'>>;
  /** The clock (ClusterOptions.now). */
  private readonly now: () => number;
  private readonly log: Logger;
  /** The sync network (./bus.ts); null until started, and after stop. */
  private bus: NatsBus | null = null;
  /** The heartbeat publisher (./beat.ts); null until started, and after stop. */
  private beat: HeartbeatWorker | null = null;
  /** When onTimer last ran (a late run means this loop was held). */
  private lastTimerMs = 0;
  /** When this node's sync connection came up (last). */
  private connectedSinceMs = 0;
  /** Nodes whose liveness subject is being asked about (probe). */
  private readonly probing = new Set<string>();
  private timers: NodeJS.Timeout[] = [];
  private gw: Gateway | null = null;
  private inject: ((fn: (emit: Emit, nowMs: number) => void) => void) | null = null;
  /** Who is alive and who owns what (./membership.ts). */
  private readonly ms: Membership;
  private connected = false;
  /** When this node became ready (its first heartbeats as a member are still on their way). */
  private readyAtMs = 0;
  /** The last put was acknowledged (false from a refused put until the next acknowledged one). */
  private syncOk = true;
  /** Heard the bucket's initial values and a heartbeat round: may own connections. */
  private ready = false;
  private draining = false;
  /** This node's incarnation: its start, or when it last lost its lease (a new incarnation). */
  private startedMs: number;
  /** The lease ran out (seen on a frame): fence() runs in the next timer round. */
  private fencing = false;
  /** This node's own sync worked at the last timer round (it may judge the others). */
  private syncHealthy = false;
  /**
   * When a heartbeat of this node's own last arrived on the main connection, where the others'
   * arrive (0: none yet). The lease says the heartbeat worker's connection works; this says the
   * main one delivers too. After a partition the two come back apart — each TCP connection
   * retransmits on its own backoff, a second or more apart — and a node that judged the others
   * by its lease alone found them all silent for deadMs and dead, for good (their incarnations),
   * while they took it back into their view: a cluster split until it restarted (seen once in
   * CI, `test/e2e/cluster.test.ts` "a partition").
   */
  private selfHeardMs = 0;
  /** Other nodes' connections, ready to take over (./spares.ts). */
  private readonly spares: SpareStore;
  private readonly local = new Map<Flow<unknown>, LocalRec>();
  private readonly localByKey = new Map<string, Flow<unknown>>();
  private readonly dirty = new Set<Flow<unknown>>();
  private readonly gated = new Set<LocalRec>();
  private readonly waiting = new Map<string, Waiting>();
  private heldBytes = 0;
  /** Where each new connection's SYN arrived (tuple as sent), for the loop check; 10 s. */
  private readonly synSide = new Map<string, { side: Side; ms: number }>();
  /** The same by the SYN's source endpoint. */
  private readonly synSrcSide = new Map<string, { side: Side; ms: number }>();
  /** Tuples of local connections' frames as they arrive on each side (tupleKey). */
  private readonly localRaw = new Set<string>();
  private lastSynSweepMs = 0;
  /** Copies of frames coming back through the shared segments (./loop.ts). */
  private readonly loops: LoopGuard;
  /** virtio-net header length of the frames (the gateway's). */
  private vh = 0;
  private readonly pendingAcks = new Set<Promise<unknown>>();
  private stopped = false;

  constructor(opts: ClusterOptions) {
    this.id = opts.nodeId;
    this.log = opts.log;
    this.now = opts.now ?? Date.now;
    this.startedMs = this.now();
    this.o = {
      url: opts.url,
      nodeId: opts.nodeId,
      name: opts.name ?? 'tapgate',
      heartbeatMs: opts.heartbeatMs ?? 20,
      suspectMs: opts.suspectMs ?? 50,
      deadMs: opts.deadMs ?? 400,
      leaseMs: opts.leaseMs ?? Math.floor(((opts.deadMs ?? 400) * 3) / 4),
      stallMs: opts.stallMs ?? 1000,
      syncHoldMs: opts.syncHoldMs ?? 500,
      periodMs: opts.periodMs ?? 20,
      handoffWaitMs: opts.handoffWaitMs ?? 300,
      loopWindowMs: opts.loopWindowMs ?? 200,
      maxHeldBytes: opts.maxHeldBytes ?? 64 * 1024 * 1024,
      maxSpares: opts.maxSpares ?? 200_000,
      recentMs: opts.recentMs ?? 1000,
      recentBytesPerConn: opts.recentBytesPerConn ?? 512 * 1024,
      recentBytesTotal: opts.recentBytesTotal ?? 64 * 1024 * 1024,
      replicas: opts.replicas ?? 1,
    };
    this.spares = new SpareStore(this.o, this.counters);
    this.loops = new LoopGuard(this.o.loopWindowMs, () => this.vh, () => this.counters.loopGuardFull++);
    this.ms = new Membership(this.id);
    if (!/^[A-Za-z0-9_-]{1,32}$/.test(this.id)) throw new Error(`cluster: bad node id '${this.id}' (letters, digits, _ and -, at most 32)`);
    if (!(this.o.leaseMs >= 0 && this.o.leaseMs < this.o.deadMs)) {
      throw new Error(`cluster: the lease (${this.o.leaseMs} ms) must be shorter than the dead time (${this.o.deadMs} ms): a node must stop before the others take over`);
    }
  }

  /** Connects to NATS, opens the bucket, starts heartbeats and the spare watch. */
  async start(): Promise<void> {
    this.connected = true;
    this.connectedSinceMs = this.now();
    this.bus = await NatsBus.connect(
      { url: this.o.url, name: this.o.name, nodeId: this.id, replicas: this.o.replicas },
      {
        heartbeat: (d) => this.onHeartbeat(d),
        control: (d, respond) => this.onControl(d, respond),
        put: (key, value) => this.onSpare(key, value),
        del: (key) => this.dropSpare(key),
        connection: (up, type) => {
          if (!up) {
            if (this.connected) this.log.warn({ type }, 'cluster sync connection lost: view frozen, forwarding goes on');
            this.connected = false;
          } else {
            this.connected = true;
            this.connectedSinceMs = this.now();
            this.log.info('cluster sync connection back');
            // Every node seen before the outage gets a fresh deadline.
            this.ms.freshen(this.now());
          }
        },
      },
    );
    this.beat = new HeartbeatWorker({
      url: this.o.url,
      subject: clusterSubject(this.o.name, `hb.${this.id}`),
      aliveSubject: this.aliveSubject(this.id),
      name: `tapgate-${this.id}-hb`,
      intervalMs: this.o.heartbeatMs,
      stallMs: this.o.stallMs,
      leaseMs: this.o.leaseMs,
    });
    try {
      await this.beat.start();
    } catch (e) {
      await this.stop();
      throw e;
    }
    this.heartbeat();
    this.timers.push(setInterval(() => this.heartbeat(), this.o.heartbeatMs));
    this.lastTimerMs = this.now();
    this.timers.push(setInterval(() => this.onTimer(), Math.min(this.o.periodMs, 10)));
    await this.join();
  }

  /**
   * Becomes ready as the current incarnation: once its heartbeats are heard back (the lease:
   * every node has heard of it), after one more heartbeat round to hear the others.
   */
  private async join(): Promise<void> {
    const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
    for (;;) {
      if (this.stopped || this.beat === null) return;
      const until = this.beat.leaseUntil(this.startedMs);
      // Leased, and the spare copies are those of the bucket now (after a reconnect: ./bus.ts).
      if (until > this.now() && this.bus?.synced !== false) break;
      if (until === -1) {
        // Lost before it was used (the connection dropped): another incarnation tries.
        this.startedMs = this.now();
        this.heartbeat();
      }
      await sleep(this.o.heartbeatMs);
    }
    const inc = this.startedMs;
    await sleep(this.o.heartbeatMs * 2 + 20);
    if (this.stopped || inc !== this.startedMs) return;
    this.ready = true;
    this.readyAtMs = this.now();
    this.heartbeat();
    this.recomputeView();
    this.log.info({ node: this.id, incarnation: inc, view: this.ms.view }, 'cluster node ready');
    // The connections of dead owners this node was not given wait for the join grace (joining).
    const t = setTimeout(() => this.recomputeView(true), this.joinGraceMs() + 5);
    t.unref();
  }

  /**
   * After becoming ready, this long: new connections' SYNs are left to their retransmission, and
   * connections whose owner is gone are not taken over unless handed to this node. Until the
   * others have heard this node ready, their views differ from its own, and each would take them.
   */
  private joinGraceMs(): number {
    return Math.max(JOIN_GRACE_MS, this.o.heartbeatMs * 3);
  }

  private joining(now: number): boolean {
    return now - this.readyAtMs < this.joinGraceMs();
  }

  /**
   * Whether this node may forward at `now`: not once its lease has run out (it is fenced). A
   * node that is not ready forwards nothing anyway.
   */
  private leaseHeld(now: number): boolean {
    return !this.ready || this.beat === null || now <= this.beat.leaseUntil(this.startedMs);
  }

  /**
   * A frame about to be read or written at `now` while the lease has run out: counted, and
   * fence() runs in the next timer round. True = drop it.
   */
  private fencedNow(now: number): boolean {
    if (this.leaseHeld(now)) return false;
    this.counters.fencedDrops++;
    this.fencing = true;
    return true;
  }

  /**
   * A heartbeat of this node's own arrived on the main connection within half the dead time: the
   * others', had they sent any, would have arrived too.
   */
  private selfHeard(now: number): boolean {
    return this.selfHeardMs > 0 && now - this.selfHeardMs <= this.o.deadMs / 2;
  }

  /** The live loop asks before it writes a batch's `frames` (engine/live.ts): false = all dropped, counted. */
  mayWrite(frames: number): boolean {
    if (this.leaseHeld(this.now())) return true;
    this.counters.fencedDrops += frames;
    this.fencing = true;
    return false;
  }

  /**
   * The lease ran out: this node may be taken for dead now, and its connections taken over.
   * It forwards nothing more as this incarnation: frames it holds are dropped, its connections
   * leave the table as spare copies of their latest state (it takes back those that are still
   * its own once it is a member again), and it rejoins as a new incarnation.
   */
  private fence(now: number): void {
    this.fencing = false;
    if (!this.ready) return;
    this.counters.fences++;
    this.log.error(
      { leaseMs: this.o.leaseMs, owned: this.local.size, connected: this.connected, incarnation: this.startedMs },
      'cluster lease lost (heartbeats not heard back): this node forwards nothing until it rejoins; its connections go to their owners',
    );
    this.ready = false;
    for (const [f, rec] of [...this.local]) {
      this.counters.fencedDrops += this.dropQueue(rec, () => true);
      const snap = this.snapshotOf(f, rec, rec.pubSeq + 1, null);
      rec.handedOff = true; // its bucket entry stays: the new owner continues from it
      this.gw?.releaseConnection(f as never);
      if (snap !== null) this.keepSpare(rec.key, snap);
    }
    for (const w of this.waiting.values()) {
      for (const x of w.frames) this.heldBytes -= x.frame.length;
      this.counters.fencedDrops += w.frames.length;
    }
    this.waiting.clear();
    this.startedMs = now;
    this.recomputeView();
    this.heartbeat();
    void this.join();
  }

  attach(io: { gateway: Gateway; inject: (fn: (emit: Emit, nowMs: number) => void) => void }): void {
    this.gw = io.gateway;
    this.vh = io.gateway.vnetHeaderLength;
    this.inject = io.inject;
  }

  // ---------------------------------------------------------------------------------------------
  // Membership

  /** This node's NodeInfo to the heartbeat worker (./beat.ts), which publishes it every heartbeatMs. */
  private heartbeat(): void {
    if (this.beat === null || this.stopped) return;
    const info: Omit<NodeInfo, 'sentMs' | 'fenced'> = {
      id: this.id,
      lastMs: this.now(),
      startedMs: this.startedMs,
      draining: this.draining,
      ready: this.ready,
      owned: this.local.size,
      spares: this.spares.size,
      lagMs: this.maxLagMs(),
      natsServer: this.beat.server,
    };
    this.beat.update(JSON.stringify(info), this.startedMs);
  }

  private onHeartbeat(data: Uint8Array): void {
    let h: NodeInfo;
    try {
      h = JSON.parse(dec.decode(data)) as NodeInfo;
    } catch {
      return;
    }
    if (typeof h?.id !== 'string' || typeof h.startedMs !== 'number') return;
    const now = this.now();
    if (h.id === this.id) this.selfHeardMs = now;
    const silentMs = this.ms.fenced(h, now);
    if (silentMs !== null) {
      this.counters.nodesDead++;
      this.counters.nodesFenced++;
      this.log.warn({ node: h.id, silentMs, lease: 'lost' }, 'cluster node dead');
      this.recomputeView();
      return;
    }
    const changed = this.ms.heard(h, now);
    if (changed === null) {
      if (h.fenced !== true) this.counters.staleHeartbeats++;
    } else if (changed) this.recomputeView();
  }

  private onTimer(): void {
    if (this.stopped) return;
    const now = this.now();
    // This loop was held (the timer ran late): the others' heartbeats of that time may still
    // wait to be read. No one is judged dead in this round; the next one runs after the reads.
    const late = now - this.lastTimerMs > Math.max(50, this.o.deadMs / 2);
    if (late) this.counters.lateTimers++;
    this.lastTimerMs = now;
    if (this.fencing || !this.leaseHeld(now)) this.fence(now);
    // Only a node whose own heartbeats come back judges the others: one cut off hears no one and
    // would find everyone dead. Back on both connections: its lease (the worker's), and recently
    // on the main one, where the others' arrive (see selfHeardMs). After such a time, everyone
    // gets a fresh deadline.
    const healthy = this.connected && this.beat !== null && this.beat.leaseUntil(this.startedMs) > now && this.selfHeard(now);
    if (healthy && !this.syncHealthy) this.ms.freshen(now);
    this.syncHealthy = healthy;
    if (healthy && !late) {
      // Silent, not gone: it may have forwarded until its lease ran out.
      const dead = this.ms.expire(now, this.o.deadMs, this.o.leaseMs);
      for (const d of dead) {
        this.counters.nodesDead++;
        this.log.warn({ node: d.id, silentMs: d.silentMs }, 'cluster node dead');
      }
      if (dead.length > 0) this.recomputeView();
      if (this.bus !== null) for (const id of this.ms.silent(now, this.o.suspectMs, this.bus.server)) this.probe(id, now);
    }
    this.publishDirty(now);
    this.expireHeld(now);
    this.expireWaiting(now);
    this.loops.sweep(now);
    if (now - this.lastSynSweepMs > 1000) {
      this.lastSynSweepMs = now;
      for (const [k, e] of this.synSide) if (now - e.ms > 10_000) this.synSide.delete(k);
      for (const [k, e] of this.synSrcSide) if (now - e.ms > 10_000) this.synSrcSide.delete(k);
    }
  }

  /**
   * A node silent for `suspectMs`: are its sync connections still there? The server says "no
   * responders" on a liveness subject as soon as the connection that subscribed it is gone — a
   * killed process's sockets close at once — and when neither the heartbeat worker's (./beat.ts)
   * nor the main connection's answers, the node is dead now, unless it was heard meanwhile. A
   * node that is only slow still has its subscriptions: it is left to `deadMs`; so is one that
   * lost one connection (it reconnects, and its lease holds meanwhile).
   */
  private probe(id: string, now: number): void {
    const bus = this.bus;
    if (bus === null || this.probing.has(id)) return;
    this.probing.add(id);
    this.counters.probes++;
    // Both of its connections: the heartbeat worker's and the main one's (a connection the server
    // closed while the node lives is the other's to outlast; a killed process closes both).
    const subject = this.aliveSubject(id);
    void Promise.all([bus.probe(subject, this.o.deadMs), bus.probe(`${subject}.main`, this.o.deadMs)]).then(([w, m]) => {
      const alive = w === false && m === false ? false : w === null || m === null ? null : true;
      this.probing.delete(id);
      // Just reconnected (a NATS restart): the others' connections may not be back yet.
      if (alive !== false || this.stopped || !this.connected || this.now() - this.connectedSinceMs < PROBE_TRUST_MS) return;
      const silentMs = this.ms.declareDead(id, now, this.now());
      if (silentMs === null) return;
      this.counters.nodesDead++;
      this.counters.nodesGone++;
      this.log.warn({ node: id, silentMs, connection: 'gone' }, 'cluster node dead');
      this.recomputeView();
    });
  }

  /** Where node `id`'s heartbeat worker answers while its connection lives (./beat.ts). */
  private aliveSubject(id: string): string {
    return clusterSubject(this.o.name, `alive.${id}`);
  }

  /** `rebalance`: also when the view is the same (the join grace ended). */
  private recomputeView(rebalance = false): void {
    if (!this.ms.recompute(this.ready, this.draining)) {
      if (rebalance) this.rebalance();
      return;
    }
    this.counters.viewChanges++;
    this.log.info({ view: this.ms.view, nonTcp: this.ms.nonTcpMine }, 'cluster view');
    this.rebalance();
  }

  /** Members as heard (tests, status). */
  get members(): ReadonlyMap<string, NodeInfo> {
    return this.ms.members;
  }

  private ownsHost(host: number): boolean {
    return this.ms.ownsHost(host);
  }

  /** After a view change: hand over what is no longer ours, take over what now is. */
  private rebalance(): void {
    if (this.inject === null || this.stopped) return;
    this.inject((emit, now) => {
      for (const [f, rec] of [...this.local]) {
        if (this.ownsHost(rec.host)) continue;
        const to = this.ms.ownerOf(rec.host) ?? null;
        this.handOff(f, rec, to, now, emit);
      }
      for (const sp of [...this.spares.values()]) {
        if (!this.ownsHost(sp.snap.host) || this.localByKey.has(sp.key)) continue;
        if (!this.mayTake(sp)) continue;
        this.takeOver(sp, now, emit);
      }
    });
  }

  /**
   * Whether this node, the spare's owner by its view, may take it over now: given to it (a
   * final state), or its owner is gone and this node is past its join grace.
   */
  private mayTake(sp: Spare): boolean {
    return sp.snap.final !== null || (this.prevOwnerGone(sp) && !this.joining(this.now()));
  }

  /** The spare's publisher is dead, or its state is final: importing it cannot race the owner. */
  private prevOwnerGone(sp: Spare): boolean {
    if (sp.snap.final !== null) return true;
    if (sp.snap.owner === this.id) return true;
    return !this.ms.alive(sp.snap.owner, sp.snap.ownerEpoch);
  }

  // ---------------------------------------------------------------------------------------------
  // Gateway hooks (engine/gateway.ts ClusterHooks)

  preTcp(from: Side, raw: RawTuple, flags: number, ack: number, frame: Uint8Array): boolean | ClusterImport {
    // A frame another node forwarded, seen again on the side it left by (the hub shows it to
    // everyone): its tuple is the reverse of one that *arrives* on this side (the spare copies'
    // and local connections' tuples); or, before the first snapshot, a SYN's tuple seen on the
    // other side, or the reverse of a SYN's tuple on the SYN's own side (replies come from the
    // other). This also keeps copies from being picked up mid-stream as connections.
    const rk = `${from}:${raw.dst}:${raw.dport}:${raw.src}:${raw.sport}`;
    const dk = `${raw.src}:${raw.sport}>${raw.dst}:${raw.dport}`;
    const syn = this.synSide.get(dk);
    const synRev = this.synSide.get(`${raw.dst}:${raw.dport}>${raw.src}:${raw.sport}`);
    const isSyn = (flags & (TCP_SYN | TCP_ACK)) === TCP_SYN;
    // A SYN from an endpoint whose SYN was just seen on the other side: the same SYN, translated
    // (an inbound connection through NAT reaches side 0 with a new destination).
    const synSrc = isSyn ? this.synSrcSide.get(`${raw.src}:${raw.sport}`) : undefined;
    if (this.spares.byTuple(rk) !== undefined || this.localRaw.has(rk) || (syn !== undefined && syn.side !== from) || synRev?.side === from || (synSrc !== undefined && synSrc.side !== from)) {
      this.counters.loopDrops++;
      if (this.counters.loopDrops <= 50 && this.log.isLevelEnabled('debug')) {
        this.log.debug({ from, tuple: dk, spare: this.spares.byTuple(rk) !== undefined, local: this.localRaw.has(rk), syn: syn?.side, synRev: synRev?.side, synSrc: synSrc?.side }, 'frame taken for a copy');
      }
      return false;
    }
    // Where a connection began: its SYN's side (replies come from the other). A SYN from an
    // address the NAT owns is a translated copy, never where a connection began.
    if (isSyn && syn === undefined && this.synSide.size < 65536 && (typeof raw.src !== 'number' || this.gw?.nat?.ownsAddress(from, raw.src) !== true)) {
      const e = { side: from, ms: this.now() };
      this.synSide.set(dk, e);
      if (synSrc === undefined) this.synSrcSide.set(`${raw.src}:${raw.sport}`, e);
    }
    // A connection another node had, known by the tuple its frames carry on this side.
    const sp = this.spares.byTuple(tupleKey(from, raw));
    // Side 1 may be behind NAT: the host is known from a spare copy's tuples, else only after
    // translation (tcpNew decides then).
    const host = from === 0 ? hostKey(raw.src) : sp?.snap.host;
    if (host === undefined) return this.ready && !this.draining ? true : this.observeOnly(from, raw, ack, frame, sp);
    if (!this.ownsHost(host)) return this.observeOnly(from, raw, ack, frame, sp);
    if (sp === undefined || !this.ready || this.draining || this.localByKey.has(sp.key)) return true;
    return this.continueSpare(sp, from, flags, frame);
  }

  /**
   * A frame of a connection this node now owns and knows as a spare copy, before NAT (the
   * connection's own translation must be imported before the NAT stage sees the frame: a frame
   * translated first would get a port of this node that the far endpoint never saw, and reset
   * it): the state to import, or — while its old owner is alive and hands it over — the frame
   * held untranslated until the final state arrives (replayed then), or bounded by handoffWaitMs.
   */
  private continueSpare(sp: Spare, from: Side, flags: number, frame: Uint8Array): boolean | ClusterImport {
    if ((flags & (TCP_SYN | TCP_ACK)) === TCP_SYN) return this.staleSpare(sp);
    if (this.mayTake(sp)) return this.takeoverOf(sp);
    let w = this.waiting.get(sp.key);
    if (w === undefined) {
      w = { sinceMs: this.now(), frames: [] };
      this.waiting.set(sp.key, w);
      this.counters.handoffWaits++;
    }
    if (this.heldBytes + frame.length <= this.o.maxHeldBytes) {
      w.frames.push({ frame: frame.slice(), from });
      this.heldBytes += frame.length;
    } else this.counters.heldOverflow++;
    return false;
  }

  /** Another node's frame: the spare copy learns its ACK and keeps it for replay; never forwarded. */
  private observeOnly(from: Side, raw: RawTuple, ack: number, frame: Uint8Array, sp?: Spare): false {
    sp ??= this.spares.byTuple(tupleKey(from, raw));
    if (sp !== undefined) this.spares.observe(sp, from, ack, frame, this.now());
    return false;
  }

  tcpNew(_from: Side, side0: Endpoint, side1: Endpoint, flags: number): boolean | ClusterImport {
    if (!this.ready || this.draining || !this.ownsHost(hostKey(side0.addr))) return false;
    if ((flags & (TCP_SYN | TCP_ACK)) === TCP_SYN && this.joining(this.now())) {
      // Just joined: a node that has not heard this one's ready heartbeat yet still owns this
      // host and takes the SYN too — two NAT translations, two server connections, a client
      // talking to one of them through the wrong node (seen in the cluster e2e). The SYN is
      // retransmitted in 1 s, when every view agrees.
      this.counters.joinGraceDrops++;
      return false;
    }
    // A spare preTcp did not find by this side's tuple (its snapshot has not seen this side yet).
    const sp = this.spares.get(connKey(side0, side1));
    if (sp === undefined) return true;
    if ((flags & (TCP_SYN | TCP_ACK)) === TCP_SYN) return this.staleSpare(sp);
    if (!this.mayTake(sp)) {
      // Hand-over in progress (or the join grace). The frame went through NAT already: not kept
      // (a replay would translate it twice); the sender retransmits it.
      this.counters.handoffDrops++;
      return false;
    }
    return this.takeoverOf(sp);
  }

  /** A SYN on a spare's 4-tuple: a new connection an old one's state is of no use to (dropped, counted). */
  private staleSpare(sp: Spare): true {
    this.dropSpare(sp.key);
    this.counters.sparesStale++;
    return true;
  }

  /** The spare for the gateway to import before it goes on with the frame (ClusterImport). */
  private takeoverOf(sp: Spare): ClusterImport {
    return { state: sp.snap.state, acks: sp.acks, adopt: (f) => this.adopted(sp, f) !== null };
  }

  tcpLocal(f: Flow<unknown>, side: 0 | 1, from: Side, raw: RawTuple): boolean {
    let rec = this.local.get(f);
    if (rec === undefined) {
      const clientFrom = (side === 0 ? from : 1 - from) as Side;
      const s0 = clientFrom === 0 ? f.client : f.server;
      const s1 = clientFrom === 0 ? f.server : f.client;
      rec = this.newRec(connKey(s0, s1), hostKey(s0.addr), clientFrom);
      this.local.set(f, rec);
      this.localByKey.set(rec.key, f);
      this.dirty.add(f);
    }
    const expected = side === 0 ? rec.clientFrom : 1 - rec.clientFrom;
    if (from !== expected) return false;
    rec.lastSeen[from] = this.loops.last;
    if (rec.raw[from] === null) {
      rec.raw[from] = { ...raw };
      this.localRaw.add(tupleKey(from, raw));
      this.dirty.add(f);
    }
    return true;
  }

  private newRec(key: string, host: number, clientFrom: Side): LocalRec {
    return {
      key,
      host,
      clientFrom,
      raw: [null, null],
      pubSeq: 0,
      ackedSeq: 0,
      needSeq: 0,
      pubChanges: 0,
      pubProgress: -1,
      pubState: '',
      lastPubMs: 0,
      queue: [],
      holdEmit: null,
      handedOff: false,
      lastSeen: [undefined, undefined],
    };
  }

  /**
   * Every frame, first: a TCP frame whose headers (tcpDigest) were seen on the other side within
   * `loopWindowMs` — received there, or sent there by this node — is a copy another node
   * forwarded (the hub shows it to everyone), or one of ours coming back: never forwarded twice.
   * (Where hosts live cannot be learnt from MACs: a node reads its two TAPs in either order, so
   * at start it may see a copy before the original.)
   */
  fromSegment(frame: Uint8Array, from: Side): boolean {
    const now = this.now();
    if (this.fencedNow(now)) return false;
    if (this.loops.fromSegment(frame, from, now)) return true;
    this.counters.loopDrops++;
    return false;
  }

  nonTcp(frame: Uint8Array, from: Side): boolean {
    if (!this.ms.nonTcpMine) return false;
    if (this.loops.nonTcp(frame, from, this.now())) return true;
    this.counters.loopDrops++;
    return false;
  }

  gate(f: Flow<unknown>, emit0: Emit): Emit {
    const rec = this.local.get(f);
    if (rec === undefined) return emit0;
    const emit = this.recording(emit0);
    this.dirty.add(f);
    const conn = (f as Flow<{ changes: number }>).conn;
    if (conn !== null) {
      const ch = conn.changes;
      if (ch !== rec.pubChanges) {
        rec.pubChanges = ch;
        rec.needSeq = this.publish(f, rec, null);
      }
    }
    if (rec.pubSeq === 0 && this.gw?.nat != null) {
      // A connection new here, through NAT: its translation (the masquerade port the far end
      // learns from the first frame) is state no other node can rebuild. Its first frame waits
      // until the snapshot carrying it is stored, as a rewrite's does: an owner killed right
      // after the handshake left the connection to a node without its port, and the server's
      // answers to that port were dropped everywhere until the connection died.
      rec.needSeq = this.publish(f, rec, null);
    }
    if (rec.ackedSeq >= rec.needSeq && rec.queue.length === 0) return emit;
    if (this.o.leaseMs === 0 && (!this.connected || !this.syncOk)) {
      // Without fencing, sync down or puts refused: no acknowledgement is coming. What waits goes
      // first, in order; nothing more waits. (With a lease, frames always wait for their
      // snapshot — dropped past syncHoldMs, the sender retransmits: a node may be fenced and
      // taken over at any time, and the new owner must not find bytes released that its stored
      // state does not explain. A pattern it re-decided there would pass unrewritten.)
      this.counters.unsyncedReleases += this.releaseQueue(rec, Infinity, emit);
      if (rec.ackedSeq < rec.needSeq) this.counters.unsyncedReleases++;
      return emit;
    }
    this.gated.add(rec);
    return (rec.holdEmit ??= (frame, to) => {
      if (this.heldBytes + frame.length > this.o.maxHeldBytes) {
        this.counters.heldOverflow++;
        if (this.o.leaseMs > 0) {
          // Over the bound, with fencing: dropped (the sender retransmits).
          this.counters.syncDrops++;
          return;
        }
        // Over the bound: this one goes now (order kept: everything before it goes first).
        this.releaseQueue(rec, Infinity, emit);
        this.counters.unsyncedReleases++;
        emit(frame, to);
        return;
      }
      rec.queue.push({ frame: frame.slice(), to, need: rec.needSeq, sinceMs: this.now() });
      this.heldBytes += frame.length;
      this.counters.heldFrames++;
    });
  }

  private recorder: { inner: Emit; fn: Emit } | null = null;

  /** `emit` that remembers each TCP frame's header digest (the loop check in preTcp). */
  private recording(inner: Emit): Emit {
    if (this.recorder?.inner === inner) return this.recorder.fn;
    const fn: Emit = (frame, to) => {
      const now = this.now();
      if (this.fencedNow(now)) return;
      this.loops.sentTcp(frame, to, now);
      inner(frame, to);
    };
    this.recorder = { inner, fn };
    return fn;
  }

  /** A local flow left the table (closed, expired, handed over). */
  flowRemoved(f: Flow<unknown>): void {
    const rec = this.local.get(f);
    if (rec === undefined) return;
    this.local.delete(f);
    this.localByKey.delete(rec.key);
    this.dirty.delete(f);
    for (const side of [0, 1] as const) {
      const t = rec.raw[side];
      if (t !== null) this.localRaw.delete(tupleKey(side, t));
    }
    if (rec.queue.length > 0 && this.inject !== null) {
      const q = rec.queue;
      this.inject((emit) => this.releaseQueue({ ...rec, queue: q }, Infinity, emit));
    }
    this.gated.delete(rec);
    if (!rec.handedOff) this.bus?.delete(rec.key);
  }

  // ---------------------------------------------------------------------------------------------
  // Publishing

  /** The snapshot of local connection `f` (null without a gateway). */
  private snapshotOf(f: Flow<unknown>, rec: LocalRec, seq: number, final: string | null): ClusterSnapshot | null {
    const gw = this.gw;
    if (gw === null) return null;
    return {
      v: 1,
      owner: this.id,
      ownerEpoch: this.startedMs,
      seq,
      ms: this.now(),
      host: rec.host,
      raw: rec.raw,
      final,
      ...(final !== null ? { handled: [rec.lastSeen[0] ?? null, rec.lastSeen[1] ?? null] as [number | null, number | null] } : {}),
      state: gw.exportConnection(f as never, [asTuple(rec.raw[0]), asTuple(rec.raw[1])]),
    };
  }

  private publish(f: Flow<unknown>, rec: LocalRec, final: string | null): number {
    const bus = this.bus;
    const seq = ++rec.pubSeq;
    const snap = bus === null ? null : this.snapshotOf(f, rec, seq, final);
    if (bus === null || snap === null) return seq;
    rec.lastPubMs = snap.ms;
    this.counters.published++;
    const p = bus
      .put(rec.key, enc.encode(JSON.stringify(snap)))
      .then(() => {
        this.counters.acked++;
        this.syncOk = true;
        if (seq > rec.ackedSeq) rec.ackedSeq = seq;
        if (rec.queue.length > 0 && this.inject !== null) this.inject((emit) => this.releaseQueue(rec, rec.ackedSeq, emit));
      })
      .catch((e: Error) => {
        this.counters.publishErrors++;
        if (this.syncOk) this.log.warn({ err: e.message, key: rec.key }, 'snapshot not stored: frames no longer wait for the sync until a put is acknowledged');
        this.syncOk = false;
        if (this.o.leaseMs > 0 && final === null && this.local.get(f) === rec) {
          // Stored again at the next period (the frames waiting for it wait on, bounded by
          // syncHoldMs): a node that may be fenced must not send what no stored state explains.
          this.republish(f, rec);
          return;
        }
        // The acknowledgement this put's frames wait for will not come.
        if (rec.queue.length > 0 && rec.ackedSeq < seq && this.inject !== null) {
          this.inject((emit) => void (this.counters.unsyncedReleases += this.releaseQueue(rec, seq, emit)));
        }
      })
      .finally(() => this.pendingAcks.delete(p));
    this.pendingAcks.add(p);
    return seq;
  }

  /** Frames whose publication is acknowledged (need ≤ upTo) go, in order; returns how many. */
  private releaseQueue(rec: LocalRec, upTo: number, emit0: Emit): number {
    const emit = this.recording(emit0);
    const q = rec.queue;
    const now = this.now();
    let i = 0;
    while (i < q.length && q[i]!.need <= upTo) {
      const h = q[i]!;
      const waited = now - h.sinceMs;
      this.counters.heldMsSum += waited;
      if (waited > this.counters.heldMsMax) this.counters.heldMsMax = waited;
      this.heldBytes -= h.frame.length;
      emit(h.frame, h.to);
      i++;
    }
    if (i > 0) q.splice(0, i);
    if (q.length === 0) this.gated.delete(rec);
    return i;
  }

  private expireHeld(now: number): void {
    if (this.gated.size === 0 || this.inject === null) return;
    const late: LocalRec[] = [];
    for (const rec of this.gated) {
      const h = rec.queue[0];
      if (h !== undefined && now - h.sinceMs > this.o.syncHoldMs) late.push(rec);
    }
    if (late.length === 0) return;
    if (this.o.leaseMs > 0) {
      // With fencing: what waited too long is dropped, not sent unsynced (see gate).
      for (const rec of late) this.counters.syncDrops += this.dropQueue(rec, (h) => now - h.sinceMs > this.o.syncHoldMs);
      return;
    }
    this.inject((emit) => {
      for (const rec of late) this.counters.unsyncedReleases += this.releaseQueue(rec, Infinity, emit);
    });
  }

  /** The connection's snapshot is stored again at the next period (publishDirty). */
  private republish(f: Flow<unknown>, rec: LocalRec): void {
    this.counters.republished++;
    rec.pubProgress = -2;
    this.dirty.add(f);
  }

  /** Drops the frames at the head of rec's queue while `late` holds; returns how many. */
  private dropQueue(rec: LocalRec, late: (h: Held) => boolean): number {
    const q = rec.queue;
    let i = 0;
    while (i < q.length && late(q[i]!)) this.heldBytes -= q[i++]!.frame.length;
    if (i > 0) q.splice(0, i);
    if (q.length === 0) this.gated.delete(rec);
    return i;
  }

  /** Periodic snapshots of connections that changed (no waiting on these). */
  private publishDirty(now: number): void {
    if (this.dirty.size === 0) return;
    for (const f of this.dirty) {
      const rec = this.local.get(f);
      if (rec === undefined) {
        this.dirty.delete(f);
        continue;
      }
      if (now - rec.lastPubMs < this.o.periodMs) continue;
      const conn = (f as Flow<{ progress: number }>).conn;
      const progress = conn === null ? 0 : conn.progress;
      const st = `${f.state}|${rec.raw[0] !== null ? 1 : 0}${rec.raw[1] !== null ? 1 : 0}`;
      this.dirty.delete(f);
      if (progress === rec.pubProgress && st === rec.pubState) continue;
      rec.pubProgress = progress;
      rec.pubState = st;
      this.publish(f, rec, null);
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Spares, takeover, hand-over

  private onSpare(key: string, value: Uint8Array): void {
    let snap: ClusterSnapshot;
    try {
      snap = JSON.parse(dec.decode(value)) as ClusterSnapshot;
      if (snap?.v !== 1 || typeof snap.owner !== 'string' || typeof snap.host !== 'number' || typeof snap.state !== 'object') throw new Error('shape');
    } catch {
      this.counters.badSnapshots++;
      return;
    }
    if (snap.owner === this.id && snap.ownerEpoch === this.startedMs && snap.final === null) return; // our own publication
    const sp = this.keepSpare(key, snap);
    if (sp === null) return;
    // A hand-over to us (or a final state of a connection that is now ours): continue it.
    if (snap.final !== null && this.ready && this.ownsHost(snap.host) && !this.localByKey.has(key) && this.inject !== null) {
      this.inject((emit, now) => this.takeOver(sp, now, emit));
    }
  }

  /** Keeps `snap` as the spare of `key` (SpareStore.keep); its translated ports are reserved. */
  private keepSpare(key: string, snap: ClusterSnapshot): Spare | null {
    const sp = this.spares.keep(key, snap);
    if (sp === null) return null;
    // Its translated ports are in use: this node's NAT must not hand them out (NatTable.reserveExternal).
    const r1 = snap.raw[1];
    if (r1 !== null && r1 !== undefined && typeof r1.src === 'number' && typeof r1.dst === 'number') this.gw?.nat?.reserveExternal(key, [{ addr: r1.src, port: r1.sport }, { addr: r1.dst, port: r1.dport }]);
    return sp;
  }

  private dropSpare(key: string): void {
    if (this.spares.drop(key) !== undefined) this.gw?.nat?.releaseExternal(key);
  }

  /** `nowMs`: the gateway's time (the live loop's clock, not the cluster's). */
  private importSpare(sp: Spare, nowMs: number): Flow<unknown> | null {
    const gw = this.gw;
    if (gw === null) return null;
    return this.adopted(sp, gw.importConnection(sp.snap.state, nowMs, sp.acks));
  }

  /** After the gateway imported the spare `sp` as `f` (null: refused): this node's bookkeeping. */
  private adopted(sp: Spare, f: Flow<unknown> | null): Flow<unknown> | null {
    this.dropSpare(sp.key);
    if (f === null) {
      this.counters.takeoverFailed++;
      return null;
    }
    this.counters.takeovers++;
    const rec = this.newRec(sp.key, sp.snap.host, hostKey(f.client.addr) === sp.snap.host ? 0 : 1);
    rec.raw = [sp.snap.raw[0], sp.snap.raw[1]];
    for (const side of [0, 1] as const) {
      const t = rec.raw[side];
      if (t !== null) this.localRaw.add(tupleKey(side, t));
    }
    this.local.set(f, rec);
    this.localByKey.set(sp.key, f);
    this.log.info({ flow: f.id, from: sp.snap.owner, final: sp.snap.final !== null, ageMs: this.now() - sp.snap.ms }, 'connection taken over');
    // Our own first publication: the spares elsewhere now follow us.
    rec.needSeq = this.publish(f, rec, null);
    // What the sender sent while nobody forwarded goes now (after the frame being handled, if
    // any: never re-entering the gateway). Frames the old owner had already forwarded arrive
    // again as retransmissions: rewritten from the commands, or moved past by the ACKs.
    // Only frames from after the old owner was last heard (a heartbeat of margin), and only for
    // a connection still open: older frames it forwarded itself, and replaying a closed
    // connection's frames would only make the endpoints answer with resets.
    const since = this.ms.quietSince(sp.snap.owner, sp.snap.ownerEpoch) ?? (this.ms.lastHeardOf(sp.snap.owner) ?? this.now()) - this.o.heartbeatMs;
    const recent = sp.recent.filter((x) => x.ms >= since);
    sp.recent = [];
    const open = f.state !== 'closing' && f.state !== 'closed';
    if (recent.length > 0 && open && sp.snap.final === null) {
      setImmediate(() => {
        this.inject?.((emit, now) => {
          for (const x of recent) {
            if (this.local.get(f) === undefined) break;
            this.counters.replayed++;
            this.gw!.handleFrame(x.frame, x.from, now, emit);
          }
        });
      });
    }
    return f;
  }

  private takeOver(sp: Spare, now: number, emit: Emit): void {
    if (this.localByKey.has(sp.key)) return;
    const f = this.importSpare(sp, now);
    const w = this.waiting.get(sp.key);
    if (w !== undefined) {
      this.waiting.delete(sp.key);
      for (const x of w.frames) this.heldBytes -= x.frame.length;
      if (f !== null) {
        const skip = this.forwardedBefore(sp.snap, w.frames);
        this.counters.handoffSkipped += skip.size;
        w.frames.forEach((x, i) => {
          if (skip.has(i)) return;
          this.counters.replayed++;
          this.gw!.handleFrame(x.frame, x.from, now, emit);
        });
      }
    }
  }

  /**
   * Of the frames held for a hand-over, those the old owner handled itself before it handed
   * the connection over (its views and this node's differed meanwhile): from each side, every
   * frame up to the last one with the digest its final state names. Frames arrive on the shared
   * segments in the same order at every node.
   */
  private forwardedBefore(snap: ClusterSnapshot, frames: Waiting['frames']): Set<number> {
    const skip = new Set<number>();
    const handled = snap.final !== null ? snap.handled : undefined;
    if (handled === undefined) return skip;
    for (const side of [0, 1] as const) {
      const d = handled[side];
      if (typeof d !== 'number') continue;
      let upTo = -1;
      frames.forEach((x, i) => {
        if (x.from === side && tcpDigest(x.frame, this.vh) === d) upTo = i;
      });
      for (let i = 0; i <= upTo; i++) if (frames[i]!.from === side) skip.add(i);
    }
    return skip;
  }

  private expireWaiting(now: number): void {
    if (this.waiting.size === 0 || this.inject === null) return;
    if (this.joining(now)) return;
    for (const [key, w] of [...this.waiting]) {
      if (now - w.sinceMs < this.o.handoffWaitMs) continue;
      this.counters.handoffTimeouts++;
      const sp = this.spares.get(key);
      if (sp === undefined || !this.ownsHost(sp.snap.host)) {
        // Gone, or no longer this node's (the view changed): what waited is dropped, counted.
        this.waiting.delete(key);
        for (const x of w.frames) this.heldBytes -= x.frame.length;
        this.counters.handoffDrops += w.frames.length;
        continue;
      }
      this.inject((emit, t) => this.takeOver(sp, t, emit));
    }
  }

  /** Publishes the final state of `f` for `to` and forgets it here. */
  private handOff(f: Flow<unknown>, rec: LocalRec, to: string | null, _now: number, emit: Emit): void {
    // What waits for a snapshot goes only if it is stored; with fencing, the rest is dropped (the
    // new owner continues from the final state and rewrites the sender's retransmissions).
    this.releaseQueue(rec, this.o.leaseMs > 0 ? rec.ackedSeq : Infinity, emit);
    if (this.o.leaseMs > 0) this.counters.syncDrops += this.dropQueue(rec, () => true);
    this.publish(f, rec, to ?? '*');
    rec.handedOff = true;
    this.counters.handoffs++;
    this.gw!.releaseConnection(f as never);
  }

  // ---------------------------------------------------------------------------------------------
  // Operations

  private maxLagMs(): number {
    const now = this.now();
    let lag = 0;
    for (const rec of this.local.values()) {
      if (rec.pubSeq > rec.ackedSeq) lag = Math.max(lag, now - rec.lastPubMs);
    }
    return lag;
  }

  /** Status of this node for `tapgate cluster status`. */
  status(): Record<string, unknown> {
    const now = this.now();
    const until = this.beat?.leaseUntil(this.startedMs) ?? Infinity;
    return {
      node: this.id,
      ready: this.ready,
      draining: this.draining,
      connected: this.connected,
      incarnation: this.startedMs,
      /** How long the lease still runs (ms; null: no fencing or no lease yet). */
      leaseLeftMs: until === Infinity || until <= 0 ? null : until - now,
      syncOk: this.syncOk,
      view: this.ms.view,
      nonTcpForwarder: this.ms.nonTcpMine,
      owned: [...this.local.values()].map((r) => ({ key: r.key, pub: r.pubSeq, acked: r.ackedSeq, held: r.queue.length })),
      spares: this.spares.size,
      spareAgeMaxMs: this.spares.ageMaxMs(now),
      syncLagMs: this.maxLagMs(),
      heldBytes: this.heldBytes,
      counters: { ...this.counters },
    };
  }

  private onControl(data: Uint8Array, respond: (d: Uint8Array) => boolean): void {
    let op = '';
    try {
      op = String((JSON.parse(dec.decode(data)) as { op?: unknown }).op);
    } catch {
      /* */
    }
    if (op === 'status') respond(enc.encode(JSON.stringify(this.status())));
    else if (op === 'drain') {
      respond(enc.encode(JSON.stringify({ node: this.id, draining: true })));
      void this.drain().then(() => this.onDrained?.());
    } else if (op === 'reload') {
      respond(enc.encode(JSON.stringify({ node: this.id, ...(this.onReload?.() ?? { error: 'this node cannot reload' }) })));
    } else respond(enc.encode(JSON.stringify({ error: `unknown op '${op}'` })));
  }

  /** Called when a drain asked over NATS (`tapgate cluster drain`) has finished. */
  onDrained: (() => void) | undefined;

  /** Re-reads the config (`tapgate cluster reload`): what happened, for the answer. */
  onReload: (() => Record<string, unknown>) | undefined;

  /**
   * Graceful drain: announce it, let the others see it, hand every connection over with its
   * final state, wait until the bucket has them all.
   */
  async drain(timeoutMs = 5000): Promise<void> {
    if (this.draining) return;
    this.draining = true;
    this.heartbeat();
    await new Promise((r) => setTimeout(r, this.o.heartbeatMs * 2 + 20));
    this.recomputeView();
    const deadline = this.now() + timeoutMs;
    while (this.pendingAcks.size > 0 && this.now() < deadline) {
      await Promise.race([Promise.allSettled([...this.pendingAcks]), new Promise((r) => setTimeout(r, 50))]);
    }
    this.log.info({ handoffs: this.counters.handoffs, left: this.local.size }, 'cluster node drained');
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    const beat = this.beat;
    this.beat = null;
    if (beat !== null) await beat.stop();
    const bus = this.bus;
    this.bus = null;
    if (bus !== null) await bus.close();
  }
}
