/**
 * What the outside could do through the NAT (found by a review, 2026-12-07), each now refused:
 * reach a masqueraded host without an entry (ICMP errors naming it, echo/timestamp requests
 * riding an echo entry, other protocols to the shared address), learn a hidden address (IP
 * options a host fills in, an error quoting one, a flooded inside-to-inside frame), point the
 * inside's ARP caches at an outside MAC, cut an idle connection's mapping with a RST of any
 * sequence number, fill the ARP relay table for good; and a config naming a mapped address in a
 * rule (never matched).
 * Topology: hidden hosts H1 10.200.0.1 (MAC_H1), H2 10.200.0.3 (MAC_H2) on side 0 (client),
 * masqueraded as 10.200.0.250; outside host R 10.200.0.200 (MAC_R) on side 1.
 */
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/index.js';
import { Gateway, type Side } from '../../src/engine/gateway.js';
import { finish, sum16 } from '../../src/wire/checksum.js';
import { parseIp } from '../../src/wire/ip.js';
import { tcpFrame } from '../../src/wire/tcp-frame.js';
import { arpPayload, ethFrame, get16, get32, icmpMsg, ip, ipv4, put16, put32, str, udpPacket } from './packets.js';

const MAC_H1 = [2, 0, 10, 200, 0, 1];
const MAC_H2 = [2, 0, 10, 200, 0, 3];
const MAC_R = [2, 0, 10, 200, 0, 200];
const GW_MAC = [0x02, 0x74, 10, 200, 0, 250];
const BCAST = [255, 255, 255, 255, 255, 255];

const eth = ethFrame;
const udp = (src: string, sport: number, dst: string, dport: number): Uint8Array => udpPacket(src, sport, dst, dport, new Uint8Array([1, 2, 3, 4]));
const icmp = icmpMsg;
function echoMsg(type: number, id: number, seq = 1): Uint8Array {
  const rest = new Uint8Array(4 + 8);
  put16(rest, 0, id);
  put16(rest, 2, seq);
  return icmp(type, 0, rest);
}
/** An ICMP error message (type/code, 4 bytes of "rest of header") quoting `quoted` (an IPv4 packet). */
function icmpErr(type: number, code: number, quoted: Uint8Array, hdrRest = new Uint8Array(4)): Uint8Array {
  const rest = new Uint8Array(4 + Math.min(quoted.length, 28));
  rest.set(hdrRest, 0);
  rest.set(quoted.subarray(0, 28), 4);
  return icmp(type, code, rest);
}
/** Record Route option, 9 slots, pointer at the first free one (`filled` addresses already in). */
function rr(filled: number[]): Uint8Array {
  const o = new Uint8Array(40);
  o[0] = 7;
  o[1] = 39;
  o[2] = 4 + 4 * filled.length;
  filled.forEach((a, i) => put32(o, 3 + 4 * i, a));
  o[39] = 0; // end of options
  return o;
}
function arp(op: number, smac: number[], sip: string, tmac: number[], tip: string, dstMac = BCAST): Uint8Array {
  return eth(arpPayload(op, smac, sip, tmac, tip), dstMac, smac, 0x0806);
}

const MASQ = `
nat:
  masquerade:
    - { side: client, sources: 10.200.0.0/28, address: 10.200.0.250, ports: "20000-29999" }
rules: []
`;

function gw(cfg: string) {
  const g = new Gateway({ config: parseConfig(cfg, 'nat.yaml') });
  let now = 1000;
  const send = (f: Uint8Array, from: Side, at?: number): Array<{ f: Uint8Array; to: Side }> => {
    const out: Array<{ f: Uint8Array; to: Side }> = [];
    if (at !== undefined) now = at;
    g.handleFrame(f, from, (now += 1), (x, to) => out.push({ f: x.slice(), to }));
    return out;
  };
  return { g, send, now: () => now };
}
const ipSrc = (f: Uint8Array): string => str(get32(f, 14 + 12));
const ipDst = (f: Uint8Array): string => str(get32(f, 14 + 16));
/** H1 speaks once (its MAC is learnt): a UDP datagram to R. */
const h1Speaks = (send: ReturnType<typeof gw>['send']) => send(eth(udp('10.200.0.1', 5353, '10.200.0.200', 53), MAC_R, MAC_H1), 0);


