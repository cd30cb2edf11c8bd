/**
 * `StreamRecorder`: a passive TCP reassembler for `tapgate replay --streams DIR`. It is fed the
 * frames the gateway RELEASES and writes, per TCP connection, each direction's byte stream as
 * the receiver gets it: `DIR/<clientIP>.<clientPort>-<serverIP>.<serverPort>.c2s` and `.s2c`
 * (the n-th reuse of the same oriented 4-tuple appends `.n` to the base name).
 *
 * Read first: RFC 9293 §3.4 (sequence space), §3.10.7.4 (segment text is delivered in sequence
 * order; RST text is diagnostic, not data), RFC 1122 §4.2.2.12 (RST may carry data).
 *
 * Reassembly (per direction; sequence numbers become offsets once, via `wire/seq`):
 *  - Offset 0 is the byte after the SYN, or, without a SYN, the first sequence number seen in
 *    that direction. Bytes before offset 0 are dropped (counted as `duplicateBytes`): this is
 *    also what `tshark -z follow,tcp` does with a mid-stream capture.
 *  - Every position is delivered once; the FIRST copy seen wins (a retransmission, in order or
 *    buffered, only contributes the positions not seen before).
 *  - Out-of-order data is buffered (copied), bounded by `maxBufferedBytes` per connection and by
 *    MAX_OOO_CHUNKS pieces (a capture of 1-byte segments out of order made millions of pieces,
 *    each insert re-sorting them: quadratic).
 *  - A gap is given up on (its length counted in `gapBytes`, the data after it delivered, the
 *    file simply has the bytes after the gap next, no marker) when:
 *      * the peer ACKs beyond the start of the buffered data: the receiver has the missing bytes,
 *        the capture does not (tshark does the same and inserts a text
 *        "[N bytes missing in capture file]" chunk, which a byte-exact stream must not);
 *      * the buffer limit (bytes or pieces) is exceeded (`oooLimitHits`);
 *      * the connection ends (RST, a new SYN on the 4-tuple, eviction, `close()`): buffered data
 *        after a gap that was never filled is flushed and the gap counted (`gapsAtEnd`).
 *        tshark drops such data silently; we report it instead.
 *  - A FIN ends a direction at its sequence number (later data counted in `afterFinBytes`).
 *    A RST ends the whole connection; its payload is not stream data (`rstDataBytes`). Both are
 *    judged first as their receiver judges them (flow/window.ts, shared with the gateway's
 *    tracker): a RST ends the connection only at the expected sequence number (else it is
 *    counted `rstNotExact` / `rstOutOfWindow` and ignored), a FIN outside the window is ignored
 *    (`finOutOfWindow`). A spoofed RST does not cut the recorded stream short.
 *  - A connection that ended stays in the table as a tombstone so stray ACKs and retransmitted
 *    FINs are not taken for a new mid-stream connection; only a SYN (without ACK) starts a new
 *    connection on the same 4-tuple.
 *
 * Identity: the client is the sender of a SYN without ACK; else the receiver of a SYN-ACK; else
 * (mid-stream pickup) the sender of the first segment seen, which is tshark's "Node 0". A SYN
 * (without ACK) on a known 4-tuple starts a new connection unless it repeats the SYN that opened
 * the current one (same sender, same ISN) and that connection has not ended.
 *
 * Output is streamed: in-order bytes are appended as they become in order (synchronous
 * `fs.writeSync`; this is a replay tool, not the packet fast path), at most `maxOpenFiles`
 * descriptors are open (LRU; a file closed for room is reopened in append mode), and a
 * connection's files are closed when it ends. `sink: 'memory'` keeps streams in memory instead
 * (tests).
 */

import { closeSync, openSync, writeSync } from 'node:fs';
import { makeDirs } from '../util/dirs.js';
import { join } from 'node:path';
import { decodeFrame, type LinkType } from '../wire/frame.js';
import { endpointToString, ipToString, type IpAddr } from '../wire/ip.js';
import { type Seq, seqAdd, seqToOffset } from '../wire/seq.js';
import { TcpFlag } from '../wire/tcp.js';
import { WireError } from '../wire/error.js';
import { judge } from './window.js';

