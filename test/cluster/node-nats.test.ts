/**
 * Cluster membership over a real NATS server (src/cluster/node.ts with a real nats-server, JetStream
 * on, bound to 127.0.0.1 on a free port; each ClusterNode attached to its own in-process Gateway).
 * Shows: two nodes become ready and see the view ['a','b'] within 2 s, and status() reports what
 * `tapgate cluster status` relies on; a node that stops (no drain) is declared dead by the other
 * within deadMs + 1 s; when the NATS server dies (SIGKILL) a node keeps its view frozen (nobody
 * declared dead, `connected` false) for as long as the outage lasts, and after nats-server
 * restarts on the same port and store dir the connection comes back and heartbeats resume.
 * Every nats-server started here is killed in afterEach/afterAll whatever happens.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createConnection, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ClusterNode } from '../../src/cluster/node.js';
import { Gateway, type Emit, type Side } from '../../src/engine/gateway.js';
import { tcpFrame } from '../../src/wire/tcp-frame.js';
import { parseConfig, type Config } from '../../src/config/index.js';
import { hostKey, ownerOf } from '../../src/cluster/rendezvous.js';
import { masqMac } from '../../src/nat/frames.js';
import { get16, get32 } from '../../src/wire/bytes.js';

const NATS = '/usr/sbin/nats-server';
const HAVE_NATS = existsSync(NATS);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      const port = typeof a === 'object' && a !== null ? a.port : 0;
      s.close(() => resolve(port));
    });
  });
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const c = createConnection({ host: '127.0.0.1', port });
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
}

/** Polls `cond` every 20 ms until it holds or `ms` pass; returns whether it held. */
async function until(cond: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (cond()) return true;
    await sleep(20);
  }
  return cond();
}

/** One nats-server process (restartable on the same port and store dir). */
class NatsServer {
  proc: ChildProcess | null = null;
  log = '';
  constructor(readonly port: number, readonly storeDir: string) {}

  async start(): Promise<void> {
    const p = spawn(NATS, ['-js', '-sd', this.storeDir, '-a', '127.0.0.1', '-p', String(this.port)], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc = p;
    p.stdout!.on('data', (d: Buffer) => (this.log += d.toString()));
    p.stderr!.on('data', (d: Buffer) => (this.log += d.toString()));
    const end = Date.now() + 15_000;
    while (Date.now() < end) {
      if (p.exitCode !== null) throw new Error(`nats-server exited (${p.exitCode}):\n${this.log}`);
      if (this.log.includes('Server is ready') && (await canConnect(this.port))) return;
      await sleep(25);
    }
    throw new Error(`nats-server did not become ready:\n${this.log}`);
  }

  /** SIGKILL and wait for the process to be gone. */
  async kill(): Promise<void> {
    const p = this.proc;
    this.proc = null;
    if (p === null || p.exitCode !== null || p.signalCode !== null) return;
    const gone = new Promise<void>((r) => p.once('exit', () => r()));
    p.kill('SIGKILL');
    await Promise.race([gone, sleep(5000)]);
  }
}

/**
 * A TCP relay in front of the NATS server that can stall: both directions stop being read (the
 * kernel buffers what the endpoints send, as a partition dropping packets would leave it to TCP's
 * retransmission) until `heal`, when the backlog flows. Neither end sees its connection close.
 */
class StallProxy {
  private readonly pairs: Array<[ReturnType<typeof createConnection>, ReturnType<typeof createConnection>]> = [];
  private readonly server = createServer((c) => {
    const u = createConnection({ host: '127.0.0.1', port: this.upstream });
    c.pipe(u);
    u.pipe(c);
    const end = () => {
      c.destroy();
      u.destroy();
    };
    c.on('error', end).on('close', end);
    u.on('error', end).on('close', end);
    this.pairs.push([c, u]);
    if (this.stalled) for (const x of [c, u]) x.pause();
  });
  private stalled = false;
  port = 0;

  constructor(private readonly upstream: number) {}

  async listen(): Promise<void> {
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', () => r()));
    const a = this.server.address();
    this.port = typeof a === 'object' && a !== null ? a.port : 0;
  }

  stall(): void {
    this.stalled = true;
    for (const p of this.pairs) for (const x of p) x.pause();
  }

  /**
   * Closes relayed connection `i` (in the order they came) at both ends, as a server dropping a
   * client would; new connections are held (not relayed) for `holdMs`.
   */
  drop(i: number, holdMs: number): void {
    const n = this.pairs.length;
    this.stalled = true;
    for (const x of this.pairs[i] ?? []) x.destroy();
    setTimeout(() => {
      this.stalled = false;
      for (const p of this.pairs.slice(n)) for (const x of p) x.resume();
    }, holdMs);
  }

