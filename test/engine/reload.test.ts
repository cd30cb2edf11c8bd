/**
 * Gateway.reload (SIGHUP, `lab reload`, `cluster reload`): new connections get the new rules,
 * connections in flight keep the rule and agent they started with, also when a cluster node
 * takes one over (the config digest in its state); a config changing the limits or the NAT
 * section is refused.
 */
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/index.js';
import { Gateway } from '../../src/engine/gateway.js';
import { DEFAULT_LIMITS } from '../../src/stream/limits.js';
import { Harness, payloadOf } from '../hostile/harness.js';

const rule = (find: string, to: string, name = 'web'): string => `
rules:
  - name: ${name}
    match: { port: 80 }
    agent: replace
    replace: [ { find: "${find}", with: "${to}" } ]
`;
const V1 = rule('secret', 'OLD');
const V2 = rule('secret', 'NEW');

const toServer = (h: Harness, from: number): string => h.out.slice(from).filter((g) => g.to === 1).map((g) => payloadOf(g.frame)).join('');

describe('Gateway.reload', () => {
  it('connections in flight keep their rule; new ones get the new rules; counters go on', () => {
    const h = new Harness({}, {}, V1);
    const a = h.connect(40000);
    h.send(a.data(0, 0, 'a secret, '), 0);
    const d0 = h.gw.stats().config.digest;
    h.gw.reload(parseConfig(V2, 'v2.yaml'));
    expect(h.gw.stats().config).toMatchObject({ reloads: 1, older: 1 });
    expect(h.gw.stats().config.digest).not.toBe(d0);
    let mark = h.out.length;
    h.send(a.data(0, 10, 'another secret'), 0);
    h.advance(5000);
    expect(toServer(h, mark)).toBe('another OLD');
    mark = h.out.length;
    const b = h.connect(40001);
    h.send(b.data(0, 0, 'a secret'), 0);
    h.advance(5000);
    expect(toServer(h, mark)).toBe('a NEW');
    // Per rule: connections, those running, rewrites (3 matches) and bytes added ("secret" → 3 letters).
    expect(h.gw.stats().rules).toEqual({ web: { connections: 2, active: 2, rewrites: 3, bytesAdded: { c2s: -9, s2c: 0 } } });
    // The same config again changes nothing but the count.
    h.gw.reload(parseConfig(V2, 'v2.yaml'));
    expect(h.gw.stats().config).toMatchObject({ reloads: 2, older: 1 });
  });

  it('a config that changes the limits or the NAT section is refused; the running one stays', () => {
    const h = new Harness({}, {}, V1);
    expect(() => h.gw.reload(parseConfig(`${V2}limits:\n  holdTimeoutMs: 123\n`, 'x.yaml'))).toThrow(/the limits section changed: restart/);
    expect(() => h.gw.reload(parseConfig(`${V2}nat:\n  masquerade:\n    - { side: client, sources: 10.0.0.0/24, address: 10.9.9.9 }\n`, 'x.yaml'))).toThrow(/nat section changed/);
    expect(h.gw.stats().config.reloads).toBe(0);
    const c = h.connect(40002);
    const mark = h.out.length;
    h.send(c.data(0, 0, 'a secret'), 0);
    h.advance(5000);
    expect(toServer(h, mark)).toBe('a OLD');
  });

  it('a node taking a connection over uses the config it started under (by digest), if it knows it', () => {
    const h = new Harness({}, {}, V1);
    const a = h.connect(40003);
    h.send(a.data(0, 0, 'x'), 0);
    h.gw.reload(parseConfig(V2, 'v2.yaml'));
    const f = [...(h.gw as unknown as { flows: { values(): Iterable<unknown> } }).flows.values()][0] as Parameters<Gateway['exportConnection']>[0];
    const st = JSON.parse(JSON.stringify(h.gw.exportConnection(f, [undefined, undefined])));
    expect(st.config).toMatch(/^[0-9a-f]{16}$/);
    const limits = { ...DEFAULT_LIMITS };
    // A node that reloaded the same way knows V1's digest: the connection keeps V1's rule.
    const knows = new Gateway({ config: parseConfig(V1, 'v1.yaml'), limits });
    knows.reload(parseConfig(V2, 'v2.yaml'));
    const hk = Object.assign(Object.create(Harness.prototype) as Harness, { gw: knows, out: [], now: 0 });
    expect(knows.importConnection(st, 0, [undefined, undefined])).not.toBeNull();
    hk.send(a.data(0, 1, ' secret'), 0);
    hk.advance(5000);
    expect(toServer(hk, 0)).toBe(' OLD');
    expect(knows.stats().gateway.importConfigUnknown).toBe(0);
    // A node that never had V1 goes on with its own rules, counted and logged.
    const fresh = new Gateway({ config: parseConfig(V2, 'v2.yaml'), limits });
    const hf = Object.assign(Object.create(Harness.prototype) as Harness, { gw: fresh, out: [], now: 0 });
    expect(fresh.importConnection(st, 0, [undefined, undefined])).not.toBeNull();
    hf.send(a.data(0, 1, ' secret'), 0);
    hf.advance(5000);
    expect(toServer(hf, 0)).toBe(' NEW');
    expect(fresh.stats().gateway.importConfigUnknown).toBe(1);
  });
});
