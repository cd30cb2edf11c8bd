/** wire/ip.ts (addresses of either family) and wire/cidr.ts's blocks of either family. */
import { describe, expect, it } from 'vitest';
import { hostKey } from '../../src/cluster/rendezvous.js';
import fc from 'fast-check';
import { blockContains, blockWithin, formatIpBlock, nestedPairs, parseIpBlock, type IpBlock } from '../../src/wire/cidr.js';
import { finish, sum16 } from '../../src/wire/checksum.js';
import { endpointToString, ipFromJson, ipSrcAt, ipDstAt, ipToJson, ipToString, ipv6Key, ipv6KeyBytes, parseIp, pseudoHeaderSum } from '../../src/wire/ip.js';
import { parseIpv6 } from '../../src/wire/ipv6.js';
import { tcpFrame } from '../../src/wire/tcp-frame.js';

describe('IpAddr', () => {
  it('IPv4 is its number, IPv6 its key; text both ways in RFC 5952 form', () => {
    expect(parseIp('10.0.0.1')).toBe(0x0a000001);
    const k = parseIp('2001:DB8:0:0:0:0:0:1');
    expect(typeof k).toBe('string');
    expect((k as string).length).toBe(8);
    expect(ipToString(k!)).toBe('2001:db8::1');
    expect(ipToString(0xc0a80001)).toBe('192.168.0.1');
    expect(parseIp('2001:db8::1')).toBe(k); // equal keys compare with ===
    for (const bad of ['', '1.2.3', '2001:db8::1::2', '[2001:db8::1]', 'fe80::1%eth0', 'x']) expect(parseIp(bad), bad).toBeNull();
  });

  it('keys and bytes round-trip; a key is read in place from a packet', () => {
    const b = parseIpv6('fe80::1:2:3:4')!;
    const k = ipv6Key(b, 0);
    expect(ipv6KeyBytes(k)).toEqual(b);
    const f = tcpFrame({ src: parseIp('fd00::1')!, dst: parseIp('fd00::2')!, srcPort: 1, dstPort: 2, seq: 0, flags: 2 });
    expect(ipSrcAt(f, 14)).toBe(parseIp('fd00::1'));
    expect(ipDstAt(f, 14)).toBe(parseIp('fd00::2'));
    const f4 = tcpFrame({ src: 1, dst: 2, srcPort: 1, dstPort: 2, seq: 0, flags: 2 });
    expect([ipSrcAt(f4, 14), ipDstAt(f4, 14)]).toEqual([1, 2]);
  });

  it('JSON: IPv4 stays a number, IPv6 becomes text; keys with surrogate code units survive JSON text too', () => {
    const k = parseIp('d800:dfff::dc00')!;
    expect(ipToJson(k)).toBe('d800:dfff::dc00');
    expect(ipFromJson(ipToJson(k))).toBe(k);
    expect(ipFromJson(ipToJson(0x0a000001))).toBe(0x0a000001);
    // The cluster's raw tuples carry keys as they are: JSON escapes lone surrogates and parses them back.
    expect(JSON.parse(JSON.stringify({ a: k })).a).toBe(k);
    expect(new TextDecoder().decode(new TextEncoder().encode(JSON.stringify(k)))).toBe(JSON.stringify(k));
    for (const bad of [-1, 2 ** 32, 1.5, '10.0.0.1', 'zz::1', null, {}]) expect(ipFromJson(bad), String(bad)).toBeNull();
  });

  it('endpoints print with brackets for IPv6; host keys', () => {
    expect(endpointToString(0x0a000001, 80)).toBe('10.0.0.1:80');
    expect(endpointToString(parseIp('2001:db8::1')!, 80)).toBe('[2001:db8::1]:80');
    expect(hostKey(parseIp('2001:db8::1')!)).toBe(hostKey(parseIp('2001:db8:0::1')!));
    expect(hostKey(0x0a000001)).toBe(0x0a000001);
  });

  it('the pseudo-header of either family verifies what tcpFrame made', () => {
    for (const [src, dst] of [[0x0a000001, 0x0a000002], [parseIp('2001:db8::1')!, parseIp('2001:db8::2')!]] as const) {
      const f = tcpFrame({ src, dst, srcPort: 40000, dstPort: 80, seq: 7, flags: 0x18, payload: new Uint8Array([1, 2, 3]) });
      const l4 = typeof src === 'number' ? 34 : 54;
      expect(finish(sum16(f, l4, f.length, pseudoHeaderSum(f, 14, 6, f.length - l4)))).toBe(0);
    }
  });
});

