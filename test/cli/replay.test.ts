/**
 * `tapgate replay` end to end (the built CLI, as a user runs it): identity, --streams against
 * tshark, rewriting with --config, and bad input answered with a clear message and exit code;
 * everyday captures (cooked and loopback links, FCS trailers, TSO lengths, checksum offload);
 * `tapgate check`.
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PcapWriter, readPcapAll } from '../../src/phy/pcap.js';
import { crc32 } from '../../src/wire/crc32.js';
import { decodeFrame } from '../../src/wire/frame.js';
import { requireTool, tshark, tsharkFollowTcp, tsharkStreamCount } from '../helpers/tshark.js';

const run = promisify(execFile);
const ROOT = join(import.meta.dirname, '../..');
const FIX = join(ROOT, 'test/fixtures');
const tmp = mkdtempSync(join(tmpdir(), 'tapgate-replay-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
beforeAll(() => requireTool('tshark'));

async function tapgate(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return runWith({ TAPGATE_LOG: 'warn' }, args);
}

async function runWith(env: Record<string, string>, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await run(process.execPath, [join(ROOT, 'bin/tapgate.js'), ...args], { env: { ...process.env, ...env } });
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
    const path = join(tmp, 'wifi.pcap');
    await writeCapture(path, 105, [new Uint8Array(40)]);
    const r = await tapgate('replay', path);
    expect(r.code).toBe(2);
    expect(r.stdout).toMatch(/unsupported link type 105/);
    expect(r.stderr).toMatch(/capture error: .*unsupported link type 105/);
  });

  it('--checksums verify counts bad checksums, ignore accepts them, auto (default) fills in an offloading host\'s', async () => {
    const v = await tapgate('replay', join(FIX, 'http-dumpcap.pcapng'), '--checksums', 'verify');
    expect(v.stdout).toMatch(/tcp-bad-checksum: \d+/);
    expect(v.stderr).toMatch(/dropped \(tcp-bad-checksum \d+\)/);
    const i = await tapgate('replay', join(FIX, 'http-dumpcap.pcapng'), '--checksums', 'ignore');
    expect(i.stdout).not.toMatch(/tcp-bad-checksum/);
    expect(i.code).toBe(0);
    const out = join(tmp, 'dumpcap-auto.pcap');
    const a = await tapgate('replay', join(FIX, 'http-dumpcap.pcapng'), '-o', out, '--json');
    expect(a.code).toBe(0);
    const sum = JSON.parse(a.stdout) as { capture: { offloadChecksumsFilled: number; offloadingHosts: string }; gateway: { malformed: Record<string, number> } };
    expect(sum.gateway.malformed['tcp-bad-checksum'] ?? 0).toBe(0);
    expect(sum.capture.offloadChecksumsFilled).toBeGreaterThan(0);
    expect(a.stderr).toMatch(/checksum offload/);
    expect(a.stderr).toContain(sum.capture.offloadingHosts.split(' ')[0]!);
    // What was filled in is right: the released frames verify.
    for (const rec of (await readPcapAll(out)).records) {
      expect(decodeFrame(rec.data, { link: 'ethernet', verifyChecksums: true }).kind).not.toBe('error');
    }
  });
});

/** A classic pcap of `frames` with link type `linkType`. */
async function writeCapture(path: string, linkType: number, frames: Uint8Array[]): Promise<void> {
  const w = await PcapWriter.open(path, { link: linkType });
  let t = 1_700_000_000_000_000_000n;
  for (const f of frames) await w.write({ data: f, tsNs: (t += 1_000_000n) });
  await w.close();
}

/** The connections' streams `--streams` writes into dir, by file name. */
function streamsOf(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const f of readdirSync(dir).sort()) out[f] = readFileSync(join(dir, f)).toString('hex');
  return out;
}

