/**
 * One tracked TCP connection (flow/table.ts holds them): its 4-tuple, which side is the client,
 * its state, and per half what the side announced in its SYN (ISN, MSS, window scale,
 * SACK-permitted, timestamps), whether it closed, and what the window judgement learnt
 * (flow/window.ts). Kept compact: flags and small numbers packed into one integer per half, the
 * rarely needed fields in a side object made when first needed.
 */
import type { Seq } from '../wire/seq.js';
import { randomFillSync } from 'node:crypto';
import { ipToString, type IpAddr } from '../wire/ip.js';

export interface Endpoint {
  /** IPv4 as a number, IPv6 as a key string (wire/ip.ts). */
  addr: IpAddr;
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

const FLOW_CONFIRMED = 1;
const FLOW_SEEN = 6;
const FLOW_MIDSTREAM = 8;
const FLOW_POLICY = 48;
const POLICY_SHIFT = 4;
/** The TAP side the client's segments arrive on is known (FLOW_CLIENT_FROM holds it). */
const FLOW_SIDED = 64;
const FLOW_CLIENT_FROM = 128;
/** Whether a rule covers the connection (either way round) is known (FLOW_COVERED holds it). */
const FLOW_COVER_KNOWN = 256;
const FLOW_COVERED = 512;

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
  /** FLOW_* bits: confirmed, seen from side 0 / 1, midstream, policy mark, the client's TAP side. */
  private bits: number;
  // Endpoints as plain small values (IPv4 addresses as int32: no heap number per address; IPv6
  // ones as their key string, wire/ip.ts; both ports in one), so that an entry is one object
  // plus its halves; `client`, `server`, `key`, `id` are derived.
  private readonly ca: number | string;
  private readonly sa: number | string;
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
    this.ca = packAddr(client.addr);
    this.sa = packAddr(server.addr);
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
  /**
   * The TAP side (0 or 1) the client's segments arrive on, learnt from the server's SYN-ACK paired
   * with the SYN it answers, or a mid-stream connection's first segment (engine/track.ts, live
   * gateway only); the server's arrive on the other. Undefined until then.
   */
  get clientFrom(): 0 | 1 | undefined {
    return (this.bits & FLOW_SIDED) === 0 ? undefined : (this.bits & FLOW_CLIENT_FROM) !== 0 ? 1 : 0;
  }
  set clientFrom(v: 0 | 1 | undefined) {
    this.bits = v === undefined ? this.bits & ~(FLOW_SIDED | FLOW_CLIENT_FROM) : (this.bits & ~FLOW_CLIENT_FROM) | FLOW_SIDED | (v === 1 ? FLOW_CLIENT_FROM : 0);
  }
  /**
   * Whether a rule covered the connection, either way round, under the config in force when the
   * tracker first asked (engine/track.ts `covered`): a reload does not change it for a connection
   * in flight. Undefined until asked.
   */
  get covered(): boolean | undefined {
    return (this.bits & FLOW_COVER_KNOWN) === 0 ? undefined : (this.bits & FLOW_COVERED) !== 0;
  }
  set covered(v: boolean | undefined) {
    this.bits = v === undefined ? this.bits & ~(FLOW_COVER_KNOWN | FLOW_COVERED) : (this.bits & ~FLOW_COVERED) | FLOW_COVER_KNOWN | (v ? FLOW_COVERED : 0);
  }
  /** @internal Bit s set: a segment was seen from side s (mid-stream confirmation); see `seen`. */
  get seenMask(): number {
    return (this.bits & FLOW_SEEN) >>> 1;
  }
  set seenMask(v: number) {
    this.bits = (this.bits & ~FLOW_SEEN) | ((v << 1) & FLOW_SEEN);
  }

  /** The client's and the server's address (no object made). */
  get clientAddr(): IpAddr {
    return unpackAddr(this.ca);
  }
  get serverAddr(): IpAddr {
    return unpackAddr(this.sa);
  }

  /** The side that sent the first SYN (a fresh object). */
  get client(): Endpoint {
    return { addr: unpackAddr(this.ca), port: this.cp };
  }
  get server(): Endpoint {
    return { addr: unpackAddr(this.sa), port: this.sp };
  }

  /** The canonical 4-tuple key (flowKey), derived on demand. */
  get key(): string {
    return flowKey(this.client, this.server);
  }

  /**
   * Connection id, e.g. "10.0.0.1.40000-10.0.0.2.80" or "2001:db8::1.40000-2001:db8::2.80"
   * (RFC 5952 text; "#n" appended for a reused 4-tuple).
   */
  get id(): string {
    const n = this.gen;
    return `${ipToString(unpackAddr(this.ca))}.${this.cp}-${ipToString(unpackAddr(this.sa))}.${this.sp}${n > 0 ? `#${n}` : ''}`;
  }

