import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { decodeFrame, type DecodedFrame } from '../../src/wire/frame.js';
import { WireError } from '../../src/wire/error.js';
import { ETHERTYPE_IPV6 } from '../../src/wire/ethernet.js';
import {
  ACK_PADDED,
  ALL,
  ARP_REQ,
  DATA_SACK,
  IGMP_RA,
  QINQ_SYNACK,
  SYN,
  SYN_LO_PARTIAL,
  TCP_FRAG1,
  UDP,
  hex,
} from './fixtures.js';

const ETH = { link: 'ethernet', verifyChecksums: true } as const;
const RAW = { link: 'raw-ipv4', verifyChecksums: true } as const;

function as<K extends DecodedFrame['kind']>(r: DecodedFrame, k: K): Extract<DecodedFrame, { kind: K }> {
  if (r.kind !== k) throw new Error(`expected ${k}, got ${r.kind}${r.kind === 'error' ? ` ${r.reason}: ${r.detail}` : ''}`);
  return r as Extract<DecodedFrame, { kind: K }>;
}

describe('decodeFrame: classification', () => {
  it('SYN → tcp with offsets', () => {
    const b = hex(SYN);
    const f = as(decodeFrame(b, ETH), 'tcp');
    expect([f.l3Off, f.l4Off, f.payloadOff, f.payloadLen, f.ipEnd, f.paddingLen]).toEqual([14, 34, 74, 0, 74, 0]);
    expect(f.eth).not.toBeNull();
    expect(f.tcp.mss()).toBe(65495);
    expect(f.tcp.buf.byteOffset - b.byteOffset).toBe(34); // zero copy
  });
  it('QinQ SYN-ACK → tcp behind two tags', () => {
    const f = as(decodeFrame(hex(QINQ_SYNACK), ETH), 'tcp');
    expect(f.l3Off).toBe(22);
    expect(f.eth!.tagCount).toBe(2);
    expect(f.l4Off).toBe(42);
  });
  it('data segment → tcp; the payload is where the offsets say', () => {
    const b = hex(DATA_SACK);
    const f = as(decodeFrame(b, ETH), 'tcp');
    expect(Buffer.from(b.subarray(f.payloadOff, f.payloadOff + f.payloadLen)).toString()).toBe('hello world');
    expect(f.tcp.sackBlockCount()).toBe(2);
  });
  it('padded pure ACK → tcp with the padding outside the segment', () => {
    const f = as(decodeFrame(hex(ACK_PADDED), ETH), 'tcp');
    expect(f.paddingLen).toBe(6);
    expect(f.tcp.buf.length).toBe(20);
    expect(f.payloadLen).toBe(0);
  });
  it('ARP request → arp', () => {
    const f = as(decodeFrame(hex(ARP_REQ), ETH), 'arp');
    expect(f.l3Off).toBe(14);
    expect(f.arp.targetIp).toBe(0x0a000002);
  });
  it('IGMP and UDP → ipv4-other', () => {
    expect(as(decodeFrame(hex(IGMP_RA), ETH), 'ipv4-other').protocol).toBe(2);
    const u = as(decodeFrame(hex(UDP), ETH), 'ipv4-other');
    expect([u.protocol, u.isFragment, u.l4Off]).toEqual([17, false, 34]);
  });
  it('a TCP segment inside an IPv4 fragment is not decoded as TCP', () => {
    const f = as(decodeFrame(hex(TCP_FRAG1), ETH), 'ipv4-other');
    expect([f.protocol, f.isFragment, f.moreFrags, f.fragOffset]).toEqual([6, true, true, 0]);
    // a non-first fragment whose bytes look like a broken TCP header is still ipv4-other
    const b = hex(TCP_FRAG1);
    b[20] = 0x00; // MF clear
    b[21] = 0x01; // offset 8
    const p = decodeFrame(b, { link: 'ethernet', verifyChecksums: false });
    expect(as(p, 'ipv4-other').fragOffset).toBe(8);
  });
  it('IPv6 and unknown EtherTypes → other', () => {
    const b = hex(SYN);
    b[12] = 0x86;
    b[13] = 0xdd;
    expect(as(decodeFrame(b, ETH), 'other').etherType).toBe(ETHERTYPE_IPV6);
    b[12] = 0x88;
    b[13] = 0xcc; // LLDP
    expect(as(decodeFrame(b, ETH), 'other').etherType).toBe(0x88cc);
  });
  it('raw-ipv4 link: IPv4 from offset 0, IPv6 → other', () => {
    const f = as(decodeFrame(hex(SYN).subarray(14), RAW), 'tcp');
    expect([f.eth, f.l3Off, f.l4Off, f.payloadOff]).toEqual([null, 0, 20, 60]);
    const v6 = new Uint8Array(40);
    v6[0] = 0x60;
    expect(as(decodeFrame(v6, RAW), 'other').etherType).toBe(ETHERTYPE_IPV6);
    expect(as(decodeFrame(new Uint8Array(0), RAW), 'error').reason).toBe('ipv4-truncated');
  });
});

