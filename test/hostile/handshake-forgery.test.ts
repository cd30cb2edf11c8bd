/**
 * What a handshake's segments, forged or odd, may make the gateway believe (found by a review,
 * 2026-12-07): each case read as a Linux receiver reads it, so a test says what the client's
 * application gets.
 * - An urgent pointer on the server's SYN-ACK: a Linux client in SYN-SENT takes it (tcp_urg after
 *   the handshake's ACK, "step 6 by hand") and, without SO_OOBINLINE, drops the byte at it from
 *   the stream when it comes: "Hellox world" inspected, "Hello world" read. Cleared.
 * - A second SYN-ACK of the server's with another ISN before the final ACK: the client took the
 *   first (the second gets a challenge ACK); learnt, it shifted every position of the server's
 *   stream, so bytes below the first ISN reached the agent as the stream's start and never the
 *   client. Dropped.
 * - A SYN "from the server" (forged on the client's segment, or by the client itself) ahead of the
 *   client's: the entry took the server for the client, so its address and port chose the rule (a
 *   `serverPort: 80` rule did not match, a `direction: s2c` one rewrote the requests). The
 *   server's SYN-ACK to the real client re-makes the entry (flows.reoriented).
 */
import { describe, expect, it } from 'vitest';
import { decodeFrame } from '../../src/wire/frame.js';
import { parseConfig } from '../../src/config/index.js';
import { tcpFrame } from '../../src/wire/tcp-frame.js';
import { ACK, CLIENT, Conn, Harness, PSH, RST, SERVER, SYN, URG, payloadOf, refix } from './harness.js';

interface Seg {
  seq: number;
  flags: number;
  urgent: number;
  payload: Buffer;
}

function tcpOf(frame: Uint8Array): Seg {
  const d = decodeFrame(frame, { link: 'ethernet', verifyChecksums: true });
  if (d.kind !== 'tcp') throw new Error(`not tcp: ${d.kind}`);
  return { seq: d.tcp.seq, flags: d.tcp.flags, urgent: d.tcp.urgent, payload: Buffer.from(frame.subarray(d.payloadOff, d.payloadOff + d.payloadLen)) };
}

/**
 * What a Linux client (no SO_OOBINLINE) hands its application from the segments it receives in
 * order: RCV.NXT from the first SYN-ACK (a later one is answered with a challenge ACK); bytes
 * before RCV.NXT dropped, an overlap trimmed (tcp_data_queue); an urgent pointer
 * (seq + pointer − 1) at or past RCV.NXT remembered from any segment with URG, the SYN-ACK's
 * included, and the byte at it skipped (tcp_check_urg, tcp_recvmsg).
 */
function linuxClient(segs: Seg[]): string {
  let rcvNxt = -1;
  let urgSeq = -1;
  let out = '';
  for (const t of segs) {
    if (t.flags & SYN) {
      if (rcvNxt >= 0) continue;
      rcvNxt = (t.seq + 1) >>> 0;
    }
    if (t.flags & URG) {
      const ptr = (t.seq + t.urgent - 1) >>> 0;
      if (((ptr - rcvNxt) | 0) >= 0) urgSeq = ptr;
    }
    if (t.flags & SYN) continue;
    const off = (rcvNxt - t.seq) | 0;
    if (off < 0 || off >= t.payload.length) continue;
    for (let i = off; i < t.payload.length; i++) if (((t.seq + i) >>> 0) !== urgSeq) out += String.fromCharCode(t.payload[i]!);
    rcvNxt = (t.seq + t.payload.length) >>> 0;
  }
  return out;
}

const MSS = [{ kind: 'mss' as const, mss: 1460 }];
const HELLO = `
rules:
  - match: { port: 80 }
    agent: replace
    replace:
      - { find: "Hello world", with: "Hi there" }
`;

/** Sets the urgent pointer of an untagged Ethernet/IPv4 TCP frame, checksums fixed. */
function withUrgent(f: Uint8Array, ptr: number): Uint8Array {
  const l4 = 14 + (f[14]! & 0x0f) * 4;
  f[l4 + 18] = ptr >>> 8;
  f[l4 + 19] = ptr & 0xff;
  return refix(f);
}

