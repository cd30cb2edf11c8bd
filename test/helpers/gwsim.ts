/**
 * The reference TCP pair of tcpsim.ts through a whole `Gateway`, frame by frame: the client opens
 * with a handshake (SYN and SYN-ACK with MSS and SACK-permitted), both move their streams through
 * a lossy, reordering, duplicating network and close with FINs; every frame the gateway emits is
 * decoded with its checksums verified and delivered. Time is simulated.
 *
 * An on-path attacker forges segments (`Injection`: RST, FIN, SYN, with or without ACK) once the
 * handshake is done, pretending to be either endpoint, with sequence numbers near what it sees
 * on the wire or anywhere. The endpoints are `strict` (tcpsim.ts): they judge every segment as
 * RFC 9293 / RFC 5961 endpoints do, so `disrupted` says when an endpoint itself lost the
 * connection (a RST at RCV.NXT, a FIN before the stream's end) — then it is gone whatever a
 * middlebox does, and the run stops there.
 */
import { tcpFrame } from '../../src/wire/tcp-frame.js';
import type { Gateway, Side } from '../../src/engine/gateway.js';
import type { TcpFields } from '../../src/stream/connection.js';
import { decodeFrame } from '../../src/wire/frame.js';
import { offsetToSeq, seq as wrap, type Seq } from '../../src/wire/seq.js';
import type { TcpOption } from '../../src/wire/tcp.js';
import type { IpAddr } from '../../src/wire/ip.js';
import { Endpoint, Heap, type Pkt, type SimOptions } from './tcpsim.js';

export const SIM_CLIENT = 0x0a000001;
export const SIM_SERVER = 0x0a000002;
export const SIM_CLIENT_PORT = 40000;
export const SIM_SERVER_PORT = 80;

const SYN = 0x02;
const RST = 0x04;
const ACK = 0x10;
/** Retransmission time of SYN and SYN-ACK (the endpoints' initial RTO in tcpsim.ts). */
const SYN_RTO_MS = 50;
const EMPTY = new Uint8Array(0);

/** A segment forged by an on-path attacker. */
export interface Injection {
  /** Sent just before the gateway gets the n-th genuine frame after the handshake. */
  atFrame: number;
  /** The endpoint it pretends to come from (it arrives on that endpoint's side, unless `farSide`). */
  from: 0 | 1;
  /**
   * Forged on the other segment: it arrives on the side of the endpoint it is addressed to, and
   * what the gateway lets out goes toward the pretended sender, whose stack ignores it (not its
   * address).
   */
  farSide?: boolean;
  flags: number;
  /**
   * seq = base + delta: `snd` the pretended sender's next sequence number, `ack` the last ACK
   * it got from its peer (as the gateway delivered it), `abs` delta alone.
   */
  seq: { base: 'snd' | 'ack' | 'abs'; delta: number };
  /**
   * The ACK field (filled in with or without the ACK flag): `ack` what the pretended sender
   * acknowledges, plus delta; `abs` delta alone.
   */
  ack: { base: 'ack' | 'abs'; delta: number };
}

/** An injection as it was sent: its resolved fields and how many frames the gateway let out. */
export interface Injected extends Injection {
  seqValue: Seq;
  ackValue: Seq;
  forwarded: number;
}

/** The network and endpoints of tcpsim's simulation, with a whole Gateway in the middle. */
export interface GatewaySimOptions extends Pick<SimOptions, 'rand' | 'data' | 'isn' | 'mss' | 'loss' | 'dup' | 'reorder' | 'sack' | 'maxTimeMs'> {
  /** The streams each receiver must end with when nothing disrupts the connection: [c2s, s2c]. */
  expected: [Uint8Array, Uint8Array];
  /** A gateway whose config has a rule for port 80. */
  gateway: Gateway;
  injections?: readonly Injection[];
  /** Bytes an endpoint sends beyond SND.UNA. */
  window?: number;
  /** Client and server addresses (default SIM_CLIENT, SIM_SERVER); IPv6 as keys (wire/ip.ts). */
  addrs?: readonly [IpAddr, IpAddr];
  /** IPv6 only: extension headers in every frame the endpoints send (tcpFrame's ipv6ExtHeaders). */
  ipv6Ext?: { bytes: Uint8Array; first: number };
}

export interface GatewaySimResult {
  /** Both sides sent everything, got everything and both FINs were acknowledged. */
  finished: boolean;
  /** What each receiver has in order: [c2s as the server has it, s2c as the client has it]. */
  received: [Uint8Array, Uint8Array];
  /** Every run of bytes each receiver holds, in order or not (same order as `received`). */
  runs: [Uint8Array[], Uint8Array[]];
  /** Inconsistencies the endpoints saw, and malformed frames from the gateway. */
  errors: string[];
  /** Why an endpoint lost the connection (reset, a FIN taken before the stream's end), or null. */
  disrupted: string | null;
  injected: Injected[];
  timeMs: number;
}

