/**
 * NAT translation state for the bridge (docs/ARCHITECTURE.md §6), pure: no I/O, no clock (time is passed
 * in as `now`, ms), no logging. The gateway will call `translate` for every IPv4 packet it
 * forwards and rewrite addresses/ports (and checksums) with the answer.
 *
 * Model (conntrack-like, RFC 4787 / RFC 3022 vocabulary):
 * - A packet is a tuple (proto, src, sport, dst, dport) arriving `from` side 0 or 1. For ICMP
 *   query messages (echo) both ports carry the identifier.
 * - 1:1 mappings `{ side, real, mapped }` are stateless: hosts of `real` on `side` appear as
 *   `mapped` on the other side (same host bits). A packet from `side` with src in `real` gets
 *   src := mapped (source NAT for clients); a packet from the other side with dst in `mapped`
 *   gets dst := real (destination NAT: a published server, and the replies of the first case).
 * - Masquerade (many-to-one with port translation) `{ side, sources, address, ports, icmpIds }`:
 *   a packet from `side` with src in `sources` and no entry gets an *entry*: its source becomes
 *   `address` and a port (or ICMP id) allocated from the range, unique per (proto, address),
 *   port-preserving when the original is free, otherwise the next free one after a per-pool
 *   cursor (deterministic). The mapping is per connection (address and port dependent, like
 *   Linux masquerade without port overloading): a reply matches only from the exact remote.
 * - An entry stores `orig` (the tuple as it arrived from the initiator's side) and `repl` (the
 *   tuple a reply arrives with from the other side). A packet matching `orig` leaves as
 *   invert(repl); one matching `repl` leaves as invert(orig). Entries expire (timeouts per
 *   protocol; TCP FIN/RST and bare SYN use the short "transitory" timeout).
 * - Expectations (FTP data connections, RFC 959 PORT / PASV): "a connection arriving from side F
 *   to dst:dport (from src, if given) is expected; translate its destination to `to`". The first
 *   matching packet consumes it and creates an entry; unconsumed ones expire. `expectData`
 *   allocates the announced endpoint for an FTP agent hook and registers the expectation.
 * - Limits: entries and expectations are bounded; refusals are counted (docs/ARCHITECTURE.md §7 convention 4).
 * - `snapshot()` is plain JSON (version 1); `NatTable.restore(cfg, snap)` rebuilds the table (the
 *   cluster moves it).
 *
 * Addresses are IPv4 as uint32 numbers (the flow table's representation).
 */

import { formatIpBlock, nestedPairs, type Cidr, type IpBlock } from '../wire/cidr.js';
import { ipv4ToString } from '../wire/ipv4.js';
import { nptv6Problem, type Nptv6 } from './nptv6.js';
import { BlockLists } from '../wire/block-lists.js';

export type NatSide = 0 | 1;
export type NatProto = 'tcp' | 'udp' | 'icmp';
export const NAT_PROTOS: readonly NatProto[] = ['tcp', 'udp', 'icmp'];

export interface Tuple {
  proto: NatProto;
  src: number;
  sport: number;
  dst: number;
  dport: number;
}

export interface NatPacket extends Tuple {
  /** Side the packet arrived on. */
  from: NatSide;
  /** TCP flags byte (FIN 0x01, SYN 0x02, RST 0x04, ACK 0x10); selects the TCP timeout. */
  tcpFlags?: number;
  /**
   * ICMP queries: a request (echo, timestamp, information, address mask) or an answer. Only a
   * request opens an entry, and only its initiator's side asks through it (conntrack's tuples
   * hold the type: an echo request from the remote is not the reply of one).
   */
  icmpRequest?: boolean;
}

export interface PortRange {
  lo: number;
  hi: number;
}

export interface OneToOne {
  /** The side the `real` hosts are on. */
  side: NatSide;
  real: Cidr;
  /** Same prefix length as `real`. */
  mapped: Cidr;
}

export interface Masquerade {
  /** The side of the hidden hosts. */
  side: NatSide;
  sources: readonly Cidr[];
  /** The single address they share on the other side. */
  address: number;
  ports: PortRange;
  icmpIds: PortRange;
  /** Keep the original port/id when it is in range and free (default true). */
  preservePort: boolean;
}

export interface NatLimits {
  /** Entries (translated connections); beyond it a new connection is dropped, counted. */
  maxEntries: number;
  /** Pending expectations; beyond it `expect` is refused, counted. */
  maxExpectations: number;
}

/** Milliseconds. */
export interface NatTimeouts {
  tcpEstablished: number;
  /** SYN-only, FIN or RST seen. */
  tcpTransitory: number;
  udp: number;
  icmp: number;
  expectation: number;
}

export interface NatConfig {
  oneToOne: readonly OneToOne[];
  /** IPv6 prefix translation (nat/nptv6.ts). */
  nptv6: readonly Nptv6[];
  masquerade: readonly Masquerade[];
  limits: NatLimits;
  timeouts: NatTimeouts;
}

export const DEFAULT_NAT_LIMITS: Readonly<NatLimits> = Object.freeze({ maxEntries: 65536, maxExpectations: 1024 });
/** Linux conntrack defaults (tcp established 5 days is too long for a gateway; RFC 5382 says >= 2h4m). */
export const DEFAULT_NAT_TIMEOUTS: Readonly<NatTimeouts> = Object.freeze({
  tcpEstablished: 7_440_000,
  tcpTransitory: 240_000,
  udp: 300_000,
  icmp: 60_000,
  expectation: 60_000,
});

