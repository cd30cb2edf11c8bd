/** NAT state: 1:1 both ways, masquerade with deterministic port allocation, exhaustion, expiry, expectations, snapshot round trips. */
import { describe, expect, it } from 'vitest';
import { parseCidr, parseIpBlock, type Cidr, type Cidr6 } from '../../src/wire/cidr.js';
import { parseIpv4 } from '../../src/wire/ipv4.js';
import { createFtp, type FtpExpectation } from '../../src/agent/ftp.js';
import type { AgentContext, Direction } from '../../src/agent/types.js';
import { natFtpHooks } from '../../src/nat/ftp-hooks.js';
import { MAX_EXPECTATIONS_PER_TAG, NatTable, invert, natConfig, natConfigProblems, type NatPacket, type Tuple } from '../../src/nat/nat.js';

const ip = (s: string): number => parseIpv4(s)!;
const cidr = (s: string): Cidr => parseCidr(s) as Cidr;
const pkt = (from: 0 | 1, proto: Tuple['proto'], src: string, sport: number, dst: string, dport: number, tcpFlags?: number): NatPacket => {
  const p: NatPacket = { from, proto, src: ip(src), sport, dst: ip(dst), dport };
  if (tcpFlags !== undefined) p.tcpFlags = tcpFlags;
  return p;
};
const tup = (proto: Tuple['proto'], src: string, sport: number, dst: string, dport: number): Tuple => ({ proto, src: ip(src), sport, dst: ip(dst), dport });

const MASQ = (ports = { lo: 5000, hi: 5003 }, extra: Partial<Parameters<typeof natConfig>[0]> = {}) =>
  natConfig({
    masquerade: [{ side: 0, sources: [cidr('10.200.0.0/24')], address: ip('192.0.2.1'), ports, icmpIds: { lo: 100, hi: 101 } }],
    ...extra,
  });

