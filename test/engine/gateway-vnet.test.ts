/**
 * The gateway with TAP GSO (virtio_net_hdr in front of every frame), on frames built by hand:
 * a GSO super-frame is one segment; a grown rewritten payload leaves as ONE GSO frame with a
 * partial checksum holding the pseudo-header sum with the new length (what Linux's
 * tcp_v4_send_check leaves; checked against kernel frames in the lab); small rebuilt frames keep
 * partial or full checksum semantics; header-only rewrites of partial frames leave the partial
 * sum alone; Buffers from a reused batch buffer are never aliased; with `batched` (the live loop),
 * a connection's grown segments leave in frames as full as IPv4 allows, in order.
 */
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/index.js';
import { Gateway } from '../../src/engine/gateway.js';
import { finish, fold16, ipv4PseudoHeaderSum, sum16 } from '../../src/wire/checksum.js';
import { TcpSegment } from '../../src/wire/tcp.js';
import { completePartialChecksum } from '../../src/wire/virtio.js';

const C_IP = 0x0ac80001;
const S_IP = 0x0ac80002;
const C_PORT = 40000;
const S_PORT = 8001;
const C_ISN = 1000;
const S_ISN = 0xfffff000; // close to the wrap
const VH = 10;
const L3 = VH + 14;
const L4 = L3 + 20;

const CONFIG = parseConfig(
  `rules:
  - match: { port: ${S_PORT} }
    agent: replace
    replace:
      - { find: "cat", with: "a much longer replacement" }
      - { find: "needle-word", with: "pin" }
`,
  'vnet.yaml',
);

interface FrameSpec {
  fromClient: boolean;
  seq: number;
  ack: number;
  flags: number;
  payload?: Uint8Array;
  mss?: number;
  /** 'full': flags 0 and a full checksum; 'partial': NEEDS_CSUM; 'gso': NEEDS_CSUM + TCPV4. */
  csum?: 'full' | 'partial' | 'gso';
  gsoSize?: number;
}

const put16 = (b: Uint8Array, o: number, v: number) => {
  b[o] = (v >>> 8) & 0xff;
  b[o + 1] = v & 0xff;
};
const put32 = (b: Uint8Array, o: number, v: number) => {
  put16(b, o, v >>> 16);
  put16(b, o + 2, v & 0xffff);
};
const get16 = (b: Uint8Array, o: number) => (b[o]! << 8) | b[o + 1]!;
const le16 = (b: Uint8Array, o: number) => b[o]! | (b[o + 1]! << 8);
const setLe16 = (b: Uint8Array, o: number, v: number) => {
  b[o] = v & 0xff;
  b[o + 1] = v >>> 8;
};

function frame(s: FrameSpec): Uint8Array {
  const payload = s.payload ?? new Uint8Array(0);
  const opts = s.mss !== undefined ? 4 : 0;
  const tcpLen = 20 + opts + payload.length;
  const b = new Uint8Array(L4 + tcpLen);
  // Ethernet
  b.set([2, 0, 0, 0, 0, s.fromClient ? 2 : 1, 2, 0, 0, 0, 0, s.fromClient ? 1 : 2, 0x08, 0x00], VH);
  // IPv4
  b[L3] = 0x45;
  put16(b, L3 + 2, 20 + tcpLen);
  b[L3 + 6] = 0x40;
  b[L3 + 8] = 64;
  b[L3 + 9] = 6;
  put32(b, L3 + 12, s.fromClient ? C_IP : S_IP);
  put32(b, L3 + 16, s.fromClient ? S_IP : C_IP);
  put16(b, L3 + 10, finish(sum16(b, L3, L4)));
  // TCP
  put16(b, L4, s.fromClient ? C_PORT : S_PORT);
  put16(b, L4 + 2, s.fromClient ? S_PORT : C_PORT);
  put32(b, L4 + 4, s.seq >>> 0);
  put32(b, L4 + 8, s.ack >>> 0);
  b[L4 + 12] = ((20 + opts) / 4) << 4;
  b[L4 + 13] = s.flags;
  put16(b, L4 + 14, 65535);
  if (s.mss !== undefined) {
    b.set([2, 4], L4 + 20);
    put16(b, L4 + 22, s.mss);
  }
  b.set(payload, L4 + 20 + opts);
  const src = s.fromClient ? C_IP : S_IP;
  const dst = s.fromClient ? S_IP : C_IP;
  const mode = s.csum ?? 'full';
  if (mode === 'full') {
    put16(b, L4 + 16, finish(sum16(b, L4, b.length, ipv4PseudoHeaderSum(src, dst, 6, tcpLen))));
  } else {
    put16(b, L4 + 16, fold16(ipv4PseudoHeaderSum(src, dst, 6, tcpLen)));
    b[0] = 1; // NEEDS_CSUM
    b[1] = mode === 'gso' ? 1 : 0;
    setLe16(b, 2, L4 + 20 + opts - VH);
    setLe16(b, 4, mode === 'gso' ? (s.gsoSize ?? 1448) : 0);
    setLe16(b, 6, L4 - VH);
    setLe16(b, 8, 16);
  }
  return b;
}

