/**
 * NAT in the gateway (src/nat/frames.ts, the NAT stage nat/stage.ts wired in gateway.ts): frames built by hand cross
 * the gateway; what leaves carries translated addresses/ports/ids with checksums equal to a full
 * recomputation (RFC 1624 updates), ICMP errors are translated inside and out, ARP payloads are
 * translated and real addresses never cross. Plus the `nat:` config section.
 */
import { describe, expect, it } from 'vitest';
import { ConfigError, parseConfig } from '../../src/config/index.js';
import { Gateway, type ConnectionState, type Side } from '../../src/engine/gateway.js';
import { finish, ipv4PseudoHeaderSum, sum16 } from '../../src/wire/checksum.js';
import { decodeFrame } from '../../src/wire/frame.js';
import { arpPayload, ethFrame, get16, get32, icmpMsg, ip, ipv4, l4csum, put16, put32, str, udpPacket } from './packets.js';

const MAC_C = [2, 0, 10, 200, 0, 1];
const MAC_S = [2, 0, 10, 200, 0, 2];

const eth = (payload: Uint8Array, type = 0x0800, dstMac = MAC_S, srcMac = MAC_C): Uint8Array => ethFrame(payload, dstMac, srcMac, type);

function tcp(src: string, sport: number, dst: string, dport: number, flags = 0x02, payload = new Uint8Array(0)): Uint8Array {
  const l4 = new Uint8Array(20 + payload.length);
  put16(l4, 0, sport);
  put16(l4, 2, dport);
  put32(l4, 4, 1000);
  put32(l4, 8, flags & 0x10 ? 5000 : 0);
  l4[12] = 0x50;
  l4[13] = flags;
  put16(l4, 14, 65535);
  l4.set(payload, 20);
  l4csum(6, src, dst, l4, 16);
  return eth(ipv4(6, src, dst, l4));
}

const udp = udpPacket;

function echo(src: string, dst: string, type: number, id: number, seq = 1): Uint8Array {
  const rest = new Uint8Array(4 + 8);
  put16(rest, 0, id);
  put16(rest, 2, seq);
  return eth(ipv4(1, src, dst, icmpMsg(type, 0, rest)));
}

function arp(op: number, smac: number[], sip: string, tip: string): Uint8Array {
  return eth(arpPayload(op, smac, sip, [0, 0, 0, 0, 0, 0], tip), 0x0806, [255, 255, 255, 255, 255, 255], smac);
}

/** Every checksum of an Ethernet/IPv4 frame verified by full recomputation. */
function checkSums(f: Uint8Array): void {
  const p = f.subarray(14);
  const ihl = (p[0]! & 15) * 4;
  expect(sum16(p, 0, ihl) === 0xffff || finish(sum16(p, 0, ihl)) === 0, 'ipv4 header checksum').toBe(true);
  const proto = p[9]!;
  const l4 = p.subarray(ihl, get16(p, 2));
  if (proto === 1) expect(finish(sum16(l4, 0, l4.length)), 'icmp checksum').toBe(0);
  else if (proto === 17 && get16(l4, 6) === 0) return;
  else expect(finish(sum16(l4, 0, l4.length, ipv4PseudoHeaderSum(get32(p, 12), get32(p, 16), proto, l4.length))), `proto ${proto} checksum`).toBe(0);
}

const ONE_TO_ONE = `
nat:
  oneToOne:
    - { side: client, real: 10.200.0.1, mapped: 10.200.0.101 }
rules: []
`;
const MASQ = `
nat:
  masquerade:
    - { side: client, sources: 10.200.0.0/24, address: 10.200.0.250, ports: "20000-20001", icmpIds: "300-301" }
rules: []
`;

function gw(cfg: string): { g: Gateway; send: (f: Uint8Array, from: Side) => Uint8Array[] } {
  const g = new Gateway({ config: parseConfig(cfg, 'nat.yaml') });
  let now = 1000;
  return {
    g,
    send: (f, from) => {
      const out: Uint8Array[] = [];
      g.handleFrame(f, from, (now += 1), (x, to) => {
        expect(to).toBe(1 - from);
        out.push(x.slice());
      });
      return out;
    },
  };
}

