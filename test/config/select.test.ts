/**
 * Rule selection through the index (config/select.ts) must give what trying every rule in order
 * gives, and the shadow analysis what comparing every pair gives: random rule lists (ports,
 * ranges wide and narrow, addresses and prefixes of both families, either side or one side)
 * against random connections, many of them built from the rules' own values.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parseConfig, type ConnKey, type Rule } from '../../src/config/index.js';
import { covers, shadowedRules } from '../../src/config/shadow.js';
import { keyOf, MAX_KEY_PORTS, ruleIndex, ruleMatches, rulePortsMatch, selectRule } from '../../src/config/select.js';
import { parseIp } from '../../src/wire/ip.js';

const PORTS = ['80', '443', '21', '8000-8099', '1-65535', '1024-4096', '[80, 8080]', '22'];
const V4 = ['10.0.0.1', '10.0.0.0/24', '10.0.0.0/8', '10.0.1.7', '192.168.0.0/16', '0.0.0.0/0', '10.0.0.128/25'];
const V6 = ['2001:db8::1', '2001:db8::/32', '2001:db8::/64', '2001:db8:0:1::/64', '::/0', '2001:db8::/31', '2001:db8::8000/113'];

const cond = fc.record(
  {
    port: fc.constantFrom(...PORTS),
    clientPort: fc.constantFrom(...PORTS),
    serverPort: fc.constantFrom(...PORTS),
    address: fc.constantFrom(...V4, ...V6),
    clientAddress: fc.constantFrom(...V4, ...V6),
    serverAddress: fc.constantFrom(...V4, ...V6),
  },
  { requiredKeys: [] },
);

function configOf(conds: Record<string, string>[]): Rule[] {
  if (conds.length === 0) return [];
  const text = `rules:\n${conds
    .map((c) => {
      const m = Object.entries(c).map(([k, v]) => `${k}: ${v.startsWith('[') ? v : JSON.stringify(v)}`).join(', ');
      return `  - match: { ${m} }\n    agent: replace\n    replace: [ { find: "a", with: "b" } ]\n`;
    })
    .join('')}`;
  return parseConfig(text, 'rules.yaml').rules as Rule[];
}

const linearFirst = (rules: readonly Rule[], c: ConnKey): number => rules.findIndex((r) => ruleMatches(r, c));

const ADDRS = ['10.0.0.1', '10.0.0.2', '10.0.1.7', '10.0.0.200', '192.168.3.4', '172.16.0.1', '2001:db8::1', '2001:db8::2', '2001:db8:0:1::5', '2001:db9::1', '2001:db8::8001'];
const conn = fc.record({
  clientAddr: fc.constantFrom(...ADDRS),
  serverAddr: fc.constantFrom(...ADDRS),
  clientPort: fc.constantFrom(80, 443, 21, 22, 8050, 8080, 1, 4096, 40000, 65535),
  serverPort: fc.constantFrom(80, 443, 21, 22, 8050, 8080, 1, 4096, 40000, 65535),
});

describe('rule selection through the index', () => {
  it('gives the first rule in order that matches, for random rule lists and connections', () => {
    fc.assert(
      fc.property(fc.array(cond, { maxLength: 12 }), fc.array(conn, { minLength: 1, maxLength: 20 }), (conds, conns) => {
        const rules = configOf(conds);
        for (const k of conns) {
          const ca = parseIp(k.clientAddr)!;
          const sa = parseIp(k.serverAddr)!;
          // One family per connection.
          if (typeof ca !== typeof sa) continue;
          const c: ConnKey = { clientAddr: ca, serverAddr: sa, clientPort: k.clientPort, serverPort: k.serverPort };
          const want = linearFirst(rules, c);
          expect(ruleIndex(rules).first(c)).toBe(want);
          expect(selectRule({ rules } as never, c)?.index ?? -1).toBe(want);
          const all = rules.flatMap((r, i) => (ruleMatches(r, c) ? [i] : []));
          expect(ruleIndex(rules).matching(c)).toEqual(all);
          expect(ruleIndex(rules).portsMatch(c.clientPort, c.serverPort)).toBe(rules.some((r) => rulePortsMatch(r, c.clientPort, c.serverPort)));
        }
      }),
      { seed: 4242, numRuns: 400 },
    );
  });

  it('finds a rule filed under either side\'s port or address from either side of the connection', () => {
    const c4 = (ca: string, cp: number, sa: string, sp: number): ConnKey => ({ clientAddr: parseIp(ca)!, clientPort: cp, serverAddr: parseIp(sa)!, serverPort: sp });
    const cases: [Record<string, string>, ConnKey, boolean][] = [
      [{ port: '80' }, c4('10.9.9.9', 80, '10.8.8.8', 443), true],
      [{ port: '80' }, c4('10.9.9.9', 443, '10.8.8.8', 80), true],
      [{ port: '80' }, c4('10.9.9.9', 443, '10.8.8.8', 8080), false],
      [{ address: '10.0.0.0/24' }, c4('10.0.0.9', 1, '10.8.8.8', 2), true],
      [{ address: '10.0.0.0/24' }, c4('10.8.8.8', 1, '10.0.0.9', 2), true],
      [{ address: '2001:db8::/64' }, c4('2001:db8::9', 1, '2001:db9::1', 2), true],
      [{ address: '2001:db8::/64' }, c4('2001:db9::1', 1, '2001:db8::9', 2), true],
      [{ address: '2001:db8::8000/113' }, c4('2001:db9::1', 1, '2001:db8::7fff', 2), false],
      [{ clientPort: '22' }, c4('10.9.9.9', 22, '10.8.8.8', 80), true],
      [{ clientPort: '22' }, c4('10.9.9.9', 80, '10.8.8.8', 22), false],
      [{ clientAddress: '10.9.0.0/16' }, c4('10.9.9.9', 1, '10.8.8.8', 2), true],
      [{ serverAddress: '10.9.0.0/16' }, c4('10.9.9.9', 1, '10.8.8.8', 2), false],
    ];
    for (const [m, c, hit] of cases) {
      // Behind a rule filed elsewhere, as the second of two.
      const rules = configOf([{ serverPort: '9' }, m]);
      expect([m, ruleIndex(rules).first(c)]).toEqual([m, hit ? 1 : -1]);
    }
  });

  it('files each rule under its narrowest condition; wide port ranges are not keys', () => {
    const [a, b, c, d] = configOf([{ serverAddress: '10.0.0.1', port: '80' }, { port: '80', clientAddress: '10.0.0.0/8' }, { serverPort: '1-65535' }, {}]);
    expect(keyOf(a!.match)).toBe('serverAddress');
    expect(keyOf(b!.match)).toBe('port');
    expect(keyOf(c!.match)).toBeNull();
    expect(keyOf(d!.match)).toBeNull();
    expect(MAX_KEY_PORTS).toBeLessThan(65535);
  });

  it('a long list of address rules: a connection is tried against its own rules, not all of them', () => {
    const n = 5000;
    const text = `rules:\n${Array.from({ length: n }, (_, i) => `  - match: { serverAddress: 10.1.${i >> 8}.${i & 255}, port: 80 }\n    agent: replace\n    replace: [ { find: "a${i}", with: "b" } ]\n`).join('')}`;
    const rules = parseConfig(text, 'big.yaml').rules;
    let tried = 0;
    const counting = rules.map((r) => ({ ...r, get match() { tried++; return r.match; } })) as unknown as Rule[];
    const idx = ruleIndex(counting);
    tried = 0;
    expect(idx.first({ clientAddr: 0x0b000001, clientPort: 40000, serverAddr: 0x0a010a0a, serverPort: 80 })).toBe(0x0a * 256 + 0x0a);
    expect(idx.first({ clientAddr: 0x0b000001, clientPort: 40000, serverAddr: 0x0c000001, serverPort: 80 })).toBe(-1);
    // Trying every rule in order would read a rule's conditions thousands of times.
    expect(tried).toBeLessThan(10);
  });
});

describe('shadowed rules', () => {
  it('the same as comparing every rule with every earlier one', () => {
    fc.assert(
      fc.property(fc.array(cond, { maxLength: 14 }), (conds) => {
        const rules = configOf(conds);
        const want = rules.flatMap((r, i) => {
          const by = rules.slice(0, i).find((e) => covers(e.match, r.match));
          return by === undefined ? [] : [[r.index, by.index]];
        });
        expect(shadowedRules(rules).map((s) => [s.rule.index, s.by.index])).toEqual(want);
      }),
      { seed: 777, numRuns: 400 },
    );
  });

  it('20,000 rules: each compared with the few earlier ones that share a connection with it, not with all', () => {
    const n = 20_000;
    const text = `rules:\n${Array.from({ length: n }, (_, i) => `  - match: { serverPort: ${1024 + i} }\n    agent: replace\n    replace: [ { find: "a", with: "b" } ]\n`).join('')}  - match: { serverPort: 2000 }\n    agent: replace\n    replace: [ { find: "a", with: "b" } ]\n`;
    const rules = parseConfig(text, 'big.yaml').rules;
    let reads = 0;
    const counting = rules.map((r) => ({ ...r, get match() { reads++; return r.match; } })) as unknown as Rule[];
    const s = shadowedRules(counting);
    expect(s.map((x) => [x.rule.index, x.by.index])).toEqual([[n, 2000 - 1024]]);
    // Pair by pair: 200 million reads (minutes).
    expect(reads).toBeLessThan(10 * n);
  });
});
