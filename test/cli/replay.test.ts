/**
 * `tapgate replay` end to end (the built CLI, as a user runs it): identity, --streams against
 * tshark, rewriting with --config, and bad input answered with a clear message and exit code.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readPcapAll } from '../../src/phy/pcap.js';
import { requireTool, tsharkFollowTcp, tsharkStreamCount } from '../helpers/tshark.js';

const run = promisify(execFile);
const ROOT = join(import.meta.dirname, '../..');
const FIX = join(ROOT, 'test/fixtures');
const tmp = mkdtempSync(join(tmpdir(), 'tapgate-replay-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
beforeAll(() => requireTool('tshark'));

async function tapgate(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await run(process.execPath, [join(ROOT, 'bin/tapgate.js'), ...args], { env: { ...process.env, TAPGATE_LOG: 'warn' } });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, stdout: err.stdout, stderr: err.stderr };
  }
}

describe('tapgate replay', () => {
  for (const file of ['http-small.pcap', 'http-loss-holes.pcap', 'http-small.pcapng']) {
    it(`--streams of ${file} equals tshark's follow of every connection`, async () => {
      const dir = join(tmp, `streams-${file}`);
      const out = join(tmp, `out-${file}.pcap`);
      const r = await tapgate('replay', join(FIX, file), '-o', out, '--streams', dir);
      expect(r.code).toBe(0);
      const n = await tsharkStreamCount(join(FIX, file));
      const files = readdirSync(dir).sort();
      expect(files.length).toBe(2 * n);
      for (let i = 0; i < n; i++) {
        const t = await tsharkFollowTcp(join(FIX, file), i);
        const base = `${t.client.replace(':', '.')}-${t.server.replace(':', '.')}`;
        const candidates = files.filter((f) => f.startsWith(base) && f.endsWith('.c2s'));
        const match = candidates.some((c) => {
          const stem = c.slice(0, -4);
          return readFileSync(join(dir, c)).equals(t.c2s) && readFileSync(join(dir, `${stem}.s2c`)).equals(t.s2c);
        });
        expect(match, `stream ${i} (${base})`).toBe(true);
      }
      // Pass-through: the output capture is the input, frame for frame.
      const a = await readPcapAll(join(FIX, file));
      const b = await readPcapAll(out);
      expect(b.records.length).toBe(a.records.length);
      for (let i = 0; i < a.records.length; i++) expect(Buffer.from(b.records[i]!.data).equals(Buffer.from(a.records[i]!.data))).toBe(true);
    });
  }

  it('rewrites with --config; --streams shows what the receiver gets', async () => {
    const cfg = join(tmp, 'rw.yaml');
    writeFileSync(cfg, 'rules:\n  - match: { port: 8000 }\n    direction: s2c\n    agent: replace\n    replace:\n      - { find: "brown fox", with: "fox" }\n      - { find: "lazy", with: "very energetic" }\n');
    const dir = join(tmp, 'rw-streams');
    const out = join(tmp, 'rw.pcap');
    const r = await tapgate('replay', join(FIX, 'http-loss-holes.pcap'), '--config', cfg, '-o', out, '--streams', dir);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/commands: \d+/);
    const orig = await tsharkFollowTcp(join(FIX, 'http-loss-holes.pcap'), 0);
    const got = await tsharkFollowTcp(out, 0);
    const expected = orig.s2c.toString('latin1').split('brown fox').join('fox').split('lazy').join('very energetic');
    expect(got.s2c.toString('latin1')).toBe(expected);
    expect(got.c2s.equals(orig.c2s)).toBe(true);
    const s2c = readdirSync(dir).find((f) => f.endsWith('.s2c'))!;
    expect(readFileSync(join(dir, s2c)).toString('latin1')).toBe(expected);
  });

  it('reports a bad config with file, line and path, and touches nothing', async () => {
    const cfg = join(tmp, 'bad.yaml');
    writeFileSync(cfg, 'rules:\n  - match: { port: 70000 }\n    agent: replace\n    replace: []\n');
    const out = join(tmp, 'never.pcap');
    const r = await tapgate('replay', join(FIX, 'http-small.pcap'), '--config', cfg, '-o', out);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/bad\.yaml:2:\d+: rules\[0\]\.match\.port/);
    expect(() => readFileSync(out)).toThrow();
  });

  it('reports a truncated capture with its offset, exits 2, and still writes what came before', async () => {
    const cut = join(tmp, 'cut.pcap');
    writeFileSync(cut, readFileSync(join(FIX, 'http-small.pcap')).subarray(0, 3000));
    const out = join(tmp, 'cut-out.pcap');
    const r = await tapgate('replay', cut, '-o', out);
    expect(r.code).toBe(2);
    expect(r.stdout).toMatch(/captureError: truncated .*offset \d+/);
    const b = await readPcapAll(out);
    expect(b.records.length).toBeGreaterThan(20);
  });

  it('refuses an unknown link type clearly', async () => {
    const r = await tapgate('replay', join(FIX, 'any-sll2.pcap'));
    expect(r.code).toBe(2);
    expect(r.stdout).toMatch(/unsupported link type 276/);
  });

  it('counts bad checksums unless --checksums ignore', async () => {
    const v = await tapgate('replay', join(FIX, 'http-dumpcap.pcapng'));
    expect(v.stdout).toMatch(/tcp-bad-checksum: \d+/);
    const i = await tapgate('replay', join(FIX, 'http-dumpcap.pcapng'), '--checksums', 'ignore');
    expect(i.stdout).not.toMatch(/tcp-bad-checksum/);
    expect(i.code).toBe(0);
  });
});
