/**
 * Running the commands the lab is made with (ip, sysctl) and reading what the kernel has: namespaces,
 * links. Synchronous: the lab is set up and torn down step by step.
 */
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { closeSync, fstatSync, openSync, readFileSync, readSync } from 'node:fs';
import { LAB_IFACES, LAB_SYNC, LabError, nsName } from './names.js';

export function sh(argv: string[], allowFail = false): SpawnSyncReturns<string> {
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8' });
  if (r.error !== undefined) throw new LabError('LAB_ENV', `cannot run ${argv[0]}: ${r.error.message}`);
  if (r.status !== 0 && !allowFail) {
    throw new LabError('LAB_CMD', `\`${argv.join(' ')}\` failed (${r.status}): ${r.stderr.trim()}`);
  }
  return r;
}

export function nsList(): Set<string> {
  const r = sh(['ip', 'netns', 'list'], true);
  const out = new Set<string>();
  if (r.status !== 0) return out;
  for (const line of r.stdout.split('\n')) {
    const name = line.split(' ')[0];
    if (name) out.add(name);
  }
  return out;
}

export function linkExists(ns: string, dev: string): boolean {
  return sh(['ip', '-n', ns, 'link', 'show', 'dev', dev], true).status === 0;
}

/** A TAP in `ns` was made multi-queue (`ip -d link` says `multi_queue`). */
export function tapMultiQueue(ns: string, dev: string): boolean {
  return /\bmulti_queue\b/.test(sh(['ip', '-n', ns, '-d', '-o', 'link', 'show', 'dev', dev], true).stdout);
}

interface LinkInfo {
  flags?: string[];
  master?: string;
}

export function linkInfo(ns: string, dev: string): LinkInfo | undefined {
  const r = sh(['ip', '-n', ns, '-j', 'link', 'show', 'dev', dev], true);
  if (r.status !== 0) return undefined;
  try {
    const arr = JSON.parse(r.stdout) as LinkInfo[];
    return arr[0];
  } catch {
    return undefined;
  }
}

/**
 * How many queues of TAP `dev` in `ns` a process has attached: the kernel lists a tx-K in sysfs
 * for each (tun.c sets the real queue count on every attach and detach); 0 when it cannot tell.
 */
export function attachedQueues(ns: string, dev: string): number {
  const r = sh(['ip', 'netns', 'exec', ns, 'ls', `/sys/class/net/${dev}/queues`], true);
  if (r.status !== 0) return 0;
  return r.stdout.split(/\s+/).filter((q) => q.startsWith('tx-')).length;
}

/** `dev`'s addresses in `ns` as "address/prefix", IPv4 then IPv6, link-local left out. */
export function endpointAddresses(ns: string, dev: string): string[] {
  const r = sh(['ip', '-n', ns, '-j', 'addr', 'show', 'dev', dev], true);
  if (r.status !== 0) return [];
  try {
    const arr = JSON.parse(r.stdout) as Array<{ addr_info?: Array<{ family: string; local: string; prefixlen: number; scope: string }> }>;
    const info = arr[0]?.addr_info ?? [];
    return info.filter((a) => a.scope !== 'link').sort((a, b) => (a.family === b.family ? 0 : a.family === 'inet' ? -1 : 1)).map((a) => `${a.local}/${a.prefixlen}`);
  } catch {
    return [];
  }
}

export function sysctl(ns: string, key: string, value: string): void {
  sh(['ip', 'netns', 'exec', ns, 'sysctl', '-q', '-w', `${key}=${value}`], true);
}

export function ipOf(cidr: string): string {
  return cidr.split('/')[0]!;
}

export function tail(file: string, lines = 30): string {
  try {
    return readFileSync(file, 'utf8').split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

/**
 * What `file` holds from byte `offset` on, at most `max` bytes (a log polled for an answer: only
 * what was written since is read, not the whole file each time); '' when there is nothing.
 */
export function readSince(file: string, offset: number, max = 1 << 20): string {
  let fd: number | undefined;
  try {
    fd = openSync(file, 'r');
    const size = fstatSync(fd).size;
    const n = Math.max(0, Math.min(max, size - offset));
    if (n === 0) return '';
    const buf = Buffer.alloc(n);
    const got = readSync(fd, buf, 0, n, offset);
    return buf.toString('utf8', 0, got);
  } catch {
    return '';
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

// ---------------------------------------------------------------------------------------------
// Processes: pid files with the kernel start time, so a recycled pid is never killed.

/** TAPs in gw by kind: the classic pair and cluster node numbers. */
export function gwTaps(prefix: string): { classic: string[]; nodes: Set<number> } {
  const r = sh(['ip', '-n', nsName(prefix, 'gw'), '-j', 'link', 'show'], true);
  const out = { classic: [] as string[], nodes: new Set<number>() };
  if (r.status !== 0) return out;
  let links: Array<{ ifname?: string }> = [];
  try {
    links = JSON.parse(r.stdout) as Array<{ ifname?: string }>;
  } catch {
    return out;
  }
  for (const l of links) {
    const name = l.ifname ?? '';
    if (name === LAB_IFACES.tapClient || name === LAB_IFACES.tapServer) out.classic.push(name);
    const m = /^tap-[cs]([0-9]+)$/.exec(name);
    if (m !== null) out.nodes.add(Number(m[1]));
  }
  return out;
}

const HEALTH_PROBE = [
  'import sys, urllib.request',
  'try:',
  '    r = urllib.request.urlopen(sys.argv[1], timeout=1)',
  '    sys.stdout.write(r.read().decode())',
  'except Exception as e:',
  '    sys.stdout.write(getattr(e, "read", lambda: b"")().decode() if hasattr(e, "read") else "")',
  '    sys.exit(1)',
].join('\n');

/**
 * One look at a nats-server's /healthz from the gw namespace (by its monitoring port): JetStream
 * enabled, or with `current`, also current in its cluster (a meta leader known, its assets
 * caught up).
 */
export function natsHealthy(prefix: string, monitorPort: number = LAB_SYNC.monitorPort, current = false): boolean {
  const url = `http://${LAB_SYNC.natsIp}:${monitorPort}/healthz${current ? '' : '?js-enabled-only=true'}`;
  const r = spawnSync('ip', ['netns', 'exec', nsName(prefix, 'gw'), 'python3', '-c', HEALTH_PROBE, url], { encoding: 'utf8', timeout: 3000 });
  return r.status === 0 && /"status"\s*:\s*"ok"/.test(r.stdout);
}
