/**
 * `tapgate run --tap A --tap B`: the live gateway between two existing TAP devices
 * (engine/live.ts). Frames from A go through the gateway to B and back.
 *
 * Order matters for a clean failure: the config is loaded and checked before any device is
 * touched; the TAPs are checked to exist (the addon would otherwise create a fresh, unconnected
 * TAP of that name); a TAP that cannot be attached leaves nothing open. Exit codes: 0 after a
 * graceful stop (SIGINT/SIGTERM), 1 bad arguments or config, 2 a TAP could not be opened or failed.
 *
 * Output: pino logs on stderr (pretty on a TTY); the final statistics as JSON on stdout (one line
 * unless stdout is a TTY), also on SIGUSR1 while running; a one-line live status on stderr when
 * stderr is a TTY (or with --status: one line per second on a non-TTY).
 *
 * Impairment (phy/fault.ts, engine/live.ts): `--impair SPEC` impairs the frames the gateway
 * writes to both TAPs, `--impair-a` / `--impair-b` those written to TAP a / b (overriding
 * `--impair` for that side); `--impair-in`, `--impair-in-a`, `--impair-in-b` the same for frames
 * read from the TAPs, before the gateway sees them. A bad spec is refused (exit 1) before any
 * device is touched. The counters appear in the statistics under `impair`.
 */
import { spawnSync } from 'node:child_process';
import { accessSync, constants, statSync } from 'node:fs';
import { makeDirs } from '../util/dirs.js';
import type { Server } from 'node:http';
import type { ArgumentsCamelCase, Argv, CommandModule } from 'yargs';
import { ConfigError, loadConfig, type Config } from '../config/index.js';
import { LiveGateway, type ImpairPoint, type ImpairSpecs, type LiveStats } from '../engine/live.js';
import { GatewayMetrics, parseListen, serveMetrics } from '../engine/metrics.js';
import { EventFile, wallClock } from '../engine/event-file.js';
import { fileError, opening } from './errors.js';
import { FaultSpecError, formatFaultSpec, parseFaultSpec } from '../phy/fault.js';
import type { TapError } from '../phy/tap.js';
import { makeLogger } from './log.js';
import { ClusterNode } from '../cluster/node.js';
import { stringKey } from '../cluster/rendezvous.js';
import { queueEventsProblem, queuePaths, runQueues } from './run-queues.js';
import { literalSearchBackend } from '../agent/literal-search.js';

/** Masquerade port slices: node i allocates ports p with p % NAT_SLICES === its index. */
export const NAT_SLICES = 16;

export interface RunArgs {
  tap: string[];
  config?: string;
  vnetHdr: boolean;
  pcap?: string;
  status?: boolean;
  impair?: string;
  impairA?: string;
  impairB?: string;
  impairIn?: string;
  impairInA?: string;
  impairInB?: string;
  cluster?: string;
  nodeId?: string;
  /** JetStream replicas of the cluster's bucket (3 with three NATS servers). */
  clusterReplicas?: number;
  /** The node's lease (fencing), ms; 0 = none. */
  clusterLeaseMs?: number;
  /** JIT warm-up before forwarding (default true; src/engine/warmup.ts). */
  warmup?: boolean;
  /** Serve Prometheus metrics at http://HOST:PORT/metrics (src/engine/metrics.ts). */
  metrics?: string;
  /** Append events (flow records, agent events, drops) as JSON lines to this file. */
  events?: string;
  /** Gateway processes, one per TAP queue (multi-queue TAPs; run-queues.ts). Default 1. */
  queues?: number;
  /** Internal: this process serves queue K of N (`K/N`), started by run-queues.ts. */
  queueOf?: string;
}

/** Options the queue processes do not get from the supervisor, which serves them itself: with a
 *  value (`--opt value` or `--opt=value`), and flags. */
const SUPERVISOR_VALUES: ReadonlySet<string> = new Set(['--queues', '--metrics']);
const SUPERVISOR_FLAGS: ReadonlySet<string> = new Set(['--status', '--no-status']);

