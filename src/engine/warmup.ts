/**
 * JIT warm-up (issue 7): before the first real frame, synthetic traffic of every kind the gateway
 * forwards runs through a scratch `Gateway` built from the same config, so V8 has optimised the
 * frame path for all of them.
 *
 * Why: V8 optimises a function only after it ran often, and compiles what it saw. Without this, a
 * quiet gateway forwards its first frames (and, at 100 pings/s, every ping) in the interpreter
 * or baseline code — tens of µs per frame — and a gateway optimised under TCP-only load threw its
 * optimised `handleFrame` away ("wrong map" deoptimisation) at the first ICMP frame and stayed
 * unoptimised for the rest of a ping run. With every kind seen during warm-up, the optimised
 * code covers them all from the start.
 *
 * The scratch gateway shares nothing with the real one: its own flow table, NAT table, counters
 * and agents, no logger, and its output goes nowhere. The traffic: ARP request/reply, ICMP echo
 * and reply, UDP, and TCP connections (handshake, data both ways — in order, out of order,
 * retransmitted —, FIN, RST) on a port without a rule and on one port per rule (the rule's agent
 * and its options, the match replaced by that port), from an address its NAT hides if the config
 * has NAT. With a vnet header, TCP data also comes as GSO frames with partial checksums.
 */
import type { Logger } from 'pino';
import type { Cidr } from '../wire/cidr.js';
import type { Config, Rule } from '../config/load.js';
import { EthernetRepr } from '../wire/ethernet.js';
import { finish, ipv4PseudoHeaderSum, sum16 } from '../wire/checksum.js';
import { ArpRepr, ARP_LEN, ARP_OP_REPLY, ARP_OP_REQUEST } from '../wire/arp.js';
import { Ipv4Repr, IP_PROTO_ICMP, IP_PROTO_UDP } from '../wire/ipv4.js';
import { decodeFrame, type DecodedFrame } from '../wire/frame.js';
import { TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN } from '../wire/tcp.js';
import { tcpFrame } from '../wire/tcp-frame.js';
import { VirtioNetHdrRepr, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_LEN } from '../wire/virtio.js';
import { Gateway, type Side } from './gateway.js';

export interface WarmupOptions {
  config: Config | null;
  vnetHdr: boolean;
  /**
   * The logger the real gateway gets (a child of it is used): objects of the same classes in the
   * same fields keep V8's hidden classes and field types the same in both gateways — a scratch
   * gateway without a logger made the real one's code deoptimise ("wrong map") at its first frame.
   */
  log?: Logger;
  /**
   * Frames to run (rounds of ARP, ICMP, UDP and one TCP connection per port until reached).
   * Default 8,000: enough for V8 to optimise handleFrame, decodeFrame, the flow lookup and the
   * stream engine here (about 0.1–0.3 s on this project's 2-vCPU VM).
   */
  frames?: number;
}

export interface WarmupResult {
  frames: number;
  ms: number;
  /** The scratch gateway's counters (what the warm-up traffic exercised). */
  stats: ReturnType<Gateway['stats']>;
}

const SYN = TCP_SYN;
const ACK = TCP_ACK;
const PSH = TCP_PSH;
const FIN = TCP_FIN;
const RST = TCP_RST;
const ETH_ARP = 0x0806;
const ETH_IPV4 = 0x0800;
const MAC_C = new Uint8Array([0x02, 0x77, 0x61, 0x72, 0x6d, 0x01]);
const MAC_S = new Uint8Array([0x02, 0x77, 0x61, 0x72, 0x6d, 0x02]);
const MSS = 1448;
/** Rule ports start here (one per rule); PLAIN_PORT has no rule. */
const RULE_PORT_BASE = 40000;
const PLAIN_PORT = 39999;
/** 10.254.0.1, on side 1. */
const SERVER = 0x0afe0001;

