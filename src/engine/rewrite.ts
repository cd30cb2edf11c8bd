/**
 * The rewrite stage of the data path (after track.ts, before emit.ts): which connections are
 * rewritten and by which agent, and their stream engines (stream/connection.ts) driven segment
 * by segment and by their timers.
 *
 * - A new connection gets the agent of the first rule that selects it (config/rules.ts), built
 *   from the agent registry; a connection whose agent cannot be built passes unrewritten
 *   (counted, logged).
 * - A segment of a rewritten connection goes through its engine, which answers with the
 *   segments to send now (none: withheld, counted); engine drops are logged rate-limited here.
 * - Connections keep the rules they started with across a reload: the older configs are kept by
 *   digest (at most MAX_OLD_CONFIGS), so a cluster node taking one over finds its rule again.
 * - A connection's agent and engine state leave (`exportState`) and arrive (`importState`) as
 *   plain data for the cluster.
 * - Per rule, what its connections did (`ruleStats`).
 *
 * It decides nothing about frames: the tracker decided the connection, emit.ts makes frames.
 */
import type { Logger } from 'pino';
import type { AgentContext } from '../agent/types.js';
import { createAgent, restoreAgent, type AgentRegistry } from '../agent/registry.js';
import { configDigest, selectRule, type Config } from '../config/index.js';
import type { Flow } from '../flow/table.js';
import type { Verdict } from '../flow/window.js';
import { Connection, type ConnectionJson, type TcpFields, type TcpOut } from '../stream/connection.js';
import { newStreamCounters, type GlobalBudget, type StreamCounters } from '../stream/counters.js';
import type { Limits } from '../stream/limits.js';
import { ipToString } from '../wire/ip.js';
import { TCP_SYN, type TcpSegment } from '../wire/tcp.js';
import type { AdmittedTcp, Warn } from './admit.js';
import { retainTag, stampTag, tagFromJson, tagToJson, type SegTag, type Side, type TagJson } from './emit.js';
import type { LinkType } from '../wire/frame.js';
import type { FlowTally } from './events.js';
import { TimerQueue } from './timers.js';

/** Configs kept after reloads for connections (and cluster takeovers) that started under them. */
const MAX_OLD_CONFIGS = 8;

/** The gateway's counters this stage adds to. */
export interface RewriteCounters {
  notReady: number;
  withheld: number;
  agentCreateFailed: number;
  connectionsRewritten: number;
  enginesReleased: number;
  importConfigUnknown: number;
  importTemplateRefused: number;
}

/** What the connections of one rule did (stats().rules). */
export interface RuleStats {
  /** Connections given to its agent, and those of them still running here. */
  connections: number;
  active: number;
  /** Rewrites its agents made (matches replaced, FTP endpoints translated). */
  rewrites: number;
  /** Bytes the rewriting added per direction (negative: removed). */
  bytesAdded: { c2s: number; s2c: number };
}

const newRuleStats = (): RuleStats => ({ connections: 0, active: 0, rewrites: 0, bytesAdded: { c2s: 0, s2c: 0 } });

/** A rewritten connection's running figures (agent rewrites, bytes added per direction). */
function figures(conn: Connection<SegTag>): { rewrites: number; c2s: number; s2c: number } {
  return { rewrites: conn.agent?.rewrites?.() ?? 0, c2s: conn.dirs[0].growth, s2c: conn.dirs[1].growth };
}

/** `side`'s template for the cluster, with the freshest fields seen from that side (its ACK). */
function templateOf(conn: Connection<SegTag>, side: 0 | 1): TagJson | null {
  const t = conn.dirs[side].template;
  return t === undefined ? null : tagToJson(t, conn.fieldsOf(side) ?? t.fields);
}

/** A rule in statistics: its name, else its 1-based position. */
const ruleLabel = (r: { name?: string | undefined; index: number }): string => r.name ?? String(r.index + 1);

