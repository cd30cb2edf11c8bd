/**
 * A resumable raw inflate (RFC 1951) whose whole state is plain data, so that a body being
 * decoded moves between cluster nodes with its connection (zlib's state cannot be exported).
 * Input comes in arbitrary pieces; every bit is consumed as it arrives (a code split across
 * pieces waits in the bit buffer), output goes to a sink in pieces of at most OUT_PIECE bytes.
 * The window (the last 32 KiB of output) is part of the state.
 */

/** RFC 1951 §3.2.5: length codes 257..285, distance codes 0..29. */
const LEN_BASE = [3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258];
const LEN_EXTRA = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0];
const DIST_BASE = [1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577];
const DIST_EXTRA = [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13];
/** §3.2.7: the order code length code lengths come in. */
const CL_ORDER = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15];

const WSIZE = 32768;
/** Output is handed to the sink in pieces of at most this many bytes. */
export const OUT_PIECE = 32 * 1024;
/** The history (the window) and the output after it are one buffer: a copy reads back into it. */
const BUF = WSIZE + OUT_PIECE;
/** Output is handed over once this far: the longest copy (258) still fits. */
const FLUSH_AT = BUF - 258;

type Mode = 'header' | 'storedLen' | 'storedNlen' | 'stored' | 'table' | 'clens' | 'lens' | 'lensExtra' | 'codes' | 'lenExtra' | 'dist' | 'distExtra' | 'done';
const MODES: readonly Mode[] = ['header', 'storedLen', 'storedNlen', 'stored', 'table', 'clens', 'lens', 'lensExtra', 'codes', 'lenExtra', 'dist', 'distExtra', 'done'];

/** Codes up to this long are found with one table lookup; longer ones (rare) canonically. */
const ROOT_BITS = 10;
/** A table entry for the root bits of a longer code. */
const LONG = -1;

/**
 * A decoding table: `t` indexed by `bits` (≤ ROOT_BITS) stream bits, LSB first; entry = symbol
 * << 4 | code length, 0 for no code, LONG for a code longer than `bits` (decodeLong). `max`: the
 * longest code. `count` / `sorted`: codes per length and symbols in code order (RFC 1951 §3.2.2),
 * for the long codes. Building one costs O(2^ROOT_BITS + symbols): a stream cannot make the
 * gateway fill 2^15 entries per block for a block of a few bytes.
 */
export interface Table {
  t: Int32Array;
  bits: number;
  max: number;
  count: Int32Array;
  sorted: Int32Array;
}

/**
 * Canonical Huffman table from code lengths (§3.2.2). Null when the lengths over-subscribe the
 * code space, or leave it incomplete (as zlib: allowed only for a single code of length 1 in a
 * literal/length or distance code, `single`); no code at all is allowed (its use fails).
 */
export function buildTable(lens: ArrayLike<number>, n: number, single: boolean): Table | null {
  let max = 0;
  const count = new Int32Array(16);
  for (let i = 0; i < n; i++) {
    const l = lens[i]!;
    count[l]!++;
    if (l > max) max = l;
  }
  count[0] = 0;
  let left = 1;
  for (let l = 1; l < 16; l++) {
    left = (left << 1) - count[l]!;
    if (left < 0) return null;
  }
  if (left > 0 && max > 0 && !(single && max === 1)) return null;
  const bits = Math.min(Math.max(max, 1), ROOT_BITS);
  const t = new Int32Array(1 << bits);
  const next = new Int32Array(16);
  const offs = new Int32Array(16);
  for (let l = 1, code = 0; l < 16; l++) {
    code = (code + count[l - 1]!) << 1;
    next[l] = code;
    offs[l] = offs[l - 1]! + count[l - 1]!;
  }
  const sorted = new Int32Array(n);
  for (let s = 0; s < n; s++) {
    const l = lens[s]!;
    if (l === 0) continue;
    sorted[offs[l]!++] = s;
    const code = next[l]!++;
    let r = 0;
    for (let k = 0; k < l; k++) r |= ((code >> k) & 1) << (l - 1 - k);
    if (l <= bits) {
      const e = (s << 4) | l;
      for (let i = r; i < 1 << bits; i += 1 << l) t[i] = e;
    } else t[r & ((1 << bits) - 1)] = LONG;
  }
  return { t, bits, max, count, sorted };
}

/**
 * A code longer than the root bits, read canonically from the bit buffer (as zlib's puff):
 * symbol << 4 | length, or 0 when the `bc` bits held do not complete a code (more input, or,
 * with `max` bits held, an invalid code).
 */
