/**
 * The unprivileged path: an ordinary user (tgtest, created if missing) runs the whole lab inside
 * `unshare -r -m -n` (netns/unpriv.sh): namespaces, bridges, TAPs opened by the addon, a ping
 * and an HTTP fetch through the pure-JS forwarder. Nothing may appear on the host.
 *
 * A user namespace grants no access to host device nodes: /dev/net/tun must be read+writable by
 * the user (mode 0666, the udev default). If it is not (this CI box ships it 0600), the test
 * makes it 0666 for its duration and restores the mode afterwards.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeE2E, e2eProblems, ensureTestUser, runFixture, SAFE_PATH } from './e2e-env.js';

const USER = 'tgtest';

describeE2E('lab, unprivileged', e2eProblems(['ip', 'unshare', 'runuser', 'useradd', 'python3', 'curl']), () => {
  let restoreMode: number | undefined;
  let www = '';

  beforeAll(() => {
    ensureTestUser(USER);
    const can = spawnSync('runuser', ['-u', USER, '--', 'sh', '-c', 'test -r /dev/net/tun && test -w /dev/net/tun']);
    if (can.status !== 0) {
      restoreMode = statSync('/dev/net/tun').mode & 0o7777;
      chmodSync('/dev/net/tun', 0o666);
    }
    www = mkdtempSync(join(tmpdir(), 'tapgate-unpriv-'));
    chmodSync(www, 0o755);
    writeFileSync(join(www, 'hello.txt'), 'Hello world\n', { mode: 0o644 });
  });

  afterAll(() => {
    if (restoreMode !== undefined) chmodSync('/dev/net/tun', restoreMode);
    rmSync(www, { recursive: true, force: true });
  });

  it('an ordinary user builds the lab in unshare -r -m -n, opens the TAPs, pings and curls through the JS forwarder', () => {
    const r = runFixture(
      ['runuser', '-u', USER, '--', 'env', `PATH=${SAFE_PATH}`, `HOME=/home/${USER}`, 'netns/unpriv.sh'],
      'test/lab/fixtures/unpriv-lab.ts',
      [www],
    );
    const j = r.json as Record<string, unknown> | undefined;
    expect(j, `no result from the unprivileged lab (exit ${r.code}):\n${r.stdout}\n${r.stderr}`).toBeDefined();
    expect(j!['error']).toBeUndefined();
    // Mapped root: uid 0 inside, an ordinary uid outside.
    const uid = Number(spawnSync('id', ['-u', USER], { encoding: 'utf8' }).stdout.trim());
    expect(j!['uid']).toBe(0);
    expect(j!['uidMap']).toEqual([0, uid, 1]);
    expect(j!['stateDir']).toBe('/run/tapgate/tgu'); // on the private tmpfs
    expect(j!['taps']).toEqual({ 'tap-c': { exists: true, attached: true }, 'tap-s': { exists: true, attached: true } });
    expect(j!['ping']).toBe(3);
    expect(j!['curl']).toBe('Hello world\n');
    expect((j!['after'] as { up: boolean; namespaces: Record<string, boolean> }).namespaces).toEqual({
      client: false,
      server: false,
      gw: false,
    });
    // Nothing of it on the host.
    const hostNs = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout;
    expect(hostNs).not.toMatch(/^tgu-/m);
    expect(existsSync('/run/tapgate/tgu')).toBe(false);
  });
});
