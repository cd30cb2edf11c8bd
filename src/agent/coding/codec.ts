/**
 * HTTP content codings gzip (RFC 1952) and deflate (the zlib format, RFC 1950; a raw deflate
 * stream is accepted too, as browsers do) decoded and encoded in pieces, with plain-data state
 * (cluster). Decoding checks the container's header, check value and length; encoding writes a
 * fresh container around deflate blocks that each end with a sync flush, so every piece is
 * decodable as soon as it arrives and no compressor state outlives a call.
 */

import { constants, crc32, deflateRawSync } from 'node:zlib';
import { Inflater, InflateError, type InflateJson } from './inflate.js';

export type Coding = 'gzip' | 'deflate';

/** The codings a content-coding name (RFC 9110 §8.4.1) stands for; undefined: not one of ours. */
export function codingOf(name: string): Coding | undefined {
  const n = name.toLowerCase();
  return n === 'gzip' || n === 'x-gzip' ? 'gzip' : n === 'deflate' ? 'deflate' : undefined;
}

export class CodingError extends Error {}

/** The check value of an empty body: CRC-32 (gzip) or Adler-32 (zlib, RFC 1950 §8.2). */
const checkStart = (c: Coding): number => (c === 'gzip' ? 0 : 1);
/** The check value continued over `p`. */
const checkOver = (c: Coding, check: number, p: Uint8Array): number => (c === 'gzip' ? crc32(p, check) : adler32(check, p));

/** Adler-32 (RFC 1950 §8.2) of `data` continuing from `a`. */
export function adler32(a: number, data: Uint8Array): number {
  let s1 = a & 0xffff;
  let s2 = a >>> 16;
  let i = 0;
  while (i < data.length) {
    const end = Math.min(data.length, i + 5552);
    for (; i < end; i++) {
      s1 += data[i]!;
      s2 += s1;
    }
    s1 %= 65521;
    s2 %= 65521;
  }
  return ((s2 << 16) | s1) >>> 0;
}

type Phase = 'head' | 'extraLen' | 'extra' | 'name' | 'comment' | 'hcrc' | 'data' | 'trailer' | 'between' | 'end';
const PHASES: readonly Phase[] = ['head', 'extraLen', 'extra', 'name', 'comment', 'hcrc', 'data', 'trailer', 'between', 'end'];
/** gzip's magic bytes (RFC 1952 §2.3.1). */
const ID1 = 0x1f;
const ID2 = 0x8b;

/** gzip FLG bits (RFC 1952 §2.3.1). */
const FHCRC = 2;
const FEXTRA = 4;
const FNAME = 8;
const FCOMMENT = 16;
const FRESERVED = 0xe0;

export interface DecoderJson {
  coding: Coding;
  phase: Phase;
  /** Bytes of the fixed part being collected (header, length, trailer). */
  part: number[];
  flags: number;
  skip: number;
  raw: boolean;
  check: number;
  size: number;
  consumed: number;
  produced: number;
  ignored: number;
  inflate: InflateJson | null;
}

/** A content-coded body decoded in pieces. */
export class Decoder {
  private phase: Phase = 'head';
  private part: number[] = [];
  private flags = 0;
  /** FEXTRA bytes left. */
  private skip = 0;
  /** deflate coding without the zlib wrapper. */
  private rawDeflate = false;
  /** CRC-32 (gzip) or Adler-32 (zlib) of this member's output so far; its length mod 2^32. */
  private check = 0;
  private size = 0;
  /** Coded bytes consumed and bytes decoded (for the caller's ratio bound). */
  consumed = 0;
  produced = 0;
  /**
   * Bytes after the end of the coded data (after the last gzip member, the zlib or deflate
   * stream), ignored as gzip(1) and browsers ignore them: the caller drops and counts them.
   */
  ignored = 0;
  private inf: Inflater | null = null;

  constructor(readonly coding: Coding) {
    this.check = checkStart(coding);
  }

  /** A deflate body without the zlib wrapper (known after its first two bytes). */
  get raw(): boolean {
    return this.rawDeflate;
  }

  /** Decodes `data`; the output goes to `sink` (views valid during the call). Throws CodingError. */
  push(data: Uint8Array, sink: (piece: Uint8Array) => void): void {
    this.consumed += data.length;
    const out = (p: Uint8Array): void => {
      this.check = checkOver(this.coding, this.check, p);
      this.size = (this.size + p.length) >>> 0;
      this.produced += p.length;
      sink(p);
    };
    try {
      this.run(data, out);
    } catch (e) {
      if (e instanceof InflateError) throw new CodingError(`${this.coding}: ${e.message}`);
      throw e;
    }
  }

