/**
 * Floods against the connection table (SYN, SYN/RST, ACK for random 4-tuples, stray SYNs on a
 * live connection) and against the stream engine's budgets, at frame level.
 */
import { describe, expect, it } from 'vitest';
import { DEFAULT_LIMITS } from '../../src/stream/limits.js';
import { tcpFrame } from '../../src/wire/tcp-frame.js';
import { mulberry32 } from '../../src/util/prng.js';
import { ACK, CLIENT, Harness, REGEX_CONFIG, RST, SERVER, SYN, fakeLogger, payloadOf } from './harness.js';

const LIMITS = { maxConnections: 2000, maxHalfOpen: 500, synTimeoutMs: 30_000 };

function synFlood(h: Harness, n: number, seed: number, withRst = false): void {
  const rnd = mulberry32(seed);
  for (let i = 0; i < n; i++) {
    const src = (0x0b000000 | Math.floor(rnd() * 0xffffff)) >>> 0;
    const srcPort = 1024 + Math.floor(rnd() * 60000);
    const seq = Math.floor(rnd() * 2 ** 32);
    h.send(tcpFrame({ src, dst: SERVER, srcPort, dstPort: 80, seq, flags: SYN }));
    if (withRst) h.send(tcpFrame({ src: SERVER, dst: src, srcPort: 80, dstPort: srcPort, seq: 0, ack: seq + 1, flags: RST | ACK }), 1);
  }
}

describe('SYN floods against the connection table', () => {
  it('caps embryonic entries: established connections keep working, new ones are refused (counted) until the flood entries time out', () => {
    const lines: Array<{ o: Record<string, unknown>; m: string }> = [];
    const h = new Harness(LIMITS, { log: fakeLogger(lines) });
    const live = h.connect(43000);
    synFlood(h, 20_000, 1);
    const st = h.gw.stats();
    expect(st.flows.halfOpen).toBe(500);
    expect(st.flows.active).toBe(501);
    expect(st.flows.halfOpenFull).toBe(20_000 - 500);
    expect(st.gateway.synRefused).toBe(20_000 - 500);
    expect(lines.filter((l) => l.o['key'] === 'syn-refused:half-open-full').length).toBeLessThanOrEqual(5);
    // The established connection is untouched by the flood.
    expect(live.sendData(0, 0, 'a secret').map((g) => payloadOf(g.frame))).toEqual(['a [gone]']);
    // A new legitimate SYN is refused while the flood entries live...
    expect(h.send(tcpFrame({ src: CLIENT, dst: SERVER, srcPort: 43001, dstPort: 80, seq: 7, flags: SYN }))).toEqual([]);
    // ...and accepted once they timed out (synTimeoutMs from creation, however often retried).
    h.advance(31_000);
    expect(h.gw.stats().flows.expiredHalfOpen).toBe(500);
    expect(h.gw.stats().flows.halfOpen).toBe(0);
    const again = h.connect(43001);
    expect(again.sendData(0, 0, 'secret').map((g) => payloadOf(g.frame))).toEqual(['[gone]']);
    expect(live.sendData(0, 8, 'more secret', 0).map((g) => payloadOf(g.frame))).toEqual(['more [gone]']);
  });

  it('counts SYN/RST pairs as embryonic too (a refused handshake never frees the cap early)', () => {
    const h = new Harness(LIMITS);
    synFlood(h, 3000, 2, true);
    expect(h.gw.stats().flows.halfOpen).toBeLessThanOrEqual(500);
    expect(h.gw.flows.size).toBeLessThanOrEqual(500);
    h.advance(31_000);
    expect(h.gw.flows.size).toBe(0);
  });

  it('passes an ACK flood for unknown 4-tuples untracked beyond the cap, without filling the table', () => {
    const h = new Harness(LIMITS, {}, null);
    const rnd = mulberry32(3);
    for (let i = 0; i < 5000; i++) {
      h.send(tcpFrame({ src: (0x0b000000 | Math.floor(rnd() * 0xffffff)) >>> 0, dst: SERVER, srcPort: 1024 + i, dstPort: 80, seq: i, ack: i, flags: ACK }));
    }
    const f = h.gw.stats().flows;
    expect(f.halfOpen).toBe(500);
    expect(f.untrackedHalfOpen).toBe(4500);
    expect(h.connect(43002)).toBeDefined();
    expect(h.gw.stats().flows.halfOpenFull).toBe(1); // the new SYN hit the cap too
  });

  it('confirms a mid-stream connection once both sides are seen (it then leaves the half-open cap)', () => {
    const h = new Harness(LIMITS, {}, null);
    h.send(tcpFrame({ src: CLIENT, dst: SERVER, srcPort: 43003, dstPort: 80, seq: 1, ack: 1, flags: ACK }), 0);
    expect(h.gw.stats().flows.halfOpen).toBe(1);
    h.send(tcpFrame({ src: SERVER, dst: CLIENT, srcPort: 80, dstPort: 43003, seq: 1, ack: 1, flags: ACK }), 1);
    expect(h.gw.stats().flows.halfOpen).toBe(0);
    h.advance(31_000);
    expect(h.gw.flows.size).toBe(1);
  });

  it('does not let a spoofed SYN with a new ISN reset a live rewritten connection', () => {
    const h = new Harness(LIMITS);
    const c = h.connect(43004);
    expect(c.sendData(0, 0, 'secret 1 ').map((g) => payloadOf(g.frame))).toEqual(['[gone] 1 ']);
    const spoof = c.frame(0, { flags: SYN, seq: 0xdeadbeef });
    expect(h.send(spoof).length).toBe(1); // passed on untracked: the server answers with a challenge ACK
    expect(h.gw.stats().gateway.straySyn).toBe(1);
    expect(h.gw.stats().flows.reused).toBe(0);
    // Still the same connection, rewritten, positions intact.
    expect(c.sendData(0, 9, 'secret 2').map((g) => payloadOf(g.frame))).toEqual(['[gone] 2']);
    // A SYN carrying data is not passed (no engine saw its bytes).
    expect(h.send(c.frame(0, { flags: SYN, seq: 0xdeadbeef, payload: new Uint8Array([1, 2, 3]) }))).toEqual([]);
    h.advance(31_000);
    expect(h.gw.flows.size).toBe(1);
  });
});