  heal(): void {
    this.stalled = false;
    for (const p of this.pairs) for (const x of p) x.resume();
  }

  close(): void {
    for (const p of this.pairs) for (const x of p) x.destroy();
    this.server.close();
  }
}

interface Member {
  node: ClusterNode;
  gw: Gateway;
  out: Array<{ frame: Uint8Array; to: Side }>;
}

const REWRITE = parseConfig('rules:\n  - match: { port: 80 }\n    agent: replace\n    replace:\n      - { find: "Hello", with: "Hi" }\n', 'r.yaml');

/** Clients of 10.200.0.0/24 masqueraded as 10.200.0.100 (as in examples/cluster.yaml). */
const MASQ_CFG = parseConfig('nat:\n  masquerade:\n    - { side: client, sources: 10.200.0.0/24, address: 10.200.0.100, ports: "20000-29999" }\nrules: []\n', 'm.yaml');
const MAC_C = Uint8Array.of(2, 0, 10, 200, 0, 1);
const MAC_S = Uint8Array.of(2, 0, 10, 200, 0, 2);

type Extra = { deadMs?: number; heartbeatMs?: number; syncHoldMs?: number; stallMs?: number; suspectMs?: number; leaseMs?: number; now?: () => number };

function member(url: string, id: string, name: string, extra: Extra = {}, rewrite = false, config?: Config): Member {
  const node = new ClusterNode({ url, nodeId: id, name, log: pino({ level: 'silent' }), ...extra });
  const gw = new Gateway({ cluster: node, ...(rewrite ? { config: REWRITE } : config !== undefined ? { config } : {}) });
  const out: Member['out'] = [];
  const emit: Emit = (frame, to) => out.push({ frame: frame.slice(), to });
  node.attach({ gateway: gw, inject: (fn) => fn(emit, Date.now()) });
  return { node, gw, out };
}

const viewOf = (m: Member): string[] => m.node.status().view as string[];
const connectedOf = (m: Member): boolean => m.node.status().connected as boolean;

let seq = 0;
const clusterName = (): string => `t${process.pid}-${Date.now().toString(36)}-${++seq}`;

describe.skipIf(!HAVE_NATS)('ClusterNode over a real nats-server', () => {
  let dir = '';
  let server: NatsServer;
  let url = '';
  const nodes: Member[] = [];

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tapgate-nats-'));
    server = new NatsServer(await freePort(), join(dir, 'store'));
    url = `nats://127.0.0.1:${server.port}`;
    await server.start();
  });

  afterEach(async () => {
    // Nodes first (while the server may still be up, so drain completes), bounded anyway.
    if (server.proc === null) await server.start().catch(() => {});
    await Promise.all(nodes.splice(0).map((m) => Promise.race([m.node.stop().catch(() => {}), sleep(3000)])));
  });

  afterAll(async () => {
    await server?.kill();
    if (dir !== '') rmSync(dir, { recursive: true, force: true });
  });

  async function two(extra: Extra = {}, urlA = url, rewrite = false): Promise<[Member, Member]> {
    const name = clusterName();
    const a = member(urlA, 'a', name, extra, rewrite);
    const b = member(url, 'b', name, extra, rewrite);
    nodes.push(a, b);
    await Promise.all([a.node.start(), b.node.start()]);
    return [a, b];
  }

  it('two nodes become ready and see the view [a, b] within 2 s; status() fields', async () => {
    const t0 = Date.now();
    const [a, b] = await two();
    expect(await until(() => viewOf(a).join() === 'a,b' && viewOf(b).join() === 'a,b', 2000 - (Date.now() - t0))).toBe(true);
    expect(Date.now() - t0).toBeLessThan(2000);
    for (const [m, id] of [[a, 'a'], [b, 'b']] as const) {
      const s = m.node.status();
      expect(s.node).toBe(id);
      expect(s.ready).toBe(true);
      expect(s.draining).toBe(false);
      expect(s.connected).toBe(true);
      expect(s.view).toEqual(['a', 'b']);
      expect(typeof s.nonTcpForwarder).toBe('boolean');
      expect(s.owned).toEqual([]);
      expect(s.spares).toBe(0);
      expect(s.spareAgeMaxMs).toBe(0);
      expect(s.syncLagMs).toBe(0);
      expect(s.heldBytes).toBe(0);
      const c = s.counters as Record<string, number>;
      expect(c.nodesDead).toBe(0);
      expect(c.viewChanges).toBeGreaterThanOrEqual(1);
      expect(c.badSnapshots).toBe(0);
      // Status is plain JSON (it travels over NATS for `tapgate cluster status`).
      expect(JSON.parse(JSON.stringify(s))).toEqual(s);
    }
    // Exactly one node forwards non-TCP traffic.
    expect(Number(a.node.status().nonTcpForwarder) + Number(b.node.status().nonTcpForwarder)).toBe(1);
    // Both know each other as members.
    expect([...a.node.members.keys()].sort()).toEqual(['a', 'b']);
    expect(b.node.members.get('a')?.ready).toBe(true);
  });