  private run(data: Uint8Array, out: (p: Uint8Array) => void): void {
    let i = 0;
    while (i < data.length) {
      switch (this.phase) {
        case 'head':
          i = this.collect(data, i, this.coding === 'gzip' ? 10 : 2);
          if (this.part.length < (this.coding === 'gzip' ? 10 : 2)) return;
          this.headDone(out);
          break;
        case 'extraLen':
          i = this.collect(data, i, 2);
          if (this.part.length < 2) return;
          this.skip = this.part[0]! | (this.part[1]! << 8);
          this.part = [];
          this.phase = this.skip > 0 ? 'extra' : this.afterExtra();
          break;
        case 'extra': {
          const k = Math.min(this.skip, data.length - i);
          i += k;
          this.skip -= k;
          if (this.skip === 0) this.phase = this.afterExtra();
          break;
        }
        case 'name':
        case 'comment': {
          const z = data.indexOf(0, i);
          if (z < 0) return;
          i = z + 1;
          this.phase = this.phase === 'name' && this.flags & FCOMMENT ? 'comment' : this.flags & FHCRC ? 'hcrc' : 'data';
          break;
        }
        case 'hcrc':
          // The header CRC is not checked (RFC 1952 §2.3.1.2: a decoder may ignore it).
          i = this.collect(data, i, 2);
          if (this.part.length < 2) return;
          this.part = [];
          this.phase = 'data';
          break;
        case 'data': {
          const inf = (this.inf ??= new Inflater());
          i = inf.push(data, i, out);
          if (!inf.done) return;
          this.part = Array.from(inf.leftover());
          if (this.rawDeflate) {
            this.ignored += this.part.length;
            this.part = [];
            this.phase = 'end';
          } else {
            this.phase = 'trailer';
            this.trailerCheck();
          }
          break;
        }
        case 'trailer':
          i = this.collect(data, i, this.coding === 'gzip' ? 8 : 4);
          this.trailerCheck();
          break;
        case 'between': {
          // Another gzip member (RFC 1952 §2.2: a file is a series of members), or bytes that
          // do not start one (its magic bytes decide; they may come in two pieces).
          if (this.coding !== 'gzip') {
            this.phase = 'end';
            break;
          }
          i = this.collect(data, i, 2);
          const p = this.part;
          if (p[0] === ID1 && p.length < 2) return;
          if (p[0] === ID1 && p[1] === ID2) {
            this.phase = 'head';
            this.inf?.reset(); // one window buffer for every member
          } else {
            this.ignored += p.length;
            this.part = [];
            this.phase = 'end';
          }
          break;
        }
        case 'end':
          this.ignored += data.length - i;
          return;
      }
    }
  }

  /** The coded body ended: it must have ended with a complete member. */
  finish(): void {
    if (this.phase !== 'between' && this.phase !== 'end') throw new CodingError(`${this.coding}: body ends inside the coded data`);
    this.ignored += this.part.length; // a lone first magic byte after the last member
    this.part = [];
  }

  /** Takes up to `want` bytes of a fixed part; returns where it stopped. */
  private collect(data: Uint8Array, i: number, want: number): number {
    while (this.part.length < want && i < data.length) this.part.push(data[i++]!);
    return i;
  }

  private headDone(out: (p: Uint8Array) => void): void {
    const h = this.part;
    this.part = [];
    if (this.coding === 'gzip') {
      if (h[0] !== ID1 || h[1] !== ID2 || h[2] !== 8) throw new CodingError('gzip: not a gzip header');
      this.flags = h[3]!;
      if (this.flags & FRESERVED) throw new CodingError('gzip: reserved flags set');
      this.check = 0;
      this.size = 0;
      this.phase = this.flags & FEXTRA ? 'extraLen' : this.afterExtra();
      return;
    }
    const cmf = h[0]!;
    const flg = h[1]!;
    if ((cmf & 15) === 8 && cmf >> 4 <= 7 && ((cmf << 8) | flg) % 31 === 0) {
      if (flg & 0x20) throw new CodingError('deflate: preset dictionary');
      this.phase = 'data';
      return;
    }
    // No zlib header: a raw deflate stream (sent as "deflate" by some servers); the two bytes
    // are its first.
    this.rawDeflate = true;
    this.phase = 'data';
    const inf = (this.inf = new Inflater());
    const first = Uint8Array.from(h);
    const at = inf.push(first, 0, out);
    if (inf.done) {
      this.ignored += first.length - at + inf.leftover().length;
      this.phase = 'end';
    }
  }

  private afterExtra(): Phase {
    return this.flags & FNAME ? 'name' : this.flags & FCOMMENT ? 'comment' : this.flags & FHCRC ? 'hcrc' : 'data';
  }

  /** Checks a complete trailer (the part may still be short). */
  private trailerCheck(): void {
    const t = this.part;
    if (this.coding === 'gzip') {
      if (t.length < 8) return;
      const crc = (t[0]! | (t[1]! << 8) | (t[2]! << 16) | (t[3]! << 24)) >>> 0;
      const isize = (t[4]! | (t[5]! << 8) | (t[6]! << 16) | (t[7]! << 24)) >>> 0;
      if (crc !== this.check >>> 0) throw new CodingError('gzip: CRC-32 mismatch');
      if (isize !== this.size) throw new CodingError('gzip: length mismatch');
      this.phase = 'between';
    } else {
      if (t.length < 4) return;
      const a = ((t[0]! << 24) | (t[1]! << 16) | (t[2]! << 8) | t[3]!) >>> 0;
      if (a !== this.check >>> 0) throw new CodingError('deflate: Adler-32 mismatch');
      this.phase = 'end';
    }
    this.part = [];
  }

