/**
 * The gateway loop body (DESIGN.md §1): one frame in → zero or more frames out.
 *
 *   frame ─▶ wire.decodeFrame ─▶ flow table ─▶ Connection (per rewritten connection) ─▶ frames
 *              non-TCP / ARP / fragments / unrewritten connections ─▶ passed on unchanged
 *
 * It owns no device and no clock: the caller (replay, `tapgate run`) passes frames with the time
 * and gets frames back through `emit`. Frames handed in may be reused by the caller after the
 * call returns; anything kept (queued segments, templates) is copied.
 *
 * Malformed frames are dropped and counted by reason (a security gateway does not forward what it
 * cannot parse); with `verifyChecksums: false` (captures taken with checksum offload) checksums
 * are not checked, and rewritten frames get correct ones anyway.
 */
import type { Logger } from 'pino';
import type { AgentContext } from '../agent/types.js';
import { createAgent, type AgentRegistry, DEFAULT_REGISTRY } from '../agent/registry.js';
import { selectRule, type Config } from '../config/index.js';
import { Flow, FlowTable, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, ipv4Str, type SynOptions } from '../flow/table.js';
import { Connection, type TcpFields, type TcpOut } from '../stream/connection.js';
import { newStreamCounters, type GlobalBudget } from '../stream/counters.js';
import { DEFAULT_LIMITS, type Limits } from '../stream/limits.js';
import { finish, ipv4PseudoHeaderSum, sum16 } from '../wire/checksum.js';
import { decodeFrame, type FrameTcp, type LinkType } from '../wire/frame.js';
import { TcpSegment } from '../wire/tcp.js';

export type Side = 0 | 1;
export type Emit = (frame: Uint8Array, to: Side) => void;

export interface GatewayOptions {
  config?: Config | null;
  link?: LinkType;
  verifyChecksums?: boolean;
  log?: Logger;
  registry?: AgentRegistry;
  limits?: Limits;
}

/** What the engine keeps of a segment: its header fields and a (possibly copied) frame. */
interface SegTag {
  fields: TcpFields;
  frame: Uint8Array;
  l3Off: number;
  l4Off: number;
  payloadOff: number;
  /** Side the frame arrived on (its copy leaves on the other side). */
  from: Side;
  /** The frame buffer belongs to the caller and may be reused. */
  borrowed: boolean;
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
    /** TCP inside IPv4 fragments: passed on unrewritten (see README: fragments). */
    fragments: 0,
    /** SYNs dropped because the connection table was full. */
    synRefused: 0,
    /** Data on a rewritten connection before both ISNs were known: dropped (resent later). */
    notReady: 0,
    /** Frames rebuilt because their payload changed. */
    rebuilt: 0,
    /** Frames whose headers were rewritten in place. */
    headerRewrites: 0,
    /** Segments the engine withheld (delayed or discarded); the stream counters say which. */
    withheld: 0,
    /** Agents that could not be created (bad agent config at run time). */
    agentCreateFailed: 0,
    connectionsRewritten: 0,
  };
}

export class Gateway {
  readonly flows: FlowTable<Connection<SegTag>>;
  readonly counters = newGatewayCounters();
  readonly stream = newStreamCounters();
  private readonly budget: GlobalBudget = { queueBytes: 0 };
  private readonly limits: Limits;
  private readonly link: LinkType;
  private readonly verify: boolean;
  private readonly outs: TcpOut<SegTag>[] = [];
  private lastExpireMs = 0;

  constructor(private readonly opts: GatewayOptions = {}) {
    this.limits = opts.limits ?? opts.config?.limits ?? DEFAULT_LIMITS;
    this.link = opts.link ?? 'ethernet';
    this.verify = opts.verifyChecksums ?? true;
    this.flows = new FlowTable(this.limits);
    this.flows.onRemove = (f) => f.conn?.dispose();
  }

  get holdTimeoutMs(): number {
    return this.limits.holdTimeoutMs;
  }

  get queuedBytes(): number {
    return this.budget.queueBytes;
  }