export interface NatConfigInput {
  oneToOne?: readonly OneToOne[];
  nptv6?: readonly Nptv6[];
  masquerade?: readonly (Partial<Masquerade> & Pick<Masquerade, 'side' | 'sources' | 'address'>)[];
  limits?: Partial<NatLimits>;
  timeouts?: Partial<NatTimeouts>;
}

/** A config with defaults for what is not given. */
export function natConfig(c: NatConfigInput): NatConfig {
  return {
    oneToOne: c.oneToOne ?? [],
    nptv6: c.nptv6 ?? [],
    masquerade: (c.masquerade ?? []).map((m) => ({
      side: m.side,
      sources: m.sources,
      address: m.address,
      ports: m.ports ?? { lo: 1024, hi: 65535 },
      icmpIds: m.icmpIds ?? { lo: 1, hi: 65535 },
      preservePort: m.preservePort ?? true,
    })),
    limits: { ...DEFAULT_NAT_LIMITS, ...c.limits },
    timeouts: { ...DEFAULT_NAT_TIMEOUTS, ...c.timeouts },
  };
}

/** Overlapping mappings named one by one in a config's problems (the rest are counted). */
const MAX_OVERLAPS_LISTED = 32;

/** Everything wrong with a config (empty = valid). */
export function natConfigProblems(c: NatConfig): string[] {
  const out: string[] = [];
  const range = (r: PortRange, what: string, min: number): void => {
    if (!Number.isInteger(r.lo) || !Number.isInteger(r.hi) || r.lo < min || r.hi > 65535 || r.lo > r.hi) {
      out.push(`${what}: expected ${min} <= lo <= hi <= 65535, got ${r.lo}-${r.hi}`);
    }
  };
  c.oneToOne.forEach((m, i) => {
    if (m.real.prefix !== m.mapped.prefix) out.push(`oneToOne[${i}]: real /${m.real.prefix} and mapped /${m.mapped.prefix} differ in size`);
  });
  c.nptv6.forEach((m, i) => {
    const p = nptv6Problem(m);
    if (p !== null) out.push(`nptv6[${i}]: ${p}`);
  });
  // One address must stand for one host on each side: overlapping blocks on the same side would
  // send a host's replies (or its own traffic) to another host.
  const clash = <T extends IpBlock>(list: readonly { side: NatSide; real: T; mapped: T }[], what: string): void => {
    const found: [number, number, 'mapped' | 'real'][] = [];
    let total = 0;
    for (const side of [0, 1] as const) {
      const at = list.flatMap((m, i) => (m.side === side ? [i] : []));
      for (const k of ['mapped', 'real'] as const) {
        const n = nestedPairs(at.map((i) => list[i]![k]), MAX_OVERLAPS_LISTED);
        total += n.total;
        for (const [x, y] of n.pairs) found.push([at[y]!, at[x]!, k]);
      }
    }
    found.sort((a, b) => a[0] - b[0] || a[1] - b[1] || (a[2] === b[2] ? 0 : a[2] === 'mapped' ? -1 : 1));
    const listed = found.slice(0, MAX_OVERLAPS_LISTED);
    for (const [i, j, k] of listed) {
      out.push(`${what}[${i}].${k} ${formatIpBlock(list[i]![k])} overlaps ${what}[${j}].${k} ${formatIpBlock(list[j]![k])} on the same side: one address would stand for two hosts`);
    }
    if (total > listed.length) out.push(`${what}: ${total - listed.length} more overlapping pairs not listed`);
  };
  clash(c.oneToOne, 'oneToOne');
  clash(c.nptv6, 'nptv6');
  // The 1:1 mapped blocks per side, and the masquerade rules per side and address: each rule is
  // compared with those that could clash, not with every mapping and rule before it.
  const mapped: [BlockLists, BlockLists] = [new BlockLists(), new BlockLists()];
  c.oneToOne.forEach((x, i) => mapped[x.side].add(x.mapped, i));
  const sharing = new Map<string, number[]>();
  c.masquerade.forEach((m, i) => {
    const o = mapped[m.side].first(m.address);
    if (o >= 0) out.push(`masquerade[${i}].address ${ipv4ToString(m.address)} is inside oneToOne[${o}].mapped ${formatIpBlock(c.oneToOne[o]!.mapped)}: its replies would go to the mapped host`);
    const key = `${m.side}|${m.address}`;
    const before = sharing.get(key);
    if (before === undefined) sharing.set(key, [i]);
    else {
      for (const j of before) {
        const n = c.masquerade[j]!;
        if (n.ports.lo <= m.ports.hi && m.ports.lo <= n.ports.hi) {
          out.push(`masquerade[${i}] shares address ${ipv4ToString(m.address)} and ports with masquerade[${j}]: give each its own address or port range`);
        }
      }
      before.push(i);
    }
  });
  c.masquerade.forEach((m, i) => {
    range(m.ports, `masquerade[${i}].ports`, 1);
    range(m.icmpIds, `masquerade[${i}].icmpIds`, 0);
    if (m.sources.length === 0) out.push(`masquerade[${i}].sources: empty`);
  });
  for (const [k, v] of Object.entries(c.limits)) if (!Number.isInteger(v) || v < 0) out.push(`limits.${k}: expected an integer >= 0`);
  for (const [k, v] of Object.entries(c.timeouts)) if (!Number.isInteger(v) || v < 1) out.push(`timeouts.${k}: expected an integer >= 1 (ms)`);
  return out;
}

export type DropReason = 'table-full' | 'ports-exhausted' | 'no-entry';

