/**
 * One direction (sender S → receiver R) of one connection: the seed's method (Figures 5–6C),
 * docs/ARCHITECTURE.md §2.
 *
 * `x` is the next original stream position not yet processed. A segment carrying original bytes
 * [n, m) (plus a FIN at m, which occupies position m):
 * - n > x: declined and delayed in a bounded queue (or discarded over budget, counted);
 * - m ≤ x: already processed: rewritten with the stored commands only, and released;
 * - otherwise bytes [x, m) go to the agent once, the whole segment is rewritten and released,
 *   then queued segments that became contiguous are drained in order.
 *
 * Positions are 0-based stream positions; sequence numbers never appear here (the connection
 * converts them at the edge). Segments are opaque `T` to this module: it returns them inside
 * `Release` records with their new position and payload, and the caller builds the frames.
 *
 * Hold-back (seed, Figure 7 text, "PORT 40, "): when the agent says bytes from h on are
 * undecided, the segment is released without them (a delete command; the bytes are now the
 * gateway's responsibility, so ACKs may cover them) and they are kept here. When they are
 * decided, one command at the first undecided position carries the agent's output for them.
 * If the sender sends nothing more (FIN, RST, timeout, limit), the decision is flushed as an
 * insertion at x and the gateway originates a segment carrying it (retransmitted until R has it).
 */
import type { Agent, AgentOutput, Direction, Edit, FlushReason } from '../agent/types.js';
import { copyBytes } from '../util/bytes.js';
import { ByteStore } from './bytestore.js';
import { CommandList } from './commands.js';
import type { GlobalBudget, StreamCounters } from './counters.js';
import type { Limits } from './limits.js';

export interface SegIn<T> {
  /** Original stream position of the first payload byte (or of the FIN / RST when empty). */
  pos: number;
  payload: Uint8Array;
  fin: boolean;
  rst: boolean;
  /** Opaque to the engine (the caller's frame and parsed headers). */
  tag: T;
}

export interface Release<T> {
  /** The segment this release came from (for a gateway-originated one: the template). */
  tag: T;
  /** New stream position of the first payload byte (or of the FIN / RST). */
  newPos: number;
  payload: Uint8Array;
  fin: boolean;
  rst: boolean;
  /** True when the payload differs from the original segment's (frame must be rebuilt). */
  changed: boolean;
  /** A gateway-originated segment (flushed held bytes): build it from the template, data only. */
  synth: boolean;
}

interface Queued<T> {
  seg: SegIn<T>;
  end: number;
}

interface Synth {
  newPos: number;
  data: Uint8Array;
  sentMs: number;
  tries: number;
}

const EMPTY = new Uint8Array(0);
/** The queue / synthOut of every direction that has none (shared, never written: replaced by a
 *  fresh array before a push), so an idle direction holds no arrays of its own. */
const NO_LIST = Object.freeze([]) as unknown as never[];

/** Serializable state of one direction (the cluster moves it; see toJSON). */
export interface DirectionJson {
  v: 1;
  x: number;
  heldFrom: number;
  held: string;
  heldSinceMs: number;
  finPos: number;
  finProcessed: boolean;
  agentOff: boolean;
  rcvAckNew: number;
  /** Absent from snapshots before it existed (then 0: what R acknowledged stands in). */
  sentEnd?: number;
  sndAckOrg: number;
  commands: ReturnType<CommandList['toJSON']>;
  store: { start: number; data: string };
  synth: { newPos: number; data: string; sentMs: number; tries: number } | null;
}

/**
 * State a direction needs only while data is in flight (bytes held, stored or queued), or once it
 * ended or changed mode (a FIN, a gateway-originated segment, the agent switched off): created on
 * first use, and dropped again when everything is acknowledged and nothing is held (`compact`),
 * so a direction that only saw the handshake, or an idle keep-alive connection, is small (issues
 * 7 and 18). StreamDirection reaches these fields through accessors of the same names; writing
 * a field's initial value does not create the object.
 */
class Busy<T> {
  held: ByteStore | null = null;
  /** When the sender last sent a segment (the hold timer's start). */
  heldSinceMs = 0;
  store: ByteStore | null = null;
  queue: Queued<T>[] = NO_LIST;
  queueBytes = 0;
  finPos = -1;
  finProcessed = false;
  agentOff = false;
  adopting = false;
  /** A RST was taken while bytes were held or originated: timers stop until data comes again. */
  reset = false;
  synth: Synth | null = null;
  synthOut: Release<T>[] = NO_LIST;
  lastTag: T | undefined = undefined;
  /** The agent gave up on the connection (AgentOutput.abort), until the connection takes it. */
  abort: string | null = null;
}

/** What the directions of one gateway share (one object per direction kind and gateway). */
interface Env {
  readonly dir: Direction;
  readonly limits: Limits;
  readonly counters: StreamCounters;
  readonly budget: GlobalBudget;
  readonly retain: (tag: never) => unknown;
}

const IDENTITY = <T>(t: T): T => t;
/** Recently used environments (a gateway has two: one per direction). */
const envs: Env[] = [];

function envFor(dir: Direction, limits: Limits, counters: StreamCounters, budget: GlobalBudget, retain: (tag: never) => unknown): Env {
  for (const e of envs) {
    if (e.dir === dir && e.limits === limits && e.counters === counters && e.budget === budget && e.retain === retain) return e;
  }
  const e: Env = { dir, limits, counters, budget, retain };
  envs.unshift(e);
  if (envs.length > 8) envs.pop();
  return e;
}

