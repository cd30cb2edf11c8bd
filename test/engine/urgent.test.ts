/**
 * TCP urgent data on a rule's connections (`policy.urgent`). A receiver without SO_OOBINLINE
 * (Linux's default) takes the byte before the urgent pointer out of the stream: "Hellox world"
 * with an urgent "x" reads "Hello world", which the agent never saw. By default (`inline`) the
 * gateway clears URG and the urgent pointer, so the receiver reads what the agent read; with
 * `keep` the pointer is translated through F and forwarded.
 */
import { describe, expect, it } from 'vitest';
import { decodeFrame } from '../../src/wire/frame.js';
import { TCP_ACK, TCP_PSH, TCP_URG, TcpSegment } from '../../src/wire/tcp.js';
import { Harness, payloadOf } from '../hostile/harness.js';

const CONFIG = (policy: string) => `
rules:
  - match: { port: 80 }
    agent: replace
    replace: [ { find: "Hello world", with: "Hi there" } ]
${policy}`;

function tcpOf(frame: Uint8Array) {
  const d = decodeFrame(frame, { link: 'ethernet', verifyChecksums: true });
  if (d.kind !== 'tcp') throw new Error(`not TCP: ${d.kind}`);
  return d.tcp;
}

/** Sends "ab Hellox world" with URG and the urgent pointer after the "x" (as send(MSG_OOB) of "x" would). */
function sendUrgent(h: Harness, text = 'Hellox world', urgentAfter = 'Hellox') {
  const c = h.connect(40000);
  const f = c.data(0, 0, `ab ${text}`, 0, TCP_ACK | TCP_PSH | TCP_URG);
  const seg = TcpSegment.unchecked(f.subarray(34));
  seg.rewriteUrgent(3 + urgentAfter.length);
  return h.send(f, 0);
}

describe('urgent data on a rule\'s connection', () => {
  it('by default the receiver gets it inline: URG and the pointer cleared, counted', () => {
    const h = new Harness({}, {}, CONFIG(''));
    const out = sendUrgent(h);
    expect(out).toHaveLength(1);
    const t = tcpOf(out[0]!.frame);
    expect(t.flags & TCP_URG).toBe(0);
    expect(t.urgent).toBe(0);
    expect(payloadOf(out[0]!.frame)).toBe('ab Hellox world'); // what the agent saw, all of it in the stream
    expect(h.gw.stats().stream.urgentInlined).toBe(1);
  });

  it('inline, a segment with a match and an urgent byte inside it: rewritten, URG cleared', () => {
    const h = new Harness({}, {}, CONFIG(''));
    const out = sendUrgent(h, 'Hello world', 'Hello w');
    expect(payloadOf(out[0]!.frame)).toBe('ab Hi there');
    expect(tcpOf(out[0]!.frame).flags & TCP_URG).toBe(0);
  });

  it('with policy.urgent: keep, URG stays and the pointer follows the rewrite', () => {
    const h = new Harness({}, {}, CONFIG('policy:\n  urgent: keep\n'));
    const out = sendUrgent(h, 'Hello world!', 'Hello world!');
    const t = tcpOf(out[0]!.frame);
    expect(payloadOf(out[0]!.frame)).toBe('ab Hi there!');
    expect(t.flags & TCP_URG).toBe(TCP_URG);
    expect(t.urgent).toBe('ab Hi there!'.length);
    expect(h.gw.stats().stream.urgentInlined).toBe(0);
  });

  it('a connection no rule covers is not touched', () => {
    const h = new Harness({}, {}, CONFIG('').replace('port: 80', 'port: 81'));
    const out = sendUrgent(h);
    const t = tcpOf(out[0]!.frame);
    expect(t.flags & TCP_URG).toBe(TCP_URG);
    expect(t.urgent).toBe(3 + 'Hellox'.length);
  });
});
