import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { WireError } from '../../src/wire/error.js';
import { fold16, ipv4PseudoHeaderSum, sum16, finish } from '../../src/wire/checksum.js';
import {
  TcpFlag,
  TcpOptionKind,
  TcpRepr,
  TcpSegment,
  emitTcpOptions,
  tcpFlagsToString,
  tcpOptionsLen,
  type TcpOption,
} from '../../src/wire/tcp.js';
import { DATA_SACK, QINQ_SYNACK, SYN, hex, refTcpChecksum, toHex } from './fixtures.js';

const LO = 0x7f000001;
const A = 0x0a000102; // 10.0.1.2 (DATA_SACK source)
const B = 0x0a000001; // 10.0.0.1

/** The TCP segment of a frame (Ethernet header + 20-byte IPv4 header skipped). */
function seg(h: string, l2 = 14): Uint8Array {
  return hex(h).slice(l2 + 20);
}
function ok(b: Uint8Array): TcpSegment {
  const s = TcpSegment.parse(b);
  if (s instanceof WireError) throw new Error(`${s.reason}: ${s.detail}`);
  return s;
}
/** A segment with the given option bytes (length a multiple of 4) and payload. */
function withOptions(opts: string, payload = ''): Uint8Array {
  const o = hex(opts);
  const b = new Uint8Array(20 + o.length + payload.length / 2);
  b.set(hex('04d2 0050 00000001 00000000 0002 ffff 0000 0000'));
  b[12] = ((20 + o.length) / 4) << 4;
  b.set(o, 20);
  b.set(hex(payload), 20 + o.length);
  return b;
}
function reencode(s: TcpSegment, src: number, dst: number): Uint8Array {
  const r = TcpRepr.parse(s) as TcpRepr;
  const out = new Uint8Array(r.bufferLen());
  r.emit(out, src, dst);
  return out;
}

describe('tcp: deconstruct the SYN', () => {
  const s = ok(seg(SYN));
  it('header fields', () => {
    expect(s.srcPort).toBe(34228);
    expect(s.dstPort).toBe(45678);
    expect(s.seq).toBe(875673674);
    expect(s.ack).toBe(0);
    expect(s.dataOffset).toBe(10);
    expect(s.headerLen).toBe(40);
    expect(s.flags).toBe(TcpFlag.SYN);
    expect(tcpFlagsToString(s.flags)).toBe('SYN');
    expect(s.window).toBe(65495);
    expect(s.checksum).toBe(0xbe48);
    expect(s.urgent).toBe(0);
    expect(s.payloadLen).toBe(0);
    expect(s.seqLen).toBe(1);
    expect(s.verifyChecksum(LO, LO)).toBe(true);
    expect(s.verifyChecksum(LO, LO + 1)).toBe(false);
  });
  it('all options, in order', () => {
    expect(s.options()).toEqual([
      { kind: 'mss', mss: 65495 },
      { kind: 'sack-permitted' },
      { kind: 'timestamps', tsval: 1745028372, tsecr: 0 },
      { kind: 'nop' },
      { kind: 'wscale', shift: 10 },
    ]);
    expect(s.mss()).toBe(65495);
    expect(s.windowScale()).toBe(10);
    expect(s.sackPermitted()).toBe(true);
    expect(s.tsval()).toBe(1745028372);
    expect(s.tsecr()).toBe(0);
    expect(s.sackOptionOffset()).toBe(-1);
    expect(s.sackBlockCount()).toBe(0);
  });
  it('SYN-ACK (behind QinQ): flags and echo', () => {
    const t = ok(seg(QINQ_SYNACK, 22));
    expect(t.flags).toBe(TcpFlag.SYN | TcpFlag.ACK);
    expect(tcpFlagsToString(t.flags)).toBe('SYN|ACK');
    expect(t.ack).toBe(875673675);
    expect(t.tsecr()).toBe(1745028372);
    expect(t.verifyChecksum(LO, LO)).toBe(true);
  });
});

