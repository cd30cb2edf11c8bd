/**
 * Processes the lab starts (the gateway, servers, cluster nodes): detached, logging to
 * <stateDir>/<name>.log, with <stateDir>/<name>.pid ({pid, startTime, ...}) so that they are found
 * and stopped after a crash of whoever started them, the start time guarding against pid reuse.
 */
import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { LabError, type LabRole, checkPrefix, labStateDir, nsName } from './names.js';
import { sleep } from './sys.js';

export interface LabProcess {
  name: string;
  pid: number;
  alive: boolean;
  role: LabRole;
  argv: string[];
  log: string;
}

export async function stopProcess(stateDir: string, name: string, sig: 'SIGKILL' | 'SIGTERM', graceMs: number): Promise<number | undefined> {
  const p = readPidFile(stateDir, name);
  let pid: number | undefined;
  if (p !== undefined && p.alive) {
    pid = p.pid;
    if (sig === 'SIGKILL') {
      signalGroup(p.pid, 'SIGKILL');
      const hard = Date.now() + 2000;
      while (pidAlive(p.pid) && Date.now() < hard) await sleep(5);
      await waitReaped(p.pid);
    } else {
      await terminate(p.pid, true, graceMs);
    }
  }
  rmSync(join(stateDir, `${name}.pid`), { force: true });
  return pid;
}

interface PidFile {
  pid: number;
  startTime: string;
  role: LabRole;
  argv: string[];
  log: string;
}

function procStartTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Field 22 (starttime), counted after the ")" that ends the command name.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return rest[19];
  } catch {
    return undefined;
  }
}

export function pidAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

export function readPidFile(stateDir: string, name: string): (PidFile & { alive: boolean }) | undefined {
  try {
    const p = JSON.parse(readFileSync(join(stateDir, `${name}.pid`), 'utf8')) as PidFile;
    const alive = pidAlive(p.pid) && procStartTime(p.pid) === p.startTime;
    return { ...p, alive };
  } catch {
    return undefined;
  }
}

/**
 * Start a long-running process detached inside a lab namespace (`ip netns exec`), stdout and
 * stderr to <stateDir>/<name>.log, pid in <stateDir>/<name>.pid. Returns its pid. `labDown`
 * (or `labKill`) ends it.
 */
export function labSpawn(
  prefix: string,
  role: LabRole,
  name: string,
  argv: string[],
  opts: { env?: Record<string, string>; cwd?: string; stateDir?: string } = {},
): number {
  checkPrefix(prefix);
  if (!/^[a-z0-9_-]+$/i.test(name)) throw new LabError('LAB_ARG', `process name '${name}' must be [a-z0-9_-]+`);
  if (argv.length === 0) throw new LabError('LAB_ARG', 'empty command');
  const stateDir = opts.stateDir ?? labStateDir(prefix);
  mkdirSync(stateDir, { recursive: true });
  const log = join(stateDir, `${name}.log`);
  const fd = openSync(log, 'a');
  try {
    // `ip netns exec` execs the command itself: the pid is the command's, and `detached`
    // makes it a process-group leader so labDown can signal its children too.
    const child = spawn('ip', ['netns', 'exec', nsName(prefix, role), ...argv], {
      detached: true,
      stdio: ['ignore', fd, fd],
      cwd: opts.cwd ?? process.cwd(),
      env: { ...process.env, ...opts.env },
    });
    if (child.pid === undefined) throw new LabError('LAB_CMD', `cannot spawn ${argv.join(' ')}`);
    child.on('error', () => {});
    child.unref();
    const pf: PidFile = { pid: child.pid, startTime: procStartTime(child.pid) ?? '', role, argv, log };
    writeFileSync(join(stateDir, `${name}.pid`), JSON.stringify(pf));
    return child.pid;
  } finally {
    closeSync(fd);
  }
}

/** End a process started by `labSpawn`/`labUp` (SIGTERM to its group, SIGKILL after graceMs). */
export async function labKill(prefix: string, name: string, opts: { stateDir?: string; graceMs?: number } = {}): Promise<void> {
  const stateDir = opts.stateDir ?? labStateDir(prefix);
  const p = readPidFile(stateDir, name);
  if (p !== undefined && p.alive) await terminate(p.pid, true, opts.graceMs ?? 3000);
  rmSync(join(stateDir, `${name}.pid`), { force: true });
}

function signalGroup(pid: number, sig: NodeJS.Signals, group = true): void {
  try {
    process.kill(group ? -pid : pid, sig);
  } catch {
    try {
      process.kill(pid, sig);
    } catch {
      /* already gone */
    }
  }
}

export async function terminate(pid: number, group: boolean, graceMs: number): Promise<void> {
  const signal = (sig: NodeJS.Signals): void => signalGroup(pid, sig, group);
  signal('SIGTERM');
  const deadline = Date.now() + graceMs;
  while (pidAlive(pid) && Date.now() < deadline) await sleep(25);
  if (pidAlive(pid)) signal('SIGKILL');
  const hard = Date.now() + 2000;
  while (pidAlive(pid) && Date.now() < hard) await sleep(25);
  await waitReaped(pid);
}

/**
 * A dead child of this process stays a zombie (/proc/<pid> exists) until the event loop reaps it:
 * give it a moment, so "gone" means gone to whoever looks next. Bounded: a zombie whose parent is
 * not us nor init may stay.
 */
async function waitReaped(pid: number, ms = 500): Promise<void> {
  const end = Date.now() + ms;
  while (!pidAlive(pid) && existsSync(`/proc/${pid}`) && Date.now() < end) await sleep(5);
}
