/**
 * `tapgate lab up|exec|status|down`: the command-line front of src/lab/lab.ts.
 *
 * `lab up` builds (or completes: running it twice is harmless) the three namespaces and the two
 * TAPs, and starts `node <repo>/bin/tapgate.js run --tap tap-c --tap tap-s [--config FILE]` inside
 * the gw namespace, detached, logging to <stateDir>/gateway.log. A gateway already running is
 * left alone (to change its config: `lab down`, then `lab up --config ...`). The config is
 * checked before anything is created.
 *
 * Impairment: `--impair SPEC` is passed on as the gateway's `--impair` (frames it writes to both
 * TAPs); `--impair-client` / `--impair-server` impair the frames written to the TAP towards the
 * client (tap-c, TAP a) / server (tap-s, TAP b); `--impair-in`, `--impair-in-client`,
 * `--impair-in-server` the frames read from them, before the gateway. Specs are checked before
 * anything is created.
 *
 * Cluster lab: `lab up --nodes N` builds the hub-mode lab with TAPs tap-c<i>/tap-s<i>, the sync
 * network and nats-server (src/lab/lab.ts), then starts node i (1..N) in the gw namespace as
 * `node bin/tapgate.js run --tap tap-c<i> --tap tap-s<i> --cluster nats://10.250.0.254:4222
 * --node-id <i>` plus the same --config/--no-vnet-hdr/--impair* options as the single gateway;
 * `--pcap DIR` becomes DIR/node<i>. Logs: <stateDir>/node<i>.log and nats.log. Nodes are not
 * waited for (use `lab status` to see them attach).
 */
import { spawn } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import type { ArgumentsCamelCase, Argv, CommandModule } from 'yargs';
import { ConfigError, loadConfig } from '../config/index.js';
import { FaultSpecError, parseFaultSpec } from '../phy/fault.js';
import {
  LAB_IFACES,
  LAB_SYNC,
  LabError,
  MAX_LAB_NATS,
  MAX_LAB_NODES,
  labDown,
  labPartitionNode,
  natsNodeAddr,
  natsNodeUrl,
  natsPorts,
  natsProcessName,
  labStartNode,
  labStatus,
  labUp,
  nodeTaps,
  nsName,
  type LabRole,
  type LabStatus,
} from '../lab/lab.js';
import { IMPAIR_OPTIONS, gatewayArgv, nodeArgv, type ImpairArgs } from '../lab/gateway-argv.js';
import { readSince } from '../lab/sys.js';


export interface LabUpArgs extends ImpairArgs {
  name: string;
  config?: string;
  vnetHdr: boolean;
  pcap?: string;
  /** The gateway's --metrics HOST:PORT (in the gw namespace). */
  metrics?: string;
  /** The gateway's --events FILE (every cluster node appends to the same file). */
  events?: string;
  offloads: 'on' | 'off';
  ipv6: boolean;
  /** 0: one gateway on tap-c/tap-s; N ≥ 1: a cluster lab with N nodes and nats-server. */
  nodes: number;
  /** Multi-queue TAPs and `tapgate run --queues N` (single gateway). */
  queues?: number;
  /** Cluster lab: NATS servers (a NATS cluster when more than one). */
  nats: number;
  json?: boolean;
}

/** Throws LabError naming the option when an impairment spec is bad (before the lab is built). */
export function checkImpairArgs(a: ImpairArgs): void {
  for (const [key, opt] of IMPAIR_OPTIONS) {
    const v: unknown = a[key];
    if (v === undefined) continue;
    if (typeof v !== 'string') throw new LabError('LAB_ARG', `--${opt} is given more than once`);
    try {
      parseFaultSpec(v);
    } catch (e) {
      if (e instanceof FaultSpecError) throw new LabError('LAB_ARG', `--${opt}: ${e.message}`);
      throw e;
    }
  }
}

