/**
 * One direction of an HTTP/1.x connection (RFC 9112): a pg-protocol-style parser that takes
 * each chunk of the ordered stream, consumes every complete unit (start-line and fields as one
 * held section, chunk-size lines, chunk data, trailers), keeps only a bounded remainder, and
 * answers the edits and the undecided position of agent/types.ts.
 *
 * What is held (undecided), and its bound:
 * - a header or trailer section, from its first byte until its empty line (maxHeaderBytes);
 * - a `fixlen` body with its header (maxHeaderBytes + maxBufferedBody);
 * - the body matcher's undecided tail (the longest pattern - 1 body bytes, framing between);
 * - bytes a client sends after CONNECT / Upgrade before the answer came (maxHeaderBytes).
 * Everything else is decided as it arrives. A flush (FIN, hold timeout, engine limit) decides
 * what is held: a partial section is released unchanged (what it then needs on released bytes
 * is refused or dropped, see ./plan.ts `render`) — a start-line not yet ended only if it can still
 * become one (a start-line is judged as soon as it ends) — and a held body falls back to streaming.
 *
 * Refusal (a message that cannot be forwarded unambiguously): every byte of this direction from
 * the message's first undecided byte on is deleted, counted by reason. The peer never sees the
 * message complete, so no recipient can act on it. A refused *response* whose header is still
 * held is replaced by a generated `502 Bad Gateway` with `Connection: close` (RFC 9112 §5.2,
 * §6.3: a proxy answers 502 for an invalid response), so the client is told. A request cannot be
 * answered from here (the agent only edits the stream it is given), nor a response whose header
 * went out: the agent gives up on the connection (AgentOutput.abort) and the gateway resets both
 * ends (engine/abort.ts), so neither waits for bytes that will never come.
 */

import type { AgentContext, AgentOutput, Direction, Edit, FlushReason } from '../types.js';
import { parseBlock, type BlockKind, type NormTally, type ParsedBlock } from './block.js';
import { BodyRewriter, type Body, type OutFraming, type RewriterJson } from './body.js';
import { CodedBody, type CodedJson } from './coded-body.js';
import type { Coding } from '../coding/codec.js';
import type { ResolvedHttpConfig } from './config.js';
import type { CountKey, RefuseReason, Tally } from './counters.js';
import { EditBuilder, EMPTY } from './edits.js';
import { decideRequest, decideResponse, decideTrailers, PASS_REFUSAL, render, UNPAIRED, type After, type BodyMethod, type DecideOpts, type Decision, type Rendered, type ReqInfo } from './plan.js';
import { CR, LF, parseChunkLine, startLinePrefix } from './syntax.js';

export type Phase =
  | 'start' // before a start-line: empty lines are removed
  | 'head' // header section, held
  | 'body' // Content-Length body, up to `end`
  | 'chunkLine' // a chunk-size line
  | 'chunkData' // chunk data, up to `end`
  | 'chunkCrlf' // the CRLF after chunk data
  | 'trailers' // trailer section, held
  | 'close' // close-delimited body: to the end of the stream
  | 'await' // c2s after CONNECT / Upgrade: held until the answer
  | 'tunnel' // not HTTP any more: passes unparsed
  | 'refused' // deleted
  | 'drop'; // after a body re-framed as close-delimited: deleted

/** State both directions share (plain data). */
export interface Shared {
  /** Requests awaiting a response, oldest first (c2s pushes, s2c pairs). */
  queue: ReqInfo[];
  /** An HTTP/1.1 response was seen on this connection (RFC 9112 §6.1: the server does 1.1). */
  server11: boolean;
  /** The answer to the CONNECT / Upgrade request c2s waits on, once s2c has it. */
  awaitResult: 'tunnel' | 'http' | null;
  /** s2c still parses responses (not a tunnel, not refused): c2s queues requests for it. */
  s2cParsing: boolean;
  /** c2s is at the start of the body of a request that waits on 100-continue (none of it came yet). */
  expectWaiting: boolean;
  /** A final answer came before that body: c2s deletes what the client sends from then on. */
  c2sDrop: boolean;
}

/** The message in progress. */
interface Msg {
  after: After;
  /** The body ends with a last chunk added (Content-Length re-framed as chunked). */
  terminate: boolean;
  /** fixlen: the header section is held with the body; its bytes for the final plan. */
  head: Buffer | null;
  headAt: number;
  /** Responses: the paired request; requests: their own. */
  req: ReqInfo | null;
  /** For the event log: the start-line in short ("GET /a", "200") and the body method. */
  line?: string;
  method?: string;
}

interface DirState {
  /** End of the data fed; the last undecidedFrom answered. */
  pos: number;
  und: number;
  phase: Phase;
  /** head / trailers / await: first byte of the section, bytes released by a flush, the bytes. */
  blockStart: number;
  released: number;
  block: Buffer;
  /** Index in block of the current line's first byte. */
  blkLine: number;
  /** body / chunkData: stream position where it ends. */
  end: number;
  /** chunkLine: the line so far; chunkCrlf: CR seen. */
  line: Buffer;
  cr: boolean;
  msg: Msg | null;
  /** This direction's coded bodies: coded bytes fed and decoded bytes (maxDecodedRatio). */
  coded?: { consumed: number; produced: number };
}

export interface StreamJson {
  pos: number;
  und: number;
  phase: Phase;
  blockStart: number;
  released: number;
  block: string;
  blkLine: number;
  end: number;
  line: string;
  cr: boolean;
  coded?: { consumed: number; produced: number };
  msg: (Omit<Msg, 'head'> & { head: string | null }) | null;
  rw: RewriterJson | CodedJson | null;
  /** A refusal's abort not yet answered (AgentOutput.abort). */
  abort?: string;
}

