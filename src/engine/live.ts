/**
 * The live gateway (docs/ARCHITECTURE.md §1): two TAP devices bridged through one `Gateway`.
 *
 *   TAP a ──read batch──▶ Gateway.handleFrame(side 0) ──collected per batch──▶ writeBatch ▶ TAP b
 *   TAP b ──read batch──▶ Gateway.handleFrame(side 1) ──collected per batch──▶ writeBatch ▶ TAP a
 *   timer (~10 ms) ─────▶ Gateway.tick ──▶ writeBatch to whichever side
 *
 * Frames handed over by the TAP addon are views into its batch buffer and valid only during the
 * callback: the gateway emits header-rewritten frames as those same views, so every frame
 * emitted while handling a batch is written before the callback returns (one `writeBatch` per
 * destination per read batch). Non-TCP frames pass unchanged (the gateway bridges them).
 *
 * Both TAPs are opened the same way (`vnetHdr`): with it, GSO super-frames and partial checksums
 * cross the gateway whole (see engine/gateway.ts), which is what makes it fast.
 *
 * Capture (`pcapDir`): DIR/a.pcap holds every frame seen on TAP a — read from it (what the
 * a-side endpoint sent) and written to it (what the gateway delivered to that side); DIR/b.pcap
 * the same for TAP b. So a.pcap is the a-side's view of each connection and b.pcap the b-side's,
 * as tcpdump on each TAP would show them. The virtio header is not recorded; a GSO frame is one
 * large record (as tcpdump shows GSO packets) and partial checksums appear as bad checksums
 * (as with any capture taken with checksum offload). A capture that cannot keep up drops records
 * (counted in `pcapDropped`) rather than buffering without bound.
 *
 * Impairment (`impair`, phy/fault.ts; the kernel here has no netem): a fault injector may sit at
 * four points, each with its own spec and seed stream:
 *
 *   TAP a ─read─▶ [in-a] ─▶ Gateway ─▶ [out-b] ─write─▶ TAP b
 *   TAP a ◀write─ [out-a] ◀─ Gateway ◀─ [in-b] ◀─read─ TAP b
 *
 * `out-x` impairs the frames the gateway writes to TAP x (what the x-side endpoint receives);
 * `in-x` the frames read from TAP x before the gateway sees them (so the gateway itself meets
 * loss, reordering and duplicates: its delayed/drained/retransmission paths). Frames an injector
 * keeps (delay, reorder, rate queue) are copies; it is polled on every batch and tick and, while
 * it holds frames, on a timer armed for its next due time. Captures record frames as they cross
 * the TAP: read frames before `in-x`, written frames after `out-x`. On stop, everything the
 * injectors still hold is released at once.
 *
 * Time is read here (the one place that owns a clock) and injected into the gateway and the
 * injectors.
 */
import { createWriteStream, mkdirSync, type WriteStream } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { Config } from '../config/index.js';
import { warmUp } from './warmup.js';
import { FaultInjector, type FaultCounters, type FaultPending, type FaultSpec } from '../phy/fault.js';
import { PcapWriter } from '../phy/pcap.js';
import { TapDevice, type FrameBatch, type TapCounters, type TapError } from '../phy/tap.js';
import type { EventSink } from './events.js';
import { Gateway, type ClusterHooks, type Side } from './gateway.js';
import { clock } from '../util/clock.js';

/** Lets a cluster node write frames outside a TAP batch (released gated output, replays). */
export interface ClusterAttach extends ClusterHooks {
  attach(io: { gateway: Gateway; inject: (fn: (emit: (frame: Uint8Array, to: Side) => void, nowMs: number) => void) => void }): void;
}

export interface LiveOptions {
  /** Run as a node of a cluster (src/cluster/node.ts). */
  cluster?: ClusterAttach | undefined;
  /** TAP a (side 0) and TAP b (side 1); both must exist in this network namespace. */
  taps: readonly [string, string];
  config: Config | null;
  /** Open both TAPs with IFF_VNET_HDR + offloads (TAP GSO). */
  vnetHdr: boolean;
  /** Record both sides as DIR/a.pcap and DIR/b.pcap. */
  pcapDir?: string | undefined;
  log: Logger;
  /** JIT warm-up (src/engine/warmup.ts) after the TAPs opened, before the first frame. Default true. */
  warmup?: boolean;
  /** Period of Gateway.tick. Default 10 ms. */
  tickMs?: number;
  /** Most queued capture bytes before records are dropped. Default 64 MiB. */
  pcapMaxQueued?: number;
  /** Fault injectors by point (see the file comment); none by default. */
  impair?: ImpairSpecs | undefined;
  /** The event log (engine/events.ts). */
  events?: EventSink | undefined;
}

