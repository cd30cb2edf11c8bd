/**
 * The gateway loop body (docs/ARCHITECTURE.md §1): one frame in → zero or more frames out.
 *
 *   frame ─▶ admit.ts ─▶ nat/stage.ts ─▶ track.ts ─▶ rewrite.ts ─▶ emit.ts ─▶ frames
 *            (decode, drops)  (translate)   (flow table)  (agents, engines)
 *   non-TCP / unrewritten: passed unchanged ─▶ emit.ts
 *
 * It owns no device and no clock: the caller (replay, `tapgate run`) passes frames with the time
 * and gets frames back through `emit`. Frames handed in may be reused by the caller after the
 * call returns; anything kept (queued segments, templates) is copied.
 *
 * Admission (engine/admit.ts) drops what a security gateway must not forward, each drop counted
 * by reason and logged rate-limited; SYN floods meet the flow table's embryonic cap
 * (flow/table.ts); engine drops (segments far ahead of the window, queue budget overflow, data
 * after FIN, differing overlaps normalised) are counted by the stream engine (`stream.*`) and
 * logged here. With TAP GSO a GSO frame is ONE segment to the stream engine (what the virtio
 * header says on the way in: admit.ts; on the way out: emit.ts). NAT (nat/stage.ts) runs before
 * the flow table, which sees each endpoint of a translated connection by its real address on its
 * own side; the ftp agent then gets NAT-backed hooks (nat/ftp-hooks.ts) unless a registry is
 * passed in.
 */
import type { Logger } from 'pino';
import { bytestorePool, bytestorePoolBytes, bytestorePoolRings } from '../stream/bytestore.js';
import { makeRegistry, newFtpCounters, newHttpCounters, newReplaceCounters, type AgentRegistry } from '../agent/registry.js';
import { NatTable, type NatFlowState, type Tuple } from '../nat/nat.js';
import { natFtpHooks } from '../nat/ftp-hooks.js';
import type { HostMac, MasqL2 } from '../nat/frames.js';
import { NatStage, type NatView } from '../nat/stage.js';
import type { Config } from '../config/index.js';
import { flowEvent, newTally, swappedTally, type EventSink, type FlowEnd, type FlowTally } from './events.js';
import { Flow, FlowTable, type Endpoint, type FlowJson } from '../flow/table.js';
import { endpointToString, type IpAddr } from '../wire/ip.js';
import type { Connection } from '../stream/connection.js';
import { DEFAULT_LIMITS, type Limits } from '../stream/limits.js';
import { RateLog, type RateLogOptions } from '../util/ratelog.js';
import type { FrameTcp, LinkType } from '../wire/frame.js';
import { seqAdd } from '../wire/seq.js';
import { Policy } from './policy.js';
import { Admission, endpoints, type AdmittedTcp, type Warn } from './admit.js';
import { Tracker } from './track.js';
import { Emitter, type Emit, type SegTag, type Side } from './emit.js';
import { Rewriter, type RewriteState } from './rewrite.js';
import { Aborter } from './abort.js';
import { TCP_ACK, TCP_RST } from '../wire/tcp.js';
import { VIRTIO_NET_HDR_LEN } from '../wire/virtio.js';

export type { Emit, Side } from './emit.js';
export { badEndpointClass, badFlagClass } from './admit.js';

export interface GatewayOptions {
  config?: Config | null;
  link?: LinkType;
  verifyChecksums?: boolean;
  log?: Logger;
  registry?: AgentRegistry;
  limits?: Limits;
  /** Frames in and out start with a 10-byte virtio_net_hdr (TAP opened with IFF_VNET_HDR). */
  vnetHdr?: boolean;
  /** Rate limit of the warn lines about dropped hostile / malformed input (util/ratelog.ts). */
  logRate?: RateLogOptions;
  /** The event log (`--events`, engine/events.ts): flow records, agent events, drops. */
  events?: EventSink;
  /** A NAT table to use instead of one built from `config.nat` (tests, the cluster's restore). */
  nat?: NatTable;
  /** Cluster membership (src/cluster): which frames this node handles, and output gating. */
  cluster?: ClusterHooks;
  /**
   * Frames are handled in batches and the caller calls `endBatch` after each (the live loop): a
   * grown segment's last piece may then wait for the connection's next one (engine/emit.ts,
   * Coalescing). Off by default: every frame out leaves within the call that made it.
   */
  batched?: boolean;
  /**
   * Frames arrive on the TAP of their sender's side (the live gateway): a tracked connection's
   * segment arriving on the other side is dropped, counted `wrongSide` (engine/track.ts). Off
   * for a replayed capture, whose frames all come in on side 0.
   */
  sided?: boolean;
}

