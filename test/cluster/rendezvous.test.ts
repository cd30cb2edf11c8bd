/**
 * Rendezvous hashing (src/cluster/rendezvous.ts), the cluster's ownership rule: every node must
 * compute the same owner from the same membership. Shows that ownerOf is deterministic and
 * independent of the order of the node list, that 3 nodes share 3000 keys evenly (25–42 % each),
 * that removing a node moves only that node's keys and adding one moves keys only *to* the new
 * node, and that weight() / stringKey() give pinned values: the hash is part of the wire contract
 * between nodes (a mixed-version cluster must agree), so any change to it must fail here. The
 * pinned values were checked against an independent implementation (FNV-1a + fmix32 in Python).
 */
import { describe, expect, it } from 'vitest';
import { ownerOf, stringKey, weight } from '../../src/cluster/rendezvous.js';
import { mulberry32 } from '../../src/util/prng.js';

/** 3000 IPv4-like keys: a /20 of consecutive addresses plus random ones. */
function keys(): number[] {
  const out: number[] = [];
  for (let i = 0; i < 1500; i++) out.push((0x0ac80000 + i) >>> 0);
  const r = mulberry32(42);
  for (let i = 0; i < 1500; i++) out.push(Math.floor(r() * 0x100000000) >>> 0);
  return out;
}

const KEYS = keys();

function owners(nodes: string[]): Map<number, string> {
  const m = new Map<number, string>();
  for (const k of KEYS) m.set(k, ownerOf(k, nodes)!);
  return m;
}

describe('rendezvous hashing', () => {
  it('is deterministic and independent of the order of the nodes', () => {
    const perms = [
      ['a', 'b', 'c'],
      ['c', 'b', 'a'],
      ['b', 'a', 'c'],
      ['c', 'a', 'b'],
    ];
    const ref = owners(perms[0]!);
    for (const p of perms) {
      const o = owners(p);
      for (const k of KEYS) expect(o.get(k)).toBe(ref.get(k));
    }
    // Same call twice, same answer; no nodes, no owner; one node owns everything.
    for (const k of KEYS.slice(0, 50)) expect(ownerOf(k, ['a', 'b', 'c'])).toBe(ownerOf(k, ['a', 'b', 'c']));
    expect(ownerOf(1, [])).toBeUndefined();
    for (const k of KEYS.slice(0, 50)) expect(ownerOf(k, ['solo'])).toBe('solo');
  });

  it('spreads 3000 keys over 3 nodes evenly (each 25–42 %)', () => {
    const o = owners(['a', 'b', 'c']);
    const count = new Map<string, number>();
    for (const v of o.values()) count.set(v, (count.get(v) ?? 0) + 1);
    expect([...count.keys()].sort()).toEqual(['a', 'b', 'c']);
    for (const n of count.values()) {
      expect(n / KEYS.length).toBeGreaterThanOrEqual(0.25);
      expect(n / KEYS.length).toBeLessThanOrEqual(0.42);
    }
    // Also with realistic node ids.
    const o2 = owners(['node-1', 'node-2', 'node-3']);
    const c2 = new Map<string, number>();
    for (const v of o2.values()) c2.set(v, (c2.get(v) ?? 0) + 1);
    for (const n of c2.values()) {
      expect(n / KEYS.length).toBeGreaterThanOrEqual(0.25);
      expect(n / KEYS.length).toBeLessThanOrEqual(0.42);
    }
  });

  it('removing a node moves only that node\'s keys', () => {
    const before = owners(['a', 'b', 'c']);
    const after = owners(['a', 'c']);
    let moved = 0;
    for (const k of KEYS) {
      if (before.get(k) !== 'b') expect(after.get(k)).toBe(before.get(k));
      else {
        expect(after.get(k)).not.toBe('b');
        moved++;
      }
    }
    expect(moved).toBeGreaterThan(0);
  });

  it('adding a 4th node moves keys only to the new node (about a quarter)', () => {
    const before = owners(['a', 'b', 'c']);
    const after = owners(['a', 'b', 'c', 'd']);
    let moved = 0;
    for (const k of KEYS) {
      if (after.get(k) !== before.get(k)) {
        expect(after.get(k)).toBe('d');
        moved++;
      }
    }
    expect(moved / KEYS.length).toBeGreaterThan(0.15);
    expect(moved / KEYS.length).toBeLessThan(0.35);
  });

  it('weight() gives pinned values (wire contract between versions)', () => {
    expect(weight('a', 0)).toBe(642274063);
    expect(weight('node-1', 0x0ac80001)).toBe(1437983698);
    expect(weight('b', 0xffffffff)).toBe(2431443924);
    // Unsigned 32-bit results.
    for (const k of KEYS.slice(0, 100)) {
      const w = weight('x', k);
      expect(Number.isInteger(w) && w >= 0 && w <= 0xffffffff).toBe(true);
    }
  });

  it('stringKey() gives pinned values (the non-TCP forwarder role is chosen by it)', () => {
    expect(stringKey('non-tcp')).toBe(1261441978);
    expect(stringKey('')).toBe(2872998923);
    expect(stringKey('abc')).toBe(482950588);
    expect(stringKey('non-tcp')).toBe(stringKey('non-tcp'));
  });
});