/** The commands of a direction that has none yet (shared, read-only: frozen). */
const NO_COMMANDS = Object.freeze(new CommandList()) as CommandList;

export class StreamDirection<T> {
  /** Own command list, created with the first command (`cmds` reads a shared empty one before). */
  private _cmds: CommandList | null = null;
  /** Next original position not yet processed (the seed's x). */
  x = 0;
  /** Highest new position R acknowledged. */
  rcvAckNew = 0;
  /** Highest original position acknowledged to S (= G of rcvAckNew). */
  sndAckOrg = 0;
  /** End (new positions, a FIN counted) of what this node released to R so far: where R's next
   *  byte is once all of it arrived (Connection.endSeq). */
  sentEnd = 0;
  /** Commands created so far (the cluster publishes a snapshot before releasing bytes that
   *  depend on a new one: it compares this number with the one last published). */
  changes = 0;
  /**
   * The receiver's advertised right edge (ack + window) in this direction's positions, from its
   * latest ACK (−1: none yet). Read by the hold timer.
   */
  private rcvEdge = -1;
  /** Capacity the next processed-bytes store starts with: its last ring's, kept when the Busy
   *  part goes (a bulk flow compacted at a full ACK does not grow a new ring from 256 bytes,
   *  copying at each doubling). */
  private storeHint = 0;
  /** This direction's store bytes as counted in the budget (GlobalBudget.storeBytes). */
  private stored = 0;
  /** The rest of the state, while needed (see Busy). */
  private busy: Busy<T> | null = null;
  /** The agent's last answer asked for the other direction to be flushed (takeWake). */
  private wake = false;
  private readonly env: Env;

  constructor(
    dir: Direction,
    private readonly agent: Agent | null,
    limits: Limits,
    counters: StreamCounters,
    budget: GlobalBudget,
    /** Makes a tag safe to keep past the current call (the caller's buffers may be reused). */
    retain: (tag: T) => T = IDENTITY,
  ) {
    this.env = envFor(dir, limits, counters, budget, retain as (tag: never) => unknown);
  }

  get dir(): Direction {
    return this.env.dir;
  }
  private get limits(): Limits {
    return this.env.limits;
  }
  private get counters(): StreamCounters {
    return this.env.counters;
  }
  private get budget(): GlobalBudget {
    return this.env.budget;
  }
  private get retain(): (tag: T) => T {
    return this.env.retain as (tag: T) => T;
  }

  /** The modification commands (a shared, frozen empty list until the first command). */
  get cmds(): CommandList {
    const c = this._cmds;
    return c === null ? NO_COMMANDS : c;
  }
  /** The command list to add to (created on first use). */
  private ownCmds(): CommandList {
    return (this._cmds ??= new CommandList());
  }

  private get b(): Busy<T> {
    return (this.busy ??= new Busy<T>());
  }

  /**
   * The receiver's latest right edge (`edgeRaw`, with its ACK `ackOrg`), in this direction's
   * positions (Connection.translate), cut to what the store keeps per connection — not to the
   * global bound: an edge the global bound closed is not the receiver's, and taking it for a
   * closed window (tick) kept held bytes forever when the bound was reached just as everything
   * else was acknowledged (nothing would come to open it again).
   */
  receiverEdge(edgeRaw: number, ackOrg: number): void {
    this.rcvEdge = Math.min(edgeRaw, ackOrg + this.limits.normalizeBytesPerConn);
  }
  private get _held(): ByteStore | null {
    return this.busy === null ? null : this.busy.held;
  }
  private get heldSinceMs(): number {
    return this.busy === null ? 0 : this.busy.heldSinceMs;
  }
  private set heldSinceMs(v: number) {
    if (this.busy !== null || v !== 0) this.b.heldSinceMs = v;
  }
  private get queue(): Queued<T>[] {
    return this.busy === null ? NO_LIST : this.busy.queue;
  }
  private set queue(v: Queued<T>[]) {
    if (this.busy !== null || v !== NO_LIST) this.b.queue = v;
  }
  private get queueBytes(): number {
    return this.busy === null ? 0 : this.busy.queueBytes;
  }
  private set queueBytes(v: number) {
    if (this.busy !== null || v !== 0) this.b.queueBytes = v;
  }
  /** Position of the FIN once seen (−1 = none). */
  get finPos(): number {
    return this.busy === null ? -1 : this.busy.finPos;
  }
  set finPos(v: number) {
    if (this.busy !== null || v !== -1) this.b.finPos = v;
  }
  get finProcessed(): boolean {
    return this.busy === null ? false : this.busy.finProcessed;
  }
  set finProcessed(v: boolean) {
    if (this.busy !== null || v) this.b.finProcessed = v;
  }
  /** Agent disabled for this direction after a contract violation or an exception. */
  private get agentOff(): boolean {
    return this.busy === null ? false : this.busy.agentOff;
  }
  private set agentOff(v: boolean) {
    if (this.busy !== null || v) this.b.agentOff = v;
  }
  /** Restored from a snapshot that may be behind what a previous owner released (see adopt). */
  private get adopting(): boolean {
    return this.busy === null ? false : this.busy.adopting;
  }
  private set adopting(v: boolean) {
    if (this.busy !== null || v) this.b.adopting = v;
  }
  /** See Busy.reset. */
  private get reset(): boolean {
    return this.busy === null ? false : this.busy.reset;
  }
  private set reset(v: boolean) {
    if (this.busy !== null || v) this.b.reset = v;
  }
  private get synth(): Synth | null {
    return this.busy === null ? null : this.busy.synth;
  }
  private set synth(v: Synth | null) {
    if (this.busy !== null || v !== null) this.b.synth = v;
  }
  /** The agent gave up on the connection and the connection has not taken that yet. */
  private get givenUp(): boolean {
    return this.busy !== null && this.busy.abort !== null;
  }
  /** The agent asked for the other direction to be flushed (AgentOutput.wake), and forgets it. */
  takeWake(): boolean {
    const w = this.wake;
    this.wake = false;
    return w;
  }