/** A frame's 4-tuple as it arrived (before NAT), on the side it arrived on. */
export interface RawTuple {
  src: IpAddr;
  sport: number;
  dst: IpAddr;
  dport: number;
}

/**
 * What a gateway node of a cluster (src/cluster/node.ts) decides per frame (docs/ARCHITECTURE.md §5).
 * Without it the gateway handles everything.
 */
export interface ClusterHooks {
  /**
   * A TCP frame before NAT: false = not forwarded here (another node owns its connection, or it
   * is held for a hand-over; counted); true = go on; a ClusterImport = this node continues a
   * connection another node had, found by the frame's tuple: the gateway imports it first (its
   * NAT translation with it), tells the hook (`adopt`), and goes on with the frame.
   */
  preTcp(from: Side, raw: RawTuple, flags: number, ack: number, frame: Uint8Array): boolean | ClusterImport;
  /**
   * A TCP frame after NAT by its connection's real endpoints (side0 = the endpoint on side 0),
   * when no local flow has it: false = not handled here (another node's, or of a hand-over in
   * progress: dropped, counted); true = a new
   * connection of this node; a ClusterImport = this node continues a connection another node
   * had: the gateway imports its state, tells the hook (`adopt`), and goes on with the frame.
   */
  tcpNew(from: Side, side0: Endpoint, side1: Endpoint, flags: number): boolean | ClusterImport;
  /** Every frame first (cluster loops): false = a copy another node forwarded (dropped, counted). */
  fromSegment(frame: Uint8Array, from: Side): boolean;
  /** Every TCP frame of a local connection: false = dropped (it came back from another node). */
  tcpLocal(f: Flow<unknown>, side: 0 | 1, from: Side, raw: RawTuple): boolean;
  /** Non-TCP frames: true = this node forwards them (one node of the cluster does). */
  nonTcp(frame: Uint8Array, from: Side): boolean;
  /** Frames of a local connection about to leave: the emit to use (the hook may hold them). */
  gate(f: Flow<unknown>, emit: Emit): Emit;
  /** A connection left the table (closed, expired, handed over). */
  flowRemoved(f: Flow<unknown>): void;
}

/** A connection to take over from a spare copy (ClusterHooks.preTcp, tcpNew). */
export interface ClusterImport {
  state: ConnectionState;
  /** The highest ACK each side sent since the copy was made (importConnection). */
  acks: readonly [number | undefined, number | undefined];
  /** The import's result (null: refused, the table is full); false = drop the frame. */
  adopt(f: Flow<unknown> | null): boolean;
}

/** One connection's state, everything a node needs to continue it (src/cluster/snapshot.ts). */
export interface ConnectionState extends RewriteState {
  /** The connection's id as its agent and NAT expectations know it (kept across moves). */
  id: string;
  flow: FlowJson;
  nat: NatFlowState | null;
  /**
   * The MACs of its masqueraded endpoints (nat/frames.ts MasqL2): the node that continues it may
   * never have heard a silent host, yet must address the replies to it. Absent in older snapshots.
   */
  macs?: HostMac[];
}

/** How a connection the table drops ended: by its RST or FINs as seen, else by time. */
function endOf(f: Flow<Connection<SegTag>>): FlowEnd {
  // Reset by the gateway because its agent gave up (engine/abort.ts).
  if (f.conn?.abort?.sent === true) return 'abort';
  if (f.halves[0].rstSeen || f.halves[1].rstSeen) return 'rst';
  if (f.halves[0].finSeen && f.halves[1].finSeen) return 'fin';
  return 'timeout';
}