/** Runs the warm-up; returns how many frames it handled and how long it took. */
export function warmUp(opts: WarmupOptions): WarmupResult {
  const t0 = performance.now();
  const cfg = warmupConfig(opts.config);
  const gw = new Gateway({ config: cfg, vnetHdr: opts.vnetHdr, verifyChecksums: true, ...(opts.log !== undefined ? { log: opts.log.child({ mod: 'warmup' }) } : {}) });
  const b = new Builder(opts.vnetHdr);
  const client = clientAddress(opts.config);
  const server = SERVER;
  const ports = [PLAIN_PORT, ...(cfg?.rules ?? []).map((_, i) => RULE_PORT_BASE + i)];
  const target = opts.frames ?? 8000;
  let frames = 0;
  // Fractional like the live clock's: a field that held only small integers here would change
  // representation (Smi → double) at the first real frame and throw the optimised code away.
  let now = 1_000.5;
  const seen = new Seen(b.vh);
  // Two different functions as the output: a call site that saw only one inlines it, and the
  // real gateway's output function would then deoptimise it ("wrong call target").
  const sink = (f: Uint8Array, to: Side): void => {
    if (to === 1) seen.frame = f;
  };
  const sink2 = function (f: Uint8Array, to: Side): void {
    if (to === 1) seen.frame = f;
  };
  const send = (f: Uint8Array, from: Side): void => {
    seen.frame = null;
    gw.handleFrame(f, from, now, (frames & 1) === 0 ? sink : sink2);
    frames++;
  };
  const text = Buffer.from('GET / HTTP/1.1\r\nHost: warm\r\n\r\n' + 'the quick brown fox jumps over the lazy dog\n'.repeat(80), 'latin1');
  for (let k = 0; frames < target; k++) {
    now += 5.25;
    send(b.icmp(client, server, 8, k), 0);
    const sc = seen.addr(client);
    send(b.icmp(server, sc, 0, seen.port(4, k)), 1);
    send(b.arp(ARP_OP_REQUEST, client, server), 0);
    send(b.arp(ARP_OP_REPLY, server, sc), 1);
    send(b.udp(client, server, 30000 + k, 53, text.subarray(0, 40)), 0);
    send(b.udp(server, seen.addr(sc), 53, seen.port(0, 30000 + k), text.subarray(0, 80)), 1);
    for (const port of ports) {
      const cport = 1024 + ((k * ports.length + port) % 60000);
      tcpConnection(b, send, seen, client, server, cport, port, text, k, () => (now += 1.125));
    }
    gw.tick(now, sink);
  }
  return { frames, ms: performance.now() - t0, stats: gw.stats() };
}

/** The config's rules with their matches replaced by one port each (so warm-up traffic meets every agent). */
function warmupConfig(config: Config | null): Config | null {
  if (config === null) return null;
  const rules = config.rules.map((r, i): Rule => ({ ...r, match: { port: [{ lo: RULE_PORT_BASE + i, hi: RULE_PORT_BASE + i }] } }) as Rule);
  return { ...config, rules };
}

/** A side-0 address the config's NAT hides (so NAT code is warmed too), else 10.255.0.1. */
function clientAddress(config: Config | null): number {
  const nat = config?.nat?.table;
  const m = nat?.masquerade.find((x) => x.side === 0 && x.sources.length > 0);
  if (m !== undefined) return hostOf(m.sources[0]!);
  const o = nat?.oneToOne.find((x) => x.side === 0);
  if (o !== undefined) return hostOf(o.real);
  return 0x0aff0001;
}

function hostOf(c: Cidr): number {
  return (c.addr + (c.prefix < 31 ? 1 : 0)) >>> 0;
}

/**
 * What the server side saw of the client in the last frame the gateway sent there (NAT may have
 * changed the address and the port or ICMP id): source address and the 16 bits at `l4Off` of
 * the IPv4 payload.
 */
