import { describe, expect, it } from 'vitest';
import { SpareStore, tupleKey } from '../../src/cluster/spares.js';
import type { ClusterSnapshot } from '../../src/cluster/node.js';

const limits = { maxSpares: 2, recentMs: 1000, recentBytesPerConn: 300, recentBytesTotal: 500 };
const newCounters = () => ({ sparesKept: 0, sparesRefused: 0, recentKept: 0, recentDropped: 0 });
const raw0 = { src: 1, sport: 1000, dst: 2, dport: 80 };
const raw1 = { src: 3, sport: 2000, dst: 2, dport: 80 };

function snap(owner: string, seq: number, final: string | null = null): ClusterSnapshot {
  return { v: 1, owner, ownerEpoch: 1, seq, ms: 100 * seq, host: 1, raw: [raw0, raw1], final, state: {} as ClusterSnapshot['state'] };
}

describe('SpareStore', () => {
  it('finds a spare by key and by the tuple of either side; forgets both on drop', () => {
    const st = new SpareStore(limits, newCounters());
    const sp = st.keep('k', snap('a', 1))!;
    expect(st.get('k')).toBe(sp);
    expect(st.byTuple(tupleKey(0, raw0))).toBe(sp);
    expect(st.byTuple(tupleKey(1, raw1))).toBe(sp);
    expect(st.byTuple(tupleKey(1, raw0))).toBeUndefined();
    expect(st.drop('k')).toBe(sp);
    expect(st.size).toBe(0);
    expect(st.byTuple(tupleKey(0, raw0))).toBeUndefined();
    expect(st.drop('k')).toBeUndefined();
  });

  it('keeps the newest snapshot of an owner; a final state always wins', () => {
    const st = new SpareStore(limits, newCounters());
    st.keep('k', snap('a', 5));
    expect(st.keep('k', snap('a', 4))).toBeNull();
    expect(st.get('k')!.snap.seq).toBe(5);
    expect(st.keep('k', snap('a', 3, 'b'))!.snap.final).toBe('b');
    // Another owner's numbering is its own.
    expect(st.keep('k', snap('c', 1))!.snap.owner).toBe('c');
  });

  it('refuses spares past maxSpares, counted', () => {
    const c = newCounters();
    const st = new SpareStore(limits, c);
    st.keep('a', snap('x', 1));
    st.keep('b', snap('x', 1));
    expect(st.keep('c', snap('x', 1))).toBeNull();
    expect(c).toMatchObject({ sparesKept: 2, sparesRefused: 1 });
  });

  it('remembers the highest ACK per side, wrap-safe', () => {
    const st = new SpareStore(limits, newCounters());
    const sp = st.keep('k', snap('a', 1))!;
    const f = new Uint8Array(10);
    st.observe(sp, 0, 0xffff_fff0, f, 0);
    st.observe(sp, 0, 5, f, 0); // past the wrap: higher
    st.observe(sp, 0, 0xffff_fff8, f, 0); // older
    st.observe(sp, 1, 7, f, 0);
    expect(sp.acks).toEqual([5, 7]);
  });

  it('bounds the frames kept for replay by age, per connection and in total', () => {
    const c = newCounters();
    const st = new SpareStore(limits, c);
    const a = st.keep('a', snap('x', 1))!;
    const b = st.keep('b', { ...snap('x', 1), raw: [null, null] })!;
    st.observe(a, 0, 1, new Uint8Array(200), 0);
    st.observe(a, 0, 1, new Uint8Array(200), 10); // over 300 per connection: the first goes
    expect(a.recent.map((r) => r.ms)).toEqual([10]);
    st.observe(a, 0, 1, new Uint8Array(50), 2000); // the 10 ms one is too old now
    expect(a.recent.map((r) => r.ms)).toEqual([2000]);
    st.observe(b, 0, 1, new Uint8Array(250), 2000);
    st.observe(a, 0, 1, new Uint8Array(250), 2000); // 50 + 250 + 250 > 500 in total: not kept
    expect(c.recentDropped).toBe(1);
    expect(a.recent.length).toBe(1);
    st.observe(a, 0, 1, new Uint8Array(400), 2000); // larger than a connection may keep
    expect(c.recentDropped).toBe(2);
    // Dropping a spare gives its bytes back to the total.
    st.drop('b');
    st.observe(a, 0, 1, new Uint8Array(250), 2000);
    expect(a.recent.map((r) => r.frame.length)).toEqual([250]);
    expect(c.recentKept).toBe(5);
  });
});