export function newGatewayCounters() {
  return {
    framesIn: 0,
    framesOut: 0,
    bytesIn: 0,
    bytesOut: 0,
    tcp: 0,
    nonTcp: 0,
    /** Malformed frames dropped, by reason code. */
    malformed: {} as Record<string, number>,
    /** Frames larger than limits.maxFrameBytes, dropped (also in `malformed['frame-oversized']`). */
    oversized: 0,
    /** IPv4 fragments carrying TCP (first or later), dropped: never reassembled (see file comment). */
    tcpFragmentsDropped: 0,
    /** TCP segments with impossible flag combinations, dropped, by class (badFlagClass). */
    badFlags: {} as Record<string, number>,
    /** TCP segments with impossible endpoints (port 0, land, multicast...), dropped, by class. */
    badEndpoints: {} as Record<string, number>,
    /** SYNs dropped because the connection table or its half-open cap was full (flows.* say which). */
    synRefused: 0,
    /** Bare SYNs with a new ISN on a confirmed connection: passed on untracked (flow/table.ts). */
    straySyn: 0,
    /** Data on a rewritten connection before both ISNs were known: dropped (resent later). */
    notReady: 0,
    /** Frames rebuilt because their payload changed. */
    rebuilt: 0,
    /** Frames whose headers were rewritten in place. */
    headerRewrites: 0,
    /** TCP frames that arrived as GSO super-frames (vnet header gso_type TCPV4). */
    gsoIn: 0,
    /** Rebuilt frames sent as GSO super-frames (a grown payload kept whole). */
    gsoOut: 0,
    /** TCP frames that arrived with a partial checksum (NEEDS_CSUM). */
    partialIn: 0,
    /** TCP frames carrying RST, as received (a clean transfer has none). */
    rstIn: 0,
    /** RSTs at the expected sequence number (flow/window.ts): they end the connection. */
    rstAccepted: 0,
    /** RSTs inside the window but not exact: forwarded (challenge ACK), the connection kept. */
    rstNotExact: 0,
    /**
     * Segments of an old connection on a 4-tuple whose new SYN waits for its answer (the server's
     * challenge ACK, the client's RST to it): forwarded unchanged, untracked (engine/track.ts).
     */
    staleSegments: 0,
    /**
     * Live: segments of a connection whose handshake has not crossed the gateway, that no rule
     * covers as oriented but one would the other way round (engine/track.ts `unproven`): dropped.
     */
    unproven: 0,
    /** TCP-MD5 / TCP-AO segments of connections a rule covers: uninspectable, dropped (engine/track.ts). */
    signed: 0,
    /** Multipath TCP (RFC 8684) on connections a rule covers: segments dropped, and SYNs whose MPTCP options were taken out (engine/track.ts). */
    mptcp: 0,
    mptcpStripped: 0,
    /** Segments no receiver would take, dropped, by class: `rst-out-of-window`, `fin-out-of-window`, `fin-bad-ack`. */
    tcpInvalid: {} as Record<string, number>,
    /** Connections picked up mid-stream and inspected from the first byte seen (`policy.midstream: inspect`). */
    midstreamInspected: 0,
    /** Segments the engine withheld (delayed or discarded); the stream counters say which. */
    withheld: 0,
    /** Agents that could not be created (bad agent config at run time). */
    agentCreateFailed: 0,
    connectionsRewritten: 0,
    /** Engines of closed, never-rewritten, fully acknowledged connections released early. */
    enginesReleased: 0,
    /** Packets (IPv4 and ARP) rewritten by NAT. */
    natTranslated: 0,
    /** Packets dropped by NAT, by reason (nat/frames.ts NatDropReason). */
    natDropped: {} as Record<string, number>,
    /** Cluster: TCP frames of connections another node owns; non-TCP frames another node forwards. */
    notOwner: 0,
    nonTcpNotForwarder: 0,
    /** Cluster: frames of a local connection arriving on the wrong side (forwarded by another node). */
    wrongSide: 0,
    /** Cluster: connections imported from another node's state, or refused (table full, bad state). */
    imported: 0,
    importFailed: 0,
    /** Taken-over connections that started under a config this node does not know (they go on with the current one). */
    importConfigUnknown: 0,
    /** Taken-over connections whose template (engine/rewrite.ts RewriteState.templates) was refused: not a TCP segment's headers of that connection. */
    importTemplateRefused: 0,
    /** Configs taken by `reload`. */
    reloads: 0,
    /** Connections reset because their agent gave up on them (engine/abort.ts). */
    aborted: 0,
    /** RSTs the gateway made for them (two per abort, one per segment answered after). */
    rstOriginated: 0,
    /** Segments of aborted connections dropped. */
    abortDropped: 0,
  };
}

