/**
 * The frame path right after the JIT warm-up (engine/warmup.ts), in process: what the first
 * download through a freshly started gateway gets, against the same download once the process is
 * warm. A fresh child process (this file, from dist/) runs the live gateway's warm-up for the HTTP
 * bench's rule (bench/http.ts: the http agent, two replacements, a match every 45 bytes), then
 * passes of one keep-alive connection's response — `mib` MiB of the dense body — as a TAP with
 * offloads hands them over (virtio header, GSO frames of 44 × 1448 bytes, partial checksums), the
 * client acknowledging what it was sent. Each pass: MB/s of original bytes. One more pass,
 * untimed, keeps what the client was sent and checks its body (de-chunked) against the rewrite.
 *
 * Why: the warm-up optimises the frame path on synthetic traffic; when the real traffic then
 * stores values of another representation into the same fields (a boxed number where a small
 * integer was), V8 throws that optimised code away at the first real frames, and the first pass
 * runs at a fraction of the warm speed (agent/replace.ts NO_POS). `first / last` shows it.
 */
import { spawnSync } from 'node:child_process';
import { pino } from 'pino';
import { fileURLToPath } from 'node:url';
import { parseConfig } from '../config/index.js';
import { Gateway } from '../engine/gateway.js';
import { warmUp } from '../engine/warmup.js';
import { decodeFrame } from '../wire/frame.js';
import { TCP_ACK, TCP_PSH, TCP_SYN, type TcpOption } from '../wire/tcp.js';
import { tcpFrame, type TcpFrameSpec } from '../wire/tcp-frame.js';
import { VIRTIO_NET_HDR_LEN } from '../wire/virtio.js';
import { makeBody, rewriteBody, tapgateHttpYaml } from './http.js';

const WARM_JS = fileURLToPath(new URL('../../dist/bench/warm.js', import.meta.url));
const MSS = 1448;
/** Original bytes per GSO frame. */
const SEG = MSS * 44;
const C = 0x0a000001;
const S = 0x0a000002;
const PORT = 80;
/** What the optimising compiler is given after the warm-up (it compiles on other threads). */
const SETTLE_MS = 300;

export interface WarmResult {
  mib: number;
  /** MB/s of original bytes per pass, the first right after the warm-up. */
  passes: number[];
  warmupMs: number;
}

