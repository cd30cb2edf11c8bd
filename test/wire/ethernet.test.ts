import { describe, it, expect } from 'vitest';
import {
  ETHERTYPE_ARP,
  ETHERTYPE_IPV4,
  ETHERTYPE_QINQ,
  ETHERTYPE_VLAN,
  EthernetFrame,
  EthernetRepr,
  MAC_BROADCAST,
  macIsBroadcast,
  macIsMulticast,
  macToString,
  parseMac,
  vlanDei,
  vlanPcp,
  vlanVid,
} from '../../src/wire/ethernet.js';
import { WireError } from '../../src/wire/error.js';
import { ALL, ARP_REQ, QINQ_SYNACK, SYN, hex, toHex } from './fixtures.js';

function parseOk(b: Uint8Array): EthernetFrame {
  const f = EthernetFrame.parse(b);
  if (f instanceof WireError) throw new Error(`unexpected ${f.reason}`);
  return f;
}

describe('ethernet: deconstruct', () => {
  it('untagged IPv4 frame: MACs, EtherType, 14-byte header, payload', () => {
    const b = hex(SYN);
    const f = parseOk(b);
    expect(macToString(f.dst)).toBe('52:54:00:d4:e5:f6');
    expect(macToString(f.src)).toBe('52:54:00:a1:b2:c3');
    expect(f.tagCount).toBe(0);
    expect(f.tags).toEqual([]);
    expect(f.etherType).toBe(ETHERTYPE_IPV4);
    expect(f.headerLen).toBe(14);
    expect(f.payload.length).toBe(60);
    expect(f.payload.buffer).toBe(b.buffer); // zero copy
  });
  it('QinQ frame: both tags outermost first, inner EtherType, 22-byte header', () => {
    const f = parseOk(hex(QINQ_SYNACK));
    expect(f.tags).toEqual([
      { tpid: ETHERTYPE_QINQ, tci: 100 },
      { tpid: ETHERTYPE_VLAN, tci: 0xa0c8 },
    ]);
    expect(vlanVid(f.tagTci(0))).toBe(100);
    expect(vlanVid(f.tagTci(1))).toBe(200);
    expect(vlanPcp(f.tagTci(1))).toBe(5);
    expect(vlanDei(f.tagTci(1))).toBe(false);
    expect(toHex(f.tagBytes)).toBe('88a800648100a0c8');
    expect(f.etherType).toBe(ETHERTYPE_IPV4);
    expect(f.headerLen).toBe(22);
  });
  it('broadcast ARP frame', () => {
    const f = parseOk(hex(ARP_REQ));
    expect(macIsBroadcast(f.dst)).toBe(true);
    expect(macIsMulticast(f.dst)).toBe(true);
    expect(macIsMulticast(f.src)).toBe(false);
    expect(f.etherType).toBe(ETHERTYPE_ARP);
  });
});

describe('ethernet: construct', () => {
  it('repr re-encodes every fixture header byte-exact (tags included)', () => {
    for (const [name, h] of ALL) {
      const b = hex(h);
      const f = parseOk(b);
      const r = EthernetRepr.parse(f);
      expect(r.bufferLen(), name).toBe(f.headerLen);
      const out = new Uint8Array(b.length);
      const n = r.emit(out);
      out.set(f.payload, n);
      expect(toHex(out), name).toBe(toHex(b));
    }
  });
  it('setters rewrite MACs in place', () => {
    const b = hex(SYN);
    const f = parseOk(b);
    f.setSrc(MAC_BROADCAST);
    f.setDst(parseMac('02:00:00:00:00:01')!);
    expect(macToString(b, 6)).toBe('ff:ff:ff:ff:ff:ff');
    expect(macToString(b, 0)).toBe('02:00:00:00:00:01');
  });
  it('emit into a too-small buffer is a caller bug: throws', () => {
    const r = new EthernetRepr(new Uint8Array(6), new Uint8Array(6), 0x0800, [{ tpid: 0x8100, tci: 1 }]);
    expect(() => r.emit(new Uint8Array(17))).toThrow(RangeError);
    expect(r.emit(new Uint8Array(18))).toBe(18);
  });
});

describe('ethernet: truncated and malformed', () => {
  it('every prefix shorter than the header is rejected without throwing', () => {
    for (const [name, h] of ALL) {
      const b = hex(h);
      const hl = parseOk(b).headerLen;
      for (let n = 0; n < hl; n++) {
        const r = EthernetFrame.parse(b.subarray(0, n));
        expect(r, `${name} @${n}`).toBeInstanceOf(WireError);
        const e = r as WireError;
        expect(e.layer).toBe('ethernet');
        expect(['ethernet-truncated', 'ethernet-vlan-truncated']).toContain(e.reason);
      }
      expect(EthernetFrame.parse(b.subarray(0, hl))).toBeInstanceOf(EthernetFrame);
    }
  });
  it('a tag chain that runs off the frame is ethernet-vlan-truncated', () => {
    const b = hex('ffffffffffff 000000000001 8100 0001 8100 00');
    expect((EthernetFrame.parse(b) as WireError).reason).toBe('ethernet-vlan-truncated');
  });
});

describe('ethernet: MAC helpers', () => {
  it('parseMac accepts : and - separators, rejects the rest', () => {
    expect(macToString(parseMac('AA-bb-cc-dd-ee-0f')!)).toBe('aa:bb:cc:dd:ee:0f');
    for (const bad of ['', 'aa:bb:cc:dd:ee', 'aa:bb:cc:dd:ee:ff:00', 'aa:bb-cc:dd:ee:ff', 'ga:bb:cc:dd:ee:ff', 'a:bb:cc:dd:ee:ff']) {
      expect(parseMac(bad), bad).toBeNull();
    }
  });
});