describe('an urgent pointer on the server\'s SYN-ACK', () => {
  for (const urgent of ['inline', 'keep'] as const) {
    it(`is cleared (policy.urgent: ${urgent}): "Hellox world" with the pointer at the x reads as the agent saw it`, () => {
      const h = new Harness({}, {}, `policy: { urgent: ${urgent} }\n${HELLO}`);
      const c = new Conn(h, 40001, 1000, 5000);
      const toClient: Seg[] = [];
      const take = (es: { frame: Uint8Array; to: number }[]) => { for (const e of es) if (e.to === 0) toClient.push(tcpOf(e.frame)); };
      h.send(c.frame(0, { flags: SYN, seq: 1000, options: MSS }), 0);
      // Pointer 7 on the SYN-ACK (seq 5000): the urgent byte is stream position 5.
      take(h.send(withUrgent(c.frame(1, { flags: SYN | ACK | URG, seq: 5000, ack: 1001, options: MSS }), 7), 1));
      h.send(c.frame(0, { flags: ACK, seq: 1001, ack: 5001 }), 0);
      take(c.sendData(1, 0, 'Hellox world\n', 0, ACK | PSH));
      expect(toClient[0]!.flags & URG).toBe(0);
      expect(toClient[0]!.urgent).toBe(0);
      expect(h.gw.stats().stream.urgentInlined).toBe(1);
      expect(linuxClient(toClient)).toBe('Hellox world\n');
    });
  }
});

describe("a second SYN-ACK of the server's with another ISN before the final ACK", () => {
  /** The server answers twice (b1, then b1 − junk.length), sends `junk` below b1 and `real` from b1. */
  function run(config: string, junk: string, real: string, request = '') {
    const h = new Harness({}, {}, config);
    const b1 = 50_000;
    const b2 = b1 - junk.length;
    const c = new Conn(h, 40002, 1000, b2);
    const toClient: Seg[] = [];
    const take = (es: { frame: Uint8Array; to: number }[]) => { for (const e of es) if (e.to === 0) toClient.push(tcpOf(e.frame)); };
    h.send(c.frame(0, { flags: SYN, seq: 1000, options: MSS }), 0);
    take(h.send(c.frame(1, { flags: SYN | ACK, seq: b1, ack: 1001, options: MSS }), 1));
    const second = h.send(c.frame(1, { flags: SYN | ACK, seq: b2, ack: 1001, options: MSS }), 1);
    take(second);
    h.send(c.frame(0, { flags: ACK, seq: 1001, ack: b1 + 1 }), 0);
    if (request !== '') h.send(c.data(0, 0, request, 0, ACK | PSH), 0);
    if (junk !== '') take(c.sendData(1, 0, junk, request.length, ACK | PSH));
    take(c.sendData(1, junk.length, real, request.length, ACK | PSH));
    take(h.advance(5000));
    return { h, second, app: linuxClient(toClient) };
  }

  it('is dropped: a rule anchored at the stream start sees what the client reads', () => {
    const cfg = `
rules:
  - match: { port: 80 }
    agent: replace
    replace:
      - { regex: "^Hello world", with: "Hi there", maxMatch: 32 }
`;
    expect(run(cfg, '', 'Hello world\n').app).toBe('Hi there\n');
    const r = run(cfg, 'XXXX', 'Hello world\n');
    expect(r.second).toEqual([]);
    expect(r.h.gw.stats().flows.straySyn).toBe(1);
    expect(r.app).toBe('Hi there\n');
  });

  it('is dropped: the http agent parses the response the client reads, not one made of bytes it never gets', () => {
    const cfg = `
rules:
  - match: { port: 80 }
    agent: http
    http:
      response:
        removeHeaders: [ Server ]
`;
    const real = 'HTTP/1.1 200 OK\r\nServer: secret-server/1.0\r\nContent-Length: 2\r\n\r\nok';
    const junk = `HTTP/1.1 200 OK\r\nContent-Length: ${real.length}\r\n\r\n`;
    const r = run(cfg, junk, real, 'GET / HTTP/1.1\r\nHost: x\r\n\r\n');
    expect(r.second).toEqual([]);
    expect(r.app).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    expect(r.app).not.toContain('Server:');
  });
});

