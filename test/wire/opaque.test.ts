/**
 * wire/opaque.ts: which undecoded frames may carry TCP a rule could be bypassed through. Byte
 * fixtures (deconstruct), a chain builder checked against them (construct), every IPv6
 * extension header of RFC 8200 §4 and AH (RFC 4302) in front of TCP, the chain limit, the
 * IPv4 tunnel protocols and UDP ports, and truncated input at every length (null, never a throw).
 */
import { describe, expect, it } from 'vitest';
import { decodeFrame } from '../../src/wire/frame.js';
import { ETHERTYPE_IPV6 } from '../../src/wire/ethernet.js';
import {
  ETHERTYPE_MPLS,
  ETHERTYPE_MPLS_MULTICAST,
  ETHERTYPE_PPPOE_SESSION,
  opaqueEtherType,
  opaqueIpv4,
  opaqueIpv6,
} from '../../src/wire/opaque.js';
import { IPV6_MAX_EXT_HEADERS as MAX_EXT_HEADERS } from '../../src/wire/ipv6.js';
import { hex, toHex } from './fixtures.js';

// ---------------------------------------------------------------------------------------------
// Fixtures: Ethernet II frames, 2001:db8::1 → 2001:db8::2 (RFC 3849 documentation prefix).

const ETH_V6 = '525400a1b2c3 525400d4e5f6 86dd';
const V6_ADDRS = '20010db8000000000000000000000001 20010db8000000000000000000000002';

/** [2001:db8::1]:34228 → [2001:db8::2]:80 SYN, no options. */
const V6_TCP_SYN =
  ETH_V6 +
  '60000000 0014 06 40' + V6_ADDRS +
  '85b4 0050 00000001 00000000 5002 ffff 0000 0000';

/**
 * The same SYN behind Hop-by-Hop (PadN), Routing (type 4 SRH header, 24 bytes), Destination
 * Options (PadN), a Fragment header (offset 0, M set: first fragment) and AH (ICV 12 bytes).
 */
const V6_CHAIN_TCP =
  ETH_V6 +
  '60000000 005c 00 40' + V6_ADDRS +
  '2b00 0104 00000000' + //                  Hop-by-Hop → Routing; PadN(4)
  '3c02 0400 00000000 20010db8000000000000000000000002' + // Routing → Dst opts; SRH, len 2 (24 bytes)
  '2c00 0104 00000000' + //                  Destination Options → Fragment; PadN(4)
  '3300 0001 12345678' + //                  Fragment → AH; offset 0, M=1, id 0x12345678
  '0604 0000 00000100 00000001 000000000000000000000000' + // AH → TCP; len 4 ((4+2)*4 = 24 bytes)
  '85b4 0050 00000001 00000000 5002 ffff 0000 0000';

/** A later fragment (offset 185 × 8 bytes) of a TCP packet: no TCP header, no ports. */
const V6_TCP_FRAG_LATER =
  ETH_V6 +
  '60000000 0018 2c 40' + V6_ADDRS +
  '0600 05c8 12345678' + //                  Fragment → TCP; offset 185, M=0
  '41414141414141414141414141414141';

/** ICMPv6 echo request. */
const V6_ICMP = ETH_V6 + '60000000 0008 3a 40' + V6_ADDRS + '8000 0000 0001 0001';

/** UDP [2001:db8::1]:5353 → :4789 (VXLAN) with an 8-byte VXLAN header. */
const V6_UDP_VXLAN = ETH_V6 + '60000000 0010 11 40' + V6_ADDRS + '14e9 12b5 0010 0000 08000000 00000100';

const frame = (h: string): Uint8Array => hex(h);
const L3 = 14;

// ---------------------------------------------------------------------------------------------
// A chain builder (construct): checked against the fixtures above, then used for the variations.

type Ext =
  | { h: 'hbh' | 'routing' | 'dstopts'; len8?: number }
  | { h: 'frag'; offset: number; more?: boolean }
  | { h: 'ah'; icvWords?: number };

