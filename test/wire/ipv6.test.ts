/** IPv6 in wire/: RFC 5952 text out, strict text in, the extension-header walk and its findings, the pseudo-header sum. */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { finish, sum16 } from '../../src/wire/checksum.js';
import {
  IP_PROTO_DSTOPTS,
  IP_PROTO_FRAGMENT,
  IP_PROTO_HOPOPTS,
  IP_PROTO_ROUTING,
  IPV6_MAX_EXT_HEADERS,
  Ipv6Packet,
  ipv6PseudoHeaderSum,
  ipv6ToString,
  parseIpv6,
  walkIpv6,
} from '../../src/wire/ipv6.js';

const TCP = 6;

describe('ipv6: addresses as text', () => {
  const a = (s: string) => parseIpv6(s)!;
  it.each([
    ['2001:db8:0:0:0:0:0:1', '2001:db8::1'],
    ['2001:0DB8:0000:0000:0001:0000:0000:0001', '2001:db8::1:0:0:1'], // RFC 5952 §4.2.3: the first of equal runs
    ['2001:db8:0:0:1:0:0:0', '2001:db8:0:0:1::'], // the longest run
    ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'], // §4.2.2: one zero group is not shortened
    ['0:0:0:0:0:0:0:0', '::'],
    ['0:0:0:0:0:0:0:1', '::1'],
    ['fe80:0:0:0:0:0:0:1', 'fe80::1'],
    ['::ffff:192.0.2.1', '::ffff:192.0.2.1'], // §5: IPv4-mapped
    ['64:ff9b::192.0.2.33', '64:ff9b::c000:221'],
    ['fd00:200::2', 'fd00:200::2'],
  ])('%s is written %s', (text, want) => {
    expect(ipv6ToString(a(text))).toBe(want);
  });

  it.each(['', ':', ':::', '1::2::3', '12345::', 'g::', '1:2:3:4:5:6:7:8:9', '1:2:3:4:5:6:7', '1::2:3:4:5:6:7:8', 'fe80::1%eth0', '[::1]', '::1.2.3', '::1.2.3.4.5', '1.2.3.4::', ' ::1', '::01.2.3.4'])(
    'refuses %j',
    (text) => {
      expect(parseIpv6(text)).toBeNull();
    },
  );

  it('text and bytes round-trip (fast-check)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 16, maxLength: 16 }), fc.integer({ min: 0, max: 7 }), (b, zeros) => {
        // Runs of zero groups are what makes the text interesting: put some in.
        for (let i = 0; i < zeros; i++) b[2 * ((i * 3) % 8)] = b[2 * ((i * 3) % 8) + 1] = 0;
        const t = ipv6ToString(b);
        expect(Array.from(parseIpv6(t)!)).toEqual(Array.from(b));
        expect(t).toBe(t.toLowerCase());
        expect(t.split('::').length).toBeLessThanOrEqual(2);
      }),
      { numRuns: 500, seed: 15 },
    );
  });
});

/** An IPv6 packet: fixed header, extension headers as given (their Next Header bytes filled in), then `upper` bytes. */
function packet(exts: { type: number; body: number[] }[], upperProto: number, upper: number[], o: { payloadLength?: number } = {}): Uint8Array {
  const chain: number[] = [];
  exts.forEach((e, i) => {
    const next = i + 1 < exts.length ? exts[i + 1]!.type : upperProto;
    chain.push(next, ...e.body);
  });
  const payload = [...chain, ...upper];
  const b = new Uint8Array(40 + payload.length);
  b[0] = 0x60;
  const pl = o.payloadLength ?? payload.length;
  b[4] = pl >>> 8;
  b[5] = pl & 0xff;
  b[6] = exts.length > 0 ? exts[0]!.type : upperProto;
  b[7] = 64;
  b.set(parseIpv6('2001:db8::1')!, 8);
  b.set(parseIpv6('2001:db8::2')!, 24);
  b.set(payload, 40);
  return b;
}
/** Options header body (after Next Header): length byte, then TLVs padded to 8n − 2 bytes. */
const opts = (tlvs: number[]): number[] => {
  const n = Math.ceil((tlvs.length + 2) / 8) * 8 - 2;
  const pad = n - tlvs.length;
  const padding = pad === 0 ? [] : pad === 1 ? [0] : [1, pad - 2, ...Array<number>(pad - 2).fill(0)];
  return [(n + 2) / 8 - 1, ...tlvs, ...padding];
};
const frag = (offset: number, more: boolean): number[] => [0, (offset >>> 8) & 0xff, (offset & 0xf8) | (more ? 1 : 0), 0, 0, 0, 7];
const tcpHeader = Array<number>(20).fill(0);

