/** Hand-built IPv4 packets for the NAT tests (frames.test.ts, nat-escape.test.ts). */
import { finish, ipv4PseudoHeaderSum, sum16 } from '../../src/wire/checksum.js';

export const ip = (s: string): number => s.split('.').reduce((a, o) => a * 256 + Number(o), 0) >>> 0;
export const str = (a: number): string => [a >>> 24, (a >>> 16) & 255, (a >>> 8) & 255, a & 255].join('.');

export function put16(b: Uint8Array, o: number, v: number): void {
  b[o] = (v >>> 8) & 255;
  b[o + 1] = v & 255;
}
export function put32(b: Uint8Array, o: number, v: number): void {
  put16(b, o, v >>> 16);
  put16(b, o + 2, v & 0xffff);
}
export const get16 = (b: Uint8Array, o: number): number => (b[o]! << 8) | b[o + 1]!;
export const get32 = (b: Uint8Array, o: number): number => ((get16(b, o) << 16) | get16(b, o + 2)) >>> 0;

/** An IPv4 packet (header checksum set) with `l4` as payload and `opts` as IP options (a multiple of 4 bytes); the L4 checksum is the caller's. */
export function ipv4(proto: number, src: string, dst: string, l4: Uint8Array, opts: Uint8Array = new Uint8Array(0), id = 1): Uint8Array {
  const hl = 20 + opts.length;
  const b = new Uint8Array(hl + l4.length);
  b[0] = 0x40 | (hl / 4);
  put16(b, 2, b.length);
  put16(b, 4, id);
  b[6] = 0x40;
  b[8] = 64;
  b[9] = proto;
  put32(b, 12, ip(src));
  put32(b, 16, ip(dst));
  b.set(opts, 20);
  put16(b, 10, finish(sum16(b, 0, hl)));
  b.set(l4, hl);
  return b;
}

/** Sets the TCP/UDP checksum at `off` of `l4` (a UDP sum of 0 is sent as 0xffff). */
export function l4csum(proto: number, src: string, dst: string, l4: Uint8Array, off: number): void {
  put16(l4, off, 0);
  let c = finish(sum16(l4, 0, l4.length, ipv4PseudoHeaderSum(ip(src), ip(dst), proto, l4.length)));
  if (proto === 17 && c === 0) c = 0xffff;
  put16(l4, off, c);
}

/** A UDP datagram as an IPv4 packet (checksum set unless `csum` is false). */
export function udpPacket(src: string, sport: number, dst: string, dport: number, payload: Uint8Array, csum = true): Uint8Array {
  const l4 = new Uint8Array(8 + payload.length);
  put16(l4, 0, sport);
  put16(l4, 2, dport);
  put16(l4, 4, l4.length);
  l4.set(payload, 8);
  if (csum) l4csum(17, src, dst, l4, 6);
  return ipv4(17, src, dst, l4);
}

/** An ICMP message (checksum set): type, code, and the rest after the first 4 bytes. */
export function icmpMsg(type: number, code: number, rest: Uint8Array): Uint8Array {
  const l4 = new Uint8Array(4 + rest.length);
  l4[0] = type;
  l4[1] = code;
  l4.set(rest, 4);
  put16(l4, 2, finish(sum16(l4, 0, l4.length)));
  return l4;
}

/** An ARP payload (Ethernet/IPv4): operation, sender MAC and address, target MAC and address. */
export function arpPayload(op: number, smac: readonly number[], sip: string, tmac: readonly number[], tip: string): Uint8Array {
  const a = new Uint8Array(28);
  put16(a, 0, 1);
  put16(a, 2, 0x0800);
  a[4] = 6;
  a[5] = 4;
  put16(a, 6, op);
  a.set(smac, 8);
  put32(a, 14, ip(sip));
  a.set(tmac, 18);
  put32(a, 24, ip(tip));
  return a;
}

/** An Ethernet frame around `payload`. */
export function ethFrame(payload: Uint8Array, dstMac: readonly number[], srcMac: readonly number[], type = 0x0800): Uint8Array {
  const b = new Uint8Array(14 + payload.length);
  b.set(dstMac, 0);
  b.set(srcMac, 6);
  put16(b, 12, type);
  b.set(payload, 14);
  return b;
}
