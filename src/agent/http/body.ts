/**
 * One message body through the replace agent's matching, re-framed on the way out.
 *
 * The matcher is the replace agent itself (src/agent/replace.ts, one instance per body, its
 * `c2s` direction used as "the body"): it sees the *de-framed* body — chunk-size lines and the
 * CRLF after chunk data are never part of it — so a match may span chunks but never touches
 * framing, the header section or the next message; `^` is the body's first byte. Its edits come
 * in body positions; this file maps them back to stream positions through *segments* of the
 * original stream: body bytes (with their body position) and framing bytes (deleted, or replaced
 * by `rep`). An edit spanning framing bytes replaces them too.
 *
 * Output framing (RFC 9112 §6, §7.1):
 * - `chunked`: every decided piece of output becomes one chunk `hex(len) CRLF data CRLF`
 *   inserted around the original bytes (an empty piece makes no chunk: a zero-size chunk would
 *   end the body); the original chunk framing is deleted.
 * - `close`, `fixlen`: edits as they are (the caller fixes or removes Content-Length; `fixlen`
 *   emits nothing until the whole body is decided).
 * Only body bytes the matcher has decided are emitted; the undecided tail (at most the longest
 * pattern - 1 body bytes, plus framing between them) is held.
 */

import { createReplace, newReplaceCounters, type ReplaceConfig } from '../replace.js';
import type { Agent, AgentContext, AgentOutput, Direction, Edit, FlushReason } from '../types.js';
import type { CodedJson } from './coded-body.js';
import type { RefuseReason, Tally } from './counters.js';
import { EMPTY, type EditBuilder } from './edits.js';

export type OutFraming = 'fixlen' | 'chunked' | 'close';

/** Original bytes [o, o + n): body bytes from body position b, or framing (b = -1) replaced by rep. */
interface Seg {
  o: number;
  n: number;
  b: number;
  rep: Buffer;
}

export interface RewriterJson {
  out: OutFraming;
  fed: number;
  decided: number;
  emitted: number;
  outPos: number;
  segs: { o: number; n: number; b: number; rep: string }[];
  edits: { at: number; len: number; data: string }[];
  matcher: unknown;
}

const CRLF = Buffer.from('\r\n');

/** The context the matcher runs in: one direction, the body. */
const BODY: Direction = 'c2s';
const MATCH_CTX: AgentContext = Object.freeze({
  flowId: 'http-body',
  client: { addr: '0.0.0.0', port: 0 },
  server: { addr: '0.0.0.0', port: 0 },
  directions: new Set<Direction>([BODY]),
});

/**
 * The replace agent over one body (positions are body positions), counting its matches and
 * regex give-ups into the tally as they are decided.
 */
export class BodyMatcher {
  private readonly agent: Agent;
  private readonly counts = newReplaceCounters();
  /** counts as last added to the tally. */
  private matched = 0;
  private giveUps = 0;
  private fallbacks = 0;

  constructor(
    rules: ReplaceConfig,
    private readonly tally: Tally,
    json?: unknown,
  ) {
    const f = createReplace({ counters: this.counts, joinMatches: true });
    this.agent = json === undefined ? f.create(rules, MATCH_CTX) : f.restore(rules, MATCH_CTX, json);
  }

  feed(pos: number, data: Uint8Array): AgentOutput {
    return this.counted(this.agent.feed(BODY, pos, data));
  }

  flush(reason: FlushReason): AgentOutput {
    return this.counted(this.agent.flush(BODY, reason));
  }

  resync(pos: number): void {
    this.agent.resync!(BODY, pos);
  }

  /** Matches replaced in this body so far (since this node has it). */
  get matches(): number {
    return this.counts.matches;
  }

  snapshot(): unknown {
    return this.agent.snapshot();
  }

  private counted(r: AgentOutput): AgentOutput {
    const c = this.counts;
    if (c.matches !== this.matched) this.tally.add('bodyMatches', c.matches - this.matched);
    if (c.regexBudgetExceeded !== this.giveUps) this.tally.add('regexBudgetExceeded', c.regexBudgetExceeded - this.giveUps);
    if (c.longListFallbacks !== this.fallbacks) this.tally.add('longListFallbacks', c.longListFallbacks - this.fallbacks);
    this.matched = c.matches;
    this.giveUps = c.regexBudgetExceeded;
    this.fallbacks = c.longListFallbacks;
    return r;
  }
}

