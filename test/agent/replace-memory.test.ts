/**
 * Issue 7: a replace agent compiles its rules once per config and keeps no per-direction state
 * until a direction is fed; agents sharing compiled rules stay independent.
 */
import { describe, expect, it } from 'vitest';
import { replaceFactory, type ReplaceConfig } from '../../src/agent/replace.js';
import type { AgentContext, Direction } from '../../src/agent/types.js';

const CTX: AgentContext = {
  flowId: 'test',
  client: { addr: '10.0.0.1', port: 40000 },
  server: { addr: '10.0.0.2', port: 80 },
  directions: new Set<Direction>(['c2s', 's2c']),
};
const CFG: ReplaceConfig = [{ find: 'PORT 40', with: 'PORT 41' }, { regex: 'a+b', with: '[$&]', maxMatch: 8 }];
const b = (s: string) => new Uint8Array(Buffer.from(s, 'latin1'));
const FRESH = { pos: 0, undecided: 0, prev: -1, tail: '' };

describe('replace agent state', () => {
  it('an agent never fed snapshots as fresh, flushes to nothing, and restores', () => {
    const a = replaceFactory.create(CFG, CTX);
    expect(a.name).toBe('replace');
    expect(a.snapshot()).toEqual({ v: 1, dirs: { c2s: FRESH, s2c: FRESH } });
    expect(a.flush('c2s', 'fin')).toEqual({ edits: [], undecidedFrom: 0 });
    expect(a.feed('s2c', 0, new Uint8Array(0))).toEqual({ edits: [], undecidedFrom: 0 });
    expect(a.snapshot()).toEqual({ v: 1, dirs: { c2s: FRESH, s2c: FRESH } });
    expect(() => a.feed('c2s', 3, b('x'))).toThrow(/expected 0/);
    const r = replaceFactory.restore(CFG, CTX, JSON.parse(JSON.stringify(a.snapshot())));
    expect(r.feed('c2s', 0, b('xx PORT 40')).edits.map((e) => e.at)).toEqual([3]);
  });

  it('agents of one config are independent (shared compiled rules, own state)', () => {
    const a = replaceFactory.create(CFG, CTX);
    const c = replaceFactory.create(CFG, CTX);
    const ra = a.feed('c2s', 0, b('zz PORT 4'));
    expect(ra.undecidedFrom).toBe(2); // the regex holds its last maxMatch - 1 bytes
    const rc = c.feed('c2s', 0, b('aab PORT 40!'));
    expect(rc.edits.map((e) => [e.at, e.len, Buffer.from(e.data).toString()])).toEqual([
      [0, 3, '[aab]'],
      [4, 7, 'PORT 41'],
    ]);
    const ra2 = a.feed('c2s', 9, b('0 aaab'));
    expect(ra2.edits.map((e) => [e.at, e.len])).toEqual([[3, 7]]);
    expect(a.snapshot()).toMatchObject({ dirs: { s2c: FRESH } });
    expect(c.snapshot()).toMatchObject({ dirs: { c2s: { pos: 12 }, s2c: FRESH } });
  });
});
