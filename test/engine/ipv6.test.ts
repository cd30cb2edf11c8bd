/**
 * TCP over IPv6 through the whole gateway: tracked, rewritten and re-framed like IPv4 (frames
 * rebuilt with the IPv6 payload length and pseudo-header checksum, extension headers kept), rules
 * with IPv6 prefixes, and what stays opaque to the policy (fragments, Routing headers in flight,
 * a gateway with NAT).
 */
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/index.js';
import { Gateway, type Side } from '../../src/engine/gateway.js';
import { DEFAULT_LIMITS } from '../../src/stream/limits.js';
import { mulberry32 } from '../../src/util/prng.js';
import { decodeFrame } from '../../src/wire/frame.js';
import { ipToString, parseIp } from '../../src/wire/ip.js';
import { IP_PROTO_TCP } from '../../src/wire/ipv4.js';
import { IP_PROTO_DSTOPTS, IP_PROTO_FRAGMENT, IP_PROTO_ROUTING, parseIpv6 } from '../../src/wire/ipv6.js';
import { tcpFrame } from '../../src/wire/tcp-frame.js';
import { simulateGateway } from '../helpers/gwsim.js';

const C6 = parseIp('2001:db8::1') as string;
const S6 = parseIp('2001:db8::2') as string;
const enc = (s: string) => new TextEncoder().encode(s);
const text = (b: Uint8Array) => new TextDecoder().decode(b);

function config(match = '{ port: 80 }', extra = ''): ReturnType<typeof parseConfig> {
  return parseConfig(`${extra}rules:\n  - match: ${match}\n    direction: both\n    agent: replace\n    replace:\n      - { find: "Hello world", with: "Hi there" }\n`, 'v6.yaml');
}

function gateway(cfg = config()): Gateway {
  return new Gateway({ config: cfg, limits: { ...DEFAULT_LIMITS, holdTimeoutMs: 1e9 } });
}

const DATA: [Uint8Array, Uint8Array] = [
  enc('GET / HTTP/1.0\r\n\r\n' + 'Hello world, '.repeat(300)),
  enc('HTTP/1.0 200 OK\r\n\r\n' + 'say Hello world! '.repeat(500)),
];
const rewrite = (b: Uint8Array) => enc(text(b).replaceAll('Hello world', 'Hi there'));

