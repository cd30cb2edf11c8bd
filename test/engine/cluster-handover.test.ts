/**
 * Connection hand-over between two in-process gateways (Gateway.exportConnection /
 * importConnection, docs/ARCHITECTURE.md §5), with real frames. Gateway A handles a handshake and part of a
 * stream with matches; its state crosses as JSON text to gateway B, which handles the rest and
 * retransmissions of earlier segments. A third gateway C, with the same config, sees every frame:
 * it is the reference. Shows:
 * - replace rule: what A and then B released, reassembled by sequence number, is exactly the
 *   rewritten stream (a match held on A and completed on B included; retransmissions agree byte
 *   for byte with what was released before), and every frame B emits after the hand-over —
 *   translated ACKs included — is byte-identical to C's for the same input;
 * - ftp agent behind masquerade NAT (examples/masquerade.yaml): a PORT / EPRT command completed
 *   on A moves with its NAT expectation, and the server's data-connection SYN is translated by B;
 *   a command split across the hand-over point is rewritten exactly once (on B), never again on a
 *   retransmission, and its data connection works on B too;
 * - importConnection of corrupt state returns null and counts `importFailed`; so does a full table.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { tcpFrame } from '../../src/wire/tcp-frame.js';
import { parseConfig, type Config } from '../../src/config/index.js';
import { Gateway, type ConnectionState, type Side } from '../../src/engine/gateway.js';
import type { Tuple } from '../../src/nat/nat.js';
import { DEFAULT_LIMITS } from '../../src/stream/limits.js';
import { decodeFrame, type FrameTcp } from '../../src/wire/frame.js';
import { parseIp, type IpAddr } from '../../src/wire/ip.js';

const SYN = 0x02, ACK = 0x10, PSH = 0x08, FIN = 0x01;
const ip = (s: string): number => s.split('.').reduce((a, o) => a * 256 + Number(o), 0) >>> 0;
const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
const latin1 = (b: Uint8Array): string => Buffer.from(b).toString('latin1');
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

function decode(f: Uint8Array): FrameTcp {
  const d = decodeFrame(f, { link: 'ethernet', verifyChecksums: true, ipv6: true });
  if (d.kind !== 'tcp') throw new Error(`not a valid TCP frame: ${d.kind === 'error' ? d.reason : d.kind}`);
  return d as FrameTcp;
}
const payloadOf = (f: Uint8Array): Uint8Array => {
  const d = decode(f);
  return f.subarray(d.payloadOff, d.payloadOff + d.payloadLen);
};

interface Out {
  frame: Uint8Array;
  to: Side;
}

/**
 * Feeds every frame to the reference C and to the system under test (A, then B after
 * `handOver`), one copy each (the gateway rewrites frames in place). Records what each emitted.
 */
class Rig {
  now = 10_000;
  readonly a: Gateway;
  readonly b: Gateway;
  readonly c: Gateway;
  cur: Gateway;
  /** Everything the system under test emitted (A, then B). */
  readonly sut: Out[] = [];
  /** Per step after the hand-over: [B's frames, C's frames]. */
  readonly afterSteps: Array<[Out[], Out[]]> = [];
  handedOver = false;

  constructor(config: Config) {
    this.a = new Gateway({ config });
    this.b = new Gateway({ config });
    this.c = new Gateway({ config });
    this.cur = this.a;
  }

  send(frame: Uint8Array, from: Side): { sut: Out[]; ref: Out[] } {
    this.now += 1;
    const ref: Out[] = [];
    const sut: Out[] = [];
    this.c.handleFrame(frame.slice(), from, this.now, (f, to) => ref.push({ frame: f.slice(), to }));
    this.cur.handleFrame(frame.slice(), from, this.now, (f, to) => sut.push({ frame: f.slice(), to }));
    this.sut.push(...sut);
    if (this.handedOver) this.afterSteps.push([sut, ref]);
    else expect(sut.map((o) => `${o.to}:${hex(o.frame)}`)).toEqual(ref.map((o) => `${o.to}:${hex(o.frame)}`));
    return { sut, ref };
  }