const SYN = 0x02;
const ACK = 0x10;
const PSH = 0x08;

/** A gateway with a handshake done; returns it and a collector of frames per side. */
function connected(batched = false) {
  const gw = new Gateway({ config: CONFIG, vnetHdr: true, batched });
  const out: Array<{ f: Uint8Array; to: number }> = [];
  const emit = (f: Uint8Array, to: number) => out.push({ f: f.slice(), to });
  gw.handleFrame(frame({ fromClient: true, seq: C_ISN, ack: 0, flags: SYN, mss: 1460 }), 0, 0, emit);
  gw.handleFrame(frame({ fromClient: false, seq: S_ISN, ack: C_ISN + 1, flags: SYN | ACK, mss: 1460 }), 1, 1, emit);
  gw.handleFrame(frame({ fromClient: true, seq: C_ISN + 1, ack: S_ISN + 1, flags: ACK }), 0, 2, emit);
  expect(out.length).toBe(3);
  out.length = 0;
  return { gw, out, emit };
}

/** Checks headers and checksums of an emitted frame and returns its TCP payload. */
function inspect(f: Uint8Array) {
  const flags = f[0]!;
  const gsoType = f[1]!;
  const ipTotal = get16(f, L3 + 2);
  expect(f.length).toBe(L3 + ipTotal);
  expect(finish(sum16(f, L3, L4))).toBe(0); // IPv4 header checksum valid
  const thl = (f[L4 + 12]! >>> 4) * 4;
  const tcpLen = ipTotal - 20;
  const src = ((f[L3 + 12]! << 24) | (f[L3 + 13]! << 16) | (f[L3 + 14]! << 8) | f[L3 + 15]!) >>> 0;
  const dst = ((f[L3 + 16]! << 24) | (f[L3 + 17]! << 16) | (f[L3 + 18]! << 8) | f[L3 + 19]!) >>> 0;
  const field = get16(f, L4 + 16);
  const body = f.slice(VH);
  if (flags & 1) {
    // Partial: the field is the pseudo-header sum with the frame's own TCP length...
    expect(field).toBe(fold16(ipv4PseudoHeaderSum(src, dst, 6, tcpLen)));
    expect(le16(f, 6)).toBe(L4 - VH);
    expect(le16(f, 8)).toBe(16);
    // ...and completing it as the device would gives a valid checksum.
    completePartialChecksum(body, L4 - VH, 16);
  }
  expect(TcpSegment.unchecked(body.subarray(L4 - VH)).verifyChecksum(src, dst)).toBe(true);
  return {
    flags,
    gsoType,
    hdrLen: le16(f, 2),
    gsoSize: le16(f, 4),
    seq: ((f[L4 + 4]! << 24) | (f[L4 + 5]! << 16) | (f[L4 + 6]! << 8) | f[L4 + 7]!) >>> 0,
    ack: ((f[L4 + 8]! << 24) | (f[L4 + 9]! << 16) | (f[L4 + 10]! << 8) | f[L4 + 11]!) >>> 0,
    payload: Buffer.from(f.subarray(L4 + thl)).toString('latin1'),
  };
}

