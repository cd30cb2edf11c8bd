/**
 * Issue 7: a direction that only saw the handshake allocates no stores, queue or command array;
 * its state still serialises (version 1) and round-trips, and it works as before once data flows.
 */
import { describe, expect, it } from 'vitest';
import { ByteStore } from '../../src/stream/bytestore.js';
import { CommandList } from '../../src/stream/commands.js';
import { newStreamCounters } from '../../src/stream/counters.js';
import { StreamDirection, type Release } from '../../src/stream/direction.js';
import { DEFAULT_LIMITS } from '../../src/stream/limits.js';

const b = (s: string) => new Uint8Array(Buffer.from(s, 'latin1'));

describe('lazily allocated direction state', () => {
  it('an idle direction holds no busy state and a shared, frozen empty command list', () => {
    const d = new StreamDirection<string>('c2s', null, DEFAULT_LIMITS, newStreamCounters(), { queueBytes: 0 });
    const e = new StreamDirection<string>('s2c', null, DEFAULT_LIMITS, newStreamCounters(), { queueBytes: 0 });
    expect(d.onReceiverAck(0)).toBe(0);
    expect(d.mapEmpty(0)).toBe(0);
    expect(d.nextTimerMs()).toBe(Infinity);
    d.tick(1000, []);
    const raw = d as unknown as { busy: unknown; _cmds: unknown };
    expect(raw.busy).toBeNull();
    expect(raw._cmds).toBeNull();
    expect(d.cmds).toBe(e.cmds);
    expect(Object.isFrozen(d.cmds)).toBe(true);
    expect(d.finPos).toBe(-1);
    expect(d.heldBytes).toBe(0);
    expect(d.heldFrom).toBe(0);
    expect(d.queuedSegments).toBe(0);
    expect(d.dir).toBe('c2s');
    expect(e.dir).toBe('s2c');
  });

  it('idle state round-trips through toJSON / restore, and data then flows normally', () => {
    const d = new StreamDirection<string>('c2s', null, DEFAULT_LIMITS, newStreamCounters(), { queueBytes: 0 });
    const j = JSON.parse(JSON.stringify(d.toJSON()));
    expect(j).toMatchObject({ v: 1, x: 0, heldFrom: 0, held: '', finPos: -1, synth: null, store: { start: 0, data: '' } });
    const r = new StreamDirection<string>('c2s', null, DEFAULT_LIMITS, newStreamCounters(), { queueBytes: 0 });
    r.restore(j, 0);
    expect(JSON.parse(JSON.stringify(r.toJSON()))).toEqual(j);
    const out: Release<string>[] = [];
    r.onSegment({ pos: 5, payload: b('later'), fin: false, rst: false, tag: 'b' }, 0, out);
    expect(r.queuedSegments).toBe(1);
    r.onSegment({ pos: 0, payload: b('first'), fin: false, rst: false, tag: 'a' }, 0, out);
    expect(out.map((o) => [o.tag, o.newPos, Buffer.from(o.payload).toString()])).toEqual([
      ['a', 0, 'first'],
      ['b', 5, 'later'],
    ]);
    expect(r.queuedSegments).toBe(0);
    expect(r.x).toBe(10);
    r.dispose();
    expect(r.queuedSegments).toBe(0);
  });

  it('ByteStore and CommandList start with shared empty arrays and still work', () => {
    const s = new ByteStore(10);
    expect(s.read(0, 100)).toEqual(new Uint8Array(0));
    s.dropBelow(5);
    s.append(b('abc'));
    s.append(b('def'));
    expect(Buffer.from(s.read(10, 16)).toString()).toBe('abcdef');
    s.dropBelow(12);
    expect(Buffer.from(s.read(0, 100)).toString()).toBe('cdef');
    s.reset(20);
    expect(s.size).toBe(0);
    s.append(b('x'));
    expect(s.firstDifference(20, b('y'))).toBe(20);
    const t = new ByteStore(0);
    expect(t.size).toBe(0); // not affected by the other store
    const l = new CommandList();
    expect(l.list()).toEqual([]);
    expect(l.prune(100)).toBe(0);
    l.add(2, 1, b('XY'), 0);
    expect(l.map(3)).toBe(4);
    expect(l.prune(3)).toBe(1);
    expect(l.length).toBe(0);
    l.add(5, 0, b('Z'), 0);
    expect(l.map(5)).toBe(6);
    expect(new CommandList().list()).toEqual([]);
  });
});
