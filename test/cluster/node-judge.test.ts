/**
 * Who may judge the others dead (src/cluster/node.ts onTimer): a node whose own heartbeats come
 * back to it on both its connections — its lease (the heartbeat worker's connection) and,
 * recently, the main connection where the others' heartbeats arrive. After a partition the two
 * connections come back apart (each TCP connection retransmits on its own backoff): with the
 * lease back but the main connection still silent, a node that judged by its lease alone found
 * every other node silent past deadMs, took their incarnations for dead for good, and stayed
 * alone in its view while they took it back into theirs (CI, `test/e2e/cluster.test.ts` "a
 * partition"). No NATS here: the node's heartbeats and timer rounds are driven by hand, on its
 * own clock, with a worker whose lease holds.
 */
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { ClusterNode, type NodeInfo } from '../../src/cluster/node.js';

interface Internals {
  beat: unknown;
  connected: boolean;
  ready: boolean;
  onHeartbeat(data: Uint8Array): void;
  onTimer(): void;
  recomputeView(): void;
  ms: { view: readonly string[] };
}

function harness() {
  let now = 1_000_000;
  const node = new ClusterNode({ url: 'nats://127.0.0.1:1', nodeId: '3', log: pino({ level: 'silent' }), now: () => now });
  const n = node as unknown as Internals;
  // A heartbeat worker whose lease always holds (its connection is back).
  n.beat = { leaseUntil: () => Number.POSITIVE_INFINITY, update: () => {}, server: 'nats-1', stop: async () => {} };
  n.connected = true;
  n.ready = true;
  const started: Record<string, number> = { '1': 500_000, '2': 600_000, '3': 1_000_000 };
  const beat = (id: string): void => {
    const h: NodeInfo = { id, lastMs: now, startedMs: started[id]!, draining: false, ready: true, owned: 0, spares: 0, lagMs: 0, natsServer: 'nats-1' };
    n.onHeartbeat(new TextEncoder().encode(JSON.stringify(h)));
  };
  /** Timer rounds every 50 ms (never "late") for `ms`, with `beats` heard before each. */
  const run = (ms: number, beats: string[]): void => {
    for (let t = 0; t < ms; t += 50) {
      now += 50;
      for (const id of beats) beat(id);
      n.onTimer();
    }
  };
  return { n, beat, run };
}

describe('judging the others dead', () => {
  it('waits while the main connection delivers none of its own heartbeats, whatever the lease says: the view survives', () => {
    const { n, run } = harness();
    run(200, ['1', '2', '3']);
    n.recomputeView();
    expect(n.ms.view).toEqual(['1', '2', '3']);
    // The main connection is silent for 2 s (nothing arrives on it), the lease holds.
    run(2000, []);
    // It delivers again: the others are still members.
    run(200, ['1', '2', '3']);
    expect(n.ms.view).toEqual(['1', '2', '3']);
  });

  it('still finds a silent node dead when its own heartbeats do arrive on the main connection', () => {
    const { n, run } = harness();
    run(200, ['1', '2', '3']);
    n.recomputeView();
    run(1000, ['1', '3']);
    expect(n.ms.view).toEqual(['1', '3']);
  });
});
