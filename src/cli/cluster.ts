/**
 * `tapgate cluster status|drain --cluster nats://HOST:PORT`: operations on a running cluster
 * (src/cluster/node.ts). `status` asks every node (subject <name>.ctl.all) and prints nodes,
 * their view, owned connections and sync lag; `drain --node-id N` makes node N hand every
 * connection over and exit (as SIGTERM does); `reload` makes every node re-read its config (as
 * SIGHUP does). Exit codes: 0 fine, 1 bad arguments, 2 NATS
 * unreachable or no node answered.
 */
import { connect, createInbox, type NatsConnection } from 'nats';
import type { ArgumentsCamelCase, Argv, CommandModule } from 'yargs';
import { clusterSubject } from '../cluster/bus.js';

interface ClusterArgs {
  cluster: string;
  name: string;
  json?: boolean;
  nodeId?: string;
  waitMs: number;
}

const enc = new TextEncoder();
const dec = new TextDecoder();

async function open(url: string): Promise<NatsConnection> {
  try {
    return await connect({ servers: url.split(','), timeout: 3000, maxReconnectAttempts: 0 });
  } catch (e) {
    throw new Error(`cannot reach NATS at ${url}: ${(e as Error).message}`);
  }
}

/** Every node's status (each answers <name>.ctl.all within waitMs). */
export function clusterStatus(url: string, name = 'tapgate', waitMs = 500): Promise<Array<Record<string, unknown>>> {
  return askAll(url, name, 'status', waitMs);
}

/** Every node re-reads its config; their answers ({ node, reloaded, digest } or { node, error }). */
export function clusterReload(url: string, name = 'tapgate', waitMs = 1000): Promise<Array<Record<string, unknown>>> {
  return askAll(url, name, 'reload', waitMs);
}

async function askAll(url: string, name: string, op: string, waitMs: number): Promise<Array<Record<string, unknown>>> {
  const nc = await open(url);
  try {
    const inbox = createInbox();
    const out: Array<Record<string, unknown>> = [];
    const sub = nc.subscribe(inbox, { callback: (_e, m) => out.push(JSON.parse(dec.decode(m.data)) as Record<string, unknown>) });
    nc.publish(clusterSubject(name, 'ctl.all'), enc.encode(JSON.stringify({ op })), { reply: inbox });
    await new Promise((r) => setTimeout(r, waitMs));
    sub.unsubscribe();
    return out.sort((a, b) => String(a['node']).localeCompare(String(b['node'])));
  } finally {
    await nc.close();
  }
}

/** Asks node `id` to drain; resolves with its answer. */
export async function clusterDrain(url: string, id: string, name = 'tapgate', waitMs = 2000): Promise<Record<string, unknown>> {
  const nc = await open(url);
  try {
    const m = await nc.request(clusterSubject(name, `ctl.${id}`), enc.encode(JSON.stringify({ op: 'drain' })), { timeout: waitMs });
    return JSON.parse(dec.decode(m.data)) as Record<string, unknown>;
  } catch (e) {
    throw new Error(`node '${id}' did not answer: ${(e as Error).message}`);
  } finally {
    await nc.close();
  }
}

function describe(st: Array<Record<string, unknown>>): string {
  const lines = [`${st.length} node(s)`];
  for (const n of st) {
    const owned = (n['owned'] as unknown[] | undefined) ?? [];
    const c = (n['counters'] ?? {}) as Record<string, number>;
    lines.push(
      `  node ${String(n['node']).padEnd(6)} ${n['draining'] === true ? 'draining' : n['ready'] === true ? 'ready' : 'joining'}` +
        `${n['connected'] === true ? '' : ' (sync down)'}  view [${(n['view'] as string[] | undefined)?.join(', ') ?? ''}]` +
        `${n['nonTcpForwarder'] === true ? '  non-TCP forwarder' : ''}`,
    );
    lines.push(
      `       owns ${owned.length} connection(s), spares ${String(n['spares'])}, sync lag ${String(n['syncLagMs'])} ms, ` +
        `oldest spare ${String(n['spareAgeMaxMs'])} ms; takeovers ${c['takeovers'] ?? 0}, hand-overs ${c['handoffs'] ?? 0}, ` +
        `held frames ${c['heldFrames'] ?? 0} (max ${c['heldMsMax'] ?? 0} ms), unsynced releases ${c['unsyncedReleases'] ?? 0}`,
    );
    for (const o of owned as Array<Record<string, unknown>>) lines.push(`       ${String(o['key'])}  published ${String(o['pub'])} acked ${String(o['acked'])} held ${String(o['held'])}`);
  }
  return lines.join('\n');
}

