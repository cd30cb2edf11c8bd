/** Config loading: the shipped examples load, every kind of mistake is pinned to file:line and a document path, and rule selection is first-match. */
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import {
  loadConfig,
  parseCidr,
  parseConfig,
  selectRule,
  type ConnKey,
} from '../../src/config/index.js';
import { parseDuration } from '../../src/config/schema.js';
import { parseIpv4 } from '../../src/wire/ipv4.js';
import { DEFAULT_LIMITS } from '../../src/stream/limits.js';
import { errorOf, expectOneIssue } from '../helpers/config-error.js';

const example = (name: string) => fileURLToPath(new URL(`../../examples/${name}`, import.meta.url));
const ip = (s: string) => parseIpv4(s)!;


describe('config: examples', () => {
  it('examples/replace.yaml loads: one replace rule on port 8080 with both directions', () => {
    const c = loadConfig(example('replace.yaml'));
    expect(c.rules).toHaveLength(1);
    const r = c.rules[0]!;
    expect(r.agent).toBe('replace');
    expect(r.match.port).toEqual([{ lo: 8080, hi: 8080 }]);
    expect([...r.directions].sort()).toEqual(['c2s', 's2c']);
    expect(r.config).toEqual([
      { find: 'Hello world', with: 'Hi there' },
      { regex: 'Server: [^\\r]*', with: 'Server: tapgate', maxMatch: 200 },
    ]);
    expect(c.limits).toEqual({ ...DEFAULT_LIMITS, maxHeldBytes: 65536 });
  });

  it('examples/monitor.yaml loads: a monitor rule with port list, range and CIDR', () => {
    const c = loadConfig(example('monitor.yaml'));
    expect(c.rules[0]!.agent).toBe('monitor');
    expect(c.rules[0]!.match.port).toEqual([{ lo: 80, hi: 80 }, { lo: 25, hi: 25 }, { lo: 8000, hi: 8099 }]);
    expect(c.limits).toEqual(DEFAULT_LIMITS);
  });

  it('limits override the defaults key by key', () => {
    const c = parseConfig('rules: []\nlimits: { maxHeldBytes: 1000, maxCommands: 0 }\n', 'l.yaml');
    expect(c.limits.maxHeldBytes).toBe(1000);
    expect(c.limits.maxCommands).toBe(0);
    expect(c.limits.holdTimeoutMs).toBe(DEFAULT_LIMITS.holdTimeoutMs);
  });
});

