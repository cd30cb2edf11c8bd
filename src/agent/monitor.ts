/**
 * The `monitor` agent (docs/ARCHITECTURE.md §3): never edits, only looks. It counts what each direction
 * carries and, optionally, hands every chunk to a sink given when the factory is made. The sink
 * is a runtime handle (a recorder, a pcap-like writer, a test probe): it lives in the factory,
 * not in the agent's state, so a snapshot is plain counts (docs/ARCHITECTURE.md §7 convention 5) and a restored agent
 * gets the sink of the factory that restores it.
 *
 * Only the directions in `ctx.directions` are recorded (a rule with `direction: c2s` monitors
 * c2s only). Segments pass unchanged: every answer is NO_EDITS.
 */

import type { Agent, AgentContext, AgentFactory, AgentOutput, Direction, FlushReason } from './types.js';
import { NO_EDITS } from './types.js';

/**
 * Receives every chunk, in stream order, each byte once. `data` belongs to the caller and may be
 * reused after the call returns: copy what you keep.
 */
export type MonitorSink = (dir: Direction, pos: number, data: Uint8Array, ctx: AgentContext) => void;

/** The monitor has no options; the rule only names it. */
export type MonitorConfig = undefined | Record<string, never>;

export interface MonitorDirStats {
  /** Bytes seen (= the next stream position). */
  bytes: number;
  /** `feed` calls with data. */
  chunks: number;
  /** Flushes asked by the engine, by reason. */
  flushes: Record<FlushReason, number>;
}

/** The state `snapshot` returns (version 1). */
export interface MonitorSnapshot {
  v: 1;
  dirs: Record<Direction, MonitorDirStats>;
}

function freshStats(): MonitorDirStats {
  return { bytes: 0, chunks: 0, flushes: { fin: 0, rst: 0, timeout: 0, limit: 0, answer: 0 } };
}

export class MonitorAgent implements Agent {
  readonly name = 'monitor';
  private readonly st: Record<Direction, MonitorDirStats>;

  constructor(
    private readonly ctx: AgentContext,
    private readonly sink: MonitorSink | undefined,
    st?: Record<Direction, MonitorDirStats>,
  ) {
    this.st = st ?? { c2s: freshStats(), s2c: freshStats() };
  }

  feed(dir: Direction, pos: number, data: Uint8Array): AgentOutput {
    if (!this.ctx.directions.has(dir)) return NO_EDITS;
    const s = this.st[dir];
    if (pos !== s.bytes) throw new Error(`monitor: ${dir} fed at ${pos}, expected ${s.bytes} (engine bug)`);
    if (data.length === 0) return NO_EDITS;
    s.bytes += data.length;
    s.chunks++;
    this.sink?.(dir, pos, data, this.ctx);
    return NO_EDITS;
  }

  flush(dir: Direction, reason: FlushReason): AgentOutput {
    if (this.ctx.directions.has(dir)) this.st[dir].flushes[reason]++;
    return NO_EDITS;
  }

  /** Counts so far (a copy). */
  stats(dir: Direction): MonitorDirStats {
    return structuredClone(this.st[dir]);
  }

  /** Cluster takeover after a gap (types.ts): the bytes before `pos` were not seen here. */
  resync(dir: Direction, pos: number): void {
    this.st[dir].bytes = pos;
  }

  snapshot(): MonitorSnapshot {
    return structuredClone({ v: 1, dirs: this.st });
  }
}

function restoreStats(x: unknown, dir: Direction): MonitorDirStats {
  const o = x as Partial<MonitorDirStats> | null;
  const ok =
    typeof o === 'object' && o !== null &&
    Number.isSafeInteger(o.bytes) && Number.isSafeInteger(o.chunks) &&
    typeof o.flushes === 'object' && o.flushes !== null &&
    (['fin', 'rst', 'timeout', 'limit'] as const).every((k) => Number.isSafeInteger(o.flushes![k]));
  if (!ok) throw new Error(`monitor: bad snapshot (${dir})`);
  const s = structuredClone(o as MonitorDirStats);
  s.flushes.answer ??= 0; // a snapshot of a version without it
  return s;
}

/** A monitor factory whose agents hand every chunk to `sink` (if given). */
export function createMonitor(sink?: MonitorSink): AgentFactory<MonitorConfig> {
  return {
    name: 'monitor',
    create(_cfg: MonitorConfig, ctx: AgentContext): Agent {
      return new MonitorAgent(ctx, sink);
    },
    restore(_cfg: MonitorConfig, ctx: AgentContext, state: unknown): Agent {
      const s = state as Partial<MonitorSnapshot> | null;
      if (typeof s !== 'object' || s === null || s.v !== 1 || typeof s.dirs !== 'object' || s.dirs === null) {
        throw new Error('monitor: bad snapshot (expected { v: 1, dirs })');
      }
      return new MonitorAgent(ctx, sink, { c2s: restoreStats(s.dirs.c2s, 'c2s'), s2c: restoreStats(s.dirs.s2c, 's2c') });
    },
  };
}

/** The monitor without a sink: counts only. */
export const monitorFactory: AgentFactory<MonitorConfig> = createMonitor();
