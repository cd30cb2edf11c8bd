/**
 * The connection layer: sequence numbers ↔ positions at the edge (ISNs near 0 and near the 2^32
 * wrap), ACK/SACK/window translation in the reverse direction, the seed's prior-art failures,
 * keep-alives, FIN and RST positions, hold-back with flush, and hostile segment patterns.
 */
import { describe, expect, it } from 'vitest';
import type { Agent, AgentOutput, Direction, Edit } from '../../src/agent/types.js';
import type { Half } from '../../src/flow/table.js';
import { Connection, type TcpFields, type TcpOut } from '../../src/stream/connection.js';
import { newStreamCounters } from '../../src/stream/counters.js';
import { DEFAULT_LIMITS, type Limits } from '../../src/stream/limits.js';
import { offsetToSeq, seqToOffset } from '../../src/wire/seq.js';
import { literalAgent } from '../helpers/literal-agent.js';

const ACK = 0x10;
const FIN = 0x01;
const RST = 0x04;
const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

type Tag = { fields: TcpFields; id: string };

function half(isn: number, mss = 1460): Half {
  return { isn, mss, wscale: -1, sackPermitted: true, timestamps: false, finSeen: false, rstSeen: false };
}

function scripted(script: Record<number, Edit[]>): Agent {
  return {
    name: 'scripted',
    feed: (_d: Direction, pos: number): AgentOutput => ({ edits: script[pos] ?? [] }),
    flush: () => ({ edits: [] }),
    snapshot: () => null,
  };
}

function setup(isnC: number, isnS: number, agent: Agent | null, limits: Partial<Limits> = {}) {
  const counters = newStreamCounters();
  const budget = { queueBytes: 0, storeBytes: 0 };
  const conn = new Connection<Tag>([half(isnC), half(isnS)], agent, { ...DEFAULT_LIMITS, ...limits }, counters, budget);
  /** Client sends data at 1-based seed position `p` (seq = isnC + p). */
  const data = (p: number, text: string, flags = ACK, now = 0) => {
    const f: TcpFields = { seq: offsetToSeq(p, isnC), ack: offsetToSeq(1, isnS), flags, window: 1000, urgent: 0, sack: null };
    const out: TcpOut<Tag>[] = [];
    conn.handle(0, f, enc(text), { fields: f, id: text }, now, out);
    return out.map((o) => [seqToOffset(o.fields.seq, isnC, p), dec(o.payload), o.fields.flags] as const);
  };
  /** Server acknowledges 1-based new position `a`, optionally with SACK blocks; returns the ACK the client sees. */
  const ack = (a: number, sack: Array<[number, number]> | null = null, window = 1000) => {
    const f: TcpFields = {
      seq: offsetToSeq(1, isnS),
      ack: offsetToSeq(a, isnC),
      flags: ACK,
      window,
      urgent: 0,
      sack: sack ? sack.map(([l, r]) => [offsetToSeq(l, isnC), offsetToSeq(r, isnC)] as [number, number]) : null,
    };
    const out: TcpOut<Tag>[] = [];
    conn.handle(1, f, new Uint8Array(0), { fields: f, id: 'ack' }, 0, out);
    const o = out[0]!.fields;
    return {
      ack: seqToOffset(o.ack, isnC, a),
      window: o.window,
      sack: o.sack?.map(([l, r]) => [seqToOffset(l, isnC, a), seqToOffset(r, isnC, a)]) ?? null,
    };
  };
  return { conn, counters, budget, data, ack };
}

const SEED_SCRIPT = {
  0: [{ at: 1, len: 2, data: enc('i') }],
  3: [{ at: 3, len: 2, data: enc('') }],
  6: [{ at: 6, len: 3, data: enc('the') }],
  9: [{ at: 9, len: 2, data: enc('re') }],
};

describe('the seed worked example on wire sequence numbers', () => {
  for (const isn of [0, 1, 0xfffffffe, 0xfffffff8, 0xffffffff]) {
    it(`Hello world → Hi there with client ISN ${isn}`, () => {
      const { data, ack } = setup(isn, 0x7ffffff0, scripted(SEED_SCRIPT));
      expect(data(4, 'lo ')).toEqual([]);
      expect(data(1, 'Hel')).toEqual([[1, 'Hi', ACK], [3, ' ', ACK]]);
      expect(ack(3).ack).toBe(6);
      expect(ack(4).ack).toBe(7);
      expect(data(10, 'ld')).toEqual([]);
      expect(data(4, 'lo wor')).toEqual([[3, ' the', ACK], [7, 're', ACK]]);
      expect(ack(5).ack).toBe(7);
      expect(ack(7).ack).toBe(10);
      expect(ack(9).ack).toBe(12);
    });
  }
});

