/** lab/sys.ts readSince: a polled log is read from an offset on, bounded, never whole. */
import { appendFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { readSince } from '../../src/lab/sys.js';

const dir = mkdtempSync(join(tmpdir(), 'tapgate-readsince-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('readSince', () => {
  it('returns what was appended after the offset, at most max bytes; nothing for a missing file', () => {
    const f = join(dir, 'log');
    writeFileSync(f, 'old line\n');
    const at = 9;
    expect(readSince(f, at)).toBe('');
    appendFileSync(f, 'config reloaded\n');
    expect(readSince(f, at)).toBe('config reloaded\n');
    expect(readSince(f, at, 6)).toBe('config');
    expect(readSince(join(dir, 'missing'), 0)).toBe('');
    expect(readSince(f, 1000)).toBe('');
  });
});
