/**
 * A small reference TCP pair for engine tests: two endpoints that each send a byte stream and
 * receive the other's, through a lossy, reordering, duplicating network and the gateway's
 * `Connection`. Time is simulated. The endpoints are deliberately simple but honest about what
 * matters here: cumulative ACKs, optional SACK, retransmission from SND.UNA with *different*
 * segment boundaries each time, FIN, and verification that every byte received is consistent
 * with what was received before at the same position.
 *
 * RST and SYN are judged as endpoints following RFC 9293 §3.10.7.4 and RFC 5961 do in a
 * synchronized state: a RST resets only at exactly RCV.NXT (or RCV.NXT − 1 after the peer's FIN, as
 * Linux), one elsewhere in the window is
 * answered with a challenge ACK (an ACK with the current RCV.NXT), one outside it is ignored; a
 * SYN is always answered with a challenge ACK. `strict` endpoints (gwsim.ts, where segments may
 * be forged) judge every other segment too: without the ACK flag, with an ACK outside
 * [SND.UNA − MAX.SND.WND, SND.NXT] (RFC 5961 §5.2) or beyond the window it is dropped (with a
 * rate-limited ACK), and a FIN is taken only inside the window.
 */
import type { Agent } from '../../src/agent/types.js';
import type { Half } from '../../src/flow/table.js';
import { newStreamCounters } from '../../src/stream/counters.js';
import { Connection, type ConnectionJson, type TcpFields, type TcpOut } from '../../src/stream/connection.js';
import { DEFAULT_LIMITS, type Limits } from '../../src/stream/limits.js';
import { offsetToSeq, seqToOffset } from '../../src/wire/seq.js';

const FIN = 0x01;
const SYN = 0x02;
const RST = 0x04;
const ACK = 0x10;
/** RCV.WND the endpoints offer (and MAX.SND.WND they see): 65,535, no window scaling. */
const RCV_WND = 65_535;
/**
 * A `strict` endpoint answers unacceptable segments with at most one ACK per this time (Linux's
 * tcp_invalid_ratelimit default; RFC 5961 §7 for challenge ACKs): without it two endpoints
 * that find each other's ACKs unacceptable would answer each other for ever.
 */
const OOW_ACK_INTERVAL_MS = 500;

export interface SimOptions {
  rand: () => number;
  data: [Uint8Array, Uint8Array];
  isn: [number, number];
  mss: number;
  loss: number;
  dup: number;
  /** Probability that a packet gets an extra random delay (reordering). */
  reorder: number;
  sack: boolean;
  agent: Agent | null;
  limits?: Partial<Limits>;
  maxTimeMs?: number;
  /** Largest single segment (before re-segmentation by the gateway). */
  window?: number;
  /**
   * Cluster failover (src/cluster/node.ts): at each time in `times` the gateway dies; for `gapMs`
   * nothing is forwarded; then a new Connection continues from the last snapshot — taken at every
   * new command (before the release that depends on it: the invariant) and every `periodMs`
   * otherwise — with the highest ACK each side sent meanwhile (spares watch the segments).
   */
  failover?: { times: number[]; periodMs: number; gapMs: number; restore: (state: unknown) => Agent | null };
  /**
   * Side 1 answers what it received (a server its requests): given the bytes it has received in
   * order, how much of its data it may have sent. Without it both sides send all their data from
   * the start.
   */
  answers?: (received: Uint8Array) => number;
}

export interface Pkt {
  f: TcpFields;
  payload: Uint8Array;
}

interface Tag {
  fields: TcpFields;
}