describe("the seed's prior-art failures", () => {
  it('ACK for 500 after modifications at 532 and 1000 is not shifted', () => {
    // +3 at 532 and +2 at 1000 (1-based seq), as in the seed's background section.
    const agent = scripted({
      0: [{ at: 531, len: 1, data: enc('XXXX') }],
      600: [{ at: 999, len: 1, data: enc('YYY') }],
    });
    const { data, ack } = setup(1000, 2000, agent);
    data(1, 'a'.repeat(600));
    data(601, 'b'.repeat(600));
    expect(ack(500).ack).toBe(500);
    expect(ack(540).ack).toBe(537);
    expect(ack(1010).ack).toBe(1005);
  });

  it('retransmission of 532 after 1000 was processed is rewritten from the stored commands', () => {
    const agent = scripted({
      531: [{ at: 531, len: 1, data: enc('XXXX') }],
      999: [{ at: 999, len: 1, data: enc('YYY') }],
    });
    const { data, counters } = setup(7, 9, agent);
    data(1, 'a'.repeat(531));
    const first = data(532, 'k'.repeat(468));
    data(1000, 'z'.repeat(100));
    const again = data(532, 'k'.repeat(468));
    expect(again).toEqual(first);
    expect(first[0]![1].startsWith('XXXX')).toBe(true);
    expect(counters.alreadyProcessed).toBe(1);
    expect(counters.commands).toBe(2);
  });
});

describe('header translation', () => {
  it('translates SACK blocks conservatively and the window right edge', () => {
    const { data, ack } = setup(100, 200, literalAgent('bb', 'BBBB'));
    data(1, 'aabbaa');
    data(7, 'ccbbcc');
    // New stream: a a B B B B a a c c B B B B c c (positions 1..16)
    // A SACK of new [11, 17) covers org [9, 13) (ccbbcc's "bbcc" part: "BBBBcc").
    const r = ack(1, [[11, 17]]);
    expect(r.sack).toEqual([[9, 13]]);
    // A SACK of new [12, 17) starts inside "BBBB": "BBBB" belongs to org 9 (its first byte), so
    // org 9 is not claimable; org 10's image is empty and "cc" (11, 12) was received.
    expect(ack(1, [[12, 17]]).sack).toEqual([[10, 13]]);
    // Window: right edge new 17 + 3 = 20 → beyond x: org = 20 − offset(4) = 16; ack org 13 → 3.
    const w = ack(17, null, 3);
    expect(w.ack).toBe(13);
    expect(w.window).toBe(3);
  });

  it('keeps a keep-alive below what the receiver has even when its byte was deleted', () => {
    const { data, ack } = setup(5, 6, literalAgent('x', ''));
    data(1, 'abx');
    ack(3);
    // Keep-alive: SEG.SEQ = SND.UNA − 1 with the (deleted) last byte.
    const out = data(3, 'x');
    expect(out).toHaveLength(1);
    expect(out[0]![0]).toBeLessThan(3);
    expect(out[0]![1]).toBe('');
  });

  it('puts FIN and RST after the rewritten data, and flushes held bytes before the FIN', () => {
    const { data, counters } = setup(0, 0, literalAgent('PORT 40, 4', 'PORT 10, 1'));
    // "PORT 40, " is a prefix of the pattern: held back. What goes out is an empty probe below
    // what the receiver has, so it answers with an ACK (which acknowledges the held bytes).
    const held = data(1, 'PORT 40, ');
    expect(held).toHaveLength(1);
    expect(held[0]![1]).toBe('');
    expect(held[0]![0]).toBeLessThan(1);
    // The FIN comes without the rest: the held bytes go out with the FIN.
    const fin = data(10, '', ACK | FIN);
    expect(fin).toEqual([[1, 'PORT 40, ', ACK | FIN]]);
    expect(counters.flushFin).toBe(1);
    // A retransmitted FIN carries them again.
    expect(data(10, '', ACK | FIN)).toEqual([[1, 'PORT 40, ', ACK | FIN]]);
    const rst = data(10, '', RST);
    expect(rst[0]![0]).toBe(10);
  });

  it('flushes held bytes on a timeout with a gateway-originated segment, resent until acknowledged', () => {
    const { conn, data, ack, counters } = setup(0, 0, literalAgent('PORT 40, 4', 'PORT 10, 1'), { holdTimeoutMs: 100 });
    data(1, 'abc PORT 4');
    // The held tail is acknowledged to the sender (the gateway's responsibility now).
    expect(ack(5).ack).toBe(11);
    const out: TcpOut<Tag>[] = [];
    conn.tick(50, out);
    expect(out).toHaveLength(0);
    conn.tick(100, out);
    expect(out.map((o) => dec(o.payload))).toEqual(['PORT 4']);
    expect(counters.synthSent).toBe(1);
    out.length = 0;
    conn.tick(400, out);
    expect(out.map((o) => dec(o.payload))).toEqual(['PORT 4']);
    ack(11);
    out.length = 0;
    conn.tick(5000, out);
    expect(out).toHaveLength(0);
  });
});

