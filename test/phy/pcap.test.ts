/**
 * pcap / pcapng reader and writer, checked against real captures (test/fixtures, made by
 * scripts/make-fixtures.sh) and against tshark as an independent oracle.
 */
import { gatewayLink } from '../../src/phy/capture-fixup.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';

import {
  PcapFormatError,
  PcapReader,
  PcapWriter,
  encodePcapHeader,
  encodePcapRecord,
  readPcap,
  readPcapAll,
  type PcapItem,
  type PcapReadAllResult,
  type PcapRecord,
} from '../../src/phy/pcap.js';
import {
  requireTool,
  tsharkFields,
  tsharkFollowTcp,
  tsharkFrameCount,
  tsharkStreamCount,
} from '../helpers/tshark.js';
import * as B from './capture-builders.js';

const FIXTURES = fileURLToPath(new URL('../fixtures/', import.meta.url));
const fx = (name: string): string => join(FIXTURES, name);

/** Fixtures the reader must read completely. */
const READABLE = ['http-small.pcap', 'http-small-nano.pcap', 'http-small.pcapng', 'http-dumpcap.pcapng', 'http-loss.pcap'];

let tmp: string;
beforeAll(() => {
  requireTool('tshark');
  requireTool('editcap');
  tmp = mkdtempSync(join(tmpdir(), 'tapgate-pcap-'));
});
afterAll(() => {
  rmSync(tmp, { recursive: true, force: true });
});

/** The bytes as a stream of chunks of the given sizes (cycled). */
function chunked(bytes: Uint8Array, sizes: number[]): AsyncIterable<Uint8Array> {
  return {
    async *[Symbol.asyncIterator]() {
      let p = 0;
      let i = 0;
      while (p < bytes.byteLength) {
        const n = Math.max(1, sizes[i++ % sizes.length]);
        yield bytes.subarray(p, p + n);
        p += n;
      }
    },
  };
}

function oneChunk(bytes: Uint8Array): AsyncIterable<Uint8Array> {
  return chunked(bytes, [bytes.byteLength || 1]);
}

/** Read without ever letting an exception escape unnoticed: a throw fails the test. */
async function readBytes(bytes: Uint8Array, sizes?: number[]): Promise<PcapReadAllResult> {
  return readPcapAll(sizes === undefined ? oneChunk(bytes) : chunked(bytes, sizes));
}

function frameView(r: PcapRecord): { data: string; origLen: number; tsNs: bigint; link: string } {
  return { data: Buffer.from(r.data).toString('hex'), origLen: r.origLen, tsNs: r.tsNs, link: r.link };
}

/** tshark's epoch time "1795471125.127422000" as ns. */
function epochNs(s: string): bigint {
  const [sec, frac = ''] = s.split('.');
  return BigInt(sec) * 1_000_000_000n + BigInt((frac + '000000000').slice(0, 9));
}

/** Ends of every pcapng block (little-endian files only), i.e. the clean cut points. */
function pcapngBlockEnds(bytes: Uint8Array): number[] {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const ends: number[] = [];
  for (let p = 0; p < bytes.byteLength; ) {
    p += v.getUint32(p + 4, true);
    ends.push(p);
  }
  return ends;
}

