/**
 * StreamRecorder against tshark's `follow,tcp,raw` on every Ethernet / raw-IPv4 fixture, plus
 * synthetic captures (hand-built frames, written as raw-IPv4 pcap so tshark can judge them too)
 * for reordering, overlaps, the 2^32 wrap, 4-tuple reuse and mid-stream pickup. The cases where
 * the recorder deliberately differs from tshark pin both sides of the difference.
 */
import { gatewayLink, isGatewayLink } from '../../src/phy/capture-fixup.js';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { recordStreams, StreamRecorder, type RecordedStream } from '../../src/flow/recorder.js';
import { encodePcapHeader, encodePcapRecord, readPcapAll } from '../../src/phy/pcap.js';
import { IP_PROTO_TCP, Ipv4Repr } from '../../src/wire/ipv4.js';
import { TcpFlag, TcpRepr } from '../../src/wire/tcp.js';
import { requireTool, tsharkFollowTcp, tsharkStreamCount } from '../helpers/tshark.js';

const FIXTURES = fileURLToPath(new URL('../fixtures/', import.meta.url));
const fx = (name: string): string => join(FIXTURES, name);

/** Every Ethernet / raw-IPv4 fixture (any-sll2.pcap is LINUX_SLL2: replay converts it first, test/cli/replay.test.ts). */
const CAPTURES = [
  'http-small.pcap',
  'http-small.pcapng',
  'http-small-nano.pcap',
  'http-loss.pcap',
  'http-loss-holes.pcap',
  'http-dumpcap.pcapng',
];

let tmp: string;
beforeAll(() => {
  requireTool('tshark');
  tmp = mkdtempSync(join(tmpdir(), 'tapgate-recorder-'));
});
afterAll(() => {
  rmSync(tmp, { recursive: true, force: true });
});

async function recordFile(path: string): Promise<{ streams: RecordedStream[]; counters: Record<string, number> }> {
  const { records, error } = await readPcapAll(path);
  expect(error).toBeUndefined();
  const r = await recordStreams(records.map((x) => {
    if (!isGatewayLink(x.link)) throw new Error(`fixture link ${x.link}: Ethernet or raw IP expected`);
    return { data: x.data, link: x.link };
  }));
  return { streams: r.streams, counters: { ...r.counters } };
}

/** Both directions of every tshark stream, byte-exact, with the same client and server. */
async function expectTsharkParity(path: string, streams: RecordedStream[]): Promise<void> {
  const n = await tsharkStreamCount(path);
  expect(streams.length).toBe(n);
  for (let i = 0; i < n; i++) {
    const t = await tsharkFollowTcp(path, i);
    const s = streams[i]!;
    expect({ i, client: s.client, server: s.server }).toEqual({ i, client: t.client, server: t.server });
    expect(s.c2s.equals(t.c2s), `${path} stream ${i} c2s (${s.c2s.length} vs ${t.c2s.length})`).toBe(true);
    expect(s.s2c.equals(t.s2c), `${path} stream ${i} s2c (${s.s2c.length} vs ${t.s2c.length})`).toBe(true);
  }
}

