/**
 * The last stage of the data path: frames out. The stream engine's output segments of a
 * connection become frames (a header rewritten in place, or a frame rebuilt from the segment's
 * template: wire/ checksums, split to the receiver's MSS, TAP GSO), and every frame leaving the
 * gateway — passed, rebuilt or made by it (ARP answers) — is counted here. It decides nothing:
 * what leaves was decided by the stages before it.
 *
 * TAP GSO (`vnetHdr: true`): every frame in and out starts with the 10-byte virtio_net_hdr
 * (wire/virtio.ts); what a partial checksum holds is described in engine/admit.ts.
 *
 * Forwarding with a vnet header:
 * - payload unchanged, headers rewritten: a partial frame keeps its partial semantics — fields
 *   are set plainly and the checksum field is left alone (the device sums the header later; only
 *   a pseudo-header change would need an adjustment, and the engine changes no address or
 *   length); a frame with a full checksum gets RFC 1624 incremental updates as without GSO;
 * - payload changed (rebuilt): more payload than one segment (the sender's gso_size, else the
 *   receiver's MSS less the TCP options) → one GSO frame (TCPV4, NEEDS_CSUM, partial sum with the
 *   new length); at most one segment → gso_type NONE, partial if the original was partial, else
 *   a full checksum with flags 0. Frames are split only where IPv4's 64 KiB total length forces.
 * Both TAPs are opened the same way, so a partial frame leaves partial; the kernel completes it.
 *
 * Coalescing (`coalesce`, the live loop's emitter): a grown GSO segment split at the 64 KiB limit
 * leaves its full frames and keeps its last, shorter piece until the next frame out. When that is
 * the same connection's next rebuilt segment in the same direction, starting where the piece ends,
 * the two go out together, again in frames as full as the limit allows; anything else releases
 * the piece first, as its own frame, so the order of frames out never changes. The caller releases
 * what is left at the end of each batch (`release`). A body grown by 28 % then left in 1.4 frames
 * per frame in, not two (1,150 rebuilt for 837, 50 MiB through the http agent; each frame out
 * costs a TAP write and the receiver's ACK back).
 */
import type { Flow } from '../flow/table.js';
import type { Connection, TcpFields, TcpOut } from '../stream/connection.js';
import type { FlowTally } from './events.js';
import { finish, fold16, sum16 } from '../wire/checksum.js';
import { get16, set16 } from '../wire/bytes.js';
import { ipDstAt, ipVersion, pseudoHeaderSum } from '../wire/ip.js';
import { IPV6_HEADER_LEN } from '../wire/ipv6.js';
import { IP_PROTO_TCP } from '../wire/ipv4.js';
import { transientBytes } from '../util/bytes.js';
import { seqAdd } from '../wire/seq.js';
import { TCP_ACK, TCP_CHECKSUM_OFFSET, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, TCP_URG, TcpOptionKind, TcpSegment } from '../wire/tcp.js';
import { decodeFrame, type LinkType } from '../wire/frame.js';
import type { Endpoint } from '../flow/flow.js';
import {
  VIRTIO_NET_HDR_F_NEEDS_CSUM,
  VIRTIO_NET_HDR_GSO_ECN,
  VIRTIO_NET_HDR_GSO_NONE,
  VIRTIO_NET_HDR_GSO_TCPV4,
  VIRTIO_NET_HDR_GSO_TCPV6,
  VirtioNetHdrRepr,
} from '../wire/virtio.js';

/** The gateway's two sides: 0 = the first TAP (the client side), 1 = the second. */
export type Side = 0 | 1;
/** Where frames go out: the caller's writer. */
export type Emit = (frame: Uint8Array, to: Side) => void;

/** Largest value of IPv4's total length and IPv6's payload length: bounds what one (GSO) frame may carry. */
const IP_MAX_LENGTH_FIELD = 65535;
const EMPTY = new Uint8Array(0);