/** The refusal a body matcher's abort stands for (the replace agent's `replace:<why>`). */
export function matcherFailure(abort: string): RefuseReason {
  return abort === 'replace:regex-budget' ? 'regexBudget' : 'splitMatch';
}

/** What the http stream needs of a body's rewriter: this file's, or ./coded-body.ts's. */
export interface Body {
  out: OutFraming;
  /** Body bytes at stream position o. */
  body(o: number, data: Uint8Array): void;
  /** Framing bytes at stream position o (deleted), or an insertion (n = 0) of rep. */
  frame(o: number, n: number, rep?: Buffer): void;
  /** Decide what is held: at the body's end ('fin') or mid-body when the engine flushes. */
  decideAll(reason: FlushReason): void;
  /** Length of the output for what is decided and not emitted (a fixlen body's length). */
  outputLength(): number;
  /** Emit everything decided (all of it for fixlen: call after decideAll). */
  emit(ob: EditBuilder): void;
  /** Stream position of the first byte not emitted. */
  readonly start: number;
  /** Stream position of the first byte not decided. */
  frontier(): number;
  readonly matches: number;
  readonly bodyFed: number;
  /** Why the body cannot go on (a coded body that does not decode, a match split), or null. */
  readonly failure: RefuseReason | null;
  toJSON(): RewriterJson | CodedJson;
}

export class BodyRewriter implements Body {
  /** Body bytes fed to the matcher; the matcher's undecidedFrom; body bytes emitted. */
  private fed: number;
  private decided: number;
  private emitted: number;
  /** Stream position from which segments are not emitted yet. */
  private outPos: number;
  private segs: Seg[];
  /** Decided matcher edits (body positions) not emitted yet. */
  private edits: Edit[];
  private readonly matcher: BodyMatcher;
  /** Set once the matcher gave up (a match a forced decision split, a regex budget: matcherFailure). */
  failure: RefuseReason | null = null;

  constructor(
    rules: ReplaceConfig,
    public out: OutFraming,
    outPos: number,
    /** Where matches (bodyMatches) and regex give-ups (regexBudgetExceeded) are counted. */
    tally: Tally,
    json?: RewriterJson,
  ) {
    if (json === undefined) {
      this.fed = this.decided = this.emitted = 0;
      this.outPos = outPos;
      this.segs = [];
      this.edits = [];
      this.matcher = new BodyMatcher(rules, tally);
    } else {
      this.fed = json.fed;
      this.decided = json.decided;
      this.emitted = json.emitted;
      this.outPos = json.outPos;
      this.segs = json.segs.map((s) => ({ o: s.o, n: s.n, b: s.b, rep: Buffer.from(s.rep, 'base64') }));
      this.edits = json.edits.map((e) => ({ at: e.at, len: e.len, data: Buffer.from(e.data, 'base64') }));
      this.matcher = new BodyMatcher(rules, tally, json.matcher);
    }
  }

  /** Body bytes at stream position o. */
  body(o: number, data: Uint8Array): void {
    if (data.length === 0) return;
    const last = this.segs[this.segs.length - 1];
    if (last !== undefined && last.b >= 0 && last.o + last.n === o && last.b + last.n === this.fed) last.n += data.length;
    else this.segs.push({ o, n: data.length, b: this.fed, rep: EMPTY });
    const r = this.matcher.feed(this.fed, data);
    this.fed += data.length;
    this.take(r);
    if (r.abort !== undefined) this.failure = matcherFailure(r.abort);
  }

  /** Framing bytes at stream position o (deleted), or an insertion (n = 0) of rep. */
  frame(o: number, n: number, rep: Buffer = EMPTY): void {
    if (n === 0 && rep.length === 0) return;
    const last = this.segs[this.segs.length - 1];
    if (last !== undefined && last.b < 0 && last.rep.length === 0 && rep.length === 0 && last.o + last.n === o) last.n += n;
    else this.segs.push({ o, n, b: -1, rep });
  }

  /**
   * Decide the matcher's tail: at the body's end ('fin': complete matches in it are still
   * replaced), or mid-body when the engine flushes (matches across that point are not found).
   */
  decideAll(reason: FlushReason): void {
    const r = this.matcher.flush(reason);
    this.take(r);
    this.decided = this.fed;
    if (r.abort !== undefined) this.failure = matcherFailure(r.abort);
  }