  /** A segment was seen from side 0 / side 1 (a fresh array: read-only view of `seenMask`). */
  get seen(): [boolean, boolean] {
    return [(this.seenMask & 1) !== 0, (this.seenMask & 2) !== 0];
  }

  /** 0 when the segment came from the client, 1 from the server. */
  sideOf(src: Endpoint): 0 | 1 {
    return packAddr(src.addr) === this.ca && src.port === this.ports >>> 16 ? 0 : 1;
  }

  /** @internal This flow's 4-tuple is {a, b} (either order). */
  is(a: Endpoint, b: Endpoint): boolean {
    const x = packAddr(a.addr);
    const y = packAddr(b.addr);
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

/** An address as a Flow keeps it: IPv4 as int32, IPv6 as its key. */
function packAddr(a: IpAddr): number | string {
  return typeof a === 'number' ? a | 0 : a;
}

function unpackAddr(a: number | string): IpAddr {
  return typeof a === 'number' ? a >>> 0 : a;
}

/**
 * The hash's key, random per process: a sender cannot choose 4-tuples that fall into one bucket
 * (with a fixed hash whose address and port entered as `addr ^ port·0x10001`, sources
 * (K ^ p·0x10001, p) collided for every port: 20,000 spoofed SYNs in one bucket made each lookup
 * scan them all, 86 µs per SYN). As Linux keys its conntrack hash (a random seed).
 */
const KEY = randomFillSync(new Int32Array(2));

/**
 * One endpoint mixed under the key: the address (IPv4's one word, or IPv6's eight 16-bit groups,
 * wire/ip.ts) and then the port, each through a multiply-xorshift round that starts from the key.
 */
function endpointHash(a: IpAddr, p: number): number {
  let x: number;
  if (typeof a === 'number') x = Math.imul(a ^ KEY[0]!, 0x9e3779b1);
  else {
    x = KEY[0]!;
    for (let i = 0; i < a.length; i++) {
      x = Math.imul(x ^ a.charCodeAt(i), 0x9e3779b1);
      x ^= x >>> 15;
    }
  }
  x ^= x >>> 15;
  x = Math.imul(x ^ p ^ KEY[1]!, 0x85ebca6b);
  x ^= x >>> 13;
  x = Math.imul(x, 0xc2b2ae35);
  return x ^ (x >>> 16);
}

/**
 * A small-integer (Smi) hash of a 4-tuple, keyed (KEY), the same in both directions: the table is
 * keyed by it (no string per lookup or per entry); colliding flows share a bucket.
 */
export function tupleHash(a1: IpAddr, p1: number, a2: IpAddr, p2: number): number {
  const x = endpointHash(a1, p1);
  const y = endpointHash(a2, p2);
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
/** `end` is one past this side's FIN (set by the FIN's segment, cleared when anything goes beyond it). */
const FIN_END_BIT = 1 << 26;
/** This side sent its SYN again after the other side's SYN-ACK (see `synAgain`). */
const SYN_AGAIN_BIT = 1 << 27;

/** The part of a TrackedHalf only a handshake or a mid-stream pickup needs. */
class RareHalf {
  midBase: Seq | undefined = undefined;
  synTs: number | undefined = undefined;
  altIsn: Seq | undefined = undefined;
}

/**
 * A Half as the table keeps it: the ISN and one small integer (two fields instead of seven; a
 * table entry is mostly its halves). Reads and writes like a plain Half; JSON.stringify gives
 * the plain form (but object spread would not: use `plainHalf`).
 */
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
  /**
   * The client sent its SYN again while the server's SYN-ACK was out: it did not get that
   * SYN-ACK, so the server's next one may carry another ISN (SYN cookies change with the minute);
   * taken once, by the next SYN-ACK (flow/table.ts lookup).
   */
  get synAgain(): boolean {
    return (this.bits & SYN_AGAIN_BIT) !== 0;
  }
  set synAgain(v: boolean) {
    this.bits = v ? this.bits | SYN_AGAIN_BIT : this.bits & ~SYN_AGAIN_BIT;
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
  /** Sets `end`; `fin`: the segment that set it ended with this side's FIN. */
  setEnd(v: number, fin = false): void {
    this.end = v;
    this.bits = fin ? this.bits | END_BIT | FIN_END_BIT : (this.bits | END_BIT) & ~FIN_END_BIT;
  }
  /** Offset of this side's FIN when `end` is right after it, else undefined. */
  get finOffset(): number | undefined {
    return (this.bits & FIN_END_BIT) !== 0 ? this.end - 1 : undefined;
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

/** The table's string key of a 4-tuple, the same in both directions. */
export function flowKey(a: Endpoint, b: Endpoint): string {
  // Canonical order so both directions find the same entry.
  if (a.addr < b.addr || (a.addr === b.addr && a.port <= b.port)) {
    return `${a.addr}:${a.port}-${b.addr}:${b.port}`;
  }
  return `${b.addr}:${b.port}-${a.addr}:${a.port}`;
}
