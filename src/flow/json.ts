/**
 * A flow as plain data (version 1), and its check when it comes from another node (the cluster
 * moves entries between nodes: an untrusted shape until checked).
 */
import type { Seq } from '../wire/seq.js';
import { ipFromJson, ipToJson } from '../wire/ip.js';
import type { Endpoint, FlowState, Half } from './flow.js';

/** An endpoint as plain data: an IPv4 address as its number, an IPv6 one as RFC 5952 text (wire/ip.ts ipToJson). */
export interface EndpointJson {
  addr: number | string;
  port: number;
}

export function endpointJson(e: Endpoint): EndpointJson {
  return { addr: ipToJson(e.addr), port: e.port };
}

/** A flow as plain JSON-able data (version 1): the cluster moves entries between nodes. */
export interface FlowJson {
  v: 1;
  client: EndpointJson;
  server: EndpointJson;
  midstream: boolean;
  state: FlowState;
  halves: [Half, Half];
  confirmed: boolean;
  seen: [boolean, boolean];
  /** The TAP the client's segments arrive on (Flow.clientFrom), when known. */
  clientFrom?: 0 | 1;
  createdMs: number;
  lastMs: number;
  closedMs: number;
}

export const FLOW_STATES: readonly FlowState[] = ['syn-sent', 'syn-received', 'established', 'closing', 'closed'];


/** A checked FlowJson, its endpoints as the table holds them (wire/ip.ts IpAddr). */
export type CheckedFlowJson = Omit<FlowJson, 'client' | 'server'> & { client: Endpoint; server: Endpoint };

/** Checks a FlowJson (from another node: untrusted shape); throws Error('flow: bad snapshot (…)'). */
export function validFlowJson(j: unknown): CheckedFlowJson {
  const bad = (why: string): never => {
    throw new Error(`flow: bad snapshot (${why})`);
  };
  if (typeof j !== 'object' || j === null) return bad('not an object');
  const o = j as Record<string, unknown>;
  if (o['v'] !== 1) return bad(`version ${String(o['v'])}`);
  const u32 = (x: unknown) => Number.isInteger(x) && (x as number) >= 0 && (x as number) <= 0xffffffff;
  const port = (x: unknown) => Number.isInteger(x) && (x as number) >= 0 && (x as number) <= 0xffff;
  const endpoint = (x: unknown, name: string): Endpoint => {
    const e = x as Record<string, unknown> | null;
    const addr = typeof e === 'object' && e !== null ? ipFromJson(e['addr']) : null;
    if (addr === null || !port(e!['port'])) return bad(name);
    return { addr, port: e!['port'] as number };
  };
  const client = endpoint(o['client'], 'client');
  const server = endpoint(o['server'], 'server');
  const bool = (x: unknown, name: string): boolean => (typeof x === 'boolean' ? x : bad(name));
  const time = (x: unknown, name: string): number => (Number.isFinite(x) ? (x as number) : bad(name));
  const pair = (x: unknown, name: string): unknown[] => (Array.isArray(x) && x.length === 2 ? x : bad(name));
  const half = (x: unknown, i: number): Half => {
    const h = x as Record<string, unknown> | null;
    const name = `halves[${i}]`;
    if (typeof h !== 'object' || h === null) return bad(name);
    const isn = h['isn'];
    if (isn !== undefined && isn !== null && !u32(isn)) return bad(`${name}.isn`);
    if (!port(h['mss'])) return bad(`${name}.mss`);
    const ws = h['wscale'];
    if (!Number.isInteger(ws) || (ws as number) < -1 || (ws as number) > 14) return bad(`${name}.wscale`);
    return {
      isn: isn === undefined || isn === null ? undefined : (isn as Seq),
      mss: h['mss'] as number,
      wscale: ws as number,
      sackPermitted: bool(h['sackPermitted'], `${name}.sackPermitted`),
      timestamps: bool(h['timestamps'], `${name}.timestamps`),
      finSeen: bool(h['finSeen'], `${name}.finSeen`),
      rstSeen: bool(h['rstSeen'], `${name}.rstSeen`),
    };
  };
  const state = o['state'];
  if (!FLOW_STATES.includes(state as FlowState)) return bad('state');
  const halves = pair(o['halves'], 'halves');
  const seen = pair(o['seen'], 'seen');
  return {
    v: 1,
    client,
    server,
    midstream: bool(o['midstream'], 'midstream'),
    state: state as FlowState,
    halves: [half(halves[0], 0), half(halves[1], 1)],
    confirmed: bool(o['confirmed'], 'confirmed'),
    seen: [bool(seen[0], 'seen[0]'), bool(seen[1], 'seen[1]')],
    ...(o['clientFrom'] === undefined ? {} : { clientFrom: o['clientFrom'] === 0 || o['clientFrom'] === 1 ? o['clientFrom'] : bad('clientFrom') }),
    createdMs: time(o['createdMs'], 'createdMs'),
    lastMs: time(o['lastMs'], 'lastMs'),
    closedMs: time(o['closedMs'], 'closedMs'),
  };
}