describe('StreamRecorder: byte-exact with tshark follow on the fixtures', () => {
  for (const name of CAPTURES) {
    it(`${name}: every stream, both directions`, async () => {
      const { streams, counters } = await recordFile(fx(name));
      expect(streams.length).toBeGreaterThan(0);
      expect(counters.malformed).toBe(0);
      expect(counters.gapBytes).toBe(0);
      await expectTsharkParity(fx(name), streams);
      for (const s of streams) expect(s.end).toBe('fin');
    });
  }

  it('http-loss.pcap: retransmissions are delivered once, 112000 bytes', async () => {
    const { streams, counters } = await recordFile(fx('http-loss.pcap'));
    expect(streams).toHaveLength(1);
    const body = streams[0]!.s2c.toString('latin1');
    expect(body.length).toBeGreaterThan(112_000); // headers + the 112000-byte body
    expect(body).toContain('line 00001 the quick brown fox');
    expect(body).toContain('line 01600 ');
    expect(counters.duplicateBytes).toBe(4 * 1448); // the four retransmissions tshark reports
    expect([counters.gaps, counters.afterFinBytes]).toEqual([0, 0]);
  });

  it('http-loss-holes.pcap: holes filled by later retransmissions, a swapped pair: same stream as http-loss', async () => {
    const holes = await recordFile(fx('http-loss-holes.pcap'));
    const full = await recordFile(fx('http-loss.pcap'));
    expect(holes.counters.outOfOrderSegments).toBeGreaterThanOrEqual(3);
    expect(holes.counters.gaps).toBe(0);
    expect(holes.streams[0]!.s2c.equals(full.streams[0]!.s2c)).toBe(true);
    expect(holes.streams[0]!.c2s.equals(full.streams[0]!.c2s)).toBe(true);
  });

  it('http-small.pcap to files: the reused 4-tuple gets .1 files; one fd at a time still works', async () => {
    const dir = join(tmp, 'small');
    const { records } = await readPcapAll(fx('http-small.pcap'));
    const r = new StreamRecorder({ dir, maxOpenFiles: 1 });
    for (const rec of records) r.feed(rec.data, gatewayLink(rec.link));
    const res = await r.close();
    expect(res.connections).toBe(5);
    expect(res.files).toHaveLength(10);
    const names = readdirSync(dir).sort();
    expect(names).toHaveLength(10);
    const reused = names.filter((f) => f.includes('.40123-'));
    expect(reused).toEqual([
      '10.199.0.2.40123-10.199.0.1.8000.1.c2s',
      '10.199.0.2.40123-10.199.0.1.8000.1.s2c',
      '10.199.0.2.40123-10.199.0.1.8000.c2s',
      '10.199.0.2.40123-10.199.0.1.8000.s2c',
    ]);
    const n = await tsharkStreamCount(fx('http-small.pcap'));
    const seen = new Map<string, number>();
    for (let i = 0; i < n; i++) {
      const t = await tsharkFollowTcp(fx('http-small.pcap'), i);
      const base = `${t.client.replace(':', '.')}-${t.server.replace(':', '.')}`;
      const k = seen.get(base) ?? 0;
      seen.set(base, k + 1);
      const id = k === 0 ? base : `${base}.${k}`;
      expect(readFileSync(join(dir, `${id}.c2s`)).equals(t.c2s)).toBe(true);
      expect(readFileSync(join(dir, `${id}.s2c`)).equals(t.s2c)).toBe(true);
    }
  });

  it('files closed for the fd limit are reopened in append mode', async () => {
    const dir = join(tmp, 'pingpong');
    const r = new StreamRecorder({ dir, maxOpenFiles: 1 });
    const segs: Seg[] = [...handshake(1000, 5000)];
    for (let i = 0; i < 4; i++) {
      segs.push({ c2s: true, seq: 1001 + 3 * i, ack: 5001 + 3 * i, flags: ACK, data: `c${i};` });
      segs.push({ c2s: false, seq: 5001 + 3 * i, ack: 1004 + 3 * i, flags: ACK, data: `s${i};` });
    }
    for (const s of segs) r.feed(frame(s), 'raw-ipv4');
    const res = await r.close();
    expect(res.counters.fileReopens).toBe(6); // every write but the first of each file
    expect(readFileSync(join(dir, '10.0.0.1.40000-10.0.0.2.80.c2s'), 'latin1')).toBe('c0;c1;c2;c3;');
    expect(readFileSync(join(dir, '10.0.0.1.40000-10.0.0.2.80.s2c'), 'latin1')).toBe('s0;s1;s2;s3;');
  });
});

// ---------------------------------------------------------------------------------------------
// Synthetic captures

const C = 0x0a000001; // 10.0.0.1
const S = 0x0a000002; // 10.0.0.2
const { SYN, ACK, FIN, RST } = TcpFlag;

interface Seg {
  c2s: boolean;
  seq: number;
  ack?: number;
  flags: number;
  data?: string;
  cport?: number;
}

