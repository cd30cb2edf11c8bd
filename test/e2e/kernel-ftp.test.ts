/**
 * Side by side with the kernel's FTP NAT helper (issue 5): the same FTP transfers through
 * nf_conntrack_ftp + nf_nat_ftp (nftables `ct helper "ftp"`, routed topology) and through
 * tapgate (bridge lab, examples/ftp-nat.yaml), and a case the kernel gets wrong that tapgate
 * gets right.
 *
 * Kernel side, a routed topology of its own (prefix tgkf, namespace names like the lab's):
 *   tgkf-client eth0 10.210.1.1/24 ─ vc 10.210.1.254 [tgkf-gw] vs 10.210.2.254 (+10.210.2.101/32)
 *   ─ eth0 10.210.2.2/24 tgkf-server (vsftpd, port_promiscuous=NO)
 * tgkf-gw forwards, assigns the ftp helper to new connections to port 21, SNATs 10.210.1.1 to
 * 10.210.2.101 towards the server, and drops new connections from the server side into
 * 10.210.1.0/24 (the inside is reachable only through the helper's expectations).
 * Tapgate side: the bridge lab (prefix tgkt), `tapgate run --config examples/ftp-nat.yaml`
 * (client 10.200.0.1 appears as 10.200.0.101; ftp agent on port 21), vsftpd in its server ns.
 *
 * Transfers: curl passive (EPSV, PASV) and active (EPRT, PORT), 4 MiB download and upload,
 * sha256 equal, through the kernel (tapgate's own e2e, ftp-nat.test.ts, does these through
 * tapgate). Then test/e2e/fixtures/ftp_kernel_client.py, an active-mode download whose PORT is
 *  - `single`: one segment (baseline; both pass);
 *  - `split`: "PORT 10,210," then 300 ms later "1,1,p1,p2\r\n" (TCP_NODELAY, two segments).
 *    nf_conntrack_ftp sees a partial PORT at the start of a segment and DROPS it (its "partial
 *    matching" path, NF_DROP: a capture on the router shows the 12 bytes arriving on vc again
 *    and again and never leaving on vs); every retransmission is the same 12 bytes (the second
 *    segment was SACKed, so the sender does not collapse them) and is dropped again: the server
 *    never gets the command, the control connection stalls. Through tapgate the stream is rewritten
 *    whatever the segmentation: 200, transfer OK;
 *  - `pipelined`: "NOOP\r\nPORT ...\r\n" in one segment. The helper only parses a command at
 *    the start of a segment: the PORT goes through untranslated, vsftpd answers
 *    "500 Illegal PORT command.". Through tapgate: 200, transfer OK.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { labDown, labExec, nsName } from '../../src/lab/lab.js';
import { describeE2E, REPO } from '../lab/e2e-env.js';
import { ftpProblems, startVsftpd, vsftpdConf, vsftpdTree, waitVsftpd } from './ftp-helpers.js';
import { labUpWithGateway, netnsList, randomFile, sha } from './lab-helpers.js';

const K = 'tgkf'; // kernel, routed
const T = 'tgkt'; // tapgate, bridge lab
const K_CLIENT = '10.210.1.1';
const K_SERVER = '10.210.2.2';
const K_MAPPED = '10.210.2.101';
const T_CLIENT = '10.200.0.1';
const T_SERVER = '10.200.0.2';
const T_MAPPED = '10.200.0.101';
const SIZE = 4 << 20;
const FIXTURE = join(REPO, 'test/e2e/fixtures/ftp_kernel_client.py');

function sh(argv: string[], input?: string): string {
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8', ...(input !== undefined ? { input } : {}) });
  if (r.status !== 0) throw new Error(`\`${argv.join(' ')}\` failed: ${r.stderr || r.error?.message}`);
  return r.stdout;
}

const NFT_RULESET = `table ip tgkf {
  ct helper ftp-21 { type "ftp" protocol tcp; l3proto ip; }
  chain pre { type filter hook prerouting priority filter; policy accept; tcp dport 21 ct state new ct helper set "ftp-21"; }
  chain natpre { type nat hook prerouting priority dstnat; policy accept; }
  chain natpost { type nat hook postrouting priority srcnat; policy accept; ip saddr ${K_CLIENT} oifname "vs" snat to ${K_MAPPED}; }
  chain fwdchk { type filter hook forward priority filter; policy accept; iifname "vs" ip daddr 10.210.1.0/24 ct state new drop; }
}
`;

/** The routed topology with the kernel's FTP helper and SNAT in tgkf-gw (cf. buildRouted in src/bench/live.ts). */
async function buildKernelRouted(): Promise<void> {
  await labDown(K);
  const ns = { client: nsName(K, 'client'), server: nsName(K, 'server'), gw: nsName(K, 'gw') };
  for (const n of Object.values(ns)) {
    sh(['ip', 'netns', 'add', n]);
    sh(['ip', '-n', n, 'link', 'set', 'lo', 'up']);
    spawnSync('ip', ['netns', 'exec', n, 'sysctl', '-q', '-w', 'net.ipv6.conf.all.disable_ipv6=1']);
  }
  const sides = [
    { end: ns.client, veth: 'vc', mine: `${K_CLIENT}/24`, gwAddr: '10.210.1.254' },
    { end: ns.server, veth: 'vs', mine: `${K_SERVER}/24`, gwAddr: '10.210.2.254' },
  ];
  for (const s of sides) {
    sh(['ip', '-n', ns.gw, 'link', 'add', s.veth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', s.end]);
    sh(['ip', '-n', s.end, 'addr', 'add', s.mine, 'dev', 'eth0']);
    sh(['ip', '-n', s.end, 'link', 'set', 'eth0', 'up']);
    sh(['ip', '-n', s.end, 'route', 'add', 'default', 'via', s.gwAddr]);
    sh(['ip', '-n', ns.gw, 'addr', 'add', `${s.gwAddr}/24`, 'dev', s.veth]);
    sh(['ip', '-n', ns.gw, 'link', 'set', s.veth, 'up']);
  }
  // The mapped address is the router's on the server side (the server ARPs for it).
  sh(['ip', '-n', ns.gw, 'addr', 'add', `${K_MAPPED}/32`, 'dev', 'vs']);
  sh(['ip', 'netns', 'exec', ns.gw, 'sysctl', '-q', '-w', 'net.ipv4.ip_forward=1']);
  sh(['ip', 'netns', 'exec', ns.gw, 'nft', '-f', '-'], NFT_RULESET);
}

interface ClientResult {
  mode: string;
  ok: boolean;
  port?: string;
  portReply?: string;
  portReplyMs?: number;
  bytes?: number;
  sha256?: string;
  dataPeer?: string;
  error?: string;
  elapsedMs: number;
  tcpInfo?: Record<string, number>;
  replies: Array<{ t: number; line: string }>;
  segments: Array<{ t: number; data: string }>;
}

async function scripted(prefix: string, server: string, local: string, mode: string, timeoutS: number): Promise<ClientResult> {
  const r = await labExec(prefix, 'client', ['python3', FIXTURE, server, local, 'data.bin', mode, '0.3', String(timeoutS)], {
    timeoutMs: (timeoutS + 10) * 1000,
  });
  try {
    return JSON.parse(r.stdout.trim().split('\n').pop() ?? '') as ClientResult;
  } catch {
    throw new Error(`fixture printed no JSON (code ${r.code}): ${r.stderr}\n${r.stdout}`);
  }
}

const report: Record<string, unknown> = {};

describeE2E('FTP NAT: the kernel (nf_nat_ftp) side by side with tapgate', [
  ...ftpProblems(['ip', 'unshare', 'python3', 'curl', 'vsftpd', 'nft']),
], () => {
  let dir = '';
  let root = '';
  let klog = '';
  let tlog = '';
  let data = Buffer.alloc(0);

  beforeAll(async () => {
    ({ dir, root } = vsftpdTree('tapgate-kftp-'));
    data = randomFile(join(root, 'data.bin'), SIZE, 0o644);
    writeFileSync(join(dir, 'upload.bin'), data);
    klog = join(dir, 'vsftpd-kernel.log');
    tlog = join(dir, 'vsftpd-tapgate.log');
    writeFileSync(join(dir, 'vsftpd-kernel.conf'), vsftpdConf({ dir, root, listen: K_SERVER, log: klog }));
    writeFileSync(join(dir, 'vsftpd-tapgate.conf'), vsftpdConf({ dir, root, listen: T_SERVER, log: tlog }));
    writeFileSync(join(dir, 'ftp-nat.yaml'), readFileSync(join(REPO, 'examples/ftp-nat.yaml')));

    await buildKernelRouted();
    startVsftpd(K, join(dir, 'vsftpd-kernel.conf'));

    await labDown(T);
    await labUpWithGateway(T, join(dir, 'ftp-nat.yaml'));
    startVsftpd(T, join(dir, 'vsftpd-tapgate.conf'));

    await Promise.all([waitVsftpd(K, K_SERVER), waitVsftpd(T, T_SERVER)]);
  }, 60_000);

  afterAll(async () => {
    // eslint-disable-next-line no-console
    console.log(`kernel-ftp observations: ${JSON.stringify(report, null, 1)}`);
    await labDown(K);
    await labDown(T);
    rmSync(dir, { recursive: true, force: true });
    // Only ours: other sessions may create (and remove) their own lab namespaces meanwhile.
    expect(netnsList().filter((n) => n.startsWith(`${K}-`) || n.startsWith(`${T}-`))).toEqual([]);
  });

  describe('kernel: nf_conntrack_ftp + nf_nat_ftp (nftables ct helper "ftp", routed)', () => {
    it('the helper is in use on the router', () => {
      const rs = sh(['ip', 'netns', 'exec', nsName(K, 'gw'), 'nft', 'list', 'ruleset']);
      expect(rs).toMatch(/type "ftp" protocol tcp/);
      expect(rs).toMatch(/ct helper set "ftp-21"/);
    });

    const modes: Array<[string, string[]]> = [
      ['passive EPSV', []],
      ['passive PASV (--disable-epsv)', ['--disable-epsv']],
      ['active EPRT', ['-P', K_CLIENT]],
      ['active PORT (--disable-eprt)', ['-P', K_CLIENT, '--disable-eprt']],
    ];
    modes.forEach(([name, opts], i) => {
      it(`curl ${name}: 4 MiB download and upload, sha256 equal`, async () => {
        const out = join(dir, `kgot-${i}`);
        const t0 = Date.now();
        const d = await labExec(K, 'client', ['curl', '-sS', '--max-time', '30', ...opts, '-o', out, `ftp://${K_SERVER}/data.bin`], { timeoutMs: 40_000 });
        expect(d.code, d.stderr).toBe(0);
        expect(sha(readFileSync(out))).toBe(sha(data));
        const t1 = Date.now();
        const u = await labExec(K, 'client', ['curl', '-sS', '--max-time', '30', ...opts, '-T', join(dir, 'upload.bin'), `ftp://${K_SERVER}/up/k${i}.bin`], { timeoutMs: 40_000 });
        expect(u.code, u.stderr).toBe(0);
        expect(sha(readFileSync(join(root, 'up', `k${i}.bin`)))).toBe(sha(data));
        report[`kernel curl ${name}`] = { downloadMs: t1 - t0, uploadMs: Date.now() - t1 };
      }, 60_000);
    });

    it('scripted PORT in one segment: translated, transfer OK', async () => {
      const r = await scripted(K, K_SERVER, K_CLIENT, 'single', 8);
      report['kernel single'] = { portReplyMs: r.portReplyMs, elapsedMs: r.elapsedMs, portReply: r.portReply };
      expect(r.ok, JSON.stringify(r)).toBe(true);
      expect(r.sha256).toBe(sha(data));
    }, 30_000);

    it('vsftpd saw the client only as the SNAT address', () => {
      const log = readFileSync(klog, 'utf8');
      expect(log).toContain(`"${K_MAPPED}"`);
      expect(log).not.toContain(`"${K_CLIENT}"`);
      expect(log).toMatch(new RegExp(`"PORT 10,210,2,101,`));
      expect(log).toMatch(/OK DOWNLOAD/);
      expect(log).toMatch(/OK UPLOAD/);
    });

    it('PORT split across two segments: the helper drops the first part, the server never gets the command', async () => {
      const before = readFileSync(klog, 'utf8').length;
      const r = await scripted(K, K_SERVER, K_CLIENT, 'split', 3);
      const after = readFileSync(klog, 'utf8').slice(before);
      report['kernel split'] = { error: r.error, elapsedMs: r.elapsedMs, tcpInfo: r.tcpInfo, segments: r.segments, lastReply: r.replies.at(-1), vsftpdSaw: after.split('\n').filter((l) => l.includes('FTP command')).map((l) => l.replace(/^.*FTP command: /, '')) };
      expect(r.ok).toBe(false);
      expect(r.portReply).toBeUndefined(); // no answer at all: the control connection stalled
      expect(r.error).toMatch(/timed out/);
      expect(r.segments.map((s) => s.data)).toEqual(['USER anonymous\r\n', 'TYPE I\r\n', 'PORT 10,210,', expect.stringMatching(/^1,1,\d+,\d+\r\n$/)]);
      expect(after).toContain('"TYPE I"');
      expect(after).not.toMatch(/FTP command: Client "[\d.]+", "PORT/);
      // The sender kept retransmitting the 12-byte first part (dropped each time).
      if (r.tcpInfo !== undefined) expect(r.tcpInfo['total_retrans']).toBeGreaterThan(0);
    }, 30_000);

    it('PORT after another command in the same segment: passed untranslated, vsftpd says 500 Illegal PORT command', async () => {
      const before = readFileSync(klog, 'utf8').length;
      const r = await scripted(K, K_SERVER, K_CLIENT, 'pipelined', 5);
      const after = readFileSync(klog, 'utf8').slice(before);
      report['kernel pipelined'] = { portReply: r.portReply, error: r.error, elapsedMs: r.elapsedMs, vsftpdSaw: (/"PORT [^"]*"/.exec(after) ?? [''])[0] };
      expect(r.ok).toBe(false);
      expect(r.portReply).toBe('500 Illegal PORT command.');
      expect(after).toMatch(/FTP command: Client "10\.210\.2\.101", "PORT 10,210,1,1,/);
    }, 30_000);
  });

  describe('tapgate: bridge lab, examples/ftp-nat.yaml', () => {
    it('scripted PORT in one segment: translated, transfer OK', async () => {
      const r = await scripted(T, T_SERVER, T_CLIENT, 'single', 8);
      report['tapgate single'] = { portReplyMs: r.portReplyMs, elapsedMs: r.elapsedMs, portReply: r.portReply };
      expect(r.ok, JSON.stringify(r)).toBe(true);
      expect(r.sha256).toBe(sha(data));
    }, 30_000);

    it('PORT split across two segments: translated, 200, transfer OK', async () => {
      const before = readFileSync(tlog, 'utf8').length;
      const r = await scripted(T, T_SERVER, T_CLIENT, 'split', 8);
      const after = readFileSync(tlog, 'utf8').slice(before);
      report['tapgate split'] = { portReply: r.portReply, portReplyMs: r.portReplyMs, elapsedMs: r.elapsedMs, dataPeer: r.dataPeer, vsftpdSaw: (/"PORT [^"]*"/.exec(after) ?? [''])[0] };
      expect(r.ok, JSON.stringify(r)).toBe(true);
      expect(r.portReply).toMatch(/^200 /);
      expect(r.bytes).toBe(SIZE);
      expect(r.sha256).toBe(sha(data));
      expect(after).toMatch(/FTP command: Client "10\.200\.0\.101", "PORT 10,200,0,101,/);
    }, 30_000);

    it('PORT after another command in the same segment: translated, transfer OK', async () => {
      const r = await scripted(T, T_SERVER, T_CLIENT, 'pipelined', 8);
      report['tapgate pipelined'] = { portReply: r.portReply, elapsedMs: r.elapsedMs };
      expect(r.ok, JSON.stringify(r)).toBe(true);
      expect(r.sha256).toBe(sha(data));
    }, 30_000);

    it('vsftpd saw the client only as the mapped address', () => {
      const log = readFileSync(tlog, 'utf8');
      expect(log).toContain(`"${T_MAPPED}"`);
      expect(log).not.toContain(`"${T_CLIENT}"`);
    });
  });
});