// ---------------------------------------------------------------------------------------------
// Options, counters, results

/**
 * Where streams go: files in `dir`, or memory with `sink: 'memory'` (`close()` returns them in
 * `streams`).
 */
export type RecorderOptions = RecorderLimits & ({ dir: string; sink?: 'files' } | { sink: 'memory' });

export interface RecorderLimits {
  /** Out-of-order bytes buffered per connection (both directions) before a gap is given up. */
  maxBufferedBytes?: number;
  /** Connections (live and ended tombstones) tracked at once; the least recently seen goes. */
  maxConnections?: number;
  /** File descriptors open at once (files sink). */
  maxOpenFiles?: number;
  /** Data starting further than this beyond the in-order point is dropped as out of window. */
  maxAheadBytes?: number;
}

/** Out-of-order pieces buffered per connection, at most (see the file comment). */
export const MAX_OOO_CHUNKS = 4096;

export const RECORDER_DEFAULTS = {
  maxBufferedBytes: 4 * 1024 * 1024,
  maxConnections: 65_536,
  maxOpenFiles: 64,
  /** The largest TCP window (RFC 7323 §2.3: 2^30). */
  maxAheadBytes: 2 ** 30,
} as const;

export interface RecorderCounters {
  frames: number;
  tcpSegments: number;
  /** Well-formed frames that are not unfragmented IPv4/TCP (ARP, IPv6, UDP, fragments...). */
  nonTcp: number;
  /** Frames `decodeFrame` rejects. */
  malformed: number;
  connections: number;
  bytesC2s: number;
  bytesS2c: number;
  /** Payload bytes already delivered or buffered (retransmissions, overlaps): first copy kept. */
  duplicateBytes: number;
  /** Segments (or parts) that arrived ahead of a gap and were buffered. */
  outOfOrderSegments: number;
  /** Gaps given up on, and their total length (bytes missing from the output files). */
  gaps: number;
  gapBytes: number;
  /** Gaps given up because the peer acknowledged beyond them. */
  gapsAcked: number;
  /** Gaps given up because `maxBufferedBytes` (or MAX_OOO_CHUNKS) was exceeded. */
  oooLimitHits: number;
  /** Gaps given up when the connection ended with data buffered after them. */
  gapsAtEnd: number;
  outOfWindowSegments: number;
  afterFinBytes: number;
  rstDataBytes: number;
  /** RSTs the receiver would not take (flow/window.ts): in the window but not exact, or outside it. */
  rstNotExact: number;
  rstOutOfWindow: number;
  /** FINs outside the window: their direction does not end there. */
  finOutOfWindow: number;
  /** Connections a RST ended whose handshake went on (a SYN-ACK after it): recorded on. */
  rstRevived: number;
  /** Non-SYN segments of an ended connection (final ACKs, retransmitted FINs). */
  afterEndSegments: number;
  connectionsEvicted: number;
  fileReopens: number;
}

function zeroCounters(): RecorderCounters {
  return {
    frames: 0,
    tcpSegments: 0,
    nonTcp: 0,
    malformed: 0,
    connections: 0,
    bytesC2s: 0,
    bytesS2c: 0,
    duplicateBytes: 0,
    outOfOrderSegments: 0,
    gaps: 0,
    gapBytes: 0,
    gapsAcked: 0,
    oooLimitHits: 0,
    gapsAtEnd: 0,
    outOfWindowSegments: 0,
    afterFinBytes: 0,
    rstDataBytes: 0,
    rstNotExact: 0,
    rstOutOfWindow: 0,
    finOutOfWindow: 0,
    rstRevived: 0,
    afterEndSegments: 0,
    connectionsEvicted: 0,
    fileReopens: 0,
  };
}

