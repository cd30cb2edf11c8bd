/**
 * FTP to a server published under a translated address (destination NAT), end to end in the lab,
 * as root (issue 5):
 * - the gateway runs `tapgate run` with examples/ftp-dnat.yaml: the server 10.200.0.2 is reached
 *   by the client as 10.200.0.102 (1:1 on the server side), and the client 10.200.0.1 appears to
 *   the server as 10.200.0.101 (1:1 on the client side, so that the server's active-mode data
 *   connection reaches the client through the mapping too); the ftp agent on port 21;
 * - vsftpd in the server namespace on 10.200.0.2, port_promiscuous=NO and pasv_promiscuous=NO
 *   (PORT/EPRT must name the control connection's peer, the passive data connection must come
 *   from it), passive ports 40000-40100;
 * - curl in the client namespace against ftp://10.200.0.102: passive PASV (the 227 reply must
 *   name 10.200.0.102, and curl is told to use the 227 address, --no-ftp-skip-pasv-ip) and EPSV
 *   (229: port only), active PORT and EPRT; download and upload of a 3 MiB random file each, plus
 *   ONE 50 MiB download (sha256 equal); lftp passive (PASV, using the 227 address) and active;
 * - the client never sees 10.200.0.2: curl -v's transcript (the replies the client received,
 *   the addresses it connected to) and lftp's debug transcript name 10.200.0.102 only; vsftpd's
 *   log names 10.200.0.101 only; the client cannot reach 10.200.0.2 at all.
 */
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { labDown, labExec, labPing } from '../../src/lab/lab.js';
import { describeE2E, REPO } from '../lab/e2e-env.js';
import { ftpProblems, startVsftpd, vsftpdFixture, waitVsftpd } from './ftp-helpers.js';
import { gatewayStats as stats, labUpWithGateway, netnsList, randomFile, sha, shaFile } from './lab-helpers.js';

const P = 'tgfd';
const SERVER = '10.200.0.2';
const PUBLISHED = '10.200.0.102';
const CLIENT = '10.200.0.1';
const MAPPED = '10.200.0.101';
const SIZE = 3 << 20;
const BIG = 50 << 20;
/** The real server address in dotted or 227 (comma) form, not as a prefix of e.g. 10.200.0.20x. */
const REAL_SERVER_RE = /(?<![\d.,])10[.,]200[.,]0[.,]2(?![\d])/;

const gatewayStats = (): Record<string, Record<string, unknown>> => stats(P);

