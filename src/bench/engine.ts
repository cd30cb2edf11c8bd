/**
 * The engine benchmark (in process, no I/O): one HTTP-like connection's frames, pre-built, run
 * through `Gateway.handleFrame`. Figures: data segments/s and payload MB/s for pass-through (no
 * rule), for a replace rule that matches every ~4 KiB, in order and with 5% reordering, over
 * IPv4 and IPv6; the baseline measured in the same run is the bare frame decoder over the same
 * frames. Also short connections (11 frames each) and keep-alive requests over 10,000 live
 * connections (3 frames each, every frame on another connection: per-request cost).
 */
import { parseConfig } from '../config/index.js';
import { Gateway } from '../engine/gateway.js';
import { decodeFrame } from '../wire/frame.js';
import { mulberry32 } from '../util/prng.js';
import { tcpFrame } from '../wire/tcp-frame.js';
import { parseIp, type IpAddr } from '../wire/ip.js';

const SYN = 0x02;
const ACK = 0x10;
const PSH = 0x08;
const FIN = 0x01;
const C4 = 0x0a000001;
const S4 = 0x0a000002;
const C6 = parseIp('2001:db8::1') as string;
const S6 = parseIp('2001:db8::2') as string;

export interface EngineScenario {
  frames: Uint8Array[];
  dataSegments: number;
  payloadBytes: number;
}


/** Server → client: `segments` segments of 1448 bytes; the client ACKs every second one. */
export function buildScenario(segments: number, reorder: number, seed = 1, ipv6 = false): EngineScenario {
  const [C, S]: [IpAddr, IpAddr] = ipv6 ? [C6, S6] : [C4, S4];
  const rand = mulberry32(seed);
  const isnC = 0xfffff000;
  const isnS = 0x7ffff000;
  const mss = 1448;
  const text = Buffer.alloc(segments * mss);
  const line = 'the quick brown fox jumps over the lazy dog 0123456789 abcdefghijklmnopq\n';
  for (let o = 0; o < text.length; o += line.length) text.write(line, o, 'latin1');
  for (let o = 2000; o + 20 < text.length; o += 4096) text.write('tapgate-marker-here', o, 'latin1');
  const frames: Uint8Array[] = [];
  frames.push(tcpFrame({ src: C, dst: S, srcPort: 40000, dstPort: 80, seq: isnC, flags: SYN, options: [{ kind: 'mss', mss }] }));
  frames.push(tcpFrame({ src: S, dst: C, srcPort: 80, dstPort: 40000, seq: isnS, ack: isnC + 1, flags: SYN | ACK, options: [{ kind: 'mss', mss }] }));
  frames.push(tcpFrame({ src: C, dst: S, srcPort: 40000, dstPort: 80, seq: isnC + 1, ack: isnS + 1, flags: ACK }));
  const data: Uint8Array[] = [];
  for (let i = 0; i < segments; i++) {
    data.push(
      tcpFrame({
        src: S, dst: C, srcPort: 80, dstPort: 40000,
        seq: (isnS + 1 + i * mss) >>> 0, ack: isnC + 1, flags: ACK | PSH,
        payload: text.subarray(i * mss, (i + 1) * mss),
      }),
    );
  }
  // Reordering: swap a segment with the next one.
  for (let i = 0; i + 1 < data.length; i++) {
    if (rand() < reorder) {
      [data[i], data[i + 1]] = [data[i + 1]!, data[i]!];
      i++;
    }
  }
  for (let i = 0; i < data.length; i++) {
    frames.push(data[i]!);
    if (i % 2 === 1) {
      // The client has everything up to the highest contiguous segment: ack a bit behind.
      const acked = Math.max(0, i - 2);
      frames.push(tcpFrame({ src: C, dst: S, srcPort: 40000, dstPort: 80, seq: isnC + 1, ack: (isnS + 1 + acked * mss) >>> 0, flags: ACK }));
    }
  }
  return { frames, dataSegments: segments, payloadBytes: segments * mss };
}

/**
 * Short HTTP-like connections (what wrk with `Connection: close` makes): per connection SYN,
 * SYN-ACK, ACK, a request, its ACK, a response, its ACK, the server's FIN, its ACK, the client's
 * FIN, the last ACK — 11 frames; every connection has its own client port (and address).
 */