class Seen {
  frame: Uint8Array | null = null;
  constructor(private readonly vh: number) {}
  private last: { f: Uint8Array; d: (DecodedFrame & { kind: 'tcp' | 'ipv4-other' }) | null } | null = null;
  private decoded(): (DecodedFrame & { kind: 'tcp' | 'ipv4-other' }) | null {
    const f = this.frame;
    if (f === null) return null;
    if (this.last?.f !== f) {
      const d = decodeFrame(f.subarray(this.vh), { link: 'ethernet', verifyChecksums: false });
      this.last = { f, d: d.kind === 'tcp' || d.kind === 'ipv4-other' ? d : null };
    }
    return this.last.d;
  }
  addr(fallback: number): number {
    return this.decoded()?.ip?.src ?? fallback;
  }
  port(l4Off: number, fallback: number): number {
    const d = this.decoded();
    if (d === null) return fallback;
    const at = this.vh + d.l4Off + l4Off;
    const f = this.frame!;
    return at + 2 <= f.length ? (f[at]! << 8) | f[at + 1]! : fallback;
  }
}

type Send = (f: Uint8Array, from: Side) => void;

/** One TCP connection: handshake, data both ways (reordered, retransmitted, GSO), FIN, or RST. */
function tcpConnection(b: Builder, send: Send, seen: Seen, c: number, s: number, cport: number, sport: number, text: Uint8Array, k: number, step: () => void): void {
  const isnC = (0x10000000 + k * 7919) >>> 0;
  const isnS = (0x70000000 + k * 104729) >>> 0;
  let cs = isnC + 1;
  let ss = isnS + 1;
  const c2s = (seq: number, ack: number, flags: number, payload?: Uint8Array): void => send(b.tcp(c, s, cport, sport, seq, ack, flags, payload), 0);
  const s2c = (seq: number, ack: number, flags: number, payload?: Uint8Array): void => send(b.tcp(s, sc, sport, scport, seq, ack, flags, payload), 1);
  c2s(isnC, 0, SYN);
  // The client as the server side sees it (after NAT), from the SYN the gateway forwarded.
  const sc = seen.addr(c);
  const scport = seen.port(0, cport);
  s2c(isnS, cs, SYN | ACK);
  c2s(cs, ss, ACK);
  // A request, acknowledged.
  const req = text.subarray(0, 30);
  c2s(cs, ss, ACK | PSH, req);
  cs += req.length;
  s2c(ss, cs, ACK);
  // A response of three segments: the second arrives first, the first is retransmitted.
  const seg = (i: number): Uint8Array => text.subarray((i * 997) % (text.length - MSS), ((i * 997) % (text.length - MSS)) + MSS);
  const r0 = seg(k);
  const r1 = seg(k + 1);
  const r2 = seg(k + 2);
  s2c(ss + MSS, cs, ACK, r1);
  s2c(ss, cs, ACK, r0);
  s2c(ss, cs, ACK, r0);
  s2c(ss + 2 * MSS, cs, ACK | PSH, r2);
  ss += 3 * MSS;
  c2s(cs, ss - MSS, ACK);
  c2s(cs, ss, ACK);
  if (b.vnet) {
    // One GSO frame of 8 segments (partial checksum), as a TAP with offloads hands them over.
    const big = new Uint8Array(8 * MSS);
    for (let i = 0; i < 8; i++) big.set(seg(k + 3 + i), i * MSS);
    send(b.tcp(s, sc, sport, scport, ss, cs, ACK, big, true), 1);
    ss += big.length;
    c2s(cs, ss, ACK);
  }
  step();
  if (k % 4 === 3) {
    c2s(cs, ss, RST | ACK);
    return;
  }
  c2s(cs, ss, FIN | ACK);
  cs += 1;
  s2c(ss, cs, FIN | ACK);
  ss += 1;
  c2s(cs, ss, ACK);
}

/** Frames with correct checksums (and a virtio-net header when the TAPs have one). */
class Builder {
  readonly vh: number;
  constructor(readonly vnet: boolean) {
    this.vh = vnet ? VIRTIO_NET_HDR_LEN : 0;
  }