describe('tapgate replay of everyday captures: other link layers, FCS, TSO', () => {
  const src = join(FIX, 'http-small.pcap');
  let frames: Uint8Array[] = [];
  let want: Record<string, string> = {};
  beforeAll(async () => {
    frames = (await readPcapAll(src)).records.map((r) => new Uint8Array(r.data));
    const dir = join(tmp, 'everyday-ref');
    expect((await tapgate('replay', src, '--streams', dir)).code).toBe(0);
    want = streamsOf(dir);
    expect(Object.keys(want).length).toBeGreaterThan(0);
  });

  const cases: Array<[string, number, (eth: Uint8Array) => Uint8Array]> = [
    // Linux cooked v1: packet type, ARPHRD_ETHER, address length 6, address (8), protocol.
    ['LINUX_SLL', 113, (e) => Buffer.concat([Buffer.from([0, 0, 0, 1, 0, 6, ...e.subarray(6, 12), 0, 0]), e.subarray(12)])],
    // Linux cooked v2: protocol, reserved, interface index, ARPHRD_ETHER, packet type, address length, address (8).
    ['LINUX_SLL2', 276, (e) => Buffer.concat([e.subarray(12, 14), Buffer.from([0, 0, 0, 0, 0, 2, 0, 1, 0, 6, ...e.subarray(6, 12), 0, 0]), e.subarray(14)])],
    ['NULL (little-endian host)', 0, (e) => Buffer.concat([Buffer.from([2, 0, 0, 0]), e.subarray(14)])],
    ['LOOP', 108, (e) => Buffer.concat([Buffer.from([0, 0, 0, 2]), e.subarray(14)])],
  ];
  for (const [name, lt, conv] of cases) {
    it(`${name}: replayed as raw IP, --streams as from the Ethernet capture`, async () => {
      const path = join(tmp, `everyday-${lt}.pcap`);
      const arp = Buffer.concat([Buffer.alloc(12), Buffer.from([0x08, 0x06]), Buffer.alloc(28)]); // not IP: not replayed
      await writeCapture(path, lt, [...frames.map(conv), ...(lt === 113 ? [conv(arp)] : [])]);
      const dir = join(tmp, `everyday-${lt}-streams`);
      const out = join(tmp, `everyday-${lt}-out.pcap`);
      const r = await tapgate('replay', path, '--streams', dir, '-o', out, '--json');
      expect(r.code, r.stderr).toBe(0);
      expect(streamsOf(dir)).toEqual(want);
      const sum = JSON.parse(r.stdout) as { capture: { linkConverted: number; linkNotIp: number } };
      expect(sum.capture.linkConverted).toBe(frames.length);
      expect(sum.capture.linkNotIp).toBe(lt === 113 ? 1 : 0);
      expect((await readPcapAll(out)).records.every((x) => x.link === 'raw-ipv4')).toBe(true);
    });
  }

  it('any-sll2.pcap (tcpdump -i any: LINUX_SLL2, loopback checksums): --streams as tshark follows it', async () => {
    const path = join(FIX, 'any-sll2.pcap');
    const dir = join(tmp, 'any-sll2-streams');
    const r = await tapgate('replay', path, '--streams', dir, '--json');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/, 0 dropped/);
    const sum = JSON.parse(r.stdout) as { capture: { linkConverted: number; offloadingHosts: string } };
    expect(sum.capture.linkConverted).toBe(11);
    expect(sum.capture.offloadingHosts).toBe('127.0.0.1'); // loopback: checksums never computed
    const t = await tsharkFollowTcp(path, 0);
    const base = `${t.client.replace(':', '.')}-${t.server.replace(':', '.')}`;
    expect(readFileSync(join(dir, `${base}.c2s`)).equals(t.c2s)).toBe(true);
    expect(readFileSync(join(dir, `${base}.s2c`)).equals(t.s2c)).toBe(true);
    expect(t.s2c.length).toBeGreaterThan(0);
  });

  it('Ethernet with an FCS trailer: stripped when it is the CRC-32, counted', async () => {
    const path = join(tmp, 'everyday-fcs.pcap');
    await writeCapture(path, 1, frames.map((f) => {
      const b = Buffer.alloc(Math.max(f.length, 60) + 4);
      b.set(f);
      b.writeUInt32LE(crc32(b, 0, b.length - 4), b.length - 4);
      return b;
    }));
    const dir = join(tmp, 'everyday-fcs-streams');
    const r = await tapgate('replay', path, '--streams', dir, '--json');
    expect(r.code).toBe(0);
    expect(streamsOf(dir)).toEqual(want);
    expect((JSON.parse(r.stdout) as { capture: { fcsStripped: number } }).capture.fcsStripped).toBe(frames.length);
    expect(r.stderr).toMatch(/, 0 dropped/);
  });

  it('Ethernet with 4 zero bytes where the FCS goes (capture drivers that keep its room): stripped, counted', async () => {
    const path = join(tmp, 'everyday-fcs0.pcap');
    await writeCapture(path, 1, frames.map((f) => Buffer.concat([f, Buffer.alloc(Math.max(0, 60 - f.length) + 4)])));
    const dir = join(tmp, 'everyday-fcs0-streams');
    const r = await tapgate('replay', path, '--streams', dir, '--json');
    expect(r.code).toBe(0);
    expect(streamsOf(dir)).toEqual(want);
    expect((JSON.parse(r.stdout) as { capture: { fcsZeroStripped: number } }).capture.fcsZeroStripped).toBe(frames.length);
  });

  it('public captures (TAPGATE_PUBLIC_CAPTURES: chrissanders/packets tcp_retransmissions, mail_sender_attachment): --streams as tshark follows them', async (ctx) => {
    const pub = process.env['TAPGATE_PUBLIC_CAPTURES'];
    const names = ['tcp_retransmissions.pcapng', 'mail_sender_attachment.pcapng'].filter((n) => pub !== undefined && existsSync(join(pub, n)));
    if (names.length === 0) ctx.skip();
    for (const n of names) {
      const path = join(pub!, n);
      const dir = join(tmp, `pub-${n}`);
      const r = await tapgate('replay', path, '--streams', dir);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr, n).toMatch(/, 0 dropped/);
      const files = readdirSync(dir);
      const count = await tsharkStreamCount(path);
      expect(files.length, n).toBe(2 * count);
      // Both have one connection; tcp_retransmissions starts mid-stream (no SYN): compare the
      // bytes of both directions whichever way round.
      const t = (await tshark(['-r', path, '-q', '-z', 'follow,tcp,raw,0'])).split('\n').filter((l) => /^\t?[0-9a-f]+$/.test(l));
      const a = Buffer.from(t.filter((l) => !l.startsWith('\t')).join(''), 'hex');
      const b = Buffer.from(t.filter((l) => l.startsWith('\t')).map((l) => l.slice(1)).join(''), 'hex');
      const got = files.map((f) => readFileSync(join(dir, f)).toString('hex')).sort();
      expect(got, n).toEqual([a.toString('hex'), b.toString('hex')].sort());
    }
  });

  it('IPv4 total length 0 (TSO on the capturing host): the real length, counted', async () => {
    const path = join(tmp, 'everyday-tso.pcap');
    let n = 0;
    await writeCapture(path, 1, frames.map((f) => {
      const b = Buffer.from(f);
      if (b.length > 54 + 100) {
        b[16] = b[17] = 0;
        n++;
      }
      return b;
    }));
    expect(n).toBeGreaterThan(0);
    const dir = join(tmp, 'everyday-tso-streams');
    const r = await tapgate('replay', path, '--streams', dir, '--json');
    expect(r.code).toBe(0);
    expect(streamsOf(dir)).toEqual(want);
    expect((JSON.parse(r.stdout) as { capture: { tsoLengthFixed: number } }).capture.tsoLengthFixed).toBe(n);
  });
});

