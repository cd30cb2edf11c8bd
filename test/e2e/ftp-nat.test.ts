/**
 * FTP through NAT on the bridge, end to end in the lab, as root (issue 5):
 * - the gateway runs `tapgate run` with examples/ftp-nat.yaml: the client 10.200.0.1 appears to
 *   the server side as 10.200.0.101 (1:1), the ftp agent on port 21 with NAT-backed hooks;
 * - vsftpd (Debian) in the server namespace, anonymous with an upload directory, a private
 *   config file, passive ports 40000-40100, port_promiscuous=NO (the default: PORT/EPRT must name
 *   the control connection's peer, so an untranslated PORT would be refused);
 * - curl in the client namespace: passive (EPSV, and PASV with --disable-epsv) and active (EPRT,
 *   and PORT with --disable-eprt), each downloading and uploading a 4 MiB random file, sha256
 *   equal on both ends; lftp active and passive;
 * - vsftpd's log names 10.200.0.101 and never 10.200.0.1; from the server namespace 10.200.0.1
 *   does not answer ping while 10.200.0.101 does.
 * All of it with TAP GSO (vnet header, partial checksums) and without.
 */
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { labDown, labExec, labPing } from '../../src/lab/lab.js';
import { describeE2E, REPO } from '../lab/e2e-env.js';
import { ftpProblems, itLftpGetPut, gatewayStats as stats, netnsList, sha, startVsftpd, vsftpdFixture, waitVsftpd } from './ftp-helpers.js';
import { labUpWithGateway } from './lab-helpers.js';

const P = 'tgf';
const SERVER = '10.200.0.2';
const CLIENT = '10.200.0.1';
const MAPPED = '10.200.0.101';
const SIZE = 4 << 20;

const gatewayStats = (): Record<string, Record<string, unknown>> => stats(P);

for (const vnet of [true, false]) describeE2E(`FTP through NAT in the lab (${vnet ? 'TAP GSO' : 'no vnet header'})`, ftpProblems(['ip', 'unshare', 'python3', 'curl', 'vsftpd', 'lftp']), () => {
  const nsBefore = netnsList();
  let dir = '';
  let root = '';
  let vlog = '';
  let data = Buffer.alloc(0);

  beforeAll(async () => {
    const fx = vsftpdFixture(SERVER, SIZE);
    ({ dir, root, vlog, data } = fx);
    writeFileSync(join(dir, 'ftp-nat.yaml'), readFileSync(join(REPO, 'examples/ftp-nat.yaml')));
    await labDown(P);
    await labUpWithGateway(P, join(dir, 'ftp-nat.yaml'), vnet ? [] : ['--no-vnet-hdr']);
    startVsftpd(P, fx.conf);
    await waitVsftpd(P, SERVER);
  }, 90_000);

  afterAll(async () => {
    await labDown(P);
    rmSync(dir, { recursive: true, force: true });
    // Only ours: other labs (other prefixes) may come and go meanwhile.
    expect(netnsList().filter((n) => n.startsWith(`${P}-`))).toEqual([]);
    expect(nsBefore.filter((n) => n.startsWith(`${P}-`))).toEqual([]);
  });

  const modes: Array<[string, string[]]> = [
    ['passive EPSV', []],
    ['passive PASV (--disable-epsv)', ['--disable-epsv']],
    ['active EPRT (-P 10.200.0.1)', ['-P', CLIENT]],
    ['active PORT (-P 10.200.0.1 --disable-eprt)', ['-P', CLIENT, '--disable-eprt']],
    ['active EPRT (--ftp-port -)', ['--ftp-port', '-']],
  ];
  modes.forEach(([name, opts], i) => {
    it(`curl ${name}: 4 MiB download and upload, sha256 equal`, async () => {
      const out = join(dir, `got-${i}`);
      const d = await labExec(P, 'client', ['curl', '-sS', '--max-time', '60', ...opts, '-o', out, `ftp://${SERVER}/data.bin`], { timeoutMs: 70_000 });
      expect(d.code, d.stderr).toBe(0);
      const got = readFileSync(out);
      expect(got.length).toBe(SIZE);
      expect(sha(got)).toBe(sha(data));
      const u = await labExec(P, 'client', ['curl', '-sS', '--max-time', '60', ...opts, '-T', join(dir, 'upload.bin'), `ftp://${SERVER}/up/u${i}.bin`], { timeoutMs: 70_000 });
      expect(u.code, u.stderr).toBe(0);
      const up = readFileSync(join(root, 'up', `u${i}.bin`));
      expect(up.length).toBe(SIZE);
      expect(sha(up)).toBe(sha(data));
    }, 120_000);
  });

  itLftpGetPut(P, SERVER, () => ({ dir, root, data }));

  it('vsftpd sees only the mapped client address', () => {
    const log = readFileSync(vlog, 'utf8');
    expect(log).toContain(`"${MAPPED}"`);
    expect(log).not.toContain(`"${CLIENT}"`);
    expect(log).toMatch(/OK UPLOAD/);
    expect(log).toMatch(/OK DOWNLOAD/);
  });

  it('from the server side the real client address is unreachable, the mapped one answers', async () => {
    const bad = await labPing(P, 'server', CLIENT, { count: 2, timeoutMs: 500 });
    expect(bad.received).toBe(0);
    const good = await labPing(P, 'server', MAPPED, { count: 3 });
    expect(good.received).toBe(3);
    // The server learnt the client's MAC for the mapped address; nothing for the real one.
    const neigh = await labExec(P, 'server', ['ip', 'neigh', 'show']);
    expect(neigh.stdout).toContain(MAPPED);
    expect(neigh.stdout).not.toMatch(new RegExp(`^${CLIENT.replace(/\./g, '\\.')} .*lladdr`, 'm'));
    const c2s = await labPing(P, 'client', SERVER, { count: 2 });
    expect(c2s.received).toBe(2);
    const s = gatewayStats();
    const g = s['gateway']!;
    expect(g['natTranslated'] as number).toBeGreaterThan(0);
    const dropped = g['natDropped'] as Record<string, number>;
    expect((dropped['arp-real-address'] ?? 0) + (dropped['real-address'] ?? 0)).toBeGreaterThan(0);
    expect(g['malformed']).toEqual({});
    expect(g['connectionsRewritten'] as number).toBeGreaterThan(0);
  });
});
