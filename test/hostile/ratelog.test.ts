/**
 * The log rate limiter: at most N lines per key per interval, then one "suppressed K" summary.
 */
import { describe, expect, it } from 'vitest';
import { RATELOG_OVERFLOW_KEY, RateLog } from '../../src/util/ratelog.js';

function collect() {
  const lines: Array<{ o: Record<string, unknown>; m: string }> = [];
  return { lines, sink: (o: Record<string, unknown>, m: string) => void lines.push({ o, m }) };
}

describe('RateLog', () => {
  it('writes at most N lines per key per interval and summarizes the rest when the interval is over', () => {
    const { lines, sink } = collect();
    const r = new RateLog(sink, { maxPerInterval: 2, intervalMs: 1000 });
    for (let i = 0; i < 10; i++) r.log('a', 100 + i, { i }, 'bad a');
    expect(lines.map((l) => l.o['i'])).toEqual([0, 1]);
    r.flush(500);
    expect(lines.length).toBe(2); // interval not over yet
    r.flush(1100);
    expect(lines[2]!.o).toMatchObject({ key: 'a', suppressed: 8 });
    expect(lines[2]!.m).toBe('suppressed 8 similar log lines');
    expect(r.counters).toEqual({ lines: 3, suppressed: 8 });
  });

  it('keeps keys apart, and a new interval starts with its summary then fresh lines', () => {
    const { lines, sink } = collect();
    const r = new RateLog(sink, { maxPerInterval: 1, intervalMs: 1000 });
    r.log('a', 0, {}, 'a');
    r.log('b', 0, {}, 'b');
    r.log('a', 10, {}, 'a');
    r.log('a', 1500, {}, 'a');
    expect(lines.map((l) => [l.o['key'], l.o['suppressed']])).toEqual([['a', undefined], ['b', undefined], ['a', 1], ['a', undefined]]);
  });

  it('bounds the number of keys; extra keys share one overflow key', () => {
    const { lines, sink } = collect();
    const r = new RateLog(sink, { maxPerInterval: 1, intervalMs: 1000, maxKeys: 2 });
    for (let i = 0; i < 100; i++) r.log(`k${i}`, 0, {}, 'x');
    expect(lines.map((l) => l.o['key'])).toEqual(['k0', 'k1', RATELOG_OVERFLOW_KEY]);
    expect(r.counters.suppressed).toBe(97);
  });

  it('does not stay silent when the clock goes back', () => {
    const { lines, sink } = collect();
    const r = new RateLog(sink, { maxPerInterval: 1, intervalMs: 1000 });
    r.log('a', 5000, {}, 'a');
    r.log('a', 5001, {}, 'a');
    r.log('a', 10, {}, 'a');
    expect(lines.length).toBe(3); // the line, the summary of the one suppressed, the new line
  });
});
