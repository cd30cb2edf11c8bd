/**
 * The gateway cluster end to end (issue 8, docs/ARCHITECTURE.md §5), as root: the lab with 3 nodes on hub
 * bridges (every node sees every frame), the production layout of the sync network — three NATS
 * servers with JetStream, the bucket replicated three times, each node at its own address — and
 * two clients behind one masquerade address (examples/cluster.yaml: NAT + ftp agent + a replace
 * rule on HTTP port 8001, the http agent on 8002). Transfers in flight while:
 * - the owning node is killed with SIGKILL at five seeded random moments (the text has a
 *   replacement every few hundred bytes, so every moment is right after a rewrite) and restarted
 *   (it joins again and takes its share back by hand-over);
 * - a node drains (SIGTERM) and a node joins;
 * - one of the three NATS servers is killed and restarted (nobody fails over), then all three
 *   are stopped for 1.5 s (every node's lease runs out: it stops forwarding, and rejoins);
 * - the owning node is cut off the sync network (nftables, a partition): it stops forwarding
 *   when its lease runs out, before the others take its connections over, and no data frame
 *   reaches a segment twice.
 * Every transfer must complete with the exact expected content (HTTP body rewritten, FTP files
 * byte-exact through NAT, passive and active; two files over one keep-alive connection through
 * the http agent, one with Content-Length re-framed as chunked, one chunked by the origin, both
 * moved between nodes in the middle of a body; a gzip body the http agent decodes, rewrites and
 * codes again, its decoder moved between nodes mid-body), and no endpoint may send a reset: the
 * captures of the client and server segments hold no RST. The forwarding gap at each failover
 * (the longest silence around the kill of a steady stream the client reads: 100 bytes every 5 ms
 * from the server, from the client's capture) is reported (median, max).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, expect, it } from 'vitest';
import {
  labDown,
  labExec,
  labKillNode,
  labPartitionNode,
  labSpawn,
  labStartNats,
  labStartNode,
  labStateDir,
  labStopNats,
  labUp,
  labWaitNodesAttached,
} from '../../src/lab/lab.js';
import { ownerOf } from '../../src/cluster/rendezvous.js';
import { readPcapAll } from '../../src/phy/pcap.js';
import { decodeFrame } from '../../src/wire/frame.js';
import { ipv4ToString } from '../../src/wire/ipv4.js';
import { mulberry32 } from '../../src/util/prng.js';
import { get16 } from '../../src/wire/bytes.js';
import { REPO, describeE2E } from '../lab/e2e-env.js';
import { ftpProblems, netnsList, sha, startVsftpd, vsftpdFixture, waitVsftpd, type FtpFixture } from './ftp-helpers.js';
import { expectedRewrite, firstDifference, rewriteText, startHttpServer, waitUntil } from './lab-helpers.js';
import { BIN, CLUSTER_URL as URL, clusterStatus, nodeArgv as clusterNodeArgv, waitView as clusterWaitView, type NodeStatus } from './cluster-helpers.js';

const P = 'tgk';
const SERVER = '10.200.0.2';
const C1 = { role: 'client' as const, ip: '10.200.0.1', addr: 0x0ac80001 };
const C2 = { role: 'client2' as const, ip: '10.200.0.3', addr: 0x0ac80003 };
const CONFIG = join(REPO, 'examples/cluster.yaml');
const NODES = [1, 2, 3];
const SEED = Number(process.env['TAPGATE_CLUSTER_SEED'] ?? 20261124);
const problems = ftpProblems(['ip', 'python3', 'curl', 'vsftpd', 'tcpdump', 'nats-server']);
/**
 * A steady stream for measuring the forwarding gap at a failover: the server sends 100 bytes
 * every 5 ms on each connection to TICK_PORT (no rule: a pass-through connection, owned and moved
 * like the others) until the client closes it.
 */