export type NatVerdict =
  | { kind: 'none' }
  | { kind: 'translate'; tuple: Tuple; /** Entry id; absent for stateless 1:1. */ entry?: number }
  | { kind: 'drop'; reason: DropReason };

export interface Entry {
  id: number;
  /** Side the first packet arrived on. */
  init: NatSide;
  orig: Tuple;
  repl: Tuple;
  expiresAt: number;
  /** How it began: outbound masquerade or a consumed expectation. */
  origin: 'masquerade' | 'expectation';
}

export interface Expectation {
  id: number;
  proto: NatProto;
  /** Side the data connection's first packet will arrive on. */
  from: NatSide;
  /** Opener's address as it arrives; undefined = any. */
  src?: number;
  dst: number;
  dport: number;
  /** Rewrite the destination to this. */
  to: { addr: number; port: number };
  expiresAt: number;
  /** Free text for logs, e.g. the control connection's flow id. */
  tag?: string;
}

export function newNatCounters() {
  return {
    translated: 0,
    oneToOne: 0,
    entriesCreated: 0,
    entriesExpired: 0,
    /** Entries of this node replaced by a connection's imported translation (cluster: importState). */
    importReplaced: 0,
    /** maxEntries hit: a new connection was dropped. */
    tableFull: 0,
    /** No free port/id in a masquerade pool. */
    portsExhausted: 0,
    /** Unsolicited packet to a masquerade address. */
    noEntry: 0,
    expectationsAdded: 0,
    expectationsConsumed: 0,
    expectationsExpired: 0,
    /** maxExpectations hit, or no port for it. */
    expectationsRefused: 0,
    /** A control connection's oldest expectation dropped for its next (MAX_EXPECTATIONS_PER_TAG). */
    expectationsEvicted: 0,
    /** Expectations dropped with their control connection (it left the table, or was aborted). */
    expectationsDropped: 0,
  };
}
export type NatCounters = ReturnType<typeof newNatCounters>;

/**
 * Expectations one control connection (one `tag`) may hold at once: a new one drops its oldest
 * (Linux's FTP helper keeps one), so one connection cannot take the table from the others.
 */
export const MAX_EXPECTATIONS_PER_TAG = 4;

export interface NatSnapshot {
  v: 1;
  nextId: number;
  cursors: Record<string, number>;
  entries: Entry[];
  expectations: Expectation[];
  counters: NatCounters;
}

export function invert(t: Tuple): Tuple {
  return { proto: t.proto, src: t.dst, sport: t.dport, dst: t.src, dport: t.sport };
}

const tupleKey = (from: NatSide, t: Tuple): string => `${from}|${t.proto}|${t.src}|${t.sport}|${t.dst}|${t.dport}`;
const expectKey = (from: NatSide, proto: NatProto, dst: number, dport: number): string => `${from}|${proto}|${dst}|${dport}`;
const portKey = (proto: NatProto, addr: number, port: number): string => `${proto}|${addr}|${port}`;
const other = (s: NatSide): NatSide => (s === 0 ? 1 : 0);
const mapAddr = (a: number, from: Cidr, to: Cidr): number => ((to.addr | (a & ~from.mask)) >>> 0);

/** One connection's NAT entries and expectations (NatTable.exportFor / importState). */
export interface NatFlowState {
  entries: Entry[];
  expectations: Expectation[];
}

export class NatTable {
  readonly counters: NatCounters;
  /**
   * Cluster: this node allocates masquerade ports/ids p with p % count === index only, so nodes
   * sharing one address never hand out the same port (null = all of the range).
   */
  get slice(): { index: number; count: number } | null {
    return this.sliceOf;
  }
  set slice(v: { index: number; count: number } | null) {
    this.sliceOf = v;
    this.exhausted.clear(); // other ports are this node's now
  }
  private sliceOf: { index: number; count: number } | null = null;
  /**
   * Per pool (a rule's range on its address: "proto|address|lo|hi"; rules may share an address
   * with ranges of their own) that a full walk found without a free port: the ports released in it
   * since (released), the only ones allocate may hand out (a new connection to a used-up pool cost
   * a walk over every port: 32 ms per SYN with the default range).
   */
  private readonly exhausted = new Map<string, { proto: NatProto; address: number; lo: number; hi: number; freed: number[] }>();
  private nextId = 1;
  /** Per pool "proto|address": the last port handed out. */
  private readonly cursors = new Map<string, number>();
  private readonly entries = new Map<number, Entry>();
  /** tupleKey(init, orig) and tupleKey(other(init), repl) → entry id. */
  private readonly byTuple = new Map<string, number>();
  private readonly expectations = new Map<number, Expectation>();
  /** expectKey → ids of the expectations waiting there (a new connection looks up one key). */
  private readonly expectIndex = new Map<string, Set<number>>();
  /** Expectation ids by the tag of their control connection, oldest first. */
  private readonly expectByTag = new Map<string, Set<number>>();
  /** Ports/ids in use on masquerade addresses (entries and expectations). */
  private readonly usedPorts = new Set<string>();
  /** portKey → how many of other nodes' connections use it; owner (spare key) → its portKeys. */
  private readonly externalPorts = new Map<string, number>();
  private readonly externalOwners = new Map<string, string[]>();

