/**
 * What a control connection may make the gateway open (review, 2026-12-07), through the whole
 * gateway with masquerade: an endpoint that is not its announcer's own address opens nothing
 * (FTP bounce, NAT slipstreaming), and a connection's expectations go with it — when it leaves
 * the table, when its agent gives up, and for a command a hold timeout split (never expected).
 */
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/index.js';
import { Gateway, type Side } from '../../src/engine/gateway.js';
import { decodeFrame } from '../../src/wire/frame.js';
import { tcpFrame } from '../../src/wire/tcp-frame.js';

const SYN = 0x02;
const ACK = 0x10;
const PSH = 0x08;
const RST = 0x04;
const ip = (s: string): number => s.split('.').reduce((a, x) => a * 256 + Number(x), 0) >>> 0;
const ipStr = (a: number): string => [a >>> 24, (a >>> 16) & 255, (a >>> 8) & 255, a & 255].join('.');
const mss = [{ kind: 'mss' as const, mss: 1460 }];
const CFG = `
nat:
  masquerade:
    - { side: client, sources: 10.200.0.0/24, address: 10.200.0.100, ports: "20000-29999" }
rules:
  - name: ftp-control
    match: { serverPort: 21 }
    agent: ftp
`;
type Out = { frame: Uint8Array; to: Side };
const dec = (o: Out) => {
  const d = decodeFrame(o.frame, { link: 'ethernet', verifyChecksums: true });
  if (d.kind !== 'tcp' || d.ip === null) throw new Error('not tcp4');
  return { src: ipStr(d.ip.src), dst: ipStr(d.ip.dst), sport: d.tcp.srcPort, dport: d.tcp.dstPort, flags: d.tcp.flags, payload: Buffer.from(o.frame.subarray(d.payloadOff, d.payloadOff + d.payloadLen)).toString('latin1') };
};

/** A gateway with masquerade and a control connection 10.200.0.1:40000 → 10.200.0.2:21 open. */
function rig() {
  const gw = new Gateway({ config: parseConfig(CFG, 'ftp-paths.yaml'), sided: true });
  const s = { now: 1000 };
  const send = (f: Uint8Array, from: Side): Out[] => {
    const got: Out[] = [];
    gw.handleFrame(f, from, (s.now += 1), (x, to) => got.push({ frame: x.slice(), to }));
    return got;
  };
  const tick = (ms: number): Out[] => {
    const got: Out[] = [];
    s.now += ms;
    gw.tick(s.now, (x, to) => got.push({ frame: x.slice(), to }));
    return got;
  };
  const nat = () => gw.stats().nat!;
  const CL = ip('10.200.0.1');
  const SV = ip('10.200.0.2');
  const MASQ = ip('10.200.0.100');
  const syn = send(tcpFrame({ src: CL, dst: SV, srcPort: 40000, dstPort: 21, seq: 7000, flags: SYN, options: mss }), 0);
  const P0 = dec(syn[0]!).sport;
  send(tcpFrame({ src: SV, dst: MASQ, srcPort: 21, dstPort: P0, seq: 90000, ack: 7001, flags: SYN | ACK, options: mss }), 1);
  send(tcpFrame({ src: CL, dst: SV, srcPort: 40000, dstPort: 21, seq: 7001, ack: 90001, flags: ACK }), 0);
  const c = (seq: number, flags: number, payload?: string) => tcpFrame({ src: CL, dst: SV, srcPort: 40000, dstPort: 21, seq, ack: 90001, flags, ...(payload === undefined ? {} : { payload: Buffer.from(payload, 'latin1') }) });
  /** The server's SYN toward the masquerade address, as a data connection opens. */
  const dataSyn = (port: number) => send(tcpFrame({ src: SV, dst: MASQ, srcPort: 20, dstPort: port, seq: 1, flags: SYN, options: mss }), 1).map(dec);
  const expectations = () => (gw as unknown as { nat: { expectationList(): unknown[] } }).nat.expectationList();
  return { gw, send, tick, nat, c, dataSyn, expectations };
}

