/**
 * `tapgate run --queues N` (issue 18): N gateway processes, process k attaching queue k of both
 * (multi-queue) TAPs. The kernel gives every flow one queue by its symmetric hash, and a flow a
 * process wrote on a queue comes back on that queue (tun.c: tun_automq_select_queue and
 * tun_flow_update), so both directions of a connection, and the segments the gateway originates
 * for it, meet in one process: connections are partitioned as cluster ownership partitions them,
 * and nothing per connection is shared. Each process is a whole `tapgate run` (its own event
 * loop, heap and GC) started with the hidden `--queue-of K/N`; this one supervises them: it
 * forwards SIGHUP (reload), serves the summed statistics (metrics, SIGUSR1, the status line and
 * the final JSON), and stops them on SIGINT/SIGTERM. One process failing stops all (exit 2).
 *
 * --pcap and --events: each process writes its own files (queuePaths). Not with --queues > 1
 * (refused before anything starts): NAT (its port allocation and expectations are one table), a
 * cluster node.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { statSync } from 'node:fs';
import { extname, join } from 'node:path';
import type { Server } from 'node:http';
import type { Logger } from 'pino';
import { GatewayMetrics, serveMetrics } from '../engine/metrics.js';

/** What a queue process says over IPC (run.ts, `--queue-of`). */
export type QueueMessage =
  | { type: 'attached' }
  | { type: 'ready' }
  | { type: 'stats'; stats: Record<string, unknown>; seq: number }
  | { type: 'reloaded'; result: Record<string, unknown> }
  | { type: 'final'; stats: Record<string, unknown> };

/**
 * Where queue k of `run --queues` writes what one process would write to one place: captures in
 * DIR/queue<k>/ (a.pcap, b.pcap), events in FILE with `.queue<k>` before its extension
 * (ev.jsonl → ev.queue0.jsonl). A connection stays on one queue, so each of its frames and its
 * events are in one queue's files.
 */
export function queuePaths(k: number, pcap: string | undefined, events: string | undefined): { pcap: string | undefined; events: string | undefined } {
  const ext = events === undefined ? '' : extname(events);
  return {
    pcap: pcap === undefined ? undefined : join(pcap, `queue${k}`),
    events: events === undefined ? undefined : `${events.slice(0, events.length - ext.length)}.queue${k}${ext}`,
  };
}

/**
 * Why `--events FILE` cannot be split per queue (undefined = it can): FILE names something other
 * than a regular file (/dev/stdout, a FIFO), so FILE.queue<k> would not go where it does.
 */
export function queueEventsProblem(events: string): string | undefined {
  const st = statSync(events, { throwIfNoEntry: false });
  if (st === undefined || st.isFile()) return undefined;
  return `--events ${events} with --queues: not a regular file (each queue process writes its own file, ${queuePaths(0, undefined, events).events}, …)`;
}

/** How long SIGUSR1 waits for the queue processes' statistics before it prints what it has. */
const FRESH_WAIT_MS = 2000;

/** How long the supervisor waits for its queue processes to stop before it kills them. */
const STOP_GRACE_MS = 10_000;

/** Keys whose value is the largest of the queues', not their sum. */
const MAX_KEYS: ReadonlySet<string> = new Set(['uptimeS']);
/** Subtrees taken from queue 0 as they are (the same config in every process). */
const FIRST_KEYS: ReadonlySet<string> = new Set(['config']);

/**
 * The statistics of all queues as one: numbers summed (levels too: flows active, bytes queued),
 * `uptimeS` the largest, the `config` block and every non-number from queue 0; objects merged
 * key by key (a key only some queues have keeps what they have).
 */
