/**
 * `tapgate run` end to end in the lab, as root, with TAP GSO (vnet header) on and off:
 * - no rule (port 8000): 1 KiB, 1 MiB and 50 MiB of random bytes arrive with the right sha256;
 * - a replace rule (port 8001), shorter and longer replacements, occurrences spread so that many
 *   straddle segment and GSO-frame boundaries: the body arrives exactly rewritten, the connection
 *   closes cleanly (no RST seen by the gateway, curl exit 0);
 * - ping, ARP and UDP are bridged unchanged;
 * - a client port used again after a connection whose end the gateway never saw (the client's RST
 *   dropped in its namespace with iptables), against a fresh gateway and a server that kept the
 *   old connection: its challenge ACK and the client's RST pass, and the new connection opens
 *   within a SYN retransmission, rewritten.
 * The gateway runs from the sources (tsx), so the test does not depend on a fresh dist/.
 */
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { labReload } from '../../src/cli/lab.js';
import { labDown, labExec, labKill, labPing, labSpawn, labStatus } from '../../src/lab/lab.js';
import { readPcapAll } from '../../src/phy/pcap.js';
import { decodeFrame } from '../../src/wire/frame.js';
import { describeE2E, e2eProblems } from '../lab/e2e-env.js';
import {
  cutsInsidePatterns, expectedRewrite, FIND_LONG, FIND_SHORT, firstDifference, gatewayStats as stats, labUpWithGateway, netnsList, randomFile, restartGateway, rewriteText,
  SEND_PY, sha, SINK_PY, startHttpServer, tempDir, waitUntil, WITH_LONG, WITH_SHORT,
} from './lab-helpers.js';

const P = 'tge';
const SERVER = '10.200.0.2';
/** The lab is dual-stack: the same server over IPv6 (curl -g -6 http://[fd00:200::2]:port/). */
const SERVER6 = 'fd00:200::2';

const CONFIG = `
rules:
  - name: rewrite-8001
    match: { port: [8001, 8011, 8012, 8013] }
    agent: replace
    replace:
      - { find: "${FIND_SHORT}", with: "${WITH_SHORT}" }
      - { find: "${FIND_LONG}", with: "${WITH_LONG}" }
`;

const gatewayStats = (): Record<string, Record<string, unknown>> => stats(P);

/**
 * A line server for the 4-tuple reuse test (port 8013, under the rule): answers each line with
 * one naming FIND_SHORT.
 */
const LINE_SERVER_PY = `
import socket, sys, threading
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], int(sys.argv[2])))
srv.listen(64)
def serve(c):
    buf = b''
    while True:
        d = c.recv(4096)
        if not d:
            break
        buf += d
        while b'\\n' in buf:
            line, buf = buf.split(b'\\n', 1)
            c.sendall(b'reply to ' + line + b': ${FIND_SHORT}\\n')
    c.close()
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
`;

/**
 * The client of that test, from a fixed local port: \`exchange\` connects, sends a line, prints
 * the answer and the seconds it took (10 s timeouts); \`abort\` also resets its end with the RST
 * dropped before it leaves the namespace (iptables): the gateway and the server never see it go.
 */
const REUSE_CLIENT_PY = `
import socket, struct, subprocess, sys, time
server, port, lport, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
t0 = time.monotonic()
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('0.0.0.0', lport))
s.settimeout(10)
s.connect((server, port))
s.sendall(b'hello\\n')
got = b''
while not got.endswith(b'\\n'):
    d = s.recv(4096)
    if not d:
        break
    got += d
print(got.decode().strip())
print('%.2f' % (time.monotonic() - t0))
if mode == 'abort':
    rule = ['OUTPUT', '-p', 'tcp', '--sport', str(lport), '--tcp-flags', 'RST', 'RST', '-j', 'DROP']
    subprocess.run(['iptables', '-I'] + rule, check=True)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
    s.close()
    time.sleep(0.2)
    subprocess.run(['iptables', '-D'] + rule, check=True)
`;
/** Where the gateway (with TAP GSO) serves its metrics, inside the gw namespace. */
const METRICS = '127.0.0.1:9464';

