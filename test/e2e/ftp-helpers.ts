/**
 * Shared by the FTP end-to-end tests (ftp-nat, ftp-masq): the namespaces present, the gateway's
 * statistics (SIGUSR1), and a vsftpd (Debian) served directory with a private config.
 */
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { labStateDir } from '../../src/lab/lab.js';

export const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

export function netnsList(): string[] {
  return spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout.split('\n').map((l) => l.split(' ')[0]!).filter(Boolean);
}

/** The gateway's statistics line, printed on SIGUSR1 into the lab's gateway.log. */
export function gatewayStats(prefix: string): Record<string, Record<string, unknown>> {
  const pid = JSON.parse(readFileSync(join(labStateDir(prefix), 'gateway.pid'), 'utf8')).pid as number;
  const log = join(labStateDir(prefix), 'gateway.log');
  const before = readFileSync(log, 'utf8').length;
  process.kill(pid, 'SIGUSR1');
  const end = Date.now() + 5000;
  while (Date.now() < end) {
    const text = readFileSync(log, 'utf8').slice(before);
    for (const line of text.split('\n')) {
      if (line.startsWith('{"uptimeS"')) return JSON.parse(line) as Record<string, Record<string, unknown>>;
    }
    spawnSync('sleep', ['0.05']);
  }
  throw new Error(`the gateway printed no statistics on SIGUSR1; log:\n${readFileSync(log, 'utf8').slice(-3000)}`);
}

export const ftpId = (): number => Number(spawnSync('id', ['-u', 'ftp'], { encoding: 'utf8' }).stdout.trim());

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
  data: Buffer;
}

/**
 * A vsftpd served tree and config: anonymous with an upload directory, listening on `server`:21,
 * passive ports 40000-40100, port_promiscuous=NO (PORT/EPRT must name the control connection's
 * peer), the protocol logged.
 */
export function vsftpdFixture(server: string, size: number): FtpFixture {
  const dir = mkdtempSync(join(tmpdir(), 'tapgate-ftp-'));
  chmodSync(dir, 0o755);
  // vsftpd refuses a writable anonymous root: root is root's, uploads go to up/ (ftp's).
  const root = join(dir, 'root');
  mkdirSync(root, { mode: 0o755 });
  mkdirSync(join(root, 'up'), { mode: 0o755 });
  chownSync(join(root, 'up'), ftpId(), ftpId());
  mkdirSync(join(dir, 'empty'), { mode: 0o755 });
  const data = randomBytes(size);
  writeFileSync(join(root, 'data.bin'), data);
  chmodSync(join(root, 'data.bin'), 0o644);
  writeFileSync(join(dir, 'upload.bin'), data);
  const vlog = join(dir, 'vsftpd.log');
  const conf = join(dir, 'vsftpd.conf');
  writeFileSync(conf, [
    'listen=YES', 'listen_ipv6=NO', `listen_address=${server}`, 'listen_port=21', 'background=NO',
    'anonymous_enable=YES', 'no_anon_password=YES', `anon_root=${root}`, 'local_enable=NO',
    'write_enable=YES', 'anon_upload_enable=YES', 'anon_mkdir_write_enable=NO', 'anon_umask=022',
    'pasv_enable=YES', 'pasv_min_port=40000', 'pasv_max_port=40100', 'port_enable=YES', 'connect_from_port_20=NO',
    'port_promiscuous=NO', 'pasv_promiscuous=NO',
    `secure_chroot_dir=${join(dir, 'empty')}`, 'seccomp_sandbox=NO', 'isolate_network=NO',
    'xferlog_enable=YES', 'xferlog_std_format=NO', 'log_ftp_protocol=YES', `vsftpd_log_file=${vlog}`,
    '',
  ].join('\n'));
  return { dir, root, vlog, conf, data };
}