export interface StreamEnv {
  cfg: ResolvedHttpConfig;
  /** Adds to the connection's counters and the gateway's (./counters.ts `Tally`). */
  count: Tally;
  shared: Shared;
  /** The event log's hook (AgentContext.event), if anyone listens. */
  event?: AgentContext['event'] | undefined;
  /** The gateway's log (AgentContext.log), and the connection it names. */
  log?: AgentContext['log'] | undefined;
  flowId?: string;
}

const CR_BUF = Buffer.from('\r');
const LAST_CHUNK = Buffer.from('0\r\n');
const LAST_CHUNK_END = Buffer.from('0\r\n\r\n');
const METHOD_COUNTER: Record<Exclude<BodyMethod, 'none' | 'pass'>, CountKey> = {
  fixlen: 'framedFixedLength',
  chunked: 'framedChunked',
  rechunk: 'rechunked',
  close: 'closeDelimited',
  toclose: 'framedClose',
};
const OUT: Record<Exclude<BodyMethod, 'none' | 'pass'>, OutFraming> = { fixlen: 'fixlen', chunked: 'chunked', rechunk: 'chunked', close: 'close', toclose: 'close' };

function freshState(): DirState {
  return { pos: 0, und: 0, phase: 'start', blockStart: 0, released: 0, block: EMPTY, blkLine: 0, end: 0, line: EMPTY, cr: false, msg: null };
}

const TERMINAL: ReadonlySet<Phase> = new Set(['tunnel', 'refused', 'drop']);
/** Phases inside a body whose framing (Content-Length, chunked) says where it ends. */
const CUT_PHASES: ReadonlySet<Phase> = new Set(['body', 'chunkData', 'chunkLine', 'chunkCrlf']);

export class HttpStream {
  private st: DirState;
  /** The current body's rewriter (see `rw`). */
  private body: Body | null = null;
  private ob = new EditBuilder();
  /** Runtime, not state: the parse and decision of a held fixlen header section (st.msg.head),
   *  so the final plan does not parse and decide again (after a restore it is parsed again). */
  private headParsed: { head: Buffer; pb: ParsedBlock; d: Decision } | null = null;
  /** End of the bytes the current run has (what arrived with a header section ending in it). */
  private runEnd = 0;
  /** Runtime: a refusal nobody can be told of by a message (AgentOutput.abort), until answered. */
  private abortWhy: string | null = null;
  /** s2c: this answer opened the tunnel a held c2s waits on (AgentOutput.wake, once). */
  private wakeOther = false;

  constructor(
    readonly dir: Direction,
    private readonly env: StreamEnv,
    json?: StreamJson,
  ) {
    if (json === undefined) {
      this.st = freshState();
      this.rw = null;
    } else {
      const { rw, block, line, msg, abort, ...rest } = json;
      if (abort !== undefined && typeof abort !== 'string') throw new Error('http: bad snapshot (abort)');
      this.abortWhy = abort ?? null;
      this.st = {
        ...rest,
        block: Buffer.from(block, 'base64'),
        line: Buffer.from(line, 'base64'),
        msg: msg === null ? null : { ...msg, head: msg.head === null ? null : Buffer.from(msg.head, 'base64'), req: msg.req === null ? null : { ...msg.req } },
      };
      this.rw = rw === null ? null : this.rewriter(rw.out, 0, 'coded' in rw ? rw.coded : undefined, rw);
      // A coded body imported is being decoded here now, whatever the bound.
      if (this.body instanceof CodedBody) this.env.count.takeDecoder();
    }
  }

  get phase(): Phase {
    return this.st.phase;
  }

  /** The body's rewriter; replacing a coded one frees its place under the gateway's maxDecoding. */
  private get rw(): Body | null {
    return this.body;
  }

  private set rw(x: Body | null) {
    if (this.body instanceof CodedBody && this.body !== x) this.env.count.releaseDecoder();
    this.body = x;
  }

  /** The connection leaves the gateway: what the direction holds of gateway-wide bounds is freed. */
  dispose(): void {
    this.rw = null;
  }

  private rules() {
    return this.dir === 'c2s' ? this.env.cfg.request.replace : this.env.cfg.response.replace;
  }

  /** A body's rewriter: an identity body's, or a coded one's (decoded and coded again). */
  private rewriter(out: OutFraming, at: number, coding: Coding | undefined, json?: RewriterJson | CodedJson): Body {
    if (coding === undefined) return new BodyRewriter(this.rules()!, out, at, this.env.count, json as RewriterJson | undefined);
    return new CodedBody(coding, this.rules()!, out, at, this.env.count, this.env.cfg.maxDecodedRatio, (this.st.coded ??= { consumed: 0, produced: 0 }), json as CodedJson | undefined);
  }

  // -------------------------------------------------------------------------------------------
  // Agent API

  feed(pos: number, data: Uint8Array): AgentOutput {
    const st = this.st;
    if (pos !== st.pos) throw new Error(`http: ${this.dir} fed at ${pos}, expected ${st.pos} (engine bug)`);
    this.ob = new EditBuilder();
    let buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    let base = pos;
    this.dropIfAbandoned();
    if (st.phase === 'await' && this.env.shared.awaitResult !== null) {
      // The answer came: the held bytes are parsed (or passed) together with the new ones.
      buf = Buffer.concat([st.block, buf]);
      base = st.blockStart;
      this.resolveAwait();
    }
    this.run(base, buf);
    return this.answer(buf.length > 0 ? buf[buf.length - 1]! : -1);
  }