  /** A's connection → JSON text → B. */
  handOver(client: { addr: IpAddr; port: number }, server: { addr: IpAddr; port: number }, raw: [Tuple | undefined, Tuple | undefined]): ConnectionState {
    const f = this.a.flows.peek(client, server);
    expect(f).toBeDefined();
    const text = JSON.stringify(this.a.exportConnection(f!, raw));
    const st = JSON.parse(text) as ConnectionState;
    const g = this.b.importConnection(st, this.now, [undefined, undefined]);
    expect(g).not.toBeNull();
    expect(this.b.counters.imported).toBe(1);
    expect(this.b.counters.importFailed).toBe(0);
    this.a.releaseConnection(f!);
    expect(this.a.flows.peek(client, server)).toBeUndefined();
    this.cur = this.b;
    this.handedOver = true;
    return st;
  }
}

/**
 * The byte stream carried by data segments going to `to`, by sequence number from `isn` + 1:
 * every byte sent more than once must be the same. Returns the contiguous prefix and whether a
 * FIN right after it was seen.
 */
function reassemble(outs: readonly Out[], to: Side, isn: number): { text: string; fin: boolean } {
  const bytes = new Map<number, number>();
  let finAt = -1;
  for (const o of outs) {
    if (o.to !== to) continue;
    const d = decode(o.frame);
    const p = o.frame.subarray(d.payloadOff, d.payloadOff + d.payloadLen);
    const off = (d.tcp.seq - (isn + 1)) >>> 0;
    if ((d.tcp.flags & SYN) !== 0) continue;
    for (let i = 0; i < p.length; i++) {
      const have = bytes.get(off + i);
      if (have !== undefined) expect(have, `byte at ${off + i} sent twice with different values`).toBe(p[i]);
      bytes.set(off + i, p[i]!);
    }
    if (d.tcp.flags & FIN) {
      if (finAt >= 0) expect(off + p.length).toBe(finAt);
      finAt = off + p.length;
    }
  }
  const arr: number[] = [];
  while (bytes.has(arr.length)) arr.push(bytes.get(arr.length)!);
  return { text: Buffer.from(arr).toString('latin1'), fin: finAt === arr.length };
}

// -------------------------------------------------------------------------------------------------