  it('a node that stops without drain is declared dead within deadMs + 1 s', async () => {
    const deadMs = 400;
    const [a, b] = await two({ deadMs });
    expect(await until(() => viewOf(b).join() === 'a,b', 2000)).toBe(true);
    await a.node.stop();
    nodes.splice(nodes.indexOf(a), 1);
    const t0 = Date.now();
    expect(await until(() => viewOf(b).join() === 'b', deadMs + 1000)).toBe(true);
    expect(Date.now() - t0).toBeLessThanOrEqual(deadMs + 1000);
    const c = b.node.status().counters as Record<string, number>;
    expect(c.nodesDead).toBeGreaterThanOrEqual(1);
    expect(b.node.members.has('a')).toBe(false);
    // b now forwards non-TCP traffic: it is alone.
    expect(b.node.status().nonTcpForwarder).toBe(true);
  });

  it('a node whose sync connection is gone is dead at once (its liveness subject has no responders), long before deadMs', async () => {
    const [a, b] = await two({ deadMs: 10_000 });
    expect(await until(() => viewOf(b).join() === 'a,b', 2000)).toBe(true);
    await sleep(2000); // b's own connection is trusted to judge others' after 2 s (PROBE_TRUST_MS)
    await a.node.stop();
    nodes.splice(nodes.indexOf(a), 1);
    const t0 = Date.now();
    expect(await until(() => viewOf(b).join() === 'b', 2000)).toBe(true);
    expect(Date.now() - t0).toBeLessThan(1000);
    const c = b.node.status().counters as Record<string, number>;
    expect([c['nodesDead'], c['nodesGone']]).toEqual([1, 1]);
  });

  it('an event loop held for 300 ms (both nodes: one process) is no failure: the heartbeats come from the workers, a silent node that still has its connection is not dead, and a late timer round judges no one', async () => {
    const [a, b] = await two({ deadMs: 250 });
    expect(await until(() => viewOf(a).join() === 'a,b' && viewOf(b).join() === 'a,b', 2000)).toBe(true);
    const t = Date.now();
    while (Date.now() - t < 300) {
      /* held: rewriting a burst, a major GC */
    }
    await sleep(300);
    for (const m of [a, b]) {
      const c = m.node.status().counters as Record<string, number>;
      expect([c['nodesDead'], viewOf(m).join()]).toEqual([0, 'a,b']);
      expect(c['lateTimers']).toBeGreaterThanOrEqual(1);
    }
  });

  it('a node whose main thread stops handing its worker the heartbeat (stuck, not busy) is declared dead after stallMs', async () => {
    const [a, b] = await two({ stallMs: 300 });
    expect(await until(() => viewOf(b).join() === 'a,b', 2000)).toBe(true);
    // a's own timers stop (its loop is stuck as far as the worker can tell); b's run on.
    for (const t of (a.node as unknown as { timers: NodeJS.Timeout[] }).timers) clearInterval(t);
    const t0 = Date.now();
    expect(await until(() => viewOf(b).join() === 'b', 2000)).toBe(true);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(300);
  });

