import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import {
  csumReplace16,
  csumReplace32,
  csumReplaceBytes,
  finish,
  fold16,
  ipv4PseudoHeaderSum,
  sum16,
  sumReplace16,
  sumReplace32,
} from '../../src/wire/checksum.js';
import { refChecksum, refSum } from './fixtures.js';

function pseudo(src: number, dst: number, proto: number, len: number): number[] {
  return [
    src >>> 24, (src >>> 16) & 255, (src >>> 8) & 255, src & 255,
    dst >>> 24, (dst >>> 16) & 255, (dst >>> 8) & 255, dst & 255,
    0, proto, len >>> 8, len & 255,
  ];
}

describe('checksum: RFC 1071 sum', () => {
  it('RFC 1071 §3 example: 00 01 f2 03 f4 f5 f6 f7 sums to 0xddf2', () => {
    const b = new Uint8Array([0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]);
    expect(fold16(sum16(b))).toBe(0xddf2);
    expect(finish(sum16(b))).toBe(0x220d);
  });
  it('odd length pads a zero low byte', () => {
    expect(sum16(new Uint8Array([0x12]))).toBe(0x1200);
    expect(sum16(new Uint8Array([0x12, 0x34, 0x56]))).toBe(0x1234 + 0x5600);
  });
  it('equals the reference on random buffers and ranges (incl. odd lengths)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), fc.nat(), fc.nat(), (b, x, y) => {
        const a = b.length ? x % (b.length + 1) : 0;
        const e = b.length ? a + (y % (b.length - a + 1)) : 0;
        expect(fold16(sum16(b, a, e))).toBe(refSum(b.subarray(a, e)));
        expect(finish(sum16(b, a, e))).toBe(refChecksum(b.subarray(a, e)));
      }),
      { numRuns: 2000 },
    );
  });
  it('chaining over even-length pieces equals one call', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 1, maxLength: 300 }), fc.nat(), (b, k) => {
        const cut = (k % (b.length + 1)) & ~1;
        expect(fold16(sum16(b, cut, b.length, sum16(b, 0, cut)))).toBe(fold16(sum16(b)));
      }),
    );
  });
  it('the accumulator stays below 2^32 and keeps its value modulo 0xffff', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 2000 }), fc.integer({ min: 0, max: 0xffff_ffff }), (b, acc) => {
        const r = sum16(b, 0, b.length, acc);
        expect(r).toBeLessThan(2 ** 32);
        expect(r % 0xffff).toBe((acc + refSum(b)) % 0xffff);
      }),
    );
  });
  it('a 64 KiB buffer of 0xff sums to 0xffff (no overflow)', () => {
    const b = new Uint8Array(65536).fill(0xff);
    expect(fold16(sum16(b))).toBe(0xffff);
    expect(finish(sum16(b))).toBe(0);
  });
  it('ipv4PseudoHeaderSum equals summing the 12 pseudo-header bytes', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 0xffff_ffff }),
        fc.integer({ min: 0, max: 0xffff_ffff }),
        fc.integer({ min: 0, max: 255 }),
        fc.integer({ min: 0, max: 0xffff }),
        (s, d, p, l) => {
          expect(fold16(ipv4PseudoHeaderSum(s, d, p, l))).toBe(refSum(pseudo(s, d, p, l)));
        },
      ),
    );
  });
});

/** A TCP-like checksummed buffer: pseudo-header (proto 6, so never all-zero) + data, field at 16. */
function fullCsum(data: Uint8Array): number {
  const d = data.slice();
  d[16] = 0;
  d[17] = 0;
  return refChecksum([...pseudo(0x0a000001, 0x0a000002, 6, d.length), ...d]);
}

describe('checksum: RFC 1624 incremental update', () => {
  it('RFC 1624 §4 example: HC 0xdd2f, m 0x5555 -> 0x3285 gives 0x0000 (not -0)', () => {
    expect(csumReplace16(0xdd2f, 0x5555, 0x3285)).toBe(0x0000);
  });

  const segArb = fc.uint8Array({ minLength: 20, maxLength: 120 }).map((b) => (b.length & 1 ? b.subarray(1) : b));

  it('csumReplace16 over many random word edits equals full recomputation', () => {
    fc.assert(
      fc.property(segArb, fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 0xffff })), { maxLength: 30 }), (b0, edits) => {
        const b = b0.slice();
        let c = fullCsum(b);
        for (const [p, v] of edits) {
          let off = (p % (b.length / 2)) * 2;
          if (off === 16) off = 0;
          const old = (b[off]! << 8) | b[off + 1]!;
          b[off] = v >>> 8;
          b[off + 1] = v & 255;
          c = csumReplace16(c, old, v);
          expect(c).toBe(fullCsum(b));
        }
      }),
      { numRuns: 500 },
    );
  });

  it('csumReplace32 over many random 32-bit edits equals full recomputation', () => {
    fc.assert(
      fc.property(
        segArb,
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 0xffff_ffff })), { maxLength: 30 }),
        (b0, edits) => {
          const b = b0.slice();
          const dv = new DataView(b.buffer);
          let c = fullCsum(b);
          for (const [p, v] of edits) {
            // even-aligned 4-byte fields that do not cover the checksum at 16..17
            const slots = [...Array(Math.floor(b.length / 2) - 1).keys()].map((i) => i * 2).filter((o) => o + 4 <= 16 || o >= 18);
            const off = slots[p % slots.length]!;
            const old = dv.getUint32(off);
            dv.setUint32(off, v);
            c = csumReplace32(c, old, v);
            expect(c).toBe(fullCsum(b));
          }
        },
      ),
      { numRuns: 500 },
    );
  });

  it('csumReplaceBytes for random ranges (odd starts, odd lengths) equals full recomputation', () => {
    fc.assert(
      fc.property(segArb, fc.nat(), fc.nat(), fc.uint8Array({ maxLength: 64 }), (b0, x, y, fill) => {
        const b = b0.slice();
        const c0 = fullCsum(b);
        // a range that avoids the checksum field: either [0, 16) or [18, len)
        const lo = x % 2 ? 18 : 0;
        const hi = x % 2 ? b.length : 16;
        const start = lo + (y % (hi - lo + 1));
        const len = Math.min(fill.length, hi - start);
        const oldBytes = b.slice(start, start + len);
        const newBytes = fill.subarray(0, len);
        b.set(newBytes, start);
        expect(csumReplaceBytes(c0, oldBytes, newBytes, start)).toBe(fullCsum(b));
      }),
      { numRuns: 2000 },
    );
  });

  it('csumReplaceBytes with different lengths is a caller bug: throws', () => {
    expect(() => csumReplaceBytes(0, new Uint8Array(2), new Uint8Array(3), 0)).toThrow(RangeError);
  });

  it('sumReplace16/32 update a partial (pseudo-header) sum like a recomputation', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 0xffff_ffff }),
        fc.integer({ min: 0, max: 0xffff_ffff }),
        fc.integer({ min: 0, max: 0xffff_ffff }),
        fc.integer({ min: 0, max: 0xffff }),
        fc.integer({ min: 0, max: 0xffff }),
        (s, d, s2, l, l2) => {
          const p = fold16(ipv4PseudoHeaderSum(s, d, 6, l));
          expect(sumReplace32(p, s, s2)).toBe(fold16(ipv4PseudoHeaderSum(s2, d, 6, l)));
          expect(sumReplace16(p, l, l2)).toBe(fold16(ipv4PseudoHeaderSum(s, d, 6, l2)));
        },
      ),
    );
  });
});