describe('config: errors name the file, line:column, document path and what was expected', () => {
  const base = (replace: string) => `rules:\n  - name: r\n    agent: replace\n    replace:\n${replace}`;
  const cases: [string, string, number, string, RegExp][] = [
    ['regex does not compile', base('      - { regex: "a(", with: "x", maxMatch: 5 }\n'), 5, 'rules[0].replace[0].regex', /does not compile/],
    ['maxMatch out of range', base('      - { find: "a", with: "x" }\n      - { regex: "a", with: "x", maxMatch: 70000 }\n'), 6, 'rules[0].replace[1].maxMatch', /1 to 65536, got 70000/],
    ['maxMatch missing', base('      - { regex: "a", with: "x" }\n'), 5, 'rules[0].replace[0].maxMatch', /required for a regex rule/],
    // A rule that could never match (a review, 2026-12-07): its bytes would pass while the config reads as if they were caught.
    ['maxMatch shorter than any match', base('      - { regex: "Authorization: Bearer \\\\S+", with: "x", maxMatch: 16 }\n'), 5, 'rules[0].replace[0].maxMatch', /16 is shorter than the shortest match of the regex \(23 bytes\)/],
    ['a regex that only matches empty', base('      - { regex: "^|\\\\b", with: "x", maxMatch: 16 }\n'), 5, 'rules[0].replace[0].regex', /can only match the empty string/],
    ['normalizeBytesPerConn below a window\'s worth', 'rules: []\nlimits:\n  normalizeBytesPerConn: 1000\n', 3, 'limits.normalizeBytesPerConn', /65536/],
    ['empty find', base('      - { find: "", with: "x" }\n'), 5, 'rules[0].replace[0].find', /non-empty/],
    ['with missing', base('      - find: "a"\n'), 5, 'rules[0].replace[0].with', /missing; expected a string/],
    ['neither find nor regex', base('      - { with: "x" }\n'), 5, 'rules[0].replace[0]', /exactly one of `find`/],
    ['bad flag', base('      - { regex: "a", with: "x", maxMatch: 3, flags: "gi" }\n'), 5, 'rules[0].replace[0].flags', /"g" not allowed; allowed: "imsu"/],
    ['$\' in with', base('      - { regex: "a", with: "$\'", maxMatch: 3 }\n'), 5, 'rules[0].replace[0].with', /not supported/],
    ['unknown key in a replace rule', base('      - { find: "a", with: "x", replace: "y" }\n'), 5, 'rules[0].replace[0].replace', /unknown key "replace" in a replace rule; allowed: find, regex, with, ignoreCase, maxMatch, flags/],
    ['empty replace list', base('      []\n'), 5, 'rules[0].replace', /at least one/],
    ['replace missing', 'rules:\n  - agent: replace\n', 2, 'rules[0].replace', /needs `replace:`/],
    ['replace on monitor', 'rules:\n  - agent: monitor\n    replace: [{ find: a, with: b }]\n', 3, 'rules[0].replace', /only for agent replace/],
    ['unknown agent', 'rules:\n  - agent: monitor\n  - agent: ftpx\n', 3, 'rules[1].agent', /one of: replace, monitor, ftp, http, got "ftpx"/],
    ['agent missing', 'rules:\n  - name: x\n', 2, 'rules[0].agent', /missing; expected one of/],
    ['bad direction', 'rules:\n  - agent: monitor\n    direction: up\n', 3, 'rules[0].direction', /both, c2s, s2c, got "up"/],
    ['unknown key in match', 'rules:\n  - agent: monitor\n    match:\n      prot: 80\n', 4, 'rules[0].match.prot', /allowed: port, clientPort, serverPort, address, clientAddress, serverAddress/],
    ['port out of range', 'rules:\n  - agent: monitor\n    match: { port: 0 }\n', 3, 'rules[0].match.port', /out of range/],
    ['port in list out of range', 'rules:\n  - agent: monitor\n    match:\n      serverPort: [80, 65536]\n', 4, 'rules[0].match.serverPort[1]', /out of range/],
    ['empty port range', 'rules:\n  - agent: monitor\n    match: { clientPort: "9000-8000" }\n', 3, 'rules[0].match.clientPort', /empty/],
    ['bad CIDR prefix', 'rules:\n  - agent: monitor\n    match: { address: 10.0.0.0/33 }\n', 3, 'rules[0].match.address', /prefix length 0..32/],
    ['CIDR host bits', 'rules:\n  - agent: monitor\n    match: { serverAddress: 10.1.2.3/16 }\n', 3, 'rules[0].match.serverAddress', /did you mean 10.1.0.0\/16/],
    ['bad address', 'rules:\n  - agent: monitor\n    match:\n      clientAddress: [10.0.0.1, 300.1.1.1]\n', 4, 'rules[0].match.clientAddress[1]', /not an IPv4 address/],
    ['unknown limit', 'rules: []\nlimits:\n  maxHeld: 5\n', 3, 'limits.maxHeld', /allowed: maxConnections, .*maxHeldBytes/],
    ['bad limit', 'rules: []\nlimits:\n  maxHeldBytes: -1\n', 3, 'limits.maxHeldBytes', /integer >= 1, got -1/],
    ['pattern longer than maxHeldBytes', 'rules:\n  - agent: replace\n    replace: [{ regex: a, with: b, maxMatch: 300 }]\nlimits: { maxHeldBytes: 100 }\n', 3, 'rules[0].replace[0].maxMatch', /299 held-back bytes, more than limits.maxHeldBytes \(100\)/],
    ['unknown top-level key', 'rules: []\nrule: []\n', 2, 'rule', /allowed: rules, limits/],
    ['rules not a list', 'rules: 3\n', 1, 'rules', /expected a list of rules, got 3/],
    ['rules missing', 'limits: {}\n', 1, 'rules', /missing/],
  ];

  it.each(cases)('%s', (_what, text, line, path, msg) => {
    expectOneIssue(text, line, path, msg);
  });

  it('reports every problem at once, each at its own line and column', () => {
    const e = errorOf('rules:\n  - agent: monitor\n    direction: up\n  - agent: replace\n    replace:\n      - { regex: "(", with: "", maxMatch: 1 }\n');
    expect(e.issues.map((i) => [i.line, i.col, i.path])).toEqual([
      [3, 16, 'rules[0].direction'],
      [6, 18, 'rules[1].replace[0].regex'],
    ]);
  });

  it('YAML syntax errors carry the line', () => {
    const e = errorOf('rules:\n  - agent: monitor\n    match: { port: 80\n');
    expect(e.issues[0]!.line).toBeGreaterThanOrEqual(3);
    expect(e.message).toMatch(/^invalid config conf\.yaml/);
    expect(e.issues[0]!.message).toMatch(/^YAML: /);
  });

  it('duplicate keys are errors, not silently last-wins', () => {
    const e = errorOf('rules:\n  - agent: monitor\n    agent: replace\n');
    expect(e.issues[0]!.line).toBe(3);
  });

  it('an empty file and a missing file are errors naming the file', () => {
    expect(errorOf('').message).toContain('conf.yaml:1:1: empty config');
    expect(() => loadConfig('/nonexistent/tapgate.yaml')).toThrow(/\/nonexistent\/tapgate\.yaml: cannot read/);
  });

  it('a file with thousands of errors lists the first 50 and counts the rest (a 3 MB broken file made a 28 MB message)', () => {
    const text = `rules:\n${'  - { match: { port: 99999 }, agent: replace, replace: [] }\n'.repeat(3000)}`;
    let err: Error | undefined;
    try {
      parseConfig(text, 'big.yaml');
    } catch (e) {
      err = e as Error;
    }
    expect(err?.message.split('\n').length).toBeLessThanOrEqual(52);
    expect(err?.message).toMatch(/^invalid config big\.yaml: \d{4,} errors/);
    expect(err?.message).toMatch(/… and \d+ more$/);
  });
});

