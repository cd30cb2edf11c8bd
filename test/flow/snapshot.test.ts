/**
 * Flow table entries as plain data (cluster, issue 8): exportFlow / importFlow / remove, and the
 * compact entry representation (issue 7) behaving like the plain one.
 */
import { describe, expect, it } from 'vitest';
import { Flow as FlowClass, FlowTable, type Endpoint, type Flow, type FlowJson } from '../../src/flow/table.js';
import { TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN } from '../../src/wire/tcp.js';

const C = { addr: 0xc0a80001, port: 40000 }; // 192.168.0.1: above 2^31 as an int
const S = { addr: 0x0a000002, port: 80 };
const limits = { maxConnections: 3, idleTimeoutMs: 10_000, closingTimeoutMs: 1_000 };

function handshake(t: FlowTable, c: Endpoint = C, s: Endpoint = S, isnC = 0xfffffff0, isnS = 200, now = 0): Flow {
  const r1 = t.lookup(c, s, TCP_SYN, isnC, now);
  if (r1.kind !== 'flow') throw new Error('no flow');
  t.track(r1.flow, r1.side, TCP_SYN, isnC, { mss: 1460, wscale: 14, sackPermitted: true, timestamps: true }, now);
  const r2 = t.lookup(s, c, TCP_SYN | TCP_ACK, isnS, now);
  if (r2.kind !== 'flow') throw new Error('no flow');
  t.track(r2.flow, r2.side, TCP_SYN | TCP_ACK, isnS, { mss: 65535, wscale: undefined, sackPermitted: false, timestamps: true }, now);
  const r3 = t.lookup(c, s, TCP_ACK, isnC + 1, now);
  if (r3.kind !== 'flow') throw new Error('no flow');
  t.track(r3.flow, r3.side, TCP_ACK, isnC + 1, undefined, now);
  return r1.flow;
}

const viaJson = (j: FlowJson): FlowJson => JSON.parse(JSON.stringify(j)) as FlowJson;

/** What a flow looks like from outside (everything but conn). */
function view(f: Flow) {
  return {
    key: f.key,
    id: f.id,
    client: f.client,
    server: f.server,
    midstream: f.midstream,
    state: f.state,
    halves: f.halves.map((h) => ({ ...JSON.parse(JSON.stringify(h)) })),
    confirmed: f.confirmed,
    seen: f.seen,
    createdMs: f.createdMs,
    lastMs: f.lastMs,
    closedMs: f.closedMs,
    windowScaling: f.windowScaling,
  };
}

