/**
 * Passive tracking of both halves and the bounded connection table.
 */
import { describe, expect, it } from 'vitest';
import { FlowTable, type Flow } from '../../src/flow/table.js';
import { TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN } from '../../src/wire/tcp.js';

const C = { addr: 0x0a000001, port: 40000 };
const S = { addr: 0x0a000002, port: 80 };
const limits = { maxConnections: 3, idleTimeoutMs: 10_000, closingTimeoutMs: 1_000 };

function handshake(t: FlowTable, isnC = 100, isnS = 200, now = 0) {
  const r1 = t.lookup(C, S, TCP_SYN, isnC, now);
  if (r1.kind !== 'flow') throw new Error('no flow');
  t.track(r1.flow, r1.side, TCP_SYN, isnC, { mss: 1460, wscale: 7, sackPermitted: true, timestamps: true }, now);
  const r2 = t.lookup(S, C, TCP_SYN | TCP_ACK, isnS, now);
  if (r2.kind !== 'flow') throw new Error('no flow');
  t.track(r2.flow, r2.side, TCP_SYN | TCP_ACK, isnS, { mss: 1400, wscale: 9, sackPermitted: true, timestamps: false }, now);
  const r3 = t.lookup(C, S, TCP_ACK, isnC + 1, now);
  if (r3.kind !== 'flow') throw new Error('no flow');
  t.track(r3.flow, r3.side, TCP_ACK, isnC + 1, undefined, now);
  return r1.flow;
}