  /**
   * The 1:1 mappings by their real and by their mapped blocks, per side of their hosts (indices
   * into cfg.oneToOne): a packet looks its addresses up instead of trying every mapping (10,000
   * mappings: 244 µs per frame).
   */
  private readonly realIx: readonly [BlockLists, BlockLists] = [new BlockLists(), new BlockLists()];
  private readonly mappedIx: readonly [BlockLists, BlockLists] = [new BlockLists(), new BlockLists()];
  /** The masquerade rules by their sources' blocks, per side of their hosts (indices into cfg.masquerade). */
  private readonly sourceIx: readonly [BlockLists, BlockLists] = [new BlockLists(), new BlockLists()];
  /** The masquerade rules' shared addresses, per side of their hosts. */
  private readonly masqAddrs: readonly [Set<number>, Set<number>] = [new Set(), new Set()];

  constructor(readonly cfg: NatConfig, snap?: NatSnapshot) {
    const problems = natConfigProblems(cfg);
    if (problems.length > 0) throw new Error(`nat: bad config: ${problems.join('; ')}`);
    cfg.oneToOne.forEach((m, i) => {
      this.realIx[m.side].add(m.real, i);
      this.mappedIx[m.side].add(m.mapped, i);
    });
    cfg.masquerade.forEach((m, i) => {
      for (const c of m.sources) this.sourceIx[m.side].add(c, i);
      this.masqAddrs[m.side].add(m.address);
    });
    this.counters = newNatCounters();
    if (snap !== undefined) this.load(snap);
  }

  static restore(cfg: NatConfig, snap: unknown): NatTable {
    return new NatTable(cfg, checkIds(checkSnapshot(snap)));
  }

  get size(): { entries: number; expectations: number } {
    return { entries: this.entries.size, expectations: this.expectations.size };
  }

  /** The translation for one packet (creating an entry or consuming an expectation if needed). */
  translate(p: NatPacket, now: number): NatVerdict {
    const t: Tuple = { proto: p.proto, src: p.src, sport: p.sport, dst: p.dst, dport: p.dport };
    const hit = this.find(p.from, t, now);
    if (hit !== undefined) {
      const [e, isOrig] = hit;
      if (p.icmpRequest !== undefined && p.icmpRequest !== isOrig) return this.drop('no-entry');
      // A packet never shortens an entry: a RST or SYN anyone can send with the tuple (the NAT
      // stage runs before the tracker checks its sequence number) would end an idle connection's
      // mapping. The gateway shortens it when the connection closes (settle).
      e.expiresAt = Math.max(e.expiresAt, now + this.timeout(p));
      this.counters.translated++;
      return { kind: 'translate', tuple: invert(isOrig ? e.repl : e.orig), entry: e.id };
    }
    const x = this.matchExpectation(p.from, t, now);
    if (x !== undefined) {
      if (this.entries.size >= this.cfg.limits.maxEntries) return this.drop('table-full');
      this.unindexExpectation(x);
      this.counters.expectationsConsumed++;
      // The port reserved for the expectation now belongs to the entry (same key).
      const out = { ...this.oneToOne(p.from, t), dst: x.to.addr, dport: x.to.port };
      const e = this.addEntry(p.from, t, out, now + this.timeout(p), 'expectation');
      this.counters.translated++;
      return { kind: 'translate', tuple: out, entry: e.id };
    }
    const s = this.oneToOne(p.from, t);
    // A source no 1:1 mapping names, in a masquerade range: masqueraded, toward the destination
    // as 1:1 maps it (a published server). The 1:1 translation alone would leave the source real.
    const mi = p.icmpRequest === false || s.src !== t.src ? -1 : this.masqueradeOf(p.from, t.src);
    const m = mi < 0 ? undefined : this.cfg.masquerade[mi];
    if (m === undefined && (s.src !== t.src || s.dst !== t.dst)) {
      this.counters.oneToOne++;
      this.counters.translated++;
      return { kind: 'translate', tuple: s };
    }
    if (m !== undefined) {
      if (this.entries.size >= this.cfg.limits.maxEntries) return this.drop('table-full');
      const port = this.allocate(m, t.proto, t.sport);
      if (port === undefined) return this.drop('ports-exhausted');
      const out: Tuple = { ...s, src: m.address, sport: port };
      if (t.proto === 'icmp') out.dport = port;
      const e = this.addEntry(p.from, t, out, now + this.timeout(p), 'masquerade');
      this.counters.translated++;
      return { kind: 'translate', tuple: out, entry: e.id };
    }
    if (this.isMasqAddress(t.dst, p.from)) return this.drop('no-entry');
    return { kind: 'none' };
  }

  /** The connection of entry `id` closed: it goes after the transitory timeout at most. */
  settle(id: number, now: number): void {
    const e = this.entries.get(id);
    if (e !== undefined && e.orig.proto === 'tcp') e.expiresAt = Math.min(e.expiresAt, now + this.cfg.timeouts.tcpTransitory);
  }

  /**
   * Read-only lookup of an entry's translation (no refresh, no creation): for ICMP errors, whose
   * embedded header is the packet *we sent*, and for diagnostics. `from` is the side it arrives on.
   */
  lookup(from: NatSide, t: Tuple, now: number): Tuple | undefined {
    const e = this.byTuple.get(tupleKey(from, t));
    if (e === undefined) return undefined;
    const en = this.entries.get(e)!;
    if (en.expiresAt <= now) return undefined;
    return invert(en.init === from ? en.repl : en.orig);
  }