/** `argv` (after `run`) without the supervisor's own options. */
export function queueProcessArgv(argv: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const x = argv[i]!;
    const name = x.split('=')[0]!;
    if (SUPERVISOR_VALUES.has(name)) {
      if (!x.includes('=')) i++;
    } else if (!SUPERVISOR_FLAGS.has(name)) out.push(x);
  }
  return out;
}

/** `--queue-of K/N` → {k, n}; throws RunError. */
function parseQueueOf(v: string): { k: number; n: number } {
  const m = /^(\d+)\/(\d+)$/.exec(v);
  const k = m === null ? NaN : Number(m[1]);
  const n = m === null ? NaN : Number(m[2]);
  if (!(n >= 1 && k < n)) throw new RunError(`--queue-of: expected K/N with K < N, got '${v}'`, 1);
  return { k, n };
}

/**
 * The injectors `a` asks for, by point: the per-side option wins over the both-sides one.
 * Throws RunError (exit 1) naming the option for a bad spec.
 */
export function impairSpecs(a: Pick<RunArgs, 'impair' | 'impairA' | 'impairB' | 'impairIn' | 'impairInA' | 'impairInB'>): ImpairSpecs {
  const out: ImpairSpecs = {};
  const take = (point: ImpairPoint, opt: string, text: unknown): void => {
    if (text === undefined) return;
    if (typeof text !== 'string') throw new RunError(`--${opt} is given more than once`, 1);
    try {
      out[point] = parseFaultSpec(text);
    } catch (e) {
      if (e instanceof FaultSpecError) throw new RunError(`--${opt}: ${e.message}`, 1);
      throw e;
    }
  };
  take('out-a', 'impair', a.impair);
  take('out-b', 'impair', a.impair);
  take('out-a', 'impair-a', a.impairA);
  take('out-b', 'impair-b', a.impairB);
  take('in-a', 'impair-in', a.impairIn);
  take('in-b', 'impair-in', a.impairIn);
  take('in-a', 'impair-in-a', a.impairInA);
  take('in-b', 'impair-in-b', a.impairInB);
  return out;
}

export class RunError extends Error {
  constructor(
    message: string,
    readonly exitCode: number,
  ) {
    super(message);
    this.name = 'RunError';
  }
}

const IFNAME_RE = /^[^\s/:]{1,15}$/;

/**
 * Why `name` cannot be used as a TAP here (undefined = looks fine); with `queues` > 1 (run
 * --queues) it must also have been made multi-queue.
 */
export function tapProblem(name: string, queues = 1): string | undefined {
  if (!IFNAME_RE.test(name)) return `'${name}' is not a valid interface name (1-15 characters, no '/', ':' or spaces)`;
  // Netlink (ip) sees this process's network namespace; sysfs may not (unshare -n keeps the
  // parent's /sys mounted).
  const r = spawnSync('ip', ['-d', '-o', 'link', 'show', 'dev', name], { encoding: 'utf8' });
  if (r.error !== undefined) return undefined; // no iproute2: let the addon say what is wrong
  if (r.status !== 0) {
    return (
      `TAP '${name}' does not exist in this network namespace: create it first ` +
      `(ip tuntap add mode tap name ${name}; ip link set ${name} up) or use \`tapgate lab up\``
    );
  }
  if (!/\btun type tap\b/.test(r.stdout)) return `'${name}' exists but is not a TAP device`;
  if (queues > 1 && !/\bmulti_queue\b/.test(r.stdout)) {
    return `--queues ${queues}: TAP '${name}' is not multi-queue: create it with \`ip tuntap add mode tap name ${name} multi_queue\` (or \`tapgate lab up --queues ${queues}\`)`;
  }
  return undefined;
}

function printStats(st: LiveStats | (LiveStats & { cluster: unknown })): void {
  process.stdout.write((process.stdout.isTTY ? JSON.stringify(st, null, 2) : JSON.stringify(st)) + '\n');
}

