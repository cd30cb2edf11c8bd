/**
 * `mkdir -p` that fails where it cannot make a directory. Node 20's `mkdirSync(dir, { recursive:
 * true })` loops forever when mkdir keeps answering ENOENT for a parent that exists (under /proc:
 * `--streams /proc/x` spun at 100 % CPU with nothing said); made one level at a time, the first
 * refusal is thrown (ENOENT, EACCES, EROFS...) for the caller to report.
 */
import { mkdirSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';

export function makeDirs(dir: string): void {
  const missing: string[] = [];
  for (let d = resolve(dir); ; ) {
    try {
      statSync(d);
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
    missing.push(d);
    const up = dirname(d);
    if (up === d) break;
    d = up;
  }
  for (let i = missing.length - 1; i >= 0; i--) {
    try {
      mkdirSync(missing[i]!);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
  }
  // As mkdir -p (and Node's recursive mkdir) says of a file in the way.
  if (!statSync(dir).isDirectory()) throw Object.assign(new Error(`EEXIST: file already exists, mkdir '${dir}'`), { code: 'EEXIST', path: dir });
}
