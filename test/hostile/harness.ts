/**
 * A Gateway with a replace rule, driven frame by frame: every frame it emits is decoded with
 * checksum verification and must not be an error (nothing malformed ever leaves the gateway).
 * Connections are built with `tcpFrame` (correct checksums) between 10.0.0.1 (client, TAP side 0)
 * and 10.0.0.2:80 (server, side 1); the gateway checks the sides as the live one does (`sided`).
 */
import { expect } from 'vitest';
import { tcpFrame, type TcpFrameSpec } from '../../src/wire/tcp-frame.js';
import { parseConfig } from '../../src/config/index.js';
import { Gateway, type GatewayOptions, type Side } from '../../src/engine/gateway.js';
import { DEFAULT_LIMITS, type Limits } from '../../src/stream/limits.js';
import { decodeFrame } from '../../src/wire/frame.js';

export const SYN = 0x02;
export const FIN = 0x01;
export const RST = 0x04;
export const PSH = 0x08;
export const ACK = 0x10;
export const URG = 0x20;

export const CLIENT = 0x0a000001;
export const SERVER = 0x0a000002;

export const REPLACE_CONFIG = `
rules:
  - match: { port: 80 }
    agent: replace
    replace:
      - { find: "secret", with: "[gone]" }
`;

/** A regex rule: its agent holds back the last maxMatch - 1 bytes of each direction. */
export const REGEX_CONFIG = `
rules:
  - match: { port: 80 }
    agent: replace
    replace:
      - { regex: "token=[0-9a-f]+\\n", with: "token=X\\n", maxMatch: 256 }
`;

/** The http agent on port 80, rewriting response bodies. */
export const HTTP_CONFIG = `
rules:
  - match: { port: 80 }
    agent: http
    http:
      response:
        replace: [ { find: "Hello world", with: "Hi there" } ]
`;

export interface Emitted {
  frame: Uint8Array;
  to: Side;
}

export class Harness {
  readonly gw: Gateway;
  readonly out: Emitted[] = [];
  now = 0;

  constructor(limits: Partial<Limits> = {}, opts: Omit<GatewayOptions, 'limits' | 'config'> = {}, config: string | null = REPLACE_CONFIG) {
    this.gw = new Gateway({
      // As the live gateway: frames come in on their sender's side (engine/track.ts).
      sided: true,
      ...opts,
      config: config === null ? null : parseConfig(config, 'hostile.yaml'),
      limits: { ...DEFAULT_LIMITS, ...limits },
    });
  }

  /** One frame in; returns the frames it caused (each checked to decode with valid checksums). */
  send(frame: Uint8Array, from: Side = 0): Emitted[] {
    const got: Emitted[] = [];
    this.gw.handleFrame(frame, from, this.now, (f, to) => got.push({ frame: f.slice(), to }));
    for (const g of got) expectWellFormed(g.frame);
    this.out.push(...got);
    return got;
  }

  /** Advances the clock and runs the timers. */
  advance(ms: number): Emitted[] {
    this.now += ms;
    const got: Emitted[] = [];
    this.gw.tick(this.now, (f, to) => got.push({ frame: f.slice(), to }));
    for (const g of got) expectWellFormed(g.frame);
    this.out.push(...got);
    return got;
  }

  /** A connection from 10.0.0.1:cport to 10.0.0.2:80 after a full handshake. */
  connect(cport: number, isnC = 1000, isnS = 5000, mss = 1460): Conn {
    const c = new Conn(this, cport, isnC, isnS);
    const mssOpt = [{ kind: 'mss' as const, mss }];
    this.send(c.frame(0, { flags: SYN, seq: isnC, options: mssOpt }), 0);
    this.send(c.frame(1, { flags: SYN | ACK, seq: isnS, ack: isnC + 1, options: mssOpt }), 1);
    this.send(c.frame(0, { flags: ACK, seq: isnC + 1, ack: isnS + 1 }), 0);
    return c;
  }
}

