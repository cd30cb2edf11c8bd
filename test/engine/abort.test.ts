/**
 * Connections an agent gives up on (engine/abort.ts, AgentOutput.abort): the http agent refuses a
 * request, or a response whose header already went out, and the gateway resets both ends at the
 * sequence number each expects, answers later segments with exact RSTs (bounded), forwards
 * nothing more; a response refused while its header is held gets its 502 and no reset. Under
 * NAT the RST back to the client carries the client's own addresses.
 */
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/index.js';
import { MAX_ANSWERS, REANSWER_MS, resetFrame } from '../../src/engine/abort.js';
import { Gateway, type Side } from '../../src/engine/gateway.js';
import { decodeFrame, type FrameTcp } from '../../src/wire/frame.js';
import { ipToString, parseIp } from '../../src/wire/ip.js';
import { tcpFrame } from '../../src/wire/tcp-frame.js';
import { ACK, FIN, fakeLogger, Harness, HTTP_CONFIG, PSH, RST, SYN, type Emitted } from '../hostile/harness.js';

const HTTP = HTTP_CONFIG;

const REQ1 = 'GET /a HTTP/1.1\r\nHost: a\r\n\r\n';
const RESP1 = 'HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nHello world';
/** An invalid chunk size: refused (RFC 9112 §7.1), and a request cannot be answered. */
const BAD_UPLOAD = 'POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nsecret\r\n0\r\n\r\n';

function tcpOf(e: Emitted): FrameTcp {
  const d = decodeFrame(e.frame, { link: 'ethernet', verifyChecksums: true });
  if (d.kind !== 'tcp') throw new Error(`not TCP: ${d.kind}`);
  return d;
}
const isRst = (e: Emitted): boolean => (tcpOf(e).tcp.flags & RST) !== 0;
const payloadBytes = (es: Emitted[], to: Side): number => es.filter((e) => e.to === to).reduce((n, e) => n + tcpOf(e).payloadLen, 0);

/** A connection with one exchange done: the client received the rewritten response (`outLen` bytes) and acknowledged it. */
function afterOneExchange(port: number) {
  const h = new Harness({}, {}, HTTP);
  const c = h.connect(port);
  h.send(c.data(0, 0, REQ1), 0);
  const resp = h.send(c.data(1, 0, RESP1, REQ1.length), 1);
  const outLen = payloadBytes(resp, 0);
  expect(outLen).toBe(RESP1.length - 4); // "Hi there", Content-Length: 8
  h.send(c.data(0, REQ1.length, '', outLen, ACK), 0);
  return { h, c, outLen };
}

const UPGRADE = 'GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n';

/** An Upgrade request with a pipelined request behind it (held until the answer: the agent's hold timeout gives up): `sent` bytes went to the server. */
function heldAfterUpgrade(port: number) {
  const h = new Harness({}, {}, HTTP);
  const c = h.connect(port);
  h.send(c.data(0, 0, UPGRADE + 'GET /x HTTP/1.1\r\nHost: a\r\n\r\n'), 0);
  return { h, c, sent: payloadBytes(h.out, 1) };
}