  /**
   * Register an expected connection. Refused (undefined, counted) when the table is at
   * maxExpectations or the port it names is in use.
   */
  expect(x: Omit<Expectation, 'id' | 'expiresAt'>, now: number): Expectation | undefined {
    if (this.expectations.size >= this.cfg.limits.maxExpectations) {
      this.counters.expectationsRefused++;
      return undefined;
    }
    const masq = this.isMasqAddress(x.dst, x.from);
    if (masq && this.usedPorts.has(portKey(x.proto, x.dst, x.dport))) {
      this.counters.expectationsRefused++;
      return undefined;
    }
    const e: Expectation = { ...x, id: this.nextId++, expiresAt: now + this.cfg.timeouts.expectation };
    this.addExpectation(e);
    if (masq) this.usedPorts.add(portKey(x.proto, x.dst, x.dport));
    this.counters.expectationsAdded++;
    return e;
  }

  /**
   * For an FTP agent hook: `addr:port` on side `side` announces a data endpoint that a peer on the
   * other side (`peer`, if known) will connect to. Returns the endpoint to announce instead:
   * - 1:1 mapped address: the mapped address, same port (stateless, nothing registered);
   * - masqueraded address: the masquerade address and a newly allocated port, with an
   *   expectation that translates the incoming connection back to addr:port;
   * - otherwise `undefined` (no NAT: announce unchanged). `null` = refused (counted).
   */
  expectData(
    side: NatSide,
    proto: NatProto,
    addr: number,
    port: number,
    peer: number | undefined,
    now: number,
    tag?: string,
  ): { addr: number; port: number } | undefined | null {
    const o = this.realMapping(side, addr);
    if (o >= 0) return { addr: mapAddr(addr, this.cfg.oneToOne[o]!.real, this.cfg.oneToOne[o]!.mapped), port };
    const mi = this.masqueradeOf(side, addr);
    const m = mi < 0 ? undefined : this.cfg.masquerade[mi];
    if (m === undefined) return undefined;
    if (tag !== undefined) this.evictOldestOf(tag);
    if (this.expectations.size >= this.cfg.limits.maxExpectations) {
      this.counters.expectationsRefused++;
      return null;
    }
    const p = this.allocate(m, proto, port);
    if (p === undefined) {
      this.counters.expectationsRefused++;
      return null;
    }
    const x: Omit<Expectation, 'id' | 'expiresAt'> = { proto, from: other(side), dst: m.address, dport: p, to: { addr, port } };
    if (peer !== undefined) x.src = peer;
    if (tag !== undefined) x.tag = tag;
    this.usedPorts.delete(portKey(proto, m.address, p)); // expect() re-adds it
    this.expect(x, now);
    return { addr: m.address, port: p };
  }

  /** Drops the oldest of `tag`'s expectations while it holds MAX_EXPECTATIONS_PER_TAG. */
  private evictOldestOf(tag: string): void {
    const mine = this.tagged(tag);
    for (let i = 0; i <= mine.length - MAX_EXPECTATIONS_PER_TAG; i++) {
      this.removeExpectation(mine[i]!);
      this.counters.expectationsEvicted++;
    }
  }

  /**
   * The control connection `tag` is gone (or its agent gave up): its expectations go with it, as
   * conntrack removes a master's. Returns how many.
   */
  dropExpectations(tag: string): number {
    const mine = this.tagged(tag);
    for (const x of mine) this.removeExpectation(x);
    this.counters.expectationsDropped += mine.length;
    return mine.length;
  }

  /** The expectations of control connection `tag`, oldest first. */
  private tagged(tag: string): Expectation[] {
    const ids = this.expectByTag.get(tag);
    return ids === undefined ? [] : [...ids].map((id) => this.expectations.get(id)!);
  }

  /** Remove expired entries and expectations; returns how many went. */
  expire(now: number): number {
    let n = 0;
    // Deleting the entry at hand while iterating a Map is safe: no copy of the whole table.
    for (const e of this.entries.values()) {
      if (e.expiresAt <= now) {
        this.removeEntry(e);
        this.counters.entriesExpired++;
        n++;
      }
    }
    for (const x of this.expectations.values()) {
      if (x.expiresAt <= now) {
        this.removeExpectation(x);
        this.counters.expectationsExpired++;
        n++;
      }
    }
    return n;
  }

  entryList(): readonly Entry[] {
    return [...this.entries.values()];
  }

  expectationList(): readonly Expectation[] {
    return [...this.expectations.values()];
  }

  /**
   * True when `addr` arriving as a source from side `from` is an address this NAT hands out
   * there (a masquerade address, a 1:1 mapped address): such a packet is a translated copy.
   */
  ownsAddress(from: NatSide, addr: number): boolean {
    return this.isMasqAddress(addr, from) || this.mappedMapping(other(from), addr) >= 0;
  }

  /**
   * Cluster (docs/ARCHITECTURE.md §5): the entries of one connection — found by the tuple its packets have
   * as they arrive on either side — and the expectations it registered (tagged with its flow
   * id), as plain data for its snapshot. `importState` merges them into another node's table.
   */
  exportFor(raw: readonly [Tuple | undefined, Tuple | undefined], tag: string): NatFlowState {
    const entries: Entry[] = [];
    for (const side of [0, 1] as const) {
      const t = raw[side];
      if (t === undefined) continue;
      const id = this.byTuple.get(tupleKey(side, t));
      const e = id === undefined ? undefined : this.entries.get(id);
      if (e !== undefined && !entries.includes(e)) entries.push(e);
    }
    const expectations = this.tagged(tag);
    return JSON.parse(JSON.stringify({ entries, expectations })) as NatFlowState;
  }

