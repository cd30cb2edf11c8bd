/**
 * Hostile TCP/IP at frame level: fragments carrying TCP, impossible flag combinations,
 * impossible endpoints. Each is dropped before the flow table, counted, and logged.
 */
import { describe, expect, it } from 'vitest';
import { tcpFrame } from '../../src/wire/tcp-frame.js';
import { ACK, CLIENT, FIN, Harness, PSH, RST, SERVER, SYN, URG, fakeLogger, payloadOf, refix } from './harness.js';

/** Splits the IPv4 payload of `f` into fragments of `size` bytes (a multiple of 8). */
function fragment(f: Uint8Array, size: number, protocol?: number): Uint8Array[] {
  const payload = f.subarray(34);
  const out: Uint8Array[] = [];
  for (let off = 0; off < payload.length; off += size) {
    const chunk = payload.subarray(off, off + size);
    const b = new Uint8Array(34 + chunk.length);
    b.set(f.subarray(0, 34));
    b.set(chunk, 34);
    const tl = 20 + chunk.length;
    b[16] = tl >>> 8;
    b[17] = tl & 0xff;
    const more = off + size < payload.length;
    const w = (more ? 0x2000 : 0) | (off / 8);
    b[20] = w >>> 8;
    b[21] = w & 0xff;
    if (protocol !== undefined) b[23] = protocol;
    out.push(refix(b, 14, false));
  }
  return out;
}

describe('IPv4 fragments carrying TCP', () => {
  it('drops every fragment of a TCP segment (first and later), counted: its bytes never bypass the agent', () => {
    const lines: Array<{ o: Record<string, unknown>; m: string }> = [];
    const h = new Harness({}, { log: fakeLogger(lines) });
    const c = h.connect(41000);
    const seg = c.data(0, 0, 'the secret is out, the secret is out');
    const frags = fragment(seg, 24);
    expect(frags.length).toBe(3);
    for (const f of frags) expect(h.send(f)).toEqual([]);
    expect(h.gw.stats().gateway.tcpFragmentsDropped).toBe(3);
    expect(lines.filter((l) => l.o['key'] === 'tcp-fragment').length).toBe(3);
    // The sender resends unfragmented (PMTU discovery): rewritten as usual.
    expect(h.send(seg).map((g) => payloadOf(g.frame))).toEqual(['the [gone] is out, the [gone] is out']);
  });

  it('drops a lone non-first TCP fragment (a classic overlap / evasion piece)', () => {
    const h = new Harness();
    const c = h.connect(41001);
    const [, second] = fragment(c.data(0, 0, 'x'.repeat(40)), 32);
    expect(h.send(second!)).toEqual([]);
    expect(h.gw.stats().gateway.tcpFragmentsDropped).toBe(1);
  });

  it('bridges fragments of other protocols (UDP) unchanged', () => {
    const h = new Harness();
    const udpLike = tcpFrame({ src: CLIENT, dst: SERVER, srcPort: 5000, dstPort: 53, seq: 0, flags: ACK, payload: new Uint8Array(64) });
    const frags = fragment(udpLike, 32, 17);
    for (const f of frags) expect(h.send(f).length).toBe(1);
    expect(h.gw.stats().gateway.tcpFragmentsDropped).toBe(0);
    expect(h.gw.stats().gateway.nonTcp).toBe(frags.length);
  });
});

describe('impossible TCP flag combinations', () => {
  const BAD: Array<[string, number, string]> = [
    ['no flags at all (null scan)', 0, 'null'],
    ['SYN+FIN', SYN | FIN, 'syn-fin'],
    ['SYN+FIN+ACK', SYN | FIN | ACK, 'syn-fin'],
    ['SYN+RST', SYN | RST, 'syn-rst'],
    ['SYN+RST+ACK', SYN | RST | ACK, 'syn-rst'],
    ['RST+FIN', RST | FIN, 'rst-fin'],
    ['RST+FIN+ACK', RST | FIN | ACK, 'rst-fin'],
    ['FIN without ACK (FIN scan)', FIN, 'fin-no-ack'],
    ['FIN+PSH+URG without ACK (Xmas scan)', FIN | PSH | URG, 'fin-no-ack'],
    ['PSH without ACK', PSH, 'psh-no-ack'],
    ['URG without ACK', URG, 'urg-no-ack'],
    ['only ECE+CWR', 0xc0, 'null'],
  ];
  for (const [name, flags, cls] of BAD) {
    it(`drops ${name} on an established connection, counted as ${cls}`, () => {
      const h = new Harness();
      const c = h.connect(42000);
      const before = h.gw.flows.size;
      expect(c.sendData(0, 0, 'secret data', 0, flags)).toEqual([]);
      expect(h.gw.stats().gateway.badFlags).toEqual({ [cls]: 1 });
      expect(h.gw.flows.size).toBe(before);
      // The stream is untouched: the real segment is rewritten.
      expect(c.sendData(0, 0, 'secret data').map((g) => payloadOf(g.frame))).toEqual(['[gone] data']);
    });
  }

  it('creates no flow entry for a scan of unknown 4-tuples', () => {
    const h = new Harness();
    for (let p = 1; p < 1000; p++) {
      h.send(tcpFrame({ src: CLIENT, dst: SERVER, srcPort: 50000, dstPort: p, seq: p, flags: p % 2 ? FIN | PSH | URG : 0 }));
    }
    expect(h.gw.flows.size).toBe(0);
    expect(h.out).toEqual([]);
    const b = h.gw.stats().gateway.badFlags;
    expect((b['fin-no-ack'] ?? 0) + (b['null'] ?? 0)).toBe(999);
  });

  it('passes every valid combination', () => {
    const h = new Harness({}, {}, null);
    const ok = [SYN, SYN | ACK, ACK, ACK | PSH, FIN | ACK, RST, RST | ACK, ACK | URG | PSH, SYN | 0xc0];
    for (const [i, flags] of ok.entries()) {
      expect(h.send(tcpFrame({ src: CLIENT, dst: SERVER, srcPort: 30000 + i, dstPort: 80, seq: 1, ack: 1, flags })).length).toBe(1);
    }
    expect(h.gw.stats().gateway.badFlags).toEqual({});
  });
});

describe('impossible endpoints', () => {
  const BAD: Array<[string, number, number, number, number, string]> = [
    ['source port 0', CLIENT, SERVER, 0, 80, 'port-zero'],
    ['destination port 0', CLIENT, SERVER, 4000, 0, 'port-zero'],
    ['land (source = destination)', SERVER, SERVER, 80, 80, 'land'],
    ['multicast destination', CLIENT, 0xe0000001, 4000, 80, 'martian'],
    ['broadcast destination', CLIENT, 0xffffffff, 4000, 80, 'martian'],
    ['0.0.0.0 source', 0, SERVER, 4000, 80, 'martian'],
  ];
  for (const [name, src, dst, sp, dp, cls] of BAD) {
    it(`drops a SYN with ${name}, counted as ${cls}`, () => {
      const h = new Harness();
      expect(h.send(tcpFrame({ src, dst, srcPort: sp, dstPort: dp, seq: 1, flags: SYN }))).toEqual([]);
      expect(h.gw.stats().gateway.badEndpoints).toEqual({ [cls]: 1 });
      expect(h.gw.flows.size).toBe(0);
    });
  }
});
