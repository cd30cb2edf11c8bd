/**
 * The event log (engine/events.ts): a flow record per connection when it ends (endpoints, rule,
 * agent, frames and bytes per direction in and out, duration, how it ended), ftp translations
 * through masquerade NAT, drops by reason (rate-limited); nothing kept without a sink.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { tcpFrame } from '../../src/wire/tcp-frame.js';
import { parseConfig } from '../../src/config/index.js';
import { Gateway, type Side } from '../../src/engine/gateway.js';
import { decodeFrame } from '../../src/wire/frame.js';
import { ACK, FIN, Harness, PSH, SYN } from '../hostile/harness.js';

type Ev = Record<string, unknown> & { event: string };

function withEvents(config: string | null): { h: Harness; evs: Ev[] } {
  const evs: Ev[] = [];
  const h = new Harness({}, { events: (e) => evs.push(e as Ev) }, config);
  return { h, evs };
}

const RULE = `
rules:
  - name: redact
    match: { port: 80 }
    agent: replace
    replace: [ { find: "secret", with: "[gone]" } ]
`;

describe('event log', () => {
  it('a flow record when a rewritten connection ends with FINs: fields, bytes before and after rewriting', () => {
    const { h, evs } = withEvents(RULE);
    const c = h.connect(40000);
    const req = 'a secret and a secret';
    h.send(c.data(0, 0, req), 0);
    h.send(c.data(1, 0, 'ok', req.length), 1);
    h.send(c.data(0, req.length, '', 2, ACK | FIN), 0);
    h.send(c.data(1, 2, '', req.length + 1, ACK | FIN), 1);
    h.send(c.data(0, req.length + 1, '', 3, ACK), 0);
    h.advance(120_000); // closed flows leave the table
    const flows = evs.filter((e) => e.event === 'flow');
    expect(flows).toHaveLength(1);
    expect(flows[0]).toMatchObject({
      flow: '10.0.0.1.40000-10.0.0.2.80',
      client: '10.0.0.1:40000',
      server: '10.0.0.2:80',
      rule: 'redact',
      agent: 'replace',
      midstream: false,
      end: 'fin',
      c2s: { bytes: req.length, bytesOut: req.length + 2 * ('[gone]'.length - 'secret'.length) },
      s2c: { bytes: 2, bytesOut: 2 },
    });
    const f = flows[0]! as unknown as { c2s: { frames: number; framesOut: number }; durationMs: number };
    expect(f.c2s.frames).toBe(5); // SYN, ACK, data, FIN, last ACK
    expect(f.c2s.framesOut).toBe(5);
    expect(f.durationMs).toBeGreaterThanOrEqual(0);
  });

  it('a connection without a rule, a RST, and one still open at the end (flushEvents)', () => {
    const { h, evs } = withEvents(null);
    const a = h.connect(40001);
    h.send(a.data(0, 0, 'hi'), 0);
    h.send(a.data(0, 2, '', 0, 0x04 /* RST */), 0);
    const b = h.connect(40002);
    h.send(b.data(0, 0, 'still here'), 0);
    h.advance(120_000);
    h.gw.flushEvents(h.now);
    const flows = evs.filter((e) => e.event === 'flow');
    expect(flows.map((f) => [f['client'], f['end'], f['rule']])).toEqual([
      ['10.0.0.1:40001', 'rst', null],
      ['10.0.0.1:40002', 'open', null],
    ]);
  });

  it('drops by reason, rate-limited like the log', () => {
    const { h, evs } = withEvents(RULE);
    const c = h.connect(40003);
    for (let i = 0; i < 50; i++) h.send(c.data(0, 27, 'x').slice(0, 30), 0); // a cut IPv4 header
    const drops = evs.filter((e) => e.event === 'drop');
    expect(drops.length).toBeGreaterThan(0);
    expect(drops.length).toBeLessThan(50);
    expect(drops[0]).toMatchObject({ msg: 'malformed frame dropped' });
    expect(String(drops[0]!['reason'])).toMatch(/^ipv4-/);
    // Once the interval is over, the event log gets the count of what it left out, as the log does.
    h.advance(20_000);
    const summary = evs.filter((e) => e.event === 'drop' && typeof e['suppressed'] === 'number');
    expect(summary).toHaveLength(1);
    expect(summary[0]!['suppressed']).toBe(50 - drops.length);
  });

  it('no sink: no tallies kept', () => {
    const h = new Harness({}, {}, RULE);
    h.connect(40004);
    expect((h.gw as unknown as { tallies: unknown }).tallies).toBeNull();
  });
});