function decodeLong(h: Table, bb: number, bc: number): number {
  let code = 0;
  let first = 0;
  let index = 0;
  for (let len = 1; len <= h.max && len <= bc; len++) {
    code |= (bb >>> (len - 1)) & 1;
    const c = h.count[len]!;
    if (code - c < first) return (h.sorted[index + (code - first)]! << 4) | len;
    index += c;
    first = (first + c) << 1;
    code <<= 1;
  }
  return 0;
}

const FIXED_LENS: number[] = [];
for (let i = 0; i < 288; i++) FIXED_LENS.push(i < 144 ? 8 : i < 256 ? 9 : i < 280 ? 7 : 8);
/** 32 distance codes of 5 bits: 30 and 31 are codes of no distance (refused when read). */
const FIXED_DIST_LENS: number[] = new Array<number>(32).fill(5);
const FIXED_LIT = buildTable(FIXED_LENS, 288, true)!;
const FIXED_DIST = buildTable(FIXED_DIST_LENS, 32, true)!;

export class InflateError extends Error {}

export interface InflateJson {
  mode: Mode;
  last: boolean;
  bitBuf: number;
  bitCnt: number;
  /** Output so far (total), and the window's valid bytes in order (base64). */
  total: number;
  win: string;
  /** Stored block bytes left; code-length progress; a length / distance being read. */
  stored: number;
  hlit: number;
  hdist: number;
  hclen: number;
  idx: number;
  /** Code lengths: of the code-length code (19), then the block's literal/length + distance lengths. */
  lens: string;
  sym: number;
  len: number;
  /** The block's codes: 'fixed', or the lengths in `lens` (dynamic). */
  fixed: boolean;
}

export class Inflater {
  private mode: Mode = 'header';
  private last = false;
  private bitBuf = 0;
  private bitCnt = 0;
  private total = 0;
  /** [WSIZE - window, WSIZE): the window between calls; output goes after it during a call. */
  private readonly buf = new Uint8Array(BUF);
  private stored = 0;
  private hlit = 0;
  private hdist = 0;
  private hclen = 0;
  private idx = 0;
  /** 19 code-length code lengths, then up to 288 + 32 code lengths. */
  private readonly lens = new Uint8Array(19 + 320);
  private sym = 0;
  private len = 0;
  private fixed = true;
  private lit: Table = FIXED_LIT;
  private dist: Table = FIXED_DIST;
  private cl: Table | null = null;

  /** Ready for another deflate stream (the next gzip member), without a new window buffer. */
  reset(): void {
    this.mode = 'header';
    this.last = false;
    this.bitBuf = this.bitCnt = this.total = 0;
    this.fixed = true;
    this.lit = FIXED_LIT;
    this.dist = FIXED_DIST;
    this.cl = null;
  }

  /** The final block ended: bytes after it are not deflate data (see `leftover`). */
  get done(): boolean {
    return this.mode === 'done';
  }

  /** Output bytes so far. */
  get produced(): number {
    return this.total;
  }