  /**
   * Merges a connection's NAT state from another node (ids are renumbered here). The connection's
   * own translation wins: an entry this node made for the same packets (e.g. a frame it
   * translated before the state arrived) carries a port the far endpoint has never seen, and is
   * replaced (counted: `importReplaced`).
   */
  importState(st: NatFlowState): void {
    const chk = checkSnapshot({ v: 1, nextId: 0, cursors: {}, counters: {}, entries: st.entries, expectations: st.expectations });
    for (const e of chk.entries) {
      for (const k of [tupleKey(e.init, e.orig), tupleKey(other(e.init), e.repl)]) {
        const id = this.byTuple.get(k);
        const have = id === undefined ? undefined : this.entries.get(id);
        if (have === undefined) continue;
        if (tupleKey(have.init, have.orig) === tupleKey(e.init, e.orig) && tupleKey(other(have.init), have.repl) === tupleKey(other(e.init), e.repl)) {
          if (e.expiresAt > have.expiresAt) have.expiresAt = e.expiresAt;
          continue;
        }
        this.removeEntry(have);
        this.counters.importReplaced++;
      }
      if (this.byTuple.has(tupleKey(e.init, e.orig))) continue;
      this.index({ ...e, id: this.nextId++, orig: { ...e.orig }, repl: { ...e.repl } });
    }
    for (const x of chk.expectations) {
      const k = expectKey(x.from, x.proto, x.dst, x.dport);
      const same = [...(this.expectIndex.get(k) ?? [])].some((id) => this.expectations.get(id)?.tag === x.tag);
      if (same) continue;
      this.addStoredExpectation({ ...x, id: this.nextId++ });
    }
  }

  snapshot(): NatSnapshot {
    const clone = <T>(x: T): T => JSON.parse(JSON.stringify(x)) as T;
    return {
      v: 1,
      nextId: this.nextId,
      cursors: Object.fromEntries(this.cursors),
      entries: clone([...this.entries.values()]),
      expectations: clone([...this.expectations.values()]),
      counters: { ...this.counters },
    };
  }

  // -------------------------------------------------------------------------------------------

  private drop(reason: DropReason): NatVerdict {
    if (reason === 'table-full') this.counters.tableFull++;
    else if (reason === 'ports-exhausted') this.counters.portsExhausted++;
    else this.counters.noEntry++;
    return { kind: 'drop', reason };
  }

  private timeout(p: NatPacket): number {
    const to = this.cfg.timeouts;
    if (p.proto === 'udp') return to.udp;
    if (p.proto === 'icmp') return to.icmp;
    const f = p.tcpFlags ?? 0x10;
    return f & 0x05 || (f & 0x12) === 0x02 ? to.tcpTransitory : to.tcpEstablished;
  }

  private find(from: NatSide, t: Tuple, now: number): [Entry, boolean] | undefined {
    const id = this.byTuple.get(tupleKey(from, t));
    if (id === undefined) return undefined;
    const e = this.entries.get(id)!;
    if (e.expiresAt <= now) {
      this.removeEntry(e);
      this.counters.entriesExpired++;
      return undefined;
    }
    return [e, e.init === from];
  }

  private matchExpectation(from: NatSide, t: Tuple, now: number): Expectation | undefined {
    const ids = this.expectIndex.get(expectKey(from, t.proto, t.dst, t.dport));
    if (ids === undefined) return undefined;
    for (const id of [...ids]) {
      const x = this.expectations.get(id)!;
      if (x.src !== undefined && x.src !== t.src) continue;
      if (x.expiresAt <= now) {
        this.removeExpectation(x);
        this.counters.expectationsExpired++;
        continue;
      }
      return x;
    }
    return undefined;
  }

  private oneToOne(from: NatSide, t: Tuple): Tuple {
    const [src, dst] = this.oneToOneAddrs(from, t.src, t.dst);
    return { ...t, src, dst };
  }

  /** The first 1:1 mapping (its index in cfg.oneToOne) whose hosts are on `side` and whose real block holds `a`, or -1. */
  realMapping(side: NatSide, a: number): number {
    return this.realIx[side].first(a);
  }

  /** The first masquerade rule (its index in cfg.masquerade) whose hosts are on `side` and whose sources hold `a`, or -1. */
  masqueradeOf(side: NatSide, a: number): number {
    return this.sourceIx[side].first(a);
  }

  /** The first masquerade rule on `side` that hides host `a` (one of its sources, not its shared address), or -1. */
  hiderOf(side: NatSide, a: number): number {
    return this.sourceIx[side].first(a, (i) => this.cfg.masquerade[i]!.address !== a);
  }

  /** The first 1:1 mapping whose hosts are on `side` and whose mapped block holds `a`, or -1. */
  mappedMapping(side: NatSide, a: number): number {
    return this.mappedIx[side].first(a);
  }

  /** Stateless 1:1 translation of the addresses of a packet from `from` (src real → mapped, dst mapped → real). */
  oneToOneAddrs(from: NatSide, src: number, dst: number): [number, number] {
    const m = this.cfg.oneToOne;
    const i = this.realMapping(from, src);
    const j = this.mappedMapping(other(from), dst);
    return [i < 0 ? src : mapAddr(src, m[i]!.real, m[i]!.mapped), j < 0 ? dst : mapAddr(dst, m[j]!.mapped, m[j]!.real)];
  }

  /** Is `addr` a masquerade address as seen by packets arriving from `from`? */
  isMasqAddress(addr: number, from: NatSide): boolean {
    return this.masqAddrs[other(from)].has(addr);
  }

