/**
 * A fault injector (docs/ARCHITECTURE.md §1 `phy/`; what each item does: the README's
 * "Impairment"): loss, duplication, corruption, reordering, delay with jitter and a rate limit,
 * because this kernel has no `netem` qdisc. Modelled on smoltcp's `phy::FaultInjector`: a stage
 * between a frame source and a frame sink that knows nothing about TCP.
 *
 *   push ─▶ loss ─▶ duplication ─▶ corruption ─▶ reorder hold ─▶ delay line ─▶ rate queue ─▶ out
 *
 * Invariants:
 * - Nothing is lost silently: every queue is bounded (`limit` frames, `qbytes` bytes) and at every
 *   moment in + duplicated = out + lost + queueFull + rateDropped + (frames pending).
 * - Corruption is always detectable by the receiver's checksum (one byte changed where a checksum
 *   covers it, after completing a partial checksum); what no checksum would catch, or a GSO
 *   super-frame, is passed intact (`corruptSkipped`). Reordering never loses a frame.
 * - Time is injected (`push(frame, nowMs, out)`, `poll(nowMs, out)`, `nextDueMs()`), randomness
 *   is one seeded mulberry32 stream: the same frames at the same times give the same result.
 * - A frame handed to `push` may be a reused view: anything kept past the call is copied, and a
 *   frame is copied before it is corrupted, so the caller's bytes are never modified; `out` may
 *   modify what it is given (a duplicate is copied before its twin is handed out).
 */
import { copyBytes } from '../util/bytes.js';
import { mulberry32 } from '../util/prng.js';
import {
  completePartialChecksum,
  VIRTIO_NET_HDR_F_DATA_VALID,
  VIRTIO_NET_HDR_F_NEEDS_CSUM,
  VIRTIO_NET_HDR_GSO_ECN,
  VIRTIO_NET_HDR_GSO_NONE,
  VIRTIO_NET_HDR_LEN,
  VirtioNetHdr,
} from '../wire/virtio.js';

/** A parsed, validated impairment. Probabilities are fractions in [0, 1]. */
export interface FaultSpec {
  /** Probability that a frame is dropped. */
  loss: number;
  /** Probability that a frame is held back (reordered behind later ones). */
  reorder: number;
  /** A held frame is released after this many later frames passed (when `reorderMs` is undefined). */
  reorderFrames: number;
  /** A held frame is released after this many ms instead of a frame count. */
  reorderMs: number | undefined;
  /** A frame held by count is released after this many ms at the latest. */
  holdMs: number;
  /** Probability that a frame is sent twice. */
  dup: number;
  /** Mean delay (ms) and the half-width of its uniform jitter (ms). */
  delayMs: number;
  jitterMs: number;
  /** Rate limit in bits/s; 0 = none. */
  rateBps: number;
  /** Token bucket depth in bytes (only with a rate). */
  burstBytes: number;
  /** Probability that one byte of a frame is changed. */
  corrupt: number;
  /** Most frames in each queue (hold, delay line, rate queue). */
  limit: number;
  /** Most bytes in each queue. */
  qbytes: number;
  seed: number;
}

export const DEFAULT_FAULT_SPEC: FaultSpec = {
  loss: 0,
  reorder: 0,
  reorderFrames: 1,
  reorderMs: undefined,
  holdMs: 10,
  dup: 0,
  delayMs: 0,
  jitterMs: 0,
  rateBps: 0,
  burstBytes: 0, // 0 = derived from the rate, see burstOf()
  corrupt: 0,
  limit: 1000,
  qbytes: 16 << 20,
  seed: 1,
};

/** A spec string that cannot be used; the message names the item and what is wrong with it. */
export class FaultSpecError extends Error {
  constructor(
    readonly spec: string,
    readonly detail: string,
  ) {
    super(`bad impairment spec ${JSON.stringify(spec)}: ${detail}`);
    this.name = 'FaultSpecError';
  }
}

const KEYS = ['loss', 'reorder', 'dup', 'delay', 'jitter', 'rate', 'burst', 'corrupt', 'limit', 'qbytes', 'hold', 'seed'] as const;
type Key = (typeof KEYS)[number];