export class Gateway {
  readonly flows: FlowTable<Connection<SegTag>>;
  readonly counters = newGatewayCounters();
  private readonly limits: Limits;
  private readonly link: LinkType;
  private readonly verify: boolean;
  private readonly vh: number;
  /** Frames in (engine/admit.ts), connections (engine/track.ts), agents and engines (engine/rewrite.ts), frames out (engine/emit.ts). */
  private readonly admission: Admission;
  private readonly tracker: Tracker<Connection<SegTag>>;
  private readonly rewriter: Rewriter;
  private readonly emitter: Emitter;
  /** Connections an agent gave up on: reset at both ends (engine/abort.ts). */
  private readonly aborter: Aborter;
  private lastExpireMs = 0;
  private readonly ratelog: RateLog;
  /** NAT on the bridge (docs/ARCHITECTURE.md §6), from `config.nat`; null = none. */
  readonly nat: NatTable | null;
  /** Address translation of frames (nat/stage.ts); null without `config.nat`. */
  private readonly natStage: NatStage | null;
  private readonly registry: AgentRegistry;
  /** Time of the frame being handled (the NAT-backed ftp hooks read it). */
  private nowMs = 0;
  private readonly cluster: ClusterHooks | null;
  /** The TCP frame being handled as it arrived (before NAT), for the cluster hooks. */
  private readonly raw: RawTuple = { src: 0, sport: 0, dst: 0, dport: 0 };
  /** The NAT entries that translated each connection (settled when it leaves the table). */
  private readonly natEntries = new WeakMap<Flow<Connection<SegTag>>, Set<number>>();
  /** Ids of connections imported from another node (their agent's and NAT's id), when not f.id. */
  private readonly ids = new WeakMap<Flow<Connection<SegTag>>, string>();
  /** What happens to traffic a rule may cover that cannot be inspected (`policy:`). */
  policy: Policy;
  /** The config in force (`reload` replaces it). */
  private config: Config | null;
  /** What every replace agent of this gateway counts (regex match attempts given up on their step budget). */
  private readonly replaceCounters = newReplaceCounters();
  private readonly httpCounters = newHttpCounters();
  private readonly ftpCounters = newFtpCounters();
  /** Per connection, what it carried (only with an event sink: engine/events.ts). */
  private readonly tallies: Map<Flow<Connection<SegTag>>, FlowTally> | null;
  /** Why the flow being removed goes (set around FlowTable.remove calls that know it). */
  private removing: FlowEnd | null = null;
  /** What the entry `reorient` removed leaves to the one it makes (handleTcp takes it at once). */
  private remade: { key: string; label: string | null; tally: FlowTally | undefined } | null = null;
  /** Drops and warnings as events, rate-limited per reason like the log. */
  private readonly eventRate: RateLog | null;

  constructor(private readonly opts: GatewayOptions = {}) {
    this.limits = opts.limits ?? opts.config?.limits ?? DEFAULT_LIMITS;
    this.link = opts.link ?? 'ethernet';
    this.verify = opts.verifyChecksums ?? true;
    this.vh = opts.vnetHdr === true ? VIRTIO_NET_HDR_LEN : 0;
    this.cluster = opts.cluster ?? null;
    this.config = opts.config ?? null;
    const log = opts.log;
    this.ratelog = new RateLog(log ? (o, m) => log.warn(o, m) : null, opts.logRate);
    const events = opts.events;
    this.tallies = events !== undefined ? new Map() : null;
    this.eventRate = events !== undefined ? new RateLog((o, m) => events({ event: 'drop', msg: m, ...o }, this.nowMs), opts.logRate) : null;
    const natCfg = opts.config?.nat;
    this.nat = opts.nat ?? (natCfg !== undefined ? new NatTable(natCfg.table) : null);
    this.registry = opts.registry ?? this.makeRegistry(natCfg?.ftpClientSide ?? 0);
    this.rewriter = new Rewriter({
      config: this.config,
      limits: this.limits,
      vh: this.vh,
      link: this.link,
      registry: this.registry,
      counters: this.counters,
      warn: this.warn,
      log,
      agentEvent: events !== undefined ? (ev) => this.agentEvent(ev) : undefined,
      // The log only: what an agent refuses is in the event log as its own event.
      agentLog: log !== undefined ? (key, obj, msg) => this.ratelog.log(key, this.nowMs, obj(), msg) : undefined,
      regexBudget: [this.replaceCounters, this.httpCounters],
    });
    this.emitter = new Emitter(this.counters, this.rewriter.stream, this.vh, opts.batched === true);
    this.admission = new Admission({
      counters: this.counters,
      limits: this.limits,
      vh: this.vh,
      verify: this.verify,
      // IPv6 TCP is tracked and rewritten unless the NAT section has IPv4 translation only: then
      // IPv6 stays opaque (IPv4 masquerade hides hosts that IPv6 would show), and the policy
      // (`policy.ipv6`) decides; with `nptv6` the NAT stage translates it (nat/nptv6.ts).
      ipv6: this.nat === null || this.nat.cfg.nptv6.length > 0,
      warn: this.warn,
      policy: () => this.policy,
      fromSegment: opts.cluster === undefined ? undefined : (frame, from) => opts.cluster!.fromSegment(frame, from),
    });
    this.natStage = this.nat === null ? null : new NatStage(this.nat, this.link, this.counters, this.warn, this.vh, this.emitter);
    this.flows = new FlowTable(this.limits);
    this.aborter = new Aborter({
      counters: this.counters,
      flows: this.flows,
      emitter: this.emitter,
      nat: () => this.natStage,
      warn: this.warn,
      link: this.link,
      vh: this.vh,
      event: events,
    });
    this.policy = new Policy(opts.config ?? null);
    // A connection picked up mid-stream is oriented the way a rule names its client, when one does.
    this.flows.orientMidstream = (src, dst) => this.policy.midstreamRule(src, dst);
    this.flows.ended = (f) => f.conn === null || f.conn.ended;
    this.flows.inspected = (f) => f.conn !== null;
    this.flows.onRemove = (f, remade) => {
      // Re-made with its real client (FlowTable.reorient): the same connection goes on in the
      // new entry, which takes what this one carried (sides swapped) and is not counted again
      // by a rule that covered this one (handleTcp).
      if (remade) {
        const t = this.tallies?.get(f);
        this.tallies?.delete(f);
        this.remade = { key: f.key, label: f.conn?.label ?? null, tally: t === undefined ? undefined : swappedTally(t) };
      }
      // How it ended, before its engine (which knows of an abort) goes (none for one re-made: its tally went on).
      const end = this.tallies !== null ? (this.removing ?? endOf(f)) : null;
      if (f.conn !== null) this.dropExpectations(f);
      const ne = this.natEntries.get(f);
      if (ne !== undefined && this.nat !== null) for (const id of ne) this.nat.settle(id, this.nowMs);
      this.rewriter.drop(f);
      this.cluster?.flowRemoved(f);
      if (end !== null) this.flowEnded(f, end);
    };
    this.tracker = new Tracker({
      flows: this.flows,
      counters: this.counters,
      warn: this.warn,
      policy: () => this.policy,
      cluster: this.cluster,
      sided: opts.sided === true,
    });
  }

