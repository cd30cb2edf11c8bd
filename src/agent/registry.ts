/**
 * Agent names → factories (docs/ARCHITECTURE.md §3). Rules in the config name an agent; the engine makes one
 * per connection with `createAgent`, and the cluster rebuilds one from a snapshot with
 * `restoreAgent`. Runtime handles (the monitor's sink) are bound when a registry is made, never
 * stored in agent state.
 */

import { createFtp, type FtpCounters, type FtpHooksProvider } from './ftp.js';
import { createHttp } from './http/agent.js';
import type { HttpCounters } from './http/counters.js';
import { createMonitor } from './monitor.js';
import type { MonitorSink } from './monitor.js';
import { createReplace, type ReplaceCounters } from './replace.js';
import type { Agent, AgentContext, AgentFactory } from './types.js';

/** Agents a rule may name. smtp will join. */
export const AGENT_NAMES = ['replace', 'monitor', 'ftp', 'http'] as const;
export type AgentName = (typeof AGENT_NAMES)[number];

export type AgentRegistry = ReadonlyMap<string, AgentFactory<unknown>>;

export interface RegistryOptions {
  /** Sink for every monitor agent's chunks. */
  monitorSink?: MonitorSink;
  /**
   * Translation hooks for each ftp agent (the gateway's NAT). Default: the rule's static
   * `clientAddress` / `serverAddress` mapping, no expectations.
   */
  ftpHooks?: FtpHooksProvider;
  /** Counters every replace agent adds to (`newReplaceCounters()`), e.g. for the gateway's stats. */
  replaceCounters?: ReplaceCounters;
  /** Counters every http agent adds to (`newHttpCounters()`). */
  httpCounters?: HttpCounters;
  /** Counters every ftp agent adds to (`newFtpCounters()`). */
  ftpCounters?: FtpCounters;
}

export { newReplaceCounters, type ReplaceCounters } from './replace.js';
export { newHttpCounters, type HttpCounters } from './http/counters.js';
export { newFtpCounters, type FtpCounters } from './ftp.js';

export function makeRegistry(opts: RegistryOptions = {}): AgentRegistry {
  return new Map<string, AgentFactory<unknown>>([
    ['replace', createReplace({ counters: opts.replaceCounters, joinMatches: true }) as AgentFactory<unknown>],
    ['monitor', createMonitor(opts.monitorSink) as AgentFactory<unknown>],
    ['ftp', createFtp(opts.ftpHooks, opts.ftpCounters) as AgentFactory<unknown>],
    ['http', createHttp(opts.httpCounters) as AgentFactory<unknown>],
  ]);
}

export const DEFAULT_REGISTRY: AgentRegistry = makeRegistry();

export function isAgentName(name: string): name is AgentName {
  return (AGENT_NAMES as readonly string[]).includes(name);
}

function factory(name: string, registry: AgentRegistry): AgentFactory<unknown> {
  const f = registry.get(name);
  if (f === undefined) {
    throw new Error(`unknown agent "${name}"; known: ${[...registry.keys()].join(', ')}`);
  }
  return f;
}

/** A new agent for a connection. Throws on an unknown name or a bad config. */
export function createAgent(
  name: string,
  cfg: unknown,
  ctx: AgentContext,
  registry: AgentRegistry = DEFAULT_REGISTRY,
): Agent {
  return factory(name, registry).create(cfg, ctx);
}

/** An agent rebuilt from `snapshot()` output (cluster takeover). */
export function restoreAgent(
  name: string,
  cfg: unknown,
  ctx: AgentContext,
  state: unknown,
  registry: AgentRegistry = DEFAULT_REGISTRY,
): Agent {
  return factory(name, registry).restore(cfg, ctx, state);
}
