/**
 * The content codings the http agent decodes (src/agent/coding): a resumable inflate checked
 * against zlib over every kind of block, cut at every byte and snapshotted through JSON between
 * pieces; the gzip / zlib containers with their checks; the encoder's output read back by zlib.
 */
import { randomBytes } from 'node:crypto';
import { deflateRawSync, deflateSync, gunzipSync, gzipSync, inflateRawSync, inflateSync, constants } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { adler32, CodingError, Decoder, Encoder } from '../../src/agent/coding/codec.js';
import { buildTable, InflateError, Inflater, OUT_PIECE } from '../../src/agent/coding/inflate.js';
import { mulberry32 } from '../../src/util/prng.js';

function text(n: number, seed: number): Buffer {
  const rnd = mulberry32(seed);
  const words = ['Hello world', 'secret ', 'lorem ipsum ', '\n', 'x'.repeat(300), String(seed)];
  const parts: string[] = [];
  let len = 0;
  while (len < n) {
    const w = words[Math.floor(rnd() * words.length)]!;
    parts.push(w);
    len += w.length;
  }
  return Buffer.from(parts.join('').slice(0, n), 'latin1');
}

/** Inflates `z` in pieces of `piece` bytes, through a JSON snapshot every `snapEvery` pieces. */
function inflatePieces(z: Uint8Array, piece: number, snapEvery = 0): { out: Buffer; inf: Inflater; stop: number } {
  let inf = new Inflater();
  const out: Buffer[] = [];
  let stop = z.length;
  for (let p = 0, k = 0; p < z.length && !inf.done; p += piece, k++) {
    const end = Math.min(z.length, p + piece);
    const at = inf.push(z.subarray(0, end), p, (b) => out.push(Buffer.from(b)));
    if (inf.done) stop = at;
    if (snapEvery > 0 && k % snapEvery === 0) inf = Inflater.fromJSON(JSON.parse(JSON.stringify(inf.toJSON())));
  }
  return { out: Buffer.concat(out), inf, stop };
}

