/**
 * `tapgate replay` of TCP over IPv6 (the built CLI): captures of the IPv4 fixtures carried over
 * IPv6 — plain, behind a Destination Options header, and with an 802.1Q tag — give the same
 * streams as tshark follows, named in RFC 5952 text; a replace rule rewrites them exactly as it
 * does over IPv4.
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PcapWriter, readPcapAll } from '../../src/phy/pcap.js';
import { toIpv6Frame } from '../../src/bench/fuzz.js';
import { requireTool, tsharkFollowTcp, tsharkStreamCount } from '../helpers/tshark.js';

const run = promisify(execFile);
const ROOT = join(import.meta.dirname, '../..');
const FIX = join(ROOT, 'test/fixtures');
const tmp = mkdtempSync(join(tmpdir(), 'tapgate-replay6-'));
afterAll(() => (process.env.KEEP ? undefined : rmSync(tmp, { recursive: true, force: true })));
beforeAll(() => requireTool('tshark'));

async function tapgate(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await run(process.execPath, [join(ROOT, 'bin/tapgate.js'), ...args], { env: { ...process.env, TAPGATE_LOG: 'warn' } });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    return e as { code: number; stdout: string; stderr: string };
  }
}

interface Carry {
  /** Destination Options header (PadN) between the fixed header and TCP. */
  ext?: boolean;
  /** An 802.1Q tag in front of the IPv6 EtherType. */
  vlan?: boolean;
}

/**
 * The Ethernet capture `src` with every IPv4 TCP segment carried over IPv6 instead
 * (src/bench/fuzz.ts toIpv6Frame: 2001:db8::<the IPv4 address>, the segment kept, its checksum
 * recomputed), optionally behind a Destination Options header or with an 802.1Q tag.
 */
async function toIpv6(src: string, dst: string, o: Carry = {}): Promise<void> {
  const { records } = await readPcapAll(src);
  const w = await PcapWriter.open(dst, { link: 1 });
  for (const r of records) {
    const f = toIpv6Frame(new Uint8Array(r.data), 'ethernet', o.ext === true);
    if (f === null) continue;
    const out = o.vlan === true ? new Uint8Array([...f.subarray(0, 12), 0x81, 0x00, 0x00, 0x2a, ...f.subarray(12)]) : f;
    await w.write({ data: out, tsNs: r.tsNs });
  }
  await w.close();
}

/** tshark's "[2001:db8::a00:1]:80" (or "10.0.0.1:80") as tapgate names files: "2001:db8::a00:1.80". */
const fileName = (ep: string) => (ep.startsWith('[') ? ep.replace(/^\[(.*)\]:(\d+)$/, '$1.$2') : ep.replace(/:(\d+)$/, '.$1'));