/** One connection of a Harness; sequence numbers are relative to the ISNs (0 = first data byte). */
export class Conn {
  constructor(
    readonly h: Harness,
    readonly cport: number,
    readonly isnC: number,
    readonly isnS: number,
  ) {}

  frame(side: Side, s: Partial<TcpFrameSpec> & { flags: number; seq: number }): Uint8Array {
    const [src, dst, srcPort, dstPort] = side === 0 ? [CLIENT, SERVER, this.cport, 80] : [SERVER, CLIENT, 80, this.cport];
    return tcpFrame({ src, dst, srcPort, dstPort, ack: 0, window: 65535, ...s });
  }

  /** A data segment from `side` at relative position `pos` (ACK set, acknowledging `ack`). */
  data(side: Side, pos: number, payload: string | Uint8Array, ack = 0, flags = ACK | PSH): Uint8Array {
    const [isn, isnPeer] = side === 0 ? [this.isnC, this.isnS] : [this.isnS, this.isnC];
    const p = typeof payload === 'string' ? new Uint8Array(Buffer.from(payload, 'latin1')) : payload;
    return this.frame(side, { flags, seq: (isn + 1 + pos) >>> 0, ack: (isnPeer + 1 + ack) >>> 0, payload: p });
  }

  sendData(side: Side, pos: number, payload: string | Uint8Array, ack = 0, flags = ACK | PSH): Emitted[] {
    return this.h.send(this.data(side, pos, payload, ack, flags), side);
  }
}

export function expectWellFormed(frame: Uint8Array): void {
  const d = decodeFrame(frame, { link: 'ethernet', verifyChecksums: true });
  if (d.kind === 'error') expect.fail(`gateway emitted a malformed frame: ${d.reason}: ${d.detail}`);
}

/** The TCP payload of an emitted frame, as latin1 text. */
export function payloadOf(frame: Uint8Array): string {
  const d = decodeFrame(frame, { link: 'ethernet', verifyChecksums: false });
  if (d.kind !== 'tcp') throw new Error(`not TCP: ${d.kind}`);
  return Buffer.from(frame.subarray(d.payloadOff, d.payloadOff + d.payloadLen)).toString('latin1');
}

/** Recomputes the IPv4 header checksum and, when the structure allows, the TCP checksum. */
export function refix(f: Uint8Array, l3 = 14, tcp = true): Uint8Array {
  const ihl = (f[l3]! & 0x0f) * 4;
  if (ihl < 20 || l3 + ihl > f.length) return f;
  f[l3 + 10] = 0;
  f[l3 + 11] = 0;
  const ipc = csum(f.subarray(l3, l3 + ihl), 0);
  f[l3 + 10] = ipc >>> 8;
  f[l3 + 11] = ipc & 0xff;
  const tl = (f[l3 + 2]! << 8) | f[l3 + 3]!;
  const end = l3 + tl;
  if (!tcp || f[l3 + 9] !== 6 || tl < ihl + 20 || end > f.length) return f;
  const l4 = l3 + ihl;
  f[l4 + 16] = 0;
  f[l4 + 17] = 0;
  let pseudo = 0;
  for (let i = 12; i < 20; i += 2) pseudo += (f[l3 + i]! << 8) | f[l3 + i + 1]!;
  pseudo += 6 + (end - l4);
  const c = csum(f.subarray(l4, end), pseudo);
  f[l4 + 16] = c >>> 8;
  f[l4 + 17] = c & 0xff;
  return f;
}

function csum(b: Uint8Array, acc: number): number {
  let s = acc;
  for (let i = 0; i + 1 < b.length; i += 2) s += (b[i]! << 8) | b[i + 1]!;
  if (b.length & 1) s += b[b.length - 1]! << 8;
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return ~s & 0xffff;
}

/** Just enough of a pino Logger for the gateway: warn lines are collected. */
export function fakeLogger(lines: Array<{ o: Record<string, unknown>; m: string }>) {
  const l = {
    warn: (o: Record<string, unknown>, m: string) => void lines.push({ o, m }),
    error: () => {},
    info: () => {},
    debug: () => {},
    isLevelEnabled: () => false,
    child: () => l,
  };
  return l as never;
}
