/**
 * Malformed frames at every layer: each is dropped, counted under its own reason code, logged
 * (rate-limited), and the connection it lied about goes on being rewritten afterwards.
 */
import { describe, expect, it } from 'vitest';
import { ACK, Harness, PSH, fakeLogger, payloadOf, refix } from './harness.js';

/** A copy of `f` with IPv4 option bytes inserted after the 20-byte header (IHL and lengths fixed). */
function withIpOptions(f: Uint8Array, opts: number[]): Uint8Array {
  if (opts.length % 4 !== 0) throw new Error('options must be a multiple of 4');
  const out = new Uint8Array(f.length + opts.length);
  out.set(f.subarray(0, 34), 0);
  out.set(opts, 34);
  out.set(f.subarray(34), 34 + opts.length);
  out[14] = 0x40 | ((20 + opts.length) >>> 2);
  const tl = ((out[16]! << 8) | out[17]!) + opts.length;
  out[16] = tl >>> 8;
  out[17] = tl & 0xff;
  return refix(out);
}

/** A copy of `f` with TCP option bytes inserted after the 20-byte TCP header (data offset fixed). */
function withTcpOptions(f: Uint8Array, opts: number[]): Uint8Array {
  const out = new Uint8Array(f.length + opts.length);
  out.set(f.subarray(0, 54), 0);
  out.set(opts, 54);
  out.set(f.subarray(54), 54 + opts.length);
  out[46] = (((20 + opts.length) >>> 2) << 4) | (out[46]! & 0x0f);
  const tl = ((out[16]! << 8) | out[17]!) + opts.length;
  out[16] = tl >>> 8;
  out[17] = tl & 0xff;
  return refix(out);
}

function mutate(f: Uint8Array, fn: (b: Uint8Array) => void, fix = true): Uint8Array {
  const b = f.slice();
  fn(b);
  return fix ? refix(b) : b;
}

type Case = [name: string, reason: string, make: (good: Uint8Array) => Uint8Array];

const CASES: Case[] = [
  ['a 10-byte frame', 'ethernet-truncated', (g) => g.slice(0, 10)],
  ['Ethernet header only + 10 bytes of IPv4', 'ipv4-truncated', (g) => g.slice(0, 24)],
  ['IPv4 version 5', 'ipv4-bad-version', (g) => mutate(g, (b) => (b[14] = 0x55))],
  ['IHL 4 (16-byte header)', 'ipv4-bad-ihl', (g) => mutate(g, (b) => (b[14] = 0x44), false)],
  ['IHL 15 in a 40-byte packet', 'ipv4-header-exceeds-frame', (g) => mutate(g.slice(0, 54), (b) => (b[14] = 0x4f), false)],
  ['total length past the frame (a lie)', 'ipv4-total-length-exceeds-frame', (g) => mutate(g, (b) => (b[16] = 0x10))],
  ['total length below the header', 'ipv4-total-length-below-header', (g) => mutate(g, (b) => ((b[16] = 0), (b[17] = 12)))],
  ['total length 100 bytes short of the frame (the other lie)', 'ipv4-trailing-bytes', (g) => {
    const b = new Uint8Array(g.length + 100).fill(0x41);
    b.set(g);
    return b;
  }],
  ['bad IPv4 header checksum', 'ipv4-bad-checksum', (g) => mutate(g, (b) => (b[24]! ^= 1), false)],
  ['IPv4 option length running past the header', 'ipv4-option-overflow', (g) => withIpOptions(g, [0x44, 12, 5, 0])],
  ['IPv4 option with no length byte', 'ipv4-option-overflow', (g) => withIpOptions(g, [1, 1, 1, 0x83])],
  ['IPv4 option of length 1', 'ipv4-option-bad-length', (g) => withIpOptions(g, [0x07, 1, 0, 0])],
  ['TCP header cut to 10 bytes', 'tcp-truncated', (g) => mutate(g.slice(0, 44), (b) => ((b[16] = 0), (b[17] = 30)))],
  ['TCP data offset 3', 'tcp-bad-data-offset', (g) => mutate(g, (b) => (b[46] = 0x30 | (b[46]! & 0x0f)), false)],
  ['TCP data offset 15 in a 26-byte segment', 'tcp-data-offset-exceeds-segment', (g) => mutate(g, (b) => (b[46] = 0xf0 | (b[46]! & 0x0f)), false)],
  ['TCP option running past the header', 'tcp-option-overflow', (g) => withTcpOptions(g, [1, 1, 2, 8])],
  ['TCP option with no length byte', 'tcp-option-overflow', (g) => withTcpOptions(g, [1, 1, 1, 8])],
  ['TCP option of length 0', 'tcp-option-bad-length', (g) => withTcpOptions(g, [8, 0, 0, 0])],
  ['bad TCP checksum', 'tcp-bad-checksum', (g) => mutate(g, (b) => (b[b.length - 1]! ^= 0x20), false)],
];