export class Endpoint {
  sndUna = 0;
  sndNxt = 0;
  /** Highest position sent (pure ACKs carry it, as Linux does, even after a go-back). */
  sndMax = 0;
  finSent = false;
  /** A FIN was sent at least once (an RTO clears finSent to resend it; its ACK may still come). */
  finEver = false;
  finAcked = false;
  sacked: Array<[number, number]> = [];
  lastSendMs = 0;
  rto = 50;
  // receive side
  rcvNxt = 0;
  rcvBuf: Uint8Array;
  have: Uint8Array;
  finAt = -1;
  finReceived = false;
  errors: string[] = [];
  acksSeen: number[] = [];
  /** Judge every segment, not only RST and SYN (see the file comment). */
  strict = false;
  /** How much of `data` may be sent yet (SimOptions.answers). */
  sendable: number;
  /**
   * Where the peer's real FIN is (the length of its stream as received), when known: a FIN taken
   * anywhere else is a forged one that got through, or a real one the middle moved.
   */
  peerEnd = -1;
  /** Why this endpoint no longer has the connection it had (reset, a FIN taken elsewhere), or null. */
  disrupted: string | null = null;
  private lastOowAckMs = -Infinity;

  constructor(
    readonly isn: number,
    readonly data: Uint8Array,
    readonly peerIsn: number,
    capacity: number,
  ) {
    this.rcvBuf = new Uint8Array(capacity);
    this.have = new Uint8Array(capacity);
    this.sendable = data.length;
  }

  get done(): boolean {
    return this.finAcked && this.finReceived;
  }

  ackFields(sack: boolean): TcpFields {
    const ackPos = this.rcvNxt + (this.finReceived ? 1 : 0);
    return {
      seq: offsetToSeq(Math.max(this.sndMax, this.sndNxt) + 1, this.isn),
      ack: offsetToSeq(ackPos + 1, this.peerIsn),
      flags: ACK,
      window: 65535,
      urgent: 0,
      sack: sack ? this.sackBlocks() : null,
    };
  }

  private sackBlocks(): Array<[number, number]> {
    const blocks: Array<[number, number]> = [];
    let p = this.rcvNxt;
    while (p < this.have.length && blocks.length < 3) {
      while (p < this.have.length && !this.have[p]) p++;
      if (p >= this.have.length) break;
      const s = p;
      while (p < this.have.length && this.have[p]) p++;
      if (s > this.rcvNxt) blocks.push([offsetToSeq(s + 1, this.peerIsn), offsetToSeq(p + 1, this.peerIsn)]);
    }
    return blocks;
  }

  /** New data (or retransmission) to send now, cut at random boundaries. */
  output(nowMs: number, mss: number, rand: () => number, window: number, sack: boolean): Pkt[] {
    const out: Pkt[] = [];
    if (nowMs - this.lastSendMs >= this.rto && this.sndUna < this.sndNxt + (this.finSent && !this.finAcked ? 1 : 0)) {
      // Retransmission timeout: go back to SND.UNA, new segment boundaries.
      this.sndNxt = this.sndUna;
      if (this.finSent && !this.finAcked) this.finSent = false;
      this.rto = Math.min(this.rto * 2, 400);
    }
    while (this.sndNxt < this.sendable && this.sndNxt - this.sndUna < window) {
      if (sack && this.isSacked(this.sndNxt)) {
        this.sndNxt++;
        continue;
      }
      const len = Math.min(1 + Math.floor(rand() * mss), this.sendable - this.sndNxt);
      const payload = this.data.subarray(this.sndNxt, this.sndNxt + len);
      const f = this.ackFields(sack);
      f.seq = offsetToSeq(this.sndNxt + 1, this.isn);
      this.sndNxt += len;
      if (this.sndNxt > this.sndMax) this.sndMax = this.sndNxt;
      const fin = this.sndNxt === this.data.length && rand() < 0.5;
      if (fin) {
        f.flags |= FIN;
        this.finSent = true;
        this.finEver = true;
      }
      out.push({ f, payload });
      this.lastSendMs = nowMs;
    }
    if (this.sndNxt >= this.data.length && !this.finSent) {
      const f = this.ackFields(sack);
      f.seq = offsetToSeq(this.data.length + 1, this.isn);
      f.flags |= FIN;
      this.finSent = true;
        this.finEver = true;
      out.push({ f, payload: new Uint8Array(0) });
      this.lastSendMs = nowMs;
    }
    return out;
  }

