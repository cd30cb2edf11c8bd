/**
 * NPTv6 (nat/nptv6.ts, RFC 6296): checksum-neutral prefix translation of addresses, of whole
 * frames through the gateway (TCP tracked by the real addresses, rewritten by a rule, checksums
 * still valid), Neighbor Discovery across the translation, ICMPv6 error quotes, and the config's
 * errors.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ConfigError, parseConfig } from '../../src/config/index.js';
import { Gateway, type Side } from '../../src/engine/gateway.js';
import { nptv6Packet, type Nptv6 } from '../../src/nat/nptv6.js';
import { finish, fold16, sum16 } from '../../src/wire/checksum.js';
import { parseIpBlock, type Cidr6 } from '../../src/wire/cidr.js';
import { decodeFrame } from '../../src/wire/frame.js';
import { ipToString, parseIp } from '../../src/wire/ip.js';
import { ipv6PseudoHeaderSum, ipv6ToString, parseIpv6 } from '../../src/wire/ipv6.js';
import { tcpFrame } from '../../src/wire/tcp-frame.js';

const prefix = (s: string): Cidr6 => parseIpBlock(s) as Cidr6;
const rule = (real: string, mapped: string, side: 0 | 1 = 0): Nptv6 => ({ side, real: prefix(real), mapped: prefix(mapped) });

/** A bare IPv6 header (no upper layer) from `src` to `dst`. */
function packet(src: string, dst: string): Uint8Array {
  const b = new Uint8Array(40);
  b[0] = 0x60;
  b[6] = 59; // No Next Header
  b.set(parseIpv6(src)!, 8);
  b.set(parseIpv6(dst)!, 24);
  return b;
}