describe('real fixtures', () => {
  it.each(READABLE)('%s: every frame is read, the count and timestamps equal tshark\'s', async (name) => {
    const res = await readPcapAll(fx(name));
    expect(res.error).toBeUndefined();
    const rows = await tsharkFields(fx(name), ['frame.time_epoch', 'frame.len', 'frame.cap_len', 'frame.interface_id']);
    expect(res.records.length).toBe(rows.length);
    expect(res.records.length).toBeGreaterThan(10);
    expect(res.stats.records).toBe(rows.length);
    expect(res.stats.bytes).toBe(readFileSync(fx(name)).byteLength);
    res.records.forEach((r, i) => {
      const [ts, len, caplen, ifId] = rows[i];
      expect(r.tsNs).toBe(epochNs(ts));
      expect(r.origLen).toBe(Number(len));
      expect(r.data.byteLength).toBe(Number(caplen));
      expect(r.interfaceId).toBe(ifId === '' ? 0 : Number(ifId));
      expect(r.link).toBe('ethernet');
    });
  });

  it('http-small.pcap: 5 TCP connections, two of them on the same 4-tuple (port reuse)', async () => {
    const { records } = await readPcapAll(fx('http-small.pcap'));
    expect(await tsharkStreamCount(fx('http-small.pcap'))).toBe(5);
    const syns = records.filter((r) => (B.tcpFlags(r.data) & 0x12) === 0x02).map((r) => B.tcpTuple(r.data, gatewayLink(r.link)));
    expect(syns).toHaveLength(5);
    expect(new Set(syns).size).toBe(4);
    expect(syns.filter((t) => t === '10.199.0.2:40123>10.199.0.1:8000')).toHaveLength(2);
  });

  it('http-loss.pcap really has retransmissions and out-of-order segments', async () => {
    expect(await tsharkFrameCount(fx('http-loss.pcap'), 'tcp.analysis.retransmission')).toBeGreaterThanOrEqual(1);
    expect(await tsharkFrameCount(fx('http-loss.pcap'), 'tcp.analysis.out_of_order')).toBeGreaterThanOrEqual(1);
    // Frames are MTU-sized (offloads were off): nothing above 1514 bytes, and full-size segments exist.
    const { records } = await readPcapAll(fx('http-loss.pcap'));
    const max = Math.max(...records.map((r) => r.data.byteLength));
    expect(max).toBe(1514);
  });

  it('pcapng and pcap of the same capture give identical records', async () => {
    const a = await readPcapAll(fx('http-small.pcap'));
    const b = await readPcapAll(fx('http-small.pcapng'));
    expect(b.stats.format).toBe('pcapng');
    expect(a.stats.format).toBe('pcap');
    expect(b.records.map(frameView)).toEqual(a.records.map(frameView));
  });

  it('nanosecond and microsecond captures of the same traffic: same frames, nearly the same times', async () => {
    const micro = await readPcapAll(fx('http-small.pcap'));
    const nano = await readPcapAll(fx('http-small-nano.pcap'));
    expect(micro.stats.precision).toBe('micro');
    expect(nano.stats.precision).toBe('nano');
    expect(nano.records.length).toBe(micro.records.length);
    nano.records.forEach((r, i) => {
      const m = micro.records[i];
      expect(Buffer.from(r.data).equals(Buffer.from(m.data))).toBe(true);
      // Two tcpdumps ran side by side; each AF_PACKET socket stamps frames itself (veth skbs
      // carry no timestamp), so the times differ by a few microseconds, not by the precision.
      const d = r.tsNs - m.tsNs;
      expect(d < 1_000_000n && d > -1_000_000n).toBe(true);
      expect(m.tsNs % 1000n).toBe(0n);
    });
    // The nano file really carries sub-microsecond digits.
    expect(nano.records.some((r) => r.tsNs % 1000n !== 0n)).toBe(true);
  });

  it('http-dumpcap.pcapng: two interfaces (veth and lo), nanosecond if_tsresol', async () => {
    const { records, stats } = await readPcapAll(fx('http-dumpcap.pcapng'));
    const byIf = [0, 1].map((i) => records.filter((r) => r.interfaceId === i).length);
    expect(byIf[0]).toBe(await tsharkFrameCount(fx('http-dumpcap.pcapng'), 'frame.interface_id == 0'));
    expect(byIf[1]).toBe(await tsharkFrameCount(fx('http-dumpcap.pcapng'), 'frame.interface_id == 1'));
    expect(byIf[1]).toBeGreaterThan(0);
    expect(stats.skippedBlocks).toBeGreaterThan(0); // interface statistics blocks at the end
    expect(records.some((r) => r.tsNs % 1000n !== 0n)).toBe(true);
  });

  it('any-sll2.pcap (tcpdump -i any, LINUX_SLL2) is read with its link (replay turns it into raw IP)', async () => {
    const res = await readPcapAll(fx('any-sll2.pcap'));
    expect(res.error).toBeUndefined();
    expect(res.records).toHaveLength(11);
    for (const r of res.records) expect(r.link).toBe('linux-sll2');
  });

  it('reads the same from a Readable in odd chunk sizes as from the file', async () => {
    for (const name of ['http-small.pcapng', 'http-small-nano.pcap']) {
      const bytes = readFileSync(fx(name));
      const ref = (await readPcapAll(fx(name))).records.map(frameView);
      for (const sizes of [[1], [3, 7, 1, 64], [4095], [17, 1500, 2]]) {
        const res = await readPcapAll(Readable.from(chunked(bytes, sizes)));
        expect(res.error).toBeUndefined();
        expect(res.records.map(frameView)).toEqual(ref);
      }
    }
  });
});