/** Runs until SIGINT/SIGTERM (or a TAP failure); resolves with the exit code. */
export async function run(a: RunArgs): Promise<number> {
  const queueOf = a.queueOf === undefined ? undefined : parseQueueOf(a.queueOf);
  const log = makeLogger().child({ mod: 'run', ...(queueOf !== undefined ? { queue: queueOf.k } : {}) });
  // Without a listener SIGHUP ends the process (Node's default): one sent while the gateway
  // loads its config, opens its TAPs or warms up, or while it drains and writes its capture on
  // the way out, must not kill it. The reload listener below replaces this one while it runs.
  let hup = (): void => log.warn('SIGHUP: not running yet (or stopping): nothing reloaded');
  const onHupAlways = (): void => hup();
  process.on('SIGHUP', onHupAlways);
  try {
    return await runInner(a, queueOf, log, (f) => (hup = f));
  } finally {
    process.off('SIGHUP', onHupAlways);
  }
}

async function runInner(a: RunArgs, queueOf: { k: number; n: number } | undefined, log: ReturnType<typeof makeLogger>, onHup: (f: () => void) => void): Promise<number> {
  if (a.tap.length !== 2 || a.tap[0] === a.tap[1]) {
    throw new RunError(`tapgate run needs two different TAPs: --tap A --tap B (got ${a.tap.length === 0 ? 'none' : a.tap.join(', ')})`, 1);
  }
  let config: Config | null = null;
  if (a.config !== undefined) config = loadConfig(a.config); // ConfigError: before any device
  const impair = impairSpecs(a); // RunError: before any device
  if ((a.cluster === undefined) !== (a.nodeId === undefined)) throw new RunError('--cluster and --node-id go together', 1);
  const queues = a.queues ?? 1;
  if (!(Number.isInteger(queues) && queues >= 1 && queues <= 64)) throw new RunError(`--queues: expected 1..64, got ${String(a.queues)}`, 1);
  if (queues > 1 || queueOf !== undefined) {
    const one = (what: string): never => {
      throw new RunError(`--queues: not with ${what} (each queue is a process of its own; see README "Many flows")`, 1);
    };
    if (a.cluster !== undefined) one('--cluster');
    const evp = a.events === undefined || queueOf !== undefined ? undefined : queueEventsProblem(a.events);
    if (evp !== undefined) throw new RunError(evp, 1);
    if (config?.nat !== undefined) one('NAT in the config (one table for all connections)');
  }
  let node: ClusterNode | undefined;
  if (a.cluster !== undefined) {
    if (!a.cluster.split(',').every((u) => /^nats:\/\/[^\s,]+$/.test(u))) throw new RunError(`--cluster: expected nats://HOST:PORT[,nats://HOST:PORT...], got '${a.cluster}'`, 1);
    const r = a.clusterReplicas;
    if (r !== undefined && !(Number.isInteger(r) && r >= 1 && r <= 5)) throw new RunError(`--cluster-replicas: expected 1..5, got ${String(r)}`, 1);
    const lease = a.clusterLeaseMs;
    if (lease !== undefined && !(Number.isFinite(lease) && lease >= 0)) throw new RunError(`--cluster-lease-ms: expected a number of ms ≥ 0, got ${String(lease)}`, 1);
    try {
      node = new ClusterNode({
        url: a.cluster,
        nodeId: String(a.nodeId),
        log: log.child({ mod: 'cluster' }),
        ...(r !== undefined ? { replicas: r } : {}),
        ...(lease !== undefined ? { leaseMs: lease } : {}),
      });
    } catch (e) {
      throw new RunError((e as Error).message, 1);
    }
  }
  const listen = a.metrics === undefined ? undefined : parseListen(a.metrics);
  if (typeof listen === 'string') throw new RunError(listen, 1);
  // --pcap: a directory that can be made and written, found out before any device is touched
  // (LiveGateway.start would meet a file there after opening the TAPs, as an internal error).
  if (a.pcap !== undefined) {
    try {
      makeDirs(a.pcap);
      if (!statSync(a.pcap).isDirectory()) throw new RunError(`--pcap ${a.pcap}: is not a directory`, 2);
      accessSync(a.pcap, constants.W_OK);
    } catch (e) {
      const fe = fileError(e, '--pcap');
      throw fe !== undefined ? new RunError(fe.message, 2) : e;
    }
  }
  for (const t of a.tap) {
    const p = tapProblem(t, queues);
    if (p !== undefined) throw new RunError(p, 2);
  }
  if (queues > 1) {
    // No cluster node was made: refused with --queues above.
    const i = process.argv.indexOf('run');
    const idle = (): void => log.warn('SIGHUP: the queue processes are not running yet (or stopping): nothing reloaded');
    return runQueues({ queues, argv: queueProcessArgv(process.argv.slice(i + 1)), listen, metricsText: a.metrics, status: a.status === true, log, onHup, idle });
  }
  const own = queueOf === undefined ? { pcap: a.pcap, events: a.events } : queuePaths(queueOf.k, a.pcap, a.events);
  const ev = own.events;
  const events = ev === undefined ? undefined : await opening('--events', () => EventFile.open(ev, wallClock));
  let live: LiveGateway;
  try {
    live = await LiveGateway.start({
      taps: [a.tap[0]!, a.tap[1]!],
      config,
      vnetHdr: a.vnetHdr,
      multiQueue: queueOf !== undefined,
      pcapDir: own.pcap,
      log,
      impair,
      cluster: node,
      warmup: a.warmup !== false,
      events: events?.sink,
      // Under --queues the supervisor starts the next queue process once this one holds its queue
      // of both TAPs (sent before the warm-up blocks the event loop).
      ...(queueOf !== undefined ? { onAttached: () => new Promise<void>((resolve) => void process.send!({ type: 'attached' }, () => resolve())) } : {}),
    });
  } catch (e) {
    const te = e as TapError;
    if (typeof te.code === 'string' && te.code.startsWith('TAP_')) {
      const hint = te.code === 'TAP_PERM' ? ' (attaching a TAP needs CAP_NET_ADMIN: run as root or in the lab)' : '';
      throw new RunError(`cannot open TAP: [${te.code}] ${te.message}${hint}`, 2);
    }
    throw e;
  }
  if (node !== undefined) {
    const nat = live.gateway.nat;
    if (nat !== null) {
      const n = Number(a.nodeId);
      nat.slice = { index: (Number.isInteger(n) ? n : stringKey(String(a.nodeId))) % NAT_SLICES, count: NAT_SLICES };
      nat.seedCursors(Math.random);
    }
    try {
      await node.start();
    } catch (e) {
      await live.stop();
      throw new RunError(`cannot join the cluster at ${a.cluster}: ${(e as Error).message}`, 2);
    }
  }
  /** What `stats` reports: the gateway's, with the node's cluster status when it is one. */
  const allStats = () => (node !== undefined ? { ...live.stats(), cluster: node.status() } : live.stats());
  let metricsServer: Server | undefined;
  if (listen !== undefined) {
    const m = new GatewayMetrics(allStats);
    try {
      metricsServer = await serveMetrics(m, listen.host, listen.port);
    } catch (e) {
      if (node !== undefined) await node.stop();
      await live.stop();
      throw new RunError(`--metrics ${a.metrics}: cannot listen: ${(e as Error).message}`, 2);
    }
    log.info({ url: `http://${a.metrics}/metrics` }, 'metrics served');
  }
  const impairLog = Object.fromEntries(Object.entries(impair).map(([p, s]) => [p, formatFaultSpec(s)]));
  log.info(
    { taps: a.tap, vnetHdr: a.vnetHdr, rules: config?.rules.length ?? 0, ...(config?.nat !== undefined ? { nat: { oneToOne: config.nat.table.oneToOne.length, masquerade: config.nat.table.masquerade.length } } : {}), config: a.config, pcap: own.pcap, ...(Object.keys(impairLog).length > 0 ? { impair: impairLog } : {}) },
    'gateway running',
  );
  if (literalSearchBackend === 'js') {
    log.warn({ addon: 'build/Release/search.node' }, 'the literal-search addon is not built: literal rules are scanned in JavaScript (same results, slower); `npm install` builds it');
  }

  const tty = process.stderr.isTTY === true && queueOf === undefined;
  const statusTimer =
    tty || a.status === true
      ? setInterval(() => {
          const line = live.statusLine();
          if (tty) process.stderr.write(`\r\x1b[2K${line}`);
          else process.stderr.write(`${line}\n`);
        }, 1000)
      : undefined;

  const onUsr1 = (): void => printStats(allStats());
  process.on('SIGUSR1', onUsr1);
  // Reload (SIGHUP, `tapgate cluster reload`): new connections get the file's rules now; an
  // invalid file is refused with its errors and the running config stays.
  const reload = (): Record<string, unknown> => {
    if (a.config === undefined) {
      log.warn('reload: the gateway runs without --config: nothing to re-read');
      return { error: 'no --config to re-read' };
    }
    try {
      const next = loadConfig(a.config);
      live.gateway.reload(next);
      const c = live.gateway.stats().config;
      log.info({ config: a.config, digest: c.digest, rules: next.rules.length, reloads: c.reloads }, 'config reloaded: new connections get its rules, connections in flight keep theirs');
      return { reloaded: true, digest: c.digest, rules: next.rules.length };
    } catch (e) {
      const msg = (e as Error).message;
      log.error({ config: a.config, err: msg }, 'config reload refused: the running config stays');
      return { error: msg };
    }
  };
  const idleHup = (): void => log.warn('SIGHUP: not running yet (or stopping): nothing reloaded');
  onHup(() => void reload());
  if (node !== undefined) node.onReload = reload;
  // A queue process (run-queues.ts) answers its supervisor over IPC, and stops when it goes.
  const onQueueMessage = (m: unknown): void => {
    const ask = m as { type?: unknown; seq?: unknown } | null;
    if (typeof ask === 'object' && ask !== null && ask.type === 'stats') process.send?.({ type: 'stats', stats: allStats(), seq: ask.seq });
    else if (m === 'reload') process.send?.({ type: 'reloaded', result: reload() });
  };
  if (queueOf !== undefined) {
    process.on('message', onQueueMessage);
    process.send?.({ type: 'ready' });
  }
  const stopSignal = new Promise<NodeJS.Signals>((resolve) => {
    if (queueOf === undefined) {
      process.once('SIGINT', () => resolve('SIGINT'));
      process.once('SIGTERM', () => resolve('SIGTERM'));
    } else {
      // A queue process gets a stop signal twice when its group is signalled (systemd, `kill --
      // -PGID`, the lab, Ctrl-C): the group's, then its supervisor's. That second one is ignored,
      // or it would kill the process before its capture and events are written and closed; a
      // third stops it at once, as a second one stops a single gateway.
      let signals = 0;
      const on = (sig: NodeJS.Signals): void => {
        signals++;
        if (signals === 1) resolve(sig);
        else if (signals > 2) process.exit(2);
      };
      process.on('SIGINT', on);
      process.on('SIGTERM', on);
    }
    if (queueOf !== undefined) process.once('disconnect', () => resolve('SIGTERM'));
    // `tapgate cluster drain`: the node hands everything over, then stops as on SIGTERM.
    if (node !== undefined) node.onDrained = () => resolve('SIGTERM');
  });
  const why = await Promise.race([stopSignal, live.failed]);
  if (statusTimer !== undefined) clearInterval(statusTimer);
  if (tty) process.stderr.write('\r\x1b[2K');
  process.off('SIGUSR1', onUsr1);
  onHup(idleHup);
  if (node !== undefined) {
    // Graceful: every connection goes to another node with its final state before we leave.
    await node.drain();
    await node.stop();
  }
  metricsServer?.close();
  const st = await live.stop();
  if (events !== undefined) {
    await events.close();
    if (events.error !== undefined) log.error({ events: ev, err: events.error.message }, 'event log write failed');
    st['events'] = { ...events.counters };
  }
  if (queueOf !== undefined) {
    process.off('message', onQueueMessage);
    if (process.connected) await new Promise<void>((resolve) => process.send!({ type: 'final', stats: st }, () => resolve()));
  } else printStats(node !== undefined ? { ...st, cluster: node.status() } : st);
  if (typeof why === 'string') {
    log.info({ signal: why }, 'gateway stopped');
    return 0;
  }
  log.error({ code: why.code }, 'gateway stopped: TAP failure');
  return 2;
}

