/**
 * Passive tracking of both halves and the bounded connection table.
 */
import { describe, expect, it } from 'vitest';
import { FlowTable, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN } from '../../src/flow/table.js';

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

  it('refuses SYNs beyond the table size, counted', () => {
    const t = new FlowTable(limits);
    for (let i = 0; i < 3; i++) expect(t.lookup({ ...C, port: 1000 + i }, S, TCP_SYN, i, 0).kind).toBe('flow');
    expect(t.lookup({ ...C, port: 2000 }, S, TCP_SYN, 9, 0).kind).toBe('refused');
    expect(t.lookup({ ...C, port: 2001 }, S, TCP_ACK, 9, 0).kind).toBe('untracked');
    expect(t.counters.tableFull).toBe(1);
    expect(t.counters.untrackedFull).toBe(1);
    expect(t.size).toBe(3);
  });
});