  /**
   * Ports of the masquerade addresses that connections owned by other cluster nodes use (known
   * from their spare copies): allocation skips them, so a node never hands out a port a connection
   * it does not own still uses (e.g. one its previous incarnation translated, handed over since).
   * `owner` is the spare's key; a later call for the same owner replaces its ports.
   */
  reserveExternal(owner: string, endpoints: ReadonlyArray<{ addr: number; port: number }>, proto: NatProto = 'tcp'): void {
    this.releaseExternal(owner);
    const keys: string[] = [];
    for (const e of endpoints) {
      if (!this.cfg.masquerade.some((m) => m.address === e.addr)) continue;
      const k = portKey(proto, e.addr, e.port);
      keys.push(k);
      this.externalPorts.set(k, (this.externalPorts.get(k) ?? 0) + 1);
    }
    if (keys.length > 0) this.externalOwners.set(owner, keys);
  }

  /** Forgets the ports `reserveExternal` recorded for `owner` (its spare was dropped or taken over). */
  releaseExternal(owner: string): void {
    const keys = this.externalOwners.get(owner);
    if (keys === undefined) return;
    this.externalOwners.delete(owner);
    for (const k of keys) {
      const n = (this.externalPorts.get(k) ?? 1) - 1;
      if (n <= 0) {
        this.externalPorts.delete(k);
        this.released(k);
      } else this.externalPorts.set(k, n);
    }
  }

  /** Ports reserved by other nodes' connections (reserveExternal). */
  get externalReserved(): number {
    return this.externalPorts.size;
  }

  /**
   * Starts every masquerade pool's cursor at a random point of its range (`rand` in [0, 1)).
   * Cluster nodes do this: a restarted node's fresh table would otherwise hand out the very ports
   * its previous incarnation did, which connections handed over to other nodes may still use.
   */
  seedCursors(rand: () => number): void {
    for (const m of this.cfg.masquerade) {
      for (const proto of ['tcp', 'udp', 'icmp'] as const) {
        const r = proto === 'icmp' ? m.icmpIds : m.ports;
        const n = r.hi - r.lo + 1;
        this.cursors.set(`${proto}|${m.address}`, r.lo + Math.min(n - 1, Math.floor(rand() * n)));
      }
    }
  }

  /** A free port/id in the rule's pool: `want` if allowed and free, else the next after the cursor. */
  private allocate(m: Masquerade, proto: NatProto, want: number): number | undefined {
    const r = proto === 'icmp' ? m.icmpIds : m.ports;
    const pool = `${proto}|${m.address}`;
    const used = this.usedPorts;
    const sl = this.sliceOf;
    const mine = (p: number): boolean => sl === null || p % sl.count === sl.index;
    // Taken: used here, or by another node's connection (reserveExternal).
    const taken = (k: string): boolean => used.has(k) || this.externalPorts.has(k);
    const wk = portKey(proto, m.address, want);
    if (m.preservePort && want >= r.lo && want <= r.hi && mine(want) && !taken(wk)) {
      used.add(wk);
      return want;
    }
    const range = `${pool}|${r.lo}|${r.hi}`;
    const ex = this.exhausted.get(range);
    if (ex !== undefined) {
      for (let p = ex.freed.pop(); p !== undefined; p = ex.freed.pop()) {
        const k = portKey(proto, m.address, p);
        if (mine(p) && !taken(k)) {
          used.add(k);
          return p;
        }
      }
      return undefined;
    }
    const n = r.hi - r.lo + 1;
    const cur = this.cursors.get(pool) ?? r.hi;
    for (let i = 1; i <= n; i++) {
      const p = r.lo + ((cur - r.lo + i) % n + n) % n;
      const k = portKey(proto, m.address, p);
      if (mine(p) && !taken(k)) {
        used.add(k);
        this.cursors.set(pool, p);
        return p;
      }
    }
    this.exhausted.set(range, { proto, address: m.address, lo: r.lo, hi: r.hi, freed: [] });
    return undefined;
  }

  private addEntry(init: NatSide, orig: Tuple, out: Tuple, expiresAt: number, origin: Entry['origin']): Entry {
    const e: Entry = { id: this.nextId++, init, orig, repl: invert(out), expiresAt, origin };
    this.index(e);
    this.counters.entriesCreated++;
    return e;
  }

  private index(e: Entry): void {
    this.entries.set(e.id, e);
    this.byTuple.set(tupleKey(e.init, e.orig), e.id);
    this.byTuple.set(tupleKey(other(e.init), e.repl), e.id);
    for (const k of this.entryPorts(e)) this.usedPorts.add(k);
  }

  /**
   * Ports on masquerade addresses an entry holds: where its replies arrive (outbound
   * masquerade), or where its first packet arrived (a consumed expectation).
   */
  private entryPorts(e: Entry): string[] {
    const out: string[] = [];
    const { orig: o, repl: r } = e;
    if (this.isMasqAddress(r.dst, other(e.init))) out.push(portKey(r.proto, r.dst, r.dport));
    if (this.isMasqAddress(o.dst, e.init)) out.push(portKey(o.proto, o.dst, o.dport));
    return out;
  }

  private removeEntry(e: Entry): void {
    this.entries.delete(e.id);
    this.byTuple.delete(tupleKey(e.init, e.orig));
    this.byTuple.delete(tupleKey(other(e.init), e.repl));
    for (const k of this.entryPorts(e)) if (this.usedPorts.delete(k)) this.released(k);
  }

  private addExpectation(x: Expectation): void {
    this.expectations.set(x.id, x);
    const k = expectKey(x.from, x.proto, x.dst, x.dport);
    const ids = this.expectIndex.get(k);
    if (ids === undefined) this.expectIndex.set(k, new Set([x.id]));
    else ids.add(x.id);
    if (x.tag !== undefined) {
      const mine = this.expectByTag.get(x.tag);
      if (mine === undefined) this.expectByTag.set(x.tag, new Set([x.id]));
      else mine.add(x.id);
    }
  }

