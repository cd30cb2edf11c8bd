/**
 * PORT/EPRT split at every byte position across two TCP segments, end to end in the lab, as root
 * (issue 5: "a scripted client that sends PORT/EPRT split at every byte position across two
 * segments (and with the parts reordered) gets a working data connection").
 *
 * The gateway runs `tapgate run` with examples/ftp-nat.yaml (the client 10.200.0.1 appears to the
 * server as 10.200.0.101; the ftp agent on port 21); vsftpd in the server namespace with
 * port_promiscuous=NO, so a PORT/EPRT that still named 10.200.0.1 would be refused ("500 Illegal
 * PORT command"): every 200 proves the agent rewrote the split command to 10.200.0.101.
 * test/e2e/fixtures/ftp_split_client.py, in the client namespace, logs in once and for every k
 * from 1 to len-1 sends `PORT 10,200,0,1,p1,p2\r\n` / `EPRT |1|10.200.0.1|port|\r\n` as two
 * segments split at byte k (TCP_NODELAY, part 1, 30 ms, part 2), then LIST or RETR small.txt, and
 * checks that the server's data connection arrives and the transfer completes.
 *
 * Reordered parts: the second lab impairs the frames read from the client's TAP, before the
 * gateway, with `reorder=50%:90ms` (a held frame is released 90 ms later). With a 30 ms gap the
 * latency from part 2 to the 200 reply tells what happened: ~0 ms nothing held, ~60 ms part 1
 * held and overtaken by part 2 (REORDERED: the gateway received the second part first), >= 90 ms
 * part 2 held (in order). The client repeats each k (a new data port each time) until it has seen
 * a reordered try, so every k is proven with its parts reordered, and every try must work.
 */
import { chmodSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { labDown, labExec } from '../../src/lab/lab.js';
import { describeE2E, REPO } from '../lab/e2e-env.js';
import { ftpProblems, startVsftpd, vsftpdConf, vsftpdTree } from './ftp-helpers.js';
import { gatewayStats as stats, labUpWithGateway, netnsList, sha, waitUntil } from './lab-helpers.js';

const P = 'tgfs';
const SERVER = '10.200.0.2';
const CLIENT = '10.200.0.1';
const MAPPED = '10.200.0.101';
const SCRIPT = join(REPO, 'test/e2e/fixtures/ftp_split_client.py');
const GAP_MS = 30;
const REORDER_MS = 90;

interface KResult { k: number; tries: number; ok: boolean; reordered: boolean; latMs: number[]; error?: string }
interface SplitReport { cmd: string; len: number; command: string; results: KResult[]; okAll: boolean; reorderedAll: boolean; tries: number; ms: number }

const gatewayStats = (): Record<string, Record<string, unknown>> => stats(P);

const summary = (r: SplitReport): string => {
  const lats = r.results.flatMap((x) => x.latMs);
  const bad = r.results.filter((x) => !x.ok).map((x) => `k=${x.k}: ${x.error}`);
  const reord = r.results.filter((x) => x.reordered).length;
  return `${r.cmd} (${JSON.stringify(r.command)}, len ${r.len}): ${r.results.filter((x) => x.ok).length}/${r.len - 1} k ok, ` +
    `${reord} k seen reordered, ${r.tries} tries, ${r.ms} ms, latency to 200 min/max ${Math.min(...lats)}/${Math.max(...lats)} ms` +
    (bad.length > 0 ? `; FAILED ${bad.join('; ')}` : '');
};

const variants: Array<{ name: string; impairIn?: string; clientArgs: string[] }> = [
  { name: 'in order', clientArgs: [] },
  {
    name: 'parts reordered (--impair-in-client reorder=50%:90ms)',
    impairIn: `reorder=50%:${REORDER_MS}ms,seed=11`,
    // Part 1 held 90 ms and overtaken: 200 arrives ~60 ms after part 2 (nothing held: ~0; part 2 held: >= 90).
    clientArgs: ['--reordered-ms', `${REORDER_MS - GAP_MS - 20},${REORDER_MS - GAP_MS + 20}`, '--max-tries', '40'],
  },
];

for (const variant of variants) describeE2E(`FTP PORT/EPRT split across two segments at every byte (${variant.name})`, ftpProblems(['ip', 'unshare', 'python3', 'vsftpd']), () => {
  let dir = '';
  let vlog = '';
  let smallSha = '';
  const lines: string[] = [];

  beforeAll(async () => {
    let root: string;
    ({ dir, root } = vsftpdTree('tapgate-ftps-'));
    const small = Buffer.from('split PORT/EPRT test file\n'.repeat(200));
    smallSha = sha(small);
    writeFileSync(join(root, 'small.txt'), small);
    chmodSync(join(root, 'small.txt'), 0o644);
    vlog = join(dir, 'vsftpd.log');
    writeFileSync(join(dir, 'vsftpd.conf'), vsftpdConf({ dir, root, listen: SERVER, log: vlog, write: false }));
    writeFileSync(join(dir, 'ftp-nat.yaml'), readFileSync(join(REPO, 'examples/ftp-nat.yaml')));
    await labDown(P);
    await labUpWithGateway(P, join(dir, 'ftp-nat.yaml'), variant.impairIn !== undefined ? ['--impair-in-a', variant.impairIn] : []);
    startVsftpd(P, join(dir, 'vsftpd.conf'));
    await waitUntil(15_000, 300,
      () => labExec(P, 'client', ['python3', '-c', `import socket; s=socket.create_connection(('${SERVER}',21),2); assert s.recv(100).startswith(b'220')`]),
      (r) => r.code === 0,
      (r) => `vsftpd not reachable through the gateway: ${r.stderr}`);
  }, 90_000);

  afterAll(async () => {
    if (lines.length > 0) process.stdout.write(`ftp-split (${variant.name}):\n  ${lines.join('\n  ')}\n`);
    await labDown(P);
    rmSync(dir, { recursive: true, force: true });
    // Only this lab's namespaces: other labs (other prefixes) may come and go meanwhile.
    expect(netnsList().filter((n) => n.startsWith(`${P}-`))).toEqual([]);
  });

  // The data ports lie below the ephemeral range (32768-60999): a bind there once met a port an
  // outgoing connection of the client namespace had taken (EADDRINUSE at one k, in a full CI run).
  (['PORT', 'EPRT'] as const).forEach((cmd, i) => {
    it(`${cmd} split at every byte k = 1..len-1, each followed by LIST / RETR: the data connection works`, async () => {
      const r = await labExec(P, 'client', ['python3', SCRIPT, '--server', SERVER, '--client-ip', CLIENT, '--cmd', cmd, '--gap-ms', String(GAP_MS),
        '--small-sha', smallSha, '--base-port', String(20000 + i * 5000), ...variant.clientArgs], { timeoutMs: 120_000 });
      expect(r.stdout.trim(), r.stderr).not.toBe('');
      const rep = JSON.parse(r.stdout.trim().split('\n').pop()!) as SplitReport;
      lines.push(summary(rep));
      lines.push(`${cmd} per k (k:tries:latMs): ${rep.results.map((x) => `${x.k}:${x.tries}:${x.latMs.join('/')}${x.ok ? '' : '!'}`).join(' ')}`);
      expect(rep.results.filter((x) => !x.ok), summary(rep)).toEqual([]);
      expect(rep.results.map((x) => x.k)).toEqual(Array.from({ length: rep.len - 1 }, (_, j) => j + 1));
      expect(rep.okAll).toBe(true);
      expect(r.code, r.stderr).toBe(0);
      if (variant.impairIn !== undefined) {
        expect(rep.results.filter((x) => !x.reordered).map((x) => x.k), 'k never seen with its parts reordered').toEqual([]);
      }
    }, 150_000);
  });

  it('vsftpd accepted every PORT/EPRT from the mapped address only; the gateway rewrote them', () => {
    const log = readFileSync(vlog, 'utf8');
    expect(log).toContain(`"${MAPPED}"`);
    expect(log).not.toContain(`"${CLIENT}"`);
    expect(log).toContain(`PORT ${MAPPED.replace(/\./g, ',')},`);
    expect(log).toContain(`EPRT |1|${MAPPED}|`);
    expect(log).not.toMatch(/Illegal (PORT|EPRT)|500 /);
    const s = gatewayStats();
    const g = s['gateway']!;
    expect(g['malformed']).toEqual({});
    expect(g['connectionsRewritten'] as number).toBeGreaterThan(0);
    if (variant.impairIn !== undefined) {
      const imp = s['impair'] as Record<string, Record<string, number>> | undefined;
      lines.push(`impair counters: ${JSON.stringify(imp)}`);
      expect(JSON.stringify(imp)).toMatch(/"reordered":[1-9]/);
    }
  });
});