describe('inflate', () => {
  const inputs: [string, Buffer][] = [
    ['text', text(100_000, 1)],
    ['random (stored blocks)', randomBytes(70_000)],
    ['one byte', Buffer.from('a')],
    ['empty', Buffer.alloc(0)],
    ['a long run (distance 1, longest lengths)', Buffer.alloc(300_000, 'z')],
    ['skewed (byte i 2^i times: codes of 15 bits, read past the table)', Buffer.concat(Array.from({ length: 20 }, (_, i) => Buffer.alloc(2 ** i, i)).reverse())],
  ];
  for (const [name, data] of inputs) {
    it(`${name}: every level and strategy, in pieces of 1, 7, 1000 bytes and whole, snapshots between`, () => {
      for (const level of [0, 1, 6, 9]) {
        for (const strategy of [constants.Z_DEFAULT_STRATEGY, constants.Z_FILTERED, constants.Z_HUFFMAN_ONLY, constants.Z_RLE, constants.Z_FIXED]) {
          const z = deflateRawSync(data, { level, strategy });
          for (const [piece, snap] of [[1, 997], [7, 13], [1000, 1], [z.length + 1, 0]] as const) {
            const r = inflatePieces(z, piece, snap);
            expect(r.inf.done, `${level}/${strategy}/${piece}`).toBe(true);
            expect(r.out.equals(data), `${level}/${strategy}/${piece}`).toBe(true);
            expect(r.inf.produced).toBe(data.length);
          }
        }
      }
    });
  }

  it('a table costs at most 2^10 entries, whatever the longest code (a stream of tiny blocks of 15-bit codes is cheap)', () => {
    const lens: number[] = Array.from({ length: 288 }, (_, i) => (i < 2 ? 15 : i < 16 ? 14 : 0));
    lens[256] = 1;
    // 1 + 14 codes of 14 bits + 2 of 15 bits: 1/2 + 14/16384 + 2/32768 ≠ 1, so not complete: refused.
    expect(buildTable(lens, 288, true)).toBeNull();
    const full = Array.from({ length: 288 }, (_, i) => (i === 256 ? 1 : i < 14 ? i + 2 : 0));
    full[14] = 15; // 1/2 + (1/4 + … + 1/2^15) + 1/2^15 = 1
    const t = buildTable(full, 288, true)!;
    expect(t.max).toBe(15);
    expect(t.t.length).toBeLessThanOrEqual(1024);
  });

  it('hands output to the sink in pieces of at most OUT_PIECE bytes', () => {
    const z = deflateRawSync(Buffer.alloc(1 << 20, 'q'));
    const sizes: number[] = [];
    new Inflater().push(z, 0, (p) => sizes.push(p.length));
    expect(Math.max(...sizes)).toBeLessThanOrEqual(OUT_PIECE);
    expect(sizes.reduce((a, b) => a + b, 0)).toBe(1 << 20);
  });

  it('stops after the final block and gives back the bytes it read ahead', () => {
    const z = deflateRawSync(text(5000, 2));
    const trailer = Buffer.from([1, 2, 3, 4, 5, 6, 7, 8]);
    const all = Buffer.concat([z, trailer]);
    for (const piece of [1, 3, all.length]) {
      const r = inflatePieces(all, piece);
      const rest = Buffer.concat([Buffer.from(r.inf.leftover()), all.subarray(r.stop)]);
      expect(rest.equals(trailer.subarray(0, rest.length)) && rest.length <= 8, `piece ${piece}`).toBe(true);
    }
  });

  /** Bits LSB first (RFC 1951 §3.1.1); Huffman codes are given MSB first and reversed. */
  function bits(fields: [number, number, 'huff'?][]): Buffer {
    const out: number[] = [];
    let acc = 0;
    let n = 0;
    for (const [v, len, huff] of fields) {
      for (let i = 0; i < len; i++) {
        const bit = huff === 'huff' ? (v >> (len - 1 - i)) & 1 : (v >> i) & 1;
        acc |= bit << n++;
        if (n === 8) {
          out.push(acc);
          acc = n = 0;
        }
      }
    }
    if (n > 0) out.push(acc);
    return Buffer.from(out);
  }
  const bad: [string, Buffer, RegExp][] = [
    ['block type 3', bits([[1, 1], [3, 2]]), /invalid block type/],
    ['a stored block whose length check fails', bits([[1, 1], [0, 2], [0, 5], [5, 16], [5, 16]]), /stored block length check/],
    // Fixed codes: length code 257 (3 bytes), distance code 0 (1 back), before any output.
    ['a distance before the start', bits([[1, 1], [1, 2], [1, 7, 'huff'], [0, 5, 'huff']]), /distance too far back/],
    // Dynamic: 19 code length code lengths, all 1: more codes than the code space holds.
    ['an over-subscribed code length code', bits([[1, 1], [2, 2], [0, 5], [0, 5], [15, 4], ...Array.from({ length: 19 }, (): [number, number] => [1, 3])]), /invalid code lengths set/],
    // Literal/length code: only end-of-block, 2 bits long (incomplete; zlib: "invalid literal/lengths set").
    ['an incomplete literal/length code', bits([[1, 1], [2, 2], [0, 5], [0, 5], [12, 4], ...[0, 0, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2].map((v): [number, number] => [v, 3]), [0, 1, 'huff'], [127, 7], [0, 1, 'huff'], [107, 7], [3, 2, 'huff'], [2, 2, 'huff']]), /invalid literal\/length or distance code lengths/],
    ['a code length code with no codes', bits([[1, 1], [2, 2], [0, 5], [0, 5], [15, 4], [0, 3], [0, 3], [0, 3], ...Array.from({ length: 16 }, (): [number, number] => [0, 3])]), /invalid|repeat/],
  ];
  it.each(bad)('refuses %s (read bit by bit at the end of the input, and on the whole-symbol path)', (_what, z, msg) => {
    for (const input of [z, Buffer.concat([z, Buffer.alloc(16)])]) {
      expect(() => new Inflater().push(input, 0, () => {})).toThrow(InflateError);
      expect(() => new Inflater().push(input, 0, () => {})).toThrow(msg);
    }
  });

  it('refuses a snapshot that does not fit', () => {
    const good = new Inflater().toJSON();
    for (const bad of [{ ...good, mode: 'nope' }, { ...good, bitCnt: 40 }, { ...good, total: 5, win: '' }, { ...good, mode: 'lenExtra', sym: 40 }, { ...good, lens: 'AA==' }]) {
      expect(() => Inflater.fromJSON(bad as never)).toThrow(/bad state/);
    }
  });
});