export interface RecordedStream {
  /** Base file name: `10.0.0.1.40000-10.0.0.2.80`, `.1` appended for the second use... */
  id: string;
  /** Creation order, 0-based (tshark's `tcp.stream` for captures tshark splits the same way). */
  index: number;
  /** "ip:port", as tshark prints endpoints. */
  client: string;
  server: string;
  c2s: Buffer;
  s2c: Buffer;
  gapBytes: { c2s: number; s2c: number };
  /** How it ended: FIN both ways, RST, or still open when recording stopped (or evicted). */
  end: 'fin' | 'rst' | 'open';
}

export interface RecorderResult {
  connections: number;
  /** Paths of every file written (files sink), in creation order. */
  files: string[];
  counters: RecorderCounters;
  /** The streams (memory sink); empty for the files sink. */
  streams: RecordedStream[];
}

// ---------------------------------------------------------------------------------------------
// State: plain versioned objects; runtime handles (buffers) live beside them.

/** One direction's receive state, named after RFC 9293 where it maps. */
interface HalfState {
  started: boolean;
  /** Sequence number of offset 0 (IRS + 1 when the SYN was seen). */
  base: Seq;
  /** RCV.NXT as an offset: everything below is delivered. */
  next: number;
  /** Offset of the FIN, -1 if none seen. */
  finOff: number;
  ended: boolean;
  gapBytes: number;
  /** One past the highest offset sent (FIN included), for the RST/FIN judgement (flow/window.ts). */
  sentEnd: number | undefined;
  /** The receiver's highest ACK of this direction, as an offset. */
  acked: number | undefined;
  /** The largest window the receiver advertised (scaled when both SYNs carried the option). */
  rcvMaxWin: number;
  /** Window scale this direction's sender announced in its SYN (−1: none or not seen). */
  wscale: number;
}

interface ConnState {
  v: 1;
  id: string;
  index: number;
  /** IPv4 as a number, IPv6 as its key (wire/ip.ts). */
  clientIp: IpAddr;
  clientPort: number;
  serverIp: IpAddr;
  serverPort: number;
  /** The SYN that opened the connection (sent by the client), null if none seen. */
  synSeq: Seq | null;
  c2s: HalfState;
  s2c: HalfState;
  end: 'fin' | 'rst' | 'open';
  done: boolean;
}

interface Chunk {
  off: number;
  data: Uint8Array;
}

interface Half {
  st: HalfState;
  /** Out-of-order chunks, sorted by offset, non-overlapping, all above `st.next`. */
  ooo: Chunk[];
  buffered: number;
  dir: 'c2s' | 's2c';
}

interface Conn {
  st: ConnState;
  c2s: Half;
  s2c: Half;
}

function newHalf(dir: 'c2s' | 's2c'): Half {
  return {
    st: { started: false, base: 0, next: 0, finOff: -1, ended: false, gapBytes: 0, sentEnd: undefined, acked: undefined, rcvMaxWin: 0, wscale: -1 },
    ooo: [],
    buffered: 0,
    dir,
  };
}

// ---------------------------------------------------------------------------------------------
// Sinks

interface Sink {
  open(c: ConnState): void;
  write(c: ConnState, dir: 'c2s' | 's2c', bytes: Uint8Array): void;
  end(c: ConnState): void;
  files(): string[];
  streams(): RecordedStream[];
  closeAll(): void;
}

class FileSink implements Sink {
  private readonly fds = new Map<string, number>();
  private readonly paths: string[] = [];
  /** Files of live connections written at least once (a later open is a reopen). */
  private readonly written = new Set<string>();

  constructor(
    private readonly dir: string,
    private readonly maxOpen: number,
    private readonly counters: RecorderCounters,
  ) {
    makeDirs(dir);
  }

  private path(c: ConnState, dir: 'c2s' | 's2c'): string {
    return join(this.dir, `${c.id}.${dir}`);
  }

  open(c: ConnState): void {
    // Both files exist from the start (an empty direction is an empty file); 'w' truncates a
    // file left by an earlier run. They are opened lazily for writing.
    for (const d of ['c2s', 's2c'] as const) {
      const p = this.path(c, d);
      closeSync(openSync(p, 'w'));
      this.paths.push(p);
    }
  }

