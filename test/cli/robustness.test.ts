/**
 * The command line against what a review found it mishandled (the built CLI, as a user runs it):
 * standard output whose reader went away, a config that is a FIFO or not UTF-8, output
 * directories Node's recursive mkdir cannot make (it looped forever under /proc), file-system
 * errors it called bugs (symlink loops, long names), a bad `lab exec --name`, and a rule address
 * no packet carries (IPv4-mapped IPv6). Each: one clear line on stderr and a usage or I/O exit
 * code, never a hang, a stack trace or "internal error".
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const ROOT = join(import.meta.dirname, '../..');
const BIN = join(ROOT, 'bin/tapgate.js');
const PCAP = join(ROOT, 'test/fixtures/http-small.pcap');
const tmp = mkdtempSync(join(tmpdir(), 'tapgate-cli-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function tapgate(...args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 20_000, env: { ...process.env, TAPGATE_LOG: 'warn' } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const clean = (stderr: string): void => {
  expect(stderr).not.toMatch(/internal error|\n\s+at |node:events|Unhandled/);
};

describe('the command line, where a review found it failing', () => {
  it('standard output closed by its reader (check | head -c 1, replay | head -c 1): no stack trace, said once, exit 0', async () => {
    const cfg = join(tmp, 'big.yaml');
    // Enough to print that the pipe is gone before the end.
    writeFileSync(cfg, `rules:\n${Array.from({ length: 3000 }, (_, i) => `  - { match: { port: ${1 + i} }, agent: replace, replace: [ { find: "x${i}", with: "y" } ] }`).join('\n')}\n`);
    for (const args of [['check', cfg], ['replay', PCAP, '--json']]) {
      const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
      child.stdout.once('data', () => child.stdout.destroy());
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const code = await new Promise<number | null>((res) => child.on('close', (c) => res(c)));
      clean(stderr);
      expect(code, stderr).toBe(0);
    }
  });

  it('a config that is a FIFO no one writes: an error at once (a reload would have stopped the gateway); one that is not UTF-8: refused with the offset', () => {
    const fifo = join(tmp, 'cfg.fifo');
    execFileSync('mkfifo', [fifo]);
    const t0 = Date.now();
    const r = tapgate('check', fifo);
    expect(Date.now() - t0).toBeLessThan(10_000);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/empty config/);
    clean(r.stderr);
    const bad = join(tmp, 'latin1.yaml');
    writeFileSync(bad, Buffer.concat([Buffer.from('rules:\n  - match: { port: 80 }\n    agent: replace\n    replace: [ { find: "'), Buffer.from([0xff, 0xfe]), Buffer.from('SECRET", with: "x" } ]\n')]));
    const b = tapgate('check', bad);
    expect(b.code).toBe(1);
    expect(b.stderr).toMatch(/not UTF-8 text \(first bad byte at offset 74\)/);
  });

  it('output directories that cannot be made (under /proc), symlink loops and over-long names: exit 2 naming the option', () => {
    const cases: Array<[string[], RegExp]> = [
      [['replay', PCAP, '--streams', '/proc/tapgate-x/y'], /^tapgate: --streams \/proc\/tapgate-x: no such file or directory\n$/],
      [['replay', PCAP, '--events', join(tmp, 'n'.repeat(300))], /^tapgate: --events .*: file name too long\n$/],
    ];
    const loop = join(tmp, 'loop');
    symlinkSync(loop, loop);
    cases.push([['replay', loop], /too many symbolic links/]);
    for (const [args, want] of cases) {
      const r = tapgate(...args);
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(2);
      expect(r.stderr).toMatch(want);
      clean(r.stderr);
    }
  });

  it('`lab exec` with a bad --name: the lab error, not an internal one; a rule naming an IPv4-mapped IPv6 address: refused', () => {
    const r = tapgate('lab', 'exec', 'client', '--name', 'Bad', '--', 'true');
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^tapgate lab: lab prefix 'Bad' must match/);
    const cfg = join(tmp, 'mapped.yaml');
    writeFileSync(cfg, 'rules:\n  - match: { address: "::ffff:10.0.0.1" }\n    agent: replace\n    replace: [ { find: "hello", with: "x" } ]\n');
    const c = tapgate('check', cfg);
    expect(c.code).toBe(1);
    expect(c.stderr).toMatch(/IPv4-mapped IPv6 address, which no packet carries .*name 10\.0\.0\.1 instead/);
  });

  it('a value failing two checks with one message is reported once; `replay -` says how to read standard input', () => {
    const cfg = join(tmp, 'huge.yaml');
    writeFileSync(cfg, 'limits: { maxHeldBytes: 1e300 }\nrules: []\n');
    const c = tapgate('check', cfg);
    expect(c.code).toBe(1);
    expect(c.stderr.split('\n').filter((l) => l.includes('limits.maxHeldBytes'))).toHaveLength(1);
    expect(c.stderr).toMatch(/1 error\n/);
    const r = tapgate('replay', '-');
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^tapgate: capture from standard input: name it \/dev\/stdin/);
  });
});