function fail(e: unknown): void {
  if (e instanceof ConfigError || e instanceof LabError) {
    process.stderr.write(`tapgate lab: ${e.message}\n`);
    process.exitCode = 1;
    return;
  }
  throw e;
}

function describeStatus(st: LabStatus): string {
  const lines = [`lab '${st.prefix}': ${st.up ? 'up' : Object.values(st.namespaces).some(Boolean) ? 'partly up' : 'down'}`];
  const cluster = st.nodes.length > 0 || st.nats !== undefined;
  for (const role of ['client', 'server', 'gw', ...(cluster ? (['nats'] as const) : [])] as const) {
    const addrs = role === 'client' || role === 'server' ? st.addresses[role] : [];
    lines.push(`  namespace ${nsName(st.prefix, role).padEnd(12)} ${st.namespaces[role] === true ? 'present' : 'missing'}${addrs.length > 0 ? `  eth0 ${addrs.join(' ')}` : ''}`);
  }
  if (!cluster) {
    for (const [tap, t] of Object.entries(st.taps)) {
      lines.push(`  TAP ${tap.padEnd(20)} ${t.exists ? (t.attached ? 'attached' : 'exists, no gateway attached') : 'missing'}`);
    }
  } else {
    lines.push(`  nodes ${st.nodes.length}`);
    for (const n of st.nodes) {
      const tap = (t: { name: string; exists: boolean; attached: boolean; master: string | undefined }): string =>
        `${t.name} ${t.exists ? `${t.attached ? 'attached' : 'not attached'}${t.master !== undefined ? ` on ${t.master}` : ''}` : 'missing'}`;
      const p = n.process;
      lines.push(`  node ${String(n.node).padEnd(3)} ${tap(n.client)}, ${tap(n.server)}; ${p === undefined ? 'no process' : `pid ${p.pid} ${p.alive ? 'running' : 'dead'}`}`);
    }
    const nats = st.nats;
    if (nats !== undefined) {
      const p = nats.process;
      lines.push(`  nats     ${nats.url} ${p === undefined ? 'no process' : `pid ${p.pid} ${p.alive ? 'running' : 'dead'}`}, ${nats.healthy ? 'healthy' : 'not healthy'}`);
    }
  }
  for (const p of st.processes) {
    lines.push(`  process ${p.name.padEnd(16)} pid ${p.pid} ${p.alive ? 'running' : 'dead'} in ${p.role}; log ${p.log}`);
  }
  lines.push(`  state dir ${st.stateDir}`);
  return lines.join('\n');
}

