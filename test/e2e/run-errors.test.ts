/**
 * `tapgate run` in bad situations: a missing TAP, no privileges, a bad config. Each must end with
 * a clear message and a non-zero exit code, leaving no device, namespace or process behind.
 */
import { spawnSync } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { describeE2E, e2eProblems, ensureTestUser, REPO, SAFE_PATH } from '../lab/e2e-env.js';
import { MAIN, tempDir } from './lab-helpers.js';

function tapgate(args: string[], wrapper: string[] = []): { code: number | null; stdout: string; stderr: string } {
  const argv = [...wrapper, process.execPath, '--import', 'tsx', MAIN, ...args];
  const r = spawnSync(argv[0]!, argv.slice(1), { cwd: REPO, encoding: 'utf8', timeout: 60_000, env: { ...process.env, PATH: SAFE_PATH + ':' + (process.env['PATH'] ?? '') } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const links = (): string => spawnSync('ip', ['-o', 'link'], { encoding: 'utf8' }).stdout.replace(/^\d+: /gm, '').split('\n').map((l) => l.split(':')[0]).sort().join(',');
const netns = (): string => spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout;

describeE2E('tapgate run errors', e2eProblems(['ip', 'unshare', 'runuser', 'useradd']), () => {
  const dir = tempDir('tapgate-err-');
  const linksBefore = links();
  const nsBefore = netns();
  afterAll(() => {
    rmSync(dir, { recursive: true, force: true });
    expect(links()).toBe(linksBefore);
    expect(netns()).toBe(nsBefore);
  });

  it('refuses a TAP that does not exist, creating nothing', () => {
    const r = tapgate(['run', '--tap', 'tgnope0', '--tap', 'tgnope1']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/TAP 'tgnope0' does not exist in this network namespace.*ip tuntap add mode tap name tgnope0/);
    expect(spawnSync('ip', ['link', 'show', 'tgnope0']).status).not.toBe(0);
  });

  it('says TAP_PERM without privileges (a user without CAP_NET_ADMIN), leaving the TAPs as they were', () => {
    ensureTestUser();
    // A private namespace with two persistent root-owned TAPs; the gateway runs as tgtest in it.
    const script = [
      'ip tuntap add mode tap name tgp0 && ip tuntap add mode tap name tgp1 || exit 90',
      `runuser -u tgtest -- env PATH=${SAFE_PATH} ${process.execPath} --import tsx ${MAIN} run --tap tgp0 --tap tgp1`,
      'rc=$?',
      // The TAPs are untouched (still persistent, nothing attached) and no process is left.
      'ip -o link show tgp0 | grep -q NO-CARRIER || ip -o link show tgp0 | grep -vq LOWER_UP || exit 91',
      'exit $rc',
    ].join('\n');
    const r = spawnSync('unshare', ['-n', 'sh', '-c', script], { cwd: REPO, encoding: 'utf8', timeout: 60_000 });
    expect(r.status, r.stderr).not.toBe(0);
    expect(r.status).not.toBe(90);
    expect(r.status).not.toBe(91);
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('TAP_PERM');
    expect(r.stderr).toMatch(/CAP_NET_ADMIN/);
  });

  it('reports a bad config before touching any device (exit 1)', () => {
    const bad = join(dir, 'bad.yaml');
    writeFileSync(bad, 'rules:\n  - match: { port: 99999 }\n    agent: nosuch\n');
    // The TAPs do not exist: a config error must come first, and name the file.
    const r = tapgate(['run', '--tap', 'tgnope0', '--tap', 'tgnope1', '--config', bad]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('bad.yaml');
    expect(r.stderr).not.toContain('does not exist in this network namespace');
    const missing = tapgate(['run', '--tap', 'tgnope0', '--tap', 'tgnope1', '--config', join(dir, 'nofile.yaml')]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('nofile.yaml');
  });

  it('needs exactly two different TAPs', () => {
    const r = tapgate(['run', '--tap', 'a', '--tap', 'a']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('two different TAPs');
  });
});
