/**
 * Multipath TCP (RFC 8684) on a connection a rule covers (found by a review, 2026-12-07). With its
 * options passed, the endpoints negotiate MPTCP through the gateway, and the receiver orders a
 * subflow's bytes by the DSS mappings' data sequence numbers, not by TCP order: three segments
 * "GET ", "world", "Hello " in TCP order, mapped to data positions 0, 10 and 4, read "GET Hello
 * world" (checked on Linux 6.18 with an IPPROTO_MPTCP listener) while the agent saw "GET
 * worldHello " and rewrote nothing. Other subflows (MP_JOIN) would split one stream over several
 * 4-tuples, and a rewrite would break the mappings. So the options are taken out of a covered
 * connection's SYNs (the endpoints fall back to plain TCP, RFC 8684 §3.7) and any other segment
 * carrying one is dropped (`gateway.mptcp`); uncovered connections keep them.
 */
import { describe, expect, it } from 'vitest';
import { decodeFrame } from '../../src/wire/frame.js';
import { TCP_OPTION_MPTCP } from '../../src/wire/tcp.js';
import { tcpFrame } from '../../src/wire/tcp-frame.js';
import { ACK, CLIENT, Conn, Harness, PSH, SERVER, SYN, payloadOf } from './harness.js';

const CFG = `
rules:
  - match: { port: 80 }
    agent: replace
    replace:
      - { find: "Hello world", with: "Hi there" }
`;
const MSS = { kind: 'mss' as const, mss: 1460 };
const mp = (data: number[]) => ({ kind: 'unknown' as const, code: TCP_OPTION_MPTCP, data: new Uint8Array(data) });
const KEY_C = [1, 2, 3, 4, 5, 6, 7, 8];
const KEY_S = [9, 10, 11, 12, 13, 14, 15, 16];

/** A DSS option: data ACK and a mapping (4-byte numbers), no checksum. */
function dss(dack: number, dsn: number, ssn: number, len: number) {
  const b = Buffer.alloc(16);
  b[0] = 0x20;
  b[1] = 0x05;
  b.writeUInt32BE(dack >>> 0, 2);
  b.writeUInt32BE(dsn >>> 0, 6);
  b.writeUInt32BE(ssn >>> 0, 10);
  b.writeUInt16BE(len, 14);
  return { kind: 'unknown' as const, code: TCP_OPTION_MPTCP, data: new Uint8Array(b) };
}

function tcpOf(f: Uint8Array) {
  const d = decodeFrame(f, { link: 'ethernet', verifyChecksums: true });
  if (d.kind !== 'tcp') throw new Error(`not tcp: ${d.kind}`);
  return d.tcp;
}

describe('Multipath TCP on a connection a rule covers', () => {
  it('MP_CAPABLE leaves the SYN and SYN-ACK as NOPs (checksums right, the rest of the options kept); the DSS-reordered data never reaches the server; plain data is rewritten', () => {
    const h = new Harness({ holdTimeoutMs: 100 }, {}, CFG);
    const c = new Conn(h, 40002, 1000, 5000);
    const syn = h.send(c.frame(0, { flags: SYN, seq: 1000, options: [MSS, mp([0x01, 0x01])] }), 0);
    expect(syn).toHaveLength(1);
    expect(tcpOf(syn[0]!.frame).mptcp()).toBe(false);
    expect(tcpOf(syn[0]!.frame).mss()).toBe(1460);
    const sa = h.send(c.frame(1, { flags: SYN | ACK, seq: 5000, ack: 1001, options: [MSS, mp([0x01, 0x01, ...KEY_S])] }), 1);
    expect(sa).toHaveLength(1);
    expect(tcpOf(sa[0]!.frame).mptcp()).toBe(false);
    // A final ACK with MP_CAPABLE (the client believing in MPTCP all the same): dropped.
    expect(h.send(c.frame(0, { flags: ACK, seq: 1001, ack: 5001, options: [mp([0x01, 0x01, ...KEY_C, ...KEY_S])] }), 0)).toEqual([]);
    h.send(c.frame(0, { flags: ACK, seq: 1001, ack: 5001 }), 0);
    const DSN = 0x10000000;
    const toServer: string[] = [];
    for (const [pos, text, dpos] of [[0, 'GET ', 0], [4, 'world', 10], [9, 'Hello ', 4]] as const) {
      const o = h.send(c.frame(0, { flags: ACK | PSH, seq: 1001 + pos, ack: 5001, options: [dss(0x20000000, DSN + dpos, pos + 1, text.length)], payload: Buffer.from(text) }), 0);
      toServer.push(...o.map((e) => payloadOf(e.frame)));
    }
    toServer.push(...h.advance(1000).filter((e) => e.to === 1).map((e) => payloadOf(e.frame)));
    expect(toServer.join('')).toBe('');
    expect(h.gw.stats().gateway).toMatchObject({ mptcp: 4, mptcpStripped: 2 });
    // The same bytes as plain TCP: rewritten as the agent reads them.
    expect(c.sendData(0, 0, 'GET Hello world\n').map((e) => payloadOf(e.frame))).toEqual(['GET Hi there\n']);
  });

  it('MP_JOIN SYNs (a second subflow) lose the option too', () => {
    const h = new Harness({}, {}, CFG);
    const c = new Conn(h, 40003, 1000, 5000);
    const o = h.send(c.frame(0, { flags: SYN, seq: 1000, options: [MSS, mp([0x10, 0x00, 1, 2, 3, 4, 5, 6, 7, 8])] }), 0);
    expect(o.map((e) => tcpOf(e.frame).mptcp())).toEqual([false]);
  });

  it('a connection no rule covers keeps its MPTCP options byte-exact', () => {
    const h = new Harness({}, {}, CFG);
    const f = tcpFrame({ src: CLIENT, dst: SERVER, srcPort: 40004, dstPort: 81, seq: 1000, flags: SYN, options: [MSS, mp([0x01, 0x01])] });
    const o = h.send(f, 0);
    expect(o.map((e) => Buffer.from(e.frame).equals(Buffer.from(f)))).toEqual([true]);
    expect(h.gw.stats().gateway).toMatchObject({ mptcp: 0, mptcpStripped: 0 });
  });

  it('nopOptions keeps a full checksum right and leaves a partial one (NEEDS_CSUM: the pseudo-header sum) alone', () => {
    const f = tcpFrame({ src: 0x0a000001, dst: 0x0a000002, srcPort: 40000, dstPort: 80, seq: 1, flags: SYN, options: [MSS, mp([0x01, 0x01]), { kind: 'sack-permitted' }] });
    const full = f.slice();
    const t = tcpOf(full);
    expect(t.nopOptions(TCP_OPTION_MPTCP, false)).toBe(true);
    expect(tcpOf(full).mptcp()).toBe(false); // decodes with its checksum verified
    expect(tcpOf(full).sackPermitted()).toBe(true);
    const part = f.slice();
    const before = tcpOf(part).checksum;
    tcpOf(part).nopOptions(TCP_OPTION_MPTCP, true);
    const d = decodeFrame(part, { link: 'ethernet', verifyChecksums: false });
    if (d.kind !== 'tcp') throw new Error(d.kind);
    expect(d.tcp.checksum).toBe(before);
    expect(d.tcp.mptcp()).toBe(false);
  });
});