const TICK_PORT = 9100;
const TICKER = `
import socket, sys, threading, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(8)
def serve(c):
    c.setblocking(False)
    try:
        while True:
            try:
                if c.recv(16) is not None: break  # the reader's 'q' (or its end): stop
            except BlockingIOError:
                pass
            c.setblocking(True); c.sendall(b'x' * 100); c.setblocking(False)
            time.sleep(0.005)
        c.setblocking(True); c.shutdown(socket.SHUT_WR)
        while c.recv(4096): pass
    except Exception:
        pass
    c.close()
while True:
    c, _ = s.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
`;
/** Reads the ticker until the file argv[3] exists, then asks it to stop and reads to its end (no reset). */
const TICK_READER = `
import os, socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)
while not os.path.exists(sys.argv[3]):
    if not c.recv(65536): sys.exit('ticker closed early')
c.sendall(b'q'); c.shutdown(socket.SHUT_WR)
while c.recv(65536): pass
c.close()
`;
/** An HTTP/1.1 keep-alive origin (Content-Length and chunked responses) for the http agent's rule. */
const ORIGIN = join(REPO, 'test/e2e/fixtures/http_origin.py');

/** NATS servers of the lab: the README's production layout. */
const NATS_SERVERS = 3;
const nodeArgv = (i: number): string[] => clusterNodeArgv(i, CONFIG, NATS_SERVERS);
const status = (): Promise<NodeStatus[]> => clusterStatus(P);
/** The view `ids` on every node; failing, with what each node logged of its membership. */
const waitView = (ids: number[]): Promise<NodeStatus[]> =>
  clusterWaitView(P, ids).catch((e: Error) => {
    throw new Error(`${e.message}${membershipLog()}`);
  });

/** Each node's log (every incarnation: the logs are appended to), as lines. */
function nodeLogs(): { file: string; lines: string[] }[] {
  const dir = labStateDir(P);
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((n) => /^node\d+\.log$/.test(n))
    .sort()
    .map((file) => ({ file, lines: readFileSync(join(dir, file), 'utf8').split('\n') }));
}

/** The last `n` lines of each node's log that `re` matches, under a heading naming them `what`. */
function lastNodeLines(what: string, re: RegExp, n: number): string {
  const out: string[] = [];
  for (const { file, lines } of nodeLogs()) {
    const hit = lines.filter((l) => re.test(l));
    out.push(`--- ${file} (last ${Math.min(n, hit.length)} of ${hit.length} ${what})`, ...hit.slice(-n).map((l) => l.slice(0, 300)));
  }
  return out.length === 0 ? '' : `\n${out.join('\n')}`;
}

/** The nodes' membership lines (views, nodes found dead, leases lost, readiness). */
const membershipLog = (): string => lastNodeLines('membership lines', /cluster (view|node dead|node ready|lease lost)|"mod":"cluster".*"level":[45]0|"level":[45]0.*"mod":"cluster"/, 20);

/**
 * For a failed transfer's message: what each node logged about the cluster lately (views,
 * deaths, the sync connection, takeovers, hand-overs), so that a failure in CI can be read.
 */
const clusterLog = (): string => lastNodeLines('cluster lines', /cluster|taken over|hand|dead|view|"level":[45]0/, 12);