  /** Flushes held bytes for `reason` now and hands what that originates to `out` (AgentOutput.wake). */
  flushNow(reason: FlushReason, nowMs: number, out: Release<T>[]): void {
    this.flush(reason, nowMs);
    this.takeSynth(out);
    this.account();
  }

  /** The agent's abort (AgentOutput.abort) not yet taken, and forgets it (Connection.abort). */
  takeAbort(): string | null {
    const b = this.busy;
    if (b === null || b.abort === null) return null;
    const a = b.abort;
    b.abort = null;
    this.compact();
    return a;
  }
  /** Gateway-originated releases made while handling a segment: sent after its own release. */
  private get synthOut(): Release<T>[] {
    return this.busy === null ? NO_LIST : this.busy.synthOut;
  }
  private set synthOut(v: Release<T>[]) {
    if (this.busy !== null || v !== NO_LIST) this.b.synthOut = v;
  }
  /** Last segment seen from S: the template for gateway-originated segments (retained only
   *  while bytes are held or a gateway-originated segment is outstanding). */
  private get lastTag(): T | undefined {
    return this.busy === null ? undefined : this.busy.lastTag;
  }
  private set lastTag(v: T | undefined) {
    if (this.busy !== null || v !== undefined) this.b.lastTag = v;
  }

  /** The held bytes' store, created on first use (an idle direction has none). Reads that
   *  must not create it use heldFrom / heldBytes. */
  private get held(): ByteStore {
    return this.heldAt(this.x);
  }
  /** The held bytes' store, created starting at `pos` when there is none. */
  private heldAt(pos: number): ByteStore {
    const b = this.b;
    return (b.held ??= new ByteStore(pos));
  }
  /** The processed-unacknowledged bytes' store, created on first use. */
  private get store(): ByteStore {
    const b = this.b;
    return (b.store ??= new ByteStore(this.x, this.storeHint));
  }

  get heldFrom(): number {
    const h = this._held;
    return h === null ? 0 : h.start;
  }
  get heldBytes(): number {
    const h = this._held;
    return h === null ? 0 : h.size;
  }
  get queuedSegments(): number {
    return this.queue.length;
  }
  get queuedBytes(): number {
    return this.queueBytes;
  }

  /**
   * Nothing left that a later segment would need: no command was ever made (F and G are the
   * identity), nothing is held, queued or being originated, and R acknowledged everything
   * processed (the FIN included once processed). See Connection.settled.
   */
  get settled(): boolean {
    if (this.changes !== 0 || this.sndAckOrg < this.x) return false;
    const b = this.busy;
    return b === null || ((b.held === null || b.held.size === 0) && b.queue.length === 0 && b.synth === null);
  }

  /** F: original position → new position. */
  map(p: number): number {
    return this.cmds.map(p);
  }

  /** Where a FIN/RST/pure ACK at original position p (≥ x) goes: after any insertion at p. */
  mapEnd(p: number): number {
    if (p >= this.x) return p + this.cmds.offsetAfterLast();
    return this.cmds.map(p);
  }

  /**
   * Sequence position for a segment without payload (pure ACK, window update, keep-alive).
   * Below x a keep-alive (SEG.SEQ = SND.UNA − 1) must stay below what R has, or R would not
   * answer it: min(F(p), F(p+1) − 1).
   */
  mapEmpty(p: number): number {
    if (p >= this.x) return this.mapEnd(p);
    const a = this.cmds.map(p);
    const b = this.cmds.map(p + 1) - 1;
    return a < b ? a : b;
  }

  /** G: new position acknowledged by R → original position to acknowledge to S. */
  unmap(ackNew: number): number {
    return this.cmds.unmap(ackNew, this.x);
  }

  /**
   * R acknowledged new position `ackNew`: translate it for S, prune what is no longer needed.
   * Returns the original position to acknowledge to S.
   */
  onReceiverAck(ackNew: number): number {
    if (this.adopting && ackNew > this.mapEnd(this.x)) this.skipTo(ackNew - this.cmds.offsetAfterLast());
    const p = this.unmap(ackNew);
    if (ackNew > this.rcvAckNew) this.rcvAckNew = ackNew;
    if (p > this.sndAckOrg) {
      this.sndAckOrg = p;
      this.counters.commandsPruned += this.cmds.prune(p);
      this.busy?.store?.dropBelow(p);
    }
    if (this.synth && this.rcvAckNew >= this.synth.newPos + this.synth.data.length) this.synth = null;
    this.compact();
    this.account();
    return p;
  }

