/**
 * `--metrics`: the gateway's statistics as Prometheus metrics (src/engine/metrics.ts): names,
 * types and labels derived from the statistics, values read at scrape time, served over HTTP.
 */
import { describe, expect, it } from 'vitest';
import { GatewayMetrics, parseListen, samples, serveMetrics } from '../../src/engine/metrics.js';
import { Harness } from '../hostile/harness.js';

const CONFIG = `
rules:
  - name: web
    match: { port: 80 }
    agent: replace
    replace: [ { find: "Hello world", with: "Hi there" } ]
`;

function traffic(): Harness {
  const h = new Harness({}, {}, CONFIG);
  const c = h.connect(40000);
  h.send(c.data(0, 0, 'Hello world and Hello world'), 0);
  h.send(c.data(0, 27, 'x').slice(0, 30), 0); // a cut IPv4 header: malformed, counted by reason
  h.advance(5000);
  return h;
}

describe('metrics from statistics', () => {
  it('numbers become counters (_total) or gauges, maps keyed by reason or rule become labels', () => {
    const h = traffic();
    const s = samples(h.gw.stats() as unknown as Record<string, unknown>);
    const find = (name: string, labels: Record<string, string> = {}) => s.find((x) => x.name === name && JSON.stringify(x.labels) === JSON.stringify(labels));
    expect(find('tapgate_gateway_frames_in_total')).toMatchObject({ type: 'counter', value: h.gw.stats().gateway.framesIn });
    expect(find('tapgate_flows_active')).toMatchObject({ type: 'gauge', value: 1 });
    expect(find('tapgate_agents_replace_matches_total')).toMatchObject({ value: 2 });
    expect(find('tapgate_rules_connections_total', { rule: 'web' })).toMatchObject({ value: 1 });
    const malformed = s.filter((x) => x.name === 'tapgate_gateway_malformed_total');
    expect(malformed.length).toBeGreaterThan(0);
    expect(malformed.every((x) => typeof x.labels['reason'] === 'string')).toBe(true);
    expect(malformed.reduce((n, x) => n + x.value, 0)).toBe(1);
    expect(find('tapgate_agents_http_refused_total', { reason: 'chunk' })).toMatchObject({ value: 0 });
    expect(find('tapgate_agents_http_decoding_now')).toMatchObject({ type: 'gauge', value: 0 });
    // A level, not a count: the IPv6 addresses of the flows now in the table.
    expect(find('tapgate_flows_ipv6_addresses')).toMatchObject({ type: 'gauge', value: 0 });
    expect(s.some((x) => x.name === 'tapgate_flows_ipv6_addresses_total')).toBe(false);
    // Every name is a valid Prometheus metric name, and one name has one set of label names.
    const labelsOf = new Map<string, string>();
    for (const x of s) {
      expect(x.name).toMatch(/^[a-zA-Z_:][a-zA-Z0-9_:]*$/);
      const l = Object.keys(x.labels).sort().join(',');
      expect(labelsOf.get(x.name) ?? l, x.name).toBe(l);
      labelsOf.set(x.name, l);
    }
  });

  it('the exposition text is read at scrape time: a second scrape shows what happened since', async () => {
    const h = traffic();
    const m = new GatewayMetrics(() => h.gw.stats() as unknown as Record<string, unknown>);
    const t1 = await m.text();
    expect(t1).toMatch(/# TYPE tapgate_gateway_frames_in_total counter/);
    expect(t1).toMatch(/# TYPE tapgate_flows_active gauge/);
    expect(t1).toMatch(/tapgate_rules_connections_total\{rule="web"\} 1/);
    expect(t1).toMatch(/tapgate_gateway_malformed_total\{reason="[a-z0-9-]+"\} 1/);
    const n1 = Number(/^tapgate_gateway_frames_in_total (\d+)$/m.exec(t1)![1]);
    const c = h.connect(40001);
    h.send(c.data(0, 0, 'Hello world'), 0);
    h.advance(5000);
    const t2 = await m.text();
    expect(Number(/^tapgate_gateway_frames_in_total (\d+)$/m.exec(t2)![1])).toBe(n1 + 4);
    expect(t2).toMatch(/tapgate_rules_connections_total\{rule="web"\} 2/);
    expect(t2).toMatch(/^tapgate_agents_replace_matches_total 3$/m);
  });

  it('served over HTTP at /metrics; anything else is a 404', async () => {
    const h = traffic();
    const server = await serveMetrics(new GatewayMetrics(() => h.gw.stats() as unknown as Record<string, unknown>), '127.0.0.1', 0);
    try {
      const addr = server.address() as { port: number };
      const r = await fetch(`http://127.0.0.1:${addr.port}/metrics`);
      expect(r.status).toBe(200);
      expect(r.headers.get('content-type')).toMatch(/text\/plain/);
      expect(await r.text()).toMatch(/tapgate_gateway_frames_in_total \d+/);
      expect((await fetch(`http://127.0.0.1:${addr.port}/`)).status).toBe(404);
      // A port in use is an error, not a crash.
      await expect(serveMetrics(new GatewayMetrics(() => ({})), '127.0.0.1', addr.port)).rejects.toThrow(/EADDRINUSE/);
    } finally {
      server.close();
    }
  });

  it('HOST:PORT is checked', () => {
    expect(parseListen('127.0.0.1:9464')).toEqual({ host: '127.0.0.1', port: 9464 });
    expect(parseListen('[::1]:9464')).toEqual({ host: '::1', port: 9464 });
    expect(parseListen('localhost:1')).toEqual({ host: 'localhost', port: 1 });
    expect(parseListen('9464')).toMatch(/expected HOST:PORT/);
    expect(parseListen('h:70000')).toMatch(/out of range/);
  });
});
