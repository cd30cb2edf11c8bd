/**
 * Frame-level rewriting: a segment that grows past the receiver's MSS is split into several
 * segments (consecutive sequence numbers, FIN/PSH only on the last, valid checksums); header-only
 * translations keep the frame and fix the checksum incrementally.
 */
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/index.js';
import { Gateway } from '../../src/engine/gateway.js';
import { tcpFrame } from '../../src/wire/tcp-frame.js';
import { decodeFrame, type FrameTcp } from '../../src/wire/frame.js';

const C = 0x0a000001;
const S = 0x0a000002;
const SYN = 0x02, ACK = 0x10, PSH = 0x08, FIN = 0x01;

function gatewayWith(find: string, repl: string, mss: number) {
  const gw = new Gateway({
    config: parseConfig(`rules:\n  - match: { port: 80 }\n    agent: replace\n    replace:\n      - { find: "${find}", with: "${repl}" }\n`, 't.yaml'),
  });
  const out: Uint8Array[] = [];
  const send = (f: Uint8Array) => gw.handleFrame(f, 0, 0, (x) => out.push(x.slice()));
  send(tcpFrame({ src: C, dst: S, srcPort: 5555, dstPort: 80, seq: 1000, flags: SYN, options: [{ kind: 'mss', mss }] }));
  send(tcpFrame({ src: S, dst: C, srcPort: 80, dstPort: 5555, seq: 0xfffffff0, ack: 1001, flags: SYN | ACK, options: [{ kind: 'mss', mss }] }));
  send(tcpFrame({ src: C, dst: S, srcPort: 5555, dstPort: 80, seq: 1001, ack: 0xfffffff1, flags: ACK }));
  out.length = 0;
  return { gw, out, send };
}

const decode = (f: Uint8Array) => {
  const d = decodeFrame(f, { link: 'ethernet', verifyChecksums: true });
  if (d.kind !== 'tcp') throw new Error(`not a valid TCP frame: ${d.kind === 'error' ? d.reason : d.kind}`);
  return d as FrameTcp;
};

describe('frame-level rewriting', () => {
  it('splits a segment that grew past the receiver MSS', () => {
    const { out, send, gw } = gatewayWith('x', 'YYYYYYYYYY', 100);
    const payload = new TextEncoder().encode('ax'.repeat(45)); // 90 bytes → 45 + 450 = 495 bytes
    send(tcpFrame({ src: S, dst: C, srcPort: 80, dstPort: 5555, seq: 0xfffffff1, ack: 1001, flags: ACK | PSH | FIN, payload }));
    expect(out.length).toBe(5);
    let seq = 0xfffffff1;
    let text = '';
    out.forEach((f, i) => {
      const d = decode(f);
      expect(d.tcp.seq).toBe(seq >>> 0);
      expect(d.payloadLen).toBeLessThanOrEqual(100);
      const last = i === out.length - 1;
      expect((d.tcp.flags & (FIN | PSH)) !== 0).toBe(last);
      seq += d.payloadLen;
      text += Buffer.from(f.subarray(d.payloadOff, d.payloadOff + d.payloadLen)).toString();
    });
    expect(text).toBe('aYYYYYYYYYY'.repeat(45));
    expect(gw.stats().stream.splits).toBe(1);
  });

  it('rewrites ACK numbers in place with a correct checksum', () => {
    const { out, send, gw } = gatewayWith('x', '', 1460);
    send(tcpFrame({ src: S, dst: C, srcPort: 80, dstPort: 5555, seq: 0xfffffff1, ack: 1001, flags: ACK, payload: new TextEncoder().encode('axbxc') }));
    // The client acknowledges the 3 bytes it got ("abc") → the server must see 5.
    send(tcpFrame({ src: C, dst: S, srcPort: 5555, dstPort: 80, seq: 1001, ack: (0xfffffff1 + 3) >>> 0, flags: ACK }));
    expect(out.length).toBe(2);
    const ack = decode(out[1]!);
    expect(ack.tcp.ack).toBe((0xfffffff1 + 5) >>> 0);
    expect(gw.stats().gateway.headerRewrites).toBeGreaterThan(0);
  });
});

describe('delayed segments', () => {
  it('releases a queued segment whole, with valid checksums, after the gap is filled', () => {
    const { out, send, gw } = gatewayWith('nothing-matches', 'x', 1460);
    const enc = (s: string) => new TextEncoder().encode(s);
    const second = tcpFrame({ src: S, dst: C, srcPort: 80, dstPort: 5555, seq: (0xfffffff1 + 5) >>> 0, ack: 1001, flags: ACK, payload: enc('world') });
    const first = tcpFrame({ src: S, dst: C, srcPort: 80, dstPort: 5555, seq: 0xfffffff1, ack: 1001, flags: ACK, payload: enc('hello') });
    send(second);
    expect(out.length).toBe(0);
    // The caller reuses its buffer (a TAP batch): the engine must have kept its own copy.
    second.fill(0xee);
    send(first);
    expect(out.length).toBe(2);
    const texts = out.map((f) => {
      const d = decode(f);
      return Buffer.from(f.subarray(d.payloadOff, d.payloadOff + d.payloadLen)).toString();
    });
    expect(texts).toEqual(['hello', 'world']);
    expect(gw.stats().stream.drained).toBe(1);
  });
});
