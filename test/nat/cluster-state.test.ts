/**
 * NAT state moving between cluster nodes (src/nat/nat.ts exportFor / importState / slice,
 * docs/ARCHITECTURE.md §5). Shows: a masquerade entry created by translate() on table A, exported by the
 * tuples its packets arrive with and carried as JSON, makes table B translate both directions
 * exactly as A does and keeps B from handing that port out again; expectations tagged with the
 * connection's flow id move with it (others stay) and are consumed on B by the data connection;
 * importing the same state twice changes nothing; malformed state throws a clear error; and a
 * `slice` ({index, count}) restricts allocation to ports p with p % count === index (with and
 * without preservePort, for expectData too), so nodes sharing one address never collide.
 */
import { describe, expect, it } from 'vitest';
import { parseCidr, type Cidr } from '../../src/wire/cidr.js';
import { parseIpv4 } from '../../src/wire/ipv4.js';
import { NatTable, natConfig, type NatConfig, type NatFlowState, type NatPacket, type Tuple } from '../../src/nat/nat.js';

const ip = (s: string): number => parseIpv4(s)!;
const cidr = (s: string): Cidr => parseCidr(s) as Cidr;
const pkt = (from: 0 | 1, src: string, sport: number, dst: string, dport: number, tcpFlags = 0x10): NatPacket => ({
  from, proto: 'tcp', src: ip(src), sport, dst: ip(dst), dport, tcpFlags,
});
const tup = (src: string, sport: number, dst: string, dport: number): Tuple => ({ proto: 'tcp', src: ip(src), sport, dst: ip(dst), dport });

const MASQ_ADDR = '10.200.0.100';
const cfg = (ports = { lo: 20000, hi: 29999 }, preservePort = true): NatConfig =>
  natConfig({
    masquerade: [{ side: 0, sources: [cidr('10.200.0.0/24')], address: ip(MASQ_ADDR), ports, preservePort }],
  });

/** Carried like the cluster carries it: JSON text. */
const wire = (s: NatFlowState): NatFlowState => JSON.parse(JSON.stringify(s)) as NatFlowState;

const FLOW = '10.200.0.1.40000-10.200.0.2.21';
const T0 = 1_000_000;

/** Table A with one FTP control connection masqueraded and its PORT expectation registered. */
function tableA() {
  const a = new NatTable(cfg());
  const out = a.translate(pkt(0, '10.200.0.1', 40000, '10.200.0.2', 21, 0x02), T0);
  expect(out.kind).toBe('translate');
  const fwd = (out as { tuple: Tuple }).tuple;
  expect(fwd.src).toBe(ip(MASQ_ADDR));
  const port = fwd.sport;
  // PORT 10.200.0.1:5001 announced by the client: the server's data connection is expected.
  const x = a.expectData(0, 'tcp', ip('10.200.0.1'), 5001, ip('10.200.0.2'), T0, FLOW);
  expect(x).toBeTruthy();
  // Another connection's expectation: must not move with FLOW.
  const y = a.expectData(0, 'tcp', ip('10.200.0.3'), 5002, ip('10.200.0.2'), T0, 'other-flow');
  expect(y).toBeTruthy();
  const raw: [Tuple, Tuple] = [tup('10.200.0.1', 40000, '10.200.0.2', 21), tup('10.200.0.2', 21, MASQ_ADDR, port)];
  return { a, port, data: x!, other: y!, raw };
}