  /** The agents of this gateway; with NAT the ftp agent gets NAT-backed hooks (nat/ftp-hooks.ts). */
  private makeRegistry(ftpClientSide: Side): AgentRegistry {
    const counters = { replaceCounters: this.replaceCounters, httpCounters: this.httpCounters, ftpCounters: this.ftpCounters };
    const nat = this.nat;
    if (nat === null) return makeRegistry(counters);
    const log = this.opts.log;
    return makeRegistry({
      ...counters,
      ftpHooks: natFtpHooks(nat, {
        clientSide: ftpClientSide,
        now: () => this.nowMs,
        observe: (x) => {
          const o = { flow: x.flowId, kind: x.kind, opener: x.opener, announced: x.announced, original: x.original };
          log?.info(o, 'ftp data connection expected');
          this.agentEvent({ event: 'ftp', ...o });
        },
      }),
    });
  }

  /** A rate-limited warn line about dropped input (nothing is built when no logger is set); the stages report through it. */
  private readonly warn: Warn = (key, nowMs, obj, msg) => {
    if (this.opts.log === undefined && this.eventRate === null) return;
    const o = obj();
    if (this.opts.log !== undefined) this.ratelog.log(key, nowMs, o, msg);
    this.eventRate?.log(key, nowMs, o, msg);
  };

  /** The flow event of a connection that ends (or is still open at `flushEvents`). */
  private flowEnded(f: Flow<Connection<SegTag>>, end: FlowEnd): void {
    const t = this.tallies!.get(f);
    if (t === undefined) return;
    this.tallies!.delete(f);
    const c = f.client;
    const sv = f.server;
    const info = { id: this.ids.get(f) ?? f.id, client: endpointToString(c.addr, c.port), server: endpointToString(sv.addr, sv.port), createdMs: f.createdMs, midstream: f.midstream, state: f.state };
    this.opts.events!(flowEvent(info, t, end, this.nowMs), this.nowMs);
  }

  /** Flow events for every connection still open (the gateway stops: replay's end, SIGTERM). */
  flushEvents(nowMs: number): void {
    if (this.tallies === null) return;
    this.nowMs = nowMs;
    for (const f of [...this.tallies.keys()]) this.flowEnded(f, f.state === 'closed' ? endOf(f) : 'open');
  }

  /** An event from an agent (ftp translations). */
  agentEvent(ev: Record<string, unknown>): void {
    this.opts.events?.(ev, this.nowMs);
  }

  /** Masquerade at layer 2 (proxy ARP, MAC rewriting); null without masquerade or Ethernet. */
  get masqL2(): MasqL2 | null {
    return this.natStage?.masqL2 ?? null;
  }

  /** Bytes of virtio-net header before each frame (0 or 10). */
  get vnetHeaderLength(): number {
    return this.vh;
  }

  get holdTimeoutMs(): number {
    return this.limits.holdTimeoutMs;
  }

  get queuedBytes(): number {
    return this.rewriter.budget.queueBytes;
  }

  /** The end of a batch (`batched`): what the emit stage kept for the next frame out leaves now. */
  endBatch(): void {
    this.emitter.release();
  }