  flush(reason: FlushReason): AgentOutput {
    const st = this.st;
    this.ob = new EditBuilder();
    this.dropIfAbandoned();
    const p = st.pos;
    switch (st.phase) {
      case 'await':
        if (st.block.length > 0) {
          if (this.env.shared.awaitResult !== null) {
            const held = st.block;
            const at = st.blockStart;
            this.resolveAwait();
            this.run(at, held);
            this.decideHeld(reason);
          } else this.refuse('await', p, p);
        }
        break;
      default:
        this.decideHeld(reason);
    }
    this.emitBody();
    st.und = st.pos;
    return this.withAbort({ edits: this.ob.take(), undecidedFrom: st.pos });
  }

  /** `out` with the abort a refusal asked for, once. */
  private withAbort(out: AgentOutput): AgentOutput {
    if (this.abortWhy === null) return out;
    out.abort = this.abortWhy;
    this.abortWhy = null;
    return out;
  }

  /**
   * Decide what is held: a partial section or chunk-size line is released unchanged (what it
   * needs on those bytes is decided at its end), a held fixlen body falls back to streaming, the
   * body matcher decides its tail.
   */
  private decideHeld(reason: FlushReason): void {
    // The stream ends inside a body whose framing said more was coming.
    const cut = reason === 'fin' && this.rw !== null && CUT_PHASES.has(this.st.phase);
    if (this.st.phase === 'chunkLine' || this.st.phase === 'chunkCrlf') this.st.released = this.st.pos;
    if (this.st.phase === 'head' && this.st.blkLine === 0 && !startLinePrefix(this.st.block.toString('latin1'), this.dir === 'c2s' ? 'request' : 'response')) {
      // The start-line has not ended, and what came of it cannot become one: released, these
      // bytes (an HTTP/0.9 answer's body, another protocol) would pass the rules unparsed.
      return this.refuse('startLine', this.st.blockStart, this.st.pos);
    }
    if (this.st.phase === 'head' || this.st.phase === 'trailers') {
      if (this.st.released < this.st.pos) {
        this.env.count.add('headerFlushed');
        this.st.released = this.st.pos;
      }
      return;
    }
    const m = this.st.msg;
    // Cut short where the peer could not tell: a coded body (its end cannot be made up: a 502
    // while its header is held, else a reset) or one re-framed as close-delimited (the close
    // would read as its end). Re-chunked, the missing last chunk tells.
    if (cut && (this.rw instanceof CodedBody || (m?.head == null && this.rw!.out === 'close'))) return this.refuse('truncated', this.st.pos, this.st.pos);
    if (m !== null && m.head !== null) this.fixlenFallback();
    if (this.rw !== null) {
      this.rw.decideAll(reason);
      if (this.bodyFailed(this.st.pos)) return;
      if (reason === 'fin') this.reportBody(this.rw, cut); // a close-delimited body ends with the stream
    }
  }

  /** A body that cannot go on (a coded one that does not decode or decodes too much, a match split) is refused from its first byte not emitted. */
  private bodyFailed(p: number): boolean {
    const why = this.rw?.failure ?? null;
    if (why === null) return false;
    this.refuse(why, p, p);
    return true;
  }

  /** The event of a body that went through the rules, when it ends (`truncated`: cut short by the stream's end). */
  private reportBody(rw: Body, truncated = false): void {
    const m = this.st.msg;
    this.env.event?.({ event: 'http', dir: this.dir, message: m?.line ?? null, framing: m?.method ?? null, matches: rw.matches, bodyBytes: rw.bodyFed, ...(truncated ? { truncated } : {}) });
  }

  /**
   * Cluster takeover after a gap (types.ts): bytes before `pos` went out unseen. Inside a body of
   * known length (Content-Length, chunk data, close-delimited) the position says where in it the
   * stream is, and parsing goes on (held bytes are gone: the engine dropped them). Anywhere else
   * where messages start is lost: requests are refused from here (never forwarded unparsed),
   * responses pass as a tunnel.
   */
  resync(pos: number): void {
    const st = this.st;
    const c = this.env.count;
    if (pos < st.pos) throw new Error(`http: resync back to ${pos} from ${st.pos} (engine bug)`);
    const known = (st.phase === 'body' || st.phase === 'chunkData') && pos <= st.end && st.msg?.head === null;
    const gap = pos > st.pos || st.und < st.pos;
    if (this.rw instanceof CodedBody && gap) {
      // Decoding cannot go on without the coded bytes in the gap: the connection is given up.
      c.add('resyncLost');
      st.pos = st.und = pos;
      this.abortWhy = 'http-refused:resync';
      return this.refuse('resync', pos, pos);
    }
    if (TERMINAL.has(st.phase) || known || st.phase === 'close' || (pos === st.pos && st.und === st.pos)) {
      if (!TERMINAL.has(st.phase) && pos > st.pos) c.add('resyncKept');
      if (this.rw instanceof BodyRewriter) this.rw.resync(pos, this.rw.bodyFed + (pos - st.pos));
      st.pos = st.und = pos;
      return;
    }
    if (st.phase === 'await' && this.env.shared.awaitResult === 'tunnel') {
      // The other node released bytes after CONNECT / Upgrade: the answer opened the tunnel.
      c.add('resyncKept');
      this.resolveAwait();
      st.pos = st.und = pos;
      return;
    }
    c.add('resyncLost');
    st.pos = st.und = pos;
    this.rw = null;
    st.msg = null;
    st.block = st.line = EMPTY;
    if (this.dir === 'c2s') {
      c.refuse('resync');
      c.add('refusedRequests');
      st.phase = 'refused';
      this.abortWhy = 'http-refused:resync';
    } else {
      st.phase = 'tunnel';
      this.env.shared.s2cParsing = false;
    }
  }