/** The gateway's output counters this stage adds to. */
export interface EmitCounters {
  framesOut: number;
  bytesOut: number;
  rebuilt: number;
  headerRewrites: number;
  gsoOut: number;
}

/** What the engine keeps of a segment: its header fields and a (possibly copied) frame. */
export interface SegTag {
  fields: TcpFields;
  frame: Uint8Array;
  l3Off: number;
  l4Off: number;
  payloadOff: number;
  /** Side the frame arrived on (its copy leaves on the other side). */
  from: Side;
  /** The frame buffer belongs to the caller and may be reused. */
  borrowed: boolean;
  /** Bytes of virtio_net_hdr in front of the Ethernet header (0 or 10); offsets above include it. */
  vh: number;
  /** The TCP checksum field holds a partial (pseudo-header) sum: NEEDS_CSUM. */
  partial: boolean;
  /** virtio gso_type of the original frame (NONE without vnet header). */
  gsoType: number;
  /** virtio gso_size of the original frame (payload bytes per segment), 0 when not GSO. */
  gsoSize: number;
}

/** A template as the cluster carries it (engine/rewrite.ts RewriteState.templates): its headers. */
export interface TagJson {
  /** The frame's bytes up to its payload (virtio header, Ethernet, IP, TCP), base64. */
  headers: string;
  l3Off: number;
  l4Off: number;
  from: Side;
  vh: number;
  partial: boolean;
  gsoType: number;
  gsoSize: number;
  fields: TcpFields;
}

/** `fields`: the freshest header fields seen from that side (what an originated segment copies). */
export function tagToJson(t: SegTag, fields: TcpFields = t.fields): TagJson {
  return {
    headers: Buffer.from(t.frame.buffer, t.frame.byteOffset, t.payloadOff).toString('base64'),
    l3Off: t.l3Off,
    l4Off: t.l4Off,
    from: t.from,
    vh: t.vh,
    partial: t.partial,
    gsoType: t.gsoType,
    gsoSize: t.gsoSize,
    fields,
  };
}

/**
 * A template from another node for side `side` of `flow`, on a gateway whose frames carry `vh`
 * bytes of virtio header and `link` framing: null when the header sizes differ (the connection
 * then waits for its next segment, as without one). Throws (the reason) on anything a live
 * segment's tag could not be: the headers must decode as this flow's TCP segment from that side
 * (its IP length patched to the headers alone), offsets and virtio fields as admission checks them.
 */