describe('writer', () => {
  it('writer → reader round trip is exact (micro/nano × le/be, sizes 0..1600)', async () => {
    let seed = 7;
    const rnd = (n: number): number => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    const recs = Array.from({ length: 200 }, (_, i) => {
      const data = new Uint8Array(i === 0 ? 0 : rnd(1601));
      for (let k = 0; k < data.length; k++) data[k] = rnd(256);
      return { data, tsNs: 1_700_000_000_123_456_789n + BigInt(i) * 1_000_017n, origLen: data.length + (i % 3) };
    });
    for (const precision of ['micro', 'nano'] as const) {
      for (const byteOrder of ['le', 'be'] as const) {
        const path = join(tmp, `rt-${precision}-${byteOrder}.pcap`);
        const w = await PcapWriter.open(path, { precision, byteOrder, link: 'ethernet' });
        for (const r of recs) await w.write(r);
        await w.close();
        const res = await readPcapAll(path);
        expect(res.error).toBeUndefined();
        expect(res.stats).toMatchObject({ format: 'pcap', precision, byteOrder });
        expect(res.records).toHaveLength(recs.length);
        res.records.forEach((r, i) => {
          expect(Buffer.from(r.data).equals(Buffer.from(recs[i].data))).toBe(true);
          expect(r.origLen).toBe(recs[i].origLen);
          const want = precision === 'nano' ? recs[i].tsNs : (recs[i].tsNs / 1000n) * 1000n;
          expect(r.tsNs).toBe(want);
        });
        // tshark agrees on the file we wrote.
        expect(await tsharkFrameCount(path)).toBe(recs.length);
      }
    }
  });

  it.each(READABLE)('%s read → written → read again gives byte-identical frames', async (name) => {
    const src = await readPcapAll(fx(name));
    const nano = src.records.some((r) => r.tsNs % 1000n !== 0n);
    const path = join(tmp, `copy-${name}.pcap`);
    const w = await PcapWriter.open(path, { precision: nano ? 'nano' : 'micro', link: 'ethernet' });
    for (const r of src.records) await w.write(r);
    await w.close();
    const copy = await readPcapAll(path);
    expect(copy.error).toBeUndefined();
    expect(copy.records.map(frameView)).toEqual(src.records.map(frameView));
    if (name.endsWith('.pcap')) {
      // Same header fields as tcpdump writes: the whole file is byte-identical.
      expect(readFileSync(path).equals(readFileSync(fx(name)))).toBe(true);
    }
  });

  it('big-endian classic pcap (micro and nano) reads the same as little-endian, and tshark reads it', async () => {
    const src = await readPcapAll(fx('http-small-nano.pcap'));
    for (const precision of ['micro', 'nano'] as const) {
      const path = join(tmp, `be-${precision}.pcap`);
      const parts = [encodePcapHeader({ byteOrder: 'be', precision })];
      for (const r of src.records) parts.push(encodePcapRecord(r, { byteOrder: 'be', precision }));
      writeFileSync(path, B.concat(parts));
      // The big-endian magic is on disk.
      const magic = readFileSync(path).subarray(0, 4).toString('hex');
      expect(magic).toBe(precision === 'nano' ? 'a1b23c4d' : 'a1b2c3d4');
      const res = await readPcapAll(path);
      expect(res.error).toBeUndefined();
      expect(res.stats.byteOrder).toBe('be');
      expect(res.records.map((r) => Buffer.from(r.data).toString('hex'))).toEqual(
        src.records.map((r) => Buffer.from(r.data).toString('hex')),
      );
      const rows = await tsharkFields(path, ['frame.time_epoch']);
      expect(res.records.map((r) => r.tsNs)).toEqual(rows.map((x) => epochNs(x[0])));
    }
  });

  it('raw IPv4 (LINKTYPE_RAW 101, DLT_RAW 12 and 14): Ethernet stripped, same TCP streams for tshark', async () => {
    const src = await readPcapAll(fx('http-small.pcap'));
    const path = join(tmp, 'raw101.pcap');
    const w = await PcapWriter.open(path, { link: 'raw-ipv4' });
    for (const r of src.records) await w.write({ data: r.data.subarray(14), tsNs: r.tsNs, origLen: r.origLen - 14 });
    await w.close();
    const res = await readPcapAll(path);
    expect(res.error).toBeUndefined();
    expect(res.stats.linkType).toBe(101);
    expect(res.records.every((r) => r.link === 'raw-ipv4')).toBe(true);
    expect(res.records.map((r) => B.tcpTuple(r.data, 'raw-ipv4'))).toEqual(src.records.map((r) => B.tcpTuple(r.data, 'ethernet')));
    const eth = await tsharkFollowTcp(fx('http-small.pcap'), 2);
    const raw = await tsharkFollowTcp(path, 2);
    expect(raw.c2s.equals(eth.c2s) && raw.s2c.equals(eth.s2c)).toBe(true);
    for (const linkType of [12, 14]) {
      const bytes = B.concat([
        B.pcapHeader('le', 0xa1b2c3d4, 65535, linkType),
        B.pcapRecordHeader('le', 1, 2, 20, 20),
        src.records[0].data.subarray(14, 34),
      ]);
      const r = await readBytes(bytes);
      expect(r.error).toBeUndefined();
      expect(r.records[0].link).toBe('raw-ipv4');
      expect(r.records[0].tsNs).toBe(1_000_002_000n);
    }
  });

  it('write() waits for drain instead of buffering without bound', async () => {
    const { Writable } = await import('node:stream');
    let pendingCallbacks = 0;
    const slow = new Writable({
      highWaterMark: 1024,
      write(_chunk, _enc, cb) {
        pendingCallbacks++;
        setTimeout(() => {
          pendingCallbacks--;
          cb();
        }, 1);
      },
    });
    const w = PcapWriter.fromStream(slow);
    let maxBuffered = 0;
    for (let i = 0; i < 50; i++) {
      await w.write({ data: new Uint8Array(1500), tsNs: BigInt(i) });
      maxBuffered = Math.max(maxBuffered, slow.writableLength);
    }
    await w.close();
    expect(maxBuffered).toBeLessThanOrEqual(1024 + 1516);
    expect(pendingCallbacks).toBe(0);
    expect(w.records).toBe(50);
    expect(w.bytes).toBe(24 + 50 * 1516);
  });

  it('writes not awaited while the stream is full share one wait: no listener per write (a capture does not await each frame)', async () => {
    const { Writable } = await import('node:stream');
    const slow = new Writable({
      highWaterMark: 1024,
      write(_chunk, _enc, cb) {
        setTimeout(cb, 1);
      },
    });
    const w = PcapWriter.fromStream(slow);
    const writes = Array.from({ length: 50 }, (_, i) => w.write({ data: new Uint8Array(1500), tsNs: BigInt(i) }));
    expect(slow.listenerCount('drain')).toBeLessThanOrEqual(1);
    expect(slow.listenerCount('close')).toBeLessThanOrEqual(2); // one of Writable's own, at most
    await Promise.all(writes);
    await w.close();
    expect(w.records).toBe(50);
  });

  it('close() resolves once and write() after close is a bug (throws)', async () => {
    const w = await PcapWriter.open(join(tmp, 'closed.pcap'));
    await w.close();
    await w.close();
    await expect(w.write({ data: new Uint8Array(1), tsNs: 0n })).rejects.toThrow(/after close/);
  });

  it('open() rejects for an unwritable path', async () => {
    await expect(PcapWriter.open(join(tmp, 'no', 'such', 'dir.pcap'))).rejects.toThrow(/ENOENT/);
  });
});