describe('IpBlock', () => {
  const block = (s: string): IpBlock => {
    const b = parseIpBlock(s);
    if (typeof b === 'string') throw new Error(b);
    return b;
  };

  it('parses IPv4 CIDRs and IPv6 prefixes with precise errors', () => {
    expect(formatIpBlock(block('10.0.0.0/8'))).toBe('10.0.0.0/8');
    expect(formatIpBlock(block('2001:DB8::/32'))).toBe('2001:db8::/32');
    expect(formatIpBlock(block('2001:db8::1'))).toBe('2001:db8::1/128');
    expect(parseIpBlock('2001:db8::1/64')).toBe('2001:db8::1/64 has host bits set; did you mean 2001:db8::/64?');
    expect(parseIpBlock('2001:db8::/129')).toBe('"/129" is not a prefix length 0..128');
    expect(parseIpBlock('2001:db8::g/64')).toMatch(/is not an IPv6 address/);
    expect(parseIpBlock('10.0.0.1/33')).toBe('"/33" is not a prefix length 0..32');
    expect(parseIpBlock('nonsense')).toMatch(/is not an IPv4 address \(a\.b\.c\.d\) or an IPv6 address/);
  });

  it('contains addresses of its own family only, at every prefix length', () => {
    const a = parseIp('2001:db8:1234:5678::9')!;
    const bytes = ipv6KeyBytes(a as string);
    for (let p = 0; p <= 128; p++) {
      // The network of `a` at /p contains it; with bit p flipped (the first host bit) too, but
      // not with a network bit (p - 1) flipped.
      const net = bytes.map((b, i) => b & ((0xff << (8 - Math.max(0, Math.min(8, p - 8 * i)))) & 0xff));
      const blk = block(`${ipToString(ipv6Key(net, 0))}/${p}`);
      expect(blockContains(blk, a), `/${p}`).toBe(true);
      const flip = (bit: number) => {
        const c = bytes.slice();
        c[bit >>> 3]! ^= 0x80 >>> (bit & 7);
        return ipv6Key(c, 0);
      };
      if (p < 128) expect(blockContains(blk, flip(p)), `/${p} host bit`).toBe(true);
      if (p > 0) expect(blockContains(blk, flip(p - 1)), `/${p} network bit`).toBe(false);
    }
    expect(blockContains(block('2001:db8::/32'), a)).toBe(true);
    expect(blockContains(block('2001:db8:1234::/48'), a)).toBe(true);
    expect(blockContains(block('2001:db8:1235::/48'), a)).toBe(false);
    expect(blockContains(block('2001:db8:1234:5678::/63'), a)).toBe(true);
    expect(blockContains(block('2001:db8:1234:5679::/64'), a)).toBe(false);
    expect(blockContains(block('::/0'), a)).toBe(true);
    expect(blockContains(block('::/0'), 0x0a000001)).toBe(false);
    expect(blockContains(block('0.0.0.0/0'), a)).toBe(false);
    expect(blockContains(block('10.0.0.0/8'), 0x0a000001)).toBe(true);
    // Prefix lengths not on a group boundary: /33 splits the third group.
    expect(blockContains(block('2001:db8:8000::/33'), parseIp('2001:db8:8fff::1')!)).toBe(true);
    expect(blockContains(block('2001:db8:8000::/33'), parseIp('2001:db8:7fff::1')!)).toBe(false);
  });

  it('one block within another (shadowed rules), never across families', () => {
    expect(blockWithin(block('2001:db8:1::/48'), block('2001:db8::/32'))).toBe(true);
    expect(blockWithin(block('2001:db8::/32'), block('2001:db8:1::/48'))).toBe(false);
    expect(blockWithin(block('10.1.0.0/16'), block('10.0.0.0/8'))).toBe(true);
    expect(blockWithin(block('10.0.0.0/8'), block('::/0'))).toBe(false);
  });

  it('nested pairs: the same pairs as comparing every two blocks (fast-check, both families, equal blocks too); listed up to a bound, all counted', () => {
    const arb = fc.oneof(
      fc.tuple(fc.constantFrom(0x0a000000, 0x0a010000, 0xc0a80000), fc.integer({ min: 0, max: 0xffff }), fc.integer({ min: 8, max: 32 })).map(([net, low, len]) => block(`${ipv4(((net | low) & mask(len)) >>> 0)}/${len}`)),
      fc.tuple(fc.constantFrom('2001:db8:', 'fd00:1:'), fc.integer({ min: 0, max: 0xffff }), fc.integer({ min: 32, max: 48 })).map(([net, g, len]) => block(masked6(`${net}${g.toString(16)}::`, len))),
    );
    fc.assert(
      fc.property(fc.array(arb, { maxLength: 40 }), fc.integer({ min: 0, max: 20 }), (blocks, max) => {
        const all: [number, number][] = [];
        for (let i = 0; i < blocks.length; i++) for (let j = 0; j < i; j++) if (blockWithin(blocks[i]!, blocks[j]!) || blockWithin(blocks[j]!, blocks[i]!)) all.push([j, i]);
        const got = nestedPairs(blocks, max);
        expect(got.total).toBe(all.length);
        if (all.length <= max) expect(got.pairs).toEqual(all);
        else {
          expect(got.pairs).toHaveLength(max);
          for (const p of got.pairs) expect(all).toContainEqual(p);
        }
      }),
      { seed: 0x4632, numRuns: 500 },
    );
  });
});

const ipv4 = (a: number): string => [a >>> 24, (a >>> 16) & 0xff, (a >>> 8) & 0xff, a & 0xff].join('.');
const mask = (len: number): number => (len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0);
/** `a/len` with the host bits of `a` cleared. */
function masked6(a: string, len: number): string {
  const b = parseIpv6(a)!;
  for (let i = 0; i < 16; i++) b[i]! &= (0xff << (8 - Math.max(0, Math.min(8, len - 8 * i)))) & 0xff;
  return `${formatIpBlock({ family: 6, bytes: b, prefix: len } as IpBlock)}`;
}
