/**
 * FTP over IPv6 through the gateway, end to end in the lab, as root (issue 15): a dual-stack lab,
 * vsftpd (Debian) listening on [fd00:200::2]:21, the ftp agent on the control connection, curl
 * (passive EPSV, active EPRT |2|) and lftp (passive, active): every file byte-exact both ways.
 * Twice: plain (nothing translated: vsftpd sees the client's address), and through NPTv6
 * (nat.nptv6: the client side's fd00:200::/64 appears as fd00:201::/64; the agent rewrites the
 * address of EPRT |2|, NPTv6 translates the data connections statelessly): vsftpd and the
 * server's neighbour table see only the mapped prefix, and an HTTP download through a rewrite
 * rule arrives exact.
 */
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { labDown, labExec, labKill } from '../../src/lab/lab.js';
import { describeE2E } from '../lab/e2e-env.js';
import { ftpProblems, itLftpGetPut, gatewayStats, netnsList, sha, startVsftpd, vsftpdFixture, waitVsftpd } from './ftp-helpers.js';
import { expectedRewrite, FIND_LONG, FIND_SHORT, firstDifference, labUpWithGateway, rewriteText, startHttpServer, waitUntil, WITH_LONG, WITH_SHORT } from './lab-helpers.js';

const P = 'tgf6';
const SERVER6 = 'fd00:200::2';
const CLIENT6 = 'fd00:200::1';
const SIZE = 2 << 20;
const MAPPED_PREFIX = 'fd00:201::';
const RULES = `rules:
  - name: ftp-control
    match: { serverPort: 21 }
    agent: ftp
  - name: rewrite
    match: { port: 8011 }
    direction: s2c
    agent: replace
    replace:
      - { find: "${FIND_SHORT}", with: "${WITH_SHORT}" }
      - { find: "${FIND_LONG}", with: "${WITH_LONG}" }
`;
const NPT = 'nat:\n  nptv6:\n    - { side: client, real: "fd00:200::/64", mapped: "fd00:201::/64" }\n';

for (const npt of [false, true]) describeE2E(`FTP over IPv6 through the gateway (ftp agent${npt ? ', NPTv6' : ', no NAT'})`, ftpProblems(['ip', 'curl', 'vsftpd', 'lftp', 'python3']), () => {
  const nsBefore = netnsList();
  let dir = '';
  let root = '';
  let vlog = '';
  let data = Buffer.alloc(0);

  beforeAll(async () => {
    const fx = vsftpdFixture(SERVER6, SIZE, 'tapgate-ftp6-');
    ({ dir, root, vlog, data } = fx);
    writeFileSync(join(dir, 'ftp6.yaml'), (npt ? NPT : '') + RULES);
    writeFileSync(join(fx.root, 'text.txt'), rewriteText(1 << 20));
    await labDown(P);
    await labUpWithGateway(P, join(dir, 'ftp6.yaml'), [], { config: { ipv6: true } });
    // The mapped prefix is on the server's link (as a 1:1 NAT's mapped addresses are).
    if (npt) await labExec(P, 'server', ['ip', '-6', 'route', 'replace', 'fd00:201::/64', 'dev', 'eth0']);
    startVsftpd(P, fx.conf);
    startHttpServer(P, SERVER6, 8011, fx.root);
    await waitVsftpd(P, SERVER6);
    await waitUntil(15_000, 200, () => labExec(P, 'client', ['curl', '-g', '-6', '-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '2', `http://[${SERVER6}]:8011/text.txt`]),
      (r) => r.stdout === '200', (r) => `http.server not reachable: ${r.stderr}`);
  }, 90_000);

  afterAll(async () => {
    await labKill(P, 'gateway');
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

  itLftpGetPut(P, SERVER6, () => ({ dir, root, data }));

  it('an HTTP download through the rewrite rule arrives exact', async () => {
    const r = await labExec(P, 'client', ['curl', '-g', '-6', '-sS', '--max-time', '30', '--ignore-content-length', `http://[${SERVER6}]:8011/text.txt`]);
    expect(r.code, r.stderr).toBe(0);
    const exp = expectedRewrite(readFileSync(join(root, 'text.txt'), 'latin1'));
    if (r.stdout !== exp) throw new Error(firstDifference(r.stdout, exp));
  });

  it(npt ? 'vsftpd and the server\'s neighbour table see only the mapped prefix' : 'vsftpd saw the client\'s IPv6 address', async () => {
    const s = gatewayStats(P);
    const g = s['gateway']!;
    expect(g['connectionsRewritten'] as number, 'control connections given to the agent').toBeGreaterThanOrEqual(4);
    expect(g['malformed']).toEqual({});
    expect((g['policy'] as { dropped: Record<string, number> }).dropped).toEqual({});
    const log = readFileSync(vlog, 'utf8');
    expect(log).toMatch(/OK UPLOAD/);
    expect(log).toMatch(/OK DOWNLOAD/);
    if (!npt) {
      expect(log).toContain(CLIENT6);
      return;
    }
    expect(g['natTranslated'] as number).toBeGreaterThan(0);
    expect(log).toContain(MAPPED_PREFIX);
    expect(log).not.toContain(CLIENT6);
    const neigh = await labExec(P, 'server', ['ip', '-6', 'neigh', 'show']);
    expect(neigh.stdout).toContain(MAPPED_PREFIX);
    expect(neigh.stdout).not.toContain(CLIENT6);
  });
});
