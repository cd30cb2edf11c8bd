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
 * The two sides are ports (phy/port.ts): the TAP, wrapped by middleware when asked for —
 *
 *   TAP ─ CapturePort (`pcapDir`: DIR/a.pcap, DIR/b.pcap; phy/capture-port.ts)
 *       ─ FaultPort (`impair`: in-x / out-x injectors; phy/fault-port.ts) ─ this loop
 *
 * so a capture records frames as they cross the TAP (read frames before `in-x`, written frames
 * after `out-x`): a.pcap is the a-side's view of each connection and b.pcap the b-side's, as
 * tcpdump on each TAP would show them. Impairment (the kernel here has no netem) may sit at four
 * points, each with its own spec and seed stream:
 *
 *   TAP a ─read─▶ [in-a] ─▶ Gateway ─▶ [out-b] ─write─▶ TAP b
 *   TAP a ◀write─ [out-a] ◀─ Gateway ◀─ [in-b] ◀─read─ TAP b
 *
 * `out-x` impairs the frames the gateway writes to TAP x (what the x-side endpoint receives);
 * `in-x` the frames read from TAP x before the gateway sees them (so the gateway itself meets
 * loss, reordering and duplicates: its delayed/drained/retransmission paths). Ports are polled on
 * every batch and tick and, while one holds frames, on a timer armed for its next due time. On
 * stop, everything they still hold is released at once.
 *
 * Time is read here (the one place that owns a clock) and injected into the gateway and the
 * injectors.
 */
import { availableParallelism } from 'node:os';
import { createWriteStream, type WriteStream } from 'node:fs';
import { makeDirs } from '../util/dirs.js';
import { RateLog } from '../util/ratelog.js';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { Config } from '../config/index.js';
import { warmUp } from './warmup.js';
import { CapturePort } from '../phy/capture-port.js';
import type { FaultCounters, FaultPending, FaultSpec } from '../phy/fault.js';
import { FaultPort } from '../phy/fault-port.js';
import { TapPort, type Port } from '../phy/port.js';
import { TapDevice, type TapCounters, type TapError } from '../phy/tap.js';
import type { EventSink } from './events.js';
import { Gateway, type ClusterHooks, type Side } from './gateway.js';
import { clock } from '../util/clock.js';
import { transientRecycle } from '../util/bytes.js';

/** Lets a cluster node write frames outside a TAP batch (released gated output, replays). */
export interface ClusterAttach extends ClusterHooks {
  /**
   * Asked when a batch's `frames` queued frames are about to be written (not as each is queued:
   * a stall in between must not carry one past the lease): false = this node is fenced (its lease
   * ran out), none is written (the node counts them).
   */
  mayWrite(frames: number): boolean;
  attach(io: { gateway: Gateway; inject: (fn: (emit: (frame: Uint8Array, to: Side) => void, nowMs: number) => void) => void }): void;
}