export function mergeStats(all: readonly Record<string, unknown>[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const st of all) {
    for (const [k, v] of Object.entries(st)) {
      const cur = out[k];
      if (cur === undefined) out[k] = typeof v === 'object' && v !== null && !Array.isArray(v) ? mergeStats([v as Record<string, unknown>]) : v;
      else if (FIRST_KEYS.has(k)) continue;
      else if (typeof v === 'number' && typeof cur === 'number') out[k] = MAX_KEYS.has(k) ? Math.max(cur, v) : cur + v;
      else if (typeof v === 'object' && v !== null && !Array.isArray(v) && typeof cur === 'object' && cur !== null && !Array.isArray(cur)) {
        out[k] = mergeStats([cur as Record<string, unknown>, v as Record<string, unknown>]);
      }
    }
  }
  return out;
}

export interface QueuesOptions {
  queues: number;
  /** The process's own arguments after `run` (each queue process gets them plus --queue-of). */
  argv: readonly string[];
  /** --metrics, parsed. */
  listen: { host: string; port: number } | undefined;
  metricsText: string | undefined;
  status: boolean;
  log: Logger;
  /**
   * What a SIGHUP does (run.ts keeps one listener for the whole run, so one before the queues run
   * is not fatal): set to forwarding while they run, back to `idle` after.
   */
  onHup: (f: () => void) => void;
  idle: () => void;
}

interface Queue {
  k: number;
  child: ChildProcess;
  stats: Record<string, unknown>;
  /** The request number (`ask`) its latest statistics answer: a fresh read waits for its own. */
  answered: number;
  final: Record<string, unknown> | undefined;
  exited: Promise<number>;
}

