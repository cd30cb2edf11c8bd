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
import { seqAdd, seqDiff, seqGe, seqToOffset, type Seq } from '../wire/seq.js';
import { ipv4ToString } from '../wire/ipv4.js';
import { TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN } from '../wire/tcp.js';
import { judge, type Verdict, type WindowView } from './window.js';


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

/**
 * How far past the SYN's TSval a RST answering it may echo: 2^20 timestamp ticks, 17 minutes at
 * Linux's 1 kHz clock (retransmitted SYNs carry later TSvals).
 */
const SYN_TS_SPAN = 2 ** 20;
/** How far one segment may move a learnt window edge (see FlowTable.observe): 1 GiB. */
const LEARN_SPAN = 2 ** 30;

export type FlowState = 'syn-sent' | 'syn-received' | 'established' | 'closing' | 'closed';

const FLOW_CONFIRMED = 1;
const FLOW_SEEN = 6;
const FLOW_MIDSTREAM = 8;
const FLOW_POLICY = 48;
const POLICY_SHIFT = 4;

/** What the fail-closed policy decided for a connection first seen mid-stream (engine/policy.ts). */
export type MidstreamMark = 'none' | 'drop' | 'pass';
const MARKS: readonly MidstreamMark[] = ['none', 'drop', 'pass'];

export class Flow<C = unknown> {
  state: FlowState;
  readonly halves: [TrackedHalf, TrackedHalf];
  /** Runtime: the connection's stream engine when an agent rewrites it. */
  conn: C | null = null;
  lastMs: number;
  /** Closing started (both FINs, or a RST) at this time. */
  closedMs = 0;
  readonly createdMs: number;
  /** FLOW_* bits: confirmed, seen from side 0 / 1, midstream. */
  private bits: number;
  // Endpoints as plain small integers (addresses as int32: no heap number per address; both
  // ports in one), so that an entry is one object plus its halves; `client`, `server`, `key`,
  // `id` are derived.
  private readonly ca: number;
  private readonly sa: number;
  /** Client port << 16 | server port. */
  private readonly ports: number;

  constructor(
    client: Endpoint,
    server: Endpoint,
    midstream: boolean,
    nowMs: number,
    /** How many connections this 4-tuple had before this one (the id's "#n"). */
    readonly gen = 0,
  ) {
    this.state = midstream ? 'established' : 'syn-sent';
    this.halves = [newHalf(), newHalf()];
    this.lastMs = nowMs;
    this.createdMs = nowMs;
    this.bits = midstream ? FLOW_MIDSTREAM : 0;
    this.ca = client.addr | 0;
    this.sa = server.addr | 0;
    this.ports = (client.port << 16) | server.port;
  }

  private get cp(): number {
    return this.ports >>> 16;
  }
  private get sp(): number {
    return this.ports & 0xffff;
  }

  /** Handshake completed, or (mid-stream) both sides seen: no longer counts as half-open. */
  get confirmed(): boolean {
    return (this.bits & FLOW_CONFIRMED) !== 0;
  }
  set confirmed(v: boolean) {
    this.bits = v ? this.bits | FLOW_CONFIRMED : this.bits & ~FLOW_CONFIRMED;
  }
  /** First seen mid-stream (no SYN): positions unknown, never rewritten. */
  get midstream(): boolean {
    return (this.bits & FLOW_MIDSTREAM) !== 0;
  }
  /** The policy's decision for this mid-stream connection ('none': not decided or inspected). */
  get mark(): MidstreamMark {
    return MARKS[(this.bits & FLOW_POLICY) >>> POLICY_SHIFT]!;
  }
  set mark(m: MidstreamMark) {
    this.bits = (this.bits & ~FLOW_POLICY) | (MARKS.indexOf(m) << POLICY_SHIFT);
  }
  /** @internal Bit s set: a segment was seen from side s (mid-stream confirmation); see `seen`. */
  get seenMask(): number {
    return (this.bits & FLOW_SEEN) >>> 1;
  }
  set seenMask(v: number) {
    this.bits = (this.bits & ~FLOW_SEEN) | ((v << 1) & FLOW_SEEN);
  }

