import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import {
  offsetToSeq,
  seq,
  seqAdd,
  seqDiff,
  seqGe,
  seqGt,
  seqInRange,
  seqLe,
  seqLt,
  seqMax,
  seqMin,
  seqToOffset,
} from '../../src/wire/seq.js';

const MAX = 0xffff_ffff;

describe('seq: comparisons across the 2^32 wrap', () => {
  it('2^32-1 is before 0 and 0 is after 2^32-1', () => {
    expect(seqLt(MAX, 0)).toBe(true);
    expect(seqGt(0, MAX)).toBe(true);
    expect(seqLe(MAX, MAX)).toBe(true);
    expect(seqGe(0, MAX)).toBe(true);
    expect(seqDiff(5, MAX - 4)).toBe(10);
    expect(seqDiff(MAX - 4, 5)).toBe(-10);
  });
  it('seqAdd wraps in both directions and seq() normalises', () => {
    expect(seqAdd(MAX, 1)).toBe(0);
    expect(seqAdd(0, -1)).toBe(MAX);
    expect(seq(-1)).toBe(MAX);
    expect(seq(2 ** 32 + 7)).toBe(7);
  });
  it('seqInRange across the wrap', () => {
    expect(seqInRange(0, MAX - 10, 10)).toBe(true);
    expect(seqInRange(MAX, MAX - 10, 10)).toBe(true);
    expect(seqInRange(10, MAX - 10, 10)).toBe(false);
    expect(seqInRange(MAX - 11, MAX - 10, 10)).toBe(false);
  });
  it('min/max pick by sequence order, not numeric order', () => {
    expect(seqMax(MAX, 3)).toBe(3);
    expect(seqMin(MAX, 3)).toBe(MAX);
  });
  it('a + d is after a for every 0 < d < 2^31 (property)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: MAX }), fc.integer({ min: 1, max: 2 ** 31 - 1 }), (a, d) => {
        const b = seqAdd(a, d);
        expect(seqLt(a, b)).toBe(true);
        expect(seqGt(b, a)).toBe(true);
        expect(seqDiff(b, a)).toBe(d);
      }),
    );
  });
});

describe('seq: seqToOffset / offsetToSeq round trips near 0 and 2^32-1', () => {
  const isns = [0, 1, MAX, MAX - 10_000, 2 ** 31, 2 ** 31 - 1];
  it('offsetToSeq then seqToOffset is the identity for offsets near `near`', () => {
    for (const isn of isns) {
      for (const off of [-5, 0, 1, 2, 100, 2 ** 32 - 1, 2 ** 32, 2 ** 32 + 1, 3 * 2 ** 32 + 17, 2 ** 40]) {
        const s = offsetToSeq(off, isn);
        expect(s).toBeGreaterThanOrEqual(0);
        expect(s).toBeLessThanOrEqual(MAX);
        expect(seqToOffset(s, isn, off)).toBe(off);
        expect(seqToOffset(s, isn, off + 1_000_000)).toBe(off);
        expect(seqToOffset(s, isn, off - 1_000_000)).toBe(off);
      }
    }
  });
  it('the SYN is offset 0 and the first data byte offset 1, with ISN 2^32-1', () => {
    expect(offsetToSeq(0, MAX)).toBe(MAX);
    expect(offsetToSeq(1, MAX)).toBe(0);
    expect(seqToOffset(0, MAX, 0)).toBe(1);
    expect(seqToOffset(MAX, MAX, 1)).toBe(0);
  });
  it('round trip (property): any isn, any offset < 2^50, near within 2^30', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: MAX }),
        fc.integer({ min: 0, max: 2 ** 50 }),
        fc.integer({ min: -(2 ** 30), max: 2 ** 30 }),
        (isn, off, d) => {
          expect(seqToOffset(offsetToSeq(off, isn), isn, off + d)).toBe(off);
        },
      ),
    );
  });
});
