/**
 * An IPv6 connection through the gateway cluster (docs/ARCHITECTURE.md §5), as root: the lab with
 * 3 nodes on hub bridges, dual-stack endpoints, a replace rule on an IPv6 server's port (no NAT:
 * NAT is IPv4's). A throttled download over IPv6 is rewritten while its owner (the node the
 * client's IPv6 address hashes to) is killed with SIGKILL: another node takes it over from its
 * spare copy and the client gets exactly the rewritten body, with no RST in its capture.
 */
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { hostKey, ownerOf } from '../../src/cluster/rendezvous.js';
import { labDown, labExec, labKillNode, labSpawn, labStartNode, labUp, labWaitNodesAttached } from '../../src/lab/lab.js';
import { readPcapAll } from '../../src/phy/pcap.js';
import { decodeFrame } from '../../src/wire/frame.js';
import { parseIp } from '../../src/wire/ip.js';
import { REPO, describeE2E, e2eProblems } from '../lab/e2e-env.js';
import { clusterStatus, nodeArgv, waitView } from './cluster-helpers.js';
import { expectedRewrite, FIND_LONG, FIND_SHORT, firstDifference, netnsList, rewriteText, startHttpServer, tempDir, waitUntil, WITH_LONG, WITH_SHORT } from './lab-helpers.js';

const P = 'tgk6';
const SERVER6 = 'fd00:200::2';
const CLIENT6 = 'fd00:200::1';
const PORT = 8011;
const NODES = [1, 2, 3];
const CONFIG = `
rules:
  - name: rewrite-v6
    match: { port: ${PORT}, serverAddress: "fd00:200::/64" }
    direction: s2c
    agent: replace
    replace:
      - { find: "${FIND_SHORT}", with: "${WITH_SHORT}" }
      - { find: "${FIND_LONG}", with: "${WITH_LONG}" }
`;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describeE2E('an IPv6 connection through the gateway cluster survives a SIGKILL of its owner', e2eProblems(['ip', 'python3', 'curl', 'tcpdump', 'nats-server']), () => {
  const nsBefore = netnsList();
  let dir = '';
  let text = '';
  let cfg = '';
  let cap = '';

  beforeAll(async () => {
    dir = tempDir('tapgate-cluster6-');
    text = rewriteText(3 << 20);
    writeFileSync(join(dir, 'text.txt'), text);
    cfg = join(dir, 'cluster6.yaml');
    writeFileSync(cfg, CONFIG);
    await labDown(P);
    await labUp({ prefix: P, config: { nodes: 3, ipv6: true }, cwd: REPO });
    for (const i of NODES) labStartNode(P, i, nodeArgv(i, cfg), { cwd: REPO });
    await labWaitNodesAttached(P, 3, { timeoutMs: 30_000 });
    await waitView(P, NODES);
    startHttpServer(P, SERVER6, PORT, dir);
    await waitUntil(15_000, 100,
      () => labExec(P, 'server', ['curl', '-g', '-6', '-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '2', `http://[${SERVER6}]:${PORT}/text.txt`]),
      (r) => r.stdout === '200',
      (r) => `http server on [${SERVER6}]:${PORT} not listening: ${r.stderr}`);
    cap = join(dir, 'client.pcap');
    labSpawn(P, 'client', 'tcpdump-client', ['tcpdump', '-i', 'eth0', '-nn', '-U', '-w', cap, 'ip6 and tcp']);
    await sleep(500);
  }, 120_000);

  afterAll(async () => {
    await labDown(P);
    rmSync(dir, { recursive: true, force: true });
    expect(netnsList().filter((n) => n.startsWith(`${P}-`))).toEqual([]);
    expect(nsBefore.filter((n) => n.startsWith(`${P}-`))).toEqual([]);
  });

  it('a rewritten IPv6 download: its owner SIGKILLed mid-body, taken over, exact, no RST', async () => {
    const out = join(dir, 'got6');
    // About 3 s at 1 MiB/s: the kill lands in the middle of the body.
    const dl = labExec(P, 'client', ['curl', '-g', '-6', '-sS', '--max-time', '40', '--limit-rate', '1M', '--ignore-content-length', '-o', out, `http://[${SERVER6}]:${PORT}/text.txt`], { timeoutMs: 45_000 });
    await sleep(1200);
    const victim = Number(ownerOf(hostKey(parseIp(CLIENT6)!), NODES.map(String)));
    const before = await clusterStatus(P);
    expect(before.find((n) => n.node === String(victim))?.owned.length, `node ${victim} owns the IPv6 connection`).toBeGreaterThan(0);
    await labKillNode(P, victim, 'SIGKILL');
    const r = await dl;
    expect(r.code, r.stderr).toBe(0);
    const got = readFileSync(out, 'latin1');
    const exp = expectedRewrite(text);
    if (got !== exp) throw new Error(`IPv6 download across the failover: ${firstDifference(got, exp)}`);
    const st = await clusterStatus(P);
    expect(st.reduce((a, n) => a + (n.counters['takeovers'] ?? 0), 0), 'a takeover').toBeGreaterThan(0);
    await sleep(300);
    let rsts = 0;
    let v6 = 0;
    for (const rec of (await readPcapAll(cap)).records) {
      const d = decodeFrame(rec.data, { link: 'ethernet', verifyChecksums: false, ipv6: true });
      if (d.kind !== 'tcp' || d.ip6 === null) continue;
      v6++;
      if (d.tcp.flags & 0x04) rsts++;
    }
    expect(v6, 'IPv6 TCP in the client capture').toBeGreaterThan(100);
    expect(rsts, 'RSTs on the client segment').toBe(0);
  }, 90_000);
});