const ownerNode = (addr: number, view: number[]): number => Number(ownerOf(addr, view.map(String)));
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describeE2E('a 3-node gateway cluster in the lab (hub bridges, NATS JetStream)', problems, () => {
  const nsBefore = netnsList();
  let fx: FtpFixture;
  let text = '';
  const gaps: number[] = [];
  const caps: Record<string, string> = {};
  const totals: Record<string, number> = {};

  beforeAll(async () => {
    fx = vsftpdFixture(SERVER, 4 << 20, 'tapgate-cluster-');
    text = rewriteText(3 << 20);
    writeFileSync(join(fx.root, 'text.txt'), text);
    await labDown(P);
    await labUp({ prefix: P, config: { nodes: 3, clients: 2, natsServers: NATS_SERVERS }, cwd: REPO });
    for (const i of NODES) labStartNode(P, i, nodeArgv(i), { cwd: REPO });
    await labWaitNodesAttached(P, 3, { timeoutMs: 30_000 });
    await waitView(NODES);
    startVsftpd(P, fx.conf);
    startHttpServer(P, SERVER, 8001, fx.root);
    labSpawn(P, 'server', 'origin-8002', ['python3', ORIGIN, SERVER, '8002', fx.root, 'HTTP/1.1']);
    labSpawn(P, 'server', 'ticker', ['python3', '-c', TICKER, SERVER, String(TICK_PORT)]);
    // Listening before the first transfer (asked inside the server's namespace: no connection
    // through the cluster). A SYN that arrives too early is refused, and refusals reach the client.
    for (const port of [8001, 8002]) {
      await waitUntil(15_000, 100,
        () => labExec(P, 'server', ['curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '2', `http://${SERVER}:${port}/text.txt`]),
        (r) => r.stdout === '200',
        (r) => `http server on ${port} not listening: ${r.stderr}`);
    }
    // Both segments: the clients' (each client sees its own frames and the broadcast ones) and
    // the server's (everything the nodes forward to it).
    for (const role of ['client', 'client2', 'server'] as const) {
      caps[role] = join(fx.dir, `${role}.pcap`);
      labSpawn(P, role, `tcpdump-${role}`, ['tcpdump', '-i', 'eth0', '-nn', '-U', '-w', caps[role]!, 'tcp']);
    }
    await sleep(500);
    for (const c of [C1, C2]) await waitVsftpd(P, SERVER, c.role);
  }, 120_000);

  afterAll(async () => {
    if (gaps.some(Number.isFinite)) {
      const s = gaps.filter(Number.isFinite).sort((a, b) => a - b);
      const line = `cluster failover forwarding gap (ms): n=${s.length} median=${s[s.length >> 1]!.toFixed(0)} max=${s[s.length - 1]!.toFixed(0)} all=[${s.map((g) => g.toFixed(0)).join(', ')}]`;
      console.log(line);
    }
    // Kept for reading a failure: the nodes' logs and the clients' captures.
    if (process.env['TAPGATE_CLUSTER_KEEP_LOGS'] !== undefined) spawnSync('sh', ['-c', `cp /run/tapgate/${P}/*.log ${fx.dir}/*.pcap ${process.env['TAPGATE_CLUSTER_KEEP_LOGS']}/`]);
    await labDown(P);
    rmSync(fx.dir, { recursive: true, force: true });
    expect(netnsList().filter((n) => n.startsWith(`${P}-`))).toEqual([]);
    expect(nsBefore.filter((n) => n.startsWith(`${P}-`))).toEqual([]);
  });

  /** Transfers of each client still running (set by `transfers`). */
  const running = { client: 0, client2: 0, keepAlive: false, gzip: false };

  /**
   * Lines the nodes logged (every incarnation: the logs are appended to) since `sinceMs` whose
   * warning key is `key`: e.g. `nat:no-mac`, a reply the node could not address to its host — the
   * connection stalls until the host speaks again.
   */
  function logged(key: string, sinceMs: number): string[] {
    const out: string[] = [];
    for (const { file, lines } of nodeLogs()) {
      for (const l of lines) {
        if (!l.includes(`"key":"${key}"`)) continue;
        const t = (JSON.parse(l) as { time?: number }).time ?? 0;
        if (t >= sinceMs) out.push(`${file}: ${l.slice(0, 300)}`);
      }
    }
    return out;
  }

  /** A transfer's failure: what curl said, every RST the segments carried since `sinceMs`, the nodes' cluster lines. */
  async function failure(what: string, stderr: string, sinceMs: number): Promise<string> {
    const r = await resets(sinceMs);
    // What the nodes logged about the RSTs' ports (NAT entries, takeovers of their connections).
    const ports = new Set(r.flatMap((x) => [...x.matchAll(/:(\d+) > [\d.]+:(\d+)/g)].flatMap((m) => [m[1]!, m[2]!])));
    const about: string[] = [];
    for (const { file, lines } of nodeLogs()) {
      for (const l of lines) {
        if ([...ports].some((p) => l.includes(`:${p}"`) || l.includes(`.${p}-`) || l.includes(`.${p}"`) || l.includes(`.${p}#`))) about.push(`${file}: ${l.slice(0, 300)}`);
      }
    }
    return `${what}: ${stderr.trim()}\n${r.length} RST since the transfers began\n${r.slice(0, 10).join('\n')}\n` +
      `node lines about ports ${[...ports].join(', ')} (last 30 of ${about.length}):\n${about.slice(-30).join('\n')}${clusterLog()}`;
  }

  /**
   * Four transfers at once: client 1 downloads the HTTP text (rewritten) and uploads by active
   * FTP (EPRT through the masquerade: vsftpd connects back to the NAT's expected port); client 2
   * downloads by passive FTP and fetches the text twice over one keep-alive connection through
   * the http agent (Content-Length from the origin, then chunked). Rate-limited to last about
   * `seconds`.
   */
  function transfers(tag: string, seconds: number): Promise<void> {
    const rateHttp = Math.ceil(text.length / seconds);
    const rateFtp = Math.ceil(fx.data.length / seconds);
    const http = join(fx.dir, `http-${tag}`);
    const gz = join(fx.dir, `gzip-${tag}`);
    // The coded body is about 23 KB (the text repeats): it lasts the whole run at this rate.
    const rateGzip = Math.max(512, Math.ceil(gzipSync(text).length / seconds));
    const down = join(fx.dir, `ftp-${tag}`);
    const up = `up-${tag}.bin`;
    const curl = (role: 'client' | 'client2', args: string[]) => {
      running[role]++;
      return labExec(P, role, ['curl', '-sS', '--max-time', String(seconds * 4 + 30), ...args], { timeoutMs: (seconds * 4 + 40) * 1000 }).finally(() => running[role]--);
    };
    const t0 = Date.now();
    const took = (what: string): void => console.log(`${tag}: ${what} done after ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    const keep = [join(fx.dir, `ka1-${tag}`), join(fx.dir, `ka2-${tag}`)];
    running.keepAlive = true;
    running.gzip = true;
    const runs = [
      curl('client2', ['--limit-rate', String(2 * rateHttp), '-w', '%{num_connects} %{http_code}\\n',
        '-o', keep[0]!, `http://${SERVER}:8002/text.txt`, '-o', keep[1]!, `http://${SERVER}:8002/chunked/text.txt?size=4093`]).then(async (r) => {
        took('http keep-alive');
        running.keepAlive = false;
        if (r.code !== 0) throw new Error(await failure(`http keep-alive ${tag}`, r.stderr, t0));
        // One connection for both (the second reused it), both answered 200.
        expect(r.stdout.trim().split('\n'), `http keep-alive ${tag}`).toEqual(['1 200', '0 200']);
        const exp = expectedRewrite(text);
        for (const f of keep) {
          const got = readFileSync(f, 'latin1');
          if (got !== exp) throw new Error(`http keep-alive ${tag} (${f}): ${firstDifference(got, exp)}${clusterLog()}`);
        }
      }),
      curl('client', ['--ignore-content-length', '--limit-rate', String(rateHttp), '-o', http, `http://${SERVER}:8001/text.txt`]).then(async (r) => {
        took('http');
        if (r.code !== 0) throw new Error(await failure(`http ${tag}`, r.stderr, t0));
        const got = readFileSync(http, 'latin1');
        const exp = expectedRewrite(text);
        if (got !== exp) {
          let i = 0;
          while (got[i] === exp[i]) i++;
          throw new Error(`http ${tag}: ${got.length} bytes vs ${exp.length} expected, first difference at ${i}: ${JSON.stringify(got.slice(i - 20, i + 20))}${clusterLog()}`);
        }
      }),
      // A gzip body through the http agent's decode, its decoder's state moving with every
      // takeover of client 2's owner (the origin codes whatever was asked; curl decodes).
      curl('client2', ['--compressed', '--limit-rate', String(rateGzip), '-D', `${gz}.head`, '-o', gz, `http://${SERVER}:8002/alwaysgzip/text.txt`]).then(async (r) => {
        took('http gzip');
        running.gzip = false;
        if (r.code !== 0) throw new Error(await failure(`http gzip ${tag}`, r.stderr, t0));
        expect(readFileSync(`${gz}.head`, 'latin1'), `http gzip ${tag}: the response came gzip-coded`).toMatch(/^Content-Encoding: gzip\r$/m);
        const got = readFileSync(gz, 'latin1');
        const exp = expectedRewrite(text);
        if (got !== exp) throw new Error(`http gzip ${tag}: ${firstDifference(got, exp)}${clusterLog()}`);
      }),
      curl('client2', ['--limit-rate', String(rateFtp), '-o', down, `ftp://${SERVER}/data.bin`]).then(async (r) => {
        took('ftp download');
        if (r.code !== 0) throw new Error(await failure(`ftp download ${tag}`, r.stderr, t0));
        expect(sha(readFileSync(down))).toBe(sha(fx.data));
      }),
      curl('client', ['-P', C1.ip, '--limit-rate', String(rateFtp), '-T', join(fx.dir, 'upload.bin'), `ftp://${SERVER}/up/${up}`]).then(async (r) => {
        took('ftp upload');
        if (r.code !== 0) throw new Error(await failure(`ftp upload ${tag}`, r.stderr, t0));
        expect(sha(readFileSync(join(fx.root, 'up', up)))).toBe(sha(fx.data));
      }),
    ];
    return Promise.all(runs).then(() => undefined);
  }

  /**
   * Every RST on the client and server segments since `sinceMs` (Unix ms): an endpoint resets
   * only what it cannot continue — a reset transfer, or a segment of a connection it no longer
   * has (e.g. a frame forwarded after the end, or translated with a port it never saw).
   */
  async function resets(sinceMs: number): Promise<string[]> {
    const found: string[] = [];
    for (const role of ['client', 'client2', 'server']) {
      for (const rec of (await readPcapAll(caps[role]!)).records) {
        const d = decodeFrame(rec.data, { link: 'ethernet', verifyChecksums: false });
        if (d.kind !== 'tcp' || Number(rec.tsNs / 1_000_000n) < sinceMs || (d.tcp.flags & 0x04) === 0) continue;
        found.push(`RST on the ${role} segment ${ipv4ToString(d.ip!.src)}:${d.tcp.srcPort} > ${ipv4ToString(d.ip!.dst)}:${d.tcp.dstPort} flags 0x${d.tcp.flags.toString(16)} seq ${d.tcp.seq} ack ${d.tcp.ack} at ${Number(rec.tsNs / 1_000_000n)}`);
      }
    }
    return found;
  }

  /** No RST since `sinceMs`; else a message with each RST (time, tuple, numbers) and the nodes' cluster log. */
  async function expectNoReset(sinceMs: number, what: string): Promise<void> {
    const r = await resets(sinceMs);
    expect(r.length, `${what}: ${r.length} RST\n${r.slice(0, 10).join('\n')}${r.length > 0 ? clusterLog() : ''}`).toBe(0);
  }

  /**
   * The forwarding gap at time `t` (Unix ms) for client `c`: the longest silence around `t` of
   * the ticker stream it reads (data every 5 ms from the server), from its own capture.
   */
  async function gapAt(t: number, c: { addr: number; role: 'client' | 'client2' }): Promise<number> {
    let before = -Infinity;
    let after = Infinity;
    for (const rec of (await readPcapAll(caps[c.role]!)).records) {
      const d = decodeFrame(rec.data, { link: 'ethernet', verifyChecksums: false });
      if (d.kind !== 'tcp' || d.payloadLen === 0 || d.tcp.srcPort !== TICK_PORT || d.ip!.dst !== c.addr) continue;
      const x = Number(rec.tsNs / 1_000_000n);
      if (x <= t && x > before) before = x;
      if (x > t && x < after) after = x;
    }
    return after - before;
  }

  it('SIGKILL of the owning node at seeded random moments, repeatedly: every transfer completes exactly, no reset', async () => {
    const rand = mulberry32(SEED);
    const rst0 = Date.now();
    // The tickers run through every kill, flowing before the first.
    const tickStop = join(fx.dir, 'tickers-stop');
    const tickers = [C1, C2].map((c) => labExec(P, c.role, ['python3', '-c', TICK_READER, SERVER, String(TICK_PORT), tickStop], { timeoutMs: 150_000 }));
    await sleep(1000);
    const done = transfers('kill', 30);
    const kills: Array<{ t: number; c: typeof C1 | typeof C2 }> = [];
    let view = [...NODES];
    let keepAliveHit = false;
    let gzipHit = false;
    for (let round = 0; round < 5; round++) {
      await sleep(600 + rand() * 900);
      // Alternately the owner of client 2 and of client 1, whichever still has a transfer
      // running; client 2 first, while its keep-alive download through the http agent is
      // surely in the middle of a body.
      const c = round % 2 === 0 && running.client2 > 0 ? C2 : C1;
      const victim = ownerNode(c.addr, view);
      if (c === C2 && running.keepAlive) keepAliveHit = true;
      if (c === C2 && running.gzip) gzipHit = true;
      await labKillNode(P, victim, 'SIGKILL');
      kills.push({ t: Date.now(), c });
      view = view.filter((n) => n !== victim);
      await sleep(1200);
      // It comes back and takes its share again (a join: hand-over from the others).
      labStartNode(P, victim, nodeArgv(victim), { cwd: REPO });
      view = [...NODES];
      await waitView(NODES);
    }
    await sleep(500);
    writeFileSync(tickStop, '');
    await done;
    for (const r of await Promise.all(tickers)) expect(r.code, `ticker: ${r.stderr}`).toBe(0);
    expect(keepAliveHit, 'a kill of client 2\'s owner while its http keep-alive download ran').toBe(true);
    expect(gzipHit, 'a kill of client 2\'s owner while its gzip download (decoded by the http agent) ran').toBe(true);
    const st = await status();
    totals['takeovers'] = st.reduce((a, n) => a + (n.counters['takeovers'] ?? 0), 0);
    await expectNoReset(rst0, `kills at ${kills.map((k) => `${k.t} (${k.c.ip})`).join(', ')}`);
    // A node that came back takes connections over whose hosts it never heard: it has their MACs
    // from the snapshots, so no reply waits for the host to speak again (a 72 s stall once).
    expect(logged('nat:no-mac', rst0)).toEqual([]);
    for (const k of kills) gaps.push(await gapAt(k.t, k.c));
    console.log(`kills at ${kills.map((k, i) => `${k.t} (${k.c.ip}: gap ${gaps[gaps.length - kills.length + i]!.toFixed(0)} ms)`).join(', ')}`);
    // Every kill falls inside the tickers' run: each has data before and after it.
    expect(gaps.every(Number.isFinite), `gaps ${gaps.join(', ')}`).toBe(true);
    expect(totals['takeovers']).toBeGreaterThan(0);
  }, 180_000);

  it('drain (SIGTERM) hands connections over with zero resets; a joining node takes its share and they keep working', async () => {
    const rst0 = Date.now();
    const done = transfers('drain', 10);
    await sleep(1500);
    const victim = ownerNode(C1.addr, NODES);
    await labKillNode(P, victim, 'SIGTERM', { graceMs: 15_000 });
    const rest = NODES.filter((n) => n !== victim);
    await waitView(rest);
    await sleep(1500);
    // The drained node joins again while the transfers go on.
    labStartNode(P, victim, nodeArgv(victim), { cwd: REPO });
    const st = await waitView(NODES);
    await done;
    await expectNoReset(rst0, 'drain');
    // The rejoined node took its share back from the others by hand-over (final states).
    const back = st.find((n) => n.node === String(victim))!;
    const after = (await status()).find((n) => n.node === String(victim))!;
    expect((after.counters['takeovers'] ?? 0) + (back.counters['takeovers'] ?? 0)).toBeGreaterThan(0);
  }, 180_000);

  /** The nodes' counter `name`, summed. */
  const total = (st: NodeStatus[], name: string): number => st.reduce((a, n) => a + (n.counters[name] ?? 0), 0);

  it('one of three NATS servers killed and restarted: nobody fails over; all three stopped for 1.5 s: every node stops forwarding, rejoins, and every transfer completes exactly, no reset', async () => {
    const rst0 = Date.now();
    const done = transfers('nats', 14);
    await sleep(1500);
    const st0 = await status();
    // The first server, the one every node is on (they take the servers in order): they all
    // reconnect to the next within their lease.
    await labStopNats(P, { server: 1 });
    await sleep(2000);
    // Healthy means caught up: under CI's load its replica of the bucket, written on all the
    // while, once took more than the default 15 s to become current.
    await labStartNats(P, { server: 1, timeoutMs: 60_000 });
    const st1 = await waitView(NODES);
    const keys = ['fences', 'nodesDead', 'unsyncedReleases', 'publishErrors', 'republished', 'takeovers'];
    console.log(`one NATS server killed: ${keys.map((k) => `${k} ${total(st1, k) - total(st0, k)}`).join(', ')}`);
    expect([total(st1, 'fences') - total(st0, 'fences'), total(st1, 'nodesDead') - total(st0, 'nodesDead')], 'one NATS server killed: no fence, no death').toEqual([0, 0]);
    await sleep(1000);
    // All three: no node can renew its lease; each stops forwarding until the servers are back.
    await labStopNats(P, { server: 'all' });
    await sleep(1500);
    // The same for all three (a stream not current yet after 15 s failed a CI run once).
    await labStartNats(P, { server: 'all', timeoutMs: 60_000 });
    await done;
    await expectNoReset(rst0, 'nats');
    const st2 = await waitView(NODES);
    console.log(`all NATS servers stopped: ${keys.map((k) => `${k} ${total(st2, k) - total(st1, k)}`).join(', ')}`);
    for (const n of st2) expect(n.counters['fences'] ?? 0, `node ${n.node} fenced in the whole outage`).toBeGreaterThan(0);
    // The sync works again: snapshots are acknowledged.
    await transfers('nats-after', 3);
    expect(total(await status(), 'acked')).toBeGreaterThan(total(st2, 'acked'));
  }, 180_000);

  /**
   * Data frames on the segments between `from` and `to` (Unix ms) that arrived twice: the same
   * tuple, sequence number, length and IP identification (a frame two nodes forwarded; an
   * endpoint's own retransmission has a new identification).
   */
  async function duplicates(from: number, to: number): Promise<string[]> {
    const out: string[] = [];
    for (const role of ['client', 'client2', 'server']) {
      const seen = new Set<string>();
      for (const rec of (await readPcapAll(caps[role]!)).records) {
        const t = Number(rec.tsNs / 1_000_000n);
        if (t < from || t > to) continue;
        const d = decodeFrame(rec.data, { link: 'ethernet', verifyChecksums: false });
        if (d.kind !== 'tcp' || d.payloadLen === 0 || d.ip?.version !== 4) continue;
        const k = `${ipv4ToString(d.ip.src)}:${d.tcp.srcPort} > ${ipv4ToString(d.ip.dst)}:${d.tcp.dstPort} seq ${d.tcp.seq} len ${d.payloadLen} id ${get16(rec.data, 18)}`;
        if (seen.has(k)) out.push(`${role} segment at ${t}: ${k}`);
        seen.add(k);
      }
    }
    return out;
  }

  it('a partition: the owner cut off the sync network stops forwarding before the others take over; transfers exact, no reset, no data frame twice; it rejoins', async () => {
    const rst0 = Date.now();
    const done = transfers('partition', 12);
    await sleep(2000);
    const victim = ownerNode(C1.addr, NODES);
    const st0 = await status();
    const cut = Date.now();
    labPartitionNode(P, victim, true);
    try {
      await waitView(NODES.filter((n) => n !== victim));
      await sleep(1500);
    } finally {
      labPartitionNode(P, victim, false);
    }
    const healed = Date.now();
    await waitView(NODES);
    await done;
    await expectNoReset(rst0, 'partition');
    expect(await duplicates(cut, healed + 2000), 'data frames forwarded twice').toEqual([]);
    const st = await status();
    const v = st.find((n) => n.node === String(victim))!;
    const v0 = st0.find((n) => n.node === String(victim))!;
    expect((v.counters['fences'] ?? 0) - (v0.counters['fences'] ?? 0), `node ${victim} fenced`).toBe(1);
    expect(total(st, 'takeovers') - total(st0, 'takeovers')).toBeGreaterThan(0);
    console.log(`partition of node ${victim}: ${healed - cut} ms; ${['fences', 'fencedDrops', 'syncDrops', 'handoffSkipped'].map((k) => `${k} ${total(st, k) - total(st0, k)}`).join(', ')}`);
  }, 180_000);

  it('tapgate cluster reload: every node re-reads the config and answers with the same digest', async () => {
    const r = await labExec(P, 'gw', [process.execPath, BIN, 'cluster', 'reload', '--cluster', URL, '--wait-ms', '1500'], { timeoutMs: 15_000 });
    expect(r.code, r.stderr).toBe(0);
    const answers = JSON.parse(r.stdout) as Array<{ node: string; reloaded?: boolean; digest?: string; error?: string }>;
    expect(answers.map((a) => a.node).sort()).toEqual(NODES.map(String));
    expect(answers.every((a) => a.reloaded === true)).toBe(true);
    expect(new Set(answers.map((a) => a.digest)).size).toBe(1);
    // Connections keep flowing after it.
    await transfers('after-reload', 2);
  }, 60_000);
});
