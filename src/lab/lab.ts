/**
 * The lab (docs/ARCHITECTURE.md §6): three network namespaces and the gateway's two TAPs on bridges.
 *
 *   ${prefix}-client                ${prefix}-gw                              ${prefix}-server
 *   eth0 10.200.0.1/24 ─veth─ vc ─[br-c]─ tap-c ⇄ gateway ⇄ tap-s ─[br-s]─ vs ─veth─ eth0 10.200.0.2/24
 *
 * Client and server are on one IP subnet: the gateway is an Ethernet bridge (it forwards or
 * rewrites frames between tap-c and tap-s; nothing is routed). The TAPs are persistent
 * (`ip tuntap add mode tap`) so the gateway process, started inside ${prefix}-gw, attaches by
 * name; until it does, they have NO-CARRIER and nothing passes.
 *
 * MTU and offloads. Every link gets `config.mtu` (1500). Offloads stay at the kernel defaults
 * (`offloads: 'on'`): the veths do TSO/GSO and TX checksum offload, so the endpoints emit
 * 64 KiB GSO skbs with partial checksums. That is what TAP GSO needs: a gateway attached with a
 * vnet header receives them whole (virtio header gso_type TCPV4, NEEDS_CSUM). A gateway attached
 * WITHOUT a vnet header is also correct with offloads on, because the TAP then advertises no
 * offload features and the kernel segments and completes checksums in software before the frame
 * reaches the TAP (validate_xmit_skb) — the TAP addon explicitly clears TUNSETOFFLOAD for that
 * reason, since offload flags persist on a persistent TAP. `offloads: 'off'` (ethtool -K tso gso
 * gro tx off on the endpoint veths) makes the endpoints themselves emit MTU-sized, fully
 * checksummed frames — for captures that should look like a real wire.
 * IPv6 is disabled in all three namespaces (the gateway is IPv4; no RS/MLD noise on the TAPs).
 *
 * Unprivileged use: run inside `unshare -r -m -n` with a tmpfs on /run (see netns/unpriv.sh);
 * the state dir is then /run/tapgate/<prefix> on that tmpfs. Everything dies with the namespace.
 *
 * Processes the lab starts (the gateway, servers from `labSpawn`) are detached, log to
 * <stateDir>/<name>.log and have <stateDir>/<name>.pid ({pid, startTime, ...}); `labDown` kills
 * them (checking the start time against pid reuse), then any process left in the lab's
 * namespaces, then deletes the namespaces (which deletes every link in them). It needs no
 * memory of `labUp`: it works after a crash.
 *
 * Cluster lab (`nodes: N` ≥ 1, issue 8). N gateway nodes share the two segments instead of one
 * gateway owning them, so both bridges are hubs (ageing_time 0, `learning off` on every port:
 * every frame floods to every port) and each node i gets its own persistent TAP pair
 * `tap-c<i>` on br-c and `tap-s<i>` on br-s (tap-c/tap-s are not made). The nodes sync over NATS
 * JetStream on a separate network:
 *
 *   ${prefix}-gw: sync 10.250.0.1/24 ─veth─ eth0 10.250.0.254/24 :${prefix}-nats (nats-server)
 *
 * nats-server (JetStream on, store <stateDir>/nats-js, client port 4222, monitoring port 8222)
 * is a lab process named `nats`; `labUp` returns once /healthz answers ok from the gw namespace.
 * Node processes are lab processes `node<i>` in gw (`labStartNode`, `labKillNode`);
 * `labStopNats`/`labStartNats`/`labRestartNats` make a sync outage. A hub floods frames a node
 * writes to its TAP to the other nodes' TAPs too: recognising those is the nodes' business.
 */

