/**
 * NPTv6 (RFC 6296): stateless, checksum-neutral IPv6 prefix translation, 1:1 both ways — the
 * IPv6 counterpart of `oneToOne` (there is no IPv6 masquerade). Hosts of `real` on `side` appear
 * as `mapped` on the other side: the prefix bits are replaced, and one 16-bit word of the address
 * is adjusted by a constant (computed once per rule) so that the one's complement sum of the
 * address does not change (§3.2): every checksum that covers the address (TCP, UDP and ICMPv6
 * through the pseudo-header, an ICMPv6 body quoting it) stays valid without being recomputed.
 * The adjusted word is bits 48–63 for a /48 (§3.3), else the first word of the interface
 * identifier that is not 0xFFFF (§3.4); a result of 0xFFFF is written 0x0000 (the same value in
 * one's complement), and an address whose identifier is all 0xFFFF cannot be translated.
 *
 * On a bridged segment the two sides also resolve each other (Neighbor Discovery, RFC 4861):
 * the target of a Neighbor Solicitation or Advertisement is translated like an address of that
 * side, and an NS sent to the solicited-node multicast group of a translated target goes to the
 * group of its translation (address, MAC and checksum), so each side learns only the addresses it
 * is meant to see, at the real host's MAC. ICMPv6 errors quote the packet that caused them: the
 * quoted addresses are translated the other way round.
 *
 * Pure: no state, no clock; frames are translated in place.
 */
import { get16, set16 } from '../wire/bytes.js';
import { csumReplace16, fold16, sum16 } from '../wire/checksum.js';
import type { Cidr6 } from '../wire/cidr.js';
import { BlockLists } from '../wire/block-lists.js';
import { ipv6Key } from '../wire/ip.js';
import { IP_PROTO_ICMPV6, IPV6_ADDR_LEN, IPV6_HEADER_LEN, walkIpv6 } from '../wire/ipv6.js';
import type { NatSide } from './nat.js';

export interface Nptv6 {
  /** The side the `real` hosts are on. */
  side: NatSide;
  real: Cidr6;
  /** Same prefix length as `real`. */
  mapped: Cidr6;
}

/** The prefix lengths translated (RFC 6296 §3.3–3.4: /48 up to /64). */
export const NPTV6_MIN_PREFIX = 48;
export const NPTV6_MAX_PREFIX = 64;

/** What is wrong with a rule (null: fine). */
export function nptv6Problem(r: Nptv6): string | null {
  if (r.real.prefix !== r.mapped.prefix) return `real (/${r.real.prefix}) and mapped (/${r.mapped.prefix}) must be the same length`;
  if (r.real.prefix < NPTV6_MIN_PREFIX || r.real.prefix > NPTV6_MAX_PREFIX) return `prefix length /${r.real.prefix}: NPTv6 translates /${NPTV6_MIN_PREFIX} to /${NPTV6_MAX_PREFIX}`;
  return null;
}

/** The one's complement sum of a prefix's words (host bits are zero). */
function prefixSum(c: Cidr6): number {
  return fold16(sum16(c.bytes, 0, IPV6_ADDR_LEN));
}

/**
 * Rewrites the address at `off` from prefix `from` to prefix `to` (it must be in `from`),
 * checksum-neutral. False: it cannot be translated (an identifier of all 0xFFFF), left as it was.
 */
function mapAddress(b: Uint8Array, off: number, from: Cidr6, to: Cidr6): boolean {
  const p = from.prefix;
  let w = 3;
  if (p <= 48 && get16(b, off + 6) === 0xffff) return false;
  if (p > 48) {
    w = 4;
    while (w < 8 && get16(b, off + 2 * w) === 0xffff) w++;
    if (w === 8) return false;
  }
  for (let i = 0, bits = p; bits > 0; i++, bits -= 8) {
    const m = bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff;
    b[off + i] = (b[off + i]! & ~m) | to.bytes[i]!;
  }
  // The sums of the two prefixes differ by adj; the word takes it back: sum(addr) is unchanged.
  const adj = fold16(prefixSum(from) + (~prefixSum(to) & 0xffff));
  let v = fold16(get16(b, off + 2 * w) + adj);
  if (v === 0xffff) v = 0;
  set16(b, off + 2 * w, v);
  return true;
}

export type Nptv6Result = 'translated' | 'none' | 'untranslatable';

/**
 * Translates the IPv6 packet at `l3` (ending at `end`) of the frame `b` (from its Ethernet
 * header when `ethernet`) that arrived on `from`, in place: its
 * source when it comes from a rule's side out of `real`, its destination when it goes to a
 * rule's side into `mapped`; Neighbor Discovery targets and ICMPv6 error quotes too (see the file
 * comment).
 */
export function nptv6Packet(rules: readonly Nptv6[], b: Uint8Array, l3: number, end: number, from: NatSide, ethernet: boolean): Nptv6Result {
  if (end - l3 < IPV6_HEADER_LEN) return 'none';
  const fixed = nptv6Addresses(rules, b, l3, from);
  if (fixed === 'untranslatable' || rules.length === 0) return fixed;
  let done = fixed === 'translated';
  const w = walkIpv6(b.subarray(0, end), l3);
  if (w.error === null && w.upperProto === IP_PROTO_ICMPV6 && (w.fragment === null || w.fragment.offset === 0) && end - w.upperOff >= 8) {
    const icmp = w.upperOff;
    const type = b[icmp]!;
    if ((type === ND_NS || type === ND_NA) && end - icmp >= 24) {
      // The target is an address of the sender's side when it advertises or probes for itself
      // (NA, DAD), of the receiver's side when it solicits a neighbour.
      const r = translateAddr(rules, b, icmp + 8, from, type === ND_NA || isUnspecified(b, l3 + 8));
      if (r === 'untranslatable') return 'untranslatable';
      if (r === 'translated') {
        done = true;
        if (type === ND_NS) retargetSolicited(b, l3, icmp, ethernet);
      }
    } else if (type < 128 && end - icmp >= 8 + IPV6_HEADER_LEN) {
      // An error quoting a packet that went the other way: its source is of the receiver's side.
      const q = icmp + 8;
      const a = translateAddr(rules, b, q + 8, from, false);
      const c = translateAddr(rules, b, q + 24, from, true);
      if (a === 'untranslatable' || c === 'untranslatable') return 'untranslatable';
      if (a === 'translated' || c === 'translated') done = true;
    }
  }
  return done ? 'translated' : 'none';
}