/** A connection's agent and engine, as the cluster carries them (engine/gateway.ts ConnectionState). */
export interface RewriteState {
  /** Digest of the config whose rules it runs with; absent from older nodes. */
  config?: string;
  /** Agent name and its snapshot (null: the connection is not rewritten). */
  agent: { name: string; state: unknown } | null;
  conn: ConnectionJson | null;
  /**
   * Per side, the segment its direction keeps as a template for gateway-originated ones (only
   * while it holds bytes or has such a segment outstanding): the new owner can send a hold
   * timeout's bytes, or an abort decided in one, before that side sends again. Absent: none.
   */
  templates?: [TagJson | null, TagJson | null];
}

/** Where a segment goes after this stage. */
export type Rewritten =
  /** The connection is not rewritten, or this segment passes it unchanged (a refusal before the handshake). */
  | 'pass'
  /** Dropped here (counted). */
  | 'drop'
  /** The engine's output: segments to send now (possibly none), in `Rewriter.outs`. */
  | 'out';

export interface RewriteOptions {
  config: Config | null;
  limits: Limits;
  /** Bytes of virtio-net header in front of each frame (0 or 10). */
  vh: number;
  /** The frames' link layer (an imported template must decode as one of them). */
  link: LinkType;
  registry: AgentRegistry;
  counters: RewriteCounters;
  warn: Warn;
  log?: Logger | undefined;
  /** Agent events (ftp translations, http refusals) with the connection's id; none without an event sink. */
  agentEvent?: ((ev: Record<string, unknown>) => void) | undefined;
  /** Agents' warn lines (AgentContext.log): one function for every connection; none without a logger. */
  agentLog?: AgentContext['log'];
  /**
   * What the replace and http agents of the registry count, read for the regex budget warning
   * (the counters themselves, not a function of the gateway's: a closure per gateway made the
   * JIT's code for the warm-up's gateway wrong for the next one, "wrong call target").
   */
  regexBudget: readonly { readonly regexBudgetExceeded: number }[];
}

export class Rewriter {
  /** The stream engines' counters (stream/counters.ts), shared by every connection. */
  readonly stream = newStreamCounters();
  readonly budget: GlobalBudget = { queueBytes: 0, storeBytes: 0 };
  /** The engine's output for the segment or timer just handled (reused). */
  /**
   * Made as an array of objects from the start: the live gateway's is made before the JIT
   * warm-up, whose own arrays of this kind went from small integers to objects at their first
   * element, and code optimised on those took the live one's first element for another map
   * ("wrong map" at the first real SYN).
   */
  readonly outs: TcpOut<SegTag>[] = objectArray<TcpOut<SegTag>>();
  /** Flows whose connection has a timer pending, by when (see `due`). */
  private readonly timed = new TimerQueue<Flow<Connection<SegTag>>>();
  /** `due`'s list of the flows it takes (reused). */
  private readonly dueNow: Flow<Connection<SegTag>>[] = [];
  /** The rules new connections get (`reload` replaces them), and their digest. */
  private config: Config | null;
  private digest: string;
  /** Configs connections still run with, by digest (after reloads; at most MAX_OLD_CONFIGS). */
  private readonly oldConfigs = new Map<string, Config>();
  /** Connections started under an older config: its digest (the rest run with `digest`). */
  private readonly connDigest = new WeakMap<object, string>();
  /** Per rule label (its name, else its 1-based position): what its connections did. */
  private readonly ruleStats = new Map<string, RuleStats>();
  /** Connections taken over from another node: their figures at the takeover. */
  private readonly importedBase = new WeakMap<object, { rewrites: number; c2s: number; s2c: number }>();
  /** Engine drop counters as last logged (logStreamEvents). */
  private readonly lastStream = { farAhead: 0, queueOverflow: 0, dataAfterFin: 0, erasedDiscard: 0, normalized: 0, agentError: 0, agentViolation: 0, flushTimeout: 0, flushLimit: 0 };
  /** regexBudget() as last logged. */
  private lastBudget = 0;

  constructor(private readonly o: RewriteOptions) {
    this.config = o.config;
    this.digest = configDigest(o.config);
  }