const NUM = String.raw`(\d+(?:\.\d+)?|\.\d+)`;
const PERCENT_RE = new RegExp(`^${NUM}%$`);
const FRACTION_RE = new RegExp(`^${NUM}$`);
const TIME_RE = new RegExp(`^${NUM}(us|ms|s)$`);
const RATE_RE = new RegExp(`^${NUM}(bit|kbit|mbit|gbit|bps|kbps|mbps|gbps)$`, 'i');
const SIZE_RE = new RegExp(`^${NUM}(b|k|kb|kib|m|mb|mib)?$`, 'i');
const INT_RE = /^\d+$/;
/** Longest time a spec may give (delay, jitter, hold, reorder by time). */
const MAX_TIME_MS = 3_600_000;
/** Largest size a spec may give (burst, qbytes). */
const MAX_SIZE = 1 << 30;

const RATE_UNIT: Record<string, number> = {
  bit: 1, kbit: 1e3, mbit: 1e6, gbit: 1e9,
  // As in tc(8): "bps" is BYTES per second.
  bps: 8, kbps: 8e3, mbps: 8e6, gbps: 8e9,
};
const SIZE_UNIT: Record<string, number> = { b: 1, k: 1024, kb: 1024, kib: 1024, m: 1 << 20, mb: 1 << 20, mib: 1 << 20 };
const TIME_UNIT: Record<string, number> = { us: 1e-3, ms: 1, s: 1e3 };

/**
 * Parses `key=value[,key=value...]`, e.g.
 * `"loss=2%,reorder=10%,dup=1%,delay=2ms,jitter=1ms,rate=100mbit,corrupt=0.1%,seed=7"`.
 *
 * | key     | value                                  | meaning                                     |
 * |---------|----------------------------------------|---------------------------------------------|
 * | loss    | P                                      | drop a frame with probability P             |
 * | reorder | P, P:N or P:T                          | hold a frame back with probability P, until N later frames passed (default 1) or for time T |
 * | hold    | T (default 10ms)                       | longest hold of a frame held by count (P:N) |
 * | dup     | P                                      | send a frame twice with probability P       |
 * | delay   | T                                      | delay every frame by T                      |
 * | jitter  | T                                      | ± uniform jitter on the delay (FIFO kept)   |
 * | rate    | R                                      | token bucket rate limit                     |
 * | burst   | S (default max(64k, 5 ms of rate))     | token bucket depth (needs rate)             |
 * | corrupt | P                                      | change one byte with probability P          |
 * | limit   | N (default 1000)                       | frames per queue (hold, delay line, rate)   |
 * | qbytes  | S (default 16m)                        | bytes per queue                             |
 * | seed    | N (default 1), 0 ≤ N < 2^32            | PRNG seed                                   |
 *
 * P: a percentage (`2%`, `0.1%`) or a fraction in [0, 1] (`0.02`). T: a number with a unit
 * (`us`, `ms`, `s`): a bare number is refused, since tc reads it as µs and people mean ms. R: a
 * number with `bit`, `kbit`, `mbit`, `gbit` (bits/s, powers of 1000) or `bps`, `kbps`, `mbps`,
 * `gbps` (BYTES/s, as tc(8)), case-insensitive. S: bytes, or with `k`/`kb`/`kib` (1024) or
 * `m`/`mb`/`mib` (2^20). N: a decimal integer. Keys may come in any order, each at most once;
 * whitespace around items is ignored. Throws FaultSpecError.
 */