type Phase = 'syn-sent' | 'listen' | 'syn-received' | 'established';

export function simulateGateway(o: GatewaySimOptions): GatewaySimResult {
  const gw = o.gateway;
  const cap = (o.data[0].length + o.data[1].length) * 4 + 1024;
  const ep = [new Endpoint(o.isn[0], o.data[0], o.isn[1], cap), new Endpoint(o.isn[1], o.data[1], o.isn[0], cap)] as const;
  for (const s of [0, 1] as const) {
    ep[s].strict = true;
    ep[s].peerEnd = o.expected[1 - s]!.length;
  }
  const phase: [Phase, Phase] = ['syn-sent', 'listen'];
  const synMs = [-Infinity, -Infinity];
  const pending = [...(o.injections ?? [])].sort((a, b) => a.atFrame - b.atFrame);
  const injected: Injected[] = [];
  const errors: string[] = [];
  type Ev = { t: number; n: number; to: 'gw' | 'ep'; side: 0 | 1; p: Pkt };
  const evs = new Heap<Ev>((a, b) => a.t - b.t || a.n - b.n);
  let evn = 0;
  let now = 0;
  let framesAfterHandshake = 0;

  const send = (to: 'gw' | 'ep', side: 0 | 1, p: Pkt): void => {
    if (o.rand() < o.loss) return;
    const copies = o.rand() < o.dup ? 2 : 1;
    for (let c = 0; c < copies; c++) {
      const delay = 1 + o.rand() * 2 + (o.rand() < o.reorder ? o.rand() * 20 : 0);
      if (evs.size > 200_000) return;
      evs.push({ t: now + delay, n: evn++, to, side, p });
    }
  };
  /** Frames the gateway emits: decoded (checksums verified) and put on the network. */
  let emitted = 0;
  const addrs = o.addrs ?? [SIM_CLIENT, SIM_SERVER];
  const emit = (frame: Uint8Array, to: Side): void => {
    emitted++;
    const p = decodePkt(frame, addrs[to]);
    if (p === null) return; // not for the endpoint on that side: its stack ignores it
    if (typeof p === 'string') errors.push(`gateway emitted a malformed frame: ${p}`);
    else send('ep', to, p);
  };
  /** A segment from endpoint `from`, arriving on side `arrive` (its own, unless forged on the far segment). */
  const toGateway = (from: 0 | 1, p: Pkt, arrive: 0 | 1 = from): void => {
    gw.handleFrame(frameOf(from, p, o.mss, o.sack, addrs, o.ipv6Ext), arrive, now, emit);
  };
  const synPkt = (side: 0 | 1): Pkt => ({
    f: {
      seq: wrap(o.isn[side]),
      ack: side === 0 ? 0 : wrap(o.isn[0] + 1),
      flags: side === 0 ? SYN : SYN | ACK,
      window: 65535,
      urgent: 0,
      sack: null,
    },
    payload: EMPTY,
  });
  const inject = (j: Injection): void => {
    const e = ep[j.from];
    const snd = offsetToSeq(e.sndMax + 1 + (e.finEver ? 1 : 0), o.isn[j.from]);
    const rcvAck = offsetToSeq(e.sndUna + 1 + (e.finAcked ? 1 : 0), o.isn[j.from]);
    const seqValue = wrap((j.seq.base === 'snd' ? snd : j.seq.base === 'ack' ? rcvAck : 0) + j.seq.delta);
    const ackValue = wrap((j.ack.base === 'ack' ? e.ackFields(false).ack : 0) + j.ack.delta);
    const before = emitted;
    toGateway(j.from, { f: { seq: seqValue, ack: ackValue, flags: j.flags, window: 65535, urgent: 0, sack: null }, payload: EMPTY }, j.farSide === true ? ((1 - j.from) as 0 | 1) : j.from);
    injected.push({ ...j, seqValue, ackValue, forwarded: emitted - before });
  };
  /** A segment reaching endpoint `s`: the handshake here, then the endpoint's own judgement. */
  const deliver = (s: 0 | 1, p: Pkt): void => {
    const f = p.f;
    const kind = f.flags & (SYN | ACK | RST);
    switch (phase[s]) {
      case 'syn-sent':
        if (kind === (SYN | ACK) && f.ack === wrap(o.isn[0] + 1)) {
          phase[0] = 'established';
          send('gw', 0, { f: ep[0].ackFields(o.sack), payload: EMPTY });
        }
        return;
      case 'listen':
        if (kind === SYN) phase[1] = 'syn-received';
        return;
      case 'syn-received':
        if (kind === SYN) synMs[1] = -Infinity; // the SYN-ACK was lost: again at once
        if (kind !== ACK || f.ack !== wrap(o.isn[1] + 1)) return;
        phase[1] = 'established';
        break;
      case 'established':
        break;
    }
    const reply = ep[s].receive(p, o.sack, now);
    if (reply) send('gw', s, reply);
  };

  const window = o.window ?? 4000;
  const maxT = o.maxTimeMs ?? 60_000;
  while (now < maxT) {
    if (phase[0] === 'syn-sent' && now - synMs[0]! >= SYN_RTO_MS) {
      synMs[0] = now;
      send('gw', 0, synPkt(0));
    }
    if (phase[1] === 'syn-received' && now - synMs[1]! >= SYN_RTO_MS) {
      synMs[1] = now;
      send('gw', 1, synPkt(1));
    }
    for (const side of [0, 1] as const) {
      if (phase[side] !== 'established') continue;
      for (const p of ep[side].output(now, o.mss, o.rand, window, o.sack)) send('gw', side, p);
    }
    gw.tick(now, emit);
    if ((ep[0].done && ep[1].done) || ep[0].disrupted !== null || ep[1].disrupted !== null) break;
    if (evs.size === 0) {
      now += 5;
      continue;
    }
    const e = evs.pop()!;
    now = Math.max(now, e.t);
    if (e.to === 'ep') {
      deliver(e.side, e.p);
      continue;
    }
    if (phase[0] === 'established' && phase[1] === 'established') {
      while (pending.length > 0 && pending[0]!.atFrame <= framesAfterHandshake) inject(pending.shift()!);
      framesAfterHandshake++;
    }
    toGateway(e.side, e.p);
  }
  for (const e of ep) errors.push(...e.errors);
  const why = (s: 0 | 1): string | null => (ep[s].disrupted === null ? null : `${s === 0 ? 'client' : 'server'} ${ep[s].disrupted}`);
  return {
    finished: ep[0].done && ep[1].done,
    received: [ep[1].received(), ep[0].received()],
    runs: [ep[1].runs(), ep[0].runs()],
    errors,
    disrupted: why(0) ?? why(1),
    injected,
    timeMs: now,
  };
}