  private isSacked(p: number): boolean {
    for (const [l, r] of this.sacked) if (p >= l && p < r) return true;
    return false;
  }

  receive(p: Pkt, sack: boolean, nowMs = 0): Pkt | null {
    const f = p.f;
    if (this.disrupted !== null) return null;
    const verdict = this.judge(p);
    if (verdict !== 'accept') {
      if (verdict === 'drop' || !this.oowAck(nowMs)) return null;
      return { f: this.ackFields(sack), payload: new Uint8Array(0) };
    }
    if (f.flags & ACK) {
      const a = seqToOffset(f.ack, this.isn, this.sndUna + 1) - 1;
      this.acksSeen.push(a);
      const limit = this.data.length + (this.finSent || this.finAcked || this.finEver ? 1 : 0);
      if (a > limit) this.errors.push(`ACK ${a} beyond what was sent (${limit})`);
      if (a > this.sndUna) {
        this.sndUna = Math.min(a, this.data.length);
        this.rto = 50;
        if (a === this.data.length + 1) this.finAcked = true;
        if (this.sndNxt < this.sndUna) this.sndNxt = this.sndUna;
      }
      if (sack && f.sack) {
        for (const [l, r] of f.sack) {
          const lo = seqToOffset(l, this.isn, this.sndUna + 1) - 1;
          const hi = seqToOffset(r, this.isn, this.sndUna + 1) - 1;
          if (hi > this.data.length) this.errors.push(`SACK beyond data: ${lo}-${hi}`);
          this.sacked.push([lo, hi]);
        }
        if (this.sacked.length > 64) this.sacked = this.sacked.slice(-32);
      }
    }
    const pos = seqToOffset(f.seq, this.peerIsn, this.rcvNxt + 1) - 1;
    let changed = false;
    for (let i = 0; i < p.payload.length; i++) {
      const q = pos + i;
      if (q < 0) continue;
      if (q >= this.have.length) {
        this.errors.push(`byte at ${q} beyond capacity`);
        break;
      }
      if (this.have[q]) {
        if (this.rcvBuf[q] !== p.payload[i]) this.errors.push(`inconsistent byte at ${q}`);
      } else {
        this.have[q] = 1;
        this.rcvBuf[q] = p.payload[i]!;
        changed = true;
      }
    }
    if (f.flags & FIN) {
      const at = pos + p.payload.length;
      if (!this.strict) {
        if (this.finAt >= 0 && this.finAt !== at) this.errors.push(`FIN moved from ${this.finAt} to ${at}`);
        this.finAt = at;
      } else if (this.finAt < 0 && at >= this.rcvNxt) {
        // Inside the window (judge): taken. A FIN below RCV.NXT, or after one was taken, changes
        // nothing (RFC 9293 §3.10.7.4: the first FIN fixes where the stream ends).
        this.finAt = at;
        if (this.peerEnd >= 0 && at !== this.peerEnd) this.disrupted = `took a FIN at ${at}, not at the end of the stream (${this.peerEnd})`;
      }
    }
    while (this.rcvNxt < this.have.length && this.have[this.rcvNxt]) this.rcvNxt++;
    if (this.finAt >= 0 && this.rcvNxt === this.finAt) this.finReceived = true;
    if (this.rcvNxt > this.finAt && this.finAt >= 0) this.errors.push('data beyond FIN');
    // Answer everything with data or FIN, and out-of-window probes, with an ACK.
    if (p.payload.length > 0 || f.flags & FIN || changed) return { f: this.ackFields(sack), payload: new Uint8Array(0) };
    if (pos < this.rcvNxt && this.oowAck(nowMs)) return { f: this.ackFields(sack), payload: new Uint8Array(0) };
    return null;
  }