  arp(op: typeof ARP_OP_REQUEST | typeof ARP_OP_REPLY, sender: number, target: number): Uint8Array {
    const fromC = op === ARP_OP_REQUEST;
    const eth = new EthernetRepr(fromC ? new Uint8Array([0xff, 0xff, 0xff, 0xff, 0xff, 0xff]) : MAC_C, fromC ? MAC_C : MAC_S, ETH_ARP);
    const f = new Uint8Array(this.vh + eth.bufferLen() + ARP_LEN);
    const o = this.vh + eth.emit(f.subarray(this.vh));
    new ArpRepr(op, fromC ? MAC_C : MAC_S, sender, fromC ? new Uint8Array(6) : MAC_C, target).emit(f.subarray(o));
    return f;
  }

  icmp(src: number, dst: number, type: number, id: number): Uint8Array {
    const body = new Uint8Array(8 + 56);
    body[0] = type;
    body[4] = (id >>> 8) & 0xff;
    body[5] = id & 0xff;
    body[7] = 1;
    for (let i = 8; i < body.length; i++) body[i] = i;
    const cs = finish(sum16(body));
    body[2] = cs >>> 8;
    body[3] = cs & 0xff;
    return this.ip(src, dst, IP_PROTO_ICMP, body);
  }

  udp(src: number, dst: number, sport: number, dport: number, payload: Uint8Array): Uint8Array {
    const body = new Uint8Array(8 + payload.length);
    body[0] = sport >>> 8;
    body[1] = sport & 0xff;
    body[2] = dport >>> 8;
    body[3] = dport & 0xff;
    body[4] = body.length >>> 8;
    body[5] = body.length & 0xff;
    body.set(payload, 8);
    let cs = finish(sum16(body, 0, body.length, ipv4PseudoHeaderSum(src, dst, IP_PROTO_UDP, body.length)));
    if (cs === 0) cs = 0xffff;
    body[6] = cs >>> 8;
    body[7] = cs & 0xff;
    return this.ip(src, dst, IP_PROTO_UDP, body);
  }

  tcp(src: number, dst: number, sport: number, dport: number, seq: number, ack: number, flags: number, payload?: Uint8Array, gso = false): Uint8Array {
    const toServer = dst === SERVER;
    const partial = gso && this.vh > 0;
    const f = tcpFrame({
      src, dst, srcPort: sport, dstPort: dport, seq, ack,
      flags: flags | (flags & SYN ? 0 : ACK),
      options: flags & SYN ? [{ kind: 'mss', mss: MSS }] : [],
      ...(payload !== undefined ? { payload } : {}),
      headroom: this.vh,
      srcMac: toServer ? MAC_C : MAC_S,
      dstMac: toServer ? MAC_S : MAC_C,
      checksum: partial ? 'partial' : 'full',
    });
    if (partial) {
      // A GSO frame as a TAP with offloads hands it over: partial checksum, segments of MSS
      // (a data segment: IPv4 and TCP headers of 20 bytes, no options).
      new VirtioNetHdrRepr({ flags: VIRTIO_NET_HDR_F_NEEDS_CSUM, gsoType: VIRTIO_NET_HDR_GSO_TCPV4, hdrLen: 14 + 20 + 20, gsoSize: MSS, csumStart: 14 + 20, csumOffset: 16 }).emit(f);
    }
    return f;
  }

  private ip(src: number, dst: number, proto: number, body: Uint8Array): Uint8Array {
    const ip = new Ipv4Repr({ src, dst, protocol: proto, payloadLen: body.length, ttl: 64, dontFrag: true });
    const toServer = dst === SERVER;
    const eth = new EthernetRepr(toServer ? MAC_S : MAC_C, toServer ? MAC_C : MAC_S, ETH_IPV4);
    const f = new Uint8Array(this.vh + eth.bufferLen() + ip.bufferLen() + body.length);
    let o = this.vh + eth.emit(f.subarray(this.vh));
    o += ip.emit(f.subarray(o));
    f.set(body, o);
    return f;
  }
}
