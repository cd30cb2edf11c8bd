import { describe, it, expect } from 'vitest';
import { WireError } from '../../src/wire/error.js';
import { IP_PROTO_TCP, Ipv4Packet, Ipv4Repr, ipv4ToString, parseIpv4, sourceRoute } from '../../src/wire/ipv4.js';
import { csumReplace16, csumReplace32 } from '../../src/wire/checksum.js';
import { ACK_PADDED, IGMP_RA, SYN, TCP_FRAG1, hex, refChecksum, toHex } from './fixtures.js';

const l3 = (h: string): Uint8Array => hex(h).subarray(14);

function ok(b: Uint8Array): Ipv4Packet {
  const p = Ipv4Packet.parse(b);
  if (p instanceof WireError) throw new Error(p.reason);
  return p;
}

describe('ipv4: deconstruct', () => {
  it('the SYN header: every field', () => {
    const p = ok(l3(SYN));
    expect(p.version).toBe(4);
    expect(p.headerLen).toBe(20);
    expect(p.dscp).toBe(0);
    expect(p.ecn).toBe(0);
    expect(p.totalLen).toBe(60);
    expect(p.ident).toBe(0x662b);
    expect(p.dontFrag).toBe(true);
    expect(p.moreFrags).toBe(false);
    expect(p.fragOffset).toBe(0);
    expect(p.isFragment).toBe(false);
    expect(p.ttl).toBe(64);
    expect(p.protocol).toBe(IP_PROTO_TCP);
    expect(p.checksum).toBe(0xd68e);
    expect(p.verifyChecksum()).toBe(true);
    expect(ipv4ToString(p.src)).toBe('127.0.0.1');
    expect(p.dst).toBe(0x7f000001);
    expect(p.options.length).toBe(0);
    expect(p.payload.length).toBe(40);
    expect(p.paddingLen).toBe(0);
  });
  it('a header with options (Router Alert) keeps them raw', () => {
    const p = ok(l3(IGMP_RA));
    expect(p.headerLen).toBe(24);
    expect(toHex(p.options)).toBe('94040000');
    expect(p.dscp).toBe(48);
    expect(p.ttl).toBe(1);
    expect(p.protocol).toBe(2);
    expect(p.verifyChecksum()).toBe(true);
    expect(toHex(p.payload)).toBe('16000904e00000fb');
  });
  it('trailing Ethernet padding beyond the total length is allowed and reported', () => {
    const p = ok(l3(ACK_PADDED));
    expect(p.totalLen).toBe(40);
    expect(p.buf.length).toBe(46);
    expect(p.paddingLen).toBe(6);
    expect(p.payload.length).toBe(20);
  });
  it('a first fragment: MF set, offset 0, isFragment', () => {
    const p = ok(l3(TCP_FRAG1));
    expect(p.moreFrags).toBe(true);
    expect(p.dontFrag).toBe(false);
    expect(p.fragOffset).toBe(0);
    expect(p.isFragment).toBe(true);
  });
  it('fragment offset is reported in bytes', () => {
    const b = l3(TCP_FRAG1).slice();
    b[6] = 0x00; // MF clear
    b[7] = 0x03; // offset 3 units: last fragment at 24
    const p = ok(b);
    expect(p.fragOffset).toBe(24);
    expect(p.isFragment).toBe(true);
    expect(p.verifyChecksum()).toBe(false);
  });
});

