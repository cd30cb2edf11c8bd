/**
 * Shared preflight of the end-to-end tests (test/tap, test/lab): they need Linux, root,
 * /dev/net/tun, iproute2, unshare, python3, curl and the built addon. When something is missing
 * the suite FAILS with a sentence saying what — unless TAPGATE_SKIP_E2E=1 asks to skip on purpose.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { describe, it } from 'vitest';
import { ADDON_PATH } from '../../src/phy/tap.js';

export const REPO = new URL('../../', import.meta.url).pathname.replace(/\/$/, '');
export const SKIP_E2E = process.env['TAPGATE_SKIP_E2E'] === '1';
/** PATH for children that run as another user (root's PATH may point into /root). */
export const SAFE_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

export function e2eProblems(tools: string[] = ['ip', 'unshare', 'python3', 'curl']): string[] {
  const p: string[] = [];
  if (process.platform !== 'linux') return ['needs Linux'];
  if (process.getuid?.() !== 0) p.push('must run as root (namespaces, TAPs, a test user)');
  if (!existsSync('/dev/net/tun')) p.push('/dev/net/tun is missing (modprobe tun)');
  if (!existsSync(ADDON_PATH)) p.push(`the TAP addon is not built (${ADDON_PATH}): run npm install`);
  for (const t of tools) {
    const r = spawnSync('sh', ['-c', `command -v ${t}`], { stdio: 'ignore' });
    if (r.status !== 0) p.push(`\`${t}\` is not installed`);
  }
  if (p.length === 0) {
    const r = spawnSync('unshare', ['-n', 'ip', 'link', 'add', 'tgprobe0', 'type', 'bridge'], { encoding: 'utf8' });
    if (r.status !== 0) p.push(`cannot create a network namespace with a bridge: ${r.stderr.trim()}`);
  }
  return p;
}

/** describe() that fails loudly (or skips with TAPGATE_SKIP_E2E=1) when the environment can't run it. */
export function describeE2E(name: string, problems: string[], body: () => void): void {
  if (problems.length === 0) {
    describe(name, body);
  } else if (SKIP_E2E) {
    describe.skip(name, body);
  } else {
    describe(name, () => {
      it('has an environment that can run it', () => {
        throw new Error(
          `cannot run the ${name} end-to-end tests here: ${problems.join('; ')}. ` +
            'Fix the environment, or set TAPGATE_SKIP_E2E=1 to skip them on purpose.',
        );
      });
    });
  }
}

/** Create the unprivileged test user if missing (CI runs as root). */
export function ensureTestUser(user = 'tgtest'): void {
  if (spawnSync('id', [user], { stdio: 'ignore' }).status === 0) return;
  const r = spawnSync('useradd', ['-m', user], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`cannot create test user ${user}: ${r.stderr}`);
}

export interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Run a TS fixture with tsx, optionally wrapped (unshare, runuser, ...). Parses the last stdout line as JSON. */
export function runFixture(wrapper: string[], fixture: string, args: string[] = [], env: Record<string, string> = {}, timeoutMs = 60_000): Run & { json: unknown } {
  const argv = [...wrapper, process.execPath, '--import', 'tsx', fixture, ...args];
  const r = spawnSync(argv[0]!, argv.slice(1), { cwd: REPO, encoding: 'utf8', timeout: timeoutMs, env: { ...process.env, ...env } });
  const last = r.stdout.trim().split('\n').pop() ?? '';
  let json: unknown;
  try {
    json = JSON.parse(last);
  } catch {
    json = undefined;
  }
  return { code: r.status, stdout: r.stdout, stderr: r.stderr, json };
}
