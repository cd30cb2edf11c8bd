/**
 * The NAT's lookups through its indexes (wire/block-lists.ts) give what trying every mapping or
 * rule in order gives: random 1:1 mapping sets and masquerade rules (prefixes /8 to /32, both
 * sides, shared addresses inside their own sources) against addresses inside and outside their
 * blocks; and a packet costs lookups per prefix length, not per mapping.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { cidrContains, type Cidr } from '../../src/wire/cidr.js';
import { NatTable, natConfig, natConfigProblems, type Masquerade, type OneToOne } from '../../src/nat/nat.js';

const block = (a: number, prefix: number): Cidr => {
  const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
  return { addr: (a & mask) >>> 0, prefix, mask };
};

const mapAddr = (a: number, from: Cidr, to: Cidr): number => ((to.addr | (a & ~from.mask)) >>> 0);

/** In list order, as the NAT did before its index. */
function reference(maps: readonly OneToOne[], from: 0 | 1, src: number, dst: number): [number, number] {
  let s = src;
  let d = dst;
  for (const m of maps) {
    if (m.side === from && s === src && cidrContains(m.real, src)) s = mapAddr(src, m.real, m.mapped);
    if (m.side !== from && d === dst && cidrContains(m.mapped, dst)) d = mapAddr(dst, m.mapped, m.real);
  }
  return [s, d];
}

describe('NAT 1:1 lookups through the index', () => {
  it('translate as the in-order scan does, and find the first mapping naming an address', () => {
    const mapping = fc.record({ side: fc.constantFrom(0 as const, 1 as const), r: fc.nat(), m: fc.nat(), prefix: fc.integer({ min: 8, max: 32 }) });
    fc.assert(
      fc.property(fc.array(mapping, { maxLength: 12 }), fc.array(fc.tuple(fc.nat(), fc.nat(), fc.nat(31), fc.constantFrom(0 as const, 1 as const)), { minLength: 1, maxLength: 30 }), (ms, probes) => {
        const oneToOne: OneToOne[] = ms.map((x) => ({ side: x.side, real: block(x.r, x.prefix), mapped: block(x.m, x.prefix) }));
        const cfg = natConfig({ oneToOne });
        if (natConfigProblems(cfg).length > 0) return; // overlapping mappings are refused at load
        const nat = new NatTable(cfg);
        for (const [i, j, bits, from] of probes) {
          // Addresses inside some mapping's blocks (and random ones).
          const pick = (k: number, real: boolean): number => {
            if (oneToOne.length === 0 || k % 3 === 0) return k >>> 0;
            const m = oneToOne[k % oneToOne.length]!;
            const b = real ? m.real : m.mapped;
            return (b.addr | ((k >>> bits) & ~b.mask)) >>> 0;
          };
          const src = pick(i, true);
          const dst = pick(j, false);
          expect(nat.oneToOneAddrs(from, src, dst)).toEqual(reference(oneToOne, from, src, dst));
          expect(nat.realMapping(from, src)).toBe(oneToOne.findIndex((m) => m.side === from && cidrContains(m.real, src)));
          expect(nat.mappedMapping(from, dst)).toBe(oneToOne.findIndex((m) => m.side === from && cidrContains(m.mapped, dst)));
        }
      }),
      { seed: 31337, numRuns: 400 },
    );
  });

  it('2,000 mappings: a lookup reads no mapping it does not return', () => {
    const oneToOne: OneToOne[] = Array.from({ length: 2000 }, (_, i) => ({ side: 0, real: block((0x0a000000 + i) >>> 0, 32), mapped: block((0x0b000000 + i) >>> 0, 32) }));
    let reads = 0;
    const counted = oneToOne.map((m) => ({ side: m.side, get real() { reads++; return m.real; }, get mapped() { reads++; return m.mapped; } }));
    const nat = new NatTable(natConfig({ oneToOne: counted as OneToOne[] }));
    reads = 0;
    expect(nat.oneToOneAddrs(0, 0x0a000063, 0x08080808)).toEqual([0x0b000063, 0x08080808]);
    expect(nat.oneToOneAddrs(1, 0x08080808, 0x0b000063)).toEqual([0x08080808, 0x0a000063]);
    expect(reads).toBeLessThanOrEqual(4);
  });

  it('masquerade: the first rule whose sources hold an address, and the first that hides it (not its shared address), as in order', () => {
    const rule = fc.record({ side: fc.constantFrom(0 as const, 1 as const), a: fc.nat(), prefixes: fc.array(fc.tuple(fc.nat(), fc.integer({ min: 8, max: 32 })), { minLength: 1, maxLength: 3 }), own: fc.boolean(), lo: fc.integer({ min: 1024, max: 60000 }) });
    fc.assert(
      fc.property(fc.array(rule, { maxLength: 8 }), fc.array(fc.tuple(fc.nat(), fc.nat(31), fc.constantFrom(0 as const, 1 as const)), { minLength: 1, maxLength: 30 }), (rs, probes) => {
        const masquerade: Masquerade[] = rs.map((r, i) => {
          const sources = r.prefixes.map(([x, p]) => block(x, p));
          // Sometimes the shared address lies inside the rule's own sources.
          const address = r.own ? (sources[0]!.addr | 1) >>> 0 : (0xc0000000 + i) >>> 0;
          return { side: r.side, sources, address, ports: { lo: r.lo + i * 10, hi: r.lo + i * 10 + 5 }, icmpIds: { lo: 100 + i * 10, hi: 105 + i * 10 }, preservePort: false };
        });
        const cfg = natConfig({ masquerade });
        if (natConfigProblems(cfg).length > 0) return;
        const nat = new NatTable(cfg);
        for (const [k, bits, side] of probes) {
          const a = masquerade.length === 0 || k % 3 === 0 ? k >>> 0 : k % 5 === 1 ? masquerade[k % masquerade.length]!.address : (() => {
            const r = masquerade[k % masquerade.length]!;
            const b = r.sources[k % r.sources.length]!;
            return (b.addr | ((k >>> bits) & ~b.mask)) >>> 0;
          })();
          expect(nat.masqueradeOf(side, a)).toBe(masquerade.findIndex((m) => m.side === side && m.sources.some((c) => cidrContains(c, a))));
          expect(nat.hiderOf(side, a)).toBe(masquerade.findIndex((m) => m.side === side && m.address !== a && m.sources.some((c) => cidrContains(c, a))));
        }
      }),
      { seed: 4711, numRuns: 400 },
    );
  });
});
