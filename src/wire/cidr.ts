/**
 * Address blocks (CIDR, RFC 4632; IPv6 prefixes, RFC 4291 §2.3) as rules, NAT and the ftp
 * agent's allow-lists write them. `Cidr` is IPv4 (addresses as uint32 numbers, network byte
 * order read as a big-endian integer, as the flow table keys them); `IpBlock` is either family
 * (rules' address conditions; NAT and the ftp agent take IPv4 only). Parsing is strict
 * (wire/ipv4.ts parseIpv4, wire/ipv6.ts parseIpv6) and an error says what was wrong in the text
 * the user wrote.
 */

import type { IpAddr } from './ip.js';
import { ipv4ToString, parseIpv4 } from './ipv4.js';
import { ipv6ToString, parseIpv6 } from './ipv6.js';

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

/** An IPv6 prefix: the network's 16 bytes (host bits zero) and its length. */
export interface Cidr6 {
  family: 6;
  bytes: Uint8Array;
  prefix: number;
}

/** An address block of either family. */
export type IpBlock = Cidr | Cidr6;

export function isCidr6(b: IpBlock): b is Cidr6 {
  return (b as Cidr6).family === 6;
}

/** "10.0.0.0/8", "2001:db8::/32", or a single address (= /32, /128). Returns an error message when invalid. */
export function parseIpBlock(s: string): IpBlock | string {
  const slash = s.indexOf('/');
  const ipText = slash < 0 ? s : s.slice(0, slash);
  if (!ipText.includes(':')) {
    const c = parseCidr(s);
    return typeof c === 'string' && parseIpv4(ipText) === null ? `"${ipText}" is not an IPv4 address (a.b.c.d) or an IPv6 address (2001:db8::1)` : c;
  }
  const bytes = parseIpv6(ipText);
  if (bytes === null) return `"${ipText}" is not an IPv6 address (2001:db8::1; no brackets, no zone)`;
  // ::ffff:a.b.c.d is how a dual-stack socket shows an IPv4 peer; on the wire that peer sends
  // IPv4, so a block of such addresses would name traffic it never sees.
  const mapped = bytes.slice(0, 10).every((b) => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff;
  if (mapped && (slash < 0 || Number(s.slice(slash + 1)) >= 96)) {
    return `"${s}" is an IPv4-mapped IPv6 address, which no packet carries (an IPv4 peer sends IPv4): name ${bytes.slice(12).join('.')} instead`;
  }
  if (slash < 0) return { family: 6, bytes, prefix: 128 };
  const pt = s.slice(slash + 1);
  if (!/^(0|[1-9][0-9]{0,2})$/.test(pt) || Number(pt) > 128) return `"/${pt}" is not a prefix length 0..128`;
  const prefix = Number(pt);
  const net = maskBytes(bytes, prefix);
  if (net.some((b, i) => b !== bytes[i])) return `${s} has host bits set; did you mean ${ipv6ToString(net)}/${prefix}?`;
  return { family: 6, bytes: net, prefix };
}

/** The address is in the block (never across families). */
export function blockContains(b: IpBlock, a: IpAddr): boolean {
  if (!isCidr6(b)) return typeof a === 'number' && cidrContains(b, a);
  if (typeof a === 'number') return false;
  // The key's 16-bit groups (wire/ip.ts), compared group by group under the prefix.
  let bits = b.prefix;
  for (let g = 0; g < 8 && bits > 0; g++) {
    const m = bits >= 16 ? 0xffff : (0xffff << (16 - bits)) & 0xffff;
    const net = (b.bytes[2 * g]! << 8) | b.bytes[2 * g + 1]!;
    if ((a.charCodeAt(g) & m) !== net) return false;
    bits -= 16;
  }
  return true;
}

export function formatIpBlock(b: IpBlock): string {
  return isCidr6(b) ? `${ipv6ToString(b.bytes)}/${b.prefix}` : formatCidr(b);
}

/** Every address of `inner` is in `outer` (never across families). */
export function blockWithin(inner: IpBlock, outer: IpBlock): boolean {
  if (isCidr6(inner) !== isCidr6(outer)) return false;
  if (!isCidr6(inner)) return inner.prefix >= outer.prefix && ((inner.addr & (outer as Cidr).mask) >>> 0) === (outer as Cidr).addr;
  const o = outer as Cidr6;
  return inner.prefix >= o.prefix && maskBytes(inner.bytes, o.prefix).every((b, i) => b === o.bytes[i]);
}

/**
 * Pairs [j, i] (j < i) of `blocks` of which one holds the other, at most `max` of them, and how
 * many there are in all. Blocks of one family are nested or apart: sorted by network, then
 * length, a block is held by exactly the blocks still open before it (a stack, at most one per
 * prefix length plus equal ones), so finding them costs a sort, not a comparison of every pair.
 * The pairs are sorted by i, then j; when there are more than `max`, which are listed is not
 * specified.
 */
export function nestedPairs(blocks: readonly IpBlock[], max: number): { pairs: [number, number][]; total: number } {
  const keys = blocks.map((b) => (isCidr6(b) ? `6${String.fromCharCode(...b.bytes)}` : `4${String.fromCharCode(b.addr >>> 24, (b.addr >>> 16) & 0xff, (b.addr >>> 8) & 0xff, b.addr & 0xff)}`));
  const order = blocks.map((_, i) => i).sort((x, y) => (keys[x]! < keys[y]! ? -1 : keys[x]! > keys[y]! ? 1 : blocks[x]!.prefix - blocks[y]!.prefix || x - y));
  const open: number[] = [];
  const pairs: [number, number][] = [];
  let total = 0;
  for (const i of order) {
    while (open.length > 0 && !blockWithin(blocks[i]!, blocks[open[open.length - 1]!]!)) open.pop();
    total += open.length;
    for (let k = 0; k < open.length && pairs.length < max; k++) {
      const o = open[k]!;
      pairs.push(o < i ? [o, i] : [i, o]);
    }
    open.push(i);
  }
  pairs.sort((a, b) => a[1] - b[1] || a[0] - b[0]);
  return { pairs, total };
}

function maskBytes(bytes: Uint8Array, prefix: number): Uint8Array {
  const out = new Uint8Array(16);
  for (let i = 0; i < 16; i++) {
    const bits = Math.max(0, Math.min(8, prefix - 8 * i));
    out[i] = bytes[i]! & ((0xff << (8 - bits)) & 0xff);
  }
  return out;
}