  /** An expectation from saved state (a snapshot, another node's): indexed, its port taken. */
  private addStoredExpectation(x: Expectation): void {
    this.addExpectation({ ...x, to: { ...x.to } });
    if (this.isMasqAddress(x.dst, x.from)) this.usedPorts.add(portKey(x.proto, x.dst, x.dport));
  }

  /** Forget an expectation but keep its port (consumed: the new entry takes the port over). */
  private unindexExpectation(x: Expectation): void {
    this.expectations.delete(x.id);
    const k = expectKey(x.from, x.proto, x.dst, x.dport);
    const ids = this.expectIndex.get(k);
    ids?.delete(x.id);
    if (ids?.size === 0) this.expectIndex.delete(k);
    if (x.tag !== undefined) {
      const mine = this.expectByTag.get(x.tag);
      mine?.delete(x.id);
      if (mine?.size === 0) this.expectByTag.delete(x.tag);
    }
  }

  private removeExpectation(x: Expectation): void {
    this.unindexExpectation(x);
    if (this.isMasqAddress(x.dst, x.from)) {
      const k = portKey(x.proto, x.dst, x.dport);
      if (this.usedPorts.delete(k)) this.released(k);
    }
  }

  /** A port of used-up pools is free again (see `exhausted`; `k` a portKey). */
  private released(k: string): void {
    if (this.exhausted.size === 0) return;
    const [proto, addr, port] = k.split('|');
    const a = Number(addr);
    const p = Number(port);
    for (const [key, e] of this.exhausted) {
      if (e.proto !== proto || e.address !== a || p < e.lo || p > e.hi) continue;
      // A port released, taken again by another way and released again is listed twice: past the
      // pool's size the list is dropped and the next allocation walks the pool again.
      if (e.freed.length > e.hi - e.lo) this.exhausted.delete(key);
      else e.freed.push(p);
    }
  }

  private load(s: NatSnapshot): void {
    this.nextId = s.nextId;
    for (const [k, v] of Object.entries(s.cursors)) this.cursors.set(k, v);
    for (const e of s.entries) this.index({ ...e, orig: { ...e.orig }, repl: { ...e.repl } });
    for (const x of s.expectations) this.addStoredExpectation(x);
    Object.assign(this.counters, s.counters);
  }
}

function checkSnapshot(x: unknown): NatSnapshot {
  const bad = (why: string): never => {
    throw new Error(`nat: bad snapshot (${why})`);
  };
  const s = x as Partial<NatSnapshot> | null;
  if (typeof s !== 'object' || s === null || s.v !== 1) return bad('expected { v: 1, ... }');
  if (!Number.isSafeInteger(s.nextId)) bad('nextId');
  if (typeof s.cursors !== 'object' || s.cursors === null) bad('cursors');
  if (!Array.isArray(s.entries) || !Array.isArray(s.expectations)) bad('entries/expectations');
  if (typeof s.counters !== 'object' || s.counters === null) bad('counters');
  const isTuple = (t: unknown): boolean => {
    const u = t as Tuple | null;
    return (
      typeof u === 'object' && u !== null && NAT_PROTOS.includes(u.proto) &&
      [u.src, u.dst].every((a) => Number.isInteger(a) && a >= 0 && a <= 0xffffffff) &&
      [u.sport, u.dport].every((p) => Number.isInteger(p) && p >= 0 && p <= 65535)
    );
  };
  for (const e of s.entries!) {
    if (!Number.isSafeInteger(e.id) || (e.init !== 0 && e.init !== 1) || !isTuple(e.orig) || !isTuple(e.repl) || !Number.isFinite(e.expiresAt)) bad(`entry ${JSON.stringify(e)}`);
  }
  for (const e of s.expectations!) {
    const to = e.to as { addr?: unknown; port?: unknown } | null;
    const addrOk = (a: unknown): boolean => Number.isInteger(a) && (a as number) >= 0 && (a as number) <= 0xffffffff;
    const portOk = (p: unknown): boolean => Number.isInteger(p) && (p as number) >= 0 && (p as number) <= 65535;
    if (
      !Number.isSafeInteger(e.id) || (e.from !== 0 && e.from !== 1) || !NAT_PROTOS.includes(e.proto) ||
      typeof to !== 'object' || to === null || !addrOk(to.addr) || !portOk(to.port) ||
      !addrOk(e.dst) || !portOk(e.dport) || (e.src !== undefined && !addrOk(e.src)) || !Number.isFinite(e.expiresAt)
    ) bad(`expectation ${JSON.stringify(e)}`);
    if (e.tag !== undefined && typeof e.tag !== 'string') bad(`expectation ${JSON.stringify(e)}: tag`);
  }
  return s as NatSnapshot;
}

/**
 * A whole table's snapshot (restore; an import renumbers what it takes): one id counter numbers
 * entries and expectations, so every id once, each below nextId — the tables are keyed by them:
 * a repeated id would leave one of two in an index, and a later one be given out again.
 */
function checkIds(s: NatSnapshot): NatSnapshot {
  const ids = new Set<number>();
  for (const x of [...s.entries, ...s.expectations]) {
    if (ids.has(x.id) || x.id >= s.nextId) throw new Error(`nat: bad snapshot (id ${x.id} ${ids.has(x.id) ? 'given twice' : `not below nextId ${s.nextId}`})`);
    ids.add(x.id);
  }
  return s;
}