export function tagFromJson(x: unknown, vh: number, link: LinkType, flow: { is(a: Endpoint, b: Endpoint): boolean; sideOf(src: Endpoint): 0 | 1 }, side: 0 | 1): SegTag | null {
  const bad = (why: string): never => {
    throw new Error(why);
  };
  const j = x as Partial<TagJson> | null;
  if (typeof j !== 'object' || j === null || typeof j.headers !== 'string') return bad('not an object with headers');
  const int = (v: unknown, max: number): v is number => Number.isInteger(v) && (v as number) >= 0 && (v as number) <= max;
  if (!int(j.vh, 64) || !int(j.l3Off, 0xffff) || !int(j.l4Off, 0xffff) || !int(j.gsoType, 255) || !int(j.gsoSize, 0xffff)) return bad('offsets');
  if ((j.from !== 0 && j.from !== 1) || typeof j.partial !== 'boolean') return bad('side');
  const f = j.fields as Partial<TcpFields> | undefined;
  const u32 = (n: unknown): boolean => int(n, 0xffffffff);
  if (typeof f !== 'object' || f === null || !u32(f.seq) || !u32(f.ack) || !int(f.flags, 0xfff) || !int(f.window, 0xffff) || !int(f.urgent, 0xffff)) return bad('fields');
  if (!(f.flags! & TCP_ACK)) return bad('fields without ACK');
  if (f.sack !== null && !(Array.isArray(f.sack) && f.sack.length <= 4 && f.sack.every((b) => Array.isArray(b) && b.length === 2 && u32(b[0]) && u32(b[1])))) return bad('sack');
  if (j.vh !== vh) return null;
  const frame = new Uint8Array(Buffer.from(j.headers, 'base64'));
  const { l3Off, l4Off } = j;
  if (l3Off < vh || l4Off <= l3Off || l4Off + 20 > frame.length) return bad('offsets');
  // Decoded as admission decodes a frame, its IP length patched to the headers alone.
  const probe = frame.slice(vh);
  const ip = l3Off - vh;
  const v = probe[ip]! >> 4;
  if (v === 4) set16(probe, ip + 2, probe.length - ip);
  else if (v === 6) set16(probe, ip + 4, probe.length - ip - IPV6_HEADER_LEN);
  else return bad('IP version');
  const d = decodeFrame(probe, { link, verifyChecksums: false, ipv6: true });
  if (d.kind !== 'tcp' || d.l3Off !== ip || d.l4Off + vh !== l4Off || d.payloadOff !== probe.length) return bad(`not a TCP segment's headers (${d.kind})`);
  const src = { addr: d.src, port: d.tcp.srcPort };
  if (!flow.is(src, { addr: d.dst, port: d.tcp.dstPort }) || flow.sideOf(src) !== side) return bad('another connection\'s or side\'s headers');
  const gso = (j.gsoType & ~VIRTIO_NET_HDR_GSO_ECN) !== VIRTIO_NET_HDR_GSO_NONE;
  if (gso ? (j.gsoType & ~VIRTIO_NET_HDR_GSO_ECN) !== (d.ip6 === null ? VIRTIO_NET_HDR_GSO_TCPV4 : VIRTIO_NET_HDR_GSO_TCPV6) || j.gsoSize === 0 || !j.partial : j.gsoSize !== 0) {
    return bad('virtio fields');
  }
  return {
    fields: { seq: f.seq!, ack: f.ack!, flags: f.flags!, window: f.window!, urgent: f.urgent!, sack: f.sack === null ? null : f.sack!.map(([a, b]) => [a, b] as [number, number]) },
    frame,
    l3Off,
    l4Off,
    payloadOff: frame.length,
    from: j.from,
    borrowed: false,
    vh,
    partial: j.partial,
    gsoType: j.gsoType,
    gsoSize: j.gsoSize,
  };
}

/** A tag the engine keeps past the call (queued, a template): its headers copied. */
export function retainTag(t: SegTag): SegTag {
  if (!t.borrowed) return t;
  // Only the headers are needed to rebuild a frame; the payload travels separately.
  return { ...t, frame: new Uint8Array(t.frame.subarray(0, t.payloadOff)), borrowed: false };
}

/**
 * A kept template (retained: its own copy of the headers) takes the timestamps option's values of
 * `from`, a later segment of the same sender (Connection's `stamp`): both must carry the option.
 */
export function stampTag(template: SegTag, from: SegTag): void {
  if (template.borrowed) return;
  const a = TcpSegment.unchecked(template.frame.subarray(template.l4Off, template.payloadOff));
  const ta = a.findOption(TcpOptionKind.TIMESTAMPS);
  if (ta < 0) return;
  const b = TcpSegment.unchecked(from.frame.subarray(from.l4Off, from.payloadOff));
  const tb = b.findOption(TcpOptionKind.TIMESTAMPS);
  if (tb < 0) return;
  template.frame.set(from.frame.subarray(from.l4Off + tb + 2, from.l4Off + tb + 10), template.l4Off + ta + 2);
}

/** The last piece of a split GSO segment, kept for the next frame out (see Coalescing above). */
interface Held {
  flow: Flow<Connection<SegTag>>;
  to: Side;
  emit: Emit;
  /** The segment's fields: the piece starts at `seq`; ACK, window and flags are the segment's. */
  fields: TcpFields;
  tag: SegTag;
  segMax: number;
  /** The piece's bytes (copied: the segment's payload buffer is not the emitter's). */
  bytes: Uint8Array;
}

