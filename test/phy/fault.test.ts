/**
 * The fault injector (src/phy/fault.ts): spec parsing and its errors; the same seed gives the
 * same result; loss, duplication, reordering and corruption happen at the rates asked for; a
 * frame is only ever missing when loss or a full queue says so (the counts add up); reordering
 * really reorders; delay, jitter and the rate limit keep their promises; corrupted frames fail
 * the receiver's checksum (also with TAP GSO) and the caller's buffers are never modified.
 */
import { describe, expect, it } from 'vitest';
import {
  DEFAULT_FAULT_SPEC,
  FaultInjector,
  FaultSpecError,
  formatFaultSpec,
  parseFaultSpec,
  type FaultSpec,
} from '../../src/phy/fault.js';
import { finish, fold16, ipv4PseudoHeaderSum, sum16 } from '../../src/wire/checksum.js';
import { WireError } from '../../src/wire/error.js';
import { decodeFrame } from '../../src/wire/frame.js';
import * as virtio from '../../src/wire/virtio.js';
import { parseIp } from '../../src/wire/ip.js';
import { tcpFrame } from '../../src/wire/tcp-frame.js';

/** A frame tagged with its number in bytes 0..3 (no protocol: the injector does not care). */
function tagged(i: number, len = 100): Uint8Array {
  const f = new Uint8Array(len);
  new DataView(f.buffer).setUint32(0, i);
  return f;
}
const idOf = (f: Uint8Array): number => new DataView(f.buffer, f.byteOffset).getUint32(0);

/** Pushes n frames 1 ms apart (polling in between) and flushes; returns the ids in output order. */
function drive(spec: FaultSpec, n: number, salt = 0, stepMs = 1): { ids: number[]; inj: FaultInjector } {
  const inj = new FaultInjector(spec, { salt });
  const ids: number[] = [];
  const out = (f: Uint8Array): void => void ids.push(idOf(f));
  for (let i = 0; i < n; i++) {
    inj.poll(i * stepMs, out);
    inj.push(tagged(i), i * stepMs, out);
  }
  inj.poll(n * stepMs + 1e6, out);
  inj.flush(out);
  return { ids, inj };
}

function conserved(inj: FaultInjector): void {
  const c = inj.counters;
  const p = inj.pending;
  expect(c.in + c.duplicated).toBe(c.out + c.lost + c.queueFull + c.rateDropped + p.held + p.delay + p.rate);
}

const spec = (s: string): FaultSpec => parseFaultSpec(s);