/** Supervises the queue processes until SIGINT/SIGTERM or a failure; resolves with the exit code. */
export async function runQueues(o: QueuesOptions): Promise<number> {
  const script = process.argv[1]!;
  const queues: Queue[] = [];
  let failed: ((code: number) => void) | undefined;
  const failure = new Promise<number>((resolve) => (failed = resolve));
  const ready: Promise<void>[] = [];
  for (let k = 0; k < o.queues; k++) {
    const child = fork(script, ['run', ...o.argv, '--queue-of', `${k}/${o.queues}`], {
      execArgv: process.execArgv,
      stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
    });
    const q: Queue = {
      k,
      child,
      stats: {},
      answered: 0,
      final: undefined,
      exited: new Promise((resolve) => child.on('exit', (code, sig) => resolve(code ?? (sig !== null ? 2 : 0)))),
    };
    let onAttached: () => void = () => {};
    const attached = new Promise<void>((resolve) => (onAttached = resolve));
    const isReady = new Promise<void>((resolve, reject) => {
      child.on('message', (m: QueueMessage) => {
        if (m.type === 'attached') onAttached();
        else if (m.type === 'ready') resolve();
        else if (m.type === 'stats') {
          q.stats = m.stats;
          q.answered = m.seq;
        }
        else if (m.type === 'final') q.final = m.stats;
        else if (m.type === 'reloaded') o.log.info({ queue: k, ...m.result }, 'queue reloaded');
      });
      void q.exited.then((code) => {
        onAttached();
        reject(new Error(`queue ${k} exited (${code}) before it was ready`));
        failed?.(code === 0 ? 2 : code);
      });
    });
    // Awaited below with the others (a rejection before then is not unhandled).
    isReady.catch(() => {});
    ready.push(isReady);
    queues.push(q);
    // The kernel numbers a TAP's queues in the order they are attached, and spreads the flows a
    // TAP transmits over them by that number: queue k must be the k-th on both TAPs, or a flow's
    // two directions reach two processes (each a connection picked up mid-stream). Attached one
    // process after the other (their warm-ups still overlap).
    await attached;
    if (child.exitCode !== null || child.signalCode !== null) break;
  }
  const stopAll = async (): Promise<void> => {
    for (const q of queues) q.child.kill('SIGTERM');
    // A queue that does not stop within STOP_GRACE_MS is killed (it closes its files first when
    // it can: each writes them as it stops).
    const grace = setTimeout(() => {
      for (const q of queues) if (q.child.exitCode === null && q.child.signalCode === null) q.child.kill('SIGKILL');
    }, STOP_GRACE_MS);
    await Promise.all(queues.map((q) => q.exited));
    clearTimeout(grace);
  };
  try {
    await Promise.all(ready);
  } catch (e) {
    await stopAll();
    o.log.error({ err: (e as Error).message }, 'a queue process failed to start: all stopped');
    return Math.max(...(await Promise.all(queues.map((q) => q.exited))), 2);
  }
  let asked = 0;
  const ask = (): void => {
    asked++;
    for (const q of queues) if (q.child.connected) q.child.send({ type: 'stats', seq: asked });
  };
  /**
   * Asks every queue and waits (at most FRESH_WAIT_MS) for their answers: what SIGUSR1 prints
   * includes everything that happened before the signal, not the last poll's numbers.
   */
  const fresh = async (): Promise<void> => {
    ask();
    const seq = asked;
    const end = Date.now() + FRESH_WAIT_MS;
    while (Date.now() < end && queues.some((q) => q.child.connected && q.answered < seq)) {
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  };
  const merged = (): Record<string, unknown> => ({ ...mergeStats(queues.map((q) => q.final ?? q.stats)), queues: queues.map((q) => ({ queue: q.k, pid: q.child.pid, ...pick(q.final ?? q.stats) })) });
  ask();
  const poll = setInterval(ask, 500);
  let metricsServer: Server | undefined;
  if (o.listen !== undefined) {
    try {
      metricsServer = await serveMetrics(new GatewayMetrics(merged), o.listen.host, o.listen.port);
    } catch (e) {
      clearInterval(poll);
      await stopAll();
      throw new Error(`--metrics ${o.metricsText}: cannot listen: ${(e as Error).message}`);
    }
  }
  o.log.info({ queues: o.queues, pids: queues.map((q) => q.child.pid) }, 'gateway running: one process per TAP queue');
  const statusTimer = o.status ? setInterval(() => process.stderr.write(`${statusLine(merged())}\n`), 1000) : undefined;
  const onUsr1 = (): void => void fresh().then(() => process.stdout.write(`${JSON.stringify(merged())}\n`));
  const onHup = (): void => {
    for (const q of queues) if (q.child.connected) q.child.send('reload');
  };
  process.on('SIGUSR1', onUsr1);
  o.onHup(onHup);
  const stop = new Promise<number>((resolve) => {
    process.once('SIGINT', () => resolve(0));
    process.once('SIGTERM', () => resolve(0));
  });
  let code = await Promise.race([stop, failure]);
  clearInterval(poll);
  if (statusTimer !== undefined) clearInterval(statusTimer);
  process.off('SIGUSR1', onUsr1);
  o.onHup(o.idle);
  metricsServer?.close();
  await stopAll();
  for (const q of queues) code = Math.max(code, await q.exited);
  process.stdout.write(`${JSON.stringify(merged())}\n`);
  return code;
}

/** A queue's own share, for the per-queue list: frames and flows. */
function pick(st: Record<string, unknown>): Record<string, unknown> {
  const g = st['gateway'] as Record<string, unknown> | undefined;
  const f = st['flows'] as Record<string, unknown> | undefined;
  return { framesIn: g?.['framesIn'] ?? 0, framesOut: g?.['framesOut'] ?? 0, flows: f?.['active'] ?? 0 };
}

function statusLine(st: Record<string, unknown>): string {
  const g = (st['gateway'] ?? {}) as Record<string, number>;
  const f = (st['flows'] ?? {}) as Record<string, number>;
  const per = (st['queues'] as Array<{ framesIn: number }>).map((q) => q.framesIn).join('/');
  return `up ${Number(st['uptimeS'] ?? 0).toFixed(0)}s  frames ${g['framesIn'] ?? 0}/${g['framesOut'] ?? 0} (per queue in ${per})  flows ${f['active'] ?? 0}  rewritten ${g['connectionsRewritten'] ?? 0}`;
}