describe('nat: 1:1 mappings (stateless, both directions)', () => {
  const nat = new NatTable(
    natConfig({
      oneToOne: [
        { side: 0, real: cidr('10.200.0.0/24'), mapped: cidr('198.51.100.0/24') }, // clients: source NAT
        { side: 1, real: cidr('10.201.0.5'), mapped: cidr('203.0.113.5') }, // published server: destination NAT
      ],
    }),
  );

  it('source NAT for clients keeps host bits; replies are mapped back by destination', () => {
    expect(nat.translate(pkt(0, 'tcp', '10.200.0.1', 40000, '8.8.8.8', 80), 0)).toEqual({
      kind: 'translate',
      tuple: tup('tcp', '198.51.100.1', 40000, '8.8.8.8', 80),
    });
    expect(nat.translate(pkt(1, 'tcp', '8.8.8.8', 80, '198.51.100.1', 40000), 0)).toEqual({
      kind: 'translate',
      tuple: tup('tcp', '8.8.8.8', 80, '10.200.0.1', 40000),
    });
  });

  it('destination NAT for a published server, and both at once (twice NAT)', () => {
    const v = nat.translate(pkt(0, 'tcp', '10.200.0.7', 1234, '203.0.113.5', 21), 0);
    expect(v).toEqual({ kind: 'translate', tuple: tup('tcp', '198.51.100.7', 1234, '10.201.0.5', 21) });
    const r = nat.translate(pkt(1, 'tcp', '10.201.0.5', 21, '198.51.100.7', 1234), 0);
    expect(r).toEqual({ kind: 'translate', tuple: tup('tcp', '203.0.113.5', 21, '10.200.0.7', 1234) });
  });

  it('unrelated traffic is not translated; a mapped address arriving from its own side is not either', () => {
    expect(nat.translate(pkt(0, 'udp', '10.9.9.9', 53, '8.8.8.8', 53), 0)).toEqual({ kind: 'none' });
    expect(nat.translate(pkt(0, 'tcp', '10.9.9.9', 1, '198.51.100.1', 2), 0)).toEqual({ kind: 'none' });
    expect(nat.size.entries).toBe(0);
    expect(nat.counters.oneToOne).toBe(4);
  });

  it('refuses mappings of different sizes and bad ranges', () => {
    expect(natConfigProblems(natConfig({ oneToOne: [{ side: 0, real: cidr('10.0.0.0/24'), mapped: cidr('10.1.0.0/16') }] }))[0]).toMatch(/differ in size/);
    expect(() => new NatTable(MASQ({ lo: 10, hi: 5 }))).toThrow(/ports/);
  });

  it('refuses one address standing for two hosts on a side (a review, 2026-12-07: the second host\'s replies went to the first)', () => {
    const one = (real: string, mapped: string, side: 0 | 1 = 0) => ({ side, real: cidr(real), mapped: cidr(mapped) });
    expect(natConfigProblems(natConfig({ oneToOne: [one('10.200.0.1/32', '10.200.0.101/32'), one('10.200.0.3/32', '10.200.0.101/32')] }))).toEqual([expect.stringMatching(/oneToOne\[1\]\.mapped 10\.200\.0\.101.* overlaps oneToOne\[0\]\.mapped/)]);
    expect(natConfigProblems(natConfig({ oneToOne: [one('10.200.0.0/30', '10.201.0.0/30'), one('10.200.0.2/32', '10.202.0.2/32')] }))).toEqual([expect.stringMatching(/real .* overlaps/)]);
    expect(natConfigProblems(natConfig({ oneToOne: [one('10.200.0.1/32', '10.200.0.101/32'), one('10.200.0.3/32', '10.200.0.101/32', 1)] }))).toEqual([]);
    expect(natConfigProblems(MASQ(undefined, { oneToOne: [one('10.200.0.9/32', '192.0.2.1/32')] }))).toEqual([expect.stringMatching(/masquerade\[0\]\.address 192\.0\.2\.1 is inside oneToOne\[0\]\.mapped/)]);
  });

  it('many mappings: overlaps are found without comparing every pair, a bounded number named and the rest counted (5,000 equal mappings: 25 million pairs)', () => {
    const many = Array.from({ length: 5000 }, (_, i) => ({ side: 0 as const, real: cidr(`10.${i >> 8}.${i & 0xff}.0/24`), mapped: cidr(`10.${100 + (i >> 8)}.${i & 0xff}.0/24`) }));
    expect(natConfigProblems(natConfig({ oneToOne: many }))).toEqual([]);
    const nested = [...many, { side: 0 as const, real: cidr('10.0.0.0/16'), mapped: cidr('172.16.0.0/16') }];
    const p = natConfigProblems(natConfig({ oneToOne: nested }));
    expect(p.slice(0, 2)).toEqual([expect.stringMatching(/^oneToOne\[5000\]\.real 10\.0\.0\.0\/16 overlaps oneToOne\[0\]\.real 10\.0\.0\.0\/24/), expect.stringMatching(/^oneToOne\[5000\]\.real .* overlaps oneToOne\[1\]\.real/)]);
    expect(p.at(-1)).toBe('oneToOne: 224 more overlapping pairs not listed'); // 256 /24s in 10.0/16
    const same = Array.from({ length: 5000 }, () => ({ side: 1 as const, real: cidr('10.0.0.0/24'), mapped: cidr('10.1.0.0/24') }));
    const q = natConfigProblems(natConfig({ oneToOne: same }));
    expect(q).toHaveLength(33);
    expect(q[0]).toMatch(/^oneToOne\[1\]\.mapped .* overlaps oneToOne\[0\]\.mapped/);
    expect(q[1]).toMatch(/^oneToOne\[1\]\.real .* overlaps oneToOne\[0\]\.real/);
    expect(q[32]).toBe(`oneToOne: ${2 * ((5000 * 4999) / 2) - 32} more overlapping pairs not listed`);
  });

  it('masquerade rules on one address need their own port ranges, per side (each compared with the rules on its address only)', () => {
    const m = (side: 0 | 1, address: string, lo: number, hi: number) => ({ side, sources: [cidr('10.200.0.0/24')], address: ip(address), ports: { lo, hi } });
    const rules = [m(0, '192.0.2.1', 1000, 1999), m(0, '192.0.2.2', 1000, 1999), m(1, '192.0.2.1', 1500, 1600), m(0, '192.0.2.1', 2000, 2999), m(0, '192.0.2.1', 1999, 2000)];
    expect(natConfigProblems(natConfig({ masquerade: rules }))).toEqual([
      'masquerade[4] shares address 192.0.2.1 and ports with masquerade[0]: give each its own address or port range',
      'masquerade[4] shares address 192.0.2.1 and ports with masquerade[3]: give each its own address or port range',
    ]);
    // 10,000 rules on 10,000 addresses, and one more on the last one's ports.
    const many = Array.from({ length: 10_000 }, (_, i) => m(0, `10.9.${i >> 8}.${i & 255}`, 1024, 65535));
    expect(natConfigProblems(natConfig({ masquerade: [...many, m(0, '10.9.39.15', 60000, 60001)] }))).toEqual(['masquerade[10000] shares address 10.9.39.15 and ports with masquerade[9999]: give each its own address or port range']);
  });
});