  /** Handles one frame that arrived on `from` (replay: always 0; out frames go to `1 - from`). */
  handleFrame(frame: Uint8Array, from: Side, nowMs: number, emit: Emit, link: LinkType = this.link): void {
    const c = this.counters;
    c.framesIn++;
    c.bytesIn += frame.length;
    const d = decodeFrame(frame, { link, verifyChecksums: this.verify });
    switch (d.kind) {
      case 'error':
        c.malformed[d.reason] = (c.malformed[d.reason] ?? 0) + 1;
        if (this.opts.log?.isLevelEnabled('debug')) this.opts.log.debug({ reason: d.reason, detail: d.detail }, 'malformed frame dropped');
        return;
      case 'tcp':
        c.tcp++;
        this.handleTcp(d, frame, from, nowMs, emit);
        return;
      case 'ipv4-other':
        if (d.protocol === 6 && d.isFragment) c.fragments++;
        else c.nonTcp++;
        this.out(frame, from, emit);
        return;
      default:
        c.nonTcp++;
        this.out(frame, from, emit);
    }
  }

  /** Timers: hold timeouts, retransmission of gateway-originated bytes, expiry. */
  tick(nowMs: number, emit: Emit): void {
    for (const f of this.flows.values()) {
      const conn = f.conn;
      if (!conn || conn.nextTimerMs() > nowMs) continue;
      conn.tick(nowMs, this.outs);
      this.flushOuts(f, emit);
    }
    if (nowMs - this.lastExpireMs >= 1000) {
      this.lastExpireMs = nowMs;
      this.flows.expire(nowMs);
    }
  }

  private out(frame: Uint8Array, from: Side, emit: Emit): void {
    this.counters.framesOut++;
    this.counters.bytesOut += frame.length;
    emit(frame, (1 - from) as Side);
  }

  private handleTcp(d: FrameTcp, frame: Uint8Array, from: Side, nowMs: number, emit: Emit): void {
    const tcp = d.tcp;
    const src = { addr: d.ip.src, port: tcp.srcPort };
    const dst = { addr: d.ip.dst, port: tcp.dstPort };
    const flags = tcp.flags;
    const seq = tcp.seq;
    const r = this.flows.lookup(src, dst, flags, seq, nowMs);
    if (r.kind === 'refused') {
      this.counters.synRefused++;
      return;
    }
    if (r.kind === 'untracked') {
      this.out(frame, from, emit);
      return;
    }
    const f = r.flow;
    const side = r.side;
    let opts: SynOptions | undefined;
    if (flags & TCP_SYN) {
      opts = {
        mss: tcp.mss() ?? undefined,
        wscale: tcp.windowScale() ?? undefined,
        sackPermitted: tcp.sackPermitted(),
        timestamps: tcp.tsval() !== null,
      };
    }
    this.flows.track(f, side, flags, seq, opts, nowMs);
    if (r.isNew && !f.midstream) this.attachAgent(f);

    const conn = f.conn;
    if (!conn) {
      this.out(frame, from, emit);
      return;
    }
    if (!(flags & TCP_SYN) && !conn.ready) {
      this.counters.notReady++;
      return;
    }
    const fields: TcpFields = {
      seq,
      ack: tcp.ack,
      flags,
      window: tcp.window,
      urgent: tcp.urgent,
      sack: readSack(tcp),
    };
    const tag: SegTag = { fields, frame, l3Off: d.l3Off, l4Off: d.l4Off, payloadOff: d.payloadOff, from, borrowed: true };
    const payload = frame.subarray(d.payloadOff, d.payloadOff + d.payloadLen);
    conn.handle(side, fields, payload, tag, nowMs, this.outs);
    if (this.outs.length === 0) this.counters.withheld++;
    this.flushOuts(f, emit);
  }

