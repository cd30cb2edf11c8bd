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
 * has NAT. Rules that differ only in their strings and numbers run the same code: one of each
 * shape is warmed, at most WARM_RULES_MAX (20,000 rules once took 18 s and 3 GB here). With a vnet header, TCP data also comes as GSO frames with partial checksums.
 *
 * The TCP is shaped like Linux's, since V8 throws optimised code away at the first value or path
 * it never saw: every segment has the options Linux sends (timestamps; MSS, SACK permitted and
 * window scaling on SYNs; a D-SACK for the repeated segment), sequence numbers and timestamps
 * spread over the whole 32-bit space (above 2^30 they are no small integers to V8, above 2^31 no
 * int32), and each side acknowledges what the gateway delivered to it (a rewrite moves the
 * numbers), partly first. What the connections say is the rule's protocol (warmup-talk.ts).
 */
import type { Logger } from 'pino';
import type { Cidr } from '../wire/cidr.js';
import type { Config, Rule } from '../config/load.js';
import { EthernetRepr } from '../wire/ethernet.js';
import { finish, ipv4PseudoHeaderSum, sum16 } from '../wire/checksum.js';
import { ArpRepr, ARP_LEN, ARP_OP_REPLY, ARP_OP_REQUEST } from '../wire/arp.js';
import { Ipv4Repr, IP_PROTO_ICMP, IP_PROTO_UDP } from '../wire/ipv4.js';
import { decodeFrame, type DecodedFrame } from '../wire/frame.js';
import { TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, type SackBlock, type TcpOption } from '../wire/tcp.js';
import { tcpFrame } from '../wire/tcp-frame.js';
import { VIRTIO_NET_HDR_LEN } from '../wire/virtio.js';
import { Gateway, type Side } from './gateway.js';
import { warmupTalk, type Talk } from './warmup-talk.js';
import { DEFAULT_LIMITS } from '../stream/limits.js';
import { ByteStore } from '../stream/bytestore.js';

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
/** Rules warmed at most (one per shape: see warmupRules). */
export const WARM_RULES_MAX = 64;
/** Rule ports start here (one per rule); PLAIN_PORT has no rule. */
const RULE_PORT_BASE = 40000;
const PLAIN_PORT = 39999;
/** Variants of each port's talk (warmup-talk.ts: its shapes and its patterns' order). */
const TALK_VARIANTS = 8;
/** 10.254.0.1, on side 1. */
const SERVER = 0x0afe0001;

/** Runs the warm-up; returns how many frames it handled and how long it took. */
export function warmUp(opts: WarmupOptions): WarmupResult {
  const t0 = performance.now();
  const rules = warmupRules(opts.config);
  const cfg = opts.config === null ? null : warmupConfig(opts.config, rules);
  const gw = new Gateway({ config: cfg, vnetHdr: opts.vnetHdr, verifyChecksums: true, batched: true, sided: true, ...(opts.log !== undefined ? { log: opts.log.child({ mod: 'warmup' }) } : {}) });
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
    seen.out(f, to);
  };
  const sink2 = function (f: Uint8Array, to: Side): void {
    seen.out(f, to);
  };
  // `last`: the batch ends with this frame (the live loop reads several at once: a download's
  // frames of one connection in a batch join a split segment's last piece to the next one).
  const send = (f: Uint8Array, from: Side, last = true): void => {
    seen.clear();
    gw.handleFrame(f, from, now, (frames & 1) === 0 ? sink : sink2);
    // As the live loop does after each batch (engine/live.ts flush).
    if (last) gw.endBatch();
    frames++;
  };
  // What each port's connections say, in the rule's protocol (a few variants per port, made once).
  const bulk = bulkPorts(rules, cfg, b.vnet);
  const talks = ports.map((_, i) => Array.from({ length: TALK_VARIANTS }, (_, v) => warmupTalk(i === 0 ? undefined : rules[i - 1], v, bulk[i] === true)));
  const probe = talks[0]![0]!.request;
  // First: the code the traffic below gets optimised with must already know these paths.
  storeRarePaths();
  for (let k = 0; frames < target; k++) {
    now += 5.25;
    send(b.icmp(client, server, 8, k), 0);
    const sc = seen.addr(client);
    send(b.icmp(server, sc, 0, seen.port(4, k)), 1);
    send(b.arp(ARP_OP_REQUEST, client, server), 0);
    send(b.arp(ARP_OP_REPLY, server, sc), 1);
    send(b.udp(client, server, 30000 + k, 53, probe.subarray(0, 40)), 0);
    send(b.udp(server, seen.addr(sc), 53, seen.port(0, 30000 + k), probe.subarray(0, 80)), 1);
    ports.forEach((port, i) => {
      const cport = 1024 + ((k * ports.length + port) % 60000);
      // Every fourth connection carries a second exchange (it ends with a FIN: k % 4 !== 3).
      const again = k % 4 === 1 ? talks[i]![(k + 1) % TALK_VARIANTS]! : undefined;
      tcpConnection(b, send, seen, client, server, cport, port, talks[i]![k % TALK_VARIANTS]!, k, () => (now += 1.125), again);
    });
    gw.tick(now, sink);
  }
  return { frames, ms: performance.now() - t0, stats: gw.stats() };
}