describe('config: regex engines', () => {
  const one = (rule: string) => `rules:\n  - agent: replace\n    replace:\n      - ${rule}\n`;
  const BT =
    'lookarounds and backreferences need backtracking, which can take exponential time; rewrite the pattern ' +
    'without it, or set `engine: backtracking` (each match attempt then stops after `maxSteps` steps, default ' +
    '10000, counted as regexBudgetExceeded; the connection is then reset unless the rule says `budgetExceeded: pass`)';

  it('refuses a lookahead or a backreference for the linear engine, with the file:line:column and the reason', () => {
    expect(errorOf(one('{ regex: "Server: (?=nginx)\\\\w+", with: "x", maxMatch: 64 }')).message).toBe(
      'invalid config conf.yaml: 1 error\n' +
        `  conf.yaml:4:18: rules[0].replace[0].regex: the linear engine cannot run the lookahead "(?=nginx)" at pattern index 8: ${BT}`,
    );
    expect(errorOf(one('{ regex: "(a)\\\\1", with: "x", maxMatch: 64, engine: linear }')).message).toBe(
      'invalid config conf.yaml: 1 error\n' +
        `  conf.yaml:4:18: rules[0].replace[0].regex: the linear engine cannot run the backreference "\\1" at pattern index 3: ${BT}`,
    );
    expect(errorOf(one('{ regex: "(?<=x)a", with: "x", maxMatch: 8 }')).issues[0]!.message).toMatch(/lookbehind "\(\?<=x\)" at pattern index 0/);
  });

  it('accepts them with engine: backtracking and a step budget, passed through to the agent', () => {
    const c = parseConfig(one('{ regex: "(a)\\\\1(?=b)", with: "x", maxMatch: 64, engine: backtracking, maxSteps: 5000 }'), 'conf.yaml');
    expect(c.rules[0]!.config).toEqual([{ regex: '(a)\\1(?=b)', with: 'x', maxMatch: 64, engine: 'backtracking', maxSteps: 5000 }]);
    const p = parseConfig(one('{ regex: "a(?=b)", with: "x", maxMatch: 64, engine: backtracking, budgetExceeded: pass }'), 'conf.yaml');
    expect(p.rules[0]!.config).toEqual([{ regex: 'a(?=b)', with: 'x', maxMatch: 64, engine: 'backtracking', budgetExceeded: 'pass' }]);
    const d = parseConfig(one('{ regex: "(a|aa)+b", with: "x", maxMatch: 64, engine: linear }'), 'conf.yaml');
    expect(d.rules[0]!.config).toEqual([{ regex: '(a|aa)+b', with: 'x', maxMatch: 64, engine: 'linear' }]);
  });

  const cases: [string, string, number, string, string][] = [
    ['maxSteps without backtracking', one('{ regex: "a", with: "x", maxMatch: 64, maxSteps: 5000 }'), 58, 'rules[0].replace[0].maxSteps', 'applies to engine: backtracking only (the linear engine needs no budget)'],
    ['unknown engine', one('{ regex: "a", with: "x", maxMatch: 64, engine: fast }'), 56, 'rules[0].replace[0].engine', 'expected one of: linear, backtracking, got "fast"'],
    ['engine on a literal rule', one('{ find: "a", with: "x", engine: linear }'), 41, 'rules[0].replace[0].engine', '`engine` applies to regex rules only'],
    ['budgetExceeded without backtracking', one('{ regex: "a", with: "x", maxMatch: 64, budgetExceeded: pass }'), 64, 'rules[0].replace[0].budgetExceeded', 'applies to engine: backtracking only (the linear engine needs no budget)'],
    ['budgetExceeded on a literal rule', one('{ find: "a", with: "x", budgetExceeded: pass }'), 49, 'rules[0].replace[0].budgetExceeded', '`budgetExceeded` applies to regex rules only'],
    ['unknown budgetExceeded', one('{ regex: "a(?=b)", with: "x", maxMatch: 64, engine: backtracking, budgetExceeded: skip }'), 91, 'rules[0].replace[0].budgetExceeded', 'expected one of: reset, pass (what an attempt stopped by maxSteps does), got "skip"'],
    ['maxSteps out of range', one('{ regex: "a", with: "x", maxMatch: 64, engine: backtracking, maxSteps: 0 }'), 80, 'rules[0].replace[0].maxSteps', 'expected the steps one backtracking match attempt may take: an integer from 1 to 10000000, got 0'],
    ['program too large', one('{ regex: "(?:a{1000}){30}", with: "x", maxMatch: 64 }'), 18, 'rules[0].replace[0].regex', 'too large: more than 20000 instructions once counted repetitions are expanded; lower the {n,m} counts'],
  ];
  it.each(cases)('%s', (_what, text, col, path, msg) => {
    const e = errorOf(text);
    expect(e.issues).toHaveLength(1);
    expect(e.message).toBe(`invalid config conf.yaml: 1 error\n  conf.yaml:4:${col}: ${path}: ${msg}`);
  });
});