  /** May an unacceptable segment be answered now (rate-limited when `strict`)? */
  private oowAck(nowMs: number): boolean {
    if (!this.strict) return true;
    if (nowMs - this.lastOowAckMs < OOW_ACK_INTERVAL_MS) return false;
    this.lastOowAckMs = nowMs;
    return true;
  }

  /**
   * RFC 9293 §3.10.7.4 in a synchronized state, RST and SYN as RFC 5961 §3.2 / §4 refine it:
   * 'accept', 'ack' (send an ACK with RCV.NXT, drop the segment) or 'drop'. Sets `disrupted`
   * when a RST resets the connection.
   */
  private judge(p: Pkt): 'accept' | 'ack' | 'drop' {
    const f = p.f;
    // RCV.NXT as a position (the peer's FIN takes one).
    const nxt = this.rcvNxt + (this.finReceived ? 1 : 0);
    const pos = seqToOffset(f.seq, this.peerIsn, nxt + 1) - 1;
    if (f.flags & RST) {
      // Linux also takes RCV.NXT − 1 once the peer's FIN arrived (tcp_reset_check: CLOSE-WAIT,
      // LAST-ACK, CLOSING), as flow/window.ts assumes.
      if (pos === nxt || (this.finReceived && pos === nxt - 1)) {
        this.disrupted = `reset by a RST at RCV.NXT${pos === nxt ? '' : ' − 1 after the FIN'} (${pos})`;
        return 'drop';
      }
      return pos > nxt && pos < nxt + RCV_WND ? 'ack' : 'drop';
    }
    if (f.flags & SYN) return 'ack';
    if (!this.strict) return 'accept';
    if (!(f.flags & ACK)) return 'drop';
    const a = seqToOffset(f.ack, this.isn, this.sndUna + 1) - 1;
    const sndNxt = this.sndMax + (this.finEver ? 1 : 0);
    return a > sndNxt || a < this.sndUna - RCV_WND || pos >= nxt + RCV_WND ? 'ack' : 'accept';
  }

  received(): Uint8Array {
    return this.rcvBuf.subarray(0, this.rcvNxt);
  }

  /** Every run of consecutive bytes received, in order and out of order. */
  runs(): Uint8Array[] {
    const out: Uint8Array[] = [];
    let p = 0;
    while (p < this.have.length) {
      while (p < this.have.length && !this.have[p]) p++;
      const s = p;
      while (p < this.have.length && this.have[p]) p++;
      if (p > s) out.push(this.rcvBuf.subarray(s, p));
    }
    return out;
  }
}

/** n random bytes from 'abc' (rich in partial matches of short [ab] patterns). */
export function abcData(rand: () => number, n: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = 'abc'.charCodeAt(Math.floor(rand() * 3));
  return b;
}

export interface SimResult {
  finished: boolean;
  received: [Uint8Array, Uint8Array];
  errors: string[];
  counters: ReturnType<typeof newStreamCounters>;
  maxCommands: number;
  finalCommands: number;
  timeMs: number;
  conn: Connection<Tag>;
}

