/**
 * FTP over IPv6 through the gateway, end to end in the lab, as root (issue 15): a dual-stack lab,
 * vsftpd (Debian) listening on [fd00:200::2]:21, the ftp agent on the control connection (no
 * NAT: NAT is IPv4's, so nothing is translated; the agent parses EPSV's 229 and passes EPRT |2|
 * unchanged, counted), curl (passive EPSV, active EPRT |2|) and lftp (passive, active): every
 * file byte-exact both ways, the data connections tracked by the gateway, vsftpd's log naming the
 * client's IPv6 address.
 */
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { labDown, labExec } from '../../src/lab/lab.js';
import { describeE2E } from '../lab/e2e-env.js';
import { ftpProblems, gatewayStats, netnsList, sha, startVsftpd, vsftpdFixture, waitVsftpd } from './ftp-helpers.js';
import { labUpWithGateway } from './lab-helpers.js';

const P = 'tgf6';
const SERVER6 = 'fd00:200::2';
const CLIENT6 = 'fd00:200::1';
const SIZE = 2 << 20;
const CONFIG = 'rules:\n  - name: ftp-control\n    match: { serverPort: 21 }\n    agent: ftp\n';

describeE2E('FTP over IPv6 through the gateway (ftp agent, no NAT)', ftpProblems(['ip', 'curl', 'vsftpd', 'lftp']), () => {
  const nsBefore = netnsList();
  let dir = '';
  let root = '';
  let vlog = '';
  let data = Buffer.alloc(0);

  beforeAll(async () => {
    const fx = vsftpdFixture(SERVER6, SIZE, 'tapgate-ftp6-');
    ({ dir, root, vlog, data } = fx);
    writeFileSync(join(dir, 'ftp6.yaml'), CONFIG);
    await labDown(P);
    await labUpWithGateway(P, join(dir, 'ftp6.yaml'), [], { config: { ipv6: true } });
    startVsftpd(P, fx.conf);
    await waitVsftpd(P, SERVER6);
  }, 90_000);

  afterAll(async () => {
    await labDown(P);
    rmSync(dir, { recursive: true, force: true });
    expect(netnsList().filter((n) => n.startsWith(`${P}-`))).toEqual([]);
    expect(nsBefore.filter((n) => n.startsWith(`${P}-`))).toEqual([]);
  });

  const modes: Array<[string, string[]]> = [
    ['passive EPSV', []],
    [`active EPRT |2| (-P ${CLIENT6})`, ['-P', CLIENT6]],
  ];
  modes.forEach(([name, opts], i) => {
    it(`curl ${name}: download and upload, sha256 equal`, async () => {
      const out = join(dir, `got-${i}`);
      const d = await labExec(P, 'client', ['curl', '-g', '-6', '-sS', '--max-time', '60', ...opts, '-o', out, `ftp://[${SERVER6}]/data.bin`], { timeoutMs: 70_000 });
      expect(d.code, d.stderr).toBe(0);
      expect(sha(readFileSync(out))).toBe(sha(data));
      const u = await labExec(P, 'client', ['curl', '-g', '-6', '-sS', '--max-time', '60', ...opts, '-T', join(dir, 'upload.bin'), `ftp://[${SERVER6}]/up/u${i}.bin`], { timeoutMs: 70_000 });
      expect(u.code, u.stderr).toBe(0);
      expect(sha(readFileSync(join(root, 'up', `u${i}.bin`)))).toBe(sha(data));
    }, 120_000);
  });

  for (const passive of [true, false]) {
    it(`lftp ${passive ? 'passive' : 'active'}: download and upload`, async () => {
      const out = join(dir, `lftp-${passive}`);
      const name = `lftp-${passive}.bin`;
      const script = `set ftp:passive-mode ${passive ? 'on' : 'off'}; set net:max-retries 1; set net:timeout 20; ` +
        `open ftp://[${SERVER6}]; get data.bin -o ${out}; cd up; put ${join(dir, 'upload.bin')} -o ${name}; bye`;
      const r = await labExec(P, 'client', ['lftp', '-u', 'anonymous,', '-e', script], { timeoutMs: 90_000 });
      expect(r.code, r.stderr + r.stdout).toBe(0);
      expect(sha(readFileSync(out))).toBe(sha(data));
      expect(sha(readFileSync(join(root, 'up', name)))).toBe(sha(data));
    }, 120_000);
  }

  it('the control connections went through the ftp agent; vsftpd saw the client\'s IPv6 address', () => {
    const s = gatewayStats(P);
    const g = s['gateway']!;
    expect(g['connectionsRewritten'] as number, 'control connections given to the agent').toBeGreaterThanOrEqual(4);
    expect(g['malformed']).toEqual({});
    expect((g['policy'] as { dropped: Record<string, number> }).dropped).toEqual({});
    const log = readFileSync(vlog, 'utf8');
    expect(log).toContain(CLIENT6);
    expect(log).toMatch(/OK UPLOAD/);
    expect(log).toMatch(/OK DOWNLOAD/);
  });
});