export function parseFaultSpec(text: string): FaultSpec {
  const bad = (detail: string): never => {
    throw new FaultSpecError(text, detail);
  };
  const spec: FaultSpec = { ...DEFAULT_FAULT_SPEC };
  if (text.trim() === '') bad('empty: give key=value items separated by commas, e.g. loss=1%,delay=2ms');
  const seen = new Set<Key>();
  let burstSet = false;
  let holdSet = false;
  for (const raw of text.split(',')) {
    const item = raw.trim();
    if (item === '') bad('empty item (two commas in a row, or a trailing comma?)');
    const eq = item.indexOf('=');
    if (eq < 0) bad(`"${item}" is not key=value`);
    const key = item.slice(0, eq).trim().toLowerCase();
    const value = item.slice(eq + 1).trim();
    if (!(KEYS as readonly string[]).includes(key)) {
      const near = KEYS.find((k) => editDistance(k, key) <= 2);
      bad(`unknown key "${key}"${near !== undefined ? ` (did you mean ${near}?)` : ''}; known keys: ${KEYS.join(', ')}`);
    }
    const k = key as Key;
    if (seen.has(k)) bad(`${k} is given twice`);
    seen.add(k);
    if (value === '') bad(`${k} has no value`);
    const what = `${k}=${value}`;
    switch (k) {
      case 'loss':
      case 'dup':
      case 'corrupt':
        spec[k] = probability(value, what, bad);
        break;
      case 'reorder': {
        const colon = value.indexOf(':');
        spec.reorder = probability(colon < 0 ? value : value.slice(0, colon), what, bad);
        if (colon >= 0) {
          const by = value.slice(colon + 1).trim();
          if (INT_RE.test(by)) {
            const n = Number(by);
            if (n < 1 || n > 1000) bad(`${what}: hold a frame back by 1 to 1000 frames (got ${n})`);
            spec.reorderFrames = n;
          } else if (TIME_RE.test(by)) {
            const t = time(by, what, bad);
            if (t <= 0) bad(`${what}: the hold time must be more than 0`);
            spec.reorderMs = t;
          } else {
            bad(`${what}: after ':' give a frame count (reorder=10%:3) or a time (reorder=10%:5ms)`);
          }
        }
        break;
      }
      case 'delay':
        spec.delayMs = time(value, what, bad);
        break;
      case 'jitter':
        spec.jitterMs = time(value, what, bad);
        break;
      case 'hold':
        spec.holdMs = time(value, what, bad);
        if (spec.holdMs <= 0) bad(`${what}: the hold time must be more than 0`);
        holdSet = true;
        break;
      case 'rate': {
        const m = RATE_RE.exec(value);
        if (m === null) {
          bad(
            FRACTION_RE.test(value)
              ? `${what}: give a unit, e.g. rate=${value}mbit (bit, kbit, mbit, gbit = bits/s; bps, kbps, mbps, gbps = bytes/s)`
              : `${what}: expected a rate such as 100mbit, 1gbit or 500kbit`,
          );
        }
        spec.rateBps = Number(m![1]) * RATE_UNIT[m![2]!.toLowerCase()]!;
        if (!(spec.rateBps >= 1000)) bad(`${what}: at least 1kbit (leave rate out for no limit)`);
        if (!(spec.rateBps <= 1e12)) bad(`${what}: at most 1000gbit (leave rate out for no limit)`);
        break;
      }
      case 'burst':
        spec.burstBytes = size(value, what, bad);
        if (spec.burstBytes < 1) bad(`${what}: at least 1 byte`);
        burstSet = true;
        break;
      case 'qbytes':
        spec.qbytes = size(value, what, bad);
        if (spec.qbytes < 2048) bad(`${what}: at least 2k (a queue must hold a full frame)`);
        break;
      case 'limit': {
        if (!INT_RE.test(value)) bad(`${what}: expected a whole number of frames`);
        spec.limit = Number(value);
        if (spec.limit < 1 || spec.limit > 1_000_000) bad(`${what}: between 1 and 1000000 frames`);
        break;
      }
      case 'seed': {
        if (!INT_RE.test(value)) bad(`${what}: expected a whole number 0 to 4294967295`);
        const n = Number(value);
        if (n > 0xffffffff) bad(`${what}: expected a whole number 0 to 4294967295`);
        spec.seed = n;
        break;
      }
    }
  }
  if (burstSet && spec.rateBps === 0) bad('burst needs rate (burst is the depth of the rate limiter)');
  if (holdSet && spec.reorder === 0) bad('hold needs reorder (it caps how long a reordered frame waits)');
  if (holdSet && spec.reorderMs !== undefined) bad('hold only applies to reorder by a frame count (reorder=P:N), not by time');
  return spec;
}

function probability(v: string, what: string, bad: (d: string) => never): number {
  const pm = PERCENT_RE.exec(v.trim());
  if (pm !== null) {
    const p = Number(pm[1]) / 100;
    if (p > 1) bad(`${what}: a percentage above 100%`);
    return p;
  }
  if (FRACTION_RE.test(v.trim())) {
    const p = Number(v);
    if (p > 1) bad(`${what}: ${v} is not a probability; write ${v}% for ${v} percent, or a fraction in [0, 1] such as 0.02`);
    return p;
  }
  return bad(`${what}: expected a percentage (2%) or a fraction in [0, 1] (0.02)`);
}