  /** The side that sent the first SYN (a fresh object). */
  get client(): Endpoint {
    return { addr: this.ca >>> 0, port: this.cp };
  }
  get server(): Endpoint {
    return { addr: this.sa >>> 0, port: this.sp };
  }

  /** The canonical 4-tuple key (flowKey), derived on demand. */
  get key(): string {
    return flowKey(this.client, this.server);
  }

  /** Connection id, e.g. "10.0.0.1.40000-10.0.0.2.80" ("#n" appended for a reused 4-tuple). */
  get id(): string {
    const n = this.gen;
    return `${ipv4ToString(this.ca >>> 0)}.${this.cp}-${ipv4ToString(this.sa >>> 0)}.${this.sp}${n > 0 ? `#${n}` : ''}`;
  }

  /** A segment was seen from side 0 / side 1 (a fresh array: read-only view of `seenMask`). */
  get seen(): [boolean, boolean] {
    return [(this.seenMask & 1) !== 0, (this.seenMask & 2) !== 0];
  }

  /** 0 when the segment came from the client, 1 from the server. */
  sideOf(src: Endpoint): 0 | 1 {
    return (src.addr | 0) === this.ca && src.port === this.ports >>> 16 ? 0 : 1;
  }

  /** @internal This flow's 4-tuple is {a, b} (either order). */
  is(a: Endpoint, b: Endpoint): boolean {
    const x = a.addr | 0;
    const y = b.addr | 0;
    const ports = this.ports;
    return (
      (x === this.ca && y === this.sa && ((a.port << 16) | b.port) === ports) ||
      (x === this.sa && y === this.ca && ((b.port << 16) | a.port) === ports)
    );
  }

  /** @internal The table's hash of this flow's 4-tuple (tupleHash). */
  hash(): number {
    return tupleHash(this.ca, this.cp, this.sa, this.sp);
  }

  /** Wscale is in force only if both SYNs carried the option (RFC 7323 §2.2). */
  get windowScaling(): boolean {
    return this.halves[0].wscale >= 0 && this.halves[1].wscale >= 0;
  }
}

/**
 * A small-integer (Smi) hash of a 4-tuple, the same in both directions: the table is keyed by
 * it (no string per lookup or per entry); colliding flows share a bucket.
 */
function tupleHash(a1: number, p1: number, a2: number, p2: number): number {
  let x = Math.imul(a1 ^ (p1 << 16) ^ p1, 0x9e3779b1);
  let y = Math.imul(a2 ^ (p2 << 16) ^ p2, 0x9e3779b1);
  x ^= x >>> 15;
  y ^= y >>> 15;
  // Symmetric: the same for (a, b) and (b, a).
  let h = Math.imul(x ^ y, 0x85ebca6b) + Math.imul(x + y, 0xc2b2ae35);
  h ^= h >>> 13;
  h = Math.imul(h, 0x27d4eb2f);
  return (h ^ (h >>> 16)) | 0;
}

// TrackedHalf.bits: mss in bits 0-15, wscale + 1 in bits 16-19, then one bit per flag.
const MSS_MASK = 0xffff;
const WS_SHIFT = 16;
const WS_MASK = 0xf << WS_SHIFT;
const SACK_BIT = 1 << 20;
const TS_BIT = 1 << 21;
const FIN_BIT = 1 << 22;
const RST_BIT = 1 << 23;
const END_BIT = 1 << 24;
const ACK_BIT = 1 << 25;

/**
 * A Half as the table keeps it: the ISN and one small integer (two fields instead of seven; a
 * table entry is mostly its halves). Reads and writes like a plain Half; JSON.stringify gives
 * the plain form (but object spread would not: use `plainHalf`).
 */
/** The part of a TrackedHalf only a handshake or a mid-stream pickup needs. */
class RareHalf {
  midBase: Seq | undefined = undefined;
  synTs: number | undefined = undefined;
  altIsn: Seq | undefined = undefined;
}

export class TrackedHalf implements Half {
  isn: Seq | undefined = undefined;
  private bits = 536 | (0 << WS_SHIFT); // mss 536, wscale −1, no flags