/** `name{labels}` → value of a Prometheus text scraped inside the gw namespace. */
async function scrape(): Promise<Map<string, number>> {
  const r = await labExec(P, 'gw', ['curl', '-sS', '--max-time', '5', `http://${METRICS}/metrics`]);
  expect(r.code, r.stderr).toBe(0);
  const out = new Map<string, number>();
  for (const line of r.stdout.split('\n')) {
    const m = /^([a-z0-9_]+(?:\{[^}]*\})?) (\S+)$/.exec(line);
    if (m !== null) out.set(m[1]!, Number(m[2]));
  }
  return out;
}

/**
 * The RSTs of a capture of port `port` (one connection): those of the close race (from the
 * server, without ACK, at its FIN + 1, after the client had ACKed that FIN) counted, any other
 * described.
 */
function lateCloseRaceRsts(p: { records: Array<{ data: Uint8Array }> }, port: number): { closeRace: number; other: string[] } {
  let finEnd: number | undefined;
  let finAcked = false;
  let closeRace = 0;
  const other: string[] = [];
  for (const rec of p.records) {
    const d = decodeFrame(rec.data, { link: 'ethernet', verifyChecksums: false, ipv6: true });
    if (d.kind !== 'tcp') continue;
    const fromServer = d.tcp.srcPort === port;
    const f = d.tcp.flags;
    if (fromServer && (f & 0x01) !== 0) finEnd = (d.tcp.seq + d.payloadLen + 1) >>> 0;
    if (!fromServer && (f & 0x10) !== 0 && finEnd !== undefined && d.tcp.ack === finEnd) finAcked = true;
    if ((f & 0x04) === 0) continue;
    if (fromServer && (f & 0x10) === 0 && finAcked && d.tcp.seq === finEnd) closeRace++;
    else other.push(`RST ${fromServer ? 'from the server' : 'from the client'} seq ${d.tcp.seq} ack ${d.tcp.ack} flags 0x${f.toString(16)}`);
  }
  return { closeRace, other };
}