function frame(s: Seg): Uint8Array {
  const cport = s.cport ?? 40000;
  const t = new TcpRepr({
    srcPort: s.c2s ? cport : 80,
    dstPort: s.c2s ? 80 : cport,
    seq: s.seq >>> 0,
    ack: (s.ack ?? 0) >>> 0,
    flags: s.flags,
    window: 65535,
    payload: Buffer.from(s.data ?? '', 'latin1'),
  });
  const ip = new Ipv4Repr({ src: s.c2s ? C : S, dst: s.c2s ? S : C, protocol: IP_PROTO_TCP, payloadLen: t.bufferLen() });
  const b = new Uint8Array(ip.bufferLen() + t.bufferLen());
  ip.emit(b);
  t.emit(b.subarray(ip.bufferLen()), ip.src, ip.dst);
  return b;
}

let pcapNo = 0;
/** Writes the segments as a raw-IPv4 pcap (for tshark) and records them (for us). */
async function synth(segs: Seg[]): Promise<{ path: string; streams: RecordedStream[]; counters: Record<string, number> }> {
  const frames = segs.map(frame);
  const path = join(tmp, `synth-${pcapNo++}.pcap`);
  const parts = [encodePcapHeader({ link: 'raw-ipv4' })];
  frames.forEach((f, i) => parts.push(encodePcapRecord({ data: f, tsNs: BigInt(i + 1) * 1_000_000n }, { link: 'raw-ipv4' })));
  writeFileSync(path, Buffer.concat(parts));
  const r = await recordStreams(frames.map((data) => ({ data, link: 'raw-ipv4' as const })));
  return { path, streams: r.streams, counters: { ...r.counters } };
}

/** SYN, SYN-ACK, ACK with client ISN `ci` and server ISN `si`. */
function handshake(ci: number, si: number, cport?: number): Seg[] {
  const p = cport === undefined ? {} : { cport };
  return [
    { c2s: true, seq: ci, flags: SYN, ...p },
    { c2s: false, seq: si, ack: ci + 1, flags: SYN | ACK, ...p },
    { c2s: true, seq: ci + 1, ack: si + 1, flags: ACK, ...p },
  ];
}

/** Raw tshark follow (Node 0 first), for captures tsharkFollowTcp rejects (no SYN). */
async function tsharkNodes(path: string): Promise<{ node0: string; n0: Buffer; n1: Buffer }> {
  const { stdout } = await promisify(execFile)('tshark', ['-r', path, '-q', '-z', 'follow,tcp,raw,0'], { encoding: 'utf8' });
  let node0 = '';
  const n0: Buffer[] = [];
  const n1: Buffer[] = [];
  for (const line of stdout.split('\n')) {
    if (line.startsWith('Node 0: ')) node0 = line.slice(8).trim();
    else if (/^\t[0-9a-f]+$/.test(line)) n1.push(Buffer.from(line.slice(1), 'hex'));
    else if (/^[0-9a-f]+$/.test(line)) n0.push(Buffer.from(line, 'hex'));
  }
  return { node0, n0: Buffer.concat(n0), n1: Buffer.concat(n1) };
}