/**
 * The byte store's paths a long connection takes and the warm-up's short ones do not: a ring
 * grown while its bytes wrap round its end, a ring halved after rings in a row held little, a
 * ring shrunk (stream/bytestore.ts). Their first run in a real download threw the optimised code of the
 * stream engine that inlines them away ("insufficient type feedback"). Run before the traffic:
 * code optimised before a path first ran keeps its deoptimisation exit there.
 */
function storeRarePaths(): void {
  const bytes = new Uint8Array(200);
  // More runs than V8 lets a function go before it keeps feedback (8 calls): fewer record none.
  for (let r = 0; r < 16; r++) {
    const s = new ByteStore(1_000 * r, 0);
    s.append(bytes);
    s.dropBelow(s.end - 50);
    // 50 held from index 150 of a 256-byte ring: 200 more wrap round its end, then 200 more
    // than it holds move the wrapped bytes to a larger one.
    s.append(bytes);
    s.append(bytes);
    // Grown to 2 KiB, then most of it acknowledged: the ring shrinks to what is left.
    for (let i = 0; i < 4; i++) s.append(bytes);
    s.dropBelow(s.end - 300);
    s.shrink();
    // Rings in a row far below their size: the next one starts at half (ByteStore.reset).
    for (let i = 0; i < 10; i++) {
      s.reset(s.end);
      s.append(bytes.subarray(0, 20));
    }
    s.reset(s.end);
  }
}

/**
 * The rules to warm: the first of each shape (agent and options with every string and number
 * alike: "find x1" and "find x2" run the same code, a regex or `ignoreCase` does not), at most
 * WARM_RULES_MAX.
 */
export function warmupRules(config: Config | null): Rule[] {
  const out: Rule[] = [];
  const shapes = new Set<string>();
  for (const r of config?.rules ?? []) {
    const shape = `${r.agent}:${JSON.stringify(r.config ?? null, shapeOf)}:${r.direction}`;
    if (shapes.has(shape)) continue;
    shapes.add(shape);
    out.push(r);
    if (out.length === WARM_RULES_MAX) break;
  }
  return out;
}

/** Option values that choose code (an engine, an action, regex flags) are kept. */
const CHOOSING = new Set(['engine', 'budgetExceeded', 'flags', 'unrewritable']);

/**
 * A JSON replacer: numbers and free text alike, but for the options in CHOOSING and a regex's
 * kind (one with a lookaround or backreference runs on the backtracking engine when `engine` is
 * not written).
 */
