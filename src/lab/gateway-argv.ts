/**
 * The command lines `lab up` (and the benchmarks) start the gateway with in the gw namespace:
 * `tapgate run` on the lab's TAPs (or cluster node i's), with the lab's options passed on.
 */
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseListen } from '../engine/metrics.js';
import { LAB_IFACES, nodeTaps } from './names.js';

/** bin/tapgate.js of this checkout, from src/ and dist/ alike. */
export const TAPGATE_BIN = fileURLToPath(new URL('../../bin/tapgate.js', import.meta.url));

export interface ImpairArgs {
  impair?: string | undefined;
  impairClient?: string | undefined;
  impairServer?: string | undefined;
  impairIn?: string | undefined;
  impairInClient?: string | undefined;
  impairInServer?: string | undefined;
}

/** lab option → gateway option (tap-c is the gateway's TAP a, tap-s its TAP b). */
export const IMPAIR_OPTIONS: ReadonlyArray<[keyof ImpairArgs, string, string]> = [
  ['impair', 'impair', 'impair'],
  ['impairClient', 'impair-client', 'impair-a'],
  ['impairServer', 'impair-server', 'impair-b'],
  ['impairIn', 'impair-in', 'impair-in'],
  ['impairInClient', 'impair-in-client', 'impair-in-a'],
  ['impairInServer', 'impair-in-server', 'impair-in-b'],
];

export type GatewayOptionArgs = {
  config?: string | undefined;
  vnetHdr: boolean;
  pcap?: string | undefined;
  metrics?: string | undefined;
  events?: string | undefined;
  /** `--queues N` (single gateway, multi-queue TAPs). */
  queues?: number | undefined;
} & ImpairArgs;

/** --metrics HOST:PORT for cluster node i: each node in the gw namespace on its own port (PORT + i - 1). */
function nodeMetrics(metrics: string | undefined, i: number): string | undefined {
  if (metrics === undefined) return undefined;
  const p = parseListen(metrics);
  if (typeof p === 'string') return metrics; // the node refuses it with the message
  return `${p.host.includes(':') ? `[${p.host}]` : p.host}:${p.port + i - 1}`;
}

/** --config/--no-vnet-hdr/--pcap/--metrics/--events/--impair* of a gateway or node command. */
function gatewayOptions(a: GatewayOptionArgs, pcapDir: string | undefined, metrics = a.metrics): string[] {
  const argv: string[] = [];
  if (a.config !== undefined) argv.push('--config', resolve(a.config));
  if (!a.vnetHdr) argv.push('--no-vnet-hdr');
  if (pcapDir !== undefined) argv.push('--pcap', pcapDir);
  if (metrics !== undefined) argv.push('--metrics', metrics);
  if (a.events !== undefined) argv.push('--events', resolve(a.events));
  if (a.queues !== undefined && a.queues > 1) argv.push('--queues', String(a.queues));
  for (const [key, , runOpt] of IMPAIR_OPTIONS) {
    const v = a[key];
    if (v !== undefined) argv.push(`--${runOpt}`, v);
  }
  return argv;
}

/** The gateway command `lab up` runs in the gw namespace. */
export function gatewayArgv(a: GatewayOptionArgs): string[] {
  return [
    process.execPath, TAPGATE_BIN, 'run', '--tap', LAB_IFACES.tapClient, '--tap', LAB_IFACES.tapServer,
    ...gatewayOptions(a, a.pcap !== undefined ? resolve(a.pcap) : undefined),
  ];
}

/** The command of cluster node i that `lab up --nodes N` runs in the gw namespace (pcap in DIR/node<i>). */
export function nodeArgv(i: number, natsUrl: string, a: GatewayOptionArgs, natsServers = 1): string[] {
  const t = nodeTaps(i);
  return [
    process.execPath, TAPGATE_BIN, 'run', '--tap', t.client, '--tap', t.server, '--cluster', natsUrl, '--node-id', String(i),
    ...(natsServers > 1 ? ['--cluster-replicas', String(Math.min(3, natsServers))] : []),
    ...gatewayOptions(a, a.pcap !== undefined ? join(resolve(a.pcap), `node${i}`) : undefined, nodeMetrics(a.metrics, i)),
  ];
}