  /**
   * Consumes `input` from `from` on; returns where it stopped: the end, or the first byte after
   * the final block (when `done`). Output goes to `sink` (a view valid during the call).
   * Throws InflateError on data that is not deflate.
   */
  push(input: Uint8Array, from: number, sink: (piece: Uint8Array) => void): number {
    let ip = from;
    const n = input.length;
    let bb = this.bitBuf;
    let bc = this.bitCnt;
    const buf = this.buf;
    let op = WSIZE;
    /** Output before this call's unflushed part (total = base + op - WSIZE). */
    let base = this.total;
    const flushOut = (): void => {
      const k = op - WSIZE;
      if (k === 0) return;
      base += k;
      op = WSIZE;
      try {
        sink(buf.subarray(WSIZE, WSIZE + k));
      } finally {
        // The last WSIZE bytes become the history (also when the sink throws: a bound).
        buf.copyWithin(0, k, WSIZE + k);
      }
    };
    /** At least `k` bits in the bit buffer, taking input bytes as needed; false: the input ended. */
    const need = (k: number): boolean => {
      while (bc < k && ip < n) {
        bb |= input[ip++]! << bc;
        bc += 8;
      }
      return bc >= k;
    };
    /** The next symbol of `h` where the input may end inside it (then -1); `what` names a bad code. */
    const symbol = (h: Table, what: string): number => {
      need(h.max);
      let e = h.t[bb & ((1 << h.bits) - 1)]!;
      if (e === LONG) e = decodeLong(h, bb, bc);
      const l = e & 15;
      if (l === 0 || l > bc) {
        if (bc >= h.max) fail(what);
        return -1;
      }
      bb >>>= l;
      bc -= l;
      return e >> 4;
    };
    /** A length / distance pair (RFC 1951 §3.2.3): `len` bytes from `d` back, maybe overlapping. */
    const copy = (d: number, len: number): void => {
      if (d > base + op - WSIZE || d > WSIZE) fail('distance too far back');
      const src = op - d;
      if (d >= len && len > 16) buf.copyWithin(op, src, src + len);
      else for (let j = 0; j < len; j++) buf[op + j] = buf[src + j]!;
      op += len;
      if (op >= FLUSH_AT) flushOut();
    };
    const fail = (why: string): never => {
      this.bitBuf = bb;
      this.bitCnt = bc;
      throw new InflateError(why);
    };
    try {
      for (;;) {
        switch (this.mode) {
          case 'header': {
            if (!need(3)) return ip;
            this.last = (bb & 1) === 1;
            const type = (bb >>> 1) & 3;
            bb >>>= 3;
            bc -= 3;
            if (type === 0) {
              bb >>>= bc & 7;
              bc -= bc & 7;
              this.mode = 'storedLen';
            } else if (type === 1) {
              this.fixed = true;
              this.lit = FIXED_LIT;
              this.dist = FIXED_DIST;
              this.mode = 'codes';
            } else if (type === 2) this.mode = 'table';
            else fail('invalid block type');
            break;
          }
          case 'storedLen':
          case 'storedNlen': {
            if (!need(16)) return ip;
            const v = bb & 0xffff;
            bb >>>= 16;
            bc -= 16;
            if (this.mode === 'storedLen') {
              this.stored = v;
              this.mode = 'storedNlen';
            } else {
              if ((v ^ 0xffff) !== this.stored) fail('stored block length check');
              this.mode = this.stored > 0 ? 'stored' : this.last ? 'done' : 'header';
            }
            break;
          }
          case 'stored': {
            // Whole bytes still in the bit buffer first (the stream is byte aligned here).
            while (this.stored > 0 && bc >= 8) {
              buf[op++] = bb & 0xff;
              bb >>>= 8;
              bc -= 8;
              this.stored--;
              if (op >= FLUSH_AT) flushOut();
            }
            while (this.stored > 0 && ip < n) {
              const k = Math.min(this.stored, n - ip, BUF - op);
              buf.set(input.subarray(ip, ip + k), op);
              ip += k;
              op += k;
              this.stored -= k;
              if (op >= FLUSH_AT) flushOut();
            }
            if (this.stored > 0) return ip;
            this.mode = this.last ? 'done' : 'header';
            break;
          }
          case 'table': {
            if (!need(14)) return ip;
            this.hlit = (bb & 31) + 257;
            this.hdist = ((bb >>> 5) & 31) + 1;
            this.hclen = ((bb >>> 10) & 15) + 4;
            bb >>>= 14;
            bc -= 14;
            if (this.hlit > 286 || this.hdist > 30) fail('too many length or distance codes');
            this.lens.fill(0, 0, 19);
            this.idx = 0;
            this.mode = 'clens';
            break;
          }
          case 'clens': {
            while (this.idx < this.hclen) {
              if (!need(3)) return ip;
              this.lens[CL_ORDER[this.idx++]!] = bb & 7;
              bb >>>= 3;
              bc -= 3;
            }
            this.cl = buildTable(this.lens, 19, false);
            if (this.cl === null) fail('invalid code lengths set');
            this.idx = 0;
            this.mode = 'lens';
            break;
          }
          case 'lens':
          case 'lensExtra': {
            const cl = this.cl ?? (this.cl = buildTable(this.lens, 19, false)!);
            const lens = this.lens;
            const want = this.hlit + this.hdist;
            while (this.idx < want) {
              if (this.mode === 'lens') {
                const s = symbol(cl, 'invalid code length code');
                if (s < 0) return ip;
                if (s < 16) {
                  lens[19 + this.idx++] = s;
                  continue;
                }
                if (s === 16 && this.idx === 0) fail('repeat with no previous length');
                this.sym = s;
                this.mode = 'lensExtra';
              }
              const s = this.sym;
              const eb = s === 16 ? 2 : s === 17 ? 3 : 7;
              if (!need(eb)) return ip;
              const rep = (s === 16 ? 3 : s === 17 ? 3 : 11) + (bb & ((1 << eb) - 1));
              bb >>>= eb;
              bc -= eb;
              if (this.idx + rep > want) fail('too many code lengths');
              const v = s === 16 ? lens[19 + this.idx - 1]! : 0;
              lens.fill(v, 19 + this.idx, 19 + this.idx + rep);
              this.idx += rep;
              this.mode = 'lens';
            }
            if (lens[19 + 256] === 0) fail('no end-of-block code');
            this.tablesFromLens();
            this.mode = 'codes';
            break;
          }
          case 'codes':
          case 'lenExtra':
          case 'dist':
          case 'distExtra': {
            const lt = this.lit.t;
            const lit = this.lit;
            const dist = this.dist;
            const lmask = (1 << lit.bits) - 1;
            const dt = this.dist.t;
            const dmask = (1 << dist.bits) - 1;
            for (;;) {
              // Fast path: input enough for a whole symbol (a literal, or a length and a distance
              // with their extra bits: at most 48 bits), so no state is kept between its parts.
              let blockEnd = false;
              while (this.mode === 'codes' && n - ip >= 8) {
                if (bc < 15) {
                  bb |= input[ip++]! << bc;
                  bc += 8;
                  if (bc < 15) {
                    bb |= input[ip++]! << bc;
                    bc += 8;
                  }
                }
                let e = lt[bb & lmask]!;
                if (e === LONG) e = decodeLong(lit, bb, bc);
                let l = e & 15;
                if (l === 0) fail('invalid literal/length code');
                bb >>>= l;
                bc -= l;
                let s = e >> 4;
                if (s < 256) {
                  buf[op++] = s;
                  if (op >= FLUSH_AT) flushOut();
                  continue;
                }
                if (s === 256) {
                  this.mode = this.last ? 'done' : 'header';
                  blockEnd = true;
                  break;
                }
                if (s > 285) fail('invalid literal/length code');
                s -= 257;
                let eb = LEN_EXTRA[s]!;
                if (bc < eb) {
                  bb |= input[ip++]! << bc;
                  bc += 8;
                }
                const len = LEN_BASE[s]! + (bb & ((1 << eb) - 1));
                bb >>>= eb;
                bc -= eb;
                if (bc < 15) {
                  bb |= input[ip++]! << bc;
                  bc += 8;
                  if (bc < 15) {
                    bb |= input[ip++]! << bc;
                    bc += 8;
                  }
                }
                e = dt[bb & dmask]!;
                if (e === LONG) e = decodeLong(dist, bb, bc);
                l = e & 15;
                if (l === 0) fail('invalid distance code');
                bb >>>= l;
                bc -= l;
                s = e >> 4;
                if (s > 29) fail('invalid distance code');
                eb = DIST_EXTRA[s]!;
                while (bc < eb) {
                  bb |= input[ip++]! << bc;
                  bc += 8;
                }
                const d = DIST_BASE[s]! + (bb & ((1 << eb) - 1));
                bb >>>= eb;
                bc -= eb;
                copy(d, len);
              }
              if (blockEnd) break;
              if (this.mode === 'codes') {
                const s = symbol(lit, 'invalid literal/length code');
                if (s < 0) return ip;
                if (s < 256) {
                  buf[op++] = s;
                  if (op >= FLUSH_AT) flushOut();
                  continue;
                }
                if (s === 256) {
                  this.mode = this.last ? 'done' : 'header';
                  break;
                }
                if (s > 285) fail('invalid literal/length code');
                this.sym = s - 257;
                this.mode = 'lenExtra';
              }
              if (this.mode === 'lenExtra') {
                const eb = LEN_EXTRA[this.sym]!;
                if (!need(eb)) return ip;
                this.len = LEN_BASE[this.sym]! + (bb & ((1 << eb) - 1));
                bb >>>= eb;
                bc -= eb;
                this.mode = 'dist';
              }
              if (this.mode === 'dist') {
                const s = symbol(dist, 'invalid distance code');
                if (s < 0) return ip;
                if (s > 29) fail('invalid distance code');
                this.sym = s;
                this.mode = 'distExtra';
              }
              // distExtra: the copy is made as soon as the distance is known.
              const eb = DIST_EXTRA[this.sym]!;
              if (!need(eb)) return ip;
              const d = DIST_BASE[this.sym]! + (bb & ((1 << eb) - 1));
              bb >>>= eb;
              bc -= eb;
              copy(d, this.len);
              this.mode = 'codes';
            }
            break;
          }
          case 'done':
            return ip;
        }
      }
    } finally {
      this.bitBuf = bb;
      this.bitCnt = bc;
      this.total = base + op - WSIZE;
      flushOut();
    }
  }