  /**
   * Original bytes a sender may have processed and unacknowledged: the store's bound (the window
   * it is given ends there): normalizeBytesPerConn, less while the stores of all connections hold
   * normalizeBytesGlobal (this one's own bytes and what is free).
   */
  get maxUnacked(): number {
    const l = this.limits;
    return Math.max(0, Math.min(l.normalizeBytesPerConn, l.normalizeBytesGlobal - this.budget.storeBytes + this.stored));
  }

  /** Brings the global count of stored bytes up to date with this direction's store. */
  private account(): void {
    const s = this.busy?.store?.size ?? 0;
    if (s !== this.stored) {
      this.budget.storeBytes += s - this.stored;
      this.stored = s;
    }
  }

  /** Handles one segment from S; releases go to `out` in the order they must be sent. */
  onSegment(seg: SegIn<T>, nowMs: number, out: Release<T>[]): void {
    this.counters.segments++;
    this.lastTag = seg.tag;
    // The hold timer runs from the sender's last segment: while data (or retransmissions) keep
    // coming, the match may still complete, so the agent is not made to decide yet. (A direction
    // without a Busy part holds nothing: it is set below if this segment makes it hold.)
    if (this.busy !== null) this.busy.heldSinceMs = nowMs;
    if (seg.rst) {
      // A RST is not a decision point: it may be spoofed and not taken by the receiver (the
      // tracker only lets exact ones close, but "exact" from the middle can still differ from
      // the receiver's RCV.NXT), and held bytes decided now would let a pattern split around it
      // through unrewritten. Held bytes stay held and the timers stop (nothing is originated
      // towards a connection that ended) until data comes again.
      if (this.heldBytes > 0 || this.synth !== null) this.reset = true;
      // A RST at or past the FIN / the processed front goes after everything released (held
      // bytes count as deleted until decided: the receiver's next byte is F(x)).
      const p = seg.pos;
      const atEnd = p >= this.x || (this.finProcessed && p >= this.finPos);
      out.push(this.release(seg, atEnd ? p + this.cmds.offsetAfterLast() : this.mapEmpty(p), EMPTY, false, false));
      return;
    }
    if (seg.payload.length > 0) this.reset = false;
    this.handle(seg, nowMs, out);
    this.drain(nowMs, out);
    this.takeSynth(out);
    // A template for segments the gateway may have to originate later, kept only when needed:
    // otherwise dropped (an idle keep-alive connection would keep its last segment's tag, its
    // header fields and, in process, its frame: about 1 KiB per connection).
    this.lastTag = this.originating ? this.retain(seg.tag) : undefined;
    if (this.heldBytes > 0) this.heldSinceMs = nowMs;
    this.compact();
    this.account();
  }

  /** The sender's latest segment, kept while the gateway may originate one (see lastTag). */
  get template(): T | undefined {
    return this.lastTag;
  }

  /** A template from the node this direction was restored from (owned), kept if it may originate. */
  adoptTemplate(tag: T): void {
    if (this.originating && this.lastTag === undefined) this.lastTag = tag;
  }

  /**
   * Bytes are held or a gateway-originated segment is outstanding: the gateway may have to send
   * a segment of its own, built on the sender's latest segment (lastTag, Connection.lastFields).
   */
  get originating(): boolean {
    return this.heldBytes > 0 || this.synth !== null;
  }

  /**
   * Drops the Busy part when nothing in it is needed any more: everything processed is
   * acknowledged, nothing is held, queued or originated, no FIN, the agent on, not adopting. An
   * idle keep-alive connection then costs no more than one that only saw its handshake.
   */
  private compact(): void {
    const b = this.busy;
    if (b === null) return;
    if ((b.store !== null && b.store.size > 0) || (b.held !== null && b.held.size > 0) || b.queue.length > 0 || b.synth !== null || b.synthOut.length > 0) return;
    if (b.finPos >= 0 || b.finProcessed || b.agentOff || b.adopting || b.reset || b.lastTag !== undefined || b.abort !== null) return;
    // An empty store's start is where the next byte goes: x for both (see process).
    if ((b.store !== null && b.store.start !== this.x) || (b.held !== null && b.held.start !== this.x)) return;
    if (b.store !== null) this.storeHint = b.store.nextCapacity;
    this.busy = null;
  }

  private takeSynth(out: Release<T>[]): void {
    if (this.synthOut.length === 0) return;
    for (const r of this.synthOut) out.push(r);
    this.synthOut = NO_LIST;
  }