describe('NPTv6 address mapping', () => {
  it('the RFC 6296 example: fd01:203:405:1::1234 is 2001:db8:1:d550::1234 outside', () => {
    const b = packet('fd01:203:405:1::1234', '2001:db8::9');
    expect(nptv6Packet([rule('fd01:203:405::/48', '2001:db8:1::/48')], b, 0, 40, 0, false)).toBe('translated');
    expect(ipv6ToString(b, 8)).toBe('2001:db8:1:d550::1234');
    expect(ipv6ToString(b, 24)).toBe('2001:db8::9');
  });

  it('is checksum-neutral and reversible for every address and prefix length /48–/64', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 16, maxLength: 16 }), fc.uint8Array({ minLength: 16, maxLength: 16 }), fc.integer({ min: 48, max: 64 }), (a, m, p) => {
        const mask = (x: Uint8Array) => x.map((v, i) => v & ((0xff << (8 - Math.max(0, Math.min(8, p - 8 * i)))) & 0xff));
        const real = ipv6ToString(mask(a));
        const mapped = ipv6ToString(mask(m));
        const r = rule(`${real}/${p}`, `${mapped}/${p}`);
        const b = new Uint8Array(40);
        b[0] = 0x60;
        b[6] = 59;
        b.set(a, 8);
        const before = fold16(sum16(b, 8, 24));
        const res = nptv6Packet([r], b, 0, 40, 0, false);
        if (res === 'untranslatable') return; // an identifier of all 0xffff (or a /48's subnet word 0xffff)
        const after = fold16(sum16(b, 8, 24));
        // One's complement: 0 and 0xffff are the same sum.
        expect(after % 0xffff).toBe(before % 0xffff);
        // Back from the other side: the original address.
        const back = b.slice();
        back.set(back.subarray(8, 24), 24);
        back.fill(0, 8, 24);
        nptv6Packet([r], back, 0, 40, 1, false);
        const got = back.subarray(24, 40);
        // 0x0000 and 0xffff are the same in the adjusted word: compare sums and the rest.
        expect(fold16(sum16(got, 0, 16)) % 0xffff).toBe(fold16(sum16(a, 0, 16)) % 0xffff);
        expect(ipv6ToString(got).replace(/ffff/g, '0')).toBe(ipv6ToString(a).replace(/ffff/g, '0'));
      }),
      { seed: 0x6296, numRuns: 3000 },
    );
  });

  it('leaves other prefixes and the other direction alone; an identifier of all ffff cannot be translated', () => {
    const r = rule('fd00:200::/64', 'fd00:201::/64');
    const b = packet('fd00:300::1', 'fd00:200::1');
    expect(nptv6Packet([r], b, 0, 40, 0, false)).toBe('none'); // the destination is real, on the client side: not for the server side to map
    expect(nptv6Packet([r], packet('fd00:200:0:0:ffff:ffff:ffff:ffff', '::1'), 0, 40, 0, false)).toBe('untranslatable');
  });

  it('many mappings: each address takes the first rule (in order) whose block on the right side holds it, as trying them in turn does (fast-check, overlapping blocks included)', () => {
    /** Does block `c` hold the 16 bytes `a`? */
    const holds = (c: Cidr6, a: Uint8Array): boolean => {
      for (let i = 0, bits = c.prefix; bits > 0; i++, bits -= 8) {
        const m = bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff;
        if ((a[i]! & m) !== c.bytes[i]) return false;
      }
      return true;
    };
    const block = (base: Uint8Array, len: number): Cidr6 => {
      const bytes = base.slice();
      for (let i = 0; i < 16; i++) {
        const bits = Math.max(0, Math.min(8, len - 8 * i));
        bytes[i]! &= (0xff << (8 - bits)) & 0xff;
      }
      return { family: 6, prefix: len, bytes };
    };
    // Few bases, so that blocks share networks and nest (a list the config check would refuse
    // still gets the in-order answer).
    const bases = [parseIpv6('fd00:1:2:3::')!, parseIpv6('fd00:1:2:3:8000::')!, parseIpv6('2001:db8:7::')!];
    const arbRule = fc.record({
      side: fc.constantFrom(0 as const, 1 as const),
      real: fc.tuple(fc.integer({ min: 0, max: 2 }), fc.integer({ min: 48, max: 64 })),
      mapped: fc.tuple(fc.integer({ min: 0, max: 2 }), fc.integer({ min: 48, max: 64 })),
    });
    const arbAddr = fc.tuple(fc.integer({ min: 0, max: 2 }), fc.uint8Array({ minLength: 8, maxLength: 8 }), fc.integer({ min: 0, max: 0xff }));
    const addr = ([k, id, mid]: [number, Uint8Array, number]): Uint8Array => {
      const a = bases[k]!.slice();
      a[7] = mid; // inside or outside the longer prefixes
      a.set(id, 8);
      a[8]! &= 0x7f; // an identifier never all ffff
      return a;
    };
    fc.assert(
      fc.property(fc.array(arbRule, { minLength: 1, maxLength: 12 }), arbAddr, arbAddr, fc.constantFrom(0 as const, 1 as const), (spec, s, d, from) => {
        const rules: Nptv6[] = spec.map((x) => {
          const len = x.real[1];
          return { side: x.side, real: block(bases[x.real[0]]!, len), mapped: block(bases[x.mapped[0]]!, len) };
        });
        const src = addr(s);
        const dst = addr(d);
        const b = new Uint8Array(40);
        b[0] = 0x60;
        b[6] = 59;
        b.set(src, 8);
        b.set(dst, 24);
        const got = b.slice();
        const res = nptv6Packet(rules, got, 0, 40, from, false);
        // In turn: the first rule holding the source in its real block on the sender's side, the
        // first holding the destination in its mapped block on the receiver's.
        const rs = rules.find((r) => r.side === from && holds(r.real, src));
        const rd = rules.find((r) => r.side !== from && holds(r.mapped, dst));
        const want = b.slice();
        const one = (r: Nptv6 | undefined, off: number, asSource: boolean): void => {
          if (r === undefined) return;
          // The rule alone, applied to a packet whose other address it cannot touch.
          const p = new Uint8Array(40);
          p[0] = 0x60;
          p[6] = 59;
          p.set(b.subarray(off, off + 16), off);
          const other = asSource ? 24 : 8;
          p.fill(0xff, other, other + 16); // ff…: multicast, in no block here
          nptv6Packet([r], p, 0, 40, from, false);
          want.set(p.subarray(off, off + 16), off);
        };
        one(rs, 8, true);
        one(rd, 24, false);
        expect(res).toBe(rs !== undefined || rd !== undefined ? 'translated' : 'none');
        expect(ipv6ToString(got.subarray(8, 24))).toBe(ipv6ToString(want.subarray(8, 24)));
        expect(ipv6ToString(got.subarray(24, 40))).toBe(ipv6ToString(want.subarray(24, 40)));
      }),
      { seed: 0x6297, numRuns: 2000 },
    );
  });
});

// ---- through the gateway ------------------------------------------------------------------------

const CONFIG = `nat:
  nptv6:
    - { side: client, real: "fd00:200::/64", mapped: "fd00:201::/64" }
rules:
  - match: { port: 80, clientAddress: "fd00:200::/64" }
    agent: replace
    replace:
      - { find: "Hello world", with: "Hi there" }
`;
const C = parseIp('fd00:200::1') as string;
const S = parseIp('fd00:300::2') as string;

function run(gw: Gateway, f: Uint8Array, from: Side): Uint8Array[] {
  const out: Uint8Array[] = [];
  gw.handleFrame(f, from, 1, (x) => out.push(x.slice()));
  return out;
}

