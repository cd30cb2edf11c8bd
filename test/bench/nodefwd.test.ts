/**
 * The bench's minimal Node forwarder (src/bench/nodefwd.ts) in the lab: it must really forward
 * (a baseline that dropped frames would make every ratio against it meaningless): ping, and a
 * 1 MiB HTTP download byte for byte, cross it with GSO on the TAPs.
 */
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { LAB_IFACES, labDown, labExec, labPing, labUp } from '../../src/lab/lab.js';
import { describeE2E, e2eProblems } from '../lab/e2e-env.js';
import { netnsList, randomFile, sha, startHttpServer, tempDir, waitUntil } from '../e2e/lab-helpers.js';

const P = 'tgnf';
const SERVER = '10.200.0.2';
const NODEFWD = join(import.meta.dirname, '../../src/bench/nodefwd.ts');

describeE2E('bench: the minimal Node forwarder', e2eProblems(['ip', 'unshare', 'python3', 'curl']), () => {
  const nsBefore = netnsList();
  let dir = '';
  let file: Buffer;

  beforeAll(async () => {
    dir = tempDir('tapgate-nodefwd-');
    file = randomFile(join(dir, '1m'), 1 << 20);
    await labDown(P);
    await labUp({
      prefix: P,
      gatewayCommand: [process.execPath, '--import', 'tsx', NODEFWD, LAB_IFACES.tapClient, LAB_IFACES.tapServer, '--vnet'],
    });
    startHttpServer(P, SERVER, 8000, dir);
    await waitUntil(15_000, 200,
      () => labExec(P, 'client', ['curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '2', `http://${SERVER}:8000/1m`]),
      (r) => r.stdout === '200',
      (r) => `http.server not reachable through the Node forwarder: ${r.stderr}`);
  });

  afterAll(async () => {
    await labDown(P);
    rmSync(dir, { recursive: true, force: true });
    expect(netnsList().sort()).toEqual(nsBefore.sort());
  });

  it('forwards ping and a 1 MiB download unchanged', async () => {
    const p = await labPing(P, 'client', SERVER, { count: 3 });
    expect(p.received).toBe(3);
    const out = join(dir, 'got');
    const r = await labExec(P, 'client', ['curl', '-sS', '--max-time', '20', '-o', out, '-w', '%{http_code}', `http://${SERVER}:8000/1m`], { timeoutMs: 30_000 });
    expect(r.stdout, r.stderr).toBe('200');
    expect(sha(readFileSync(out))).toBe(sha(file));
  });
});