const EXT_NUM: Record<Ext['h'], number> = { hbh: 0, routing: 43, dstopts: 60, frag: 44, ah: 51 };

function extBytes(e: Ext, next: number): Uint8Array {
  if (e.h === 'frag') {
    const b = new Uint8Array(8);
    b[0] = next;
    const v = (e.offset << 3) | (e.more ? 1 : 0);
    b[2] = v >>> 8;
    b[3] = v & 0xff;
    b.set([0x12, 0x34, 0x56, 0x78], 4);
    return b;
  }
  if (e.h === 'ah') {
    // RFC 4302 §2.2: Payload Len is the AH length in 4-byte words minus 2; 3 fixed words + ICV.
    const words = 3 + (e.icvWords ?? 3);
    const b = new Uint8Array(words * 4);
    b[0] = next;
    b[1] = words - 2;
    b[6] = 1; // SPI 256
    b[11] = 1; // sequence number 1
    return b;
  }
  // RFC 8200 §4.3–4.6: Hdr Ext Len in 8-byte units not counting the first 8; PadN fills it.
  const len8 = e.len8 ?? 0;
  const b = new Uint8Array((len8 + 1) * 8);
  b[0] = next;
  b[1] = len8;
  b[2] = 1;
  b[3] = b.length - 4;
  return b;
}

/** An Ethernet frame: IPv6 with `chain` in front of protocol `proto` carrying `upper`. */
function v6(chain: readonly Ext[], proto: number, upper: Uint8Array, payloadLen?: number): Uint8Array {
  const exts = chain.map((e, i) => extBytes(e, i + 1 < chain.length ? EXT_NUM[chain[i + 1]!.h] : proto));
  const body = Buffer.concat([...exts, upper]);
  const head = hex(ETH_V6 + '60000000 0000 00 40' + V6_ADDRS);
  const plen = payloadLen ?? body.length;
  head[L3 + 4] = plen >>> 8;
  head[L3 + 5] = plen & 0xff;
  head[L3 + 6] = chain.length > 0 ? EXT_NUM[chain[0]!.h] : proto;
  return new Uint8Array(Buffer.concat([head, body]));
}

/** A TCP header from `sport` to `dport` (20 bytes; the classifier reads the ports only). */
function tcpHdr(sport = 34228, dport = 80): Uint8Array {
  const b = hex('0000 0000 00000001 00000000 5002 ffff 0000 0000');
  b[0] = sport >>> 8;
  b[1] = sport & 0xff;
  b[2] = dport >>> 8;
  b[3] = dport & 0xff;
  return b;
}

function udpHdr(sport: number, dport: number, payload = 8): Uint8Array {
  const b = new Uint8Array(8 + payload);
  b[0] = sport >>> 8;
  b[1] = sport & 0xff;
  b[2] = dport >>> 8;
  b[3] = dport & 0xff;
  b[5] = 8 + payload;
  return b;
}

const TCP = 6;
const UDP = 17;
const PORTS = { cls: 'ipv6-tcp', srcPort: 34228, dstPort: 80 };
const PORTLESS = { cls: 'ipv6-tcp' };

describe('opaque: IPv6 fixtures (deconstruct)', () => {
  it('a TCP SYN over IPv6: ipv6-tcp with both ports', () => {
    const b = frame(V6_TCP_SYN);
    expect(opaqueIpv6(b, L3)).toEqual(PORTS);
    expect(opaqueEtherType(b, ETHERTYPE_IPV6, L3)).toEqual(PORTS);
  });

  it('Hop-by-Hop, Routing, Destination Options, a first Fragment and AH in front of TCP: walked to the ports', () => {
    expect(opaqueIpv6(frame(V6_CHAIN_TCP), L3)).toEqual(PORTS);
  });

  it('a later fragment of TCP: ipv6-tcp without ports (its header is in the first fragment)', () => {
    const o = opaqueIpv6(frame(V6_TCP_FRAG_LATER), L3);
    expect(o).toEqual(PORTLESS);
    expect(o).not.toHaveProperty('srcPort');
  });

  it('ICMPv6 is not a way around a TCP rule: null', () => {
    expect(opaqueIpv6(frame(V6_ICMP), L3)).toBeNull();
  });

  it('UDP over IPv6 to 4789 is VXLAN', () => {
    expect(opaqueIpv6(frame(V6_UDP_VXLAN), L3)).toEqual({ cls: 'vxlan' });
  });
});