  it('without fencing (leaseMs 0) a NATS outage freezes the view; after a restart the connection and heartbeats come back', async () => {
    const [a, b] = await two({ deadMs: 400, leaseMs: 0 });
    expect(await until(() => viewOf(a).join() === 'a,b' && viewOf(b).join() === 'a,b', 2000)).toBe(true);

    await server.kill();
    expect(await until(() => !connectedOf(a) && !connectedOf(b), 3000)).toBe(true);
    // Frozen: far longer than deadMs, nobody is declared dead.
    const outageStart = Date.now();
    while (Date.now() - outageStart < 2200) {
      expect(viewOf(a)).toEqual(['a', 'b']);
      expect(viewOf(b)).toEqual(['a', 'b']);
      await sleep(100);
    }
    expect((a.node.status().counters as Record<string, number>).nodesDead).toBe(0);
    expect((b.node.status().counters as Record<string, number>).nodesDead).toBe(0);
    expect(connectedOf(a)).toBe(false);

    await server.start();
    const restarted = Date.now();
    expect(await until(() => connectedOf(a) && connectedOf(b), 10_000)).toBe(true);
    // Heartbeats resume: each hears the other again after the restart.
    expect(
      await until(() => (a.node.members.get('b')?.lastMs ?? 0) > restarted && (b.node.members.get('a')?.lastMs ?? 0) > restarted, 5000),
    ).toBe(true);
    const heardA = b.node.members.get('a')!.lastMs;
    await sleep(600);
    expect(b.node.members.get('a')!.lastMs).toBeGreaterThan(heardA);
    expect(viewOf(a)).toEqual(['a', 'b']);
    expect(viewOf(b)).toEqual(['a', 'b']);
    // The reconnect gave every member a fresh deadline: nobody was declared dead on the way.
    expect((a.node.status().counters as Record<string, number>).nodesDead).toBe(0);
    expect((b.node.status().counters as Record<string, number>).nodesDead).toBe(0);
  });

  it('fenced: a node cut off from NATS (its traffic stalled, not closed) stops forwarding before the other takes it for dead; its backlog heartbeats are ignored; it rejoins as a new incarnation and gets its connection back', async () => {
    const proxy = new StallProxy(server.port);
    await proxy.listen();
    try {
      const [a, b] = await two({ syncHoldMs: 3000 }, `nats://127.0.0.1:${proxy.port}`, true);
      expect(await until(() => viewOf(a).join() === 'a,b' && viewOf(b).join() === 'a,b', 2000)).toBe(true);
      const ac = () => a.node.status().counters as Record<string, number>;
      const bc = () => b.node.status().counters as Record<string, number>;
      // A rewritten connection of a client a owns.
      const C = [...Array(64).keys()].map((i) => 0x0a000100 + i).find((h) => ownerOf(hostKey(h), ['a', 'b']) === 'a')!;
      const S = 0x0a000002;
      const c2s = (seq: number, ack: number, flags: number) => tcpFrame({ src: C, dst: S, srcPort: 40000, dstPort: 80, seq, ack, flags });
      const s2c = (seq: number, text: string) => tcpFrame({ src: S, dst: C, srcPort: 80, dstPort: 40000, seq, ack: 101, flags: 0x18, payload: Buffer.from(text) });
      const sent: number[] = [];
      const emitA: Emit = (frame, to) => {
        sent.push(Date.now());
        a.out.push({ frame: frame.slice(), to });
      };
      const emitB: Emit = (frame, to) => b.out.push({ frame: frame.slice(), to });
      await sleep(350); // past the join grace
      a.gw.handleFrame(c2s(100, 0, 0x02), 0, Date.now(), emitA);
      b.gw.handleFrame(c2s(100, 0, 0x02), 0, Date.now(), emitB);
      a.gw.handleFrame(tcpFrame({ src: S, dst: C, srcPort: 80, dstPort: 40000, seq: 500, ack: 101, flags: 0x12 }), 1, Date.now(), emitA);
      a.gw.handleFrame(c2s(101, 501, 0x10), 0, Date.now(), emitA);
      a.gw.handleFrame(s2c(501, 'Hello world\n'), 1, Date.now(), emitA);
      expect(await until(() => a.out.length === 4, 2000), 'the rewrite goes once stored').toBe(true);
      expect(Buffer.from(a.out[3]!.frame).includes(Buffer.from('Hi world'))).toBe(true);
      expect(await until(() => b.node.status().spares === 1, 2000)).toBe(true);
      await sleep(100);

      const inc = a.node.status().incarnation;
      proxy.stall();
      const t0 = Date.now();
      let tFence = 0;
      let tDead = 0;
      let incFenced = 0;
      let seq = 513;
      while (Date.now() - t0 < 1500 && (tFence === 0 || tDead === 0)) {
        // The server goes on sending: a's copy of each segment waits for a snapshot that cannot be stored.
        a.gw.handleFrame(s2c(seq, 'Hello again\n'), 1, Date.now(), emitA);
        seq += 12;
        if (tFence === 0 && ac()['fences'] === 1) {
          tFence = Date.now();
          incFenced = a.node.status().incarnation as number;
        }
        if (tDead === 0 && bc()['nodesDead'] === 1) tDead = Date.now();
        await sleep(2);
      }
      expect([tFence > 0, tDead > 0]).toEqual([true, true]);
      expect(tFence, 'a stops before b takes over').toBeLessThan(tDead);
      // Each new rewrite waits for its snapshot, which cannot be stored now: nothing goes, and
      // what waits is dropped when the lease runs out.
      expect(sent.filter((t) => t >= t0), 'nothing a sent after the cut').toEqual([]);
      expect(ac()['heldFrames']).toBeGreaterThan(0);
      expect(ac()['fencedDrops']).toBeGreaterThan(0);
      expect(a.node.status().owned).toEqual([]);
      expect(a.node.status().ready).toBe(false);
      expect(viewOf(b)).toEqual(['b']);
      // b continues the connection: the segment a could not send, rewritten from the stored state.
      b.gw.handleFrame(s2c(513, 'Hello again\n'), 1, Date.now(), emitB);
      expect(bc()['takeovers']).toBe(1);
      expect(await until(() => b.out.some((o) => Buffer.from(o.frame).includes(Buffer.from('Hi again'))), 2000)).toBe(true);

      await sleep(800); // a's heartbeats of its next incarnation pile up, unheard
      proxy.heal();
      expect(await until(() => viewOf(b).join() === 'a,b' && viewOf(a).join() === 'a,b', 3000), 'a rejoins').toBe(true);
      expect(a.node.status().incarnation).not.toBe(inc);
      expect(bc()['staleHeartbeats'], 'the heartbeats a sent before its lease ran out, delivered late').toBeGreaterThan(0);
      // Its heartbeats heard back late (sent during the cut) gave the new incarnation no lease
      // that ran out at once: it joined as the one it became at the fence.
      expect(a.node.status().incarnation).toBe(incFenced);
      // a owns the client's host again: b hands the connection over, a continues it.
      expect(await until(() => (a.node.status().owned as unknown[]).length === 1 && (b.node.status().owned as unknown[]).length === 0, 3000)).toBe(true);
      expect(bc()['handoffs']).toBe(1);
    } finally {
      proxy.close();
    }
  });

