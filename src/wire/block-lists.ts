/**
 * Indices (of rules, of NAT mappings) filed under address blocks: per family, per prefix length,
 * by network; `lists` gives the lists of the blocks holding an address, one map lookup per prefix
 * length present. Indices are added in ascending order, so each list is ascending. With these a
 * lookup costs what the prefix lengths in use cost, not what the number of blocks does.
 */
import { isCidr6, prefixMask, type IpBlock } from './cidr.js';
import type { IpAddr } from './ip.js';

export class BlockLists {
  private readonly v4 = new Map<number, Map<number, number[]>>();
  private readonly v6 = new Map<number, Map<string, number[]>>();
  /** The prefix lengths present (each is one map lookup per address). */
  private lens4: number[] = [];
  private lens6: number[] = [];

  add(b: IpBlock, i: number): void {
    if (isCidr6(b)) {
      let m = this.v6.get(b.prefix);
      if (m === undefined) {
        this.v6.set(b.prefix, (m = new Map()));
        this.lens6 = [...this.v6.keys()];
      }
      push(m, key6(bytesKey(b.bytes), b.prefix), i);
    } else {
      let m = this.v4.get(b.prefix);
      if (m === undefined) {
        this.v4.set(b.prefix, (m = new Map()));
        this.lens4 = [...this.v4.keys()];
      }
      push(m, b.addr, i);
    }
  }

  /**
   * The lowest index filed under a block holding `a` (that `accept` takes, when given), or -1:
   * what trying the items in order finds (each list is ascending), without gathering the lists.
   */
  first(a: IpAddr, accept?: (i: number) => boolean): number {
    let best = -1;
    if (typeof a === 'number') for (const len of this.lens4) best = lower(this.v4.get(len)!.get((a & prefixMask(len)) >>> 0), best, accept);
    else for (const len of this.lens6) best = lower(this.v6.get(len)!.get(key6(a, len)), best, accept);
    return best;
  }

  /** The lists of the blocks holding `a`. */
  lists(a: IpAddr, out: (readonly number[])[]): void {
    if (typeof a === 'number') {
      for (const len of this.lens4) {
        const l = this.v4.get(len)!.get((a & prefixMask(len)) >>> 0);
        if (l !== undefined) out.push(l);
      }
    } else {
      for (const len of this.lens6) {
        const l = this.v6.get(len)!.get(key6(a, len));
        if (l !== undefined) out.push(l);
      }
    }
  }
}

/** An IPv6 address key (wire/ip.ts: eight 16-bit groups as chars) cut to its first `len` bits. */
function key6(a: string, len: number): string {
  const full = len >>> 4;
  const rest = len & 15;
  const head = a.slice(0, full);
  return rest === 0 ? head : head + String.fromCharCode(a.charCodeAt(full) & ((0xffff << (16 - rest)) & 0xffff));
}

function bytesKey(b: Uint8Array): string {
  let s = '';
  for (let g = 0; g < 8; g++) s += String.fromCharCode((b[2 * g]! << 8) | b[2 * g + 1]!);
  return s;
}


function push<K>(m: Map<K, number[]>, k: K, i: number): void {
  const l = m.get(k);
  if (l === undefined) m.set(k, [i]);
  else if (l[l.length - 1] !== i) l.push(i);
}

/** The first index of the ascending list `l` below `best` (-1: none yet) that `accept` takes, else `best`. */
function lower(l: readonly number[] | undefined, best: number, accept: ((i: number) => boolean) | undefined): number {
  if (l === undefined) return best;
  for (const i of l) {
    if (best >= 0 && i >= best) return best;
    if (accept === undefined || accept(i)) return i;
  }
  return best;
}
