/**
 * One gzip- or deflate-coded message body rewritten (the http agent's `decode`): the coded
 * bytes are decoded (../coding/codec.ts, state that moves with the connection), the decoded
 * body goes through the replace agent's matching as an identity body does (./body.ts), and
 * what it decides is coded again as the same coding, each piece ending with a sync flush so the
 * peer can decode all of it at once.
 *
 * Every coded byte is replaced: the output of a run replaces the stream's bytes from the first
 * not emitted up to the frontier, framing included (chunked: one chunk per run). While the
 * matcher holds an undecided tail of decoded bytes, the last coded body byte fed is held with
 * it (and any framing after it), so the engine knows bytes are held and its hold timeout and
 * limit flush them (a flush decides the tail and the run replaces that byte too).
 */

import { CodingError, Decoder, Encoder, type Coding, type DecoderJson, type EncoderJson } from '../coding/codec.js';
import type { ReplaceConfig } from '../replace.js';
import type { FlushReason } from '../types.js';
import { transientConcat } from '../../util/bytes.js';
import { BodyMatcher, matcherFailure, type Body, type OutFraming } from './body.js';
import type { RefuseReason, Tally } from './counters.js';
import { EMPTY, type EditBuilder } from './edits.js';

/** Decoded bytes a body may have before maxDecodedRatio applies. */
export const RATIO_FREE = 1 << 20;
/** Decoded bytes collected before they go through the matcher and the encoder. */
const BATCH = 64 * 1024;

const CRLF = Buffer.from('\r\n');

/** Decoding stopped by maxDecodedRatio (refused as codingRatio, not coding). */
class RatioExceeded extends CodingError {}

export interface CodedJson {
  coded: Coding;
  out: OutFraming;
  outPos: number;
  end: number;
  lastBody: number;
  fed: number;
  plainFed: number;
  plainDecided: number;
  tail: string;
  pending: string[];
  inserts: { o: number; rep: string }[];
  finished: boolean;
  failure: RefuseReason | null;
  decoder: DecoderJson;
  encoder: EncoderJson | null;
  matcher: unknown;
}

export class CodedBody implements Body {
  /** Stream position of the first byte not emitted; the end of what was fed; after the last body byte. */
  private outPos: number;
  private end: number;
  private lastBody: number;
  /** Coded body bytes fed. */
  private fed = 0;
  /** Decoded bytes fed to the matcher; decided by it (the tail in between is held here). */
  private plainFed = 0;
  private plainDecided = 0;
  private tail: Buffer = EMPTY;
  /** Coded output not emitted yet. */
  private pending: Buffer[] = [];
  /** Insertions after the body (the last chunk), emitted after the output before them. */
  private inserts: { o: number; rep: Buffer }[] = [];
  /** The coded body ended and its output is complete. */
  private finished = false;
  failure: RefuseReason | null = null;
  private readonly dec: Decoder;
  /** Made with the first output: a deflate body is coded back with or without the zlib wrapper as it came. */
  private enc: Encoder | null;
  private readonly matcher: BodyMatcher;
  /** Decoded pieces of one push, fed to the matcher and coded together (a gzip member or a
   *  segment is one piece each: per-piece costs must not be per member). */
  private batch: Buffer[] = [];
  private batched = 0;
  private readonly sink = (p: Uint8Array): void => {
    const t = this.totals;
    t.produced += p.length;
    if (t.produced > RATIO_FREE && t.produced > this.maxRatio * t.consumed) throw new RatioExceeded(`decoded more than ${this.maxRatio} times the coded size`);
    this.batch.push(Buffer.from(p));
    this.batched += p.length;
    if (this.batched >= BATCH) this.drain();
  };

  constructor(
    coding: Coding,
    rules: ReplaceConfig,
    public out: OutFraming,
    outPos: number,
    private readonly tally: Tally,
    private readonly maxRatio: number,
    /** Coded and decoded bytes of this direction's coded bodies so far (the ratio's bound is
     *  per connection direction: many small bodies do not each get RATIO_FREE). */
    private readonly totals: { consumed: number; produced: number },
    json?: CodedJson,
  ) {
    if (json === undefined) {
      this.outPos = this.end = outPos;
      this.lastBody = -1;
      this.dec = new Decoder(coding);
      this.enc = null;
      this.matcher = new BodyMatcher(rules, tally);
      return;
    }
    this.outPos = json.outPos;
    this.end = json.end;
    this.lastBody = json.lastBody;
    this.fed = json.fed;
    this.plainFed = json.plainFed;
    this.plainDecided = json.plainDecided;
    this.tail = Buffer.from(json.tail, 'base64');
    this.pending = json.pending.map((x) => Buffer.from(x, 'base64'));
    this.inserts = json.inserts.map((x) => ({ o: x.o, rep: Buffer.from(x.rep, 'base64') }));
    this.finished = json.finished;
    this.failure = json.failure;
    this.dec = Decoder.fromJSON(json.decoder);
    if (this.dec.coding !== coding) throw new Error('http: bad snapshot (coding)');
    this.enc = json.encoder === null ? null : Encoder.fromJSON(json.encoder);
    this.matcher = new BodyMatcher(rules, tally, json.matcher);
  }