describe('ipv4: construct', () => {
  it.each([
    ['SYN', SYN],
    ['IGMP_RA', IGMP_RA],
    ['TCP_FRAG1', TCP_FRAG1],
    ['ACK_PADDED', ACK_PADDED],
  ])('%s: repr re-encodes the header byte-exact', (_n, h) => {
    const p = ok(l3(h));
    const r = Ipv4Repr.parse(p);
    expect(r).toBeInstanceOf(Ipv4Repr);
    const out = new Uint8Array(p.headerLen);
    expect((r as Ipv4Repr).emit(out)).toBe(p.headerLen);
    expect(toHex(out)).toBe(toHex(p.buf.subarray(0, p.headerLen)));
  });
  it('fillChecksum equals an independent RFC 1071 computation', () => {
    const b = l3(IGMP_RA).slice();
    const p = ok(b);
    p.setTtl(9);
    p.setSrc(parseIpv4('192.168.7.9')!);
    p.fillChecksum();
    const z = b.slice(0, 24);
    z[10] = 0;
    z[11] = 0;
    expect(p.checksum).toBe(refChecksum(z));
    expect(p.verifyChecksum()).toBe(true);
  });
  it('in-place NAT of the source with an RFC 1624 update verifies', () => {
    const b = l3(SYN).slice();
    const p = ok(b);
    const old = p.src;
    const nu = parseIpv4('203.0.113.77')!;
    p.setSrc(nu);
    p.setChecksum(csumReplace32(p.checksum, old, nu));
    expect(p.verifyChecksum()).toBe(true);
    const oldTtlWord = (b[8]! << 8) | b[9]!;
    p.setTtl(p.ttl - 1);
    p.setChecksum(csumReplace16(p.checksum, oldTtlWord, (b[8]! << 8) | b[9]!));
    expect(p.verifyChecksum()).toBe(true);
  });
  it('emit checks caller invariants: options length, buffer size, total length', () => {
    const base = { src: 1, dst: 2, protocol: 6, payloadLen: 0 };
    expect(() => new Ipv4Repr({ ...base, options: new Uint8Array(3) }).emit(new Uint8Array(60))).toThrow(RangeError);
    expect(() => new Ipv4Repr({ ...base, options: new Uint8Array(44) }).emit(new Uint8Array(80))).toThrow(RangeError);
    expect(() => new Ipv4Repr(base).emit(new Uint8Array(19))).toThrow(RangeError);
    expect(() => new Ipv4Repr({ ...base, payloadLen: 65516 }).emit(new Uint8Array(20))).toThrow(RangeError);
    const out = new Uint8Array(20);
    new Ipv4Repr(base).emit(out);
    expect(ok(new Uint8Array([...out])).verifyChecksum()).toBe(true);
  });
});

describe('ipv4: truncated and malformed', () => {
  it('every truncation of every IPv4 fixture is rejected without throwing', () => {
    for (const h of [SYN, IGMP_RA, TCP_FRAG1, ACK_PADDED]) {
      const b = l3(h);
      const tl = ok(b).totalLen;
      for (let n = 0; n < tl; n++) {
        const r = Ipv4Packet.parse(b.subarray(0, n));
        expect(r).toBeInstanceOf(WireError);
        expect((r as WireError).layer).toBe('ipv4');
      }
      for (let n = tl; n <= b.length; n++) expect(Ipv4Packet.parse(b.subarray(0, n))).toBeInstanceOf(Ipv4Packet);
    }
  });
  const cases: Array<[string, (b: Uint8Array) => Uint8Array, string]> = [
    ['version 6', (b) => ((b[0] = 0x65), b), 'ipv4-bad-version'],
    ['IHL 4', (b) => ((b[0] = 0x44), b), 'ipv4-bad-ihl'],
    ['IHL 0', (b) => ((b[0] = 0x40), b), 'ipv4-bad-ihl'],
    ['IHL 15 on a 24-byte packet', (b) => ((b[0] = 0x4f), b.subarray(0, 24)), 'ipv4-header-exceeds-frame'],
    ['total length 19', (b) => ((b[2] = 0), (b[3] = 19), b), 'ipv4-total-length-below-header'],
    ['total length 1000 (lies)', (b) => ((b[2] = 0x03), (b[3] = 0xe8), b), 'ipv4-total-length-exceeds-frame'],
    ['total length 61 (one byte too many)', (b) => ((b[3] = 61), b), 'ipv4-total-length-exceeds-frame'],
    ['19 bytes', (b) => b.subarray(0, 19), 'ipv4-truncated'],
  ];
  it.each(cases)('%s → %s', (_n, mutate, reason) => {
    const r = Ipv4Packet.parse(mutate(l3(SYN).slice()));
    expect(r).toBeInstanceOf(WireError);
    expect((r as WireError).reason).toBe(reason);
  });
  it('a bad header checksum is ipv4-bad-checksum from the repr (and ignored when not verifying)', () => {
    const b = l3(SYN).slice();
    b[11] ^= 1;
    const p = ok(b);
    expect((Ipv4Repr.parse(p) as WireError).reason).toBe('ipv4-bad-checksum');
    expect(Ipv4Repr.parse(p, false)).toBeInstanceOf(Ipv4Repr);
  });
});