const up: CommandModule<object, LabUpArgs> = {
  command: 'up',
  describe: 'Create the lab (namespaces client/server/gw, bridges, TAPs) and start the gateway in it',
  builder: (y: Argv) =>
    y
      .option('name', { type: 'string', default: 'tg', describe: 'lab prefix (namespaces <name>-client, -server, -gw)' })
      .option('config', { type: 'string', describe: 'gateway YAML config (rules, limits)' })
      .option('vnet-hdr', { type: 'boolean', default: true, describe: 'gateway uses TAP GSO; --no-vnet-hdr to disable' })
      .option('pcap', { type: 'string', describe: 'gateway records DIR/a.pcap (client side) and DIR/b.pcap (server side)' })
      .option('events', { type: 'string', describe: 'the gateway appends events as JSON lines to FILE (cluster: every node, each line names its flow)' })
      .option('metrics', { type: 'string', describe: 'gateway serves Prometheus metrics at http://HOST:PORT/metrics inside the gw namespace (cluster node i: PORT + i - 1)' })
      .option('offloads', { choices: ['on', 'off'] as const, default: 'on' as const, describe: 'endpoint TSO/GSO/checksum offloads' })
      .option('ipv6', { type: 'boolean', default: true, describe: 'dual-stack endpoints (client fd00:200::1/64, server fd00:200::2/64 beside the IPv4 addresses); --no-ipv6 for IPv4 only' })
      .option('nodes', {
        type: 'number',
        default: 0,
        describe: `cluster lab: N (1..${MAX_LAB_NODES}) gateway nodes on hub bridges (TAPs tap-c<i>/tap-s<i>), a sync network and nats-server; 0 = one gateway`,
      })
      .option('nats', {
        type: 'number',
        default: 1,
        describe: `cluster lab: NATS servers (1..${MAX_LAB_NATS}); more than one form a NATS cluster, the bucket replicated on up to three (the production layout: --nats 3)`,
      })
      .option('queues', {
        type: 'number',
        default: 1,
        describe: 'the TAPs are made multi-queue and the gateway runs one process per queue (tapgate run --queues N; captures and events per queue; not with NAT)',
      })
      .option('json', { type: 'boolean', describe: 'print what was made as JSON' })
      .option('impair', { type: 'string', describe: 'gateway impairs frames it writes towards both client and server (spec: see tapgate run --help)' })
      .option('impair-client', { type: 'string', describe: 'impair frames written to tap-c, towards the client; overrides --impair' })
      .option('impair-server', { type: 'string', describe: 'impair frames written to tap-s, towards the server; overrides --impair' })
      .option('impair-in', { type: 'string', describe: 'impair frames read from both TAPs, before the gateway' })
      .option('impair-in-client', { type: 'string', describe: 'impair frames read from tap-c (sent by the client), before the gateway' })
      .option('impair-in-server', { type: 'string', describe: 'impair frames read from tap-s (sent by the server), before the gateway' })
      .example('$0 lab up --config examples/demo.yaml --impair "loss=2%,reorder=10%:3"', 'a lossy, reordering path through the gateway')
      .example('$0 lab up --nodes 3 --config examples/demo.yaml', 'three cluster nodes syncing over nats-server')
      .example('$0 lab up --nodes 3 --nats 3 --config examples/cluster.yaml', 'the production layout: three NATS servers, the bucket replicated three times') as unknown as Argv<LabUpArgs>,
  handler: async (a: ArgumentsCamelCase<LabUpArgs>) => {
    try {
      if (a.config !== undefined) loadConfig(a.config); // a bad config fails before anything exists
      checkImpairArgs(a); // so does a bad impairment spec
      const nodes = a.nodes ?? 0;
      if (typeof nodes !== 'number' || !Number.isInteger(nodes) || nodes < 0 || nodes > MAX_LAB_NODES) {
        throw new LabError('LAB_ARG', `--nodes must be an integer in 0..${MAX_LAB_NODES}`);
      }
      if (nodes > 0) {
        await upCluster(a, nodes);
        return;
      }
      const before = labStatus(a.name);
      const wasRunning = before.processes.some((p) => p.name === 'gateway' && p.alive);
      const q = a.queues ?? 1;
      if (!Number.isInteger(q) || q < 1 || q > 64) throw new LabError('LAB_ARG', '--queues must be an integer in 1..64');
      const info = await labUp({ prefix: a.name, config: { offloads: a.offloads, ipv6: a.ipv6, queues: q }, gatewayCommand: gatewayArgv(a) });
      const st = labStatus(a.name);
      const gw = st.processes.find((p) => p.name === 'gateway');
      if (a.json === true) {
        // As before cluster labs existed: no node fields.
        const { nodes: _n, natsUrl: _u, nodeInfo: _i, natsPid: _p, ...classic } = info;
        process.stdout.write(JSON.stringify({ ...classic, gatewayLog: gw?.log, alreadyRunning: wasRunning }) + '\n');
        return;
      }
      const out = [
        `lab '${info.prefix}' is up`,
        `  client  ${info.namespaces.client.padEnd(12)} eth0 ${info.config.clientAddr}${info.config.ipv6 ? ` ${info.config.clientAddr6}` : ''} (${info.config.clientMac})`,
        `  server  ${info.namespaces.server.padEnd(12)} eth0 ${info.config.serverAddr}${info.config.ipv6 ? ` ${info.config.serverAddr6}` : ''} (${info.config.serverMac})`,
        `  gw      ${info.namespaces.gw.padEnd(12)} ${LAB_IFACES.bridgeClient}[${LAB_IFACES.vethClient}, ${LAB_IFACES.tapClient}]  ${LAB_IFACES.bridgeServer}[${LAB_IFACES.vethServer}, ${LAB_IFACES.tapServer}]  mtu ${info.config.mtu}, offloads ${info.config.offloads}`,
        `  gateway pid ${info.gatewayPid ?? '-'}${wasRunning ? ' (already running; `lab down` first to change its options)' : ''}, log ${gw?.log ?? '-'}`,
        `          ${(gw?.argv ?? gatewayArgv(a)).join(' ')}`,
        `try:  tapgate lab exec client -- curl http://${info.serverIp}:8000/   (after: tapgate lab exec server -- python3 -m http.server 8000)`,
        `stop: tapgate lab down${a.name !== 'tg' ? ` --name ${a.name}` : ''}`,
      ];
      process.stdout.write(out.join('\n') + '\n');
    } catch (e) {
      fail(e);
    }
  },
};