describe('a refused request resets the connection', () => {
  it('RSTs to both ends where each expects its next byte, nothing of the refused body forwarded', () => {
    const { h, c, outLen } = afterOneExchange(41000);
    const out = h.send(c.data(0, REQ1.length, BAD_UPLOAD, outLen), 0);
    const toServer = out.filter((e) => e.to === 1);
    const toClient = out.filter((e) => e.to === 0);
    // The header section went out before its body was refused; nothing of the body reaches the
    // server, then its RST, at the byte after all it had (the requests grew: Accept-Encoding).
    expect(toServer.map((e) => Buffer.from(e.frame).toString('latin1')).join('')).not.toContain('secret');
    const rs = toServer.filter(isRst);
    expect(rs).toHaveLength(1);
    expect(tcpOf(rs[0]!).tcp.seq).toBe(c.isnC + 1 + payloadBytes(h.out, 1));
    expect(tcpOf(rs[0]!).tcp.srcPort).toBe(41000);
    // The client's RST comes as from the server, in the numbering the client sees (after the rewrite).
    expect(toClient).toHaveLength(1);
    const rc = tcpOf(toClient[0]!);
    expect(rc.tcp.flags).toBe(RST);
    expect(rc.tcp.seq).toBe(c.isnS + 1 + outLen);
    expect([ipToString(rc.src), rc.tcp.srcPort, ipToString(rc.dst), rc.tcp.dstPort]).toEqual(['10.0.0.2', 80, '10.0.0.1', 41000]);
    const st = h.gw.stats();
    expect(st.gateway).toMatchObject({ aborted: 1, rstOriginated: 2 });
    expect(st.agents.http.refused).toMatchObject({ chunk: 1 });
    const f = [...h.gw.flows.values()][0]!;
    expect(f.state).toBe('closed');
  });

  it('later segments are dropped and answered with a RST at their ACK, at most MAX_ANSWERS per end; RSTs are not answered', () => {
    const { h, c, outLen } = afterOneExchange(41001);
    h.send(c.data(0, REQ1.length, BAD_UPLOAD, outLen), 0);
    // The server had a segment in flight: it is not forwarded, its sender gets a RST at its own ACK.
    const late = h.send(c.data(1, RESP1.length, 'more', REQ1.length + 5), 1);
    expect(late).toHaveLength(1);
    expect(late[0]!.to).toBe(1);
    expect(tcpOf(late[0]!).tcp.flags).toBe(RST);
    expect(tcpOf(late[0]!).tcp.seq).toBe(c.isnC + 1 + REQ1.length + 5);
    // The rest of its window carries the same ACK: answered once.
    expect(h.send(c.data(1, RESP1.length + 4, 'more', REQ1.length + 5), 1)).toEqual([]);
    // The client's retransmission of the request: a RST at its ACK.
    const again = h.send(c.data(0, REQ1.length, BAD_UPLOAD, outLen + 2), 0);
    expect(again.map((e) => [e.to, tcpOf(e).tcp.flags, tcpOf(e).tcp.seq])).toEqual([[0, RST, c.isnS + 1 + outLen + 2]]);
    // A RST from either end: dropped, not answered.
    expect(h.send(c.data(0, REQ1.length, '', 0, RST), 0)).toEqual([]);
    // The same ACK again once REANSWER_MS passed (that RST may have been lost), up to the budget.
    for (let i = 0; i < MAX_ANSWERS + 5; i++) {
      h.advance(REANSWER_MS);
      h.send(c.data(0, REQ1.length, '', outLen + 2, ACK), 0);
    }
    // The server's budget is its own: a challenge ACK from it is still answered.
    expect(h.send(c.data(1, RESP1.length, '', REQ1.length + 9, ACK), 1).map((e) => tcpOf(e).tcp.seq)).toEqual([c.isnC + 1 + REQ1.length + 9]);
    const st = h.gw.stats().gateway;
    expect(st.rstOriginated).toBe(2 + 2 + MAX_ANSWERS);
    expect(st.abortDropped).toBe(5 + MAX_ANSWERS + 5);
    // A reset connection leaves the table like any other (closedTimeoutMs).
    h.advance(20_000);
    expect(h.gw.flows.size).toBe(0);
  });

  it('an abort decided in a timer is sent from the timer: pipelined bytes held after an Upgrade request, no answer', () => {
    const { h, c, sent } = heldAfterUpgrade(41007);
    expect(sent).toBeGreaterThanOrEqual(UPGRADE.length);
    expect(h.out.map((e) => Buffer.from(e.frame).toString('latin1')).join('')).not.toContain('GET /x'); // held
    const out = h.advance(60_000);
    const r = out.filter(isRst).map((e) => [e.to, tcpOf(e).tcp.seq]);
    expect(r).toEqual([[1, c.isnC + 1 + sent], [0, c.isnS + 1]]);
    expect(h.gw.stats().gateway.aborted).toBe(1);
    expect(h.gw.stats().agents.http.refused).toMatchObject({ await: 1 });
  });

  it('the client may open the same 4-tuple again at once: a new connection, inspected from its SYN', () => {
    const { h, c, outLen } = afterOneExchange(41006);
    h.send(c.data(0, REQ1.length, BAD_UPLOAD, outLen), 0);
    const again = h.connect(41006, 77_000, 88_000);
    expect(h.out.slice(-3).map((e) => [e.to, tcpOf(e).tcp.flags])).toEqual([[1, SYN], [0, SYN | ACK], [1, ACK]]);
    const out = h.send(again.data(0, 0, REQ1), 0);
    expect(out.map((e) => Buffer.from(e.frame).toString('latin1')).join('')).toContain('GET /a HTTP/1.1');
    expect(h.gw.stats().gateway.aborted).toBe(1);
  });

  it('the gateway originates nothing else for it: bytes held at the abort are never sent', () => {
    const { h, c, outLen } = afterOneExchange(41002);
    const req2 = 'GET /b HTTP/1.1\r\nHost: a\r\n\r\n';
    h.send(c.data(0, REQ1.length, req2, outLen), 0);
    // Half a response header: held by the agent (its hold timer would release it, and the
    // gateway would originate a segment carrying it).
    const half = 'HTTP/1.1 200 OK\r\nContent-Le';
    expect(payloadBytes(h.send(c.data(1, RESP1.length, half, REQ1.length + req2.length), 1), 0)).toBe(0);
    h.send(c.data(0, REQ1.length + req2.length, BAD_UPLOAD, outLen), 0);
    expect(h.gw.stats().gateway.aborted).toBe(1);
    expect(h.advance(5_000)).toEqual([]);
    expect(h.advance(60_000)).toEqual([]);
    expect(h.gw.stats().stream.synthSent).toBe(0);
  });
});

