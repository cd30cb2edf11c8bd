/**
 * A rate limiter for log lines about hostile or malformed input: at most `maxPerInterval` lines
 * per key per `intervalMs`, then silence, then one "suppressed K" summary line for the key when
 * its interval is over (on the next line for that key, or on `flush`). A flood of bad frames
 * must cost a counter increment, never a log line per frame (the log itself would become the
 * denial of service).
 *
 * Time is injected (`nowMs`), like everywhere else in the engine: replaying a capture gives the
 * same lines every time. Keys are the caller's stable reason codes, never bytes taken from the
 * input, so their number is bounded; `maxKeys` bounds it anyway (new keys beyond it are counted
 * as suppressed under a shared overflow key).
 */

/** Where lines go: a pino-style call, object first. */
export type RateLogSink = (obj: Record<string, unknown>, msg: string) => void;

export interface RateLogOptions {
  /** Lines per key per interval (default 5). */
  maxPerInterval?: number;
  /** Interval length (default 10 s). */
  intervalMs?: number;
  /** Distinct keys tracked (default 256). */
  maxKeys?: number;
}

interface KeyState {
  windowStartMs: number;
  lines: number;
  suppressed: number;
}

/** The key under which lines for keys beyond `maxKeys` are counted. */
export const RATELOG_OVERFLOW_KEY = '(other)';

export class RateLog {
  private readonly keys = new Map<string, KeyState>();
  private readonly max: number;
  private readonly intervalMs: number;
  private readonly maxKeys: number;
  /** Lines written (summaries included) and lines suppressed, over the whole run. */
  readonly counters = { lines: 0, suppressed: 0 };

  constructor(
    private readonly sink: RateLogSink | null,
    opts: RateLogOptions = {},
  ) {
    this.max = opts.maxPerInterval ?? 5;
    this.intervalMs = opts.intervalMs ?? 10_000;
    this.maxKeys = opts.maxKeys ?? 256;
  }

  /**
   * One event for `key` at `nowMs`: writes `msg` with `obj` (plus the key) unless the key's
   * budget for the current interval is spent. Returns whether the line was written.
   */
  log(key: string, nowMs: number, obj: Record<string, unknown>, msg: string): boolean {
    let s = this.keys.get(key);
    if (s === undefined) {
      if (this.keys.size >= this.maxKeys) {
        if (key !== RATELOG_OVERFLOW_KEY) return this.log(RATELOG_OVERFLOW_KEY, nowMs, { ...obj, originalKey: key }, msg);
      }
      s = { windowStartMs: nowMs, lines: 0, suppressed: 0 };
      this.keys.set(key, s);
    } else if (nowMs - s.windowStartMs >= this.intervalMs || nowMs < s.windowStartMs) {
      // A new interval (or the clock went back: start over rather than stay silent).
      this.summarize(key, s, nowMs);
      s.windowStartMs = nowMs;
      s.lines = 0;
    }
    if (s.lines >= this.max) {
      s.suppressed++;
      this.counters.suppressed++;
      return false;
    }
    s.lines++;
    this.write({ key, ...obj }, msg);
    return true;
  }

  /** Writes the summaries of intervals that are over (call from a periodic timer). */
  flush(nowMs: number): void {
    for (const [key, s] of this.keys) {
      if (nowMs - s.windowStartMs < this.intervalMs && nowMs >= s.windowStartMs) continue;
      this.summarize(key, s, nowMs);
      // Quiet keys are forgotten: the map holds only keys active in the last interval.
      this.keys.delete(key);
    }
  }

  private summarize(key: string, s: KeyState, nowMs: number): void {
    if (s.suppressed === 0) return;
    this.write({ key, suppressed: s.suppressed, intervalMs: nowMs - s.windowStartMs }, `suppressed ${s.suppressed} similar log lines`);
    s.suppressed = 0;
  }

  private write(obj: Record<string, unknown>, msg: string): void {
    this.counters.lines++;
    this.sink?.(obj, msg);
  }
}