  it('a batch whose frames were queued while the lease held is not written once it ran out (the live loop asks again at the write: mayWrite)', async () => {
    let skew = 0;
    const [a] = await two({ now: () => Date.now() + skew });
    expect(await until(() => viewOf(a).join() === 'a,b', 2000)).toBe(true);
    const fd = () => (a.node.status().counters as Record<string, number>)['fencedDrops']!;
    expect(a.node.mayWrite(3), 'the lease holds: the batch goes').toBe(true);
    expect(fd()).toBe(0);
    // The batch took longer than the lease has left (a stall between queueing and writing): no
    // timer round ran in between, so nothing else fenced the node yet.
    skew = 10_000;
    expect(a.node.mayWrite(3)).toBe(false);
    expect(fd()).toBe(3);
    skew = 0;
  });

  it('a node whose heartbeat connection alone is closed is not dead (its main connection still answers), and its lease holds while it reconnects', async () => {
    const proxy = new StallProxy(server.port);
    await proxy.listen();
    try {
      const [a, b] = await two({ deadMs: 400 }, `nats://127.0.0.1:${proxy.port}`);
      expect(await until(() => viewOf(b).join() === 'a,b', 2000)).toBe(true);
      await sleep(2000); // b's own connection is trusted to judge others' after 2 s (PROBE_TRUST_MS)
      // a's connections through the relay: its main one first, then its heartbeat worker's.
      proxy.drop(1, 200);
      await sleep(1000);
      const ac = a.node.status().counters as Record<string, number>;
      const bc = b.node.status().counters as Record<string, number>;
      expect(bc['probes'], 'b asked about the silent a').toBeGreaterThan(0);
      expect([bc['nodesDead'], ac['fences'], viewOf(b).join(), viewOf(a).join()]).toEqual([0, 0, 'a,b', 'a,b']);
    } finally {
      proxy.close();
    }
  });