  write(c: ConnState, dir: 'c2s' | 's2c', bytes: Uint8Array): void {
    const p = this.path(c, dir);
    let fd = this.fds.get(p);
    if (fd === undefined) {
      if (this.fds.size >= this.maxOpen) {
        const [oldest, ofd] = this.fds.entries().next().value as [string, number];
        closeSync(ofd);
        this.fds.delete(oldest);
      }
      fd = openSync(p, 'a');
      if (this.written.has(p)) this.counters.fileReopens++;
      else this.written.add(p);
    } else {
      this.fds.delete(p); // LRU: re-inserted below as the most recent
    }
    this.fds.set(p, fd);
    let off = 0;
    while (off < bytes.length) off += writeSync(fd, bytes, off, bytes.length - off);
  }

  end(c: ConnState): void {
    for (const d of ['c2s', 's2c'] as const) {
      const p = this.path(c, d);
      this.written.delete(p);
      const fd = this.fds.get(p);
      if (fd !== undefined) {
        closeSync(fd);
        this.fds.delete(p);
      }
    }
  }

  files(): string[] {
    return this.paths;
  }
  streams(): RecordedStream[] {
    return [];
  }
  closeAll(): void {
    for (const fd of this.fds.values()) closeSync(fd);
    this.fds.clear();
  }
}

class MemorySink implements Sink {
  private readonly out: { st: ConnState; c2s: Buffer[]; s2c: Buffer[] }[] = [];

  open(c: ConnState): void {
    this.out[c.index] = { st: c, c2s: [], s2c: [] };
  }
  write(c: ConnState, dir: 'c2s' | 's2c', bytes: Uint8Array): void {
    this.out[c.index]![dir].push(Buffer.from(bytes)); // a copy: the engine reuses frame buffers
  }
  end(): void {}
  files(): string[] {
    return [];
  }
  streams(): RecordedStream[] {
    return this.out.map(({ st, c2s, s2c }) => ({
      id: st.id,
      index: st.index,
      client: endpointToString(st.clientIp, st.clientPort),
      server: endpointToString(st.serverIp, st.serverPort),
      c2s: Buffer.concat(c2s),
      s2c: Buffer.concat(s2c),
      gapBytes: { c2s: st.c2s.gapBytes, s2c: st.s2c.gapBytes },
      end: st.end,
    }));
  }
  closeAll(): void {}
}

// ---------------------------------------------------------------------------------------------
// The recorder

export class StreamRecorder {
  readonly counters: RecorderCounters = zeroCounters();
  private readonly table = new Map<string, Conn>();
  /** Uses of each oriented base name, for the `.n` suffix (one small entry per 4-tuple). */
  private readonly names = new Map<string, number>();
  private readonly sink: Sink;
  private readonly maxBuffered: number;
  private readonly maxConns: number;
  private readonly maxAhead: number;
  private closed = false;

  constructor(opts: RecorderOptions) {
    this.maxBuffered = opts.maxBufferedBytes ?? RECORDER_DEFAULTS.maxBufferedBytes;
    this.maxConns = opts.maxConnections ?? RECORDER_DEFAULTS.maxConnections;
    this.maxAhead = opts.maxAheadBytes ?? RECORDER_DEFAULTS.maxAheadBytes;
    const maxOpen = opts.maxOpenFiles ?? RECORDER_DEFAULTS.maxOpenFiles;
    if (!(this.maxBuffered >= 0 && this.maxConns >= 1 && maxOpen >= 1 && this.maxAhead >= 1)) {
      throw new RangeError('StreamRecorder: limits must be positive');
    }
    this.sink = 'dir' in opts ? new FileSink(opts.dir, maxOpen, this.counters) : new MemorySink();
  }

