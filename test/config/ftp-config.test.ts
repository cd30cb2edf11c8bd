/** Config for the ftp agent: the example loads, options are checked with file:line, and a loaded rule drives the agent. */
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { createAgent } from '../../src/agent/registry.js';
import type { AgentContext, Direction } from '../../src/agent/types.js';
import { loadConfig, parseConfig, selectRule } from '../../src/config/index.js';
import { parseIpv4 } from '../../src/wire/ipv4.js';
import { errorOf } from '../helpers/config-error.js';

const example = (name: string) => fileURLToPath(new URL(`../../examples/${name}`, import.meta.url));


describe('config: agent ftp', () => {
  it('an ftp rule without match applies to the FTP control port 21 (server side) only', () => {
    const c = parseConfig('rules:\n  - agent: ftp\n', 'conf.yaml');
    const conn = (serverPort: number) => ({ clientAddr: parseIpv4('10.0.0.1')!, clientPort: 40000, serverAddr: parseIpv4('10.0.0.2')!, serverPort });
    expect(selectRule(c, conn(21))?.rule.agent).toBe('ftp');
    expect(selectRule(c, conn(80))).toBeUndefined();
    expect(selectRule(c, { ...conn(2121), clientPort: 21 })).toBeUndefined();
  });

  it('examples/ftp-static.yaml loads: an ftp rule on server port 21 with both static mappings', () => {
    const c = loadConfig(example('ftp-static.yaml'));
    expect(c.rules).toHaveLength(1);
    const r = c.rules[0]!;
    expect(r.agent).toBe('ftp');
    expect(r.match.serverPort).toEqual([{ lo: 21, hi: 21 }]);
    expect(r.config).toEqual({
      maxLine: 512,
      clientAddress: { from: '10.200.0.1', to: '10.200.0.101' },
      serverAddress: { from: '10.201.0.2', to: '10.200.0.2' },
    });
  });

  it('a loaded rule drives the agent: PORT and 227 rewritten by the static mapping', () => {
    const c = loadConfig(example('ftp-static.yaml'));
    const sel = selectRule(c, { clientAddr: parseIpv4('10.200.0.1')!, clientPort: 40000, serverAddr: parseIpv4('10.201.0.2')!, serverPort: 21 });
    expect(sel?.rule.agent).toBe('ftp');
    const ctx: AgentContext = {
      flowId: 'f',
      client: { addr: '10.200.0.1', port: 40000 },
      server: { addr: '10.201.0.2', port: 21 },
      directions: sel!.rule.directions as ReadonlySet<Direction>,
    };
    const a = createAgent(sel!.rule.agent, sel!.rule.config, ctx);
    const c2s = a.feed('c2s', 0, Buffer.from('PORT 10,200,0,1,195,80\r\n'));
    expect(c2s.edits.map((e) => Buffer.from(e.data).toString())).toEqual(['10,200,0,101,195,80']);
    const s2c = a.feed('s2c', 0, Buffer.from('227 Entering Passive Mode (10,201,0,2,195,80).\r\n'));
    expect(s2c.edits.map((e) => Buffer.from(e.data).toString())).toEqual(['10,200,0,2,195,80']);
  });

  it('agent ftp without options gets an empty config (no static mapping, maxLine default)', () => {
    const c = parseConfig('rules:\n  - agent: ftp\n    match: { serverPort: 21 }\n', 'f.yaml');
    expect(c.rules[0]).toMatchObject({ agent: 'ftp', config: {} });
    const d = parseConfig('rules:\n  - agent: ftp\n    ftp: { clientAddress: { from: 10.200.0.0/24, to: 10.100.0.0/24 } }\n', 'f.yaml');
    expect(d.rules[0]!.config).toEqual({ clientAddress: { from: '10.200.0.0/24', to: '10.100.0.0/24' } });
  });

  const cases: [string, string, number, string, RegExp][] = [
    ['maxLine too small', 'rules:\n  - agent: ftp\n    ftp:\n      maxLine: 8\n', 4, 'rules[0].ftp.maxLine', /integer from 16 to 65536, got 8/],
    ['unknown ftp key', 'rules:\n  - agent: ftp\n    ftp:\n      maxLen: 80\n', 4, 'rules[0].ftp.maxLen', /unknown key "maxLen" in ftp options; allowed: maxLine, clientAddress, serverAddress/],
    ['bad from address', 'rules:\n  - agent: ftp\n    ftp:\n      clientAddress: { from: 10.200.0.300, to: 10.1.1.1 }\n', 4, 'rules[0].ftp.clientAddress.from', /not an IPv4 address/],
    ['to missing', 'rules:\n  - agent: ftp\n    ftp:\n      serverAddress: { from: 10.200.0.3 }\n', 4, 'rules[0].ftp.serverAddress.to', /missing; expected an IPv4 address or CIDR/],
    ['sizes differ', 'rules:\n  - agent: ftp\n    ftp:\n      clientAddress: { from: 10.200.0.0/24, to: 10.1.1.1 }\n', 4, 'rules[0].ftp.clientAddress.to', /must be the same size/],
    ['ftp options on another agent', 'rules:\n  - agent: monitor\n    ftp: { maxLine: 100 }\n', 3, 'rules[0].ftp', /only for agent ftp/],
  ];

  it.each(cases)('%s', (_what, text, line, path, msg) => {
    const e = errorOf(text);
    expect(e.issues).toHaveLength(1);
    expect(e.issues[0]).toMatchObject({ file: 'conf.yaml', line, path });
    expect(e.issues[0]!.message).toMatch(msg);
  });
});