  /**
   * A new connection: the agent of the first rule that selects it, if any (`tally` learns which).
   * `remadeFrom`: the rule label of the entry this one re-makes (FlowTable.reorient): the same
   * connection, not counted again under that rule.
   */
  attach(f: Flow<Connection<SegTag>>, tally: FlowTally | undefined, remadeFrom?: string | null): void {
    const r = this.ruleFor(f, f.id);
    if (r === undefined) return;
    const { sel, ctx } = r;
    const c = this.o.counters;
    try {
      const agent = createAgent(sel.rule.agent, sel.rule.config, ctx, this.o.registry);
      f.conn = new Connection<SegTag>(f.halves, agent, this.o.limits, this.stream, this.budget, retainTag, stampTag);
      f.conn.urgentInline = this.config!.policy.urgent === 'inline';
      const label = ruleLabel(sel.rule);
      const again = label === remadeFrom;
      if (!again) c.connectionsRewritten++;
      f.conn.label = label;
      const rs = this.ruleStat(label);
      if (!again) rs.connections++;
      rs.active++;
      if (tally !== undefined) {
        tally.rule = label;
        tally.agent = sel.rule.agent;
      }
      if (this.o.log?.isLevelEnabled('debug')) this.o.log.debug({ flow: f.id, rule: sel.index, agent: sel.rule.agent }, 'agent attached');
    } catch (e) {
      c.agentCreateFailed++;
      this.o.log?.error({ flow: f.id, err: (e as Error).message }, 'agent could not be created; connection passes unrewritten');
    }
  }

  /**
   * A segment of `f` from `side`, with the tracker's verdict on it (track.ts `judge`).
   * 'out': the engine's segments to send now are in `outs`.
   */
  segment(f: Flow<Connection<SegTag>>, side: 0 | 1, ad: AdmittedTcp, frame: Uint8Array, from: Side, nowMs: number, verdict: Verdict): Rewritten {
    const conn = f.conn;
    const d = ad.d;
    const vh = this.o.vh;
    if (conn === null) return 'pass';
    const tcp = d.tcp;
    const flags = tcp.flags;
    const c = this.o.counters;
    if (!(flags & TCP_SYN) && !conn.ready) {
      // A refusal (RST+ACK of the SYN): nothing to translate yet; the client must get it.
      if (verdict === 'rst-close' && d.payloadLen === 0) return 'pass';
      c.notReady++;
      this.o.warn('not-ready', nowMs, () => ({ flow: f.id, state: f.state }), 'segment before the handshake completed dropped');
      return 'drop';
    }
    const fields: TcpFields = { seq: tcp.seq, ack: tcp.ack, flags, window: tcp.window, urgent: tcp.urgent, sack: readSack(tcp) };
    const tag: SegTag = {
      fields,
      frame,
      l3Off: d.l3Off + vh,
      l4Off: d.l4Off + vh,
      payloadOff: d.payloadOff + vh,
      from,
      borrowed: true,
      vh,
      partial: ad.partial,
      gsoType: ad.gsoType,
      gsoSize: ad.gsoSize,
    };
    const payload = frame.subarray(tag.payloadOff, tag.payloadOff + d.payloadLen);
    const s = this.stream;
    const drops0 = streamEvents(s);
    conn.handle(side, fields, payload, tag, nowMs, this.outs, verdict !== 'rst-not-exact');
    this.timed.schedule(f, conn.nextTimerMs());
    if (this.outs.length === 0) c.withheld++;
    if (streamEvents(s) !== drops0) {
      this.logStreamEvents(f.id, tcp.seq, nowMs);
    }
    let budget = 0;
    for (const k of this.o.regexBudget) budget += k.regexBudgetExceeded;
    if (budget !== this.lastBudget) {
      this.lastBudget = budget;
      this.o.warn('regex-budget', nowMs, () => ({ flow: f.id, total: budget }), 'regex match attempt gave up on its step budget (engine: backtracking)');
    }
    return 'out';
  }

  /** The gateway did not run for `ms` until `nowMs`: the connections with timers do not count it (StreamDirection.outage). */
  outage(ms: number, nowMs: number): void {
    for (const f of this.timed.keys()) f.conn?.outage(ms, nowMs);
  }