  toJSON(): StreamJson {
    const st = this.st;
    const m = st.msg;
    return {
      pos: st.pos,
      und: st.und,
      phase: st.phase,
      blockStart: st.blockStart,
      released: st.released,
      block: st.block.toString('base64'),
      blkLine: st.blkLine,
      end: st.end,
      line: st.line.toString('base64'),
      cr: st.cr,
      ...(st.coded !== undefined ? { coded: { ...st.coded } } : {}),
      msg: m === null ? null : { ...m, head: m.head === null ? null : m.head.toString('base64'), req: m.req === null ? null : { ...m.req } },
      rw: this.rw === null ? null : this.rw.toJSON(),
      ...(this.abortWhy !== null ? { abort: this.abortWhy } : {}),
    };
  }

  // -------------------------------------------------------------------------------------------
  // The parser

  /** `last`: the last byte fed (at st.pos - 1), -1 when none. */
  private answer(last: number): AgentOutput {
    this.emitBody();
    const st = this.st;
    const und = this.frontier(st.pos);
    st.und = und;
    const out = this.withAbort({ edits: carryEndInsertion(this.ob.take(), st.pos, und, last), undecidedFrom: und });
    if (this.wakeOther) {
      this.wakeOther = false;
      out.wake = true;
    }
    return out;
  }

  private emitBody(): void {
    if (this.rw !== null && this.rw.out !== 'fixlen') this.rw.emit(this.ob);
  }

  /** First byte not decided when the parser stands at p. */
  private frontier(p: number): number {
    const st = this.st;
    switch (st.phase) {
      case 'head':
      case 'trailers':
      case 'await':
        return st.released;
      case 'chunkLine':
      case 'chunkCrlf':
        // Unchanged chunk framing is held until its size line is complete, so that a refusal
        // starts at its first byte (a rewritten body deletes it anyway).
        if (this.rw === null) return st.released;
        return this.rw.frontier();
      default:
        if (st.msg !== null && st.msg.head !== null) return st.msg.headAt;
        if (this.rw !== null) return this.rw.frontier();
        return p;
    }
  }

  private run(base: number, buf: Buffer): void {
    const n = buf.length;
    this.runEnd = base + n;
    let i = 0;
    if (this.env.shared.expectWaiting === true && this.dir === 'c2s' && n > 0) this.env.shared.expectWaiting = false;
    while (i < n) {
      const p = base + i;
      switch (this.st.phase) {
        case 'start':
          i = this.start(buf, i, base);
          break;
        case 'head':
        case 'trailers':
          i = this.section(buf, i, base);
          break;
        case 'body':
        case 'chunkData':
          i = this.data(buf, i, base);
          break;
        case 'chunkLine':
          i = this.chunkLine(buf, i, base);
          break;
        case 'chunkCrlf':
          i = this.chunkCrlf(buf, i, base);
          break;
        case 'close':
          if (this.rw !== null) {
            this.rw.body(p, buf.subarray(i));
            this.bodyFailed(base + n);
          }
          i = n;
          break;
        case 'await':
          if (this.st.block.length + (n - i) > this.env.cfg.maxHeaderBytes) {
            this.refuse('await', p, p);
            break;
          }
          this.st.block = Buffer.concat([this.st.block, buf.subarray(i)]);
          i = n;
          break;
        case 'tunnel':
          i = n;
          break;
        case 'drop':
          this.env.count.add('afterCloseBytes', n - i);
          this.ob.add(p, n - i);
          i = n;
          break;
        case 'refused':
          this.ob.add(p, n - i);
          i = n;
          break;
      }
      this.st.pos = base + i;
    }
    this.st.pos = base + n;
  }

  /** Empty lines before a start-line are removed (RFC 9112 §2.2 lets a server ignore them). */
  private start(buf: Buffer, i: number, base: number): number {
    let j = i;
    while (j < buf.length && (buf[j] === CR || buf[j] === LF)) j++;
    if (j > i) {
      this.ob.add(base + i, j - i);
      this.env.count.add('emptyLines');
    }
    if (j < buf.length) this.openSection('head', base + j);
    return j;
  }

  private openSection(phase: 'head' | 'trailers' | 'await', at: number): void {
    const st = this.st;
    st.phase = phase;
    st.blockStart = st.released = at;
    st.block = EMPTY;
    st.blkLine = 0;
  }

