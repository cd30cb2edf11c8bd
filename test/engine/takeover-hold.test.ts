/**
 * A connection taken over with held bytes (a pattern's prefix the old owner was holding): the
 * new owner's hold timer starts at the takeover, not at the old owner's last segment. Else a
 * failover slower than the hold timeout would flush the prefix as it stands on the first tick,
 * and the connection would be reset when the sender's retransmission completed the pattern (a
 * match split by a flush never passes: agent/replace.ts `Forced`). When the timer does flush, the
 * new owner sends the prefix itself, built on the template that came with the state.
 */
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/index.js';
import { Gateway } from '../../src/engine/gateway.js';
import { DEFAULT_LIMITS } from '../../src/stream/limits.js';
import { decodeFrame } from '../../src/wire/frame.js';
import { TCP_RST } from '../../src/wire/tcp.js';
import { ACK, Harness, payloadOf } from '../hostile/harness.js';

function tcpOf(frame: Uint8Array) {
  const d = decodeFrame(frame, { link: 'ethernet', verifyChecksums: true });
  if (d.kind !== 'tcp') throw new Error(`not TCP: ${d.kind}`);
  return d.tcp;
}
const seqOf = (frame: Uint8Array): number => tcpOf(frame).seq;
const ackOf = (frame: Uint8Array): number => tcpOf(frame).ack;

const CONFIG = `
rules:
  - match: { port: 80 }
    agent: replace
    replace: [ { find: "needle-long-word", with: "pin" } ]
`;

describe('takeover with held bytes', () => {
  for (const [outageMs, silentMs] of [[300, 10], [2_000, 10], [30_000, 10], [500, 2_500], [500, 9_000]] as const) {
    it(`after a ${outageMs} ms outage and ${silentMs} ms more of the sender's silence (RTO backoff) the held prefix still completes the match`, () => {
      const a = new Harness({}, {}, CONFIG);
      const c = a.connect(40000);
      a.send(c.data(1, 0, 'text before needle-long-'), 1);
      // A holds "needle-long-" (it may still become the pattern) and dies.
      expect(a.out.filter((g) => g.to === 0).map((g) => payloadOf(g.frame)).join('')).toBe('text before ');
      const f = [...(a.gw as unknown as { flows: { values(): Iterable<unknown> } }).flows.values()][0] as Parameters<Gateway['exportConnection']>[0];
      const st = JSON.parse(JSON.stringify(a.gw.exportConnection(f, [undefined, undefined])));
      const b = Object.assign(Object.create(Harness.prototype) as Harness, {
        gw: new Gateway({ config: parseConfig(CONFIG, 'c.yaml'), limits: { ...DEFAULT_LIMITS } }),
        out: [],
        now: a.now + outageMs,
      });
      expect(b.gw.importConnection(st, b.now, [undefined, undefined])).not.toBeNull();
      b.advance(10); // the new owner's first ticks
      b.advance(silentMs);
      // The sender goes on (its retransmission timer brings the rest).
      b.send(c.data(1, 'text before needle-long-'.length, 'word and after'), 1);
      b.advance(5_000);
      expect(b.out.filter((g) => g.to === 0).map((g) => payloadOf(g.frame)).join('')).toBe('pin and after');
    });
  }

  it('the timer still runs from the takeover: a sender silent for 10 s after it gets the prefix flushed', () => {
    const a = new Harness({}, {}, CONFIG);
    const c = a.connect(40001);
    a.send(c.data(1, 0, 'text before needle-long-'), 1);
    // The client sends on, and the server acknowledges with pure ACKs: the segment originated
    // later must carry the server's latest ACK, not its data segment's.
    a.send(c.data(0, 0, 'upload'), 0);
    a.send(c.data(1, 'text before needle-long-'.length, '', 'upload'.length, ACK), 1);
    const f = [...(a.gw as unknown as { flows: { values(): Iterable<unknown> } }).flows.values()][0] as Parameters<Gateway['exportConnection']>[0];
    const st = JSON.parse(JSON.stringify(a.gw.exportConnection(f, [undefined, undefined])));
    const b = Object.assign(Object.create(Harness.prototype) as Harness, {
      gw: new Gateway({ config: parseConfig(CONFIG, 'c.yaml'), limits: { ...DEFAULT_LIMITS } }),
      out: [],
      now: a.now + 10_000,
    });
    b.gw.importConnection(st, b.now, [undefined, undefined]);
    // The sender's retransmission timer backed off during the outage: it may be silent for
    // seconds, and the held prefix waits for it (10 s here), then goes as it stands.
    b.advance(10_000 - 10);
    expect(b.gw.stats().stream.flushTimeout).toBe(0);
    const flushed = b.advance(20);
    expect(b.gw.stats().stream.flushTimeout).toBe(1);
    // Sent at once, built on the template that came with the state (the old owner kept the
    // sender's last segment while it held bytes); decided as it stood (what a flush means).
    expect(flushed.map((g) => [g.to, payloadOf(g.frame)])).toEqual([[0, 'needle-long-']]);
    expect(ackOf(flushed[0]!.frame)).toBe((c.isnC + 1 + 'upload'.length) >>> 0);
    expect(b.gw.stats().stream.synthSent).toBe(1);
    // The sender's next segment completes the match the flush split: the new owner carried what
    // the old one kept of the forced tail, so the rest never passes (it carries the flushed bytes
    // again at the same sequence number, without 'word'), and both ends are reset.
    const next = b.send(c.data(1, 'text before needle-long-'.length, 'word'), 1);
    expect(next.map((g) => [g.to, payloadOf(g.frame), (tcpOf(g.frame).flags & TCP_RST) !== 0])).toEqual([[0, 'needle-long-', false], [0, '', true], [1, '', true]]);
    expect(seqOf(next[0]!.frame)).toBe(seqOf(flushed[0]!.frame));
    expect(b.gw.stats().gateway.aborted).toBe(1);
    expect(b.gw.stats().agents.replace.splitMatches).toBe(1);
  });
});