  /**
   * Timers (hold timeouts, retransmission of gateway-originated bytes): `each` gets every
   * connection whose timer was due, its segments in `outs`. Only connections whose timer is due
   * are visited (engine/timers.ts): walking the whole table, then every connection with a timer,
   * made a tick's cost grow with connections that wait.
   */
  due(nowMs: number, each: (f: Flow<Connection<SegTag>>) => void): void {
    // Taken first, then ticked: one whose timer is due again at once waits for the next tick.
    const list = this.dueNow;
    for (let f = this.timed.takeDue(nowMs); f !== undefined; f = this.timed.takeDue(nowMs)) list.push(f);
    for (let i = 0; i < list.length; i++) {
      const f = list[i]!;
      const conn = f.conn;
      if (!conn) continue;
      // Queued at its earliest timer: one moved later since is queued again at its time.
      if (conn.nextTimerMs() <= nowMs) {
        const events0 = streamEvents(this.stream);
        conn.tick(nowMs, this.outs);
        if (streamEvents(this.stream) !== events0) this.logStreamEvents(f.id, undefined, nowMs);
        each(f);
      }
      // A connection given up or released meanwhile (each) is not queued again.
      if (f.conn === conn) this.timed.schedule(f, conn.nextTimerMs());
    }
    list.length = 0;
  }

  /**
   * After a segment was sent: a connection whose both FINs were reached in order, everything
   * acknowledged, is left alone from now on (what is left of it, a retransmitted FIN or a last
   * ACK, passes unchanged either way): its engine and agent go now rather than after
   * closedTimeoutMs, so short connections' state dies young (cheap GC). Never at a RST: the
   * endpoints may keep a connection the tracker saw reset (a spoofed RST that looked exact), and
   * the rest of it must still pass the agent.
   */
  releaseSettled(f: Flow<Connection<SegTag>>): void {
    const conn = f.conn;
    if (conn === null || f.state !== 'closed' || !conn.ended || !conn.settled) return;
    this.drop(f);
    this.o.counters.enginesReleased++;
  }

  /** The connection leaves this gateway (closed, expired, moved): its engine and agent go. */
  drop(f: Flow<Connection<SegTag>>): void {
    const conn = f.conn;
    this.timed.cancel(f);
    if (conn === null) return;
    this.retire(conn);
    conn.agent?.dispose?.();
    conn.dispose();
    f.conn = null;
  }

  /** The agent's and engine's state of `f` for another node (cluster). */
  exportState(f: Flow<Connection<SegTag>>): RewriteState {
    const conn = f.conn;
    const agent = conn?.agent ?? null;
    return {
      agent: agent === null ? null : { name: agent.name, state: agent.snapshot() },
      ...(conn === null ? {} : { config: this.connDigest.get(conn) ?? this.digest }),
      conn: conn === null ? null : conn.toJSON(false),
      ...(conn !== null && (conn.dirs[0].template !== undefined || conn.dirs[1].template !== undefined)
        ? { templates: [templateOf(conn, 0), templateOf(conn, 1)] }
        : {}),
    };
  }

