/**
 * Many-to-one NAT (masquerade) on the bridge, end to end in the lab, as root (issue 5):
 * - two client namespaces on br-c, 10.200.0.1 and 10.200.0.3 (labUp `clients: 2`), behind ONE
 *   address 10.200.0.100 (examples/masquerade.yaml): the gateway answers ARP for it on the
 *   server side with its own MAC (02:74:0a:c8:00:64), rewrites the clients' source MACs to it
 *   and gives replies their real client's MAC back;
 * - vsftpd (Debian) in the server namespace (port_promiscuous=NO, so an untranslated PORT would
 *   be refused); both clients transfer 4 MiB files at the same time with curl, passive (EPSV,
 *   PASV) and active (EPRT, PORT: vsftpd connects to 10.200.0.100 and an allocated port, the
 *   NAT's expectation sends it to the right client), sha256 equal on both ends;
 * - vsftpd's log names 10.200.0.100 only; a capture on the server's interface shows neither
 *   client address nor client MAC (the clients are dual-stack: their IPv6 frames, router and
 *   neighbour solicitations and MLD reports, do not cross either); from the server namespace
 *   10.200.0.1 and .3 do not answer.
 * With TAP GSO (vnet header, partial checksums) and without.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { labDown, labExec, labKill, labPing, labSpawn, type LabRole } from '../../src/lab/lab.js';
import { REPO, describeE2E } from '../lab/e2e-env.js';
import { ftpProblems, gatewayStats, netnsList, sha, startVsftpd, vsftpdFixture, waitVsftpd, type FtpFixture } from './ftp-helpers.js';
import { labUpWithGateway } from './lab-helpers.js';

const P = 'tgm';
const SERVER = '10.200.0.2';
const SHARED = '10.200.0.100';
const GW_MAC = '02:74:0a:c8:00:64';
const SERVER_MAC = '02:00:0a:c8:00:02';
const CLIENTS: Array<{ role: LabRole; ip: string; mac: string }> = [
  { role: 'client', ip: '10.200.0.1', mac: '02:00:0a:c8:00:01' },
  { role: 'client2', ip: '10.200.0.3', mac: '02:00:0a:c8:00:03' },
];
const SIZE = 4 << 20;
const problems = ftpProblems(['ip', 'unshare', 'python3', 'curl', 'vsftpd', 'tcpdump']);

for (const vnet of [true, false]) describeE2E(`FTP through masquerade in the lab, two clients at once (${vnet ? 'TAP GSO' : 'no vnet header'})`, problems, () => {
  const nsBefore = netnsList();
  let fx: FtpFixture;
  let pcap = '';

  beforeAll(async () => {
    fx = vsftpdFixture(SERVER, SIZE);
    pcap = join(fx.dir, 'server.pcap');
    await labDown(P);
    await labUpWithGateway(P, join(REPO, 'examples/masquerade.yaml'), vnet ? [] : ['--no-vnet-hdr'], { config: { clients: 2, ipv6: true } });
    // Everything the server's interface sees, from before the first frame crosses.
    labSpawn(P, 'server', 'tcpdump', ['tcpdump', '-i', 'eth0', '-nn', '-U', '-s', '128', '-w', pcap]);
    startVsftpd(P, fx.conf);
    await new Promise((res) => setTimeout(res, 500));
    for (const c of CLIENTS) await waitVsftpd(P, SERVER, c.role);
  }, 90_000);

  afterAll(async () => {
    await labDown(P);
    rmSync(fx.dir, { recursive: true, force: true });
    // Only ours: other labs (other prefixes) may come and go meanwhile.
    expect(netnsList().filter((n) => n.startsWith(`${P}-`))).toEqual([]);
    expect(nsBefore.filter((n) => n.startsWith(`${P}-`))).toEqual([]);
  });

  const activeOpts = (ip: string, mode: 'EPRT' | 'PORT'): string[] => (mode === 'EPRT' ? ['-P', ip] : ['-P', ip, '--disable-eprt']);
  const cases: Array<[string, (ip: string) => string[]]> = [
    ['both passive EPSV', () => []],
    ['both passive PASV', () => ['--disable-epsv']],
    ['both active EPRT', (ip) => activeOpts(ip, 'EPRT')],
    ['both active PORT', (ip) => activeOpts(ip, 'PORT')],
    ['one passive, one active', (ip) => (ip === CLIENTS[0]!.ip ? [] : activeOpts(ip, 'EPRT'))],
  ];
  cases.forEach(([name, opts], i) => {
    it(`${name}: both clients download and upload 4 MiB at the same time, sha256 equal`, async () => {
      const runs = CLIENTS.flatMap((c, k) => {
        const out = join(fx.dir, `got-${i}-${k}`);
        const up = `u${i}-${k}.bin`;
        return [
          labExec(P, c.role, ['curl', '-sS', '--max-time', '60', ...opts(c.ip), '-o', out, `ftp://${SERVER}/data.bin`], { timeoutMs: 70_000 })
            .then((r) => ({ r, file: out, what: `${c.ip} download` })),
          labExec(P, c.role, ['curl', '-sS', '--max-time', '60', ...opts(c.ip), '-T', join(fx.dir, 'upload.bin'), `ftp://${SERVER}/up/${up}`], { timeoutMs: 70_000 })
            .then((r) => ({ r, file: join(fx.root, 'up', up), what: `${c.ip} upload` })),
        ];
      });
      const done = await Promise.all(runs);
      for (const d of done) {
        expect(d.r.code, `${d.what}: ${d.r.stderr}`).toBe(0);
        const got = readFileSync(d.file);
        expect(got.length, d.what).toBe(SIZE);
        expect(sha(got), d.what).toBe(sha(fx.data));
      }
    }, 120_000);
  });

  it('the server resolves 10.200.0.100 by ARP to the gateway\'s MAC', async () => {
    await labExec(P, 'server', ['ip', 'neigh', 'flush', 'dev', 'eth0']);
    await labPing(P, 'server', SHARED, { count: 1, timeoutMs: 500 }); // resolves; the echo has no entry
    const n = await labExec(P, 'server', ['ip', 'neigh', 'show', SHARED]);
    expect(n.stdout).toContain(`lladdr ${GW_MAC}`);
    const l2 = (gatewayStats(P)['nat'] as Record<string, Record<string, number>>)['l2']!;
    expect(l2['arpAnswered']).toBeGreaterThan(0);
    expect(l2['arpRelayed']).toBeGreaterThan(0);
    expect(l2['macs']).toBe(2);
  });

  it("a client's PORT naming the other client (FTP bounce): the gateway resets the control connection, vsftpd never answers it, nothing is expected", async () => {
    const py = `
import json, socket
s = socket.create_connection(('${SERVER}', 21), timeout=5)
f = s.makefile('rb')
def reply():
    line = f.readline()
    while line[3:4] == b'-': line = f.readline()
    return line.decode('latin1').strip()
out = {'banner': reply()}
s.sendall(b'USER anonymous\\r\\n'); out['user'] = reply()
s.sendall(b'PASS x@\\r\\n'); out['pass'] = reply()
s.sendall(b'PORT ${CLIENTS[1]!.ip.replace(/\./g, ',')},0,22\\r\\n')
try:
    out['port'] = reply()
except (ConnectionResetError, socket.timeout) as e:
    out['port'] = type(e).__name__
print(json.dumps(out))
`;
    const g0 = gatewayStats(P)['agents'] as Record<string, Record<string, number>>;
    const r = await labExec(P, 'client', ['python3', '-c', py], { timeoutMs: 15_000 });
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<string, string>;
    expect(out['pass']).toMatch(/^230/);
    expect(['ConnectionResetError', '']).toContain(out['port']);
    const g1 = gatewayStats(P)['agents'] as Record<string, Record<string, number>>;
    expect(g1['ftp']!['refusedEndpoints']! - (g0['ftp']?.['refusedEndpoints'] ?? 0)).toBe(1);
  }, 30_000);

  it('vsftpd sees only the shared address', () => {
    const log = readFileSync(fx.vlog, 'utf8');
    expect(log).toContain(`"${SHARED}"`);
    for (const c of CLIENTS) expect(log).not.toContain(`"${c.ip}"`);
    expect(log).toMatch(/OK UPLOAD/);
    expect(log).toMatch(/OK DOWNLOAD/);
  });

  it('the server cannot reach the real clients; nothing with their address or MAC reached it', async () => {
    for (const c of CLIENTS) {
      const bad = await labPing(P, 'server', c.ip, { count: 2, timeoutMs: 500 });
      expect(bad.received, c.ip).toBe(0);
      const ok = await labPing(P, c.role, SERVER, { count: 2 });
      expect(ok.received, `${c.ip} → server`).toBe(2);
    }
    const neigh = await labExec(P, 'server', ['ip', 'neigh', 'show']);
    for (const c of CLIENTS) {
      expect(neigh.stdout).not.toMatch(new RegExp(`^${c.ip.replace(/\./g, '\\.')} .*lladdr`, 'm'));
      expect(neigh.stdout).not.toContain(c.mac);
    }
    await labKill(P, 'tcpdump');
    const r = spawnSync('tcpdump', ['-nn', '-e', '-r', pcap], { encoding: 'utf8', maxBuffer: 1 << 28 });
    expect(r.status, r.stderr).toBe(0);
    // What reached the server (its own frames, e.g. its ARP requests for .1, aside).
    const lines = r.stdout.split('\n').filter((l) => l !== '' && !l.includes(`${SERVER_MAC} >`));
    expect(lines.length).toBeGreaterThan(1000);
    expect(lines.some((l) => l.includes(SHARED) && l.includes(`${GW_MAC} >`))).toBe(true);
    for (const c of CLIENTS) {
      const ipRe = new RegExp(`\\b${c.ip.replace(/\./g, '\\.')}\\b(?!\\d)`);
      expect(lines.filter((l) => ipRe.test(l)).slice(0, 3), c.ip).toEqual([]);
      expect(lines.filter((l) => l.includes(c.mac)).slice(0, 3), c.mac).toEqual([]);
    }
    const g = gatewayStats(P)['gateway']!;
    expect(g['natTranslated'] as number).toBeGreaterThan(0);
    expect(g['malformed']).toEqual({});
    expect(g['connectionsRewritten'] as number).toBeGreaterThan(0);
    // The server's ARP requests for .1/.3 never crossed.
    const dropped = g['natDropped'] as Record<string, number>;
    expect(dropped['arp-real-address'] ?? 0).toBeGreaterThan(0);
    expect(dropped['no-mac'] ?? 0).toBe(0);
  });
});