describe('tapgate replay over IPv6', () => {
  for (const [name, carry] of [['plain', {}], ['Destination Options header', { ext: true }], ['802.1Q tag', { vlan: true }]] as const) {
    it(`--streams equals tshark's follow of every connection (${name})`, async () => {
      const cap = join(tmp, `http-small-v6-${name.replace(/\W/g, '')}.pcap`);
      await toIpv6(join(FIX, 'http-small.pcap'), cap, carry);
      const dir = join(tmp, `streams-${name.replace(/\W/g, '')}`);
      const r = await tapgate('replay', cap, '-o', join(tmp, 'out6.pcap'), '--streams', dir);
      expect(r.code, r.stderr).toBe(0);
      const n = await tsharkStreamCount(cap);
      expect(n).toBeGreaterThan(0);
      const files = readdirSync(dir).sort();
      expect(files.length).toBe(2 * n);
      for (let i = 0; i < n; i++) {
        const t = await tsharkFollowTcp(cap, i);
        const base = `${fileName(t.client)}-${fileName(t.server)}`;
        expect(base).toMatch(/^2001:db8::[0-9a-f:]+\.\d+-2001:db8::[0-9a-f:]+\.\d+$/);
        // A 4-tuple used twice is named base, base.1, ...: one of them must be tshark's stream.
        const stems = files.filter((f) => f.startsWith(base) && f.endsWith('.c2s')).map((f) => f.slice(0, -4));
        const match = stems.some((st) => readFileSync(join(dir, `${st}.c2s`)).equals(t.c2s) && readFileSync(join(dir, `${st}.s2c`)).equals(t.s2c));
        expect(match, `stream ${i} (${base})`).toBe(true);
      }
    });
  }

  it('--checksums auto fills in an IPv6 host\'s offloaded checksums; verify drops them', async () => {
    const cap = join(tmp, 'offload6.pcap');
    const { records } = await readPcapAll(join(FIX, 'http-small.pcap'));
    const w = await PcapWriter.open(cap, { link: 1 });
    let zeroed = 0;
    for (const r of records) {
      const f = toIpv6Frame(new Uint8Array(r.data), 'ethernet', false);
      if (f === null) continue;
      // The server (the capturing host, offloading): its checksums are whatever the NIC would fill in.
      if (f[14 + 8 + 12] === 0x0a && f[14 + 8 + 13] === 0xc7 && f[14 + 8 + 14] === 0 && f[14 + 8 + 15] === 1) {
        f[14 + 40 + 16] = 0;
        f[14 + 40 + 17] = 0;
        zeroed++;
      }
      await w.write({ data: f, tsNs: r.tsNs });
    }
    await w.close();
    expect(zeroed).toBeGreaterThan(2);
    const auto = await tapgate('replay', cap, '-o', join(tmp, 'off-out.pcap'));
    expect(auto.code, auto.stderr).toBe(0);
    expect(auto.stderr).toMatch(/, 0 dropped/);
    expect(auto.stderr).toContain('2001:db8::ac7:1');
    const verify = await tapgate('replay', cap, '-o', join(tmp, 'off-out.pcap'), '--checksums', 'verify');
    expect(verify.stderr).toMatch(new RegExp(`${zeroed} dropped \\(tcp-bad-checksum ${zeroed}\\)`));
  });

  it('public captures (TAPGATE_PUBLIC_CAPTURES): chrissanders http_ip4and6, PcapPlusPlus four_ipv6_http_streams / one_ipv6_http_stream, zeek ftp/ipv6*: --streams as tshark follows them; zeek chksums: IPv6 TCP checksums verified', async (ctx) => {
    const pub = process.env['TAPGATE_PUBLIC_CAPTURES'];
    // zeek's testing/btest/Traces/ftp/ipv6*.pcap are saved as ftp-ipv6*.pcap.
    const caps = ['http_ip4and6.pcapng', 'four_ipv6_http_streams.pcap', 'one_ipv6_http_stream.pcap', 'ftp-ipv6.pcap', 'ftp-ipv6-multiline-reply.pcap', 'ftp-ipv6-retr-samba.pcap', 'ftp-ipv6-violation.pcap']
      .filter((n) => pub !== undefined && existsSync(join(pub, n)));
    const sums = ['ip6-tcp-good-chksum.pcap', 'ip6-tcp-bad-chksum.pcap', 'ip6-hoa-tcp-good-chksum.pcap', 'ip6-hoa-tcp-bad-chksum.pcap', 'ip6-route0-tcp-good-chksum.pcap'].filter((n) => pub !== undefined && existsSync(join(pub, n)));
    if (caps.length + sums.length === 0) ctx.skip();
    for (const n of caps) {
      const path = join(pub!, n);
      const dir = join(tmp, `pub-${n}`);
      const r = await tapgate('replay', path, '-o', join(tmp, 'pub-out.pcap'), '--streams', dir);
      expect(r.code, r.stderr).toBe(0);
      const files = readdirSync(dir);
      const count = await tsharkStreamCount(path);
      expect(files.length, n).toBe(2 * count);
      for (let i = 0; i < count; i++) {
        const t = await tsharkFollowTcp(path, i);
        const base = `${fileName(t.client)}-${fileName(t.server)}`;
        const stems = files.filter((f) => f.startsWith(base) && f.endsWith('.c2s')).map((f) => f.slice(0, -4));
        expect(stems.some((st) => readFileSync(join(dir, `${st}.c2s`)).equals(t.c2s) && readFileSync(join(dir, `${st}.s2c`)).equals(t.s2c)), `${n} stream ${i} (${base})`).toBe(true);
      }
    }
    for (const n of sums) {
      const r = await tapgate('replay', join(pub!, n), '-o', join(tmp, 'sum-out.pcap'), '--checksums', 'verify');
      expect(r.code, r.stderr).toBe(0);
      const want = n.includes('route0') ? /0 frames written, 1 dropped \(ipv6-rh0 1\)/ : n.includes('bad') ? /0 frames written, 1 dropped \(tcp-bad-checksum 1\)/ : /1 frames written, 0 dropped/;
      expect(r.stderr, n).toMatch(want);
    }
  });

  it('rewrites with --config as over IPv4 (loss and holes in the capture; a rule on an IPv6 prefix)', async () => {
    const cap = join(tmp, 'loss-holes-v6.pcap');
    await toIpv6(join(FIX, 'http-loss-holes.pcap'), cap, { ext: true });
    const cfg = join(tmp, 'rw6.yaml');
    writeFileSync(cfg, 'rules:\n  - match: { port: 8000, address: "2001:db8::/32" }\n    direction: s2c\n    agent: replace\n    replace:\n      - { find: "brown fox", with: "fox" }\n      - { find: "lazy", with: "very energetic" }\n');
    const out = join(tmp, 'rw6.pcap');
    const r = await tapgate('replay', cap, '--config', cfg, '-o', out, '--json');
    expect(r.code, r.stderr).toBe(0);
    const orig = await tsharkFollowTcp(cap, 0);
    const got = await tsharkFollowTcp(out, 0);
    const expected = orig.s2c.toString('latin1').split('brown fox').join('fox').split('lazy').join('very energetic');
    expect(expected).not.toBe(orig.s2c.toString('latin1'));
    expect(got.s2c.toString('latin1')).toBe(expected);
    expect(got.c2s.equals(orig.c2s)).toBe(true);
  });
});
