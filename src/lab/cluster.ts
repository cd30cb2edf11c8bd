/**
 * The cluster lab's processes: the NATS servers (JetStream, in their own namespace on the sync
 * network; several form a NATS cluster) and the gateway nodes `node<i>` in the gw namespace;
 * starting, stopping, restarting them, and cutting one node off the sync network (a partition),
 * make the failures the cluster tests need.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { LAB_IFACES, LAB_SYNC, LabError, NATS_SERVER_BIN, checkPrefix, labStateDir, natsNodeAddr, natsPorts, natsProcessName, nodeProcessName, nsName } from './names.js';
import { labSpawn, pidAlive, readPidFile, stopProcess } from './process.js';
import { labStatus } from './status.js';
import { attachedQueues, natsHealthy, nsList, sh, sleep, tail } from './sys.js';

/** The nats-server binary (Debian package path, else PATH), or LabError LAB_ENV. */
export function natsServerBin(): string {
  if (existsSync(NATS_SERVER_BIN)) return NATS_SERVER_BIN;
  const r = spawnSync('sh', ['-c', 'command -v nats-server'], { encoding: 'utf8' });
  const found = r.status === 0 ? r.stdout.trim() : '';
  if (found !== '') return found;
  throw new LabError('LAB_ENV', `a cluster lab needs nats-server (${NATS_SERVER_BIN} is missing): apt-get install nats-server`);
}

/**
 * Server k of n: listening on every address of the nats namespace (each node has its own); with
 * n > 1, a NATS cluster whose servers route to each other on loopback and never advertise their
 * addresses to clients (a node keeps to its own address: a partition can cut it).
 */
function natsArgv(prefix: string, stateDir: string, bin: string, k: number, n: number): string[] {
  const p = natsPorts(k);
  const argv = [bin, '-n', n === 1 ? `${prefix}-nats` : `${prefix}-nats${k}`, '-js', '-sd', join(stateDir, storeDir(k)), '-a', '0.0.0.0', '-p', String(p.client), '-m', String(p.monitor)];
  if (n === 1) return argv;
  const routes = Array.from({ length: n }, (_, j) => j + 1).filter((j) => j !== k).map((j) => `nats://127.0.0.1:${natsPorts(j).cluster}`);
  return [...argv, '--cluster_name', prefix, '--cluster', `nats://127.0.0.1:${p.cluster}`, '--routes', routes.join(','), '--no_advertise=true'];
}

function storeDir(k: number): string {
  return k === 1 ? LAB_SYNC.storeDir : `${LAB_SYNC.storeDir}${k}`;
}

/** Starts server k of n unless it runs (same store dir as before: JetStream state survives); returns its pid. */
function spawnNats(prefix: string, stateDir: string, bin: string, k: number, n: number): number {
  const name = natsProcessName(k);
  const running = readPidFile(stateDir, name);
  if (running !== undefined && running.alive) return running.pid;
  mkdirSync(join(stateDir, storeDir(k)), { recursive: true });
  return labSpawn(prefix, 'nats', name, natsArgv(prefix, stateDir, bin, k, n), { stateDir });
}

/** Waits until server k (pid) is healthy: JetStream on, and with `current` caught up in its cluster. */
async function waitNats(prefix: string, stateDir: string, k: number, pid: number, timeoutMs: number, current: boolean): Promise<void> {
  const name = natsProcessName(k);
  const port = natsPorts(k).monitor;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (natsHealthy(prefix, port, current)) return;
    if (!pidAlive(pid)) {
      throw new LabError('LAB_NATS', `nats-server ${k} (pid ${pid}) exited before it was healthy; log:\n${tail(join(stateDir, `${name}.log`))}`);
    }
    if (Date.now() > deadline) {
      throw new LabError('LAB_NATS', `nats-server ${k} (pid ${pid}) not healthy at http://${LAB_SYNC.natsIp}:${port}/healthz within ${timeoutMs} ms; log:\n${tail(join(stateDir, `${name}.log`))}`);
    }
    await sleep(100);
  }
}

/** Starts the lab's n NATS servers (those not running) and waits until each is healthy; returns their pids. */
export async function startNats(prefix: string, stateDir: string, bin: string, timeoutMs: number, n = 1): Promise<number[]> {
  const pids = Array.from({ length: n }, (_, j) => spawnNats(prefix, stateDir, bin, j + 1, n));
  for (let j = 0; j < n; j++) await waitNats(prefix, stateDir, j + 1, pids[j]!, timeoutMs, n > 1);
  return pids;
}

