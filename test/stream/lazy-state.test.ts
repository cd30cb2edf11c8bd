/**
 * Issue 7: a direction that only saw the handshake allocates no stores, queue or command array;
 * its state still serialises (version 1) and round-trips, and it works as before once data flows.
 * Issue 18: a keep-alive direction whose bytes are all acknowledged drops that state again, and
 * the next exchange finds its positions where they were (normalisation, holds, commands).
 */
import { describe, expect, it } from 'vitest';
import type { Half } from '../../src/flow/table.js';
import { ByteStore } from '../../src/stream/bytestore.js';
import { Connection, type TcpFields, type TcpOut } from '../../src/stream/connection.js';
import { CommandList } from '../../src/stream/commands.js';
import { newStreamCounters } from '../../src/stream/counters.js';
import { StreamDirection, type Release } from '../../src/stream/direction.js';
import { DEFAULT_LIMITS } from '../../src/stream/limits.js';
import { literalAgent } from '../helpers/literal-agent.js';

const b = (s: string) => new Uint8Array(Buffer.from(s, 'latin1'));

describe('lazily allocated direction state', () => {
  it('an idle direction holds no busy state and a shared, frozen empty command list', () => {
    const d = new StreamDirection<string>('c2s', null, DEFAULT_LIMITS, newStreamCounters(), { queueBytes: 0, storeBytes: 0 });
    const e = new StreamDirection<string>('s2c', null, DEFAULT_LIMITS, newStreamCounters(), { queueBytes: 0, storeBytes: 0 });
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
    const d = new StreamDirection<string>('c2s', null, DEFAULT_LIMITS, newStreamCounters(), { queueBytes: 0, storeBytes: 0 });
    const j = JSON.parse(JSON.stringify(d.toJSON()));
    expect(j).toMatchObject({ v: 1, x: 0, heldFrom: 0, held: '', finPos: -1, synth: null, store: { start: 0, data: '' } });
    const r = new StreamDirection<string>('c2s', null, DEFAULT_LIMITS, newStreamCounters(), { queueBytes: 0, storeBytes: 0 });
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

  it('drops the busy part once everything is acknowledged; the next exchange normalises and holds at the right positions', () => {
    const counters = newStreamCounters();
    const d = new StreamDirection<string>('s2c', literalAgent('Hello world', 'Hi there'), DEFAULT_LIMITS, counters, { queueBytes: 0, storeBytes: 0 });
    const raw = d as unknown as { busy: unknown };
    const text = (o: Release<string>[]) => o.map((r) => Buffer.from(r.payload).toString('latin1')).join('');
    // One exchange: the response is processed, then acknowledged in full: nothing is kept.
    let out: Release<string>[] = [];
    d.onSegment({ pos: 0, payload: b('HTTP 200 Hello world\n'), fin: false, rst: false, tag: 'r1' }, 0, out);
    expect(text(out)).toBe('HTTP 200 Hi there\n');
    expect(raw.busy).not.toBeNull();
    d.onReceiverAck(d.map(21));
    expect(raw.busy).toBeNull();
    // The next response: its bytes are stored from position 21 (a retransmission with other
    // bytes is normalised to the first ones), and a split match is held and completed.
    out = [];
    d.onSegment({ pos: 21, payload: b('second Hello'), fin: false, rst: false, tag: 'r2' }, 10, out);
    expect(text(out)).toBe('second ');
    expect(d.heldBytes).toBe(5);
    expect(d.heldFrom).toBe(28);
    expect(d.nextTimerMs()).toBe(10 + DEFAULT_LIMITS.holdTimeoutMs);
    out = [];
    d.onSegment({ pos: 21, payload: b('SECOND'), fin: false, rst: false, tag: 'r2x' }, 20, out);
    expect(text(out)).toBe('second');
    expect(counters.normalized).toBe(1);
    out = [];
    d.onSegment({ pos: 33, payload: b(' world!'), fin: false, rst: false, tag: 'r3' }, 30, out);
    expect(text(out)).toBe('Hi there!');
    expect(out[0]!.newPos).toBe(d.map(21) + 7);
    d.onReceiverAck(d.map(40));
    expect(raw.busy).toBeNull();
    expect(d.sndAckOrg).toBe(40);
  });

  it('keeps the busy part while a hold, a FIN or unacknowledged bytes need it', () => {
    const d = new StreamDirection<string>('c2s', literalAgent('abc', 'X'), DEFAULT_LIMITS, newStreamCounters(), { queueBytes: 0, storeBytes: 0 });
    const raw = d as unknown as { busy: unknown };
    const out: Release<string>[] = [];
    d.onSegment({ pos: 0, payload: b('xxab'), fin: false, rst: false, tag: 'a' }, 0, out);
    d.onReceiverAck(2);
    expect(d.heldBytes).toBe(2);
    expect(raw.busy).not.toBeNull(); // held bytes
    d.onSegment({ pos: 4, payload: b('c'), fin: false, rst: false, tag: 'b' }, 0, out);
    expect(raw.busy).not.toBeNull(); // not acknowledged yet
    d.onReceiverAck(d.map(5));
    expect(raw.busy).toBeNull();
    d.onSegment({ pos: 5, payload: b(''), fin: true, rst: false, tag: 'f' }, 0, out);
    d.onReceiverAck(d.map(5) + 1);
    expect(raw.busy).not.toBeNull(); // the FIN's position stays known
    expect(d.finPos).toBe(5);
  });

  it('a bulk direction compacted at a full ACK starts its next store at the last ring\'s capacity', () => {
    const d = new StreamDirection<string>('s2c', literalAgent('never-here', 'X'), DEFAULT_LIMITS, newStreamCounters(), { queueBytes: 0, storeBytes: 0 });
    const raw = d as unknown as { busy: { store: ByteStore | null } | null };
    const out: Release<string>[] = [];
    const seg = new Uint8Array(60_000).fill(0x61);
    let pos = 0;
    for (let i = 0; i < 4; i++, pos += seg.length) d.onSegment({ pos, payload: seg, fin: false, rst: false, tag: 's' }, 0, out);
    const grown = raw.busy!.store!.capacity;
    expect(grown).toBeGreaterThanOrEqual(4 * seg.length);
    d.onReceiverAck(d.map(pos));
    expect(raw.busy).toBeNull();
    d.onSegment({ pos, payload: seg, fin: false, rst: false, tag: 's' }, 0, out);
    expect(raw.busy!.store!.capacity).toBe(grown); // not 64 KiB, then doubled (copying) again
  });

  it('an idle keep-alive connection keeps neither direction\'s busy part nor its last header fields', () => {
    const half = (isn: number): Half => ({ isn, mss: 1460, wscale: -1, sackPermitted: true, timestamps: false, finSeen: false, rstSeen: false });
    type Tag = { fields: TcpFields };
    const conn = new Connection<Tag>([half(1000), half(5000)], literalAgent('world', 'there'), DEFAULT_LIMITS, newStreamCounters(), { queueBytes: 0, storeBytes: 0 });
    const seg = (side: 0 | 1, seq: number, ack: number, data: string): TcpOut<Tag>[] => {
      const fields: TcpFields = { seq, ack, flags: 0x18, window: 65535, urgent: 0, sack: null };
      const out: TcpOut<Tag>[] = [];
      conn.handle(side, fields, b(data), { fields }, 0, out);
      return out;
    };
    const req = 'GET / HTTP/1.1\r\n\r\n';
    const res = 'HTTP/1.1 200 OK\r\n\r\nhello world';
    for (let i = 0; i < 2; i++) {
      const c = 1001 + i * req.length;
      const s0 = 5001 + i * res.length;
      seg(0, c, s0, req);
      const out = seg(1, s0, c + req.length, res);
      expect(Buffer.from(out[0]!.payload).toString()).toBe('HTTP/1.1 200 OK\r\n\r\nhello there');
      seg(0, c + req.length, out[0]!.fields.seq + out[0]!.payload.length, '');
      const raw = conn as unknown as { dirs: Array<{ busy: unknown }>; lastFields: unknown[] };
      expect(raw.dirs.map((d) => d.busy)).toEqual([null, null]);
      expect(raw.lastFields).toEqual([null, null]);
    }
  });
});