describe('malformed frames at every layer', () => {
  for (const [name, reason, make] of CASES) {
    it(`drops ${name}: counted as ${reason}, nothing emitted, the connection goes on`, () => {
      const lines: Array<{ o: Record<string, unknown>; m: string }> = [];
      const log = fakeLogger(lines);
      const h = new Harness({}, { log });
      const c = h.connect(40000);
      const good = c.data(0, 0, 'my secret!');
      const bad = make(good);
      expect(h.send(bad)).toEqual([]);
      const s = h.gw.stats().gateway;
      expect(s.malformed).toEqual({ [reason]: 1 });
      expect(lines.map((l) => l.o['key'])).toContain(`malformed:${reason}`);
      // The real segment still goes through the agent.
      const got = h.send(good);
      expect(got.map((g) => payloadOf(g.frame))).toEqual(['my [gone]!']);
    });
  }

  it('drops frames larger than maxFrameBytes (default: 65535 + link headers; configurable)', () => {
    const h = new Harness();
    const c = h.connect(40001);
    const huge = new Uint8Array(14 + 8 + 65_535 + 1);
    huge.set(c.data(0, 0, 'x'));
    expect(h.send(huge)).toEqual([]);
    expect(h.gw.stats().gateway.malformed['frame-oversized']).toBe(1);
    expect(h.gw.stats().gateway.oversized).toBe(1);

    const small = new Harness({ maxFrameBytes: 1514 });
    const d = small.connect(40002);
    const big = d.data(0, 0, 'y'.repeat(1500), 0, ACK | PSH);
    expect(big.length).toBe(1554);
    expect(small.send(big)).toEqual([]);
    expect(small.gw.stats().gateway.malformed['frame-oversized']).toBe(1);
    expect(small.send(d.data(0, 0, 'y'.repeat(1400))).length).toBe(1);
  });

  it('accepts Ethernet minimum-size padding after a short IPv4 packet, and forwards it', () => {
    const h = new Harness();
    const c = h.connect(40003);
    const ack = c.frame(0, { flags: ACK, seq: c.isnC + 1, ack: c.isnS + 1 });
    const padded = new Uint8Array(60);
    padded.set(ack);
    expect(h.send(padded).length).toBe(1);
    expect(h.gw.stats().gateway.malformed).toEqual({});
  });

  it('rate-limits the log: a flood of 10 000 bad frames writes a handful of lines and a summary', () => {
    const lines: Array<{ o: Record<string, unknown>; m: string }> = [];
    const h = new Harness({}, { log: fakeLogger(lines), logRate: { maxPerInterval: 3, intervalMs: 1000 } });
    const c = h.connect(40004);
    const bad = mutate(c.data(0, 0, 'zz'), (b) => (b[b.length - 1]! ^= 1), false);
    for (let i = 0; i < 10_000; i++) {
      h.send(bad);
      if (i % 1000 === 999) h.now += 100; // 10 000 frames over one second
    }
    expect(h.gw.stats().gateway.malformed['tcp-bad-checksum']).toBe(10_000);
    const before = lines.length;
    expect(before).toBeLessThanOrEqual(3 + 1 + 3); // two intervals at most, one summary between
    h.advance(5000);
    const summaries = lines.filter((l) => typeof l.o['suppressed'] === 'number');
    expect(summaries.reduce((a, l) => a + (l.o['suppressed'] as number), 0) + lines.length - summaries.length).toBe(10_000);
    expect(h.gw.stats().log.suppressed).toBeGreaterThan(9_990);
  });
});