for (const v6 of [false, true]) describe(`hand-over of a rewritten connection (replace rule, IPv${v6 ? 6 : 4})`, () => {
  const LONG = 'a much longer replacement text for cat';
  const config = parseConfig(
    [
      'rules:',
      '  - name: rewrite-8001',
      '    match: { port: 8001 }',
      '    direction: s2c',
      '    agent: replace',
      '    replace:',
      '      - { find: "needle-long-word", with: "pin" }',
      `      - { find: "cat", with: "${LONG}" }`,
    ].join('\n'),
    'handover.yaml',
  );
  // IPv6: the flow entry crosses with its addresses as RFC 5952 text (flow/json.ts).
  const CL = { addr: v6 ? parseIp('fd00:200::1')! : ip('10.200.0.1'), port: 40000 };
  const SV = { addr: v6 ? parseIp('fd00:201::2')! : ip('10.200.1.2'), port: 8001 };
  const CISN = 1000;
  const SISN = 0xfffffe00; // the server's sequence numbers wrap during the transfer

  // ~3 KB with matches everywhere; the hand-over cuts the 4th "needle-long-word" in two.
  let body = '';
  for (let i = 0; body.length < 3000; i++) body += `line ${i}: the cat sat; ${i % 3 === 0 ? 'needle-long-word ' : ''}filler ${'x'.repeat(i % 17)}\n`;
  const expected = body.replace(/needle-long-word|cat/g, (m) => (m === 'cat' ? LONG : 'pin'));
  let cut = -1;
  for (let i = 0, from = 0; i < 4; i++) {
    cut = body.indexOf('needle-long-word', from);
    from = cut + 1;
  }
  cut += 7; // "needle-" on A (held), "long-word" on B
  /** Server segments [start, end) of the body; one ends at `cut`. */
  const segs: Array<[number, number]> = [];
  const sizes = [37, 101, 53, 11, 240, 77];
  for (let p = 0, i = 0; p < body.length; i++) {
    let e = Math.min(body.length, p + sizes[i % sizes.length]!);
    if (p < cut && e > cut) e = cut;
    segs.push([p, e]);
    p = e;
  }
  const handIdx = segs.findIndex(([, e]) => e === cut); // last segment A handles

  const req = 'GET /big HTTP/1.0\r\n\r\n';
  const cFrame = (seq: number, ack: number, flags: number, payload?: Uint8Array): Uint8Array =>
    tcpFrame({ src: CL.addr, dst: SV.addr, srcPort: CL.port, dstPort: SV.port, seq, ack, flags, ...(payload ? { payload } : {}) });
  const sFrame = (seq: number, ack: number, flags: number, payload?: Uint8Array): Uint8Array =>
    tcpFrame({ src: SV.addr, dst: CL.addr, srcPort: SV.port, dstPort: CL.port, seq, ack, flags, ...(payload ? { payload } : {}) });
  const sData = (i: number, fin = false): Uint8Array => {
    const [s, e] = segs[i]!;
    return sFrame(SISN + 1 + s, CISN + 1 + req.length, ACK | PSH | (fin ? FIN : 0), enc(body.slice(s, e)));
  };

  it('B continues where A stopped: exact rewritten stream, ACKs and frames as the reference', () => {
    const rig = new Rig(config);
    const mss = [{ kind: 'mss' as const, mss: 1460 }];
    rig.send(tcpFrame({ src: CL.addr, dst: SV.addr, srcPort: CL.port, dstPort: SV.port, seq: CISN, flags: SYN, options: mss }), 0);
    rig.send(tcpFrame({ src: SV.addr, dst: CL.addr, srcPort: SV.port, dstPort: CL.port, seq: SISN, ack: CISN + 1, flags: SYN | ACK, options: mss }), 1);
    rig.send(cFrame(CISN + 1, SISN + 1, ACK), 0);
    rig.send(cFrame(CISN + 1, SISN + 1, ACK | PSH, enc(req)), 0);
    /** The client's ACK: what it got in order (new space), as the system under test delivered it. */
    const clientAck = (): Uint8Array => {
      const r = reassemble(rig.sut, 0, SISN);
      return cFrame(CISN + 1 + req.length, SISN + 1 + r.text.length + (r.fin ? 1 : 0), ACK);
    };
    const ackTranslations: Array<[number, number]> = [];
    const ackStep = (): void => {
      const { sut, ref } = rig.send(clientAck(), 0);
      if (rig.handedOver && sut.length > 0) ackTranslations.push([decode(sut[0]!.frame).tcp.ack, decode(ref[0]!.frame).tcp.ack]);
    };

    for (let i = 0; i <= handIdx; i++) {
      rig.send(sData(i), 1);
      if (i % 2 === 1) ackStep();
    }
    // "needle-" is held on A: nothing of it was released.
    const onA = reassemble(rig.sut, 0, SISN).text;
    expect(expected.startsWith(onA)).toBe(true);
    expect(body.slice(0, cut).endsWith('needle-')).toBe(true);
    expect(onA).toBe(body.slice(0, cut - 7).replace(/needle-long-word|cat/g, (m) => (m === 'cat' ? LONG : 'pin')));
    const changesOnA = rig.a.flows.peek(CL, SV)!.conn!.changes;
    expect(changesOnA).toBeGreaterThan(0);

    const st = rig.handOver(CL, SV, [undefined, undefined]);
    expect(st.flow.client.addr).toBe(v6 ? 'fd00:200::1' : ip('10.200.0.1'));
    const fB = rig.b.flows.peek(CL, SV)!;
    expect(fB.conn).not.toBeNull();
    expect(fB.conn!.agent?.name).toBe('replace');
    // (`changes` is a per-node counter of commands created here, not state: it starts at 0.)
    expect(fB.conn!.changes).toBe(0);

    // The client acknowledges what A released: B translates it like C.
    ackStep();
    for (let i = handIdx + 1; i < segs.length; i++) {
      rig.send(sData(i, i === segs.length - 1), 1);
      if (i % 2 === 0) ackStep();
      // Retransmissions of segments A handled (one acknowledged, one maybe not, the held one).
      if (i === handIdx + 2) {
        rig.send(sData(0), 1);
        rig.send(sData(handIdx - 1), 1);
        rig.send(sData(handIdx), 1);
      }
      if (i === handIdx + 4) ackStep(); // a duplicate ACK
    }
    ackStep();
    // The client closes; the server acknowledges its FIN.
    rig.send(cFrame(CISN + 1 + req.length, SISN + 1 + expected.length + 1, ACK | FIN), 0);
    rig.send(sFrame(SISN + 1 + body.length + 1, CISN + 1 + req.length + 1, ACK), 1);

    const r = reassemble(rig.sut, 0, SISN);
    expect(r.text).toBe(expected);
    expect(r.fin).toBe(true);
    // c2s unchanged.
    expect(reassemble(rig.sut, 1, CISN).text).toBe(req);
    // Every frame B emitted equals the reference's, ACKs included.
    expect(rig.afterSteps.length).toBeGreaterThan(10);
    for (const [b, c] of rig.afterSteps) expect(b.map((o) => `${o.to}:${hex(o.frame)}`)).toEqual(c.map((o) => `${o.to}:${hex(o.frame)}`));
    expect(ackTranslations.length).toBeGreaterThan(5);
    for (const [b, c] of ackTranslations) expect(b).toBe(c);
    // The ACK of everything maps back to the original stream's end (+ FIN).
    expect(ackTranslations.at(-1)![0]).toBe((SISN + 1 + body.length + 1) >>> 0);
    expect(rig.b.stats().stream.agentError).toBe(0);
  });
});

