/**
 * Memory per idle tracked connection (issue 7 goal: ≤ 1 KiB at 100,000 connections), in
 * process: a `Gateway` gets `connections` full handshakes (SYN, SYN-ACK, ACK; distinct
 * 4-tuples; frames from frames.ts), with or without a replace rule matching them (with one,
 * each flow has a Connection with two StreamDirections); with `exchange`, each connection then
 * carries one request and its response, acknowledged (an idle keep-alive connection, issue 18). Heap (and ArrayBuffer) use is taken
 * after forced GCs before and after; the difference per connection is reported. Exact only
 * with `global.gc` (node --expose-gc): `runMemoryBench` starts such a child process.
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { parseConfig } from '../config/index.js';
import { Gateway } from '../engine/gateway.js';
import { DEFAULT_LIMITS } from '../stream/limits.js';
import { tcpFrame } from '../wire/tcp-frame.js';
import { parseIp } from '../wire/ip.js';

const SYN = 0x02;
const ACK = 0x10;
const PSH = 0x08;
/** One keep-alive exchange (`exchange`): what wrk asks and nginx answers. */
const REQUEST = Buffer.from('GET / HTTP/1.1\r\nHost: 10.0.0.2:8080\r\n\r\n');
const RESPONSE = Buffer.from('HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Sat, 05 Dec 2026 23:00:00 GMT\r\nContent-Type: application/octet-stream\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\nok\n');
const PORT = 8080;

const RULE = parseConfig(
  `rules:
  - match: { port: ${PORT} }
    agent: replace
    replace:
      - { find: "tapgate-bench-never-matches", with: "x" }
`,
  'bench-memory.yaml',
);

export interface MemoryResult {
  connections: number;
  rule: boolean;
  /** The connections are IPv6. */
  ipv6: boolean;
  /** Each connection also carried one request and its response, all acknowledged (keep-alive). */
  exchange: boolean;
  /** Flows in the table at the end (should equal `connections`). */
  tracked: number;
  /** Flows with a Connection (stream engine + agent) attached. */
  withEngine: number;
  /** (heapUsed + arrayBuffers) after − before, per connection. */
  bytesPerConn: number;
  heapPerConn: number;
  arrayBuffersPerConn: number;
  /** global.gc was available (figures are exact only then). */
  gc: boolean;
}

function settle(): { heap: number; ab: number } {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc !== undefined) for (let i = 0; i < 4; i++) gc();
  const m = process.memoryUsage();
  return { heap: m.heapUsed, ab: m.arrayBuffers };
}

export function measureConnMemory(opts: { connections: number; rule: boolean; ipv6?: boolean; exchange?: boolean }): MemoryResult {
  const v6 = opts.ipv6 === true;
  const n = opts.connections;
  const limits = { ...DEFAULT_LIMITS, maxConnections: Math.max(n, DEFAULT_LIMITS.maxConnections) };
  const gw = new Gateway({ config: opts.rule ? RULE : null, limits });
  const emit = (): void => {};
  // Warm-up on a throw-away gateway so code and shapes are compiled before the baseline.
  const warm = new Gateway({ config: opts.rule ? RULE : null, limits });
  const ex = opts.exchange === true;
  handshakes(warm, 200, 1, emit, v6, ex);
  const before = settle();
  handshakes(gw, n, 0, emit, v6, ex);
  const after = settle();
  let withEngine = 0;
  for (const f of gw.flows.values()) if (f.conn !== undefined && f.conn !== null) withEngine++;
  const heap = after.heap - before.heap;
  const ab = after.ab - before.ab;
  const per = (x: number) => Math.round(x / Math.max(1, n));
  const r: MemoryResult = {
    connections: n,
    rule: opts.rule,
    ipv6: v6,
    exchange: ex,
    tracked: gw.flows.size,
    withEngine,
    bytesPerConn: per(heap + ab),
    heapPerConn: per(heap),
    arrayBuffersPerConn: per(ab),
    gc: (globalThis as { gc?: unknown }).gc !== undefined,
  };
  if (warm.flows.size < 0) console.log(warm); // keep `warm` alive until after the measurement
  return r;
}