describe('config: selectRule', () => {
  const cfg = parseConfig(
    `
rules:
  - name: ftp-from-lan
    match: { serverPort: 21, clientAddress: 10.1.0.0/16 }
    direction: c2s
    agent: replace
    replace: [{ find: "PORT 40, ", with: "PORT 10, " }]
  - name: web
    match: { port: [80, "8000-8099"] }
    agent: replace
    replace: [{ find: "Hello world", with: "Hi there" }]
  - name: dmz
    match: { address: 192.168.7.0/24 }
    direction: s2c
    agent: monitor
  - name: exact-pair
    match: { clientAddress: 10.9.9.9, serverAddress: [10.8.8.8, 10.7.0.0/16], clientPort: 5000 }
    agent: monitor
`,
    'sel.yaml',
  );
  const conn = (c: string, cp: number, s: string, sp: number): ConnKey => ({ clientAddr: ip(c), clientPort: cp, serverAddr: ip(s), serverPort: sp });
  const pick = (k: ConnKey) => selectRule(cfg, k)?.rule.name;

  it('serverPort + client CIDR must both hold', () => {
    expect(pick(conn('10.1.2.3', 40000, '10.200.0.2', 21))).toBe('ftp-from-lan');
    expect(pick(conn('10.2.2.3', 40000, '10.200.0.2', 21))).toBeUndefined();
    expect(pick(conn('10.1.2.3', 21, '10.200.0.2', 40000))).toBeUndefined(); // 21 on the client side
  });

  it('port matches either side, lists and ranges', () => {
    expect(pick(conn('1.1.1.1', 80, '2.2.2.2', 40000))).toBe('web');
    expect(pick(conn('1.1.1.1', 40000, '2.2.2.2', 8099))).toBe('web');
    expect(pick(conn('1.1.1.1', 40000, '2.2.2.2', 8100))).toBeUndefined();
  });

  it('address matches either side by CIDR; the first matching rule wins', () => {
    expect(selectRule(cfg, conn('192.168.7.200', 1234, '8.8.8.8', 53))).toMatchObject({ index: 2, rule: { name: 'dmz' } });
    expect(pick(conn('8.8.8.8', 53, '192.168.7.1', 1234))).toBe('dmz');
    expect(pick(conn('192.168.7.1', 40000, '192.168.7.2', 80))).toBe('web'); // rule 1 before rule 2
  });

  it('all conditions of a rule must hold', () => {
    expect(pick(conn('10.9.9.9', 5000, '10.7.3.4', 9))).toBe('exact-pair');
    expect(pick(conn('10.9.9.9', 5000, '10.8.8.8', 9))).toBe('exact-pair');
    expect(pick(conn('10.9.9.9', 5001, '10.8.8.8', 9))).toBeUndefined();
    expect(pick(conn('10.9.9.8', 5000, '10.8.8.8', 9))).toBeUndefined();
  });

  it('direction gives the agent its editable directions', () => {
    expect([...cfg.rules[0]!.directions]).toEqual(['c2s']);
    expect([...cfg.rules[2]!.directions]).toEqual(['s2c']);
    expect([...cfg.rules[1]!.directions].sort()).toEqual(['c2s', 's2c']);
  });

  it('an empty or absent match selects every connection', () => {
    const c = parseConfig('rules:\n  - agent: monitor\n    match: {}\n  - agent: replace\n    replace: [{ find: a, with: b }]\n', 'e.yaml');
    expect(selectRule(c, conn('1.2.3.4', 1, '5.6.7.8', 2))?.index).toBe(0);
    const d = parseConfig('rules:\n  - agent: monitor\n', 'e.yaml');
    expect(selectRule(d, conn('1.2.3.4', 1, '5.6.7.8', 2))?.index).toBe(0);
    expect(selectRule(parseConfig('rules: []\n', 'e.yaml'), conn('1.2.3.4', 1, '5.6.7.8', 2))).toBeUndefined();
  });
});