function time(v: string, what: string, bad: (d: string) => never): number {
  const m = TIME_RE.exec(v);
  if (m === null) {
    return bad(
      FRACTION_RE.test(v)
        ? `${what}: give a unit: ${v}ms, ${v}us or ${v}s`
        : `${what}: expected a time such as 2ms, 500us or 1s`,
    );
  }
  const t = Number(m[1]) * TIME_UNIT[m[2]!]!;
  // A frame held longer than this is as good as lost, and a timer cannot wait past 2^31 ms.
  if (!(t <= MAX_TIME_MS)) return bad(`${what}: at most 1h`);
  return t;
}

function size(v: string, what: string, bad: (d: string) => never): number {
  const m = SIZE_RE.exec(v);
  if (m === null) return bad(`${what}: expected a size such as 65536, 64k or 16m`);
  const n = Math.round(Number(m[1]) * SIZE_UNIT[(m[2] ?? 'b').toLowerCase()]!);
  if (!(n <= MAX_SIZE)) return bad(`${what}: at most 1024m`);
  return n;
}

function editDistance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...new Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0]![j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      d[i]![j] = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
  }
  return d[a.length]![b.length]!;
}

/** The canonical spec string (defaults left out), for logs and statistics. */
export function formatFaultSpec(s: FaultSpec): string {
  const pct = (p: number): string => `${+(p * 100).toPrecision(6)}%`;
  const ms = (t: number): string => `${+t.toPrecision(6)}ms`;
  const out: string[] = [];
  if (s.loss > 0) out.push(`loss=${pct(s.loss)}`);
  if (s.reorder > 0) {
    out.push(`reorder=${pct(s.reorder)}:${s.reorderMs !== undefined ? ms(s.reorderMs) : s.reorderFrames}`);
    if (s.reorderMs === undefined && s.holdMs !== DEFAULT_FAULT_SPEC.holdMs) out.push(`hold=${ms(s.holdMs)}`);
  }
  if (s.dup > 0) out.push(`dup=${pct(s.dup)}`);
  if (s.delayMs > 0) out.push(`delay=${ms(s.delayMs)}`);
  if (s.jitterMs > 0) out.push(`jitter=${ms(s.jitterMs)}`);
  if (s.rateBps > 0) out.push(`rate=${s.rateBps}bit`);
  if (s.burstBytes > 0) out.push(`burst=${s.burstBytes}`);
  if (s.corrupt > 0) out.push(`corrupt=${pct(s.corrupt)}`);
  if (s.limit !== DEFAULT_FAULT_SPEC.limit) out.push(`limit=${s.limit}`);
  if (s.qbytes !== DEFAULT_FAULT_SPEC.qbytes) out.push(`qbytes=${s.qbytes}`);
  out.push(`seed=${s.seed}`);
  return out.join(',');
}

export function newFaultCounters() {
  return {
    /** Frames pushed in. */
    in: 0,
    /** Frames handed to `out`. */
    out: 0,
    /** Dropped by the loss probability. */
    lost: 0,
    /** Extra copies made. */
    duplicated: 0,
    /** Frames with one byte changed. */
    corrupted: 0,
    /** Corruption drawn for a GSO super-frame, which cannot be corrupted faithfully: sent intact. */
    corruptSkipped: 0,
    /** Frames held back to be reordered. */
    reordered: 0,
    /** Frames that should have been held but the hold was full: passed on in order. */
    holdFull: 0,
    /** Frames that went through the delay line. */
    delayed: 0,
    /** Frames dropped because the delay line was full. */
    queueFull: 0,
    /** Frames that waited in the rate queue. */
    rateWaited: 0,
    /** Frames dropped because the rate queue was full. */
    rateDropped: 0,
  };
}

export type FaultCounters = ReturnType<typeof newFaultCounters>;

/** What sits in the queues right now (gauges, not counters). */
export interface FaultPending {
  held: number;
  delay: number;
  rate: number;
  bytes: number;
}

export interface FaultOptions {
  /** Frames start with a 10-byte virtio_net_hdr (TAP opened with IFF_VNET_HDR). */
  vnetHdr?: boolean;
  /** XORed into the seed, so injectors made from one spec draw different numbers. */
  salt?: number;
}

export type FrameSink = (frame: Uint8Array) => void;

interface Held {
  frame: Uint8Array;
  /** Frames still to pass before release (count mode); Infinity in time mode. */
  left: number;
  dueMs: number;
}

interface Timed {
  frame: Uint8Array;
  dueMs: number;
}