/** `lab up --nodes N`: the cluster lab, then node i = `tapgate run ... --cluster URL --node-id i`. */
async function upCluster(a: ArgumentsCamelCase<LabUpArgs>, nodes: number): Promise<void> {
  const before = labStatus(a.name, { probeNats: false });
  const wasRunning = new Set(before.nodes.filter((n) => n.process?.alive === true).map((n) => n.node));
  const info = await labUp({ prefix: a.name, config: { offloads: a.offloads, ipv6: a.ipv6, nodes, natsServers: a.nats ?? 1 } });
  const natsUrl = info.natsUrl ?? LAB_SYNC.natsUrl;
  const started = [];
  for (let i = 1; i <= nodes; i++) {
    const pid = labStartNode(a.name, i, nodeArgv(i, natsNodeUrl(i, info.natsServers), a, info.natsServers), { stateDir: info.stateDir });
    started.push({ node: i, pid, taps: nodeTaps(i), alreadyRunning: wasRunning.has(i) });
  }
  const st = labStatus(a.name, { probeNats: false });
  const proc = (name: string) => st.processes.find((p) => p.name === name);
  if (a.json === true) {
    process.stdout.write(
      JSON.stringify({
        ...info,
        nodeInfo: started.map((n) => ({ ...n, log: proc(`node${n.node}`)?.log, argv: proc(`node${n.node}`)?.argv })),
        natsLog: proc('nats')?.log,
      }) + '\n',
    );
    return;
  }
  const out = [
    `lab '${info.prefix}' is up: cluster of ${nodes} node${nodes === 1 ? '' : 's'}, hub bridges`,
    `  client  ${info.namespaces.client.padEnd(12)} eth0 ${info.config.clientAddr} (${info.config.clientMac})`,
    `  server  ${info.namespaces.server.padEnd(12)} eth0 ${info.config.serverAddr} (${info.config.serverMac})`,
    `  gw      ${info.namespaces.gw.padEnd(12)} ${LAB_IFACES.bridgeClient}[${LAB_IFACES.vethClient}, tap-c1..${nodes}]  ${LAB_IFACES.bridgeServer}[${LAB_IFACES.vethServer}, tap-s1..${nodes}]  sync ${LAB_SYNC.gwAddr}  mtu ${info.config.mtu}, offloads ${info.config.offloads}`,
    `  nats    ${(info.namespaces.nats ?? '').padEnd(12)} eth0 ${LAB_SYNC.natsAddr}: ${natsUrl} (JetStream), monitor ${LAB_SYNC.monitorUrl}; pid ${info.natsPid ?? '-'}, log ${proc('nats')?.log ?? '-'}`,
    ...info.natsPids.slice(1).map((pid, j) => `          server ${j + 2}: port ${natsPorts(j + 2).client}, monitor ${natsPorts(j + 2).monitor}; pid ${pid}, log ${proc(natsProcessName(j + 2))?.log ?? '-'}`),
    `          node i reaches NATS at ${natsNodeAddr(1).replace(/\d+$/, '')}(10+i) (its own address: \`lab partition\` cuts one)`,
  ];
  for (const n of started) {
    const p = proc(`node${n.node}`);
    out.push(`  node ${n.node} pid ${n.pid}${n.alreadyRunning ? ' (already running)' : ''}, log ${p?.log ?? '-'}`);
    out.push(`          ${(p?.argv ?? []).join(' ')}`);
  }
  out.push(`see:  tapgate lab status${a.name !== 'tg' ? ` --name ${a.name}` : ''}`);
  out.push(`stop: tapgate lab down${a.name !== 'tg' ? ` --name ${a.name}` : ''}`);
  process.stdout.write(out.join('\n') + '\n');
}

