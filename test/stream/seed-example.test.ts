/**
 * The seed's worked example ("Hello world" → "Hi there", end of the seed text) at the level of
 * one stream direction, packet for packet, with tapgate's G where it deliberately differs.
 * Positions here are 0-based; the seed's sequence numbers are 1-based (seed = pos + 1).
 */
import { describe, expect, it } from 'vitest';
import type { Agent, AgentOutput, Direction, Edit } from '../../src/agent/types.js';
import { newStreamCounters } from '../../src/stream/counters.js';
import { StreamDirection, type Release } from '../../src/stream/direction.js';
import { DEFAULT_LIMITS } from '../../src/stream/limits.js';

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

/** Returns, for each feed position, the seed's command (converted to 0-based). */
function scripted(script: Record<number, Edit[]>): Agent & { fed: Array<[number, string]> } {
  const fed: Array<[number, string]> = [];
  return {
    name: 'scripted',
    fed,
    feed(_d: Direction, pos: number, data: Uint8Array): AgentOutput {
      fed.push([pos, dec(data)]);
      return { edits: script[pos] ?? [] };
    },
    flush: () => ({ edits: [] }),
    snapshot: () => null,
  };
}

function seedDirection() {
  const agent = scripted({
    0: [{ at: 1, len: 2, data: enc('i') }], // seed <2,2,"i">
    3: [{ at: 3, len: 2, data: enc('') }], // seed <4,2,"">
    6: [{ at: 6, len: 3, data: enc('the') }], // seed <7,3,"the">
    9: [{ at: 9, len: 2, data: enc('re') }], // seed <10,2,"re">
  });
  const counters = newStreamCounters();
  const dir = new StreamDirection<string>('c2s', agent, { ...DEFAULT_LIMITS }, counters, { queueBytes: 0, storeBytes: 0 });
  const send = (seedSeq: number, text: string) => {
    const out: Release<string>[] = [];
    dir.onSegment({ pos: seedSeq - 1, payload: enc(text.replace(/_/g, ' ')), fin: false, rst: false, tag: text }, 0, out);
    return out.map((r) => [r.newPos + 1, dec(r.payload).replace(/ /g, '_')] as const);
  };
  const ack = (seedAck: number) => dir.onReceiverAck(seedAck - 1) + 1;
  return { dir, agent, counters, send, ack };
}

describe('the seed worked example, Hello world → Hi there', () => {
  it('releases the seed packets and translates the seed ACKs (with tapgate G)', () => {
    const { send, ack, agent, counters } = seedDirection();
    // (4,"lo_") arrives first: 4 > 1, delayed.
    expect(send(4, 'lo_')).toEqual([]);
    // (1,"Hel") processed → (1,"Hi"); then the delayed (4,"lo_") → (3,"_").
    expect(send(1, 'Hel')).toEqual([[1, 'Hi'], [3, '_']]);
    // ACK 3: the seed says 4; tapgate's G counts the deletion <4,2,""> at the ACK point → 6.
    expect(ack(3)).toBe(6);
    // ACK 4 → 7 as in the seed.
    expect(ack(4)).toBe(7);
    // (10,"ld") early → delayed; (4,"lo_wor") → only "wor" is processed → (3,"_the"); drain → (7,"re").
    expect(send(10, 'ld')).toEqual([]);
    expect(send(4, 'lo_wor')).toEqual([[3, '_the'], [7, 're']]);
    expect(ack(7)).toBe(10);
    expect(ack(9)).toBe(12);
    // Every original byte went to the agent exactly once, in order.
    expect(agent.fed).toEqual([[0, 'Hel'], [3, 'lo '], [6, 'wor'], [9, 'ld']]);
    expect(counters.delayed).toBe(2);
    expect(counters.drained).toBe(2);
  });

  it('maps an ACK inside a replacement to the replaced range start (5 → 7, not 8)', () => {
    const { send, dir } = seedDirection();
    send(1, 'Hel');
    send(4, 'lo_');
    send(4, 'lo_wor');
    // New 5 is the "h" of "the" (new 4..6): the sender must resend from 7 to regenerate it.
    expect(dir.unmap(5 - 1) + 1).toBe(7);
  });

  it('rewrites retransmissions with different boundaries to the same new stream', () => {
    const { send } = seedDirection();
    send(1, 'Hel');
    send(4, 'lo_');
    send(7, 'wor');
    send(10, 'ld');
    // The whole stream retransmitted as one segment, and as odd pieces.
    expect(send(1, 'Hello_world')).toEqual([[1, 'Hi_there']]);
    expect(send(3, 'llo_w')).toEqual([[3, '_the']]);
    expect(send(2, 'e')).toEqual([[2, 'i']]);
    expect(send(8, 'orl')).toEqual([[7, 're']]);
  });
});

describe('direction state is plain data', () => {
  it('continues identically after a JSON round trip of its state (what the cluster moves)', () => {
    const a = seedDirection();
    a.send(1, 'Hel');
    a.send(4, 'lo_');
    a.ack(4);
    const state = JSON.parse(JSON.stringify(a.dir.toJSON()));
    const agent = {
      name: 'scripted',
      feed: (_d: Direction, pos: number) => ({ edits: pos === 6 ? [{ at: 6, len: 3, data: enc('the') }] : pos === 9 ? [{ at: 9, len: 2, data: enc('re') }] : [] }),
      flush: () => ({ edits: [] }),
      snapshot: () => null,
    };
    const b = new StreamDirection<string>('c2s', agent, { ...DEFAULT_LIMITS }, newStreamCounters(), { queueBytes: 0, storeBytes: 0 });
    b.restore(state, 0);
    const out: Release<string>[] = [];
    b.onSegment({ pos: 3, payload: enc('lo wor'), fin: false, rst: false, tag: 'x' }, 0, out);
    b.onSegment({ pos: 9, payload: enc('ld'), fin: false, rst: false, tag: 'y' }, 0, out);
    expect(out.map((r) => [r.newPos + 1, dec(r.payload)])).toEqual([[3, ' the'], [7, 're']]);
    expect(b.unmap(8) + 1).toBe(12);
  });
});
