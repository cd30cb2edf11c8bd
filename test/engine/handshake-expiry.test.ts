/**
 * A handshake stalled past `synTimeoutMs` on purpose (flow/table.ts `inspected`): the client
 * sends its SYN, gets the SYN-ACK, and sends its final ACK and data only after the gateway's
 * embryonic entry expired (a Linux server keeps the handshake 63 s; its SYN cookies take the ACK
 * for minutes). Taken up as a connection seen mid-stream, the data would pass uninspected under
 * `policy.midstream: pass`. The 4-tuple of an inspected handshake that expired is kept: its later
 * segments are dropped (counted `handshakeExpired`) until a new SYN opens it again.
 */
import { describe, expect, it } from 'vitest';
import { ACK, Conn, Harness, RST, SYN, payloadOf } from '../hostile/harness.js';
import { HANDSHAKE_TOMB_MS } from '../../src/flow/table.js';

const CONFIG = (port: number) => `
policy: { midstream: pass }
rules:
  - match: { port: ${port} }
    agent: replace
    replace:
      - { find: "secret", with: "[gone]" }
`;

function stalled(port = 80) {
  const h = new Harness({}, {}, CONFIG(port));
  const c = new Conn(h, 47000, 1000, 5000);
  h.send(c.frame(0, { flags: SYN, seq: 1000 }), 0);
  h.send(c.frame(1, { flags: SYN | ACK, seq: 5000, ack: 1001 }), 1);
  // The server retransmits its SYN-ACK; the client stays silent past synTimeoutMs (30 s).
  for (const ms of [1000, 2000, 4000, 8000, 16_000]) {
    h.advance(ms);
    h.send(c.frame(1, { flags: SYN | ACK, seq: 5000, ack: 1001 }), 1);
  }
  h.advance(2000);
  expect(h.gw.stats().flows.expiredHalfOpen).toBe(1);
  return { h, c };
}

describe('a handshake an inspected connection stalled past synTimeoutMs', () => {
  it("the client's late ACK and data are dropped, not taken up mid-stream (passed uninspected)", () => {
    const { h, c } = stalled();
    expect(h.gw.stats().flows.handshakeTombs).toBe(1);
    expect(h.send(c.frame(0, { flags: ACK, seq: 1001, ack: 5001 }), 0)).toEqual([]);
    expect(c.sendData(0, 0, 'GET /secret')).toEqual([]);
    expect(c.sendData(1, 0, 'a secret\n')).toEqual([]);
    const st = h.gw.stats();
    // The server's last SYN-ACK retransmission (at 31 s, after the expiry) and the three.
    expect(st.flows.handshakeExpired).toBe(4);
    expect(st.flows.midstream).toBe(0);
    expect(st.gateway.policy.passed).toEqual({});
  });

  it('a new SYN then its RST (the entry closes unconfirmed and leaves) do not clear the way for the late ACK', () => {
    const { h, c } = stalled();
    h.send(c.frame(0, { flags: SYN, seq: 9000 }), 0);
    h.send(c.frame(0, { flags: RST, seq: 9001 }), 0);
    h.advance(11_000); // closedTimeoutMs
    expect(h.send(c.frame(0, { flags: ACK, seq: 1001, ack: 5001 }), 0)).toEqual([]);
    expect(c.sendData(0, 0, 'GET /secret')).toEqual([]);
    expect(h.gw.stats().gateway.policy.passed).toEqual({});
  });

  it('a new SYN on the 4-tuple opens a connection, inspected', () => {
    const { h, c } = stalled();
    h.send(c.frame(0, { flags: SYN, seq: 1000 }), 0);
    h.send(c.frame(1, { flags: SYN | ACK, seq: 5000, ack: 1001 }), 1);
    h.send(c.frame(0, { flags: ACK, seq: 1001, ack: 5001 }), 0);
    expect(c.sendData(1, 0, 'a secret\n').map((e) => [e.to, payloadOf(e.frame)])).toEqual([[0, 'a [gone]\n']]);
    expect(h.gw.stats().flows.handshakeTombs).toBe(0);
  });

  it(`the 4-tuple is forgotten after ${HANDSHAKE_TOMB_MS / 1000} s (then the policy decides, as for any connection seen mid-stream)`, () => {
    const { h, c } = stalled();
    h.advance(HANDSHAKE_TOMB_MS + 1000);
    expect(h.gw.stats().flows.handshakeTombs).toBe(0);
    expect(c.sendData(1, 0, 'a secret\n').map((e) => e.to)).toEqual([0]);
    expect(h.gw.stats().gateway.policy.passed).toEqual({ midstream: 1 });
  });

  it('a handshake no rule covers leaves nothing behind', () => {
    const { h, c } = stalled(81);
    expect(h.gw.stats().flows.handshakeTombs).toBe(0);
    expect(c.sendData(0, 0, 'GET /secret').map((e) => [e.to, payloadOf(e.frame)])).toEqual([[1, 'GET /secret']]);
  });

  it('a SYN forged from the server toward the client ahead of the handshake: the connection still confirms, runs past synTimeoutMs inspected, leaves nothing behind', () => {
    const h = new Harness({}, {}, CONFIG(80));
    const c = new Conn(h, 47100, 1000, 5000);
    h.send(c.frame(1, { flags: SYN, seq: 777 }), 1);
    h.send(c.frame(0, { flags: SYN, seq: 1000 }), 0);
    h.send(c.frame(1, { flags: SYN | ACK, seq: 5000, ack: 1001 }), 1);
    h.send(c.frame(0, { flags: ACK, seq: 1001, ack: 5001 }), 0);
    expect(c.sendData(1, 0, 'a secret\n').map((e) => [e.to, payloadOf(e.frame)])).toEqual([[0, 'a [gone]\n']]);
    h.advance(35_000);
    h.advance(1000);
    const st = h.gw.stats().flows;
    expect(st.expiredHalfOpen).toBe(0);
    expect(st.handshakeTombs).toBe(0);
    expect(c.sendData(1, 9, 'another secret\n').map((e) => [e.to, payloadOf(e.frame)])).toEqual([[0, 'another [gone]\n']]);
  });
});