function tcp6(f: Uint8Array) {
  const d = decodeFrame(f, { link: 'ethernet', verifyChecksums: true, ipv6: true });
  if (d.kind !== 'tcp') throw new Error(`not valid IPv6 TCP: ${d.kind === 'error' ? d.reason : d.kind}`);
  return d;
}

describe('NPTv6 through the gateway', () => {
  it('translates a TCP connection both ways (checksums valid), tracks and rewrites it by its real addresses', () => {
    const gw = new Gateway({ config: parseConfig(CONFIG, 'n.yaml') });
    const [syn] = run(gw, tcpFrame({ src: C, dst: S, srcPort: 40000, dstPort: 80, seq: 100, flags: 0x02 }), 0);
    const d = tcp6(syn!);
    const mapped = d.src;
    expect(ipToString(mapped).startsWith('fd00:201::')).toBe(true);
    expect(d.dst).toBe(S);
    const [sa] = run(gw, tcpFrame({ src: S, dst: mapped, srcPort: 80, dstPort: 40000, seq: 500, ack: 101, flags: 0x12 }), 1);
    expect(tcp6(sa!).dst).toBe(C);
    run(gw, tcpFrame({ src: C, dst: S, srcPort: 40000, dstPort: 80, seq: 101, ack: 501, flags: 0x10 }), 0);
    const [data] = run(gw, tcpFrame({ src: S, dst: mapped, srcPort: 80, dstPort: 40000, seq: 501, ack: 101, flags: 0x18, payload: new TextEncoder().encode('say Hello world!') }), 1);
    const dd = tcp6(data!);
    expect(new TextDecoder().decode(data!.subarray(dd.payloadOff, dd.payloadOff + dd.payloadLen))).toBe('say Hi there!');
    expect([...gw.flows.values()].map((f) => f.id)).toEqual(['fd00:200::1.40000-fd00:300::2.80']);
    const st = gw.stats();
    expect(st.gateway.connectionsRewritten).toBe(1);
    expect(st.gateway.natTranslated).toBe(4);
    expect(st.gateway.policy.dropped).toEqual({});
  });

  it('Neighbor Discovery across the translation: the server solicits the mapped address, the client is asked for its real one and answers as the mapped one', () => {
    const gw = new Gateway({ config: parseConfig(CONFIG, 'n.yaml') });
    const mapped = tcp6(run(gw, tcpFrame({ src: C, dst: S, srcPort: 40000, dstPort: 80, seq: 100, flags: 0x02 }), 0)[0]!).src;
    const srvLl = parseIpv6('fe80::2')!;
    const solicited = (t: Uint8Array) => new Uint8Array([0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, t[13]!, t[14]!, t[15]!]);
    const mappedBytes = parseIpv6(ipToString(mapped))!;
    const realBytes = parseIpv6('fd00:200::1')!;
    const ns = ndp(135, srvLl, solicited(mappedBytes), mappedBytes, [0x33, 0x33, 0xff, mappedBytes[13]!, mappedBytes[14]!, mappedBytes[15]!]);
    const [nsOut] = run(gw, ns, 1);
    expect(nsOut).toBeDefined();
    expect(ipv6ToString(nsOut!, 14 + 40 + 8)).toBe('fd00:200::1'); // target: the real address
    expect(nsOut!.subarray(14 + 24, 14 + 40)).toEqual(solicited(realBytes)); // to its solicited-node group
    expect([...nsOut!.subarray(0, 6)]).toEqual([0x33, 0x33, 0xff, realBytes[13], realBytes[14], realBytes[15]]);
    expect(icmp6Valid(nsOut!)).toBe(true);
    const na = ndp(136, realBytes, srvLl, realBytes, [2, 0, 0, 0, 0, 2]);
    const [naOut] = run(gw, na, 0);
    expect(ipv6ToString(naOut!, 14 + 40 + 8)).toBe(ipToString(mapped)); // the server learns the mapped address
    expect(ipv6ToString(naOut!, 14 + 8)).toBe(ipToString(mapped)); // and sees it as the source too
    expect(icmp6Valid(naOut!)).toBe(true);
  });

  it('an ICMPv6 error from the server side quoting the client\'s packet: the quote carries the real address back', () => {
    const gw = new Gateway({ config: parseConfig(CONFIG, 'n.yaml') });
    const syn = run(gw, tcpFrame({ src: C, dst: S, srcPort: 40000, dstPort: 80, seq: 100, flags: 0x02 }), 0)[0]!;
    const mapped = tcp6(syn).src;
    // Destination unreachable (type 1) from S to the mapped address, quoting the translated SYN.
    const quote = syn.subarray(14, 14 + 40 + 20);
    const body = new Uint8Array(8 + quote.length);
    body[0] = 1;
    body[1] = 4;
    body.set(quote, 8);
    const f = icmp6Frame(parseIpv6(ipToString(S))!, parseIpv6(ipToString(mapped))!, body, [2, 0, 0, 0, 0, 1]);
    const [out] = run(gw, f, 1);
    expect(ipv6ToString(out!, 14 + 24)).toBe('fd00:200::1');
    expect(ipv6ToString(out!, 14 + 40 + 8 + 8)).toBe('fd00:200::1'); // the quoted source
    expect(icmp6Valid(out!)).toBe(true);
  });

  it('with IPv4 masquerade on a side, IPv6 from that side does not cross (it would show the hosts\' MACs and addresses) unless NPTv6 translates that side', () => {
    const masq = 'nat:\n  masquerade:\n    - { side: client, sources: 10.200.0.0/24, address: 10.200.0.100 }\n';
    // A router solicitation from a client's link-local address, before any IPv4 taught the gateway its MAC.
    const rs = icmp6Frame(parseIpv6('fe80::1')!, parseIpv6('ff02::2')!, new Uint8Array([133, 0, 0, 0, 0, 0, 0, 0]), [0x33, 0x33, 0, 0, 0, 2]);
    const g1 = new Gateway({ config: parseConfig(masq + 'rules: []\n', 'm.yaml') });
    expect(run(g1, rs, 0)).toEqual([]);
    expect(g1.stats().gateway.natDropped).toEqual({ 'masquerade-untranslated': 1 });
    expect(run(g1, rs, 1)).toHaveLength(1); // the other side's IPv6 is none of the masquerade's business
    const g2 = new Gateway({ config: parseConfig(masq + '  nptv6:\n    - { side: client, real: "fd00:200::/64", mapped: "fd00:201::/64" }\nrules: []\n', 'm.yaml') });
    expect(run(g2, rs, 0)).toHaveLength(1);
  });

  it('config errors: IPv4 prefixes, different lengths, lengths NPTv6 does not translate', () => {
    const err = (m: string) => {
      try {
        parseConfig(`nat:\n  nptv6:\n    - ${m}\n`, 'n.yaml');
      } catch (e) {
        return (e as ConfigError).message;
      }
      return 'no error';
    };
    expect(err('{ side: client, real: "10.0.0.0/24", mapped: "fd00:201::/64" }')).toMatch(/is IPv4: NPTv6 translates IPv6 prefixes/);
    expect(err('{ side: client, real: "fd00:200::/64", mapped: "fd00:201::/56" }')).toMatch(/must be the same length/);
    expect(err('{ side: client, real: "fd00::/32", mapped: "fd01::/32" }')).toMatch(/NPTv6 translates \/48 to \/64/);
    expect(err('{ side: left, real: "fd00:200::/64", mapped: "fd00:201::/64" }')).toMatch(/expected client or server/);
  });
});

