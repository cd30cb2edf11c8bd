/**
 * A segment of a tracked connection arriving on the other TAP than its sender's (engine/track.ts,
 * `sided`): in a bridge each endpoint lives on one side, so a "server" segment coming in on the
 * client's side was forged there. Taken, it would let a host of one segment speak for the other
 * end to the tracker without that end ever seeing it (the frame leaves toward the segment the
 * forged sender lives on, whose stack drops it): a RST or FIN of the server's closes the tracked
 * connection while both endpoints keep it, and what the server sends after the entry left the
 * table is picked up mid-stream (passed uninspected with `policy.midstream: pass`). Dropped,
 * counted `wrongSide`. A replayed capture (one side only) is not checked.
 */
import { describe, expect, it } from 'vitest';
import { ACK, Conn, FIN, Harness, RST, SYN, payloadOf } from '../hostile/harness.js';

const PASS_MIDSTREAM = `
policy: { midstream: pass }
rules:
  - match: { port: 80 }
    agent: replace
    replace:
      - { find: "secret", with: "[gone]" }
`;

function live(config = PASS_MIDSTREAM) {
  const h = new Harness({ closedTimeoutMs: 1000 }, { sided: true }, config);
  const c = h.connect(40000);
  expect(c.sendData(0, 0, 'GET / HTTP/1.0\r\n\r\n').map((e) => e.to)).toEqual([1]);
  expect(c.sendData(1, 0, 'a secret\n', 18).map((e) => payloadOf(e.frame))).toEqual(['a [gone]\n']);
  return { h, c };
}

/** The server's later data, 5 s on: still tracked and rewritten, or (the bypass) passed as it is. */
function later(h: Harness, c: ReturnType<typeof live>['c']): string[] {
  h.advance(5000);
  return c.sendData(1, 9, 'another secret\n', 18).map((e) => payloadOf(e.frame));
}

