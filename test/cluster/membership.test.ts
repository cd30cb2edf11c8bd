/** cluster/membership.ts: who is alive, the view, and who owns a host — pure, time passed in. */
import { describe, expect, it } from 'vitest';
import { Membership, type NodeInfo } from '../../src/cluster/membership.js';
import { ownerOf } from '../../src/cluster/rendezvous.js';

const info = (id: string, o: Partial<NodeInfo> = {}): NodeInfo => ({ id, lastMs: 0, startedMs: 1, draining: false, ready: true, owned: 0, spares: 0, lagMs: 0, ...o });

describe('cluster membership', () => {
  it('the view holds ready, non-draining nodes and this node only when it may own connections', () => {
    const m = new Membership('b');
    m.heard(info('a'), 0);
    m.heard(info('c', { ready: false }), 0);
    m.heard(info('d', { draining: true }), 0);
    // Its own heartbeat says ready, but it is not yet: it is left out.
    m.heard(info('b'), 0);
    expect(m.recompute(false, false)).toBe(true);
    expect(m.view).toEqual(['a']);
    expect(m.recompute(true, false)).toBe(true);
    expect(m.view).toEqual(['a', 'b']);
    expect(m.recompute(true, false)).toBe(false);
    expect(m.recompute(true, true)).toBe(true);
    expect(m.view).toEqual(['a']);
  });

  it('a heartbeat that changes readiness or draining is a change; a repeated one is not', () => {
    const m = new Membership('a');
    expect(m.heard(info('x', { ready: false }), 0)).toBe(true);
    expect(m.heard(info('x', { ready: false }), 50)).toBe(false);
    expect(m.heard(info('x'), 100)).toBe(true);
    expect(m.heard(info('x', { draining: true }), 150)).toBe(true);
  });

  it('silent nodes are probed only when their heartbeat connection is on this node\'s NATS server; one known dead is removed unless heard since the check began', () => {
    const m = new Membership('a');
    m.heard(info('a', { natsServer: 'S1' }), 0);
    m.heard(info('b', { natsServer: 'S1' }), 0);
    m.heard(info('c', { natsServer: 'S2' }), 0);
    m.heard(info('d'), 0);
    m.heard(info('e', { natsServer: 'S1' }), 90);
    expect(m.silent(100, 50, 'S1')).toEqual(['b']);
    expect(m.silent(100, 50, '')).toEqual([]);
    // e was heard after the check of t=80 began: not dead.
    expect(m.declareDead('e', 80, 100)).toBeNull();
    expect(m.declareDead('b', 100, 120)).toBe(120);
    expect(m.declareDead('a', 100, 120)).toBeNull();
    expect([...m.members.keys()].sort()).toEqual(['a', 'c', 'd', 'e']);
    expect(m.lastHeardOf('b')).toBe(0);
  });

  it('a node silent for more than deadMs is dead, remembered with when it was last heard; this node never is', () => {
    const m = new Membership('a');
    m.heard(info('a'), 0);
    m.heard(info('b'), 100);
    m.heard(info('c'), 350);
    expect(m.expire(500, 400)).toEqual([]);
    expect(m.expire(501, 400)).toEqual([{ id: 'b', startedMs: 1, silentMs: 401 }]);
    expect([...m.members.keys()].sort()).toEqual(['a', 'c']);
    expect(m.lastHeardOf('b')).toBe(100);
    expect(m.lastHeardOf('c')).toBeUndefined();
    // After this node's own sync outage, everyone gets a fresh deadline.
    m.freshen(2000);
    expect(m.expire(2300, 400)).toEqual([]);
  });

  it('alive: the same node id in another incarnation is not the one that published', () => {
    const m = new Membership('a');
    m.heard(info('b', { startedMs: 5 }), 0);
    expect(m.alive('b', 5)).toBe(true);
    expect(m.alive('b', 4)).toBe(false);
    expect(m.alive('z', 5)).toBe(false);
  });

  it('an incarnation found dead is dead for good: its late heartbeats (a partition backlog) are ignored; the node comes back as a new incarnation', () => {
    const m = new Membership('a');
    m.heard(info('b', { startedMs: 5 }), 0);
    expect(m.expire(500, 400).map((d) => d.id)).toEqual(['b']);
    // The backlog: heartbeats b sent before it lost its lease, delivered after the partition healed.
    expect(m.heard(info('b', { startedMs: 5 }), 600)).toBeNull();
    expect(m.members.has('b')).toBe(false);
    // b's next incarnation is a member again.
    expect(m.heard(info('b', { startedMs: 700, ready: false }), 710)).toBe(true);
    expect(m.alive('b', 700)).toBe(true);
    expect(m.alive('b', 5)).toBe(false);
    // An incarnation older than the member's (a backlog overtaken by its successor) is dead too.
    expect(m.heard(info('b', { startedMs: 650 }), 720)).toBeNull();
    expect(m.alive('b', 700)).toBe(true);
    expect(m.heard(info('b', { startedMs: 650 }), 730)).toBeNull();
  });

  it('a heartbeat saying its lease is lost: that incarnation is dead at once; fenced heartbeats are never heard as alive', () => {
    const m = new Membership('a');
    m.heard(info('b', { startedMs: 5 }), 0);
    m.recompute(true, false);
    expect(m.view).toEqual(['a', 'b']);
    // Of another incarnation, or not fenced: nothing.
    expect(m.fenced(info('b', { startedMs: 4, fenced: true }), 50)).toBeNull();
    expect(m.fenced(info('b', { startedMs: 5 }), 50)).toBeNull();
    expect(m.fenced(info('b', { startedMs: 5, fenced: true }), 80)).toBe(80);
    expect(m.members.has('b')).toBe(false);
    expect(m.recompute(true, false)).toBe(true);
    expect(m.view).toEqual(['a']);
    expect(m.heard(info('b', { startedMs: 5, fenced: true }), 90)).toBeNull();
    expect(m.heard(info('c', { startedMs: 5, fenced: true }), 90)).toBeNull();
    expect(m.members.has('c')).toBe(false);
    // This node's own heartbeats never make it dead.
    m.heard(info('a', { startedMs: 9 }), 0);
    expect(m.fenced(info('a', { startedMs: 9, fenced: true }), 100)).toBeNull();
  });

  it('ownership follows rendezvous over the view, cached and recomputed on a view change; one node forwards non-TCP', () => {
    const m = new Membership('a');
    for (const id of ['a', 'b', 'c']) m.heard(info(id), 0);
    m.recompute(true, false);
    const hosts = Array.from({ length: 200 }, (_, i) => 0x0ac80000 + i);
    for (const h of hosts) expect(m.ownsHost(h)).toBe(ownerOf(h, ['a', 'b', 'c']) === 'a');
    expect(hosts.some((h) => m.ownsHost(h))).toBe(true);
    expect(hosts.every((h) => m.ownsHost(h))).toBe(false);
    m.expire(10_000, 400);
    m.recompute(true, false);
    expect(m.view).toEqual(['a']);
    for (const h of hosts) expect(m.ownsHost(h)).toBe(true);
    expect(m.nonTcpMine).toBe(true);
    expect(m.ownerOf(hosts[0]!)).toBe('a');
  });
});