describe('hold timer', () => {
  it('does not time a hold out while a gap waits to be filled, and runs from the last segment', () => {
    const { conn, data, counters } = setup(0, 0, literalAgent('PORT 40, 4', 'PORT 10, 1'), { holdTimeoutMs: 100 });
    data(1, 'abc PORT 4', ACK, 0); // "PORT 4" held
    data(20, 'zzz', ACK, 50); // early: queued behind the gap [11, 20)
    const out: TcpOut<Tag>[] = [];
    conn.tick(1000, out);
    expect(out).toHaveLength(0);
    expect(counters.flushTimeout).toBe(0);
    // The retransmission fills the gap and completes the split match.
    const r = data(11, '0, 4abcde', ACK, 1100);
    expect(r.map((x) => x[1]).join('')).toBe('PORT 10, 1abcdezzz');
    // A new hold: the timer restarts with each segment from the sender.
    data(23, 'PORT', ACK, 1200);
    conn.tick(1250, out);
    data(27, ' 4', ACK, 1280); // still a prefix: held, and the sender is active
    conn.tick(1350, out);
    expect(out).toHaveLength(0);
    conn.tick(1380, out);
    expect(out.map((o) => dec(o.payload))).toEqual(['PORT 4']);
    expect(counters.flushTimeout).toBe(1);
  });
});

describe('the normalisation store\'s bound (normalizeBytesPerConn)', () => {
  it('a sender never has more processed and unacknowledged than the store keeps: the window ends there, bytes past it are dropped until the receiver acknowledges', () => {
    const { data, ack, counters } = setup(0, 0, literalAgent('Hello world', 'Hi there'), { normalizeBytesPerConn: 100 });
    // The receiver offers 1000 bytes: the sender is told 100 (no window scaling here).
    expect(ack(1, null, 1000).window).toBe(100);
    expect(counters.windowClamped).toBe(1);
    expect(data(1, 'a'.repeat(60))).toHaveLength(1);
    // 60 more would make 120 unacknowledged: the first 40 go, the rest is dropped.
    const r = data(61, 'b'.repeat(60));
    expect(r.map((x) => [x[0], x[1].length])).toEqual([[61, 40]]);
    expect(counters.beyondStore).toBe(1);
    // Nothing fits: an empty segment just below what the receiver has goes on instead (its ACK
    // and window travel, and the receiver answers with a duplicate ACK).
    expect(data(101, 'c'.repeat(10))).toEqual([[100, '', ACK]]);
    expect(counters.beyondStore).toBe(2);
    // A retransmission that straddles the bound: its processed part goes, normalised.
    expect(data(51, 'a'.repeat(10) + 'X'.repeat(40) + 'c'.repeat(20))).toEqual([[51, 'a'.repeat(10) + 'b'.repeat(40), ACK]]);
    expect(counters.beyondStore).toBe(3);
    // Acknowledged: room again, and the window follows.
    expect(ack(61, null, 1000).window).toBe(100);
    expect(data(101, 'b'.repeat(20)).map((x) => x[1].length)).toEqual([20]);
    expect(counters.normalizeEvicted).toBe(0);
  });

  it('so a first copy the receiver never took stays checkable: its retransmission with other bytes ("Hello world" for "Hellx world") gets the processed bytes', () => {
    const { data, counters } = setup(0, 0, literalAgent('Hello world', 'Hi there'), { normalizeBytesPerConn: 100 });
    expect(data(1, 'Hellx world')).toEqual([[1, 'Hellx world', ACK]]);
    // The sender goes on past what the receiver acknowledged (it dropped the first copy and
    // buffers the rest out of order): without the bound the store would drop [0, 11) here.
    data(12, 'z'.repeat(200));
    expect(counters.beyondStore).toBe(1);
    const again = data(1, 'Hello world');
    expect(again.map((x) => x[1])).toEqual(['Hellx world']);
    expect(counters.normalized).toBe(1);
    expect(counters.normalizeUnverified).toBe(0);
  });
});