const EXAMPLE = `
nat:
  masquerade:
    - { side: client, sources: 10.200.0.0/24, address: 10.200.0.100, ports: "20000-29999" }
rules: []
`;

describe('reaching hidden hosts from outside without an entry', () => {
  it('an ICMP error to the shared address quoting a packet no entry translated: dropped (no-entry), no ARP for the quoted host', () => {
    const { g, send } = gw(MASQ);
    h1Speaks(send);
    for (const q of [udp('10.200.0.1', 7777, '198.51.100.9', 53), udp('10.200.0.9', 7777, '198.51.100.9', 53), udp('10.200.0.250', 29999, '10.200.0.200', 53)]) {
      for (const [type, code] of [[3, 3], [3, 4], [11, 0], [12, 0], [5, 1]]) {
        expect(send(eth(ipv4(1, '10.200.0.200', '10.200.0.250', icmpErr(type!, code!, q)), GW_MAC, MAC_R), 1), `type ${type}`).toEqual([]);
      }
    }
    expect(g.stats().gateway.natDropped).toEqual({ 'no-entry': 15 });
  });

  it('an ICMP error about a real entry but not sent to its quoted source: dropped (icmp-unrelated); sent to it, delivered', () => {
    const { g, send } = gw(MASQ);
    const [o] = h1Speaks(send);
    const sent = o!.f.subarray(14);
    expect(send(eth(ipv4(1, '10.200.0.200', '10.200.0.77', icmpErr(3, 3, sent)), BCAST, MAC_R), 1)).toEqual([]);
    expect(g.stats().gateway.natDropped).toEqual({ 'icmp-unrelated': 1 });
    const ok = send(eth(ipv4(1, '10.200.0.200', '10.200.0.250', icmpErr(3, 3, sent)), GW_MAC, MAC_R), 1);
    expect(ok.map((x) => [x.to, ipDst(x.f)])).toEqual([[0, '10.200.0.1']]);
  });

  it('other ICMP and other protocols to the shared address: dropped and counted', () => {
    const { g, send } = gw(MASQ);
    for (const [proto, l4] of [[1, icmp(9, 0, new Uint8Array(12))], [47, new Uint8Array(8)], [132, new Uint8Array(16)]] as const) {
      expect(send(eth(ipv4(proto, '10.200.0.200', '10.200.0.250', l4), BCAST, MAC_R), 1), `proto ${proto}`).toEqual([]);
    }
    expect(g.stats().gateway.natDropped).toEqual({ 'no-entry': 3 });
  });

  it('after H1 pings R, R\'s echo and timestamp REQUESTS with that id do not reach H1; R\'s echo reply does', () => {
    const { send } = gw(MASQ);
    const [p] = send(eth(ipv4(1, '10.200.0.1', '10.200.0.200', echoMsg(8, 7)), MAC_R, MAC_H1), 0);
    const id = get16(p!.f, 14 + 20 + 4);
    for (const t of [8, 13]) expect(send(eth(ipv4(1, '10.200.0.200', '10.200.0.250', echoMsg(t, id)), GW_MAC, MAC_R), 1), `type ${t}`).toEqual([]);
    const r = send(eth(ipv4(1, '10.200.0.200', '10.200.0.250', echoMsg(0, id)), GW_MAC, MAC_R), 1);
    expect(r.map((o) => [o.to, ipDst(o.f), o.f[14 + 20]])).toEqual([[0, '10.200.0.1', 0]]);
  });
});

