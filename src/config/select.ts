/**
 * Rule selection: the first rule whose conditions all hold for a connection (`selectRule`, for
 * every new connection), first match wins.
 *
 * `RuleIndex` files the rules by the condition that narrows them most, so a connection is tried
 * against the few rules that can match it rather than every rule in order (with 20,000 address
 * rules, trying each took 10 ms per SYN: a SYN flood's cost). Each rule is
 * filed under one of its conditions, the one that matches the smallest share of connections:
 * a port set of at most MAX_KEY_PORTS ports (server, client or either side) under each of its
 * ports, an address condition under each of its blocks (by prefix length and network, per
 * family), a rule with neither (no conditions, or only wide port ranges) in a list tried always.
 * A lookup gathers the lists the connection's ports and addresses name and returns the lowest
 * rule index whose whole condition holds (`ruleMatches`): the same answer as trying every rule
 * in order. The shadow analysis of `tapgate check` (config/shadow.ts) asks it for the earlier
 * rules that match one connection of a rule: only those can take all of its connections.
 */

import { blockContains, type IpBlock } from '../wire/cidr.js';
import { BlockLists } from '../wire/block-lists.js';
import type { IpAddr } from '../wire/ip.js';
import type { PortRange } from './schema.js';
import type { Config, ConnKey, Matcher, Rule } from './load.js';

const inPorts = (rs: readonly PortRange[], p: number): boolean => rs.some((r) => p >= r.lo && p <= r.hi);
const inAddrs = (cs: readonly IpBlock[], a: IpAddr): boolean => cs.some((c) => blockContains(c, a));

export function ruleMatches(rule: Rule, c: ConnKey): boolean {
  const m = rule.match;
  return (
    rulePortsMatch(rule, c.clientPort, c.serverPort) &&
    (m.address === undefined || inAddrs(m.address, c.clientAddr) || inAddrs(m.address, c.serverAddr)) &&
    (m.clientAddress === undefined || inAddrs(m.clientAddress, c.clientAddr)) &&
    (m.serverAddress === undefined || inAddrs(m.serverAddress, c.serverAddr))
  );
}

/** The rule's port conditions hold for this client and server port (its addresses are not looked at). */
export function rulePortsMatch(rule: Rule, clientPort: number, serverPort: number): boolean {
  const m = rule.match;
  return (
    (m.port === undefined || inPorts(m.port, clientPort) || inPorts(m.port, serverPort)) &&
    (m.clientPort === undefined || inPorts(m.clientPort, clientPort)) &&
    (m.serverPort === undefined || inPorts(m.serverPort, serverPort))
  );
}

/** Each rule list's index, made at its first use (a config's rules are not changed after loading). */
const indexes = new WeakMap<readonly Rule[], RuleIndex>();

/** The index of a rule list (made once). */
export function ruleIndex(rules: readonly Rule[]): RuleIndex {
  let x = indexes.get(rules);
  if (x === undefined) indexes.set(rules, (x = new RuleIndex(rules)));
  return x;
}

/** The first rule matching the connection, or undefined (pass-through, no agent). */
export function selectRule(config: Config, conn: ConnKey): { rule: Rule; index: number } | undefined {
  const rules = config.rules;
  if (rules.length === 0) return undefined;
  const i = ruleIndex(rules).first(conn);
  return i < 0 ? undefined : { rule: rules[i]!, index: i };
}

/** A port condition naming more ports than this is not a key (each port is an entry). */
export const MAX_KEY_PORTS = 64;

/** Rule indices (ascending) by a number or string key. */
type Lists<K> = Map<K, number[]>;

function add<K>(m: Lists<K>, k: K, i: number): void {
  const l = m.get(k);
  if (l === undefined) m.set(k, [i]);
  else if (l[l.length - 1] !== i) l.push(i);
}

function fileByPorts(m: Lists<number>, rs: readonly PortRange[], i: number): void {
  for (const pr of rs) for (let p = pr.lo; p <= pr.hi; p++) add(m, p, i);
}

function portCount(rs: readonly PortRange[]): number {
  let n = 0;
  for (const r of rs) n += r.hi - r.lo + 1;
  return n;
}

/** The share of their space the blocks cover (2^-prefix each). */
function blockShare(bs: readonly IpBlock[]): number {
  let s = 0;
  for (const b of bs) s += 2 ** -b.prefix;
  return s;
}

type Key = 'serverPort' | 'clientPort' | 'port' | 'serverAddress' | 'clientAddress' | 'address';

