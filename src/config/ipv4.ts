/**
 * IPv4 addresses and CIDR blocks for rule matching. Addresses are uint32 numbers (network byte
 * order read as a big-endian integer), as the flow table keys them. Kept local to config/: the
 * wire/ parsers work on packets, these on configuration text.
 */

import { ipv4ToString } from '../wire/ipv4.js';

/** "10.0.0.1" → 0x0a000001; undefined unless exactly four decimal octets 0..255 (no leading zeros). */
export function parseIPv4(s: string): number | undefined {
  const parts = s.split('.');
  if (parts.length !== 4) return undefined;
  let a = 0;
  for (const p of parts) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p)) return undefined; // leading zeros read as octal elsewhere
    const n = Number(p);
    if (n > 255) return undefined;
    a = a * 256 + n;
  }
  return a;
}


export interface Cidr {
  /** Network address (host bits zero). */
  addr: number;
  prefix: number;
  mask: number;
}

export function prefixMask(prefix: number): number {
  return prefix === 0 ? 0 : (0xffff_ffff << (32 - prefix)) >>> 0;
}

/** "10.0.0.0/8" or a single address (= /32). Returns an error message when invalid. */
export function parseCidr(s: string): Cidr | string {
  const slash = s.indexOf('/');
  const ipText = slash < 0 ? s : s.slice(0, slash);
  const addr = parseIPv4(ipText);
  if (addr === undefined) return `"${ipText}" is not an IPv4 address (a.b.c.d)`;
  if (slash < 0) return { addr, prefix: 32, mask: 0xffff_ffff };
  const pt = s.slice(slash + 1);
  if (!/^(0|[1-9][0-9]?)$/.test(pt) || Number(pt) > 32) return `"/${pt}" is not a prefix length 0..32`;
  const prefix = Number(pt);
  const mask = prefixMask(prefix);
  if (((addr & mask) >>> 0) !== addr) {
    return `${s} has host bits set; did you mean ${ipv4ToString((addr & mask) >>> 0)}/${prefix}?`;
  }
  return { addr, prefix, mask };
}

export function cidrContains(c: Cidr, addr: number): boolean {
  return ((addr & c.mask) >>> 0) === c.addr;
}

export function formatCidr(c: Cidr): string {
  return `${ipv4ToString(c.addr)}/${c.prefix}`;
}