export function simulate(o: SimOptions): SimResult {
  const halves: [Half, Half] = [
    { isn: o.isn[0], mss: o.mss, wscale: -1, sackPermitted: o.sack, timestamps: false, finSeen: false, rstSeen: false },
    { isn: o.isn[1], mss: o.mss, wscale: -1, sackPermitted: o.sack, timestamps: false, finSeen: false, rstSeen: false },
  ];
  const counters = newStreamCounters();
  const limits = { ...DEFAULT_LIMITS, ...(o.limits ?? {}) };
  let conn = new Connection<Tag>(halves, o.agent, limits, counters, { queueBytes: 0, storeBytes: 0 });
  const fo = o.failover;
  const failTimes = [...(fo?.times ?? [])].sort((a, b) => a - b);
  // In a box: assigned inside takeSnap, read in the loop (a plain `let` would be narrowed to null).
  const last: { snap: { conn: ConnectionJson; agent: unknown; changes: number; ms: number } | null } = { snap: null };
  const acks: [number | undefined, number | undefined] = [undefined, undefined];
  let deadUntil = -1;
  const takeSnap = (t: number): void => {
    last.snap = { conn: conn.toJSON(false), agent: conn.agent?.snapshot() ?? null, changes: conn.changes, ms: t };
  };
  const observe = (side: 0 | 1, f: TcpFields): void => {
    if (!(f.flags & ACK)) return;
    const a = acks[side];
    if (a === undefined || ((f.ack - a) | 0) > 0) acks[side] = f.ack;
  };
  const cap = (o.data[0].length + o.data[1].length) * 4 + 1024;
  const ep = [new Endpoint(o.isn[0], o.data[0], o.isn[1], cap), new Endpoint(o.isn[1], o.data[1], o.isn[0], cap)];
  // Event queue: [time, seq, kind, side, pkt]
  type Ev = { t: number; n: number; to: 'gw' | 'ep'; side: 0 | 1; p: Pkt };
  const evs = new Heap<Ev>((a, b) => a.t - b.t || a.n - b.n);
  let evn = 0;
  const errors: string[] = [];
  let now = 0;
  let maxCommands = 0;
  const send = (to: 'gw' | 'ep', side: 0 | 1, p: Pkt) => {
    if (o.rand() < o.loss) return;
    const copies = o.rand() < o.dup ? 2 : 1;
    for (let c = 0; c < copies; c++) {
      const delay = 1 + o.rand() * 2 + (o.rand() < o.reorder ? o.rand() * 20 : 0);
      if (evs.size > 200_000) return;
      evs.push({ t: now + delay, n: evn++, to, side, p: { f: { ...p.f, sack: p.f.sack ? p.f.sack.map((b) => [b[0], b[1]] as [number, number]) : null }, payload: p.payload } });
    }
  };
  /**
   * The property that makes the gateway safe: an ACK or SACK block the gateway sends to an
   * endpoint about that endpoint's own data (original positions) only covers bytes whose
   * rewritten image the other endpoint really has.
   */
  const checkAck = (target: 0 | 1, f: TcpFields) => {
    if (!(f.flags & ACK)) return;
    const d = conn.dirs[target];
    const receiver = ep[1 - target]!;
    const a = seqToOffset(f.ack, o.isn[target], d.x + 1) - 1;
    if (a <= o.data[target].length && receiver.rcvNxt < d.map(a)) {
      errors.push(`ACK ${a} to side ${target} claims new ${d.map(a)} but the receiver has ${receiver.rcvNxt}`);
    }
    for (const [l, r] of f.sack ?? []) {
      const lo = d.map(seqToOffset(l, o.isn[target], d.x + 1) - 1);
      const hi = d.map(seqToOffset(r, o.isn[target], d.x + 1) - 1);
      for (let q = lo; q < hi; q++) {
        if (!receiver.have[q]) {
          errors.push(`SACK to side ${target} claims new byte ${q} the receiver does not have`);
          break;
        }
      }
    }
  };
  const fromGw = (outs: TcpOut<Tag>[], fromSide: 0 | 1) => {
    for (const r of outs) {
      const target = (1 - fromSide) as 0 | 1;
      checkAck(target, r.fields);
      send('ep', target, { f: r.fields, payload: r.payload });
    }
  };
  const window = o.window ?? 4000;
  const maxT = o.maxTimeMs ?? 60_000;
  const answers = o.answers;
  let answered = -1;
  if (answers !== undefined) ep[1]!.sendable = 0;
  while (now < maxT) {
    if (answers !== undefined && ep[1]!.rcvNxt !== answered) {
      answered = ep[1]!.rcvNxt;
      ep[1]!.sendable = Math.max(ep[1]!.sendable, Math.min(answers(ep[1]!.received()), ep[1]!.data.length));
    }
    for (const side of [0, 1] as const) {
      for (const p of ep[side]!.output(now, o.mss, o.rand, window, o.sack)) send('gw', side, p);
    }
    if (fo !== undefined) {
      if (failTimes.length > 0 && now >= failTimes[0]! && deadUntil < 0) {
        failTimes.shift();
        deadUntil = now + fo.gapMs;
      }
      if (deadUntil >= 0 && now >= deadUntil) {
        deadUntil = -1;
        const s0 = last.snap;
        const next = new Connection<Tag>(halves, s0 === null ? o.agent : fo.restore(JSON.parse(JSON.stringify(s0.agent))), limits, counters, { queueBytes: 0, storeBytes: 0 });
        if (s0 !== null) next.restore(JSON.parse(JSON.stringify(s0.conn)) as ConnectionJson, now);
        next.adoptAcks(acks);
        conn = next;
        takeSnap(now);
      }
    }
    const outs: TcpOut<Tag>[] = [];
    if (deadUntil < 0) conn.tick(now, outs);
    if (fo !== undefined && deadUntil < 0 && conn.changes !== last.snap?.changes) takeSnap(now);
    // Gateway-originated segments: tell which side they go to by the direction they came from.
    for (const r of outs) {
      const side = r.tag === undefined ? 0 : (r.tag as Tag & { side: 0 | 1 }).side;
      send('ep', (1 - side) as 0 | 1, { f: r.fields, payload: r.payload });
    }
    if (ep[0]!.done && ep[1]!.done) break;
    if (evs.size === 0) {
      now += 5;
      continue;
    }
    const e = evs.pop()!;
    now = Math.max(now, e.t);
    if (e.to === 'gw') {
      if (fo !== undefined) {
        observe(e.side, e.p.f);
        if (deadUntil >= 0) continue; // nobody forwards while the owner is dead
      }
      const out: TcpOut<Tag>[] = [];
      const tag = { fields: e.p.f, side: e.side };
      conn.handle(e.side, e.p.f, e.p.payload, tag, now, out);
      if (fo !== undefined) {
        const sn = last.snap;
        // A new command: the snapshot goes before the release (the invariant); else periodically.
        if (sn === null || conn.changes !== sn.changes || now - sn.ms >= fo.periodMs) takeSnap(now);
      }
      fromGw(out, e.side);
      const n = conn.dirs[0].cmds.length + conn.dirs[1].cmds.length;
      if (n > maxCommands) maxCommands = n;
    } else {
      const reply = ep[e.side]!.receive(e.p, o.sack);
      if (reply) send('gw', e.side, reply);
    }
  }
  for (const e of ep) errors.push(...e.errors);
  return {
    finished: ep[0]!.done && ep[1]!.done,
    received: [ep[1]!.received(), ep[0]!.received()],
    errors,
    counters,
    maxCommands,
    finalCommands: conn.dirs[0].cmds.length + conn.dirs[1].cmds.length,
    timeMs: now,
    conn,
  };
}

/** A binary min-heap (the event queue). */
export class Heap<T> {
  private a: T[] = [];
  constructor(private readonly less: (x: T, y: T) => number) {}
  get size(): number {
    return this.a.length;
  }
  push(v: T): void {
    const a = this.a;
    a.push(v);
    let i = a.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (this.less(a[i]!, a[p]!) >= 0) break;
      [a[i], a[p]] = [a[p]!, a[i]!];
      i = p;
    }
  }
  pop(): T | undefined {
    const a = this.a;
    if (a.length === 0) return undefined;
    const top = a[0]!;
    const last = a.pop()!;
    if (a.length > 0) {
      a[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < a.length && this.less(a[l]!, a[m]!) < 0) m = l;
        if (r < a.length && this.less(a[r]!, a[m]!) < 0) m = r;
        if (m === i) break;
        [a[i], a[m]] = [a[m]!, a[i]!];
        i = m;
      }
    }
    return top;
  }
}