describe('hold timer and the gateway\'s own outage', () => {
  it('time the owner did not run is not counted (Connection.outage): the hold times out that much later', () => {
    const { conn, data, counters } = setup(0, 0, literalAgent('PORT 40, 4', 'PORT 10, 1'), { holdTimeoutMs: 100 });
    data(1, 'abc PORT 4', ACK, 0); // "PORT 4" held since 0
    conn.outage(500, 500); // the owner was stopped for 500 ms
    const out: TcpOut<Tag>[] = [];
    conn.tick(599, out);
    expect(out).toHaveLength(0);
    conn.tick(600, out);
    expect(out.map((o) => dec(o.payload))).toEqual(['PORT 4']);
    expect(counters.flushTimeout).toBe(1);
    // Nothing held: nothing to extend.
    conn.outage(10_000, 10_600);
    expect(conn.nextTimerMs()).toBeLessThan(10_000);
  });

  it('outages that keep coming cannot keep a hold forever: at most what a takeover grants from now', () => {
    const { conn, data, counters } = setup(0, 0, literalAgent('PORT 40, 4', 'PORT 10, 1'), { holdTimeoutMs: 100 });
    data(1, 'abc PORT 4', ACK, 0);
    conn.outage(1_000_000, 0);
    expect(conn.nextTimerMs()).toBe(10_000); // max(3 hold timeouts, 10 s) from now
    const out: TcpOut<Tag>[] = [];
    conn.tick(10_000, out);
    expect(counters.flushTimeout).toBe(1);
  });
});

describe('hold timer and the receiver window', () => {
  it('does not time a hold out while the receiver\'s window ends at what the sender sent (it cannot send the rest of a match); the timer restarts when the window opens', () => {
    const { conn, data, ack, counters } = setup(0, 0, literalAgent('PORT 40, 4', 'PORT 10, 1'), { holdTimeoutMs: 100 });
    expect(data(1, 'abc PORT 4', ACK, 0).map((x) => x[1]).join('')).toBe('abc '); // "PORT 4" held
    // The receiver took "abc " and its buffer is full (window 0): the sender may send only what
    // the receiver would have room for, and the held bytes take none of it — up to x, no further.
    expect(ack(5, null, 0)).toMatchObject({ window: 0 });
    const out: TcpOut<Tag>[] = [];
    conn.tick(1000, out);
    conn.tick(5000, out);
    expect(out).toHaveLength(0);
    expect(counters.flushTimeout).toBe(0);
    // Its application reads: the window opens. The sender gets a full hold period from then.
    ack(5, null, 1000);
    conn.tick(5050, out);
    expect(out).toHaveLength(0);
    const r = data(11, '0, 4abcde', ACK, 5060);
    expect(r.map((x) => x[1]).join('')).toBe('PORT 10, 1abcde');
    expect(counters.flushTimeout).toBe(0);
    // With the window open and the sender silent, a hold times out as before.
    data(20, 'PORT', ACK, 6000);
    conn.tick(6200, out);
    expect(counters.flushTimeout).toBe(1);
  });
});