  private handle(seg: SegIn<T>, nowMs: number, out: Release<T>[]): void {
    let n = seg.pos;
    let payload = seg.payload;
    const m = n + payload.length;
    const end = seg.fin ? m + 1 : m;

    if (this.finPos >= 0 && m > this.finPos) {
      // Bytes past the FIN: no receiver may accept them. Cut them off (counted).
      this.counters.dataAfterFin++;
      if (n >= this.finPos) {
        out.push(this.release(seg, this.mapEmpty(n), EMPTY, seg.fin, true));
        return;
      }
      payload = payload.subarray(0, this.finPos - n);
      return this.handle({ ...seg, payload, fin: true }, nowMs, out);
    }

    // Never more processed and unacknowledged than the normalisation store keeps: a
    // retransmission of bytes it no longer had could not be checked, and a receiver that never
    // took the first copy (its window was ahead of the store, or it dropped the segment) would
    // take different bytes from it. The window the sender is given ends there
    // (Connection.translate); bytes past it are dropped, counted, and come again once the
    // receiver acknowledges.
    // (A segment after a gap is queued as it is, and checked when it drains.)
    const cap = (this.busy?.store?.start ?? this.x) + this.maxUnacked;
    if (m > cap && m > this.x && n <= this.x) {
      this.counters.beyondStore++;
      if (this.maxUnacked < this.limits.normalizeBytesPerConn) this.counters.storeBudgetFull++;
      // What was processed already still goes (normalised); the rest is cut off. Nothing left:
      // an empty segment below what the receiver has carries the ACK and window on, and makes
      // the receiver answer (a duplicate ACK: the sender learns sooner).
      const keep = Math.max(cap, this.x) - n;
      if (keep <= 0 || payload.length === 0) {
        out.push(this.release(seg, this.cmds.map(this.x) - 1, EMPTY, false, true));
        return;
      }
      return this.handle({ ...seg, payload: payload.subarray(0, keep), fin: false }, nowMs, out);
    }

    // Below the floor: the receiver has these bytes and their commands may be gone.
    const floor = this.cmds.floorPos;
    if (payload.length > 0 && n < floor) {
      if (m <= floor && !(seg.fin && m === floor)) {
        this.counters.belowFloor++;
        out.push(this.release(seg, this.cmds.map(floor) - 1, EMPTY, false, true));
        return;
      }
      const cut = Math.min(floor, m) - n;
      this.counters.trimmed++;
      payload = payload.subarray(cut);
      n += cut;
    }
    if (n < this.cmds.erasedPos && payload.length > 0) {
      this.counters.erasedDiscard++;
      return;
    }

    if (n > this.x) {
      this.enqueue({ ...seg, pos: n, payload }, end);
      return;
    }

    // Inline normalisation of the already-processed part [n, min(m, x)).
    if (n < this.x && payload.length > 0) payload = this.normalize(n, payload);

    if (end > this.x) {
      this.counters.processed++;
      if (m > this.x) this.process(payload.subarray(this.x - n), m, nowMs);
      if (seg.fin && !this.finProcessed) {
        this.finPos = m;
        this.flush('fin', nowMs);
        this.finProcessed = true;
        this.x = m + 1;
      }
    } else {
      this.counters.alreadyProcessed++;
    }

    const rewritten = this.cmds.rewrite(n, payload, seg.fin);
    const changed = rewritten !== seg.payload;
    if (rewritten.length === 0 && payload.length > 0 && !seg.fin) {
      // Everything this segment carried was deleted or held: a probe below what R has keeps
      // keep-alives and zero-window probes answered.
      out.push(this.release(seg, this.cmds.map(m) - 1, EMPTY, false, true));
      return;
    }
    out.push(this.release(seg, this.cmds.map(n), rewritten, seg.fin, changed));
  }

  private release(seg: SegIn<T>, newPos: number, payload: Uint8Array, fin: boolean, changed: boolean): Release<T> {
    return { tag: seg.tag, newPos, payload, fin, rst: seg.rst, changed, synth: false };
  }

  private enqueue(seg: SegIn<T>, end: number): void {
    if (seg.pos - this.x > this.limits.maxAheadBytes) {
      this.counters.farAhead++;
      return;
    }
    const q = this.queue === NO_LIST ? (this.queue = []) : this.queue;
    // Sorted by start; a segment covered by a queued one with the same start is a duplicate.
    let i = q.length;
    while (i > 0 && q[i - 1]!.seg.pos > seg.pos) i--;
    const prev = q[i - 1];
    if (prev && prev.seg.pos === seg.pos && prev.end >= end) {
      this.counters.queueDuplicate++;
      return;
    }
    const bytes = seg.payload.length;
    // Over budget: what is nearest to x is worth most (it unblocks the stream first), so make
    // room by discarding from the far end of the queue, as Linux prunes its out-of-order queue.
    while (this.overBudget(bytes) && q.length > i) {
      const last = q.pop()!;
      this.queueBytes -= last.seg.payload.length;
      this.budget.queueBytes -= last.seg.payload.length;
      this.counters.queueOverflow++;
    }
    if (this.overBudget(bytes)) {
      this.counters.queueOverflow++;
      return;
    }
    // The caller's buffers may be reused (TAP batches): the queue keeps its own copy.
    q.splice(i, 0, { seg: { ...seg, payload: copyBytes(seg.payload), tag: this.retain(seg.tag) }, end });
    this.queueBytes += bytes;
    this.budget.queueBytes += bytes;
    this.counters.delayed++;
  }

  private overBudget(bytes: number): boolean {
    return (
      this.queue.length >= this.limits.queueSegmentsPerConn ||
      this.queueBytes + bytes > this.limits.queueBytesPerConn ||
      this.budget.queueBytes + bytes > this.limits.queueBytesGlobal
    );
  }

  private drain(nowMs: number, out: Release<T>[]): void {
    while (this.queue.length > 0 && this.queue[0]!.seg.pos <= this.x) {
      const q = this.queue.shift()!;
      this.queueBytes -= q.seg.payload.length;
      this.budget.queueBytes -= q.seg.payload.length;
      this.counters.drained++;
      this.handle(q.seg, nowMs, out);
    }
  }

  /** Bytes the rewriting added so far (new − original length; negative when it removed). */
  get growth(): number {
    return this.cmds.offsetAfterLast();
  }

  /** Drops every queued segment (connection closed or removed): returns the budget. */
  dispose(): void {
    this.budget.queueBytes -= this.queueBytes;
    this.queueBytes = 0;
    this.queue = NO_LIST;
    this.budget.storeBytes -= this.stored;
    this.stored = 0;
  }

