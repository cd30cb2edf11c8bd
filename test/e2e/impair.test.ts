/**
 * `tapgate run` in the lab under impairment (src/phy/fault.ts), as root, TAP GSO on and off.
 *
 * A `replace` rule (shorter and longer replacements, occurrences spread so that many straddle
 * segment and GSO-frame boundaries) is active on ports 8001 (HTTP download, python http.server
 * in the server namespace, curl in the client) and 8002 (upload: a raw TCP sink that answers
 * with the sha256 of what it received). Frames are lost, reordered and duplicated both BEFORE the
 * gateway (`--impair-in*`: the gateway itself meets gaps, reordering and duplicates) and AFTER it
 * (`--impair*`: the endpoints do, and retransmit through the gateway). Every transfer must
 * complete with exactly the rewritten content (sha256 computed here), and the gateway's own
 * counters must show that the paths under test were taken: early segments delayed and later
 * drained, already-processed segments (retransmissions, duplicates) rewritten from the stored
 * commands, and the injectors' counters that the impairment happened.
 * The gateway runs from the sources (tsx), so the test does not depend on a fresh dist/.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { labDown, labExec, labKill, labSpawn, labStatus, labUp } from '../../src/lab/lab.js';
import { describeE2E, e2eProblems, REPO } from '../lab/e2e-env.js';
import {
  expectedRewrite, FIND_LONG, FIND_SHORT, gatewayStats as stats, labUpWithGateway, MAIN, netnsList, rewriteText, SEND_PY, sha, SINK_PY, startHttpServer,
  tempDir, waitUntil, WITH_LONG, WITH_SHORT, type GatewayStats,
} from './lab-helpers.js';

const P = 'tgi';
const SERVER = '10.200.0.2';
/** The lab is dual-stack: the same services over IPv6. */
const SERVER6 = 'fd00:200::2';

// holdTimeoutMs: bytes the agent holds back (a segment ending in "ca" or "needle-") are flushed
// unrewritten when the next bytes take longer than the hold timeout — by design (docs/ARCHITECTURE.md §2).
// The default (200 ms) equals Linux's minimum RTO, so under loss a retransmission timeout right
// at a hold leaves a match unrewritten and the content would depend on timing. Here the timeout
// is long, and the test checks that no hold timed out, so that "exact content" means exact.
const CONFIG = `
rules:
  - name: rewrite
    match: { port: [8001, 8002, 8011, 8012] }
    agent: replace
    replace:
      - { find: "${FIND_SHORT}", with: "${WITH_SHORT}" }
      - { find: "${FIND_LONG}", with: "${WITH_LONG}" }
limits:
  holdTimeoutMs: 20000
`;

interface Case {
  name: string;
  vnet: boolean;
  /** Gateway options (spec strings per option). */
  impair: Record<string, string>;
}

// Sides: tap-c is the gateway's TAP a (client), tap-s its TAP b (server). Download data flows
// server → tap-s → [in-b] → gateway → [out-a] → tap-c → client; its ACKs the other way.
const CASES: Case[] = [
  {
    name: 'loss 5% before the gateway both ways, dup 2% after it (GSO)',
    vnet: true,
    impair: { 'impair-in': 'loss=5%,seed=1', impair: 'dup=2%,seed=2' },
  },
  {
    name: 'reorder 25% by 3 frames and dup 5% before, loss 2% after (GSO)',
    vnet: true,
    impair: { 'impair-in': 'reorder=25%:3,dup=5%,seed=3', impair: 'loss=2%,seed=4' },
  },
  {
    name: 'loss 3% + reorder 10% + dup 3% before, loss 5% + reorder 25% after (no GSO)',
    vnet: false,
    impair: { 'impair-in': 'loss=3%,reorder=10%:2,dup=3%,seed=5', impair: 'loss=5%,reorder=25%:3,seed=6' },
  },
  {
    name: 'reorder 25% by 2 ms, delay 1±1 ms, corrupt 1%, dup 5% before; corrupt 1% after (no GSO)',
    vnet: false,
    impair: {
      'impair-in-b': 'reorder=25%:2ms,delay=1ms,jitter=1ms,corrupt=1%,dup=5%,seed=7',
      'impair-in-a': 'loss=2%,seed=8',
      impair: 'corrupt=1%,loss=1%,seed=9',
    },
  },
];

type Stats = GatewayStats;

/** The running gateway's statistics (SIGUSR1 → one JSON line in its log). */
const gatewayStats = (): Stats => stats(P);

function firstDifference(got: string, exp: string): string {
  let i = 0;
  while (i < got.length && got[i] === exp[i]) i++;
  return `lengths ${got.length}/${exp.length}, first difference at byte ${i}: got ${JSON.stringify(got.slice(i - 20, i + 20))}, expected ${JSON.stringify(exp.slice(i - 20, i + 20))}`;
}

