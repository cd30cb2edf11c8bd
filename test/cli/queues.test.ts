/**
 * `tapgate run --queues N`'s supervisor (src/cli/run-queues.ts) without a lab: the queues'
 * statistics summed into one, and what each queue process is started with.
 */
import { describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { mergeStats, queueEventsProblem, queuePaths } from '../../src/cli/run-queues.js';
import { queueProcessArgv } from '../../src/cli/run.js';

describe('run --queues', () => {
  it('sums counters and levels, keeps the largest uptime, the first config and non-numbers', () => {
    const a = { uptimeS: 10, vnetHdr: true, taps: { 'tap-c': { rxFrames: 5, queueDrops: 1 } }, gateway: { framesIn: 100, malformed: { short: 1 } }, flows: { active: 3 }, config: { digest: 'x', reloads: 1 } };
    const b = { uptimeS: 12, vnetHdr: true, taps: { 'tap-c': { rxFrames: 7 } }, gateway: { framesIn: 50, malformed: { bad: 2 } }, flows: { active: 4 }, config: { digest: 'x', reloads: 1 } };
    expect(mergeStats([a, b])).toEqual({
      uptimeS: 12,
      vnetHdr: true,
      taps: { 'tap-c': { rxFrames: 12, queueDrops: 1 } },
      gateway: { framesIn: 150, malformed: { short: 1, bad: 2 } },
      flows: { active: 7 },
      config: { digest: 'x', reloads: 1 },
    });
    expect(a.gateway.framesIn, 'inputs untouched').toBe(100);
  });

  it('a queue process gets the arguments without the supervisor\'s own (--queues, --metrics, --status)', () => {
    expect(queueProcessArgv(['--tap', 'a', '--tap', 'b', '--queues', '2', '--metrics', '127.0.0.1:9', '--status', '--config', 'c.yaml'])).toEqual(['--tap', 'a', '--tap', 'b', '--config', 'c.yaml']);
    expect(queueProcessArgv(['--queues=4', '--metrics=h:1', '--no-vnet-hdr', '--tap', 'a'])).toEqual(['--no-vnet-hdr', '--tap', 'a']);
  });

  it('gives each queue its own capture directory and events file; refuses an events path that is not a regular file', () => {
    expect(queuePaths(1, '/cap', '/var/log.d/ev.jsonl')).toEqual({ pcap: '/cap/queue1', events: '/var/log.d/ev.queue1.jsonl' });
    expect(queuePaths(0, undefined, 'events')).toEqual({ pcap: undefined, events: 'events.queue0' });
    const dir = mkdtempSync(join(tmpdir(), 'tapgate-qev-'));
    try {
      expect(queueEventsProblem(join(dir, 'new.jsonl')), 'a file to be made').toBeUndefined();
      writeFileSync(join(dir, 'old.jsonl'), '');
      expect(queueEventsProblem(join(dir, 'old.jsonl')), 'an existing file').toBeUndefined();
      expect(queueEventsProblem(dir)).toMatch(/not a regular file .*queue0/);
      expect(queueEventsProblem('/dev/null')).toMatch(/--events \/dev\/null with --queues: not a regular file/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