  private normalize(n: number, payload: Uint8Array): Uint8Array {
    const upto = Math.min(n + payload.length, this.x);
    if (n < this.store.start) this.counters.normalizeUnverified += Math.min(upto, this.store.start) - n;
    const diff = this.store.firstDifference(n, payload.subarray(0, upto - n));
    if (diff < 0) return payload;
    this.counters.normalized++;
    const fixed = copyBytes(payload);
    const from = Math.max(n, this.store.start);
    fixed.set(this.store.read(from, upto), from - n);
    return fixed;
  }

  /** Gives new bytes [x, m) to the agent and turns its answer into commands. */
  private process(data: Uint8Array, m: number, nowMs: number): void {
    const x0 = this.x;
    this.adopting = false;
    this.store.append(data);
    // The held region [h, x0); a direction without a held store holds nothing (h = x0).
    const hs = this._held;
    const h = hs === null ? x0 : hs.start;
    this.x = m;
    const lim = this.limits.normalizeBytesPerConn;
    if (this.store.size > lim) {
      // Not reached: handle() keeps x within the store's bound (kept as a last resort, counted).
      this.counters.normalizeEvicted += this.store.size - lim;
      this.store.dropBelow(this.store.end - lim);
    }
    this.counters.agentBytes += data.length;
    if (!this.agent || this.agentOff) return;
    if (this.givenUp) {
      // The agent gave up on the connection earlier in this call (a queued segment drained
      // after the one that made it): nothing more is fed to it, nothing more passes (what it
      // held stays deleted, the new bytes are deleted).
      if (hs !== null) this.held.reset(m);
      this.ownCmds().add(x0, m - x0, EMPTY, nowMs);
      this.counters.commands++;
      this.changes++;
      return;
    }

    let res: AgentOutput;
    try {
      res = this.agent.feed(this.dir, x0, data);
    } catch {
      this.counters.agentError++;
      this.disableAgent(x0, m, nowMs, data);
      return;
    }
    let u = res.undecidedFrom ?? m;
    let edits = res.edits;
    if (!validEdits(edits, h, u, m)) {
      this.counters.agentViolation++;
      if (res.abort === undefined) {
        this.disableAgent(x0, m, nowMs, data);
        return;
      }
      // The agent gave up on what it holds and what came: none of it may pass.
      edits = [{ at: h, len: m - h, data: EMPTY }];
      u = m;
    }
    if (res.abort !== undefined) this.b.abort ??= res.abort;
    if (res.wake === true) this.wake = true;
    const now = nowMs;
    if (u <= x0) {
      // Nothing past the old held region is decided: the new bytes join the held region and
      // whatever was decided of it [h, u) is emitted at x0.
      const held = this.heldAt(x0);
      const decided = held.read(h, u);
      const d = applyEdits(edits, decided, h);
      this.ownCmds().add(x0, m - x0, d, now);
      this.counters.commands++;
      this.changes++;
      held.dropBelow(u);
      held.append(data);
    } else {
      // The old held region [h, x0) is decided, together with any edit that begins in it.
      let e0 = x0;
      let k = 0;
      for (; k < edits.length && edits[k]!.at < x0; k++) {
        const e = edits[k]!.at + edits[k]!.len;
        if (e > e0) e0 = e;
      }
      if (h < x0 || e0 > x0) {
        const region = concat(this.held.read(h, x0), data.subarray(0, e0 - x0));
        this.ownCmds().add(x0, e0 - x0, applyEdits(edits.slice(0, k), region, h), now);
        this.counters.commands++;
        this.changes++;
      }
      for (; k < edits.length; k++) {
        const e = edits[k]!;
        this.ownCmds().add(e.at, e.len, e.data, now);
        this.counters.commands++;
        this.changes++;
      }
      if (u < m || hs !== null) this.held.reset(u);
      if (u < m) {
        this.ownCmds().add(u, m - u, EMPTY, now);
        this.counters.commands++;
        this.changes++;
        this.held.append(data.subarray(u - x0));
      }
    }
    if (this.heldBytes > 0) {
      if (!(h === this.held.start && h < x0)) this.counters.holds++;
      if (this.held.size > this.limits.maxHeldBytes) this.flush('limit', nowMs);
    }
    this.capCommands(nowMs);
  }

  private disableAgent(x0: number, m: number, nowMs: number, data: Uint8Array): void {
    // The held bytes and the new ones go out unmodified, as the agent never decided them.
    this.agentOff = true;
    const pending = concat(this.held.read(this.held.start, x0), data);
    this.held.reset(m);
    if (pending.length > data.length) {
      this.ownCmds().add(x0, m - x0, pending, nowMs);
      this.counters.commands++;
      this.changes++;
    }
  }