describe('opaque: the chain builder reproduces the fixtures (construct)', () => {
  it('plain TCP', () => {
    expect(toHex(v6([], TCP, tcpHdr()))).toBe(toHex(frame(V6_TCP_SYN)));
  });
  it('a later fragment', () => {
    const payload = hex('41414141414141414141414141414141');
    expect(toHex(v6([{ h: 'frag', offset: 185 }], TCP, payload))).toBe(toHex(frame(V6_TCP_FRAG_LATER)));
  });
  it('Hop-by-Hop, Destination Options, Fragment and AH (the Routing header aside) lay out as the fixture', () => {
    const f = v6([{ h: 'hbh' }, { h: 'dstopts' }, { h: 'frag', offset: 0, more: true }, { h: 'ah' }], TCP, tcpHdr());
    const fx = frame(V6_CHAIN_TCP);
    // The fixture's 24-byte Routing header sits after the 8-byte Hop-by-Hop; the rest is identical.
    expect(toHex(f.subarray(L3 + 48))).toBe(toHex(fx.subarray(L3 + 72)));
    expect(f.length).toBe(fx.length - 24);
  });
});

describe('opaque: IPv6 extension-header chains', () => {
  const one: Array<[string, Ext]> = [
    ['Hop-by-Hop', { h: 'hbh' }],
    ['Hop-by-Hop of 24 bytes', { h: 'hbh', len8: 2 }],
    ['Routing', { h: 'routing', len8: 2 }],
    ['Destination Options', { h: 'dstopts', len8: 1 }],
    ['Fragment, first (offset 0, M set)', { h: 'frag', offset: 0, more: true }],
    ['Fragment, atomic (offset 0, M clear: RFC 6946)', { h: 'frag', offset: 0 }],
    ['AH (ICV 12 bytes)', { h: 'ah' }],
    ['AH (ICV 32 bytes, HMAC-SHA-256)', { h: 'ah', icvWords: 8 }],
  ];
  it.each(one)('%s then TCP: ipv6-tcp with the ports', (_what, e) => {
    expect(opaqueIpv6(v6([e], TCP, tcpHdr(40000, 8080)), L3)).toEqual({ cls: 'ipv6-tcp', srcPort: 40000, dstPort: 8080 });
  });

  it.each(one)('%s then UDP to port 53: null', (_what, e) => {
    expect(opaqueIpv6(v6([e], UDP, udpHdr(5353, 53)), L3)).toBeNull();
  });

  it('a later fragment (offset 1) behind Hop-by-Hop and Routing: no ports', () => {
    expect(opaqueIpv6(v6([{ h: 'hbh' }, { h: 'routing', len8: 2 }, { h: 'frag', offset: 1, more: true }], TCP, new Uint8Array(16)), L3)).toEqual(PORTLESS);
  });

  it('a later fragment of UDP: null (the UDP header, and its port, are in the first fragment)', () => {
    expect(opaqueIpv6(v6([{ h: 'frag', offset: 3 }], UDP, udpHdr(5353, 4789)), L3)).toBeNull();
  });

  it('the first fragment of UDP to 4789 / 6081 is VXLAN / Geneve', () => {
    expect(opaqueIpv6(v6([{ h: 'frag', offset: 0, more: true }], UDP, udpHdr(5353, 4789)), L3)).toEqual({ cls: 'vxlan' });
    expect(opaqueIpv6(v6([{ h: 'frag', offset: 0, more: true }], UDP, udpHdr(5353, 6081)), L3)).toEqual({ cls: 'geneve' });
  });

  it(`exactly MAX_EXT_HEADERS (${MAX_EXT_HEADERS}) headers are walked: TCP behind them has its ports, UDP behind them is null`, () => {
    const chain: Ext[] = Array.from({ length: MAX_EXT_HEADERS }, () => ({ h: 'dstopts' }));
    expect(opaqueIpv6(v6(chain, TCP, tcpHdr()), L3)).toEqual(PORTS);
    expect(opaqueIpv6(v6(chain, UDP, udpHdr(5353, 53)), L3)).toBeNull();
  });

  it('a chain longer than MAX_EXT_HEADERS: ipv6-tcp without ports, whatever it ends in (not inspected)', () => {
    const chain: Ext[] = Array.from({ length: MAX_EXT_HEADERS + 1 }, (_, i) => (i % 2 === 0 ? { h: 'dstopts' } : { h: 'routing', len8: 0 }));
    expect(opaqueIpv6(v6(chain, UDP, udpHdr(5353, 53)), L3)).toEqual(PORTLESS);
    expect(opaqueIpv6(v6(chain, TCP, tcpHdr()), L3)).toEqual(PORTLESS);
    expect(opaqueIpv6(v6(chain, 58, new Uint8Array(8)), L3)).toEqual(PORTLESS);
  });

  it('tunnels inside IPv6 keep their class: IP-in-IP, IPv6-in-IP, GRE (also behind extension headers)', () => {
    expect(opaqueIpv6(v6([], 4, new Uint8Array(20)), L3)).toEqual({ cls: 'ip-in-ip' });
    expect(opaqueIpv6(v6([], 41, new Uint8Array(40)), L3)).toEqual({ cls: 'ipv6-in-ip' });
    expect(opaqueIpv6(v6([], 47, new Uint8Array(4)), L3)).toEqual({ cls: 'gre' });
    expect(opaqueIpv6(v6([{ h: 'dstopts' }, { h: 'ah' }], 47, new Uint8Array(4)), L3)).toEqual({ cls: 'gre' });
  });

  it('UDP over IPv6: tunnel destination ports by class; 4789 as the source port only, and other ports, are null', () => {
    expect(opaqueIpv6(v6([], UDP, udpHdr(5353, 6081)), L3)).toEqual({ cls: 'geneve' });
    const tunnels: Array<[number, string]> = [[1701, 'l2tp'], [2152, 'gtp-u'], [3544, 'teredo'], [4789, 'vxlan'], [4790, 'vxlan-gpe'], [6635, 'mpls-in-udp']];
    for (const [port, cls] of tunnels) expect(opaqueIpv6(v6([], UDP, udpHdr(5353, port)), L3), `port ${port}`).toEqual({ cls });
    expect(opaqueIpv6(v6([], UDP, udpHdr(4789, 5353)), L3)).toBeNull();
    expect(opaqueIpv6(v6([], UDP, udpHdr(5353, 4791)), L3)).toBeNull();
  });

  it('IPv4 and IPv6 protocols 97 (EtherIP), 115 (L2TPv3), 137 (MPLS-in-IP) are tunnels', () => {
    const protos: Array<[number, string]> = [[97, 'etherip'], [115, 'l2tp'], [137, 'mpls-in-ip']];
    for (const [p, cls] of protos) {
      expect(opaqueIpv6(v6([], p, new Uint8Array(24)), L3), `IPv6 proto ${p}`).toEqual({ cls });
      expect(opaqueIpv4(new Uint8Array(24), p, 0, 24, true), `IPv4 proto ${p}`).toEqual({ cls });
    }
  });

  it('ESP (50), No Next Header (59), ICMPv6 (58) and SCTP (132): null', () => {
    for (const p of [50, 59, 58, 132]) expect(opaqueIpv6(v6([], p, new Uint8Array(24)), L3), `proto ${p}`).toBeNull();
    expect(opaqueIpv6(v6([{ h: 'hbh' }], 50, new Uint8Array(24)), L3)).toBeNull();
  });

  it('a version other than 6 in an IPv6 EtherType frame: null', () => {
    const b = frame(V6_TCP_SYN);
    b[L3] = 0x45;
    expect(opaqueIpv6(b, L3)).toBeNull();
  });

  it('offsets are relative to the buffer passed: a frame behind 10 bytes (a virtio-net header) classifies the same', () => {
    const f = frame(V6_CHAIN_TCP);
    const b = new Uint8Array(10 + f.length);
    b.set(f, 10);
    expect(opaqueIpv6(b, 10 + L3)).toEqual(PORTS);
    expect(opaqueIpv6(b.subarray(10), L3)).toEqual(PORTS);
  });

  it('a raw IPv6 packet (no Ethernet header) at offset 0', () => {
    expect(opaqueIpv6(frame(V6_CHAIN_TCP).subarray(L3), 0)).toEqual(PORTS);
  });

  it('through decodeFrame: an 802.1Q-tagged IPv6 frame comes back `other` with l3Off after the tag, and classifies', () => {
    const f = frame(V6_TCP_SYN);
    const tagged = new Uint8Array(f.length + 4);
    tagged.set(f.subarray(0, 12));
    tagged.set([0x81, 0x00, 0x00, 0x64], 12);
    tagged.set(f.subarray(12), 16);
    const d = decodeFrame(tagged, { link: 'ethernet', verifyChecksums: true });
    if (d.kind !== 'other') throw new Error(`expected other, got ${d.kind}`);
    expect([d.etherType, d.l3Off]).toEqual([ETHERTYPE_IPV6, 18]);
    expect(opaqueEtherType(tagged, d.etherType, d.l3Off)).toEqual(PORTS);
  });
});