describe('hostile segment patterns', () => {
  it('rewrites an overlapping retransmission with different bytes to the processed bytes', () => {
    const { data, counters } = setup(0, 0, literalAgent('zz', 'y'));
    data(1, 'abcdef');
    const out = data(3, 'XXXXgh');
    expect(out).toEqual([[3, 'cdefgh', ACK]]);
    expect(counters.normalized).toBe(1);
  });

  it('discards segments far ahead of x, counted', () => {
    const { data, counters } = setup(0, 0, literalAgent('zz', 'y'), { maxAheadBytes: 1000 });
    expect(data(100_000, 'far')).toEqual([]);
    expect(counters.farAhead).toBe(1);
    expect(counters.delayed).toBe(0);
  });

  it('bounds a flood of tiny out-of-order segments by the queue budgets', () => {
    const { conn, data, counters, budget } = setup(0, 0, literalAgent('zz', 'y'), {
      queueSegmentsPerConn: 64,
      queueBytesPerConn: 4096,
    });
    for (let i = 0; i < 10_000; i++) data(10 + 2 * i, 'q');
    expect(conn.dirs[0].queuedSegments).toBeLessThanOrEqual(64);
    expect(budget.queueBytes).toBeLessThanOrEqual(4096);
    expect(counters.queueOverflow).toBeGreaterThan(9000);
    // The gap is filled: what is queued drains, in order, and the stream goes on.
    const out = data(1, 'abcdefghi');
    expect(out[0]).toEqual([1, 'abcdefghi', ACK]);
    expect(out.length).toBe(2);
    conn.dispose();
    expect(budget.queueBytes).toBe(0);
  });

  it('shares the global queue budget between connections', () => {
    const counters = newStreamCounters();
    const budget = { queueBytes: 0, storeBytes: 0 };
    const limits = { ...DEFAULT_LIMITS, queueBytesGlobal: 100 };
    const conns = [0, 1, 2].map(() => new Connection<Tag>([half(0), half(0)], literalAgent('zz', 'y'), limits, counters, budget));
    for (const c of conns) {
      const f: TcpFields = { seq: 50, ack: 1, flags: ACK, window: 1000, urgent: 0, sack: null };
      c.handle(0, f, new Uint8Array(60), { fields: f, id: '' }, 0, []);
    }
    expect(budget.queueBytes).toBeLessThanOrEqual(100);
    expect(counters.queueOverflow).toBe(2);
  });

  it('erases commands over the cap and discards segments that would need them, counted', () => {
    const { data, counters, conn } = setup(0, 0, literalAgent('a', 'AA'), { maxCommands: 4 });
    for (let i = 0; i < 10; i++) data(1 + i, 'a');
    expect(conn.dirs[0].cmds.length).toBeLessThanOrEqual(4);
    expect(counters.commandsErased).toBe(6);
    // A retransmission of the first bytes can no longer be rewritten: discarded, never sent wrong.
    expect(data(1, 'aa')).toEqual([]);
    expect(counters.erasedDiscard).toBe(1);
  });
});

describe('more header cases', () => {
  it('translates the urgent pointer through F (urgentInline off: policy.urgent keep)', () => {
    const { conn } = setup(0, 0, literalAgent('ab', 'X'));
    conn.urgentInline = false;
    const f: TcpFields = { seq: 1, ack: 1, flags: ACK | 0x20, window: 100, urgent: 6, sack: null };
    const out: TcpOut<Tag>[] = [];
    // "ababcd": urgent data ends before byte 7 (1-based), i.e. after "ababcd"[0..6) → "XXcd".
    conn.handle(0, f, enc('ababcd'), { fields: f, id: 'u' }, 0, out);
    expect(dec(out[0]!.payload)).toBe('XXcd');
    expect(out[0]!.fields.urgent).toBe(4);
    expect(out[0]!.fields.flags & 0x20).toBe(0x20);
  });

  it('clears URG and the urgent pointer by default (urgentInline): the receiver reads the byte in the stream', () => {
    const { conn } = setup(0, 0, literalAgent('ab', 'X'));
    const f: TcpFields = { seq: 1, ack: 1, flags: ACK | 0x20, window: 100, urgent: 6, sack: null };
    const out: TcpOut<Tag>[] = [];
    conn.handle(0, f, enc('ababcd'), { fields: f, id: 'u' }, 0, out);
    expect(out[0]!.fields.flags & 0x20).toBe(0);
    expect(out[0]!.fields.urgent).toBe(0);
  });

  it('makes the agent decide when held bytes exceed maxHeldBytes (flush on limit)', () => {
    // A literal agent holds at most pattern-1 bytes; a regex-like hold is simulated by an agent
    // that never decides.
    const undecided: Agent = {
      name: 'undecided',
      feed: (_d, pos) => ({ edits: [], undecidedFrom: pos === 0 ? 0 : Math.min(pos, 0) }),
      flush: () => ({ edits: [] }),
      snapshot: () => null,
    };
    const { data, counters } = setup(0, 0, undecided, { maxHeldBytes: 10 });
    expect(data(1, 'abcdef')[0]![1]).toBe('');
    const out = data(7, 'ghijkl');
    expect(counters.flushLimit).toBe(1);
    // The flushed bytes go out as a gateway-originated segment after the (emptied) segment.
    expect(out.map((o) => o[1]).join('')).toBe('abcdefghijkl');
  });

  it('answers a zero-window probe whose byte is held with an empty probe below the receiver', () => {
    const { data, ack } = setup(0, 0, literalAgent('xy', 'Z'));
    data(1, 'abc');
    ack(4, null, 0);
    const probe = data(4, 'x');
    expect(probe).toHaveLength(1);
    expect(probe[0]![1]).toBe('');
    expect(probe[0]![0]).toBeLessThan(4);
    // The receiver's answer (still ack 4, window 0) acknowledges the held byte to the sender.
    expect(ack(4, null, 0).ack).toBe(5);
  });
});
