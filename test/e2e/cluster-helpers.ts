/**
 * Shared by the cluster end-to-end tests: node command lines, `tapgate cluster status` as JSON,
 * and waiting until every node is ready and sees the same view.
 */
import { join } from 'node:path';
import { LAB_SYNC, labExec, natsNodeUrl, nodeTaps } from '../../src/lab/lab.js';
import { REPO } from '../lab/e2e-env.js';
import { waitUntil } from './lab-helpers.js';

export const CLUSTER_URL = LAB_SYNC.natsUrl;
export const BIN = join(REPO, 'bin/tapgate.js');

/**
 * `tapgate run` for node `i` of a cluster lab with `config` and `natsServers` NATS servers (the
 * node reaches them at its own address; the bucket is replicated on up to three).
 */
export function nodeArgv(i: number, config: string, natsServers = 1): string[] {
  const t = nodeTaps(i);
  return [
    process.execPath, BIN, 'run', '--tap', t.client, '--tap', t.server, '--cluster', natsNodeUrl(i, natsServers), '--node-id', String(i), '--config', config,
    ...(natsServers > 1 ? ['--cluster-replicas', String(Math.min(3, natsServers))] : []),
  ];
}

export type NodeStatus = { node: string; ready: boolean; connected: boolean; view: string[]; owned: Array<{ key: string }>; counters: Record<string, number> };

/** Every node's status (`tapgate cluster status --json`, asked from the gw namespace); [] when it fails. */
export async function clusterStatus(prefix: string): Promise<NodeStatus[]> {
  const r = await labExec(prefix, 'gw', [process.execPath, BIN, 'cluster', 'status', '--cluster', CLUSTER_URL, '--json', '--wait-ms', '300'], { timeoutMs: 10_000 });
  if (r.code !== 0) return [];
  return JSON.parse(r.stdout) as NodeStatus[];
}

/** Until every node in `ids` is ready and all of them see exactly `ids`. */
export async function waitView(prefix: string, ids: number[]): Promise<NodeStatus[]> {
  const want = ids.map(String).sort().join(',');
  return waitUntil(30_000, 200, () => clusterStatus(prefix),
    (st) => st.length === ids.length && st.every((n) => n.ready && n.connected && [...n.view].sort().join(',') === want),
    (st) => `cluster view never became [${want}]: ${JSON.stringify(st.map((n) => ({ node: n.node, ready: n.ready, view: n.view })))}`);
}