  /**
   * Header / trailer section: held until its empty line, at most maxHeaderBytes. The lines of one
   * call are found in `buf` and appended to the held block with one copy.
   */
  private section(buf: Buffer, i: number, base: number): number {
    const st = this.st;
    const n = buf.length;
    const held = st.block.length;
    const from = i;
    /** The block's byte at position k (held bytes, then buf from `from`). */
    const at = (k: number): number => (k < held ? st.block[k]! : buf[from + k - held]!);
    const take = (to: number): void => {
      if (to > from) st.block = held === 0 ? Buffer.from(buf.subarray(from, to)) : Buffer.concat([st.block, buf.subarray(from, to)]);
    };
    /** The block's length through the start-line's LF, when that line ended in this call. */
    let startLineEnd = 0;
    while (i < n) {
      const lf = buf.indexOf(LF, i);
      const end = lf < 0 ? n : lf + 1;
      const len = held + (end - from);
      if (len > this.env.cfg.maxHeaderBytes) {
        take(i);
        this.refuse('headerTooLong', base + i, base + i);
        return i;
      }
      i = end;
      if (lf < 0) break;
      const ls = st.blkLine;
      const le = len - 1;
      st.blkLine = len;
      if (ls === 0 && st.phase === 'head') startLineEnd = len;
      if (le === ls || (le === ls + 1 && at(ls) === CR)) {
        take(i);
        this.st.pos = base + i;
        if (st.phase === 'head') this.headDone(base + i);
        else this.trailersDone(base + i);
        return i;
      }
    }
    take(i);
    if (startLineEnd > 0) {
      // The start-line is judged as soon as it ends, not with its section (when the section is
      // not complete in the same call): a message that never sends the section's empty line
      // (HTTP/0.9's `GET /path`) must not wait for a hold timeout to release it unparsed, nor
      // its answer (a body from its first byte).
      const bad = parseBlock(st.block.subarray(0, startLineEnd), st.blockStart, this.dir === 'c2s' ? 'request' : 'response').error;
      if (bad !== undefined) this.refuse(bad, st.blockStart, base + i);
    }
    return i;
  }

  /** Body bytes up to `end` (Content-Length body, or one chunk's data). */
  private data(buf: Buffer, i: number, base: number): number {
    const st = this.st;
    const p = base + i;
    const k = Math.min(buf.length - i, st.end - p);
    if (k > 0 && this.rw !== null) {
      this.rw.body(p, buf.subarray(i, i + k));
      if (this.bodyFailed(p + k)) return i + k;
    }
    if (p + k < st.end) return i + k;
    if (st.phase === 'chunkData') {
      st.phase = 'chunkCrlf';
      st.cr = false;
      st.blockStart = st.released = p + k;
    } else this.bodyDone(p + k);
    return i + k;
  }

  /** chunk-size line (RFC 9112 §7.1): parsed whole; in a rewritten body it is deleted. */
  private chunkLine(buf: Buffer, i: number, base: number): number {
    const st = this.st;
    const lf = buf.indexOf(LF, i);
    const end = lf < 0 ? buf.length : lf + 1;
    if (st.line.length + (end - i) > this.env.cfg.maxChunkLine) {
      this.refuse('chunkLineTooLong', base + i - st.line.length, base + i);
      return i;
    }
    st.line = st.line.length === 0 ? Buffer.from(buf.subarray(i, end)) : Buffer.concat([st.line, buf.subarray(i, end)]);
    this.rw?.frame(base + i, end - i);
    if (lf < 0) return end;
    const l = st.line;
    const bare = l.length < 2 || l[l.length - 2] !== CR;
    const size = parseChunkLine(l.toString('latin1', 0, l.length - (bare ? 1 : 2)));
    const lfPos = base + lf;
    st.pos = base + end;
    if (size === undefined) {
      this.refuse('chunk', lfPos, base + end);
      return end;
    }
    st.line = EMPTY;
    if (bare && this.rw === null) {
      this.ob.add(lfPos, 0, CR_BUF);
      this.env.count.add('bareLF');
    }
    if (size > 0) {
      st.phase = 'chunkData';
      st.end = base + end + size;
      return end;
    }
    // The last chunk: the body ends here; trailers (or the empty line) follow.
    if (this.rw !== null) {
      this.rw.decideAll('fin');
      if (this.bodyFailed(base + end)) return end;
      this.rw.frame(base + end, 0, LAST_CHUNK);
      this.rw.emit(this.ob);
      this.reportBody(this.rw);
      this.rw = null;
    }
    this.openSection('trailers', base + end);
    return end;
  }

  /** The CRLF after chunk data; a bare LF gets its CR, anything else is refused. */
  private chunkCrlf(buf: Buffer, i: number, base: number): number {
    const st = this.st;
    const c = buf[i]!;
    const p = base + i;
    if (c === CR && !st.cr) {
      st.cr = true;
      this.rw?.frame(p, 1);
      return i + 1;
    }
    if (c === LF) {
      if (this.rw !== null) this.rw.frame(p, 1);
      else if (!st.cr) {
        this.ob.add(p, 0, CR_BUF);
        this.env.count.add('bareLF');
      }
      st.phase = 'chunkLine';
      st.line = EMPTY;
      return i + 1;
    }
    this.refuse('chunk', p, p);
    return i;
  }

  // -------------------------------------------------------------------------------------------
  // Messages