  /**
   * Continues the rewriting of a connection another node had (`id`: its agent's flow id): the
   * rule selected again under the config it started with (every node has the same configs),
   * the agent restored from its snapshot, the engine's directions, then `acks` (the highest ACK
   * each side sent meanwhile) bring a snapshot that is behind up to what the receivers have.
   * Throws on a state that does not fit (the caller refuses the import).
   */
  importState(f: Flow<Connection<SegTag>>, id: string, st: RewriteState, nowMs: number, acks: readonly [number | undefined, number | undefined], tally: FlowTally | undefined): void {
    if (st.conn === null || st.agent === null || this.config === null) return;
    const old = st.config !== undefined && st.config !== this.digest ? this.oldConfigs.get(st.config) : undefined;
    if (st.config !== undefined && st.config !== this.digest && old === undefined) {
      this.o.counters.importConfigUnknown++;
      this.o.log?.warn({ flow: id, config: st.config, current: this.digest }, 'connection started under a config this node does not know: it continues with the current rules');
    }
    const r = this.ruleFor(f, id, old ?? this.config);
    if (r === undefined || r.sel.rule.agent !== st.agent.name) throw new Error(`no rule with agent ${st.agent.name} selects ${f.id} here`);
    const { sel, ctx } = r;
    const agent = restoreAgent(sel.rule.agent, sel.rule.config, ctx, st.agent.state, this.o.registry);
    const conn = new Connection<SegTag>(f.halves, agent, this.o.limits, this.stream, this.budget, retainTag, stampTag);
    conn.urgentInline = (old ?? this.config).policy.urgent === 'inline';
    try {
      conn.restore(st.conn, nowMs);
    } catch (e) {
      agent.dispose?.(); // not attached: drop() will not see it
      throw e;
    }
    f.conn = conn;
    const label = ruleLabel(sel.rule);
    if (tally !== undefined) {
      tally.rule = label;
      tally.agent = sel.rule.agent;
    }
    conn.label = label;
    this.ruleStat(label).active++;
    // What it did on earlier owners is theirs to count (its agent's counts travel with it).
    this.importedBase.set(conn, figures(conn));
    if (old !== undefined) this.connDigest.set(conn, st.config!);
    conn.adoptAcks(acks);
    // After the ACKs: a direction they moved past its held bytes keeps no template.
    for (const side of [0, 1] as const) {
      const t = st.templates?.[side];
      if (t === undefined || t === null) continue;
      try {
        const tag = tagFromJson(t, this.o.vh, this.o.link, f, side);
        if (tag !== null) conn.adoptTemplate(side, tag);
      } catch (e) {
        // Optional: without it the connection waits for that side's next segment, as before.
        this.o.counters.importTemplateRefused++;
        this.o.log?.warn({ flow: id, side, why: (e as Error).message }, 'taken-over connection: its template is refused (a hold timeout waits for that side to send)');
      }
    }
    this.timed.schedule(f, conn.nextTimerMs());
  }

  /**
   * New rules for new connections. Connections in flight keep the rule and agent they started
   * with: the config they run with is kept by its digest.
   */
  reload(next: Config, live: Iterable<Flow<Connection<SegTag>>>): void {
    const cur = this.config;
    const d = configDigest(next);
    if (d !== this.digest && cur !== null) {
      for (const f of live) if (f.conn !== null && !this.connDigest.has(f.conn)) this.connDigest.set(f.conn, this.digest);
      this.oldConfigs.set(this.digest, cur);
      while (this.oldConfigs.size > MAX_OLD_CONFIGS) this.oldConfigs.delete(this.oldConfigs.keys().next().value!);
    }
    this.oldConfigs.delete(d);
    this.config = next;
    this.digest = d;
  }

  get configState(): { digest: string; older: number } {
    return { digest: this.digest, older: this.oldConfigs.size };
  }

  /** Per rule of the config in force (and any rule label that still has connections), live connections included. */
  rules(live: Iterable<Flow<Connection<SegTag>>>): Record<string, RuleStats> {
    const out: Record<string, RuleStats> = {};
    for (const r of this.config?.rules ?? []) out[ruleLabel(r)] = newRuleStats();
    for (const [k, v] of this.ruleStats) out[k] = { ...v, bytesAdded: { ...v.bytesAdded } };
    // Live connections' rewrites so far (a rule's figures grow while its connections run).
    for (const f of live) {
      const c = f.conn;
      if (c === null || c.label === null) continue;
      this.addFigures(out[c.label]!, c);
    }
    return out;
  }

  /** The config's rule for a connection and the context its agent gets (id: the agent's flow id). */
  private ruleFor(f: Flow<Connection<SegTag>>, id: string, config = this.config): { sel: NonNullable<ReturnType<typeof selectRule>>; ctx: AgentContext } | undefined {
    if (config === null) return undefined;
    // f.client / f.server build a fresh object per read: once each per new connection.
    const client = f.client;
    const server = f.server;
    const sel = selectRule(config, { clientAddr: client.addr, clientPort: client.port, serverAddr: server.addr, serverPort: server.port });
    if (!sel) return undefined;
    const ctx: AgentContext = {
      flowId: id,
      client: { addr: ipToString(client.addr), port: client.port },
      server: { addr: ipToString(server.addr), port: server.port },
      directions: sel.rule.directions,
      clientFrom: () => f.clientFrom,
    };
    const agentEvent = this.o.agentEvent;
    if (agentEvent !== undefined) {
      const agent = sel.rule.agent;
      const rule = ruleLabel(sel.rule);
      ctx.event = (e) => agentEvent({ ...e, flow: id, rule, agent });
    }
    if (this.o.agentLog !== undefined) ctx.log = this.o.agentLog;
    return { sel, ctx };
  }