describe('NatTable.exportFor / importState', () => {
  it('B translates the moved masquerade entry like A, both directions, and keeps its port', () => {
    const { a, port, raw } = tableA();
    const st = wire(a.exportFor(raw, FLOW));
    expect(st.entries).toHaveLength(1);
    // Either tuple alone finds the entry.
    expect(a.exportFor([raw[0], undefined], FLOW).entries).toHaveLength(1);
    expect(a.exportFor([undefined, raw[1]], FLOW).entries).toHaveLength(1);

    const b = new NatTable(cfg());
    b.importState(st);
    const reply = pkt(1, '10.200.0.2', 21, MASQ_ADDR, port);
    const ra = a.translate(reply, T0 + 10);
    const rb = b.translate(reply, T0 + 10);
    expect(ra.kind).toBe('translate');
    expect((rb as { tuple: Tuple }).tuple).toEqual((ra as { tuple: Tuple }).tuple);
    expect((rb as { tuple: Tuple }).tuple).toEqual(tup('10.200.0.2', 21, '10.200.0.1', 40000));
    const fwd = pkt(0, '10.200.0.1', 40000, '10.200.0.2', 21);
    expect((b.translate(fwd, T0 + 20) as { tuple: Tuple }).tuple).toEqual((a.translate(fwd, T0 + 20) as { tuple: Tuple }).tuple);
    expect(b.counters.entriesCreated).toBe(0); // found, not created

    // B never hands `port` out again: another host asking for it by port preservation...
    const other = b.translate(pkt(0, '10.200.0.7', port, '10.200.0.2', 80, 0x02), T0 + 30);
    expect(other.kind).toBe('translate');
    expect((other as { tuple: Tuple }).tuple.sport).not.toBe(port);
    // ...nor for an expectation.
    const e = b.expectData(0, 'tcp', ip('10.200.0.8'), port, undefined, T0 + 30, 'x');
    expect(e).toBeTruthy();
    expect(e!.port).not.toBe(port);
    // ...nor when the range holds only that port.
    const tiny = new NatTable(cfg({ lo: port, hi: port }));
    tiny.importState(st);
    expect(tiny.translate(pkt(0, '10.200.0.9', 1234, '10.200.0.2', 80, 0x02), T0)).toEqual({ kind: 'drop', reason: 'ports-exhausted' });
  });

  it('the connection\'s own translation wins over an entry B made for the same packets before the state arrived', () => {
    const { a, port, raw } = tableA();
    const st = wire(a.exportFor(raw, FLOW));
    // B (another port slice) translated a frame of the connection first: a port the server never saw.
    const b = new NatTable(cfg());
    b.slice = { index: 1, count: 2 };
    const own = b.translate(pkt(0, '10.200.0.1', 40000, '10.200.0.2', 21), T0 + 5);
    const wrong = (own as { tuple: Tuple }).tuple.sport;
    expect(wrong).not.toBe(port);
    b.importState(st);
    expect(b.counters.importReplaced).toBe(1);
    expect(b.size.entries).toBe(1);
    const fwd = pkt(0, '10.200.0.1', 40000, '10.200.0.2', 21);
    expect((b.translate(fwd, T0 + 20) as { tuple: Tuple }).tuple.sport).toBe(port);
    expect((b.translate(pkt(1, '10.200.0.2', 21, MASQ_ADDR, port), T0 + 21) as { tuple: Tuple }).tuple).toEqual(tup('10.200.0.2', 21, '10.200.0.1', 40000));
    // The same state again: the same entry, not replaced.
    b.importState(st);
    expect(b.counters.importReplaced).toBe(1);
    expect(b.size.entries).toBe(1);
  });

  it('expectations tagged with the flow id move with it and are consumed on B', () => {
    const { a, raw, data, other } = tableA();
    const st = wire(a.exportFor(raw, FLOW));
    expect(st.expectations).toHaveLength(1);
    expect(st.expectations[0]!.tag).toBe(FLOW);
    expect(st.expectations[0]!.dport).toBe(data.port);

    const b = new NatTable(cfg());
    b.importState(st);
    expect(b.size).toEqual({ entries: 1, expectations: 1 });
    // The other flow's expectation did not come along: its port connects to nothing on B.
    expect(b.translate(pkt(1, '10.200.0.2', 20, MASQ_ADDR, other.port, 0x02), T0 + 5)).toEqual({ kind: 'drop', reason: 'no-entry' });
    // The server's data connection (active FTP: from port 20) to the announced endpoint.
    const syn = pkt(1, '10.200.0.2', 20, MASQ_ADDR, data.port, 0x02);
    const v = b.translate(syn, T0 + 10);
    expect(v.kind).toBe('translate');
    expect((v as { tuple: Tuple }).tuple).toEqual(tup('10.200.0.2', 20, '10.200.0.1', 5001));
    expect(b.counters.expectationsConsumed).toBe(1);
    expect(b.size).toEqual({ entries: 2, expectations: 0 });
    // Same as A would have done.
    expect((a.translate(syn, T0 + 10) as { tuple: Tuple }).tuple).toEqual((v as { tuple: Tuple }).tuple);
    // The data connection's replies go back through the new entry on B.
    const back = b.translate(pkt(0, '10.200.0.1', 5001, '10.200.0.2', 20), T0 + 11);
    expect((back as { tuple: Tuple }).tuple).toEqual(tup(MASQ_ADDR, data.port, '10.200.0.2', 20));
  });

  it('importing the same state twice is idempotent', () => {
    const { a, port, raw, data } = tableA();
    const st = wire(a.exportFor(raw, FLOW));
    const b = new NatTable(cfg());
    b.importState(st);
    const once = { size: b.size, entries: b.entryList().map((e) => ({ ...e, id: 0 })), x: b.expectationList().map((x) => ({ ...x, id: 0 })) };
    b.importState(wire(st));
    expect(b.size).toEqual(once.size);
    expect(b.entryList().map((e) => ({ ...e, id: 0 }))).toEqual(once.entries);
    expect(b.expectationList().map((x) => ({ ...x, id: 0 }))).toEqual(once.x);
    // Still translates, and the expectation is consumed once only.
    expect((b.translate(pkt(1, '10.200.0.2', 21, MASQ_ADDR, port), T0) as { tuple: Tuple }).tuple).toEqual(tup('10.200.0.2', 21, '10.200.0.1', 40000));
    expect(b.translate(pkt(1, '10.200.0.2', 20, MASQ_ADDR, data.port, 0x02), T0).kind).toBe('translate');
    expect(b.counters.expectationsConsumed).toBe(1);
    expect(b.size.expectations).toBe(0);
    // An import of a newer copy extends the expiry, never shortens it.
    const later = wire(st);
    for (const e of later.entries) e.expiresAt += 1000;
    const before = Math.max(...b.entryList().map((e) => e.expiresAt));
    b.importState(later);
    expect(b.size.entries).toBe(2);
    expect(Math.max(...b.entryList().map((e) => e.expiresAt))).toBeGreaterThanOrEqual(before);
  });

  it('malformed state throws a clear error and changes nothing', () => {
    const { a, raw } = tableA();
    const st = wire(a.exportFor(raw, FLOW));
    const b = new NatTable(cfg());
    const bad: unknown[] = [
      { entries: 'x', expectations: [] },
      { entries: [], expectations: {} },
      { entries: [{ ...st.entries[0]!, init: 2 }], expectations: [] },
      { entries: [{ ...st.entries[0]!, orig: { ...st.entries[0]!.orig, proto: 'sctp' } }], expectations: [] },
      { entries: [{ ...st.entries[0]!, repl: { ...st.entries[0]!.repl, dport: 70000 } }], expectations: [] },
      { entries: [{ ...st.entries[0]!, expiresAt: 'soon' }], expectations: [] },
      { entries: [], expectations: [{ ...st.expectations[0]!, from: 'a' }] },
      { entries: [], expectations: [{ ...st.expectations[0]!, proto: 'gre' }] },
      { entries: [], expectations: [{ ...st.expectations[0]!, to: 'x' }] },
    ];
    for (const x of bad) {
      expect(() => b.importState(x as NatFlowState)).toThrow(/^nat: bad snapshot/);
      expect(b.size).toEqual({ entries: 0, expectations: 0 });
    }
  });
});