describe('gzip and deflate containers', () => {
  const data = text(60_000, 3);
  const decodeAll = (d: Decoder, z: Buffer, piece: number, snap: boolean): Buffer => {
    const out: Buffer[] = [];
    for (let p = 0; p < z.length; p += piece) {
      d.push(z.subarray(p, p + piece), (b) => out.push(Buffer.from(b)));
      if (snap) d = Decoder.fromJSON(JSON.parse(JSON.stringify(d.toJSON())));
    }
    d.finish();
    return Buffer.concat(out);
  };

  it('decodes gzip, zlib and raw deflate in any pieces, through snapshots', () => {
    for (const piece of [1, 5, 4096]) {
      expect(decodeAll(new Decoder('gzip'), gzipSync(data), piece, piece !== 1).equals(data)).toBe(true);
      expect(decodeAll(new Decoder('deflate'), deflateSync(data), piece, piece !== 1).equals(data)).toBe(true);
      expect(decodeAll(new Decoder('deflate'), deflateRawSync(data), piece, piece !== 1).equals(data)).toBe(true);
    }
  });

  it('refuses what is not the coding or fails its checks', () => {
    const gz = gzipSync(data);
    const flip = (b: Buffer, i: number): Buffer => {
      const c = Buffer.from(b);
      c[i < 0 ? c.length + i : i]! ^= 0x40;
      return c;
    };
    const cases: [Decoder, Buffer, RegExp][] = [
      [new Decoder('gzip'), flip(gz, 0), /not a gzip header/],
      [new Decoder('gzip'), flip(gz, 3), /reserved flags/],
      [new Decoder('gzip'), flip(gz, -8), /CRC-32 mismatch/],
      [new Decoder('gzip'), flip(gz, -4), /length mismatch/],
      [new Decoder('deflate'), flip(deflateSync(data), -1), /Adler-32 mismatch/],
    ];
    for (const [d, z, msg] of cases) expect(() => decodeAll(d, z, 1000, false)).toThrow(msg);
    expect(() => decodeAll(new Decoder('gzip'), gz.subarray(0, gz.length - 1), 1000, false)).toThrow(/body ends inside the coded data/);
    expect(() => decodeAll(new Decoder('gzip'), gz.subarray(0, 5), 1000, false)).toThrow(CodingError);
  });

  it('ignores and counts bytes after the end (as gzip(1) and browsers do), a second member is decoded', () => {
    const gz = gzipSync(data);
    const cases: [Decoder, Buffer, number][] = [
      [new Decoder('gzip'), Buffer.concat([gz, Buffer.from('\njunk after the member')]), 22],
      [new Decoder('gzip'), Buffer.concat([gz, Buffer.from([0x1f, 0x00, 1, 2])]), 4],
      [new Decoder('deflate'), Buffer.concat([deflateSync(data), Buffer.from('x')]), 1],
      [new Decoder('deflate'), Buffer.concat([deflateRawSync(data), Buffer.from('xy')]), 2],
    ];
    for (const [d, z, n] of cases) {
      for (const piece of [1, 1000, z.length]) {
        const dd = Decoder.fromJSON(d.toJSON());
        expect(decodeAll(dd, z, piece, false).equals(data)).toBe(true);
        expect(dd.ignored).toBe(n);
      }
    }
    expect(decodeAll(new Decoder('gzip'), Buffer.concat([gz, gz]), 777, true).equals(Buffer.concat([data, data]))).toBe(true);
  });

  it('adler32 is zlib\'s', () => {
    const z = deflateSync(data);
    expect(adler32(1, data)).toBe(z.readUInt32BE(z.length - 4));
  });

  it('the encoder\'s pieces, concatenated, are one stream zlib reads back (gzip, zlib, raw)', () => {
    const pieces = [data.subarray(0, 1), data.subarray(1, 20_000), Buffer.alloc(0), data.subarray(20_000)];
    const enc = (e: Encoder): Buffer => Buffer.concat([...pieces.map((p) => e.encode(p)), e.finish()]);
    expect(gunzipSync(enc(new Encoder('gzip'))).equals(data)).toBe(true);
    expect(inflateSync(enc(new Encoder('deflate'))).equals(data)).toBe(true);
    expect(inflateRawSync(enc(new Encoder('deflate', true))).equals(data)).toBe(true);
    // Snapshotted between pieces.
    let e = new Encoder('gzip');
    const out: Buffer[] = [];
    for (const p of pieces) {
      out.push(e.encode(p));
      e = Encoder.fromJSON(JSON.parse(JSON.stringify(e.toJSON())));
    }
    out.push(e.finish());
    expect(gunzipSync(Buffer.concat(out)).equals(data)).toBe(true);
    expect(gunzipSync(new Encoder('gzip').finish()).length).toBe(0);
  });
});
