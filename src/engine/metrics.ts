/**
 * `--metrics HOST:PORT`: the gateway's statistics as Prometheus metrics at `/metrics`
 * (prom-client's registry and text format), read from `stats()` when scraped: nothing is added
 * to the frame path.
 *
 * Names: every number in the statistics object becomes `tapgate_<path>` (camelCase as
 * snake_case, path parts joined by `_`): counters end in `_total`, the levels listed in
 * `GAUGES` do not. Maps keyed by something that varies become one metric with a label
 * (`LABELLED`): drops by reason, http refusals by reason, per TAP, per impairment point.
 * Booleans are gauges 0/1. README "Operating" lists the main ones.
 */

import { createServer, type Server } from 'node:http';
import { Counter, Gauge, Registry } from 'prom-client';

/** Paths (dotted, as in the statistics) whose keys become a label, with the label's name. */
const LABELLED: ReadonlyArray<[string, string]> = [
  ['taps', 'tap'],
  ['impair', 'point'],
  ['gateway.malformed', 'reason'],
  ['gateway.natDropped', 'reason'],
  ['gateway.tcpInvalid', 'reason'],
  ['gateway.policy.dropped', 'class'],
  ['gateway.policy.passed', 'class'],
  ['agents.http.refused', 'reason'],
  ['rules', 'rule'],
];

/** Levels, not counts (gauges); the rest are counters. */
const GAUGES: ReadonlySet<string> = new Set([
  'uptimeS',
  'flows.active',
  'flows.halfOpen',
  'flows.handshakeTombs',
  'flows.ipv6Addresses',
  'stream.queuedBytes',
  'stream.storedBytes',
  'storePool.rings',
  'storePool.bytes',
  'nat.entries',
  'nat.expectations',
  'nat.externalReserved',
  'cluster.ready',
  'cluster.draining',
  'cluster.connected',
  'cluster.syncOk',
  'cluster.spares',
  'cluster.spareAgeMaxMs',
  'cluster.syncLagMs',
  'cluster.heldBytes',
  'rules.active',
  // Net bytes the rewriting added: may go down (a rule that shortens).
  'rules.bytesAdded.c2s',
  'rules.bytesAdded.s2c',
  'impair.pending.held',
  'impair.pending.delay',
  'impair.pending.rate',
  'impair.pending.bytes',
  // http bodies being decoded now (the agent's maxDecoding bound).
  'agents.http.decodingNow',
]);

export interface Sample {
  name: string;
  type: 'counter' | 'gauge';
  labels: Record<string, string>;
  value: number;
  /** The statistics path it comes from, without labelled keys (the metric's help text). */
  path: string;
}

const snake = (s: string): string => s.replace(/([a-z0-9])([A-Z])/g, '$1_$2').replace(/[^A-Za-z0-9_]/g, '_').toLowerCase();

/** Every number (and boolean) of a statistics object as a sample (see the file comment). */
export function samples(stats: Record<string, unknown>): Sample[] {
  const out: Sample[] = [];
  /** `path`: where in the object; `named`: the path without the keys that became labels. */
  const walk = (o: Record<string, unknown>, path: string[], named: string[], labels: Record<string, string>): void => {
    const label = LABELLED.find(([at]) => at === path.join('.'))?.[1];
    for (const [k, v] of Object.entries(o)) {
      const n = label !== undefined ? named : [...named, k];
      const ls = label !== undefined ? { ...labels, [label]: k } : labels;
      if (typeof v === 'number' || typeof v === 'boolean') {
        if (typeof v === 'number' && !Number.isFinite(v)) continue;
        const gauge = typeof v === 'boolean' || GAUGES.has(n.join('.'));
        const base = `tapgate_${n.map(snake).join('_')}`;
        out.push({ name: gauge ? base : `${base}_total`, type: gauge ? 'gauge' : 'counter', labels: ls, value: Number(v), path: n.join('.') });
      } else if (typeof v === 'object' && v !== null && !Array.isArray(v)) {
        walk(v as Record<string, unknown>, [...path, k], n, ls);
      }
    }
  };
  walk(stats, [], [], {});
  return out;
}

/** A prom-client registry whose metrics are read from `read()` at every scrape. */
export class GatewayMetrics {
  readonly registry = new Registry();
  private readonly known = new Map<string, Counter | Gauge>();

  constructor(private readonly read: () => Record<string, unknown>) {}

  /** The exposition text of the statistics as they are now. */
  async text(): Promise<string> {
    const now = samples(this.read());
    const byName = new Map<string, Sample[]>();
    for (const s of now) {
      let l = byName.get(s.name);
      if (l === undefined) byName.set(s.name, (l = []));
      l.push(s);
    }
    for (const [name, list] of byName) {
      let m = this.known.get(name);
      if (m === undefined) {
        const labelNames = Object.keys(list[0]!.labels);
        const help = `tapgate statistics: ${list[0]!.path}${labelNames.length > 0 ? ` by ${labelNames.join(', ')}` : ''}`;
        m = list[0]!.type === 'gauge'
          ? new Gauge({ name, help, labelNames, registers: [this.registry] })
          : new Counter({ name, help, labelNames, registers: [this.registry] });
        this.known.set(name, m);
      }
      m.reset();
      for (const s of list) {
        if (m instanceof Gauge) m.set(s.labels, s.value);
        else if (s.value >= 0) m.inc(s.labels, s.value);
      }
    }
    return this.registry.metrics();
  }
}

/** HOST:PORT (IPv4, a name, or [IPv6]) → its parts, or an error message. */
export function parseListen(s: string): { host: string; port: number } | string {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]\s]+)):(\d{1,5})$/.exec(s);
  if (m === null) return `--metrics: expected HOST:PORT (e.g. 127.0.0.1:9464), got '${s}'`;
  const port = Number(m[3]);
  if (port < 1 || port > 65535) return `--metrics: port ${port} out of range 1-65535`;
  return { host: m[1] ?? m[2]!, port };
}

/** Serves `/metrics` on host:port; resolves when listening, rejects with the listen error. */
export function serveMetrics(m: GatewayMetrics, host: string, port: number): Promise<Server> {
  const server = createServer((req, res) => {
    if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('tapgate: only GET /metrics here\n');
      return;
    }
    m.text().then(
      (body) => res.writeHead(200, { 'content-type': m.registry.contentType }).end(body),
      (e: unknown) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`tapgate: ${(e as Error).message}\n`),
    );
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve(server);
    });
  });
}