  it('fenced: NATS killed, both nodes stop forwarding when their lease runs out; nothing leaves then; after the restart both rejoin as new incarnations', async () => {
    const [a, b] = await two({ syncHoldMs: 3000 });
    expect(await until(() => viewOf(a).join() === 'a,b' && viewOf(b).join() === 'a,b', 2000)).toBe(true);
    await sleep(350);
    const C = [...Array(64).keys()].map((i) => 0x0a000100 + i).find((h) => ownerOf(hostKey(h), ['a', 'b']) === 'a')!;
    const S = 0x0a000002;
    const emit: Emit = (frame, to) => a.out.push({ frame: frame.slice(), to });
    const send = (f: Uint8Array, from: Side) => a.gw.handleFrame(f, from, Date.now(), emit);
    send(tcpFrame({ src: C, dst: S, srcPort: 40000, dstPort: 80, seq: 100, ack: 0, flags: 0x02 }), 0);
    send(tcpFrame({ src: S, dst: C, srcPort: 80, dstPort: 40000, seq: 500, ack: 101, flags: 0x12 }), 1);
    expect(a.out.length).toBe(2);
    const incs = [a.node.status().incarnation, b.node.status().incarnation];
    await server.kill();
    expect(await until(() => !connectedOf(a) && !connectedOf(b), 3000)).toBe(true);
    expect(await until(() => a.node.status().ready === false && b.node.status().ready === false, 1000)).toBe(true);
    send(tcpFrame({ src: C, dst: S, srcPort: 40000, dstPort: 80, seq: 101, ack: 501, flags: 0x10 }), 0);
    expect(a.out.length, 'nothing forwarded while fenced').toBe(2);
    expect((a.node.status().counters as Record<string, number>)['fences']).toBe(1);
    expect(a.node.status().owned).toEqual([]);
    await server.start();
    expect(await until(() => viewOf(a).join() === 'a,b' && viewOf(b).join() === 'a,b', 10_000), 'both rejoin').toBe(true);
    expect([a.node.status().incarnation, b.node.status().incarnation]).not.toContain(incs[0]);
    expect(b.node.status().incarnation).not.toBe(incs[1]);
    // a takes its connection back from its own last state and forwards again: after its join
    // grace (until the other has heard it ready, both would take it), the frame held meanwhile.
    send(tcpFrame({ src: C, dst: S, srcPort: 40000, dstPort: 80, seq: 101, ack: 501, flags: 0x10 }), 0);
    expect(await until(() => a.out.length === 3, 2000)).toBe(true);
    expect((a.node.status().counters as Record<string, number>)['takeovers']).toBe(1);
  });

  it('a joining node holds a frame of a connection handed to it untranslated until the final state, then sends it with the connection\'s own masquerade port', async () => {
    const name = clusterName();
    const C = 0x0ac80001; // 10.200.0.1, a masqueraded client
    const S = 0x0ac80002;
    const MASQ = 0x0ac80064;
    // The joining node's id is one that owns C's host among the two.
    const joinId = ['b', 'c', 'd', 'e', 'f', 'g', 'h'].find((id) => ownerOf(hostKey(C), ['a', id]) === id)!;
    const a = member(url, 'a', name, {}, false, MASQ_CFG);
    a.gw.nat!.slice = { index: 0, count: 2 };
    nodes.push(a);
    await a.node.start();
    await sleep(350); // past the join grace: a SYN is taken
    const out = (m: Member) => (frame: Uint8Array, to: Side) => m.out.push({ frame: frame.slice(), to });
    const c2s = (seq: number, ack: number, flags: number, text?: string) =>
      tcpFrame({ src: C, dst: S, srcPort: 40000, dstPort: 80, seq, ack, flags, srcMac: MAC_C, dstMac: MAC_S, ...(text !== undefined ? { payload: Buffer.from(text) } : {}) });
    a.gw.handleFrame(c2s(100, 0, 0x02), 0, Date.now(), out(a));
    // The SYN leaves once the snapshot with its translation is stored (the next test).
    expect(await until(() => a.out.length === 1, 2000)).toBe(true);
    const port = get16(a.out[0]!.frame, 34);
    a.gw.handleFrame(tcpFrame({ src: S, dst: MASQ, srcPort: 80, dstPort: port, seq: 500, ack: 101, flags: 0x12, srcMac: MAC_S, dstMac: masqMac(MASQ) }), 1, Date.now(), out(a));
    a.gw.handleFrame(c2s(101, 501, 0x10), 0, Date.now(), out(a));
    expect(a.out.length).toBe(3);
    const acked = () => (a.node.status().counters as Record<string, number>)['acked'] ?? 0;
    expect(await until(() => acked() > 0, 2000)).toBe(true);
    await sleep(100); // the established state published too

    const b = member(url, joinId, name, {}, false, MASQ_CFG);
    b.gw.nat!.slice = { index: 1, count: 2 };
    nodes.push(b);
    await b.node.start();
    // In the same turn (no NATS message handled yet: the old owner's final state cannot be here,
    // and a has not heard b ready): a frame both see — a, the owner in its view, forwards it;
    // b holds it — then one only b sees (a's final state will not cover it).
    const both = c2s(101, 501, 0x18, 'both');
    const n0 = a.out.length;
    a.gw.handleFrame(both.slice(), 0, Date.now(), out(a)); // a's own copy (NAT rewrites it in place)
    expect(a.out.length, 'a forwards it').toBe(n0 + 1);
    b.gw.handleFrame(both, 0, Date.now(), out(b));
    b.gw.handleFrame(c2s(105, 501, 0x18, 'data'), 0, Date.now(), out(b));
    expect(b.out.length, 'held for the hand-over').toBe(0);
    const bc = () => b.node.status().counters as Record<string, number>;
    expect(bc()['handoffWaits']).toBe(1);
    expect(await until(() => bc()['takeovers'] === 1 && b.out.length > 0, 3000)).toBe(true);
    await sleep(50);
    // The frame a forwarded before it handed over is not sent again.
    expect(b.out.map((o) => Buffer.from(o.frame.subarray(54)).toString())).toEqual(['data']);
    expect(bc()['handoffSkipped']).toBe(1);
    const sent = b.out[0]!;
    expect([sent.to, get32(sent.frame, 26), get16(sent.frame, 34), Buffer.from(sent.frame.subarray(54)).toString()]).toEqual([1, MASQ, port, 'data']);
    expect(b.gw.stats().nat?.importReplaced).toBe(0);
  });