/** An Ethernet frame with an ICMPv6 message `body` (checksum filled in). */
function icmp6Frame(src: Uint8Array, dst: Uint8Array, body: Uint8Array, dstMac: number[]): Uint8Array {
  const f = new Uint8Array(14 + 40 + body.length);
  f.set(dstMac, 0);
  f.set([2, 0, 0, 0, 0, 9], 6);
  f[12] = 0x86;
  f[13] = 0xdd;
  f[14] = 0x60;
  f[18] = body.length >>> 8;
  f[19] = body.length & 0xff;
  f[20] = 58;
  f[21] = 255;
  f.set(src, 22);
  f.set(dst, 38);
  f.set(body, 54);
  f[56] = 0;
  f[57] = 0;
  const c = finish(sum16(f, 54, f.length, ipv6PseudoHeaderSum(f, 22, 38, 58, body.length)));
  f[56] = c >>> 8;
  f[57] = c & 0xff;
  return f;
}

/** An NS (135) or NA (136) for `target`. */
function ndp(type: number, src: Uint8Array, dst: Uint8Array, target: Uint8Array, dstMac: number[]): Uint8Array {
  const body = new Uint8Array(24);
  body[0] = type;
  if (type === 136) body[4] = 0x60; // solicited, override
  body.set(target, 8);
  return icmp6Frame(src, dst, body, dstMac);
}

function icmp6Valid(f: Uint8Array): boolean {
  const len = (f[18]! << 8) | f[19]!;
  return finish(sum16(f, 54, 54 + len, ipv6PseudoHeaderSum(f, 22, 38, 58, len))) === 0;
}