describe('flow table', () => {
  it('learns ISNs, MSS, window scale, SACK-permitted and timestamps from both SYNs', () => {
    const t = new FlowTable(limits);
    const f = handshake(t);
    expect(f.state).toBe('established');
    expect(f.client).toEqual(C);
    expect(f.halves[0]).toMatchObject({ isn: 100, mss: 1460, wscale: 7, sackPermitted: true, timestamps: true });
    expect(f.halves[1]).toMatchObject({ isn: 200, mss: 1400, wscale: 9, sackPermitted: true, timestamps: false });
    expect(f.windowScaling).toBe(true);
    expect(f.id).toBe('10.0.0.1.40000-10.0.0.2.80');
  });

  it('finds the same flow from either direction, and the side of each segment', () => {
    const t = new FlowTable(limits);
    handshake(t);
    const a = t.lookup(C, S, TCP_ACK, 101, 1);
    const b = t.lookup(S, C, TCP_ACK, 201, 1);
    expect(a.kind === 'flow' && b.kind === 'flow' && a.flow === b.flow).toBe(true);
    expect(a.kind === 'flow' && a.side).toBe(0);
    expect(b.kind === 'flow' && b.side).toBe(1);
  });

  it('tracks a connection picked up mid-stream as such (no agent may rewrite it)', () => {
    const t = new FlowTable(limits);
    const r = t.lookup(S, C, TCP_ACK, 5000, 0);
    expect(r.kind).toBe('flow');
    if (r.kind !== 'flow') return;
    expect(r.flow.midstream).toBe(true);
    expect(r.flow.client).toEqual(C); // the higher port is taken as the client's
    expect(t.counters.midstream).toBe(1);
  });

  it('takes a RST at the sender\'s FIN (Linux: RCV.NXT − 1 after a FIN), but not once anything went past the FIN', () => {
    const t = new FlowTable(limits);
    const f = handshake(t);
    t.observe(f, 0, TCP_ACK, 101, 201, 10); // bytes 101..110
    expect(t.judge(f, 0, TCP_FIN | TCP_ACK, 111, 201, 0)).toBe('accept');
    t.track(f, 0, TCP_FIN | TCP_ACK, 111, undefined, 1);
    t.observe(f, 0, TCP_FIN | TCP_ACK, 111, 201, 0); // the FIN at 111
    expect(t.judge(f, 0, TCP_RST, 111, 0, 0)).toBe('rst-close');
    expect(t.judge(f, 0, TCP_RST, 112, 0, 0)).toBe('rst-close'); // the next number, as before
    expect(t.judge(f, 0, TCP_RST, 110, 0, 0)).toBe('rst-not-exact');
    // Bytes after the FIN (no receiver takes them, but they moved the edge): the FIN's number is
    // no longer where a RST closes.
    t.observe(f, 0, TCP_ACK, 112, 201, 5);
    expect(t.judge(f, 0, TCP_RST, 111, 0, 0)).toBe('rst-not-exact');
    expect(t.judge(f, 0, TCP_RST, 116, 0, 0)).toBe('rst-not-exact');
    expect(t.judge(f, 0, TCP_RST, 117, 0, 0)).toBe('rst-close');
  });

  it('handles simultaneous open', () => {
    const t = new FlowTable(limits);
    const r1 = t.lookup(C, S, TCP_SYN, 1, 0);
    if (r1.kind !== 'flow') throw new Error();
    t.track(r1.flow, 0, TCP_SYN, 1, undefined, 0);
    const r2 = t.lookup(S, C, TCP_SYN, 2, 0);
    expect(r2.kind === 'flow' && r2.flow).toBe(r1.flow);
    expect(t.counters.simultaneousOpen).toBe(1);
  });

  it('closes on FIN from both sides or RST, and expires closed and idle connections', () => {
    const t = new FlowTable(limits);
    const f = handshake(t);
    t.track(f, 0, TCP_FIN | TCP_ACK, 101, undefined, 10);
    expect(f.state).toBe('closing');
    t.track(f, 1, TCP_FIN | TCP_ACK, 201, undefined, 20);
    expect(f.state).toBe('closed');
    t.expire(500);
    expect(t.size).toBe(1);
    t.expire(1100);
    expect(t.size).toBe(0);
    expect(t.counters.expiredClosed).toBe(1);
    const g = handshake(t, 7, 8, 2000);
    t.track(g, 1, TCP_RST, 9, undefined, 2000);
    expect(g.state).toBe('closed');
    const h = handshake(t, 70, 80, 2000);
    expect(h).not.toBe(g); // a new SYN on a closed 4-tuple is a new connection
    expect(h.id).toBe('10.0.0.1.40000-10.0.0.2.80#2');
    expect(t.counters.reused).toBe(1);
    t.expire(2000 + 10_001);
    expect(t.size).toBe(0);
    expect(t.counters.expiredIdle).toBe(1);
  });

  it('keeps a connection closed both ways (or reset) for closedTimeoutMs, a half-closed one for closingTimeoutMs', () => {
    const t = new FlowTable({ ...limits, maxConnections: 10, closedTimeoutMs: 200 });
    const open = (port: number, now: number) => {
      const c = { ...C, port };
      const r = t.lookup(c, S, TCP_SYN, 1, now);
      if (r.kind !== 'flow') throw new Error('no flow');
      t.track(r.flow, 0, TCP_SYN, 1, undefined, now);
      t.track(r.flow, 1, TCP_SYN | TCP_ACK, 5, undefined, now);
      t.track(r.flow, 0, TCP_ACK, 2, undefined, now);
      return r.flow;
    };
    const both = open(1, 0);
    t.track(both, 0, TCP_FIN | TCP_ACK, 2, undefined, 10);
    t.track(both, 1, TCP_FIN | TCP_ACK, 6, undefined, 20);
    const reset = open(2, 0);
    t.track(reset, 1, TCP_RST, 6, undefined, 30);
    const half = open(3, 0);
    t.track(half, 0, TCP_FIN | TCP_ACK, 2, undefined, 40);
    expect([both.state, reset.state, half.state]).toEqual(['closed', 'closed', 'closing']);
    t.expire(20 + 199);
    expect(t.size).toBe(3);
    t.expire(30 + 201);
    expect(t.size).toBe(1);
    expect(t.counters.expiredClosed).toBe(2);
    t.expire(40 + 1_001);
    expect(t.size).toBe(0);
    expect(t.counters.expiredClosed).toBe(3);
  });

  it('keeps a close whose final ACK it never saw for closingTimeoutMs, and restarts closedTimeoutMs at a segment after the close', () => {
    const t = new FlowTable({ ...limits, maxConnections: 10, closedTimeoutMs: 200 });
    const seg = (f: Flow<unknown>, side: 0 | 1, flags: number, seq: number, ack: number, now: number) => {
      const r = t.lookup(side === 0 ? f.client : f.server, side === 0 ? f.server : f.client, flags, seq, now);
      if (r.kind !== 'flow' || r.flow !== f) throw new Error('not this flow');
      t.track(f, side, flags, seq, undefined, now);
      t.observe(f, side, flags, seq, ack, 0);
    };
    const open = (port: number) => {
      const r = t.lookup({ ...C, port }, S, TCP_SYN, 1, 0);
      if (r.kind !== 'flow') throw new Error('no flow');
      const f = r.flow;
      t.track(f, 0, TCP_SYN, 1, undefined, 0);
      t.observe(f, 0, TCP_SYN, 1, 0, 0);
      seg(f, 1, TCP_SYN | TCP_ACK, 5, 2, 0);
      seg(f, 0, TCP_ACK, 2, 6, 0);
      // Client FIN, acknowledged by the server's FIN.
      seg(f, 0, TCP_FIN | TCP_ACK, 2, 6, 10);
      seg(f, 1, TCP_FIN | TCP_ACK, 6, 3, 20);
      return f;
    };
    const lost = open(1); // the client's final ACK never reaches the gateway
    const clean = open(2);
    seg(clean, 0, TCP_ACK, 3, 7, 30);
    const late = open(3);
    seg(late, 0, TCP_ACK, 3, 7, 30);
    expect([lost.state, clean.state, late.state]).toEqual(['closed', 'closed', 'closed']);
    // The server's FIN again (the final ACK was lost beyond the gateway), and the ACK again.
    seg(late, 1, TCP_FIN | TCP_ACK, 6, 3, 150);
    seg(late, 0, TCP_ACK, 3, 7, 150);
    t.expire(30 + 201);
    expect(t.size).toBe(2);
    expect(t.peek(clean.client, clean.server)).toBeUndefined();
    t.expire(150 + 201);
    expect(t.size).toBe(1);
    expect(t.peek(lost.client, lost.server)).toBe(lost);
    // Its FIN retransmitted for a while: each one still meets the connection.
    seg(lost, 1, TCP_FIN | TCP_ACK, 6, 3, 900);
    t.expire(900 + 999);
    expect(t.size).toBe(1);
    t.expire(900 + 1_001);
    expect(t.size).toBe(0);
    expect(t.counters.expiredClosed).toBe(3);
    // Segments after a clean close keep it at most closingTimeoutMs past the close (+ closedTimeoutMs).
    const chatty = open(4);
    seg(chatty, 0, TCP_ACK, 3, 7, 30);
    for (let now = 100; now <= 1_200; now += 100) {
      seg(chatty, 0, TCP_ACK, 3, 7, now); // each one would restart its 200 ms
      t.expire(now);
      expect(t.size).toBe(1);
    }
    t.expire(1_300); // closed at 20: 1,020 + 200 < 1,300
    expect(t.size).toBe(0);
  });

  it('a new SYN takes the place of the oldest closed connection when the table is full', () => {
    const t = new FlowTable({ ...limits, closedTimeoutMs: 60_000 });
    const flows = [0, 1, 2].map((i) => {
      const r = t.lookup({ ...C, port: 1000 + i }, S, TCP_SYN, i, 0);
      if (r.kind !== 'flow') throw new Error('no flow');
      t.track(r.flow, 0, TCP_SYN, i, undefined, 0);
      t.track(r.flow, 1, TCP_SYN | TCP_ACK, 50 + i, undefined, 0);
      t.track(r.flow, 0, TCP_ACK, i + 1, undefined, 0);
      return r.flow;
    });
    // Closed in the order 2, 0 (1 stays open): 2 is the oldest closed one.
    t.track(flows[2]!, 0, TCP_RST, 3, undefined, 5);
    t.track(flows[0]!, 0, TCP_FIN | TCP_ACK, 1, undefined, 6);
    t.track(flows[0]!, 1, TCP_FIN | TCP_ACK, 51, undefined, 7);
    const a = t.lookup({ ...C, port: 2000 }, S, TCP_SYN, 9, 8);
    expect(a.kind).toBe('flow');
    expect(t.counters.evictedClosed).toBe(1);
    expect(t.lookup({ ...C, port: 1002 }, S, TCP_ACK, 4, 8).kind, 'the evicted one is gone').not.toBe('flow');
    expect(t.lookup({ ...C, port: 1000 }, S, TCP_ACK, 2, 8).kind, 'the younger closed one stays').toBe('flow');
    const b = t.lookup({ ...C, port: 2001 }, S, TCP_SYN, 9, 9);
    expect(b.kind).toBe('flow');
    expect(t.counters.evictedClosed).toBe(2);
    // Only open connections left: refused as before, and a non-SYN never evicts.
    expect(t.lookup({ ...C, port: 2002 }, S, TCP_SYN, 9, 10).kind).toBe('refused');
    expect(t.counters.tableFull).toBe(1);
    expect(t.size).toBe(3);
  });

  it('refuses SYNs beyond the table size, counted', () => {
    const t = new FlowTable(limits);
    for (let i = 0; i < 3; i++) expect(t.lookup({ ...C, port: 1000 + i }, S, TCP_SYN, i, 0).kind).toBe('flow');
    expect(t.lookup({ ...C, port: 2000 }, S, TCP_SYN, 9, 0).kind).toBe('refused');
    expect(t.lookup({ ...C, port: 2001 }, S, TCP_ACK, 9, 0).kind).toBe('untracked');
    expect(t.counters.tableFull).toBe(1);
    expect(t.counters.untrackedFull).toBe(1);
    expect(t.size).toBe(3);
  });

  it("keeps the 4-tuples of inspected connections that left unconfirmed, within its cap, oldest forgotten first", () => {
    // The cap: maxHalfOpen × ⌈HANDSHAKE_TOMB_MS / min(synTimeoutMs, closedTimeoutMs)⌉ = 2 × 1.
    const t = new FlowTable({ ...limits, maxConnections: 2, maxHalfOpen: 2, synTimeoutMs: 240_000, closedTimeoutMs: 240_000 });
    t.inspected = () => true;
    const client = (i: number) => ({ addr: C.addr, port: 41000 + i });
    let now = 0;
    /** A SYN answered by a RST: closed, never confirmed. */
    const refused = (i: number) => {
      const r = t.lookup(client(i), S, TCP_SYN, 100, ++now);
      if (r.kind !== 'flow') throw new Error(r.kind);
      t.track(r.flow, r.side, TCP_SYN, 100, undefined, now);
      t.track(r.flow, 1, TCP_RST | TCP_ACK, 0, undefined, now);
    };
    refused(0);
    refused(1);
    // The table is full: each new SYN takes the oldest closed entry's place, which leaves its 4-tuple.
    refused(2);
    refused(3);
    expect(t.handshakeTombs).toBe(2);
    expect(t.lookup(client(0), S, TCP_ACK, 101, ++now).kind).toBe('handshake-expired');
    refused(4);
    expect(t.handshakeTombs).toBe(2);
    expect(t.counters.handshakeTombsEvicted).toBe(1);
    expect(t.lookup(client(0), S, TCP_ACK, 101, ++now).kind).not.toBe('handshake-expired');
    expect(t.lookup(client(2), S, TCP_ACK, 101, ++now).kind).toBe('handshake-expired');
  });

  it('a SYN the half-open cap refuses does not clear a kept 4-tuple; one that opens a connection does', () => {
    const t = new FlowTable({ ...limits, maxConnections: 10, maxHalfOpen: 1, synTimeoutMs: 1000 });
    t.inspected = () => true;
    const A = { addr: C.addr, port: 42000 };
    const B = { addr: C.addr, port: 42001 };
    const syn = (e: typeof A, now: number) => {
      const r = t.lookup(e, S, TCP_SYN, 100, now);
      if (r.kind === 'flow') t.track(r.flow, r.side, TCP_SYN, 100, undefined, now);
      return r.kind;
    };
    expect(syn(A, 1)).toBe('flow');
    t.expire(1002);
    expect(t.handshakeTombs).toBe(1);
    expect(syn(B, 1003)).toBe('flow');
    expect(syn(A, 1004)).toBe('refused');
    expect(t.lookup(A, S, TCP_ACK, 101, 1005).kind).toBe('handshake-expired');
    t.expire(2004);
    expect(syn(A, 2005)).toBe('flow');
    expect(t.handshakeTombs).toBe(1); // B's now; A's cleared
    expect(t.lookup(A, S, TCP_ACK, 101, 2006).kind).toBe('flow');
  });
});