describe('hostile segments against the stream engine, at frame level', () => {
  it('a hold decided by its timeout (the sender silent mid-pattern) is counted and logged with the flow', () => {
    const lines: Array<{ o: Record<string, unknown>; m: string }> = [];
    const h = new Harness({}, { log: fakeLogger(lines) });
    const c = h.connect(44010);
    expect(c.sendData(0, 0, 'a secr').map((g) => payloadOf(g.frame))).toEqual(['a ']); // "secr" held
    h.advance(60_000);
    expect(h.gw.stats().stream.flushTimeout).toBe(1);
    const l = lines.find((x) => x.o['key'] === 'stream:flushTimeout');
    expect(l?.o).toMatchObject({ event: 'flushTimeout', total: 1 });
    expect(String(l?.o['flow'])).toContain('.44010-');
    expect(l?.m).toMatch(/hold timeout/);
  });

  it('discards a segment far outside the window, counted by the gateway stats and logged', () => {
    const lines: Array<{ o: Record<string, unknown>; m: string }> = [];
    const h = new Harness({ maxAheadBytes: 100_000 }, { log: fakeLogger(lines) });
    const c = h.connect(44000);
    expect(c.sendData(0, 50_000_000, 'far away')).toEqual([]);
    const s = h.gw.stats();
    expect(s.stream.farAhead).toBe(1);
    expect(s.gateway.withheld).toBe(1);
    expect(lines.some((l) => l.o['key'] === 'stream:farAhead')).toBe(true);
    expect(c.sendData(0, 0, 'near').length).toBe(1);
  });

  it('sends the processed bytes for an overlapping retransmission whose bytes differ', () => {
    const h = new Harness();
    const c = h.connect(44001);
    expect(c.sendData(0, 0, 'abcdef').map((g) => payloadOf(g.frame))).toEqual(['abcdef']);
    // Overlaps [3, 6) with different bytes and brings new ones [6, 10).
    expect(c.sendData(0, 3, 'XYZ1234').map((g) => payloadOf(g.frame))).toEqual(['def1234']);
    // A pure retransmission attempting to smuggle "secret" into the processed range.
    expect(c.sendData(0, 0, 'secret1234').map((g) => payloadOf(g.frame))).toEqual(['abcdef1234']);
    expect(h.gw.stats().stream.normalized).toBe(2);
  });

  it('bounds an endless flood of tiny out-of-order segments by the queue budgets', () => {
    const lim = { queueSegmentsPerConn: 256, queueBytesPerConn: 8192, queueBytesGlobal: 20_000 };
    const h = new Harness(lim);
    const conns = [0, 1, 2, 3].map((i) => h.connect(44100 + i));
    let maxQueued = 0;
    for (let i = 0; i < 50_000; i++) {
      const c = conns[i % 4]!;
      c.sendData(0, 10 + 3 * Math.floor(i / 4), 'q');
      if (h.gw.queuedBytes > maxQueued) maxQueued = h.gw.queuedBytes;
    }
    expect(maxQueued).toBeLessThanOrEqual(lim.queueBytesGlobal);
    for (const f of h.gw.flows.values()) expect(f.conn!.dirs[0].queuedSegments).toBeLessThanOrEqual(lim.queueSegmentsPerConn);
    const s = h.gw.stats().stream;
    expect(s.queueOverflow).toBeGreaterThan(40_000);
    expect(s.queuedBytes).toBe(h.gw.queuedBytes);
    // The gap is filled: the queued segments that remain drain in order.
    const out = conns[0]!.sendData(0, 0, '0123456789');
    expect(payloadOf(out[0]!.frame)).toBe('0123456789');
    expect(out.length).toBeGreaterThan(1);
  });

  it('feeds a regex agent megabytes of binary without newlines: held bytes bounded by maxMatch, no exception', () => {
    const h = new Harness({}, {}, REGEX_CONFIG);
    const c = h.connect(44200);
    const rnd = mulberry32(9);
    const seg = new Uint8Array(1400);
    let pos = 0;
    const heap0 = process.memoryUsage().heapUsed;
    let emitted = 0;
    for (let i = 0; i < 3000; i++) {
      for (let j = 0; j < seg.length; j++) {
        const b = Math.floor(rnd() * 256);
        seg[j] = b === 0x0a ? 0x0b : b; // binary, but never a newline: no match can complete
      }
      // Sprinkle "token=" without a terminating newline: the worst case for the hold-back.
      if (i % 7 === 0) seg.set(Buffer.from('token=abcdef0123'), i % 1000);
      for (const g of c.sendData(0, pos, seg)) emitted += payloadOf(g.frame).length;
      pos += seg.length;
      // The receiver acknowledges what it got now and then: a sender never has more
      // unacknowledged than the normalisation store keeps (4 MiB; past it bytes are dropped).
      if (i % 100 === 99) c.sendData(1, 0, '', emitted, ACK);
      const conn = [...h.gw.flows.values()][0]!.conn!;
      expect(conn.dirs[0].heldBytes).toBeLessThan(256);
    }
    h.advance(DEFAULT_LIMITS.holdTimeoutMs + 1); // hold timeout: the tail is flushed by a gateway-originated segment
    const flushed = h.out.at(-1)!;
    emitted += payloadOf(flushed.frame).length;
    expect(pos).toBe(3000 * 1400);
    expect(emitted).toBe(pos); // no match (no newline), nothing lost, nothing added
    const s = h.gw.stats().stream;
    expect(s.agentError + s.agentViolation).toBe(0);
    expect(s.flushTimeout).toBe(1);
    expect(s.beyondStore).toBe(0);
    // Bounded memory: the normalisation store is capped per connection, nothing else grows.
    expect(process.memoryUsage().heapUsed - heap0).toBeLessThan(64 << 20);
  });
});