describe('tapgate: user errors end in one line on stderr and an exit code, never a stack trace', () => {
  const cases: Array<[string, string[], number, RegExp, Record<string, string>?]> = [
    ['a missing capture', ['replay', '/nonexistent/x.pcap'], 2, /capture \/nonexistent\/x\.pcap: no such file or directory/],
    ['a directory as the capture', ['replay', '/tmp'], 2, /capture \/tmp: is a directory/],
    ['-o into a missing directory', ['replay', join(FIX, 'http-small.pcap'), '-o', '/nonexistent/dir/out.pcap'], 2, /--out \/nonexistent\/dir\/out\.pcap: no such file or directory/],
    ['--streams onto a file', ['replay', join(FIX, 'http-small.pcap'), '--streams', join(FIX, 'http-small.pcap')], 2, /--streams .*http-small\.pcap: exists and is not a directory/],
    ['a bad TAPGATE_LOG', ['replay', join(FIX, 'http-small.pcap')], 1, /log level 'loud' .*expected one of fatal, error/, { TAPGATE_LOG: 'loud' }],
    ['an unknown option', ['replay', join(FIX, 'http-small.pcap'), '--bogus'], 1, /Unknown argument: bogus/],
    ['check of a missing config', ['check', '/nonexistent.yaml'], 1, /\/nonexistent\.yaml: cannot read/],
    // Found by a review (2026-12-07): these ended in exit 70, a silent wrong result, or a hang.
    ['an option given twice', ['replay', join(FIX, 'http-small.pcap'), '-o', join(tmp, 'a.pcap'), '-o', join(tmp, 'b.pcap')], 1, /--out is given more than once/],
    ['an empty path', ['replay', join(FIX, 'http-small.pcap'), '--config', ''], 1, /--config: expected a path, got an empty value/],
    ['-o onto the input capture', ['replay', join(tmp, 'self.pcap'), '-o', join(tmp, 'self.pcap')], 1, /--out .*self\.pcap is the input capture/],
    ['--events onto a full disk', ['replay', join(FIX, 'http-small.pcap'), '--events', '/dev/full'], 2, /event log write failed/],
    ['check of a device that never ends', ['check', '/dev/zero'], 1, /\/dev\/zero: cannot read: larger than 16 MiB/],
  ];
  beforeAll(() => writeFileSync(join(tmp, 'self.pcap'), readFileSync(join(FIX, 'http-small.pcap'))));
  for (const [what, args, code, msg, env] of cases) {
    it(what, async () => {
      const r = await runWith({ TAPGATE_LOG: 'warn', ...env }, args);
      expect(r.code).toBe(code);
      expect(r.stderr).toMatch(msg);
      expect(r.stderr).not.toMatch(/\n\s+at /);
    });
  }

  it('the input capture is left whole when -o names it', () => {
    expect(readFileSync(join(tmp, 'self.pcap')).equals(readFileSync(join(FIX, 'http-small.pcap')))).toBe(true);
  });

  it('--help names the exit codes', async () => {
    const r = await tapgate('--help');
    expect(r.code).toBe(0);
    expect(r.stdout.replace(/\s+/g, ' ')).toMatch(/Exit codes: 0 ok; 1 bad arguments or config; 2 an input, output or device problem .* 70 internal error/);
  });
});