describe('parseFaultSpec', () => {
  it('reads the documented example', () => {
    const s = spec('loss=2%,reorder=10%,dup=1%,delay=2ms,jitter=1ms,rate=100mbit,corrupt=0.1%,seed=7');
    expect(s).toEqual({
      ...DEFAULT_FAULT_SPEC,
      loss: 0.02,
      reorder: 0.1,
      reorderFrames: 1,
      dup: 0.01,
      delayMs: 2,
      jitterMs: 1,
      rateBps: 100e6,
      corrupt: 0.001,
      seed: 7,
    });
  });

  it('reads reorder by frames and by time, fractions, units, sizes and spaces', () => {
    expect(spec('reorder=10%:3').reorderFrames).toBe(3);
    expect(spec('reorder=10%:3').reorderMs).toBeUndefined();
    expect(spec('reorder=0.25:5ms').reorderMs).toBe(5);
    expect(spec('reorder=0.25:5ms').reorder).toBe(0.25);
    expect(spec(' loss = 0.05 , delay=500us ').delayMs).toBeCloseTo(0.5);
    expect(spec('delay=1s').delayMs).toBe(1000);
    expect(spec('rate=1Gbit').rateBps).toBe(1e9);
    expect(spec('rate=10kbps').rateBps).toBe(80_000); // bytes per second, as tc(8)
    expect(spec('rate=1mbit,burst=64k').burstBytes).toBe(65536);
    expect(spec('qbytes=2m,limit=50').qbytes).toBe(2 << 20);
    expect(spec('loss=100%').loss).toBe(1);
    expect(spec('loss=1').loss).toBe(1);
    expect(spec('LOSS=1%').loss).toBe(0.01);
  });

  it('formats a spec that parses back to the same spec', () => {
    for (const t of ['loss=2%,reorder=10%:3,dup=1%,delay=2ms,jitter=1ms,rate=100mbit,corrupt=0.1%,seed=7', 'reorder=25%:5ms', 'reorder=25%:2,hold=3ms', 'rate=1mbit,burst=4k,limit=10,qbytes=1m,seed=0']) {
      const s = spec(t);
      expect(parseFaultSpec(formatFaultSpec(s))).toEqual(s);
    }
  });

  const errors: Array<[string, RegExp]> = [
    ['', /empty: give key=value/],
    ['loss=2%,', /empty item/],
    ['loss', /"loss" is not key=value/],
    ['los=2%', /unknown key "los" \(did you mean loss\?\); known keys: loss, reorder/],
    ['frob=1', /unknown key "frob"; known keys/],
    ['loss=1%,loss=2%', /loss is given twice/],
    ['loss=', /loss has no value/],
    ['loss=2', /loss=2: 2 is not a probability; write 2% for 2 percent/],
    ['loss=150%', /loss=150%: a percentage above 100%/],
    ['loss=abc', /loss=abc: expected a percentage \(2%\) or a fraction/],
    ['dup=-1%', /dup=-1%: expected a percentage/],
    ['delay=2', /delay=2: give a unit: 2ms, 2us or 2s/],
    ['jitter=fast', /jitter=fast: expected a time such as 2ms/],
    ['rate=100', /rate=100: give a unit, e\.g\. rate=100mbit/],
    ['rate=100furlongs', /rate=100furlongs: expected a rate such as 100mbit/],
    ['rate=0mbit', /rate=0mbit: at least 1kbit/],
    ['reorder=10%:0', /hold a frame back by 1 to 1000 frames \(got 0\)/],
    ['reorder=10%:x', /after ':' give a frame count \(reorder=10%:3\) or a time/],
    ['reorder=10%:0ms', /the hold time must be more than 0/],
    ['burst=64k', /burst needs rate/],
    ['hold=5ms', /hold needs reorder/],
    ['reorder=5%:2ms,hold=5ms', /hold only applies to reorder by a frame count/],
    ['limit=0', /limit=0: between 1 and 1000000 frames/],
    ['limit=2.5', /limit=2.5: expected a whole number of frames/],
    ['qbytes=100', /qbytes=100: at least 2k/],
    ['seed=-3', /seed=-3: expected a whole number 0 to 4294967295/],
    ['seed=4294967296', /seed=4294967296: expected a whole number/],
    // Values that parsed to Infinity or past a timer's 2^31 ms black-holed every frame (a review, 2026-12-07).
    [`delay=${'9'.repeat(400)}ms`, /at most 1h/],
    ['delay=3000000s', /delay=3000000s: at most 1h/],
    ['jitter=2h'.replace('2h', '7200s'), /at most 1h/],
    ['rate=2000gbit', /at most 1000gbit/],
    ['rate=100mbit,burst=2048m', /at most 1024m/],
  ];
  for (const [text, re] of errors) {
    it(`refuses ${JSON.stringify(text)} saying what is wrong`, () => {
      let err: unknown;
      try {
        parseFaultSpec(text);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(FaultSpecError);
      expect((err as Error).message.startsWith(`bad impairment spec ${JSON.stringify(text)}: `)).toBe(true);
      expect((err as Error).message).toMatch(re);
    });
  }
});

describe('FaultInjector', () => {
  const ALL = 'loss=3%,reorder=15%:2,dup=4%,delay=2ms,jitter=1ms,rate=10mbit,corrupt=1%,seed=7,limit=20';

  it('gives the same output for the same seed and a different one for another seed or salt', () => {
    const a = drive(spec(ALL), 5000);
    const b = drive(spec(ALL), 5000);
    expect(b.ids).toEqual(a.ids);
    expect(b.inj.counters).toEqual(a.inj.counters);
    const c = drive(spec(ALL.replace('seed=7', 'seed=8')), 5000);
    expect(c.ids).not.toEqual(a.ids);
    const d = drive(spec(ALL), 5000, 0x9e3779b9);
    expect(d.ids).not.toEqual(a.ids);
  });

  it('loses, duplicates, reorders and corrupts at the rates asked for', () => {
    const n = 200_000;
    const { inj } = drive(spec('loss=2%,dup=1%,reorder=10%,corrupt=0.5%,seed=3'), n);
    const c = inj.counters;
    // Binomial: 6 standard deviations of slack.
    const within = (k: number, trials: number, p: number): void => {
      const sd = Math.sqrt(trials * p * (1 - p));
      expect(Math.abs(k - trials * p), `${k} of ${trials} at p=${p}`).toBeLessThan(6 * sd);
    };
    within(c.lost, n, 0.02);
    const kept = n - c.lost;
    within(c.duplicated, kept, 0.01);
    // Tagged frames are not IPv4: every corruption drawn is counted as skipped.
    expect(c.corrupted).toBe(0);
    within(c.corruptSkipped, kept + c.duplicated, 0.005);
    within(c.reordered + c.holdFull, kept + c.duplicated, 0.1);
    expect(c.holdFull).toBe(0);
    conserved(inj);
  });

  it('loses nothing that loss or a full queue does not account for, with every impairment on', () => {
    // Small queues and a slow rate so that queueFull and rateDropped both happen.
    const { ids, inj } = drive(spec('loss=5%,reorder=25%:3,dup=5%,delay=3ms,jitter=2ms,rate=500kbit,limit=8,seed=11'), 20_000);
    const c = inj.counters;
    expect(c.queueFull).toBeGreaterThan(0);
    expect(c.rateDropped).toBeGreaterThan(0);
    expect(inj.pending).toEqual({ held: 0, delay: 0, rate: 0, bytes: 0 });
    conserved(inj);
    expect(ids.length).toBe(c.out);
    // Without loss and with roomy queues, every frame arrives, duplicates twice.
    const clean = drive(spec('reorder=25%:3,dup=5%,delay=3ms,jitter=2ms,seed=11'), 20_000);
    const seen = new Map<number, number>();
    for (const id of clean.ids) seen.set(id, (seen.get(id) ?? 0) + 1);
    expect(seen.size).toBe(20_000);
    expect([...seen.values()].filter((v) => v === 2).length).toBe(clean.inj.counters.duplicated);
    expect(clean.inj.counters.lost + clean.inj.counters.queueFull + clean.inj.counters.rateDropped).toBe(0);
    conserved(clean.inj);
  });

  it('reorders: a held frame leaves right after the N frames that overtook it', () => {
    const { ids, inj } = drive(spec('reorder=10%:3,seed=5'), 10_000);
    expect(inj.counters.reordered).toBeGreaterThan(800);
    expect([...ids].sort((x, y) => x - y)).toEqual([...Array(10_000).keys()]);
    let inversions = 0;
    for (let i = 1; i < ids.length; i++) if (ids[i]! < ids[i - 1]!) inversions++;
    expect(inversions).toBeGreaterThan(800);
    // A held frame k with no other held frame near it comes out right after k+1, k+2, k+3:
    // expected about 10000 × 0.1 × 0.9^3 ≈ 730 times.
    let isolated = 0;
    for (let i = 3; i < ids.length; i++) {
      const k = ids[i]!;
      if (ids[i - 3] === k + 1 && ids[i - 2] === k + 2 && ids[i - 1] === k + 3) isolated++;
    }
    expect(isolated).toBeGreaterThan(500);
    // Every frame is overtaken by no frame at all or by at least 3 (a Fenwick tree counts, for
    // each frame, the larger ids already out); the overtaken ones are exactly the held ones.
    const tree = new Array<number>(10_001).fill(0);
    let overtaken = 0;
    for (let i = 0; i < ids.length; i++) {
      const k = ids[i]!;
      let below = 0;
      for (let j = k + 1; j > 0; j -= j & -j) below += tree[j]!;
      const larger = i - below;
      expect(larger === 0 || larger >= 3, `frame ${k} overtaken by ${larger}`).toBe(true);
      if (larger > 0) overtaken++;
      for (let j = k + 1; j <= 10_000; j += j & -j) tree[j]!++;
    }
    expect(overtaken).toBe(inj.counters.reordered);
  });

  it('reorders by time: reorder=P:Tms holds a frame T ms and releases it on poll', () => {
    const inj = new FaultInjector(spec('reorder=100%:5ms'));
    const out: Array<[number, number]> = [];
    let now = 0;
    const sink = (f: Uint8Array): void => void out.push([idOf(f), now]);
    inj.push(tagged(1), 0, sink);
    expect(out).toEqual([]);
    expect(inj.nextDueMs()).toBe(5);
    now = 4.9;
    inj.poll(now, sink);
    expect(out).toEqual([]);
    now = 5;
    inj.poll(now, sink);
    expect(out).toEqual([[1, 5]]);
    expect(inj.nextDueMs()).toBeUndefined();
  });

  it('releases a frame held by count after hold ms when no further frame comes', () => {
    const inj = new FaultInjector(spec('reorder=100%:3,hold=7ms'));
    const out: number[] = [];
    inj.push(tagged(1), 100, (f) => out.push(idOf(f)));
    expect(inj.nextDueMs()).toBe(107);
    inj.poll(106, (f) => out.push(idOf(f)));
    expect(out).toEqual([]);
    inj.poll(107, (f) => out.push(idOf(f)));
    expect(out).toEqual([1]);
  });

  it('passes frames on in order when the hold is full, counting holdFull', () => {
    const inj = new FaultInjector(spec('reorder=100%:1000,limit=4,hold=1s'));
    const out: number[] = [];
    for (let i = 0; i < 10; i++) inj.push(tagged(i), 0, (f) => out.push(idOf(f)));
    expect(out).toEqual([4, 5, 6, 7, 8, 9]);
    expect(inj.counters.holdFull).toBe(6);
    expect(inj.pending.held).toBe(4);
    inj.flush((f) => out.push(idOf(f)));
    expect(out.slice(6)).toEqual([0, 1, 2, 3]);
    conserved(inj);
  });

  it('delays by delay ± jitter and keeps the line FIFO', () => {
    const inj = new FaultInjector(spec('delay=10ms,jitter=4ms,seed=9'));
    const sent: number[] = [];
    const got: Array<[number, number]> = [];
    let now = 0;
    const sink = (f: Uint8Array): void => void got.push([idOf(f), now]);
    for (let i = 0; i < 2000; i++) {
      now = i * 0.5;
      inj.poll(now, sink);
      sent.push(now);
      inj.push(tagged(i), now, sink);
    }
    for (; inj.nextDueMs() !== undefined; ) {
      now = inj.nextDueMs()!;
      inj.poll(now, sink);
    }
    expect(got.map(([id]) => id)).toEqual([...Array(2000).keys()]);
    let maxLate = 0;
    for (const [id, t] of got) {
      const d = t - sent[id]!;
      expect(d).toBeGreaterThanOrEqual(6 - 1e-9);
      maxLate = Math.max(maxLate, d);
    }
    // FIFO may keep a frame behind a later-due one: never beyond the largest delay plus a step.
    expect(maxLate).toBeLessThanOrEqual(14 + 0.5 + 1e-9);
    expect(inj.counters.delayed).toBe(2000);
  });

  it('drops from a full delay line and counts queueFull', () => {
    const inj = new FaultInjector(spec('delay=100ms,limit=5'));
    for (let i = 0; i < 8; i++) inj.push(tagged(i), 0, () => {});
    expect(inj.counters.queueFull).toBe(3);
    expect(inj.pending.delay).toBe(5);
    conserved(inj);
  });

  it('limits the rate: bytes out over a second match the rate, the excess is dropped from a bounded queue', () => {
    const inj = new FaultInjector(spec('rate=10mbit,limit=100'));
    let bytesOut = 0;
    const sink = (f: Uint8Array): void => void (bytesOut += f.length);
    // Offer 20 Mbit/s of 1250-byte frames (one per 0.5 ms) for 2 s, polling when asked.
    let t = 0;
    for (let i = 0; i < 4000; i++) {
      t = i * 0.5;
      inj.poll(t, sink);
      inj.push(tagged(i, 1250), t, sink);
    }
    inj.poll(2000, sink);
    const expected = (10e6 / 8) * 2 + 65536; // two seconds at the rate, plus the initial burst
    expect(Math.abs(bytesOut - expected)).toBeLessThan(2 * 1250);
    expect(inj.counters.rateDropped).toBeGreaterThan(1500);
    expect(inj.counters.rateWaited).toBeGreaterThan(0);
    expect(inj.pending.rate).toBeLessThanOrEqual(100);
    conserved(inj);
  });

  it('lets a frame larger than the bucket through and makes the next one wait for the debt', () => {
    const inj = new FaultInjector(spec('rate=8mbit,burst=1500'));
    const out: Array<[number, number]> = [];
    let now = 0;
    const sink = (f: Uint8Array): void => void out.push([idOf(f), now]);
    // 80 000 bits from a full 12 000-bit bucket: 68 000 bits of debt, 8.5 ms at 8 Mbit/s.
    inj.push(tagged(1, 10_000), 0, sink);
    inj.push(tagged(2, 100), 0, sink);
    expect(out).toEqual([[1, 0]]);
    expect(inj.nextDueMs()).toBeCloseTo(8.5, 6);
    now = 8.4;
    inj.poll(now, sink);
    expect(out).toEqual([[1, 0]]);
    now = 8.5;
    inj.poll(now, sink);
    expect(out).toEqual([[1, 0], [2, 8.5]]);
  });

  it('never modifies the caller\'s frame and copies what it keeps', () => {
    const inj = new FaultInjector(spec('delay=1ms,corrupt=100%'));
    const f = ipv4TcpFrame(Buffer.from('hello, world'));
    const orig = f.slice();
    inj.push(f, 0, () => {});
    expect(f).toEqual(orig);
    f.fill(0xee); // the caller reuses its buffer
    const out: Uint8Array[] = [];
    inj.poll(1, (g) => out.push(g));
    expect(out.length).toBe(1);
    expect(out[0]!.subarray(0, 14)).toEqual(orig.subarray(0, 14));
    let diff = 0;
    for (let i = 0; i < orig.length; i++) if (out[0]![i] !== orig[i]) diff++;
    expect(diff).toBe(1);
  });

  it('hands out each duplicate with the bytes that came in, even when the receiver rewrites the first in place', () => {
    // The gateway patches the headers of frames it forwards in place; a duplicate that shared the
    // first copy's bytes (or was copied after it left) arrived with already-translated sequence
    // numbers: a valid frame carrying the wrong stream position (seen in the impairment e2e).
    for (const s of ['dup=100%', 'dup=100%,reorder=50%:1,seed=4', 'dup=100%,delay=1ms', 'dup=100%,rate=1mbit,seed=3']) {
      const inj = new FaultInjector(spec(s));
      const got: Uint8Array[] = [];
      const receiver = (g: Uint8Array): void => {
        got.push(g.slice());
        g.fill(0x5a); // what a receiver may do with a frame it was given
      };
      const frames = [0, 1, 2, 3].map((i) => ipv4TcpFrame(Buffer.from(`segment ${i}`)));
      const orig = frames.map((f) => f.slice());
      frames.forEach((f, i) => inj.push(f, i, receiver));
      inj.poll(1e6, receiver);
      inj.flush(receiver);
      expect(got.length, s).toBe(8);
      for (const g of got) expect(orig.some((o) => Buffer.compare(o, g) === 0), s).toBe(true);
      for (const o of orig) expect(got.filter((g) => Buffer.compare(o, g) === 0).length, s).toBe(2);
    }
  });

  it('corrupts so that the receiver\'s checksum catches it, every time', () => {
    const inj = new FaultInjector(spec('corrupt=100%,seed=21'));
    const payload = Buffer.alloc(1000, 'a');
    for (let i = 0; i < 2000; i++) {
      const f = ipv4TcpFrame(payload);
      expect(decodeFrame(f, { link: 'ethernet', verifyChecksums: true })).not.toBeInstanceOf(WireError);
      inj.push(f, i, (g) => {
        expect(g).not.toEqual(f);
        expect(decodeFrame(g, { link: 'ethernet', verifyChecksums: true }), `frame ${i}`).toBeInstanceOf(WireError);
      });
    }
    expect(inj.counters.corrupted).toBe(2000);
  });

  it('corrupts IPv6 TCP where its checksum looks (addresses, header, payload), so the receiver catches it every time', () => {
    const inj = new FaultInjector(spec('corrupt=100%,seed=22'));
    const src = parseIp('2001:db8::1')!;
    const dst = parseIp('2001:db8::2')!;
    for (let i = 0; i < 2000; i++) {
      const f = tcpFrame({ src, dst, srcPort: 40000, dstPort: 80, seq: i, ack: 1, flags: 0x18, payload: Buffer.alloc(200, 'b') });
      inj.push(f, i, (g) => {
        // Never the fixed header's first 8 bytes (version, class, label, length, next header, hop limit): no checksum covers them.
        expect(g.subarray(0, 22)).toEqual(f.subarray(0, 22));
        expect(decodeFrame(g, { link: 'ethernet', verifyChecksums: true, ipv6: true }), `frame ${i}`).toBeInstanceOf(WireError);
      });
    }
    expect(inj.counters.corrupted).toBe(2000);
  });

  it('corrupts only the IP packet: never Ethernet padding, never a non-IPv4 frame', () => {
    const inj = new FaultInjector(spec('corrupt=100%,seed=2'));
    // A bare ACK padded to the 60-byte Ethernet minimum: 6 bytes of padding a flip must avoid.
    const ack = ipv4TcpFrame(new Uint8Array(0));
    const padded = new Uint8Array(60);
    padded.set(ack);
    for (let i = 0; i < 3000; i++) {
      inj.push(padded, i, (g) => {
        expect(g.subarray(54)).toEqual(new Uint8Array(6));
        expect(decodeFrame(g, { link: 'ethernet', verifyChecksums: true })).toBeInstanceOf(WireError);
      });
    }
    const arp = new Uint8Array(60);
    arp.set([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 1, 0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1], 0);
    const got: Uint8Array[] = [];
    inj.push(arp, 5000, (g) => got.push(g));
    expect(got).toEqual([arp]);
    expect(inj.counters).toMatchObject({ corrupted: 3000, corruptSkipped: 1 });
  });

  it('flush sends everything pending in pipeline order: rate queue, delay line, held frames', () => {
    const inj = new FaultInjector(spec('reorder=100%:5ms,delay=10ms,rate=1mbit,burst=100'));
    const out: number[] = [];
    const sink = (f: Uint8Array): void => void out.push(idOf(f));
    inj.push(tagged(1, 1000), 0, sink); // held until 5, delayed until 15, then rate
    inj.poll(5, sink);
    inj.push(tagged(2, 1000), 5, sink); // held until 10
    inj.poll(10, sink); // 2 into the delay line behind 1
    inj.push(tagged(3, 1000), 10, sink); // held until 15
    inj.poll(15, sink); // 1 leaves the line and passes the full bucket; 3 enters the line
    expect(out).toEqual([1]);
    inj.push(tagged(4, 1000), 18, sink); // held until 23
    inj.poll(20, sink); // 2 leaves the line into the rate queue (bucket in debt)
    expect(inj.pending).toMatchObject({ held: 1, delay: 1, rate: 1 });
    inj.flush(sink);
    expect(out).toEqual([1, 2, 3, 4]);
    expect(inj.pending).toEqual({ held: 0, delay: 0, rate: 0, bytes: 0 });
    conserved(inj);
  });

  it('with TAP GSO: completes a partial checksum before the flip, clears NEEDS_CSUM; leaves GSO frames intact', () => {
    const inj = new FaultInjector(spec('corrupt=100%,seed=4'), { vnetHdr: true });
    const payload = Buffer.alloc(600, 'b');
    for (let i = 0; i < 500; i++) {
      const f = vnetFrame(ipv4TcpFrame(payload, true), 'partial');
      inj.push(f, i, (g) => {
        expect(g[0]).toBe(0); // flags: neither NEEDS_CSUM nor DATA_VALID
        expect(g.subarray(0, 10)).not.toEqual(f.subarray(0, 10));
        expect(decodeFrame(g.subarray(10), { link: 'ethernet', verifyChecksums: true })).toBeInstanceOf(WireError);
      });
    }
    // A partial frame completed in software without a flip would be valid: the completion is right.
    const ok = vnetFrame(ipv4TcpFrame(payload, true), 'partial').subarray(10);
    expect(decodeFrame(ok, { link: 'ethernet', verifyChecksums: true })).toBeInstanceOf(WireError); // still partial
    virtio.completePartialChecksum(ok, 34, 16);
    expect(decodeFrame(ok, { link: 'ethernet', verifyChecksums: true })).not.toBeInstanceOf(WireError);
    // GSO super-frame: passed untouched.
    const gso = vnetFrame(ipv4TcpFrame(Buffer.alloc(3000, 'c'), true), 'gso');
    const got: Uint8Array[] = [];
    inj.push(gso, 1000, (g) => got.push(g));
    expect(got).toEqual([gso]);
    expect(inj.counters.corruptSkipped).toBe(1);
    expect(inj.counters.corrupted).toBe(500);
  });

  it('says when to poll next: nothing pending is undefined', () => {
    const inj = new FaultInjector(spec('delay=3ms'));
    expect(inj.nextDueMs()).toBeUndefined();
    inj.push(tagged(1), 10, () => {});
    expect(inj.nextDueMs()).toBe(13);
  });

  it('takes time as given and never goes backwards', () => {
    const inj = new FaultInjector(spec('delay=5ms'));
    const out: number[] = [];
    inj.push(tagged(1), 100, (f) => out.push(idOf(f)));
    inj.poll(50, (f) => out.push(idOf(f))); // an earlier time is treated as 100
    expect(out).toEqual([]);
    inj.poll(105, (f) => out.push(idOf(f)));
    expect(out).toEqual([1]);
  });
});

// ---------------------------------------------------------------------------------------------
// Frame builders.

/** Ethernet + IPv4 + TCP (20-byte header) with correct checksums, or a partial TCP checksum. */
function ipv4TcpFrame(payload: Uint8Array, partial = false): Uint8Array {
  const f = new Uint8Array(14 + 20 + 20 + payload.length);
  f.set([2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00], 0);
  const ip = 14;
  const total = 40 + payload.length;
  f.set([0x45, 0, total >>> 8, total & 0xff, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 200, 0, 1, 10, 200, 0, 2], ip);
  const ipc = finish(sum16(f, ip, ip + 20));
  f[ip + 10] = ipc >>> 8;
  f[ip + 11] = ipc & 0xff;
  const tcp = ip + 20;
  f.set([0x9c, 0x40, 0x1f, 0x41, 0, 0, 0x10, 0, 0, 0, 0x20, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0], tcp);
  f.set(payload, tcp + 20);
  const pseudo = ipv4PseudoHeaderSum(0x0ac80001, 0x0ac80002, 6, 20 + payload.length);
  const c = partial ? fold16(pseudo) : finish(sum16(f, tcp, f.length, pseudo));
  f[tcp + 16] = c >>> 8;
  f[tcp + 17] = c & 0xff;
  return f;
}

function vnetFrame(frame: Uint8Array, kind: 'partial' | 'gso'): Uint8Array {
  const out = new Uint8Array(10 + frame.length);
  new virtio.VirtioNetHdrRepr({
    flags: virtio.VIRTIO_NET_HDR_F_NEEDS_CSUM,
    gsoType: kind === 'gso' ? virtio.VIRTIO_NET_HDR_GSO_TCPV4 : virtio.VIRTIO_NET_HDR_GSO_NONE,
    hdrLen: 54,
    gsoSize: kind === 'gso' ? 1448 : 0,
    csumStart: 34,
    csumOffset: 16,
  }).emit(out);
  out.set(frame, 10);
  return out;
}

describe('impairment options of tapgate run and tapgate lab up', async () => {
  const { impairSpecs, RunError } = await import('../../src/cli/run.js');
  const { checkImpairArgs } = await import('../../src/cli/lab.js');
  const { gatewayArgv } = await import('../../src/lab/gateway-argv.js');

  it('run: --impair covers both out points, --impair-a/-b override it per side, --impair-in* the in points', () => {
    const s = impairSpecs({ impair: 'loss=1%', impairB: 'dup=2%', impairIn: 'reorder=5%', impairInA: 'delay=1ms' });
    expect(s['out-a']?.loss).toBe(0.01);
    expect(s['out-b']).toEqual({ ...DEFAULT_FAULT_SPEC, dup: 0.02 });
    expect(s['in-a']).toEqual({ ...DEFAULT_FAULT_SPEC, delayMs: 1 });
    expect(s['in-b']?.reorder).toBe(0.05);
    expect(impairSpecs({})).toEqual({});
  });

  it('run: a bad spec is a RunError with exit code 1 naming the option', () => {
    expect(() => impairSpecs({ impairInB: 'loss=7' })).toThrow(RunError);
    try {
      impairSpecs({ impairInB: 'loss=7' });
    } catch (e) {
      expect((e as InstanceType<typeof RunError>).exitCode).toBe(1);
      expect((e as Error).message).toBe('--impair-in-b: bad impairment spec "loss=7": loss=7: 7 is not a probability; write 7% for 7 percent, or a fraction in [0, 1] such as 0.02');
    }
    expect(() => impairSpecs({ impair: ['loss=1%', 'loss=2%'] as unknown as string })).toThrow('--impair is given more than once');
  });

  it('lab up: client = tap-c = TAP a, server = tap-s = TAP b; bad specs refused naming the lab option', () => {
    const argv = gatewayArgv({ vnetHdr: true, impair: 'loss=1%', impairClient: 'dup=1%', impairInServer: 'reorder=10%:3' });
    const opts = argv.slice(argv.indexOf('run') + 1);
    expect(opts).toEqual(['--tap', 'tap-c', '--tap', 'tap-s', '--impair', 'loss=1%', '--impair-a', 'dup=1%', '--impair-in-b', 'reorder=10%:3']);
    expect(() => checkImpairArgs({ impairServer: 'delay=5' })).toThrow('--impair-server: bad impairment spec "delay=5": delay=5: give a unit: 5ms, 5us or 5s');
    expect(() => checkImpairArgs({ impairClient: 'loss=1%', impairIn: 'dup=2%' })).not.toThrow();
  });
});