  /** One released frame. Never throws for bad input (counted); throws on file I/O errors. */
  feed(frame: Uint8Array, link: LinkType): void {
    if (this.closed) throw new Error('StreamRecorder.feed after close');
    const k = this.counters;
    k.frames++;
    const f = decodeFrame(frame, { link, verifyChecksums: false, ipv6: true });
    if (f instanceof WireError) {
      k.malformed++;
      return;
    }
    if (f.kind !== 'tcp') {
      k.nonTcp++;
      return;
    }
    k.tcpSegments++;
    const tcp = f.tcp;
    const srcIp = f.src;
    const dstIp = f.dst;
    const sp = tcp.srcPort;
    const dp = tcp.dstPort;
    const flags = tcp.flags;
    const seq = tcp.seq;
    const isSyn = (flags & (TcpFlag.SYN | TcpFlag.ACK)) === TcpFlag.SYN;
    const key = srcIp < dstIp || (srcIp === dstIp && sp <= dp) ? `${srcIp}:${sp}-${dstIp}:${dp}` : `${dstIp}:${dp}-${srcIp}:${sp}`;

    let c = this.table.get(key);
    if (c !== undefined) {
      this.table.delete(key); // LRU: re-inserted as the most recent
      const fromClient = srcIp === c.st.clientIp && sp === c.st.clientPort;
      if (isSyn && (c.st.done || !fromClient || c.st.synSeq !== seq)) {
        this.finish(c, 'open');
        c = undefined;
      } else if (c.st.done && c.st.end === 'rst' && (flags & (TcpFlag.SYN | TcpFlag.RST)) === TcpFlag.SYN) {
        // The handshake going on (a SYN-ACK) after a RST taken as ending it: the endpoints kept
        // the connection (e.g. a RST forged to answer the SYN, which the client ignored). Data
        // after a RST is not enough: it may have been in flight, and the receiver gone.
        c.st.done = false;
        c.st.end = 'open';
        k.rstRevived++;
      } else if (c.st.done) {
        k.afterEndSegments++;
        this.table.set(key, c);
        return;
      }
    }
    if (c === undefined) {
      c = this.create(srcIp, sp, dstIp, dp, flags, isSyn ? seq : null);
    }
    this.table.set(key, c);

    const fromClient = srcIp === c.st.clientIp && sp === c.st.clientPort;
    const half = fromClient ? c.c2s : c.s2c;
    const peer = fromClient ? c.s2c : c.c2s;

    const syn = (flags & TcpFlag.SYN) !== 0;
    const dataSeq = syn ? seqAdd(seq, 1) : seq;
    const h = half.st;
    const len = f.payloadLen;
    // RSTs and FINs are judged as the receiver judges them (flow/window.ts, the same function
    // the gateway's tracker uses): only an exact RST ends the connection, a FIN outside the
    // window does not end its direction; judged ones teach nothing.
    if (flags & (TcpFlag.RST | TcpFlag.FIN)) {
      const rst = (flags & TcpFlag.RST) !== 0;
      const synSent = rst && !fromClient && !h.started && c.st.synSeq !== null;
      const ackOfSyn = synSent && (flags & TcpFlag.ACK) !== 0 && c.st.synSeq !== null && tcp.ack === seqAdd(c.st.synSeq, 1);
      const view = { end: h.sentEnd, ack: h.acked, fin: h.finOff >= 0 && h.sentEnd === h.finOff + 1 ? h.finOff : undefined, maxWin: h.rcvMaxWin };
      const v = judge(view, rst, !rst, h.started ? seqToOffset(dataSeq, h.base, h.next) : NaN, len, synSent, ackOfSyn);
      if (v === 'rst-close') {
        k.rstDataBytes += len;
        this.finish(c, 'rst');
        return;
      }
      if (v !== 'accept') {
        if (v === 'rst-not-exact') k.rstNotExact++;
        else if (v === 'rst-out-of-window') k.rstOutOfWindow++;
        else k.finOutOfWindow++;
        return;
      }
    }

    // The peer acknowledging past buffered data means the receiver has the missing bytes.
    if (flags & TcpFlag.ACK && peer.st.started) {
      const ackOff = seqToOffset(tcp.ack, peer.st.base, peer.st.next);
      if (peer.st.acked === undefined || ackOff > peer.st.acked) peer.st.acked = ackOff;
      while (peer.ooo.length > 0 && ackOff > peer.ooo[0]!.off) {
        k.gapsAcked++;
        this.skipGap(c, peer);
      }
    }
    if (syn) h.wscale = tcp.windowScale() ?? -1;
    const scaled = !syn && h.wscale >= 0 && peer.st.wscale >= 0 ? tcp.window * 2 ** h.wscale : tcp.window;
    if (scaled > peer.st.rcvMaxWin) peer.st.rcvMaxWin = scaled;

    if (!h.started) {
      h.started = true;
      h.base = dataSeq;
    }
    const off = seqToOffset(dataSeq, h.base, h.next);
    const segEnd = off + len + (flags & TcpFlag.FIN ? 1 : 0);
    if (h.sentEnd === undefined || segEnd > h.sentEnd) h.sentEnd = segEnd;
    if (flags & TcpFlag.FIN && h.finOff < 0 && off + len >= h.next) h.finOff = off + len;
    // After the FIN was delivered, `insert` counts the text as duplicate or after-FIN bytes.
    if (len > 0) this.insert(c, half, off, frame.subarray(f.payloadOff, f.payloadOff + len));
    this.checkEnded(c, half);
  }