describe('ipv4: address helpers', () => {
  it('round trip and strictness', () => {
    expect(parseIpv4('0.0.0.0')).toBe(0);
    expect(parseIpv4('255.255.255.255')).toBe(0xffff_ffff);
    expect(ipv4ToString(0xffff_ffff)).toBe('255.255.255.255');
    expect(parseIpv4('10.0.1.2')).toBe(0x0a000102);
    for (const bad of ['', '1.2.3', '1.2.3.4.5', '256.0.0.1', '01.2.3.4', '1.2.3.4 ', ' 1.2.3.4', 'a.b.c.d', '1..2.3', '-1.2.3.4', '1.2.3.1e2', '0x1.2.3.4']) {
      expect(parseIpv4(bad), bad).toBeNull();
    }
  });
});

describe('ipv4: source routes (RFC 791 §3.1)', () => {
  /** A 20-byte header (IHL from the options) to 10.0.0.99 with `opts` (padded to a multiple of 4 with EOL). */
  const withOptions = (opts: number[]): Uint8Array => {
    const ol = Math.ceil(opts.length / 4) * 4;
    const b = new Uint8Array(20 + ol);
    b.set([0x45 + ol / 4, 0, 0, 20 + ol, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 99]);
    b.set(opts, 20);
    expect(Ipv4Packet.check(b)).toBeNull();
    return b;
  };
  const A = [10, 0, 0, 7];
  const B = [10, 0, 0, 2];
  const route = (b: Uint8Array) => sourceRoute(b);

  it('a loose or strict route not yet done: its addresses from the pointer on; done (pointer past the length): none', () => {
    expect(route(withOptions([0x83, 7, 4, ...B]))).toEqual([0x0a000002]);
    expect(route(withOptions([0x89, 11, 4, ...A, ...B]))).toEqual([0x0a000007, 0x0a000002]);
    expect(route(withOptions([0x83, 11, 8, ...A, ...B]))).toEqual([0x0a000002]); // half done
    expect(route(withOptions([0x83, 11, 12, ...A, ...B]))).toBeNull();
    expect(route(withOptions([0x89, 7, 8, ...B]))).toBeNull();
  });

  it('found after NOPs and other options, not after EOL; none without options or with Record Route / Timestamp', () => {
    expect(route(withOptions([1, 1, 0x07, 7, 4, 0, 0, 0, 0, 0x83, 7, 4, ...B]))).toEqual([0x0a000002]);
    expect(route(withOptions([0, 0x83, 7, 4, ...B]))).toBeNull();
    expect(route(withOptions([0x07, 11, 4, 0, 0, 0, 0, 0, 0, 0, 0]))).toBeNull();
    expect(route(withOptions([0x44, 12, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0]))).toBeNull();
    expect(route(withOptions([]))).toBeNull();
  });

  it('read where Linux reads (ip_options_rcv_srr: from pointer - 1, unaligned too), plus the last four bytes and the last aligned address', () => {
    expect(route(withOptions([0x83, 8, 5, 0, ...B]))).toEqual([0x0a000002, 0x000a0000]);
    expect(route(withOptions([0x83, 12, 5, 0, ...A, ...B]))).toEqual([0x0a000007, 0x0a000002, 0x070a0000]);
    // A ragged length: Linux visits B, and the packet dies at the next hop; the tail counts too.
    expect(route(withOptions([0x83, 9, 4, ...B, 0, 0]))).toEqual([0x0a000002, 0x00020000]);
    // No whole address to go: the header's destination (in flight all the same).
    expect(route(withOptions([0x83, 3, 3]))).toEqual([0x0a000063]);
  });

  it('at an offset in a larger buffer (the frame decoder passes the IPv4 packet itself)', () => {
    const p = withOptions([0x83, 7, 4, ...B]);
    const framed = new Uint8Array(14 + p.length);
    framed.set(p, 14);
    expect(sourceRoute(framed, 14)).toEqual([0x0a000002]);
  });
});
