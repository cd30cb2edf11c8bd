/**
 * Long rule lists, in process: what a new connection costs to select its rule (config/select.ts)
 * with 20,000 address rules, trying every rule in order (the baseline, what selection did before
 * the index) against the index, for a connection that matches a rule and one that matches none
 * (the cost of a SYN to anything else, a flood's); and `tapgate check`'s shadow analysis of 2,000
 * rules, every pair compared (the baseline) against the index's candidates.
 */
import { parseConfig, type Config, type ConnKey, type Rule } from '../config/index.js';
import { covers, shadowedRules } from '../config/shadow.js';
import { ruleMatches, selectRule } from '../config/select.js';

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

export function runRuleBench(opts: { rules?: number; shadowRules?: number; runs?: number } = {}): RuleBenchRow[] {
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
  if (sink === 0.5) console.log(sink);
  return rows;
}