  /** Handles one frame that arrived on `from` (replay: always 0; out frames go to `1 - from`). */
  handleFrame(frame: Uint8Array, from: Side, nowMs: number, emit: Emit, link: LinkType = this.link): void {
    // A Node Buffer's slice() is a view, not a copy: everything below that keeps bytes (held
    // bytes, queued segments, retained templates) copies with slice(), so a Buffer from a reused
    // batch buffer (the TAP addon's) would be aliased and later overwritten. Plain view instead.
    if (Buffer.isBuffer(frame)) frame = new Uint8Array(frame.buffer, frame.byteOffset, frame.byteLength);
    const c = this.counters;
    c.framesIn++;
    c.bytesIn += frame.length;
    this.nowMs = nowMs;
    const ad = this.admission.admit(frame, from, nowMs, link);
    if (ad === null) return;
    const cl = this.cluster;
    if (ad.kind === 'tcp') {
      const tcp = ad.d.tcp;
      const raw = this.raw;
      raw.src = ad.d.src;
      raw.sport = tcp.srcPort;
      raw.dst = ad.d.dst;
      raw.dport = tcp.dstPort;
      const pre = cl === null ? true : cl.preTcp(from, raw, tcp.flags, tcp.ack, frame);
      if (pre === false) {
        c.notOwner++;
        if (typeof raw.src === 'number') this.natStage?.observe(frame, from, raw.src, link);
        return;
      }
      if (pre !== true && !pre.adopt(this.importConnection(pre.state, nowMs, pre.acks))) return;
    } else if (cl !== null && !cl.nonTcp(frame, from)) {
      c.nonTcpNotForwarder++;
      return;
    }
    let view: NatView | undefined;
    if (this.natStage !== null) {
      const n = this.natStage.frame(ad, frame, from, nowMs, link, emit);
      if (!n.go) return;
      view = n.view;
    }
    if (ad.kind === 'tcp') this.handleTcp(ad, frame, from, nowMs, emit, view);
    else this.out(frame, from, emit);
  }

  /** Timers: hold timeouts, retransmission of gateway-originated bytes (engine/rewrite.ts), expiry. */
  /**
   * The caller (the live loop) did not run for `ms`: held bytes' timers do not count it, so the
   * gateway's own stall is not taken for the senders' silence.
   */
  outage(ms: number, nowMs: number): void {
    this.rewriter.outage(ms, nowMs);
  }

  tick(nowMs: number, emit: Emit): void {
    this.rewriter.due(nowMs, (f) => {
      const out = this.gated(f, emit);
      this.emitter.segments(f, this.rewriter.outs, this.tallies?.get(f), out);
      // A hold timeout made the agent give up: both ends are reset now (engine/abort.ts).
      if (f.conn?.abort != null && !f.conn.abort.sent) {
        this.dropExpectations(f);
        this.aborter.fromTimer(f, nowMs, out);
      }
    });
    if (nowMs - this.lastExpireMs >= 1000) {
      this.lastExpireMs = nowMs;
      this.flows.expire(nowMs);
      this.nat?.expire(nowMs);
      this.ratelog.flush(nowMs);
      this.eventRate?.flush(nowMs);
    }
  }

  /** `f` left or gave up: the FTP data connections the NAT expects for it go (nat/ftp-hooks.ts tags them with its id). */
  private dropExpectations(f: Flow<Connection<SegTag>>): void {
    this.nat?.dropExpectations(this.ids.get(f) ?? f.id);
  }

  /** Where `f`'s frames go: through the cluster's gate on a cluster node. */
  private gated(f: Flow<Connection<SegTag>>, emit: Emit): Emit {
    return this.cluster !== null ? this.cluster.gate(f, emit) : emit;
  }

  private out(frame: Uint8Array, from: Side, emit: Emit): void {
    this.emitter.pass(frame, from, emit);
  }