describe('tcp: deconstruct a data segment with SACK blocks', () => {
  const s = ok(seg(DATA_SACK));
  it('fields, payload, options', () => {
    expect(s.headerLen).toBe(52);
    expect(s.flags).toBe(TcpFlag.PSH | TcpFlag.ACK);
    expect(Buffer.from(s.payload).toString()).toBe('hello world');
    expect(s.seqLen).toBe(11);
    expect(s.verifyChecksum(A, B)).toBe(true);
    expect(s.options()).toEqual([
      { kind: 'nop' },
      { kind: 'nop' },
      { kind: 'timestamps', tsval: 0xd7e3220d, tsecr: 0x68030515 },
      { kind: 'nop' },
      { kind: 'nop' },
      {
        kind: 'sack',
        blocks: [
          { left: 875673700, right: 875674700 },
          { left: 875675700, right: 875676700 },
        ],
      },
    ]);
  });
  it('SACK option offset and blocks without allocation', () => {
    expect(s.sackOptionOffset()).toBe(34);
    expect(s.findOption(TcpOptionKind.SACK)).toBe(34);
    expect(s.findOption(TcpOptionKind.TIMESTAMPS)).toBe(22);
    expect(s.findOption(TcpOptionKind.MSS)).toBe(-1);
    expect(s.sackBlockCount()).toBe(2);
    expect(s.sackLeft(0)).toBe(875673700);
    expect(s.sackRight(1)).toBe(875676700);
    expect(() => s.sackLeft(2)).toThrow(RangeError);
    expect(() => s.sackRight(-1)).toThrow(RangeError);
  });
});

describe('tcp: construct (decode → encode is the identity)', () => {
  it.each([
    ['SYN', seg(SYN), LO, LO],
    ['SYN-ACK', seg(QINQ_SYNACK, 22), LO, LO],
    ['DATA_SACK', seg(DATA_SACK), A, B],
  ] as const)('%s re-encodes byte-exact with its checksum', (_n, b, src, dst) => {
    expect(toHex(reencode(ok(b), src, dst))).toBe(toHex(b));
  });
  it('EOL position and non-zero bytes after it are kept', () => {
    const b = withOptions('020405b4 00aabbcc');
    const s = ok(b);
    expect(s.options()).toEqual([{ kind: 'mss', mss: 1460 }, { kind: 'eol', padding: hex('aabbcc') }]);
    expect(s.mss()).toBe(1460);
    expect(toHex(reencode(s, A, B).subarray(20))).toBe('020405b400aabbcc');
  });
  it('options after an EOL are not options (RFC 9293: EOL ends the list)', () => {
    const s = ok(withOptions('00020405b4000000'));
    expect(s.mss()).toBeNull();
    expect(s.options()).toEqual([{ kind: 'eol', padding: hex('020405b4000000') }]);
  });
  it('unknown kinds and known kinds with unfitting lengths are kept raw', () => {
    // MPTCP (30) len 6, MSS with len 3 (ignored, like Linux), wscale len 4, SACK len 9, TS len 8, NOP
    const opts = '1e06 00112233  020305  03040708  0509 01020304050607  0808 010203040506  01';
    const b = withOptions(opts.replace(/ /g, '') + '00');
    const s = ok(b);
    const o = s.options();
    expect(o.slice(0, 6)).toEqual([
      { kind: 'unknown', code: 30, data: hex('00112233') },
      { kind: 'unknown', code: 2, data: hex('05') },
      { kind: 'unknown', code: 3, data: hex('0708') },
      { kind: 'unknown', code: 5, data: hex('01020304050607') },
      { kind: 'unknown', code: 8, data: hex('010203040506') },
      { kind: 'nop' },
    ]);
    expect(s.mss()).toBeNull();
    expect(s.windowScale()).toBeNull();
    expect(s.sackOptionOffset()).toBe(-1);
    expect(s.tsval()).toBeNull();
    expect(toHex(reencode(s, A, B))).toBe(toHex(((x) => (ok(x).fillChecksum(A, B), x))(b.slice())));
  });
  it('a list built from scratch is padded with zeros to a multiple of 4', () => {
    const opts: TcpOption[] = [
      { kind: 'mss', mss: 1460 },
      { kind: 'wscale', shift: 7 },
    ];
    expect(tcpOptionsLen(opts)).toBe(8);
    const r = new TcpRepr({ srcPort: 1, dstPort: 2, seq: 0xffff_ffff, flags: TcpFlag.SYN, window: 1024, options: opts, payload: hex('aabbcc') });
    expect(r.headerLen()).toBe(28);
    expect(r.bufferLen()).toBe(31);
    const out = new Uint8Array(31);
    expect(r.emit(out, A, B)).toBe(31);
    expect(toHex(out.subarray(20, 28))).toBe('020405b403030700');
    const s = ok(out);
    expect(s.seq).toBe(0xffff_ffff);
    expect(s.checksum).toBe(refTcpChecksum(A, B, out));
    expect(s.verifyChecksum(A, B)).toBe(true);
  });
  it('partial checksum mode stores the folded pseudo-header sum', () => {
    const r = TcpRepr.parse(ok(seg(SYN))) as TcpRepr;
    const out = new Uint8Array(r.bufferLen());
    r.emit(out, LO, LO, 'partial');
    expect(ok(out).checksum).toBe(0xfe30); // what Linux put there on lo
    expect(finish(sum16(out))).toBe(0xbe48); // what the device completes it to
    r.emit(out, LO, LO, 'none');
    expect(ok(out).checksum).toBe(0);
  });
  it('caller bugs throw: too many option bytes, too-small buffer, bad SACK', () => {
    const big = new TcpRepr({ srcPort: 1, dstPort: 2, seq: 0, flags: 0, window: 0, options: Array(41).fill({ kind: 'nop' }) });
    expect(() => big.emit(new Uint8Array(100), A, B)).toThrow(RangeError);
    const r = new TcpRepr({ srcPort: 1, dstPort: 2, seq: 0, flags: 0, window: 0, payload: new Uint8Array(5) });
    expect(() => r.emit(new Uint8Array(24), A, B)).toThrow(RangeError);
    expect(() => emitTcpOptions([{ kind: 'sack', blocks: [] }], new Uint8Array(8), 0)).toThrow(RangeError);
  });
  it('repr verifies the checksum when given addresses', () => {
    const b = seg(DATA_SACK);
    b[25] ^= 0x40; // flip a payload-side byte in the options (TS value)
    expect((TcpRepr.parse(ok(b), { src: A, dst: B }) as WireError).reason).toBe('tcp-bad-checksum');
    expect(TcpRepr.parse(ok(b))).toBeInstanceOf(TcpRepr);
  });
});