describeE2E('FTP to a published server through destination NAT in the lab', ftpProblems(['ip', 'unshare', 'python3', 'curl', 'vsftpd', 'lftp']), () => {
  let dir = '';
  let root = '';
  let vlog = '';
  let data = Buffer.alloc(0);
  let bigSha = '';
  const timings: string[] = [];

  beforeAll(async () => {
    const fx = vsftpdFixture(SERVER, SIZE, 'tapgate-ftpd-');
    ({ dir, root, vlog, data } = fx);
    bigSha = sha(randomFile(join(root, 'big.bin'), BIG, 0o644));
    writeFileSync(join(dir, 'ftp-dnat.yaml'), readFileSync(join(REPO, 'examples/ftp-dnat.yaml')));
    await labDown(P);
    await labUpWithGateway(P, join(dir, 'ftp-dnat.yaml'));
    startVsftpd(P, fx.conf);
    await waitVsftpd(P, PUBLISHED);
  }, 90_000);

  afterAll(async () => {
    if (timings.length > 0) process.stdout.write(`ftp-dnat timings:\n  ${timings.join('\n  ')}\n`);
    await labDown(P);
    rmSync(dir, { recursive: true, force: true });
    // Only this lab's namespaces: other labs (other prefixes) may come and go meanwhile.
    expect(netnsList().filter((n) => n.startsWith(`${P}-`))).toEqual([]);
  });

  /** curl -v in the client namespace; the transcript must never name the real server address. */
  async function curl(label: string, opts: string[], extra: string[], timeoutS = 60): Promise<string> {
    const t0 = Date.now();
    const r = await labExec(P, 'client', ['curl', '-v', '-sS', '--max-time', String(timeoutS), ...opts, ...extra], { timeoutMs: (timeoutS + 10) * 1000 });
    timings.push(`${label}: ${Date.now() - t0} ms`);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr, 'curl -v transcript names the real server address').not.toMatch(REAL_SERVER_RE);
    return r.stderr;
  }

  const modes: Array<[string, string[], (v: string) => void]> = [
    ['passive PASV (--disable-epsv, 227 address used)', ['--disable-epsv', '--no-ftp-skip-pasv-ip'], (v) => {
      // The 227 reply the client received names the published address, and curl connected to it.
      expect(v).toMatch(/< 227 [^\r\n]*\(10,200,0,102,\d+,\d+\)/);
      expect(v).toMatch(/Connecting to 10\.200\.0\.102 \(10\.200\.0\.102\) port 4\d{4}/);
    }],
    ['passive EPSV (229: port only)', [], (v) => {
      expect(v).toMatch(/< 229 [^\r\n]*\(\|\|\|4\d{4}\|\)/);
      expect(v).toMatch(/Connecting to 10\.200\.0\.102 \(10\.200\.0\.102\) port 4\d{4}/);
    }],
    ['active PORT (-P 10.200.0.1 --disable-eprt)', ['-P', CLIENT, '--disable-eprt'], (v) => {
      expect(v).toMatch(/> PORT 10,200,0,1,\d+,\d+/);
      expect(v).toMatch(/< 200 PORT command successful/);
    }],
    ['active EPRT (-P 10.200.0.1)', ['-P', CLIENT], (v) => {
      expect(v).toMatch(/> EPRT \|1\|10\.200\.0\.1\|\d+\|/);
      expect(v).toMatch(/< 200 EPRT command successful/);
    }],
  ];
  modes.forEach(([name, opts, check], i) => {
    it(`curl ${name}: 3 MiB download and upload, sha256 equal, the client sees only ${PUBLISHED}`, async () => {
      const out = join(dir, `got-${i}`);
      const v1 = await curl(`curl ${name} download`, opts, ['-o', out, `ftp://${PUBLISHED}/data.bin`]);
      check(v1);
      expect(v1).toMatch(/< 150 Opening BINARY mode data connection for data\.bin/);
      const got = readFileSync(out);
      expect(got.length).toBe(SIZE);
      expect(sha(got)).toBe(sha(data));
      const v2 = await curl(`curl ${name} upload`, opts, ['-T', join(dir, 'upload.bin'), `ftp://${PUBLISHED}/up/u${i}.bin`]);
      check(v2);
      const up = readFileSync(join(root, 'up', `u${i}.bin`));
      expect(up.length).toBe(SIZE);
      expect(sha(up)).toBe(sha(data));
    }, 150_000);
  });

  it('curl passive PASV: one 50 MiB download, sha256 equal', async () => {
    const out = join(dir, 'got-big');
    const v = await curl('curl PASV 50 MiB download', ['--disable-epsv', '--no-ftp-skip-pasv-ip'], ['-o', out, `ftp://${PUBLISHED}/big.bin`], 150);
    expect(v).toMatch(/< 227 [^\r\n]*\(10,200,0,102,\d+,\d+\)/);
    expect(await shaFile(out)).toBe(bigSha);
    rmSync(out);
  }, 180_000);

  for (const passive of [true, false]) {
    it(`lftp ${passive ? 'passive (PASV, 227 address used)' : 'active (PORT)'}: download and upload, the client sees only ${PUBLISHED}`, async () => {
      const out = join(dir, `lftp-${passive}`);
      const name = `lftp-${passive}.bin`;
      const script = `set ftp:passive-mode ${passive ? 'on' : 'off'}; set ftp:prefer-epsv no; set ftp:ignore-pasv-address no; ` +
        'set ftp:use-eprt no; set net:max-retries 1; set net:timeout 20; ' +
        `open ftp://${PUBLISHED}; get data.bin -o ${out}; cd up; put ${join(dir, 'upload.bin')} -o ${name}; bye`;
      const t0 = Date.now();
      const r = await labExec(P, 'client', ['lftp', '-d', '-u', 'anonymous,', '-e', script], { timeoutMs: 90_000 });
      timings.push(`lftp ${passive ? 'passive' : 'active'} get+put: ${Date.now() - t0} ms`);
      const transcript = r.stderr + r.stdout;
      expect(r.code, transcript).toBe(0);
      expect(sha(readFileSync(out))).toBe(sha(data));
      expect(sha(readFileSync(join(root, 'up', name)))).toBe(sha(data));
      if (passive) expect(transcript).toMatch(/<--- 227 [^\r\n]*\(10,200,0,102,\d+,\d+\)/);
      else expect(transcript).toMatch(/---> PORT 10,200,0,1,\d+,\d+/);
      expect(transcript).not.toMatch(REAL_SERVER_RE);
    }, 120_000);
  }

  it('vsftpd sees only the mapped client address', () => {
    const log = readFileSync(vlog, 'utf8');
    expect(log).toContain(`"${MAPPED}"`);
    expect(log).not.toContain(`"${CLIENT}"`);
    expect(log).toMatch(/OK UPLOAD/);
    expect(log).toMatch(/OK DOWNLOAD/);
    // vsftpd accepted every PORT/EPRT (port_promiscuous=NO): the agent rewrote them to 10.200.0.101.
    expect(log).not.toMatch(/Illegal PORT command|500 Illegal/);
  });

  it('the client reaches the server only by its published address; the gateway translated', async () => {
    const bad = await labPing(P, 'client', SERVER, { count: 2, timeoutMs: 500 });
    expect(bad.received).toBe(0);
    const good = await labPing(P, 'client', PUBLISHED, { count: 3 });
    expect(good.received).toBe(3);
    const neigh = await labExec(P, 'client', ['ip', 'neigh', 'show']);
    expect(neigh.stdout).toContain(PUBLISHED);
    expect(neigh.stdout).not.toMatch(/^10\.200\.0\.2 .*lladdr/m);
    const s = gatewayStats();
    const g = s['gateway']!;
    expect(g['natTranslated'] as number).toBeGreaterThan(0);
    expect(g['malformed']).toEqual({});
    expect(g['connectionsRewritten'] as number).toBeGreaterThan(0);
  });
});
