/**
 * Early release of a closed connection's engine (Gateway, Connection.settled): a connection
 * closed both ways whose streams were never rewritten and whose every byte and FIN was
 * acknowledged lets its engine and agent go at once (its flow entry stays for closedTimeoutMs);
 * one that was rewritten, or whose last ACK has not come yet, keeps them — and a FIN
 * retransmitted after the release still leaves unchanged.
 */
import { describe, expect, it } from 'vitest';
import { buildShortConnections } from '../../src/bench/engine.js';
import { parseConfig } from '../../src/config/index.js';
import { Gateway } from '../../src/engine/gateway.js';
import { decodeFrame } from '../../src/wire/frame.js';

const rule = (find: string) =>
  parseConfig(`rules:\n  - match: { port: 80 }\n    agent: replace\n    replace:\n      - { find: "${find}", with: "REPLACED" }\n`, 'r.yaml');

function run(find: string, frames: Uint8Array[]) {
  const gw = new Gateway({ config: rule(find) });
  const out: Uint8Array[] = [];
  let t = 1000.5;
  for (const f of frames) gw.handleFrame(f.slice(), 0, (t += 0.25), (g) => out.push(g.slice()));
  return { gw, out };
}

describe('early release of a closed connection\'s engine', () => {
  it('releases a never-rewritten connection once the last ACK came; its flow stays', () => {
    const sc = buildShortConnections(3);
    const { gw, out } = run('never-in-this-stream', sc.frames);
    const st = gw.stats();
    expect(st.gateway.connectionsRewritten).toBe(3);
    expect(st.gateway.enginesReleased).toBe(3);
    expect(st.flows.active).toBe(3);
    for (const f of gw.flows.values()) expect(f.conn).toBeNull();
    // Identity: every frame left exactly as it came.
    expect(out.map((f) => Buffer.from(f).toString('hex'))).toEqual(sc.frames.map((f) => Buffer.from(f).toString('hex')));
    // The server retransmits its FIN (its last ACK was lost): it passes unchanged.
    const fin = sc.frames[7]!;
    const again = run('never-in-this-stream', [...sc.frames.slice(0, 11), fin]);
    expect(Buffer.from(again.out.at(-1)!).equals(Buffer.from(fin))).toBe(true);
  });

  it('keeps the engine of a connection whose stream was rewritten', () => {
    const sc = buildShortConnections(2);
    const { gw } = run('200 OK', sc.frames);
    const st = gw.stats();
    expect(st.stream.commands).toBeGreaterThan(0);
    expect(st.gateway.enginesReleased).toBe(0);
    for (const f of gw.flows.values()) expect(f.conn).not.toBeNull();
  });

  it('keeps it until the last FIN is acknowledged', () => {
    const sc = buildShortConnections(1);
    const { gw } = run('never-in-this-stream', sc.frames.slice(0, 10)); // without the last ACK
    expect([...gw.flows.values()][0]!.state).toBe('closed');
    expect(gw.stats().gateway.enginesReleased).toBe(0);
    expect([...gw.flows.values()][0]!.conn).not.toBeNull();
  });

  it('keeps a rewritten connection whose final ACK never came: a FIN retransmitted a minute later is translated, not dropped', () => {
    const sc = buildShortConnections(1);
    const gw = new Gateway({ config: rule('200 OK') }); // 6 bytes → 8: the server's numbering moves by 2
    const out: Uint8Array[] = [];
    const t0 = 1000.5;
    // Without frame 10, the server's ACK of the client's FIN (lost before the gateway).
    sc.frames.slice(0, 10).forEach((f, i) => gw.handleFrame(f.slice(), 0, t0 + i, (g) => out.push(g.slice())));
    const ackOf = (g: Uint8Array) => {
      const d = decodeFrame(g, { link: 'ethernet', verifyChecksums: false });
      if (d.kind !== 'tcp') throw new Error(`not TCP: ${d.kind}`);
      return d.tcp.ack;
    };
    const firstFin = out.at(-1)!;
    expect([...gw.flows.values()][0]!.state).toBe('closed');
    // A minute of the client's FIN retransmissions, then one more; expiry runs meanwhile.
    for (let s = 1; s <= 60; s++) gw.tick(t0 + 10 + s * 1000, () => {});
    const fin = sc.frames[9]!;
    const n = out.length;
    gw.handleFrame(fin.slice(), 0, t0 + 61_000, (g) => out.push(g.slice()));
    expect(out.length).toBe(n + 1);
    expect(ackOf(out.at(-1)!)).toBe(ackOf(firstFin));
    expect(ackOf(out.at(-1)!)).not.toBe(ackOf(fin)); // translated
    expect(gw.stats().flows.midstream).toBe(0);
    // Gone once it has been quiet for closingTimeoutMs (2 min).
    gw.tick(t0 + 61_000 + 120_001, () => {});
    expect(gw.flows.size).toBe(0);
  });
});