describe('tcp: truncated and malformed', () => {
  it('every truncation below the header length is rejected without throwing', () => {
    for (const b of [seg(SYN), seg(DATA_SACK), seg(QINQ_SYNACK, 22)]) {
      const hl = ok(b).headerLen;
      for (let n = 0; n < hl; n++) {
        const r = TcpSegment.parse(b.subarray(0, n));
        expect(r).toBeInstanceOf(WireError);
        expect(['tcp-truncated', 'tcp-data-offset-exceeds-segment']).toContain((r as WireError).reason);
      }
      // past the header, a shorter segment is just a shorter payload (the length comes from IPv4)
      for (let n = hl; n <= b.length; n++) expect(TcpSegment.parse(b.subarray(0, n))).toBeInstanceOf(TcpSegment);
    }
  });
  const cases: Array<[string, string, Uint8Array]> = [
    ['data offset 4', 'tcp-bad-data-offset', ((b) => ((b[12] = 0x40), b))(seg(SYN))],
    ['data offset 0', 'tcp-bad-data-offset', ((b) => ((b[12] = 0x00), b))(seg(SYN))],
    ['data offset 11 on a 40-byte segment', 'tcp-data-offset-exceeds-segment', ((b) => ((b[12] = 0xb0), b))(seg(SYN))],
    ['option length 0', 'tcp-option-bad-length', withOptions('02000000')],
    ['option length 1', 'tcp-option-bad-length', withOptions('01010801')],
    ['option length past the header', 'tcp-option-overflow', withOptions('0101080a00000000')],
    ['unknown option past the header', 'tcp-option-overflow', withOptions('1eff0000')],
    ['kind byte without a length byte at the end', 'tcp-option-overflow', withOptions('01010102')],
    ['19 bytes', 'tcp-truncated', seg(SYN).subarray(0, 19)],
  ];
  it.each(cases)('%s → %s', (_n, reason, b) => {
    const r = TcpSegment.parse(b);
    expect(r).toBeInstanceOf(WireError);
    expect((r as WireError).layer).toBe('tcp');
    expect((r as WireError).reason).toBe(reason);
  });
  it('an option ending exactly at the header end is fine', () => {
    expect((TcpSegment.parse(withOptions('010101080a11111111222222')) as WireError).reason).toBe('tcp-option-overflow');
    expect(TcpSegment.parse(withOptions('0101080a1111111122222222'))).toBeInstanceOf(TcpSegment);
  });
});