describe('leaks of hidden addresses', () => {
  it('IP options of translated packets become NOPs: a Record Route H1 fills in never leaves with 10.200.0.1 (echo, and an expected TCP data connection)', () => {
    const { g, send } = gw(MASQ);
    const [p] = send(eth(ipv4(1, '10.200.0.1', '10.200.0.200', echoMsg(8, 7)), MAC_R, MAC_H1), 0);
    expect(get16(p!.f, 14 + 20 + 4)).toBeGreaterThan(0);
    const [rep] = send(eth(ipv4(1, '10.200.0.1', '10.200.0.200', echoMsg(8, 8), rr([ip('10.200.0.200'), ip('10.200.0.1')])), MAC_R, MAC_H1), 0);
    expect(rep!.to).toBe(1);
    expect(ipSrc(rep!.f)).toBe('10.200.0.250');
    expect([...rep!.f.subarray(14 + 20, 14 + 60)].every((x) => x === 1)).toBe(true);
    expect(finish(sum16(rep!.f, 14, 14 + 60))).toBe(0); // the header checksum still right
    const r = g.nat!.expectData(0, 'tcp', ip('10.200.0.1'), 45000, ip('10.200.0.200'), 1001, 'x')!;
    const syn = tcpFrame({ src: ip('10.200.0.200'), dst: ip('10.200.0.250'), srcPort: 20, dstPort: r.port, seq: 1, flags: 0x02 });
    const [s] = send(eth(ipv4(6, '10.200.0.200', '10.200.0.250', syn.subarray(34), rr([ip('10.200.0.200')])), GW_MAC, MAC_R), 1);
    expect(s!.to).toBe(0);
    expect(s!.f[14 + 20]).toBe(1);
    const sa = tcpFrame({ src: ip('10.200.0.1'), dst: ip('10.200.0.200'), srcPort: 45000, dstPort: 20, seq: 9, ack: 2, flags: 0x12 });
    const [o] = send(eth(ipv4(6, '10.200.0.1', '10.200.0.200', sa.subarray(34), rr([ip('10.200.0.200'), ip('10.200.0.1')])), MAC_R, MAC_H1), 0);
    expect(o!.to).toBe(1);
    expect(Buffer.from(o!.f.subarray(14, 14 + 60)).includes(Buffer.from([10, 200, 0, 1]))).toBe(false);
  });

  it('a frame from the inside for a known inside host (flooded, or a cache pointed out) does not leave', () => {
    const { g, send } = gw(MASQ);
    send(eth(udp('10.200.0.3', 5353, '10.200.0.200', 53), MAC_R, MAC_H2), 0); // H2 known
    expect(send(eth(udp('10.200.0.1', 6000, '10.200.0.3', 6001), MAC_H2, MAC_H1), 0)).toEqual([]);
    expect(g.stats().nat!.entries).toBe(1);
  });

  it('an ICMP error a hidden host sends about a packet no entry translated does not leave (it would quote its real address)', () => {
    const { send } = gw(MASQ);
    const quoted = udp('10.200.0.200', 53, '10.200.0.1', 7777);
    expect(send(eth(ipv4(1, '10.200.0.1', '10.200.0.200', icmpErr(3, 3, quoted)), MAC_R, MAC_H1), 0)).toEqual([]);
  });

  it('the other side claiming a hidden host\'s address in ARP (the shipped example\'s ranges): dropped, the inside caches keep it', () => {
    const { send } = gw(EXAMPLE);
    const MAC_S = [2, 0, 10, 200, 0, 2];
    send(eth(udp('10.200.0.1', 5353, '10.200.0.2', 53), MAC_S, MAC_H1), 0);
    send(eth(udp('10.200.0.3', 5353, '10.200.0.2', 53), MAC_S, MAC_H2), 0);
    expect(send(arp(1, MAC_S, '10.200.0.3', [0, 0, 0, 0, 0, 0], '10.200.1.1'), 1)).toEqual([]);
  });
});