describe('flow entries as data', () => {
  it('keeps endpoints, halves and flags exactly (compact representation)', () => {
    const t = new FlowTable(limits);
    const f = handshake(t);
    expect(f.client).toEqual(C);
    expect(f.server).toEqual(S);
    expect(f.id).toBe('192.168.0.1.40000-10.0.0.2.80');
    expect(f.halves[0]).toMatchObject({ isn: 0xfffffff0, mss: 1460, wscale: 14, sackPermitted: true, timestamps: true, finSeen: false });
    expect(f.halves[1]).toMatchObject({ isn: 200, mss: 65535, wscale: -1, sackPermitted: false, timestamps: true, rstSeen: false });
    expect(f.sideOf(C)).toBe(0);
    expect(f.sideOf(S)).toBe(1);
    expect(t.peek(S, C)).toBe(f);
    expect(t.peek(C, { ...S, port: 81 })).toBeUndefined();
    expect(f.confirmed).toBe(true);
    expect(f.midstream).toBe(false);
  });

  it('round trip through JSON gives an entry that behaves identically', () => {
    const a = new FlowTable(limits);
    const b = new FlowTable(limits);
    const fa = handshake(a, C, S, 0xfffffff0, 200, 5);
    const j = viaJson(a.exportFlow(fa));
    expect(j.v).toBe(1);
    const fb = b.importFlow(j, 5)!;
    expect(fb).not.toBeNull();
    expect(view(fb)).toEqual(view(fa));
    expect(b.size).toBe(1);
    expect(b.halfOpen).toBe(0);
    // The same segments give the same results on both tables.
    const steps: Array<[Endpoint, Endpoint, number, number, number]> = [
      [C, S, TCP_ACK, 0xfffffff1, 10],
      [S, C, TCP_FIN | TCP_ACK, 201, 20],
      [C, S, TCP_FIN | TCP_ACK, 0xfffffff1, 30],
    ];
    for (const [src, dst, flags, seq, now] of steps) {
      const ra = a.lookup(src, dst, flags, seq, now);
      const rb = b.lookup(src, dst, flags, seq, now);
      expect(ra.kind).toBe('flow');
      expect(rb.kind).toBe('flow');
      if (ra.kind !== 'flow' || rb.kind !== 'flow') return;
      expect(rb.flow).toBe(fb);
      expect(rb.side).toBe(ra.side);
      expect(rb.isNew).toBe(false);
      a.track(ra.flow, ra.side, flags, seq, undefined, now);
      b.track(rb.flow, rb.side, flags, seq, undefined, now);
      expect(view(fb)).toEqual(view(fa));
    }
    expect(fb.state).toBe('closed');
    expect(b.expire(2000)).toBe(1);
    expect(b.counters.expiredClosed).toBe(1);
  });

  it('keeps half-open accounting right for unconfirmed and mid-stream entries', () => {
    const a = new FlowTable(limits);
    const r = a.lookup(C, S, TCP_SYN, 1, 0);
    const m = a.lookup({ addr: 1, port: 5000 }, { addr: 2, port: 22 }, TCP_ACK, 7, 0);
    if (r.kind !== 'flow' || m.kind !== 'flow') throw new Error('no flow');
    a.track(r.flow, 0, TCP_SYN, 1, undefined, 0);
    a.track(m.flow, m.side, TCP_ACK, 7, undefined, 0);
    expect(a.halfOpen).toBe(2);
    const b = new FlowTable(limits);
    const fr = b.importFlow(viaJson(a.exportFlow(r.flow)), 0)!;
    const fm = b.importFlow(viaJson(a.exportFlow(m.flow)), 0)!;
    expect(b.halfOpen).toBe(2);
    expect(fm.midstream).toBe(true);
    expect(fm.seen).toEqual([m.side === 0, m.side === 1]);
    // The other side of the mid-stream connection confirms it, on the importing table too.
    const back = b.lookup({ addr: 2, port: 22 }, { addr: 1, port: 5000 }, TCP_ACK, 9, 1);
    if (back.kind !== 'flow') throw new Error('no flow');
    expect(back.flow).toBe(fm);
    b.track(fm, back.side, TCP_ACK, 9, undefined, 1);
    expect(fm.confirmed).toBe(true);
    expect(b.halfOpen).toBe(1);
    b.remove(fr);
    expect(b.halfOpen).toBe(0);
    expect(b.size).toBe(1);
  });

  it('replaces an entry of the same 4-tuple (onRemove called) and remove() is idempotent', () => {
    const a = new FlowTable(limits);
    const fa = handshake(a);
    const b = new FlowTable(limits);
    const removed: Flow[] = [];
    b.onRemove = (f) => removed.push(f);
    const r = b.lookup(S, C, TCP_SYN, 9, 0); // the same 4-tuple, opened the other way
    if (r.kind !== 'flow') throw new Error('no flow');
    const fb = b.importFlow(viaJson(a.exportFlow(fa)), 3)!;
    expect(removed).toEqual([r.flow]);
    expect(b.size).toBe(1);
    expect(b.halfOpen).toBe(0);
    expect(fb.lastMs).toBe(3);
    b.remove(fb);
    b.remove(fb);
    b.remove(r.flow);
    expect(removed).toEqual([r.flow, fb]);
    expect(b.size).toBe(0);
    expect(b.peek(C, S)).toBeUndefined();
  });

  it('refuses an import when the table is full, counted', () => {
    const a = new FlowTable(limits);
    const f = handshake(a);
    const b = new FlowTable(limits);
    for (let i = 0; i < 3; i++) handshake(b, { ...C, port: 1000 + i });
    expect(b.importFlow(viaJson(a.exportFlow(f)), 0)).toBeNull();
    expect(b.counters.importRefused).toBe(1);
    expect(b.size).toBe(3);
    // Replacing an entry of the same 4-tuple does not grow the table: accepted.
    const j = viaJson(a.exportFlow(f));
    j.client = { ...C, port: 1001 };
    expect(b.importFlow(j, 0)).not.toBeNull();
    expect(b.size).toBe(3);
  });

  it('throws on malformed snapshots', () => {
    const a = new FlowTable(limits);
    const good = viaJson(a.exportFlow(handshake(a)));
    const b = new FlowTable(limits);
    const bad: unknown[] = [
      null,
      42,
      { ...good, v: 2 },
      { ...good, client: { addr: -1, port: 1 } },
      { ...good, server: { addr: 1, port: 70000 } },
      { ...good, state: 'open' },
      { ...good, midstream: 'no' },
      { ...good, halves: [good.halves[0]] },
      { ...good, halves: [good.halves[0], { ...good.halves[1], wscale: 15 }] },
      { ...good, halves: [{ ...good.halves[0], isn: 2 ** 32 }, good.halves[1]] },
      { ...good, halves: [{ ...good.halves[0], mss: 'x' }, good.halves[1]] },
      { ...good, seen: [true] },
      { ...good, confirmed: 1 },
      { ...good, lastMs: 'now' },
    ];
    for (const j of bad) expect(() => b.importFlow(j as FlowJson, 0)).toThrow(/^flow: bad snapshot \(/);
    expect(b.size).toBe(0);
    expect(b.importFlow(good, 0)).not.toBeNull();
  });

  it('iterates every flow, also when 4-tuples share a hash bucket, and expires while iterating', () => {
    const t = new FlowTable({ maxConnections: 5000, idleTimeoutMs: 100, closingTimeoutMs: 100 });
    for (let i = 0; i < 4000; i++) {
      const r = t.lookup({ addr: 0x0a000000 + i, port: 1024 + (i % 50) }, S, TCP_SYN, i, 0);
      expect(r.kind).toBe('flow');
    }
    expect(t.size).toBe(4000);
    expect([...t.values()].length).toBe(4000);
    for (let i = 0; i < 4000; i++) expect(t.peek(S, { addr: 0x0a000000 + i, port: 1024 + (i % 50) })).toBeDefined();
    expect(t.expire(1000)).toBe(4000);
    expect(t.size).toBe(0);
    expect(t.halfOpen).toBe(0);

    // Two 4-tuples with the same hash (found by search): one bucket, both found, removed apart.
    const seen = new Map<number, Endpoint>();
    let pair: [Endpoint, Endpoint] | undefined;
    for (let i = 0; pair === undefined && i < 1 << 22; i++) {
      const c = { addr: 0x0b000000 + (i >>> 10), port: 1024 + (i & 1023) };
      const h = new FlowClass(c, S, false, 0).hash();
      const prev = seen.get(h);
      if (prev) pair = [prev, c];
      else seen.set(h, c);
    }
    if (!pair) throw new Error('no collision found');
    const [c1, c2] = pair;
    const r1 = t.lookup(c1, S, TCP_SYN, 1, 0);
    const r2 = t.lookup(S, c2, TCP_SYN, 2, 0);
    const r3 = t.lookup({ addr: 1, port: 1 }, S, TCP_SYN, 3, 0);
    if (r1.kind !== 'flow' || r2.kind !== 'flow' || r3.kind !== 'flow') throw new Error('no flow');
    expect(r1.flow).not.toBe(r2.flow);
    expect(t.peek(S, c1)).toBe(r1.flow);
    expect(t.peek(c2, S)).toBe(r2.flow);
    expect(new Set(t.values())).toEqual(new Set([r1.flow, r2.flow, r3.flow]));
    const again = t.lookup(c2, S, TCP_ACK, 9, 1);
    expect(again.kind === 'flow' && again.flow).toBe(r2.flow);
    t.remove(r1.flow);
    expect(t.peek(c1, S)).toBeUndefined();
    expect(t.peek(c2, S)).toBe(r2.flow);
    expect(t.size).toBe(2);
    expect(t.expire(1000)).toBe(2);
    expect(t.size).toBe(0);
  });

  it('numbers reused 4-tuples as before (#1, #2)', () => {
    const t = new FlowTable(limits);
    const f = handshake(t);
    t.track(f, 0, TCP_RST, 0, undefined, 1);
    const g = handshake(t, C, S, 5, 6, 2);
    expect(g).not.toBe(f);
    expect(g.id).toBe('192.168.0.1.40000-10.0.0.2.80#1');
    t.track(g, 1, TCP_RST, 0, undefined, 3);
    expect(handshake(t, C, S, 7, 8, 4).id).toBe('192.168.0.1.40000-10.0.0.2.80#2');
  });
});