  /** Ends every connection (flushing data buffered after unfilled gaps) and closes files. */
  async close(): Promise<RecorderResult> {
    if (!this.closed) {
      this.closed = true;
      for (const c of this.table.values()) if (!c.st.done) this.finish(c, 'open');
      this.table.clear();
      this.sink.closeAll();
    }
    return {
      connections: this.counters.connections,
      files: this.sink.files(),
      counters: this.counters,
      streams: this.sink.streams(),
    };
  }

  // ---- internals ----

  private create(srcIp: IpAddr, sp: number, dstIp: IpAddr, dp: number, flags: number, synSeq: Seq | null): Conn {
    // Client: SYN sender; SYN-ACK receiver; else the sender of the first segment (tshark Node 0).
    const srcIsClient = (flags & (TcpFlag.SYN | TcpFlag.ACK)) !== (TcpFlag.SYN | TcpFlag.ACK);
    const [cIp, cPort, sIp, sPort] = srcIsClient ? [srcIp, sp, dstIp, dp] : [dstIp, dp, srcIp, sp];
    const base = `${ipToString(cIp)}.${cPort}-${ipToString(sIp)}.${sPort}`;
    const n = this.names.get(base) ?? 0;
    this.names.set(base, n + 1);
    if (this.table.size >= this.maxConns) {
      const [oldKey, old] = this.table.entries().next().value as [string, Conn];
      this.table.delete(oldKey);
      if (!old.st.done) {
        this.counters.connectionsEvicted++;
        this.finish(old, 'open');
      }
    }
    const c2s = newHalf('c2s');
    const s2c = newHalf('s2c');
    const c: Conn = {
      st: {
        v: 1,
        id: n === 0 ? base : `${base}.${n}`,
        index: this.counters.connections++,
        clientIp: cIp,
        clientPort: cPort,
        serverIp: sIp,
        serverPort: sPort,
        synSeq,
        c2s: c2s.st,
        s2c: s2c.st,
        end: 'open',
        done: false,
      },
      c2s,
      s2c,
    };
    this.sink.open(c.st);
    return c;
  }

