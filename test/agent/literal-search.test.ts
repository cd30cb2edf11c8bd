/**
 * The literal search of the replace agent (src/agent/literal-search.ts): the native search
 * (native/search.cc: 32 starts at a time by the pattern's first and last bytes with AVX2, memmem
 * for the rest) gives exactly the JS one's answers — every start at or after `from`, overlapping
 * ones too, in order, as many as fit.
 */
import { describe, expect, it } from 'vitest';
import { findAllJs, findAllNative, literalSearchBackend } from '../../src/agent/literal-search.js';

function all(f: typeof findAllJs, hay: Uint8Array, pat: Uint8Array, from: number, cap: number): number[] {
  const out = new Int32Array(cap);
  const got: number[] = [];
  for (;;) {
    const n = f(hay, pat, from, out);
    got.push(...out.subarray(0, n));
    if (n < cap) return got;
    from = out[n - 1]! + 1;
  }
}

describe('literal search', () => {
  it('is native where the addon is built (npm install builds it)', () => {
    expect(literalSearchBackend).toBe('native');
    expect(findAllNative).not.toBeNull();
  });

  it('finds every occurrence, overlapping ones too, from a position, a batch at a time', () => {
    const hay = Buffer.from('aaaaXaaXa');
    const pat = Buffer.from('aa');
    for (const f of [findAllJs, findAllNative!]) {
      expect(all(f, hay, pat, 0, 2)).toEqual([0, 1, 2, 5]);
      expect(all(f, hay, pat, 2, 256)).toEqual([2, 5]);
      expect(all(f, hay, pat, 9, 4)).toEqual([]);
      expect(f(hay, pat, 0, new Int32Array(0))).toBe(0);
      expect(all(f, hay, Buffer.from('aaaaXaaXaa'), 0, 4)).toEqual([]);
    }
  });

  it('gives the same answers as Buffer.indexOf over random texts of a small alphabet', () => {
    let seed = 7;
    const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 8) % n;
    for (let t = 0; t < 500; t++) {
      const hay = Buffer.from(Array.from({ length: rnd(300) }, () => 97 + rnd(3)));
      const pat = Buffer.from(Array.from({ length: 1 + rnd(5) }, () => 97 + rnd(3)));
      const from = rnd(hay.length + 2);
      // A view into a larger buffer: offsets must be honoured.
      const big = Buffer.concat([Buffer.from('zz'), hay, Buffer.from('zz')]);
      const view = big.subarray(2, 2 + hay.length);
      const cap = 1 + rnd(8);
      expect(all(findAllNative!, view, pat, from, cap)).toEqual(all(findAllJs, hay, pat, from, cap));
    }
  });

  it('gives the same answers over long random bytes: matches at every offset of a vector, at the last start, patterns of 1 to 40 bytes', () => {
    let seed = 11;
    const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 8) % n;
    for (let t = 0; t < 400; t++) {
      const n = 64 + rnd(3000);
      const hay = Buffer.from(Array.from({ length: n }, () => rnd(256)));
      const m = 1 + rnd(40);
      const pat = Buffer.from(Array.from({ length: m }, () => rnd(256)));
      // Planted: a few anywhere, one at the last possible start, one at 32k + t % 32.
      const at = [rnd(n), rnd(n), n - m, Math.min(n - m, 32 * rnd(8) + (t % 32))];
      for (const a of at) if (a >= 0 && a + m <= n) pat.copy(hay, a);
      // Near-misses: the first and last bytes right, a byte between wrong.
      if (m >= 3) for (let k = 0; k < 4; k++) {
        const a = rnd(n - m + 1);
        pat.copy(hay, a);
        hay[a + 1 + rnd(m - 2)] ^= 0x40;
      }
      const from = rnd(n);
      const cap = 1 + rnd(8);
      expect(all(findAllNative!, hay, pat, from, cap)).toEqual(all(findAllJs, hay, pat, from, cap));
    }
  });

  it('gives the same answers over input full of the pattern\'s first and last bytes (false candidates everywhere)', () => {
    const hay = Buffer.alloc(20_000, 'a');
    for (const p of ['aba', 'aaaaaaaaaaaaaaaaaaab' + 'a', 'a'.repeat(30) + 'ba']) {
      const pat = Buffer.from(p);
      const planted = Buffer.from(hay);
      pat.copy(planted, 17_001);
      expect(all(findAllNative!, hay, pat, 0, 8)).toEqual([]);
      expect(all(findAllNative!, planted, pat, 5, 8)).toEqual(all(findAllJs, planted, pat, 5, 8));
      expect(all(findAllNative!, planted, pat, 5, 8)).toContain(17_001);
    }
    // A match right after the false candidate that hands the search over to memmem: 'aab' is
    // one for 'abb' (first and last bytes right), and so is the 'a' just before the match.
    const pat = Buffer.from('abb');
    for (let j = 55; j < 75; j++) {
      const hay = Buffer.from('aab'.repeat(j) + 'aabb' + 'x'.repeat(100));
      expect(all(findAllNative!, hay, pat, 0, 8)).toEqual([3 * j + 1]);
    }
  });

  it('refuses what is not bytes without throwing', () => {
    const f = findAllNative!;
    expect(f(new Uint16Array(4) as unknown as Uint8Array, Buffer.from('a'), 0, new Int32Array(4))).toBe(-1);
    expect(f(Buffer.from('abc'), Buffer.alloc(0), 0, new Int32Array(4))).toBe(-1);
    expect(f(Buffer.from('abc'), Buffer.from('a'), 0, new Uint32Array(4) as unknown as Int32Array)).toBe(-1);
  });
});