/** A FIFO with amortised O(1) shift. */
class Fifo<T> {
  private a: (T | undefined)[] = [];
  private h = 0;
  get length(): number {
    return this.a.length - this.h;
  }
  push(x: T): void {
    this.a.push(x);
  }
  peek(): T | undefined {
    return this.a[this.h];
  }
  shift(): T | undefined {
    if (this.h >= this.a.length) return undefined;
    const x = this.a[this.h];
    this.a[this.h++] = undefined;
    if (this.h === this.a.length) {
      this.a = [];
      this.h = 0;
    } else if (this.h >= 1024 && this.h * 2 >= this.a.length) {
      this.a = this.a.slice(this.h);
      this.h = 0;
    }
    return x;
  }
}

export class FaultInjector {
  readonly counters = newFaultCounters();
  readonly spec: FaultSpec;
  private readonly rnd: () => number;
  private readonly vh: number;
  private readonly held: Held[] = [];
  private heldBytes = 0;
  private readonly line = new Fifo<Timed>();
  private lineBytes = 0;
  private lastDueMs = -Infinity;
  private readonly rq = new Fifo<Uint8Array>();
  private rqBytes = 0;
  /** Token bucket in bits; may go negative by one frame (debt). */
  private tokens: number;
  private readonly burstBits: number;
  private lastRefillMs: number | undefined;
  private nowMs = -Infinity;

  constructor(spec: FaultSpec, opts: FaultOptions = {}) {
    this.spec = { ...spec };
    this.rnd = mulberry32((spec.seed ^ (opts.salt ?? 0)) >>> 0);
    this.vh = opts.vnetHdr === true ? VIRTIO_NET_HDR_LEN : 0;
    this.burstBits = burstOf(spec) * 8;
    this.tokens = this.burstBits;
  }

  /** Frames waiting in the queues. */
  get pending(): FaultPending {
    return { held: this.held.length, delay: this.line.length, rate: this.rq.length, bytes: this.heldBytes + this.lineBytes + this.rqBytes };
  }

  /** Counters and gauges, for statistics. */
  stats(): FaultCounters & { spec: string; pending: FaultPending } {
    return { spec: formatFaultSpec(this.spec), ...this.counters, pending: this.pending };
  }

  /**
   * One frame in. Frames that leave now go to `out` before this returns; the rest wait for
   * `poll` (see `nextDueMs`).
   */
  push(frame: Uint8Array, nowMs: number, out: FrameSink): void {
    this.advance(nowMs);
    const s = this.spec;
    const c = this.counters;
    c.in++;
    // Release what is due first: a frame pushed now must not overtake one already due.
    this.release(out);
    if (s.loss > 0 && this.rnd() < s.loss) {
      c.lost++;
      return;
    }
    const copies = s.dup > 0 && this.rnd() < s.dup ? 2 : 1;
    // The receiver of the first copy may rewrite it in place (the gateway patches headers of the
    // frames it forwards): the second copy is taken from the bytes as they came in, before that.
    let second: Uint8Array | undefined;
    if (copies === 2) {
      c.duplicated++;
      second = copyBytes(frame);
    }
    for (let i = 0; i < copies; i++) {
      let f = i === 0 ? frame : second!;
      let owned = i > 0;
      if (s.corrupt > 0 && this.rnd() < s.corrupt) {
        const g = this.corrupt(f);
        if (g !== undefined) {
          f = g;
          owned = true;
        }
      }
      this.reorderStage(f, owned, out);
    }
  }

  /** Releases whatever is due at `nowMs`. */
  poll(nowMs: number, out: FrameSink): void {
    this.advance(nowMs);
    this.release(out);
  }

  /**
   * When `poll` should next be called for a frame to leave on time; undefined when nothing
   * waits. May be in the past (then poll now).
   */
  nextDueMs(): number | undefined {
    let due = Infinity;
    for (const h of this.held) if (h.dueMs < due) due = h.dueMs;
    const l = this.line.peek();
    if (l !== undefined && l.dueMs < due) due = l.dueMs;
    if (this.rq.length > 0) {
      const ready = this.tokens >= -TOKEN_EPS ? this.nowMs : (this.lastRefillMs ?? this.nowMs) + (-this.tokens / this.spec.rateBps) * 1000;
      if (ready < due) due = ready;
    }
    return due === Infinity ? undefined : due;
  }