describeE2E('tapgate run under impairment', e2eProblems(['ip', 'unshare', 'python3', 'curl']), () => {
  const nsBefore = netnsList();
  let dir = '';
  let text = '';
  let expected = '';
  let upText = '';
  let upExpected = '';
  const timings: string[] = [];

  beforeAll(async () => {
    dir = tempDir('tapgate-impair-');
    text = rewriteText(3 << 20);
    expected = expectedRewrite(text);
    writeFileSync(join(dir, 'text.txt'), text);
    upText = rewriteText(1 << 20);
    upExpected = expectedRewrite(upText);
    writeFileSync(join(dir, 'up.txt'), upText);
    writeFileSync(join(dir, 'config.yaml'), CONFIG);
    writeFileSync(join(dir, 'sink.py'), SINK_PY);
    writeFileSync(join(dir, 'send.py'), SEND_PY);
    await labDown(P);
    // The lab without a gateway first; each case starts its own.
    await labUp({ prefix: P, config: { ipv6: true } });
    startHttpServer(P, SERVER, 8001, dir);
    labSpawn(P, 'server', 'sink8002', ['python3', join(dir, 'sink.py'), SERVER, '8002']);
    startHttpServer(P, SERVER6, 8011, dir);
    labSpawn(P, 'server', 'sink8012', ['python3', join(dir, 'sink.py'), SERVER6, '8012']);
  });

  afterAll(async () => {
    await labDown(P);
    rmSync(dir, { recursive: true, force: true });
    if (timings.length > 0) process.stdout.write(`impair e2e timings:\n  ${timings.join('\n  ')}\n`);
    expect(netnsList().filter((n) => n.startsWith(`${P}-`))).toEqual([]);
    expect(netnsList().sort()).toEqual(nsBefore.sort());
  });

  for (const c of CASES) {
    describe(c.name, () => {
      let before: Stats;

      beforeAll(async () => {
        await labKill(P, 'gateway');
        await labUpWithGateway(P, join(dir, 'config.yaml'), [
          ...(c.vnet ? [] : ['--no-vnet-hdr']),
          ...Object.entries(c.impair).flatMap(([k, v]) => [`--${k}`, v]),
        ], { config: { ipv6: true } });
        // The server through the (impaired) gateway: a few tries may be needed.
        await waitUntil(20_000, 200,
          () => labExec(P, 'client', ['curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '3', `http://${SERVER}:8001/config.yaml`]),
          (r) => r.stdout === '200',
          (r) => `http.server not reachable through the gateway: ${r.stderr}`);
        before = gatewayStats();
      });

      it('downloads 3 MiB twice, each exactly rewritten', async () => {
        for (let k = 0; k < 2; k++) {
          const out = join(dir, `got-${k}`);
          const t0 = Date.now();
          const r = await labExec(P, 'client', ['curl', '-sS', '--max-time', '60', '--ignore-content-length', '-o', out, '-w', '%{http_code}', `http://${SERVER}:8001/text.txt`]);
          timings.push(`${c.name}: download ${k + 1} ${Date.now() - t0} ms`);
          expect(r.code, r.stderr).toBe(0);
          expect(r.stdout).toBe('200');
          const got = readFileSync(out, 'latin1');
          rmSync(out);
          if (sha(got) !== sha(expected)) throw new Error(firstDifference(got, expected));
        }
      });

      it('uploads 1 MiB, exactly rewritten on the way to the server', async () => {
        const t0 = Date.now();
        const r = await labExec(P, 'client', ['python3', join(dir, 'send.py'), SERVER, '8002', join(dir, 'up.txt')], { timeoutMs: 60_000 });
        timings.push(`${c.name}: upload ${Date.now() - t0} ms`);
        expect(r.code, r.stderr).toBe(0);
        expect(r.stdout.trim()).toBe(`${sha(upExpected)} ${Buffer.byteLength(upExpected, 'latin1')}`);
      });

      it('over IPv6: downloads 3 MiB and uploads 1 MiB, each exactly rewritten', async () => {
        const out = join(dir, 'got6');
        const t0 = Date.now();
        const r = await labExec(P, 'client', ['curl', '-g', '-6', '-sS', '--max-time', '60', '--ignore-content-length', '-o', out, '-w', '%{http_code}', `http://[${SERVER6}]:8011/text.txt`]);
        timings.push(`${c.name}: IPv6 download ${Date.now() - t0} ms`);
        expect(r.code, r.stderr).toBe(0);
        const got = readFileSync(out, 'latin1');
        rmSync(out);
        if (sha(got) !== sha(expected)) throw new Error(`IPv6: ${firstDifference(got, expected)}`);
        const t1 = Date.now();
        const u = await labExec(P, 'client', ['python3', join(dir, 'send.py'), SERVER6, '8012', join(dir, 'up.txt')], { timeoutMs: 60_000 });
        timings.push(`${c.name}: IPv6 upload ${Date.now() - t1} ms`);
        if (u.code !== 0) {
          // Seen once (a full CI run, 2026-12-07): all four cases' IPv6 uploads hung. What the tracker dropped says why.
          const g = gatewayStats()['gateway']!;
          const keys = ['unproven', 'wrongSide', 'notReady', 'signed', 'staleSegments', 'rstAccepted', 'rstNotExact', 'tcpInvalid', 'policy'];
          throw new Error(`IPv6 upload: exit ${u.code} ${u.stderr}; gateway ${JSON.stringify(Object.fromEntries(keys.map((k) => [k, g[k]])))}`);
        }
        expect(u.stdout.trim()).toBe(`${sha(upExpected)} ${Buffer.byteLength(upExpected, 'latin1')}`);
      });

      it('took the delayed, drained and already-processed paths, and impaired what it was asked to', () => {
        const after = gatewayStats();
        const d = (group: string, key: string): number => (after[group]![key] as number) - (before[group]![key] as number);
        const stream = ['delayed', 'drained', 'alreadyProcessed', 'processed', 'queueOverflow', 'queueDuplicate', 'normalized', 'holds', 'flushTimeout', 'commands', 'commandsPruned'];
        const gw = ['framesIn', 'framesOut', 'rebuilt', 'gsoIn', 'gsoOut', 'withheld', 'rstIn', 'notReady', 'unproven', 'wrongSide', 'signed', 'staleSegments'];
        const delta = {
          stream: Object.fromEntries(stream.map((k) => [k, d('stream', k)])),
          gateway: Object.fromEntries(gw.map((k) => [k, d('gateway', k)])),
          malformed: after['gateway']!['malformed'],
          impair: Object.fromEntries(
            Object.entries(after['impair']!).map(([p, s]) => [p, Object.fromEntries(['in', 'out', 'lost', 'duplicated', 'reordered', 'delayed', 'corrupted', 'corruptSkipped', 'queueFull', 'rateDropped'].map((k) => [k, s[k]]))]),
          ),
        };
        timings.push(`${c.name}: ${JSON.stringify(delta)}`);
        expect(delta.stream['delayed'], 'early segments delayed at the gateway').toBeGreaterThan(0);
        expect(delta.stream['drained'], 'delayed segments drained after the gap filled').toBeGreaterThan(0);
        expect(delta.stream['alreadyProcessed'], 'retransmissions / duplicates rewritten from stored commands').toBeGreaterThan(0);
        expect(delta.stream['commands']).toBeGreaterThan(0);
        expect(delta.stream['flushTimeout'], 'no hold timed out').toBe(0);
        // A Linux sender retransmits the bytes it sent, and corrupted frames fail the checksum:
        // a retransmission that differs from the stored bytes means a frame reached the engine
        // with the wrong position or content (once: an impairer's duplicate of an already
        // translated frame).
        expect(delta.stream['normalized'], 'every retransmission matched the stored bytes').toBe(0);
        if (c.vnet) expect(delta.gateway['gsoIn']).toBeGreaterThan(0);
        else expect(delta.gateway['gsoIn']).toBe(0);
        // Every configured point impaired frames, and the counts add up.
        const points = Object.keys(after['impair']!);
        expect(points.length).toBeGreaterThan(0);
        for (const p of points) {
          const s = after['impair']![p]!;
          expect(s['in'], p).toBeGreaterThan(0);
          expect(s['lost'] + s['duplicated'] + s['reordered'] + s['corrupted'], `${p} impaired nothing`).toBeGreaterThan(0);
          const pend = s['pending'];
          expect(s['in'] + s['duplicated'], `${p} counts add up`).toBe(s['out'] + s['lost'] + s['queueFull'] + s['rateDropped'] + pend.held + pend.delay + pend.rate);
        }
        if (c.impair['impair-in-b']?.includes('corrupt')) {
          // Corrupted frames read from tap-s are caught by the gateway's own checksum check.
          const bad = Object.entries(after['gateway']!['malformed'] as Record<string, number>).filter(([k]) => /checksum/.test(k)).reduce((a, [, v]) => a + v, 0);
          expect(after['impair']!['in-b']!['corrupted']).toBeGreaterThan(0);
          expect(bad, JSON.stringify(after['gateway']!['malformed'])).toBeGreaterThan(0);
        }
      });
    });
  }

  it('refuses a bad impairment spec before touching a device (run and lab up)', () => {
    const r = spawnSync(process.execPath, ['--import', 'tsx', MAIN, 'run', '--tap', 'tgnone0', '--tap', 'tgnone1', '--impair-b', 'loss=2'], { cwd: REPO, encoding: 'utf8', timeout: 60_000 });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('--impair-b: bad impairment spec "loss=2": loss=2: 2 is not a probability; write 2% for 2 percent');
    const l = spawnSync(process.execPath, ['--import', 'tsx', MAIN, 'lab', 'up', '--name', 'tgbad', '--impair-server', 'delay=5'], { cwd: REPO, encoding: 'utf8', timeout: 60_000 });
    expect(l.status).toBe(1);
    expect(l.stderr).toContain('--impair-server: bad impairment spec "delay=5": delay=5: give a unit: 5ms, 5us or 5s');
    expect(labStatus('tgbad').namespaces).toEqual({ client: false, server: false, gw: false });
  });
});