interface ExecArgs {
  name: string;
  role: LabRole;
  cmd: string[];
}

const exec: CommandModule<object, ExecArgs> = {
  command: 'exec <role> [cmd..]',
  describe: 'Run a command inside a lab namespace: lab exec client -- curl http://10.200.0.2:8000/',
  builder: (y: Argv) =>
    y
      .positional('role', { choices: ['client', 'server', 'gw', 'nats'] as const, demandOption: true })
      .positional('cmd', { type: 'string', array: true, describe: 'command and arguments (after --)' })
      .option('name', NAME_OPTION) as unknown as Argv<ExecArgs>,
  handler: async (a: ArgumentsCamelCase<ExecArgs>) => {
    // yargs puts what follows `--` into `_` after the command names: take it verbatim from argv.
    const dd = process.argv.indexOf('--');
    const extra = dd >= 0 ? process.argv.slice(dd + 1) : [];
    const cmd = [...(a.cmd ?? []).map(String), ...extra];
    if (cmd.length === 0) {
      process.stderr.write('tapgate lab exec: name a command after --\n');
      process.exitCode = 1;
      return;
    }
    let st: ReturnType<typeof labStatus>;
    try {
      st = labStatus(a.name); // a bad --name: LabError
    } catch (e) {
      return fail(e);
    }
    if (st.namespaces[a.role as 'client' | 'server' | 'gw' | 'nats'] !== true) {
      process.stderr.write(`tapgate lab exec: namespace ${nsName(a.name, a.role)} does not exist: run \`tapgate lab up\` first\n`);
      process.exitCode = 1;
      return;
    }
    const child = spawn('ip', ['netns', 'exec', nsName(a.name, a.role), ...cmd], { stdio: 'inherit' });
    // Ctrl-C reaches the child through the terminal's process group; just wait for it.
    const noop = (): void => {};
    process.on('SIGINT', noop);
    const code = await new Promise<number>((res) => {
      child.on('error', (e) => {
        process.stderr.write(`tapgate lab exec: ${e.message}\n`);
        res(127);
      });
      child.on('close', (c, sig) => res(c ?? (sig ? 128 : 1)));
    });
    process.off('SIGINT', noop);
    process.exitCode = code;
  },
};

interface NameArgs {
  name: string;
  json?: boolean;
}

/** The lab prefix option every lab command has. */
const NAME_OPTION = { type: 'string', default: 'tg', describe: 'lab prefix' } as const;
/** A command whose only option is the lab prefix. */
const nameOnly = (y: Argv): Argv<NameArgs> => y.option('name', NAME_OPTION) as unknown as Argv<NameArgs>;

const status: CommandModule<object, NameArgs> = {
  command: 'status',
  describe: 'Show what of the lab exists and runs',
  builder: (y: Argv) =>
    y
      .option('name', NAME_OPTION)
      .option('json', { type: 'boolean', describe: 'as JSON' }) as unknown as Argv<NameArgs>,
  handler: (a: ArgumentsCamelCase<NameArgs>) => {
    try {
      const st = labStatus(a.name);
      process.stdout.write((a.json === true ? JSON.stringify(st) : describeStatus(st)) + '\n');
    } catch (e) {
      fail(e);
    }
  },
};

