/**
 * Shared by the FTP end-to-end tests (ftp-nat, ftp-masq, ftp-dnat, ftp-split, kernel-ftp): the
 * preflight (an `ftp` user), a vsftpd (Debian) served directory with a private config, and
 * waiting until vsftpd answers. Lab-wide helpers (sha256, namespaces, gateway statistics) are in
 * lab-helpers.ts and re-exported here.
 */
import { spawnSync } from 'node:child_process';
import { chownSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { expect, it } from 'vitest';
import { join } from 'node:path';
import { labExec, labSpawn, type LabRole } from '../../src/lab/lab.js';
import { e2eProblems } from '../lab/e2e-env.js';
import { randomFile, sha, tempDir, waitUntil } from './lab-helpers.js';

export { gatewayStats, netnsList, sha } from './lab-helpers.js';

export const ftpId = (): number => Number(spawnSync('id', ['-u', 'ftp'], { encoding: 'utf8' }).stdout.trim());

/** e2eProblems(tools), plus the `ftp` user vsftpd needs. */
export function ftpProblems(tools: string[]): string[] {
  return [...e2eProblems(tools), ...(spawnSync('id', ['ftp']).status === 0 ? [] : ['no `ftp` user (apt-get install vsftpd creates it)'])];
}

/**
 * A vsftpd served tree in a new temporary directory: vsftpd refuses a writable anonymous root, so
 * root/ is root's and uploads go to root/up (ftp's); empty/ is the secure_chroot_dir.
 */
export function vsftpdTree(tmpPrefix: string): { dir: string; root: string } {
  const dir = tempDir(tmpPrefix);
  const root = join(dir, 'root');
  mkdirSync(root, { mode: 0o755 });
  mkdirSync(join(root, 'up'), { mode: 0o755 });
  chownSync(join(root, 'up'), ftpId(), ftpId());
  mkdirSync(join(dir, 'empty'), { mode: 0o755 });
  return { dir, root };
}

/**
 * A vsftpd config: anonymous (with uploads unless `write` is false), listening on `listen`:21
 * (an IPv6 address: listen_ipv6 with listen_address6),
 * passive ports 40000-40100, port_promiscuous=NO (PORT/EPRT must name the control connection's
 * peer), the protocol logged to `log`.
 */
export function vsftpdConf(o: { dir: string; root: string; listen: string; log: string; write?: boolean }): string {
  const write = o.write ?? true;
  return [
    ...(o.listen.includes(':') ? ['listen=NO', 'listen_ipv6=YES', `listen_address6=${o.listen}`] : ['listen=YES', 'listen_ipv6=NO', `listen_address=${o.listen}`]),
    'listen_port=21', 'background=NO',
    'anonymous_enable=YES', 'no_anon_password=YES', `anon_root=${o.root}`, 'local_enable=NO',
    ...(write ? ['write_enable=YES', 'anon_upload_enable=YES', 'anon_mkdir_write_enable=NO', 'anon_umask=022'] : ['write_enable=NO']),
    'pasv_enable=YES', 'pasv_min_port=40000', 'pasv_max_port=40100', 'port_enable=YES', 'connect_from_port_20=NO',
    'port_promiscuous=NO', 'pasv_promiscuous=NO',
    `secure_chroot_dir=${join(o.dir, 'empty')}`, 'seccomp_sandbox=NO', 'isolate_network=NO',
    'xferlog_enable=YES', 'xferlog_std_format=NO', 'log_ftp_protocol=YES', `vsftpd_log_file=${o.log}`,
    '',
  ].join('\n');
}

export interface FtpFixture {
  /** Temporary directory (remove it when done). */
  dir: string;
  /** vsftpd's anonymous root; uploads land in root/up. */
  root: string;
  /** vsftpd's log file. */
  vlog: string;
  /** vsftpd's config file. */
  conf: string;
  /** The random content of root/data.bin and dir/upload.bin. */
  data: Buffer<ArrayBuffer>;
}

/**
 * vsftpdTree + vsftpdConf (with uploads, listening on `server`) in dir/vsftpd.conf, logging to
 * dir/vsftpd.log, and `size` random bytes in root/data.bin and dir/upload.bin.
 */
export function vsftpdFixture(server: string, size: number, tmpPrefix = 'tapgate-ftp-'): FtpFixture {
  const { dir, root } = vsftpdTree(tmpPrefix);
  const data = randomFile(join(root, 'data.bin'), size, 0o644);
  writeFileSync(join(dir, 'upload.bin'), data);
  const vlog = join(dir, 'vsftpd.log');
  const conf = join(dir, 'vsftpd.conf');
  writeFileSync(conf, vsftpdConf({ dir, root, listen: server, log: vlog }));
  return { dir, root, vlog, conf, data };
}

/** Starts vsftpd with `conf` in the lab's server namespace. */
export function startVsftpd(prefix: string, conf: string): number {
  return labSpawn(prefix, 'server', 'vsftpd', ['vsftpd', conf]);
}

/** Waits (15 s) until curl in `role` lists `server`'s root with data.bin in it. */
export async function waitVsftpd(prefix: string, server: string, role: LabRole = 'client'): Promise<void> {
  const url = server.includes(':') ? `ftp://[${server}]/` : `ftp://${server}/`;
  await waitUntil(15_000, 300, () => labExec(prefix, role, ['curl', '-g', '-sS', '--max-time', '3', url]),
    (r) => r.code === 0 && r.stdout.includes('data.bin'),
    (r) => `vsftpd not reachable at ${server} from ${prefix} ${role}: ${r.stderr}`);
}

/**
 * Two tests (lftp passive, then active): from the client namespace, get data.bin from `server`
 * (an IPv6 address goes in brackets) and put upload.bin as up/lftp-<mode>.bin, both sha256
 * equal to `fx().data`. `fx` is read when the tests run (after beforeAll).
 */
export function itLftpGetPut(prefix: string, server: string, fx: () => { dir: string; root: string; data: Buffer }): void {
  for (const passive of [true, false]) {
    it(`lftp ${passive ? 'passive' : 'active'}: download and upload`, async () => {
      const { dir, root, data } = fx();
      const out = join(dir, `lftp-${passive}`);
      const name = `lftp-${passive}.bin`;
      const host = server.includes(':') ? `[${server}]` : server;
      const script = `set ftp:passive-mode ${passive ? 'on' : 'off'}; set net:max-retries 1; set net:timeout 20; ` +
        `open ftp://${host}; get data.bin -o ${out}; cd up; put ${join(dir, 'upload.bin')} -o ${name}; bye`;
      const r = await labExec(prefix, 'client', ['lftp', '-u', 'anonymous,', '-e', script], { timeoutMs: 90_000 });
      expect(r.code, r.stderr + r.stdout).toBe(0);
      expect(sha(readFileSync(out))).toBe(sha(data));
      expect(sha(readFileSync(join(root, 'up', name)))).toBe(sha(data));
    }, 120_000);
  }
}
