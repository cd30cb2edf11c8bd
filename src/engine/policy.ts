/**
 * The fail-closed policy (`policy:` in the config): what happens to traffic a rule may cover
 * that the gateway cannot inspect. A rule is a promise that every byte of its connections goes
 * through its agent; what cannot keep that promise is dropped unless the user chose `pass`.
 * Every decision is counted by class (`stats().gateway.policy`), and the gateway logs each class
 * at a limited rate.
 *
 * Classes and when a rule "may cover" them:
 * - `ipv6-tcp` (setting `ipv6`): TCP over IPv6 the gateway does not rewrite (wire/frame.ts: in
 *   fragments, behind AH or a Routing header in flight, a broken chain; on a gateway with NAT,
 *   every IPv6 segment), when a rule's port conditions match its ports (addresses are
 *   not compared: a rule naming a host's IPv4 address covers that host, and its IPv6 address is
 *   not known here); without ports (a later fragment, an overlong extension-header chain)
 *   whenever any rule exists;
 * - tunnels and encapsulations (`encapsulated`; wire/opaque.ts names them): whenever any rule
 *   exists, since what they carry is not decoded;
 * - `source-routed` (`sourceRouted`): IPv4 TCP with a Loose or Strict Source Route option whose
 *   route is not done (wire/ipv4.ts sourceRoute): its header names the next hop, not the host it
 *   is for, so it is never decoded as TCP. Covered when a rule matches it, either orientation,
 *   towards the hop or an address of the route (ports from its TCP header); on a gateway with NAT
 *   when a rule's port conditions match (its rules see translated addresses, and the NAT stage
 *   makes the options of what it translates NOPs); without ports, whenever any rule exists;
 * - `midstream` (`midstream`): a TCP connection first seen without its handshake that a rule
 *   matches (either orientation: who opened it is unknown), or that cannot be tracked because the
 *   table is full. `inspect` attaches the rule's agent from the first byte seen instead.
 * Traffic no rule can cover is not the policy's business: it is bridged as before.
 */
import { ruleIndex, selectRule, DEFAULT_POLICY, type Config, type PolicyAction, type PolicySettings, type Rule } from '../config/index.js';
import type { Endpoint } from '../flow/table.js';
import type { OpaqueClass } from '../wire/opaque.js';

export type PolicyClass = OpaqueClass | 'midstream' | 'source-routed';

export function newPolicyCounters() {
  return {
    /** Frames dropped by the policy, by class. */
    dropped: {} as Record<string, number>,
    /** Frames passed uninspected because the config says `pass`, by class. */
    passed: {} as Record<string, number>,
  };
}

export class Policy {
  private readonly settings: Readonly<PolicySettings>;
  private readonly rules: readonly Rule[];

  /** `counters`: a reloaded config's policy goes on counting where the old one was. */
  constructor(
    private readonly config: Config | null,
    readonly counters = newPolicyCounters(),
  ) {
    this.settings = config?.policy ?? DEFAULT_POLICY;
    this.rules = config?.rules ?? [];
  }

  get midstreamAction(): PolicySettings['midstream'] {
    return this.settings.midstream;
  }

  /**
   * A frame carrying what wire/opaque.ts classified: 'pass' or 'drop' (counted either way when
   * a rule may cover it; uncovered traffic passes uncounted).
   */
  opaque(cls: OpaqueClass, srcPort?: number, dstPort?: number): PolicyAction {
    if (this.rules.length === 0) return 'pass';
    let action: PolicyAction;
    if (cls === 'ipv6-tcp') {
      if (srcPort !== undefined && dstPort !== undefined && !this.portsCovered(srcPort, dstPort)) return 'pass';
      action = this.settings.ipv6;
    } else action = this.settings.encapsulated;
    return this.count(cls, action);
  }

  /**
   * TCP from `src` (IPv4) with a source route in flight towards any of `dsts` (the hop its header
   * names and the route's addresses), ports when its header holds them: 'pass' or 'drop' (counted
   * either way when a rule may cover it; uncovered traffic passes uncounted).
   */
  sourceRouted(src: number, dsts: readonly number[], srcPort?: number, dstPort?: number): PolicyAction {
    if (this.rules.length === 0) return 'pass';
    if (srcPort !== undefined && dstPort !== undefined) {
      const from = { addr: src, port: srcPort };
      const covered = this.config?.nat !== undefined ? this.portsCovered(srcPort, dstPort) : dsts.some((addr) => this.covers(from, { addr, port: dstPort }));
      if (!covered) return 'pass';
    }
    return this.count('source-routed', this.settings.sourceRouted);
  }

  /** A rule's port conditions match a connection between these ports, either orientation (addresses not compared). */
  private portsCovered(a: number, b: number): boolean {
    const ix = ruleIndex(this.rules);
    return ix.portsMatch(a, b) || ix.portsMatch(b, a);
  }

  /**
   * Whether a rule matches a connection first seen mid-stream between `a` and `b`, and in which
   * orientation: true = only with `a` as the client, false = only with `b` as the client,
   * undefined = either way, or neither (no opinion: the table's guess stands).
   */
  midstreamRule(a: Endpoint, b: Endpoint): boolean | undefined {
    const [ab, ba] = this.orientations(a, b);
    return ab === ba ? undefined : ab;
  }

  /** A rule matches the connection with `client` as its client. */
  matches(client: Endpoint, server: Endpoint): boolean {
    const cfg = this.config;
    return cfg !== null && this.rules.length > 0 && selectRule(cfg, { clientAddr: client.addr, clientPort: client.port, serverAddr: server.addr, serverPort: server.port }) !== undefined;
  }

  /** A rule matches the connection between `a` and `b` in one orientation or the other. */
  covers(a: Endpoint, b: Endpoint): boolean {
    const [ab, ba] = this.orientations(a, b);
    return ab || ba;
  }

  /** Whether a rule matches with `a` as the client, and with `b` as the client. */
  private orientations(a: Endpoint, b: Endpoint): [boolean, boolean] {
    return [this.matches(a, b), this.matches(b, a)];
  }

  /** Counts a decision of class `cls`; returns it. */
  count(cls: PolicyClass, action: PolicyAction): PolicyAction {
    const c = action === 'drop' ? this.counters.dropped : this.counters.passed;
    c[cls] = (c[cls] ?? 0) + 1;
    return action;
  }
}
