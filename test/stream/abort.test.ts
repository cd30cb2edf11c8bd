/**
 * An agent that gives up on its connection (AgentOutput.abort, engine/abort.ts): the direction
 * keeps the reason until the connection takes it once; when the agent gives up with edits it may
 * not make, what it held and what it just got are deleted rather than passed (a broken agent
 * otherwise passes through unmodified).
 */
import { describe, expect, it } from 'vitest';
import type { Agent, AgentOutput } from '../../src/agent/types.js';
import { newStreamCounters } from '../../src/stream/counters.js';
import { StreamDirection, type Release } from '../../src/stream/direction.js';
import { DEFAULT_LIMITS } from '../../src/stream/limits.js';

const b = (s: string) => new Uint8Array(Buffer.from(s, 'latin1'));
const text = (r: Release<string>[]) => r.map((x) => Buffer.from(x.payload).toString('latin1')).join('');

/** Holds everything until it sees "!", then answers `then`. */
function agent(then: (pos: number, len: number) => AgentOutput): Agent {
  return {
    name: 'test',
    feed: (_dir, pos, data) => (Buffer.from(data).includes('!') ? then(pos, data.length) : { edits: [], undecidedFrom: 0 }),
    flush: () => ({ edits: [] }),
    snapshot: () => null,
  };
}

function direction(a: Agent) {
  const counters = newStreamCounters();
  return { d: new StreamDirection<string>('c2s', a, DEFAULT_LIMITS, counters, { queueBytes: 0, storeBytes: 0 }), counters };
}

describe('a direction whose agent gives up', () => {
  it('valid edits apply; the reason is taken once', () => {
    const { d } = direction(agent((pos, len) => ({ edits: [{ at: 0, len: pos + len, data: new Uint8Array(0) }], abort: 'why' })));
    const out: Release<string>[] = [];
    d.onSegment({ pos: 0, payload: b('secret '), fin: false, rst: false, tag: 't' }, 0, out);
    d.onSegment({ pos: 7, payload: b('more!'), fin: false, rst: false, tag: 't' }, 0, out);
    expect(text(out)).toBe('');
    expect(d.takeAbort()).toBe('why');
    expect(d.takeAbort()).toBeNull();
  });

  it('edits it may not make: the held and the new bytes are deleted, not passed (counted as a violation)', () => {
    const { d, counters } = direction(agent((pos, len) => ({ edits: [{ at: 0, len: pos + len + 50, data: b('x') }], abort: 'why' })));
    const out: Release<string>[] = [];
    d.onSegment({ pos: 0, payload: b('secret '), fin: false, rst: false, tag: 't' }, 0, out);
    d.onSegment({ pos: 7, payload: b('more!'), fin: false, rst: false, tag: 't' }, 0, out);
    expect(text(out)).toBe('');
    expect(counters.agentViolation).toBe(1);
    expect(d.takeAbort()).toBe('why');
    // Without an abort the same violation passes everything through, as before.
    const plain = direction(agent((pos, len) => ({ edits: [{ at: 0, len: pos + len + 50, data: b('x') }] })));
    const out2: Release<string>[] = [];
    plain.d.onSegment({ pos: 0, payload: b('secret '), fin: false, rst: false, tag: 't' }, 0, out2);
    plain.d.onSegment({ pos: 7, payload: b('more!'), fin: false, rst: false, tag: 't' }, 0, out2);
    expect(text(out2)).toBe('secret more!');
    expect(plain.d.takeAbort()).toBeNull();
  });
});

describe('after the agent gave up, within the same segment', () => {
  it('a queued segment drained after it is not fed to the agent and does not pass; nor does a FIN flush what was held', () => {
    let feeds = 0;
    const a: Agent = {
      name: 'test',
      feed: (_dir, pos, data) => {
        feeds++;
        const s = Buffer.from(data).toString('latin1');
        // Gives up at "!" with edits it may not make; otherwise a broken agent (invalid edits
        // pass everything unmodified) or one holding its bytes.
        if (s.includes('!')) return { edits: [{ at: 0, len: pos + data.length + 50, data: b('x') }], abort: 'why' };
        if (s.includes('LEAK')) return { edits: [{ at: 0, len: pos + data.length + 50, data: b('x') }] };
        return { edits: [], undecidedFrom: pos };
      },
      flush: () => ({ edits: [] }),
      snapshot: () => null,
    };
    const { d } = direction(a);
    const out: Release<string>[] = [];
    d.onSegment({ pos: 0, payload: b('secret '), fin: false, rst: false, tag: 't' }, 0, out);
    // Out of order: queued until the gap before it is filled.
    d.onSegment({ pos: 12, payload: b('LEAKED'), fin: true, rst: false, tag: 't' }, 0, out);
    d.onSegment({ pos: 7, payload: b('more!'), fin: false, rst: false, tag: 't' }, 0, out);
    expect(text(out)).toBe('');
    expect(feeds).toBe(2);
    expect(d.takeAbort()).toBe('why');
    expect(d.finProcessed).toBe(true);
  });
});