  /**
   * Makes the agent decide everything it holds (FIN, RST, timeout, limit) and emits the decision
   * as an insertion at x. For FIN the FIN segment itself carries it; otherwise the gateway
   * originates a segment with it. At FIN the agent is asked even with nothing held: it may end
   * the stream with bytes of its own (the http agent's coded body: its final block and check
   * value).
   */
  flush(reason: FlushReason, nowMs: number): void {
    const held = this.heldBytes > 0;
    if (!held && (reason !== 'fin' || this.givenUp || !this.agent || this.agentOff)) return;
    const h = this.held.start;
    const region = this.held.read(h, this.x);
    let d = region;
    if (this.givenUp) d = EMPTY; // given up on: nothing held passes
    else if (this.agent && !this.agentOff) {
      try {
        const res = this.agent.flush(this.dir, reason);
        if (validEdits(res.edits, h, this.x, this.x)) d = applyEdits(res.edits, region, h);
        else {
          this.counters.agentViolation++;
          if (res.abort !== undefined) d = EMPTY; // given up on: nothing held passes
        }
        if (res.abort !== undefined) this.b.abort ??= res.abort;
      } catch {
        this.counters.agentError++;
      }
    }
    this.held.reset(this.x);
    if (held) {
      switch (reason) {
        case 'fin': this.counters.flushFin++; break;
        case 'rst': this.counters.flushRst++; break;
        case 'timeout': this.counters.flushTimeout++; break;
        case 'limit': this.counters.flushLimit++; break;
        case 'answer': this.counters.flushAnswer++; break;
      }
    }
    if (d.length === 0) return;
    const newPos = this.mapEnd(this.x);
    this.ownCmds().add(this.x, 0, d, nowMs);
    this.counters.commands++;
    this.changes++;
    if (reason !== 'fin' && this.lastTag !== undefined) {
      this.synth = { newPos, data: d, sentMs: nowMs, tries: 0 };
      this.counters.synthSent++;
      if (this.synthOut === NO_LIST) this.synthOut = [];
      this.synthOut.push({ tag: this.lastTag, newPos, payload: d, fin: false, rst: false, changed: true, synth: true });
    }
  }

  /**
   * Held bytes wait `ms` more: time the gateway did not run is not the sender's silence
   * (engine/live.ts). Never past what a cluster takeover grants (the later of 3 hold timeouts
   * and TAKEOVER_HOLD_MS from now), so stalls that keep coming cannot keep a hold forever.
   */
  outage(ms: number, nowMs: number): void {
    if (this.heldBytes === 0) return;
    this.heldSinceMs = Math.min(this.heldSinceMs + ms, Math.max(this.heldSinceMs, this.outageHoldStart(nowMs)));
  }

  /** A hold start that first times out max(3 hold timeouts, TAKEOVER_HOLD_MS) after `nowMs`: what an outage grants held bytes. */
  private outageHoldStart(nowMs: number): number {
    const hold = this.limits.holdTimeoutMs;
    return nowMs + Math.max(3 * hold, TAKEOVER_HOLD_MS) - hold;
  }

  /** Timers: hold timeout, retransmission of gateway-originated bytes, the command age cap. */
  tick(nowMs: number, out: Release<T>[]): void {
    // Not while segments wait in the queue: there is a gap before them that the sender will
    // fill (a retransmission), and flushing now would decide a match that may still complete.
    if (this.reset) return;
    if (this.heldBytes > 0 && this.queue.length === 0) {
      if (this.rcvEdge >= 0 && this.rcvEdge <= this.x) {
        // The receiver's window ends at what the sender has sent: the sender cannot send the rest
        // of a match, however long it is silent (a receiver not reading: a rate-limited client).
        // Not a timeout: the hold timer restarts once the window opens.
        this.heldSinceMs = nowMs;
      } else if (nowMs - this.heldSinceMs >= this.limits.holdTimeoutMs) {
        this.flush('timeout', nowMs);
        this.takeSynth(out);
      }
    }
    const s = this.synth;
    if (s && this.lastTag !== undefined) {
      const rto = 200 * 2 ** Math.min(s.tries, 6);
      if (nowMs - s.sentMs >= rto) {
        if (s.tries >= this.limits.maxSynthRetries) {
          this.counters.synthGiveUp++;
          this.synth = null;
        } else {
          s.tries++;
          s.sentMs = nowMs;
          this.counters.synthRetransmit++;
          out.push({ tag: this.lastTag, newPos: s.newPos, payload: s.data, fin: false, rst: false, changed: true, synth: true });
        }
      }
    }
    this.capCommands(nowMs);
    this.account();
  }

  /** When the next timer of this direction is due (Infinity when none). */
  nextTimerMs(): number {
    if (this.reset) return Infinity;
    let t = Infinity;
    if (this.heldBytes > 0 && this.queue.length === 0) t = this.heldSinceMs + this.limits.holdTimeoutMs;
    if (this.synth) t = Math.min(t, this.synth.sentMs + 200 * 2 ** Math.min(this.synth.tries, 6));
    return t;
  }

  private capCommands(nowMs: number): void {
    if (this.limits.maxCommands > 0 || this.limits.commandMaxAgeMs > 0) {
      this.counters.commandsErased += this.cmds.cap(this.limits.maxCommands, this.limits.commandMaxAgeMs, nowMs);
    }
  }

  /** `withStore` false: the normalisation store is left out (a cluster snapshot stays small;
   *  a node that restores it cannot check retransmissions of those bytes: normalizeUnverified). */
  toJSON(withStore = true): DirectionJson {
    return {
      v: 1,
      x: this.x,
      heldFrom: this.held.start,
      held: b64(this.held.read(this.held.start, this.held.end)),
      heldSinceMs: this.heldSinceMs,
      finPos: this.finPos,
      finProcessed: this.finProcessed,
      agentOff: this.agentOff,
      rcvAckNew: this.rcvAckNew,
      sentEnd: this.sentEnd,
      sndAckOrg: this.sndAckOrg,
      commands: this.cmds.toJSON(),
      store: withStore ? { start: this.store.start, data: b64(this.store.read(this.store.start, this.store.end)) } : { start: this.x, data: '' },
      synth: this.synth ? { ...this.synth, data: b64(this.synth.data) } : null,
    };
  }