const enc = (s: string) => new Uint8Array(Buffer.from(s, 'latin1'));
const rewrite = (s: string) => s.split('cat').join('a much longer replacement').split('needle-word').join('pin');

function text(n: number, seed = 1): string {
  let s = '';
  let i = seed;
  while (s.length < n) {
    s += 'y'.repeat(i % 97) + (i % 2 ? 'cat' : 'needle-word');
    i++;
  }
  return s.slice(0, n);
}

describe('gateway with a vnet header (TAP GSO)', () => {
  it('rewrites a GSO super-frame as one segment and sends the grown payload as ONE GSO frame', () => {
    const { gw, out, emit } = connected();
    const data = text(20000);
    gw.handleFrame(frame({ fromClient: false, seq: S_ISN + 1, ack: C_ISN + 1, flags: ACK | PSH, payload: enc(data), csum: 'gso', gsoSize: 1448 }), 1, 3, emit);
    const exp = rewrite(data);
    expect(exp.length).toBeGreaterThan(data.length);
    expect(out.length).toBe(1);
    expect(out[0]!.to).toBe(0);
    const o = inspect(out[0]!.f);
    expect(o.flags).toBe(1);
    expect(o.gsoType).toBe(1);
    expect(o.gsoSize).toBe(1448);
    expect(o.hdrLen).toBe(L4 + 20 - VH);
    expect(o.seq).toBe((S_ISN + 1) >>> 0);
    expect(o.payload).toBe(exp);
    const st = gw.stats().gateway;
    expect(st.gsoIn).toBe(1);
    expect(st.gsoOut).toBe(1);
    expect(st.partialIn).toBe(1);
    expect(st.malformed).toEqual({});
  });

  it('a GSO frame that shrinks below one segment leaves as gso_type NONE, still partial', () => {
    const { gw, out, emit } = connected();
    const data = 'needle-word'.repeat(150); // 1650 bytes → 450
    gw.handleFrame(frame({ fromClient: false, seq: S_ISN + 1, ack: C_ISN + 1, flags: ACK, payload: enc(data), csum: 'gso', gsoSize: 1448 }), 1, 3, emit);
    expect(out.length).toBe(1);
    const o = inspect(out[0]!.f);
    expect(o.gsoType).toBe(0);
    expect(o.flags).toBe(1);
    expect(o.payload).toBe(rewrite(data));
  });

  it('a rebuilt frame with a full checksum keeps a full checksum (flags 0) while it fits one segment', () => {
    const { gw, out, emit } = connected();
    const data = 'x cat y';
    gw.handleFrame(frame({ fromClient: false, seq: S_ISN + 1, ack: C_ISN + 1, flags: ACK, payload: enc(data), csum: 'full' }), 1, 3, emit);
    const o = inspect(out[0]!.f);
    expect(o.flags).toBe(0);
    expect(o.gsoType).toBe(0);
    expect(o.payload).toBe(rewrite(data));
  });

  it('a full-checksum frame that grows past the MSS becomes one GSO frame (no MSS splitting)', () => {
    const { gw, out, emit } = connected();
    const data = 'cat '.repeat(360); // 1440 bytes → > 1460
    gw.handleFrame(frame({ fromClient: false, seq: S_ISN + 1, ack: C_ISN + 1, flags: ACK, payload: enc(data), csum: 'full' }), 1, 3, emit);
    expect(out.length).toBe(1);
    const o = inspect(out[0]!.f);
    expect(o.gsoType).toBe(1);
    expect(o.flags).toBe(1);
    expect(o.gsoSize).toBe(1460); // the receiver's MSS (no TCP options in this frame)
    expect(o.payload).toBe(rewrite(data));
  });

  it('splits only where the IPv4 total length forces it; every piece is a GSO frame', () => {
    const { gw, out, emit } = connected();
    const data = 'cat.'.repeat(12000); // 48000 bytes → 312000
    gw.handleFrame(frame({ fromClient: false, seq: S_ISN + 1, ack: C_ISN + 1, flags: ACK | PSH, payload: enc(data), csum: 'gso', gsoSize: 1448 }), 1, 3, emit);
    expect(out.length).toBe(Math.ceil(rewrite(data).length / (65535 - 40)));
    let got = '';
    let seq = (S_ISN + 1) >>> 0;
    for (const { f } of out) {
      const o = inspect(f);
      expect(o.gsoType).toBe(1);
      expect(o.seq).toBe(seq);
      seq = (seq + o.payload.length) >>> 0;
      got += o.payload;
    }
    expect(got).toBe(rewrite(data));
  });

  /** Grown GSO segments of the server, back to back from S_ISN + 1; the last with PSH. */
  function grownBatch(gw: Gateway, emit: (f: Uint8Array, to: number) => void, parts: string[]): void {
    let seq = S_ISN + 1;
    parts.forEach((p, i) => {
      const last = i === parts.length - 1;
      gw.handleFrame(frame({ fromClient: false, seq, ack: C_ISN + 1, flags: last ? ACK | PSH : ACK, payload: enc(p), csum: 'gso', gsoSize: 1448 }), 1, 3 + i, emit);
      seq += p.length;
    });
  }

  /** The frames to the client, checked, in order: contiguous from S_ISN + 1; their payloads joined. */
  function stream(out: Array<{ f: Uint8Array; to: number }>): { sizes: number[]; data: string; flags: number[] } {
    let seq = (S_ISN + 1) >>> 0;
    let data = '';
    const sizes: number[] = [];
    const flags: number[] = [];
    for (const { f, to } of out) {
      expect(to).toBe(0);
      const o = inspect(f);
      expect(o.seq).toBe(seq);
      expect(o.ack).toBe(C_ISN + 1);
      if (o.payload.length > 1448) expect([o.gsoType, o.gsoSize]).toEqual([1, 1448]);
      seq = (seq + o.payload.length) >>> 0;
      data += o.payload;
      sizes.push(o.payload.length);
      flags.push(f[L4 + 13]!);
    }
    return { sizes, data, flags };
  }

  it('batched: a connection\'s grown segments leave in frames as full as IPv4 allows, then the rest at the batch end', () => {
    // Four 60,000-byte segments that grow past one frame each (about 1.3×).
    const parts = [1, 2, 3, 4].map((k) => text(60_000, k * 7));
    const whole = rewrite(parts.join(''));
    const frameMax = 65535 - 40;
    // Unbatched: every segment leaves on its own, in two frames.
    const one = connected();
    grownBatch(one.gw, one.emit, parts);
    expect(stream(one.out).data).toBe(whole);
    expect(one.out.length).toBe(8);
    // Batched: full frames while the batch lasts, the last piece at its end.
    const { gw, out, emit } = connected(true);
    grownBatch(gw, emit, parts);
    const held = out.length;
    gw.endBatch();
    expect(out.length).toBe(held + 1);
    const s = stream(out);
    expect(s.data).toBe(whole);
    expect(out.length).toBe(Math.ceil(whole.length / frameMax));
    expect(s.sizes.slice(0, -1).every((n) => n === frameMax)).toBe(true);
    // PSH only where the server put it: on the last byte.
    expect(s.flags.map((x) => x & PSH)).toEqual([...s.flags.slice(1).map(() => 0), PSH]);
    gw.endBatch();
    expect(out.length).toBe(held + 1);
  });

  it('batched: a kept piece leaves before any other frame out, and joins only the bytes that follow it', () => {
    const { gw, out, emit } = connected(true);
    const a = text(60_000, 3);
    grownBatch(gw, emit, [a]);
    expect(out.length).toBe(1);
    // The client's ACK (other direction) arrives in the same batch: the piece leaves first.
    gw.handleFrame(frame({ fromClient: true, seq: C_ISN + 1, ack: S_ISN + 1 + 1000, flags: ACK, csum: 'partial' }), 0, 9, emit);
    expect(out.map((o) => o.to)).toEqual([0, 0, 1]);
    expect(stream(out.slice(0, 2)).data).toBe(rewrite(a));
    // A segment that does not follow the piece (a retransmission of the first one's start).
    out.length = 0;
    const b = text(60_000, 5);
    gw.handleFrame(frame({ fromClient: false, seq: S_ISN + 1 + a.length, ack: C_ISN + 1, flags: ACK, payload: enc(b), csum: 'gso', gsoSize: 1448 }), 1, 10, emit);
    gw.handleFrame(frame({ fromClient: false, seq: S_ISN + 1, ack: C_ISN + 1, flags: ACK, payload: enc(a.slice(0, 1000)), csum: 'gso', gsoSize: 1448 }), 1, 11, emit);
    gw.endBatch();
    const seqs = out.map(({ f }) => inspect(f).seq);
    const grownA = rewrite(a).length;
    expect(seqs).toEqual([(S_ISN + 1 + grownA) >>> 0, (S_ISN + 1 + grownA + 65535 - 40) >>> 0, (S_ISN + 1) >>> 0]);
    expect(inspect(out[2]!.f).payload).toBe(rewrite(a).slice(0, inspect(out[2]!.f).payload.length));
  });

  it('header-only rewrite of a partial frame leaves the partial sum alone (ACK translated)', () => {
    const { gw, out, emit } = connected();
    const data = 'cat';
    gw.handleFrame(frame({ fromClient: false, seq: S_ISN + 1, ack: C_ISN + 1, flags: ACK, payload: enc(data), csum: 'partial' }), 1, 3, emit);
    const grown = rewrite(data).length;
    out.length = 0;
    // The client acknowledges the grown stream; the server must see its own numbering.
    gw.handleFrame(frame({ fromClient: true, seq: C_ISN + 1, ack: S_ISN + 1 + grown, flags: ACK, csum: 'partial' }), 0, 4, emit);
    expect(out.length).toBe(1);
    expect(out[0]!.to).toBe(1);
    const o = inspect(out[0]!.f);
    expect(o.flags).toBe(1);
    expect(o.ack).toBe((S_ISN + 1 + data.length) >>> 0);
    expect(gw.stats().gateway.headerRewrites).toBeGreaterThan(0);
  });

  it('never aliases a reused input Buffer (held bytes across frames stay intact)', () => {
    const { gw, out, emit } = connected();
    // Held partial matches that turn out NOT to match are sent later from the held copy.
    const a = 'hello needle-w';
    const b = 'XYZ world ca';
    const c = 'Xt cat end';
    const reused = Buffer.alloc(4096);
    let seq = S_ISN + 1;
    for (const part of [a, b, c]) {
      const f = frame({ fromClient: false, seq, ack: C_ISN + 1, flags: ACK, payload: enc(part), csum: 'partial' });
      reused.fill(0x5a);
      reused.set(f);
      gw.handleFrame(reused.subarray(0, f.length), 1, 3, emit);
      reused.fill(0x5a); // the TAP addon reuses its batch buffer
      seq += part.length;
    }
    gw.tick(10_000, emit);
    const got = out.map(({ f }) => inspect(f)).sort((x, y) => ((x.seq - y.seq) | 0)).map((o) => o.payload).join('');
    expect(got).toBe(rewrite(a + b + c));
  });

  it('drops and counts a GSO frame whose virtio header lies', () => {
    const { gw, out, emit } = connected();
    const f = frame({ fromClient: false, seq: S_ISN + 1, ack: C_ISN + 1, flags: ACK, payload: enc('abc'), csum: 'gso' });
    setLe16(f, 6, 14); // csum_start not at the TCP header
    gw.handleFrame(f, 1, 3, emit);
    expect(out.length).toBe(0);
    expect(gw.stats().gateway.malformed['virtio-csum-not-tcp']).toBe(1);
  });
});
