/**
 * `tapgate run --queues 2` in the lab (issue 18): multi-queue TAPs, one gateway process per
 * queue. Many parallel connections through a rule that changes lengths come out rewritten
 * exactly: both directions of every connection (and the ACKs the rewrite depends on) met in one
 * process — a connection split over two would show up as mid-stream entries and broken
 * transfers. Both processes carry connections; the statistics are their sum; each writes its own
 * capture and events, a connection in one queue's files only; the supervisor refuses what one
 * process per queue cannot do, and a TAP that is not multi-queue.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { labDown, labExec, labKill } from '../../src/lab/lab.js';
import { LAB_IFACES, labStateDir, nsName } from '../../src/lab/names.js';
import { attachedQueues } from '../../src/lab/sys.js';
import { readPcapAll } from '../../src/phy/pcap-read.js';
import { decodeFrame } from '../../src/wire/frame.js';
import { describeE2E, e2eProblems } from '../lab/e2e-env.js';
import {
  FIND_LONG,
  FIND_SHORT,
  MAIN,
  WITH_LONG,
  WITH_SHORT,
  expectedRewrite,
  gatewayStats,
  labUpWithGateway,
  netnsList,
  rewriteText,
  startHttpServer,
  tempDir,
  waitUntil,
} from './lab-helpers.js';

const P = 'tgq';
const SERVER = '10.200.0.2';
const CONFIG = `
rules:
  - name: rewrite-8001
    match: { port: 8001 }
    agent: replace
    replace:
      - { find: "${FIND_SHORT}", with: "${WITH_SHORT}" }
      - { find: "${FIND_LONG}", with: "${WITH_LONG}" }
`;

describeE2E('tapgate run --queues (multi-queue TAPs)', e2eProblems(['ip', 'unshare', 'python3', 'curl']), () => {
  const nsBefore = netnsList();
  let dir = '';
  let text = '';

  beforeAll(async () => {
    dir = tempDir('tapgate-queues-');
    text = rewriteText(1 << 20);
    writeFileSync(join(dir, 'text.txt'), text);
    writeFileSync(join(dir, 'config.yaml'), CONFIG);
    await labDown(P);
    await labUpWithGateway(P, join(dir, 'config.yaml'), ['--queues', '2', '--pcap', join(dir, 'pcap'), '--events', join(dir, 'ev.jsonl')], { config: { queues: 2 } });
    // The lab came up only when both processes had attached their queue of each TAP (carrier
    // comes with the first): no flow spread over fewer queues than the test measures.
    for (const t of [LAB_IFACES.tapClient, LAB_IFACES.tapServer]) expect(attachedQueues(nsName(P, 'gw'), t), t).toBe(2);
    startHttpServer(P, SERVER, 8001, dir);
    await waitUntil(15_000, 200,
      () => labExec(P, 'client', ['curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '2', `http://${SERVER}:8001/config.yaml`]),
      (r) => r.stdout === '200',
      (r) => `http.server not reachable through the gateway: ${r.stderr}`);
  });

  afterAll(async () => {
    await labDown(P);
    rmSync(dir, { recursive: true, force: true });
    expect(netnsList().sort()).toEqual(nsBefore.sort());
  });

  it('16 parallel downloads through a rule that changes lengths: every one exact, spread over both processes', async () => {
    const exp = expectedRewrite(text);
    const script = Array.from({ length: 16 }, (_, i) => `curl -sS --max-time 60 --ignore-content-length -o ${dir}/got${i} http://${SERVER}:8001/text.txt & p="$p $!"; `).join('') + 'for q in $p; do wait $q || exit 1; done';
    const r = await labExec(P, 'client', ['sh', '-c', script], { timeoutMs: 90_000 });
    expect(r.code, r.stderr).toBe(0);
    const st = gatewayStats(P);
    for (let i = 0; i < 16; i++) {
      const got = readFileSync(join(dir, `got${i}`), 'latin1');
      if (got !== exp) {
        let at = 0;
        while (at < got.length && got[at] === exp[at]) at++;
        const log = readFileSync(join(labStateDir(P), 'gateway.log'), 'utf8').split('\n').filter((l) => !l.startsWith('{"uptimeS"')).slice(-40).join('\n');
        expect.fail(`download ${i}: ${got.length} bytes, ${exp.length} expected, first difference at ${at}: ` +
          `${JSON.stringify(got.slice(Math.max(0, at - 40), at + 40))} for ${JSON.stringify(exp.slice(Math.max(0, at - 40), at + 40))}\n` +
          `stream: ${JSON.stringify(st['stream'])}\ngateway log:\n${log}`);
      }
    }
    const per = st['queues'] as unknown as Array<{ queue: number; framesIn: number }>;
    expect(per.map((q) => q.queue)).toEqual([0, 1]);
    // 17 connections hashed over two queues: both get some (all on one: 2^-16).
    for (const q of per) expect(q.framesIn, `queue ${q.queue}`).toBeGreaterThan(0);
    expect(st['flows']!['midstream'], 'a connection seen by two processes').toBe(0);
    expect(st['gateway']!['connectionsRewritten']).toBeGreaterThanOrEqual(16);
    expect(st['gateway']!['framesIn']).toBe(per.reduce((a, q) => a + q.framesIn, 0));
  }, 120_000);

  it('both processes stopped (SIGSTOP) for longer than the hold timeout mid-download (8 downloads): the frames queued meanwhile are read before the timers run, no hold times out', async () => {
    // Every segment boundary of this text falls inside a match but one in 17: nearly every
    // segment ends with a held tail when the processes stop. Before the late tick read the TAPs,
    // the hold timer fired first on resume (libuv runs timers before I/O) and released tails
    // whose next bytes were queued unread: a match split, a pattern through.
    // 4 MiB each: downloads still run across both stops, and the captures (every frame, both
    // sides) stay small enough to be written before the processes stop.
    const dense = `x${FIND_SHORT}`.repeat((4 << 20) / 17);
    writeFileSync(join(dir, 'dense.txt'), dense);
    const exp = expectedRewrite(dense);
    const before = gatewayStats(P);
    const pids = (before['queues'] as unknown as Array<{ pid: number }>).map((q) => q.pid);
    // Read at 1 MB/s each (about 4 s): still running at both stops however fast the machine (at
    // full speed the 8 downloads were over before the first).
    const script = Array.from({ length: 8 }, (_, i) => `curl -sS --limit-rate 1M --max-time 60 --ignore-content-length -o ${dir}/dense${i} http://${SERVER}:8001/dense.txt & p="$p $!"; `).join('') + 'for q in $p; do wait $q || exit 1; done';
    const downloads = labExec(P, 'client', ['sh', '-c', script], { timeoutMs: 90_000 });
    // A connection opened during each stop: its SYN surely waits in a TAP when the processes go
    // on (the downloads' own frames need not: at the stop, what they had sent may all have been
    // read, and their retransmission timers need not fire within it; no frame was read before
    // the timers in one full CI run).
    const probes: Array<Promise<{ code: number | null; stderr: string }>> = [];
    try {
      // The first stop once the curls are surely sending (200 ms was before some had connected on
      // a loaded box: no frame was queued during either stop, in one full CI run).
      for (const wait of [800, 400]) {
        await new Promise((resolve) => setTimeout(resolve, wait));
        for (const pid of pids) process.kill(pid, 'SIGSTOP');
        probes.push(labExec(P, 'client', ['curl', '-sS', '-o', '/dev/null', '--max-time', '20', `http://${SERVER}:8001/config.yaml`], { timeoutMs: 30_000 }));
        await new Promise((resolve) => setTimeout(resolve, 1800)); // the hold timeout is 1500 ms
        for (const pid of pids) process.kill(pid, 'SIGCONT');
      }
    } finally {
      for (const pid of pids) process.kill(pid, 'SIGCONT');
    }
    const r = await downloads;
    for (const probe of await Promise.all(probes)) expect(probe.code, `a connection opened during a stop: ${probe.stderr}`).toBe(0);
    const after = gatewayStats(P);
    const log = (): string => readFileSync(join(labStateDir(P), 'gateway.log'), 'utf8').split('\n').filter((l) => !l.startsWith('{"uptimeS"')).slice(-30).join('\n');
    const seen = JSON.stringify({ stream: after['stream'], gateway: after['gateway'], loop: after['loop'], taps: after['taps'] });
    expect(r.code, `${r.stderr}\n${seen}\ngateway log:\n${log()}`).toBe(0);
    for (let i = 0; i < 8; i++) {
      const got = readFileSync(join(dir, `dense${i}`), 'latin1');
      expect(got.length, `download ${i}: a match the hold timeout split`).toBe(exp.length);
      expect(got === exp, `download ${i} differs`).toBe(true);
    }
    expect(after['stream']!['flushTimeout'] - before['stream']!['flushTimeout'], 'a hold timed out').toBe(0);
    expect(after['loop']!['lateTicks'] - before['loop']!['lateTicks'], 'the stops were seen').toBeGreaterThanOrEqual(2);
    expect(after['loop']!['framesReadBeforeTimers'], `frames queued during a stop: ${JSON.stringify({ before: before['loop'], after: after['loop'] })}`).toBeGreaterThan(before['loop']!['framesReadBeforeTimers']);
  }, 120_000);

  it('each process writes its own capture and events: every connection in exactly one queue, both files agreeing', async () => {
    await labKill(P, 'gateway'); // the queue processes write their open flows' events and close their files
    const portsInCapture = async (k: number): Promise<Set<number>> => {
      const ports = new Set<number>();
      const { records, error } = await readPcapAll(join(dir, 'pcap', `queue${k}`, 'a.pcap'));
      expect(error).toBeUndefined();
      for (const r of records) {
        const d = decodeFrame(r.data, { link: 'ethernet', verifyChecksums: false });
        if (d.kind === 'tcp' && d.tcp.dstPort === 8001) ports.add(d.tcp.srcPort);
      }
      return ports;
    };
    const portsInEvents = (k: number): Set<number> => {
      const ports = new Set<number>();
      for (const line of readFileSync(join(dir, `ev.queue${k}.jsonl`), 'utf8').split('\n')) {
        if (line === '') continue;
        const ev = JSON.parse(line) as { event: string; client?: string; server?: string };
        if (ev.event === 'flow' && ev.server?.endsWith(':8001')) ports.add(Number(ev.client!.split(':').pop()));
      }
      return ports;
    };
    const cap = [await portsInCapture(0), await portsInCapture(1)];
    const evs = [portsInEvents(0), portsInEvents(1)];
    const log = (): string => readFileSync(join(labStateDir(P), 'gateway.log'), 'utf8').split('\n').filter((l) => !l.startsWith('{"uptimeS"')).slice(-30).join('\n');
    for (const k of [0, 1]) {
      expect(cap[k]!.size, `queue ${k} captured connections`).toBeGreaterThan(0);
      expect([...evs[k]!].sort(), `queue ${k}: the events name the connections its capture holds; gateway log:\n${log()}`).toEqual([...cap[k]!].sort());
    }
    expect([...cap[0]!].filter((p) => cap[1]!.has(p)), 'a connection in both queues').toEqual([]);
    // The 16 downloads and the readiness checks.
    expect(cap[0]!.size + cap[1]!.size).toBeGreaterThanOrEqual(17);
  }, 60_000);

  it('refuses NAT and --cluster with --queues, and a TAP that is not multi-queue', () => {
    const run = (args: string[]) =>
      spawnSync('ip', ['netns', 'exec', `${P}-gw`, process.execPath, '--import', 'tsx', MAIN, 'run', '--tap', 'tap-c', '--tap', 'tap-s', ...args], { encoding: 'utf8', timeout: 30_000 });
    const cl = run(['--queues', '2', '--cluster', 'nats://127.0.0.1:4222', '--node-id', '1']);
    expect(cl.status, cl.stderr).toBe(1);
    expect(cl.stderr).toContain('not with --cluster');
    writeFileSync(join(dir, 'nat.yaml'), 'nat:\n  masquerade:\n    - { side: client, sources: 10.200.0.0/24, address: 10.200.0.100, ports: "20000-29999" }\nrules: []\n');
    const nat = run(['--queues', '2', '--config', join(dir, 'nat.yaml')]);
    expect(nat.status, nat.stderr).toBe(1);
    expect(nat.stderr).toContain('not with NAT');
    spawnSync('ip', ['-n', `${P}-gw`, 'tuntap', 'add', 'mode', 'tap', 'name', 'tq-plain']);
    const plain = spawnSync('ip', ['netns', 'exec', `${P}-gw`, process.execPath, '--import', 'tsx', MAIN, 'run', '--tap', 'tq-plain', '--tap', 'tap-s', '--queues', '2'], { encoding: 'utf8', timeout: 30_000 });
    spawnSync('ip', ['-n', `${P}-gw`, 'link', 'del', 'tq-plain']);
    expect(plain.status, plain.stderr).toBe(2);
    expect(plain.stderr).toContain("TAP 'tq-plain' is not multi-queue");
  }, 60_000);
});