/** `out-a`: frames written to TAP a; `in-a`: frames read from TAP a (before the gateway). */
export type ImpairPoint = 'out-a' | 'out-b' | 'in-a' | 'in-b';
export type ImpairSpecs = Partial<Record<ImpairPoint, FaultSpec>>;

/**
 * Mixed into each point's seed (FaultOptions.salt), so one spec given for several points draws
 * different numbers at each; `out-a` uses the seed as given.
 */
const IMPAIR_SALT: Record<ImpairPoint, number> = { 'out-a': 0, 'out-b': 0x9e3779b9, 'in-a': 0x85ebca6b, 'in-b': 0xc2b2ae35 };

export type ImpairStats = FaultCounters & { tap: string; spec: string; pending: FaultPending };

export interface LiveStats {
  uptimeS: number;
  taps: Record<string, TapCounters>;
  pcap?: { files: string[]; records: number; dropped: number };
  impair?: Partial<Record<ImpairPoint, ImpairStats>>;
  [k: string]: unknown;
}

interface Capture {
  writer: PcapWriter;
  stream: WriteStream;
  path: string;
}

/** Most batches one TAP callback handles back to back (see LiveGateway.onBatch). */
const CHAIN_MAX = 16;

export class LiveGateway {
  readonly gateway: Gateway;
  private readonly devs: TapDevice[] = [];
  private readonly pending: [Uint8Array[], Uint8Array[]] = [[], []];
  private readonly caps: Capture[] = [];
  private timer: NodeJS.Timeout | undefined;
  private readonly startedMs = clock();
  /** clock() origin in Unix-epoch ns, for capture timestamps (0 with today's clock). */
  private readonly epochNs = BigInt(Date.now()) * 1_000_000n - BigInt(Math.round(clock() * 1e6));
  private pcapDropped = 0;
  /** Fault injectors on the way out to TAP [a, b] and on the way in from TAP [a, b]. */
  private readonly faultOut: [FaultInjector | undefined, FaultInjector | undefined] = [undefined, undefined];
  private readonly faultIn: [FaultInjector | undefined, FaultInjector | undefined] = [undefined, undefined];
  /** What the out-injectors release, per destination, written at the end of a flush. */
  private readonly released: [Uint8Array[], Uint8Array[]] = [[], []];
  private readonly releaseTo: [(f: Uint8Array) => void, (f: Uint8Array) => void] = [
    (f) => this.released[0].push(f),
    (f) => this.released[1].push(f),
  ];
  /** What the in-injectors release goes into the gateway at `this.nowMs`. */
  private readonly deliverFrom: [(f: Uint8Array) => void, (f: Uint8Array) => void] = [
    (f) => this.gateway.handleFrame(f, 0, this.nowMs, this.emit),
    (f) => this.gateway.handleFrame(f, 1, this.nowMs, this.emit),
  ];
  /** All injectors (empty without impairment: then no per-batch work is done for them). */
  private readonly injectors: FaultInjector[] = [];
  private nowMs = 0;
  /** Frames the last flush wrote to TAP a / b. */
  private readonly written: [number, number] = [0, 0];
  /** Batches read right after a write to their TAP and handled in the same call (onBatch). */
  private chained = 0;
  private faultTimer: NodeJS.Timeout | undefined;
  private faultTimerDueMs = Infinity;
  private stopped = false;
  private failure: TapError | undefined;
  /** Resolves when the gateway stops on its own (a TAP vanished). */
  readonly failed: Promise<TapError>;
  private onFail!: (e: TapError) => void;