describe('opaque: IPv6 truncated and malformed input → null, never a throw', () => {
  it('every prefix of every fixture: no throw; shorter than the fixed header is null', () => {
    for (const h of [V6_TCP_SYN, V6_CHAIN_TCP, V6_TCP_FRAG_LATER, V6_ICMP, V6_UDP_VXLAN]) {
      const f = frame(h);
      for (let n = 0; n <= f.length; n++) {
        const b = f.slice(0, n);
        expect(() => opaqueIpv6(b, L3)).not.toThrow();
        expect(() => opaqueEtherType(b, ETHERTYPE_IPV6, L3)).not.toThrow();
        if (n < L3 + 40) expect(opaqueIpv6(b, L3)).toBeNull();
      }
    }
  });

  it('an extension header cut short (fewer than its first 8 bytes) in an unfragmented packet: null', () => {
    for (const e of [{ h: 'hbh' }, { h: 'routing' }, { h: 'dstopts' }, { h: 'frag', offset: 0 }, { h: 'ah' }] as Ext[]) {
      const f = v6([e], TCP, tcpHdr());
      expect(opaqueIpv6(f.subarray(0, L3 + 40 + 7), L3), e.h).toBeNull();
    }
  });

  it('the payload length bounds the walk, not the buffer: bytes past it (Ethernet padding) are not read', () => {
    // Payload length 4 declares half a Hop-by-Hop header; the rest of the chain is in the buffer.
    expect(opaqueIpv6(v6([{ h: 'hbh' }], TCP, tcpHdr(), 4), L3)).toBeNull();
    // Payload length 0: no next header at all.
    expect(opaqueIpv6(v6([{ h: 'dstopts' }], UDP, udpHdr(1, 4789), 0), L3)).toBeNull();
  });

  it('a UDP header cut short: null (no port to read)', () => {
    const f = v6([], UDP, udpHdr(5353, 4789));
    expect(opaqueIpv6(f.subarray(0, L3 + 40 + 7), L3)).toBeNull();
  });

  it('a TCP header too short for its ports, or an extension length pointing past the end: ipv6-tcp without ports (fail closed)', () => {
    const f = v6([], TCP, tcpHdr());
    expect(opaqueIpv6(f.subarray(0, L3 + 40 + 3), L3)).toEqual(PORTLESS);
    const over = v6([{ h: 'dstopts', len8: 0 }], TCP, tcpHdr());
    over[L3 + 40 + 1] = 255; // Hdr Ext Len 255: 2048 bytes
    expect(opaqueIpv6(over, L3)).toEqual(PORTLESS);
  });

  it('random bytes behind an IPv6 header never throw', () => {
    let s = 12345;
    const rnd = () => ((s = (s * 1103515245 + 12345) >>> 0) >>> 16) & 0xff;
    for (let i = 0; i < 2000; i++) {
      const n = 40 + (rnd() % 120);
      const b = new Uint8Array(L3 + n);
      for (let j = L3; j < b.length; j++) b[j] = rnd();
      b[L3] = 0x60;
      b[L3 + 6] = [0, 43, 44, 51, 60][rnd() % 5]!;
      expect(() => opaqueIpv6(b, L3)).not.toThrow();
    }
  });
});