const common = (y: Argv): Argv =>
  y
    .option('cluster', { type: 'string', demandOption: true, describe: 'NATS URL of the cluster (nats://HOST:PORT)' })
    .option('name', { type: 'string', default: 'tapgate', describe: 'cluster name (subject prefix)' });

const status: CommandModule<object, ClusterArgs> = {
  command: 'status',
  describe: 'Nodes, their view, owned connections and sync lag',
  builder: (y: Argv) =>
    common(y)
      .option('json', { type: 'boolean', describe: 'print JSON' })
      .option('wait-ms', { type: 'number', default: 500, describe: 'how long to collect answers' }) as unknown as Argv<ClusterArgs>,
  handler: async (a: ArgumentsCamelCase<ClusterArgs>) => {
    try {
      const st = await clusterStatus(a.cluster, a.name, a.waitMs);
      process.stdout.write((a.json === true ? JSON.stringify(st) : describe(st)) + '\n');
      if (st.length === 0) process.exitCode = 2;
    } catch (e) {
      process.stderr.write(`tapgate cluster status: ${(e as Error).message}\n`);
      process.exitCode = 2;
    }
  },
};

const drain: CommandModule<object, ClusterArgs> = {
  command: 'drain',
  describe: 'Make a node hand all its connections to the others, then exit',
  builder: (y: Argv) =>
    common(y)
      .option('node-id', { type: 'string', demandOption: true, describe: 'the node to drain' })
      .option('wait-ms', { type: 'number', default: 2000, describe: 'how long to wait for its answer' }) as unknown as Argv<ClusterArgs>,
  handler: async (a: ArgumentsCamelCase<ClusterArgs>) => {
    try {
      const r = await clusterDrain(a.cluster, String(a.nodeId), a.name, a.waitMs);
      process.stdout.write(JSON.stringify(r) + '\n');
    } catch (e) {
      process.stderr.write(`tapgate cluster drain: ${(e as Error).message}\n`);
      process.exitCode = 2;
    }
  },
};

const reload: CommandModule<object, ClusterArgs> = {
  command: 'reload',
  describe: 'Make every node re-read its config (as SIGHUP does): new connections get the new rules',
  builder: (y: Argv) =>
    common(y).option('wait-ms', { type: 'number', default: 1000, describe: 'how long to collect answers' }) as unknown as Argv<ClusterArgs>,
  handler: async (a: ArgumentsCamelCase<ClusterArgs>) => {
    try {
      const r = await clusterReload(a.cluster, a.name, a.waitMs);
      process.stdout.write(JSON.stringify(r) + '\n');
      for (const n of r) if (n['error'] !== undefined) process.stderr.write(`tapgate cluster reload: node ${String(n['node'])}: ${String(n['error'])}\n`);
      if (r.length === 0 || r.some((n) => n['error'] !== undefined)) process.exitCode = 2;
    } catch (e) {
      process.stderr.write(`tapgate cluster reload: ${(e as Error).message}\n`);
      process.exitCode = 2;
    }
  },
};

export const clusterCommand: CommandModule = {
  command: 'cluster <command>',
  describe: 'Operate a gateway cluster: status, drain, reload',
  builder: (y: Argv) => y.command(status).command(drain).command(reload).demandCommand(1, 'name a cluster command: status, drain, reload'),
  handler: () => {},
};