  /**
   * Sends everything still waiting, in the order it would have left, ignoring delays and the
   * rate (shutdown). Counters stay consistent: every pending frame becomes `out`.
   */
  flush(out: FrameSink): void {
    // Furthest down the pipeline first: the rate queue, the delay line, then held frames.
    for (let f = this.rq.shift(); f !== undefined; f = this.rq.shift()) {
      this.rqBytes -= f.length;
      this.send(f, out);
    }
    for (let t = this.line.shift(); t !== undefined; t = this.line.shift()) {
      this.lineBytes -= t.frame.length;
      this.send(t.frame, out);
    }
    for (let h = this.held.shift(); h !== undefined; h = this.held.shift()) {
      this.heldBytes -= h.frame.length;
      this.send(h.frame, out);
    }
  }

  private advance(nowMs: number): void {
    // Time never goes backwards here, whatever the caller's clock does.
    if (nowMs > this.nowMs) this.nowMs = nowMs;
    if (this.spec.rateBps > 0) {
      if (this.lastRefillMs === undefined) this.lastRefillMs = this.nowMs;
      const dt = this.nowMs - this.lastRefillMs;
      if (dt > 0) {
        this.tokens = Math.min(this.burstBits, this.tokens + (dt * this.spec.rateBps) / 1000);
        this.lastRefillMs = this.nowMs;
      }
    }
  }

  private release(out: FrameSink): void {
    const now = this.nowMs;
    for (let i = 0; i < this.held.length; ) {
      const h = this.held[i]!;
      if (h.dueMs <= now) {
        this.held.splice(i, 1);
        this.heldBytes -= h.frame.length;
        this.delayStage(h.frame, true, out);
      } else i++;
    }
    for (let t = this.line.peek(); t !== undefined && t.dueMs <= now; t = this.line.peek()) {
      this.line.shift();
      this.lineBytes -= t.frame.length;
      this.rateStage(t.frame, true, out);
    }
    this.drainRate(out);
  }

  private reorderStage(f: Uint8Array, owned: boolean, out: FrameSink): void {
    const s = this.spec;
    if (s.reorder > 0 && this.rnd() < s.reorder) {
      if (this.held.length < s.limit && this.heldBytes + f.length <= s.qbytes) {
        const timed = s.reorderMs !== undefined;
        this.held.push({
          frame: owned ? f : copyBytes(f),
          left: timed ? Infinity : s.reorderFrames,
          dueMs: this.nowMs + (timed ? s.reorderMs! : s.holdMs),
        });
        this.heldBytes += f.length;
        this.counters.reordered++;
        return;
      }
      this.counters.holdFull++;
    }
    this.delayStage(f, owned, out);
    // This frame passed: held frames it overtook count down; those at zero follow it.
    for (let i = 0; i < this.held.length; ) {
      const h = this.held[i]!;
      if (--h.left <= 0) {
        this.held.splice(i, 1);
        this.heldBytes -= h.frame.length;
        this.delayStage(h.frame, true, out);
      } else i++;
    }
  }

  private delayStage(f: Uint8Array, owned: boolean, out: FrameSink): void {
    const s = this.spec;
    if (s.delayMs <= 0 && s.jitterMs <= 0) {
      this.rateStage(f, owned, out);
      return;
    }
    if (this.line.length >= s.limit || this.lineBytes + f.length > s.qbytes) {
      this.counters.queueFull++;
      return;
    }
    const j = s.jitterMs > 0 ? (this.rnd() * 2 - 1) * s.jitterMs : 0;
    const due = Math.max(this.nowMs + Math.max(0, s.delayMs + j), this.lastDueMs);
    this.lastDueMs = due;
    this.line.push({ frame: owned ? f : copyBytes(f), dueMs: due });
    this.lineBytes += f.length;
    this.counters.delayed++;
  }

  private rateStage(f: Uint8Array, owned: boolean, out: FrameSink): void {
    const s = this.spec;
    if (s.rateBps <= 0) {
      this.send(f, out);
      return;
    }
    if (this.rq.length === 0 && this.tokens >= -TOKEN_EPS) {
      this.tokens -= this.wireBits(f);
      this.send(f, out);
      return;
    }
    if (this.rq.length >= s.limit || this.rqBytes + f.length > s.qbytes) {
      this.counters.rateDropped++;
      return;
    }
    this.rq.push(owned ? f : copyBytes(f));
    this.rqBytes += f.length;
    this.counters.rateWaited++;
  }