describeE2E('tapgate run in the lab', e2eProblems(['ip', 'unshare', 'python3', 'curl', 'tcpdump']), () => {
  const nsBefore = netnsList();
  let dir = '';
  const files: Record<string, Buffer> = {};
  let text = '';
  let upText = '';

  beforeAll(() => {
    dir = tempDir('tapgate-e2e-');
    for (const [name, size] of [['1k', 1024], ['1m', 1 << 20], ['50m', 50 << 20]] as const) files[name] = randomFile(join(dir, name), size);
    text = rewriteText(3 << 20);
    writeFileSync(join(dir, 'text.txt'), text);
    writeFileSync(join(dir, 'config.yaml'), CONFIG);
    writeFileSync(join(dir, 'sink.py'), SINK_PY);
    writeFileSync(join(dir, 'send.py'), SEND_PY);
    upText = rewriteText(64 << 10);
    writeFileSync(join(dir, 'up.txt'), upText);
    writeFileSync(join(dir, 'cuts.json'), JSON.stringify(cutsInsidePatterns(upText)));
  });

  afterAll(async () => {
    await labDown(P);
    rmSync(dir, { recursive: true, force: true });
    expect(netnsList().filter((n) => n.startsWith(`${P}-`))).toEqual([]);
    expect(netnsList().sort()).toEqual(nsBefore.sort());
  });

  for (const vnet of [true, false]) {
    describe(vnet ? 'with TAP GSO (vnet header)' : 'without vnet header', () => {
      beforeAll(async () => {
        await labDown(P);
        await labUpWithGateway(P, join(dir, 'config.yaml'), vnet ? ['--metrics', METRICS] : ['--no-vnet-hdr'], { config: { ipv6: true } });
        for (const port of ['8000', '8001']) startHttpServer(P, SERVER, port, dir);
        startHttpServer(P, SERVER6, '8011', dir);
        labSpawn(P, 'server', 'sink8012', ['python3', join(dir, 'sink.py'), SERVER6, '8012']);
        labSpawn(P, 'server', 'lines8013', ['python3', '-c', LINE_SERVER_PY, SERVER, '8013']);
        labSpawn(P, 'server', 'udpecho', [
          'python3', '-c',
          'import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(("0.0.0.0",9999))\nwhile True:\n d,a=s.recvfrom(65535)\n s.sendto(d[::-1],a)',
        ]);
        // Wait for both HTTP servers (through the gateway).
        for (const port of ['8000', '8001']) {
          await waitUntil(15_000, 200,
            () => labExec(P, 'client', ['curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '2', `http://${SERVER}:${port}/1k`]),
            (r) => r.stdout === '200',
            (r) => `http.server on ${port} not reachable through the gateway: ${r.stderr}`);
        }
        for (const port of ['8011']) {
          await waitUntil(15_000, 200,
            () => labExec(P, 'client', ['curl', '-g', '-6', '-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '2', `http://[${SERVER6}]:${port}/1k`]),
            (r) => r.stdout === '200',
            (r) => `http.server on [${SERVER6}]:${port} not reachable through the gateway: ${r.stderr}`);
        }
      });

      it('passes 1 KiB, 1 MiB and 50 MiB of random bytes unchanged (sha256) without a rule', async () => {
        for (const name of ['1k', '1m', '50m']) {
          const out = join(dir, `got-${name}-${vnet}`);
          const r = await labExec(P, 'client', ['curl', '-sS', '--max-time', '60', '-o', out, '-w', '%{http_code}', `http://${SERVER}:8000/${name}`]);
          expect(r.stdout, `${name}: ${r.stderr}`).toBe('200');
          const got = readFileSync(out);
          expect(got.length, name).toBe(files[name]!.length);
          expect(sha(got), name).toBe(sha(files[name]!));
          rmSync(out);
        }
      });

      it('rewrites the body exactly (shorter and longer, across segment/GSO boundaries) and closes cleanly', async () => {
        const before = gatewayStats();
        const out = join(dir, `got-text-${vnet}`);
        // The agent does not fix Content-Length (the replace agent is not HTTP-aware): read to close.
        const r = await labExec(P, 'client', ['curl', '-sS', '--max-time', '60', '--ignore-content-length', '-o', out, '-w', '%{http_code}', `http://${SERVER}:8001/text.txt`]);
        expect(r.code, r.stderr).toBe(0);
        expect(r.stdout).toBe('200');
        const got = readFileSync(out, 'latin1');
        const exp = expectedRewrite(text);
        expect(got.length).toBe(exp.length);
        if (got !== exp) {
          let i = 0;
          while (got[i] === exp[i]) i++;
          throw new Error(`first difference at byte ${i}: got ${JSON.stringify(got.slice(i - 20, i + 20))}, expected ${JSON.stringify(exp.slice(i - 20, i + 20))}`);
        }
        const after = gatewayStats();
        const g0 = before['gateway']!;
        const g1 = after['gateway']!;
        expect(g1['connectionsRewritten'] as number).toBeGreaterThan(g0['connectionsRewritten'] as number);
        expect(g1['rstIn'], 'a RST crossed the gateway').toBe(g0['rstIn']);
        expect(g1['malformed']).toEqual({});
        if (vnet) {
          // GSO frames came in and rewritten ones left as GSO frames, unsplit.
          expect(g1['gsoIn'] as number).toBeGreaterThan(g0['gsoIn'] as number);
          expect(g1['gsoOut'] as number).toBeGreaterThan(g0['gsoOut'] as number);
        } else {
          expect(g1['gsoIn']).toBe(0);
        }
        rmSync(out);
      });

      it('IPv6 (curl -g -6): 1 KiB, 1 MiB and 50 MiB through a replace rule exact, and a text body rewritten exactly', async () => {
        const before = gatewayStats();
        for (const name of ['1k', '1m', '50m']) {
          const out = join(dir, `got6-${name}-${vnet}`);
          // Through the rule's port: random bytes hold a few "cat"s (50 MiB: about three), rewritten too.
          const r = await labExec(P, 'client', ['curl', '-g', '-6', '-sS', '--max-time', '60', '--ignore-content-length', '-o', out, '-w', '%{http_code}', `http://[${SERVER6}]:8011/${name}`]);
          expect(r.stdout, `${name}: ${r.stderr}`).toBe('200');
          const exp = expectedRewrite(files[name]!.toString('latin1'));
          const got = readFileSync(out).toString('latin1');
          if (got !== exp) throw new Error(`IPv6 ${name}: ${firstDifference(got, exp)}`);
          rmSync(out);
        }
        const out = join(dir, `got6-text-${vnet}`);
        const r = await labExec(P, 'client', ['curl', '-g', '-6', '-sS', '--max-time', '60', '--ignore-content-length', '-o', out, '-w', '%{http_code}', `http://[${SERVER6}]:8011/text.txt`]);
        expect(r.code, r.stderr).toBe(0);
        const got = readFileSync(out, 'latin1');
        const exp = expectedRewrite(text);
        if (got !== exp) throw new Error(`IPv6 rewrite: ${firstDifference(got, exp)}`);
        rmSync(out);
        const g0 = before['gateway']!;
        const g1 = gatewayStats()['gateway']!;
        expect(g1['connectionsRewritten'] as number).toBe((g0['connectionsRewritten'] as number) + 4);
        expect(g1['rstIn'], 'a RST crossed the gateway').toBe(g0['rstIn']);
        expect(g1['malformed']).toEqual({});
        // Inspected, not left to the policy: nothing IPv6 was dropped as uninspectable.
        expect((g1['policy'] as { dropped: Record<string, number> }).dropped).toEqual({});
        if (vnet) {
          // TSO6 super-frames in (GSO TCPV6), rewritten ones out as GSO frames.
          expect(g1['gsoIn'] as number).toBeGreaterThan(g0['gsoIn'] as number);
          expect(g1['gsoOut'] as number).toBeGreaterThan(g0['gsoOut'] as number);
        }
      });

      it('IPv6: an upload cut inside every pattern, one segment per piece, arrives rewritten exactly', async () => {
        const before = gatewayStats()['gateway']!;
        const cap = join(dir, `up6-${vnet}.pcap`);
        labSpawn(P, 'server', 'tcpdump-up6', ['tcpdump', '-i', 'eth0', '-nn', '-U', '-w', cap, 'tcp port 8012']);
        await new Promise((res) => setTimeout(res, 500));
        const r = await labExec(P, 'client', ['python3', join(dir, 'send.py'), SERVER6, '8012', join(dir, 'up.txt'), join(dir, 'cuts.json')], { timeoutMs: 60_000 });
        expect(r.code, r.stderr).toBe(0);
        const exp = expectedRewrite(upText);
        expect(r.stdout.trim()).toBe(`${sha(exp)} ${Buffer.byteLength(exp, 'latin1')}`);
        const after = gatewayStats()['gateway']!;
        await new Promise((res) => setTimeout(res, 300));
        await labKill(P, 'tcpdump-up6');
        // No reset but the close race the endpoints may run on their own: the server (the passive
        // closer) retransmits its FIN before the client's ACK of it arrives (a tail loss probe,
        // after a few ms), takes that ACK and is gone; the client, in TIME_WAIT, ACKs the copy
        // again, and the server's stack answers with a RST at its FIN + 1. Any other RST fails.
        const rsts = lateCloseRaceRsts(await readPcapAll(cap), 8012);
        expect(rsts.other, `a RST of the upload (${rsts.closeRace} of the close race)`).toEqual([]);
        expect(after['connectionsRewritten'] as number).toBe((before['connectionsRewritten'] as number) + 1);
      });

      if (vnet) {
        it('--metrics: scraped during a rewritten download, the counters move by what the transfer did', async () => {
          const m0 = await scrape();
          expect(m0.get('tapgate_flows_active')).toBeDefined();
          const matches = text.split(FIND_SHORT).length - 1 + text.split(FIND_LONG).length - 1;
          const out = join(dir, 'got-text-metrics');
          const r = await labExec(P, 'client', ['curl', '-sS', '--max-time', '60', '--ignore-content-length', '-o', out, `http://${SERVER}:8001/text.txt`]);
          expect(r.code, r.stderr).toBe(0);
          const m1 = await scrape();
          const d = (k: string): number => (m1.get(k) ?? 0) - (m0.get(k) ?? 0);
          expect(d('tapgate_rules_connections_total{rule="rewrite-8001"}')).toBe(1);
          expect(d('tapgate_rules_rewrites_total{rule="rewrite-8001"}')).toBe(matches);
          expect(d('tapgate_rules_bytes_added_s2c{rule="rewrite-8001"}')).toBe(expectedRewrite(text).length - text.length);
          expect(d('tapgate_agents_replace_matches_total')).toBe(matches);
          // At least the body's bytes came in from the server side and went out to the client.
          expect(d('tapgate_gateway_bytes_in_total')).toBeGreaterThan(text.length);
          expect(d('tapgate_gateway_bytes_out_total')).toBeGreaterThan(expectedRewrite(text).length);
          expect(d('tapgate_gateway_connections_rewritten_total')).toBe(1);
          expect(d('tapgate_gateway_rst_in_total')).toBe(0);
          expect(d('tapgate_taps_tx_frames_total{tap="tap-c"}')).toBeGreaterThan(0);
        });
      }

      if (vnet) {
        it('reload (lab reload = SIGHUP): a download in flight keeps its rule byte for byte, a new connection gets the new one, a bad config is refused', async () => {
          const cfg = join(dir, 'config.yaml');
          const before = gatewayStats()['gateway']!;
          const slow = join(dir, 'got-text-reload');
          // About 4 s: the reload lands in the middle of it.
          const inFlight = labExec(P, 'client', ['curl', '-sS', '--max-time', '60', '--ignore-content-length', '--limit-rate', String(Math.ceil(text.length / 4)), '-o', slow, `http://${SERVER}:8001/text.txt`]);
          await new Promise((r) => setTimeout(r, 1000));
          try {
            writeFileSync(cfg, CONFIG.replace(`with: "${WITH_SHORT}"`, 'with: "RELOADED"'));
            const ok = await labReload(P);
            expect(ok.every((x) => x.ok), JSON.stringify(ok)).toBe(true);
            const fresh = await labExec(P, 'client', ['curl', '-sS', '--max-time', '30', '--ignore-content-length', `http://${SERVER}:8001/text.txt`]);
            expect(fresh.code, fresh.stderr).toBe(0);
            expect(fresh.stdout).toBe(text.split(FIND_SHORT).join('RELOADED').split(FIND_LONG).join(WITH_LONG));
            // A config that does not load is refused, with its errors in the log; the rules stay.
            writeFileSync(cfg, 'rules:\n  - match: { port: 70000 }\n    agent: replace\n    replace: []\n');
            const bad = await labReload(P);
            expect(bad.some((x) => x.ok)).toBe(false);
            expect(bad[0]!.line).toMatch(/config reload refused/);
            expect(bad[0]!.line).toMatch(/config\.yaml:2:\d+: rules\[0\]\.match\.port/);
            const still = await labExec(P, 'client', ['curl', '-sS', '--max-time', '30', '--ignore-content-length', `http://${SERVER}:8001/text.txt`]);
            expect(still.stdout).toContain('RELOADED');
          } finally {
            writeFileSync(cfg, CONFIG);
          }
          const r = await inFlight;
          expect(r.code, r.stderr).toBe(0);
          const got = readFileSync(slow, 'latin1');
          const exp = expectedRewrite(text);
          if (got !== exp) throw new Error(`the download in flight: ${firstDifference(got, exp)}`);
          const after = gatewayStats()['gateway']!;
          expect(after['rstIn'], 'a RST crossed the gateway').toBe(before['rstIn']);
          expect(after['reloads'] as number).toBe((before['reloads'] as number) + 1);
          await labReload(P); // back to CONFIG for what follows
        });
      }

      it('bridges ping (and so ARP) and UDP unchanged; an echo reply is read in the request\'s call', async () => {
        const c0 = gatewayStats()['chainedBatches'] as unknown as number;
        const p = await labPing(P, 'client', SERVER, { count: 3, size: 1000 });
        expect(p.received).toBe(3);
        // The server answers inside the gateway's write of the request: the reply is read at
        // once (LiveGateway.onBatch), not after another trip through the event loop.
        expect(gatewayStats()['chainedBatches'] as unknown as number).toBeGreaterThanOrEqual(c0 + 3);
        const neigh = await labExec(P, 'client', ['ip', 'neigh', 'show', SERVER]);
        expect(neigh.stdout.toLowerCase()).toContain('02:00:0a:c8:00:02');
        // The lab is dual-stack, and `lab status` says so.
        expect(labStatus(P).addresses).toMatchObject({ client: ['10.200.0.1/24', 'fd00:200::1/64'], server: ['10.200.0.2/24', 'fd00:200::2/64'] });
        // IPv6: Neighbor Discovery and ICMPv6 echo cross unchanged too.
        const p6 = await labExec(P, 'client', ['ping', '-6', '-c', '2', '-i', '0.2', '-W', '2', SERVER6]);
        expect(p6.code, p6.stdout + p6.stderr).toBe(0);
        const neigh6 = await labExec(P, 'client', ['ip', '-6', 'neigh', 'show', SERVER6]);
        expect(neigh6.stdout.toLowerCase()).toContain('02:00:0a:c8:00:02');
        const udp = await labExec(P, 'client', [
          'python3', '-c',
          `import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.settimeout(3)\nfor i in range(5):\n s.sendto(b"hello-%d" % i,("${SERVER}",9999))\n print(s.recvfrom(65535)[0].decode())`,
        ], { timeoutMs: 20_000 });
        expect(udp.stdout.trim().split('\n'), udp.stderr).toEqual([0, 1, 2, 3, 4].map((i) => `hello-${i}`.split('').reverse().join('')));
      });

      if (vnet) {
        // A client port used again after a connection whose end the gateway never saw (engine/track.ts):
        // the new connection must open within a SYN retransmission, rewritten.
        const reuse = async (lport: number, mode: 'exchange' | 'abort'): Promise<{ answer: string; seconds: number }> => {
          const r = await labExec(P, 'client', ['python3', '-c', REUSE_CLIENT_PY, SERVER, '8013', String(lport), mode], { timeoutMs: 30_000 });
          expect(r.code, `${mode} from port ${lport}: ${r.stdout}${r.stderr}`).toBe(0);
          const [answer, seconds] = r.stdout.trim().split('\n');
          return { answer: answer!, seconds: Number(seconds) };
        };
        const rewrittenAnswer = `reply to hello: ${WITH_SHORT}`;
        const serverSockets = async (lport: number): Promise<string> =>
          (await labExec(P, 'server', ['ss', '-Htan', 'sport', '= :8013', 'dport', `= :${lport}`])).stdout.trim();

        it('a fresh gateway, a server still holding the old connection: its challenge ACK and the client\'s RST pass, the next SYN connects', async () => {
          const lport = 61013;
          expect((await reuse(lport, 'abort')).answer).toBe(rewrittenAnswer);
          // The client's RST never left its namespace: the server keeps the connection.
          expect(await serverSockets(lport)).toMatch(/^ESTAB/);
          await restartGateway(P, join(dir, 'config.yaml'), ['--metrics', METRICS]);
          const again = await reuse(lport, 'exchange');
          expect(again.answer).toBe(rewrittenAnswer);
          expect(again.seconds).toBeLessThan(8); // one SYN retransmission (1 s), not the two minutes of all of them
          expect(gatewayStats()['gateway']!['staleSegments']).toBeGreaterThanOrEqual(2);
        });
      }
    });
  }
});