type PortKey = 'serverPort' | 'clientPort' | 'port';
const PORT_KEYS: readonly PortKey[] = ['serverPort', 'clientPort', 'port'];

/** The condition a rule is filed under (the narrowest; `portsOnly`: of its port conditions), or null (tried always). */
export function keyOf(m: Matcher, portsOnly = false): Key | null {
  let best: Key | null = null;
  let share = Infinity;
  const consider = (k: Key, s: number): void => {
    if (s < share) {
      share = s;
      best = k;
    }
  };
  // Either-side conditions are looked up twice (both ports, both addresses): counted double.
  for (const k of PORT_KEYS) {
    const rs = m[k];
    if (rs === undefined) continue;
    const n = portCount(rs);
    if (n <= MAX_KEY_PORTS) consider(k, (n / 65536) * (k === 'port' ? 2 : 1));
  }
  if (portsOnly) return best;
  for (const k of ['serverAddress', 'clientAddress', 'address'] as const) {
    const bs = m[k];
    if (bs !== undefined) consider(k, blockShare(bs) * (k === 'address' ? 2 : 1));
  }
  return best;
}

export class RuleIndex {
  private readonly serverPort: Lists<number> = new Map();
  private readonly clientPort: Lists<number> = new Map();
  private readonly port: Lists<number> = new Map();
  private readonly serverAddress = new BlockLists();
  private readonly clientAddress = new BlockLists();
  private readonly address = new BlockLists();
  private readonly always: number[] = [];
  /** The rules again, filed by port conditions alone (`portsMatch`). */
  private readonly byPort: Record<PortKey, Lists<number>> = { serverPort: new Map(), clientPort: new Map(), port: new Map() };
  private readonly portsAlways: number[] = [];

  constructor(private readonly rules: readonly Rule[]) {
    rules.forEach((r, i) => {
      const m = r.match;
      const k = keyOf(m);
      if (k === null) this.always.push(i);
      else if (k === 'serverPort' || k === 'clientPort' || k === 'port') fileByPorts(this[k], m[k]!, i);
      else for (const b of m[k]!) this[k].add(b, i);
      const pk = keyOf(m, true) as PortKey | null;
      if (pk === null) this.portsAlways.push(i);
      else fileByPorts(this.byPort[pk], m[pk]!, i);
    });
  }

  /** Whether some rule's port conditions hold for these ports (its addresses not looked at: rulePortsMatch). */
  portsMatch(clientPort: number, serverPort: number): boolean {
    const b = this.byPort;
    for (const l of [this.portsAlways, b.serverPort.get(serverPort), b.clientPort.get(clientPort), b.port.get(serverPort), b.port.get(clientPort)]) {
      if (l === undefined) continue;
      for (const i of l) if (rulePortsMatch(this.rules[i]!, clientPort, serverPort)) return true;
    }
    return false;
  }

  /** The lists that may hold a rule matching `c` (every rule matching it is in one of them). */
  private lists(c: ConnKey): (readonly number[])[] {
    const out: (readonly number[])[] = [this.always];
    const push = (l: readonly number[] | undefined): void => {
      if (l !== undefined) out.push(l);
    };
    push(this.serverPort.get(c.serverPort));
    push(this.clientPort.get(c.clientPort));
    push(this.port.get(c.serverPort));
    if (c.clientPort !== c.serverPort) push(this.port.get(c.clientPort));
    this.serverAddress.lists(c.serverAddr, out);
    this.clientAddress.lists(c.clientAddr, out);
    this.address.lists(c.serverAddr, out);
    if (c.clientAddr !== c.serverAddr) this.address.lists(c.clientAddr, out);
    return out;
  }

  /** The index of the first rule matching `c` (as trying them in order), or -1. */
  first(c: ConnKey): number {
    let best = Infinity;
    for (const l of this.lists(c)) {
      for (const i of l) {
        if (i >= best) break;
        if (ruleMatches(this.rules[i]!, c)) {
          best = i;
          break;
        }
      }
    }
    return best === Infinity ? -1 : best;
  }

  /** The indices of every rule matching `c` below `below`, ascending. */
  matching(c: ConnKey, below = Infinity): number[] {
    const out = new Set<number>();
    for (const l of this.lists(c)) {
      for (const i of l) {
        if (i >= below) break;
        if (!out.has(i) && ruleMatches(this.rules[i]!, c)) out.add(i);
      }
    }
    return [...out].sort((a, b) => a - b);
  }
}