  /**
   * After the final block: the whole bytes the bit buffer read ahead (they follow the deflate
   * data: a trailer's first bytes); the bits left in a partial byte are padding.
   */
  leftover(): Uint8Array {
    if (this.mode !== 'done') throw new Error('inflate: leftover before the end (bug)');
    const pad = this.bitCnt & 7;
    let bb = this.bitBuf >>> pad;
    const k = (this.bitCnt - pad) >> 3;
    const r = new Uint8Array(k);
    for (let i = 0; i < k; i++) {
      r[i] = bb & 0xff;
      bb >>>= 8;
    }
    this.bitBuf = 0;
    this.bitCnt = 0;
    return r;
  }

  private tablesFromLens(): void {
    const lens = this.lens;
    const lit = buildTable(lens.subarray(19, 19 + this.hlit), this.hlit, true);
    const dist = buildTable(lens.subarray(19 + this.hlit, 19 + this.hlit + this.hdist), this.hdist, true);
    if (lit === null || dist === null) throw new InflateError('invalid literal/length or distance code lengths');
    this.fixed = false;
    this.lit = lit;
    this.dist = dist;
  }

  toJSON(): InflateJson {
    const have = Math.min(this.total, WSIZE);
    const w = this.buf.subarray(WSIZE - have, WSIZE);
    return {
      mode: this.mode,
      last: this.last,
      bitBuf: this.bitBuf >>> 0,
      bitCnt: this.bitCnt,
      total: this.total,
      win: Buffer.from(w).toString('base64'),
      stored: this.stored,
      hlit: this.hlit,
      hdist: this.hdist,
      hclen: this.hclen,
      idx: this.idx,
      lens: Buffer.from(this.lens).toString('base64'),
      sym: this.sym,
      len: this.len,
      fixed: this.fixed,
    };
  }