  it('a masqueraded connection\'s SYN leaves once the snapshot with its translation is stored: its owner killed right after the handshake, the other node translates the server\'s answers to the client', async () => {
    const name = clusterName();
    const other = 'b';
    // A masqueraded client (10.200.0.x) whose host a owns.
    const C = [...Array(50).keys()].map((i) => 0x0ac80003 + i).find((c) => ownerOf(hostKey(c), ['a', other]) === 'a')!;
    const S = 0x0ac80002;
    const MASQ = 0x0ac80064;
    const a = member(url, 'a', name, { deadMs: 400 }, false, MASQ_CFG);
    const b = member(url, other, name, { deadMs: 400 }, false, MASQ_CFG);
    a.gw.nat!.slice = { index: 0, count: 2 };
    b.gw.nat!.slice = { index: 1, count: 2 };
    nodes.push(a, b);
    await Promise.all([a.node.start(), b.node.start()]);
    expect(await until(() => viewOf(a).length === 2 && viewOf(b).length === 2, 3000)).toBe(true);
    await sleep(350); // past the join grace: a SYN is taken
    const out = (m: Member) => (frame: Uint8Array, to: Side) => m.out.push({ frame: frame.slice(), to });
    const c2s = (seq: number, ack: number, flags: number) => tcpFrame({ src: C, dst: S, srcPort: 40000, dstPort: 80, seq, ack, flags, srcMac: MAC_C, dstMac: MAC_S });
    // No rule on port 80: the connection is only tracked and translated (the gateway's pass path).
    a.gw.handleFrame(c2s(100, 0, 0x02), 0, Date.now(), out(a));
    expect(a.out.length, 'the SYN waits for its snapshot').toBe(0);
    expect(await until(() => a.out.length === 1, 2000)).toBe(true);
    const port = get16(a.out[0]!.frame, 34);
    a.gw.handleFrame(tcpFrame({ src: S, dst: MASQ, srcPort: 80, dstPort: port, seq: 500, ack: 101, flags: 0x12, srcMac: MAC_S, dstMac: masqMac(MASQ) }), 1, Date.now(), out(a));
    a.gw.handleFrame(c2s(101, 501, 0x10), 0, Date.now(), out(a));
    expect(a.out.length, 'the handshake\'s other frames go at once').toBe(3);
    // The owner dies now: no periodic snapshot since the SYN's.
    await a.node.stop();
    nodes.splice(nodes.indexOf(a), 1);
    expect(await until(() => viewOf(b).join() === other, 3000)).toBe(true);
    b.gw.handleFrame(tcpFrame({ src: S, dst: MASQ, srcPort: 80, dstPort: port, seq: 501, ack: 101, flags: 0x18, payload: Buffer.from('data'), srcMac: MAC_S, dstMac: masqMac(MASQ) }), 1, Date.now(), out(b));
    expect(await until(() => b.out.length > 0, 2000), `the server's answer translated: ${JSON.stringify(b.gw.stats().nat)}`).toBe(true);
    const sent = b.out[0]!;
    expect([sent.to, get32(sent.frame, 30), get16(sent.frame, 36), Buffer.from(sent.frame.subarray(54)).toString()]).toEqual([0, C, 40000, 'data']);
  });