const ipSrc = (f: Uint8Array): string => str(get32(f, 14 + 12));
const ipDst = (f: Uint8Array): string => str(get32(f, 14 + 16));

describe('NAT in the gateway', () => {
  it('1:1: the client appears as its mapped address; replies go back to the real one; checksums stay right', () => {
    const { g, send } = gw(ONE_TO_ONE);
    const [syn] = send(tcp('10.200.0.1', 40000, '10.200.0.2', 80, 0x02), 0);
    expect(ipSrc(syn!)).toBe('10.200.0.101');
    expect(ipDst(syn!)).toBe('10.200.0.2');
    checkSums(syn!);
    expect(decodeFrame(syn!, { link: 'ethernet', verifyChecksums: true }).kind).toBe('tcp');
    const [sa] = send(tcp('10.200.0.2', 80, '10.200.0.101', 40000, 0x12), 1);
    expect(ipDst(sa!)).toBe('10.200.0.1');
    checkSums(sa!);
    // One flow, seen with the real client address.
    expect(g.flows.size).toBe(1);
    const f = [...g.flows.values()][0]!;
    expect(str(f.client.addr as number)).toBe('10.200.0.1');
    expect(str(f.server.addr as number)).toBe('10.200.0.2');
    const [u] = send(eth(udp('10.200.0.2', 53, '10.200.0.101', 5353, new TextEncoder().encode('abc'))), 1);
    expect(ipDst(u!)).toBe('10.200.0.1');
    checkSums(u!);
    const [u0] = send(eth(udp('10.200.0.1', 5353, '10.200.0.2', 53, new TextEncoder().encode('abc'), false)), 0);
    expect(get16(u0!, 14 + 20 + 6)).toBe(0); // no UDP checksum stays none
    expect(g.stats().gateway.natTranslated).toBe(4);
  });

  it('1:1: the real address is unreachable from the other side (IP and ARP), counted', () => {
    const { g, send } = gw(ONE_TO_ONE);
    expect(send(tcp('10.200.0.2', 80, '10.200.0.1', 40000, 0x02), 1)).toEqual([]);
    expect(send(echo('10.200.0.2', '10.200.0.1', 8, 7), 1)).toEqual([]);
    expect(send(arp(1, MAC_S, '10.200.0.2', '10.200.0.1'), 1)).toEqual([]);
    expect(g.stats().gateway.natDropped).toEqual({ 'real-address': 2, 'arp-real-address': 1 });
  });

  it('ARP payload addresses are translated as they cross (MACs unchanged)', () => {
    const { send } = gw(ONE_TO_ONE);
    const [req] = send(arp(1, MAC_S, '10.200.0.2', '10.200.0.101'), 1);
    expect(str(get32(req!, 14 + 24))).toBe('10.200.0.1');
    expect(str(get32(req!, 14 + 14))).toBe('10.200.0.2');
    const [rep] = send(arp(2, MAC_C, '10.200.0.1', '10.200.0.2'), 0);
    expect(str(get32(rep!, 14 + 14))).toBe('10.200.0.101');
    expect([...rep!.subarray(14 + 8, 14 + 14)]).toEqual(MAC_C);
    const [other] = send(arp(1, MAC_C, '10.200.0.7', '10.200.0.2'), 0);
    expect(str(get32(other!, 14 + 14))).toBe('10.200.0.7');
  });

  it('masquerade: ports and ICMP ids translated and back; unsolicited and exhausted dropped, counted', () => {
    const { g, send } = gw(MASQ);
    const [a] = send(eth(udp('10.200.0.1', 5000, '10.200.0.2', 53, new Uint8Array([1, 2, 3]))), 0);
    expect(ipSrc(a!)).toBe('10.200.0.250');
    const pa = get16(a!, 34);
    expect(pa).toBeGreaterThanOrEqual(20000);
    checkSums(a!);
    const [b] = send(eth(udp('10.200.0.7', 5000, '10.200.0.2', 53, new Uint8Array([1, 2, 3]))), 0);
    const pb = get16(b!, 34);
    expect(pb).not.toBe(pa);
    checkSums(b!);
    expect(send(eth(udp('10.200.0.8', 5000, '10.200.0.2', 53, new Uint8Array([1])))!, 0)).toEqual([]);
    const [r] = send(eth(udp('10.200.0.2', 53, '10.200.0.250', pb, new Uint8Array([9]))), 1);
    expect(ipDst(r!)).toBe('10.200.0.7');
    expect(get16(r!, 36)).toBe(5000);
    checkSums(r!);
    expect(send(eth(udp('10.200.0.2', 53, '10.200.0.250', 29999, new Uint8Array([9]))), 1)).toEqual([]);
    const [e] = send(echo('10.200.0.1', '10.200.0.2', 8, 7), 0);
    const id = get16(e!, 14 + 20 + 4);
    expect(id).toBeGreaterThanOrEqual(300);
    checkSums(e!);
    const [er] = send(echo('10.200.0.2', '10.200.0.250', 0, id), 1);
    expect(ipDst(er!)).toBe('10.200.0.1');
    expect(get16(er!, 14 + 20 + 4)).toBe(7);
    checkSums(er!);
    expect(g.stats().gateway.natDropped).toEqual({ 'ports-exhausted': 1, 'no-entry': 1 });
    expect(g.stats().nat?.entries).toBe(3);
  });

  it('ICMP errors quoting a translated packet are translated inside and out', () => {
    const { send } = gw(MASQ);
    const [a] = send(eth(udp('10.200.0.1', 5000, '10.200.0.2', 53, new Uint8Array([1, 2, 3, 4]))), 0);
    const sent = a!.subarray(14);
    // Port unreachable from the server, quoting the packet as it arrived there.
    const rest = new Uint8Array(4 + sent.length);
    rest.set(sent, 4);
    const [err] = send(eth(ipv4(1, '10.200.0.2', '10.200.0.250', icmpMsg(3, 3, rest))), 1);
    expect(err).toBeDefined();
    checkSums(err!);
    expect(ipDst(err!)).toBe('10.200.0.1');
    const inner = err!.subarray(14 + 20 + 8);
    expect(str(get32(inner, 12))).toBe('10.200.0.1');
    expect(str(get32(inner, 16))).toBe('10.200.0.2');
    expect(get16(inner, 20)).toBe(5000);
    expect(finish(sum16(inner, 0, 20))).toBe(0);
    const il4 = inner.subarray(20);
    expect(finish(sum16(il4, 0, il4.length, ipv4PseudoHeaderSum(get32(inner, 12), get32(inner, 16), 17, il4.length)))).toBe(0);
  });

  it('1:1: an ICMP error from the server side about the mapped client is delivered to the real one', () => {
    const { send } = gw(ONE_TO_ONE);
    const [a] = send(eth(udp('10.200.0.1', 5000, '10.200.0.2', 9, new Uint8Array([1, 2]))), 0);
    const rest = new Uint8Array(4 + 28);
    rest.set(a!.subarray(14, 14 + 28), 4);
    const [err] = send(eth(ipv4(1, '10.200.0.2', '10.200.0.101', icmpMsg(3, 3, rest))), 1);
    checkSums(err!);
    expect(ipDst(err!)).toBe('10.200.0.1');
    expect(str(get32(err!, 14 + 28 + 12))).toBe('10.200.0.1');
  });
});