describe('a segment of a tracked connection from the other side', () => {
  it("the server's exact RST forged on the client's side: dropped; the connection stays tracked and rewritten", () => {
    const { h, c } = live();
    const out = h.send(c.frame(1, { flags: RST | ACK, seq: c.isnS + 1 + 9, ack: c.isnC + 1 + 18 }), 0);
    expect(out).toEqual([]);
    expect(h.gw.stats().gateway.wrongSide).toBe(1);
    expect(h.gw.stats().gateway.rstAccepted).toBe(0);
    expect([...h.gw.flows.values()].map((f) => f.state)).toEqual(['established']);
    expect(later(h, c)).toEqual(['another [gone]\n']);
  });

  it("the server's FIN and the ACK of the client's FIN forged on the client's side: dropped; the server's data still rewritten", () => {
    const { h, c } = live();
    h.send(c.frame(0, { flags: FIN | ACK, seq: c.isnC + 1 + 18, ack: c.isnS + 1 + 9 }), 0);
    expect(h.send(c.frame(1, { flags: FIN | ACK, seq: c.isnS + 1 + 9, ack: c.isnC + 1 + 19 }), 0)).toEqual([]);
    expect(h.gw.stats().gateway.wrongSide).toBe(1);
    expect(later(h, c)).toEqual(['another [gone]\n']);
  });

  it("the client's segments forged on the server's side, a stray SYN among them: dropped", () => {
    const { h, c } = live();
    expect(h.send(c.data(0, 18, 'forged'), 1)).toEqual([]);
    expect(h.send(c.frame(0, { flags: SYN, seq: 777 }), 1)).toEqual([]);
    expect(h.gw.stats().gateway.wrongSide).toBe(2);
    expect(h.gw.stats().gateway.straySyn).toBe(0); // not passed as a stray SYN
    // From its own side the client goes on.
    expect(c.sendData(0, 18, 'ok').map((e) => [e.to, payloadOf(e.frame)])).toEqual([[1, 'ok']]);
  });

  it("a client SYN forged ahead of the real one on the server's segment does not keep the client out", () => {
    const h = new Harness({}, { sided: true }, PASS_MIDSTREAM);
    const c = new Conn(h, 42000, 1000, 5000);
    // Forged on side 1 (the server's segment) as the client's SYN: the entry learns side 1 first.
    expect(h.send(c.frame(0, { flags: SYN, seq: 333 }), 1).map((e) => e.to)).toEqual([0]);
    // The real client's SYN from side 0 is a new attempt on the unconfirmed entry.
    expect(h.send(c.frame(0, { flags: SYN, seq: 1000 }), 0).map((e) => e.to)).toEqual([1]);
    h.send(c.frame(1, { flags: SYN | ACK, seq: 5000, ack: 1001 }), 1);
    h.send(c.frame(0, { flags: ACK, seq: 1001, ack: 5001 }), 0);
    expect(c.sendData(1, 0, 'a secret\n').map((e) => [e.to, payloadOf(e.frame)])).toEqual([[0, 'a [gone]\n']]);
    // Now the forger's segments as the client are from the wrong side.
    expect(h.send(c.data(0, 0, 'forged'), 1)).toEqual([]);
    expect(h.gw.stats().gateway.wrongSide).toBe(1);
  });

  it("a client SYN forged on the server's segment during the handshake (SYN-RECEIVED): dropped; the client's ACK and data go on", () => {
    const h = new Harness({}, { sided: true }, PASS_MIDSTREAM);
    const c = new Conn(h, 43000, 1000, 5000);
    h.send(c.frame(0, { flags: SYN, seq: 1000 }), 0);
    h.send(c.frame(1, { flags: SYN | ACK, seq: 5000, ack: 1001 }), 1);
    expect(h.send(c.frame(0, { flags: SYN, seq: 0xdead }), 1)).toEqual([]);
    expect(h.gw.stats().gateway.wrongSide).toBe(1);
    expect(h.send(c.frame(0, { flags: ACK, seq: 1001, ack: 5001 }), 0).map((e) => e.to)).toEqual([1]);
    expect(c.sendData(0, 0, 'GET /secret').map((e) => [e.to, payloadOf(e.frame)])).toEqual([[1, 'GET /[gone]']]);
    expect(c.sendData(1, 0, 'a secret\n', 11).map((e) => [e.to, payloadOf(e.frame)])).toEqual([[0, 'a [gone]\n']]);
  });

  it("a SYN forged the other way round (the server's address, on the client's segment) ahead of the client's: the connection still opens", () => {
    const h = new Harness({}, { sided: true }, PASS_MIDSTREAM);
    const c = new Conn(h, 44000, 1000, 5000);
    h.send(c.frame(1, { flags: SYN, seq: 777 }), 0);
    h.send(c.frame(0, { flags: SYN, seq: 1000 }), 0);
    h.send(c.frame(1, { flags: SYN | ACK, seq: 5000, ack: 1001 }), 1);
    h.send(c.frame(0, { flags: ACK, seq: 1001, ack: 5001 }), 0);
    expect(h.gw.stats().gateway.wrongSide).toBe(0);
    expect(c.sendData(1, 0, 'a secret\n').map((e) => [e.to, payloadOf(e.frame)])).toEqual([[0, 'a [gone]\n']]);
  });

  // A forger in SYN-SENT (review): taught the side by a forged answer, the gateway would drop the
  // real handshake until the entry expired, and the connection could then be picked up
  // mid-stream (passed uninspected with `midstream: pass`).
  for (const [what, forged, from] of [
    ["the server's SYN-ACK forged on the client's segment", { side: 1, flags: SYN | ACK, seq: 9999, ack: 1001 }, 0],
    ["the server's RST answering the SYN forged on the client's segment", { side: 1, flags: RST | ACK, seq: 0, ack: 1001 }, 0],
    ["the client's RST forged on the server's segment", { side: 0, flags: RST, seq: 1001, ack: 0 }, 1],
    ["the client's SYN replayed on the server's segment", { side: 0, flags: SYN, seq: 1000, ack: 0 }, 1],
  ] as const) {
    it(`${what} in SYN-SENT teaches nothing: the real handshake opens the connection, inspected`, () => {
      const h = new Harness({}, { sided: true }, PASS_MIDSTREAM);
      const c = new Conn(h, 46000, 1000, 5000);
      h.send(c.frame(0, { flags: SYN, seq: 1000 }), 0);
      const out = h.send(c.frame(forged.side, { flags: forged.flags, seq: forged.seq, ack: forged.ack }), from);
      // The server's answer to the SYN from the SYN's own TAP is dropped; the client's RST and a
      // copy of its SYN pass as before (the real SYN-ACK revives what the RST closed).
      const answer = forged.side === 1;
      expect(out.length).toBe(answer ? 0 : 1);
      expect(h.gw.stats().gateway.wrongSide).toBe(answer ? 1 : 0);
      expect(h.send(c.frame(1, { flags: SYN | ACK, seq: 5000, ack: 1001 }), 1).map((e) => e.to)).toEqual([0]);
      expect(h.send(c.frame(0, { flags: ACK, seq: 1001, ack: 5001 }), 0).map((e) => e.to)).toEqual([1]);
      expect(c.sendData(1, 0, 'a secret\n').map((e) => [e.to, payloadOf(e.frame)])).toEqual([[0, 'a [gone]\n']]);
      // And the sides are known now: the forger's next segment is dropped.
      const w0 = h.gw.stats().gateway.wrongSide;
      expect(h.send(c.data(1, 9, 'forged'), 0)).toEqual([]);
      expect(h.gw.stats().gateway.wrongSide).toBe(w0 + 1);
    });
  }

  it('SYNs forged on the server\'s segment ahead of the client\'s, however many, do not switch the check off', () => {
    const h = new Harness({}, { sided: true }, PASS_MIDSTREAM);
    const c = new Conn(h, 48000, 1000, 5000);
    for (let i = 0; i < 12; i++) h.send(c.frame(0, { flags: SYN, seq: 70_000 + i }), 1);
    h.send(c.frame(0, { flags: SYN, seq: 1000 }), 0);
    expect(h.send(c.frame(1, { flags: SYN | ACK, seq: 5000, ack: 1001 }), 1).map((e) => e.to)).toEqual([0]);
    h.send(c.frame(0, { flags: ACK, seq: 1001, ack: 5001 }), 0);
    expect(c.sendData(1, 0, 'a secret\n').map((e) => [e.to, payloadOf(e.frame)])).toEqual([[0, 'a [gone]\n']]);
    // The server's exact RST forged on the client's segment: dropped.
    expect(h.send(c.frame(1, { flags: RST | ACK, seq: 5001 + 9, ack: 1001 }), 0)).toEqual([]);
    expect(h.gw.stats().gateway.rstAccepted).toBe(0);
  });

  it("a client SYN forged on the server's segment and answered by the server: the server's challenge ACK to the real SYN and the client's RST to it pass, the connection opens", () => {
    const h = new Harness({}, { sided: true }, PASS_MIDSTREAM);
    const c = new Conn(h, 49000, 1000, 5000);
    const X = 60_000;
    h.send(c.frame(0, { flags: SYN, seq: X }), 1); // the forger's, seen by the server too
    expect(h.send(c.frame(1, { flags: SYN | ACK, seq: 7000, ack: X + 1 }), 1)).toEqual([]); // its answer: dropped
    h.send(c.frame(0, { flags: SYN, seq: 1000 }), 0); // the real client
    // The server, in SYN-RECEIVED for X, answers with a challenge ACK; the client resets X.
    expect(h.send(c.frame(1, { flags: ACK, seq: 7001, ack: X + 1 }), 1).map((e) => e.to)).toEqual([0]);
    expect(h.send(c.frame(0, { flags: RST, seq: X + 1 }), 0).map((e) => e.to)).toEqual([1]);
    // The client's SYN again, now answered.
    h.send(c.frame(0, { flags: SYN, seq: 1000 }), 0);
    expect(h.send(c.frame(1, { flags: SYN | ACK, seq: 5000, ack: 1001 }), 1).map((e) => e.to)).toEqual([0]);
    h.send(c.frame(0, { flags: ACK, seq: 1001, ack: 5001 }), 0);
    expect(c.sendData(1, 0, 'a secret\n').map((e) => [e.to, payloadOf(e.frame)])).toEqual([[0, 'a [gone]\n']]);
  });

  it('learns the sides of a connection picked up mid-stream from its first segment', () => {
    const h = new Harness({}, { sided: true }, PASS_MIDSTREAM.replace('midstream: pass', 'midstream: inspect'));
    const c = new Conn(h, 41000, 1000, 5000);
    expect(c.sendData(1, 0, 'a secret\n', 0).map((e) => [e.to, payloadOf(e.frame)])).toEqual([[0, 'a [gone]\n']]);
    expect(h.send(c.data(1, 9, 'forged'), 0)).toEqual([]);
    expect(h.gw.stats().gateway.wrongSide).toBe(1);
    expect(c.sendData(1, 9, 'more secret\n').map((e) => payloadOf(e.frame))).toEqual(['more [gone]\n']);
  });

  it('a connection no rule covers is bridged as it comes, from either side', () => {
    // The rule names port 81; the harness's connections go to port 80.
    const h = new Harness({}, { sided: true }, PASS_MIDSTREAM.replace('port: 80', 'port: 81'));
    const c = h.connect(45000);
    expect(h.send(c.data(1, 0, 'a secret\n'), 0).map((e) => [e.to, payloadOf(e.frame)])).toEqual([[1, 'a secret\n']]);
    expect(h.gw.stats().gateway.wrongSide).toBe(0);
  });

  it('without `sided` (a replayed capture: every frame on side 0) nothing is checked', () => {
    const h = new Harness({}, { sided: false });
    const c = h.connect(40000);
    expect(h.send(c.data(1, 0, 'a secret\n'), 0).map((e) => payloadOf(e.frame))).toEqual(['a [gone]\n']);
    expect(h.gw.stats().gateway.wrongSide).toBe(0);
  });
});