export function buildShortConnections(connections: number, ipv6 = false): EngineScenario & { connections: number } {
  const S = ipv6 ? S6 : S4;
  const frames: Uint8Array[] = [];
  const req = Buffer.from('GET / HTTP/1.1\r\nHost: 10.0.0.2\r\nUser-Agent: wrk\r\nConnection: close\r\n\r\n', 'latin1');
  const res = Buffer.from('HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n', 'latin1');
  for (let i = 0; i < connections; i++) {
    const c = ipv6 ? (parseIp(`2001:db8:1::${(i >>> 14).toString(16)}`) as string) : (0x0a010000 + (i >>> 14)) >>> 0;
    const port = 1024 + (i & 0x3fff);
    const isnC = (0x10000000 + i * 7919) >>> 0;
    const isnS = (0x70000000 + i * 104729) >>> 0;
    const c2s = (seq: number, ack: number, flags: number, payload?: Uint8Array) =>
      frames.push(tcpFrame({ src: c, dst: S, srcPort: port, dstPort: 80, seq, ack, flags, ...(payload ? { payload } : {}) }));
    const s2c = (seq: number, ack: number, flags: number, payload?: Uint8Array) =>
      frames.push(tcpFrame({ src: S, dst: c, srcPort: 80, dstPort: port, seq, ack, flags, ...(payload ? { payload } : {}) }));
    c2s(isnC, 0, SYN);
    s2c(isnS, isnC + 1, SYN | ACK);
    c2s(isnC + 1, isnS + 1, ACK);
    c2s(isnC + 1, isnS + 1, ACK | PSH, req);
    const cEnd = isnC + 1 + req.length;
    s2c(isnS + 1, cEnd, ACK);
    s2c(isnS + 1, cEnd, ACK | PSH, res);
    const sEnd = isnS + 1 + res.length;
    c2s(cEnd, sEnd, ACK);
    s2c(sEnd, cEnd, ACK | FIN);
    c2s(cEnd, sEnd + 1, ACK);
    c2s(cEnd, sEnd + 1, ACK | FIN);
    s2c(sEnd + 1, cEnd + 1, ACK);
  }
  return { frames, dataSegments: frames.length, payloadBytes: connections * (req.length + res.length), connections };
}

/**
 * Keep-alive requests over many live connections (what wrk ×10,000 makes, issue 18): the
 * handshakes of `connections` connections (`open`, not timed), then `rounds` rounds of one
 * request on each connection in turn — the request, the response (acknowledging it), the
 * client's ACK: 3 frames per request, every frame of a round on another connection.
 */
export function buildKeepAlive(connections: number, rounds: number): { open: Uint8Array[]; frames: Uint8Array[]; requests: number } {
  const S = S4;
  const open: Uint8Array[] = [];
  const frames: Uint8Array[] = [];
  const req = Buffer.from('GET / HTTP/1.1\r\nHost: 10.0.0.2:8080\r\n\r\n', 'latin1');
  const res = Buffer.from('HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Mon, 07 Dec 2026 04:00:00 GMT\r\nContent-Type: text/plain\r\nContent-Length: 11\r\nConnection: keep-alive\r\n\r\ntapgate-ok\n', 'latin1');
  const conns = Array.from({ length: connections }, (_, i) => ({
    c: (0x0a010000 + (i >>> 14)) >>> 0,
    port: 1024 + (i & 0x3fff),
    seqC: (0x10000000 + i * 7919) >>> 0,
    seqS: (0x70000000 + i * 104729) >>> 0,
  }));
  for (const k of conns) {
    open.push(tcpFrame({ src: k.c, dst: S, srcPort: k.port, dstPort: 80, seq: k.seqC, flags: SYN, options: [{ kind: 'mss', mss: 1448 }] }));
    open.push(tcpFrame({ src: S, dst: k.c, srcPort: 80, dstPort: k.port, seq: k.seqS, ack: (k.seqC + 1) >>> 0, flags: SYN | ACK, options: [{ kind: 'mss', mss: 1448 }] }));
    k.seqC = (k.seqC + 1) >>> 0;
    k.seqS = (k.seqS + 1) >>> 0;
    open.push(tcpFrame({ src: k.c, dst: S, srcPort: k.port, dstPort: 80, seq: k.seqC, ack: k.seqS, flags: ACK }));
  }
  for (let r = 0; r < rounds; r++) {
    for (const k of conns) {
      frames.push(tcpFrame({ src: k.c, dst: S, srcPort: k.port, dstPort: 80, seq: k.seqC, ack: k.seqS, flags: ACK | PSH, payload: req }));
      k.seqC = (k.seqC + req.length) >>> 0;
      frames.push(tcpFrame({ src: S, dst: k.c, srcPort: 80, dstPort: k.port, seq: k.seqS, ack: k.seqC, flags: ACK | PSH, payload: res }));
      k.seqS = (k.seqS + res.length) >>> 0;
      frames.push(tcpFrame({ src: k.c, dst: S, srcPort: k.port, dstPort: 80, seq: k.seqC, ack: k.seqS, flags: ACK }));
    }
  }
  return { open, frames, requests: connections * rounds };
}

