/**
 * The lab's vocabulary: roles, the config and its defaults, interface and namespace names, the
 * state directory, node and TAP names of the cluster lab, and the error a lab operation throws.
 */
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export type LabRole = 'client' | 'server' | 'gw' | 'client2' | 'nats';
/** The namespaces every lab has (`client2` only with `clients: 2`). */
export type CoreRole = 'client' | 'server' | 'gw';

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
  /**
   * Dual-stack endpoints: IPv6 enabled in the client and server namespaces (never in gw: the
   * bridge host does not speak on the segments), with `clientAddr6` / `serverAddr6` /
   * `client2Addr6` (no duplicate address detection: usable at once) beside the IPv4 addresses.
   */
  ipv6: boolean;
  clientAddr6: string;
  serverAddr6: string;
  client2Addr6: string;
  /** Client namespaces on br-c: 1, or 2 (adds ${prefix}-client2 with client2Addr/client2Mac). */
  clients: 1 | 2;
  client2Addr: string;
  client2Mac: string;
  /**
   * Cluster gateway nodes: 0 = one gateway on tap-c/tap-s (the classic lab); N ≥ 1 = hub
   * bridges, TAPs tap-c<i>/tap-s<i> for i in 1..N, the sync network and nats-server.
   */
  nodes: number;
  /**
   * Cluster lab: NATS servers with JetStream in ${prefix}-nats (1..MAX_LAB_NATS). More than one
   * form a NATS cluster (the README's production layout: three, the bucket replicated three
   * times); server k listens on the ports of `natsPorts(k)`.
   */
  natsServers: number;
  /**
   * The single-gateway lab's TAPs are made multi-queue when > 1 (`ip tuntap add … multi_queue`),
   * for `tapgate run --queues N`; a TAP of the other kind is made again.
   */
  queues: number;
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
  clientAddr6: 'fd00:200::1/64',
  serverAddr6: 'fd00:200::2/64',
  client2Addr6: 'fd00:200::3/64',
  clients: 1,
  client2Addr: '10.200.0.3/24',
  client2Mac: '02:00:0a:c8:00:03',
  nodes: 0,
  natsServers: 1,
  queues: 1,
};

/** Most NATS servers a cluster lab has. */
export const MAX_LAB_NATS = 5;

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
  /** JetStream store, under the state dir (server k > 1: `nats-js<k>`). */
  storeDir: 'nats-js',
  /** Node i reaches NATS at its own address of the nats namespace, `${nodeNet}${10 + i}` (natsNodeUrl). */
  nodeNet: '10.250.0.',
  /** Ports of server k > 1: the first server's + k - 1; routes among servers from clusterPort. */
  clusterPort: 6222,
} as const;

/** Server k's (1-based) client, cluster and monitoring ports in the nats namespace. */
export function natsPorts(k: number): { client: number; cluster: number; monitor: number } {
  return { client: LAB_SYNC.clientPort + k - 1, cluster: LAB_SYNC.clusterPort + k - 1, monitor: LAB_SYNC.monitorPort + k - 1 };
}

/** The address node i's NATS traffic goes to: its own, so a partition can cut one node (labPartitionNode). */
export function natsNodeAddr(i: number): string {
  checkNode(i);
  return `${LAB_SYNC.nodeNet}${10 + i}`;
}

/** Node i's NATS URL(s) with `servers` servers: each server at the node's own address. */
export function natsNodeUrl(i: number, servers: number): string {
  return Array.from({ length: servers }, (_, k) => `nats://${natsNodeAddr(i)}:${natsPorts(k + 1).client}`).join(',');
}

/** Lab process name of NATS server k (1-based): `nats`, `nats2`, ... */
export function natsProcessName(k: number): string {
  if (!Number.isInteger(k) || k < 1 || k > MAX_LAB_NATS) throw new LabError('LAB_ARG', `NATS server number ${k} must be an integer in 1..${MAX_LAB_NATS}`);
  return k === 1 ? 'nats' : `nats${k}`;
}

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

export const ROLES: readonly CoreRole[] = ['client', 'server', 'gw'];
/** Every namespace labDown removes. */
export const ALL_ROLES: readonly LabRole[] = ['client', 'client2', 'server', 'gw', 'nats'];
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

export function checkPrefix(prefix: string): void {
  if (!PREFIX_RE.test(prefix)) {
    throw new LabError('LAB_ARG', `lab prefix '${prefix}' must match ${PREFIX_RE} (it names namespaces)`);
  }
}
