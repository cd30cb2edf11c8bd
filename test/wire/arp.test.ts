import { describe, it, expect } from 'vitest';
import { ARP_LEN, ARP_OP_REPLY, ARP_OP_REQUEST, ArpPacket, ArpRepr } from '../../src/wire/arp.js';
import { WireError } from '../../src/wire/error.js';
import { macToString } from '../../src/wire/ethernet.js';
import { ipv4ToString } from '../../src/wire/ipv4.js';
import { ARP_REQ, hex, toHex } from './fixtures.js';

const arpBytes = (): Uint8Array => hex(ARP_REQ).subarray(14);

function ok(b: Uint8Array): ArpPacket {
  const p = ArpPacket.parse(b);
  if (p instanceof WireError) throw new Error(p.reason);
  return p;
}

describe('arp: deconstruct / construct', () => {
  it('request who-has 10.0.0.2 tell 10.0.0.1, with 18 bytes of padding', () => {
    const p = ok(arpBytes());
    expect(p.operation).toBe(ARP_OP_REQUEST);
    expect(macToString(p.senderMac)).toBe('52:54:00:a1:b2:c3');
    expect(ipv4ToString(p.senderIp)).toBe('10.0.0.1');
    expect(macToString(p.targetMac)).toBe('00:00:00:00:00:00');
    expect(ipv4ToString(p.targetIp)).toBe('10.0.0.2');
    expect(p.trailer.length).toBe(18);
  });
  it('repr re-encodes byte-exact', () => {
    const b = arpBytes();
    const r = ArpRepr.parse(ok(b));
    expect(r).toBeInstanceOf(ArpRepr);
    const out = new Uint8Array(ARP_LEN);
    expect((r as ArpRepr).emit(out)).toBe(28);
    expect(toHex(out)).toBe(toHex(b.subarray(0, 28)));
  });
  it('a reply built from scratch parses back', () => {
    const r = new ArpRepr(ARP_OP_REPLY, hex('020000000002'), 0x0a000002, hex('525400a1b2c3'), 0x0a000001);
    const out = new Uint8Array(28);
    r.emit(out);
    expect(toHex(out)).toBe('0001080006040002020000000002' + '0a000002' + '525400a1b2c3' + '0a000001');
    const back = ArpRepr.parse(ok(out)) as ArpRepr;
    expect(back).toEqual(r);
  });
  it('setters turn a request into a reply in place', () => {
    const b = arpBytes();
    const p = ok(b);
    p.setOperation(ARP_OP_REPLY);
    p.setTargetMac(p.senderMac.slice());
    p.setTargetIp(p.senderIp);
    p.setSenderMac(hex('020000000002'));
    p.setSenderIp(0x0a000002);
    expect(toHex(b.subarray(0, 28))).toBe('0001080006040002020000000002' + '0a000002' + '525400a1b2c3' + '0a000001');
  });
  it('emit into a too-small buffer throws', () => {
    const r = ArpRepr.parse(ok(arpBytes())) as ArpRepr;
    expect(() => r.emit(new Uint8Array(27))).toThrow(RangeError);
  });
});

describe('arp: truncated and malformed', () => {
  it('every truncation below 28 bytes is arp-truncated, without throwing', () => {
    const b = arpBytes();
    for (let n = 0; n < 28; n++) {
      expect((ArpPacket.parse(b.subarray(0, n)) as WireError).reason).toBe('arp-truncated');
    }
    expect(ArpPacket.parse(b.subarray(0, 28))).toBeInstanceOf(ArpPacket);
  });
  it.each([
    [0, 0x00, 'arp-bad-hardware-type'], // htype 6 (IEEE 802) would need byte 1
    [2, 0x86, 'arp-bad-protocol-type'],
    [4, 0x08, 'arp-bad-address-length'],
    [5, 0x10, 'arp-bad-address-length'],
  ] as const)('byte %i = 0x%s gives %s', (off, v, reason) => {
    const b = arpBytes().slice();
    b[off] = v;
    if (off === 0) b[1] = 6;
    const e = ArpPacket.parse(b) as WireError;
    expect(e).toBeInstanceOf(WireError);
    expect(e.reason).toBe(reason);
  });
  it('an opcode other than request/reply is accepted by the view, rejected by the repr', () => {
    const b = arpBytes().slice();
    b[7] = 3; // RARP request
    const p = ok(b);
    expect(p.operation).toBe(3);
    expect((ArpRepr.parse(p) as WireError).reason).toBe('arp-bad-opcode');
  });
});