describe('StreamRecorder: synthetic cases', () => {
  it('a segment arriving before the one before it is buffered and put in order', async () => {
    const { path, streams, counters } = await synth([
      ...handshake(1000, 5000),
      { c2s: true, seq: 1011, ack: 5001, flags: ACK, data: 'second....' },
      { c2s: true, seq: 1001, ack: 5001, flags: ACK, data: 'first.....' },
      { c2s: false, seq: 5001, ack: 1021, flags: ACK, data: 'reply' },
      { c2s: true, seq: 1021, ack: 5006, flags: FIN | ACK },
      { c2s: false, seq: 5006, ack: 1022, flags: FIN | ACK },
    ]);
    expect(streams[0]!.c2s.toString()).toBe('first.....second....');
    expect(streams[0]!.s2c.toString()).toBe('reply');
    expect(streams[0]!.end).toBe('fin');
    expect(counters.gaps).toBe(0);
    await expectTsharkParity(path, streams);
  });

  it('a retransmission overlapping delivered data with different bytes: the first copy wins', async () => {
    const { path, streams, counters } = await synth([
      ...handshake(1000, 5000),
      { c2s: true, seq: 1001, ack: 5001, flags: ACK, data: 'abcdef' },
      { c2s: true, seq: 1001, ack: 5001, flags: ACK, data: 'XYZXYZXYZ' },
      { c2s: false, seq: 5001, ack: 1010, flags: ACK, data: 'ok' },
    ]);
    expect(streams[0]!.c2s.toString()).toBe('abcdefXYZ');
    expect(counters.duplicateBytes).toBe(6);
    await expectTsharkParity(path, streams);
  });

  it('overlapping out-of-order copies: first copy seen wins per byte (tshark: first delivered wins)', async () => {
    const { path, streams } = await synth([
      ...handshake(1000, 5000),
      { c2s: true, seq: 1005, ack: 5001, flags: ACK, data: 'aaaaaaaaaa' }, // [4, 14)
      { c2s: true, seq: 1001, ack: 5001, flags: ACK, data: 'bbbbbbbbbb' }, // [0, 10)
    ]);
    expect(streams[0]!.c2s.toString()).toBe('bbbbaaaaaaaaaa');
    const t = await tsharkFollowTcp(path, 0);
    expect(t.c2s.toString()).toBe('bbbbbbbbbbaaaa'); // tshark takes the chunk that fits first
  });

  it('sequence numbers wrap across 2^32 (client ISN 0xfffffff0), reordered across the wrap', async () => {
    const isn = 0xfffffff0;
    const { path, streams } = await synth([
      ...handshake(isn, 0xffffffff),
      { c2s: true, seq: isn + 1 + 20, ack: 0, flags: ACK, data: 'CCCCCCCCCC' }, // seq 0x5: past the wrap
      { c2s: true, seq: isn + 1, ack: 0, flags: ACK, data: 'AAAAAAAAAA' }, // 0xfffffff1
      { c2s: true, seq: isn + 1 + 10, ack: 0, flags: ACK, data: 'BBBBBBBBBB' }, // 0xfffffffb, crosses 0
      { c2s: false, seq: 0, ack: isn + 31, flags: ACK, data: 'server-after-wrap' }, // server ISN 2^32-1
      { c2s: true, seq: isn + 31, ack: 17, flags: FIN | ACK },
      { c2s: false, seq: 17, ack: isn + 32, flags: FIN | ACK },
    ]);
    expect(streams[0]!.c2s.toString()).toBe('AAAAAAAAAABBBBBBBBBBCCCCCCCCCC');
    expect(streams[0]!.s2c.toString()).toBe('server-after-wrap');
    expect(streams[0]!.end).toBe('fin');
    await expectTsharkParity(path, streams);
  });

  it('a repeated 4-tuple starts new connections: .1 then .2 files; a retransmitted SYN does not', async () => {
    const conn = (ci: number, si: number, msg: string): Seg[] => [
      ...handshake(ci, si),
      { c2s: true, seq: ci, flags: SYN }, // retransmitted SYN: same connection
      { c2s: true, seq: ci + 1, ack: si + 1, flags: ACK, data: msg },
      { c2s: false, seq: si + 1, ack: ci + 1 + msg.length, flags: ACK, data: msg.toUpperCase() },
      { c2s: true, seq: ci + 1 + msg.length, ack: si + 1 + msg.length, flags: FIN | ACK },
      { c2s: false, seq: si + 1 + msg.length, ack: ci + 2 + msg.length, flags: FIN | ACK },
      { c2s: true, seq: ci + 2 + msg.length, ack: si + 2 + msg.length, flags: ACK }, // final ACK
    ];
    const segs = [...conn(100, 9000, 'one'), ...conn(200_000, 9999, 'two'), ...conn(300_000, 70_000, 'three')];
    const { path, streams } = await synth(segs);
    expect(streams.map((s) => s.id)).toEqual([
      '10.0.0.1.40000-10.0.0.2.80',
      '10.0.0.1.40000-10.0.0.2.80.1',
      '10.0.0.1.40000-10.0.0.2.80.2',
    ]);
    expect(streams.map((s) => `${s.c2s}/${s.s2c}`)).toEqual(['one/ONE', 'two/TWO', 'three/THREE']);
    await expectTsharkParity(path, streams);

    const dir = join(tmp, 'reuse');
    const r = new StreamRecorder({ dir });
    for (const s of segs) r.feed(frame(s), 'raw-ipv4');
    const res = await r.close();
    expect(res.connections).toBe(3);
    expect(readdirSync(dir).sort()).toEqual([
      '10.0.0.1.40000-10.0.0.2.80.1.c2s',
      '10.0.0.1.40000-10.0.0.2.80.1.s2c',
      '10.0.0.1.40000-10.0.0.2.80.2.c2s',
      '10.0.0.1.40000-10.0.0.2.80.2.s2c',
      '10.0.0.1.40000-10.0.0.2.80.c2s',
      '10.0.0.1.40000-10.0.0.2.80.s2c',
    ]);
    expect(readFileSync(join(dir, '10.0.0.1.40000-10.0.0.2.80.1.c2s'), 'latin1')).toBe('two');
    expect(readFileSync(join(dir, '10.0.0.1.40000-10.0.0.2.80.2.s2c'), 'latin1')).toBe('THREE');
    expect(res.counters.afterEndSegments).toBe(3); // the final ACKs
  });

  it('a mid-stream connection: each direction starts at its first sequence number, client = first sender (tshark Node 0)', async () => {
    const { path, streams, counters } = await synth([
      { c2s: false, seq: 900, ack: 200, flags: ACK, data: 'srv' },
      { c2s: true, seq: 200, ack: 903, flags: ACK, data: 'later' },
      { c2s: true, seq: 190, ack: 903, flags: ACK, data: '0123456789' }, // before the start: dropped
      { c2s: true, seq: 205, ack: 903, flags: ACK, data: 'MORE' },
    ]);
    expect(streams).toHaveLength(1);
    const s = streams[0]!;
    expect(s.client).toBe('10.0.0.2:80'); // the first segment's sender, as tshark's Node 0
    expect(s.c2s.toString()).toBe('srv');
    expect(s.s2c.toString()).toBe('laterMORE');
    expect(counters.duplicateBytes).toBe(10);
    const t = await tsharkNodes(path);
    expect(t.node0).toBe(s.client);
    expect([t.n0.toString(), t.n1.toString()]).toEqual([s.c2s.toString(), s.s2c.toString()]);
  });

  it('a gap the peer ACKs past is skipped and counted (tshark inserts a text marker instead)', async () => {
    const { path, streams, counters } = await synth([
      ...handshake(1000, 5000),
      { c2s: true, seq: 1001, ack: 5001, flags: ACK, data: 'AAAA' },
      { c2s: true, seq: 1009, ack: 5001, flags: ACK, data: 'CCCC' }, // [4, 8) never seen
      { c2s: false, seq: 5001, ack: 1013, flags: ACK, data: 'x' },
      { c2s: true, seq: 1013, ack: 5002, flags: ACK, data: 'DD' },
    ]);
    expect(streams[0]!.c2s.toString()).toBe('AAAACCCCDD');
    expect(streams[0]!.gapBytes).toEqual({ c2s: 4, s2c: 0 });
    expect([counters.gaps, counters.gapsAcked, counters.gapBytes]).toEqual([1, 1, 4]);
    const t = await tsharkFollowTcp(path, 0);
    expect(t.c2s.toString('latin1')).toBe('AAAA[4 bytes missing in capture file]\0CCCCDD');
  });

  it('data after a gap never filled nor ACKed is flushed at close and counted (tshark drops it)', async () => {
    const { path, streams, counters } = await synth([
      ...handshake(1000, 5000),
      { c2s: true, seq: 1001, ack: 5001, flags: ACK, data: 'AAAA' },
      { c2s: true, seq: 1009, ack: 5001, flags: ACK, data: 'CCCC' },
      { c2s: false, seq: 5001, ack: 1005, flags: ACK, data: 'x' },
    ]);
    expect(streams[0]!.c2s.toString()).toBe('AAAACCCC');
    expect(streams[0]!.end).toBe('open');
    expect([counters.gaps, counters.gapsAtEnd, counters.gapBytes]).toEqual([1, 1, 4]);
    expect((await tsharkFollowTcp(path, 0)).c2s.toString()).toBe('AAAA');
  });

  it('the out-of-order buffer limit gives up the gap and counts it; a late fill is a duplicate', async () => {
    const segs: Seg[] = [...handshake(1000, 5000), { c2s: true, seq: 1001, ack: 5001, flags: ACK, data: 'A'.repeat(10) }];
    for (let i = 0; i < 5; i++) segs.push({ c2s: true, seq: 1021 + 10 * i, ack: 5001, flags: ACK, data: String(i).repeat(10) });
    segs.push({ c2s: true, seq: 1011, ack: 5001, flags: ACK, data: 'B'.repeat(10) }); // the late fill
    const r = await recordStreams(
      segs.map((s) => ({ data: frame(s), link: 'raw-ipv4' as const })),
      { maxBufferedBytes: 35 },
    );
    const c2s = r.streams[0]!.c2s.toString();
    expect(c2s).toBe('A'.repeat(10) + '0000000000111111111122222222223333333333' + '4444444444');
    expect(r.counters.oooLimitHits).toBe(1);
    expect(r.counters.gapBytes).toBe(10);
    expect(r.counters.duplicateBytes).toBe(10);
  });

  it('out-of-order pieces are bounded in number too: 1-byte segments sent in every other order give gaps up past MAX_OOO_CHUNKS, counted', async () => {
    // 10,000 one-byte segments after a hole, every other one first: 10,000 pieces of 1 byte.
    const segs: Seg[] = [...handshake(1000, 5000)];
    const n = 10_000;
    for (let i = 0; i < n; i += 2) segs.push({ c2s: true, seq: 1002 + i, ack: 5001, flags: ACK, data: 'x' });
    for (let i = 1; i < n; i += 2) segs.push({ c2s: true, seq: 1002 + i, ack: 5001, flags: ACK, data: 'y' });
    const r = await recordStreams(segs.map((s) => ({ data: frame(s), link: 'raw-ipv4' as const })));
    expect(r.counters.oooLimitHits).toBeGreaterThan(0);
    // Every byte is delivered once: what a gap given up skipped comes as a duplicate later.
    expect(r.streams[0]!.c2s.length + r.counters.duplicateBytes).toBe(n);
    expect(r.counters.gapBytes).toBeGreaterThan(0);
  });

  it('FIN ends a direction, RST ends the connection; neither post-FIN data nor RST text is stream data', async () => {
    const { path, streams, counters } = await synth([
      ...handshake(1000, 5000),
      { c2s: true, seq: 1001, ack: 5001, flags: FIN | ACK, data: 'ab' },
      { c2s: true, seq: 1004, ack: 5001, flags: ACK, data: 'after' },
      { c2s: false, seq: 5001, ack: 1004, flags: RST | ACK, data: 'rstdata' },
      { c2s: false, seq: 5008, ack: 1004, flags: ACK, data: 'late' },
    ]);
    expect(streams[0]!.c2s.toString()).toBe('ab');
    expect(streams[0]!.s2c.toString()).toBe('');
    expect(streams[0]!.end).toBe('rst');
    expect([counters.afterFinBytes, counters.rstDataBytes, counters.afterEndSegments]).toEqual([5, 7, 1]);
    const t = await tsharkFollowTcp(path, 0);
    expect([t.c2s.toString(), t.s2c.toString()]).toEqual(['ab', 'rstdatalate']);
  });

  it('non-TCP and malformed frames are ignored and counted', async () => {
    const good = frame({ c2s: true, seq: 1, flags: SYN });
    const udp = good.slice();
    udp[9] = 17;
    const r = await recordStreams([
      { data: udp, link: 'raw-ipv4' },
      { data: good.subarray(0, 30), link: 'raw-ipv4' },
      { data: new Uint8Array([0x60, 0, 0, 0]), link: 'raw-ipv4' },
      { data: good.subarray(0, 10), link: 'ethernet' },
    ]);
    // The 4-byte "IPv6 packet" is malformed: the recorder decodes IPv6 (a truncated header is an error).
    expect([r.counters.frames, r.counters.nonTcp, r.counters.malformed, r.connections]).toEqual([4, 1, 3, 0]);
  });
});