describe('decodeFrame: checksums', () => {
  it('a bad IPv4 header checksum → ipv4-bad-checksum (only when verifying)', () => {
    const b = hex(SYN);
    b[14 + 10] ^= 0x10;
    expect(as(decodeFrame(b, ETH), 'error').reason).toBe('ipv4-bad-checksum');
    expect(decodeFrame(b, { ...ETH, verifyChecksums: false }).kind).toBe('tcp');
  });
  it('a bad TCP checksum → tcp-bad-checksum; the partial loopback capture needs verifyChecksums false', () => {
    const b = hex(DATA_SACK);
    b[b.length - 1] ^= 1;
    const e = as(decodeFrame(b, ETH), 'error');
    expect([e.layer, e.reason]).toEqual(['tcp', 'tcp-bad-checksum']);
    expect(as(decodeFrame(hex(SYN_LO_PARTIAL), ETH), 'error').reason).toBe('tcp-bad-checksum');
    expect(decodeFrame(hex(SYN_LO_PARTIAL), { ...ETH, verifyChecksums: false }).kind).toBe('tcp');
  });
});

describe('decodeFrame: malformed', () => {
  const mut = (h: string, f: (b: Uint8Array) => void): Uint8Array => {
    const b = hex(h);
    f(b);
    return b;
  };
  const cases: Array<[string, string, string, Uint8Array]> = [
    ['runt frame', 'ethernet', 'ethernet-truncated', hex('ffffffffffff')],
    ['bad IHL', 'ipv4', 'ipv4-bad-ihl', mut(SYN, (b) => (b[14] = 0x43))],
    ['bad version', 'ipv4', 'ipv4-bad-version', mut(SYN, (b) => (b[14] = 0x55))],
    ['total length lies', 'ipv4', 'ipv4-total-length-exceeds-frame', mut(SYN, (b) => (b[17] = 0x50))],
    ['total length below header', 'ipv4', 'ipv4-total-length-below-header', mut(SYN, (b) => (b[17] = 0x10))],
    ['TCP data offset < 5', 'tcp', 'tcp-bad-data-offset', mut(SYN, (b) => (b[46] = 0x40))],
    ['TCP data offset past the segment', 'tcp', 'tcp-data-offset-exceeds-segment', mut(SYN, (b) => (b[46] = 0xf0))],
    ['TCP option length 0', 'tcp', 'tcp-option-bad-length', mut(SYN, (b) => (b[55] = 0))],
    ['TCP option length 1', 'tcp', 'tcp-option-bad-length', mut(SYN, (b) => (b[55] = 1))],
    ['TCP option past the header', 'tcp', 'tcp-option-overflow', mut(SYN, (b) => (b[72] = 4))],
    ['ARP with a bad hardware type', 'arp', 'arp-bad-hardware-type', mut(ARP_REQ, (b) => (b[15] = 6))],
  ];
  it.each(cases)('%s → %s %s', (_n, layer, reason, b) => {
    const e = as(decodeFrame(b, { link: 'ethernet', verifyChecksums: false }), 'error');
    expect(e).toBeInstanceOf(WireError);
    expect(e.layer).toBe(layer);
    expect(e.reason).toBe(reason);
    expect(e.detail.length).toBeGreaterThan(0);
  });

  it('every truncation of every fixture is an error below its end, never a throw', () => {
    for (const [name, h, end] of ALL) {
      const b = hex(h);
      for (let n = 0; n <= b.length; n++) {
        for (const verifyChecksums of [true, false]) {
          const r = decodeFrame(b.subarray(0, n), { link: 'ethernet', verifyChecksums });
          if (n < end) expect(r.kind, `${name} @${n}`).toBe('error');
          else expect(r.kind, `${name} @${n}`).not.toBe('error');
        }
      }
      // and at the raw-ipv4 level
      if (name !== 'ARP_REQ') {
        const l3 = b.subarray(name === 'QINQ_SYNACK' ? 22 : 14);
        const l3end = end - (name === 'QINQ_SYNACK' ? 22 : 14);
        for (let n = 0; n < l3end; n++) expect(decodeFrame(l3.subarray(0, n), RAW).kind).toBe('error');
      }
    }
  });

  it('never throws on random bytes or random mutations of the fixtures (property)', () => {
    const fixtures = ALL.map(([, h]) => hex(h));
    fc.assert(
      fc.property(
        fc.nat({ max: fixtures.length - 1 }),
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 8 }),
        fc.nat(),
        fc.boolean(),
        (i, edits, cut, raw) => {
          const b = fixtures[i]!.slice();
          for (const [p, v] of edits) b[p % b.length] = v;
          const buf = b.subarray(0, cut % (b.length + 1));
          const r = decodeFrame(raw ? buf.subarray(Math.min(14, buf.length)) : buf, {
            link: raw ? 'raw-ipv4' : 'ethernet',
            verifyChecksums: (cut & 1) === 0,
          });
          if (r.kind === 'tcp') {
            expect(r.payloadOff + r.payloadLen).toBe(r.ipEnd);
            expect(r.ipEnd).toBeLessThanOrEqual(buf.length);
            // every accessor works once decoded
            r.tcp.options();
            r.tcp.mss();
            r.tcp.sackBlockCount();
          }
        },
      ),
      { numRuns: 5000 },
    );
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 128 }), (b) => {
        expect(() => decodeFrame(b, ETH)).not.toThrow();
        expect(() => decodeFrame(b, RAW)).not.toThrow();
      }),
      { numRuns: 3000 },
    );
  });
});