  private drainRate(out: FrameSink): void {
    while (this.rq.length > 0 && this.tokens >= -TOKEN_EPS) {
      const f = this.rq.shift()!;
      this.rqBytes -= f.length;
      this.tokens -= this.wireBits(f);
      this.send(f, out);
    }
  }

  private send(f: Uint8Array, out: FrameSink): void {
    this.counters.out++;
    out(f);
  }

  /** Bits the frame occupies on the wire: no virtio header; a GSO frame as its segments. */
  private wireBits(f: Uint8Array): number {
    const vh = this.vh;
    let bytes = f.length - vh;
    if (vh > 0 && f[1] !== VIRTIO_NET_HDR_GSO_NONE) {
      const h = VirtioNetHdr.parse(f);
      if (h instanceof VirtioNetHdr && h.gsoSize > 0 && h.hdrLen > 0 && h.hdrLen < bytes) {
        const segs = Math.ceil((bytes - h.hdrLen) / h.gsoSize);
        bytes += (segs - 1) * h.hdrLen;
      }
    }
    return bytes * 8;
  }

  /**
   * A corrupted copy of `f`, or undefined when it cannot be corrupted faithfully (GSO frame,
   * nothing after the Ethernet header). See the file comment.
   */
  private corrupt(f: Uint8Array): Uint8Array | undefined {
    const vh = this.vh;
    const l3 = vh + 14;
    let from = l3;
    let end = l3;
    if (f.length >= l3 + 20 && f[vh + 12] === 0x08 && f[vh + 13] === 0x00) {
      // IPv4: only the IP packet (its total length excludes Ethernet padding).
      const ipTotal = (f[l3 + 2]! << 8) | f[l3 + 3]!;
      if (ipTotal >= 20) end = Math.min(f.length, l3 + ipTotal);
    } else if (f.length >= l3 + 48 && f[vh + 12] === 0x86 && f[vh + 13] === 0xdd && CHECKSUMMED_V6.has(f[l3 + 6]!)) {
      // IPv6 has no header checksum: only what the upper layer's checksum covers, the
      // addresses (its pseudo-header) and the TCP/UDP/ICMPv6 message right after the fixed header.
      from = l3 + 8;
      end = Math.min(f.length, l3 + 40 + ((f[l3 + 4]! << 8) | f[l3 + 5]!));
    }
    if (end <= from) {
      this.counters.corruptSkipped++;
      return undefined;
    }
    let g: Uint8Array;
    if (vh > 0) {
      const h = VirtioNetHdr.parse(f);
      if (!(h instanceof VirtioNetHdr) || (h.gsoType & ~VIRTIO_NET_HDR_GSO_ECN) !== VIRTIO_NET_HDR_GSO_NONE) {
        this.counters.corruptSkipped++;
        return undefined;
      }
      g = copyBytes(f);
      if (h.needsCsum) {
        const body = g.subarray(vh);
        if (h.csumStart + h.csumOffset + 2 > body.length) {
          this.counters.corruptSkipped++;
          return undefined;
        }
        completePartialChecksum(body.subarray(0, end - vh), h.csumStart, h.csumOffset);
      }
      // Neither NEEDS_CSUM nor DATA_VALID: the receiver must verify every checksum.
      g[0] = h.flags & ~(VIRTIO_NET_HDR_F_NEEDS_CSUM | VIRTIO_NET_HDR_F_DATA_VALID);
    } else {
      g = copyBytes(f);
    }
    const at = from + Math.floor(this.rnd() * (end - from));
    g[at] = g[at]! ^ (1 + Math.floor(this.rnd() * 255));
    this.counters.corrupted++;
    return g;
  }
}

/** IPv6 Next Header values whose checksum covers the pseudo-header (TCP, UDP, ICMPv6). */
const CHECKSUMMED_V6 = new Set([6, 17, 58]);

/** Rounding slack of the token bucket (bits): a poll at the computed due time must send. */
const TOKEN_EPS = 1e-6;

/** Token bucket depth: the spec's, else max(64 KiB, 5 ms at the rate). */
function burstOf(s: FaultSpec): number {
  if (s.rateBps <= 0) return 0;
  if (s.burstBytes > 0) return s.burstBytes;
  return Math.max(65536, Math.round((s.rateBps / 8) * 0.005));
}
