/**
 * An IP address of either family as the flow table, rules and agents hold it (`IpAddr`):
 * - IPv4: its 32-bit value, a number (as wire/ipv4.ts reads it: `get32`);
 * - IPv6: a string of its eight 16-bit groups as UTF-16 code units (`ipv6Key`): compared with
 *   `===`, hashed, used as a map key like the number, made with one small string per frame; never
 *   printed or serialised as it is (it may hold lone surrogates): `ipToString` gives RFC 5952
 *   text, `ipToJson`/`ipFromJson` a JSON-safe form (the number, or the text).
 * `typeof a === 'number'` tells the family.
 */
import { get16, get32 } from './bytes.js';
import { ipv4PseudoHeaderSum } from './checksum.js';
import { ipv4ToString, parseIpv4 } from './ipv4.js';
import { IPV6_ADDR_LEN, ipv6PseudoHeaderSum, ipv6ToString, parseIpv6 } from './ipv6.js';

export type IpAddr = number | string;

/** The key of the IPv6 address at `off` (see the file comment). */
export function ipv6Key(buf: Uint8Array, off: number): string {
  return String.fromCharCode(
    get16(buf, off),
    get16(buf, off + 2),
    get16(buf, off + 4),
    get16(buf, off + 6),
    get16(buf, off + 8),
    get16(buf, off + 10),
    get16(buf, off + 12),
    get16(buf, off + 14),
  );
}

/** The 16 bytes of an IPv6 key. */
export function ipv6KeyBytes(key: string): Uint8Array {
  const b = new Uint8Array(IPV6_ADDR_LEN);
  for (let i = 0; i < 8; i++) {
    const g = key.charCodeAt(i);
    b[2 * i] = g >>> 8;
    b[2 * i + 1] = g & 0xff;
  }
  return b;
}

export function isIpv6(a: IpAddr): a is string {
  return typeof a === 'string';
}

/** Dotted quad for IPv4, RFC 5952 text for IPv6. */
export function ipToString(a: IpAddr): string {
  return typeof a === 'number' ? ipv4ToString(a) : ipv6ToString(ipv6KeyBytes(a));
}

/** An address as text (`ipToString`): dotted quad or IPv6 text (no brackets, no zone); null otherwise. */
export function parseIp(s: string): IpAddr | null {
  const v4 = parseIpv4(s);
  if (v4 !== null) return v4;
  const v6 = parseIpv6(s);
  return v6 === null ? null : ipv6Key(v6, 0);
}

/** JSON-safe: IPv4 stays the number (as plain data always had it), IPv6 becomes its text. */
export function ipToJson(a: IpAddr): number | string {
  return typeof a === 'number' ? a : ipToString(a);
}

/** The inverse of `ipToJson`; null for anything else. */
export function ipFromJson(v: unknown): IpAddr | null {
  if (typeof v === 'number') return Number.isInteger(v) && v >= 0 && v <= 0xffff_ffff ? v : null;
  if (typeof v !== 'string') return null;
  const b = parseIpv6(v);
  return b === null ? null : ipv6Key(b, 0);
}


/** The IP version of the packet at `l3Off` (its first nibble). */
export function ipVersion(buf: Uint8Array, l3Off: number): number {
  return buf[l3Off]! >>> 4;
}

/** The source address of the IPv4 or IPv6 packet at `l3Off`. */
export function ipSrcAt(buf: Uint8Array, l3Off: number): IpAddr {
  return buf[l3Off]! >>> 4 === 6 ? ipv6Key(buf, l3Off + 8) : get32(buf, l3Off + 12);
}

/** The destination address of the IPv4 or IPv6 packet at `l3Off`. */
export function ipDstAt(buf: Uint8Array, l3Off: number): IpAddr {
  return buf[l3Off]! >>> 4 === 6 ? ipv6Key(buf, l3Off + 24) : get32(buf, l3Off + 16);
}

/**
 * The pseudo-header accumulator of the IPv4 or IPv6 packet at `l3Off` for an upper layer of
 * `l4len` bytes (RFC 9293 §3.1, RFC 8200 §8.1; the IPv6 destination is the fixed header's: a
 * packet with a Routing header in flight is never rewritten, wire/frame.ts).
 */
export function pseudoHeaderSum(buf: Uint8Array, l3Off: number, proto: number, l4len: number): number {
  if (buf[l3Off]! >>> 4 === 6) return ipv6PseudoHeaderSum(buf, l3Off + 8, l3Off + 24, proto, l4len);
  return ipv4PseudoHeaderSum(get32(buf, l3Off + 12), get32(buf, l3Off + 16), proto, l4len);
}

/** "10.0.0.1:80", "[2001:db8::1]:80" (RFC 5952 §6). */
export function endpointToString(addr: IpAddr, port: number): string {
  return typeof addr === 'number' ? `${ipv4ToString(addr)}:${port}` : `[${ipToString(addr)}]:${port}`;
}
