/**
 * Address blocks (CIDR, RFC 4632) as rules, NAT and the ftp agent's allow-lists write them.
 * IPv4 only for now: addresses are uint32 numbers (network byte order read as a big-endian
 * integer), as the flow table keys them. Parsing is strict (wire/ipv4.ts parseIpv4) and an
 * error says what was wrong in the text the user wrote.
 */

import { ipv4ToString, parseIpv4 } from './ipv4.js';

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
  const addr = parseIpv4(ipText);
  if (addr === null) return `"${ipText}" is not an IPv4 address (a.b.c.d)`;
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
