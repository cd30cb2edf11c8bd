/**
 * ARP (RFC 826) for Ethernet hardware addresses and IPv4 protocol addresses, the only
 * combination the gateway bridges, answers or translates (NAT). Frames of other hardware or
 * protocol types are reported as errors so that callers can pass them through untouched.
 *
 *   0 htype  2 ptype  4 hlen 5 plen  6 oper  8 sha(6)  14 spa(4)  18 tha(6)  24 tpa(4)  28
 */

import { get16, get32, set16, set32 } from './bytes.js';
import { WireError } from './error.js';
import { ETHERTYPE_IPV4, MAC_LEN } from './ethernet.js';

export const ARP_HTYPE_ETHERNET = 1;
export const ARP_OP_REQUEST = 1;
export const ARP_OP_REPLY = 2;
export const ARP_LEN = 28;

const HTYPE = 0;
const PTYPE = 2;
const HLEN = 4;
const PLEN = 5;
const OPER = 6;
const SHA = 8;
const SPA = 14;
const THA = 18;
const TPA = 24;

/** Zero-copy view of an Ethernet/IPv4 ARP packet; bytes past 28 (Ethernet padding) are ignored. */
export class ArpPacket {
  private constructor(readonly buf: Uint8Array) {}

  static parse(buf: Uint8Array): ArpPacket | WireError<'arp'> {
    if (buf.length < ARP_LEN) {
      return new WireError('arp', 'arp-truncated', `ARP of ${buf.length} bytes < 28`);
    }
    const htype = (buf[HTYPE]! << 8) | buf[HTYPE + 1]!;
    if (htype !== ARP_HTYPE_ETHERNET) {
      return new WireError('arp', 'arp-bad-hardware-type', `hardware type ${htype}`);
    }
    const ptype = (buf[PTYPE]! << 8) | buf[PTYPE + 1]!;
    if (ptype !== ETHERTYPE_IPV4) {
      return new WireError('arp', 'arp-bad-protocol-type', `protocol type 0x${ptype.toString(16)}`);
    }
    if (buf[HLEN] !== MAC_LEN || buf[PLEN] !== 4) {
      return new WireError('arp', 'arp-bad-address-length', `hlen ${buf[HLEN]} plen ${buf[PLEN]}`);
    }
    return new ArpPacket(buf);
  }

  /** Opcode; any value (RARP, InARP...) is allowed by the view, the repr accepts 1 and 2. */
  get operation(): number {
    return get16(this.buf, OPER);
  }
  get senderMac(): Uint8Array {
    return this.buf.subarray(SHA, SHA + MAC_LEN);
  }
  get senderIp(): number {
    return get32(this.buf, SPA);
  }
  get targetMac(): Uint8Array {
    return this.buf.subarray(THA, THA + MAC_LEN);
  }
  get targetIp(): number {
    return get32(this.buf, TPA);
  }
  /** Bytes after the ARP packet (Ethernet minimum-size padding). */
  get trailer(): Uint8Array {
    return this.buf.subarray(ARP_LEN);
  }

  setOperation(op: number): void {
    set16(this.buf, OPER, op);
  }
  setSenderMac(mac: Uint8Array): void {
    this.buf.set(mac.subarray(0, MAC_LEN), SHA);
  }
  setSenderIp(ip: number): void {
    set32(this.buf, SPA, ip >>> 0);
  }
  setTargetMac(mac: Uint8Array): void {
    this.buf.set(mac.subarray(0, MAC_LEN), THA);
  }
  setTargetIp(ip: number): void {
    set32(this.buf, TPA, ip >>> 0);
  }
}

export class ArpRepr {
  constructor(
    public operation: typeof ARP_OP_REQUEST | typeof ARP_OP_REPLY,
    public senderMac: Uint8Array,
    public senderIp: number,
    public targetMac: Uint8Array,
    public targetIp: number,
  ) {}

  static parse(p: ArpPacket): ArpRepr | WireError<'arp'> {
    const op = p.operation;
    if (op !== ARP_OP_REQUEST && op !== ARP_OP_REPLY) {
      return new WireError('arp', 'arp-bad-opcode', `opcode ${op}`);
    }
    return new ArpRepr(op, p.senderMac.slice(), p.senderIp, p.targetMac.slice(), p.targetIp);
  }

  bufferLen(): number {
    return ARP_LEN;
  }

  /** Writes the 28-byte packet at the start of `into`; returns its length. */
  emit(into: Uint8Array): number {
    if (into.length < ARP_LEN) throw new RangeError(`ArpRepr.emit: buffer ${into.length} < 28`);
    if (this.senderMac.length !== MAC_LEN || this.targetMac.length !== MAC_LEN) {
      throw new RangeError('ArpRepr.emit: MAC addresses must be 6 bytes');
    }
    set16(into, HTYPE, ARP_HTYPE_ETHERNET);
    set16(into, PTYPE, ETHERTYPE_IPV4);
    into[HLEN] = MAC_LEN;
    into[PLEN] = 4;
    set16(into, OPER, this.operation);
    into.set(this.senderMac, SHA);
    set32(into, SPA, this.senderIp >>> 0);
    into.set(this.targetMac, THA);
    set32(into, TPA, this.targetIp >>> 0);
    return ARP_LEN;
  }
}