describe('hand-made pcapng', () => {
  const frame = (n: number, fill: number): Uint8Array => new Uint8Array(n).fill(fill);

  function multiSection(): Uint8Array {
    // Section 0, big-endian: nanosecond interface (Ethernet), 2^-20 s interface with an offset
    // (raw IPv4), an unknown block, an EPB on each, an SPB on interface 0.
    const be: B.Order = 'be';
    const le: B.Order = 'le';
    return B.concat([
      B.shb(be),
      B.idb({ linkType: 1, snaplen: 0, tsresol: 9 }, be),
      B.idb({ linkType: 101, snaplen: 128, tsresol: 0x80 | 20, tsoffset: 100n }, be),
      B.block(0x0f0f, Uint8Array.of(1, 2, 3, 4, 5), be), // a reserved (unknown) block type
      B.epb(0, 1_700_000_000_123_456_789n, frame(60, 0xaa), be),
      B.epb(1, 3n << 20n, frame(40, 0xbb), be, 400),
      B.spb(frame(61, 0xcc), be),
      B.block(5, new Uint8Array(16), be), // Interface Statistics Block: skipped
      // Section 1, little-endian: microsecond default resolution; interface ids restart.
      B.shb(le),
      B.idb({ linkType: 12 }, le),
      B.epb(0, 5_000_001n, frame(33, 0xdd), le),
    ]);
  }

  it('both byte orders, if_tsresol (decimal and binary), if_tsoffset, SPB, unknown blocks, sections', async () => {
    const bytes = multiSection();
    const res = await readBytes(bytes);
    expect(res.error).toBeUndefined();
    const seen = res.records.map((r) => ({ len: r.data.length, origLen: r.origLen, tsNs: r.tsNs, link: r.link, interfaceId: r.interfaceId, section: r.section, b: r.data[0] }));
    expect(seen).toEqual([
      { len: 60, origLen: 60, tsNs: 1_700_000_000_123_456_789n, link: 'ethernet', interfaceId: 0, section: 0, b: 0xaa },
      { len: 40, origLen: 400, tsNs: 103_000_000_000n, link: 'raw-ipv4', interfaceId: 1, section: 0, b: 0xbb },
      { len: 61, origLen: 61, tsNs: 103_000_000_000n, link: 'ethernet', interfaceId: 0, section: 0, b: 0xcc },
      { len: 33, origLen: 33, tsNs: 5_000_001_000n, link: 'raw-ipv4', interfaceId: 0, section: 1, b: 0xdd },
    ]);
    expect(res.stats.sections).toBe(2);
    expect(res.stats.skippedBlocks).toBe(2);
    // Cross-check what tshark makes of the same bytes (frame count and the EPB times).
    const path = join(tmp, 'multi.pcapng');
    writeFileSync(path, bytes);
    const rows = await tsharkFields(path, ['frame.time_epoch', 'frame.cap_len']);
    expect(rows.map((r) => Number(r[1]))).toEqual([60, 40, 61, 33]);
    expect(epochNs(rows[0][0])).toBe(1_700_000_000_123_456_789n);
    expect(epochNs(rows[1][0])).toBe(103_000_000_000n);
    expect(epochNs(rows[3][0])).toBe(5_000_001_000n);
  });

  it('the same multi-section file split at every offset into two chunks reads the same', async () => {
    const bytes = multiSection();
    const ref = (await readBytes(bytes)).records.map(frameView);
    for (let cut = 1; cut < bytes.length; cut++) {
      const res = await readBytes(bytes, [cut, bytes.length]);
      expect(res.error).toBeUndefined();
      expect(res.records.map(frameView)).toEqual(ref);
    }
  });

  it('a packet on an interface with an unsupported link type is an error naming it', async () => {
    const le: B.Order = 'le';
    const onlyDeclared = B.concat([B.shb(le), B.idb({ linkType: 1 }, le), B.idb({ linkType: 105 }, le), B.epb(0, 1n, frame(20, 1), le)]);
    expect((await readBytes(onlyDeclared)).error).toBeUndefined();
    const used = B.concat([onlyDeclared, B.epb(1, 2n, frame(20, 2), le)]);
    const res = await readBytes(used);
    expect(res.records).toHaveLength(1);
    expect(res.error?.code).toBe('unsupported-link-type');
    expect(res.error?.message).toMatch(/interface 1: unsupported link type 105 \(IEEE802_11/);
    expect(res.error?.offset).toBe(onlyDeclared.length);
  });
});

describe('corrupt and truncated input', () => {
  it.each(['http-small.pcap', 'http-small.pcapng', 'http-dumpcap.pcapng'])(
    '%s cut at every length: records before the cut, then a typed error (never a throw)',
    async (name) => {
      const bytes = readFileSync(fx(name));
      const full = (await readPcapAll(fx(name))).records;
      const isNg = name.endsWith('.pcapng');
      const cleanCuts = new Set<number>(
        isNg ? pcapngBlockEnds(bytes) : [24, ...full.map((r) => r.offset), bytes.length],
      );
      const ends = isNg ? pcapngBlockEnds(bytes) : [];
      const recordEnd = (r: PcapRecord): number =>
        isNg ? (ends.find((e) => e > r.offset) as number) : r.offset + 16 + r.data.byteLength;
      for (let len = 0; len < bytes.length; len++) {
        const res = await readBytes(bytes.subarray(0, len));
        const complete = full.filter((r) => recordEnd(r) <= len);
        if (cleanCuts.has(len)) {
          expect(res.error, `cut at ${len}`).toBeUndefined();
        } else {
          expect(res.error, `cut at ${len}`).toBeInstanceOf(PcapFormatError);
          expect(['truncated', 'short-header']).toContain(res.error?.code);
          expect(res.error?.offset).toBeLessThanOrEqual(len);
          expect(res.error?.message).toMatch(/at byte offset \d+/);
          expect(res.stats.errors).toBe(1);
        }
        // Every record that fits before the cut is delivered, exactly.
        expect(res.records.length, `cut at ${len}`).toBe(complete.length);
        if (res.records.length > 0) {
          const last = res.records.length - 1;
          expect(Buffer.from(res.records[last].data).equals(Buffer.from(full[last].data))).toBe(true);
        }
      }
    },
  );

  const hdr = (snaplen = 65535, link = 1): Uint8Array => B.pcapHeader('le', 0xa1b2c3d4, snaplen, link);
  const rec = (caplen: number, origLen = caplen, frac = 0): Uint8Array =>
    B.concat([B.pcapRecordHeader('le', 1, frac, caplen, origLen), new Uint8Array(caplen)]);

  it.each<[string, () => Uint8Array, string, RegExp]>([
    ['empty file', () => new Uint8Array(0), 'short-header', /only 0 byte/],
    ['3 bytes', () => Uint8Array.of(0xd4, 0xc3, 0xb2), 'short-header', /only 3 byte/],
    ['bad magic', () => new TextEncoder().encode('GET / HTTP/1.1\r\nHost: x\r\n\r\n'), 'bad-magic', /magic 0x20544547/],
    ['modified pcap magic', () => B.pcapHeader('le', 0xa1b2cd34, 65535, 1), 'bad-magic', /Kuznetzov/],
    ['header only 20 bytes', () => hdr().subarray(0, 20), 'short-header', /24 bytes, file has only 20/],
    ['caplen > snaplen', () => B.concat([hdr(100), rec(60), rec(101)]), 'record-too-large', /captured length 101 exceeds the file's snap length 100/],
    ['absurd caplen', () => B.concat([hdr(0), B.pcapRecordHeader('le', 1, 0, 0xfffffff0, 0xfffffff0)]), 'record-too-large', /reader's limit 262144/],
    ['caplen > origLen', () => B.concat([hdr(), rec(60, 59)]), 'bad-record', /exceeds its original length 59/],
    ['micro fraction >= 1e6', () => B.concat([hdr(), rec(10, 10, 1_000_000)]), 'bad-record', /fraction 1000000/],
    ['record past EOF', () => B.concat([hdr(), rec(60), rec(60).subarray(0, 50)]), 'truncated', /captured length 60 but the file ends after 34 bytes/],
    ['unknown link type', () => hdr(65535, 147), 'unsupported-link-type', /unsupported link type 147: tapgate replays 1 \(ETHERNET\)/],
  ])('%s → %s', async (_what, make, code, message) => {
    const res = await readBytes(make());
    expect(res.error?.code).toBe(code);
    expect(res.error?.message).toMatch(message);
    expect(res.error?.message).toMatch(/\(at byte offset \d+\)$/);
  });

  it('the offset points at the bad record (caplen > snaplen after one good record)', async () => {
    const res = await readBytes(B.concat([hdr(100), rec(60), rec(101)]));
    expect(res.records).toHaveLength(1);
    expect(res.error?.offset).toBe(24 + 16 + 60);
  });

  describe('pcapng', () => {
    const le: B.Order = 'le';
    const good = (): Uint8Array => B.concat([B.shb(le), B.idb({ linkType: 1, snaplen: 100 }, le), B.epb(0, 1n, frame(60), le)]);
    const frame = (n: number): Uint8Array => new Uint8Array(n).fill(7);
    const withU32 = (bytes: Uint8Array, at: number, v: number): Uint8Array => {
      const c = bytes.slice();
      new DataView(c.buffer).setUint32(at, v, true);
      return c;
    };
    const epbAt = (): number => B.concat([B.shb(le), B.idb({ linkType: 1, snaplen: 100 }, le)]).length;

    it('a block length that lies (trailer differs) → bad-block-length at the block', async () => {
      const bytes = good();
      const res = await readBytes(withU32(bytes, bytes.length - 4, 1234));
      expect(res.error?.code).toBe('bad-block-length');
      expect(res.error?.message).toMatch(/length lies: header says \d+, trailer says 1234/);
      expect(res.error?.offset).toBe(epbAt());
    });

    it('a block length that is not a multiple of 4, or below 12 → bad-block-length', async () => {
      for (const len of [13, 8, 0]) {
        const res = await readBytes(withU32(good(), epbAt() + 4, len));
        expect(res.error?.code).toBe('bad-block-length');
        expect(res.error?.message).toMatch(/impossible length/);
      }
    });

    it('a block length running past EOF → truncated', async () => {
      const res = await readBytes(withU32(good(), epbAt() + 4, 4000));
      expect(res.error?.code).toBe('truncated');
      expect(res.error?.message).toMatch(/length 4000 but the file ends after/);
    });

    it('an absurd block length → bad-block-length without buffering it', async () => {
      const res = await readBytes(withU32(good(), epbAt() + 4, 0x7ffffff0));
      expect(res.error?.code).toBe('bad-block-length');
      expect(res.error?.message).toMatch(/exceeds the reader's limit/);
    });

    it('EPB caplen beyond its block, or beyond the interface snaplen', async () => {
      const beyond = await readBytes(withU32(good(), epbAt() + 8 + 12, 200));
      expect(beyond.error?.code).toBe('bad-record');
      expect(beyond.error?.message).toMatch(/runs past its block/);
      const big = B.concat([B.shb(le), B.idb({ linkType: 1, snaplen: 50 }, le), B.epb(0, 1n, frame(60), le)]);
      const snap = await readBytes(big);
      expect(snap.error?.code).toBe('record-too-large');
      expect(snap.error?.message).toMatch(/interface snap length 50/);
    });

    it('a packet on an undeclared interface → unknown-interface', async () => {
      const res = await readBytes(B.concat([good(), B.epb(3, 1n, frame(10), le)]));
      expect(res.records).toHaveLength(1);
      expect(res.error?.code).toBe('unknown-interface');
      expect(res.error?.message).toMatch(/interface 3 but section 0 declares 1 interface/);
    });

    it('bad byte-order magic → bad-magic', async () => {
      const res = await readBytes(withU32(good(), 8, 0x11223344));
      expect(res.error?.code).toBe('bad-magic');
    });
  });

  it('a missing file, a directory and a failing stream are io errors, not throws', async () => {
    const missing = await readPcapAll(join(tmp, 'nope.pcap'));
    expect(missing.error?.code).toBe('io');
    expect(missing.error?.message).toMatch(/ENOENT/);
    const dir = await readPcapAll(tmp);
    expect(dir.error?.code).toBe('io');
    const bytes = readFileSync(fx('http-small.pcap'));
    const failing: AsyncIterable<Uint8Array> = {
      async *[Symbol.asyncIterator]() {
        yield bytes.subarray(0, 1000);
        throw new Error('link went away');
      },
    };
    const res = await readPcapAll(failing);
    expect(res.error?.code).toBe('io');
    expect(res.error?.message).toMatch(/link went away/);
    expect(res.records.length).toBeGreaterThan(0);
  });

  it('the iterator yields records, then exactly one error item, then ends', async () => {
    const bytes = readFileSync(fx('http-small.pcap'));
    const reader: PcapReader = readPcap(oneChunk(bytes.subarray(0, 1000)));
    const items: PcapItem[] = [];
    for await (const item of reader) items.push(item);
    const kinds = items.map((i) => i.kind);
    expect(kinds[kinds.length - 1]).toBe('error');
    expect(kinds.filter((k) => k === 'error')).toHaveLength(1);
    expect(reader.stats.records).toBe(kinds.length - 1);
    expect(() => reader[Symbol.asyncIterator]()).toThrow(/single-use/);
  });
});

describe('tshark helper', () => {
  it('tsharkFollowTcp: request in c2s, HTTP response in s2c', async () => {
    const f = await tsharkFollowTcp(fx('http-small.pcap'), 0);
    expect(f.client).toMatch(/^10\.199\.0\.2:\d+$/);
    expect(f.server).toBe('10.199.0.1:8000');
    expect(f.c2s.toString('latin1')).toMatch(/^GET \/hello\.txt HTTP\/1\.1\r\n/);
    expect(f.s2c.toString('latin1')).toMatch(/^HTTP\/1\.[01] 200 OK\r\n/);
    expect(f.s2c.toString('latin1').endsWith('\r\n\r\nHello world\n')).toBe(true);
  });

  it('tsharkFollowTcp on the lossy capture: the whole 112000-byte body, once, in order', async () => {
    const f = await tsharkFollowTcp(fx('http-loss.pcap'), 0);
    const text = f.s2c.toString('latin1');
    const body = text.slice(text.indexOf('\r\n\r\n') + 4);
    expect(body.length).toBe(112000);
    const lines = body.split('\n').filter((l) => l !== '');
    expect(lines).toHaveLength(1600);
    lines.forEach((l, i) => expect(l.startsWith(`line ${String(i + 1).padStart(5, '0')} `)).toBe(true));
  });

  it('a capture starting mid-stream makes tshark call the server "Node 0": the helper refuses to guess', async () => {
    const cut = join(tmp, 'cut.pcap');
    execFileSync('editcap', ['-r', fx('http-small.pcap'), cut, '6-12'], { stdio: 'ignore' });
    const raw = execFileSync('tshark', ['-r', cut, '-q', '-z', 'follow,tcp,raw,0'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    expect(raw).toMatch(/^Node 0: 10\.199\.0\.1:8000$/m);
    expect(raw).toMatch(/^485454502f/m); // "HTTP/" unindented: Node 0 (the server) sent it
    await expect(tsharkFollowTcp(cut, 0)).rejects.toThrow(/no SYN/);
  });

  it('tsharkStreamCount counts TCP conversations', async () => {
    expect(await tsharkStreamCount(fx('http-loss.pcap'))).toBe(1);
    expect(await tsharkStreamCount(fx('http-dumpcap.pcapng'))).toBe(6);
  });

  it('requireTool fails loudly for a missing tool', () => {
    expect(() => requireTool('tshark-does-not-exist')).toThrow(/tshark-does-not-exist not installed: run \.ci\/run or apt-get install/);
    expect(() => requireTool('tshark')).not.toThrow();
  });
});