describe('tapgate replay --events', () => {
  it('an HTTP rewrite: one flow record per connection, stamped with the capture\'s time, bytes before and after', async () => {
    const cfg = join(tmp, 'ev.yaml');
    writeFileSync(cfg, 'rules:\n  - name: web\n    match: { port: 8000 }\n    agent: http\n    http:\n      response:\n        replace: [ { find: "quick brown fox", with: "fox" } ]\n');
    const ev = join(tmp, 'events.jsonl');
    const r = await tapgate('replay', join(FIX, 'http-loss.pcap'), '--config', cfg, '--events', ev, '--json');
    expect(r.code, r.stderr).toBe(0);
    const lines = readFileSync(ev, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    const flows = lines.filter((l) => l['event'] === 'flow');
    expect(flows).toHaveLength(await tsharkStreamCount(join(FIX, 'http-loss.pcap')));
    const f = flows[0]! as { ts: string; rule: string; agent: string; end: string; server: string; c2s: { bytes: number }; s2c: { bytes: number; bytesOut: number } };
    expect(f).toMatchObject({ rule: 'web', agent: 'http', server: expect.stringMatching(/:8000$/) });
    const first = (await readPcapAll(join(FIX, 'http-loss.pcap'))).records[0]!;
    const t = new Date(f.ts).getTime();
    expect(Math.abs(t - Number(first.tsNs / 1_000_000n))).toBeLessThan(60_000); // the capture's time, not now
    const orig = await tsharkFollowTcp(join(FIX, 'http-loss.pcap'), 0);
    const hits = orig.s2c.toString('latin1').split('quick brown fox').length - 1;
    expect(hits).toBeGreaterThan(0);
    // What the server sent, counted as it came in (retransmissions included) and as it went out.
    expect(f.s2c.bytes).toBeGreaterThanOrEqual(orig.s2c.length);
    expect(f.s2c.bytesOut).toBeLessThan(f.s2c.bytes);
    expect((JSON.parse(r.stdout) as { events: { written: number; dropped: number } }).events).toEqual({ written: lines.length, dropped: 0 });
    // Each response body that went through the rules: an http event with its matches.
    const http = lines.filter((l) => l['event'] === 'http');
    expect(http.length).toBeGreaterThan(0);
    expect(http[0]).toMatchObject({ dir: 's2c', message: '200', framing: expect.stringMatching(/^(chunked|fixlen|close|toclose)$/), agent: 'http', rule: 'web' });
    expect(http.reduce((n, l) => n + (l['matches'] as number), 0)).toBe(hits);
  });
});

describe('tapgate check', () => {
  it('a good config: exit 0, the rules as understood; a shadowed rule is warned about', async () => {
    const cfg = join(tmp, 'check.yaml');
    writeFileSync(cfg, [
      'rules:',
      '  - name: web',
      '    match: { port: [80, 8000-8099] }',
      '    agent: http',
      '  - name: dead',
      '    match: { serverPort: 8080, clientAddress: 10.0.0.0/8 }',
      '    agent: replace',
      '    replace: [ { find: a, with: b } ]',
      '  - name: alive',
      '    match: { serverPort: 21 }',
      '    agent: ftp',
      '',
    ].join('\n'));
    const r = await tapgate('check', cfg);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/3 rules/);
    expect(r.stdout).toMatch(/rule 1 "web" \(line 2\): port 80,8000-8099 → agent http/);
    expect(r.stdout).toMatch(/rule 3 "alive" \(line 9\): server port 21 → agent ftp/);
    expect(r.stderr).toMatch(/warning: .*rule 2 "dead" \(line 5\) can never match: rule 1 "web" \(line 2\) takes every connection it matches/);
    expect(r.stderr).not.toMatch(/rule 3/);
  });

  it('a bad config: exit 1, every error with file:line', async () => {
    const cfg = join(tmp, 'check-bad.yaml');
    writeFileSync(cfg, 'rules:\n  - match: { port: 70000 }\n    agent: replace\n    replace: []\n  - agent: nope\n');
    const r = await tapgate('check', cfg);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/check-bad\.yaml:2:\d+: rules\[0\]\.match\.port/);
    expect(r.stderr).toMatch(/check-bad\.yaml:5:\d+: rules\[1\]\.agent/);
    expect(r.stdout).toBe('');
  });
});