const MASQ_L2 = `
nat:
  masquerade:
    - { side: client, sources: 10.200.0.0/24, address: 10.200.0.100, ports: "20000-29999" }
rules: []
`;
const MAC_C2 = [2, 0, 10, 200, 0, 3];
const GW_MAC = [0x02, 0x74, 10, 200, 0, 100];
const macAt = (f: Uint8Array, o: number): number[] => [...f.subarray(o, o + 6)];
const withMacs = (f: Uint8Array, dst: number[], src: number[]): Uint8Array => {
  f.set(dst, 0);
  f.set(src, 6);
  return f;
};

/** Frames out of the gateway with the side each left on. */
function gwAny(cfg: string): { g: Gateway; send: (f: Uint8Array, from: Side) => Array<{ f: Uint8Array; to: Side }> } {
  const g = new Gateway({ config: parseConfig(cfg, 'nat.yaml') });
  let now = 1000;
  return {
    g,
    send: (f, from) => {
      const out: Array<{ f: Uint8Array; to: Side }> = [];
      g.handleFrame(f, from, (now += 1), (x, to) => out.push({ f: x.slice(), to }));
      return out;
    },
  };
}

describe('masquerade at layer 2 (proxy ARP, MAC rewriting)', () => {
  it('answers ARP for the shared address on the server side with its own MAC, never forwards it', () => {
    const { g, send } = gwAny(MASQ_L2);
    const out = send(arp(1, MAC_S, '10.200.0.2', '10.200.0.100'), 1);
    expect(out.length).toBe(1);
    const { f, to } = out[0]!;
    expect(to).toBe(1);
    expect(macAt(f, 0)).toEqual(MAC_S);
    expect(macAt(f, 6)).toEqual(GW_MAC);
    expect(get16(f, 14 + 6)).toBe(2);
    expect(macAt(f, 14 + 8)).toEqual(GW_MAC);
    expect(str(get32(f, 14 + 14))).toBe('10.200.0.100');
    expect(macAt(f, 14 + 18)).toEqual(MAC_S);
    expect(str(get32(f, 14 + 24))).toBe('10.200.0.2');
    expect(g.stats().nat?.['l2']).toMatchObject({ arpAnswered: 1 });
  });

  it('two clients share the address: source MACs become the gateway\'s, replies get each real MAC back', () => {
    const { send } = gwAny(MASQ_L2);
    const [a] = send(withMacs(tcp('10.200.0.1', 40000, '10.200.0.2', 21, 0x02), MAC_S, MAC_C), 0);
    const [b] = send(withMacs(tcp('10.200.0.3', 40000, '10.200.0.2', 21, 0x02), MAC_S, MAC_C2), 0);
    for (const x of [a!, b!]) {
      expect(x.to).toBe(1);
      expect(ipSrc(x.f)).toBe('10.200.0.100');
      expect(macAt(x.f, 6)).toEqual(GW_MAC);
      expect(macAt(x.f, 0)).toEqual(MAC_S);
      checkSums(x.f);
    }
    const pa = get16(a!.f, 34);
    const pb = get16(b!.f, 34);
    expect(pa).not.toBe(pb);
    const [ra] = send(withMacs(tcp('10.200.0.2', 21, '10.200.0.100', pa, 0x12), GW_MAC, MAC_S), 1);
    const [rb] = send(withMacs(tcp('10.200.0.2', 21, '10.200.0.100', pb, 0x12), GW_MAC, MAC_S), 1);
    expect([ra!.to, ipDst(ra!.f), get16(ra!.f, 36), macAt(ra!.f, 0)]).toEqual([0, '10.200.0.1', 40000, MAC_C]);
    expect([rb!.to, ipDst(rb!.f), get16(rb!.f, 36), macAt(rb!.f, 0)]).toEqual([0, '10.200.0.3', 40000, MAC_C2]);
    checkSums(ra!.f);
    checkSums(rb!.f);
  });

  it('relays a client\'s ARP request as the shared address and delivers the reply to each asker', () => {
    const { g, send } = gwAny(MASQ_L2);
    const [q1] = send(arp(1, MAC_C, '10.200.0.1', '10.200.0.2'), 0);
    expect(q1!.to).toBe(1);
    expect(macAt(q1!.f, 6)).toEqual(GW_MAC);
    expect(macAt(q1!.f, 14 + 8)).toEqual(GW_MAC);
    expect(str(get32(q1!.f, 14 + 14))).toBe('10.200.0.100');
    const [q2] = send(arp(1, MAC_C2, '10.200.0.3', '10.200.0.2'), 0);
    expect(str(get32(q2!.f, 14 + 14))).toBe('10.200.0.100');
    // The server answers the shared address.
    const rep = arp(2, MAC_S, '10.200.0.2', '10.200.0.100');
    rep.set(GW_MAC, 0);
    rep.set(GW_MAC, 14 + 18);
    const out = send(rep, 1);
    expect(out.map((o) => [o.to, macAt(o.f, 0), macAt(o.f, 14 + 18), str(get32(o.f, 14 + 24)), macAt(o.f, 14 + 8)])).toEqual([
      [0, MAC_C, MAC_C, '10.200.0.1', MAC_S],
      [0, MAC_C2, MAC_C2, '10.200.0.3', MAC_S],
    ]);
    // Answered once: a second reply finds no asker.
    expect(send(rep, 1)).toEqual([]);
    expect(g.stats().nat?.['l2']).toMatchObject({ arpRelayed: 2, arpDelivered: 2, macs: 2 });
  });

  it('with a published server (1:1 on the server side): a client reaches it at its mapped address, masqueraded, and ARP for that address is answered as that address', () => {
    const { g, send } = gwAny(`
nat:
  masquerade:
    - { side: client, sources: 10.200.0.0/24, address: 10.200.0.100, ports: "20000-29999" }
  oneToOne:
    - { side: server, real: 10.200.0.2, mapped: 10.200.0.102 }
rules: []
`);
    // ARP: the client asks for 10.200.0.102; the server is asked for 10.200.0.2 by the shared address.
    const [q] = send(arp(1, MAC_C, '10.200.0.1', '10.200.0.102'), 0);
    expect([q!.to, str(get32(q!.f, 14 + 14)), str(get32(q!.f, 14 + 24))]).toEqual([1, '10.200.0.100', '10.200.0.2']);
    const rep = arp(2, MAC_S, '10.200.0.2', '10.200.0.100');
    rep.set(GW_MAC, 0);
    rep.set(GW_MAC, 14 + 18);
    const out = send(rep, 1);
    expect(out.map((o) => [o.to, str(get32(o.f, 14 + 14)), macAt(o.f, 14 + 8), str(get32(o.f, 14 + 24)), macAt(o.f, 0)])).toEqual([[0, '10.200.0.102', MAC_S, '10.200.0.1', MAC_C]]);
    // IP: source masqueraded and destination mapped, both ways.
    const [a] = send(withMacs(tcp('10.200.0.1', 40000, '10.200.0.102', 21, 0x02), MAC_S, MAC_C), 0);
    expect([a!.to, ipSrc(a!.f), ipDst(a!.f), macAt(a!.f, 6)]).toEqual([1, '10.200.0.100', '10.200.0.2', GW_MAC]);
    checkSums(a!.f);
    const [r] = send(withMacs(tcp('10.200.0.2', 21, '10.200.0.100', get16(a!.f, 34), 0x12), GW_MAC, MAC_S), 1);
    expect([r!.to, ipSrc(r!.f), ipDst(r!.f), get16(r!.f, 36), macAt(r!.f, 0)]).toEqual([0, '10.200.0.102', '10.200.0.1', 40000, MAC_C]);
    checkSums(r!.f);
    expect(g.stats().gateway.natDropped).toEqual({});
    expect(g.stats().nat?.['l2']).toMatchObject({ arpRelayed: 1, arpDelivered: 1 });
  });

  it('the server side never sees or reaches a real client address or MAC', () => {
    const { g, send } = gwAny(MASQ_L2);
    send(withMacs(tcp('10.200.0.1', 40000, '10.200.0.2', 21, 0x02), MAC_S, MAC_C), 0);
    // Server → real client: IP and ARP dropped.
    expect(send(withMacs(echo('10.200.0.2', '10.200.0.1', 8, 7), MAC_C, MAC_S), 1)).toEqual([]);
    expect(send(arp(1, MAC_S, '10.200.0.2', '10.200.0.3'), 1)).toEqual([]);
    // A client's ARP reply or a request for a known neighbour does not cross.
    expect(send(withMacs(arp(2, MAC_C, '10.200.0.1', '10.200.0.2'), MAC_S, MAC_C), 0)).toEqual([]);
    expect(send(arp(1, MAC_C2, '10.200.0.3', '10.200.0.1'), 0)).toEqual([]);
    // An untranslatable protocol (GRE) and a non-IPv4 frame from a client's MAC.
    expect(send(eth(ipv4(47, '10.200.0.1', '10.200.0.2', new Uint8Array(8))), 0)).toEqual([]);
    expect(send(eth(new Uint8Array(46), 0x88cc), 0)).toEqual([]);
    expect(g.stats().gateway.natDropped).toEqual({ 'real-address': 1, 'arp-real-address': 3, 'masquerade-untranslated': 2 });
    // A connection for a host whose MAC was never seen: dropped, counted; the gateway asks for it.
    const r = g.nat!.expectData(0, 'tcp', ip('10.200.0.9'), 45000, ip('10.200.0.2'), 1001, 'x');
    expect(send(withMacs(tcp('10.200.0.2', 20, '10.200.0.100', r!.port, 0x02), GW_MAC, MAC_S), 1).map((o) => o.to)).toEqual([0]);
    expect(g.stats().gateway.natDropped['no-mac']).toBe(1);
  });

  it('a reply for a host whose MAC it does not know: dropped, one ARP request as the shared address (VLAN kept, once a second), the answer taught and taken', () => {
    const { g, send } = gwAny(MASQ_L2);
    const r = g.nat!.expectData(0, 'tcp', ip('10.200.0.9'), 45000, ip('10.200.0.2'), 1001, 'x');
    // A VLAN-tagged segment: the request goes out with the same tag.
    const plain = withMacs(tcp('10.200.0.2', 20, '10.200.0.100', r!.port, 0x02), GW_MAC, MAC_S);
    const tagged = new Uint8Array(plain.length + 4);
    tagged.set(plain.subarray(0, 12));
    put16(tagged, 12, 0x8100);
    put16(tagged, 14, 42);
    tagged.set(plain.subarray(12), 16);
    const out = send(tagged.slice(), 1);
    expect(out.length).toBe(1);
    const q = out[0]!.f;
    expect([out[0]!.to, macAt(q, 0), macAt(q, 6), get16(q, 12), get16(q, 14), get16(q, 16), q.length]).toEqual([0, [255, 255, 255, 255, 255, 255], GW_MAC, 0x8100, 42, 0x0806, 18 + 28]);
    const a = 18;
    expect([get16(q, a + 6), macAt(q, a + 8), str(get32(q, a + 14)), macAt(q, a + 18), str(get32(q, a + 24))]).toEqual([1, GW_MAC, '10.200.0.100', [0, 0, 0, 0, 0, 0], '10.200.0.9']);
    // The sender's retransmission within the second: dropped, not asked again.
    expect(send(tagged.slice(), 1)).toEqual([]);
    expect(g.stats().gateway.natDropped['no-mac']).toBe(2);
    // The host answers the shared address: learnt, not forwarded, not a drop.
    const MAC_9 = [2, 0, 10, 200, 0, 9];
    const rep = arp(2, MAC_9, '10.200.0.9', '10.200.0.100');
    rep.set(GW_MAC, 0);
    rep.set(GW_MAC, 14 + 18);
    expect(send(rep, 0)).toEqual([]);
    const [c] = send(plain, 1);
    expect([c!.to, ipDst(c!.f), macAt(c!.f, 0)]).toEqual([0, '10.200.0.9', MAC_9]);
    expect(g.stats().gateway.natDropped).toEqual({ 'no-mac': 2 });
    expect(g.stats().nat?.['l2']).toMatchObject({ arpResolve: 1, macs: 1 });
  });

  it('a connection\'s state carries its masqueraded host\'s MAC: a gateway that never heard the host addresses its replies', () => {
    const a = gwAny(MASQ_L2);
    const [syn] = a.send(withMacs(tcp('10.200.0.3', 40001, '10.200.0.2', 21, 0x02), MAC_S, MAC_C2), 0);
    const f = a.g.flows.peek({ addr: ip('10.200.0.3'), port: 40001 }, { addr: ip('10.200.0.2'), port: 21 })!;
    const port = get16(syn!.f, 34);
    const st = JSON.parse(JSON.stringify(a.g.exportConnection(f as never, [
      { proto: 'tcp', src: ip('10.200.0.3'), sport: 40001, dst: ip('10.200.0.2'), dport: 21 },
      { proto: 'tcp', src: ip('10.200.0.2'), sport: 21, dst: ip('10.200.0.100'), dport: port },
    ]))) as ConnectionState;
    expect(st.macs).toEqual([{ addr: ip('10.200.0.3'), mac: '02:00:0a:c8:00:03' }]);
    const b = gwAny(MASQ_L2);
    expect(b.g.importConnection(st, 2000, [undefined, undefined])).not.toBeNull();
    const [c] = b.send(withMacs(tcp('10.200.0.2', 21, '10.200.0.100', port, 0x12), GW_MAC, MAC_S), 1);
    expect([c!.to, ipDst(c!.f), get16(c!.f, 36), macAt(c!.f, 0)]).toEqual([0, '10.200.0.3', 40001, MAC_C2]);
    expect(b.g.stats().nat?.['l2']).toMatchObject({ macsImported: 1, arpResolve: 0 });
    // A MAC this gateway heard itself is not replaced by a snapshot's; a bad entry refuses the state.
    const c2 = gwAny(MASQ_L2);
    c2.send(withMacs(tcp('10.200.0.3', 40002, '10.200.0.2', 21, 0x02), MAC_S, [2, 0, 0, 0, 0, 0x33]), 0);
    expect(c2.g.importConnection(st, 2000, [undefined, undefined])).not.toBeNull();
    expect(c2.g.masqL2!.macOf(ip('10.200.0.3'))).toEqual(Uint8Array.of(2, 0, 0, 0, 0, 0x33));
    expect(gwAny(MASQ_L2).g.importConnection({ ...st, macs: [{ addr: ip('10.200.0.3'), mac: 'zz' }] }, 2000, [undefined, undefined])).toBeNull();
  });

  it('an expected connection from the server (active FTP) reaches the right client MAC', () => {
    const { g, send } = gwAny(MASQ_L2);
    send(withMacs(tcp('10.200.0.3', 40001, '10.200.0.2', 21, 0x02), MAC_S, MAC_C2), 0);
    const r = g.nat!.expectData(0, 'tcp', ip('10.200.0.3'), 45000, ip('10.200.0.2'), 1001, 'x');
    expect(r).toBeTruthy();
    const [c] = send(withMacs(tcp('10.200.0.2', 20, '10.200.0.100', r!.port, 0x02), GW_MAC, MAC_S), 1);
    expect([c!.to, ipDst(c!.f), get16(c!.f, 36), macAt(c!.f, 0)]).toEqual([0, '10.200.0.3', 45000, MAC_C2]);
    checkSums(c!.f);
    const [back] = send(withMacs(tcp('10.200.0.3', 45000, '10.200.0.2', 20, 0x12), MAC_S, MAC_C2), 0);
    expect([ipSrc(back!.f), get16(back!.f, 34), macAt(back!.f, 6)]).toEqual(['10.200.0.100', r!.port, GW_MAC]);
  });
});