/** The frame of a segment from `side` (10.0.0.1:40000 is the client, 10.0.0.2:80 the server). */
function frameOf(side: 0 | 1, p: Pkt, mss: number, sack: boolean, addrs: readonly [IpAddr, IpAddr], ext?: { bytes: Uint8Array; first: number }): Uint8Array {
  const f = p.f;
  const options: TcpOption[] = [];
  if (f.flags & SYN) {
    options.push({ kind: 'mss', mss });
    if (sack) options.push({ kind: 'sack-permitted' });
  } else if (f.sack !== null && f.sack.length > 0) {
    options.push({ kind: 'sack', blocks: f.sack.map(([left, right]) => ({ left, right })) });
  }
  const [src, dst, srcPort, dstPort] =
    side === 0 ? [addrs[0], addrs[1], SIM_CLIENT_PORT, SIM_SERVER_PORT] : [addrs[1], addrs[0], SIM_SERVER_PORT, SIM_CLIENT_PORT];
  return tcpFrame({
    src, dst, srcPort, dstPort, seq: f.seq, ack: f.ack, flags: f.flags, window: f.window, options, payload: p.payload,
    ...(ext !== undefined ? { ipv6ExtHeaders: ext.bytes, ipv6FirstHeader: ext.first } : {}),
  });
}

/** The segment in a frame the gateway emitted (its payload copied), or why it is malformed. */
/** The segment of a frame the gateway emitted; null when it is not addressed to `to`. */
function decodePkt(frame: Uint8Array, to: IpAddr): Pkt | string | null {
  const d = decodeFrame(frame, { link: 'ethernet', verifyChecksums: true, ipv6: true });
  if (d.kind === 'error') return `${d.reason}: ${d.detail}`;
  if (d.kind !== 'tcp') return `not TCP: ${d.kind}`;
  if (d.dst !== to) return null;
  const t = d.tcp;
  let sack: Array<[Seq, Seq]> | null = null;
  if (t.sackOptionOffset() >= 0) {
    sack = [];
    for (let i = 0; i < t.sackBlockCount(); i++) sack.push([t.sackLeft(i), t.sackRight(i)]);
  }
  const f: TcpFields = { seq: t.seq, ack: t.ack, flags: t.flags, window: t.window, urgent: t.urgent, sack };
  return { f, payload: frame.slice(d.payloadOff, d.payloadOff + d.payloadLen) };
}