  get mss(): number {
    return this.bits & MSS_MASK;
  }
  set mss(v: number) {
    this.bits = (this.bits & ~MSS_MASK) | (v & MSS_MASK);
  }
  /** −1 (none) to 14. */
  get wscale(): number {
    return ((this.bits & WS_MASK) >>> WS_SHIFT) - 1;
  }
  set wscale(v: number) {
    this.bits = (this.bits & ~WS_MASK) | (((v + 1) << WS_SHIFT) & WS_MASK);
  }
  get sackPermitted(): boolean {
    return (this.bits & SACK_BIT) !== 0;
  }
  set sackPermitted(v: boolean) {
    this.bits = v ? this.bits | SACK_BIT : this.bits & ~SACK_BIT;
  }
  get timestamps(): boolean {
    return (this.bits & TS_BIT) !== 0;
  }
  set timestamps(v: boolean) {
    this.bits = v ? this.bits | TS_BIT : this.bits & ~TS_BIT;
  }
  get finSeen(): boolean {
    return (this.bits & FIN_BIT) !== 0;
  }
  set finSeen(v: boolean) {
    this.bits = v ? this.bits | FIN_BIT : this.bits & ~FIN_BIT;
  }
  get rstSeen(): boolean {
    return (this.bits & RST_BIT) !== 0;
  }
  set rstSeen(v: boolean) {
    this.bits = v ? this.bits | RST_BIT : this.bits & ~RST_BIT;
  }

  // What the window judgement (flow/window.ts) learns of this side, in byte offsets of the
  // sequence spaces (small integers for the first GiB, where the sequence numbers themselves
  // would be heap numbers): see FlowTable.observe. Three fields: a tracked connection is mostly
  // its halves (issue 7's memory goal), so what only the handshake or a mid-stream pickup needs
  // lives in `rare`, made when first needed.
  /** One past the highest offset this side sent (valid with END_BIT). */
  end = 0;
  /** This side's highest ACK, an offset of the other side's space (valid with ACK_BIT). */
  ack = 0;
  private rare: RareHalf | undefined = undefined;

  /** Start of this side's offsets when its SYN was not seen: the sequence number before its first segment. */
  get midBase(): Seq | undefined {
    return this.rare?.midBase;
  }
  set midBase(v: Seq | undefined) {
    if (v !== undefined || this.rare !== undefined) (this.rare ??= new RareHalf()).midBase = v;
  }
  /**
   * TSval of this side's first SYN (RFC 7323), if it sent one: a RST answering it must echo a
   * time from then on (see FlowTable.judge). Cleared once the handshake completed.
   */
  get synTs(): number | undefined {
    return this.rare?.synTs;
  }
  set synTs(v: number | undefined) {
    if (v !== undefined || this.rare !== undefined) (this.rare ??= new RareHalf()).synTs = v;
    this.dropRare();
  }
  /** Another ISN this side sent in a SYN before any answer (see FlowTable.lookup). */
  get altIsn(): Seq | undefined {
    return this.rare?.altIsn;
  }
  set altIsn(v: Seq | undefined) {
    if (v !== undefined || this.rare !== undefined) (this.rare ??= new RareHalf()).altIsn = v;
    this.dropRare();
  }
  private dropRare(): void {
    const r = this.rare;
    if (r !== undefined && r.midBase === undefined && r.synTs === undefined && r.altIsn === undefined) this.rare = undefined;
  }

  /**
   * The largest window this side may advertise: 65,535 scaled by its shift when scaling is in
   * force (RFC 7323 §2.2). The judgement takes it as the window (lenient: a wider window only
   * makes more RSTs "not exact" rather than "out of window"; both keep the connection).
   */
  maxWindow(scaling: boolean): number {
    const ws = this.wscale;
    return scaling && ws > 0 ? 65_535 << ws : 65_535;
  }