  private constructor(private readonly opts: LiveOptions) {
    this.gateway = new Gateway({
      config: opts.config,
      vnetHdr: opts.vnetHdr,
      verifyChecksums: true,
      log: opts.log.child({ mod: 'gateway' }),
      ...(opts.cluster !== undefined ? { cluster: opts.cluster } : {}),
      ...(opts.events !== undefined ? { events: opts.events } : {}),
    });
    opts.cluster?.attach({
      gateway: this.gateway,
      inject: (fn) => {
        if (this.stopped) return;
        const now = clock();
        this.nowMs = now;
        fn(this.emit, now);
        this.flush(now);
      },
    });
    this.failed = new Promise((r) => (this.onFail = r));
    const vnetHdr = opts.vnetHdr;
    for (const [point, spec] of Object.entries(opts.impair ?? {}) as Array<[ImpairPoint, FaultSpec | undefined]>) {
      if (spec === undefined) continue;
      const inj = new FaultInjector(spec, { vnetHdr, salt: IMPAIR_SALT[point] });
      const side = point.endsWith('a') ? 0 : 1;
      (point.startsWith('out') ? this.faultOut : this.faultIn)[side] = inj;
      this.injectors.push(inj);
    }
  }

  /**
   * Opens both TAPs (and the capture files), then starts forwarding. Throws the addon's
   * TapError (code TAP_PERM, TAP_BUSY, ...) with nothing left open when a TAP cannot be opened.
   */
  static async start(opts: LiveOptions): Promise<LiveGateway> {
    const g = new LiveGateway(opts);
    try {
      for (const name of opts.taps) g.devs.push(TapDevice.open(name, { vnetHdr: opts.vnetHdr }));
      if (opts.pcapDir !== undefined) {
        mkdirSync(opts.pcapDir, { recursive: true });
        for (const n of ['a', 'b']) {
          const path = join(opts.pcapDir, `${n}.pcap`);
          const stream = createWriteStream(path);
          const writer = PcapWriter.fromStream(stream, { link: 'ethernet', precision: 'nano', snaplen: 262144 });
          g.caps.push({ writer, stream, path });
        }
      }
    } catch (e) {
      for (const d of g.devs) d.close();
      for (const c of g.caps) c.stream.destroy();
      throw e;
    }
    if (opts.warmup !== false) {
      // Frames arriving meanwhile wait in the TAP queues (a tenth of a second).
      const w = warmUp({ config: opts.config, vnetHdr: opts.vnetHdr, log: opts.log });
      opts.log.info({ frames: w.frames, ms: Math.round(w.ms) }, 'JIT warm-up done');
    }
    g.devs.forEach((d, i) => {
      const side = i as Side;
      d.on('error', (err) => g.fail(err));
      d.onFrames((b) => g.onBatch(side, b));
    });
    const tickMs = opts.tickMs ?? 10;
    g.timer = setInterval(() => g.onTick(), tickMs);
    return g;
  }

  get taps(): readonly TapDevice[] {
    return this.devs;
  }

  private fail(err: TapError): void {
    if (this.failure !== undefined) return;
    this.failure = err;
    this.opts.log.error({ code: err.code, err: err.message }, 'TAP failed; stopping');
    this.onFail(err);
  }

  private readonly emit = (frame: Uint8Array, to: Side): void => {
    this.pending[to].push(frame);
  };

  /**
   * A batch from TAP `side`, then the answers it provoked: a TAP write runs the receiving side's
   * stack inside write(2), so what the frames just written made the other side send (a ping's
   * echo reply, a SYN-ACK, an ACK) is often queued on that TAP already. It is read at once
   * (`readNow`) and handled in this same call — no epoll round trip and no second entry into JS,
   * which on an idle machine cost more than the frame itself. Each chained read follows a write
   * to that TAP; a read that finds nothing ends the chain (the event loop reports later
   * arrivals); at most CHAIN_MAX batches, so timers and the other TAP get their turn.
   */
  private onBatch(side: Side, b: FrameBatch): void {
    if (this.stopped) return;
    let s = side;
    let batch = b;
    for (let i = 1; ; i++) {
      const now = clock();
      this.handleBatch(s, batch, now);
      this.flush(now);
      const next = (1 - s) as Side;
      if (this.written[next] === 0 || i >= CHAIN_MAX || this.stopped) return;
      const dev = this.devs[next]!;
      if (dev.readNow() === 0) return;
      this.chained++;
      s = next;
      batch = dev.batch;
    }
  }

