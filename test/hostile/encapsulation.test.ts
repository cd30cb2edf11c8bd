/**
 * Frames that carried TCP a rule covers past the agent without a policy count (found by a review,
 * 2026-12-07): a Segment Routing Header (its final destination never matched; RPL and unknown
 * routing types likewise), VXLAN on Linux's default port 8472 and GRE-in-UDP (4754) beside the
 * tunnels already known, AH inside AH, and IP in 802.3 LLC/SNAP frames (RFC 1042: Linux drops them,
 * RFC 1122 says a host SHOULD take them). Each case sends a client→server data segment with
 * "secret" to port 80 (rule: replace "secret") and looks at what leaves and what is counted.
 */
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/index.js';
import { Gateway } from '../../src/engine/gateway.js';
import { DEFAULT_LIMITS } from '../../src/stream/limits.js';
import { finish, fold16, sum16 } from '../../src/wire/checksum.js';
import { set16 } from '../../src/wire/bytes.js';
import { decodeFrame } from '../../src/wire/frame.js';
import { parseIp } from '../../src/wire/ip.js';
import { Ipv4Repr, IP_PROTO_TCP } from '../../src/wire/ipv4.js';
import { ipv6PseudoHeaderSum, parseIpv6 } from '../../src/wire/ipv6.js';
import { tcpFrame } from '../../src/wire/tcp-frame.js';

const C = 0x0a000001, S = 0x0a000002;
const C6 = parseIp('2001:db8::1') as string, S6 = parseIp('2001:db8::2') as string, R6 = parseIp('2001:db8::99') as string;
const SECRET = new Uint8Array(Buffer.from('GET /secret HTTP/1.0\r\n\r\n'));
const PORT_RULE = `rules:\n  - match: { port: 80 }\n    agent: replace\n    replace:\n      - { find: "secret", with: "[gone]" }\n`;

function gw(cfg = PORT_RULE, vnet = false) {
  return new Gateway({ config: parseConfig(cfg, 'r.yaml'), sided: true, vnetHdr: vnet, limits: { ...DEFAULT_LIMITS, holdTimeoutMs: 1e9 } });
}
function run(g: Gateway, f: Uint8Array, from: 0 | 1 = 0): Uint8Array[] {
  const out: Uint8Array[] = [];
  g.handleFrame(f, from, 0, (x) => void out.push(x.slice()));
  return out;
}
const has = (b: Uint8Array, s: string) => Buffer.from(b).includes(Buffer.from(s));
/** A client data segment (ACK|PSH) to S:80 as an IPv4 packet (no Ethernet). */
function ipv4Seg(payload = SECRET): Uint8Array {
  return tcpFrame({ src: C, dst: S, srcPort: 40000, dstPort: 80, seq: 1001, ack: 5001, flags: 0x18, payload }).subarray(14);
}
function ipv4(proto: number, payload: Uint8Array): Uint8Array {
  const ip = new Ipv4Repr({ src: C, dst: S, protocol: proto, payloadLen: payload.length });
  const b = new Uint8Array(20 + payload.length);
  ip.emit(b);
  b.set(payload, 20);
  return b;
}
function eth(type: number, payload: Uint8Array): Uint8Array {
  const b = new Uint8Array(14 + payload.length);
  b.set([2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1], 0);
  set16(b, 12, type);
  b.set(payload, 14);
  return b;
}
function udp(dport: number, payload: Uint8Array): Uint8Array {
  const b = new Uint8Array(8 + payload.length);
  set16(b, 0, 55555);
  set16(b, 2, dport);
  set16(b, 4, b.length); // checksum 0: none (IPv4)
  b.set(payload, 8);
  return b;
}

