/** cluster/loop.ts: copies of frames a hub shows every node are dropped on the other side, once. */
import { describe, expect, it } from 'vitest';
import { frameDigest, LoopGuard, tcpDigest } from '../../src/cluster/loop.js';
import { tcpFrame } from '../../src/wire/tcp-frame.js';
import { parseIp } from '../../src/wire/ip.js';

const C = 0x0ac80001;
const S = 0x0ac80002;
const seg = (seq: number) => tcpFrame({ src: C, dst: S, srcPort: 40000, dstPort: 80, seq, ack: 1, flags: 0x18, payload: new Uint8Array([1, 2, 3]) });

/** The same frame with an 802.1Q tag (VID 7) after the MAC addresses. */
function tagged(f: Uint8Array): Uint8Array {
  const out = new Uint8Array(f.length + 4);
  out.set(f.subarray(0, 12), 0);
  out.set([0x81, 0x00, 0x00, 0x07], 12);
  out.set(f.subarray(12), 16);
  return out;
}

describe('cluster loop guard', () => {
  it('digests the TCP headers: equal for the same frame, tagged or not; different seq, different digest; not TCP, none', () => {
    expect(tcpDigest(seg(100), 0)).toBe(tcpDigest(seg(100), 0));
    expect(tcpDigest(tagged(seg(100)), 0)).toBe(tcpDigest(seg(100), 0));
    expect(tcpDigest(seg(101), 0)).not.toBe(tcpDigest(seg(100), 0));
    const arp = new Uint8Array(42);
    arp[12] = 0x08;
    arp[13] = 0x06;
    expect(tcpDigest(arp, 0)).toBeUndefined();
    expect(tcpDigest(seg(1).subarray(0, 40), 0)).toBeUndefined();
  });

  it('digests IPv6 TCP too, through extension headers; a later fragment has none', () => {
    const C6 = parseIp('fd00:200::1')!;
    const S6 = parseIp('fd00:200::2')!;
    const seg6 = (seq: number, ext?: { ipv6ExtHeaders: Uint8Array; ipv6FirstHeader: number }) =>
      tcpFrame({ src: C6, dst: S6, srcPort: 40000, dstPort: 80, seq, ack: 1, flags: 0x18, payload: new Uint8Array([1, 2, 3]), ...ext });
    const d = tcpDigest(seg6(100), 0);
    expect(d).toBeDefined();
    expect(tcpDigest(seg6(100), 0)).toBe(d);
    expect(tcpDigest(tagged(seg6(100)), 0)).toBe(d);
    expect(tcpDigest(seg6(101), 0)).not.toBe(d);
    const dst = { ipv6ExtHeaders: new Uint8Array([6, 0, 1, 4, 0, 0, 0, 0]), ipv6FirstHeader: 60 };
    expect(tcpDigest(seg6(100, dst), 0)).toBeDefined();
    const later = { ipv6ExtHeaders: new Uint8Array([6, 0, 0, 8, 0, 0, 0, 1]), ipv6FirstHeader: 44 };
    expect(tcpDigest(seg6(100, later), 0)).toBeUndefined();
    // A copy of an IPv6 segment seen on the other side is dropped, as for IPv4.
    const g = new LoopGuard(200, () => 0);
    expect(g.fromSegment(seg6(5), 0, 0)).toBe(true);
    expect(g.fromSegment(seg6(5), 1, 10)).toBe(false);
  });

  it('a TCP frame seen on one side and then on the other within the window is a copy; on the same side it is a retransmission', () => {
    const g = new LoopGuard(200, () => 0);
    expect(g.fromSegment(seg(1), 0, 1000)).toBe(true);
    expect(g.fromSegment(seg(1), 1, 1050)).toBe(false);
    expect(g.fromSegment(seg(1), 0, 1100)).toBe(true);
    // After the window it is a new frame wherever it comes from.
    g.sweep(1400);
    expect(g.fromSegment(seg(1), 1, 1400)).toBe(true);
  });

  it('a frame this node sent comes back on the side it was sent to: dropped', () => {
    const g = new LoopGuard(200, () => 0);
    g.sentTcp(seg(5), 1, 0);
    expect(g.fromSegment(seg(5), 0, 10)).toBe(false);
    expect(g.fromSegment(seg(5), 1, 10)).toBe(true);
  });

  it('non-TCP: forwarded once, its copy coming back from the other side is dropped', () => {
    const g = new LoopGuard(200, () => 0);
    const ping = new Uint8Array(60).fill(9);
    expect(frameDigest(ping)).toBe(frameDigest(ping.slice()));
    expect(g.nonTcp(ping, 0, 0)).toBe(true);
    expect(g.nonTcp(ping, 1, 5)).toBe(false);
    g.sweep(500);
    expect(g.nonTcp(ping, 1, 500)).toBe(true);
  });

  it('full within its window: what it cannot remember is counted (a copy of it would pass), known digests still refresh', () => {
    let full = 0;
    const g = new LoopGuard(200, () => 0, () => full++);
    const frame = (i: number) => Uint8Array.from([i & 255, (i >> 8) & 255, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0x08, 0x06]);
    for (let i = 0; i < 4096; i++) expect(g.nonTcp(frame(i), 0, 0)).toBe(true);
    expect(full).toBe(0);
    expect(g.nonTcp(frame(5000), 0, 1)).toBe(true);
    expect(full).toBe(1);
    expect(g.nonTcp(frame(5000), 1, 2)).toBe(true); // not remembered: its copy passes
    expect(g.nonTcp(frame(7), 1, 3)).toBe(false); // remembered: its copy is dropped
    g.sweep(1000);
    expect(g.nonTcp(frame(5000), 0, 1001)).toBe(true);
    expect(full).toBe(2);
    expect(g.nonTcp(frame(5000), 1, 1002)).toBe(false);
  });

  it('reads past a virtio header', () => {
    const f = seg(9);
    const withVh = new Uint8Array(10 + f.length);
    withVh.set(f, 10);
    expect(tcpDigest(withVh, 10)).toBe(tcpDigest(f, 0));
    const g = new LoopGuard(200, () => 10);
    expect(g.fromSegment(withVh, 0, 0)).toBe(true);
    expect(g.fromSegment(withVh, 1, 1)).toBe(false);
  });
});