/**
 * Sends the lab's gateway (or every cluster node) SIGHUP and reports what each logged about it:
 * 'config reloaded' (exit 0) or 'config reload refused' with the errors (exit 2).
 */
export async function labReload(prefix: string): Promise<{ name: string; pid: number; ok: boolean; line: string }[]> {
  const procs = labStatus(prefix).processes.filter((p) => p.alive && (p.name === 'gateway' || /^node\d+$/.test(p.name)));
  if (procs.length === 0) throw new LabError('LAB_GATEWAY', `lab '${prefix}' has no running gateway to reload`);
  const out: { name: string; pid: number; ok: boolean; line: string }[] = [];
  for (const p of procs) {
    const before = existsSync(p.log) ? statSync(p.log).size : 0;
    process.kill(p.pid, 'SIGHUP');
    const deadline = Date.now() + 5000;
    let line = '';
    while (line === '' && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
      const text = readSince(p.log, before);
      line = text.split('\n').find((l) => /config reload(ed| refused)/.test(l)) ?? '';
    }
    out.push({ name: p.name, pid: p.pid, ok: /config reloaded/.test(line), line: line === '' ? 'no answer in its log within 5 s' : line });
  }
  return out;
}

const reload: CommandModule<object, NameArgs> = {
  command: 'reload',
  describe: 'Make the lab gateway (or every cluster node) re-read its config: new connections get the new rules, connections in flight keep theirs',
  builder: nameOnly,
  handler: async (a: ArgumentsCamelCase<NameArgs>) => {
    try {
      const r = await labReload(a.name);
      for (const x of r) (x.ok ? process.stdout : process.stderr).write(`${x.name} (pid ${x.pid}): ${x.line}\n`);
      if (r.some((x) => !x.ok)) process.exitCode = 2;
    } catch (e) {
      fail(e);
    }
  },
};

interface PartitionArgs extends NameArgs {
  node: number;
  heal?: boolean;
}

const partition: CommandModule<object, PartitionArgs> = {
  command: 'partition',
  describe: 'Cluster lab: cut node N off the sync network (nftables drop its NATS traffic both ways: a partition, no connection closes), or --heal it',
  builder: (y: Argv) =>
    (nameOnly(y) as Argv<NameArgs>)
      .option('node', { type: 'number', demandOption: true, describe: 'the node to cut off (or let back)' })
      .option('heal', { type: 'boolean', describe: 'let the node back' }) as unknown as Argv<PartitionArgs>,
  handler: (a: ArgumentsCamelCase<PartitionArgs>) => {
    try {
      labPartitionNode(a.name, a.node, a.heal !== true);
      process.stdout.write(a.heal === true ? `node ${a.node} is back on the sync network\n` : `node ${a.node} is cut off the sync network (${natsNodeAddr(a.node)}): \`tapgate lab partition --node ${a.node} --heal\` lets it back\n`);
    } catch (e) {
      fail(e);
    }
  },
};

const down: CommandModule<object, NameArgs> = {
  command: 'down',
  describe: 'Stop the lab processes and delete its namespaces (harmless when nothing exists)',
  builder: nameOnly,
  handler: async (a: ArgumentsCamelCase<NameArgs>) => {
    try {
      await labDown(a.name);
      process.stdout.write(`lab '${a.name}' is down\n`);
    } catch (e) {
      fail(e);
    }
  },
};

export const labCommand: CommandModule = {
  command: 'lab <command>',
  describe: 'Build, use and remove the three-namespace test lab around the gateway',
  builder: (y: Argv) =>
    y
      .command(up)
      .command(exec)
      .command(status)
      .command(reload)
      .command(partition)
      .command(down)
      .demandCommand(1, 'name a lab command: up, exec, status, reload, partition, down'),
  handler: () => {},
};