/** A replace rule of "secret" on `match`, with `policy.midstream: mid`. */
const secretRule = (match: string, mid: 'drop' | 'pass') => `
policy: { midstream: ${mid} }
rules:
  - match: ${match}
    agent: replace
    replace:
      - { find: "secret", with: "[gone]" }
`;

describe('a SYN "from the server" ahead of the client\'s', () => {
  const rule = (match: string) => secretRule(match, 'pass');
  const SERVER_PORT = rule('{ serverPort: 80 }');
  const S2C = rule('{ port: 80 }\n    direction: s2c');

  /** The real handshake after `forge` ran; returns the server's data as the client gets it. */
  function handshake(h: Harness, c: Conn, forge: () => void): string[] {
    forge();
    h.send(c.frame(0, { flags: SYN, seq: 1000 }), 0);
    expect(h.send(c.frame(1, { flags: SYN | ACK, seq: 5000, ack: 1001 }), 1).map((e) => e.to)).toEqual([0]);
    h.send(c.frame(0, { flags: ACK, seq: 1001, ack: 5001 }), 0);
    return c.sendData(1, 0, 'a secret\n').map((e) => payloadOf(e.frame));
  }

  for (const [what, config] of [['serverPort: 80', SERVER_PORT], ['direction: s2c', S2C]] as const) {
    it(`(${what}) forged on the client's segment: the server's answer to the client re-makes the entry, the rule applies as to any client`, () => {
      const h = new Harness({}, { sided: true }, config);
      const c = new Conn(h, 44000, 1000, 5000);
      const out = handshake(h, c, () => h.send(c.frame(1, { flags: SYN, seq: 777 }), 0));
      expect(out).toEqual(['a [gone]\n']);
      const flows = [...h.gw.flows.values()];
      expect(flows.map((f) => [f.client.port, f.state])).toEqual([[44000, 'established']]);
      expect(h.gw.stats().flows.reoriented).toBe(1);
      // The client's side is known: the server's RST forged on it is dropped.
      expect(h.send(c.frame(1, { flags: RST | ACK, seq: 5010, ack: 1001 }), 0)).toEqual([]);
      expect(h.gw.stats().gateway.wrongSide).toBe(1);
    });
  }

  it('the entry re-made is the same connection: one flow event (what the first entry carried included), one connection of its rule, its number kept', () => {
    const events: Array<Record<string, unknown>> = [];
    const h = new Harness({}, { sided: true, events: (ev) => events.push(ev) }, S2C);
    const c = new Conn(h, 44006, 1000, 5000);
    // Under `port: 80` both orientations have the rule: the forged one got it first.
    expect(handshake(h, c, () => h.send(c.frame(1, { flags: SYN, seq: 777 }), 0))).toEqual(['a [gone]\n']);
    expect(h.gw.stats().flows.reoriented).toBe(1);
    const [f] = [...h.gw.flows.values()];
    expect(f!.id).not.toContain('#');
    expect(h.gw.stats().gateway.connectionsRewritten).toBe(1);
    expect(h.gw.stats().rules['1']).toMatchObject({ connections: 1, active: 1 });
    h.gw.flushEvents(h.now);
    const flowEvents = events.filter((e) => e['event'] === 'flow');
    expect(flowEvents).toHaveLength(1);
    // The forged SYN (the first entry's side 0: the server's side of the real one), the client's
    // SYN and ACK, the server's SYN-ACK and its data.
    expect(flowEvents[0]).toMatchObject({ client: '10.0.0.1:44006', end: 'open', rule: '1', c2s: { frames: 2 }, s2c: { frames: 3 } });
  });

  it('and the forger answering its own SYN as the client, then the server\'s SYN-ACK forged on the client\'s segment: dropped, the real answer re-makes the entry', () => {
    const h = new Harness({}, { sided: true }, SERVER_PORT);
    const c = new Conn(h, 44001, 1000, 5000);
    const out = handshake(h, c, () => {
      h.send(c.frame(1, { flags: SYN, seq: 777 }), 0);
      // The client's SYN-ACK to it, from the client's segment: its answer from the same side.
      expect(h.send(c.frame(0, { flags: SYN | ACK, seq: 1000, ack: 778 }), 0)).toEqual([]);
    });
    expect(out).toEqual(['a [gone]\n']);
    expect(h.gw.stats().flows.reoriented).toBe(1);
    expect(h.gw.stats().gateway.wrongSide).toBe(1);
  });

  it("and the server's SYN-ACK to the client forged on the client's segment ahead of the real one: the real one re-makes the entry", () => {
    const h = new Harness({}, { sided: true }, SERVER_PORT);
    const c = new Conn(h, 44002, 1000, 5000);
    h.send(c.frame(1, { flags: SYN, seq: 777 }), 0);
    h.send(c.frame(0, { flags: SYN, seq: 1000 }), 0);
    h.send(c.frame(1, { flags: SYN | ACK, seq: 9999, ack: 1001 }), 0);
    expect(h.send(c.frame(1, { flags: SYN | ACK, seq: 5000, ack: 1001 }), 1).map((e) => e.to)).toEqual([0]);
    h.send(c.frame(0, { flags: ACK, seq: 1001, ack: 5001 }), 0);
    expect(c.sendData(1, 0, 'a secret\n').map((e) => payloadOf(e.frame))).toEqual(['a [gone]\n']);
    expect(h.gw.stats().flows.reoriented).toBe(1);
  });

  it("and a second SYN forged as the client's with other options: the re-made entry has the options of the SYN the server answered", () => {
    const h = new Harness({}, { sided: true }, SERVER_PORT);
    const c = new Conn(h, 44005, 1000, 5000);
    h.send(c.frame(1, { flags: SYN, seq: 777 }), 0);
    h.send(c.frame(0, { flags: SYN, seq: 1000, options: [{ kind: 'mss', mss: 1400 }, { kind: 'wscale', shift: 7 }, { kind: 'sack-permitted' }, { kind: 'timestamps', tsval: 4242, tsecr: 0 }] }), 0);
    h.send(c.frame(0, { flags: SYN, seq: 3333, options: [{ kind: 'mss', mss: 9000 }] }), 0);
    expect(h.send(c.frame(1, { flags: SYN | ACK, seq: 5000, ack: 1001, options: MSS }), 1).map((e) => e.to)).toEqual([0]);
    expect(h.gw.stats().flows.reoriented).toBe(1);
    const [f] = [...h.gw.flows.values()];
    expect(f!.halves[0]).toMatchObject({ isn: 1000, mss: 1400, wscale: 7, sackPermitted: true, timestamps: true, synTs: 4242 });
  });

  it('in a replayed capture (no sides): the SYN-ACK answering the second SYN with another ISN than the first\'s re-makes the entry', () => {
    const h = new Harness({}, { sided: false }, SERVER_PORT);
    const c = new Conn(h, 44003, 1000, 5000);
    expect(handshake(h, c, () => h.send(c.frame(1, { flags: SYN, seq: 777 }), 0))).toEqual(['a [gone]\n']);
    expect(h.gw.stats().flows.reoriented).toBe(1);
  });

  it('a real simultaneous open (each SYN and SYN-ACK from its sender\'s side, each SYN-ACK with its own ISN) keeps the first SYN\'s sender as the client', () => {
    for (const [sided, firstAnswer] of [[true, 1], [true, 0], [false, 1], [false, 0]] as const) {
      const h = new Harness({}, { sided }, rule('{ port: 80 }'));
      const c = new Conn(h, 44004, 1000, 5000);
      h.send(c.frame(0, { flags: SYN, seq: 1000 }), 0);
      h.send(c.frame(1, { flags: SYN, seq: 5000 }), 1);
      const answers = [() => h.send(c.frame(0, { flags: SYN | ACK, seq: 1000, ack: 5001 }), 0), () => h.send(c.frame(1, { flags: SYN | ACK, seq: 5000, ack: 1001 }), 1)];
      answers[firstAnswer]!();
      answers[1 - firstAnswer]!();
      h.send(c.frame(0, { flags: ACK, seq: 1001, ack: 5001 }), 0);
      expect(h.gw.stats().flows.reoriented).toBe(0);
      expect([...h.gw.flows.values()].map((f) => f.client.port)).toEqual([44004]);
      expect(c.sendData(1, 0, 'a secret\n').map((e) => payloadOf(e.frame))).toEqual(['a [gone]\n']);
    }
  });
});