describe('IPv6 TCP through the gateway', () => {
  it('is rewritten exactly both ways under loss, reordering and duplication (checksums verified on every frame out)', () => {
    for (const seed of [1, 2, 3]) {
      const gw = gateway();
      const res = simulateGateway({
        rand: mulberry32(seed), data: DATA, expected: [rewrite(DATA[0]), rewrite(DATA[1])], isn: [1000 * seed, 0xfffff000],
        mss: 536, loss: 0.05, dup: 0.02, reorder: 0.1, sack: true, gateway: gw, maxTimeMs: 60_000, addrs: [C6, S6],
      });
      expect(res.errors).toEqual([]);
      expect(res.finished).toBe(true);
      expect(text(res.received[0])).toBe(text(rewrite(DATA[0])));
      expect(text(res.received[1])).toBe(text(rewrite(DATA[1])));
      const st = gw.stats();
      expect(st.gateway.connectionsRewritten).toBe(1);
      expect(st.gateway.policy.dropped).toEqual({});
      expect(st.rules['1']!.rewrites).toBe(800);
    }
  });

  it('keeps extension headers in front of TCP in rebuilt frames', () => {
    // Destination Options with a PadN of 4 bytes: Next Header TCP, length 0 (8 bytes).
    const ext = new Uint8Array([IP_PROTO_TCP, 0, 1, 4, 0, 0, 0, 0]);
    const gw = gateway();
    const out: Uint8Array[] = [];
    type EmitFn = (f: Uint8Array, to: Side) => void;
    const tap = (emit: EmitFn): EmitFn => (x, to) => {
      out.push(x);
      emit(x, to);
    };
    const gw2 = {
      handleFrame: (f: Uint8Array, s: Side, t: number, emit: EmitFn) => gw.handleFrame(f, s, t, tap(emit)),
      tick: (t: number, emit: EmitFn) => gw.tick(t, tap(emit)),
    };
    const res = simulateGateway({
      rand: mulberry32(7), data: DATA, expected: [rewrite(DATA[0]), rewrite(DATA[1])], isn: [5, 6],
      mss: 1400, loss: 0, dup: 0, reorder: 0, sack: true, gateway: gw2 as unknown as Gateway, maxTimeMs: 60_000, addrs: [C6, S6],
      ipv6Ext: { bytes: ext, first: IP_PROTO_DSTOPTS },
    });
    expect(res.errors).toEqual([]);
    expect(text(res.received[1])).toBe(text(rewrite(DATA[1])));
    expect(gw.stats().gateway.rebuilt).toBeGreaterThan(0);
    // Every frame out still carries the header, and its payload length counts it.
    for (const f of out) {
      expect(f[14 + 6]).toBe(IP_PROTO_DSTOPTS);
      expect(f.subarray(14 + 40, 14 + 48)).toEqual(ext);
      expect(14 + 40 + ((f[14 + 4]! << 8) | f[14 + 5]!)).toBe(f.length);
    }
  });

  it('selects rules by IPv6 prefix, never across families', () => {
    const conn = (cfg: ReturnType<typeof parseConfig>): number => {
      const gw = gateway(cfg);
      gw.handleFrame(tcpFrame({ src: C6, dst: S6, srcPort: 40000, dstPort: 80, seq: 1, flags: 0x02 }), 0, 0, () => {});
      return gw.stats().gateway.connectionsRewritten;
    };
    expect(conn(config('{ port: 80, serverAddress: "2001:db8::/32" }'))).toBe(1);
    expect(conn(config('{ port: 80, clientAddress: "2001:db8::1" }'))).toBe(1);
    expect(conn(config('{ port: 80, address: "2001:db9::/32" }'))).toBe(0);
    expect(conn(config('{ port: 80, address: "10.0.0.0/8" }'))).toBe(0);
    expect(conn(config('{ port: 80, address: "0.0.0.0/0" }'))).toBe(0);
    expect(conn(config('{ port: 80, address: "::/0" }'))).toBe(1);
  });

  it('keeps one string per IPv6 address for all flows, and forgets it with the last of them', () => {
    const gw = gateway();
    const syn = (sport: number) => gw.handleFrame(tcpFrame({ src: C6, dst: S6, srcPort: sport, dstPort: 80, seq: 1, flags: 0x02 }), 0, 0, () => {});
    for (let p = 40000; p < 40010; p++) syn(p);
    const flows = [...gw.flows.values()];
    expect(flows.length).toBe(10);
    expect(gw.stats().flows.ipv6Addresses).toBe(2);
    gw.flows.remove(flows[0]!);
    expect(gw.stats().flows.ipv6Addresses).toBe(2);
    for (const f of flows.slice(1)) gw.flows.remove(f);
    expect(gw.stats().flows.ipv6Addresses).toBe(0);
  });

  it('names connections in RFC 5952 text', () => {
    const gw = gateway();
    gw.handleFrame(tcpFrame({ src: C6, dst: S6, srcPort: 40000, dstPort: 80, seq: 1, flags: 0x02 }), 0, 0, () => {});
    expect([...gw.flows.values()].map((f) => f.id)).toEqual(['2001:db8::1.40000-2001:db8::2.80']);
    expect(ipToString([...gw.flows.values()][0]!.client.addr)).toBe('2001:db8::1');
  });

  it('drops martian IPv6 endpoints (multicast, unspecified, loopback, IPv4-mapped)', () => {
    const gw = gateway();
    for (const a of ['ff02::1', '::', '::1', '::ffff:10.0.0.1']) {
      gw.handleFrame(tcpFrame({ src: C6, dst: parseIp(a)!, srcPort: 40000, dstPort: 80, seq: 1, flags: 0x02 }), 0, 0, () => {});
    }
    expect(gw.stats().gateway.badEndpoints).toEqual({ martian: 4 });
  });

  it('drops a segment with a bad IPv6 TCP checksum', () => {
    const gw = gateway();
    const f = tcpFrame({ src: C6, dst: S6, srcPort: 40000, dstPort: 80, seq: 1, flags: 0x02 });
    f[f.length - 3]! ^= 1; // inside the TCP header (options-free SYN: the urgent pointer)
    let out = 0;
    gw.handleFrame(f, 0, 0, () => out++);
    expect(out).toBe(0);
    expect(gw.stats().gateway.malformed['tcp-bad-checksum']).toBe(1);
  });

  it('leaves to the policy what it cannot rewrite whole (a Routing header in flight); drops TCP in fragments as for IPv4', () => {
    const rh = new Uint8Array(24);
    rh.set([IP_PROTO_TCP, 2, 2, 1]); // type 2 (RFC 6275), 1 segment left, one address
    // The last address is the final destination, the pseudo-header's: the fixed header's here, so
    // tcpFrame's checksum is right and the segment is the policy's, not a bad checksum.
    rh.set(parseIpv6('2001:db8::2')!, 8);
    const send = (gw: Gateway, ext: Uint8Array, first: number, checksum: 'full' | 'none' = 'none'): number => {
      let out = 0;
      // With an MSS option the segment is 24 bytes: a fragment's data must be a multiple of 8.
      const options = [{ kind: 'mss' as const, mss: 1440 }];
      gw.handleFrame(tcpFrame({ src: C6, dst: S6, srcPort: 40000, dstPort: 80, seq: 1, flags: 0x02, options, ipv6ExtHeaders: ext, ipv6FirstHeader: first, checksum }), 0, 0, () => out++);
      return out;
    };
    const g1 = gateway();
    expect(send(g1, rh, IP_PROTO_ROUTING, 'full')).toBe(0);
    expect(g1.stats().gateway.policy.dropped).toEqual({ 'ipv6-tcp': 1 });
    expect(g1.stats().gateway.connectionsRewritten).toBe(0);
    // A first fragment (offset 0, M set) holding the whole TCP header: never rewritten without its siblings.
    const g2 = gateway();
    expect(send(g2, new Uint8Array([IP_PROTO_TCP, 0, 0, 1, 0, 0, 0, 1]), IP_PROTO_FRAGMENT)).toBe(0);
    expect(g2.stats().gateway).toMatchObject({ tcpFragmentsDropped: 1, malformed: { 'ipv6-tcp-fragment': 1 } });
    // An atomic fragment (offset 0, no more: RFC 6946) is a whole packet: tracked.
    const g3 = gateway();
    expect(send(g3, new Uint8Array([IP_PROTO_TCP, 0, 0, 0, 0, 0, 0, 2]), IP_PROTO_FRAGMENT)).toBe(0); // checksum 'none': dropped as bad, but decoded as TCP
    expect(g3.stats().gateway.malformed).toEqual({ 'tcp-bad-checksum': 1 });
  });

  it('drops what RFC 8200 / 5095 / 7112 say a node must not forward, whatever it carries', () => {
    const gw = gateway();
    const udp = (next: number, ext: Uint8Array) => {
      const f = tcpFrame({ src: C6, dst: S6, srcPort: 1, dstPort: 2, seq: 0, flags: 0x02, ipv6ExtHeaders: ext, ipv6FirstHeader: next });
      return f;
    };
    // Routing header type 0 with segments left (RFC 5095).
    const rh0 = new Uint8Array(24);
    rh0.set([IP_PROTO_TCP, 2, 0, 1]);
    // A Destination Options header with an unknown option whose action bits say discard (0b01).
    const opt = new Uint8Array([IP_PROTO_TCP, 0, 0x42, 4, 0, 0, 0, 0]);
    // Hop-by-Hop not first: Destination Options, then Hop-by-Hop.
    const hbh = new Uint8Array([0, 0, 1, 4, 0, 0, 0, 0, IP_PROTO_TCP, 0, 1, 4, 0, 0, 0, 0]);
    let out = 0;
    for (const [next, ext] of [[IP_PROTO_ROUTING, rh0], [IP_PROTO_DSTOPTS, opt], [IP_PROTO_DSTOPTS, hbh]] as const) gw.handleFrame(udp(next, ext), 0, 0, () => out++);
    expect(out).toBe(0);
    expect(gw.stats().gateway.malformed).toEqual({ 'ipv6-rh0': 1, 'ipv6-option-unknown': 1, 'ipv6-hbh-not-first': 1 });
  });

  it('stays opaque to the policy on a gateway with NAT (IPv4 only)', () => {
    const cfg = config('{ port: 80 }', 'nat:\n  oneToOne:\n    - { side: client, real: 10.0.0.0/24, mapped: 10.9.0.0/24 }\n');
    const gw = gateway(cfg);
    let out = 0;
    gw.handleFrame(tcpFrame({ src: C6, dst: S6, srcPort: 40000, dstPort: 80, seq: 1, flags: 0x02 }), 0, 0, () => out++);
    expect(out).toBe(0);
    expect(gw.stats().gateway.policy.dropped).toEqual({ 'ipv6-tcp': 1 });
  });

  it('is decoded only when asked: IPv6 TCP stays `other` for callers that do not', () => {
    const f = tcpFrame({ src: C6, dst: S6, srcPort: 40000, dstPort: 80, seq: 1, flags: 0x02 });
    expect(decodeFrame(f, { link: 'ethernet', verifyChecksums: true }).kind).toBe('other');
    const d = decodeFrame(f, { link: 'ethernet', verifyChecksums: true, ipv6: true });
    expect(d.kind).toBe('tcp');
    if (d.kind === 'tcp') expect([d.src, d.dst]).toEqual([C6, S6]);
  });
});
