/**
 * The `http` agent (docs/ARCHITECTURE.md §3, issue 16): one per connection, both directions. It parses
 * HTTP/1.0 and 1.1 (RFC 9112) on the ordered streams — requests c2s, responses s2c, paired
 * through a queue so that responses to HEAD and CONNECT, 1xx, 204 and 304 are framed right —,
 * normalises what request smuggling feeds on (RFC 9112 §6.3, §11.2), applies the configured
 * header and body rewrites, and keeps every message well framed after them (./plan.ts says how,
 * per message). After CONNECT 2xx or 101 both directions are a tunnel, passed unparsed.
 *
 * State is plain data (./stream.ts per direction, the shared request queue, counters):
 * `snapshot` returns JSON, `restore` rebuilds it, `resync` continues after a gap where it can.
 */

import type { Agent, AgentContext, AgentFactory, AgentOutput, Direction, FlushReason } from '../types.js';
import { NO_EDITS } from '../types.js';
import { resolveHttpConfig, type HttpConfig, type ResolvedHttpConfig } from './config.js';
import { copyCounters, newHttpCounters, Tally, type HttpCounters } from './counters.js';
import type { ReqInfo } from './plan.js';
import { HttpStream, type Phase, type Shared, type StreamJson } from './stream.js';

/** The state `snapshot` returns (version 1). */
export interface HttpSnapshot {
  v: 1;
  shared: Shared;
  dirs: Record<Direction, StreamJson>;
  counters: HttpCounters;
}

export class HttpAgent implements Agent {
  readonly name = 'http';
  readonly counters: HttpCounters;
  private readonly shared: Shared;
  private readonly streams: Record<Direction, HttpStream>;
  /** The agent edits both directions or none (a rule limited to one: pass-through, see below). */
  private readonly on: boolean;

  constructor(cfg: ResolvedHttpConfig, ctx: AgentContext, snap?: HttpSnapshot, total?: HttpCounters) {
    this.counters = snap !== undefined ? copyCounters(snap.counters) : newHttpCounters();
    this.shared =
      snap !== undefined
        ? {
            ...snap.shared,
            // A snapshot of a version without them.
            expectWaiting: snap.shared.expectWaiting === true,
            c2sDrop: snap.shared.c2sDrop === true,
            queue: snap.shared.queue.map((q) => ({ ...q, expect: q.expect ?? 'no' })),
          }
        : { queue: [], server11: false, awaitResult: null, s2cParsing: true, expectWaiting: false, c2sDrop: false };
    const env = { cfg, count: new Tally(this.counters, total), shared: this.shared, event: ctx.event, log: ctx.log, flowId: ctx.flowId };
    const c2s = new HttpStream('c2s', env, snap?.dirs.c2s);
    try {
      this.streams = { c2s, s2c: new HttpStream('s2c', env, snap?.dirs.s2c) };
    } catch (e) {
      c2s.dispose(); // a bad snapshot: what the first direction took is given back
      throw e;
    }
    // Pairing needs both directions and normalising a request needs editing it: the config
    // refuses `direction:` on an http rule; a context without both makes a pass-through agent.
    this.on = ctx.directions.has('c2s') && ctx.directions.has('s2c');
  }

  feed(dir: Direction, pos: number, data: Uint8Array): AgentOutput {
    if (!this.on) return NO_EDITS;
    return this.streams[dir].feed(pos, data);
  }

  flush(dir: Direction, reason: FlushReason): AgentOutput {
    if (!this.on) return NO_EDITS;
    return this.streams[dir].flush(reason);
  }

  resync(dir: Direction, pos: number): void {
    if (this.on) this.streams[dir].resync(pos);
  }

  rewrites(): number {
    return this.counters.bodyMatches;
  }

  dispose(): void {
    this.streams.c2s.dispose();
    this.streams.s2c.dispose();
  }

  /** Where each direction's parser is (for tests and status). */
  phase(dir: Direction): Phase {
    return this.streams[dir].phase;
  }

  /** Requests awaiting a response. */
  get pending(): readonly ReqInfo[] {
    return this.shared.queue;
  }