/**
 * The fixed header's source and destination of the IPv6 packet at `l3` (whole: `nptv6Packet`
 * checked its length), all a TCP or UDP packet needs: their checksums cover the addresses only
 * through the pseudo-header, which the mapping leaves unchanged.
 */
export function nptv6Addresses(rules: readonly Nptv6[], b: Uint8Array, l3: number, from: NatSide): Nptv6Result {
  if (rules.length === 0) return 'none';
  const r1 = translateAddr(rules, b, l3 + 8, from, true);
  const r2 = translateAddr(rules, b, l3 + 24, from, false);
  if (r1 === 'untranslatable' || r2 === 'untranslatable') return 'untranslatable';
  return r1 === 'translated' || r2 === 'translated' ? 'translated' : 'none';
}

/**
 * An address written by a host on `side` (e.g. in an FTP `EPRT |2|`) as hosts on the other side
 * must see it: its translation (RFC 5952 text), or undefined when no rule maps it.
 */
export function nptv6Announced(rules: readonly Nptv6[], addr: Uint8Array, side: NatSide): Uint8Array | undefined {
  const b = addr.slice();
  return translateAddr(rules, b, 0, side, true) === 'translated' ? b : undefined;
}

const ND_NS = 135;
const ND_NA = 136;

/**
 * Translates the address at `off` of a packet from `from`: `asSource` = an address of the
 * sender's side (real → mapped when the sender is on a rule's side), else of the receiver's
 * (mapped → real when the receiver is on a rule's side).
 */
function translateAddr(rules: readonly Nptv6[], b: Uint8Array, off: number, from: NatSide, asSource: boolean): Nptv6Result {
  if (rules.length === 0) return 'none';
  // The first rule (in order) whose block holds the address: its real block on the sender's side
  // (a source), its mapped block on the receiver's (a destination).
  const x = nptv6Index(rules);
  const i = (asSource ? x.real[from] : x.mapped[1 - from]!).first(ipv6Key(b, off));
  if (i < 0) return 'none';
  const r = rules[i]!;
  const ok = asSource ? mapAddress(b, off, r.real, r.mapped) : mapAddress(b, off, r.mapped, r.real);
  return ok ? 'translated' : 'untranslatable';
}

/**
 * The rules' real and mapped blocks filed by the side they are on (wire/block-lists.ts): an
 * address costs one lookup per prefix length in use (at most 17), not one test per rule — 2,000
 * mappings were 30–57 µs per IPv6 packet tried in order.
 */
interface Nptv6Index {
  real: readonly [BlockLists, BlockLists];
  mapped: readonly [BlockLists, BlockLists];
}

/** Each rule list's index, made at its first use (a config's rules are not changed after loading). */
const indexes = new WeakMap<readonly Nptv6[], Nptv6Index>();

function nptv6Index(rules: readonly Nptv6[]): Nptv6Index {
  let x = indexes.get(rules);
  if (x === undefined) {
    x = { real: [new BlockLists(), new BlockLists()], mapped: [new BlockLists(), new BlockLists()] };
    rules.forEach((r, i) => {
      x!.real[r.side].add(r.real, i);
      x!.mapped[r.side].add(r.mapped, i);
    });
    indexes.set(rules, x);
  }
  return x;
}

function isUnspecified(b: Uint8Array, off: number): boolean {
  for (let i = 0; i < IPV6_ADDR_LEN; i++) if (b[off + i] !== 0) return false;
  return true;
}

/** ff02::1:ff00:0/104, the solicited-node groups (RFC 4291 §2.7.1). */
const SOLICITED = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff];

/**
 * An NS whose target was translated: if it went to the old target's solicited-node group, it now
 * goes to the new one's (destination address, Ethernet destination 33:33:ff:xx:xx:xx, and the
 * ICMPv6 checksum, whose pseudo-header holds the destination).
 */
function retargetSolicited(b: Uint8Array, l3: number, icmp: number, ethernet: boolean): void {
  const dst = l3 + 24;
  for (let i = 0; i < 13; i++) if (b[dst + i] !== SOLICITED[i]) return;
  const t = icmp + 8;
  // A multicast destination is in no prefix: it is still the old target's group here.
  const old6 = get16(b, dst + 12);
  const old7 = get16(b, dst + 14);
  for (let i = 13; i < 16; i += 1) b[dst + i] = b[t + i]!;
  // The destination's last 24 bits changed: words 6 (low byte) and 7.
  let csum = csumReplace16(get16(b, icmp + 2), old6, get16(b, dst + 12));
  csum = csumReplace16(csum, old7, get16(b, dst + 14));
  set16(b, icmp + 2, csum);
  // The Ethernet destination (`b` starts with the Ethernet header): 33:33:ff + the group's last 24 bits.
  if (ethernet && b[0] === 0x33 && b[1] === 0x33 && b[2] === 0xff) {
    b[3] = b[t + 13]!;
    b[4] = b[t + 14]!;
    b[5] = b[t + 15]!;
  }
}
