/**
 * The lab: network namespaces ${prefix}-client, -server and -gw, the gateway's two TAPs on
 * bridges in gw (a cluster lab: per-node TAPs on hub bridges, and nats-server). This file builds
 * and removes it (`labUp`, `labDown`); its names are in ./names.ts, the commands it runs in
 * ./sys.ts, its processes in ./process.ts, the cluster lab's NATS and nodes in ./cluster.ts, what
 * it looks like in ./status.ts, commands inside it in ./exec.ts. How it is wired (subnet, MTU and
 * offloads, IPv6, unprivileged use, processes, the cluster lab): docs/ARCHITECTURE.md §6 ("The
 * lab in detail").
 *
 *   ${prefix}-client                ${prefix}-gw                              ${prefix}-server
 *   eth0 10.200.0.1/24 ─veth─ vc ─[br-c]─ tap-c ⇄ gateway ⇄ tap-s ─[br-s]─ vs ─veth─ eth0 10.200.0.2/24
 *
 * Invariants: `labUp` is idempotent (what exists is kept, settings re-applied); `labDown` needs
 * no memory of `labUp` and works after a crash (pid files with start times, then any process left
 * in the namespaces, then the namespaces).
 */

import { spawnSync } from 'node:child_process';
import { accessSync, constants, existsSync, mkdirSync, readdirSync, rmSync, rmdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { ALL_ROLES, type CoreRole, DEFAULT_LAB_CONFIG, LAB_IFACES, LAB_SYNC, type LabConfig, LabError, type LabRole, MAX_LAB_NATS, MAX_LAB_NODES, ROLES, checkPrefix, labStateDir, natsNodeAddr, natsNodeUrl, nodeTaps, nsName } from './names.js';
import { gwTaps, ipOf, linkExists, nsList, sh, sysctl, tapMultiQueue } from './sys.js';
import { labKill, labSpawn, readPidFile, terminate } from './process.js';
import { labStartNode, natsServerBin, startNats, waitAttached } from './cluster.js';

export * from './names.js';
export * from './process.js';
export * from './cluster.js';
export * from './status.js';
export * from './exec.js';

export interface LabOptions {
  prefix?: string;
  config?: Partial<LabConfig>;
  /** Spawned detached inside ${prefix}-gw (unless already running), logged to gateway.log. */
  gatewayCommand?: string[] | undefined;
  gatewayEnv?: Record<string, string>;
  /** Working directory of the gateway process (default: process.cwd()). */
  cwd?: string;
  /** Wait until the gateway has attached both TAPs (carrier up). Default 15000 ms; 0 = don't. */
  attachTimeoutMs?: number;
  stateDir?: string;
  /**
   * Cluster lab only: the command of node i (1..nodes), started with `labStartNode` unless it
   * runs already. Not waited for (see `labWaitNodesAttached`).
   */
  nodeCommand?: ((i: number, natsUrl: string) => string[]) | undefined;
  /** Cluster lab only: how long to wait for nats-server to be healthy. Default 15000 ms. */
  natsTimeoutMs?: number;
}

export interface LabInfo {
  prefix: string;
  stateDir: string;
  namespaces: Record<CoreRole, string> & { client2?: string; nats?: string };
  config: LabConfig;
  /** Address without prefix length, e.g. 10.200.0.1. */
  clientIp: string;
  serverIp: string;
  /** The IPv6 addresses without prefix length (config.ipv6), e.g. fd00:200::1; else undefined. */
  clientIp6: string | undefined;
  serverIp6: string | undefined;
  gatewayPid: number | undefined;
  /** Cluster nodes (config.nodes); 0 for the single-gateway lab. */
  nodes: number;
  /**
   * nats://10.250.0.254:4222 with nodes ≥ 1 (server 1), reachable from the gw namespace; else
   * undefined. Each node has its own address of the NATS servers: natsNodeUrl(i, natsServers).
   */
  natsUrl: string | undefined;
  /** NATS servers (config.natsServers with nodes ≥ 1, else 0) and their pids. */
  natsServers: number;
  natsPids: number[];
  /** Per node (index 0 = node 1): its TAP names and, if `nodeCommand` was given, its pid. */
  nodeInfo: Array<{ node: number; taps: { client: string; server: string }; pid: number | undefined }>;
  natsPid: number | undefined;
}

/**
 * What stops the lab from running here, as readable sentences (empty = fine). Cheap; used by
 * tests and the CLI to fail with a clear message instead of a cryptic `ip` error.
 */
export function labPreflight(): string[] {
  const problems: string[] = [];
  if (process.platform !== 'linux') return ['the lab needs Linux (network namespaces, TAP)'];
  if (process.getuid?.() !== 0) {
    problems.push(
      'the lab needs root, or mapped root in a user namespace: run as root or via netns/unpriv.sh ' +
        '(unshare -r -m -n with a tmpfs on /run)',
    );
  }
  for (const bin of ['ip', 'python3']) {
    if (spawnSync(bin, ['-V'], { stdio: 'ignore' }).error !== undefined) {
      problems.push(`\`${bin}\` not found in PATH (${bin === 'ip' ? 'iproute2' : 'python3'} is needed)`);
    }
  }
  if (!existsSync('/dev/net/tun')) {
    problems.push('/dev/net/tun is missing (modprobe tun)');
  } else {
    try {
      accessSync('/dev/net/tun', constants.R_OK | constants.W_OK);
    } catch {
      // In a user namespace, mapped root gets no access to a host device node it does not own.
      problems.push(
        '/dev/net/tun is not read+writable by this user: unprivileged TAPs need mode 0666 ' +
          '(the udev default; `chmod 0666 /dev/net/tun` as root)',
      );
    }
  }
  return problems;
}

/**
 * Create (or complete) the lab. Idempotent: what exists is kept, what is missing is created,
 * settings are re-applied; a gateway already running (live pid file) is not started again.
 */
export async function labUp(options: LabOptions = {}): Promise<LabInfo> {
  const prefix = options.prefix ?? 'tg';
  checkPrefix(prefix);
  const problems = labPreflight();
  if (problems.length > 0) throw new LabError('LAB_ENV', `cannot build the lab: ${problems.join('; ')}`);
  const config: LabConfig = { ...DEFAULT_LAB_CONFIG, ...options.config };
  const nodes = config.nodes;
  if (!Number.isInteger(nodes) || nodes < 0 || nodes > MAX_LAB_NODES) {
    throw new LabError('LAB_ARG', `nodes must be an integer in 0..${MAX_LAB_NODES} (got ${nodes})`);
  }
  if (!Number.isInteger(config.natsServers) || config.natsServers < 1 || config.natsServers > MAX_LAB_NATS) {
    throw new LabError('LAB_ARG', `natsServers must be an integer in 1..${MAX_LAB_NATS} (got ${config.natsServers})`);
  }
  if (nodes > 0) {
    config.hub = true; // every node's TAP must get every frame
    if (options.gatewayCommand !== undefined && options.gatewayCommand.length > 0) {
      throw new LabError('LAB_ARG', 'a cluster lab (nodes ≥ 1) has no single gateway: use nodeCommand / labStartNode');
    }
  }
  const natsBin = nodes > 0 ? natsServerBin() : undefined; // fail before anything is made
  const stateDir = options.stateDir ?? labStateDir(prefix);
  mkdirSync(stateDir, { recursive: true });
  const ns: Record<CoreRole, string> & { client2?: string } = { client: nsName(prefix, 'client'), server: nsName(prefix, 'server'), gw: nsName(prefix, 'gw') };
  if (config.clients === 2) ns.client2 = nsName(prefix, 'client2');
  const I = LAB_IFACES;
  const mtu = String(config.mtu);

  const existing = nsList();
  if (existing.has(ns.gw)) reconcileTaps(prefix, stateDir, nodes);
  const roles: LabRole[] = config.clients === 2 ? [...ROLES, 'client2'] : [...ROLES];
  if (nodes > 0) roles.push('nats');
  for (const role of roles) {
    const n = nsName(prefix, role);
    if (!existing.has(n)) sh(['ip', 'netns', 'add', n]);
    sh(['ip', '-n', n, 'link', 'set', 'lo', 'up']);
    const v6 = config.ipv6 && (role === 'client' || role === 'server' || role === 'client2');
    sysctl(n, 'net.ipv6.conf.all.disable_ipv6', v6 ? '0' : '1');
    sysctl(n, 'net.ipv6.conf.default.disable_ipv6', v6 ? '0' : '1');
  }

  // Bridges first, so ports can be enslaved as they appear.
  for (const br of [I.bridgeClient, I.bridgeServer]) {
    if (!linkExists(ns.gw, br)) {
      sh(['ip', '-n', ns.gw, 'link', 'add', br, 'type', 'bridge', 'stp_state', '0', 'mcast_snooping', '0']);
    }
    sh(['ip', '-n', ns.gw, 'link', 'set', br, 'type', 'bridge', 'ageing_time', config.hub ? '0' : '30000']);
  }
  /** Every port of a cluster lab's hubs: no learning, flood everything (ageing_time 0 already stops learning). */
  const hubPort = (dev: string): void => {
    if (nodes > 0) sh(['ip', '-n', ns.gw, 'link', 'set', 'dev', dev, 'type', 'bridge_slave', 'learning', 'off', 'flood', 'on', 'mcast_flood', 'on']);
  };
  const addTap = (tap: string, br: string): void => {
    const mq = config.queues > 1 && nodes === 0;
    if (linkExists(ns.gw, tap) && tapMultiQueue(ns.gw, tap) !== mq) sh(['ip', '-n', ns.gw, 'link', 'del', tap]);
    if (!linkExists(ns.gw, tap)) sh(['ip', '-n', ns.gw, 'tuntap', 'add', 'mode', 'tap', 'name', tap, ...(mq ? ['multi_queue'] : [])]);
    sh(['ip', '-n', ns.gw, 'link', 'set', tap, 'mtu', mtu, 'master', br, 'up']);
    hubPort(tap);
    // Node ports isolated from each other (as on a switch with protected / private-VLAN edge
    // ports): every node gets every endpoint's frames, none gets another node's output.
    if (nodes > 0) sh(['ip', '-n', ns.gw, 'link', 'set', 'dev', tap, 'type', 'bridge_slave', 'isolated', config.isolateNodes ? 'on' : 'off']);
  };

  const sides = [
    { role: 'client' as const, veth: I.vethClient, br: I.bridgeClient, tap: I.tapClient, addr: config.clientAddr, addr6: config.clientAddr6, mac: config.clientMac },
    { role: 'server' as const, veth: I.vethServer, br: I.bridgeServer, tap: I.tapServer, addr: config.serverAddr, addr6: config.serverAddr6, mac: config.serverMac },
  ] as Array<{ role: LabRole; veth: string; br: string; tap: string; addr: string; addr6: string; mac: string }>;
  // The second client: its own veth (vc2) on br-c, behind the same TAP.
  if (config.clients === 2) sides.push({ role: 'client2', veth: `${I.vethClient}2`, br: I.bridgeClient, tap: I.tapClient, addr: config.client2Addr, addr6: config.client2Addr6, mac: config.client2Mac });
  for (const s of sides) {
    const endNs = nsName(prefix, s.role);
    if (!linkExists(ns.gw, s.veth) || !linkExists(endNs, I.endpoint)) {
      // A half-built pair (crash mid-way) is removed and made again.
      sh(['ip', '-n', ns.gw, 'link', 'del', s.veth], true);
      sh(['ip', '-n', endNs, 'link', 'del', I.endpoint], true);
      sh(['ip', '-n', ns.gw, 'link', 'add', s.veth, 'type', 'veth', 'peer', 'name', I.endpoint, 'netns', endNs]);
    }
    sh(['ip', '-n', endNs, 'link', 'set', I.endpoint, 'address', s.mac, 'mtu', mtu]);
    sh(['ip', '-n', endNs, 'addr', 'replace', s.addr, 'dev', I.endpoint]);
    if (config.ipv6) sh(['ip', '-n', endNs, 'addr', 'replace', s.addr6, 'dev', I.endpoint, 'nodad']);
    sh(['ip', '-n', endNs, 'link', 'set', I.endpoint, 'up']);
    sh(['ip', '-n', ns.gw, 'link', 'set', s.veth, 'mtu', mtu, 'master', s.br, 'up']);
    hubPort(s.veth);
    if (nodes === 0) {
      addTap(s.tap, s.br);
    } else {
      for (let i = 1; i <= nodes; i++) addTap(s.br === I.bridgeClient ? nodeTaps(i).client : nodeTaps(i).server, s.br);
    }
    sh(['ip', '-n', ns.gw, 'link', 'set', s.br, 'mtu', mtu, 'up']);
    if (config.offloads === 'off') {
      const r = sh(['ip', 'netns', 'exec', endNs, 'ethtool', '-K', I.endpoint, 'tso', 'off', 'gso', 'off', 'gro', 'off', 'tx', 'off'], true);
      if (r.status !== 0) throw new LabError('LAB_ENV', `offloads 'off' needs ethtool: ${r.stderr.trim() || r.error?.message}`);
    }
  }
  const nsOut: LabInfo['namespaces'] = { ...ns, ...(nodes > 0 ? { nats: nsName(prefix, 'nats') } : {}) };
  writeFileSync(join(stateDir, 'lab.json'), JSON.stringify({ prefix, config, namespaces: nsOut }, null, 2));

  let natsPid: number | undefined;
  let natsPids: number[] = [];
  const nodeInfo: LabInfo['nodeInfo'] = [];
  if (nodes > 0) {
    const natsNs = nsName(prefix, 'nats');
    const S = LAB_SYNC;
    if (!linkExists(ns.gw, S.gwIface) || !linkExists(natsNs, S.natsIface)) {
      sh(['ip', '-n', ns.gw, 'link', 'del', S.gwIface], true);
      sh(['ip', '-n', natsNs, 'link', 'del', S.natsIface], true);
      sh(['ip', '-n', ns.gw, 'link', 'add', S.gwIface, 'type', 'veth', 'peer', 'name', S.natsIface, 'netns', natsNs]);
    }
    sh(['ip', '-n', ns.gw, 'addr', 'replace', S.gwAddr, 'dev', S.gwIface]);
    sh(['ip', '-n', ns.gw, 'link', 'set', S.gwIface, 'up']);
    sh(['ip', '-n', natsNs, 'addr', 'replace', S.natsAddr, 'dev', S.natsIface]);
    // Each node's own address of the NATS servers (a partition cuts one: labPartitionNode).
    for (let i = 1; i <= nodes; i++) sh(['ip', '-n', natsNs, 'addr', 'replace', `${natsNodeAddr(i)}/24`, 'dev', S.natsIface]);
    sh(['ip', '-n', natsNs, 'link', 'set', S.natsIface, 'up']);
    natsPids = await startNats(prefix, stateDir, natsBin!, options.natsTimeoutMs ?? 15_000, config.natsServers);
    natsPid = natsPids[0];
    for (let i = 1; i <= nodes; i++) {
      let pid: number | undefined;
      if (options.nodeCommand !== undefined) {
        pid = labStartNode(prefix, i, options.nodeCommand(i, natsNodeUrl(i, config.natsServers)), {
          ...(options.gatewayEnv !== undefined ? { env: options.gatewayEnv } : {}),
          ...(options.cwd !== undefined ? { cwd: options.cwd } : {}),
          stateDir,
        });
      }
      nodeInfo.push({ node: i, taps: nodeTaps(i), pid });
    }
  }

  let gatewayPid: number | undefined;
  if (options.gatewayCommand !== undefined && options.gatewayCommand.length > 0) {
    const running = readPidFile(stateDir, 'gateway');
    if (running !== undefined && running.alive) {
      gatewayPid = running.pid;
    } else {
      gatewayPid = labSpawn(prefix, 'gw', 'gateway', options.gatewayCommand, {
        ...(options.gatewayEnv !== undefined ? { env: options.gatewayEnv } : {}),
        ...(options.cwd !== undefined ? { cwd: options.cwd } : {}),
        stateDir,
      });
    }
    const wait = options.attachTimeoutMs ?? 15_000;
    if (wait > 0) await waitAttached(prefix, stateDir, gatewayPid, wait, config.queues);
  }
  return {
    prefix,
    stateDir,
    namespaces: nsOut,
    config,
    clientIp: ipOf(config.clientAddr),
    serverIp: ipOf(config.serverAddr),
    clientIp6: config.ipv6 ? ipOf(config.clientAddr6) : undefined,
    serverIp6: config.ipv6 ? ipOf(config.serverAddr6) : undefined,
    gatewayPid,
    nodes,
    natsUrl: nodes > 0 ? LAB_SYNC.natsUrl : undefined,
    natsServers: nodes > 0 ? config.natsServers : 0,
    natsPids,
    nodeInfo,
    natsPid,
  };
}


/**
 * Make the gw namespace's TAPs fit `nodes` before (re)building: a lab changes between classic and
 * cluster, or loses nodes, only when no process uses what goes away.
 */
function reconcileTaps(prefix: string, stateDir: string, nodes: number): void {
  const gw = nsName(prefix, 'gw');
  const t = gwTaps(prefix);
  if (nodes === 0) {
    if (t.nodes.size > 0 || nsList().has(nsName(prefix, 'nats'))) {
      throw new LabError('LAB_ARG', `lab '${prefix}' is a cluster lab (node TAPs, nats): \`lab down\` first to make a single-gateway lab`);
    }
    return;
  }
  if (t.classic.length > 0) {
    if (readPidFile(stateDir, 'gateway')?.alive === true) {
      throw new LabError('LAB_ARG', `lab '${prefix}' runs a single gateway on tap-c/tap-s: \`lab down\` first to make a cluster lab`);
    }
    for (const tap of t.classic) sh(['ip', '-n', gw, 'link', 'del', tap], true);
  }
  for (const i of t.nodes) {
    if (i <= nodes) continue;
    if (readPidFile(stateDir, `node${i}`)?.alive === true) {
      throw new LabError('LAB_ARG', `node ${i} of lab '${prefix}' is running: stop it (labKillNode) before shrinking the lab to ${nodes} nodes`);
    }
    for (const tap of [`tap-c${i}`, `tap-s${i}`]) sh(['ip', '-n', gw, 'link', 'del', tap], true);
  }
}

// ---------------------------------------------------------------------------------------------
// Cluster lab: nats-server and node processes.

/**
 * Remove the lab: processes from pid files, any process left in its namespaces, the
 * namespaces (and so every veth, bridge and TAP in them), the state dir. Harmless when nothing
 * exists; needs nothing from a previous run but the prefix.
 */
export async function labDown(prefix = 'tg', opts: { stateDir?: string } = {}): Promise<void> {
  checkPrefix(prefix);
  const stateDir = opts.stateDir ?? labStateDir(prefix);
  if (existsSync(stateDir)) {
    for (const f of readdirSync(stateDir)) {
      if (f.endsWith('.pid')) await labKill(prefix, f.slice(0, -4), { stateDir, graceMs: 2000 });
    }
  }
  const existing = nsList();
  for (const role of ALL_ROLES) {
    const ns = nsName(prefix, role);
    if (!existing.has(ns)) continue;
    // Whatever still runs in our namespace was started for the lab (labExec, a crashed test).
    const r = sh(['ip', 'netns', 'pids', ns], true);
    const pids = r.stdout.split('\n').map(Number).filter((n) => Number.isInteger(n) && n > 0 && n !== process.pid);
    for (const pid of pids) await terminate(pid, false, 500);
    sh(['ip', 'netns', 'del', ns], true);
  }
  rmSync(stateDir, { recursive: true, force: true });
  try {
    rmdirSync(dirname(stateDir)); // /run/tapgate, if no other lab uses it
  } catch {
    /* not empty, or not ours */
  }
}