  private handleBatch(side: Side, b: FrameBatch, now: number): void {
    this.nowMs = now;
    const gw = this.gateway;
    const buf = b.buf;
    const cap = this.caps.length > 0;
    const fin = this.faultIn[side];
    // Frames already due leave before this batch's (an injector never lets a frame overtake one due).
    if (fin !== undefined) fin.poll(now, this.deliverFrom[side]);
    for (let i = 0; i < b.count; i++) {
      const off = b.offset(i);
      // A plain Uint8Array view, not a Buffer: the engine copies with slice() (see Gateway).
      const frame = new Uint8Array(buf.buffer, buf.byteOffset + off, b.length(i));
      if (cap) this.record(side, frame, now);
      if (fin !== undefined) fin.push(frame, now, this.deliverFrom[side]);
      else gw.handleFrame(frame, side, now, this.emit);
    }
  }

  private onTick(): void {
    if (this.stopped) return;
    const now = clock();
    this.pollIn(now);
    this.gateway.tick(now, this.emit);
    this.flush(now);
  }

  /** An injector's due time came (armed by `armFaultTimer`). */
  private onFaultTimer(): void {
    this.faultTimer = undefined;
    this.faultTimerDueMs = Infinity;
    if (this.stopped) return;
    const now = clock();
    this.pollIn(now);
    this.flush(now);
  }

  private pollIn(now: number): void {
    this.nowMs = now;
    for (const side of [0, 1] as const) this.faultIn[side]?.poll(now, this.deliverFrom[side]);
  }

  /**
   * Writes what the gateway emitted, through the out-injectors when there are any. `final`
   * (stop) releases everything the out-injectors still hold.
   */
  private flush(now: number, final = false): void {
    this.written[0] = this.flushTo(0, now, final);
    this.written[1] = this.flushTo(1, now, final);
    if (!final && this.injectors.length > 0) this.armFaultTimer(now);
  }

  /** Writes what waits for TAP `to`; returns how many frames the kernel took. */
  private flushTo(to: Side, now: number, final: boolean): number {
    let q = this.pending[to];
    const fo = this.faultOut[to];
    if (fo !== undefined) {
      const sink = this.releaseTo[to];
      fo.poll(now, sink);
      for (const f of q) fo.push(f, now, sink);
      q.length = 0;
      if (final) fo.flush(sink);
      q = this.released[to];
    }
    if (q.length === 0) return 0;
    if (this.caps.length > 0) for (const f of q) this.record(to, f, now);
    const n = this.devs[to]!.writeBatch(q);
    q.length = 0;
    return n;
  }

  /** Arms one timer for the earliest due time of any injector (none when nothing waits). */
  private armFaultTimer(now: number): void {
    let due = Infinity;
    for (const inj of this.injectors) {
      const d = inj.nextDueMs();
      if (d !== undefined && d < due) due = d;
    }
    if (due === Infinity || due >= this.faultTimerDueMs) return;
    if (this.faultTimer !== undefined) clearTimeout(this.faultTimer);
    this.faultTimerDueMs = due;
    this.faultTimer = setTimeout(() => this.onFaultTimer(), Math.max(0, due - now));
  }

  private record(side: Side, frame: Uint8Array, nowMs: number): void {
    const c = this.caps[side]!;
    if (c.stream.writableLength > (this.opts.pcapMaxQueued ?? 64 << 20)) {
      this.pcapDropped++;
      return;
    }
    const vh = this.opts.vnetHdr ? 10 : 0;
    const tsNs = this.epochNs + BigInt(Math.round(nowMs * 1e6));
    // encodePcapRecord copies synchronously: the TAP's buffer may be reused afterwards.
    c.writer.write({ data: frame.subarray(vh), tsNs }).catch((e: Error) => {
      this.pcapDropped++;
      this.opts.log.warn({ file: c.path, err: e.message }, 'capture write failed');
    });
  }