describe('opaque: IPv6 fragments cannot hide the upper-layer header (RFC 7112, RFC 8200 §4.5)', () => {
  // Original packet: Fragment | DstOpts A (16 bytes, next = DstOpts) | DstOpts B (8, next = TCP) |
  // TCP to port 80. Fragment 1 carries the first 8 bytes of A, fragment 2 the rest.
  const ORIG = Buffer.concat([extBytes({ h: 'dstopts', len8: 1 }, 60), extBytes({ h: 'dstopts' }, TCP), tcpHdr()]);

  it('a first fragment whose chain stops before the upper-layer header: ipv6-tcp without ports, not null', () => {
    const f1 = v6([{ h: 'frag', offset: 0, more: true }], 60, ORIG.subarray(0, 8));
    // v6() wrote Fragment → 60 (the Fragment header names the first header of the fragmentable part).
    expect(opaqueIpv6(f1, L3)).toEqual(PORTLESS);
  });

  it('a later fragment whose Fragment header names an extension header: ipv6-tcp without ports, payload bytes are not read as headers', () => {
    const rest = new Uint8Array(ORIG.subarray(8));
    // Attacker-chosen bytes where the walker would look for a header: "No Next Header" (59).
    rest[0] = 59;
    rest[1] = 0;
    const f2 = v6([{ h: 'frag', offset: 1 }], 60, rest);
    expect(opaqueIpv6(f2, L3)).toEqual(PORTLESS);
    rest[0] = UDP;
    expect(opaqueIpv6(v6([{ h: 'frag', offset: 1 }], 60, rest), L3)).toEqual(PORTLESS);
  });

  it('a later fragment naming AH after the Fragment header: ipv6-tcp without ports', () => {
    expect(opaqueIpv6(v6([{ h: 'frag', offset: 2 }], 51, new Uint8Array(24)), L3)).toEqual(PORTLESS);
  });

  it('a first fragment without the whole UDP header (zero bytes after the Fragment header): ipv6-tcp without ports', () => {
    expect(opaqueIpv6(v6([{ h: 'frag', offset: 0, more: true }], UDP, new Uint8Array(0)), L3)).toEqual(PORTLESS);
    expect(opaqueIpv6(v6([{ h: 'frag', offset: 0, more: true }, { h: 'dstopts' }], UDP, new Uint8Array(0)), L3)).toEqual(PORTLESS);
    // With the header there, it is judged by its port as usual.
    expect(opaqueIpv6(v6([{ h: 'frag', offset: 0, more: true }], UDP, udpHdr(5353, 53)), L3)).toBeNull();
  });

  it('an unfragmented packet with the same cut chain is merely truncated: null (the receiver drops it)', () => {
    expect(opaqueIpv6(v6([], 60, ORIG.subarray(0, 8)), L3)).toBeNull();
  });
});

