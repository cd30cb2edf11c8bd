/**
 * Fuzzing with fixed seeds (CI): random bytes and mutated frames of the real captures, thrown at
 * decodeFrame and at the Gateway (no rule / replace / regex; connections established first from
 * the capture, over IPv4 and IPv6). No exception escapes, nothing malformed is emitted, budgets hold. The properties
 * live in src/bench/fuzz.ts; `npx tsx scripts/fuzz.ts --seconds 600` runs them for longer.
 */
import fc from 'fast-check';
import { join } from 'node:path';
import { beforeAll, describe, it } from 'vitest';
import {
  decodeProperty,
  gatewayProperty,
  ipv6Corpus,
  loadCorpus,
  randomBytesDecodeProperty,
  randomBytesGatewayProperty,
  type Corpus,
} from '../../src/bench/fuzz.js';

const FIX = join(import.meta.dirname, '../fixtures');
let corpus: Corpus[] = [];
beforeAll(async () => {
  const v4 = await loadCorpus(FIX);
  // The same captures carried over IPv6, one of them behind a Destination Options header.
  corpus = [...v4, ...v4.map((c) => ipv6Corpus(c)), ipv6Corpus(v4[0]!, true)];
});

describe('fuzz: decodeFrame', () => {
  it('never throws on random bytes (both link types)', () => {
    fc.assert(randomBytesDecodeProperty(), { seed: 0x7a9, numRuns: 10_000 });
  });
  it('never throws on mutated capture frames (bit flips, truncation, lengths, offsets, options, fields)', () => {
    fc.assert(decodeProperty(corpus), { seed: 0x7aa, numRuns: 10_000 });
  });
});

describe('fuzz: gateway', () => {
  it('survives random bytes, alone and behind a valid header prefix', () => {
    fc.assert(randomBytesGatewayProperty(corpus), { seed: 0x7ab, numRuns: 3000 });
  });
  it('survives mutated frames injected into real connections: no exception, nothing malformed out, budgets hold', () => {
    fc.assert(gatewayProperty(corpus), { seed: 0x7ac, numRuns: 4000 });
  }, 60_000);
});