/** TCP flags a kept piece may not carry (each must leave on the bytes it came with). */
const NOT_HELD = TCP_FIN | TCP_SYN | TCP_RST | TCP_URG;

export class Emitter {
  /** A split segment's last piece, waiting for the next frame out (only with `coalesce`). */
  private held: Held | null = null;

  constructor(
    private readonly counters: EmitCounters,
    /** The stream engine's counters: `splits` (a segment cut to fit). */
    private readonly stream: { splits: number },
    /** Bytes of virtio header in front of every frame (0 or 10). */
    private readonly vh: number,
    /** Keep a split segment's last piece for the next one (the caller calls `release` per batch). */
    private readonly coalesce = false,
  ) {}

  /** The kept piece, out as its own frame (the end of a batch; before any other frame out). */
  release(): void {
    const h = this.held;
    if (h === null) return;
    this.held = null;
    this.build(h.tag, h.fields, h.bytes, EMPTY, h.segMax, h.emit, h.to, null);
  }

  /**
   * The engine's output segments of one connection, in order: a frame whose payload is
   * unchanged leaves as it came with its header fields rewritten in place; a changed one is
   * rebuilt from its template (split to the receiver's MSS without a vnet header). `outs` is
   * emptied.
   */
  segments(f: Flow<Connection<SegTag>>, outs: TcpOut<SegTag>[], tally: FlowTally | undefined, emit: Emit): void {
    for (let i = 0; i < outs.length; i++) {
      const o = outs[i]!;
      const to = (1 - o.tag.from) as Side;
      // The receiver's MSS bounds what a grown segment may carry.
      const t = o.tag;
      // Destination port read in place (no subarray view or segment object per frame out).
      const rcvSide = f.sideOf({ addr: ipDstAt(t.frame, t.l3Off), port: get16(t.frame, t.l4Off + 2) });
      if (tally !== undefined) {
        tally.framesOut[1 - rcvSide]++;
        tally.bytesOut[1 - rcvSide] += o.payload.length;
      }
      // MSS counts data only: TCP options in the template take their room (RFC 6691 §2), or
      // a grown segment would exceed the link MTU and be dropped by the bridge.
      const tcpOpts = t.payloadOff - t.l4Off - 20;
      const segMax = Math.max(1, f.halves[rcvSide].mss - tcpOpts);
      // Without a vnet header, never below what the sender already sent in one segment
      // (captures taken with offload hold frames larger than the MSS).
      const sent = t.borrowed ? t.frame.length - t.payloadOff : o.changed ? 0 : o.payload.length;
      const mss = Math.max(segMax, sent);
      if (!o.changed && !o.synth && t.borrowed) {
        // The frame as it came in (a retained tag holds headers only: that one is rebuilt).
        emitHeaderRewrite(o, this.counters);
        this.count(t.frame, emit, to);
      } else if (t.vh !== 0) {
        this.flushVnet(f, o, segMax, emit, to);
      } else if (o.payload.length <= mss) {
        this.counters.rebuilt++;
        this.count(buildFrame(o.tag, o.fields, o.payload), emit, to);
      } else {
        this.stream.splits++;
        for (let off = 0; off < o.payload.length; off += mss) {
          const last = off + mss >= o.payload.length;
          const fl: TcpFields = {
            ...o.fields,
            seq: seqAdd(o.fields.seq, off),
            flags: last ? o.fields.flags : o.fields.flags & ~(TCP_FIN | TCP_PSH),
          };
          this.counters.rebuilt++;
          this.count(buildFrame(o.tag, fl, o.payload.subarray(off, off + mss)), emit, to);
        }
      }
    }
    outs.length = 0;
  }