  /** Adds payload at offset `off`; only positions not delivered or buffered yet are taken. */
  private insert(c: Conn, half: Half, off: number, data: Uint8Array): void {
    const k = this.counters;
    const h = half.st;
    let start = off;
    let end = off + data.length;
    if (h.finOff >= 0 && end > h.finOff) {
      k.afterFinBytes += end - Math.max(start, h.finOff);
      end = Math.max(start, h.finOff);
    }
    if (start < h.next) {
      k.duplicateBytes += Math.min(end, h.next) - start;
      start = h.next;
    }
    if (end <= start) return;
    if (start - h.next > this.maxAhead) {
      k.outOfWindowSegments++;
      return;
    }
    if (start === h.next && half.ooo.length === 0) {
      this.deliver(c, half, data.subarray(start - off, end - off));
      return;
    }
    // Fill the holes of [start, end) between buffered chunks; first copy wins.
    const ooo = half.ooo;
    const pieces: Chunk[] = [];
    let pos = start;
    for (const ch of ooo) {
      const chEnd = ch.off + ch.data.length;
      if (chEnd <= pos) continue;
      if (ch.off >= end) break;
      if (ch.off > pos) pieces.push({ off: pos, data: new Uint8Array(data.subarray(pos - off, ch.off - off)) });
      const covered = Math.min(chEnd, end) - Math.max(ch.off, pos);
      k.duplicateBytes += covered;
      pos = Math.max(pos, chEnd);
    }
    if (pos < end) pieces.push({ off: pos, data: new Uint8Array(data.subarray(pos - off, end - off)) });
    for (const p of pieces) {
      ooo.push(p);
      half.buffered += p.data.length;
    }
    if (pieces.length > 0) ooo.sort((a, b) => a.off - b.off);
    if (start > h.next && pieces.length > 0) k.outOfOrderSegments++;
    this.drain(c, half);
    while (c.c2s.buffered + c.s2c.buffered > this.maxBuffered) {
      k.oooLimitHits++;
      this.skipGap(c, c.c2s.buffered >= c.s2c.buffered ? c.c2s : c.s2c);
    }
    while (c.c2s.ooo.length + c.s2c.ooo.length > MAX_OOO_CHUNKS) {
      k.oooLimitHits++;
      this.skipGap(c, c.c2s.ooo.length >= c.s2c.ooo.length ? c.c2s : c.s2c);
    }
  }

  private drain(c: Conn, half: Half): void {
    const ooo = half.ooo;
    while (ooo.length > 0 && ooo[0]!.off === half.st.next) {
      const ch = ooo.shift()!;
      half.buffered -= ch.data.length;
      this.deliver(c, half, ch.data);
    }
  }

  /** Gives up on the gap before the first buffered chunk and delivers what follows it. */
  /** Gives up the gap before the first buffered piece of `half` (delivering what follows it). */
  private skipGap(c: Conn, half: Half): void {
    const first = half.ooo[0];
    if (first === undefined) return;
    const gap = first.off - half.st.next;
    this.counters.gaps++;
    this.counters.gapBytes += gap;
    half.st.gapBytes += gap;
    half.st.next = first.off;
    this.drain(c, half);
  }

  private deliver(c: Conn, half: Half, bytes: Uint8Array): void {
    half.st.next += bytes.length;
    if (half.dir === 'c2s') this.counters.bytesC2s += bytes.length;
    else this.counters.bytesS2c += bytes.length;
    this.sink.write(c.st, half.dir, bytes);
  }

  private checkEnded(c: Conn, half: Half): void {
    const h = half.st;
    if (!h.ended && h.finOff >= 0 && h.next >= h.finOff) {
      h.ended = true;
      if (c.c2s.st.ended && c.s2c.st.ended) this.finish(c, 'fin');
    }
  }

  /** Ends a connection: data buffered after gaps is flushed (gaps counted), files closed. */
  private finish(c: Conn, how: 'fin' | 'rst' | 'open'): void {
    if (c.st.done) return;
    for (const half of [c.c2s, c.s2c]) {
      while (half.ooo.length > 0) {
        this.counters.gapsAtEnd++;
        this.skipGap(c, half);
      }
    }
    c.st.end = how;
    c.st.done = true;
    this.sink.end(c.st);
  }
}

/** In-memory reassembly of a whole frame sequence (tests, the engine's own checks). */
export async function recordStreams(
  frames: Iterable<{ readonly data: Uint8Array; readonly link: LinkType }>,
  opts: RecorderLimits = {},
): Promise<RecorderResult> {
  const r = new StreamRecorder({ ...opts, sink: 'memory' });
  for (const f of frames) r.feed(f.data, f.link);
  return r.close();
}