  it('with fencing, a rewrite whose snapshot cannot be stored (the bucket gone, NATS up: the lease holds) is never sent unsynced: dropped past syncHoldMs, the snapshot stored again and again', async () => {
    const name = clusterName();
    const m = member(url, 'a', name, { syncHoldMs: 300 }, true);
    nodes.push(m);
    await m.node.start();
    await sleep(350);
    const C = 0x0a000001;
    const S = 0x0a000002;
    const emit: Emit = (frame, to) => m.out.push({ frame: frame.slice(), to });
    const send = (f: Uint8Array, from: Side) => m.gw.handleFrame(f, from, Date.now(), emit);
    const s2c = (seq: number, text: string) => tcpFrame({ src: S, dst: C, srcPort: 80, dstPort: 40000, seq, ack: 101, flags: 0x18, payload: Buffer.from(text) });
    send(tcpFrame({ src: C, dst: S, srcPort: 40000, dstPort: 80, seq: 100, ack: 0, flags: 0x02 }), 0);
    send(tcpFrame({ src: S, dst: C, srcPort: 80, dstPort: 40000, seq: 500, ack: 101, flags: 0x12 }), 1);
    send(tcpFrame({ src: C, dst: S, srcPort: 40000, dstPort: 80, seq: 101, ack: 501, flags: 0x10 }), 0);
    expect(m.out.length).toBe(3);
    const counters = () => m.node.status().counters as Record<string, number>;
    // The bucket's stream deleted: puts fail, core NATS (and the lease) work on.
    const { connect } = await import('nats');
    const nc = await connect({ servers: url });
    await (await nc.jetstreamManager()).streams.delete(`KV_${name}-conns`);
    send(s2c(501, 'Hello world\n'), 1);
    expect(await until(() => counters()['publishErrors'] > 0, 3000)).toBe(true);
    expect(await until(() => counters()['syncDrops'] > 0, 3000), 'dropped past syncHoldMs').toBe(true);
    expect(m.out.length, 'never sent unsynced').toBe(3);
    expect([counters()['unsyncedReleases'], counters()['fences'], m.node.status().ready]).toEqual([0, 0, true]);
    expect(counters()['republished']).toBeGreaterThan(0);
    await nc.close();
  });

  it('without fencing (leaseMs 0) frames wait for the snapshot while the sync works, not while it is down (NATS killed)', async () => {
    const m = member(url, 'a', clusterName(), { syncHoldMs: 3000, leaseMs: 0 }, true);
    nodes.push(m);
    await m.node.start();
    expect(await until(() => viewOf(m).join() === 'a', 2000)).toBe(true);
    const C = 0x0a000001;
    const S = 0x0a000002;
    const c2s = (seq: number, ack: number, flags: number) => tcpFrame({ src: C, dst: S, srcPort: 40000, dstPort: 80, seq, ack, flags });
    const s2c = (seq: number, ack: number, flags: number, text?: string) =>
      tcpFrame({ src: S, dst: C, srcPort: 80, dstPort: 40000, seq, ack, flags, ...(text !== undefined ? { payload: Buffer.from(text) } : {}) });
    const emit: Emit = (frame, to) => m.out.push({ frame: frame.slice(), to });
    const send = (f: Uint8Array, from: Side) => m.gw.handleFrame(f, from, Date.now(), emit);
    const counters = () => m.node.status().counters as Record<string, number>;
    // Just joined: a new connection's SYN is left to the sender's retransmission for a few
    // heartbeats (another node may not count this one yet and would take the SYN too).
    send(c2s(100, 0, 0x02), 0);
    expect(m.out.length).toBe(0);
    expect(counters().joinGraceDrops).toBe(1);
    await sleep(350);
    send(c2s(100, 0, 0x02), 0);
    expect(m.out.length, 'the retransmitted SYN goes').toBe(1);
    send(s2c(500, 101, 0x12), 1);
    send(c2s(101, 501, 0x10), 0);
    // A rewrite (a new command): the frame waits for JetStream's acknowledgement, then goes.
    const n0 = m.out.length;
    send(s2c(501, 101, 0x18, 'Hello world\n'), 1);
    expect(m.out.length, 'held until the put is acknowledged').toBe(n0);
    expect(await until(() => m.out.length === n0 + 1, 2500)).toBe(true);
    expect(counters().unsyncedReleases).toBe(0);
    // Sync down: the next rewrite goes at once (nothing to wait for), counted.
    await server.kill();
    expect(await until(() => !connectedOf(m), 3000)).toBe(true);
    const n1 = m.out.length;
    send(s2c(513, 101, 0x18, 'Hello again\n'), 1);
    expect(m.out.length, 'not held while the sync is down').toBe(n1 + 1);
    expect(counters().unsyncedReleases).toBeGreaterThan(0);
    expect(Buffer.from(m.out.at(-1)!.frame).includes(Buffer.from('Hi again'))).toBe(true);
  });
});
