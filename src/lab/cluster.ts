/**
 * The cluster lab's processes: nats-server (JetStream, in its own namespace on the sync network)
 * and the gateway nodes `node<i>` in the gw namespace; starting, stopping, restarting them makes
 * the failures the cluster tests need.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { LAB_SYNC, LabError, NATS_SERVER_BIN, checkPrefix, labStateDir, nodeProcessName, nsName } from './names.js';
import { labSpawn, pidAlive, readPidFile, stopProcess } from './process.js';
import { labStatus } from './status.js';
import { natsHealthy, nsList, sleep, tail } from './sys.js';

/** The nats-server binary (Debian package path, else PATH), or LabError LAB_ENV. */
export function natsServerBin(): string {
  if (existsSync(NATS_SERVER_BIN)) return NATS_SERVER_BIN;
  const r = spawnSync('sh', ['-c', 'command -v nats-server'], { encoding: 'utf8' });
  const found = r.status === 0 ? r.stdout.trim() : '';
  if (found !== '') return found;
  throw new LabError('LAB_ENV', `a cluster lab needs nats-server (${NATS_SERVER_BIN} is missing): apt-get install nats-server`);
}

function natsArgv(prefix: string, stateDir: string, bin: string): string[] {
  const S = LAB_SYNC;
  return [bin, '-n', `${prefix}-nats`, '-js', '-sd', join(stateDir, S.storeDir), '-a', S.natsIp, '-p', String(S.clientPort), '-m', String(S.monitorPort)];
}


export async function startNats(prefix: string, stateDir: string, bin: string, timeoutMs: number): Promise<number> {
  const running = readPidFile(stateDir, 'nats');
  let pid: number;
  if (running !== undefined && running.alive) {
    pid = running.pid;
  } else {
    mkdirSync(join(stateDir, LAB_SYNC.storeDir), { recursive: true });
    pid = labSpawn(prefix, 'nats', 'nats', natsArgv(prefix, stateDir, bin), { stateDir });
  }
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (natsHealthy(prefix)) return pid;
    if (!pidAlive(pid)) {
      throw new LabError('LAB_NATS', `nats-server (pid ${pid}) exited before it was healthy; log:\n${tail(join(stateDir, 'nats.log'))}`);
    }
    if (Date.now() > deadline) {
      throw new LabError('LAB_NATS', `nats-server (pid ${pid}) not healthy at ${LAB_SYNC.monitorUrl}/healthz within ${timeoutMs} ms; log:\n${tail(join(stateDir, 'nats.log'))}`);
    }
    await sleep(100);
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
 * Start nats-server in ${prefix}-nats (same store dir as before, so JetStream state survives) and
 * wait until it is healthy from gw. A server already running is kept. Returns its pid.
 */
export async function labStartNats(prefix: string, opts: { stateDir?: string; timeoutMs?: number } = {}): Promise<number> {
  requireClusterLab(prefix);
  const stateDir = opts.stateDir ?? labStateDir(prefix);
  return startNats(prefix, stateDir, natsServerBin(), opts.timeoutMs ?? 15_000);
}

/**
 * Stop nats-server: 'SIGKILL' (default: a crash, immediate) or 'SIGTERM' (clean shutdown, SIGKILL
 * after graceMs). Returns once it is gone; the sync outage lasts until `labStartNats`.
 */
export async function labStopNats(prefix: string, opts: { stateDir?: string; signal?: 'SIGKILL' | 'SIGTERM'; graceMs?: number } = {}): Promise<void> {
  checkPrefix(prefix);
  const stateDir = opts.stateDir ?? labStateDir(prefix);
  await stopProcess(stateDir, 'nats', opts.signal ?? 'SIGKILL', opts.graceMs ?? 3000);
}

/** `labStopNats` then `labStartNats` (same store dir), waiting until healthy. Returns the new pid. */
export async function labRestartNats(
  prefix: string,
  opts: { stateDir?: string; signal?: 'SIGKILL' | 'SIGTERM'; graceMs?: number; timeoutMs?: number } = {},
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

export async function waitAttached(prefix: string, stateDir: string, pid: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const st = labStatus(prefix, { stateDir });
    if (st.taps['tap-c'].attached && st.taps['tap-s'].attached) return;
    if (!pidAlive(pid)) {
      throw new LabError('LAB_GATEWAY', `the gateway (pid ${pid}) exited before attaching the TAPs; log:\n${tail(join(stateDir, 'gateway.log'))}`);
    }
    if (Date.now() > deadline) {
      throw new LabError('LAB_GATEWAY', `the gateway (pid ${pid}) did not attach tap-c and tap-s within ${timeoutMs} ms; log:\n${tail(join(stateDir, 'gateway.log'))}`);
    }
    await sleep(50);
  }
}
