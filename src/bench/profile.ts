/**
 * Summary of a V8 `.cpuprofile` (node --cpu-prof): self time per function, aggregated over
 * all nodes of the same function (name + script + line), largest first.
 */
import { copyFileSync, readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';

interface CpuProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number; columnNumber: number };
  hitCount?: number;
  children?: number[];
}

export interface CpuProfile {
  nodes: CpuProfileNode[];
  startTime: number;
  endTime: number;
  samples?: number[];
  timeDeltas?: number[];
}

export interface ProfileEntry {
  fn: string;
  where: string;
  selfMs: number;
  /** Share of all samples, in percent. */
  pct: number;
}

/** `(idle)` samples (the event loop waiting in epoll) are left out: percentages are of busy time. */
export function summarizeProfile(p: CpuProfile, top = 20, root = process.cwd()): ProfileEntry[] {
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const selfUs = new Map<number, number>();
  if (p.samples !== undefined && p.timeDeltas !== undefined && p.samples.length === p.timeDeltas.length) {
    // A sample's time is the delta to the next sample.
    for (let i = 0; i < p.samples.length; i++) {
      const dt = p.timeDeltas[i + 1] ?? 0;
      selfUs.set(p.samples[i]!, (selfUs.get(p.samples[i]!) ?? 0) + Math.max(0, dt));
    }
  } else {
    const total = p.nodes.reduce((s, n) => s + (n.hitCount ?? 0), 0) || 1;
    const per = (p.endTime - p.startTime) / total;
    for (const n of p.nodes) selfUs.set(n.id, (n.hitCount ?? 0) * per);
  }
  const agg = new Map<string, { fn: string; where: string; us: number }>();
  let all = 0;
  for (const [id, us] of selfUs) {
    const n = byId.get(id);
    if (n === undefined || n.callFrame.functionName === '(idle)') continue;
    all += us;
    const cf = n.callFrame;
    const fn = cf.functionName || '(anonymous)';
    let file = cf.url.replace(/^file:\/\//, '');
    if (file.startsWith('/')) file = relative(root, file);
    const where = file ? `${file}:${cf.lineNumber + 1}` : '';
    const key = `${fn}@${where}`;
    const e = agg.get(key) ?? { fn, where, us: 0 };
    e.us += us;
    agg.set(key, e);
  }
  return [...agg.values()]
    .sort((a, b) => b.us - a.us)
    .slice(0, top)
    .map((e) => ({ fn: e.fn, where: e.where, selfMs: Math.round(e.us / 100) / 10, pct: Math.round((e.us / (all || 1)) * 1000) / 10 }));
}

export function summarizeProfileFile(file: string, top = 20): ProfileEntry[] {
  return summarizeProfile(JSON.parse(readFileSync(file, 'utf8')) as CpuProfile, top);
}

/** `argv` (node, then its script) with V8's CPU profiler on: a graceful exit writes a .cpuprofile into `dir`. */
export function profiledArgv(argv: readonly string[], dir: string): string[] {
  return [argv[0]!, '--cpu-prof', '--cpu-prof-dir', dir, ...argv.slice(1)];
}

/**
 * The top self-time functions of the profile a `profiledArgv` process wrote into `dir`, the file
 * copied to `keep` when given; undefined when none was written.
 */
export function readProfileDir(dir: string, keep?: string, top = 20): ProfileEntry[] | undefined {
  const name = readdirSync(dir).find((f) => f.endsWith('.cpuprofile'));
  if (name === undefined) return undefined;
  if (keep !== undefined) copyFileSync(join(dir, name), keep);
  return summarizeProfileFile(join(dir, name), top);
}