export interface LiveOptions {
  /** Run as a node of a cluster (src/cluster/node.ts). */
  cluster?: ClusterAttach | undefined;
  /** TAP a (side 0) and TAP b (side 1); both must exist in this network namespace. */
  taps: readonly [string, string];
  /**
   * Called once both TAPs are attached, before the warm-up (awaited): `run --queues` attaches its
   * processes one after the other, so that each holds the same queue number on both TAPs.
   */
  onAttached?: () => Promise<void> | void;
  config: Config | null;
  /** Open both TAPs with IFF_VNET_HDR + offloads (TAP GSO). */
  vnetHdr: boolean;
  /** Attach one more queue of each (multi-queue) TAP: one of `tapgate run --queues N`'s processes. */
  multiQueue?: boolean;
  /**
   * Write large batches from the TAP addon's transmit thread (phy/tap.ts `txThread`). Default:
   * on a machine with two CPUs or more, when not one of several queue processes (those each
   * have a core's worth already: a thread more each made `--queues 2` slower).
   */
  txThread?: boolean;
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

/** Most batches one TAP callback handles back to back (see LiveGateway.onBatch). */
const CHAIN_MAX = 16;
/** A tick later than this after the one before means the loop stalled (ticks come every ~10 ms). */
const STALL_MS = 100;
/** A stall from which on the TAP queues may have overflowed: senders' retransmission timers backed off. */
const OUTAGE_MS = 500;
/** How often the TAPs' kernel queue drops are read (a sysfs file each). */
const DROP_CHECK_MS = 100;
/** Most batches per TAP a late tick reads before it runs the timers (a TAP queue's worth). */
const CATCH_UP_MAX = 256;

export class LiveGateway {
  readonly gateway: Gateway;
  private readonly devs: TapDevice[] = [];
  /** The two sides as the loop sees them: each TAP, wrapped by capture and impairment when asked. */
  private readonly ports: Port[] = [];
  private readonly caps: CapturePort[] = [];
  private readonly faults: (FaultPort | undefined)[] = [undefined, undefined];
  private readonly pending: [Uint8Array[], Uint8Array[]] = [[], []];
  private timer: NodeJS.Timeout | undefined;
  private readonly startedMs = clock();
  /** clock() origin in Unix-epoch ns, for capture timestamps (0 with today's clock). */
  private readonly epochNs = BigInt(Date.now()) * 1_000_000n - BigInt(Math.round(clock() * 1e6));
  /** Frames the last flush wrote to TAP a / b. */
  private readonly written: [number, number] = [0, 0];
  /** Batches read right after a write to their TAP and handled in the same call (onBatch). */
  private chained = 0;
  private get tickMs(): number {
    return this.opts.tickMs ?? 10;
  }
  /** When the last tick ran; ticks later than STALL_MS after it are counted and catch up first. */
  private lastTickMs = clock();
  private stalls = 0;
  /** Frames those late ticks read before running the timers. */
  private caughtUp = 0;
  /** The TAPs' kernel queue drops as last read (checkInputDrops), and how often they grew. */
  private lastDropCheckMs = clock();
  private readonly dropsSeen = [0, 0];
  private dropGraces = 0;
  private portTimer: NodeJS.Timeout | undefined;
  private portTimerDueMs = Infinity;
  /** Some port may hold frames back (impairment): then the loop keeps a timer for them. */
  private holding = false;
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
      batched: true,
      sided: true,
      log: opts.log.child({ mod: 'gateway' }),
      ...(opts.cluster !== undefined ? { cluster: opts.cluster } : {}),
      ...(opts.events !== undefined ? { events: opts.events } : {}),
    });
    opts.cluster?.attach({
      gateway: this.gateway,
      inject: (fn) => {
        if (this.stopped) return;
        const now = clock();
        fn(this.emit, now);
        this.flush(now);
      },
    });
    this.failed = new Promise((r) => (this.onFail = r));
  }

  /**
   * Opens both TAPs (and the capture files), then starts forwarding. Throws the addon's
   * TapError (code TAP_PERM, TAP_BUSY, ...) with nothing left open when a TAP cannot be opened.
   */
  static async start(opts: LiveOptions): Promise<LiveGateway> {
    const g = new LiveGateway(opts);
    const streams: WriteStream[] = [];
    try {
      const txThread = opts.txThread ?? (opts.multiQueue !== true && availableParallelism() >= 2);
      for (const name of opts.taps) g.devs.push(TapDevice.open(name, { vnetHdr: opts.vnetHdr, multiQueue: opts.multiQueue === true, txThread }));
      if (opts.pcapDir !== undefined) makeDirs(opts.pcapDir);
      const captureLog = new RateLog((o, m) => opts.log.warn(o, m));
      g.devs.forEach((d, i) => {
        const ab = i === 0 ? 'a' : 'b';
        let port: Port = new TapPort(d);
        if (opts.pcapDir !== undefined) {
          const path = join(opts.pcapDir, `${ab}.pcap`);
          const stream = createWriteStream(path);
          streams.push(stream);
          const cap = new CapturePort(port, {
            path,
            stream,
            vnetHdrLen: g.gateway.vnetHeaderLength,
            maxQueued: opts.pcapMaxQueued ?? 64 << 20,
            epochNs: g.epochNs,
            // A full disk fails every frame's write: at most a few lines per 10 s, then a count.
            onError: (file, e) => captureLog.log(`capture:${file}`, performance.now(), { file, err: e.message }, 'capture write failed (frames not captured)'),
          });
          g.caps.push(cap);
          port = cap;
        }
        const inSpec = opts.impair?.[`in-${ab}`];
        const outSpec = opts.impair?.[`out-${ab}`];
        if (inSpec !== undefined || outSpec !== undefined) {
          const f = FaultPort.wrap(port, { in: inSpec, out: outSpec }, { vnetHdr: opts.vnetHdr, saltIn: IMPAIR_SALT[`in-${ab}`], saltOut: IMPAIR_SALT[`out-${ab}`] });
          g.faults[i] = f;
          g.holding = true;
          port = f;
        }
        g.ports.push(port);
      });
    } catch (e) {
      for (const d of g.devs) d.close();
      for (const s of streams) s.destroy();
      throw e;
    }
    await opts.onAttached?.();
    if (opts.warmup !== false) {
      // Frames arriving meanwhile wait in the TAP queues (0.2–1 s; README, the warm-up).
      const w = warmUp({ config: opts.config, vnetHdr: opts.vnetHdr, log: opts.log });
      opts.log.info({ frames: w.frames, ms: Math.round(w.ms) }, 'JIT warm-up done');
    }
    g.ports.forEach((p, i) => {
      const side = i as Side;
      g.devs[i]!.on('error', (err) => g.fail(err));
      const gw = g.gateway;
      p.listen((frame, now) => gw.handleFrame(frame, side, now, g.emit), (now) => g.onBatch(side, now), clock);
    });
    g.timer = setInterval(() => g.onTick(), g.tickMs);
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
   * After a batch from port `side` was handled: write what it provoked, then the answers: a TAP
   * write runs the receiving side's stack inside write(2), so what the frames just written made
   * the other side send (a ping's echo reply, a SYN-ACK, an ACK) is often queued on that TAP
   * already. It is read at once (`readNow`) and handled in this same call — no epoll round trip
   * and no second entry into JS, which on an idle machine cost more than the frame itself. Each
   * chained read follows a write to that TAP; a read that finds nothing ends the chain (the
   * event loop reports later arrivals); at most CHAIN_MAX batches, so timers and the other TAP
   * get their turn.
   */
  private onBatch(side: Side, now: number): void {
    if (this.stopped) return;
    this.flush(now);
    let s = side;
    for (let i = 1; i < CHAIN_MAX; i++) {
      const next = (1 - s) as Side;
      if (this.written[next] === 0 || this.stopped) return;
      const t = clock();
      if (this.ports[next]!.readNow(t) === 0) return;
      this.chained++;
      this.flush(t);
      s = next;
    }
  }

  private onTick(): void {
    if (this.stopped) return;
    let now = clock();
    const late = now - this.lastTickMs;
    if (late > STALL_MS) {
      // This process ran late (not scheduled, a long GC, a long batch). Held bytes do not count
      // the time after the tick was due (Gateway.outage); after a long stall, what the full TAP
      // queues dropped meanwhile the senders resend after a timer that backed off about as long,
      // so twice it. Then the frames that wait in the TAPs are read before the timers judge
      // silence (libuv runs timers before I/O); a direction that gets one restarts its timer.
      this.stalls++;
      const lost = late - this.tickMs;
      this.gateway.outage(lost >= OUTAGE_MS ? 2 * lost : lost, now);
      now = this.catchUp(now);
    }
    this.lastTickMs = now;
    this.checkInputDrops(now);
    this.pollIn(now);
    this.gateway.tick(now, this.emit);
    this.flush(now);
  }

  /**
   * Frames the kernel dropped at a full TAP queue never reached the gateway: their senders resend
   * them after a retransmission timer that may back off for seconds, a silence that is not the
   * sender's. Held bytes then get what a cluster takeover grants (Gateway.outage, capped there).
   */
  private checkInputDrops(now: number): void {
    if (now - this.lastDropCheckMs < DROP_CHECK_MS) return;
    this.lastDropCheckMs = now;
    let grew = false;
    this.devs.forEach((d, i) => {
      const n = d.queueDrops();
      if (n === undefined) return;
      if (n > this.dropsSeen[i]!) grew = true;
      this.dropsSeen[i] = n;
    });
    if (!grew) return;
    this.dropGraces++;
    this.gateway.outage(Infinity, now);
  }

  /** Reads both TAPs until they are empty (at most CATCH_UP_MAX batches each); the time after. */
  private catchUp(now: number): number {
    for (let i = 0; i < CATCH_UP_MAX && !this.stopped; i++) {
      let n = 0;
      for (const p of this.ports) {
        const t = clock();
        const got = p.readNow(t);
        if (got > 0) {
          this.caughtUp += got;
          this.flush(t);
        }
        n += got;
      }
      if (n === 0) break;
    }
    return Math.max(now, clock());
  }

  /** A port's due time came (armed by `armPortTimer`). */
  private onPortTimer(): void {
    this.portTimer = undefined;
    this.portTimerDueMs = Infinity;
    if (this.stopped) return;
    const now = clock();
    this.pollIn(now);
    this.flush(now);
  }

  private pollIn(now: number): void {
    if (this.holding) for (const p of this.ports) p.poll(now);
  }

  /** Writes what the gateway emitted; `final` (stop) releases everything the ports still hold. */
  private flush(now: number, final = false): void {
    this.gateway.endBatch();
    const cl = this.opts.cluster;
    const queued = this.pending[0].length + this.pending[1].length;
    if (cl !== undefined && queued > 0 && !cl.mayWrite(queued)) {
      // Fenced: another node may own their connections by now.
      this.pending[0].length = 0;
      this.pending[1].length = 0;
    }
    for (let to: Side = 0; to < 2; to++) {
      const q = this.pending[to];
      this.written[to] = q.length === 0 && !this.holding ? 0 : this.ports[to]!.write(q, now, final);
      q.length = 0;
    }
    // Every frame built for the batch is written (or copied by a port that keeps it): the
    // transient slabs they were cut from are free again (util/bytes.ts).
    transientRecycle();
    if (!final && this.holding) this.armPortTimer(now);
  }

  /** Arms one timer for the earliest due time of any port (none when nothing waits). */
  private armPortTimer(now: number): void {
    let due = Infinity;
    for (const p of this.ports) {
      const d = p.nextDueMs();
      if (d !== undefined && d < due) due = d;
    }
    if (due === Infinity || due >= this.portTimerDueMs) return;
    if (this.portTimer !== undefined) clearTimeout(this.portTimer);
    this.portTimerDueMs = due;
    this.portTimer = setTimeout(() => this.onPortTimer(), Math.max(0, due - now));
  }

  stats(): LiveStats {
    const taps: Record<string, TapCounters> = {};
    for (const d of this.devs) taps[d.name] = d.stats();
    const out: LiveStats = {
      uptimeS: Math.round((clock() - this.startedMs) / 10) / 100,
      vnetHdr: this.opts.vnetHdr,
      taps,
      chainedBatches: this.chained,
      loop: { lateTicks: this.stalls, framesReadBeforeTimers: this.caughtUp, holdGraceAfterDrops: this.dropGraces },
      ...this.gateway.stats(),
    };
    const impair: Partial<Record<ImpairPoint, ImpairStats>> = {};
    for (const side of [0, 1] as const) {
      const name = this.opts.taps[side];
      const ab = side === 0 ? 'a' : 'b';
      const o = this.faults[side]?.outInjector;
      const i = this.faults[side]?.inInjector;
      if (o !== undefined) impair[`out-${ab}`] = { tap: name, ...o.stats() };
      if (i !== undefined) impair[`in-${ab}`] = { tap: name, ...i.stats() };
    }
    if (Object.keys(impair).length > 0) out.impair = impair;
    if (this.caps.length > 0) {
      out.pcap = {
        files: this.caps.map((c) => c.path),
        records: this.caps.reduce((a, c) => a + c.writer.records, 0),
        dropped: this.caps.reduce((a, c) => a + c.dropped, 0),
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
    const injs = this.faults.flatMap((f) => [f?.inInjector, f?.outInjector]).filter((x) => x !== undefined);
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
      if (this.portTimer !== undefined) clearTimeout(this.portTimer);
      for (const p of this.ports) p.pause();
      const now = clock();
      if (this.failure === undefined) {
        for (const p of this.ports) p.drain(now);
        this.gateway.tick(now + this.gateway.holdTimeoutMs + 1, this.emit);
        this.flush(now, true);
      }
      this.gateway.flushEvents(now);
      this.stopped = true;
    }
    const st = this.stats();
    await Promise.all(this.ports.map((p) => p.close()));
    // A port not built yet (start failed half-way) leaves its TAP to close here.
    for (const d of this.devs) if (!d.closed) d.close();
    // The TAPs' counts once closed: what the transmit threads still held when the last flush
    // handed it over was written at close (the kernel's queue drops, from sysfs, as before).
    for (const d of this.devs) st.taps[d.name] = { ...st.taps[d.name], ...d.stats() };
    return st;
  }
}
