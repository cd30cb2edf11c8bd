/** Config for the http agent: the example loads, options are checked with file:line, and a loaded rule drives the agent. */
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { createAgent } from '../../src/agent/registry.js';
import type { AgentContext, Direction } from '../../src/agent/types.js';
import { loadConfig, parseConfig, selectRule } from '../../src/config/index.js';
import { parseIpv4 } from '../../src/wire/ipv4.js';
import { errorOf } from '../helpers/config-error.js';

const example = (name: string) => fileURLToPath(new URL(`../../examples/${name}`, import.meta.url));


describe('config: agent http', () => {
  it('examples/http.yaml loads: ports 80 and 8080, both directions, the issue\'s rewrites', () => {
    const c = loadConfig(example('http.yaml'));
    expect(c.rules).toHaveLength(1);
    const r = c.rules[0]!;
    expect(r.agent).toBe('http');
    expect(r.match.port).toEqual([
      { lo: 80, hi: 80 },
      { lo: 8080, hi: 8080 },
    ]);
    expect([...r.directions].sort()).toEqual(['c2s', 's2c']);
    expect(r.config).toEqual({
      response: { replace: [{ find: 'Hello world', with: 'Hi there' }], setHeaders: { 'X-Rewritten-By': 'tapgate' }, removeHeaders: ['Server'] },
      request: { replace: [{ find: 'secret', with: '[redacted]' }], setHeaders: {}, removeHeaders: [] },
    });
  });

  it('a loaded rule drives the agent: the response body rewritten, Content-Length fixed', () => {
    const c = loadConfig(example('http.yaml'));
    const sel = selectRule(c, { clientAddr: parseIpv4('10.200.0.1')!, clientPort: 40000, serverAddr: parseIpv4('10.200.0.2')!, serverPort: 8080 });
    expect(sel?.rule.agent).toBe('http');
    const ctx: AgentContext = {
      flowId: 'f',
      client: { addr: '10.200.0.1', port: 40000 },
      server: { addr: '10.200.0.2', port: 8080 },
      directions: sel!.rule.directions as ReadonlySet<Direction>,
    };
    const a = createAgent(sel!.rule.agent, sel!.rule.config, ctx);
    a.feed('c2s', 0, Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
    const text = Buffer.from('HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 12\r\n\r\nHello world\n');
    const out = a.feed('s2c', 0, text);
    const parts: Buffer[] = [];
    let p = 0;
    for (const e of out.edits) {
      parts.push(text.subarray(p, e.at), Buffer.from(e.data));
      p = e.at + e.len;
    }
    parts.push(text.subarray(p));
    expect(Buffer.concat(parts).toString()).toBe('HTTP/1.1 200 OK\r\nContent-Length: 9\r\nX-Rewritten-By: tapgate\r\n\r\nHi there\n');
  });

  it('agent http without options gets an empty config (normalisation only); numbers are taken as field values', () => {
    const c = parseConfig('rules:\n  - agent: http\n', 'f.yaml');
    expect(c.rules[0]).toMatchObject({ agent: 'http', config: {} });
    const d = parseConfig('rules:\n  - agent: http\n    http:\n      request: { setHeaders: { X-Version: 2 } }\n      maxPipeline: 8\n', 'f.yaml');
    expect(d.rules[0]!.config).toEqual({ request: { setHeaders: { 'X-Version': '2' } }, maxPipeline: 8 });
    const u = parseConfig('rules:\n  - agent: http\n    http: { unrewritable: pass }\n', 'f.yaml');
    expect(u.rules[0]!.config).toEqual({ unrewritable: 'pass' });
    const g = parseConfig('rules:\n  - agent: http\n    http: { decode: true, maxDecodedRatio: 20, maxDecoding: 10 }\n', 'f.yaml');
    expect(g.rules[0]!.config).toEqual({ decode: true, maxDecodedRatio: 20, maxDecoding: 10 });
  });

  it('body rules are the replace agent\'s: a regex rule keeps its fields', () => {
    const c = parseConfig('rules:\n  - agent: http\n    http:\n      response:\n        replace:\n          - { regex: "n[0-9]+", with: "<$&>", maxMatch: 8, flags: i }\n', 'f.yaml');
    expect(c.rules[0]!.config).toMatchObject({ response: { replace: [{ regex: 'n[0-9]+', with: '<$&>', maxMatch: 8, flags: 'i' }] } });
  });

  const http = (body: string) => `rules:\n  - agent: http\n    http:\n${body}`;
  const cases: [string, string, number, string, RegExp][] = [
    ['direction other than both', 'rules:\n  - agent: http\n    direction: s2c\n', 3, 'rules[0].direction', /agent http reads both directions/],
    ['unknown http key', http('      maxHeader: 80\n'), 4, 'rules[0].http.maxHeader', /unknown key "maxHeader" in http options; allowed: request, response, maxHeaderBytes/],
    ['unknown side key', http('      response:\n        headers: {}\n'), 5, 'rules[0].http.response.headers', /unknown key "headers" in http response options; allowed: replace, setHeaders, removeHeaders, identity/],
    ['identity on the request side', http('      request:\n        identity: false\n'), 5, 'rules[0].http.request.identity', /unknown key "identity" in http request options/],
    ['setting a framing field', http('      response:\n        setHeaders: { Content-Length: "5" }\n'), 5, 'rules[0].http.response.setHeaders["Content-Length"]', /managed by the http agent/],
    ['a field name that is not a token', http('      request:\n        setHeaders: { "X Y": a }\n'), 5, 'rules[0].http.request.setHeaders["X Y"]', /not a field name/],
    ['a value with a line break', http('      request:\n        setHeaders: { X-A: "a\\r\\nX-B: b" }\n'), 5, 'rules[0].http.request.setHeaders["X-A"]', /no CR\/LF\/NUL/],
    ['removing a framing field', http('      response:\n        removeHeaders: [ Transfer-Encoding ]\n'), 5, 'rules[0].http.response.removeHeaders[0]', /managed by the http agent/],
    ['removing a framing field spelled with "_" (the same name to a CGI-style gateway)', http('      response:\n        removeHeaders: [ Transfer_Encoding ]\n'), 5, 'rules[0].http.response.removeHeaders[0]', /managed by the http agent/],
    ['a regex body rule without maxMatch', http('      response:\n        replace:\n          - { regex: "a+", with: b }\n'), 6, 'rules[0].http.response.replace[0].maxMatch', /required for a regex rule/],
    ['a regex body rule that could never match (maxMatch under its shortest match)', http('      response:\n        replace:\n          - { regex: "x{20}", with: b, maxMatch: 5 }\n'), 6, 'rules[0].http.response.replace[0].maxMatch', /5 is shorter than the shortest match of the regex \(20 bytes\)/],
    ['an empty body rule list', http('      response:\n        replace: []\n'), 5, 'rules[0].http.response.replace', /at least one find\/regex rule/],
    ['maxPipeline out of range', http('      maxPipeline: 0\n'), 4, 'rules[0].http.maxPipeline', /integer from 1 to 4096, got 0/],
    ['maxHeaderBytes too small', http('      maxHeaderBytes: 100\n'), 4, 'rules[0].http.maxHeaderBytes', /integer from 256 to 65536, got 100/],
    ['identity not a boolean', http('      response:\n        identity: maybe\n'), 5, 'rules[0].http.response.identity', /expected true or false/],
    ['decode not a boolean', http('      decode: gzip\n'), 4, 'rules[0].http.decode', /expected true or false/],
    ['maxDecoding out of range', http('      maxDecoding: 0\n'), 4, 'rules[0].http.maxDecoding', /integer from 1 to 1000000, got 0/],
    ['maxDecodedRatio out of range', http('      maxDecodedRatio: 2000\n'), 4, 'rules[0].http.maxDecodedRatio', /integer from 1 to 1032, got 2000/],
    ['unrewritable not refuse or pass', http('      unrewritable: drop\n'), 4, 'rules[0].http.unrewritable', /expected one of: refuse, pass/],
    ['held header and body over maxHeldBytes', http('      maxBufferedBody: 60000\n'), 4, 'rules[0].http.maxBufferedBody', /16384 \+ 60000\) is more than limits.maxHeldBytes \(65536\)/],
    ['http options on another agent', 'rules:\n  - agent: monitor\n    http: { maxPipeline: 4 }\n', 3, 'rules[0].http', /only for agent http/],
  ];

  it.each(cases)('%s', (_what, text, line, path, msg) => {
    const e = errorOf(text);
    expect(e.issues).toHaveLength(1);
    expect(e.issues[0]).toMatchObject({ file: 'conf.yaml', line, path });
    expect(e.issues[0]!.message).toMatch(msg);
  });

  it('a body rule that needs more held bytes than limits.maxHeldBytes is refused where it is written', () => {
    const e = errorOf('limits: { maxHeldBytes: 1024 }\nrules:\n  - agent: http\n    http:\n      maxHeaderBytes: 512\n      maxBufferedBody: 0\n      request:\n        replace:\n          - { regex: "x+", with: y, maxMatch: 4096 }\n');
    expect(e.issues).toHaveLength(1);
    expect(e.issues[0]).toMatchObject({ line: 9, path: 'rules[0].http.request.replace[0].maxMatch' });
    expect(e.issues[0]!.message).toMatch(/needs up to 4095 held-back bytes/);
  });
});