describe('ipv6: the extension-header chain', () => {
  it('no extension headers: TCP right after the fixed header', () => {
    const b = packet([], TCP, tcpHeader);
    expect(Ipv6Packet.parse(b)!.nextHeader).toBe(TCP);
    expect(walkIpv6(b, 0)).toMatchObject({ error: null, drop: null, upperProto: TCP, upperOff: 40, headers: 0, fragment: null, finalDstOff: 24 });
  });

  it('Hop-by-Hop, Destination Options (Pad1, PadN, router alert), then TCP', () => {
    const b = packet([{ type: IP_PROTO_HOPOPTS, body: opts([5, 2, 0, 0]) }, { type: IP_PROTO_DSTOPTS, body: opts([0, 1, 1, 0]) }], TCP, tcpHeader);
    expect(walkIpv6(b, 0)).toMatchObject({ error: null, drop: null, upperProto: TCP, upperOff: 56, headers: 2 });
  });

  it('an unknown option whose action bits say "discard" is a finding; one that says "skip" is not', () => {
    const discard = packet([{ type: IP_PROTO_DSTOPTS, body: opts([0x80 | 0x1e, 0]) }], TCP, tcpHeader);
    expect(walkIpv6(discard, 0)).toMatchObject({ drop: 'ipv6-option-unknown', upperProto: TCP });
    const skip = packet([{ type: IP_PROTO_DSTOPTS, body: opts([0x1e, 0]) }], TCP, tcpHeader);
    expect(walkIpv6(skip, 0).drop).toBeNull();
    const bad = packet([{ type: IP_PROTO_DSTOPTS, body: [0, 1, 9, 0, 0, 0, 0] }], TCP, tcpHeader);
    expect(walkIpv6(bad, 0).drop).toBe('ipv6-option-bad');
  });

  it('Hop-by-Hop after another header (RFC 8200 §4.1)', () => {
    const b = packet([{ type: IP_PROTO_DSTOPTS, body: opts([]) }, { type: IP_PROTO_HOPOPTS, body: opts([]) }], TCP, tcpHeader);
    expect(walkIpv6(b, 0)).toMatchObject({ drop: 'ipv6-hbh-not-first', upperProto: TCP });
  });

  it('Routing header type 0 with segments left is dropped (RFC 5095); type 2 names the final destination', () => {
    const seg = Array.from(parseIpv6('2001:db8::99')!);
    const rh0 = packet([{ type: IP_PROTO_ROUTING, body: [2, 0, 1, 0, 0, 0, 0, ...seg] }], TCP, tcpHeader);
    expect(walkIpv6(rh0, 0)).toMatchObject({ drop: 'ipv6-rh0', upperProto: TCP });
    const rh2 = packet([{ type: IP_PROTO_ROUTING, body: [2, 2, 1, 0, 0, 0, 0, ...seg] }], TCP, tcpHeader);
    const w = walkIpv6(rh2, 0);
    expect(w.drop).toBeNull();
    expect(ipv6ToString(rh2, w.finalDstOff)).toBe('2001:db8::99');
  });

  it('a first fragment with the TCP header, a later fragment, an atomic fragment', () => {
    const first = packet([{ type: IP_PROTO_FRAGMENT, body: frag(0, true) }], TCP, [...tcpHeader, 1, 2, 3, 4]);
    expect(walkIpv6(first, 0)).toMatchObject({ drop: null, upperProto: TCP, fragment: { offset: 0, more: true, id: 7 } });
    const later = packet([{ type: IP_PROTO_FRAGMENT, body: frag(1448, false) }], TCP, [1, 2, 3]);
    expect(walkIpv6(later, 0)).toMatchObject({ drop: null, upperProto: TCP, upperOff: 48, fragment: { offset: 1448, more: false } });
    const atomic = packet([{ type: IP_PROTO_FRAGMENT, body: frag(0, false) }], TCP, tcpHeader);
    expect(walkIpv6(atomic, 0)).toMatchObject({ drop: null, upperProto: TCP, fragment: { offset: 0, more: false } });
  });

  it('RFC 7112: a first fragment without the whole chain and upper-layer header is a finding', () => {
    const cutTcp = packet([{ type: IP_PROTO_FRAGMENT, body: frag(0, true) }], TCP, Array<number>(8).fill(0));
    expect(walkIpv6(cutTcp, 0).drop).toBe('ipv6-first-fragment-incomplete');
    // The chain itself goes on in the next fragment.
    const cutChain = packet([{ type: IP_PROTO_FRAGMENT, body: frag(0, true) }], IP_PROTO_DSTOPTS, [TCP, 8, 0, 0, 0, 0, 0, 0]);
    const w = walkIpv6(cutChain, 0);
    expect(w).toMatchObject({ error: 'ipv6-chain-truncated', drop: 'ipv6-first-fragment-incomplete' });
    // Fragment data not a multiple of 8 bytes although more fragments follow.
    const odd = packet([{ type: IP_PROTO_FRAGMENT, body: frag(0, true) }], TCP, [...tcpHeader, 1, 2, 3]);
    expect(walkIpv6(odd, 0).drop).toBe('ipv6-fragment-bad');
  });

  it('bounds: more headers than IPV6_MAX_EXT_HEADERS, a chain past the packet, too many bytes', () => {
    const many = packet(Array.from({ length: IPV6_MAX_EXT_HEADERS + 1 }, () => ({ type: IP_PROTO_DSTOPTS, body: opts([]) })), TCP, tcpHeader);
    expect(walkIpv6(many, 0).error).toBe('ipv6-chain-too-long');
    const eight = packet(Array.from({ length: IPV6_MAX_EXT_HEADERS }, () => ({ type: IP_PROTO_DSTOPTS, body: opts([]) })), TCP, tcpHeader);
    expect(walkIpv6(eight, 0)).toMatchObject({ error: null, headers: IPV6_MAX_EXT_HEADERS, upperProto: TCP });
    const past = packet([{ type: IP_PROTO_DSTOPTS, body: [4, 0, 0, 0, 0, 0, 0] }], TCP, tcpHeader);
    expect(walkIpv6(past, 0).error).toBe('ipv6-chain-truncated');
    const big = [...opts(Array<number>(1100).fill(0))];
    const huge = packet([{ type: IP_PROTO_DSTOPTS, body: big }, { type: IP_PROTO_DSTOPTS, body: opts([]) }], TCP, tcpHeader);
    expect(walkIpv6(huge, 0).error).toBe('ipv6-chain-too-big');
    // The payload length bounds the walk, not the buffer.
    const short = packet([{ type: IP_PROTO_DSTOPTS, body: opts([]) }], TCP, tcpHeader, { payloadLength: 4 });
    expect(walkIpv6(short, 0).error).toBe('ipv6-chain-truncated');
  });

  it('Ipv6Packet.parse refuses a short buffer, another version, a payload length past the buffer', () => {
    const b = packet([], TCP, tcpHeader);
    expect(Ipv6Packet.parse(b.subarray(0, 39))).toBeNull();
    expect(Ipv6Packet.parse(packet([], TCP, tcpHeader, { payloadLength: 21 }))).toBeNull();
    const v4 = b.slice();
    v4[0] = 0x45;
    expect(Ipv6Packet.parse(v4)).toBeNull();
    const p = Ipv6Packet.parse(b)!;
    expect([p.payloadLength, p.hopLimit, ipv6ToString(p.src), ipv6ToString(p.dst)]).toEqual([20, 64, '2001:db8::1', '2001:db8::2']);
  });
});

describe('ipv6: the pseudo-header sum (RFC 8200 §8.1)', () => {
  it('equals the sum of the pseudo-header laid out byte by byte', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 40, maxLength: 40 }), fc.integer({ min: 0, max: 0x1_0000_0 }), fc.integer({ min: 0, max: 255 }), (hdr, len, proto) => {
        const ph = new Uint8Array(40);
        ph.set(hdr.subarray(8, 24), 0);
        ph.set(hdr.subarray(24, 40), 16);
        ph[32] = len >>> 24;
        ph[33] = (len >>> 16) & 0xff;
        ph[34] = (len >>> 8) & 0xff;
        ph[35] = len & 0xff;
        ph[39] = proto;
        expect(finish(ipv6PseudoHeaderSum(hdr, 8, 24, proto, len))).toBe(finish(sum16(ph)));
      }),
      { numRuns: 300, seed: 8200 },
    );
  });
});