// -------------------------------------------------------------------------------------------------

describe('hand-over of an FTP control connection behind masquerade NAT', () => {
  const config = parseConfig(readFileSync(join(import.meta.dirname, '../../examples/masquerade.yaml'), 'utf8'), 'masquerade.yaml');
  const MASQ = ip('10.200.0.100');
  const CL = { addr: ip('10.200.0.1'), port: 40000 };
  const SV = { addr: ip('10.200.0.2'), port: 21 };
  const CISN = 7000;
  const SISN = 0x7ffffff0;
  const greet = '220 ready\r\n';

  function start() {
    const rig = new Rig(config);
    const mss = [{ kind: 'mss' as const, mss: 1460 }];
    const syn = rig.send(tcpFrame({ src: CL.addr, dst: SV.addr, srcPort: CL.port, dstPort: SV.port, seq: CISN, flags: SYN, options: mss }), 0);
    expect(syn.sut).toHaveLength(1);
    const d = decode(syn.sut[0]!.frame);
    expect(d.ip!.src).toBe(MASQ);
    const P = d.tcp.srcPort; // the masqueraded port: replies arrive on side 1 to MASQ:P
    const cFrame = (seq: number, ack: number, flags: number, payload?: Uint8Array): Uint8Array =>
      tcpFrame({ src: CL.addr, dst: SV.addr, srcPort: CL.port, dstPort: SV.port, seq, ack, flags, ...(payload ? { payload } : {}) });
    const sFrame = (seq: number, ack: number, flags: number, payload?: Uint8Array): Uint8Array =>
      tcpFrame({ src: SV.addr, dst: MASQ, srcPort: SV.port, dstPort: P, seq, ack, flags, ...(payload ? { payload } : {}) });
    rig.send(tcpFrame({ src: SV.addr, dst: MASQ, srcPort: SV.port, dstPort: P, seq: SISN, ack: CISN + 1, flags: SYN | ACK, options: mss }), 1);
    rig.send(cFrame(CISN + 1, SISN + 1, ACK), 0);
    rig.send(sFrame(SISN + 1, CISN + 1, ACK | PSH, enc(greet)), 1);
    const raw: [Tuple, Tuple] = [
      { proto: 'tcp', src: CL.addr, sport: CL.port, dst: SV.addr, dport: SV.port },
      { proto: 'tcp', src: SV.addr, sport: SV.port, dst: MASQ, dport: P },
    ];
    /** The client's stream so far as the server got it (through A, then B). */
    const c2s = (): string => reassemble(rig.sut, 1, CISN).text;
    return { rig, P, cFrame, sFrame, raw, c2s };
  }

  /** The server opens the data connection (active mode) from port 20 to the announced endpoint. */
  function dataSyn(rig: Rig, port: number) {
    const r = rig.send(tcpFrame({ src: SV.addr, dst: MASQ, srcPort: 20, dstPort: port, seq: 555, flags: SYN, options: [{ kind: 'mss', mss: 1460 }] }), 1);
    expect(r.sut).toHaveLength(1);
    expect(r.sut[0]!.to).toBe(0);
    const d = decode(r.sut[0]!.frame);
    return { dst: d.ip!.dst, dport: d.tcp.dstPort, src: d.ip!.src, sport: d.tcp.srcPort };
  }

  const CMDS = [
    { name: 'PORT', line: 'PORT 10,200,0,1,19,137\r\n', split: 'PORT 10,200,0'.length, re: /^PORT 10,200,0,100,(\d+),(\d+)\r\n$/ },
    { name: 'EPRT', line: 'EPRT |1|10.200.0.1|5001|\r\n', split: 'EPRT |1|10.200.'.length, re: /^EPRT \|1\|10\.200\.0\.100\|(\d+)\|\r\n$/ },
  ];
  const portOf = (m: RegExpExecArray): number => (m.length === 3 ? Number(m[1]) * 256 + Number(m[2]) : Number(m[1]));

  for (const cmd of CMDS) {
    it(`${cmd.name} decided on A: its NAT expectation moves, B translates the data connection`, () => {
      const { rig, cFrame, sFrame, raw, c2s } = start();
      const cmdFrame = cFrame(CISN + 1, SISN + 1 + greet.length, ACK | PSH, enc(cmd.line));
      rig.send(cmdFrame, 0);
      const m = cmd.re.exec(c2s());
      expect(m, c2s()).not.toBeNull();
      const Q = portOf(m!);
      expect(rig.a.nat!.counters.expectationsAdded).toBe(1);
      expect(rig.a.nat!.expectationList()[0]!.dport).toBe(Q);

      const st = rig.handOver(CL, SV, raw);
      expect(st.nat!.entries).toHaveLength(1);
      expect(st.nat!.expectations).toHaveLength(1);
      expect(rig.b.nat!.size.expectations).toBe(1);
      // The client's retransmission reaches B: the same rewritten bytes, no second expectation.
      const re = rig.send(cmdFrame, 0);
      expect(re.sut).toHaveLength(1);
      expect(latin1(payloadOf(re.sut[0]!.frame))).toBe(c2s());
      expect(rig.b.nat!.counters.expectationsAdded).toBe(0);
      // The server answers (through B's copy of the NAT entry) and opens the data connection.
      const ok = '200 ok\r\n';
      const rep = rig.send(sFrame(SISN + 1 + greet.length, CISN + 1 + c2s().length, ACK | PSH, enc(ok)), 1);
      expect(rep.sut).toHaveLength(1);
      expect(decode(rep.sut[0]!.frame).ip!.dst).toBe(CL.addr);
      const t = dataSyn(rig, Q);
      expect(t).toEqual({ src: SV.addr, sport: 20, dst: CL.addr, dport: 5001 });
      expect(rig.b.nat!.counters.expectationsConsumed).toBe(1);
      // B behaved as the reference did for every frame.
      for (const [b, c] of rig.afterSteps) expect(b.map((o) => `${o.to}:${hex(o.frame)}`)).toEqual(c.map((o) => `${o.to}:${hex(o.frame)}`));
      expect(rig.b.counters.natDropped).toEqual({});
    });

    it(`${cmd.name} split across the hand-over point is rewritten once, on B`, () => {
      const { rig, cFrame, sFrame, raw, c2s } = start();
      // Cut inside the address: the verb leaves A, the address is held there.
      const first = cmd.line.slice(0, cmd.split);
      const rest = cmd.line.slice(cmd.split);
      const f1 = cFrame(CISN + 1, SISN + 1 + greet.length, ACK | PSH, enc(first));
      rig.send(f1, 0);
      // Only the verb went out; the address is held (nothing decided, nothing expected).
      expect(cmd.line.startsWith(c2s())).toBe(true);
      expect(c2s().length).toBeLessThan(first.length);
      expect(rig.a.nat!.counters.expectationsAdded).toBe(0);

      const st = rig.handOver(CL, SV, raw);
      expect(st.nat!.expectations).toHaveLength(0);
      // Retransmission of the first part, then the rest: decided once, on B.
      rig.send(f1, 0);
      const f2 = cFrame(CISN + 1 + first.length, SISN + 1 + greet.length, ACK | PSH, enc(rest));
      rig.send(f2, 0);
      rig.send(f2, 0); // and a retransmission of the rest
      rig.send(cFrame(CISN + 1, SISN + 1 + greet.length, ACK | PSH, enc(cmd.line)), 0); // a repacketised one
      const m = cmd.re.exec(c2s());
      expect(m, c2s()).not.toBeNull();
      const Q = portOf(m!);
      expect(rig.b.nat!.counters.expectationsAdded).toBe(1);
      expect(rig.a.nat!.counters.expectationsAdded).toBe(0);
      expect(rig.b.nat!.expectationList()[0]!.dport).toBe(Q);
      const ok = '200 ok\r\n';
      rig.send(sFrame(SISN + 1 + greet.length, CISN + 1 + c2s().length, ACK | PSH, enc(ok)), 1);
      expect(dataSyn(rig, Q)).toEqual({ src: SV.addr, sport: 20, dst: CL.addr, dport: 5001 });
      for (const [b, c] of rig.afterSteps) expect(b.map((o) => `${o.to}:${hex(o.frame)}`)).toEqual(c.map((o) => `${o.to}:${hex(o.frame)}`));
    });
  }
});