describe('opaque: IPv4 protocols', () => {
  /** An IPv4 payload at offset 0 of `b` (l4Off 0, end = its length). */
  const v4 = (proto: number, b: Uint8Array, first = true) => opaqueIpv4(b, proto, 0, b.length, first);

  it('IP-in-IP (4), IPv6-in-IP (41), GRE (47): their classes, first fragment or not', () => {
    for (const first of [true, false]) {
      expect(v4(4, new Uint8Array(20), first)).toEqual({ cls: 'ip-in-ip' });
      expect(v4(41, new Uint8Array(40), first)).toEqual({ cls: 'ipv6-in-ip' });
      expect(v4(47, new Uint8Array(4), first)).toEqual({ cls: 'gre' });
    }
  });

  it('AH (51) around TCP or a tunnel: ah; around UDP or ICMP: null', () => {
    for (const inner of [6, 4, 41, 47]) expect(v4(51, extBytes({ h: 'ah' }, inner)), `inner ${inner}`).toEqual({ cls: 'ah' });
    for (const inner of [17, 1, 50]) expect(v4(51, extBytes({ h: 'ah' }, inner)), `inner ${inner}`).toBeNull();
  });

  it('AH cut short (under 8 bytes): null', () => {
    const ah = extBytes({ h: 'ah' }, 6);
    for (let n = 0; n < 8; n++) expect(v4(51, ah.subarray(0, n))).toBeNull();
  });

  it('a later fragment of AH: null (its bytes are the middle of the packet; the first fragment decided)', () => {
    expect(v4(51, extBytes({ h: 'ah' }, 6), false)).toBeNull();
  });

  it('UDP to 4789 is VXLAN, to 6081 Geneve; other ports, 4789 as the source only, later fragments and short headers are null', () => {
    expect(v4(17, udpHdr(40000, 4789))).toEqual({ cls: 'vxlan' });
    expect(v4(17, udpHdr(40000, 6081))).toEqual({ cls: 'geneve' });
    expect(v4(17, udpHdr(40000, 53))).toBeNull();
    expect(v4(17, udpHdr(4789, 40000))).toBeNull();
    expect(v4(17, udpHdr(6081, 40000))).toBeNull();
    expect(v4(17, udpHdr(40000, 4789), false)).toBeNull();
    expect(v4(17, udpHdr(40000, 4789).subarray(0, 7))).toBeNull();
  });

  it('the IPv4 end bounds the UDP header, not the buffer', () => {
    const b = udpHdr(40000, 4789);
    expect(opaqueIpv4(b, 17, 0, 7, true)).toBeNull();
    expect(opaqueIpv4(b, 17, 0, 8, true)).toEqual({ cls: 'vxlan' });
  });

  it('ESP (50), ICMP (1), IGMP (2), SCTP (132), reserved (255): null', () => {
    for (const p of [50, 1, 2, 132, 255]) expect(v4(p, new Uint8Array(32)), `proto ${p}`).toBeNull();
  });
});