  private headDone(endPos: number): void {
    const st = this.st;
    const c = this.env.count;
    const sh = this.env.shared;
    const kind: BlockKind = this.dir === 'c2s' ? 'request' : 'response';
    const pb = parseBlock(st.block, st.blockStart, kind);
    if (pb.error !== undefined) return this.refuse(pb.error, st.blockStart, endPos);
    const partly = st.released > st.blockStart;
    const first: DecideOpts = { noFixlen: partly, bodyInHand: this.runEnd - endPos };
    let d: Decision;
    let req: ReqInfo | null;
    if (this.dir === 'c2s') {
      c.add('requests');
      d = this.decodable(decideRequest(pb, this.env.cfg, sh.server11, first), first, () => decideRequest(pb, this.env.cfg, sh.server11, first));
      req = d.req ?? null;
    } else {
      c.add('responses');
      const status = pb.status!.status;
      if (pb.status!.version.minor >= 1) sh.server11 = true;
      if (status < 200 && status !== 101) {
        c.add('informational');
        req = null;
        d = decideResponse(pb, this.env.cfg, sh.queue[0] ?? UNPAIRED);
      } else {
        req = status === 101 && sh.queue[0]?.tunnel !== 'upgrade' ? null : (sh.queue.shift() ?? null);
        if (req === null && status !== 101) c.add('unpairedResponses');
        if (req !== null && status >= 200 && this.abandonExpect(req)) c.add('expectAbandoned');
        d = this.decodable(decideResponse(pb, this.env.cfg, req ?? UNPAIRED, first), first, () => decideResponse(pb, this.env.cfg, req ?? UNPAIRED, first));
        if (req?.tunnel != null && d.error === undefined) {
          sh.awaitResult = d.after === 'tunnel' ? 'tunnel' : 'http';
          // Bytes the client sent ahead of a tunnel's answer go at once, not at c2s's next segment
          // or hold timeout (an answer that is no tunnel leaves them to be parsed as they come).
          if (sh.awaitResult === 'tunnel') this.wakeOther = true;
        }
      }
    }
    // Every refusal comes before anything is counted or queued for this message.
    const refuse = (why: RefuseReason, from: number): void => this.refuse(why, from, endPos, startLine(pb));
    const at = Math.max(st.blockStart, st.released);
    if (d.error !== undefined) return refuse(d.error, st.blockStart);
    // The plan (a fixlen one is rendered when the body's length is known).
    let r: Rendered | null = null;
    if (d.method !== 'fixlen') {
      r = render(pb, d, st.released);
      if (r.frameLost) {
        const o: DecideOpts = { noReframe: true, ...(first.noDecode === true ? { noDecode: true } : {}) };
        d = this.dir === 'c2s' ? decideRequest(pb, this.env.cfg, sh.server11, o) : decideResponse(pb, this.env.cfg, req ?? UNPAIRED, o);
        r = render(pb, d, st.released);
      }
      if (r.refuse) return refuse('unnormalised', at);
      // Configured header edits on lines a hold timeout released: the rule cannot be kept for
      // this message (a client pausing inside its header section must not keep a header the
      // rule removes). Refused; with `unrewritable: pass` it goes on without them, counted.
      if (r.lost > 0 && this.env.cfg.unrewritable === 'refuse') return refuse('released', at);
    }
    const cannot = this.unrewritable(d);
    if (cannot !== null) return refuse(cannot, at);
    if (this.dir === 'c2s' && sh.s2cParsing) {
      if (sh.queue.length >= this.env.cfg.maxPipeline) return refuse('pipelineFull', st.blockStart);
      sh.queue.push(req!);
    }
    addTally(c, pb.tally);
    for (const k of d.counts) c.add(k);
    const msg: Msg = { after: d.after, terminate: false, head: null, headAt: st.blockStart, req };
    if (this.env.event !== undefined) {
      msg.line = startLine(pb) ?? '';
      msg.method = d.method;
    }
    if (r === null) {
      // Held with its body; the plan is rendered when the body's length is known.
      msg.head = st.block;
      this.headParsed = { head: st.block, pb, d };
    } else {
      if (r.lost > 0) c.add('editsLost', r.lost);
      for (const o of r.ops) this.ob.add(o.at, o.len, o.data);
    }
    this.startBody(d, msg, endPos);
  }

  /**
   * A decision to decode a coded body when the gateway already decodes maxDecoding: decided
   * `again` as not decodable (`o.noDecode`, kept for any later decision of this message).
   */
  private decodable(d: Decision, o: DecideOpts, again: () => Decision): Decision {
    if (d.coding === undefined || this.env.count.decoderFree(this.env.cfg.maxDecoding)) return d;
    this.env.count.add('decodeLimited');
    o.noDecode = true;
    return again();
  }

  private startBody(d: Decision, msg: Msg, endPos: number): void {
    const st = this.st;
    const c = this.env.count;
    st.block = EMPTY;
    st.msg = msg;
    this.rw = null;
    if (d.method === 'pass' && d.passWhy !== undefined) c.add(d.passWhy);
    if (d.method !== 'none' && d.method !== 'pass') {
      if (d.method !== 'fixlen') c.add(METHOD_COUNTER[d.method]);
      c.add('bodiesRewritten');
      if (d.coding !== undefined) c.add('bodiesDecoded');
      msg.terminate = d.method === 'chunked';
      this.rw = this.rewriter(OUT[d.method], endPos, d.coding);
      if (d.coding !== undefined) c.takeDecoder();
    }
    if (this.dir === 'c2s' && msg.req?.expect === 'yes' && d.body.kind !== 'none') this.env.shared.expectWaiting = this.runEnd === endPos;
    switch (d.body.kind) {
      case 'none':
        return this.messageDone(endPos);
      case 'length':
        st.phase = 'body';
        st.end = endPos + d.body.n;
        return;
      case 'chunked':
        st.phase = 'chunkLine';
        st.line = EMPTY;
        st.blockStart = st.released = endPos;
        return;
      case 'close':
        st.phase = 'close';
        return;
    }
  }

  /** fixlen body complete (or flushed): render the held header with the new Content-Length. */
  private fixlenDone(): void {
    const m = this.st.msg!;
    const rw = this.rw!;
    // The decision made at the header when this object made it: deciding again without options
    // gives the same (fixlen was chosen; nothing else depends on the options), and render does
    // not change it.
    const { pb, d: kept } = this.takeHead(m);
    const d = kept ?? this.redecide(pb, m, {});
    const r = render(pb, d, m.headAt, rw.outputLength());
    for (const o of r.ops) this.ob.add(o.at, o.len, o.data);
    this.env.count.add('framedFixedLength');
    m.head = null;
    rw.emit(this.ob);
  }