describe('nat: masquerade (many-to-one with port translation)', () => {
  it('preserves the port when free, else allocates deterministically after a cursor; replies go back', () => {
    const nat = new NatTable(MASQ());
    const a = nat.translate(pkt(0, 'tcp', '10.200.0.1', 5001, '8.8.8.8', 80, 0x02), 0);
    expect(a).toMatchObject({ kind: 'translate', tuple: tup('tcp', '192.0.2.1', 5001, '8.8.8.8', 80) });
    const b = nat.translate(pkt(0, 'tcp', '10.200.0.2', 5001, '8.8.8.8', 80, 0x02), 0);
    expect(b).toMatchObject({ tuple: { sport: 5000 } }); // 5001 taken: first after the cursor (hi → lo)
    const c = nat.translate(pkt(0, 'tcp', '10.200.0.3', 40000, '8.8.8.8', 80, 0x02), 0);
    expect(c).toMatchObject({ tuple: { sport: 5002 } }); // out of range: next after cursor 5000, skipping 5001
    // Replies: exact remote only.
    expect(nat.translate(pkt(1, 'tcp', '8.8.8.8', 80, '192.0.2.1', 5000), 1)).toMatchObject({ tuple: tup('tcp', '8.8.8.8', 80, '10.200.0.2', 5001) });
    expect(nat.translate(pkt(1, 'tcp', '8.8.4.4', 80, '192.0.2.1', 5000), 1)).toEqual({ kind: 'drop', reason: 'no-entry' });
    // The same connection again reuses its entry.
    expect(nat.translate(pkt(0, 'tcp', '10.200.0.2', 5001, '8.8.8.8', 80), 2)).toEqual(b);
    expect(nat.size.entries).toBe(3);
    expect(nat.counters.noEntry).toBe(1);
  });

  it('port exhaustion: a full pool drops new connections, counted; a freed port is reused', () => {
    const nat = new NatTable(MASQ({ lo: 5000, hi: 5001 }, { timeouts: { ...natConfig({}).timeouts, udp: 100 } }));
    expect(nat.translate(pkt(0, 'udp', '10.200.0.1', 1, '8.8.8.8', 53), 0).kind).toBe('translate');
    expect(nat.translate(pkt(0, 'udp', '10.200.0.1', 2, '8.8.8.8', 53), 0).kind).toBe('translate');
    expect(nat.translate(pkt(0, 'udp', '10.200.0.1', 3, '8.8.8.8', 53), 0)).toEqual({ kind: 'drop', reason: 'ports-exhausted' });
    expect(nat.counters.portsExhausted).toBe(1);
    // TCP has its own pool.
    expect(nat.translate(pkt(0, 'tcp', '10.200.0.1', 3, '8.8.8.8', 53), 0)).toMatchObject({ tuple: { sport: 5000 } });
    // Expiry frees the UDP ports.
    expect(nat.expire(100)).toBe(2);
    expect(nat.counters.entriesExpired).toBe(2);
    expect(nat.translate(pkt(0, 'udp', '10.200.0.1', 3, '8.8.8.8', 53), 100).kind).toBe('translate');
  });

  it('a used-up pool refuses at once (no walk over its ports per connection); each port freed since is handed out, exactly those', () => {
    const nat = new NatTable(MASQ({ lo: 20000, hi: 20999 }, { timeouts: { ...natConfig({}).timeouts, udp: 100 } }));
    // Count the port lookups an allocation makes.
    const used = (nat as unknown as { usedPorts: Set<string> }).usedPorts;
    let looks = 0;
    const has = used.has.bind(used);
    used.has = (k: string) => (looks++, has(k));
    for (let i = 0; i < 1000; i++) expect(nat.translate(pkt(0, 'udp', '10.200.0.1', 1000 + i, '8.8.8.8', 53), i < 500 ? 0 : 50).kind).toBe('translate');
    looks = 0;
    expect(nat.translate(pkt(0, 'udp', '10.200.0.2', 1, '8.8.8.8', 53), 60)).toEqual({ kind: 'drop', reason: 'ports-exhausted' });
    expect(looks).toBeGreaterThanOrEqual(1000); // the walk that finds the pool used up
    looks = 0;
    for (let i = 0; i < 100; i++) expect(nat.translate(pkt(0, 'udp', '10.200.0.3', i + 1, '8.8.8.8', 53), 60)).toEqual({ kind: 'drop', reason: 'ports-exhausted' });
    expect(looks).toBeLessThan(100 * 5); // then: no walk per connection
    expect(nat.counters.portsExhausted).toBe(101);
    // The first 500 expire: exactly their ports are handed out again, then the pool is used up again.
    expect(nat.expire(100)).toBe(500);
    const got = new Set<number>();
    for (let i = 0; i < 500; i++) {
      const v = nat.translate(pkt(0, 'udp', '10.200.0.4', i + 1, '8.8.8.8', 53), 101);
      expect(v.kind).toBe('translate');
      if (v.kind === 'translate') got.add(v.tuple.sport);
    }
    expect(got.size).toBe(500);
    for (const p of got) expect(p).toBeLessThan(20000 + 1000);
    expect(nat.translate(pkt(0, 'udp', '10.200.0.5', 1, '8.8.8.8', 53), 101)).toEqual({ kind: 'drop', reason: 'ports-exhausted' });
    // Another slice of the pool (a cluster node's): walked again.
    nat.slice = { index: 0, count: 2 };
    expect(nat.translate(pkt(0, 'udp', '10.200.0.5', 1, '8.8.8.8', 53), 101)).toEqual({ kind: 'drop', reason: 'ports-exhausted' });
  });

  it('rules sharing an address with ranges of their own are used up apart: one used up leaves the other, and its freed ports stay its own', () => {
    const nat = new NatTable(
      natConfig({
        timeouts: { ...natConfig({}).timeouts, udp: 100 },
        masquerade: [
          { side: 0, sources: [cidr('10.200.0.0/24')], address: ip('192.0.2.1'), ports: { lo: 5000, hi: 5001 }, icmpIds: { lo: 100, hi: 101 } },
          { side: 0, sources: [cidr('10.201.0.0/24')], address: ip('192.0.2.1'), ports: { lo: 6000, hi: 6999 }, icmpIds: { lo: 102, hi: 103 } },
        ],
      }),
    );
    expect(nat.translate(pkt(0, 'udp', '10.200.0.1', 1, '8.8.8.8', 53), 0).kind).toBe('translate');
    expect(nat.translate(pkt(0, 'udp', '10.200.0.1', 2, '8.8.8.8', 53), 50).kind).toBe('translate');
    expect(nat.translate(pkt(0, 'udp', '10.200.0.1', 3, '8.8.8.8', 53), 50)).toEqual({ kind: 'drop', reason: 'ports-exhausted' });
    expect(nat.translate(pkt(0, 'udp', '10.201.0.1', 1, '8.8.8.8', 53), 50).kind).toBe('translate');
    expect(nat.expire(100)).toBe(1); // one of 5000, 5001 free again
    const b2 = nat.translate(pkt(0, 'udp', '10.201.0.1', 2, '8.8.8.8', 53), 100);
    expect(b2.kind === 'translate' && b2.tuple.sport >= 6000 && b2.tuple.sport <= 6999).toBe(true); // not A's freed port
    expect(nat.translate(pkt(0, 'udp', '10.200.0.1', 4, '8.8.8.8', 53), 100)).toMatchObject({ kind: 'translate', tuple: { sport: 5000 } });
  });

  it('table full: maxEntries refuses new connections, counted, existing ones still work', () => {
    const nat = new NatTable(MASQ({ lo: 5000, hi: 6000 }, { limits: { maxEntries: 1, maxExpectations: 1 } }));
    const a = nat.translate(pkt(0, 'tcp', '10.200.0.1', 1, '8.8.8.8', 80), 0);
    expect(nat.translate(pkt(0, 'tcp', '10.200.0.1', 2, '8.8.8.8', 80), 0)).toEqual({ kind: 'drop', reason: 'table-full' });
    expect(nat.counters.tableFull).toBe(1);
    expect(nat.translate(pkt(0, 'tcp', '10.200.0.1', 1, '8.8.8.8', 80), 0)).toEqual(a);
  });

  it('timeouts: refreshed by traffic, lazily expired on lookup; TCP FIN/RST/SYN use the transitory timeout', () => {
    const cfg = MASQ({ lo: 5000, hi: 6000 }, { timeouts: { tcpEstablished: 1000, tcpTransitory: 10, udp: 50, icmp: 20, expectation: 30 } });
    const nat = new NatTable(cfg);
    nat.translate(pkt(0, 'tcp', '10.200.0.1', 5000, '8.8.8.8', 80, 0x02), 0); // SYN: 10 ms
    expect(nat.lookup(1, tup('tcp', '8.8.8.8', 80, '192.0.2.1', 5000), 9)).toEqual(tup('tcp', '8.8.8.8', 80, '10.200.0.1', 5000));
    nat.translate(pkt(1, 'tcp', '8.8.8.8', 80, '192.0.2.1', 5000, 0x12), 5); // SYN-ACK: established
    expect(nat.lookup(1, tup('tcp', '8.8.8.8', 80, '192.0.2.1', 5000), 900)).toBeDefined();
    const fin = nat.translate(pkt(0, 'tcp', '10.200.0.1', 5000, '8.8.8.8', 80, 0x11), 900); // FIN: a packet never shortens an entry
    expect(nat.lookup(0, tup('tcp', '10.200.0.1', 5000, '8.8.8.8', 80), 910)).toBeDefined();
    nat.settle((fin as { entry: number }).entry, 900); // the gateway does when the connection closes: 10 ms
    expect(nat.lookup(0, tup('tcp', '10.200.0.1', 5000, '8.8.8.8', 80), 910)).toBeUndefined();
    // Lazy: the next packet finds it expired and makes a new entry.
    expect(nat.translate(pkt(0, 'tcp', '10.200.0.1', 5000, '8.8.8.8', 80, 0x10), 911).kind).toBe('translate');
    expect(nat.counters.entriesExpired).toBe(1);
    expect(nat.counters.entriesCreated).toBe(2);
  });

  it('ICMP echo: the identifier is translated like a port, in both tuple ports', () => {
    const nat = new NatTable(MASQ());
    const v = nat.translate(pkt(0, 'icmp', '10.200.0.1', 7, '8.8.8.8', 7), 0);
    expect(v).toMatchObject({ tuple: tup('icmp', '192.0.2.1', 100, '8.8.8.8', 100) });
    expect(nat.translate(pkt(1, 'icmp', '8.8.8.8', 100, '192.0.2.1', 100), 1)).toMatchObject({ tuple: tup('icmp', '8.8.8.8', 7, '10.200.0.1', 7) });
    nat.translate(pkt(0, 'icmp', '10.200.0.2', 7, '8.8.8.8', 7), 0);
    expect(nat.translate(pkt(0, 'icmp', '10.200.0.3', 7, '8.8.8.8', 7), 0)).toEqual({ kind: 'drop', reason: 'ports-exhausted' });
  });

  it('round trip: every translated packet, and its reply, map back to the original', () => {
    const nat = new NatTable(MASQ({ lo: 20000, hi: 20100 }));
    for (let i = 0; i < 50; i++) {
      const p = pkt(0, i % 2 ? 'udp' : 'tcp', `10.200.0.${1 + (i % 7)}`, 30000 + (i % 5), '8.8.8.8', 53 + (i % 3));
      const v = nat.translate(p, i);
      if (v.kind !== 'translate') throw new Error('expected translate');
      const back = nat.translate({ ...invert(v.tuple), from: 1 }, i);
      expect(back).toMatchObject({ tuple: invert(p) });
    }
  });
});