  /**
   * A rebuilt segment leaving with a vnet header: kept whole as one GSO frame when it carries more
   * than one segment's worth (the device or the receiving stack segments it), split only where
   * IPv4's total length (IPv6's payload length) forces it; with `coalesce`, joined to the piece
   * kept from the connection's previous segment.
   */
  private flushVnet(f: Flow<Connection<SegTag>>, o: TcpOut<SegTag>, segMax: number, emit: Emit, to: Side): void {
    const h = this.held;
    if (h !== null) {
      if (h.flow === f && h.to === to && h.emit === emit && this.joins(h, o)) {
        this.held = null;
        this.build(o.tag, { ...o.fields, seq: h.fields.seq }, h.bytes, o.payload, segMax, emit, to, f);
        return;
      }
      this.release();
    }
    this.build(o.tag, o.fields, EMPTY, o.payload, segMax, emit, to, f);
  }

  /** `o` continues the kept piece: its next bytes, same template shape and flags. */
  private joins(h: Held, o: TcpOut<SegTag>): boolean {
    const a = h.tag;
    const b = o.tag;
    return (
      o.fields.seq === seqAdd(h.fields.seq, h.bytes.length) &&
      (o.fields.flags & NOT_HELD) === 0 &&
      (o.fields.flags | TCP_PSH) === (h.fields.flags | TCP_PSH) &&
      b.gsoType === a.gsoType &&
      b.l3Off === a.l3Off &&
      ipVersion(b.frame, b.l3Off) === ipVersion(a.frame, a.l3Off)
    );
  }

  /**
   * Frames of `head ‖ body` (one segment's payload, or a kept piece and the next segment's):
   * split where the IP length field forces; with `coalesce` and `flow` given (null: a piece
   * released), the last piece of a split is kept instead of sent.
   */
  private build(t: SegTag, fields: TcpFields, head: Uint8Array, body: Uint8Array, segMax: number, emit: Emit, to: Side, flow: Flow<Connection<SegTag>> | null): void {
    // A GSO template's gso_size is what the sender's stack chose per segment: keep it.
    const segSize = t.gsoSize > 0 ? t.gsoSize : segMax;
    const v6 = ipVersion(t.frame, t.l3Off) === 6;
    // The 16-bit length field counts the whole IPv4 packet, the IPv6 payload after the fixed header.
    const frameMax = IP_MAX_LENGTH_FIELD - (t.payloadOff - t.l3Off - (v6 ? IPV6_HEADER_LEN : 0));
    const hn = head.length;
    const n = hn + body.length;
    if (n > frameMax) this.stream.splits++;
    let off = 0;
    do {
      const len = Math.min(frameMax, n - off);
      const last = off + len >= n;
      // The piece's bytes: [off, off + len) of head ‖ body.
      const a = off < hn ? head.subarray(off, Math.min(hn, off + len)) : EMPTY;
      const b = body.subarray(Math.max(0, off - hn), off + len - hn);
      if (last && off > 0 && flow !== null && this.coalesce && (fields.flags & NOT_HELD) === 0) {
        // The last piece of a split: kept for the connection's next segment (see Coalescing).
        const bytes = transientBytes(len);
        bytes.set(a, 0);
        bytes.set(b, a.length);
        this.held = { flow, to, emit, fields: { ...fields, seq: seqAdd(fields.seq, off) }, tag: t, segMax, bytes };
        return;
      }
      const fl: TcpFields = last && off === 0 ? fields : {
        ...fields,
        seq: seqAdd(fields.seq, off),
        flags: last ? fields.flags : fields.flags & ~(TCP_FIN | TCP_PSH),
      };
      const gso = len > segSize;
      this.counters.rebuilt++;
      if (gso) this.counters.gsoOut++;
      const ecn = t.gsoType & VIRTIO_NET_HDR_GSO_ECN;
      const vnet: VnetOut = gso
        ? { gsoType: (v6 ? VIRTIO_NET_HDR_GSO_TCPV6 : VIRTIO_NET_HDR_GSO_TCPV4) | ecn, gsoSize: segSize, partial: true }
        : { gsoType: VIRTIO_NET_HDR_GSO_NONE, gsoSize: 0, partial: t.partial };
      this.count(buildFrame(t, fl, a, vnet, b), emit, to);
      off += len;
    } while (off < n);
  }