// -------------------------------------------------------------------------------------------------

describe('importConnection refusals', () => {
  const config = parseConfig('rules:\n  - match: { port: 8001 }\n    agent: replace\n    replace:\n      - { find: "cat", with: "dog" }\n', 'r.yaml');
  const CL = { addr: ip('10.0.0.1'), port: 1111 };
  const SV = { addr: ip('10.0.0.2'), port: 8001 };

  /** A real state: a handshake and a held "ca" on a fresh gateway. */
  function state(client = CL): ConnectionState {
    const g = new Gateway({ config });
    const e = (): void => {};
    g.handleFrame(tcpFrame({ src: client.addr, dst: SV.addr, srcPort: client.port, dstPort: SV.port, seq: 100, flags: SYN }), 0, 1, e);
    g.handleFrame(tcpFrame({ src: SV.addr, dst: client.addr, srcPort: SV.port, dstPort: client.port, seq: 900, ack: 101, flags: SYN | ACK }), 1, 2, e);
    g.handleFrame(tcpFrame({ src: client.addr, dst: SV.addr, srcPort: client.port, dstPort: SV.port, seq: 101, ack: 901, flags: ACK }), 0, 3, e);
    g.handleFrame(tcpFrame({ src: SV.addr, dst: client.addr, srcPort: SV.port, dstPort: client.port, seq: 901, ack: 101, flags: ACK, payload: enc('a ca') }), 1, 4, e);
    return JSON.parse(JSON.stringify(g.exportConnection(g.flows.peek(client, SV)!, [undefined, undefined]))) as ConnectionState;
  }

  it('a good state imports (control)', () => {
    const g = new Gateway({ config });
    expect(g.importConnection(state(), 10, [undefined, undefined])).not.toBeNull();
    expect(g.counters.imported).toBe(1);
  });

  it('corrupt states return null and count importFailed', () => {
    const good = state();
    const corrupt: unknown[] = [
      { ...good, flow: { ...good.flow, v: 9 } },
      { ...good, flow: null },
      { ...good, flow: { ...good.flow, client: 'nope' } },
      { ...good, agent: { name: 'monitor', state: good.agent!.state } },
      { ...good, agent: { name: 'replace', state: { garbage: 1 } } },
      { ...good, conn: { v: 1, dirs: [good.conn!.dirs[0], { nonsense: true }] } },
      { ...good, conn: { v: 2, dirs: good.conn!.dirs } },
    ];
    const g = new Gateway({ config });
    let n = 0;
    for (const st of corrupt) {
      expect(g.importConnection(st as ConnectionState, 10, [undefined, undefined])).toBeNull();
      expect(g.counters.importFailed).toBe(++n);
    }
    expect(g.counters.imported).toBe(0);
  });

  it('a full table returns null and counts importFailed', () => {
    const g = new Gateway({ config, limits: { ...DEFAULT_LIMITS, maxConnections: 1 } });
    expect(g.importConnection(state(), 10, [undefined, undefined])).not.toBeNull();
    const other = state({ addr: ip('10.0.0.3'), port: 2222 });
    expect(g.importConnection(other, 10, [undefined, undefined])).toBeNull();
    expect(g.counters.importFailed).toBe(1);
    expect(g.flows.counters.importRefused).toBe(1);
    expect(g.flows.size).toBe(1);
    // The same 4-tuple again replaces its entry (not refused).
    expect(g.importConnection(state(), 11, [undefined, undefined])).not.toBeNull();
    expect(g.counters.importFailed).toBe(1);
  });
});