describe('a wrong-way entry made of segments forged on the client\'s segment (a second review)', () => {
  const rule = (match: string, mid: 'drop' | 'pass' = 'drop') => secretRule(match, mid);
  const SERVER_PORT = rule('{ serverPort: 80 }');
  const S2C = rule('{ port: 80 }\n    direction: s2c');
  const C2S = rule('{ serverPort: 80 }\n    direction: c2s');
  const P = (s: string) => new Uint8Array(Buffer.from(s));

  /** What the real client and server get of each other's data: never a pattern unrewritten. */
  function exchange(c: Conn, reqOff = 0, respOff = 0) {
    const req = c.sendData(0, reqOff, 'GET /secret\n', respOff).map((e) => payloadOf(e.frame));
    const resp = c.sendData(1, respOff, 'a secret\n', reqOff + 12).map((e) => payloadOf(e.frame));
    return { req, resp };
  }
  const leaks = (x: { req: string[]; resp: string[] }) => [...x.req, ...x.resp].filter((p) => p.includes('secret'));

  for (const [what, config] of [['serverPort: 80', SERVER_PORT], ['port: 80, direction: s2c', S2C]] as const) {
    it(`(${what}) a SYN, SYN-ACK and ACK "from the server" forged around the client's SYN confirm a wrong-way entry: its data is dropped until a paired SYN-ACK (never), nothing passes uninspected`, () => {
      const h = new Harness({}, { sided: true }, config);
      const c = new Conn(h, 44100, 1000, 5000);
      h.send(c.frame(1, { flags: SYN, seq: 777 }), 0);
      h.send(c.frame(0, { flags: SYN, seq: 1000 }), 0);
      h.send(c.frame(1, { flags: SYN | ACK, seq: 9999, ack: 1001 }), 0);
      h.send(c.frame(1, { flags: ACK, seq: 10000, ack: 1001 }), 0);
      h.send(c.frame(1, { flags: SYN | ACK, seq: 5000, ack: 1001 }), 1);
      h.send(c.frame(0, { flags: ACK, seq: 1001, ack: 5001 }), 0);
      const x = exchange(c);
      expect(leaks(x)).toEqual([]);
      expect(h.gw.stats().gateway.unproven).toBeGreaterThanOrEqual(2);
    });
  }

  it('a forged SYN "from the server", an answer to it with any ACK and a final ACK, all on the client\'s segment, then the real handshake: nothing passes uninspected', () => {
    const h = new Harness({}, { sided: true }, SERVER_PORT);
    const c = new Conn(h, 44101, 1000, 5000);
    h.send(c.frame(1, { flags: SYN, seq: 777 }), 0);
    h.send(c.frame(0, { flags: SYN | ACK, seq: 1000, ack: 12345 }), 0);
    h.send(c.frame(1, { flags: ACK, seq: 778, ack: 1001 }), 0);
    h.send(c.frame(0, { flags: SYN, seq: 1000 }), 0);
    h.send(c.frame(1, { flags: SYN | ACK, seq: 5000, ack: 1001 }), 1);
    h.send(c.frame(0, { flags: ACK, seq: 1001, ack: 5001 }), 0);
    expect(leaks(exchange(c))).toEqual([]);
  });

  it('TFO: the client\'s SYN with data after a SYN forged "from the server" never reaches the server with its data', () => {
    const h = new Harness({}, { sided: true }, C2S);
    const c = new Conn(h, 44103, 1000, 5000);
    h.send(c.frame(1, { flags: SYN, seq: 777 }), 0);
    const syn = h.send(c.frame(0, { flags: SYN, seq: 1000, payload: P('GET /secret\n') }), 0);
    expect(syn.filter((e) => payloadOf(e.frame).includes('secret'))).toEqual([]);
    // A server that took the data anyway (acknowledging 12 bytes): no reorientation on an ISN no SYN had.
    h.send(c.frame(1, { flags: SYN | ACK, seq: 5000, ack: 1013 }), 1);
    expect(h.gw.stats().flows.reoriented).toBe(0);
    const more = h.send(c.frame(0, { flags: ACK | PSH, seq: 1013, ack: 5001, payload: P('x secret\n') }), 0);
    expect(more).toEqual([]);
  });

  for (const mid of ['drop', 'pass'] as const) {
    it(`(midstream: ${mid}) a stalled handshake's tombstone cleared by a SYN "from the server": the late final ACK's data and the server's are dropped`, () => {
      const h = new Harness({}, { sided: true }, rule('{ serverPort: 80 }', mid));
      const c = new Conn(h, 44200, 1000, 5000);
      h.send(c.frame(0, { flags: SYN, seq: 1000 }), 0);
      h.send(c.frame(1, { flags: SYN | ACK, seq: 5000, ack: 1001 }), 1);
      h.advance(31_000);
      h.advance(1_000);
      h.send(c.frame(1, { flags: SYN, seq: 777 }), 0);
      h.send(c.frame(0, { flags: ACK, seq: 1001, ack: 5001 }), 0);
      const req = h.send(c.data(0, 0, 'GET /secret\n'), 0);
      const resp = h.send(c.data(1, 0, 'a secret\n', 12), 1);
      expect([...req, ...resp]).toEqual([]);
    });
  }

  it('a connection first seen mid-stream (midstream: drop) stays dropped after a SYN forged "from the server" makes an entry', () => {
    const h = new Harness({}, { sided: true }, SERVER_PORT);
    const c = new Conn(h, 44201, 1000, 5000);
    h.send(c.frame(1, { flags: SYN, seq: 777 }), 0);
    expect(h.send(c.data(0, 0, 'GET /secret\n'), 0)).toEqual([]);
    expect(h.send(c.data(1, 0, 'a secret\n', 12), 1)).toEqual([]);
  });

  it('the client\'s RST (kept from the server) and a SYN "from the server" replacing the entry: nothing passes uninspected, however long', () => {
    const h = new Harness({}, { sided: true }, SERVER_PORT);
    const c = new Conn(h, 44304, 1000, 5000);
    h.send(c.frame(0, { flags: SYN, seq: 1000 }), 0);
    h.send(c.frame(0, { flags: RST, seq: 1001 }), 0);
    h.send(c.frame(1, { flags: SYN, seq: 777 }), 0);
    h.send(c.frame(0, { flags: SYN | ACK, seq: 1000, ack: 4242 }), 0);
    h.send(c.frame(1, { flags: ACK, seq: 778, ack: 1001 }), 0);
    h.send(c.frame(1, { flags: SYN | ACK, seq: 5000, ack: 1001 }), 1);
    h.send(c.frame(0, { flags: ACK, seq: 1001, ack: 5001 }), 0);
    expect(leaks(exchange(c))).toEqual([]);
    h.advance(60_000);
    h.advance(1000);
    expect(c.sendData(1, 9, 'b secret\n', 12).filter((e) => payloadOf(e.frame).includes('secret'))).toEqual([]);
  });

  it('legit: the first SYN-ACK lost past the gateway, the server answers the client\'s retransmitted SYN with another ISN (SYN cookies): taken, the connection opens at once', () => {
    const h = new Harness({}, { sided: true }, SERVER_PORT);
    const c = new Conn(h, 44300, 1000, 6000);
    h.send(c.frame(0, { flags: SYN, seq: 1000 }), 0);
    h.send(c.frame(1, { flags: SYN | ACK, seq: 5000, ack: 1001 }), 1); // lost on the client's segment
    h.advance(1000);
    h.send(c.frame(0, { flags: SYN, seq: 1000 }), 0);
    expect(h.send(c.frame(1, { flags: SYN | ACK, seq: 6000, ack: 1001 }), 1).map((e) => e.to)).toEqual([0]);
    h.send(c.frame(0, { flags: ACK, seq: 1001, ack: 6001 }), 0);
    expect(c.sendData(1, 0, 'a secret\n').map((e) => payloadOf(e.frame))).toEqual(['a [gone]\n']);
    // Without the client's second SYN, a second ISN is still no answer to take.
    const h2 = new Harness({}, { sided: true }, SERVER_PORT);
    const c2 = new Conn(h2, 44301, 1000, 5000);
    h2.send(c2.frame(0, { flags: SYN, seq: 1000 }), 0);
    h2.send(c2.frame(1, { flags: SYN | ACK, seq: 5000, ack: 1001 }), 1);
    expect(h2.send(c2.frame(1, { flags: SYN | ACK, seq: 6000, ack: 1001 }), 1)).toEqual([]);
  });
});