describe('the nat: config section', () => {
  it('parses 1:1, masquerade, timeouts and limits', () => {
    const c = parseConfig(`${MASQ}\n`.replace('rules: []', 'rules: []\n') + '', 'x.yaml');
    expect(c.nat?.table.masquerade[0]?.ports).toEqual({ lo: 20000, hi: 20001 });
    const d = parseConfig('nat:\n  oneToOne: [{ side: server, real: 10.0.0.0/24, mapped: 192.168.0.0/24 }]\n  timeouts: { udp: 1000 }\n  limits: { maxEntries: 5 }\nrules: []\n');
    expect(d.nat?.table.oneToOne[0]?.side).toBe(1);
    expect(d.nat?.table.timeouts.udp).toBe(1000);
    expect(d.nat?.table.limits.maxEntries).toBe(5);
    expect(parseConfig('rules: []\n').nat).toBeUndefined();
  });

  it('reports bad entries with file:line', () => {
    const bad = (t: string): string => {
      try {
        parseConfig(t, 'bad.yaml');
      } catch (e) {
        expect(e).toBeInstanceOf(ConfigError);
        return (e as Error).message;
      }
      throw new Error('accepted');
    };
    expect(bad('nat:\n  oneToOne:\n    - { side: left, real: 10.0.0.1, mapped: 10.0.0.2 }\nrules: []\n')).toMatch(/bad\.yaml:3:.*client or server/);
    expect(bad('nat:\n  oneToOne:\n    - { side: client, real: 10.0.0.0/24, mapped: 10.1.0.1 }\nrules: []\n')).toMatch(/bad\.yaml:3:.*same size/);
    expect(bad('nat:\n  masquerade:\n    - { side: client, address: 10.0.0.1, ports: "9-3" }\nrules: []\n')).toMatch(/bad\.yaml:3:.*empty/);
    expect(bad('nat:\n  bogus: 1\nrules: []\n')).toMatch(/bad\.yaml:2:.*unknown key "bogus"/);
  });
});