describe('opaque: EtherTypes', () => {
  it('PPPoE session (0x8864) and MPLS (0x8847, 0x8848): their classes', () => {
    const b = new Uint8Array(60);
    expect(ETHERTYPE_PPPOE_SESSION).toBe(0x8864);
    expect(opaqueEtherType(b, 0x8864, 14)).toEqual({ cls: 'pppoe' });
    expect(opaqueEtherType(b, ETHERTYPE_MPLS, 14)).toEqual({ cls: 'mpls' });
    expect(opaqueEtherType(b, ETHERTYPE_MPLS_MULTICAST, 14)).toEqual({ cls: 'mpls' });
  });

  it('PPPoE discovery (0x8863), LLDP (0x88cc), an unknown EtherType: null', () => {
    const b = new Uint8Array(60);
    for (const et of [0x8863, 0x88cc, 0x1234, 0x88b5]) expect(opaqueEtherType(b, et, 14), et.toString(16)).toBeNull();
  });

  it('IPv6 is walked: ICMPv6 null, TCP with ports', () => {
    expect(opaqueEtherType(frame(V6_ICMP), ETHERTYPE_IPV6, L3)).toBeNull();
    expect(opaqueEtherType(frame(V6_CHAIN_TCP), ETHERTYPE_IPV6, L3)).toEqual(PORTS);
  });
});