describe('entry lifetime and tables', () => {
  it('a RST of any sequence number from outside (dropped by the tracker) does not shorten an idle connection\'s mapping', () => {
    const { g, send } = gw(MASQ);
    const H = ip('10.200.0.1');
    const R = ip('10.200.0.200');
    const m = { srcMac: Uint8Array.from(MAC_H1), dstMac: Uint8Array.from(MAC_R) };
    const [syn] = send(tcpFrame({ src: H, dst: R, srcPort: 40000, dstPort: 22, seq: 100, flags: 0x02, ...m }), 0);
    const P = get16(syn!.f, 34);
    const rm = { srcMac: Uint8Array.from(MAC_R), dstMac: Uint8Array.from(GW_MAC) };
    send(tcpFrame({ src: R, dst: ip('10.200.0.250'), srcPort: 22, dstPort: P, seq: 500, ack: 101, flags: 0x12, ...rm }), 1);
    send(tcpFrame({ src: H, dst: R, srcPort: 40000, dstPort: 22, seq: 101, ack: 501, flags: 0x10, ...m }), 0);
    expect(send(tcpFrame({ src: R, dst: ip('10.200.0.250'), srcPort: 22, dstPort: P, seq: 0x7000_0000, flags: 0x04, ...rm }), 1)).toEqual([]);
    const t = 1010 + 300_000;
    g.tick(t, () => {});
    const out = send(tcpFrame({ src: R, dst: ip('10.200.0.250'), srcPort: 22, dstPort: P, seq: 501, ack: 101, flags: 0x18, payload: new Uint8Array([1]), ...rm }), 1, t);
    expect(out.map((o) => [o.to, ipDst(o.f)])).toEqual([[0, '10.200.0.1']]);
    expect(g.stats().gateway.natDropped).toEqual({});
  });

  it('unanswered inside ARP requests do not fill the relay table for good: the oldest goes', () => {
    const { g, send } = gw(MASQ);
    for (let i = 0; i < 4096; i++) send(arp(1, MAC_H1, '10.200.0.1', [0, 0, 0, 0, 0, 0], str(ip('10.201.0.0') + i)), 0);
    const out = send(arp(1, MAC_H2, '10.200.0.3', [0, 0, 0, 0, 0, 0], '10.200.0.200'), 0);
    expect(out.map((o) => [o.to, str(get32(o.f, 14 + 24))])).toEqual([[1, '10.200.0.200']]);
    expect(g.stats().nat!['l2']).toMatchObject({ arpPendingFull: 1 });
  });
});

describe('IPv6 from a masqueraded side', () => {
  it('IPv6 TCP from a masqueraded side crosses only with its source translated (no NPTv6 for it, or a source outside the prefix)', () => {
    for (const [cfg, src, dst] of [
      [`nat:\n  masquerade:\n    - { side: client, sources: 10.200.0.0/28, address: 10.200.0.250 }\n  nptv6:\n    - { side: server, real: "fd00:300::/64", mapped: "fd00:301::/64" }\nrules: []\n`, 'fd00:200::1', 'fd00:301::2'],
      [`nat:\n  masquerade:\n    - { side: client, sources: 10.200.0.0/28, address: 10.200.0.250 }\n  nptv6:\n    - { side: client, real: "fd00:200::/64", mapped: "fd00:201::/64" }\nrules: []\n`, 'fd00:999::1', 'fd00:300::2'],
    ] as const) {
      const { g, send } = gw(cfg);
      send(eth(udp('10.200.0.1', 5353, '10.200.0.200', 53), MAC_R, MAC_H1), 0);
      expect(send(tcpFrame({ src: parseIp(src) as string, dst: parseIp(dst) as string, srcPort: 40000, dstPort: 22, seq: 1, flags: 0x02, srcMac: Uint8Array.from(MAC_H1) }), 0)).toEqual([]);
      expect(g.stats().gateway.natDropped).toEqual({ 'masquerade-untranslated': 1 });
    }
  });
});

describe('config: rules see real addresses', () => {
  it('a rule naming an address the NAT hands out (a 1:1 or NPTv6 mapped one, the masquerade address) is refused with its place', () => {
    for (const [nat, addr] of [
      ['oneToOne:\n    - { side: server, real: 10.200.0.2, mapped: 10.200.0.102 }', '10.200.0.102'],
      ['masquerade:\n    - { side: client, sources: 10.200.0.0/24, address: 10.200.0.100 }', '10.200.0.100'],
      ['nptv6:\n    - { side: client, real: "fd00:200::/64", mapped: "fd00:201::/64" }', '"fd00:201::5"'],
    ] as const) {
      expect(() => parseConfig(`nat:\n  ${nat}\nrules:\n  - match: { serverAddress: ${addr}, port: 80 }\n    agent: replace\n    replace: [ { find: "a", with: "b" } ]\n`, 'm.yaml')).toThrow(/rules\[0\]\.match\.serverAddress.*hands out/s);
    }
    expect(() => parseConfig(`nat:\n  oneToOne:\n    - { side: server, real: 10.200.0.2, mapped: 10.200.0.102 }\nrules:\n  - match: { serverAddress: 10.200.0.2, port: 80 }\n    agent: replace\n    replace: [ { find: "a", with: "b" } ]\n`, 'm.yaml')).not.toThrow();
  });
});