describe('senders whose receivers never acknowledge', () => {
  it('fill the normalisation stores only up to normalizeBytesGlobal: past it new bytes are dropped (counted), the window shrinks, and acknowledged bytes free room', () => {
    const h = new Harness({ normalizeBytesPerConn: 65536, normalizeBytesGlobal: 100_000 });
    const send = (c: ReturnType<Harness['connect']>, from: number, to: number): number => {
      let passed = 0;
      for (let p = from; p < to; p += 1000) {
        for (const g of c.sendData(0, p, 'x'.repeat(1000))) if (g.to === 1) passed += payloadOf(g.frame).length;
      }
      return passed;
    };
    const a = h.connect(30001);
    const b = h.connect(30002);
    expect(send(a, 0, 60_000)).toBe(60_000);
    expect(h.gw.stats().stream.storedBytes).toBe(60_000);
    // b gets what is left of the 100,000: its bytes past it are dropped.
    const bPassed = send(b, 0, 60_000);
    expect(bPassed).toBe(40_000);
    const st = h.gw.stats().stream;
    expect(st.storedBytes).toBe(100_000);
    expect(st.storeBudgetFull).toBeGreaterThan(0);
    // b's server acknowledges what it got: a window no wider than what is free comes back to b's client.
    const ackB = h.send(b.frame(1, { flags: ACK, seq: b.isnS + 1, ack: (b.isnC + 1 + 40_000) >>> 0, window: 65535 }), 1);
    expect(h.gw.stats().stream.storedBytes).toBe(60_000);
    const win = ackB.find((g) => g.to === 0)!.frame;
    expect((win[14 + 20 + 14]! << 8) | win[14 + 20 + 15]!).toBeLessThanOrEqual(40_000);
    // a's server acknowledges everything: the rest of b's bytes pass.
    h.send(a.frame(1, { flags: ACK, seq: a.isnS + 1, ack: (a.isnC + 1 + 60_000) >>> 0, window: 65535 }), 1);
    expect(h.gw.stats().stream.storedBytes).toBe(0);
    // (b's segments after the first one dropped waited in the queue: they drain now, and the
    // ones sent again pass as retransmissions.)
    const full = h.gw.stats().stream.storeBudgetFull;
    expect(send(b, 40_000, 60_000)).toBeGreaterThanOrEqual(20_000);
    expect(h.gw.stats().stream.storedBytes).toBe(20_000);
    expect(h.gw.stats().stream.storeBudgetFull).toBe(full);
  });

  it('a held pattern prefix is still decided at its hold timeout when the bound was reached just as the rest was acknowledged (the bound closes the window, not the receiver)', () => {
    const h = new Harness({ normalizeBytesPerConn: 65536, normalizeBytesGlobal: 65536 });
    const a = h.connect(30011);
    const b = h.connect(30012);
    // a's client sends a request ending with a prefix of "secret": 4 bytes held; its server acknowledges the rest.
    expect(a.sendData(0, 0, `${'y'.repeat(4996)}secr`).filter((g) => g.to === 1).map((g) => payloadOf(g.frame)).join('')).toHaveLength(4996);
    h.send(a.frame(1, { flags: ACK, seq: a.isnS + 1, ack: (a.isnC + 1 + 4996) >>> 0, window: 65535 }), 1);
    // b fills the bound; then a's server sends one more ACK (a window of 0 goes to a's client).
    for (let p = 0; p < 70_000; p += 1000) b.sendData(0, p, 'x'.repeat(1000));
    h.send(a.frame(1, { flags: ACK, seq: a.isnS + 1, ack: (a.isnC + 1 + 4996) >>> 0, window: 65535 }), 1);
    let flushed = '';
    for (let i = 0; i < 5; i++) for (const g of h.advance(1000)) if (g.to === 1 && g.frame[14 + 20 + 1] !== undefined) flushed += payloadOf(g.frame);
    expect(flushed.startsWith('secr')).toBe(true);
  });
});
