/** The monitor never edits, counts per direction, hands chunks to its sink, and survives snapshot/restore. */
import { describe, expect, it } from 'vitest';
import { createMonitor, type MonitorSnapshot } from '../../src/agent/monitor.js';
import { AGENT_NAMES, createAgent, makeRegistry, restoreAgent } from '../../src/agent/registry.js';
import type { AgentContext, Direction } from '../../src/agent/types.js';

const ctx = (dirs: Direction[]): AgentContext => ({
  flowId: 'f#0',
  client: { addr: '10.0.0.1', port: 1 },
  server: { addr: '10.0.0.2', port: 2 },
  directions: new Set(dirs),
});

describe('monitor agent', () => {
  it('never edits, counts bytes and chunks per direction, passes chunks to the sink', () => {
    const seen: string[] = [];
    const f = createMonitor((dir, pos, data, c) => seen.push(`${c.flowId} ${dir}@${pos}:${Buffer.from(data).toString()}`));
    const a = f.create(undefined, ctx(['c2s', 's2c']));
    expect(a.feed('c2s', 0, Buffer.from('GET /'))).toEqual({ edits: [] });
    expect(a.feed('s2c', 0, Buffer.from('HTTP'))).toEqual({ edits: [] });
    expect(a.feed('c2s', 5, Buffer.from(' HTTP/1.1'))).toEqual({ edits: [] });
    expect(a.flush('c2s', 'fin')).toEqual({ edits: [] });
    expect(seen).toEqual(['f#0 c2s@0:GET /', 'f#0 s2c@0:HTTP', 'f#0 c2s@5: HTTP/1.1']);
    const snap = a.snapshot() as MonitorSnapshot;
    expect(snap.dirs.c2s).toEqual({ bytes: 14, chunks: 2, flushes: { fin: 1, rst: 0, timeout: 0, limit: 0, answer: 0 } });
    expect(snap.dirs.s2c.bytes).toBe(4);
  });

  it('records only the directions of its rule', () => {
    const seen: Direction[] = [];
    const a = createMonitor((d) => seen.push(d)).create(undefined, ctx(['s2c']));
    a.feed('c2s', 0, Buffer.from('x'));
    a.feed('s2c', 0, Buffer.from('y'));
    expect(seen).toEqual(['s2c']);
    expect((a.snapshot() as MonitorSnapshot).dirs.c2s.bytes).toBe(0);
  });

  it('continues counting after snapshot/restore through JSON', () => {
    const a = createMonitor().create(undefined, ctx(['c2s']));
    a.feed('c2s', 0, Buffer.from('abc'));
    const b = createMonitor().restore(undefined, ctx(['c2s']), JSON.parse(JSON.stringify(a.snapshot())));
    b.feed('c2s', 3, Buffer.from('de'));
    expect((b.snapshot() as MonitorSnapshot).dirs.c2s).toMatchObject({ bytes: 5, chunks: 2 });
    expect(() => b.feed('c2s', 9, Buffer.from('x'))).toThrow(/expected 5/);
  });
});

describe('agent registry', () => {
  it('creates and restores agents by name; unknown names are refused with the known ones', () => {
    expect(AGENT_NAMES).toEqual(['replace', 'monitor', 'ftp', 'http']);
    const r = createAgent('replace', [{ find: 'a', with: 'b' }], ctx(['c2s']));
    expect(r.name).toBe('replace');
    expect(r.feed('c2s', 0, Buffer.from('xa')).edits).toHaveLength(1);
    const r2 = restoreAgent('replace', [{ find: 'a', with: 'b' }], ctx(['c2s']), r.snapshot());
    expect(r2.feed('c2s', 2, Buffer.from('a')).edits[0]!.at).toBe(2);
    expect(createAgent('monitor', undefined, ctx(['c2s'])).name).toBe('monitor');
    expect(() => createAgent('ftpx', undefined, ctx(['c2s']))).toThrow(/unknown agent "ftpx"; known: replace, monitor, ftp, http/);
    expect(() => createAgent('replace', [], ctx(['c2s']))).toThrow(/non-empty/);
  });

  it('binds the monitor sink when the registry is made', () => {
    let n = 0;
    const reg = makeRegistry({ monitorSink: (_d, _p, data) => (n += data.length) });
    createAgent('monitor', undefined, ctx(['c2s']), reg).feed('c2s', 0, Buffer.from('abcd'));
    expect(n).toBe(4);
  });
});
