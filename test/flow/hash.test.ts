/**
 * The flow table's 4-tuple hash (flow/flow.ts tupleHash) is keyed per process: tuples a sender
 * chooses do not fall into one bucket. With the hash before (address and port entered as
 * `addr ^ port·0x10001`), sources (K ^ p·0x10001, p) collided for every port p: spoofed SYNs
 * filled one bucket that every lookup then scanned.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { tupleHash } from '../../src/flow/flow.js';
import { FlowTable } from '../../src/flow/table.js';
import { parseIp } from '../../src/wire/ip.js';

const REPO = join(import.meta.dirname, '../..');
const SERVER = 0x0a000002;

describe('tupleHash', () => {
  it('the same both ways round, for IPv4 and IPv6', () => {
    const v6a = parseIp('2001:db8::1')!;
    const v6b = parseIp('2001:db8::2')!;
    for (let i = 0; i < 1000; i++) {
      const a = (Math.random() * 2 ** 32) >>> 0;
      const p = i * 61 % 65536;
      expect(tupleHash(a, p, SERVER, 80)).toBe(tupleHash(SERVER, 80, a, p));
      expect(tupleHash(v6a, p, v6b, 443)).toBe(tupleHash(v6b, 443, v6a, p));
    }
  });

  it('the tuples that shared one hash before spread over as many hashes as random ones', () => {
    const K = 0x0b000000;
    const hashes = new Set<number>();
    for (let p = 1024; p < 1024 + 20_000; p++) hashes.add(tupleHash((K ^ Math.imul(p, 0x10001)) >>> 0, p, SERVER, 80));
    expect(hashes.size).toBeGreaterThan(19_900);
    // Likewise IPv6 sources that differ in one group only, and ports stepping with them.
    const h6 = new Set<number>();
    for (let i = 0; i < 20_000; i++) h6.add(tupleHash(String.fromCharCode(0x2001, 0xdb8, 0, 0, 0, 0, i >> 8, i & 0xff), 40000 + (i & 0xff), parseIp('2001:db8::2')!, 80));
    expect(h6.size).toBeGreaterThan(19_900);
  });

  it('keyed per process: another process hashes the same tuple otherwise', () => {
    const script = "import { tupleHash } from './src/flow/flow.ts'; console.log(tupleHash(0x0a000001, 40000, 0x0a000002, 80));";
    const run = () => spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: REPO, encoding: 'utf8' }).stdout.trim();
    const a = run();
    expect(a).toMatch(/^-?\d+$/);
    expect(run()).not.toBe(a);
  });

  it('the table finds every flow of a colliding family again', () => {
    const t = new FlowTable({ maxConnections: 5000, idleTimeoutMs: 10_000, closingTimeoutMs: 1_000 });
    const K = 0x0b000000;
    for (let p = 1024; p < 1024 + 2000; p++) t.lookup({ addr: (K ^ Math.imul(p, 0x10001)) >>> 0, port: p }, { addr: SERVER, port: 80 }, 0x02, 1000 + p, 0);
    for (let p = 1024; p < 1024 + 2000; p++) expect(t.peek({ addr: (K ^ Math.imul(p, 0x10001)) >>> 0, port: p }, { addr: SERVER, port: 80 })).toBeDefined();
  });
});