describe('the cluster carries the abort', () => {
  it('exported with the connection, imported as it was; a bad one refuses the import', () => {
    const { h, c, outLen } = afterOneExchange(41008);
    h.send(c.data(0, REQ1.length, BAD_UPLOAD, outLen), 0);
    h.send(c.data(0, REQ1.length, '', outLen + 1, ACK), 0);
    const f = [...h.gw.flows.values()][0]!;
    const st = JSON.parse(JSON.stringify(h.gw.exportConnection(f, [undefined, undefined])));
    expect(st.conn.abort).toEqual({ reason: 'http-refused:chunk', sent: true, answers: [1, 0], lastAck: [c.isnS + 1 + outLen + 1, -1], lastMs: [h.now, 0] });
    const b = new Harness({}, {}, HTTP);
    const g = b.gw.importConnection(st, 0, [undefined, undefined]);
    expect(g?.conn?.abort).toEqual(st.conn.abort);
    // On the new owner it goes on: a segment is answered, not forwarded.
    const out = b.send(c.data(0, REQ1.length, 'x', outLen + 3), 0);
    expect(out.map((e) => [e.to, tcpOf(e).tcp.flags])).toEqual([[0, RST]]);
    const bad = { ...st, conn: { ...st.conn, abort: { ...st.conn.abort, answers: 'many' } } };
    const c2 = new Harness({}, {}, HTTP);
    expect(c2.gw.importConnection(bad, 0, [undefined, undefined])).toBeNull();
    expect(c2.gw.stats().gateway.importFailed).toBe(1);
  });
});