describe('nat: expectations (FTP data connections)', () => {
  it('expectData for a masqueraded client: allocates, and the first matching connection consumes it', () => {
    const nat = new NatTable(MASQ({ lo: 5000, hi: 5010 }));
    const ann = nat.expectData(0, 'tcp', ip('10.200.0.1'), 50000, ip('8.8.8.8'), 0, 'ctl#1');
    expect(ann).toEqual({ addr: ip('192.0.2.1'), port: 5000 });
    expect(nat.expectationList()).toHaveLength(1);
    // The port is reserved: an outbound connection may not take it.
    expect(nat.translate(pkt(0, 'tcp', '10.200.0.9', 5000, '8.8.8.8', 80), 0)).toMatchObject({ tuple: { sport: 5001 } });
    // Wrong opener: not matched, dropped as unsolicited.
    expect(nat.translate(pkt(1, 'tcp', '8.8.4.4', 20, '192.0.2.1', 5000, 0x02), 1)).toEqual({ kind: 'drop', reason: 'no-entry' });
    const v = nat.translate(pkt(1, 'tcp', '8.8.8.8', 20, '192.0.2.1', 5000, 0x02), 1);
    expect(v).toMatchObject({ kind: 'translate', tuple: tup('tcp', '8.8.8.8', 20, '10.200.0.1', 50000) });
    expect(nat.expectationList()).toHaveLength(0);
    expect(nat.counters.expectationsConsumed).toBe(1);
    // Replies of the data connection go out with the announced endpoint.
    expect(nat.translate(pkt(0, 'tcp', '10.200.0.1', 50000, '8.8.8.8', 20), 2)).toMatchObject({ tuple: tup('tcp', '192.0.2.1', 5000, '8.8.8.8', 20) });
    // Consumed: a second connection to the same port is not expected any more.
    expect(nat.translate(pkt(1, 'tcp', '8.8.8.8', 21, '192.0.2.1', 5000, 0x02), 3)).toEqual({ kind: 'drop', reason: 'no-entry' });
  });

  it('expectData for a 1:1-mapped or un-NATed address: stateless answer, nothing registered', () => {
    const nat = new NatTable(natConfig({ oneToOne: [{ side: 1, real: cidr('10.201.0.0/24'), mapped: cidr('203.0.113.0/24') }] }));
    expect(nat.expectData(1, 'tcp', ip('10.201.0.2'), 50000, undefined, 0)).toEqual({ addr: ip('203.0.113.2'), port: 50000 });
    expect(nat.expectData(1, 'tcp', ip('10.9.0.2'), 50000, undefined, 0)).toBeUndefined();
    expect(nat.size.expectations).toBe(0);
  });

  it('expire after the timeout (and free their port); bounded, refusals counted', () => {
    const cfg = MASQ({ lo: 5000, hi: 5001 }, { limits: { maxEntries: 10, maxExpectations: 1 }, timeouts: { ...natConfig({}).timeouts, expectation: 100 } });
    const nat = new NatTable(cfg);
    expect(nat.expectData(0, 'tcp', ip('10.200.0.1'), 1, undefined, 0)).toEqual({ addr: ip('192.0.2.1'), port: 5000 });
    expect(nat.expectData(0, 'tcp', ip('10.200.0.1'), 2, undefined, 0)).toBeNull();
    expect(nat.counters.expectationsRefused).toBe(1);
    // Expired: not matched any more (lazily), and the port is free again.
    expect(nat.translate(pkt(1, 'tcp', '1.1.1.1', 20, '192.0.2.1', 5000), 100)).toEqual({ kind: 'drop', reason: 'no-entry' });
    expect(nat.counters.expectationsExpired).toBe(1);
    expect(nat.expectData(0, 'tcp', ip('10.200.0.1'), 5000, undefined, 100)).toEqual({ addr: ip('192.0.2.1'), port: 5000 });
    expect(nat.expire(200)).toBe(1);
    expect(nat.size.expectations).toBe(0);
  });

  it('an expectation with no free port is refused', () => {
    const nat = new NatTable(MASQ({ lo: 5000, hi: 5000 }));
    nat.translate(pkt(0, 'tcp', '10.200.0.1', 5000, '8.8.8.8', 80), 0);
    expect(nat.expectData(0, 'tcp', ip('10.200.0.1'), 1, undefined, 0)).toBeNull();
    // A plain expect() naming a masquerade port in use is refused too.
    expect(nat.expect({ proto: 'tcp', from: 1, dst: ip('192.0.2.1'), dport: 5000, to: { addr: ip('10.200.0.1'), port: 1 } }, 0)).toBeUndefined();
    expect(nat.counters.expectationsRefused).toBe(2);
  });

  it('plain expect(): a published server port (destination rewrite) consumed once', () => {
    const nat = new NatTable(natConfig({}));
    const x = nat.expect({ proto: 'tcp', from: 0, dst: ip('203.0.113.5'), dport: 2121, to: { addr: ip('10.201.0.5'), port: 21 } }, 0);
    expect(x?.expiresAt).toBe(60_000);
    expect(nat.translate(pkt(0, 'tcp', '10.200.0.1', 999, '203.0.113.5', 2121), 5)).toMatchObject({ tuple: tup('tcp', '10.200.0.1', 999, '10.201.0.5', 21) });
    expect(nat.translate(pkt(1, 'tcp', '10.201.0.5', 21, '10.200.0.1', 999), 6)).toMatchObject({ tuple: tup('tcp', '203.0.113.5', 2121, '10.200.0.1', 999) });
  });
});