  /** A TCP frame admission let in (after NAT, which may have given its real endpoints: `view`). */
  private handleTcp(ad: AdmittedTcp, frame: Uint8Array, from: Side, nowMs: number, emit: Emit, view?: NatView): void {
    const d = ad.d;
    const tcp = d.tcp;
    const src = view?.src ?? { addr: d.src, port: tcp.srcPort };
    const dst = view?.dst ?? { addr: d.dst, port: tcp.dstPort };
    const flags = tcp.flags;
    const seq = tcp.seq;
    const cl = this.cluster;
    if (flags & TCP_RST) this.counters.rstIn++;
    let r = this.tracker.find(d, src, dst, from, this.raw, nowMs, ad.partial);
    if (r.kind === 'import') {
      if (!r.imp.adopt(this.importConnection(r.imp.state, nowMs, r.imp.acks))) return;
      r = this.tracker.find(d, src, dst, from, this.raw, nowMs, ad.partial);
      if (r.kind === 'import') return; // imported, yet not found: never reached
    }
    // What an entry re-made by this segment left (only to the entry of its 4-tuple).
    const remade = this.remade !== null && r.kind === 'flow' && r.flow.key === this.remade.key ? this.remade : null;
    this.remade = null;
    if (r.kind === 'drop') return;
    if (r.kind === 'pass') return this.out(frame, from, emit);
    const f = r.flow;
    const side = r.side;
    if (view?.entry !== undefined) {
      const ne = this.natEntries.get(f);
      if (ne === undefined) this.natEntries.set(f, new Set([view.entry]));
      else if (ne.size < 4) ne.add(view.entry);
    }
    // Its agent gave up: nothing of it is forwarded (engine/abort.ts).
    if (f.conn?.abort != null) return this.aborter.segment(f, side, d, frame, from, nowMs, this.gated(f, emit));
    let tally: FlowTally | undefined;
    if (this.tallies !== null) {
      tally = this.tallies.get(f);
      if (tally === undefined) this.tallies.set(f, (tally = remade?.tally ?? newTally()));
      tally.framesIn[side]++;
      tally.bytesIn[side] += d.payloadLen;
    }
    if (f.midstream && f.conn === null) {
      if (r.isNew) this.decideMidstream(f, side, seq, src, dst, nowMs, d);
      const mark = f.mark;
      if (mark !== 'none') {
        this.policy.count('midstream', mark);
        if (mark === 'drop') return;
      }
    } else if (f.midstream && f.halves[side].isn === undefined) {
      // Inspected from the first byte seen: this side's positions start at its first segment.
      f.halves[side].isn = seqAdd(seq, -1);
    }
    const verdict = this.tracker.judge(f, side, d, nowMs);
    if (verdict === null) return;
    if (verdict === 'stale') return this.out(frame, from, emit);
    if (r.isNew && !f.midstream) this.rewriter.attach(f, tally, remade?.label);
    const rw = this.rewriter.segment(f, side, ad, frame, from, nowMs, verdict);
    if (rw === 'drop') return;
    if (rw === 'pass') {
      // On a cluster node with NAT a connection's first frame waits for its translation's snapshot (ClusterHooks.gate).
      this.out(frame, from, cl !== null && this.nat !== null ? this.gated(f, emit) : emit);
      if (tally !== undefined && f.conn === null) {
        tally.framesOut[side]++;
        tally.bytesOut[side] += d.payloadLen;
      }
      return;
    }
    const out = this.gated(f, emit);
    this.emitter.segments(f, this.rewriter.outs, tally, out);
    if (f.conn?.abort != null) {
      this.dropExpectations(f);
      return this.aborter.start(f, side, d, frame, from, nowMs, out);
    }
    // A cluster node keeps every engine until the connection leaves the table (a spare elsewhere follows it).
    if (cl === null) this.rewriter.releaseSettled(f);
  }

  /**
   * A connection first seen mid-stream: when a rule matches it, the policy drops it, passes it
   * uninspected (the user chose so), or inspects it from the first byte seen: the agent starts
   * there, each side's positions from its first segment (a pseudo-ISN one before it), as a
   * cluster node continues a connection it did not see open. Bytes before that are never
   * rewritten; a retransmission of them is released empty (the receiver had them).
   */
  private decideMidstream(f: Flow<Connection<SegTag>>, side: 0 | 1, seq: number, src: Endpoint, dst: Endpoint, nowMs: number, d: FrameTcp): void {
    if (!this.policy.covers(src, dst)) return;
    const action = this.policy.midstreamAction;
    if (action === 'inspect') {
      f.halves[side].isn = seqAdd(seq, -1);
      // The other side's positions start where this segment's ACK says it is: the connection
      // is ready at once (a side that has nothing to say until it hears is not waited for).
      if (d.tcp.flags & TCP_ACK) f.halves[1 - side]!.isn = seqAdd(d.tcp.ack, -1);
      this.rewriter.attach(f, this.tallies?.get(f));
      if (f.conn !== null) {
        this.counters.midstreamInspected++;
        return;
      }
    }
    f.mark = action === 'pass' ? 'pass' : 'drop';
    this.warn(`policy:midstream`, nowMs, () => ({ flow: f.id, action: f.mark, ...endpoints(d) }), f.mark === 'drop' ? 'connection a rule matches picked up mid-stream: dropped (policy)' : 'connection a rule matches picked up mid-stream: passed uninspected (policy)');
  }

  /**
   * A connection's whole state (cluster, docs/ARCHITECTURE.md §5): the flow entry, the engine's two
   * directions, the agent's snapshot and its NAT entries/expectations. `raw` = the tuple its
   * frames have as they arrive on side 0 / side 1 (for the NAT entries).
   */
  exportConnection(f: Flow<Connection<SegTag>>, raw: readonly [Tuple | undefined, Tuple | undefined]): ConnectionState {
    const id = this.ids.get(f) ?? f.id;
    return {
      id,
      flow: this.flows.exportFlow(f),
      ...this.rewriter.exportState(f),
      nat: this.nat === null ? null : this.nat.exportFor(raw, id),
      macs: this.masqL2?.exportMacs([f.client.addr, f.server.addr]) ?? [],
    };
  }