  /** A frame the gateway made (Ethernet only), out to `to` with a zero virtio header when TAPs carry one. */
  made(eth: Uint8Array, to: Side, emit: Emit): void {
    if (this.vh === 0) return this.count(eth, emit, to);
    const f = new Uint8Array(this.vh + eth.length);
    f.set(eth, this.vh);
    this.count(f, emit, to);
  }

  /** A frame the gateway made whole, its virtio header included (engine/abort.ts RSTs): out to `to`. */
  own(frame: Uint8Array, to: Side, emit: Emit): void {
    this.count(frame, emit, to);
  }

  /** A frame passed on as it arrived (its header may have been rewritten in place): out on the other side. */
  pass(frame: Uint8Array, from: Side, emit: Emit): void {
    this.count(frame, emit, (1 - from) as Side);
  }

  private count(frame: Uint8Array, emit: Emit, to: Side): void {
    if (this.held !== null) this.release();
    this.counters.framesOut++;
    this.counters.bytesOut += frame.length;
    emit(frame, to);
  }
}

/**
 * Header-only change: seq/ack/window/urgent/flags/SACK rewritten in place with RFC 1624
 * incremental checksum updates (the payload is untouched, so its sum need not be recomputed).
 */
function emitHeaderRewrite(o: TcpOut<SegTag>, c: EmitCounters): void {
  const t = o.tag;
  const seg = TcpSegment.unchecked(t.frame.subarray(t.l4Off, t.payloadOff + o.payload.length));
  if (rewriteHeaderFields(seg, o.fields, t.fields, t.partial)) c.headerRewrites++;
}

/**
 * Sets the fields that differ. With a full checksum each change updates it per RFC 1624 eqn. 3.
 * With a partial one (NEEDS_CSUM) the field holds the pseudo-header sum, which covers no header
 * field changed here, and the device sums header and payload later: fields are set plainly and
 * the checksum is NOT adjusted (an RFC 1624 update there would corrupt it).
 */
function rewriteHeaderFields(seg: TcpSegment, f: TcpFields, old: TcpFields, partial: boolean): boolean {
  let changed = false;
  if (f.seq !== old.seq) { if (partial) seg.setSeq(f.seq); else seg.rewriteSeq(f.seq); changed = true; }
  if (f.ack !== old.ack) { if (partial) seg.setAck(f.ack); else seg.rewriteAck(f.ack); changed = true; }
  if (f.window !== old.window) { if (partial) seg.setWindow(f.window); else seg.rewriteWindow(f.window); changed = true; }
  if (f.urgent !== old.urgent) { if (partial) seg.setUrgent(f.urgent); else seg.rewriteUrgent(f.urgent); changed = true; }
  if (f.flags !== old.flags) { if (partial) seg.setFlags(f.flags); else seg.rewriteFlags(f.flags); changed = true; }
  if (f.sack && old.sack) {
    const n = seg.sackBlockCount();
    for (let i = 0; i < n; i++) {
      const b = sackBlockAt(f, i);
      if (b[0] === old.sack[i]![0] && b[1] === old.sack[i]![1]) continue;
      if (partial) {
        seg.setSackLeft(i, b[0]);
        seg.setSackRight(i, b[1]);
      } else seg.rewriteSackBlock(i, b[0], b[1]);
      changed = true;
    }
  }
  return changed;
}

/**
 * The i-th translated SACK block for an option laid out for the original blocks: blocks that
 * translated to nothing are replaced by a copy of a surviving block (or, with none left, by an
 * empty block at the ACK), so the option's layout stays as it was.
 */