describe('hostile frames', () => {
  it('mutated NAT frames (checksums unverified) never throw', () => {
    const cfg = parseConfig(`nat:
  oneToOne:
    - { side: server, real: 10.200.0.2, mapped: 10.200.0.102 }
  masquerade:
    - { side: client, sources: 10.200.0.0/28, address: 10.200.0.250, ports: "20000-20003", icmpIds: "1-3" }
  nptv6:
    - { side: client, real: "fd00:200::/64", mapped: "fd00:201::/64" }
  limits: { maxEntries: 50, maxExpectations: 8 }
rules:
  - agent: ftp
`, 'f.yaml');
    const corpus: Array<[Uint8Array, Side]> = [
      [eth(udp('10.200.0.1', 5353, '10.200.0.200', 53), MAC_R, MAC_H1), 0],
      [eth(ipv4(1, '10.200.0.1', '10.200.0.200', echoMsg(8, 7)), MAC_R, MAC_H1), 0],
      [eth(ipv4(1, '10.200.0.200', '10.200.0.250', echoMsg(0, 7)), GW_MAC, MAC_R), 1],
      [eth(ipv4(1, '10.200.0.200', '10.200.0.250', icmpErr(3, 3, udp('10.200.0.250', 5353, '10.200.0.200', 53))), GW_MAC, MAC_R), 1],
      [eth(ipv4(1, '10.200.0.1', '10.200.0.200', icmpErr(3, 3, udp('10.200.0.200', 53, '10.200.0.1', 5353))), MAC_R, MAC_H1), 0],
      [eth(ipv4(1, '10.200.0.200', '10.200.0.250', echoMsg(8, 1), rr([ip('10.200.0.200')])), GW_MAC, MAC_R), 1],
      [arp(1, MAC_H1, '10.200.0.1', [0, 0, 0, 0, 0, 0], '10.200.0.200'), 0],
      [arp(1, MAC_R, '10.200.0.200', [0, 0, 0, 0, 0, 0], '10.200.0.250'), 1],
      [arp(2, MAC_R, '10.200.0.200', GW_MAC, '10.200.0.250', GW_MAC), 1],
      [tcpFrame({ src: ip('10.200.0.1'), dst: ip('10.200.0.102'), srcPort: 40000, dstPort: 21, seq: 1, flags: 0x02, srcMac: Uint8Array.from(MAC_H1) }), 0],
      [tcpFrame({ src: ip('10.200.0.2'), dst: ip('10.200.0.250'), srcPort: 21, dstPort: 40000, seq: 1, ack: 2, flags: 0x12 }), 1],
      [tcpFrame({ src: parseIp('fd00:200::1') as string, dst: parseIp('fd00:300::2') as string, srcPort: 40000, dstPort: 21, seq: 1, flags: 0x02 }), 0],
      [tcpFrame({ src: parseIp('fd00:300::2') as string, dst: parseIp('fd00:201::1') as string, srcPort: 21, dstPort: 40000, seq: 1, ack: 2, flags: 0x12 }), 1],
    ];
    let seed = 12345;
    const rnd = (n: number): number => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    const g = new Gateway({ config: cfg, verifyChecksums: false });
    let now = 1;
    for (let i = 0; i < 30000; i++) {
      const [f0, from] = corpus[rnd(corpus.length)]!;
      let f = f0.slice();
      const k = 1 + rnd(4);
      for (let j = 0; j < k; j++) {
        const op = rnd(3);
        if (op === 0) f[rnd(f.length)] = rnd(256);
        else if (op === 1) f[14 + rnd(Math.max(1, Math.min(60, f.length - 14)))] = rnd(256);
        else f = f.subarray(0, 14 + rnd(f.length - 13));
      }
      try {
        g.handleFrame(f, (rnd(2) === 0 ? from : 1 - from) as Side, (now += rnd(3000)), () => {});
        if (i % 500 === 0) g.tick(now, () => {});
      } catch (e) {
        throw new Error(`iteration ${i}: ${(e as Error).stack} frame ${Buffer.from(f).toString('hex')} from ${from}`);
      }
    }
  });
});