/**
 * `n` connections: client 10.1.x.y:port → server 10.0.0.2:8080 (IPv6: 2001:db8:1::x:y →
 * 2001:db8::2), full handshake each.
 */
function handshakes(gw: Gateway, n: number, net: number, emit: () => void, v6: boolean, exchange = false): void {
  const S = v6 ? (parseIp('2001:db8::2') as string) : 0x0a000002;
  let now = 1;
  for (let i = 0; i < n; i++) {
    const C = v6 ? (parseIp(`2001:db8:${1 + net}::${(i >>> 14).toString(16)}`) as string) : ((10 << 24) | ((1 + net) << 16) | ((i >>> 14) & 0xffff)) >>> 0;
    const cport = 1024 + (i & 0x3fff);
    const isnC = (i * 2654435761) >>> 0;
    const isnS = (isnC ^ 0x5a5a5a5a) >>> 0;
    const mss = [{ kind: 'mss' as const, mss: 1460 }];
    gw.handleFrame(tcpFrame({ src: C, dst: S, srcPort: cport, dstPort: PORT, seq: isnC, flags: SYN, options: mss }), 0, now, emit);
    gw.handleFrame(tcpFrame({ src: S, dst: C, srcPort: PORT, dstPort: cport, seq: isnS, ack: isnC + 1, flags: SYN | ACK, options: mss }), 1, now, emit);
    gw.handleFrame(tcpFrame({ src: C, dst: S, srcPort: cport, dstPort: PORT, seq: isnC + 1, ack: isnS + 1, flags: ACK }), 0, now, emit);
    if (exchange) {
      const q = REQUEST;
      const a = RESPONSE;
      gw.handleFrame(tcpFrame({ src: C, dst: S, srcPort: cport, dstPort: PORT, seq: isnC + 1, ack: isnS + 1, flags: ACK | PSH, payload: q }), 0, now, emit);
      gw.handleFrame(tcpFrame({ src: S, dst: C, srcPort: PORT, dstPort: cport, seq: isnS + 1, ack: isnC + 1 + q.length, flags: ACK | PSH, payload: a }), 1, now, emit);
      gw.handleFrame(tcpFrame({ src: C, dst: S, srcPort: cport, dstPort: PORT, seq: isnC + 1 + q.length, ack: isnS + 1 + a.length, flags: ACK }), 0, now, emit);
    }
    if ((i & 1023) === 1023) now += 1;
  }
}

/** Runs `measureConnMemory` in a child `node --expose-gc` (this file, from dist/). */
export function runMemoryBench(connections: number): MemoryResult[] {
  const self = fileURLToPath(import.meta.url);
  const out: MemoryResult[] = [];
  for (const [rule, v6, ex] of [[false, false, false], [true, false, false], [true, true, false], [true, false, true]] as const) {
    const r = spawnSync(process.execPath, ['--expose-gc', '--max-old-space-size=8192', self, String(connections), rule ? 'rule' : 'none', v6 ? 'ipv6' : 'ipv4', ex ? 'exchange' : 'handshake'], {
      encoding: 'utf8',
      timeout: 300_000,
    });
    if (r.status !== 0) throw new Error(`memory bench child failed (${r.status ?? r.signal}): ${r.stderr.slice(-2000)}`);
    out.push(JSON.parse(r.stdout.trim().split('\n').pop()!) as MemoryResult);
  }
  return out;
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  const n = Number(process.argv[2] ?? 100_000);
  process.stdout.write(JSON.stringify(measureConnMemory({ connections: n, rule: process.argv[3] === 'rule', ipv6: process.argv[4] === 'ipv6', exchange: process.argv[5] === 'exchange' })) + '\n');
}
