/**
 * The concurrency section of `npm run bench` (src/bench/concurrency.ts, issue 18), small: wrk's
 * keep-alive connections and conngen's held ones through the Node forwarder and through tapgate
 * with a rule, in the lab. Every answer's body is checked by conngen (rewritten through tapgate,
 * untouched through the forwarder); with the table full (limits.maxConnections = the connections
 * held), every further connection is refused and counted, and every live one still answers; and
 * the same through tapgate with a process per TAP queue (`run --queues 2`).
 * Runs from dist/ (`npm test` builds it first).
 */
import { expect, it } from 'vitest';
import { benchConcurrency, concurrencyRuleYaml } from '../../src/bench/concurrency.js';
import { fileLimit, nginxConf } from '../../src/bench/live.js';
import { parseConfig } from '../../src/config/index.js';
import { describeE2E, e2eProblems } from '../lab/e2e-env.js';
import { netnsList } from '../e2e/lab-helpers.js';

it('the concurrency rule parses with its table limit, and nginx gets workers sharing the ports', () => {
  const cfg = parseConfig(concurrencyRuleYaml(1234), 'conc.yaml');
  expect(cfg.limits?.maxConnections).toBe(1234);
  const conf = nginxConf('/tmp/x', ['10.200.0.2:8081', '10.200.0.2:8082'], { keepAlive: true, connections: 15000, workers: 3, body: 'tapgate-ok\\n' });
  expect(conf).toContain('worker_processes 3;');
  expect(conf).toContain('listen 10.200.0.2:8082 backlog=45000 reuseport;');
  expect(conf).toContain('keepalive_requests 1000000;');
  expect(conf).toContain(`worker_rlimit_nofile ${Math.min(16024, fileLimit())};`);
  expect(fileLimit()).toBeGreaterThan(0);
});

describeE2E('bench: concurrency (small)', e2eProblems(['ip', 'wrk', 'nginx', 'curl', 'ss']), () => {
  it('holds connections through the rule, and a full table refuses the rest and keeps every live one', async () => {
    const before = netnsList();
    // A SYN lost twice on a busy CI box (1 s, then 3 s) must not fail an open: 15 s to answer.
    const lines: string[] = [];
    const rep = await benchConcurrency({ wrkConns: 300, wrkSeconds: 1, open: 1500, extra: 100, runs: 1, prefix: 'tgconc', answerTimeoutMs: 15_000, log: (l) => lines.push(l) });
    const said = `\n${lines.join('\n')}\nnotes: ${rep.notes.join('\n')}`;
    expect(netnsList().sort()).toEqual(before.sort());
    const [nf, tg, tq] = rep.paths;
    expect(nf!.path).toMatch(/^Node forwarder/);
    expect(tg!.path).toBe('tapgate GSO, rule');
    expect(tq!.path).toBe('tapgate GSO, rule, --queues 2');
    for (const p of [nf!, tg!, tq!]) {
      expect(p.wrkRps[0], p.path + said).toBeGreaterThan(0);
      expect(p.wrkRpsWarm[0], p.path + said).toBeGreaterThan(0);
      expect(p.wrkErrors, p.path + said).toBe(0);
      expect([p.opened, p.openFailed], p.path + said).toEqual([1500, 0]);
      expect(p.roundFailed, p.path + said).toBe(0);
      expect(Number.isFinite(p.rssPerTracked), p.path).toBe(true);
    }
    expect(tg!.tracked, said).toBe(1500);
    expect(tg!.full!.failed, said).toBe(100);
    expect(tg!.full!.tableFull).toBeGreaterThanOrEqual(100);
    expect([tg!.full!.answeredAfter, tg!.full!.of]).toEqual([1500, 1500]);
    // Two processes, a table each: the flows are their sum; no table-full part.
    expect(tq!.tracked, said).toBe(1500);
    expect(tq!.full).toBeUndefined();
  }, 240_000);
});