import { spawn, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import {
  accessSync,
  closeSync,
  constants,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  readdirSync,
  rmSync,
  rmdirSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export type LabRole = 'client' | 'server' | 'gw' | 'client2' | 'nats';
/** The namespaces every lab has (`client2` only with `clients: 2`). */
type CoreRole = 'client' | 'server' | 'gw';

export interface LabConfig {
  /** MTU of every lab link (veths, bridges, TAPs). */
  mtu: number;
  /** 'on': kernel defaults (TSO/GSO/csum offload, needed to see GSO frames); 'off': ethtool them off. */
  offloads: 'on' | 'off';
  /** CIDR of the client's eth0. */
  clientAddr: string;
  /** CIDR of the server's eth0. */
  serverAddr: string;
  /**
   * Cluster lab: node TAPs are isolated bridge ports (they receive the endpoints' frames but not
   * each other's), the layout the README's Cluster section recommends; false lets every node see
   * the others' output too (the nodes' own loop guards then have to drop it).
   */
  isolateNodes: boolean;
  /** Fixed MACs, so captures and NAT rules are reproducible. */
  clientMac: string;
  serverMac: string;
  /** Bridges forget MACs at once (ageing_time 0): every frame floods, as for cluster nodes (§5). */
  hub: boolean;
  /** Leave IPv6 enabled in the namespaces. */
  ipv6: boolean;
  /** Client namespaces on br-c: 1, or 2 (adds ${prefix}-client2 with client2Addr/client2Mac). */
  clients: 1 | 2;
  client2Addr: string;
  client2Mac: string;
  /**
   * Cluster gateway nodes: 0 = one gateway on tap-c/tap-s (the classic lab); N ≥ 1 = hub
   * bridges, TAPs tap-c<i>/tap-s<i> for i in 1..N, the sync network and nats-server.
   */
  nodes: number;
}

export const DEFAULT_LAB_CONFIG: LabConfig = {
  mtu: 1500,
  offloads: 'on',
  clientAddr: '10.200.0.1/24',
  serverAddr: '10.200.0.2/24',
  clientMac: '02:00:0a:c8:00:01',
  serverMac: '02:00:0a:c8:00:02',
  hub: false,
  isolateNodes: true,
  ipv6: false,
  clients: 1,
  client2Addr: '10.200.0.3/24',
  client2Mac: '02:00:0a:c8:00:03',
  nodes: 0,
};

/** Most nodes a cluster lab has (TAP names stay short). */
export const MAX_LAB_NODES = 32;

/** The cluster lab's sync network and NATS server (`nodes` ≥ 1). */
export const LAB_SYNC = {
  /** veth in gw. */
  gwIface: 'sync',
  gwAddr: '10.250.0.1/24',
  /** veth in ${prefix}-nats. */
  natsIface: 'eth0',
  natsAddr: '10.250.0.254/24',
  natsIp: '10.250.0.254',
  clientPort: 4222,
  monitorPort: 8222,
  natsUrl: 'nats://10.250.0.254:4222',
  monitorUrl: 'http://10.250.0.254:8222',
  /** JetStream store, under the state dir. */
  storeDir: 'nats-js',
} as const;

/** Where Debian's nats-server package installs the server. */
export const NATS_SERVER_BIN = '/usr/sbin/nats-server';

/** TAP names of cluster node i (1-based): tap-c<i> on br-c, tap-s<i> on br-s. */
export function nodeTaps(i: number): { client: string; server: string } {
  checkNode(i);
  return { client: `tap-c${i}`, server: `tap-s${i}` };
}

/** Lab process name of cluster node i. */
export function nodeProcessName(i: number): string {
  checkNode(i);
  return `node${i}`;
}

function checkNode(i: number): void {
  if (!Number.isInteger(i) || i < 1 || i > MAX_LAB_NODES) {
    throw new LabError('LAB_ARG', `node number ${i} must be an integer in 1..${MAX_LAB_NODES}`);
  }
}

/** Interface names (fixed: they live in the lab's own namespaces). */
export const LAB_IFACES = {
  /** The endpoint's interface in client and server. */
  endpoint: 'eth0',
  tapClient: 'tap-c',
  tapServer: 'tap-s',
  bridgeClient: 'br-c',
  bridgeServer: 'br-s',
  vethClient: 'vc',
  vethServer: 'vs',
} as const;

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
  gatewayPid: number | undefined;
  /** Cluster nodes (config.nodes); 0 for the single-gateway lab. */
  nodes: number;
  /** nats://10.250.0.254:4222 with nodes ≥ 1, reachable from the gw namespace; else undefined. */
  natsUrl: string | undefined;
  /** Per node (index 0 = node 1): its TAP names and, if `nodeCommand` was given, its pid. */
  nodeInfo: Array<{ node: number; taps: { client: string; server: string }; pid: number | undefined }>;
  natsPid: number | undefined;
}

export interface LabProcess {
  name: string;
  pid: number;
  alive: boolean;
  role: LabRole;
  argv: string[];
  log: string;
}

export interface LabStatus {
  prefix: string;
  stateDir: string;
  /** `client2` only when that namespace exists. */
  namespaces: Record<CoreRole, boolean> & { client2?: boolean; nats?: boolean };
  /** All three namespaces exist. */
  up: boolean;
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

export interface ExecResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface ExecOptions {
  timeoutMs?: number;
  input?: string;
  env?: Record<string, string>;
  cwd?: string;
}

/** A lab operation failed; `code` names what. */
export class LabError extends Error {
  constructor(
    readonly code: 'LAB_ENV' | 'LAB_CMD' | 'LAB_GATEWAY' | 'LAB_ARG' | 'LAB_NATS',
    message: string,
  ) {
    super(message);
    this.name = 'LabError';
  }
}

const ROLES: readonly CoreRole[] = ['client', 'server', 'gw'];
/** Every namespace labDown removes. */
const ALL_ROLES: readonly LabRole[] = ['client', 'client2', 'server', 'gw', 'nats'];
const PREFIX_RE = /^[a-z][a-z0-9]{0,7}$/;

/** netns/icmp-ping.py, from src/lab/ and dist/lab/ alike. */
export const PING_SCRIPT = fileURLToPath(new URL('../../netns/icmp-ping.py', import.meta.url));

export function nsName(prefix: string, role: LabRole): string {
  return `${prefix}-${role}`;
}

/** Where pid files and logs go: /run/tapgate/<prefix> as (mapped) root, else $XDG_RUNTIME_DIR. */
export function labStateDir(prefix: string): string {
  if (process.getuid?.() === 0) return join('/run/tapgate', prefix);
  return join(process.env['XDG_RUNTIME_DIR'] ?? tmpdir(), 'tapgate', prefix);
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

function checkPrefix(prefix: string): void {
  if (!PREFIX_RE.test(prefix)) {
    throw new LabError('LAB_ARG', `lab prefix '${prefix}' must match ${PREFIX_RE} (it names namespaces)`);
  }
}

function sh(argv: string[], allowFail = false): SpawnSyncReturns<string> {
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8' });
  if (r.error !== undefined) throw new LabError('LAB_ENV', `cannot run ${argv[0]}: ${r.error.message}`);
  if (r.status !== 0 && !allowFail) {
    throw new LabError('LAB_CMD', `\`${argv.join(' ')}\` failed (${r.status}): ${r.stderr.trim()}`);
  }
  return r;
}

function nsList(): Set<string> {
  const r = sh(['ip', 'netns', 'list'], true);
  const out = new Set<string>();
  if (r.status !== 0) return out;
  for (const line of r.stdout.split('\n')) {
    const name = line.split(' ')[0];
    if (name) out.add(name);
  }
  return out;
}

function linkExists(ns: string, dev: string): boolean {
  return sh(['ip', '-n', ns, 'link', 'show', 'dev', dev], true).status === 0;
}

interface LinkInfo {
  flags?: string[];
  master?: string;
}

function linkInfo(ns: string, dev: string): LinkInfo | undefined {
  const r = sh(['ip', '-n', ns, '-j', 'link', 'show', 'dev', dev], true);
  if (r.status !== 0) return undefined;
  try {
    const arr = JSON.parse(r.stdout) as LinkInfo[];
    return arr[0];
  } catch {
    return undefined;
  }
}

function sysctl(ns: string, key: string, value: string): void {
  sh(['ip', 'netns', 'exec', ns, 'sysctl', '-q', '-w', `${key}=${value}`], true);
}

function ipOf(cidr: string): string {
  return cidr.split('/')[0]!;
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
    if (!config.ipv6) {
      sysctl(n, 'net.ipv6.conf.all.disable_ipv6', '1');
      sysctl(n, 'net.ipv6.conf.default.disable_ipv6', '1');
    }
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
    if (!linkExists(ns.gw, tap)) sh(['ip', '-n', ns.gw, 'tuntap', 'add', 'mode', 'tap', 'name', tap]);
    sh(['ip', '-n', ns.gw, 'link', 'set', tap, 'mtu', mtu, 'master', br, 'up']);
    hubPort(tap);
    // Node ports isolated from each other (as on a switch with protected / private-VLAN edge
    // ports): every node gets every endpoint's frames, none gets another node's output.
    if (nodes > 0) sh(['ip', '-n', ns.gw, 'link', 'set', 'dev', tap, 'type', 'bridge_slave', 'isolated', config.isolateNodes ? 'on' : 'off']);
  };

  const sides = [
    { role: 'client' as const, veth: I.vethClient, br: I.bridgeClient, tap: I.tapClient, addr: config.clientAddr, mac: config.clientMac },
    { role: 'server' as const, veth: I.vethServer, br: I.bridgeServer, tap: I.tapServer, addr: config.serverAddr, mac: config.serverMac },
  ] as Array<{ role: LabRole; veth: string; br: string; tap: string; addr: string; mac: string }>;
  // The second client: its own veth (vc2) on br-c, behind the same TAP.
  if (config.clients === 2) sides.push({ role: 'client2', veth: `${I.vethClient}2`, br: I.bridgeClient, tap: I.tapClient, addr: config.client2Addr, mac: config.client2Mac });
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
    sh(['ip', '-n', natsNs, 'link', 'set', S.natsIface, 'up']);
    natsPid = await startNats(prefix, stateDir, natsBin!, options.natsTimeoutMs ?? 15_000);
    for (let i = 1; i <= nodes; i++) {
      let pid: number | undefined;
      if (options.nodeCommand !== undefined) {
        pid = labStartNode(prefix, i, options.nodeCommand(i, S.natsUrl), {
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
    if (wait > 0) await waitAttached(prefix, stateDir, gatewayPid, wait);
  }
  return {
    prefix,
    stateDir,
    namespaces: nsOut,
    config,
    clientIp: ipOf(config.clientAddr),
    serverIp: ipOf(config.serverAddr),
    gatewayPid,
    nodes,
    natsUrl: nodes > 0 ? LAB_SYNC.natsUrl : undefined,
    nodeInfo,
    natsPid,
  };
}

/** TAPs in gw by kind: the classic pair and cluster node numbers. */
function gwTaps(prefix: string): { classic: string[]; nodes: Set<number> } {
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

/** The nats-server binary (Debian package path, else PATH), or LabError LAB_ENV. */
function natsServerBin(): string {
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

const HEALTH_PROBE = [
  'import sys, urllib.request',
  'try:',
  '    r = urllib.request.urlopen(sys.argv[1], timeout=1)',
  '    sys.stdout.write(r.read().decode())',
  'except Exception as e:',
  '    sys.stdout.write(getattr(e, "read", lambda: b"")().decode() if hasattr(e, "read") else "")',
  '    sys.exit(1)',
].join('\n');

/** One look at nats-server's /healthz (JetStream included), from the gw namespace. */
function natsHealthy(prefix: string): boolean {
  const url = `${LAB_SYNC.monitorUrl}/healthz?js-enabled-only=true`;
  const r = spawnSync('ip', ['netns', 'exec', nsName(prefix, 'gw'), 'python3', '-c', HEALTH_PROBE, url], { encoding: 'utf8', timeout: 3000 });
  return r.status === 0 && /"status"\s*:\s*"ok"/.test(r.stdout);
}

async function startNats(prefix: string, stateDir: string, bin: string, timeoutMs: number): Promise<number> {
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

async function stopProcess(stateDir: string, name: string, sig: 'SIGKILL' | 'SIGTERM', graceMs: number): Promise<number | undefined> {
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

async function waitAttached(prefix: string, stateDir: string, pid: number, timeoutMs: number): Promise<void> {
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

function tail(file: string, lines = 30): string {
  try {
    return readFileSync(file, 'utf8').split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

// ---------------------------------------------------------------------------------------------
// Processes: pid files with the kernel start time, so a recycled pid is never killed.

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

function pidAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

function readPidFile(stateDir: string, name: string): (PidFile & { alive: boolean }) | undefined {
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

async function terminate(pid: number, group: boolean, graceMs: number): Promise<void> {
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
    taps: { 'tap-c': tap(LAB_IFACES.tapClient), 'tap-s': tap(LAB_IFACES.tapServer) },
    processes,
    nodes,
    ...(nats !== undefined ? { nats } : {}),
  };
}

/** Run argv inside a lab namespace (`ip netns exec`) and collect its output. Never throws on exit code. */
export function labExec(prefix: string, role: LabRole, argv: string[], opts: ExecOptions = {}): Promise<ExecResult> {
  checkPrefix(prefix);
  return new Promise((resolve, reject) => {
    const child = spawn('ip', ['netns', 'exec', nsName(prefix, role), ...argv], {
      stdio: ['pipe', 'pipe', 'pipe'],
      cwd: opts.cwd ?? process.cwd(),
      env: { ...process.env, ...opts.env },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer =
      opts.timeoutMs !== undefined ? setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs) : undefined;
    child.on('error', (e) => {
      if (timer !== undefined) clearTimeout(timer);
      reject(new LabError('LAB_ENV', `cannot run ip netns exec: ${e.message}`));
    });
    child.on('close', (code, signal) => {
      if (timer !== undefined) clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
    // A command that exits without reading its stdin (EPIPE) is not an error of ours.
    child.stdin.on('error', () => {});
    child.stdin.end(opts.input ?? '');
  });
}

export interface PingResult {
  sent: number;
  received: number;
  rttMs: number[];
  raw: ExecResult;
}

/** ICMP echo from a lab namespace (netns/icmp-ping.py: raw socket, no iputils needed). */
export async function labPing(
  prefix: string,
  from: LabRole,
  dst: string,
  opts: { count?: number; timeoutMs?: number; size?: number } = {},
): Promise<PingResult> {
  const count = opts.count ?? 3;
  const timeoutS = (opts.timeoutMs ?? 1000) / 1000;
  const raw = await labExec(prefix, from, ['python3', PING_SCRIPT, dst, String(count), String(timeoutS), String(opts.size ?? 56)], {
    timeoutMs: count * (timeoutS + 0.1) * 1000 + 5000,
  });
  try {
    const j = JSON.parse(raw.stdout.trim().split('\n').pop() ?? '') as { sent: number; received: number; rtt_ms: number[] };
    return { sent: j.sent, received: j.received, rttMs: j.rtt_ms, raw };
  } catch {
    throw new LabError('LAB_CMD', `ping from ${from} to ${dst} failed: ${raw.stderr.trim() || raw.stdout.trim()}`);
  }
}