  /** Offset 0 of this side's sequence space: its ISN, else the one before its first segment. */
  get base(): Seq | undefined {
    return this.isn ?? this.midBase;
  }
  get endSet(): boolean {
    return (this.bits & END_BIT) !== 0;
  }
  setEnd(v: number): void {
    this.end = v;
    this.bits |= END_BIT;
  }
  get ackSet(): boolean {
    return (this.bits & ACK_BIT) !== 0;
  }
  setAck(v: number): void {
    this.ack = v;
    this.bits |= ACK_BIT;
  }
  toJSON(): Half {
    return plainHalf(this);
  }
}

/** A plain-object copy of a Half. */
export function plainHalf(h: Half): Half {
  return {
    isn: h.isn,
    mss: h.mss,
    wscale: h.wscale,
    sackPermitted: h.sackPermitted,
    timestamps: h.timestamps,
    finSeen: h.finSeen,
    rstSeen: h.rstSeen,
  };
}

function newHalf(): TrackedHalf {
  return new TrackedHalf();
}

export interface SynOptions {
  mss: number | undefined;
  wscale: number | undefined;
  sackPermitted: boolean;
  timestamps: boolean;
  /** TSval of the timestamps option, when present. */
  tsval?: number | undefined;
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
    /** importFlow refused because the table was full. */
    importRefused: 0,
    /** Connections closed by a RST that carried data again afterwards: the RST did not end them. */
    rstRevived: 0,
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


export type LookupResult<C> =
  | { kind: 'flow'; flow: Flow<C>; side: 0 | 1; isNew: boolean }
  /** A SYN refused: the table (`table-full`) or the embryonic cap (`half-open-full`) is full. */
  | { kind: 'refused'; why: 'table-full' | 'half-open-full' }
  | { kind: 'untracked' }
  /** A bare SYN with a new ISN for a confirmed, open connection: not tracked (see the file comment). */
  | { kind: 'stray-syn'; flow: Flow<C>; side: 0 | 1 };

/** A flow as plain JSON-able data (version 1): the cluster moves entries between nodes. */
export interface FlowJson {
  v: 1;
  client: Endpoint;
  server: Endpoint;
  midstream: boolean;
  state: FlowState;
  halves: [Half, Half];
  confirmed: boolean;
  seen: [boolean, boolean];
  createdMs: number;
  lastMs: number;
  closedMs: number;
}

const FLOW_STATES: readonly FlowState[] = ['syn-sent', 'syn-received', 'established', 'closing', 'closed'];

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
  readonly counters = newFlowCounters();
  /** Called when a flow leaves the table (runtime cleanup: queue budgets). */
  onRemove: ((f: Flow<C>) => void) | undefined;
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
    return this.find(a, b, tupleHash(a.addr | 0, a.port, b.addr | 0, b.port));
  }

  /** The flow of the 4-tuple {a, b} (either direction), if any. */
  private find(a: Endpoint, b: Endpoint, h: number): Flow<C> | undefined {
    const bucket = this.flows.get(h);
    if (bucket === undefined) return undefined;
    if (bucket instanceof Flow) return bucket.is(a, b) ? bucket : undefined;
    for (const f of bucket) if (f.is(a, b)) return f;
    return undefined;
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
    return true;
  }

  /**
   * Finds or creates the flow of a segment from `src` to `dst`. A SYN without ACK creates a new
   * flow (or replaces a closed one); anything else for an unknown 4-tuple creates a mid-stream
   * flow.
   */
  lookup(src: Endpoint, dst: Endpoint, flags: number, seq: Seq, nowMs: number): LookupResult<C> {
    const hash = tupleHash(src.addr | 0, src.port, dst.addr | 0, dst.port);
    let f = this.find(src, dst, hash);
    const syn = (flags & (TCP_SYN | TCP_ACK)) === TCP_SYN;
    if (f && (flags & TCP_SYN) && !syn) {
      // A SYN-ACK with a new ISN on a confirmed connection: not an answer to anything the
      // endpoints have open (they challenge-ACK it, RFC 5961 §4); it must not reset the tracked ISN.
      const side = f.sideOf(src);
      const h = f.halves[side];
      if (f.confirmed && h.isn !== undefined && h.isn !== seq) {
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
      // one spoofed FIN and SYN cannot restart its tracking. A copy of the SYN that opened it
      // (a late duplicate) is not a new connection either.
      const repeat = side === 0 && h.isn === seq;
      const closing = f.state === 'closed' && !repeat && (f.halves[0].rstSeen || f.halves[1].rstSeen || (this.finsAcked(f) && (this.ended?.(f) ?? true)));
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
    if (this.count >= this.limits.maxConnections && syn && this.closed.size > 0) {
      const oldest = this.closed.values().next().value as Flow<C>;
      this.remove(oldest);
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
    let n = 0;
    if (this.reuse.size > 0) {
      const key = flowKey(src, dst);
      const r = this.reuse.get(key);
      if (r !== undefined) {
        n = r;
        this.reuse.delete(key); // the new flow carries it from now on
      }
    }
    const midstream = !syn;
    // Mid-stream: who opened is unknown; `orientMidstream` may know (the side a rule names as
    // the client), else the lower port is taken as the server's (a guess).
    const srcIsClient = !midstream || (this.orientMidstream?.(src, dst) ?? dst.port <= src.port);
    const [client, server] = srcIsClient ? [src, dst] : [dst, src];
    f = new Flow<C>(client, server, midstream, nowMs, n);
    this.insert(f, hash);
    this.embryonic++;
    this.counters.created++;
    if (midstream) this.counters.midstream++;
    return { kind: 'flow', flow: f, side: f.sideOf(src), isNew: true };
  }

  /** The flow as plain JSON-able data (see FlowJson; `conn` is not part of it). */
  exportFlow(f: Flow<C>): FlowJson {
    const half = plainHalf;
    return {
      v: 1,
      client: f.client,
      server: f.server,
      midstream: f.midstream,
      state: f.state,
      halves: [half(f.halves[0]), half(f.halves[1])],
      confirmed: f.confirmed,
      seen: f.seen,
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
    const hash = tupleHash(v.client.addr | 0, v.client.port, v.server.addr | 0, v.server.port);
    const old = this.find(v.client, v.server, hash);
    if (old === undefined && this.count >= this.limits.maxConnections) {
      this.counters.importRefused++;
      return null;
    }
    if (old !== undefined) this.remove(old);
    let gen = 0;
    if (this.reuse.size > 0) {
      const key = flowKey(v.client, v.server);
      const r = this.reuse.get(key);
      if (r !== undefined) {
        gen = r;
        this.reuse.delete(key);
      }
    }
    const f = new Flow<C>(v.client, v.server, v.midstream, v.createdMs, gen);
    f.state = v.state;
    Object.assign(f.halves[0], v.halves[0]);
    Object.assign(f.halves[1], v.halves[1]);

    f.seenMask = (v.seen[0] ? 1 : 0) | (v.seen[1] ? 2 : 0);
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
    return { end: s.endSet ? s.end : undefined, ack: r.ackSet ? r.ack : undefined, maxWin: r.maxWindow(f.windowScaling) };
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
    if (!s.endSet || (end > s.end && end - s.end < LEARN_SPAN)) s.setEnd(end);
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
      // A confirmed connection's ISNs are settled (lookup turns SYNs with new ones away).
      if (!f.confirmed || h.isn === undefined) h.isn = seq;
      if (opts) {
        if (opts.mss !== undefined) h.mss = opts.mss;
        h.wscale = opts.wscale !== undefined ? Math.min(opts.wscale, 14) : -1;
        h.sackPermitted = opts.sackPermitted;
        h.timestamps = opts.timestamps;
        if (opts.tsval !== undefined && !(flags & TCP_ACK) && h.synTs === undefined) h.synTs = opts.tsval;
      }
      if (side === 1 && (flags & TCP_ACK) && f.state === 'syn-sent') f.state = 'syn-received';
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
   * Nothing happens when `f` is not (or no longer) in the table.
   */
  remove(f: Flow<C>): void {
    if (!this.unlink(f)) return;
    this.closed.delete(f);
    if (!f.confirmed) this.embryonic--;
    // A later connection of this 4-tuple gets the next number.
    this.reuse.set(f.key, f.gen + 1);
    if (this.reuse.size > this.limits.maxConnections * 2) this.reuse.clear();
    this.onRemove?.(f);
  }

  /** Removes idle and long-closed connections. */
  expire(nowMs: number): number {
    let n = 0;
    const synTimeout = this.limits.synTimeoutMs ?? this.limits.idleTimeoutMs;
    for (const f of this.values()) {
      if (!f.confirmed && nowMs - f.createdMs > synTimeout) {
        // Whatever its state (a SYN answered by a RST is `closed` but was never a connection).
        this.remove(f);
        this.counters.expiredHalfOpen++;
        n++;
      } else if (f.state === 'closed' || f.state === 'closing') {
        const closed = f.state === 'closed';
        const since = closed ? f.closedMs : f.lastMs;
        const timeout = closed ? (this.limits.closedTimeoutMs ?? this.limits.closingTimeoutMs) : this.limits.closingTimeoutMs;
        if (nowMs - since > timeout || nowMs - f.lastMs > this.limits.closingTimeoutMs) {
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

/** Checks a FlowJson (from another node: untrusted shape); throws Error('flow: bad snapshot (…)'). */
function validFlowJson(j: unknown): FlowJson {
  const bad = (why: string): never => {
    throw new Error(`flow: bad snapshot (${why})`);
  };
  if (typeof j !== 'object' || j === null) return bad('not an object');
  const o = j as Record<string, unknown>;
  if (o['v'] !== 1) return bad(`version ${String(o['v'])}`);
  const u32 = (x: unknown) => Number.isInteger(x) && (x as number) >= 0 && (x as number) <= 0xffffffff;
  const port = (x: unknown) => Number.isInteger(x) && (x as number) >= 0 && (x as number) <= 0xffff;
  const endpoint = (x: unknown, name: string): Endpoint => {
    const e = x as Record<string, unknown> | null;
    if (typeof e !== 'object' || e === null || !u32(e['addr']) || !port(e['port'])) return bad(name);
    return { addr: e['addr'] as number, port: e['port'] as number };
  };
  const client = endpoint(o['client'], 'client');
  const server = endpoint(o['server'], 'server');
  const bool = (x: unknown, name: string): boolean => (typeof x === 'boolean' ? x : bad(name));
  const time = (x: unknown, name: string): number => (Number.isFinite(x) ? (x as number) : bad(name));
  const pair = (x: unknown, name: string): unknown[] => (Array.isArray(x) && x.length === 2 ? x : bad(name));
  const half = (x: unknown, i: number): Half => {
    const h = x as Record<string, unknown> | null;
    const name = `halves[${i}]`;
    if (typeof h !== 'object' || h === null) return bad(name);
    const isn = h['isn'];
    if (isn !== undefined && isn !== null && !u32(isn)) return bad(`${name}.isn`);
    if (!port(h['mss'])) return bad(`${name}.mss`);
    const ws = h['wscale'];
    if (!Number.isInteger(ws) || (ws as number) < -1 || (ws as number) > 14) return bad(`${name}.wscale`);
    return {
      isn: isn === undefined || isn === null ? undefined : (isn as Seq),
      mss: h['mss'] as number,
      wscale: ws as number,
      sackPermitted: bool(h['sackPermitted'], `${name}.sackPermitted`),
      timestamps: bool(h['timestamps'], `${name}.timestamps`),
      finSeen: bool(h['finSeen'], `${name}.finSeen`),
      rstSeen: bool(h['rstSeen'], `${name}.rstSeen`),
    };
  };
  const state = o['state'];
  if (!FLOW_STATES.includes(state as FlowState)) return bad('state');
  const halves = pair(o['halves'], 'halves');
  const seen = pair(o['seen'], 'seen');
  return {
    v: 1,
    client,
    server,
    midstream: bool(o['midstream'], 'midstream'),
    state: state as FlowState,
    halves: [half(halves[0], 0), half(halves[1], 1)],
    confirmed: bool(o['confirmed'], 'confirmed'),
    seen: [bool(seen[0], 'seen[0]'), bool(seen[1], 'seen[1]')],
    createdMs: time(o['createdMs'], 'createdMs'),
    lastMs: time(o['lastMs'], 'lastMs'),
    closedMs: time(o['closedMs'], 'closedMs'),
  };
}
