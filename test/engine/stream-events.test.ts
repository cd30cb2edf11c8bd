/**
 * `streamEvents` (src/engine/rewrite.ts): the sum the rewrite stage compares before and after a
 * segment to decide whether it owes a warn line. It is written out for speed, so this checks that
 * it counts every event STREAM_EVENT_KEYS names, and nothing else.
 */
import { describe, expect, it } from 'vitest';
import { STREAM_EVENT_KEYS, streamEvents } from '../../src/engine/rewrite.js';
import { newStreamCounters } from '../../src/stream/counters.js';

describe('streamEvents', () => {
  it('counts each stream event once and no other counter', () => {
    expect(STREAM_EVENT_KEYS.length).toBeGreaterThan(0);
    for (const k of STREAM_EVENT_KEYS) {
      const s = newStreamCounters();
      s[k] = 1;
      expect(streamEvents(s), k).toBe(1);
    }
    const others = newStreamCounters();
    for (const k of Object.keys(others) as (keyof typeof others)[]) {
      if (typeof others[k] === 'number' && !(STREAM_EVENT_KEYS as readonly string[]).includes(k)) (others as Record<string, number>)[k] = 7;
    }
    expect(streamEvents(others)).toBe(0);
  });
});
