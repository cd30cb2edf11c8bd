/**
 * Ethernet II framing (IEEE 802.3 / RFC 894) with any number of IEEE 802.1Q (C-tag, TPID
 * 0x8100) and 802.1ad (S-tag, TPID 0x88a8; also the pre-standard 0x9100) tags. Tags are passed
 * through byte-exact: the gateway bridges, it never re-tags. No FCS (TAP frames carry none).
 *
 *   0      6      12           12+4n     14+4n
 *   | dst  | src  | tags (4n)  | type    | payload
 */

import { get16, set16 } from './bytes.js';
import { WireError } from './error.js';

export const ETHERTYPE_IPV4 = 0x0800;
export const ETHERTYPE_ARP = 0x0806;
export const ETHERTYPE_IPV6 = 0x86dd;
export const ETHERTYPE_VLAN = 0x8100;
export const ETHERTYPE_QINQ = 0x88a8;
/** Pre-standard QinQ TPID, still emitted by some switches. */
export const ETHERTYPE_QINQ_LEGACY = 0x9100;

export const ETHERNET_HEADER_LEN = 14;
export const VLAN_TAG_LEN = 4;
export const MAC_LEN = 6;

const DST = 0;
const SRC = 6;
const TYPE = 12;

export function isVlanTpid(t: number): boolean {
  return t === ETHERTYPE_VLAN || t === ETHERTYPE_QINQ || t === ETHERTYPE_QINQ_LEGACY;
}

/** One 802.1Q/802.1ad tag as on the wire: TPID, then TCI = PCP(3) DEI(1) VID(12). */
export interface VlanTag {
  readonly tpid: number;
  readonly tci: number;
}

export function vlanVid(tci: number): number {
  return tci & 0x0fff;
}
export function vlanPcp(tci: number): number {
  return tci >>> 13;
}
export function vlanDei(tci: number): boolean {
  return (tci & 0x1000) !== 0;
}

/** "aa:bb:cc:dd:ee:ff" of the 6 bytes at `off`. */
export function macToString(mac: Uint8Array, off = 0): string {
  let s = '';
  for (let i = 0; i < MAC_LEN; i++) {
    const b = mac[off + i]!;
    s += (i ? ':' : '') + (b < 16 ? '0' : '') + b.toString(16);
  }
  return s;
}

/** Parses "aa:bb:cc:dd:ee:ff" (or '-' separated); null on bad input. */
export function parseMac(s: string): Uint8Array | null {
  const m = /^([0-9a-f]{2})([:-])([0-9a-f]{2})\2([0-9a-f]{2})\2([0-9a-f]{2})\2([0-9a-f]{2})\2([0-9a-f]{2})$/i.exec(
    s,
  );
  if (!m) return null;
  const out = new Uint8Array(MAC_LEN);
  for (let i = 0; i < MAC_LEN; i++) out[i] = parseInt(m[i === 0 ? 1 : i + 2]!, 16);
  return out;
}

export const MAC_BROADCAST: Readonly<Uint8Array> = new Uint8Array([0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);

export function macIsBroadcast(mac: Uint8Array, off = 0): boolean {
  for (let i = 0; i < MAC_LEN; i++) if (mac[off + i] !== 0xff) return false;
  return true;
}
/** Group bit (I/G) set: multicast or broadcast. */
export function macIsMulticast(mac: Uint8Array, off = 0): boolean {
  return (mac[off]! & 1) !== 0;
}

/**
 * Zero-copy view of an Ethernet frame. After `parse` succeeds no accessor can fail; the tag
 * chain was walked once and its length is stored.
 */
export class EthernetFrame {
  private constructor(
    readonly buf: Uint8Array,
    /** Number of VLAN tags before the inner EtherType. */
    readonly tagCount: number,
  ) {}

  /** Checks the frame and walks the tag chain. */
  static parse(buf: Uint8Array): EthernetFrame | WireError<'ethernet'> {
    if (buf.length < ETHERNET_HEADER_LEN) {
      return new WireError('ethernet', 'ethernet-truncated', `frame of ${buf.length} bytes < 14`);
    }
    let n = 0;
    let off = TYPE;
    while (isVlanTpid((buf[off]! << 8) | buf[off + 1]!)) {
      n++;
      off += VLAN_TAG_LEN;
      if (off + 2 > buf.length) {
        return new WireError(
          'ethernet',
          'ethernet-vlan-truncated',
          `tag ${n} needs ${off + 2} bytes, frame has ${buf.length}`,
        );
      }
    }
    return new EthernetFrame(buf, n);
  }

  get dst(): Uint8Array {
    return this.buf.subarray(DST, DST + MAC_LEN);
  }
  get src(): Uint8Array {
    return this.buf.subarray(SRC, SRC + MAC_LEN);
  }
  /** TPID of tag i (0 = outermost). */
  tagTpid(i: number): number {
    return get16(this.buf, TYPE + i * VLAN_TAG_LEN);
  }
  /** TCI of tag i (0 = outermost). */
  tagTci(i: number): number {
    return get16(this.buf, TYPE + i * VLAN_TAG_LEN + 2);
  }
  /** The tags, outermost first (allocates). */
  get tags(): VlanTag[] {
    const out: VlanTag[] = [];
    for (let i = 0; i < this.tagCount; i++) out.push({ tpid: this.tagTpid(i), tci: this.tagTci(i) });
    return out;
  }
  /** The raw tag bytes (zero copy). */
  get tagBytes(): Uint8Array {
    return this.buf.subarray(TYPE, TYPE + this.tagCount * VLAN_TAG_LEN);
  }
  /** The EtherType after the tags. Values < 0x0600 are 802.3 lengths (LLC), not types. */
  get etherType(): number {
    return get16(this.buf, TYPE + this.tagCount * VLAN_TAG_LEN);
  }
  get headerLen(): number {
    return ETHERNET_HEADER_LEN + this.tagCount * VLAN_TAG_LEN;
  }
  get payload(): Uint8Array {
    return this.buf.subarray(this.headerLen);
  }

  setDst(mac: Uint8Array): void {
    this.buf.set(mac.subarray(0, MAC_LEN), DST);
  }
  setSrc(mac: Uint8Array): void {
    this.buf.set(mac.subarray(0, MAC_LEN), SRC);
  }
}

/** The Ethernet header as a small value; MACs are copied. */
export class EthernetRepr {
  constructor(
    public dst: Uint8Array,
    public src: Uint8Array,
    public etherType: number,
    public tags: readonly VlanTag[] = [],
  ) {}

  static parse(f: EthernetFrame): EthernetRepr {
    return new EthernetRepr(f.dst.slice(), f.src.slice(), f.etherType, f.tags);
  }

  bufferLen(): number {
    return ETHERNET_HEADER_LEN + this.tags.length * VLAN_TAG_LEN;
  }

  /** Writes the header at the start of `into`; returns the header length (payload offset). */
  emit(into: Uint8Array): number {
    const len = this.bufferLen();
    if (into.length < len) throw new RangeError(`EthernetRepr.emit: buffer ${into.length} < ${len}`);
    if (this.dst.length !== MAC_LEN || this.src.length !== MAC_LEN) {
      throw new RangeError('EthernetRepr.emit: MAC addresses must be 6 bytes');
    }
    into.set(this.dst, DST);
    into.set(this.src, SRC);
    let off = TYPE;
    for (const t of this.tags) {
      set16(into, off, t.tpid);
      set16(into, off + 2, t.tci);
      off += VLAN_TAG_LEN;
    }
    set16(into, off, this.etherType);
    return len;
  }
}