  snapshot(): HttpSnapshot {
    return {
      v: 1,
      shared: { ...this.shared, queue: this.shared.queue.map((q) => ({ ...q })) },
      dirs: { c2s: this.streams.c2s.toJSON(), s2c: this.streams.s2c.toJSON() },
      counters: copyCounters(this.counters),
    };
  }
}

const PHASES: ReadonlySet<string> = new Set(['start', 'head', 'body', 'chunkLine', 'chunkData', 'chunkCrlf', 'trailers', 'close', 'await', 'tunnel', 'refused', 'drop']);

function checkSnapshot(s: unknown): HttpSnapshot {
  const bad = (why: string): never => {
    throw new Error(`http: bad snapshot (${why})`);
  };
  const o = s as Partial<HttpSnapshot> | null;
  if (typeof o !== 'object' || o === null || o.v !== 1) return bad('expected { v: 1, shared, dirs, counters }');
  const sh = o.shared;
  if (typeof sh !== 'object' || sh === null || !Array.isArray(sh.queue) || typeof sh.server11 !== 'boolean' || typeof sh.s2cParsing !== 'boolean') return bad('shared');
  if (!(sh.awaitResult === null || sh.awaitResult === 'tunnel' || sh.awaitResult === 'http')) return bad('shared.awaitResult');
  if (![sh.expectWaiting, sh.c2sDrop].every((v) => v === undefined || typeof v === 'boolean')) return bad('shared: expect');
  for (const q of sh.queue as unknown[]) {
    const r = q as Partial<ReqInfo> | null;
    if (typeof r !== 'object' || r === null || typeof r.method !== 'string' || typeof r.v11 !== 'boolean' || typeof r.close !== 'boolean') return bad('queue');
    if (r.expect !== undefined && r.expect !== 'no' && r.expect !== 'yes' && r.expect !== 'abandoned') return bad('queue: expect');
  }
  if (typeof o.dirs !== 'object' || o.dirs === null) return bad('dirs');
  for (const d of ['c2s', 's2c'] as const) {
    const x = o.dirs[d] as Partial<StreamJson> | undefined;
    if (typeof x !== 'object' || x === null) return bad(`${d}: not an object`);
    const nums = [x.pos, x.und, x.blockStart, x.released, x.blkLine, x.end];
    if (!nums.every((v) => Number.isSafeInteger(v) && (v as number) >= 0)) return bad(`${d}: positions`);
    if ((x.und as number) > (x.pos as number)) return bad(`${d}: undecided after the end`);
    if (typeof x.phase !== 'string' || !PHASES.has(x.phase)) return bad(`${d}: phase`);
    if (typeof x.block !== 'string' || typeof x.line !== 'string' || typeof x.cr !== 'boolean') return bad(`${d}: buffers`);
    if (!(x.msg === null || typeof x.msg === 'object') || !(x.rw === null || typeof x.rw === 'object')) return bad(`${d}: message`);
    const cd = x.coded;
    if (cd !== undefined && (typeof cd !== 'object' || cd === null || ![cd.consumed, cd.produced].every((v) => Number.isSafeInteger(v) && v >= 0))) return bad(`${d}: coded`);
  }
  if (typeof o.counters !== 'object' || o.counters === null) return bad('counters');
  return o as HttpSnapshot;
}

/**
 * An http factory whose agents also add to `total` (the registry makes one per gateway:
 * `stats().agents.http`); a restored agent resumes its own counts and adds only new ones there.
 */
export function createHttp(total?: HttpCounters): AgentFactory<HttpConfig | undefined> {
  return {
    name: 'http',
    create(cfg, ctx) {
      return new HttpAgent(resolveHttpConfig(cfg), ctx, undefined, total);
    },
    restore(cfg, ctx, state) {
      return new HttpAgent(resolveHttpConfig(cfg), ctx, checkSnapshot(state), total);
    },
  };
}

/** Without gateway-wide counters. */
export const httpFactory: AgentFactory<HttpConfig | undefined> = createHttp();
