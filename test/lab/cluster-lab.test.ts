/**
 * The cluster lab (issue 8), as root: `nodes: N` gives hub bridges with per-node TAPs, a sync
 * network to ${prefix}-nats and a healthy JetStream nats-server there; node processes, nats
 * restarts and outages are lab operations; labDown leaves nothing. Nothing here needs a real
 * cluster node: node processes are stand-ins (sleep, sh) and hub mode is checked with a TAP
 * frame counter (fixtures/tap-counter.ts).
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import {
  LAB_SYNC,
  LabError,
  labDown,
  labExec,
  labKill,
  labKillNode,
  labPartitionNode,
  labRestartNats,
  labSpawn,
  labStartNats,
  labStartNode,
  labStatus,
  labStopNats,
  labUp,
  labWaitNodesAttached,
  natsNodeAddr,
  natsNodeUrl,
  nodeTaps,
} from '../../src/lab/lab.js';
import { describeE2E, e2eProblems, REPO } from './e2e-env.js';

const P = 'tgcl';
const NS = ['client', 'server', 'gw', 'nats', 'client2'].map((r) => `${P}-${r}`);
const NATS_REQ = join(REPO, 'test/lab/fixtures/nats-req.py');
const NATS_HOSTPORT = `${LAB_SYNC.natsIp}:${LAB_SYNC.clientPort}`;

function netnsList(): string[] {
  return spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout.split('\n').map((l) => l.split(' ')[0]!).filter(Boolean);
}

function ours(): string[] {
  return netnsList().filter((n) => NS.includes(n));
}

async function until<T>(what: string, f: () => Promise<T | undefined> | T | undefined, ms = 10_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

interface IpLink {
  ifname: string;
  master?: string;
  mtu: number;
  linkinfo?: { info_kind?: string; info_data?: Record<string, unknown>; info_slave_data?: Record<string, unknown> };
}

async function gwLinks(): Promise<IpLink[]> {
  const r = await labExec(P, 'gw', ['ip', '-j', '-d', 'link', 'show']);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as IpLink[];
}

/** A NATS request from the gw namespace over the sync network: [server INFO, reply]. */
async function natsRequest(subject: string, payload = ''): Promise<[Record<string, unknown>, Record<string, unknown>]> {
  const r = await labExec(P, 'gw', ['python3', NATS_REQ, NATS_HOSTPORT, subject, payload], { timeoutMs: 10_000 });
  expect(r.code, r.stderr).toBe(0);
  const [info, reply] = r.stdout.trim().split('\n');
  return [JSON.parse(info!) as Record<string, unknown>, JSON.parse(reply!) as Record<string, unknown>];
}

async function curlGw(url: string): Promise<{ code: number | null; body: string }> {
  const r = await labExec(P, 'gw', ['curl', '-sS', '--max-time', '3', url]);
  return { code: r.code, body: r.stdout };
}

function pidGone(pid: number): boolean {
  try {
    const st = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return /\) [ZX] /.test(st);
  } catch {
    return true;
  }
}