  body(o: number, data: Uint8Array): void {
    if (data.length === 0) return;
    this.end = this.lastBody = o + data.length;
    this.fed += data.length;
    if (this.failure !== null) return;
    this.totals.consumed += data.length;
    try {
      this.dec.push(data, this.sink);
      this.drain();
    } catch (e) {
      this.batch = [];
      this.batched = 0;
      if (!(e instanceof CodingError)) throw e;
      this.fail(e instanceof RatioExceeded ? 'codingRatio' : 'coding');
    }
  }

  private drain(): void {
    if (this.batched === 0) return;
    const p = this.batch.length === 1 ? this.batch[0]! : Buffer.concat(this.batch);
    this.batch = [];
    this.batched = 0;
    this.plain(p);
  }

  frame(o: number, n: number, rep: Buffer = EMPTY): void {
    if (rep.length > 0) {
      if (n !== 0) throw new Error('http: coded body framing replaced (agent bug)');
      this.inserts.push({ o, rep });
    }
    this.end = Math.max(this.end, o + n);
  }

  /** Decoded bytes: through the matcher, what it decides coded again. */
  private plain(p: Uint8Array): void {
    if (this.failure !== null) return;
    const r = this.matcher.feed(this.plainFed, p);
    this.plainFed += p.length;
    if (r.abort !== undefined) return this.fail(matcherFailure(r.abort));
    this.decide(r.edits, r.undecidedFrom ?? this.plainFed, p);
  }

  /** The decoded bytes [plainDecided, und) with the matcher's edits applied, coded into pending. */
  private decide(edits: readonly { at: number; len: number; data: Uint8Array }[], und: number, fresh: Uint8Array): void {
    const base = this.plainDecided;
    const buf = this.tail.length === 0 ? fresh : fresh.length === 0 ? this.tail : transientConcat([this.tail, fresh]);
    if (und > base) {
      let parts: Uint8Array[];
      if (edits.length === 0) parts = [buf.subarray(0, und - base)];
      else {
        parts = [];
        let at = base;
        for (const e of edits) {
          parts.push(buf.subarray(at - base, e.at - base), e.data);
          at = e.at + e.len;
        }
        parts.push(buf.subarray(at - base, und - base));
      }
      const plain = parts.length === 1 ? parts[0]! : transientConcat(parts);
      const coded = this.encoder().encode(plain);
      if (coded.length > 0) this.pending.push(coded);
    }
    this.tail = und - base < buf.length ? Buffer.from(buf.subarray(und - base)) : EMPTY;
    this.plainDecided = und;
  }

  private encoder(): Encoder {
    return (this.enc ??= new Encoder(this.dec.coding, this.dec.raw));
  }

  decideAll(reason: FlushReason): void {
    if (this.failure !== null || this.finished) return;
    const r = this.matcher.flush(reason);
    if (r.abort !== undefined) return this.fail(matcherFailure(r.abort));
    this.decide(r.edits, this.plainFed, EMPTY);
    if (reason !== 'fin') return;
    this.finished = true;
    // An empty body stays empty (as the identity path, and as clients read it).
    if (this.dec.consumed === 0) return;
    try {
      this.dec.finish();
    } catch (e) {
      if (!(e instanceof CodingError)) throw e;
      return this.fail('coding');
    }
    // Counted once, at the end (the count travels with the decoder's state until then).
    if (this.dec.ignored > 0) this.tally.add('codedTrailingBytes', this.dec.ignored);
    this.pending.push(this.encoder().finish());
  }

  private fail(why: RefuseReason): void {
    this.failure = why;
    this.pending = [];
    this.tail = EMPTY;
  }

  outputLength(): number {
    let n = 0;
    for (const p of this.pending) n += p.length;
    return n;
  }

  get start(): number {
    return this.outPos;
  }

  frontier(): number {
    return this.tail.length > 0 && !this.finished ? Math.max(this.outPos, this.lastBody - 1) : this.end;
  }

  get matches(): number {
    return this.matcher.matches;
  }

  get bodyFed(): number {
    return this.fed;
  }

  emit(ob: EditBuilder): void {
    if (this.failure !== null) return;
    const to = this.frontier();
    const n = this.outputLength();
    // The output, framed as one chunk when chunked: one copy (transient: the engine copies it).
    const parts = this.out === 'chunked' && n > 0 ? [Buffer.from(`${n.toString(16)}\r\n`, 'latin1'), ...this.pending, CRLF] : this.pending;
    this.pending = [];
    if (to > this.outPos || n > 0) {
      ob.add(this.outPos, to - this.outPos, parts.length === 1 ? parts[0]! : transientConcat(parts));
      this.outPos = to;
    }
    while (this.inserts.length > 0 && this.inserts[0]!.o <= to) {
      const x = this.inserts.shift()!;
      ob.add(x.o, 0, x.rep);
    }
  }

  toJSON(): CodedJson {
    return {
      coded: this.dec.coding,
      out: this.out,
      outPos: this.outPos,
      end: this.end,
      lastBody: this.lastBody,
      fed: this.fed,
      plainFed: this.plainFed,
      plainDecided: this.plainDecided,
      tail: this.tail.toString('base64'),
      pending: this.pending.map((x) => x.toString('base64')),
      inserts: this.inserts.map((x) => ({ o: x.o, rep: x.rep.toString('base64') })),
      finished: this.finished,
      failure: this.failure,
      decoder: this.dec.toJSON(),
      encoder: this.enc === null ? null : this.enc.toJSON(),
      matcher: this.matcher.snapshot(),
    };
  }
}