/** How many NATS servers the lab was made with (lab.json). */
function labNatsServers(stateDir: string): number {
  try {
    const j = JSON.parse(readFileSync(join(stateDir, 'lab.json'), 'utf8')) as { config?: { natsServers?: number } };
    return j.config?.natsServers ?? 1;
  } catch {
    return 1;
  }
}

function requireClusterLab(prefix: string): void {
  checkPrefix(prefix);
  const have = nsList();
  for (const role of ['gw', 'nats'] as const) {
    if (!have.has(nsName(prefix, role))) {
      throw new LabError('LAB_ARG', `namespace ${nsName(prefix, role)} does not exist: labUp({ config: { nodes: N } }) first`);
    }
  }
}

/**
 * Start NATS server `server` (default 1; 'all': every server of the lab at once, as a NATS
 * cluster that lost them all needs) in ${prefix}-nats (same store dir as before, so JetStream
 * state survives) and wait until it is healthy from gw (in a NATS cluster: caught up). A server
 * already running is kept. Returns the pid (of the first, with 'all').
 */
export async function labStartNats(prefix: string, opts: { stateDir?: string; timeoutMs?: number; server?: number | 'all' } = {}): Promise<number> {
  requireClusterLab(prefix);
  const stateDir = opts.stateDir ?? labStateDir(prefix);
  const n = labNatsServers(stateDir);
  const ks = natsServersOf(opts.server, n);
  const pids = ks.map((k) => spawnNats(prefix, stateDir, natsServerBin(), k, n));
  for (let j = 0; j < ks.length; j++) await waitNats(prefix, stateDir, ks[j]!, pids[j]!, opts.timeoutMs ?? 15_000, n > 1);
  return pids[0]!;
}

/** The servers `server` names among the lab's n. */
function natsServersOf(server: number | 'all' | undefined, n: number): number[] {
  if (server === 'all') return Array.from({ length: n }, (_, j) => j + 1);
  const k = server ?? 1;
  if (k > n) throw new LabError('LAB_ARG', `the lab has ${n} NATS server${n === 1 ? '' : 's'}, not ${k}`);
  natsProcessName(k); // checks k
  return [k];
}

/**
 * Stop NATS server `server` (default 1; 'all': every one): 'SIGKILL' (default: a crash, immediate) or 'SIGTERM'
 * (clean shutdown, SIGKILL after graceMs). Returns once it is gone; with one server, the sync
 * outage lasts until `labStartNats`.
 */
export async function labStopNats(prefix: string, opts: { stateDir?: string; signal?: 'SIGKILL' | 'SIGTERM'; graceMs?: number; server?: number | 'all' } = {}): Promise<void> {
  checkPrefix(prefix);
  const stateDir = opts.stateDir ?? labStateDir(prefix);
  const ks = natsServersOf(opts.server, labNatsServers(stateDir));
  await Promise.all(ks.map((k) => stopProcess(stateDir, natsProcessName(k), opts.signal ?? 'SIGKILL', opts.graceMs ?? 3000)));
}

/** `labStopNats` then `labStartNats` (same store dir), waiting until healthy. Returns the new pid. */
export async function labRestartNats(
  prefix: string,
  opts: { stateDir?: string; signal?: 'SIGKILL' | 'SIGTERM'; graceMs?: number; timeoutMs?: number; server?: number | 'all' } = {},
): Promise<number> {
  requireClusterLab(prefix);
  await labStopNats(prefix, opts);
  return labStartNats(prefix, opts);
}

/**
 * Start cluster node i (1-based) in the gw namespace: lab process `node<i>`, log
 * <stateDir>/node<i>.log (appended across restarts). argv is the whole command, e.g.
 * [node, bin/tapgate.js, 'run', '--tap', nodeTaps(i).client, '--tap', nodeTaps(i).server,
 * '--cluster', info.natsUrl, '--node-id', String(i)]. A node already running is kept: its pid is
 * returned.
 */
export function labStartNode(
  prefix: string,
  i: number,
  argv: string[],
  opts: { env?: Record<string, string>; cwd?: string; stateDir?: string } = {},
): number {
  checkPrefix(prefix);
  const name = nodeProcessName(i);
  const stateDir = opts.stateDir ?? labStateDir(prefix);
  const running = readPidFile(stateDir, name);
  if (running !== undefined && running.alive) return running.pid;
  return labSpawn(prefix, 'gw', name, argv, { ...opts, stateDir });
}

/**
 * Stop cluster node i. 'SIGKILL': at once, to its whole process group, no grace (a node crash).
 * 'SIGTERM': a graceful stop (a node drains), SIGKILL only after graceMs (default 30000).
 * Resolves when it is gone, with the pid it had (undefined if it was not running).
 */