describe('ftp through masquerade: what a control connection can open', () => {
  it('PORT naming another inside host (FTP bounce): refused, the connection reset, nothing expected; the server\'s SYN to the masquerade address goes nowhere', () => {
    const r = rig();
    const o = r.send(r.c(7001, ACK | PSH, 'PORT 10,200,0,7,0,22\r\n'), 0);
    expect(o.map(dec).map((x) => x.payload).join('')).not.toMatch(/\d/);
    expect(r.gw.stats().gateway.aborted).toBe(1);
    expect(r.gw.stats().agents.ftp).toMatchObject({ refusedEndpoints: 1, PORT: 0 });
    expect(r.expectations()).toEqual([]);
    expect(r.dataSyn(20000).filter((x) => x.dst === '10.200.0.7')).toEqual([]);
  });

  it('the control connection reset and gone: its expectation goes with it', () => {
    const r = rig();
    const cmd = 'PORT 10,200,0,1,195,80\r\n';
    const m = /10,200,0,100,(\d+),(\d+)/.exec(r.send(r.c(7001, ACK | PSH, cmd), 0).map(dec)[0]!.payload)!;
    const port = Number(m[1]) * 256 + Number(m[2]);
    expect(r.expectations()).toHaveLength(1);
    r.send(r.c(7001 + cmd.length, RST), 0);
    r.tick(20_000); // past closedTimeoutMs: the entry leaves the table
    expect(r.expectations()).toEqual([]);
    expect(r.nat().expectationsDropped).toBe(1);
    expect(r.dataSyn(port).filter((x) => x.dst === '10.200.0.1')).toEqual([]);
  });

  it('a PORT a hold timeout split: the agent gives up, and no expectation was made for it', () => {
    const r = rig();
    const part1 = 'PORT 10,200,0,1,78,';
    r.send(r.c(7001, ACK | PSH, part1), 0);
    r.tick(2000); // the hold timeout releases "10,200,0,1,78," as it stood
    r.send(r.c(7001 + part1.length, ACK | PSH, '33\r\n'), 0);
    expect(r.gw.stats().gateway.aborted).toBe(1);
    expect(r.expectations()).toEqual([]);
    expect(r.dataSyn(20001).filter((x) => x.dst === '10.200.0.1')).toEqual([]);
  });

  it('an expectation made before the agent gave up goes at the abort', () => {
    const r = rig();
    const cmd = 'PORT 10,200,0,1,195,80\r\n';
    r.send(r.c(7001, ACK | PSH, cmd), 0);
    expect(r.expectations()).toHaveLength(1);
    r.send(r.c(7001 + cmd.length, ACK | PSH, 'PORT 10,200,0,1,195,256\r\n'), 0); // malformed: refused
    expect(r.gw.stats().gateway.aborted).toBe(1);
    expect(r.gw.stats().agents.ftp).toMatchObject({ PORT: 1, malformed: 1, refusedCommands: 1 });
    expect(r.expectations()).toEqual([]);
  });
});

describe('ftp through masquerade: the client\'s side is each connection\'s own', () => {
  it('a control connection whose client is on the server TAP: its PORT is translated by that side\'s masquerade and the server\'s data connection reaches the client', () => {
    // Masquerade for hosts on side 1 only; `nat.ftpClientSide` left at its default (client, side 0).
    const gw = new Gateway({
      config: parseConfig(`
nat:
  masquerade:
    - { side: server, sources: 10.201.0.0/24, address: 10.201.0.100, ports: "30000-30999" }
rules:
  - match: { serverPort: 21 }
    agent: ftp
`, 'ftp-side.yaml'),
      sided: true,
    });
    let now = 1000;
    const send = (f: Uint8Array, from: Side): Out[] => {
      const got: Out[] = [];
      gw.handleFrame(f, from, (now += 1), (x, to) => got.push({ frame: x.slice(), to }));
      return got;
    };
    const CL = ip('10.201.0.5');
    const SV = ip('10.200.0.2');
    const MASQ = ip('10.201.0.100');
    const syn = send(tcpFrame({ src: CL, dst: SV, srcPort: 40000, dstPort: 21, seq: 7000, flags: SYN, options: mss }), 1);
    expect(syn.map((o) => o.to)).toEqual([0]);
    const P0 = dec(syn[0]!).sport;
    expect(dec(syn[0]!).src).toBe('10.201.0.100');
    send(tcpFrame({ src: SV, dst: MASQ, srcPort: 21, dstPort: P0, seq: 90000, ack: 7001, flags: SYN | ACK, options: mss }), 0);
    send(tcpFrame({ src: CL, dst: SV, srcPort: 40000, dstPort: 21, seq: 7001, ack: 90001, flags: ACK }), 1);
    const o = send(tcpFrame({ src: CL, dst: SV, srcPort: 40000, dstPort: 21, seq: 7001, ack: 90001, flags: ACK | PSH, payload: Buffer.from('PORT 10,201,0,5,195,80\r\n') }), 1).map(dec);
    const m = /^PORT 10,201,0,100,(\d+),(\d+)\r\n$/.exec(o.map((x) => x.payload).join(''));
    expect(m).not.toBeNull();
    expect(gw.stats().agents.ftp).toMatchObject({ PORT: 1, refusedEndpoints: 0 });
    const port = Number(m![1]) * 256 + Number(m![2]);
    const data = send(tcpFrame({ src: SV, dst: MASQ, srcPort: 20, dstPort: port, seq: 1, flags: SYN, options: mss }), 0).map(dec);
    expect(data.map((x) => `${x.dst}:${x.dport}`)).toEqual(['10.201.0.5:50000']);
  });
});