export const runCommand: CommandModule<object, RunArgs> = {
  command: 'run',
  describe: 'Bridge two TAP devices through the rewriting gateway',
  builder: (y: Argv) =>
    y
      .option('tap', { type: 'string', array: true, demandOption: true, describe: 'TAP device (give exactly two: side a, side b)' })
      .option('config', { type: 'string', describe: 'YAML config (rules, limits)' })
      .option('vnet-hdr', {
        type: 'boolean',
        default: true,
        describe: 'TAP GSO: open the TAPs with a virtio-net header (64 KiB frames, partial checksums); --no-vnet-hdr to disable',
      })
      .option('pcap', { type: 'string', describe: 'record DIR/a.pcap and DIR/b.pcap: every frame read from and written to each TAP' })
      .option('status', { type: 'boolean', describe: 'live status line on stderr (default: only when stderr is a TTY)' })
      .option('warmup', {
        type: 'boolean',
        default: true,
        describe: 'before forwarding, run synthetic traffic of every kind through a scratch gateway so the JIT has optimised the frame path (about 0.1 s); --no-warmup to skip',
      })
      .option('impair', {
        type: 'string',
        describe: 'impair frames written to both TAPs, e.g. "loss=2%,reorder=10%:3,dup=1%,delay=2ms,jitter=1ms,rate=100mbit,corrupt=0.1%,seed=7" (src/phy/fault.ts)',
      })
      .option('impair-a', { type: 'string', describe: 'impair frames written to TAP a (the first --tap); overrides --impair' })
      .option('impair-b', { type: 'string', describe: 'impair frames written to TAP b (the second --tap); overrides --impair' })
      .option('impair-in', { type: 'string', describe: 'impair frames read from both TAPs, before the gateway sees them' })
      .option('impair-in-a', { type: 'string', describe: 'impair frames read from TAP a; overrides --impair-in' })
      .option('impair-in-b', { type: 'string', describe: 'impair frames read from TAP b; overrides --impair-in' })
      .option('events', { type: 'string', describe: 'append events as JSON lines to FILE: a record per connection when it ends, ftp translations, drops (README "Operating")' })
      .option('metrics', { type: 'string', describe: 'serve Prometheus metrics (every statistics counter, read at scrape time) at http://HOST:PORT/metrics' })
      .option('cluster', { type: 'string', describe: 'run as a node of a gateway cluster synced over NATS JetStream at this URL (nats://HOST:PORT; several servers comma-separated)' })
      .option('cluster-replicas', { type: 'number', describe: 'JetStream replicas of the cluster\'s bucket (3 with three NATS servers; default 1)' })
      .option('cluster-lease-ms', {
        type: 'number',
        describe: 'the node forwards nothing once this long has passed since its latest heartbeat came back from NATS (fencing; must be under the 400 ms dead time; default 300; 0 = no fencing)',
      })
      .option('queues', {
        type: 'number',
        default: 1,
        describe: 'gateway processes, one per queue of multi-queue TAPs (ip tuntap add … multi_queue): the kernel keeps each connection on one queue; --pcap and --events per queue (DIR/queue<k>, FILE.queue<k>); not with NAT or --cluster',
      })
      .option('queue-of', { type: 'string', hidden: true, describe: 'internal: serve queue K of N (K/N), started by --queues' })
      .option('node-id', { type: 'string', describe: 'this node\'s id in the cluster (letters, digits, _ -; a number 1..n with NAT masquerade)' })
      .example('$0 run --tap tap-c1 --tap tap-s1 --cluster nats://10.250.0.254:4222 --node-id 1', 'a cluster node (see tapgate cluster --help)')
      .example('$0 run --tap tap-c --tap tap-s --config examples/replace.yaml', 'bridge the lab TAPs, rewriting per config')
      .example('$0 run --tap tap-c --tap tap-s --impair loss=1%,delay=5ms', 'the same over a lossy, slow link') as unknown as Argv<RunArgs>,
  handler: async (a: ArgumentsCamelCase<RunArgs>) => {
    try {
      process.exitCode = await run(a);
    } catch (e) {
      if (e instanceof ConfigError || e instanceof RunError) {
        process.stderr.write(`tapgate run: ${e.message}\n`);
        process.exitCode = e instanceof RunError ? e.exitCode : 1;
        return;
      }
      throw e;
    }
  },
};
