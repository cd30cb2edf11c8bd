/**
 * `tapgate replay` of TCP over IPv6 (the built CLI): captures of the IPv4 fixtures carried over
 * IPv6 — plain, behind a Destination Options header, and with an 802.1Q tag — give the same
 * streams as tshark follows, named in RFC 5952 text; a replace rule rewrites them exactly as it
 * does over IPv4.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PcapWriter, readPcapAll } from '../../src/phy/pcap.js';
import { finish, sum16 } from '../../src/wire/checksum.js';
import { decodeFrame } from '../../src/wire/frame.js';
import { IP_PROTO_TCP } from '../../src/wire/ipv4.js';
import { IP_PROTO_DSTOPTS, ipv6PseudoHeaderSum } from '../../src/wire/ipv6.js';
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
 * The Ethernet capture `src` with every IPv4 TCP segment carried over IPv6 instead: address
 * a.b.c.d becomes 2001:db8::a.b.c.d's groups (2001:db8::ab:cd in hex), the TCP segment kept byte
 * for byte with its checksum recomputed over the IPv6 pseudo-header.
 */
async function toIpv6(src: string, dst: string, o: Carry = {}): Promise<void> {
  const { records } = await readPcapAll(src);
  const w = await PcapWriter.open(dst, { link: 1 });
  for (const r of records) {
    const d = decodeFrame(r.data, { link: 'ethernet', verifyChecksums: false });
    if (d.kind !== 'tcp' || d.ip === null) continue;
    const seg = r.data.subarray(d.l4Off, d.ipEnd);
    const ext = o.ext === true ? new Uint8Array([IP_PROTO_TCP, 0, 1, 4, 0, 0, 0, 0]) : new Uint8Array(0);
    const l2 = o.vlan === true ? 18 : 14;
    const out = new Uint8Array(l2 + 40 + ext.length + seg.length);
    out.set(r.data.subarray(0, 12), 0);
    if (o.vlan === true) out.set([0x81, 0x00, 0x00, 0x2a], 12);
    out.set([0x86, 0xdd], l2 - 2);
    const ip = l2;
    out[ip] = 0x60;
    const plen = ext.length + seg.length;
    out[ip + 4] = plen >>> 8;
    out[ip + 5] = plen & 0xff;
    out[ip + 6] = ext.length > 0 ? IP_PROTO_DSTOPTS : IP_PROTO_TCP;
    out[ip + 7] = 64;
    for (const [off, a] of [[ip + 8, d.ip.src], [ip + 24, d.ip.dst]] as const) {
      out.set([0x20, 0x01, 0x0d, 0xb8], off);
      out.set([a >>> 24, (a >>> 16) & 0xff, (a >>> 8) & 0xff, a & 0xff], off + 12);
    }
    out.set(ext, ip + 40);
    const l4 = ip + 40 + ext.length;
    out.set(seg, l4);
    out[l4 + 16] = 0;
    out[l4 + 17] = 0;
    const c = finish(sum16(out, l4, out.length, ipv6PseudoHeaderSum(out, ip + 8, ip + 24, IP_PROTO_TCP, seg.length)));
    out[l4 + 16] = c >>> 8;
    out[l4 + 17] = c & 0xff;
    await w.write({ data: out, tsNs: r.tsNs });
  }
  await w.close();
}

/** tshark's "[2001:db8::a00:1]:80" as tapgate names files: "2001:db8::a00:1.80". */
const fileName = (ep: string) => ep.replace(/^\[(.*)\]:(\d+)$/, '$1.$2');

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