describe('agents in the gateway log', () => {
  it('an http refusal is a warn line, rate-limited per reason, naming the flow and the message', () => {
    const lines: Record<string, unknown>[] = [];
    const log = pino({ level: 'warn' }, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) });
    const h = new Harness({}, { log }, 'rules:\n  - match: { port: 80 }\n    agent: http\n    http: { response: { replace: [ { find: "Hello", with: "Bye" } ] } }\n');
    const req = 'GET /a.gz HTTP/1.1\r\nHost: a\r\n\r\n';
    const resp = 'HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 5\r\n\r\nHello';
    for (let i = 0; i < 8; i++) {
      const c = h.connect(40100 + i);
      h.send(c.data(0, 0, req), 0);
      const out = h.send(c.data(1, 0, resp, req.length), 1);
      expect(out.map((e) => Buffer.from(e.frame).toString("latin1")).join("")).toContain("X-Tapgate-Refused: encoded");
    }
    const refused = lines.filter((l) => l['msg'] === 'http response refused');
    expect(refused).toHaveLength(5); // rate-limited: five lines per interval and reason (util/ratelog.ts)
    expect(refused[0]).toMatchObject({ flow: '10.0.0.1.40100-10.0.0.2.80', dir: 's2c', reason: 'encoded', message: '200' });
  });
});

describe('event log: FTP through masquerade NAT', () => {
  const config = parseConfig(readFileSync(join(import.meta.dirname, '../../examples/masquerade.yaml'), 'utf8'), 'masquerade.yaml');
  const ip = (s: string): number => s.split('.').reduce((a, x) => a * 256 + Number(x), 0);
  it('each translation is an ftp event; the control connection\'s flow record names the rule', () => {
    const evs: Ev[] = [];
    const gw = new Gateway({ config, events: (e) => evs.push(e as Ev) });
    let now = 1000;
    const out: Array<{ frame: Uint8Array; to: Side }> = [];
    const send = (f: Uint8Array, from: Side) => gw.handleFrame(f, from, (now += 1), (x, to) => out.push({ frame: x.slice(), to }));
    const CL = ip('10.200.0.1');
    const SV = ip('10.200.0.2');
    const MASQ = ip('10.200.0.100');
    const mss = [{ kind: 'mss' as const, mss: 1460 }];
    send(tcpFrame({ src: CL, dst: SV, srcPort: 40000, dstPort: 21, seq: 7000, flags: SYN, options: mss }), 0);
    const d = decodeFrame(out[0]!.frame, { link: 'ethernet', verifyChecksums: false });
    if (d.kind !== 'tcp') throw new Error('no SYN out');
    const P = d.tcp.srcPort;
    send(tcpFrame({ src: SV, dst: MASQ, srcPort: 21, dstPort: P, seq: 90000, ack: 7001, flags: SYN | ACK, options: mss }), 1);
    send(tcpFrame({ src: CL, dst: SV, srcPort: 40000, dstPort: 21, seq: 7001, ack: 90001, flags: ACK }), 0);
    const cmd = Buffer.from('PORT 10,200,0,1,19,137\r\n');
    send(tcpFrame({ src: CL, dst: SV, srcPort: 40000, dstPort: 21, seq: 7001, ack: 90001, flags: ACK | PSH, payload: cmd }), 0);
    const ftp = evs.filter((e) => e.event === 'ftp');
    expect(ftp).toHaveLength(1);
    expect(ftp[0]).toMatchObject({ kind: expect.any(String), original: { port: 19 * 256 + 137 } });
    expect(String(ftp[0]!['flow'])).toContain('10.200.0.1');
    gw.flushEvents(now + 1);
    const flow = evs.find((e) => e.event === 'flow')!;
    expect(flow).toMatchObject({ rule: 'ftp-control', agent: 'ftp', end: 'open', server: '10.200.0.2:21' });
    expect((flow['c2s'] as { bytes: number }).bytes).toBe(cmd.length);
    // The command went out with the masquerade address and port: its length as sent is counted.
    const last = decodeFrame(out[out.length - 1]!.frame, { link: 'ethernet', verifyChecksums: false });
    if (last.kind !== 'tcp') throw new Error('no command out');
    expect(Buffer.from(out[out.length - 1]!.frame.subarray(last.payloadOff, last.payloadOff + last.payloadLen)).toString()).toMatch(/^PORT 10,200,0,100,/);
    expect((flow['c2s'] as { bytesOut: number }).bytesOut).toBe(last.payloadLen);
  });
});
