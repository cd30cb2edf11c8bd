/**
 * Long fuzz run (issue 6): the properties of src/bench/fuzz.ts (the same ones test/fuzz runs with
 * fixed seeds), with fresh seeds until time runs out.
 *
 *   npx tsx scripts/fuzz.ts --seconds 600 --seed 1 [--target all|decode|gateway|bytes] [--batch 500]
 *
 * Prints cases/s per target every 10 s. On a failure: the target, the seed and the path that
 * reproduce it (fc.assert(prop, { seed, path, numRuns })), the shrunk counterexample, and exit 1.
 */
import fc from 'fast-check';
import { join } from 'node:path';
import {
  decodeProperty,
  gatewayProperty,
  ipv6Corpus,
  loadCorpus,
  randomBytesDecodeProperty,
  randomBytesGatewayProperty,
} from '../src/bench/fuzz.js';

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1]! : def;
}

const seconds = Number(arg('seconds', '60'));
let seed = Number(arg('seed', String(Date.now() % 1_000_000)));
const target = arg('target', 'all');
const batch = Number(arg('batch', '500'));
if (!(seconds > 0) || !Number.isInteger(seed) || !(batch > 0)) {
  console.error('usage: npx tsx scripts/fuzz.ts --seconds N --seed N [--target all|decode|gateway|bytes] [--batch N]');
  process.exit(2);
}

const v4 = await loadCorpus(join(import.meta.dirname, '../test/fixtures'));
const corpus = [...v4, ...v4.map((c) => ipv6Corpus(c)), ipv6Corpus(v4[0]!, true)];
const targets: Array<[string, fc.IProperty<never>]> = (
  [
    ['decode', decodeProperty(corpus)],
    ['bytes-decode', randomBytesDecodeProperty()],
    ['bytes-gateway', randomBytesGatewayProperty(corpus)],
    ['gateway', gatewayProperty(corpus)],
  ] as Array<[string, fc.IProperty<never>]>
).filter(([n]) => target === 'all' || n === target || (target === 'bytes' && n.startsWith('bytes')));
if (targets.length === 0) {
  console.error(`unknown target ${target}`);
  process.exit(2);
}

const firstSeed = seed;
const cases = new Map<string, { n: number; ms: number }>(targets.map(([n]) => [n, { n: 0, ms: 0 }]));
const end = Date.now() + seconds * 1000;
let lastReport = Date.now();
console.log(`fuzz: targets ${targets.map(([n]) => n).join(', ')}; first seed ${firstSeed}; ${seconds} s; corpus ${corpus.map((c) => `${c.name} (${c.frames.length})`).join(', ')}`);

function report(final: boolean): void {
  const parts = [...cases].map(([n, c]) => `${n} ${c.n} cases, ${c.ms > 0 ? Math.round((c.n * 1000) / c.ms) : 0}/s`);
  console.log(`${final ? 'done' : 'running'}: seeds ${firstSeed}..${seed - 1}; ${parts.join('; ')}`);
}

while (Date.now() < end) {
  for (const [name, prop] of targets) {
    const t0 = performance.now();
    const r = fc.check(prop, { seed, numRuns: batch });
    const c = cases.get(name)!;
    c.n += r.numRuns;
    c.ms += performance.now() - t0;
    if (r.failed) {
      console.log(`FAIL ${name}: seed ${seed} path "${r.counterexamplePath ?? ''}" after ${r.numRuns} runs`);
      console.log(`reproduce: fc.assert(<${name} property>, { seed: ${seed}, path: "${r.counterexamplePath ?? ''}", numRuns: ${batch} })`);
      console.log(`error: ${r.errorInstance instanceof Error ? (r.errorInstance.stack ?? r.errorInstance.message) : String(r.errorInstance)}`);
      console.log(`counterexample: ${fc.stringify(r.counterexample)}`);
      report(true);
      process.exit(1);
    }
  }
  seed++;
  if (Date.now() - lastReport >= 10_000) {
    lastReport = Date.now();
    report(false);
  }
}
report(true);