  /**
   * Continues a connection from another node's state: the flow entry, its NAT state, and its
   * agent and engine (engine/rewrite.ts importState, with `acks`: the highest ACK each side sent
   * meanwhile). An existing entry for the same 4-tuple is replaced. Null (counted) when the table
   * is full or the state is bad.
   */
  importConnection(st: ConnectionState, nowMs: number, acks: readonly [number | undefined, number | undefined]): Flow<Connection<SegTag>> | null {
    let f: Flow<Connection<SegTag>> | null = null;
    try {
      if (typeof st?.id !== 'string') throw new Error('bad state: id');
      f = this.flows.importFlow(st.flow, nowMs);
      if (f === null) {
        this.counters.importFailed++;
        return null;
      }
      this.ids.set(f, st.id);
      if (st.nat !== null && this.nat !== null) this.nat.importState(st.nat);
      if (st.macs !== undefined) this.masqL2?.importMacs(st.macs);
      const tally = this.tallies !== null ? newTally() : undefined;
      this.rewriter.importState(f, st.id, st, nowMs, acks, tally);
      if (tally !== undefined && f.conn !== null) this.tallies!.set(f, tally);
      this.counters.imported++;
      return f;
    } catch (e) {
      this.counters.importFailed++;
      // Not half-imported: a flow without its engine would pass the rest unrewritten.
      if (f !== null) this.flows.remove(f);
      this.opts.log?.error({ err: (e as Error).message }, 'connection state could not be imported');
      return null;
    }
  }

  /** Forgets a connection another node now owns (its NAT entries expire on their own). */
  releaseConnection(f: Flow<Connection<SegTag>>): void {
    this.removing = 'moved';
    try {
      this.flows.remove(f);
    } finally {
      this.removing = null;
    }
  }

  /**
   * A new config for new connections: its rules and policy. Connections in flight keep the rule
   * and agent they started with (and a cluster node taking one over finds that config by its
   * digest). The limits and the NAT section cannot change in a running gateway: a config that
   * changes them is refused (throws, the old config stays).
   */
  reload(next: Config): void {
    const cur = this.config;
    const same = (a: unknown, b: unknown): boolean => JSON.stringify(a) === JSON.stringify(b);
    const problems: string[] = [];
    if (!same(next.limits, this.limits)) problems.push('limits');
    if (!same(next.nat ?? null, cur?.nat ?? null)) problems.push('nat');
    if (problems.length > 0) throw new Error(`the ${problems.join(' and ')} section${problems.length > 1 ? 's' : ''} changed: restart the gateway to apply ${problems.length > 1 ? 'them' : 'it'}`);
    this.rewriter.reload(next, this.flows.values());
    this.config = next;
    this.policy = new Policy(next, this.policy.counters);
    this.counters.reloads++;
  }

  /** A flat snapshot of every counter, for statistics and tests. */
  stats() {
    return {
      gateway: {
        ...this.counters,
        malformed: { ...this.counters.malformed },
        natDropped: { ...this.counters.natDropped },
        tcpInvalid: { ...this.counters.tcpInvalid },
        policy: { dropped: { ...this.policy.counters.dropped }, passed: { ...this.policy.counters.passed } },
      },
      flows: { ...this.flows.counters, active: this.flows.size, halfOpen: this.flows.halfOpen, handshakeTombs: this.flows.handshakeTombs, ipv6Addresses: this.flows.ipv6Addresses },
      stream: { ...this.rewriter.stream, queuedBytes: this.rewriter.budget.queueBytes, storedBytes: this.rewriter.budget.storeBytes },
      /** Per rule (its name, else its 1-based position): connections given to its agent. */
      rules: this.rewriter.rules(this.flows.values()),
      config: { ...this.rewriter.configState, reloads: this.counters.reloads },
      /** Added to by every replace / http / ftp agent of this gateway (agent/replace.ts, agent/http/counters.ts, agent/ftp.ts). */
      agents: { replace: { ...this.replaceCounters }, http: { ...this.httpCounters, refused: { ...this.httpCounters.refused } }, ftp: { ...this.ftpCounters } },
      /** The process-wide free list of stream-store rings (src/stream/bytestore.ts). */
      storePool: { ...bytestorePool, rings: bytestorePoolRings(), bytes: bytestorePoolBytes() },
      log: { ...this.ratelog.counters },
      ...(this.nat !== null ? { nat: { ...this.nat.counters, ...this.nat.size, externalReserved: this.nat.externalReserved, ...(this.masqL2 !== null ? { l2: { ...this.masqL2.counters } } : {}) } } : {}),
    };
  }
}

export { TCP_ACK, TCP_RST };