describe('encapsulations and routing that hid a covered connection', () => {
  it('LLC/SNAP (RFC 1042) around IPv4 TCP: dropped under policy.encapsulated (llc-snap); other SNAP frames (CDP) pass', () => {
    const ip = ipv4Seg();
    const llc = new Uint8Array(8 + ip.length);
    llc.set([0xaa, 0xaa, 0x03, 0, 0, 0, 0x08, 0x00]);
    llc.set(ip, 8);
    const f = eth(llc.length, llc); // 802.3 length field instead of an EtherType
    const g = gw();
    expect(run(g, f).length).toBe(0);
    expect(g.stats().gateway.policy.dropped).toEqual({ 'llc-snap': 1 });
    const cdp = new Uint8Array(60);
    cdp.set([0xaa, 0xaa, 0x03, 0x00, 0x00, 0x0c, 0x20, 0x00]);
    const g2 = gw();
    expect(run(g2, eth(cdp.length, cdp)).length).toBe(1);
    expect(g2.stats().gateway.policy.dropped).toEqual({});
  });

  it('VXLAN on Linux\'s default port 8472 as on 4789, and GRE-in-UDP (4754): dropped, counted', () => {
    const inner = tcpFrame({ src: C, dst: S, srcPort: 40000, dstPort: 80, seq: 1001, ack: 5001, flags: 0x18, payload: SECRET });
    const vx = new Uint8Array(8 + inner.length);
    vx.set([0x08, 0, 0, 0, 0, 0, 42, 0]);
    vx.set(inner, 8);
    const res: Record<number, number> = {};
    for (const port of [4789, 8472]) {
      const g = gw();
      res[port] = run(g, eth(0x0800, ipv4(17, udp(port, vx)))).length;
      expect(g.stats().gateway.policy.dropped).toEqual({ vxlan: 1 });
    }
    expect(res).toEqual({ 4789: 0, 8472: 0 });
    const ip = ipv4Seg();
    const greU = new Uint8Array(4 + ip.length);
    greU.set([0, 0, 0x08, 0x00]);
    greU.set(ip, 4);
    const g = gw();
    expect(run(g, eth(0x0800, ipv4(17, udp(4754, greU)))).length).toBe(0);
    expect(g.stats().gateway.policy.dropped).toEqual({ gre: 1 });
  });

  it('AH inside AH around TCP is dropped as `ah` as one AH is; ESP (not readable) passes, uncounted', () => {
    const seg = ipv4Seg().subarray(20);
    const ah = (next: number, body: Uint8Array) => {
      const b = new Uint8Array(24 + body.length);
      b[0] = next;
      b[1] = 4; // (24 / 4) - 2
      b.set(body, 24);
      return b;
    };
    const g1 = gw();
    expect(run(g1, eth(0x0800, ipv4(51, ah(6, seg)))).length).toBe(0);
    expect(g1.stats().gateway.policy.dropped).toEqual({ ah: 1 });
    const g2 = gw();
    expect(run(g2, eth(0x0800, ipv4(51, ah(51, ah(6, seg))))).length).toBe(0);
    expect(g2.stats().gateway.policy.dropped).toEqual({ ah: 1 });
    const g3 = gw();
    expect(run(g3, eth(0x0800, ipv4(50, new Uint8Array(64)))).length).toBe(1);
    expect(g3.stats().gateway.policy).toEqual({ dropped: {}, passed: {} });
  });

  it('a Segment Routing Header (type 4) with segments left: not read as TCP to the active segment; under policy.ipv6 (checksums checked with the final destination), live and verified', () => {
    // SRH: next TCP, hdr ext len 4 (40 bytes), type 4, segments left 1, last entry 1; list [S6 (final), R6 (active)].
    const srh = new Uint8Array(40);
    srh.set([IP_PROTO_TCP, 4, 4, 1, 1, 0, 0, 0]);
    srh.set(parseIpv6('2001:db8::2')!, 8);
    srh.set(parseIpv6('2001:db8::99')!, 24);
    const build = (vh: number) => {
      const f = tcpFrame({ src: C6, dst: R6, srcPort: 40000, dstPort: 80, seq: 1001, ack: 5001, flags: 0x18, payload: SECRET, ipv6ExtHeaders: srh, ipv6FirstHeader: 43, checksum: 'none', headroom: vh });
      // The checksum as the sender computes it: pseudo-header with the FINAL destination (RFC 8200 §8.1).
      const l3 = vh + 14, l4 = l3 + 40 + 40, tcpLen = f.length - l4;
      const pseudo = ipv6PseudoHeaderSum(f, l3 + 8, l3 + 40 + 8, IP_PROTO_TCP, tcpLen);
      if (vh === 0) set16(f, l4 + 16, finish(sum16(f, l4, f.length, pseudo)));
      else {
        set16(f, l4 + 16, fold16(pseudo)); // NEEDS_CSUM partial sum, as a TAP hands it over
        f[0] = 1; // flags NEEDS_CSUM
        f[2] = (l4 - vh) & 0xff; f[3] = (l4 - vh) >> 8; // hdr_len (le)
        f[6] = (l4 - vh) & 0xff; f[7] = (l4 - vh) >> 8; // csum_start
        f[8] = 16; // csum_offset
      }
      return f;
    };
    // The decoder: not 'tcp' to R6 (a Routing header with segments left falls under the policy).
    const d = decodeFrame(build(0), { link: 'ethernet', verifyChecksums: false, ipv6: true });
    expect(d.kind).toBe('other');
    // RPL's source routing header (type 3, RFC 6554: compressed addresses) and unknown types with segments left: the same.
    for (const type of [3, 5, 200]) {
      const rh = new Uint8Array(24);
      rh.set([IP_PROTO_TCP, 2, type, 1]);
      const f = tcpFrame({ src: C6, dst: R6, srcPort: 40000, dstPort: 80, seq: 1001, ack: 5001, flags: 0x18, payload: SECRET, ipv6ExtHeaders: rh, ipv6FirstHeader: 43 });
      expect([type, decodeFrame(f, { link: 'ethernet', verifyChecksums: false, ipv6: true }).kind]).toEqual([type, 'other']);
    }
    // (a) live (vnet header, NEEDS_CSUM): a rule on the final destination never sees it.
    const addrRule = `rules:\n  - match: { serverAddress: "2001:db8::2" }\n    agent: replace\n    replace:\n      - { find: "secret", with: "[gone]" }\n`;
    const g = gw(addrRule, true);
    expect(run(g, build(10)).length).toBe(0);
    expect(g.stats().gateway.policy.dropped).toEqual({ 'ipv6-tcp': 1 });
    // (b) verified (no vnet header): the sender's correct checksum is taken for a bad one.
    const g2 = gw();
    expect(run(g2, build(0)).length).toBe(0);
    expect(g2.stats().gateway.malformed).toEqual({});
    expect(g2.stats().gateway.policy.dropped).toEqual({ 'ipv6-tcp': 1 });
  });

  it('(as documented) an IPv4-address rule: inspectable IPv6 TCP to its port is another host\'s; uninspectable IPv6 TCP counts as covered by the port', () => {
    const rule = `rules:\n  - match: { serverAddress: 10.0.0.2, port: 80 }\n    agent: replace\n    replace:\n      - { find: "secret", with: "[gone]" }\n`;
    const g = gw(rule);
    const syn = tcpFrame({ src: C6, dst: S6, srcPort: 40000, dstPort: 80, seq: 1000, flags: 0x02 });
    const synack = tcpFrame({ src: S6, dst: C6, srcPort: 80, dstPort: 40000, seq: 5000, ack: 1001, flags: 0x12 });
    const ack = tcpFrame({ src: C6, dst: S6, srcPort: 40000, dstPort: 80, seq: 1001, ack: 5001, flags: 0x10 });
    const data = tcpFrame({ src: C6, dst: S6, srcPort: 40000, dstPort: 80, seq: 1001, ack: 5001, flags: 0x18, payload: SECRET });
    run(g, syn, 0); run(g, synack, 1); run(g, ack, 0);
    const out = run(g, data, 0);
    expect(out.length).toBe(1);
    expect(has(out[0]!, 'secret')).toBe(true);
    expect(g.stats().gateway.policy).toEqual({ dropped: {}, passed: {} });
    // The same segment behind a Routing header type 2 (uninspectable): dropped, counted as covered by port.
    const rh = new Uint8Array(24);
    rh.set([IP_PROTO_TCP, 2, 2, 1]);
    rh.set(parseIpv6('2001:db8::2')!, 8);
    const g2 = gw(rule);
    expect(run(g2, tcpFrame({ src: C6, dst: S6, srcPort: 40000, dstPort: 80, seq: 1001, ack: 5001, flags: 0x18, payload: SECRET, ipv6ExtHeaders: rh, ipv6FirstHeader: 43 })).length).toBe(0);
    expect(g2.stats().gateway.policy.dropped).toEqual({ 'ipv6-tcp': 1 });
  });
});
