/**
 * Long rule lists, in process: what a new connection costs to select its rule (config/select.ts)
 * with 20,000 address rules, trying every rule in order (the baseline, what selection did before
 * the index) against the index, for a connection that matches a rule and one that matches none
 * (the cost of a SYN to anything else, a flood's); and `tapgate check`'s shadow analysis of 2,000
 * rules, every pair compared (the baseline) against the index's candidates. The same for NAT's
 * lists: an IPv6 packet's NPTv6 mapping among 2,000 (each tried in turn, the baseline, against the
 * index of their blocks), and the config check's overlap test of 10,000 1:1 mappings (every pair,
 * against the sorted sweep).
 */
import { parseConfig, type Config, type ConnKey, type Rule } from '../config/index.js';
import { covers, shadowedRules } from '../config/shadow.js';
import { ruleMatches, selectRule } from '../config/select.js';
import { natConfig, natConfigProblems } from '../nat/nat.js';
import { nptv6Addresses, type Nptv6 } from '../nat/nptv6.js';
import { blockContains, blockWithin, type Cidr, type Cidr6 } from '../wire/cidr.js';
import { ipv6Key } from '../wire/ip.js';

export interface RuleBenchRow {
  name: string;
  /** Microseconds per selection (or per analysis, for the shadow rows). */
  us: number;
  /** The baseline's time over this row's. */
  speedup: number;
}

function addressRules(n: number): Config {
  const text = `rules:\n${Array.from({ length: n }, (_, i) => `  - match: { serverAddress: 10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}, port: 80 }\n    agent: replace\n    replace: [ { find: "x${i}", with: "y" } ]\n`).join('')}`;
  return parseConfig(text, 'rules.yaml');
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

/** Median µs per call of `f` over `runs` runs of `calls` calls. */
function time(runs: number, calls: number, f: () => void): number {
  const ts: number[] = [];
  for (let r = 0; r < runs + 1; r++) {
    const t = performance.now();
    for (let i = 0; i < calls; i++) f();
    if (r > 0) ts.push(((performance.now() - t) * 1000) / calls); // the first run warms up
  }
  return median(ts);
}

export function runRuleBench(opts: { rules?: number; shadowRules?: number; nptv6?: number; mappings?: number; runs?: number } = {}): RuleBenchRow[] {
  const n = opts.rules ?? 20_000;
  const runs = opts.runs ?? 5;
  const config = addressRules(n);
  const rules: readonly Rule[] = config.rules;
  const hit: ConnKey = { clientAddr: 0x0b000001, clientPort: 40000, serverAddr: (0x0a000000 + n - 1) >>> 0, serverPort: 80 };
  const miss: ConnKey = { ...hit, serverAddr: 0x0c000001 };
  let sink = 0;
  const inOrder = (c: ConnKey) => () => {
    sink += rules.findIndex((r) => ruleMatches(r, c));
  };
  const indexed = (c: ConnKey) => () => {
    sink += selectRule(config, c)?.index ?? -1;
  };
  const rows: RuleBenchRow[] = [];
  for (const [what, c] of [['the last rule matches', hit], ['no rule matches', miss]] as const) {
    const base = time(runs, 20, inOrder(c));
    rows.push({ name: `select, ${n.toLocaleString('en-US')} address rules, ${what}: every rule in order (baseline)`, us: base, speedup: 1 });
    const t = time(runs, 20_000, indexed(c));
    rows.push({ name: `select, ${n.toLocaleString('en-US')} address rules, ${what}: index`, us: t, speedup: base / t });
  }
  const m = opts.shadowRules ?? 2000;
  const few = addressRules(m).rules;
  const pairs = time(Math.min(runs, 3), 1, () => {
    few.forEach((r, i) => {
      if (few.slice(0, i).some((e) => covers(e.match, r.match))) sink++;
    });
  });
  rows.push({ name: `check's shadow analysis, ${m.toLocaleString('en-US')} rules: every pair (baseline)`, us: pairs, speedup: 1 });
  const ix = time(Math.min(runs, 3), 1, () => {
    sink += shadowedRules(few).length;
  });
  rows.push({ name: `check's shadow analysis, ${m.toLocaleString('en-US')} rules: index`, us: ix, speedup: pairs / ix });
  rows.push(...natRows(runs, opts.nptv6 ?? 2000, opts.mappings ?? 10_000));
  if (sink === 0.5) console.log(sink);
  return rows;
}

/** NPTv6 lookups and the NAT config check with long mapping lists (see the file comment). */
function natRows(runs: number, n6: number, n4: number): RuleBenchRow[] {
  const rows: RuleBenchRow[] = [];
  let sink = 0;
  const block6 = (a: number, b: number): Cidr6 => {
    const bytes = new Uint8Array(16);
    bytes.set([a >> 8, a & 255, 0x0d, 0xb8, b >> 8, b & 255]);
    return { family: 6, bytes, prefix: 48 };
  };
  const maps: Nptv6[] = Array.from({ length: n6 }, (_, i) => ({ side: 0, real: block6(0xfd00, i), mapped: block6(0x2001, i) }));
  // A packet from the last mapping's hosts, to an address no mapping holds.
  const pkt = new Uint8Array(40);
  pkt.set(maps[n6 - 1]!.real.bytes, 8);
  pkt[23] = 1;
  pkt.set([0x20, 0x01, 0x0d, 0xb9], 24);
  const work = new Uint8Array(40);
  const inTurn = time(runs, 2000, () => {
    const src = ipv6Key(pkt, 8);
    const dst = ipv6Key(pkt, 24);
    sink += maps.findIndex((m) => m.side === 0 && blockContains(m.real, src)) + maps.findIndex((m) => m.side !== 0 && blockContains(m.mapped, dst));
  });
  rows.push({ name: `NPTv6, ${n6.toLocaleString('en-US')} mappings, an IPv6 packet's addresses: each mapping in turn (baseline)`, us: inTurn, speedup: 1 });
  const ix = time(runs, 20_000, () => {
    work.set(pkt);
    sink += nptv6Addresses(maps, work, 0, 0) === 'translated' ? 1 : 0;
  });
  rows.push({ name: `NPTv6, ${n6.toLocaleString('en-US')} mappings, an IPv6 packet's addresses: index`, us: ix, speedup: inTurn / ix });
  const cidr = (addr: number): Cidr => ({ addr, prefix: 32, mask: 0xffffffff });
  const one = Array.from({ length: n4 }, (_, i) => ({ side: 0 as const, real: cidr(0x0a000000 + i), mapped: cidr(0x0b000000 + i) }));
  const pairs = time(1, 1, () => {
    for (let i = 0; i < n4; i++) {
      for (let j = 0; j < i; j++) {
        const a = one[i]!;
        const b = one[j]!;
        if (blockWithin(a.real, b.real) || blockWithin(b.real, a.real) || blockWithin(a.mapped, b.mapped) || blockWithin(b.mapped, a.mapped)) sink++;
      }
    }
  });
  rows.push({ name: `NAT config check, ${n4.toLocaleString('en-US')} 1:1 mappings, overlaps: every pair (baseline)`, us: pairs, speedup: 1 });
  const cfg = natConfig({ oneToOne: one });
  const sweep = time(Math.min(runs, 3), 1, () => {
    sink += natConfigProblems(cfg).length;
  });
  rows.push({ name: `NAT config check, ${n4.toLocaleString('en-US')} 1:1 mappings: sorted sweep`, us: sweep, speedup: pairs / sweep });
  if (sink === 0.5) console.log(sink);
  return rows;
}