export async function labKillNode(
  prefix: string,
  i: number,
  signal: 'SIGKILL' | 'SIGTERM',
  opts: { stateDir?: string; graceMs?: number } = {},
): Promise<number | undefined> {
  checkPrefix(prefix);
  const stateDir = opts.stateDir ?? labStateDir(prefix);
  return stopProcess(stateDir, nodeProcessName(i), signal, opts.graceMs ?? 30_000);
}

/**
 * Cut node i off the sync network (`cut`), or let it back: nftables in the nats namespace drop
 * every packet to and from the node's own NATS address (natsNodeAddr) — a partition, not a
 * closed connection: neither end is told. The node's TAPs keep working.
 */
export function labPartitionNode(prefix: string, i: number, cut: boolean): void {
  requireClusterLab(prefix);
  const nft = (...args: string[]) => sh(['ip', 'netns', 'exec', nsName(prefix, 'nats'), 'nft', ...args], true);
  const addr = natsNodeAddr(i);
  const table = `tapgate_cut${i}`;
  nft('delete', 'table', 'inet', table); // absent: nothing to delete
  if (!cut) return;
  for (const args of [
    ['add', 'table', 'inet', table],
    ['add', 'chain', 'inet', table, 'in', '{', 'type', 'filter', 'hook', 'input', 'priority', '0', ';', '}'],
    ['add', 'chain', 'inet', table, 'out', '{', 'type', 'filter', 'hook', 'output', 'priority', '0', ';', '}'],
    ['add', 'rule', 'inet', table, 'in', 'ip', 'daddr', addr, 'drop'],
    ['add', 'rule', 'inet', table, 'out', 'ip', 'saddr', addr, 'drop'],
  ]) {
    const r = nft(...args);
    if (r.status !== 0) throw new LabError('LAB_CMD', `nft ${args.join(' ')} in ${nsName(prefix, 'nats')} failed: ${r.stderr.trim()}`);
  }
}

/** Wait until nodes 1..n have attached their TAPs (carrier up on tap-c<i> and tap-s<i>). */
export async function labWaitNodesAttached(prefix: string, n: number, opts: { stateDir?: string; timeoutMs?: number } = {}): Promise<void> {
  const stateDir = opts.stateDir ?? labStateDir(prefix);
  const deadline = Date.now() + (opts.timeoutMs ?? 15_000);
  for (;;) {
    const st = labStatus(prefix, { stateDir, probeNats: false });
    const missing = [];
    for (let i = 1; i <= n; i++) {
      const ns = st.nodes.find((x) => x.node === i);
      if (ns === undefined || !ns.client.attached || !ns.server.attached) missing.push(i);
    }
    if (missing.length === 0) return;
    const dead = missing.filter((i) => st.nodes.find((x) => x.node === i)?.process?.alive !== true);
    if (Date.now() > deadline || dead.length > 0) {
      const i = dead[0] ?? missing[0]!;
      throw new LabError(
        'LAB_GATEWAY',
        `node ${missing.join(', ')} did not attach ${dead.length > 0 ? `(node ${dead.join(', ')} not running)` : `within ${opts.timeoutMs ?? 15_000} ms`}; node${i}.log:\n${tail(join(stateDir, `node${i}.log`))}`,
      );
    }
    await sleep(50);
  }
}

/** Wait until the lab's gateway (pid) has attached tap-c and tap-s, `queues` queues of each. */
export async function waitAttached(prefix: string, stateDir: string, pid: number, timeoutMs: number, queues = 1): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  // Carrier comes up with the first queue attached; with `run --queues N` the other processes may
  // attach seconds later, and until then the kernel spreads flows over fewer queues.
  const allQueues = (): boolean => queues <= 1 || [LAB_IFACES.tapClient, LAB_IFACES.tapServer].every((t) => attachedQueues(nsName(prefix, 'gw'), t) >= queues);
  for (;;) {
    const st = labStatus(prefix, { stateDir });
    if (st.taps['tap-c'].attached && st.taps['tap-s'].attached && allQueues()) return;
    if (!pidAlive(pid)) {
      throw new LabError('LAB_GATEWAY', `the gateway (pid ${pid}) exited before attaching the TAPs; log:\n${tail(join(stateDir, 'gateway.log'))}`);
    }
    if (Date.now() > deadline) {
      throw new LabError('LAB_GATEWAY', `the gateway (pid ${pid}) did not attach tap-c and tap-s${queues > 1 ? ` (${queues} queues each)` : ''} within ${timeoutMs} ms; log:\n${tail(join(stateDir, 'gateway.log'))}`);
    }
    await sleep(50);
  }
}
