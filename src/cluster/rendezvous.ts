/**
 * Rendezvous (highest-random-weight) hashing (Thaler & Ravishankar, 1998): the owner of a key is
 * the live node with the highest hash(node, key). Every node computes the same owner from the
 * same membership, and when a node leaves only its keys move (to the runner-up of each); when
 * one joins it takes about 1/n of every other node's keys.
 *
 * The hash is FNV-1a over the node id and the key with a murmur3 finalizer (fmix32): cheap,
 * well mixed in every bit, and stable across processes and versions (it is part of the cluster's
 * wire contract: all nodes must agree).
 */

function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** Weight of `node` for a numeric key (an IPv4 address). */
export function weight(node: string, key: number): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < node.length; i++) {
    h ^= node.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  for (let s = 0; s < 32; s += 8) {
    h ^= (key >>> s) & 0xff;
    h = Math.imul(h, 0x01000193);
  }
  return fmix32(h);
}

/** The owner of `key` among `nodes` (ties broken by the smaller id); undefined when none. */
export function ownerOf(key: number, nodes: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestW = -1;
  for (const n of nodes) {
    const w = weight(n, key);
    if (w > bestW || (w === bestW && best !== undefined && n < best)) {
      best = n;
      bestW = w;
    }
  }
  return best;
}

/**
 * The ownership key of a host address: an IPv4 address is its own key; an IPv6 address (its
 * key string, wire/ip.ts) hashes its eight 16-bit groups (stringKey over the code units).
 */
export function hostKey(a: number | string): number {
  return typeof a === 'number' ? a : stringKey(a);
}

/** A key for things that are not addresses (the non-TCP forwarder role). */
export function stringKey(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return fmix32(h);
}
