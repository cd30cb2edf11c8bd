/**
 * Smoke test of `npm run bench`'s in-process parts with tiny sizes, so a broken bench fails
 * `npm test`. No timing assertions: only that every part runs and its output is well-formed.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { once } from 'node:events';
import { createConnection, createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/index.js';
import { buildKeepAlive, buildShortConnections, runEngineBench } from '../../src/bench/engine.js';
import { runRuleBench } from '../../src/bench/rules.js';
import { runWarmBench } from '../../src/bench/warm.js';
import { Gateway } from '../../src/engine/gateway.js';
import { BENCH_RULE_YAML, compileTapfwd, median, nginxConf, parseIperf, parsePing, parseWrk } from '../../src/bench/live.js';
import { measureConnMemory } from '../../src/bench/memory.js';
import { profiledArgv, readProfileDir, summarizeProfile } from '../../src/bench/profile.js';
import { startProxy } from '../../src/bench/proxy.js';

const hasCc = spawnSync('cc', ['--version'], { stdio: 'ignore' }).error === undefined;

describe('bench (smoke)', () => {
  it('answers --help with the usage and bad arguments with one line, no stack trace', () => {
    const main = join(import.meta.dirname, '../../dist/bench/main.js');
    const help = spawnSync(process.execPath, [main, '--help'], { encoding: 'utf8' });
    expect(help.status).toBe(0);
    expect(help.stdout).toMatch(/^usage: npm run bench/);
    for (const [argv, msg] of [
      [['--bogus'], 'unknown argument --bogus'],
      [['--only', 'x'], '--only x: expected some of'],
      [['--flows', '0'], '--flows 0: expected'],
      [['--keep-profile'], '--keep-profile needs a value'],
    ] as const) {
      const r = spawnSync(process.execPath, [main, ...argv], { encoding: 'utf8' });
      expect(r.status, argv.join(' ')).toBe(2);
      expect(r.stderr).toContain(`tapgate bench: ${msg}`);
      expect(r.stderr).not.toMatch(/\n\s+at /);
      expect(r.stdout).toBe('');
    }
  });
  it('the keep-alive scenario: every request answered and rewritten through the rule', () => {
    const ka = buildKeepAlive(50, 3);
    expect(ka.requests).toBe(150);
    expect(ka.frames.length).toBe(450);
    const gw = new Gateway({ config: parseConfig('rules:\n  - match: { port: 80 }\n    agent: replace\n    replace:\n      - { find: "tapgate-ok", with: "TAPGATE-OK" }\n', 'k.yaml') });
    let out = 0;
    for (const f of [...ka.open, ...ka.frames]) gw.handleFrame(f, 0, 1, () => out++);
    expect(out).toBe(ka.open.length + ka.frames.length);
    expect(gw.stats().agents.replace.matches).toBe(150);
  });

  it('rule list bench runs: the index gives the in-order answer, faster', () => {
    const rows = runRuleBench({ rules: 500, shadowRules: 100, nptv6: 100, mappings: 300, runs: 1 });
    expect(rows).toHaveLength(10);
    for (const r of rows) expect(r.us).toBeGreaterThan(0);
    expect(rows.filter((r) => r.name.endsWith('(baseline)')).map((r) => r.speedup)).toEqual([1, 1, 1, 1, 1]);
  });

  it('runs the warm-up bench in a fresh process (dist/): a rate per pass, the body the client was sent checked against the rewrite', () => {
    const r = runWarmBench({ mib: 1, passes: 2 });
    expect(r.mib).toBe(1);
    expect(r.passes).toHaveLength(2);
    for (const x of r.passes) expect(x).toBeGreaterThan(0);
    expect(r.warmupMs).toBeGreaterThan(0);
  }, 60_000);

  it('engine bench runs', () => {
    const rows = runEngineBench({ segments: 50, runs: 1 });
    expect(rows.map((r) => r.name)).toContain('pass-through, in order');
    expect(rows.map((r) => r.name)).toContain('short connections: replace rule');
    expect(rows.map((r) => r.name)).toEqual(expect.arrayContaining(['IPv6: replace rule, in order', 'short connections: replace rule, IPv6']));
    expect(rows.map((r) => r.name)).toEqual(expect.arrayContaining(['keep-alive requests: decode only', 'keep-alive requests: pass-through', 'keep-alive requests: replace rule']));
    for (const r of rows) expect(r.segPerSec).toBeGreaterThan(0);
  });

  it.each([false, true])('short-connection scenario: whole connections (handshake, request, response, both FINs), IPv6 %s', (ipv6) => {
    const sc = buildShortConnections(500, ipv6);
    expect(sc.frames.length).toBe(500 * 11);
    const gw = new Gateway({ config: parseConfig(BENCH_RULE_YAML.replace(/port: \[[^\]]*\]/, 'port: 80'), 'b.yaml') });
    let out = 0;
    let t = 0;
    for (const f of sc.frames) gw.handleFrame(f, 0, (t += 0.01), () => out++);
    const st = gw.stats();
    expect(st.gateway.malformed).toEqual({});
    expect(out).toBe(sc.frames.length);
    expect(st.flows.created).toBe(500);
    expect(st.flows.midstream).toBe(0);
    expect(st.stream.agentBytes, 'the rule saw every request and response').toBe(sc.payloadBytes);
    gw.tick(t + 10_001, () => {});
    expect(gw.stats().flows.active, 'all closed both ways: gone after closedTimeoutMs').toBe(0);
  });

  it('memory per connection: every handshake tracked, an engine per flow with the rule', () => {
    const none = measureConnMemory({ connections: 300, rule: false });
    expect(none.tracked).toBe(300);
    expect(none.withEngine).toBe(0);
    const rule = measureConnMemory({ connections: 300, rule: true });
    expect(rule.tracked).toBe(300);
    expect(rule.withEngine).toBe(300);
    expect(Number.isFinite(rule.bytesPerConn)).toBe(true);
    const rule6 = measureConnMemory({ connections: 300, rule: true, ipv6: true });
    expect([rule6.tracked, rule6.withEngine]).toEqual([300, 300]);
  });

  it('the live bench config and nginx config are valid', () => {
    const cfg = parseConfig(BENCH_RULE_YAML, 'bench.yaml');
    expect(cfg.rules.length).toBe(1);
    expect(nginxConf('/tmp/x', '10.200.0.2:8080')).toContain('listen 10.200.0.2:8080');
  });

  it('parses iperf3, ping and wrk output', () => {
    expect(parseIperf(JSON.stringify({ end: { sum_received: { bits_per_second: 4e9 } } }))).toBe(4e9);
    expect(() => parseIperf(JSON.stringify({ error: 'unable to connect' }))).toThrow(/unable/);
    expect(parsePing('64 bytes from 10.200.0.2: icmp_seq=1 ttl=64 time=0.058 ms\n64 bytes from 10.200.0.2: icmp_seq=2 ttl=64 time=0.124 ms\n')).toEqual([0.058, 0.124]);
    const w = parseWrk(
      'Running 5s test @ http://10.200.0.2:8080/\n  56902 requests in 5.00s, 8.30MB read\n  Socket errors: connect 0, read 3, write 0, timeout 2\nRequests/sec:  11379.51\n',
    );
    expect(w).toEqual({ rps: 11379.51, errors: 2, requests: 56902 });
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 2, 3])).toBe(2.5);
  });

  it('summarizes a CPU profile by self time, without idle', () => {
    const cf = (functionName: string, line: number) => ({ functionName, url: 'file:///x/a.js', lineNumber: line, columnNumber: 0 });
    const top = summarizeProfile(
      {
        nodes: [
          { id: 1, callFrame: cf('(root)', -1), children: [2, 3, 4] },
          { id: 2, callFrame: cf('hot', 9) },
          { id: 3, callFrame: cf('cold', 19) },
          { id: 4, callFrame: { functionName: '(idle)', url: '', lineNumber: -1, columnNumber: -1 } },
        ],
        startTime: 0,
        endTime: 500,
        samples: [2, 2, 2, 3, 4, 2],
        timeDeltas: [0, 100, 100, 100, 100, 100],
      },
      5,
      '/x',
    );
    expect(top[0]).toMatchObject({ fn: 'hot', where: 'a.js:10' });
    expect(top[0]!.pct).toBeGreaterThan(top[1]!.pct);
    expect(top.some((e) => e.fn === '(idle)')).toBe(false);
  });

  it('profiledArgv makes node write a profile that readProfileDir summarizes and keeps; none written: undefined', () => {
    const dir = mkdtempSync(join(tmpdir(), 'prof-test-'));
    try {
      const prof = join(dir, 'prof');
      const argv = profiledArgv([process.execPath, '-e', 'let x = 0; for (let i = 0; i < 3e7; i++) x += i % 7; console.log(x)'], prof);
      expect(argv.slice(0, 4)).toEqual([process.execPath, '--cpu-prof', '--cpu-prof-dir', prof]);
      expect(spawnSync(argv[0]!, argv.slice(1)).status).toBe(0);
      const keep = join(dir, 'kept.cpuprofile');
      const top = readProfileDir(prof, keep);
      expect(top!.length).toBeGreaterThan(0);
      expect(existsSync(keep)).toBe(true);
      mkdirSync(join(dir, 'empty'));
      expect(readProfileDir(join(dir, 'empty'))).toBeUndefined();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it.skipIf(!hasCc)('bench/tapfwd.c compiles with cc -O2', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tapfwd-test-'));
    try {
      const bin = compileTapfwd(dir);
      const r = spawnSync(bin, [], { encoding: 'utf8' });
      expect(r.status).toBe(1); // usage
      expect(r.stderr).toMatch(/usage/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('the Node proxy pipes both ways', async () => {
    const echo = createServer({ allowHalfOpen: true }, (s) => s.pipe(s));
    echo.listen(0, '127.0.0.1');
    await once(echo, 'listening');
    const proxy = await startProxy('127.0.0.1', 0, '127.0.0.1', (echo.address() as AddressInfo).port);
    try {
      const c = createConnection((proxy.address() as AddressInfo).port, '127.0.0.1');
      c.end('hello through the proxy');
      let got = '';
      c.setEncoding('utf8').on('data', (d: string) => (got += d));
      await once(c, 'close');
      expect(got).toBe('hello through the proxy');
    } finally {
      proxy.close();
      echo.close();
    }
  });
});