function sackBlockAt(f: TcpFields, i: number): [number, number] {
  return f.sack?.[i] ?? f.sack?.[0] ?? [f.ack, f.ack];
}

/** The virtio header of a rebuilt frame (only with a vnet header). */
export interface VnetOut {
  gsoType: number;
  /** Payload bytes per segment; 0 unless GSO. */
  gsoSize: number;
  /** NEEDS_CSUM with the pseudo-header sum in the field (always for GSO), else a full checksum. */
  partial: boolean;
}

/**
 * Builds a new frame from a template's headers, new TCP fields and a new payload (`first`, then
 * `more`). With a vnet header in the template (`t.vh`), `vnet` says what the rebuilt frame's
 * virtio header carries (default: no GSO, full checksum).
 */
export function buildFrame(t: SegTag, f: TcpFields, first: Uint8Array, vnet?: VnetOut, more: Uint8Array = EMPTY): Uint8Array {
  const tpl = t.frame;
  const tcpHdrLen = t.payloadOff - t.l4Off;
  const ipHdrLen = t.l4Off - t.l3Off;
  const payloadLen = first.length + more.length;
  const total = t.payloadOff + payloadLen;
  const out = transientBytes(total);
  out.set(tpl.subarray(0, t.payloadOff), 0);
  out.set(first, t.payloadOff);
  out.set(more, t.payloadOff + first.length);
  if (ipVersion(out, t.l3Off) === 6) {
    // IPv6: the payload length (extension headers, TCP header and payload); no header checksum.
    set16(out, t.l3Off + 4, ipHdrLen - IPV6_HEADER_LEN + tcpHdrLen + payloadLen);
  } else {
    // IPv4: total length and header checksum.
    set16(out, t.l3Off + 2, ipHdrLen + tcpHdrLen + payloadLen);
    set16(out, t.l3Off + 10, 0);
    set16(out, t.l3Off + 10, finish(sum16(out, t.l3Off, t.l4Off)));
  }
  // TCP fields, then the full checksum over pseudo-header, header and payload.
  const seg = TcpSegment.unchecked(out.subarray(t.l4Off));
  seg.setSeq(f.seq);
  seg.setAck(f.ack);
  seg.setFlags(f.flags);
  seg.setWindow(f.window);
  seg.setUrgent(f.flags & 0x20 ? f.urgent : 0);
  if (f.sack && seg.sackOptionOffset() >= 0) {
    const n = seg.sackBlockCount();
    for (let i = 0; i < n; i++) {
      const b = sackBlockAt(f, i);
      seg.setSackLeft(i, b[0]);
      seg.setSackRight(i, b[1]);
    }
  }
  seg.setChecksum(0);
  const tcpLen = tcpHdrLen + payloadLen;
  const pseudo = pseudoHeaderSum(out, t.l3Off, IP_PROTO_TCP, tcpLen);
  if (t.vh === 0) {
    seg.setChecksum(finish(sum16(out, t.l4Off, total, pseudo)));
    return out;
  }
  const v = vnet ?? { gsoType: VIRTIO_NET_HDR_GSO_NONE, gsoSize: 0, partial: false };
  const hdr = v.partial
    ? new VirtioNetHdrRepr({
        flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
        gsoType: v.gsoType,
        hdrLen: t.payloadOff - t.vh,
        gsoSize: v.gsoSize,
        csumStart: t.l4Off - t.vh,
        csumOffset: TCP_CHECKSUM_OFFSET,
      })
    : new VirtioNetHdrRepr();
  hdr.emit(out);
  if (v.partial) {
    // What Linux's tcp_v4_send_check leaves for the device: the folded pseudo-header sum with
    // the whole TCP length, not complemented (see the file comment).
    seg.setChecksum(fold16(pseudo));
  } else {
    seg.setChecksum(finish(sum16(out, t.l4Off, total, pseudo)));
  }
  return out;
}
