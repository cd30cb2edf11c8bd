/**
 * Timers (engine/timers.ts TimerQueue, engine/rewrite.ts `due`): a tick takes the connections
 * whose timer is due, in time order, and visits no other (a sender keeping thousands of
 * connections holding bytes made every tick walk them all); what it takes equals what a walk
 * over all of them would take.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { TimerQueue } from '../../src/engine/timers.js';
import { Connection } from '../../src/stream/connection.js';
import { decodeFrame } from '../../src/wire/frame.js';
import { ACK, Conn, Harness, HTTP_CONFIG, PSH, SYN, payloadOf } from '../hostile/harness.js';

describe('TimerQueue', () => {
  it('takes exactly the items due, whatever the schedules, cancels and reschedules before', () => {
    const op = fc.oneof(
      fc.record({ k: fc.constant('schedule' as const), x: fc.nat(20), t: fc.oneof(fc.nat(1000), fc.constant(Infinity)) }),
      fc.record({ k: fc.constant('cancel' as const), x: fc.nat(20) }),
      fc.record({ k: fc.constant('take' as const), now: fc.nat(1000) }),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 200 }), (ops) => {
        const items = Array.from({ length: 21 }, (_, i) => ({ i }));
        const q = new TimerQueue<{ i: number }>();
        // Reference: each item's due time (the earliest scheduled since it was last taken or cancelled).
        const ref = new Map<number, number>();
        for (const o of ops) {
          if (o.k === 'schedule') {
            q.schedule(items[o.x]!, o.t);
            if (o.t === Infinity) ref.delete(o.x);
            else ref.set(o.x, Math.min(ref.get(o.x) ?? Infinity, o.t));
          } else if (o.k === 'cancel') {
            q.cancel(items[o.x]!);
            ref.delete(o.x);
          } else {
            const got: number[] = [];
            for (let x = q.takeDue(o.now); x !== undefined; x = q.takeDue(o.now)) got.push(x.i);
            const want = [...ref].filter(([, t]) => t <= o.now).sort((a, b) => a[1] - b[1]);
            // In time order (items due at the same time in any order).
            expect(got.map((i) => ref.get(i))).toEqual(want.map(([, t]) => t));
            expect(new Set(got)).toEqual(new Set(want.map(([i]) => i)));
            for (const i of got) ref.delete(i);
          }
          expect(q.size).toBe(ref.size);
        }
      }),
      { seed: 1212, numRuns: 500 },
    );
  });
});

describe('gateway ticks', () => {
  it('visit only the connections whose timer is due: 3,000 holding bytes cost a tick nothing until their hold timeout', () => {
    const h = new Harness({ maxConnections: 10_000 });
    const n = 3000;
    const conns = Array.from({ length: n }, (_, i) => h.connect(20000 + i));
    // Each ends with "sec", a prefix of the rule's "secret": held until the hold timeout.
    for (const c of conns) c.sendData(0, 0, 'hello sec');
    const before = h.out.length;
    let looked = 0;
    const orig = Connection.prototype.nextTimerMs;
    Connection.prototype.nextTimerMs = function (this: Connection<never>) {
      looked++;
      return orig.call(this);
    };
    try {
      for (let k = 0; k < 10; k++) h.advance(10);
      expect(looked).toBeLessThan(100);
      expect(h.out.length).toBe(before);
      // Past the hold timeout every one releases what it held: "sec" reaches the server n times.
      h.advance(5000);
      const released = h.out.slice(before).filter((g) => g.to === 1 && payloadOf(g.frame) === 'sec');
      expect(released).toHaveLength(n);
    } finally {
      Connection.prototype.nextTimerMs = orig;
    }
  });
});

describe('segments the gateway originates', () => {
  it('carry the timestamps of the sender\'s latest segment, also one without data (else the receiver drops them: PAWS)', () => {
    const h = new Harness();
    const c = new Conn(h, 20500, 1000, 5000);
    const ts = (tsval: number, tsecr: number) => [{ kind: 'nop' as const }, { kind: 'nop' as const }, { kind: 'timestamps' as const, tsval, tsecr }];
    h.send(c.frame(0, { flags: SYN, seq: 1000, options: [{ kind: 'mss', mss: 1460 }, ...ts(100, 0)] }), 0);
    h.send(c.frame(1, { flags: SYN | ACK, seq: 5000, ack: 1001, options: [{ kind: 'mss', mss: 1460 }, ...ts(500, 100)] }), 1);
    h.send(c.frame(0, { flags: ACK, seq: 1001, ack: 5001, options: ts(101, 500) }), 0);
    // "sec" (a prefix of the rule's "secret") is held; the client's next segment is a pure ACK
    // of the server's answer, with a later TSval: the server takes that one as TS.Recent.
    expect(h.send(c.frame(0, { flags: ACK | PSH, seq: 1001, ack: 5001, options: ts(102, 500), payload: Buffer.from('hello sec') }), 0).map((e) => payloadOf(e.frame))).toEqual(['hello ']);
    h.send(c.frame(1, { flags: ACK | PSH, seq: 5001, ack: 1007, options: ts(600, 102), payload: Buffer.from('ok\n') }), 1);
    h.send(c.frame(0, { flags: ACK, seq: 1010, ack: 5004, options: ts(250, 600) }), 0);
    const out = h.advance(5000).filter((e) => e.to === 1 && payloadOf(e.frame) === 'sec');
    expect(out).toHaveLength(1);
    const d = decodeFrame(out[0]!.frame, { link: 'ethernet', verifyChecksums: true });
    if (d.kind !== 'tcp') throw new Error(d.kind);
    expect([d.tcp.tsval(), d.tcp.tsecr(), d.tcp.ack]).toEqual([250, 600, 5004]);
  });
});

describe('an agent\'s answer that decides what the other direction holds (AgentOutput.wake)', () => {
  it('releases bytes a client sent ahead of the answer to CONNECT as soon as the tunnel opens, not at the hold timeout', () => {
    const h = new Harness({}, {}, HTTP_CONFIG);
    const c = h.connect(20600);
    const connect = 'CONNECT example.net:443 HTTP/1.1\r\nHost: example.net:443\r\n\r\n';
    const early = '\x16\x03\x01 a TLS ClientHello, sent ahead';
    // The request goes on; the bytes after it wait for the answer.
    const sent = c.sendData(0, 0, connect + early).filter((e) => e.to === 1).map((e) => payloadOf(e.frame));
    expect(sent).toEqual([connect.replace('\r\n\r\n', '\r\nAccept-Encoding: identity\r\n\r\n')]);
    h.advance(100);
    // The server's 200 (it has the request): the early bytes leave with it, towards the server.
    const out = c.sendData(1, 0, 'HTTP/1.1 200 Connection established\r\n\r\n', connect.length);
    expect(out.map((e) => [e.to, payloadOf(e.frame)])).toEqual([[0, 'HTTP/1.1 200 Connection established\r\n\r\n'], [1, early]]);
    const st = h.gw.stats().stream;
    expect([st.flushAnswer, st.flushTimeout, st.synthSent]).toEqual([1, 0, 1]);
  });
});