  /**
   * A hold timeout (or limit) inside a held fixlen body: the header goes out now with the
   * framing a body of unknown length can have (chunked, close-delimited); with none, the message
   * is refused, or (`unrewritable: pass`) goes out unchanged with its body.
   */
  private fixlenFallback(): void {
    const m = this.st.msg!;
    const c = this.env.count;
    const { pb } = this.takeHead(m);
    const d = this.redecide(pb, m, { noFixlen: true });
    // Counted when the body was held as fixlen; undone when it is not rewritten after all.
    const uncount = (): void => {
      c.add('bodiesRewritten', -1);
      if (this.rw instanceof CodedBody) c.add('bodiesDecoded', -1);
      c.add('bodyMatches', -this.rw!.matches);
    };
    const cannot = this.unrewritable(d);
    if (cannot !== null) {
      uncount();
      return this.refuse(cannot, m.headAt, this.st.pos);
    }
    const r = render(pb, d, m.headAt);
    for (const o of r.ops) this.ob.add(o.at, o.len, o.data);
    m.head = null;
    m.after = d.after;
    if (d.method === 'pass') {
      if (d.passWhy !== undefined) c.add(d.passWhy);
      uncount();
      this.rw = null;
      return;
    }
    c.add(METHOD_COUNTER[d.method as Exclude<BodyMethod, 'none' | 'pass'>]);
    m.terminate = d.method === 'chunked';
    this.rw!.out = OUT[d.method as Exclude<BodyMethod, 'none' | 'pass'>];
  }

  /** The held header section's parse and decision as kept at the header, else parsed again (no
   *  decision): after a restore. Dropped with it (m.head = null follows every call). */
  private takeHead(m: Msg): { pb: ParsedBlock; d?: Decision } {
    const h = this.headParsed;
    this.headParsed = null;
    if (h !== null && h.head === m.head) return h;
    return { pb: parseBlock(m.head!, m.headAt, this.dir === 'c2s' ? 'request' : 'response') };
  }

  /** The refusal a decision to pass a body the rules cannot rewrite calls for (`unrewritable:
   *  refuse`, the default: a rule's body never crosses unrewritten unless the config says so). */
  private unrewritable(d: Decision): RefuseReason | null {
    return d.method === 'pass' && d.passWhy !== undefined && this.env.cfg.unrewritable === 'refuse' ? PASS_REFUSAL[d.passWhy] : null;
  }

  private redecide(pb: ParsedBlock, m: Msg, o: { noFixlen?: boolean }): Decision {
    return this.dir === 'c2s' ? decideRequest(pb, this.env.cfg, this.env.shared.server11, o) : decideResponse(pb, this.env.cfg, m.req ?? UNPAIRED, o);
  }

  /** End of a Content-Length body. */
  private bodyDone(p: number): void {
    const rw = this.rw;
    if (rw !== null) {
      rw.decideAll('fin');
      if (this.bodyFailed(p)) return;
      if (this.st.msg?.head != null) this.fixlenDone();
      else {
        if (this.st.msg?.terminate === true) rw.frame(p, 0, LAST_CHUNK_END);
        rw.emit(this.ob);
      }
      this.reportBody(rw);
      this.rw = null;
    }
    this.messageDone(p);
  }

  private trailersDone(endPos: number): void {
    const st = this.st;
    const c = this.env.count;
    const pb = parseBlock(st.block, st.blockStart, 'trailer');
    if (pb.error !== undefined) return this.refuse(pb.error, st.blockStart, endPos);
    const d = decideTrailers(pb, this.dir === 'c2s' ? this.env.cfg.request.remove : this.env.cfg.response.remove);
    const r = render(pb, d, st.released);
    if (r.refuse) return this.refuse('unnormalised', st.released, endPos);
    if (r.lost > 0 && this.env.cfg.unrewritable === 'refuse') return this.refuse('released', st.released, endPos);
    addTally(c, pb.tally);
    for (const k of d.counts) c.add(k);
    for (const o of r.ops) this.ob.add(o.at, o.len, o.data);
    st.block = EMPTY;
    this.messageDone(endPos);
  }

  private messageDone(p: number): void {
    const st = this.st;
    const after = st.msg?.after ?? 'start';

    st.msg = null;
    this.rw = null;
    st.block = EMPTY;
    switch (after) {
      case 'start':
        st.phase = 'start';
        return;
      case 'await':
        this.openSection('await', p);
        if (this.env.shared.awaitResult !== null) this.resolveAwait();
        return;
      case 'tunnel':
        this.env.count.add('tunnels');
        this.toTunnel();
        return;
      case 'drop':
        st.phase = 'drop';
        if (this.dir === 's2c') this.env.shared.s2cParsing = false;
        return;
    }
  }

  /**
   * A final answer to a request that waits on 100-continue, before any of its body came (the
   * server refused it: 417, 413, 401): the client may now send that body or its next request
   * (RFC 9110 §10.1.1; curl retries after a 417 on the same connection), and which one it is the
   * server and this parser could read differently. So the answer is the connection's last
   * (`Connection: close`) and c2s deletes what the client sends from here (afterCloseBytes).
   */
  private abandonExpect(req: ReqInfo): boolean {
    const sh = this.env.shared;
    if (req.expect !== 'yes' || sh.expectWaiting !== true) return false;
    req.expect = 'abandoned';
    sh.expectWaiting = false;
    sh.c2sDrop = true;
    return true;
  }

