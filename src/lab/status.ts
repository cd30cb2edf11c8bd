/**
 * What the lab looks like now (`tapgate lab status`): namespaces, TAPs and whether a gateway
 * holds them, lab processes, the cluster nodes and NATS.
 */
import { existsSync, readdirSync } from 'node:fs';
import { type CoreRole, LAB_IFACES, LAB_SYNC, checkPrefix, labStateDir, nsName } from './names.js';
import { type LabProcess, readPidFile } from './process.js';
import { endpointAddresses, gwTaps, linkInfo, natsHealthy, nsList } from './sys.js';

export interface LabStatus {
  prefix: string;
  stateDir: string;
  /** `client2` only when that namespace exists. */
  namespaces: Record<CoreRole, boolean> & { client2?: boolean; nats?: boolean };
  /** All three namespaces exist. */
  up: boolean;
  /** The endpoints' addresses on eth0 with their prefix length, both families (link-local left out). */
  addresses: { client: string[]; server: string[]; client2?: string[] };
  /** Per TAP: exists in gw, and a process is attached (no NO-CARRIER). */
  taps: Record<'tap-c' | 'tap-s', { exists: boolean; attached: boolean }>;
  processes: LabProcess[];
  /** Cluster nodes found (node TAPs in gw, or node processes), by node number; [] in a classic lab. */
  nodes: LabNodeStatus[];
  /** The sync side: present when the nats namespace exists or a `nats` pid file does. */
  nats?: { namespace: boolean; process: LabProcess | undefined; healthy: boolean; url: string };
}

export interface TapStatus {
  name: string;
  exists: boolean;
  attached: boolean;
  /** The bridge it is enslaved to. */
  master: string | undefined;
}

export interface LabNodeStatus {
  node: number;
  client: TapStatus;
  server: TapStatus;
  process: LabProcess | undefined;
}

/**
 * What of the lab exists and runs. In a cluster lab also the nodes (TAPs, attached or not, and
 * process) and nats (namespace, process, /healthz from gw — `probeNats: false` skips that probe,
 * which runs python3 in gw, and reports healthy false).
 */
export function labStatus(prefix = 'tg', opts: { stateDir?: string; probeNats?: boolean } = {}): LabStatus {
  checkPrefix(prefix);
  const stateDir = opts.stateDir ?? labStateDir(prefix);
  const existing = nsList();
  const hasNats = existing.has(nsName(prefix, 'nats'));
  const namespaces = {
    client: existing.has(nsName(prefix, 'client')),
    server: existing.has(nsName(prefix, 'server')),
    gw: existing.has(nsName(prefix, 'gw')),
    ...(existing.has(nsName(prefix, 'client2')) ? { client2: true } : {}),
    ...(hasNats ? { nats: true } : {}),
  };
  const tap = (dev: string): { exists: boolean; attached: boolean } => {
    const t = tapStatus(dev);
    return { exists: t.exists, attached: t.attached };
  };
  function tapStatus(dev: string): TapStatus {
    if (!namespaces.gw) return { name: dev, exists: false, attached: false, master: undefined };
    const li = linkInfo(nsName(prefix, 'gw'), dev);
    if (li === undefined) return { name: dev, exists: false, attached: false, master: undefined };
    const flags = li.flags ?? [];
    return { name: dev, exists: true, attached: flags.includes('UP') && !flags.includes('NO-CARRIER'), master: li.master };
  }
  const processes: LabProcess[] = [];
  if (existsSync(stateDir)) {
    for (const f of readdirSync(stateDir)) {
      if (!f.endsWith('.pid')) continue;
      const name = f.slice(0, -4);
      const p = readPidFile(stateDir, name);
      if (p !== undefined) processes.push({ name, pid: p.pid, alive: p.alive, role: p.role, argv: p.argv, log: p.log });
    }
  }
  const addrsOf = (role: 'client' | 'server' | 'client2'): string[] => (existing.has(nsName(prefix, role)) ? endpointAddresses(nsName(prefix, role), LAB_IFACES.endpoint) : []);
  const addresses = { client: addrsOf('client'), server: addrsOf('server'), ...(namespaces.client2 === true ? { client2: addrsOf('client2') } : {}) };
  const nodeNums = namespaces.gw ? gwTaps(prefix).nodes : new Set<number>();
  for (const p of processes) {
    const m = /^node([0-9]+)$/.exec(p.name);
    if (m !== null) nodeNums.add(Number(m[1]));
  }
  const nodes: LabNodeStatus[] = [...nodeNums]
    .sort((a, b) => a - b)
    .map((i) => ({
      node: i,
      client: tapStatus(`tap-c${i}`),
      server: tapStatus(`tap-s${i}`),
      process: processes.find((p) => p.name === `node${i}`),
    }));
  const natsProc = processes.find((p) => p.name === 'nats');
  const nats =
    hasNats || natsProc !== undefined
      ? {
          namespace: hasNats,
          process: natsProc,
          healthy: opts.probeNats !== false && hasNats && namespaces.gw && natsProc?.alive === true && natsHealthy(prefix),
          url: LAB_SYNC.natsUrl,
        }
      : undefined;
  return {
    prefix,
    stateDir,
    namespaces,
    up: namespaces.client && namespaces.server && namespaces.gw,
    addresses,
    taps: { 'tap-c': tap(LAB_IFACES.tapClient), 'tap-s': tap(LAB_IFACES.tapServer) },
    processes,
    nodes,
    ...(nats !== undefined ? { nats } : {}),
  };
}