  stats(): LiveStats {
    const taps: Record<string, TapCounters> = {};
    for (const d of this.devs) taps[d.name] = d.stats();
    const out: LiveStats = {
      uptimeS: Math.round((clock() - this.startedMs) / 10) / 100,
      vnetHdr: this.opts.vnetHdr,
      taps,
      chainedBatches: this.chained,
      ...this.gateway.stats(),
    };
    const impair: Partial<Record<ImpairPoint, ImpairStats>> = {};
    for (const side of [0, 1] as const) {
      const name = this.opts.taps[side];
      const ab = side === 0 ? 'a' : 'b';
      const o = this.faultOut[side];
      const i = this.faultIn[side];
      if (o !== undefined) impair[`out-${ab}`] = { tap: name, ...o.stats() };
      if (i !== undefined) impair[`in-${ab}`] = { tap: name, ...i.stats() };
    }
    if (Object.keys(impair).length > 0) out.impair = impair;
    if (this.caps.length > 0) {
      out.pcap = {
        files: this.caps.map((c) => c.path),
        records: this.caps.reduce((a, c) => a + c.writer.records, 0),
        dropped: this.pcapDropped,
      };
    }
    return out;
  }

  /** One line for a terminal: rates since the previous call. */
  private last = { t: 0, rx: 0, tx: 0 };
  statusLine(): string {
    const now = clock();
    let rx = 0;
    let tx = 0;
    let drops = 0;
    for (const d of this.devs) {
      const s = d.stats();
      rx += s.rxBytes;
      tx += s.txBytes;
      drops += s.txDrops;
    }
    const dt = (now - (this.last.t || this.startedMs)) / 1000;
    const mbit = (b: number): string => ((b * 8) / 1e6 / Math.max(dt, 1e-3)).toFixed(1);
    const s = this.gateway.stats();
    const malformed = Object.values(s.gateway.malformed).reduce((a, b) => a + b, 0);
    const line =
      `up ${((now - this.startedMs) / 1000).toFixed(0)}s  in ${mbit(rx - this.last.rx)} Mbit/s  out ${mbit(tx - this.last.tx)} Mbit/s  ` +
      `frames ${s.gateway.framesIn}/${s.gateway.framesOut}  flows ${s.flows.active}  rewritten ${s.gateway.connectionsRewritten}  ` +
      `rebuilt ${s.gateway.rebuilt}  gso ${s.gateway.gsoIn}/${s.gateway.gsoOut}  malformed ${malformed}  txDrops ${drops}` +
      this.impairLine();
    this.last = { t: now, rx, tx };
    return line;
  }

  /** Impairment totals over all points, for the status line ('' without impairment). */
  private impairLine(): string {
    const injs = this.injectors;
    if (injs.length === 0) return '';
    const t = { lost: 0, dup: 0, reord: 0, corrupt: 0, dropped: 0 };
    for (const x of injs) {
      const c = x.counters;
      t.lost += c.lost;
      t.dup += c.duplicated;
      t.reord += c.reordered;
      t.corrupt += c.corrupted;
      t.dropped += c.queueFull + c.rateDropped;
    }
    return `  impair lost ${t.lost} dup ${t.dup} reord ${t.reord} corrupt ${t.corrupt} qdrop ${t.dropped}`;
  }

  /**
   * Stops reading, flushes what the gateway still holds (hold timeouts fire early, so held bytes
   * are delivered rather than lost), closes the TAPs and the captures. Idempotent; returns the
   * final statistics.
   */
  async stop(): Promise<LiveStats> {
    if (!this.stopped) {
      if (this.timer !== undefined) clearInterval(this.timer);
      if (this.faultTimer !== undefined) clearTimeout(this.faultTimer);
      for (const d of this.devs) d.pause();
      const now = clock();
      if (this.failure === undefined) {
        this.nowMs = now;
        for (const side of [0, 1] as const) this.faultIn[side]?.flush(this.deliverFrom[side]);
        this.gateway.tick(now + this.gateway.holdTimeoutMs + 1, this.emit);
        this.flush(now, true);
      }
      this.gateway.flushEvents(now);
      this.stopped = true;
    }
    const st = this.stats();
    for (const d of this.devs) d.close();
    await Promise.all(this.caps.map((c) => c.writer.close().catch(() => {})));
    return st;
  }
}