  /** c2s after an abandoned 100-continue request (abandonExpect): everything from here is deleted. */
  private dropIfAbandoned(): void {
    if (!this.env.shared.c2sDrop || this.dir !== 'c2s' || this.st.phase === 'drop') return;
    this.rw = null;
    this.st.msg = null;
    this.st.block = this.st.line = EMPTY;
    this.st.phase = 'drop';
  }

  /** This direction (and a c2s waiting on this answer) becomes a tunnel. */
  private toTunnel(): void {
    this.st.phase = 'tunnel';
    if (this.dir === 's2c') this.env.shared.s2cParsing = false;
  }

  /** c2s after CONNECT / Upgrade: the answer is known; held bytes are parsed by the caller. */
  private resolveAwait(): void {
    const r = this.env.shared.awaitResult;
    this.env.shared.awaitResult = null;
    this.st.block = EMPTY;
    this.st.phase = r === 'tunnel' ? 'tunnel' : 'start';
  }

  /**
   * Refuse: delete from the first undecided byte of the message (at most `at`) up to p, and
   * everything after. A response whose header is still wholly held becomes a 502. `line`: the
   * message's start-line when it is not st.msg yet (a refusal at its header section).
   */
  private refuse(reason: RefuseReason, at: number, p: number, line: string | null = null): void {
    const st = this.st;
    const c = this.env.count;
    c.refuse(reason);
    const message = line ?? st.msg?.line ?? null;
    this.env.event?.({ event: 'http', dir: this.dir, refused: reason, message });
    this.env.log?.(`http-refused:${reason}`, () => ({ flow: this.env.flowId, dir: this.dir, reason, message }), this.dir === 'c2s' ? 'http request refused' : 'http response refused');
    if (this.dir === 'c2s') c.add('refusedRequests');
    else c.add('refusedResponses');
    // Inside a rewritten body: from the first byte not emitted (decided bytes not emitted yet
    // belong to the refused message too).
    const held = this.rw !== null && st.msg?.head == null ? this.rw.start : this.frontier(p);
    let from = Math.max(st.und, Math.min(at, held));
    let data: Buffer = EMPTY;
    if (this.dir === 's2c') {
      const headAt = st.phase === 'head' && st.released === st.blockStart ? st.blockStart : st.msg?.head != null ? st.msg.headAt : -1;
      if (headAt >= st.und) {
        from = headAt;
        data = badGateway(reason);
      }
      this.env.shared.s2cParsing = false;
    }
    // Nobody is told by a message (a request; a response whose header went out): the gateway
    // resets the connection, so neither end waits for what will never come.
    if (data === EMPTY) this.abortWhy ??= `http-refused:${reason}`;
    this.ob.cutFrom(from);
    this.ob.add(from, p - from, data);
    st.phase = 'refused';
    st.msg = null;
    st.block = st.line = EMPTY;
    this.rw = null;
  }
}

/**
 * An insertion at the end of the data fed (the last chunk of a body re-framed as chunked, the
 * CRLF after a chunk's data) would travel with the segment that starts there (stream/commands.ts):
 * on a keep-alive connection that segment may never come, since the peer waits for this message
 * before it asks for more. Such an insertion becomes a replacement of the last byte fed, so it
 * leaves with the segment that carries that byte. Edits that touch are merged by EditBuilder, so
 * the edit before it ends at `end - 1` at most; it is joined when it ends exactly there (the
 * engine refuses two edits at one position).
 */
function carryEndInsertion(edits: Edit[], end: number, und: number, last: number): Edit[] {
  const e = edits[edits.length - 1];
  if (e === undefined || e.len !== 0 || e.at !== end || und !== end || last < 0) return edits;
  const byte = Buffer.of(last);
  const prev = edits.length > 1 ? edits[edits.length - 2]! : undefined;
  if (prev !== undefined && prev.at + prev.len === end - 1) {
    edits.splice(-2, 2, { at: prev.at, len: prev.len + 1, data: Buffer.concat([prev.data, byte, e.data]) });
  } else edits[edits.length - 1] = { at: end - 1, len: 1, data: Buffer.concat([byte, e.data]) };
  return edits;
}

/** The answer to a refused response (RFC 9112 §6.3 point 5 / §5.2: a proxy sends 502). */
function badGateway(reason: RefuseReason): Buffer {
  return Buffer.from(`HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\nX-Tapgate-Refused: ${reason}\r\n\r\n`, 'latin1');
}

/** Every NormTally key (the Record type makes a new key a compile error here until listed). */
const TALLY_KEYS = Object.keys({ bareLF: 1, bareCR: 1, nulInValue: 1, obsFold: 1, wsBeforeColon: 1, wsLines: 1 } satisfies Record<keyof NormTally, 1>) as (keyof NormTally)[];

/** A message's start-line as events name it: `GET /a` (at most 200 characters) or `200`. */
function startLine(pb: ParsedBlock): string | null {
  if (pb.request !== undefined) return `${pb.request.method} ${pb.request.target}`.slice(0, 200);
  return pb.status !== undefined ? String(pb.status.status) : null;
}

/** A section's normalisations into the counters (no entries array per message). */
function addTally(c: { add(k: keyof NormTally, n: number): void }, t: NormTally): void {
  for (const k of TALLY_KEYS) if (t[k] > 0) c.add(k, t[k]);
}