  toJSON(): DecoderJson {
    return {
      coding: this.coding,
      phase: this.phase,
      part: [...this.part],
      flags: this.flags,
      skip: this.skip,
      raw: this.rawDeflate,
      check: this.check >>> 0,
      size: this.size,
      consumed: this.consumed,
      produced: this.produced,
      ignored: this.ignored,
      inflate: this.inf === null ? null : this.inf.toJSON(),
    };
  }

  static fromJSON(j: DecoderJson): Decoder {
    if (j.coding !== 'gzip' && j.coding !== 'deflate') throw new Error('coding: bad state (coding)');
    if (!PHASES.includes(j.phase)) throw new Error('coding: bad state (phase)');
    if (!Array.isArray(j.part) || j.part.length > 10 || !j.part.every((b) => Number.isInteger(b) && b >= 0 && b < 256)) throw new Error('coding: bad state (part)');
    const d = new Decoder(j.coding);
    d.phase = j.phase;
    d.part = [...j.part];
    d.flags = Number(j.flags) & 0xff;
    d.skip = Number(j.skip) & 0xffff;
    d.rawDeflate = j.raw === true;
    d.check = Number(j.check) >>> 0;
    d.size = Number(j.size) >>> 0;
    d.consumed = Math.max(0, Number(j.consumed) || 0);
    d.produced = Math.max(0, Number(j.produced) || 0);
    d.ignored = Math.max(0, Number(j.ignored) || 0);
    d.inf = j.inflate === null ? null : Inflater.fromJSON(j.inflate);
    return d;
  }
}

const SYNC = { level: constants.Z_BEST_SPEED, finishFlush: constants.Z_SYNC_FLUSH };
/** A final, empty fixed-Huffman block (RFC 1951 §3.2.6: BFINAL 1, BTYPE 01, code 256). */
const FINAL_BLOCK = Buffer.from([0x03, 0x00]);
/** gzip header: deflate, no flags, no time, fastest, OS unknown (RFC 1952 §2.3). */
const GZIP_HEAD = Buffer.from([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 4, 0xff]);
/** zlib header: deflate, 32 KiB window, fastest, no dictionary (RFC 1950 §2.2). */
const ZLIB_HEAD = Buffer.from([0x78, 0x01]);

export interface EncoderJson {
  coding: Coding;
  raw: boolean;
  started: boolean;
  check: number;
  size: number;
}

/**
 * A body encoded in pieces: each `encode` returns deflate blocks ending with a sync flush (a
 * decoder gets every byte of the piece at once), compressed without the earlier pieces, so
 * nothing but the check value and length outlives a call. `raw`: a deflate coding without the
 * zlib wrapper (the form the server sent).
 */
export class Encoder {
  private started = false;
  private check: number;
  private size = 0;

  constructor(
    readonly coding: Coding,
    readonly raw = false,
  ) {
    this.check = checkStart(coding);
  }

  encode(plain: Uint8Array): Buffer {
    if (plain.length === 0) return this.started ? Buffer.alloc(0) : this.head();
    this.track(plain);
    const head = this.head();
    const body = deflateRawSync(plain, SYNC);
    return head.length === 0 ? body : Buffer.concat([head, body]);
  }

  /** The end of the body: the final block and the trailer (and the header if nothing came). */
  finish(): Buffer {
    const parts = [this.head(), FINAL_BLOCK];
    if (this.coding === 'gzip') {
      const t = Buffer.alloc(8);
      t.writeUInt32LE(this.check >>> 0, 0);
      t.writeUInt32LE(this.size >>> 0, 4);
      parts.push(t);
    } else if (!this.raw) {
      const t = Buffer.alloc(4);
      t.writeUInt32BE(this.check >>> 0, 0);
      parts.push(t);
    }
    return Buffer.concat(parts);
  }

  private track(p: Uint8Array): void {
    this.check = checkOver(this.coding, this.check, p);
    this.size = (this.size + p.length) >>> 0;
  }

  private head(): Buffer {
    if (this.started) return Buffer.alloc(0);
    this.started = true;
    return this.coding === 'gzip' ? GZIP_HEAD : this.raw ? Buffer.alloc(0) : ZLIB_HEAD;
  }

  toJSON(): EncoderJson {
    return { coding: this.coding, raw: this.raw, started: this.started, check: this.check >>> 0, size: this.size };
  }

  static fromJSON(j: EncoderJson): Encoder {
    if (j.coding !== 'gzip' && j.coding !== 'deflate') throw new Error('coding: bad state (coding)');
    const e = new Encoder(j.coding, j.raw === true);
    e.started = j.started === true;
    e.check = Number(j.check) >>> 0;
    e.size = Number(j.size) >>> 0;
    return e;
  }
}