/** Runs the passes in a fresh child process (the JIT state is per process). */
export function runWarmBench(opts: { mib?: number; passes?: number } = {}): WarmResult {
  const mib = opts.mib ?? 50;
  const passes = opts.passes ?? 3;
  const r = spawnSync(process.execPath, [WARM_JS, String(mib), String(passes)], { encoding: 'utf8', timeout: 300_000 });
  if (r.status !== 0) throw new Error(`warm bench child failed (${r.status ?? r.signal}): ${r.stderr.slice(-2000)}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as WarmResult;
}

/**
 * The passes themselves (in this process: call it from a fresh one). After the warm-up the
 * optimising compiler is given SETTLE_MS to finish (a live gateway's first download usually comes
 * after it; frames queued during the warm-up would not wait). Only the untimed last pass's body is
 * checked. `mark` is told when the warm-up is done and when each pass is
 * (test/engine/warmup.test.ts traces V8 between them).
 */
export async function measureWarm(mib: number, passes: number, mark?: (what: 'warm' | 'pass') => void): Promise<WarmResult> {
  const cfg = parseConfig(tapgateHttpYaml(PORT), 'bench-warm.yaml');
  // As the live gateway (engine/live.ts): built first, with its options and a logger, then warmed.
  const log = pino({ level: 'silent' });
  const gw = new Gateway({ config: cfg, vnetHdr: true, verifyChecksums: true, batched: true, sided: true, log: log.child({ mod: 'gateway' }) });
  const w = warmUp({ config: cfg, vnetHdr: true, log });
  await new Promise((r) => setTimeout(r, SETTLE_MS));
  mark?.('warm');
  let now = 1;
  let ts = 0xa0000000;
  let seqC = 0xf1234567;
  let seqS = 0x91234567;
  let acked = 0;
  const stamps = (): TcpOption[] => [{ kind: 'nop' }, { kind: 'nop' }, { kind: 'timestamps', tsval: ts++ >>> 0, tsecr: ts >>> 0 }];
  // As a TAP with offloads hands over what local stacks send: GSO frames, and every other
  // segment with a partial checksum (NEEDS_CSUM).
  const frame = (s: Omit<TcpFrameSpec, 'src' | 'dst' | 'srcPort' | 'dstPort'>, toServer: boolean, gso = false): Uint8Array =>
    tcpFrame({
      src: toServer ? C : S, dst: toServer ? S : C, srcPort: toServer ? 40000 : PORT, dstPort: toServer ? PORT : 40000,
      options: stamps(), window: 502, ...s, headroom: VIRTIO_NET_HDR_LEN, ...(gso ? { gsoSize: MSS } : { needsCsum: true }),
    });
  let kept: Buffer[] | null = null;
  // `last`: the batch ends with this frame (a TAP read hands a download's frames over in batches).
  const send = (f: Uint8Array, from: 0 | 1, last = true): void => {
    gw.handleFrame(f, from, (now += 0.01), (out, to) => {
      if (to !== 0) return;
      const e = out.subarray(VIRTIO_NET_HDR_LEN);
      const d = decodeFrame(e, { link: 'ethernet', verifyChecksums: false });
      if (d.kind !== 'tcp' || d.payloadLen === 0) return;
      const end = (d.tcp.seq + d.payloadLen) >>> 0;
      if (((end - acked) | 0) <= 0) return; // a retransmission
      kept?.push(Buffer.from(e.subarray(d.payloadOff, d.payloadOff + d.payloadLen)));
      acked = end;
    });
    if (last) gw.endBatch();
  };
  const synOpts: TcpOption[] = [{ kind: 'mss', mss: MSS + 12 }, { kind: 'sack-permitted' }, { kind: 'timestamps', tsval: ts++, tsecr: 0 }, { kind: 'nop' }, { kind: 'wscale', shift: 7 }];
  send(frame({ seq: seqC, flags: TCP_SYN, options: synOpts, window: 64240 }, true), 0);
  send(frame({ seq: seqS, ack: (seqC + 1) >>> 0, flags: TCP_SYN | TCP_ACK, options: synOpts, window: 64240 }, false), 1);
  seqC = (seqC + 1) >>> 0;
  seqS = (seqS + 1) >>> 0;
  acked = seqS;
  send(frame({ seq: seqC, ack: seqS, flags: TCP_ACK }, true), 0);

  const body = makeBody(mib * 1024 * 1024);
  const head = Buffer.from(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\nContent-Type: text/plain\r\n\r\n`, 'latin1');
  const response = Buffer.concat([head, body]);
  const rates: number[] = [];
  for (let p = 0; p <= passes; p++) {
    // The last pass is the check: untimed, what the client was sent kept.
    if (p === passes) kept = [];
    // curl's request (the live bench's client), which the rule's agent rewrites (its length
    // changes: the server's ACKs are translated in every frame of the answer).
    const req = Buffer.from('GET /big HTTP/1.1\r\nHost: 10.200.0.2:8080\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n', 'latin1');
    send(frame({ seq: seqC, ack: acked, flags: TCP_ACK | TCP_PSH, payload: req }, true), 0);
    seqC = (seqC + req.length) >>> 0;
    const frames: Uint8Array[] = [];
    for (let o = 0; o < response.length; o += SEG) {
      frames.push(frame({ seq: (seqS + o) >>> 0, ack: seqC, flags: TCP_ACK, payload: response.subarray(o, Math.min(response.length, o + SEG)) }, false, true));
    }
    seqS = (seqS + response.length) >>> 0;
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < frames.length; i++) {
      // Two frames to a batch: a split segment's last piece is joined to the next (engine/emit.ts).
      send(frames[i]!, 1, i % 2 === 1 || i === frames.length - 1);
      // A receive window as Linux autotunes it for a download (65535 << 7: 8 MiB), more than the
      // stores keep: the gateway clamps it (Connection.translate).
      if (i % 2 === 1 || i === frames.length - 1) send(frame({ seq: seqC, ack: acked, flags: TCP_ACK, window: 65535 }, true), 0);
    }
    if (p < passes) rates.push(response.length / 1e6 / (Number(process.hrtime.bigint() - t0) / 1e9));
    mark?.('pass');
  }
  const got = bodyOf(Buffer.concat(kept!));
  if (!got.equals(rewriteBody(body))) throw new Error(`warm bench: the body the client was sent (${got.length} bytes) is not the rewrite (${rewriteBody(body).length})`);
  return { mib, passes: rates, warmupMs: w.ms };
}

/** The body of one HTTP/1.1 response: Content-Length or chunked (no trailers, no extensions). */
function bodyOf(res: Buffer): Buffer {
  const end = res.indexOf('\r\n\r\n');
  if (end < 0) throw new Error('warm bench: no header section in the response');
  const headers = res.subarray(0, end).toString('latin1').toLowerCase();
  let at = end + 4;
  if (!/\r\ntransfer-encoding: *chunked/.test(headers)) {
    const cl = /\r\ncontent-length: *(\d+)/.exec(headers);
    if (cl === null) throw new Error('warm bench: a response neither chunked nor with a Content-Length');
    return res.subarray(at, at + Number(cl[1]));
  }
  const parts: Buffer[] = [];
  for (;;) {
    const eol = res.indexOf('\r\n', at);
    const n = parseInt(res.subarray(at, eol).toString('latin1'), 16);
    if (!(n >= 0) || eol < 0) throw new Error(`warm bench: a bad chunk size at ${at}`);
    if (n === 0) return Buffer.concat(parts);
    parts.push(res.subarray(eol + 2, eol + 2 + n));
    at = eol + 2 + n + 2;
  }
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  process.stdout.write(JSON.stringify(await measureWarm(Number(process.argv[2] ?? 50), Number(process.argv[3] ?? 3))) + '\n');
}
