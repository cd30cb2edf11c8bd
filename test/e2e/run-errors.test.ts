/**
 * `tapgate run` in bad situations: a missing TAP, no privileges, a bad config. Each must end with
 * a clear message and a non-zero exit code, leaving no device, namespace or process behind.
 */
import { spawnSync } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { describeE2E, e2eProblems, ensureTestUser, REPO, SAFE_PATH } from '../lab/e2e-env.js';
import { TAPGATE_BIN } from '../../src/lab/gateway-argv.js';
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

  it('SIGUSR1 while it starts (before it prints statistics) never opens Node\'s inspector', () => {
    // The installed command (bin/tapgate.js: the listener before the rest loads), as the lab
    // starts it. Two TAPs in a private namespace; the gateway's warm-up takes a few hundred ms, during which
    // SIGUSR1 arrives every 20 ms; then SIGTERM. Without a listener, Node would start a debugger
    // on 127.0.0.1:9229 (code execution as root for any local user).
    const script = [
      'ip tuntap add mode tap name tgs0 && ip tuntap add mode tap name tgs1 && ip link set tgs0 up && ip link set tgs1 up || exit 90',
      `out=${join(dir, 'usr1.out')}`,
      `${process.execPath} ${TAPGATE_BIN} run --tap tgs0 --tap tgs1 >$out & pid=$!`,
      // (Not in Node's first milliseconds: before its own start-up, SIGUSR1's default ends the process.)
      'sleep 0.15; i=0; while [ $i -lt 100 ]; do kill -USR1 $pid 2>/dev/null; sleep 0.02; i=$((i+1)); done',
      // Then on until it answers with its statistics (a slow start on a busy machine; at most 20 s more).
      "i=0; until grep -q uptimeS $out || [ $i -gt 100 ]; do kill -USR1 $pid 2>/dev/null; sleep 0.2; i=$((i+1)); done",
      'kill -TERM $pid; wait $pid; s=$?; cat $out; exit $s',
    ].join('\n');
    const r = spawnSync('unshare', ['-n', 'sh', '-c', script], { cwd: REPO, encoding: 'utf8', timeout: 60_000 });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).not.toMatch(/Debugger listening|inspector/i);
    // It did answer SIGUSR1 once running: statistics on stdout.
    expect(r.stdout).toMatch(/\{"uptimeS"/);
  });

  it('SIGHUP while it starts (loading its config, opening its TAPs, warming up) does not end it; once running it reloads', () => {
    // Found by a review (2026-12-07): without a listener until the reload handler, SIGHUP's
    // default ended the process (exit 129, no message). A config of 300 rules makes the load slower.
    const cfg = join(dir, 'many.yaml');
    writeFileSync(cfg, `rules:\n${Array.from({ length: 300 }, (_, i) => `  - match: { port: ${10000 + i} }\n    agent: replace\n    replace: [ { find: "x${i}", with: "y" } ]\n`).join('')}`);
    const script = [
      'ip tuntap add mode tap name tgs0 && ip tuntap add mode tap name tgs1 && ip link set tgs0 up && ip link set tgs1 up || exit 90',
      `log=${join(dir, 'hup.log')}`,
      `${process.execPath} ${TAPGATE_BIN} run --tap tgs0 --tap tgs1 --config ${cfg} 2>$log & pid=$!`,
      // Every 20 ms through the start, then on until a reload is logged (at most 20 s more).
      'sleep 0.15; i=0; while [ $i -lt 100 ]; do kill -HUP $pid 2>/dev/null; sleep 0.02; i=$((i+1)); done',
      "i=0; until grep -q 'config reloaded' $log || [ $i -gt 100 ]; do kill -HUP $pid 2>/dev/null; sleep 0.2; i=$((i+1)); done",
      'kill -TERM $pid; wait $pid; s=$?; cat $log >&2; exit $s',
    ].join('\n');
    const r = spawnSync('unshare', ['-n', 'sh', '-c', script], { cwd: REPO, encoding: 'utf8', timeout: 90_000, env: { ...process.env, TAPGATE_LOG: 'info' } });
    expect(r.status, r.stderr.slice(-2000)).toBe(0);
    expect(r.stderr).toMatch(/config reloaded/);
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