describe('after a takeover', () => {
  it('an abort decided in the new owner\'s timer is sent from it: the template came with the state', () => {
    const { h, c, sent } = heldAfterUpgrade(41009);
    const f = [...h.gw.flows.values()][0]!;
    const st = JSON.parse(JSON.stringify(h.gw.exportConnection(f, [undefined, undefined])));
    expect(st.templates[0]).toMatchObject({ from: 0, vh: 0 });
    expect(st.templates[1]).toBeNull();
    // The old owner is gone; nobody sends again. The new one's hold timeout decides, and resets.
    const b = new Harness({}, {}, HTTP);
    expect(b.gw.importConnection(st, b.now, [undefined, undefined])).not.toBeNull();
    const out = b.advance(60_000);
    expect(out.filter(isRst).map((e) => [e.to, tcpOf(e).tcp.seq])).toEqual([[1, c.isnC + 1 + sent], [0, c.isnS + 1]]);
    expect(b.gw.stats().gateway.aborted).toBe(1);
    // A template that is not this connection's TCP headers from that side is refused (counted,
    // the import goes on), as is one from a gateway with another virtio header size (left out):
    // the abort then waits for a segment, as before.
    const hdr = Buffer.from(st.templates[0].headers, 'base64');
    const otherPort = Buffer.from(hdr);
    otherPort.writeUInt16BE(41010, st.templates[0].l4Off); // another connection's source port
    const refused: [string, unknown][] = [
      ['not TCP', { ...st.templates[0], headers: Buffer.alloc(60).toString('base64') }],
      ['another connection', { ...st.templates[0], headers: otherPort.toString('base64') }],
      ['the other side', null],
      ['GSO without a partial sum', { ...st.templates[0], gsoType: 1, gsoSize: 1448 }],
      ['no ACK', { ...st.templates[0], fields: { ...st.templates[0].fields, flags: 0 } }],
    ];
    for (const [what, t] of refused) {
      const templates = t === null ? [null, st.templates[0]] : [t, null];
      const n = new Harness({}, {}, HTTP);
      expect(n.gw.importConnection({ ...st, templates }, n.now, [undefined, undefined]), what).not.toBeNull();
      expect(n.gw.stats().gateway.importTemplateRefused, what).toBe(1);
      expect(n.advance(60_000).filter(isRst), what).toEqual([]);
    }
    const other = { ...st, templates: [{ ...st.templates[0], vh: 10 }, null] };
    const c3 = new Harness({}, {}, HTTP);
    expect(c3.gw.importConnection(other, c3.now, [undefined, undefined])).not.toBeNull();
    expect(c3.gw.stats().gateway.importTemplateRefused).toBe(0);
    expect(c3.advance(60_000).filter(isRst)).toEqual([]);
  });
});

describe('what an operator sees', () => {
  it('an abort event naming the connection and the reason, and a warn line', () => {
    const evs: Record<string, unknown>[] = [];
    const lines: Array<{ o: Record<string, unknown>; m: string }> = [];
    const h = new Harness({}, { events: (e) => void evs.push(e), log: fakeLogger(lines) }, HTTP);
    const c = h.connect(41005);
    h.send(c.data(0, 0, BAD_UPLOAD), 0);
    expect(evs.filter((e) => e['event'] === 'abort')).toEqual([{ event: 'abort', flow: '10.0.0.1.41005-10.0.0.2.80', reason: 'http-refused:chunk' }]);
    expect(lines.filter((l) => l.m === 'connection reset by the gateway: its agent gave up on it').map((l) => l.o['reason'])).toEqual(['http-refused:chunk']);
    // Its flow record, when it leaves the table, says how it ended.
    h.advance(20_000);
    expect(evs.filter((e) => e['event'] === 'flow').map((e) => [e['client'], e['end']])).toEqual([['10.0.0.1:41005', 'abort']]);
  });
});