  private attachAgent(f: Flow<Connection<SegTag>>): void {
    const cfg = this.opts.config;
    if (!cfg) return;
    const sel = selectRule(cfg, {
      clientAddr: f.client.addr,
      clientPort: f.client.port,
      serverAddr: f.server.addr,
      serverPort: f.server.port,
    });
    if (!sel) return;
    const ctx: AgentContext = {
      flowId: f.id,
      client: { addr: ipv4Str(f.client.addr), port: f.client.port },
      server: { addr: ipv4Str(f.server.addr), port: f.server.port },
      directions: sel.rule.directions,
    };
    try {
      const agent = createAgent(sel.rule.agent, sel.rule.config, ctx, this.opts.registry ?? DEFAULT_REGISTRY);
      f.conn = new Connection<SegTag>(f.halves, agent, this.limits, this.stream, this.budget, retainTag);
      this.counters.connectionsRewritten++;
      if (this.opts.log?.isLevelEnabled('debug')) this.opts.log.debug({ flow: f.id, rule: sel.index, agent: sel.rule.agent }, 'agent attached');
    } catch (e) {
      this.counters.agentCreateFailed++;
      this.opts.log?.error({ flow: f.id, err: (e as Error).message }, 'agent could not be created; connection passes unrewritten');
    }
  }

  private flushOuts(f: Flow<Connection<SegTag>>, emit: Emit): void {
    const outs = this.outs;
    for (let i = 0; i < outs.length; i++) {
      const o = outs[i]!;
      const to = (1 - o.tag.from) as Side;
      // The receiver's MSS bounds what a grown segment may carry (never below what the sender
      // already sent in one segment: captures and GSO frames may be larger than the MSS).
      const rcvSide = f.sideOf({ addr: this.dstAddrOf(o.tag), port: TcpSegment.unchecked(o.tag.frame.subarray(o.tag.l4Off)).dstPort });
      const mss = Math.max(f.halves[rcvSide].mss, o.tag.frame.length - o.tag.payloadOff);
      if (!o.changed && !o.synth) {
        emitHeaderRewrite(o, this.counters);
        this.countOut(o.tag.frame, emit, to);
      } else if (o.payload.length <= mss) {
        this.counters.rebuilt++;
        this.countOut(buildFrame(o.tag, o.fields, o.payload), emit, to);
      } else {
        this.stream.splits++;
        for (let off = 0; off < o.payload.length; off += mss) {
          const last = off + mss >= o.payload.length;
          const fl: TcpFields = {
            ...o.fields,
            seq: (o.fields.seq + off) >>> 0,
            flags: last ? o.fields.flags : o.fields.flags & ~(TCP_FIN | TCP_PSH),
          };
          this.counters.rebuilt++;
          this.countOut(buildFrame(o.tag, fl, o.payload.subarray(off, off + mss)), emit, to);
        }
      }
    }
    outs.length = 0;
  }

  private dstAddrOf(t: SegTag): number {
    const b = t.frame;
    const o = t.l3Off + 16;
    return ((b[o]! << 24) | (b[o + 1]! << 16) | (b[o + 2]! << 8) | b[o + 3]!) >>> 0;
  }

  private countOut(frame: Uint8Array, emit: Emit, to: Side): void {
    this.counters.framesOut++;
    this.counters.bytesOut += frame.length;
    emit(frame, to);
  }

  /** A flat snapshot of every counter, for statistics and tests. */
  stats() {
    return {
      gateway: { ...this.counters, malformed: { ...this.counters.malformed } },
      flows: { ...this.flows.counters, active: this.flows.size },
      stream: { ...this.stream, queuedBytes: this.budget.queueBytes },
    };
  }
}

function retainTag(t: SegTag): SegTag {
  if (!t.borrowed) return t;
  // Only the headers are needed to rebuild a frame; the payload travels separately.
  return { ...t, frame: t.frame.slice(0, t.payloadOff), borrowed: false };
}

function readSack(tcp: TcpSegment): Array<[number, number]> | null {
  if (tcp.sackOptionOffset() < 0) return null;
  const n = tcp.sackBlockCount();
  const out: Array<[number, number]> = [];
  for (let i = 0; i < n; i++) out.push([tcp.sackLeft(i), tcp.sackRight(i)]);
  return out;
}

/**
 * Header-only change: seq/ack/window/urgent/flags/SACK rewritten in place with RFC 1624
 * incremental checksum updates (the payload is untouched, so its sum need not be recomputed).
 */