function shapeOf(key: string, v: unknown): unknown {
  if (typeof v === 'number') return 0;
  if (typeof v !== 'string' || CHOOSING.has(key)) return v;
  return key === 'regex' ? (/\(\?<?[=!]|\\[1-9]|\\k</.test(v) ? 'backtracking' : 'linear') : '';
}

/**
 * Per port (0: the plain one, then one per warmed rule): whether its talks include a download
 * (warmup-talk.ts BULK_TALK). Only with GSO (without, a download is hundreds of frames), only on
 * the first port of each agent that rewrites (the stream engine's download paths are the same
 * under every rule; 64 regex shapes with one each took 4 s instead of 1.3), and only when the
 * stores hold what the warm-up's server keeps in flight (a smaller `normalizeBytesPerConn` or
 * `normalizeBytesGlobal` would drop its data: the drop paths would be warmed, not the download's).
 */
function bulkPorts(rules: readonly Rule[], cfg: Config | null, gso: boolean): boolean[] {
  const limits = cfg?.limits ?? DEFAULT_LIMITS;
  if (!gso || Math.min(limits.normalizeBytesPerConn, limits.normalizeBytesGlobal) < BULK_MIN_STORE) return [];
  const seen = new Set<string>();
  return [false, ...rules.map((r) => {
    if ((r.agent !== 'replace' && r.agent !== 'http') || seen.has(r.agent)) return false;
    seen.add(r.agent);
    return true;
  })];
}

/** What a download's stores need: the warm-up's server keeps up to three GSO frames in flight, and one more. */
const BULK_MIN_STORE = 4 * 44 * MSS;
/**
 * The window a downloading client announces (scaled by 2^7: 8 MiB, as Linux's autotuned receive
 * window grows to): more than the stores keep, so the gateway clamps it as it does for a real
 * download (Connection.translate); the warm-up's other segments announce 64 KiB.
 */
const DOWNLOAD_WINDOW = 65535;

/** The config with `rules` alone, their matches replaced by one port each (so warm-up traffic meets every agent). */
function warmupConfig(config: Config, rules: readonly Rule[]): Config {
  return { ...config, rules: rules.map((r, i): Rule => ({ ...r, index: i, match: { port: [{ lo: RULE_PORT_BASE + i, hi: RULE_PORT_BASE + i }] } }) as Rule) };
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
 * What each side saw of the last frames the gateway sent it: the server side's view of the client
 * (NAT may have changed the address and the port or ICMP id: source address and the 16 bits at
 * `l4Off` of the IPv4 payload of the last frame to side 1), and per side the end of the TCP
 * sequence space delivered to it (what that side acknowledges: a rewrite changes it).
 */
class Seen {
  private frame: Uint8Array | null = null;
  private last: { f: Uint8Array; d: (DecodedFrame & { kind: 'tcp' | 'ipv4-other' }) | null } | null = null;
  /** Per side: one past the last sequence number delivered (SYN and FIN count), or -1. */
  private readonly ends = [-1, -1];
  private firstEnd = -1;
  constructor(private readonly vh: number) {}

  /** Before each frame sent to the gateway: nothing of it seen yet. */
  clear(): void {
    this.frame = null;
  }

  /** A frame the gateway sent to side `to`. */
  out(f: Uint8Array, to: Side): void {
    if (to === 1) this.frame = f;
    const d = this.decode(f);
    if (d?.kind !== 'tcp') return;
    const t = d.tcp;
    const end = (t.seq + d.payloadLen + (t.flags & SYN ? 1 : 0) + (t.flags & FIN ? 1 : 0)) >>> 0;
    const was = this.ends[to]!;
    if (was < 0 || ((end - was) | 0) > 0) this.ends[to] = end;
    if (to === 0 && d.payloadLen > 0 && this.firstEnd < 0) this.firstEnd = end;
  }

  /** Where the first data segment delivered to side 0 since the last call ended (or `fallback`). */
  takeFirstEnd(fallback: number): number {
    const e = this.firstEnd;
    this.firstEnd = -1;
    return e < 0 ? fallback : e;
  }

  /** What side `to` acknowledges (`fallback` before anything was delivered to it). */
  end(to: Side, fallback: number): number {
    const e = this.ends[to]!;
    return e < 0 ? fallback : e;
  }

  /** A new connection: nothing delivered yet. */
  resetEnds(): void {
    this.ends[0] = this.ends[1] = -1;
    this.firstEnd = -1;
  }

  addr(fallback: number): number {
    return this.decodedLast()?.ip?.src ?? fallback;
  }

  port(l4Off: number, fallback: number): number {
    const d = this.decodedLast();
    if (d === null) return fallback;
    const at = this.vh + d.l4Off + l4Off;
    const f = this.frame!;
    return at + 2 <= f.length ? (f[at]! << 8) | f[at + 1]! : fallback;
  }

  private decodedLast(): (DecodedFrame & { kind: 'tcp' | 'ipv4-other' }) | null {
    return this.frame === null ? null : this.decode(this.frame);
  }

  private decode(f: Uint8Array): (DecodedFrame & { kind: 'tcp' | 'ipv4-other' }) | null {
    if (this.last?.f !== f) {
      const d = decodeFrame(f.subarray(this.vh), { link: 'ethernet', verifyChecksums: false });
      this.last = { f, d: d.kind === 'tcp' || d.kind === 'ipv4-other' ? d : null };
    }
    return this.last.d;
  }
}

type Send = (f: Uint8Array, from: Side, last?: boolean) => void;

/**
 * One TCP connection: handshake, the request (in MSS segments), the response (its second segment
 * first, the first one repeated, the rest in GSO frames with a vnet header, acknowledged every
 * second frame), with `again` a second request and response on it, FIN, or RST. Each side
 * acknowledges what it was delivered: a rewrite moves the sequence numbers.
 */
function tcpConnection(b: Builder, send: Send, seen: Seen, c: number, s: number, cport: number, sport: number, talk: Talk, k: number, step: () => void, again?: Talk): void {
  // Initial sequence numbers over the whole 32-bit space, as real ones are: code that only saw
  // numbers below 2^30 (small integers to V8) or 2^31 was thrown away ("not a Smi", "lost
  // precision") at the first real connection, and field representations changed ("wrong map").
  const isnC = Math.imul(k + 1, 0x9e3779b9) >>> 0;
  const isnS = Math.imul(k + 7, 0x85ebca6b) >>> 0;
  let cs = isnC + 1;
  let ss = isnS + 1;
  seen.resetEnds();
  b.localStacks = k % 2 === 1;
  // Each side's timestamp clock (random offsets over the 32-bit space, as Linux's), one tick a
  // segment; each echoes the other's last.
  let tsC = Math.imul(k + 3, 0xc2b2ae35) >>> 0;
  let tsS = Math.imul(k + 5, 0x27d4eb2f) >>> 0;
  const cTimes = (): TcpTimes => ({ tsval: (tsC = (tsC + 1) >>> 0), tsecr: tsS });
  const sTimes = (): TcpTimes => ({ tsval: (tsS = (tsS + 1) >>> 0), tsecr: tsC });
  const c2s = (seq: number, flags: number, payload?: Uint8Array, sack?: readonly SackBlock[], ack = seen.end(0, ss), window?: number): void =>
    send(b.tcp(c, s, cport, sport, seq, ack, flags, cTimes(), payload, false, sack, window), 0);
  const s2c = (seq: number, flags: number, payload?: Uint8Array, gso = false, last = true): void =>
    send(b.tcp(s, sc, sport, scport, seq, seen.end(1, cs), flags, sTimes(), payload, gso), 1, last);
  send(b.tcp(c, s, cport, sport, isnC, 0, SYN, { tsval: (tsC = (tsC + 1) >>> 0), tsecr: 0 }), 0);
  // The client as the server side sees it (after NAT), from the SYN the gateway forwarded.
  const sc = seen.addr(c);
  const scport = seen.port(0, cport);
  s2c(isnS, SYN | ACK);
  c2s(cs, ACK);
  // One exchange, or two on the same connection (keep-alive: the agent's state after a message).
  for (const t of again === undefined ? [talk] : [talk, again]) {
    // The request, acknowledged.
    const req = t.request;
    for (let o = 0; o < req.length; o += MSS) c2s(cs + o, ACK | PSH, req.subarray(o, o + MSS));
    cs += req.length;
    s2c(ss, ACK);
    // The response: the second segment arrives first, the first is retransmitted (a response of
    // one segment: that one twice).
    const res = t.response;
    const piece = (i: number): Uint8Array => res.subarray(i * MSS, (i + 1) * MSS);
    if (res.length > MSS) s2c(ss + MSS, ACK, piece(1));
    s2c(ss, ACK, piece(0));
    s2c(ss, ACK, piece(0));
    // The duplicate reported as a D-SACK (RFC 2883: a block below the cumulative ACK).
    const got = seen.end(0, ss);
    c2s(cs, ACK, undefined, [{ left: (got - Math.min(MSS, res.length)) >>> 0, right: got }]);
    // Now and then a block that covers no byte of the sender's: the translation drops it (a block
    // inside a replacement does so too; a real capture's first one threw `translate` away).
    if (k % 4 === 2) c2s(cs, ACK, undefined, [{ left: got, right: got }]);
    if (res.length > 2 * MSS) s2c(ss + 2 * MSS, ACK | PSH, piece(2));
    c2s(cs, ACK);
    // The rest: GSO frames of up to 44 segments (partial checksum) as a TAP with offloads hands
    // them over, or one segment each.
    const per = b.vnet ? 44 * MSS : MSS;
    seen.takeFirstEnd(0);
    let acks = 0;
    for (let o = 3 * MSS, n = 0; o < res.length; o += per, n++) {
      const p = res.subarray(o, o + per);
      const before = seen.end(0, ss);
      // Two frames to a batch, as a TAP read hands a download's over.
      s2c(ss + o, ACK | PSH, p, b.vnet && p.length > MSS, n % 2 === 1 || o + per >= res.length);
      // A bulk response is acknowledged as it comes, every second frame and a frame behind (as a
      // client's delayed ACKs reach the gateway while the server sends on): the stores drop, the
      // commands are pruned and the window is translated while the list holds later ones.
      if (n % 2 === 1 && o + per < res.length) {
        c2s(cs, ACK, undefined, undefined, before, DOWNLOAD_WINDOW);
        acks++;
      }
      // Once, segments of the frame not yet acknowledged sent again (as after a loss): a
      // retransmission inside the rewritten range, starting inside a command and past one.
      if (n === 5 && per > 12 * MSS) for (let k = 1; k <= 10; k++) s2c(ss + o + k * MSS, ACK, res.subarray(o + k * MSS, o + (k + 1) * MSS));
    }
    ss += res.length;
    // A partial ACK first (the first segment of the rest: rewritten bytes beyond it move the
    // window's right edge), then all.
    if (acks === 0) c2s(cs, ACK, undefined, undefined, seen.takeFirstEnd(seen.end(0, ss)));
    c2s(cs, ACK);
    step();
  }
  if (k % 4 === 3) {
    c2s(cs, RST | ACK);
    return;
  }
  c2s(cs, FIN | ACK);
  cs += 1;
  s2c(ss, FIN | ACK);
  ss += 1;
  c2s(cs, ACK);
}

/** A segment's timestamps option. */
interface TcpTimes {
  tsval: number;
  tsecr: number;
}

/** Frames with correct checksums (and a virtio-net header when the TAPs have one). */
class Builder {
  readonly vh: number;
  /**
   * With a vnet header: every segment of the current connection says NEEDS_CSUM (a partial
   * checksum), as a TAP with offloads hands over what a local stack sends — a pure ACK, a short
   * answer, not only GSO frames; else only GSO frames do (as frames from another host through a
   * bridge). Every other connection each way: a gateway warmed on full checksums alone threw its
   * code for the partial ones away in its first real download.
   */
  localStacks = false;
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

  /**
   * A TCP segment with the options Linux sends: MSS, SACK permitted, timestamps and window scale
   * on a SYN, timestamps on every other segment (and `sack` blocks when given), a scaled window.
   */
  tcp(src: number, dst: number, sport: number, dport: number, seq: number, ack: number, flags: number, ts: TcpTimes, payload?: Uint8Array, gso = false, sack?: readonly SackBlock[], window?: number): Uint8Array {
    const toServer = dst === SERVER;
    const partial = gso && this.vh > 0;
    const needsCsum = !partial && this.localStacks && this.vh > 0;
    const stamps: TcpOption = { kind: 'timestamps', tsval: ts.tsval, tsecr: ts.tsecr };
    const options: TcpOption[] =
      flags & SYN
        ? [{ kind: 'mss', mss: MSS + 12 }, { kind: 'sack-permitted' }, stamps, { kind: 'nop' }, { kind: 'wscale', shift: 7 }]
        : [{ kind: 'nop' }, { kind: 'nop' }, stamps, ...(sack !== undefined ? [{ kind: 'nop' } as const, { kind: 'nop' } as const, { kind: 'sack', blocks: sack } as const] : [])];
    const f = tcpFrame({
      src, dst, srcPort: sport, dstPort: dport, seq, ack,
      flags: flags | (flags & SYN ? 0 : ACK),
      window: window ?? (flags & SYN ? 64240 : 502),
      options,
      ...(payload !== undefined ? { payload } : {}),
      headroom: this.vh,
      srcMac: toServer ? MAC_C : MAC_S,
      dstMac: toServer ? MAC_S : MAC_C,
      // A GSO frame as a TAP with offloads hands it over: partial checksum, segments of MSS.
      ...(partial ? { gsoSize: MSS } : {}),
      ...(needsCsum ? { needsCsum } : {}),
    });
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