describe('refused responses', () => {
  it('a response refused after its header went out: RSTs, the client has the part before the bad chunk', () => {
    const { h, c, outLen } = afterOneExchange(41003);
    const req2 = 'GET /b HTTP/1.1\r\nHost: a\r\n\r\n';
    h.send(c.data(0, REQ1.length, req2, outLen), 0);
    const head = 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nHello\r\n';
    const a = h.send(c.data(1, RESP1.length, head, REQ1.length + req2.length), 1);
    const got = payloadBytes(a, 0);
    expect(got).toBeGreaterThan(0);
    expect(h.gw.stats().gateway.aborted).toBe(0);
    const b = h.send(c.data(1, RESP1.length + head.length, 'zz\r\nworld\r\n', REQ1.length + req2.length), 1);
    expect(payloadBytes(b, 0)).toBe(0);
    const rc = b.filter((e) => e.to === 0 && isRst(e));
    const rs = b.filter((e) => e.to === 1);
    expect(rc).toHaveLength(1);
    expect(tcpOf(rc[0]!).tcp.seq).toBe(c.isnS + 1 + outLen + got);
    expect(rs.map((e) => tcpOf(e).tcp.seq)).toEqual([c.isnC + 1 + payloadBytes(h.out, 1)]);
    expect(h.gw.stats().gateway).toMatchObject({ aborted: 1, rstOriginated: 2 });
  });

  it('a response refused while its header is held becomes a 502: no reset', () => {
    const { h, c, outLen } = afterOneExchange(41004);
    const req2 = 'GET /b.gz HTTP/1.1\r\nHost: a\r\n\r\n';
    h.send(c.data(0, REQ1.length, req2, outLen), 0);
    const out = h.send(c.data(1, RESP1.length, 'HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 11\r\n\r\nHello world', REQ1.length + req2.length), 1);
    expect(out.map((e) => Buffer.from(e.frame).toString('latin1')).join('')).toContain('X-Tapgate-Refused: encoded');
    expect(out.some(isRst)).toBe(false);
    expect(h.gw.stats().gateway).toMatchObject({ aborted: 0, rstOriginated: 0 });
  });
});

describe('under NAT', () => {
  it('1:1 NAT: the RST to the server carries the mapped address, the one back to the client the real one', () => {
    const cfg = parseConfig(`nat:\n  oneToOne:\n    - { side: client, real: 10.0.0.1, mapped: 10.0.0.101 }\n${HTTP}`, 'nat.yaml');
    const gw = new Gateway({ config: cfg });
    const C = parseIp('10.0.0.1') as number;
    const M = parseIp('10.0.0.101') as number;
    const S = parseIp('10.0.0.2') as number;
    const out: Emitted[] = [];
    let now = 0;
    const send = (f: Uint8Array, from: Side): Emitted[] => {
      const got: Emitted[] = [];
      gw.handleFrame(f, from, (now += 1), (x, to) => got.push({ frame: x.slice(), to }));
      out.push(...got);
      return got;
    };
    const isnC = 100;
    const isnS = 900;
    const c2s = (seq: number, ack: number, flags: number, payload = ''): Uint8Array =>
      tcpFrame({ src: C, dst: S, srcPort: 42000, dstPort: 80, seq, ack, flags, payload: Buffer.from(payload, 'latin1') });
    const s2c = (seq: number, ack: number, flags: number, payload = ''): Uint8Array =>
      tcpFrame({ src: S, dst: M, srcPort: 80, dstPort: 42000, seq, ack, flags, payload: Buffer.from(payload, 'latin1') });
    send(c2s(isnC, 0, SYN), 0);
    send(s2c(isnS, isnC + 1, SYN | ACK), 1);
    send(c2s(isnC + 1, isnS + 1, ACK), 0);
    const got = send(c2s(isnC + 1, isnS + 1, ACK | PSH, BAD_UPLOAD), 0);
    const rs = got.filter((e) => e.to === 1 && isRst(e)).map(tcpOf);
    const rc = got.filter((e) => e.to === 0).map(tcpOf);
    expect(rs).toHaveLength(1);
    expect([ipToString(rs[0]!.src), ipToString(rs[0]!.dst), rs[0]!.tcp.seq]).toEqual(['10.0.0.101', '10.0.0.2', isnC + 1 + payloadBytes(got, 1)]);
    expect(rc).toHaveLength(1);
    expect([ipToString(rc[0]!.src), ipToString(rc[0]!.dst), rc[0]!.tcp.flags, rc[0]!.tcp.seq]).toEqual(['10.0.0.2', '10.0.0.1', RST, isnS + 1]);
    expect(gw.stats().gateway.aborted).toBe(1);
  });
});