describe('tcp: in-place setters and incremental checksum', () => {
  it('plain setters change fields and leave the checksum alone; setFlags keeps offset and reserved bits', () => {
    const b = seg(DATA_SACK);
    b[12] |= 0x0e; // reserved bits set
    const s = ok(b);
    const c = s.checksum;
    s.setSeq(1);
    s.setAck(0xffff_ffff);
    s.setWindow(7);
    s.setUrgent(9);
    s.setFlags(TcpFlag.NS | TcpFlag.FIN);
    s.setSrcPort(1);
    s.setDstPort(2);
    s.setSackLeft(1, 42);
    s.setSackRight(1, 43);
    expect([s.seq, s.ack, s.window, s.urgent, s.flags, s.srcPort, s.dstPort]).toEqual([1, 0xffff_ffff, 7, 9, 0x101, 1, 2]);
    expect([s.sackLeft(1), s.sackRight(1), s.sackLeft(0)]).toEqual([42, 43, 875673700]);
    expect(s.dataOffset).toBe(13);
    expect(s.reserved).toBe(7);
    expect(s.checksum).toBe(c);
    expect(s.verifyChecksum(A, B)).toBe(false);
  });
  it('rewrite* (set + RFC 1624) keep the checksum valid over random rewrites (property)', () => {
    const u32 = fc.integer({ min: 0, max: 0xffff_ffff });
    const u16 = fc.integer({ min: 0, max: 0xffff });
    fc.assert(
      fc.property(
        fc.array(
          fc.oneof(
            fc.tuple(fc.constant('seq'), u32),
            fc.tuple(fc.constant('ack'), u32),
            fc.tuple(fc.constant('win'), u16),
            fc.tuple(fc.constant('urg'), u16),
            fc.tuple(fc.constant('flags'), fc.integer({ min: 0, max: 0x1ff })),
            fc.tuple(fc.constant('sport'), u16),
            fc.tuple(fc.constant('dport'), u16),
            fc.tuple(fc.constant('sack0'), u32),
            fc.tuple(fc.constant('sack1'), u32),
          ),
          { minLength: 1, maxLength: 20 },
        ),
        (ops) => {
          const b = seg(DATA_SACK);
          const s = ok(b);
          for (const [op, v] of ops) {
            switch (op) {
              case 'seq': s.rewriteSeq(v); break;
              case 'ack': s.rewriteAck(v); break;
              case 'win': s.rewriteWindow(v); break;
              case 'urg': s.rewriteUrgent(v); break;
              case 'flags': s.rewriteFlags(v); break;
              case 'sport': s.rewriteSrcPort(v); break;
              case 'dport': s.rewriteDstPort(v); break;
              case 'sack0': s.rewriteSackBlock(0, v, (v + 100) >>> 0); break;
              case 'sack1': s.rewriteSackBlock(1, (v - 5) >>> 0, v); break;
            }
            expect(s.verifyChecksum(A, B)).toBe(true);
            expect(s.checksum).toBe(refTcpChecksum(A, B, b));
          }
        },
      ),
      { numRuns: 300 },
    );
  });
  it('NAT: adjustChecksum32 accounts for a pseudo-header address change', () => {
    const s = ok(seg(DATA_SACK));
    const nu = 0xc0a80101;
    s.adjustChecksum32(A, nu);
    expect(s.verifyChecksum(nu, B)).toBe(true);
  });
  it('partial checksum (NEEDS_CSUM): header setters need no update, an address change uses partial=true', () => {
    const b = seg(DATA_SACK);
    const s = ok(b);
    s.fillPartialChecksum(A, B);
    expect(s.checksum).toBe(fold16(ipv4PseudoHeaderSum(A, B, 6, b.length)));
    s.setSeq(12345);
    s.setAck(67890);
    s.setSackLeft(0, 1);
    const nu = 0x64400001;
    s.adjustChecksum32(A, nu, true);
    expect(s.checksum).toBe(fold16(ipv4PseudoHeaderSum(nu, B, 6, b.length)));
    // what the device does: sum from the TCP header, complement, store
    const full = finish(sum16(b));
    s.setChecksum(full);
    expect(s.verifyChecksum(nu, B)).toBe(true);
  });
  it('fillChecksum equals the independent reference', () => {
    const b = seg(DATA_SACK);
    const s = ok(b);
    s.setSeq(0);
    s.fillChecksum(A, B);
    expect(s.checksum).toBe(refTcpChecksum(A, B, b));
  });
});