const KEEPALIVE_RULE = parseConfig(
  `rules:
  - match: { port: 80 }
    agent: replace
    replace:
      - { find: "tapgate-ok", with: "TAPGATE-OK" }
`,
  'bench.yaml',
);

const RULE = parseConfig(
  `rules:
  - match: { port: 80 }
    agent: replace
    replace:
      - { find: "tapgate-marker-here", with: "REWRITTEN-BY-TAPGATE-longer" }
`,
  'bench.yaml',
);

export interface EngineRow {
  name: string;
  segPerSec: number;
  mbPerSec: number;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

function timeIt(sc: EngineScenario, runs: number, body: (frames: Uint8Array[]) => void): number {
  const times: number[] = [];
  const warmup = 3;
  for (let r = 0; r < runs + warmup; r++) {
    const copies = sc.frames.map((f) => f.slice());
    const t0 = process.hrtime.bigint();
    body(copies);
    const t = Number(process.hrtime.bigint() - t0) / 1e9;
    if (r >= warmup) times.push(t); // the first runs warm the JIT up
  }
  return median(times);
}

export function runEngineBench(opts: { segments?: number; runs?: number } = {}): EngineRow[] {
  const segments = opts.segments ?? 20_000;
  const runs = opts.runs ?? 5;
  const inOrder = buildScenario(segments, 0);
  const reordered = buildScenario(segments, 0.05);
  const rows: EngineRow[] = [];
  const row = (name: string, sc: EngineScenario, t: number) =>
    rows.push({ name, segPerSec: sc.dataSegments / t, mbPerSec: sc.payloadBytes / t / 1e6 });
  let sink = 0;
  row('decode only (baseline)', inOrder, timeIt(inOrder, runs, (fr) => {
    for (const f of fr) sink += decodeFrame(f, { link: 'ethernet', verifyChecksums: true }).kind.length;
  }));
  const through = (config: typeof RULE | null) => (fr: Uint8Array[]) => {
    const gw = new Gateway({ config });
    let t = 0;
    for (const f of fr) gw.handleFrame(f, 0, (t += 0.01), () => sink++);
  };
  row('pass-through, in order', inOrder, timeIt(inOrder, runs, through(null)));
  row('replace rule, in order', inOrder, timeIt(inOrder, runs, through(RULE)));
  row('replace rule, 5% reordered', reordered, timeIt(reordered, runs, through(RULE)));
  const inOrder6 = buildScenario(segments, 0, 1, true);
  row('IPv6: pass-through, in order', inOrder6, timeIt(inOrder6, runs, through(null)));
  row('IPv6: replace rule, in order', inOrder6, timeIt(inOrder6, runs, through(RULE)));
  // Short connections: "segments" here are frames (11 per connection).
  const short = buildShortConnections(Math.max(1000, Math.round(segments / 2)));
  row('short connections: decode only', short, timeIt(short, runs, (fr) => {
    for (const f of fr) sink += decodeFrame(f, { link: 'ethernet', verifyChecksums: true }).kind.length;
  }));
  row('short connections: pass-through', short, timeIt(short, runs, through(null)));
  row('short connections: replace rule', short, timeIt(short, runs, through(RULE)));
  const short6 = buildShortConnections(Math.max(1000, Math.round(segments / 2)), true);
  row('short connections: replace rule, IPv6', short6, timeIt(short6, runs, through(RULE)));
  // Keep-alive requests over many live connections: "segments" are requests (3 frames each).
  const conns = Math.min(10_000, Math.max(1000, Math.round(segments / 2)));
  const ka = buildKeepAlive(conns, 4);
  const kaSc = { frames: ka.frames, dataSegments: ka.requests, payloadBytes: 0 };
  row('keep-alive requests: decode only', kaSc, timeIt(kaSc, runs, (fr) => {
    for (const f of fr) sink += decodeFrame(f, { link: 'ethernet', verifyChecksums: true }).kind.length;
  }));
  for (const [name, config] of [['pass-through', null], ['replace rule', KEEPALIVE_RULE]] as const) {
    const times: number[] = [];
    for (let r = 0; r < runs + 2; r++) {
      const gw = new Gateway({ config });
      let t = 0;
      for (const f of ka.open) gw.handleFrame(f.slice(), 0, (t += 0.001), () => sink++);
      const copies = ka.frames.map((f) => f.slice());
      const t0 = process.hrtime.bigint();
      for (const f of copies) gw.handleFrame(f, 0, (t += 0.001), () => sink++);
      if (r >= 2) times.push(Number(process.hrtime.bigint() - t0) / 1e9);
    }
    row(`keep-alive requests: ${name}`, kaSc, median(times));
  }
  if (sink === -1) console.log(sink);
  return rows;
}
