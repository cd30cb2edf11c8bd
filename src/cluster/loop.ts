/**
 * Loop suppression for cluster nodes on shared segments. Every node's TAPs see both segments'
 * frames, and a hub (or a bridge still learning) shows a frame one node forwarded to the others
 * as well: forwarding it again would duplicate it on the other segment, and back again. So a
 * node remembers, for `windowMs`, a digest of each TCP frame it saw arrive or sent out (`sentTcp`) and on
 * which side, and drops a copy that shows up on the other side (`fromSegment`); non-TCP frames
 * are remembered as sent and one coming back is dropped (`nonTcp`). Bounded: at most
 * `MAX_TCP` / `MAX_OTHER` digests, the oldest swept each window.
 */
import { get16 } from '../wire/bytes.js';
import { ETHERNET_HEADER_LEN, ETHERTYPE_IPV4, ETHERTYPE_IPV6, isVlanTpid, VLAN_TAG_LEN } from '../wire/ethernet.js';
import { IP_PROTO_TCP } from '../wire/ipv4.js';
import { IPV6_HEADER_LEN, walkIpv6 } from '../wire/ipv6.js';
import type { Side } from '../engine/emit.js';

/** Digests kept at most: TCP frames seen, non-TCP frames sent. */
const MAX_TCP = 262144;
const MAX_OTHER = 4096;

const FNV_BASIS = 0x811c9dc5;

/** FNV-1a over b[off, off + len), continuing from `h`. */
function fnv1a(b: Uint8Array, off: number, len: number, h: number): number {
  for (let i = off; i < off + len; i++) {
    h ^= b[i]!;
    h = Math.imul(h, 0x01000193);
  }
  return h;
}

/**
 * A digest of an IPv4/TCP or IPv6/TCP frame's headers (addresses, ports, IPv4 id and length or
 * IPv6 flow label and payload length, seq, ack, flags): the same frame forwarded unchanged by
 * another node has the same one. Undefined when the frame is not Ethernet (802.1Q/802.1ad tags
 * walked) / IPv4 or IPv6 (extension headers walked, wire/ipv6.ts) / TCP at offset vh. Read in
 * place: it runs for every frame.
 */
export function tcpDigest(b: Uint8Array, vh: number): number | undefined {
  let l3 = vh + ETHERNET_HEADER_LEN;
  if (b.length < l3 + 20) return undefined;
  let et = get16(b, l3 - 2);
  while (isVlanTpid(et) && b.length >= l3 + VLAN_TAG_LEN + 20) {
    et = get16(b, l3 + 2);
    l3 += VLAN_TAG_LEN;
  }
  if (et === ETHERTYPE_IPV6) return tcp6Digest(b, l3);
  if (et !== ETHERTYPE_IPV4 || b[l3 + 9] !== IP_PROTO_TCP) return undefined;
  const l4 = l3 + (b[l3]! & 0x0f) * 4;
  if (b.length < l4 + 14) return undefined;
  let h = fnv1a(b, l3 + 2, 4, FNV_BASIS); // total length, identification
  h = fnv1a(b, l3 + 12, 8, h); // addresses
  return fnv1a(b, l4, 14, h) >>> 0; // ports, seq, ack, data offset + flags
}

function tcp6Digest(b: Uint8Array, l3: number): number | undefined {
  if (b.length < l3 + IPV6_HEADER_LEN || b[l3]! >>> 4 !== 6) return undefined;
  const w = walkIpv6(b, l3);
  if (w.error !== null || w.upperProto !== IP_PROTO_TCP || (w.fragment !== null && w.fragment.offset !== 0)) return undefined;
  const l4 = w.upperOff;
  if (b.length < l4 + 14) return undefined;
  let h = fnv1a(b, l3 + 1, 5, FNV_BASIS); // flow label, payload length
  h = fnv1a(b, l3 + 8, 32, h); // addresses
  return fnv1a(b, l4, 14, h) >>> 0;
}

/** A short digest of a whole frame, for the non-TCP loop filter. */
export function frameDigest(b: Uint8Array): number {
  return (fnv1a(b, 0, b.length, FNV_BASIS) >>> 0) ^ (b.length << 20);
}

interface Seen {
  side: Side;
  ms: number;
}

export class LoopGuard {
  /** TCP frames seen on (or sent to) each side within the window, by header digest. */
  private readonly tcp = new Map<number, Seen>();
  /** Non-TCP frames sent, by digest, with the side a copy coming back would arrive on. */
  private readonly other = new Map<number, Seen>();
  private lastSweepMs = 0;

  constructor(
    private readonly windowMs: number,
    /** Bytes of virtio header in front of every frame. */
    private readonly vh: () => number,
    /** A frame that could not be remembered (the table full: a copy of it coming back would pass). */
    private readonly full: () => void = () => {},
  ) {}

  /** A TCP frame arrived on `from`: false = it is a copy of one seen on the other side (drop). */
  fromSegment(frame: Uint8Array, from: Side, now: number): boolean {
    const h = tcpDigest(frame, this.vh());
    this.last = h;
    if (h === undefined) return true;
    const e = this.tcp.get(h);
    if (e !== undefined && now - e.ms <= this.windowMs) {
      if (e.side !== from) return false;
      e.ms = now;
      return true;
    }
    this.remember(this.tcp, MAX_TCP, h, from, now);
    return true;
  }

  private remember(m: Map<number, Seen>, max: number, d: number, side: Side, now: number): void {
    if (m.size < max || m.has(d)) m.set(d, { side, ms: now });
    else this.full();
  }

  /** The digest of the frame `fromSegment` saw last (the frame being handled: ./node.ts hand-over). */
  last: number | undefined;

  /** A TCP frame this node sends to `to`: its copy may come back on that side. */
  sentTcp(frame: Uint8Array, to: Side, now: number): void {
    const h = tcpDigest(frame, this.vh());
    if (h !== undefined) this.remember(this.tcp, MAX_TCP, h, to, now);
  }

  /** A non-TCP frame arrived on `from`: false = one this node forwarded, coming back (drop). */
  nonTcp(frame: Uint8Array, from: Side, now: number): boolean {
    const d = frameDigest(frame);
    const e = this.other.get(d);
    if (e !== undefined && e.side === from && now - e.ms <= this.windowMs) return false;
    this.remember(this.other, MAX_OTHER, d, (1 - from) as Side, now);
    return true;
  }

  /** Forgets what is older than the window. */
  sweep(now: number): void {
    for (const [d, e] of this.other) if (now - e.ms > this.windowMs) this.other.delete(d);
    if (now - this.lastSweepMs >= this.windowMs) {
      this.lastSweepMs = now;
      for (const [d, e] of this.tcp) if (now - e.ms > this.windowMs) this.tcp.delete(d);
    }
  }
}