describe('config: IPv4 helpers', () => {
  it('parses dotted quads strictly', () => {
    expect(parseIpv4('10.0.0.1')).toBe(0x0a000001);
    expect(parseIpv4('255.255.255.255')).toBe(0xffffffff);
    for (const bad of ['10.0.0', '10.0.0.256', '010.0.0.1', '1.2.3.4.5', ' 1.2.3.4', 'a.b.c.d', '']) {
      expect(parseIpv4(bad)).toBeNull();
    }
  });
  it('parses CIDRs including /0 and /32', () => {
    expect(parseCidr('0.0.0.0/0')).toEqual({ addr: 0, prefix: 0, mask: 0 });
    expect(parseCidr('10.0.0.1')).toEqual({ addr: 0x0a000001, prefix: 32, mask: 0xffffffff });
    expect(parseCidr('10.128.0.0/9')).toEqual({ addr: 0x0a800000, prefix: 9, mask: 0xff800000 });
  });
});

describe('config: durations with units', () => {
  it('limits ending in Ms and nat timeouts take milliseconds or "500ms", "10s", "1.5s", "2m", "1h", "7d"', () => {
    const c = parseConfig('rules: []\nlimits:\n  holdTimeoutMs: "10s"\n  idleTimeoutMs: 2m\n  closedTimeoutMs: 1500\n  commandMaxAgeMs: "1.5s"\nnat:\n  timeouts: { tcpEstablished: 2h, udp: "7d", icmp: 250ms }\n', 'd.yaml');
    expect(c.limits).toMatchObject({ holdTimeoutMs: 10_000, idleTimeoutMs: 120_000, closedTimeoutMs: 1500, commandMaxAgeMs: 1500 });
    expect(c.nat?.table.timeouts).toMatchObject({ tcpEstablished: 7_200_000, udp: 604_800_000, icmp: 250 });
    expect(parseDuration('0.5ms')).toMatch(/not a whole number of milliseconds/);
  });

  it('a bad duration is one precise error', () => {
    expectOneIssue('rules: []\nlimits:\n  holdTimeoutMs: 10 seconds\n', 3, 'limits.holdTimeoutMs', /"10 seconds" is not a duration: expected a number with a unit \(ms, s, m, h, d\)/);
    expectOneIssue('rules: []\nlimits:\n  holdTimeoutMs: 0s\n', 3, 'limits.holdTimeoutMs', /a duration >= 1 ms/);
    expectOneIssue('rules: []\nnat:\n  timeouts: { udp: -5 }\n', 3, 'nat.timeouts.udp', /a duration >= 1 ms/);
  });
});