  /** Rebuilds from toJSON's output; throws on a state that does not fit. */
  static fromJSON(j: InflateJson): Inflater {
    const x = new Inflater();
    const int = (v: unknown, lo: number, hi: number): number => {
      if (typeof v !== 'number' || !Number.isInteger(v) || v < lo || v > hi) throw new Error('inflate: bad state');
      return v;
    };
    if (!MODES.includes(j.mode)) throw new Error('inflate: bad state (mode)');
    x.mode = j.mode;
    x.last = j.last === true;
    x.bitCnt = int(j.bitCnt, 0, 32);
    x.bitBuf = int(j.bitBuf, 0, 2 ** 32 - 1) | 0;
    x.total = int(j.total, 0, Number.MAX_SAFE_INTEGER);
    const w = Buffer.from(String(j.win), 'base64');
    if (w.length !== Math.min(x.total, WSIZE)) throw new Error('inflate: bad state (window)');
    x.buf.set(w, WSIZE - w.length);
    x.stored = int(j.stored, 0, 0xffff);
    x.hlit = int(j.hlit, 0, 286);
    x.hdist = int(j.hdist, 0, 30);
    x.hclen = int(j.hclen, 0, 19);
    x.idx = int(j.idx, 0, 320);
    x.sym = int(j.sym, 0, 285);
    x.len = int(j.len, 0, 258);
    const lens = Buffer.from(String(j.lens), 'base64');
    if (lens.length !== x.lens.length) throw new Error('inflate: bad state (lengths)');
    x.lens.set(lens);
    for (const l of x.lens) if (l > 15) throw new Error('inflate: bad state (lengths)');
    x.fixed = j.fixed === true;
    const symMax: Partial<Record<Mode, [number, number]>> = { lensExtra: [16, 18], lenExtra: [0, 28], distExtra: [0, 29] };
    const sm = symMax[x.mode];
    if (sm !== undefined) int(x.sym, sm[0], sm[1]);
    const inBlock = x.mode === 'codes' || x.mode === 'lenExtra' || x.mode === 'dist' || x.mode === 'distExtra';
    if (inBlock && !x.fixed) x.tablesFromLens();
    if (x.mode === 'lens' || x.mode === 'lensExtra') {
      x.cl = buildTable(x.lens, 19, false);
      if (x.cl === null) throw new Error('inflate: bad state (code lengths)');
    }
    return x;
  }
}
