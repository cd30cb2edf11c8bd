/**
 * Every occurrence of a literal in a buffer, for the replace agent's literal rules (replace.ts
 * Scan). `findAll` fills an Int32Array with the starts of the occurrences at or after `from`
 * (overlapping ones too), in order, as many as fit, and returns how many: one call per segment
 * and rule, however dense the matches.
 *
 * The search itself is native when the addon `native/search.cc` is built (glibc memmem: about
 * twice Buffer.indexOf's speed over bytes that do not match, and no call per match); without it
 * (a checkout where `npm install` did not build addons) the same answers come from
 * Buffer.indexOf. `literalSearchBackend` says which one runs (in `tapgate` statistics).
 */
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

type FindAll = (hay: Uint8Array, pat: Uint8Array, from: number, out: Int32Array) => number;

/** <repo>/build/Release/search.node, from src/agent/ and dist/agent/ alike. */
const ADDON = fileURLToPath(new URL('../../build/Release/search.node', import.meta.url));

/** Buffer.indexOf: the same answers as the addon's (tests compare both). */
export const findAllJs: FindAll = (hay, pat, from, out) => {
  const h = Buffer.from(hay.buffer, hay.byteOffset, hay.byteLength);
  let k = 0;
  for (let i = h.indexOf(pat, from); i >= 0 && k < out.length; i = h.indexOf(pat, i + 1)) out[k++] = i;
  return k;
};

function loadNative(): FindAll | null {
  if (process.env.TAPGATE_JS_SEARCH === '1' || !existsSync(ADDON)) return null;
  try {
    const m = createRequire(import.meta.url)(ADDON) as { findAll?: FindAll };
    return typeof m.findAll === 'function' ? m.findAll : null;
  } catch {
    return null;
  }
}

const native = loadNative();

/** The native search, or null when the addon is not built (or TAPGATE_JS_SEARCH=1). */
export const findAllNative: FindAll | null = native;

/** Which search runs: `native` (memmem) or `js` (Buffer.indexOf). */
export const literalSearchBackend: 'native' | 'js' = native !== null ? 'native' : 'js';

/**
 * Starts of `pat` in `hay` at or after `from` (pat not empty), into `out`; returns the count
 * (out.length: there may be more, ask again from one past the last).
 */
export const findAll: FindAll = native ?? findAllJs;