describe('under masquerade', () => {
  it('the RST back to the client has its real address, port and MAC; the server\'s has the shared address', () => {
    const cfg = parseConfig(`nat:\n  masquerade:\n    - { side: client, sources: 10.0.0.0/24, address: 10.0.0.250, ports: "20000-20001" }\n${HTTP}`, 'nat.yaml');
    const gw = new Gateway({ config: cfg });
    const C = parseIp('10.0.0.1') as number;
    const X = parseIp('10.0.0.250') as number;
    const S = parseIp('10.0.0.2') as number;
    const macC = new Uint8Array([2, 0, 0, 0, 0, 0x11]);
    const macS = new Uint8Array([2, 0, 0, 0, 0, 0x22]);
    let now = 0;
    const send = (f: Uint8Array, from: Side): Emitted[] => {
      const got: Emitted[] = [];
      gw.handleFrame(f, from, (now += 1), (x, to) => got.push({ frame: x.slice(), to }));
      return got;
    };
    const c2s = (seq: number, ack: number, flags: number, payload = ''): Uint8Array =>
      tcpFrame({ src: C, dst: S, srcPort: 43000, dstPort: 80, seq, ack, flags, srcMac: macC, dstMac: macS, payload: Buffer.from(payload, 'latin1') });
    const [syn] = send(c2s(100, 0, SYN), 0);
    const d0 = tcpOf(syn!);
    expect(ipToString(d0.src)).toBe('10.0.0.250');
    const xport = d0.tcp.srcPort;
    const gwMac = syn!.frame.subarray(6, 12);
    send(tcpFrame({ src: S, dst: X, srcPort: 80, dstPort: xport, seq: 900, ack: 101, flags: SYN | ACK, srcMac: macS, dstMac: gwMac }), 1);
    send(c2s(101, 901, ACK), 0);
    const got = send(c2s(101, 901, ACK | PSH, BAD_UPLOAD), 0);
    const rs = got.filter((e) => e.to === 1 && isRst(e));
    const rc = got.filter((e) => e.to === 0);
    expect(rs.map((e) => { const d = tcpOf(e); return [ipToString(d.src), d.tcp.srcPort, ipToString(d.dst)]; })).toEqual([['10.0.0.250', xport, '10.0.0.2']]);
    expect(rc).toHaveLength(1);
    const d = tcpOf(rc[0]!);
    expect([ipToString(d.src), d.tcp.srcPort, ipToString(d.dst), d.tcp.dstPort, d.tcp.flags, d.tcp.seq]).toEqual(['10.0.0.2', 80, '10.0.0.1', 43000, RST, 901]);
    expect([...rc[0]!.frame.subarray(0, 6)]).toEqual([...macC]);
  });
});

describe('resetFrame', () => {
  it('IPv6 behind a virtio header, reversed: addresses, ports and MACs swapped, checksums right, no options', () => {
    const vh = 10;
    const a = parseIp('2001:db8::1') as string;
    const b = parseIp('2001:db8::2') as string;
    const tpl = tcpFrame({ src: a, dst: b, srcPort: 1234, dstPort: 80, seq: 7, ack: 9, flags: ACK | FIN, headroom: vh, options: [{ kind: 'mss', mss: 1400 }], payload: Buffer.from('abc') });
    const r = resetFrame({ frame: tpl, l3Off: vh + 14, l4Off: vh + 14 + 40 }, vh, true, 0xfffffff0);
    expect([...r.subarray(0, vh)]).toEqual(new Array(vh).fill(0));
    const d = decodeFrame(r.subarray(vh), { link: 'ethernet', verifyChecksums: true, ipv6: true });
    if (d.kind !== 'tcp') throw new Error(d.kind);
    expect([d.src, d.dst, d.tcp.srcPort, d.tcp.dstPort, d.tcp.seq, d.tcp.flags, d.payloadLen]).toEqual([b, a, 80, 1234, 0xfffffff0, RST, 0]);
    expect([...r.subarray(vh, vh + 6)]).toEqual([...tpl.subarray(vh + 6, vh + 12)]);
    expect(d.l4Off + 20).toBe(r.length - vh);
  });
});