describe('nat: snapshot/restore as plain JSON', () => {
  it('a restored table translates identically, keeps reservations, cursors and counters', () => {
    const cfg = MASQ({ lo: 5000, hi: 5005 });
    const a = new NatTable(cfg);
    a.translate(pkt(0, 'tcp', '10.200.0.1', 5000, '8.8.8.8', 80), 0);
    a.translate(pkt(0, 'tcp', '10.200.0.2', 5000, '8.8.8.8', 80), 0);
    a.expectData(0, 'tcp', ip('10.200.0.3'), 40000, ip('8.8.8.8'), 0);
    const snap = JSON.parse(JSON.stringify(a.snapshot())) as unknown;
    const b = NatTable.restore(cfg, snap);
    expect(b.snapshot()).toEqual(a.snapshot());
    const next = (t: NatTable) => [
      t.translate(pkt(0, 'tcp', '10.200.0.4', 5000, '8.8.8.8', 80), 1),
      t.translate(pkt(1, 'tcp', '8.8.8.8', 80, '192.0.2.1', 5001), 1),
      t.translate(pkt(1, 'tcp', '8.8.8.8', 20, '192.0.2.1', 5002), 1),
      t.translate(pkt(0, 'udp', '10.200.0.4', 5000, '8.8.8.8', 53), 1),
    ];
    expect(next(b)).toEqual(next(a));
    expect(b.counters).toEqual(a.counters);
  });

  it('a malformed snapshot is refused', () => {
    expect(() => NatTable.restore(natConfig({}), { v: 2 })).toThrow(/bad snapshot/);
    expect(() => NatTable.restore(natConfig({}), { v: 1, nextId: 1, cursors: {}, entries: [{ id: 1 }], expectations: [], counters: {} })).toThrow(/entry/);
    // Ids: one counter numbers entries and expectations (a review: a repeated id left a stale
    // index behind, and dropping a connection's expectations then threw).
    const a = new NatTable(MASQ({ lo: 5000, hi: 5010 }));
    a.expectData(0, 'tcp', ip('10.200.0.7'), 21, undefined, 0, 'a');
    a.expectData(0, 'tcp', ip('10.200.0.7'), 22, undefined, 0, 'b');
    const good = JSON.parse(JSON.stringify(a.snapshot())) as { nextId: number; expectations: { id: number }[] };
    expect(() => NatTable.restore(MASQ({ lo: 5000, hi: 5010 }), good)).not.toThrow();
    expect(() => NatTable.restore(MASQ({ lo: 5000, hi: 5010 }), { ...good, nextId: good.expectations[1]!.id })).toThrow(/bad snapshot \(id \d+ not below nextId/);
    const twice = { ...good, expectations: [good.expectations[0], { ...good.expectations[1], id: good.expectations[0]!.id }] };
    expect(() => NatTable.restore(MASQ({ lo: 5000, hi: 5010 }), twice)).toThrow(/bad snapshot \(id \d+ given twice/);
  });
});

describe('nat: ftp agent hooks backed by the table', () => {
  const CTX: AgentContext = {
    flowId: 'ctl#1',
    client: { addr: '10.200.0.1', port: 40000 },
    server: { addr: '10.201.0.2', port: 21 },
    directions: new Set<Direction>(['c2s', 's2c']),
  };

  it('active mode through masquerade: PORT announces the shared address and an allocated port; the server\'s connection reaches the client', () => {
    const nat = new NatTable(MASQ({ lo: 6000, hi: 6009 }));
    let now = 0;
    const seen: FtpExpectation[] = [];
    const agent = createFtp(natFtpHooks(nat, { clientSide: 0, now: () => now, observe: (x) => seen.push(x) })).create({}, CTX);
    const line = Buffer.from('PORT 10,200,0,1,195,80\r\n');
    const out = agent.feed('c2s', 0, line);
    expect(out.edits.map((e) => Buffer.from(e.data).toString())).toEqual(['192,0,2,1,23,112']); // 192.0.2.1:6000
    expect(seen[0]).toMatchObject({ opener: 'server', announced: { addr: '192.0.2.1', port: 6000 }, original: { addr: '10.200.0.1', port: 50000 } });
    now = 10;
    // The server (10.201.0.2, seen on side 1) connects from port 20 to what it was told.
    expect(nat.translate(pkt(1, 'tcp', '10.201.0.2', 20, '192.0.2.1', 6000, 0x02), now)).toMatchObject({ tuple: tup('tcp', '10.201.0.2', 20, '10.200.0.1', 50000) });
    expect(nat.translate(pkt(0, 'tcp', '10.200.0.1', 50000, '10.201.0.2', 20, 0x12), now)).toMatchObject({ tuple: tup('tcp', '192.0.2.1', 6000, '10.201.0.2', 20) });
    expect(nat.expectationList()).toHaveLength(0); // consumed
  });

  it('passive mode to a published server (1:1): 227 and EPRT-free sessions are stateless', () => {
    const nat = new NatTable(natConfig({ oneToOne: [{ side: 1, real: cidr('10.201.0.0/24'), mapped: cidr('203.0.113.0/24') }] }));
    const agent = createFtp(natFtpHooks(nat, { clientSide: 0, now: () => 0 })).create({}, CTX);
    const out = agent.feed('s2c', 0, Buffer.from('227 Entering Passive Mode (10,201,0,2,195,80).\r\n229 (|||50000|)\r\n'));
    expect(out.edits.map((e) => Buffer.from(e.data).toString())).toEqual(['203,0,113,2,195,80']);
    expect(nat.size).toEqual({ entries: 0, expectations: 0 });
  });

  it('a refused expectation (no port left) refuses the command: the agent gives up, the real address never passes', () => {
    const nat = new NatTable(MASQ({ lo: 6000, hi: 6000 }));
    nat.translate(pkt(0, 'tcp', '10.200.0.9', 6000, '8.8.8.8', 80), 0);
    const agent = createFtp(natFtpHooks(nat, { clientSide: 0, now: () => 0 })).create({}, CTX);
    const out = agent.feed('c2s', 0, Buffer.from('PORT 10,200,0,1,195,80\r\n'));
    expect(out.abort).toBe('ftp:refused-endpoint');
    expect(out.edits).toEqual([{ at: 0, len: 24, data: Buffer.alloc(0) }]);
    expect(nat.counters.expectationsRefused).toBe(1);
  });

  // FTP bounce / NAT slipstreaming (review, 2026-12-07): an endpoint that is not its announcer's
  // own address would have the NAT open a path from the peer to another host.
  it.each([
    ['PORT naming another inside host', 'c2s', 'PORT 10,200,0,7,0,22\r\n'],
    ['EPRT naming another inside host', 'c2s', 'EPRT |1|10.200.0.8|445|\r\n'],
    ['a 227 naming another host than the server', 's2c', '227 Entering Passive Mode (10,200,0,7,0,22).\r\n'],
  ] as const)('%s: refused, nothing expected, the line deleted', (_what, dir, line) => {
    const nat = new NatTable(MASQ({ lo: 6000, hi: 6009 }));
    const agent = createFtp(natFtpHooks(nat, { clientSide: 0, now: () => 0 })).create({}, { ...CTX, server: { addr: '10.200.0.2', port: 21 } });
    const out = agent.feed(dir, 0, Buffer.from(line));
    expect(out.abort).toBe('ftp:refused-endpoint');
    expect(nat.expectationList()).toEqual([]);
    expect(Buffer.from(line).subarray(0, out.edits[0]!.at).toString()).not.toMatch(/\d/);
  });

  it('EPRT |1| on an IPv6 control connection (the other family): refused, no expectation from any source', () => {
    const nat = new NatTable(MASQ({ lo: 6000, hi: 6009 }, { nptv6: [{ side: 0, real: parseIpBlock('fd00:200::/64') as Cidr6, mapped: parseIpBlock('fd00:201::/64') as Cidr6 }] }));
    const ctx6: AgentContext = { ...CTX, client: { addr: 'fd00:200::1', port: 40000 }, server: { addr: 'fd00:300::2', port: 21 } };
    const agent = createFtp(natFtpHooks(nat, { clientSide: 0, now: () => 0 })).create({}, ctx6);
    expect(agent.feed('c2s', 0, Buffer.from('EPRT |1|10.200.0.1|22|\r\n')).abort).toBe('ftp:refused-endpoint');
    expect(nat.expectationList()).toEqual([]);
    // Its own address in its own family is translated by the prefix.
    const ok = createFtp(natFtpHooks(nat, { clientSide: 0, now: () => 0 })).create({}, ctx6);
    const out = ok.feed('c2s', 0, Buffer.from('EPRT |2|fd00:200::1|5282|\r\n'));
    expect(out.abort).toBeUndefined();
    expect(out.edits.map((e) => Buffer.from(e.data).toString())).toEqual([expect.stringMatching(/^fd00:201:[0-9a-f:]+\|5282$/)]);
  });

  it('one control connection holds at most MAX_EXPECTATIONS_PER_TAG: a new one drops its oldest, the others\' are untouched', () => {
    const nat = new NatTable(MASQ({ lo: 6000, hi: 6099 }));
    const a = createFtp(natFtpHooks(nat, { clientSide: 0, now: () => 0 })).create({}, CTX);
    for (let i = 0; i < 10; i++) expect(a.feed('c2s', i * 22, Buffer.from(`PORT 10,200,0,1,4,${10 + i}\r\n`)).abort).toBeUndefined();
    expect(nat.expectationList().filter((x) => x.tag === 'ctl#1')).toHaveLength(MAX_EXPECTATIONS_PER_TAG);
    expect(nat.counters.expectationsEvicted).toBe(10 - MAX_EXPECTATIONS_PER_TAG);
    const b = createFtp(natFtpHooks(nat, { clientSide: 0, now: () => 0 })).create({}, { ...CTX, flowId: 'ctl#2', client: { addr: '10.200.0.3', port: 40001 } });
    expect(b.feed('c2s', 0, Buffer.from('PORT 10,200,0,3,195,80\r\n')).edits.map((e) => Buffer.from(e.data).toString())).toEqual([expect.stringMatching(/^192,0,2,1,/)]);
    // The control connection goes: its expectations with it.
    expect(nat.dropExpectations('ctl#1')).toBe(MAX_EXPECTATIONS_PER_TAG);
    expect(nat.expectationList().map((x) => x.tag)).toEqual(['ctl#2']);
    expect(nat.counters.expectationsDropped).toBe(MAX_EXPECTATIONS_PER_TAG);
  });
});