  private ruleStat(label: string): RuleStats {
    let r = this.ruleStats.get(label);
    if (r === undefined) this.ruleStats.set(label, (r = newRuleStats()));
    return r;
  }

  /** A rewritten connection's engine goes (it ended, or moved): its figures join its rule's. */
  private retire(conn: Connection<SegTag>): void {
    if (conn.label === null) return;
    const r = this.ruleStat(conn.label);
    r.active--;
    this.addFigures(r, conn);
    conn.label = null;
  }

  /** What `conn` did on this node, added to `r`. */
  private addFigures(r: RuleStats, conn: Connection<SegTag>): void {
    const now = figures(conn);
    const base = this.importedBase.get(conn);
    r.rewrites += now.rewrites - (base?.rewrites ?? 0);
    r.bytesAdded.c2s += now.c2s - (base?.c2s ?? 0);
    r.bytesAdded.s2c += now.s2c - (base?.s2c ?? 0);
  }

  /** A rate-limited warn line per kind of stream event counted since the last call (`seq`: the segment's, if one). */
  private logStreamEvents(flow: string, seq: number | undefined, nowMs: number): void {
    const s = this.stream;
    const last = this.lastStream;
    for (const k of Object.keys(last) as Array<keyof typeof last>) {
      if (s[k] === last[k]) continue;
      last[k] = s[k];
      this.o.warn(`stream:${k}`, nowMs, () => ({ flow, ...(seq !== undefined ? { seq } : {}), event: k, total: s[k] }), STREAM_EVENT_MSG[k]);
    }
  }
}

/**
 * How many stream events were counted so far (a segment or timer that adds one gets its warn
 * line). Written out, not a loop over STREAM_EVENT_KEYS: twice per segment, and a keyed load per
 * name was 1.9 % of the gateway's time under wrk ×10,000 (`--profile=conc`). A test checks that it
 * names every key.
 */
export function streamEvents(s: StreamCounters): number {
  return s.farAhead + s.queueOverflow + s.dataAfterFin + s.erasedDiscard + s.normalized + s.agentError + s.agentViolation + s.flushTimeout + s.flushLimit;
}

const STREAM_EVENT_MSG = {
  farAhead: 'segment far ahead of the stream discarded',
  queueOverflow: 'out-of-order segment discarded: queue budget full',
  dataAfterFin: 'data after FIN cut off',
  erasedDiscard: 'segment needing an erased command discarded',
  normalized: 'retransmission with different bytes rewritten to the processed bytes',
  agentError: 'agent threw: direction passes through unmodified',
  agentViolation: 'agent broke its contract: direction passes through unmodified',
  flushTimeout: 'held bytes decided by the hold timeout: a pattern split around the sender\'s silence went as it stood',
  flushLimit: 'held bytes decided at the hold limit (maxHeldBytes): a longer match is not found',
} as const;
export const STREAM_EVENT_KEYS = Object.keys(STREAM_EVENT_MSG) as (keyof typeof STREAM_EVENT_MSG)[];

function readSack(tcp: TcpSegment): Array<[number, number]> | null {
  if (tcp.sackOptionOffset() < 0) return null;
  const n = tcp.sackBlockCount();
  const out: Array<[number, number]> = [];
  for (let i = 0; i < n; i++) out.push([tcp.sackLeft(i), tcp.sackRight(i)]);
  return out;
}

/** An empty array whose elements are objects already (V8's elements kind), not small integers. */
function objectArray<T>(): T[] {
  const a: T[] = [undefined as unknown as T];
  a.length = 0;
  return a;
}