  /**
   * Keeps the matcher's edits; counts. Their bytes may be transient (valid for this batch): a
   * fixlen body keeps its edits until its end, maybe batches later, so it keeps copies.
   */
  private take(r: AgentOutput): void {
    if (this.out === 'fixlen') for (const e of r.edits) this.edits.push({ at: e.at, len: e.len, data: Buffer.from(e.data) });
    else for (const e of r.edits) this.edits.push(e);
    this.decided = r.undecidedFrom ?? this.fed;
  }

  /** Length of the output for the decided, not yet emitted body bytes. */
  outputLength(): number {
    let n = this.decided - this.emitted;
    for (const e of this.edits) n += e.data.length - e.len;
    return n;
  }

  /** Stream position of the first byte not emitted. */
  get start(): number {
    return this.outPos;
  }

  /** Matches replaced in this body so far (since this node has it). */
  get matches(): number {
    return this.matcher.matches;
  }

  /** Body bytes given to the matcher so far. */
  get bodyFed(): number {
    return this.fed;
  }

  /** Stream position of the first byte not decided (held): the first undecided body byte. */
  frontier(): number {
    if (this.decided < this.fed) return this.posOf(this.decided);
    const last = this.segs[this.segs.length - 1];
    return last === undefined ? this.outPos : last.o + last.n;
  }

  /** Stream position of body position b, searching the segments from index `from` on. */
  private posOf(b: number, from = 0): number {
    const segs = this.segs;
    for (let i = from; i < segs.length; i++) {
      const s = segs[i]!;
      if (s.b >= 0 && b >= s.b && b < s.b + s.n) return s.o + (b - s.b);
    }
    throw new Error(`http: body position ${b} not held (agent bug)`);
  }

  /** Emit everything decided (all of it for fixlen: call after decideAll). */
  emit(ob: EditBuilder): void {
    const chunk = this.out === 'chunked';
    const upto = this.decided;
    const b0 = this.emitted;
    const L = this.outputLength();
    const hdr = chunk && L > 0 ? Buffer.from(`${L.toString(16)}\r\n`, 'latin1') : null;
    const segs = this.segs;
    const edits = this.edits;
    let k = 0;
    let absorbEnd = -1;
    let i = 0;
    let end = this.outPos;
    for (; i < segs.length; i++) {
      const s = segs[i]!;
      if (s.b < 0) {
        end = s.o + s.n;
        if (s.n > 0 && s.o + s.n <= absorbEnd) continue; // inside a replaced span
        ob.add(s.o, s.n, s.rep);
        continue;
      }
      if (s.b >= upto) break;
      const e = Math.min(s.b + s.n, upto);
      if (hdr !== null && s.b === b0) ob.add(s.o, 0, hdr);
      while (k < edits.length && edits[k]!.at < e) {
        const x = edits[k++]!;
        // Edits are sorted and start in this segment or an earlier one (spanning framing).
        const from = x.at >= s.b ? s.o + (x.at - s.b) : this.posOf(x.at);
        const to = x.len === 0 ? from : this.posOf(x.at + x.len - 1, i) + 1;
        ob.add(from, to - from, x.data);
        absorbEnd = to;
      }
      if (hdr !== null && e === upto) ob.add(s.o + (upto - s.b), 0, CRLF);
      if (e < s.b + s.n) {
        segs[i] = { o: s.o + (e - s.b), n: s.n - (e - s.b), b: e, rep: EMPTY };
        break;
      }
      end = s.o + s.n;
    }
    if (k !== edits.length) throw new Error('http: body edits left after emit (agent bug)');
    this.segs = segs.slice(i);
    this.edits = [];
    this.emitted = upto;
    this.outPos = this.segs.length > 0 ? this.segs[0]!.o : end;
  }

  /** Cluster takeover inside the body: stream position o is body position b; held bytes are gone. */
  resync(o: number, b: number): void {
    this.matcher.resync(b);
    this.fed = this.decided = this.emitted = b;
    this.segs = [];
    this.edits = [];
    this.outPos = o;
  }

  toJSON(): RewriterJson {
    return {
      out: this.out,
      fed: this.fed,
      decided: this.decided,
      emitted: this.emitted,
      outPos: this.outPos,
      segs: this.segs.map((s) => ({ o: s.o, n: s.n, b: s.b, rep: s.rep.toString('base64') })),
      edits: this.edits.map((e) => ({ at: e.at, len: e.len, data: Buffer.from(e.data).toString('base64') })),
      matcher: this.matcher.snapshot(),
    };
  }
}