describeE2E('cluster lab', e2eProblems(['ip', 'unshare', 'python3', 'curl', 'nats-server']), () => {
  let dir = '';

  beforeAll(async () => {
    await labDown(P); // whatever an earlier, interrupted run left
    dir = mkdtempSync(join(tmpdir(), 'tapgate-cluster-lab-'));
  });

  afterAll(async () => {
    await labDown(P);
    rmSync(dir, { recursive: true, force: true });
  });

  it('nodes: 3 builds hub bridges, per-node TAPs, the sync network and a healthy JetStream nats-server', async () => {
    const info = await labUp({ prefix: P, config: { nodes: 3 } });
    expect(info.nodes).toBe(3);
    expect(info.natsUrl).toBe('nats://10.250.0.254:4222');
    expect(info.config.hub).toBe(true);
    expect(info.namespaces.nats).toBe(`${P}-nats`);
    expect(info.nodeInfo.map((n) => n.taps)).toEqual([1, 2, 3].map((i) => nodeTaps(i)));
    expect(nodeTaps(2)).toEqual({ client: 'tap-c2', server: 'tap-s2' });
    expect(ours().sort()).toEqual([`${P}-client`, `${P}-gw`, `${P}-nats`, `${P}-server`]);

    const links = await gwLinks();
    const byName = new Map(links.map((l) => [l.ifname, l]));
    expect([...byName.keys()].sort()).toEqual(['br-c', 'br-s', 'lo', 'sync', 'tap-c1', 'tap-c2', 'tap-c3', 'tap-s1', 'tap-s2', 'tap-s3', 'vc', 'vs']);
    for (const br of ['br-c', 'br-s']) expect(byName.get(br)?.linkinfo?.info_data?.['ageing_time']).toBe(0);
    for (let i = 1; i <= 3; i++) {
      const t = nodeTaps(i);
      expect(byName.get(t.client)?.master).toBe('br-c');
      expect(byName.get(t.server)?.master).toBe('br-s');
      for (const tap of [t.client, t.server]) {
        expect(byName.get(tap)?.mtu).toBe(1500);
        expect(byName.get(tap)?.linkinfo?.info_kind).toBe('tun');
        expect(byName.get(tap)?.linkinfo?.info_slave_data?.['learning']).toBe(false);
      }
    }
    for (const port of ['vc', 'vs']) expect(byName.get(port)?.linkinfo?.info_slave_data?.['learning']).toBe(false);
    expect(byName.get('sync')?.master).toBeUndefined();
    expect((await labExec(P, 'gw', ['ip', '-br', 'addr', 'show', 'dev', 'sync'])).stdout).toContain('10.250.0.1/24');
    expect((await labExec(P, 'nats', ['ip', '-br', 'addr', 'show', 'dev', 'eth0'])).stdout).toContain('10.250.0.254/24');

    // nats-server from the gw namespace: healthy, JetStream on with its store in the state dir.
    const health = await curlGw(`${LAB_SYNC.monitorUrl}/healthz?js-enabled-only=true`);
    expect(health.body).toContain('"ok"');
    const varz = JSON.parse((await curlGw(`${LAB_SYNC.monitorUrl}/varz`)).body) as { jetstream?: { config?: { store_dir?: string } } };
    expect(varz.jetstream?.config?.store_dir).toBe(join(info.stateDir, 'nats-js', 'jetstream'));
    const [srv, acct] = await natsRequest('$JS.API.INFO');
    expect(srv['jetstream']).toBe(true);
    expect(acct['type']).toBe('io.nats.jetstream.api.v1.account_info_response');
    // The sync network is the nodes' alone: not reachable from the client namespace.
    expect((await labExec(P, 'client', ['curl', '-s', '--max-time', '2', `${LAB_SYNC.monitorUrl}/healthz`])).code).not.toBe(0);

    const st = labStatus(P);
    expect(st.up).toBe(true);
    expect(st.namespaces.nats).toBe(true);
    expect(st.taps['tap-c'].exists).toBe(false);
    expect(st.nodes.map((n) => [n.node, n.client.exists, n.client.attached, n.client.master, n.server.exists, n.server.master])).toEqual(
      [1, 2, 3].map((i) => [i, true, false, 'br-c', true, 'br-s']),
    );
    expect(st.nats?.process?.alive).toBe(true);
    expect(st.nats?.process?.pid).toBe(info.natsPid);
    expect(st.nats?.healthy).toBe(true);

    // Twice is harmless; a classic labUp on a cluster lab is refused, not mixed in.
    const again = await labUp({ prefix: P, config: { nodes: 3 } });
    expect(again.natsPid).toBe(info.natsPid);
    expect((await gwLinks()).map((l) => l.ifname).sort()).toEqual([...byName.keys()].sort());
    await expect(labUp({ prefix: P })).rejects.toThrow(LabError);
  });

  it('hub mode: a unicast frame for a MAC learnt on one TAP reaches every node on that segment', async () => {
    const stats = join(dir, 'counter.json');
    const taps = [1, 2, 3].flatMap((i) => [nodeTaps(i).client, nodeTaps(i).server]);
    labSpawn(P, 'gw', 'counter', [process.execPath, '--import', 'tsx', 'test/lab/fixtures/tap-counter.ts', '--stats', stats, '--dst', '02:00:00:00:00:aa', '--learn', 'tap-c1', ...taps], { cwd: REPO });
    await until('counter to attach all node TAPs', () => {
      const st = labStatus(P, { probeNats: false });
      return st.nodes.every((n) => n.client.attached && n.server.attached) && existsSync(stats) ? true : undefined;
    }, 20_000);
    await new Promise((r) => setTimeout(r, 300)); // the counter's "learn" frames from 02:..:aa on tap-c1
    const send = (role: 'client' | 'server'): Promise<unknown> =>
      labExec(P, role, ['python3', '-c', [
        'import socket',
        's = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)',
        's.bind(("eth0", 0))',
        'src = open("/sys/class/net/eth0/address").read().strip().replace(":", "")',
        'f = bytes.fromhex("0200000000aa" + src + "88b5") + bytes(46)',
        '[s.send(f) for _ in range(10)]',
      ].join('\n')]);
    await send('client');
    await send('server');
    try {
      const counts = await until('frames on every TAP', () => {
        const c = (JSON.parse(readFileSync(stats, 'utf8')) as { counts: Record<string, number> }).counts;
        return taps.every((t) => (c[t] ?? 0) >= 10) ? c : undefined;
      });
      // Each segment floods to every node's TAP on it, exactly once; nothing crosses between the two.
      expect(counts).toEqual(Object.fromEntries(taps.map((t) => [t, 10])));
    } finally {
      // Whatever happened: the counter must not hold the node TAPs for the next test.
      await labKill(P, 'counter');
    }
    await until('TAPs detached', () => (labStatus(P, { probeNats: false }).nodes.every((n) => !n.client.attached) ? true : undefined));
  });

  it('labStartNode / labKillNode: node<i> runs in gw; SIGKILL is immediate, SIGTERM lets it exit', async () => {
    const pid = labStartNode(P, 2, ['sleep', '600']);
    // The process enters the namespace a moment after it is spawned (seen once: '' at once).
    const ns = (): string => spawnSync('ip', ['netns', 'identify', String(pid)], { encoding: 'utf8' }).stdout.trim();
    for (let i = 0; i < 40 && ns() !== `${P}-gw`; i++) spawnSync('sleep', ['0.05']);
    expect(ns()).toBe(`${P}-gw`);
    expect(labStartNode(P, 2, ['sleep', '600'])).toBe(pid); // running: kept
    const st = labStatus(P, { probeNats: false });
    expect(st.nodes.find((n) => n.node === 2)?.process).toMatchObject({ name: 'node2', pid, alive: true, role: 'gw' });
    const t0 = Date.now();
    expect(await labKillNode(P, 2, 'SIGKILL')).toBe(pid);
    expect(Date.now() - t0).toBeLessThan(1000);
    expect(pidGone(pid)).toBe(true);
    expect(labStatus(P, { probeNats: false }).nodes.find((n) => n.node === 2)?.process).toBeUndefined();
    expect(await labKillNode(P, 2, 'SIGKILL')).toBeUndefined(); // not running: harmless

    // A "draining" node: takes 300 ms after SIGTERM, then exits by itself (no SIGKILL needed).
    const marker = join(dir, 'drained');
    const pid3 = labStartNode(P, 3, ['sh', '-c', `trap 'sleep 0.3; touch ${marker}; exit 0' TERM; while :; do sleep 0.05; done`]);
    await new Promise((r) => setTimeout(r, 200));
    const t1 = Date.now();
    expect(await labKillNode(P, 3, 'SIGTERM', { graceMs: 10_000 })).toBe(pid3);
    const took = Date.now() - t1;
    expect(took).toBeGreaterThanOrEqual(250);
    expect(took).toBeLessThan(5000);
    expect(existsSync(marker)).toBe(true);
    expect(pidGone(pid3)).toBe(true);

    // One that ignores SIGTERM is killed after graceMs.
    const pid1 = labStartNode(P, 1, ['sh', '-c', "trap '' TERM; while :; do sleep 0.05; done"]);
    await new Promise((r) => setTimeout(r, 200));
    await labKillNode(P, 1, 'SIGTERM', { graceMs: 300 });
    expect(pidGone(pid1)).toBe(true);
    // labWaitNodesAttached: a node that attaches its TAPs (the counter stands in), one that dies.
    const t = nodeTaps(1);
    labStartNode(P, 1, [process.execPath, '--import', 'tsx', 'test/lab/fixtures/tap-counter.ts', t.client, t.server], { cwd: REPO });
    await labWaitNodesAttached(P, 1, { timeoutMs: 20_000 });
    labStartNode(P, 2, ['false']);
    const err = await labWaitNodesAttached(P, 2, { timeoutMs: 20_000 }).then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(LabError);
    expect(String(err)).toMatch(/^LabError: node 2 did not attach \(node 2 not running\)/);
    await labKillNode(P, 1, 'SIGKILL');
    await labKillNode(P, 2, 'SIGKILL');
  });

  it('labRestartNats keeps the JetStream store; labStopNats/labStartNats make an outage of chosen length', async () => {
    const created = (await natsRequest('$JS.API.STREAM.CREATE.LABT', JSON.stringify({ name: 'LABT', subjects: ['labt.>'], storage: 'file' })))[1];
    expect(created['error']).toBeUndefined();
    const ack = (await natsRequest('labt.one', 'hello'))[1];
    expect(ack).toMatchObject({ stream: 'LABT', seq: 1 });
    const oldPid = labStatus(P, { probeNats: false }).nats?.process?.pid;
    expect(oldPid).toBeGreaterThan(0);

    const newPid = await labRestartNats(P);
    expect(newPid).not.toBe(oldPid);
    expect(pidGone(oldPid!)).toBe(true);
    expect(labStatus(P).nats).toMatchObject({ healthy: true, process: { pid: newPid, alive: true } });
    const info1 = (await natsRequest('$JS.API.STREAM.INFO.LABT'))[1] as { state?: { messages?: number } };
    expect(info1.state?.messages).toBe(1);

    // An outage: nothing answers on the sync network until labStartNats.
    const t0 = Date.now();
    await labStopNats(P);
    expect(Date.now() - t0).toBeLessThan(1000); // SIGKILL by default: immediate
    expect(pidGone(newPid)).toBe(true);
    expect((await curlGw(`${LAB_SYNC.monitorUrl}/healthz`)).code).not.toBe(0);
    expect((await labExec(P, 'gw', ['python3', NATS_REQ, NATS_HOSTPORT, '$JS.API.INFO'])).code).not.toBe(0);
    const st = labStatus(P);
    expect(st.nats).toMatchObject({ namespace: true, healthy: false });
    expect(st.nats?.process).toBeUndefined();
    await new Promise((r) => setTimeout(r, 500));
    const pid2 = await labStartNats(P);
    expect(await labStartNats(P)).toBe(pid2); // running: kept
    expect((await curlGw(`${LAB_SYNC.monitorUrl}/healthz?js-enabled-only=true`)).body).toContain('"ok"');
    const ack2 = (await natsRequest('labt.two', 'again'))[1];
    expect(ack2).toMatchObject({ stream: 'LABT', seq: 2 });

    // A clean stop works too.
    await labStopNats(P, { signal: 'SIGTERM' });
    expect(pidGone(pid2)).toBe(true);
    await labStartNats(P);
  });

  it('labDown leaves nothing: namespaces (nats too), node processes, nats-server, state', async () => {
    const n1 = labStartNode(P, 1, ['sleep', '600']);
    const n3 = labStartNode(P, 3, ['sleep', '600']);
    const st = labStatus(P, { probeNats: false });
    const natsPid = st.nats?.process?.pid;
    expect(natsPid).toBeGreaterThan(0);
    await labDown(P);
    expect(ours()).toEqual([]);
    for (const pid of [n1, n3, natsPid!]) expect(pidGone(pid)).toBe(true);
    expect(existsSync(st.stateDir)).toBe(false);
    expect(spawnSync('ip', ['-br', 'link'], { encoding: 'utf8' }).stdout).not.toMatch(/^(tap-[cs][0-9]+|sync)[\s@]/m);
    await labDown(P); // and again: harmless
    expect(labStatus(P).up).toBe(false);
    expect(labStatus(P).nats).toBeUndefined();
  });

  it('CLI: lab up --nodes 2 starts node<i> = tapgate run --cluster ..., lab status shows them, lab down cleans', async () => {
    const cli = (args: string[]): { code: number | null; stdout: string; stderr: string } => {
      const r = spawnSync(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'lab', ...args, '--name', P], { cwd: REPO, encoding: 'utf8', timeout: 90_000 });
      return { code: r.status, stdout: r.stdout, stderr: r.stderr };
    };
    const pcap = join(dir, 'pcap');
    const upRes = cli(['up', '--nodes', '2', '--no-vnet-hdr', '--pcap', pcap, '--impair', 'loss=1%', '--json']);
    expect(upRes.code, upRes.stderr).toBe(0);
    const out = JSON.parse(upRes.stdout.trim().split('\n').pop()!) as {
      nodes: number;
      natsUrl: string;
      nodeInfo: Array<{ node: number; pid: number; argv: string[]; log: string }>;
    };
    expect(out.nodes).toBe(2);
    expect(out.natsUrl).toBe(LAB_SYNC.natsUrl);
    expect(out.nodeInfo.map((n) => n.node)).toEqual([1, 2]);
    for (const n of out.nodeInfo) {
      const a = n.argv;
      expect(a.slice(1, 11)).toEqual([join(REPO, 'bin/tapgate.js'), 'run', '--tap', `tap-c${n.node}`, '--tap', `tap-s${n.node}`, '--cluster', natsNodeUrl(n.node, 1), '--node-id', String(n.node)]);
      expect(natsNodeUrl(n.node, 1)).toBe(`nats://10.250.0.${10 + n.node}:4222`);
      expect(a).toContain('--no-vnet-hdr');
      expect(a.slice(a.indexOf('--pcap'), a.indexOf('--pcap') + 2)).toEqual(['--pcap', join(pcap, `node${n.node}`)]);
      expect(a.slice(a.indexOf('--impair'), a.indexOf('--impair') + 2)).toEqual(['--impair', 'loss=1%']);
      expect(n.log).toMatch(/node[12]\.log$/);
    }
    const gwLinkNames = (await gwLinks()).map((l) => l.ifname).sort();
    expect(gwLinkNames).toEqual(['br-c', 'br-s', 'lo', 'sync', 'tap-c1', 'tap-c2', 'tap-s1', 'tap-s2', 'vc', 'vs']);

    const stRes = cli(['status']);
    expect(stRes.code, stRes.stderr).toBe(0);
    expect(stRes.stdout).toContain(`namespace ${P}-nats`);
    expect(stRes.stdout).toMatch(/nodes 2/);
    expect(stRes.stdout).toMatch(/node 1 +tap-c1 .*on br-c, tap-s1 .*on br-s; (pid \d+ (running|dead)|no process)/);
    expect(stRes.stdout).toMatch(/nats +nats:\/\/10\.250\.0\.254:4222 pid \d+ running, healthy/);

    const downRes = cli(['down']);
    expect(downRes.code, downRes.stderr).toBe(0);
    expect(ours()).toEqual([]);
    for (const n of out.nodeInfo) expect(pidGone(n.pid)).toBe(true);
  });

  it('natsServers: 3 is a NATS cluster (routes, JetStream in each); each node has its own address of it, and labPartitionNode cuts one both ways until healed', async () => {
    await labDown(P);
    const info = await labUp({ prefix: P, config: { nodes: 2, natsServers: 3 } });
    expect([info.natsServers, info.natsPids.length]).toEqual([3, 3]);
    expect(natsNodeUrl(2, 3)).toBe('nats://10.250.0.12:4222,nats://10.250.0.12:4223,nats://10.250.0.12:4224');
    for (const port of [8222, 8223, 8224]) {
      const routez = JSON.parse((await curlGw(`http://${LAB_SYNC.natsIp}:${port}/routez`)).body) as { num_routes: number };
      expect(routez.num_routes, `server at monitor port ${port}`).toBe(2);
      // Its client address is not advertised: a node keeps to the address it was given.
      const varz = JSON.parse((await curlGw(`http://${LAB_SYNC.natsIp}:${port}/varz`)).body) as { cluster?: { name?: string; no_advertise?: boolean } };
      expect(varz.cluster).toMatchObject({ name: P });
    }
    const reach = async (i: number): Promise<boolean> => (await curlGw(`http://${natsNodeAddr(i)}:8223/healthz`)).code === 0;
    expect([await reach(1), await reach(2)]).toEqual([true, true]);
    labPartitionNode(P, 1, true);
    labPartitionNode(P, 1, true); // again: the same single cut
    expect([await reach(1), await reach(2)]).toEqual([false, true]);
    labPartitionNode(P, 1, false);
    expect([await reach(1), await reach(2)]).toEqual([true, true]);
    // One server of three stops and comes back (the others keep serving).
    await labStopNats(P, { server: 2 });
    expect((await curlGw(`http://${natsNodeAddr(2)}:8222/healthz`)).code).toBe(0);
    await labStartNats(P, { server: 2 });
    expect(labStatus(P, { probeNats: false }).processes.filter((p) => /^nats\d?$/.test(p.name) && p.alive).map((p) => p.name).sort()).toEqual(['nats', 'nats2', 'nats3']);
    await labDown(P);
    expect(ours()).toEqual([]);
  });

  it('labDown works after a crash: nats-server and nodes still running, state dir lost', async () => {
    const info = await labUp({ prefix: P, config: { nodes: 2 }, nodeCommand: () => ['sleep', '600'] });
    const nodePids = info.nodeInfo.map((n) => n.pid!);
    expect(nodePids.every((p) => p > 0 && !pidGone(p))).toBe(true);
    const stray = spawn('ip', ['netns', 'exec', `${P}-nats`, 'sleep', '600'], { detached: true, stdio: 'ignore' });
    stray.unref();
    await until('stray process', () => (existsSync(`/proc/${stray.pid}`) ? true : undefined));
    rmSync(info.stateDir, { recursive: true, force: true }); // the memory of labUp is gone
    await labDown(P);
    expect(ours()).toEqual([]);
    for (const pid of [...nodePids, info.natsPid!, stray.pid!]) {
      await until(`pid ${pid} to end`, () => (pidGone(pid) ? true : undefined), 5000);
    }
  });
});