  /**
   * Restores state saved by toJSON (queued segments are not part of it: the sender resends).
   * Held bytes get a fresh hold timer that first fires max(3 hold timeouts, TAKEOVER_HOLD_MS)
   * after `nowMs`: the time since the old owner's last segment was an outage, not the sender's silence,
   * and after one the sender's retransmission timer has backed off (each copy it sent meanwhile
   * was dropped), so its next segment may take seconds. Flushing a held pattern prefix before it
   * comes would let the pattern through split. Any segment from the sender resets the timer.
   */
  restore(j: DirectionJson, nowMs: number): void {
    if (j.v !== 1) throw new Error(`unsupported stream direction state version ${String(j.v)}`);
    this.x = j.x;
    this.held.reset(j.heldFrom);
    this.held.append(unb64(j.held));
    this.heldSinceMs = this.held.end > this.held.start ? Math.max(j.heldSinceMs, this.outageHoldStart(nowMs)) : j.heldSinceMs;
    this.finPos = j.finPos;
    this.finProcessed = j.finProcessed;
    this.agentOff = j.agentOff;
    this.rcvAckNew = j.rcvAckNew;
    if (j.sentEnd !== undefined && !Number.isSafeInteger(j.sentEnd)) throw new Error('stream direction state: bad sentEnd');
    this.sentEnd = j.sentEnd ?? 0;
    this.sndAckOrg = j.sndAckOrg;
    const c = CommandList.fromJSON(j.commands);
    Object.assign(this.ownCmds(), c);
    this.store.reset(j.store.start);
    this.store.append(unb64(j.store.data));
    this.synth = j.synth ? { ...j.synth, data: unb64(j.synth.data) } : null;
    this.adopting = true;
  }

  /**
   * Cluster takeover from a snapshot that is behind (docs/ARCHITECTURE.md §5): the previous owner went on
   * processing after it, but published every command before releasing a byte that depended on
   * it — so the bytes between the snapshot's x and what R acknowledged were released unchanged,
   * at the offset after the last command. When R acknowledges new position `ackNew` past
   * F(x), those bytes are taken as processed (pass-through) and the agent resynchronises at the
   * new x; nothing below it is decided again. Only while `adopting` (from `restore` until the
   * first byte processed in order): at any other time an ACK beyond what was sent is ignored as
   * always, so a receiver cannot make the gateway skip bytes.
   */
  private skipTo(p: number): void {
    if (this.finPos >= 0 && p > this.finPos) p = this.finPos;
    if (p <= this.x) return;
    this.counters.adoptSkips++;
    this.counters.adoptSkippedBytes += p - this.x;
    if (this.held.size > 0) this.counters.adoptHeldDropped += this.held.size;
    this.x = p;
    this.held.reset(p);
    this.store.reset(p);
    this.adopting = false;
    if (this.agent === null || this.agentOff) return;
    if (this.agent.resync === undefined) {
      this.agentOff = true;
      this.counters.agentError++;
      return;
    }
    try {
      this.agent.resync(this.dir, p);
    } catch {
      this.agentOff = true;
      this.counters.agentError++;
    }
  }
}

/**
 * How long a taken-over connection's held bytes wait for the sender at least (see restore):
 * Linux's RTO doubles from 200 ms with every copy lost, so after an outage the sender's next
 * retransmission can be seconds away (the cluster e2e saw silences of 4–14 s); 10 s covers
 * five doublings. Only held bytes wait: nothing else is delayed.
 */
const TAKEOVER_HOLD_MS = 10_000;

function b64(a: Uint8Array): string {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString('base64');
}
function unb64(s: string): Uint8Array {
  return new Uint8Array(Buffer.from(s, 'base64'));
}

/** The agent contract of agent/types.ts: sorted, non-overlapping, inside [h, u], h ≤ u ≤ m. */
function validEdits(edits: readonly Edit[], h: number, u: number, m: number): boolean {
  if (!(u >= h && u <= m)) return false;
  let prev = h;
  let prevInsertAt = -1;
  for (const e of edits) {
    if (!(e.at >= prev && Number.isInteger(e.len) && e.len >= 0 && e.at + e.len <= u)) return false;
    if (!(e.data instanceof Uint8Array)) return false;
    // Two insertions (or an insertion and a replacement) at one position are ambiguous.
    if (e.at === prevInsertAt) return false;
    prevInsertAt = e.len === 0 ? e.at : -1;
    prev = e.at + e.len;
  }
  return true;
}

/** Applies edits (positions absolute) to `bytes`, which start at position `base`. */
export function applyEdits(edits: readonly Edit[], bytes: Uint8Array, base: number): Uint8Array {
  if (edits.length === 0) return bytes;
  const parts: Uint8Array[] = [];
  let pos = base;
  for (const e of edits) {
    if (e.at > pos) parts.push(bytes.subarray(pos - base, e.at - base));
    parts.push(e.data);
    pos = e.at + e.len;
  }
  if (pos - base < bytes.length) parts.push(bytes.subarray(pos - base));
  let total = 0;
  for (const p of parts) total += p.length;
  const out = new Uint8Array(total);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  if (a.length === 0) return b;
  if (b.length === 0) return a;
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}