function emitHeaderRewrite(o: TcpOut<SegTag>, c: ReturnType<typeof newGatewayCounters>): void {
  const t = o.tag;
  const seg = TcpSegment.unchecked(t.frame.subarray(t.l4Off, t.payloadOff + o.payload.length));
  const f = o.fields;
  const old = t.fields;
  let changed = false;
  if (f.seq !== old.seq) { seg.rewriteSeq(f.seq); changed = true; }
  if (f.ack !== old.ack) { seg.rewriteAck(f.ack); changed = true; }
  if (f.window !== old.window) { seg.rewriteWindow(f.window); changed = true; }
  if (f.urgent !== old.urgent) { seg.rewriteUrgent(f.urgent); changed = true; }
  if (f.flags !== old.flags) { seg.rewriteFlags(f.flags); changed = true; }
  if (f.sack && old.sack) {
    const n = seg.sackBlockCount();
    for (let i = 0; i < n; i++) {
      // Blocks that translate to nothing are replaced by a copy of a surviving block (or, with
      // none left, by an empty block at the ACK): the option's layout stays as it was.
      const b = f.sack[i] ?? f.sack[0] ?? [f.ack, f.ack];
      if (b[0] !== old.sack[i]![0] || b[1] !== old.sack[i]![1]) {
        seg.rewriteSackBlock(i, b[0], b[1]);
        changed = true;
      }
    }
  }
  if (changed) c.headerRewrites++;
}

/** Builds a new frame from a template's headers, new TCP fields and a new payload. */
export function buildFrame(t: SegTag, f: TcpFields, payload: Uint8Array): Uint8Array {
  const tpl = t.frame;
  const tcpHdrLen = t.payloadOff - t.l4Off;
  const ipHdrLen = t.l4Off - t.l3Off;
  const total = t.payloadOff + payload.length;
  const out = new Uint8Array(total);
  out.set(tpl.subarray(0, t.payloadOff), 0);
  out.set(payload, t.payloadOff);
  // IPv4: total length and header checksum.
  const ipTotal = ipHdrLen + tcpHdrLen + payload.length;
  out[t.l3Off + 2] = ipTotal >>> 8;
  out[t.l3Off + 3] = ipTotal & 0xff;
  out[t.l3Off + 10] = 0;
  out[t.l3Off + 11] = 0;
  const ipc = finish(sum16(out, t.l3Off, t.l4Off));
  out[t.l3Off + 10] = ipc >>> 8;
  out[t.l3Off + 11] = ipc & 0xff;
  // TCP fields, then the full checksum over pseudo-header, header and payload.
  const seg = TcpSegment.unchecked(out.subarray(t.l4Off));
  seg.setSeq(f.seq);
  seg.setAck(f.ack);
  seg.setFlags(f.flags);
  seg.setWindow(f.window);
  seg.setUrgent(f.flags & 0x20 ? f.urgent : 0);
  if (f.sack && seg.sackOptionOffset() >= 0) {
    const n = seg.sackBlockCount();
    for (let i = 0; i < n; i++) {
      const b = f.sack[i] ?? f.sack[0] ?? [f.ack, f.ack];
      seg.setSackLeft(i, b[0]);
      seg.setSackRight(i, b[1]);
    }
  }
  seg.setChecksum(0);
  const src = ((out[t.l3Off + 12]! << 24) | (out[t.l3Off + 13]! << 16) | (out[t.l3Off + 14]! << 8) | out[t.l3Off + 15]!) >>> 0;
  const dst = ((out[t.l3Off + 16]! << 24) | (out[t.l3Off + 17]! << 16) | (out[t.l3Off + 18]! << 8) | out[t.l3Off + 19]!) >>> 0;
  const tcpLen = tcpHdrLen + payload.length;
  seg.setChecksum(finish(sum16(out, t.l4Off, total, ipv4PseudoHeaderSum(src, dst, 6, tcpLen))));
  return out;
}

export { TCP_ACK, TCP_RST };