describe('NatTable.slice: each node allocates its own ports', () => {
  it('reserveExternal: ports other nodes\' connections use are never handed out, until released', () => {
    const t = new NatTable(cfg({ lo: 20000, hi: 20063 }, true));
    t.slice = { index: 1, count: 16 }; // 20001, 20017, 20033, 20049
    const masq = ip('10.200.0.100');
    t.reserveExternal('conn-a', [{ addr: masq, port: 20017 }, { addr: ip('10.200.1.2'), port: 80 }]);
    t.reserveExternal('conn-b', [{ addr: masq, port: 20033 }]);
    expect(t.externalReserved, 'only the masquerade address counts').toBe(2);
    const got: number[] = [];
    for (let i = 0; i < 2; i++) {
      // The first asks to keep 20017 (preservePort; in the slice, but reserved): refused like a used one.
      const v = t.translate(pkt(0, `10.200.0.${1 + i}`, i === 0 ? 20017 : 40000 + i, '10.200.1.2', 80, 0x02), T0);
      expect(v.kind).toBe('translate');
      got.push((v as { tuple: Tuple }).tuple.sport);
    }
    expect(got.sort()).toEqual([20001, 20049]);
    // The slice has 4 ports, 2 reserved, 2 now used: full.
    expect(t.translate(pkt(0, '10.200.0.9', 40009, '10.200.1.2', 80, 0x02), T0).kind).not.toBe('translate');
    t.releaseExternal('conn-b');
    const v = t.translate(pkt(0, '10.200.0.10', 40010, '10.200.1.2', 80, 0x02), T0);
    expect((v as { tuple: Tuple }).tuple.sport).toBe(20033);
    t.reserveExternal('conn-a', []); // replaced: 20017 free again
    expect(t.externalReserved).toBe(0);
  });

  it('seedCursors: a restarted node does not hand out its previous incarnation\'s ports again', () => {
    const first = (seed: number) => {
      const t = new NatTable(cfg({ lo: 20000, hi: 29999 }, false));
      t.slice = { index: 3, count: 16 };
      let x = seed;
      t.seedCursors(() => ((x = (x * 1103515245 + 12345) % 2147483648) / 2147483648));
      const v = t.translate(pkt(0, '10.200.0.1', 40000, '10.200.1.2', 80, 0x02), T0);
      const p = (v as { tuple: Tuple }).tuple.sport;
      expect(p % 16).toBe(3);
      expect(p).toBeGreaterThanOrEqual(20000);
      expect(p).toBeLessThanOrEqual(29999);
      return p;
    };
    const ports = new Set([1, 2, 3, 4, 5, 6, 7, 8].map(first));
    expect(ports.size, 'different incarnations start at different ports').toBeGreaterThan(4);
    // Unseeded (deterministic), two fresh tables give the same first port: what a restart did.
    const t1 = new NatTable(cfg({ lo: 20000, hi: 29999 }, false));
    const t2 = new NatTable(cfg({ lo: 20000, hi: 29999 }, false));
    const a = (t1.translate(pkt(0, '10.200.0.1', 40000, '10.200.1.2', 80, 0x02), T0) as { tuple: Tuple }).tuple.sport;
    const b = (t2.translate(pkt(0, '10.200.0.1', 40000, '10.200.1.2', 80, 0x02), T0) as { tuple: Tuple }).tuple.sport;
    expect(a).toBe(b);
  });

  it('allocates only p % count === index, with and without preservePort', () => {
    for (const preservePort of [true, false]) {
      const t = new NatTable(cfg({ lo: 20000, hi: 29999 }, preservePort));
      t.slice = { index: 1, count: 3 };
      let preserved = 0;
      for (let i = 0; i < 300; i++) {
        // Source ports inside the range (both in and out of the slice) and outside it.
        // (25000+: above where the cursor walks from 20000 in these 300 allocations.)
        const sport = i % 2 === 0 ? 25000 + i : 40000 + i;
        const v = t.translate(pkt(0, `10.200.0.${1 + (i % 50)}`, sport, '10.200.1.2', 80 + Math.floor(i / 50), 0x02), T0);
        expect(v.kind).toBe('translate');
        const p = (v as { tuple: Tuple }).tuple.sport;
        expect(p % 3).toBe(1);
        expect(p).toBeGreaterThanOrEqual(20000);
        expect(p).toBeLessThanOrEqual(29999);
        if (p === sport) preserved++;
      }
      // A port is preserved exactly when allowed: in range, in the slice, preservePort on.
      if (preservePort) expect(preserved).toBeGreaterThan(0);
      else expect(preserved).toBe(0);
      for (let i = 0; i < 20; i++) {
        const e = t.expectData(0, 'tcp', ip('10.200.0.1'), 20000 + i, undefined, T0, 'f');
        expect(e).toBeTruthy();
        expect(e!.port % 3).toBe(1);
      }
    }
  });

  it('preservePort keeps an in-slice port and moves an out-of-slice one', () => {
    const t = new NatTable(cfg());
    t.slice = { index: 0, count: 2 };
    const keep = t.translate(pkt(0, '10.200.0.1', 21000, '10.200.1.2', 80, 0x02), T0);
    expect((keep as { tuple: Tuple }).tuple.sport).toBe(21000);
    const move = t.translate(pkt(0, '10.200.0.1', 21001, '10.200.1.2', 80, 0x02), T0);
    const p = (move as { tuple: Tuple }).tuple.sport;
    expect(p).not.toBe(21001);
    expect(p % 2).toBe(0);
  });

  it('two tables with different slices never collide over 500 allocations', () => {
    const a = new NatTable(cfg({ lo: 20000, hi: 22999 }));
    const b = new NatTable(cfg({ lo: 20000, hi: 22999 }));
    a.slice = { index: 0, count: 2 };
    b.slice = { index: 1, count: 2 };
    const used = new Map<number, string>();
    for (let i = 0; i < 500; i++) {
      // Both nodes see the same kind of traffic, often the very same source ports.
      const sport = 20000 + (i % 700);
      for (const [name, t] of [['a', a], ['b', b]] as const) {
        const v = t.translate(pkt(0, `10.200.0.${1 + (i % 200)}`, sport, '10.200.1.2', 1000 + i, 0x02), T0);
        expect(v.kind).toBe('translate');
        const p = (v as { tuple: Tuple }).tuple.sport;
        expect(used.get(p), `port ${p} handed out by ${used.get(p)} and ${name}`).toBeUndefined();
        used.set(p, name);
      }
    }
    expect(used.size).toBe(1000);
    expect(a.size.entries).toBe(500);
    expect(b.size.entries).toBe(500);
  });
});