describe('handshakes the gateway must still let through, and forgeries it must still stop (a third review)', () => {
  const P = (s: string) => new Uint8Array(Buffer.from(s));
  const TFO = [{ kind: 'mss' as const, mss: 1460 }, { kind: 'unknown' as const, code: 34, data: new Uint8Array(8) }];
  const MD5 = [{ kind: 'unknown' as const, code: 19, data: new Uint8Array(16) }];
  const leaks = (es: { frame: Uint8Array }[]) => es.map((e) => payloadOf(e.frame)).filter((p) => p.includes('secret'));

  it('TFO: a client\'s first SYN with data to a port a rule covers passes without its data (sent again after the handshake), as before', () => {
    const h = new Harness({}, { sided: true }, secretRule('{ port: 80 }', 'drop'));
    const c = new Conn(h, 45000, 1000, 5000);
    const out = h.send(c.frame(0, { flags: SYN, seq: 1000, options: TFO, payload: P('GET /secret\n') }), 0);
    expect(out.map((e) => [e.to, payloadOf(e.frame)])).toEqual([[1, '']]);
    expect(h.gw.stats().gateway.unproven).toBe(0);
  });

  it('simultaneous open with one side\'s SYN-ACK lost before the gateway: the other\'s SYN-ACK proves the sides; the data is rewritten', () => {
    const h = new Harness({}, { sided: true }, secretRule('{ port: 80 }', 'drop'));
    const c = new Conn(h, 48000, 1000, 5000);
    h.send(c.frame(0, { flags: SYN, seq: 1000 }), 0);
    h.send(c.frame(1, { flags: SYN, seq: 5000 }), 1);
    h.send(c.frame(0, { flags: SYN | ACK, seq: 1000, ack: 5001 }), 0);
    const b = h.send(c.frame(1, { flags: ACK | PSH, seq: 5001, ack: 1001, payload: P('b secret\n') }), 1);
    expect(b.map((e) => payloadOf(e.frame))).toEqual(['b [gone]\n']);
    expect(h.gw.stats().gateway.unproven).toBe(0);
  });

  it('a reload that adds a rule does not cut a connection in flight whose handshake never paired (TFO data the server took)', () => {
    const h = new Harness({}, { sided: true }, secretRule('{ port: 80 }', 'drop'));
    const f = (side: 0 | 1, flags: number, seq: number, ack: number, payload?: string) =>
      tcpFrame({ src: side === 0 ? CLIENT : SERVER, dst: side === 0 ? SERVER : CLIENT, srcPort: side === 0 ? 45100 : 8080, dstPort: side === 0 ? 8080 : 45100, flags, seq, ack, ...(payload === undefined ? {} : { payload: P(payload) }), ...(flags & SYN ? { options: TFO } : {}) });
    expect(h.send(f(0, SYN, 1000, 0, 'GET /\n'), 0)).toHaveLength(1);
    expect(h.send(f(1, SYN | ACK, 5000, 1007), 1)).toHaveLength(1); // acknowledges the 6 data bytes: pairs with no SYN
    h.send(f(0, ACK, 1007, 5001), 0);
    h.gw.reload(parseConfig(secretRule('{ port: 8080 }', 'drop'), 'reload.yaml'));
    expect(h.send(f(1, ACK | PSH, 5001, 1007, 'more\n'), 1)).toHaveLength(1);
    expect(h.send(f(0, ACK | PSH, 1007, 5006, 'GET /2\n'), 0)).toHaveLength(1);
    expect(h.gw.stats().gateway.unproven).toBe(0);
  });

  for (const mid of ['pass', 'inspect', 'drop'] as const) {
    it(`(midstream: ${mid}) two ACKs forged on the client's segment, "from the client" and "from the server", confirm no mid-stream entry: the real connection is inspected`, () => {
      const h = new Harness({}, { sided: true }, `policy: { midstream: ${mid} }\n${secretRule('{ port: 80 }', 'drop').replace('policy: { midstream: drop }\n', '')}`);
      const c = new Conn(h, 46000, 1000, 5000);
      h.send(c.frame(0, { flags: ACK, seq: 77777, ack: 88888 }), 0);
      expect(h.send(c.frame(1, { flags: ACK, seq: 88888, ack: 77777 }), 0)).toEqual([]);
      expect(h.gw.stats().gateway.wrongSide).toBe(1);
      h.send(c.frame(0, { flags: SYN, seq: 1000 }), 0);
      h.send(c.frame(1, { flags: SYN | ACK, seq: 5000, ack: 1001 }), 1);
      h.send(c.frame(0, { flags: ACK, seq: 1001, ack: 5001 }), 0);
      expect(c.sendData(0, 0, 'GET /secret\n').map((e) => payloadOf(e.frame))).toEqual(['GET /[gone]\n']);
      expect(c.sendData(1, 0, 'a secret\n', 12).map((e) => payloadOf(e.frame))).toEqual(['a [gone]\n']);
    });
  }

  it('TCP-MD5 segments on a covered connection are dropped (signed): forged client SYNs the server would drop cannot crowd out the real one\'s record', () => {
    const h = new Harness({}, { sided: true }, secretRule('{ serverPort: 80 }', 'drop'));
    const c = new Conn(h, 46300, 1000, 5000);
    expect(h.send(c.frame(0, { flags: SYN, seq: 4242, options: MD5 }), 0)).toEqual([]);
    h.send(c.frame(0, { flags: SYN, seq: 1000 }), 0);
    expect(h.send(c.frame(0, { flags: SYN, seq: 4343, options: MD5 }), 0)).toEqual([]);
    h.send(c.frame(1, { flags: SYN | ACK, seq: 5000, ack: 1001 }), 1);
    h.send(c.frame(0, { flags: ACK, seq: 1001, ack: 5001 }), 0);
    expect(c.sendData(1, 0, 'a secret\n', 0).map((e) => payloadOf(e.frame))).toEqual(['a [gone]\n']);
    expect(h.gw.stats().gateway.signed).toBe(2);
  });

  for (const mid of ['pass', 'drop', 'inspect'] as const) {
    it(`(midstream: ${mid}) the client's exact RST with a TCP-MD5 option (a server without the key drops it) ends nothing: dropped, the connection stays inspected`, () => {
      const h = new Harness({}, { sided: true }, `policy: { midstream: ${mid} }\n${secretRule('{ port: 80 }', 'drop').replace('policy: { midstream: drop }\n', '')}`);
      const c = h.connect(46400);
      expect(leaks(c.sendData(0, 0, 'GET /secret\n'))).toEqual([]);
      expect(h.send(c.frame(0, { flags: RST, seq: c.isnC + 1 + 12, options: MD5 }), 0)).toEqual([]);
      h.advance(5000);
      h.advance(5000);
      h.advance(1500);
      expect([...leaks(c.sendData(0, 12, 'GET /secret\n')), ...leaks(c.sendData(1, 0, 'a secret\n', 24))]).toEqual([]);
      expect(h.gw.stats().gateway.rstAccepted).toBe(0);
    });
  }

  it('a signed segment of a connection no rule covers passes (BGP with TCP-MD5 through the bridge)', () => {
    const h = new Harness({}, { sided: true }, secretRule('{ port: 80 }', 'drop'));
    const f = tcpFrame({ src: CLIENT, dst: SERVER, srcPort: 40179, dstPort: 179, flags: SYN, seq: 1, options: MD5 });
    expect(h.send(f, 0)).toHaveLength(1);
    expect(h.gw.stats().gateway.signed).toBe(0);
  });
});
