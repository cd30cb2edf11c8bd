/**
 * RST/FIN injection against a rewriting connection: a segment that would end the inspection of a
 * connection its endpoints keep must not let the rest through unrewritten (fail closed). Crafted
 * connections (ISNs by the 2^32 wrap; plain, 802.1Q and 802.1ad+802.1Q) carry "Hello world" both
 * ways with RSTs and a FIN outside the window or not exact injected; public captures of injection
 * evasions (suricata-verify bug-3286, zeek rst-inject-rae; see test/fixtures/README.md) go through
 * `tapgate replay --config --streams` where the files are present, and the three attack captures
 * are rebuilt from this file's own bytes in the same shapes, which always run. Each has a baseline
 * without the injected segments.
 */
import { gatewayLink } from '../../src/phy/capture-fixup.js';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { replay } from '../../src/cli/replay.js';
import { StreamRecorder, type RecordedStream } from '../../src/flow/recorder.js';
import type { Side } from '../../src/engine/gateway.js';
import { encodePcapHeader, encodePcapRecord, readPcapAll, type PcapRecord } from '../../src/phy/pcap.js';
import { ETHERTYPE_IPV4, ETHERTYPE_QINQ, ETHERTYPE_VLAN, EthernetFrame, EthernetRepr, type VlanTag } from '../../src/wire/ethernet.js';
import { decodeFrame } from '../../src/wire/frame.js';
import { seqDiff } from '../../src/wire/seq.js';
import { TcpFlag, type TcpOption } from '../../src/wire/tcp.js';
import { ACK, Conn, FIN, Harness, PSH, RST, SYN, payloadOf, refix, type Emitted } from './harness.js';

// replay() logs every dropped segment at warn: keep the test output to errors.
process.env['TAPGATE_LOG'] ??= 'error';

const ROOT = join(import.meta.dirname, '../..');
const tmp = mkdtempSync(join(tmpdir(), 'tapgate-evasion-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const PATTERN = 'Hello world';
const REPLACEMENT = 'Hi there';
const CONFIG = `
rules:
  - match: { port: 80 }
    agent: replace
    replace:
      - { find: "${PATTERN}", with: "${REPLACEMENT}" }
`;

/** What the agent makes of an original stream. */
const rewritten = (s: string): string => s.split(PATTERN).join(REPLACEMENT);
const latin1 = (b: Uint8Array): string => Buffer.from(b).toString('latin1');

// ---------------------------------------------------------------------------------------------
// Crafted connection

/** Client ISN 100 bytes before the wrap (its stream crosses 2^32), server ISN at 2^31. */
const ISN_C = 0xffffff9c;
const ISN_S = 0x7fffffe0;
const CPORT = 40000;
const MSS = [{ kind: 'mss' as const, mss: 1460 }];

/**
 * (a) RST from the client side, 2^31 from its next sequence number;
 * (b2) RST from the server side at the client's last ACK as the client numbers it (the rewritten
 *     stream, 12 bytes shorter by then): in the server's numbering, inside the window but not
 *     exact — a tracker comparing it with the raw ACK would take it as exact;
 * (b) RST from the server side 1000 bytes into the client's window, carrying the pattern as RST
 *     text, sent while the server's stream ends in the first half of a split pattern;
 * (c) RST+ACK from the server side 1 MiB behind its next sequence number;
 * (d) FIN+ACK from the client side 256 MiB ahead of its next sequence number.
 */
type Attack = 'a' | 'b2' | 'b' | 'c' | 'd';
/** The four of the specification (b2 goes beyond it: its own test only). */
const ALL: readonly Attack[] = ['a', 'b', 'c', 'd'];

const TAGS: Record<'untagged' | '802.1Q' | '802.1ad+802.1Q', readonly VlanTag[]> = {
  untagged: [],
  '802.1Q': [{ tpid: ETHERTYPE_VLAN, tci: 0x2064 }], // PCP 1, VID 100
  '802.1ad+802.1Q': [
    { tpid: ETHERTYPE_QINQ, tci: 0x00c8 }, // S-tag VID 200
    { tpid: ETHERTYPE_VLAN, tci: 0x2064 }, // C-tag VID 100
  ],
};
type Tagging = keyof typeof TAGS;

interface Step {
  from: Side;
  frame: Uint8Array;
  attack?: Attack;
}

/** Where a forwarded RST must land at the client: its RCV.NXT then, and the RST as injected. */
interface RstAtClient {
  rcvNxt: number;
  injectedSeq: number;
  /** The exact sequence number out, when it does not depend on how held bytes are counted. */
  seqOut?: number;
}

interface Crafted {
  steps: Step[];
  /** The streams the endpoints send (the injected segments carry none of them). */
  c2s: string;
  s2c: string;
  forwarded: Partial<Record<Attack, RstAtClient>>;
}

/** `frame` (untagged Ethernet) with `tags` after the MAC addresses. */
function withTags(frame: Uint8Array, tags: readonly VlanTag[]): Uint8Array {
  if (tags.length === 0) return frame;
  const eth = new EthernetRepr(frame.slice(0, 6), frame.slice(6, 12), ETHERTYPE_IPV4, tags);
  const out = new Uint8Array(eth.bufferLen() + frame.length - 14);
  out.set(frame.subarray(14), eth.emit(out));
  return out;
}

/** The tail of `sent` the agent holds back: the longest proper prefix of the pattern it ends with. */
function heldTail(sent: string): number {
  for (let k = PATTERN.length - 1; k > 0; k--) if (sent.endsWith(PATTERN.slice(0, k))) return k;
  return 0;
}

/** What a receiver has of `sent` after the gateway: its RCV.NXT, as an offset of its own numbering. */
function received(sent: string): number {
  return rewritten(sent).length - heldTail(sent);
}

/**
 * The connection: handshake, "Hello world" both ways (adjacent matches, a segment that is exactly
 * the pattern, a match split across segments), each attack in `attacks` followed by more of the
 * pattern both ways, then FIN both ways. The endpoints acknowledge what they received (the
 * rewritten streams), as real ones do. Without attacks the same data is sent: the baseline.
 */
function craft(c: Conn, attacks: readonly Attack[], tags: readonly VlanTag[]): Crafted {
  const steps: Step[] = [];
  let c2s = '';
  let s2c = '';
  const forwarded: Crafted['forwarded'] = {};
  const push = (from: Side, frame: Uint8Array, attack?: Attack): void => {
    steps.push({ from, frame: withTags(frame, tags), ...(attack !== undefined ? { attack } : {}) });
  };
  const say = (from: Side, text: string): void => {
    if (from === 0) {
      push(0, c.data(0, c2s.length, text, received(s2c)));
      c2s += text;
    } else {
      push(1, c.data(1, s2c.length, text, received(c2s)));
      s2c += text;
    }
  };
  const seqC = (off: number): number => (ISN_C + 1 + off) >>> 0;
  const seqS = (off: number): number => (ISN_S + 1 + off) >>> 0;
  const on = (a: Attack): boolean => attacks.includes(a);

  push(0, c.frame(0, { flags: SYN, seq: ISN_C, options: MSS }));
  push(1, c.frame(1, { flags: SYN | ACK, seq: ISN_S, ack: seqC(0), options: MSS }));
  push(0, c.frame(0, { flags: ACK, seq: seqC(0), ack: seqS(0) }));
  say(0, `HELO client: ${PATTERN}\r\n`);
  say(1, `250 ${PATTERN}, ${PATTERN}!\r\n`);
  say(0, `DATA ${PATTERN}${PATTERN}\r\n`);
  say(1, PATTERN);

  if (on('a')) push(0, c.frame(0, { flags: RST, seq: (seqC(c2s.length) + 2 ** 31) >>> 0 }), 'a');
  say(0, `after a: ${PATTERN}\r\n`);
  say(1, `after a: ${PATTERN}, then plain text long enough\r\n`);
  push(0, c.data(0, c2s.length, '', received(s2c), ACK));

  if (on('b2')) {
    // The client has just acknowledged received(s2c): 12 bytes short of what the server sent
    // (four matches, 3 bytes shorter each); the position lies in plain text after the last match.
    const at = received(s2c);
    expect(at).toBe(s2c.length - 12);
    expect(s2c.slice(at)).not.toContain(PATTERN.slice(0, 1));
    forwarded.b2 = { rcvNxt: seqS(received(s2c)), injectedSeq: seqS(at), seqOut: seqS(at - 12) };
    push(1, c.frame(1, { flags: RST, seq: seqS(at) }), 'b2');
  }
  say(1, 'split: Hello wo');
  if (on('b')) {
    forwarded.b = { rcvNxt: seqS(received(s2c)), injectedSeq: seqS(s2c.length + 1000) };
    push(1, c.frame(1, { flags: RST, seq: seqS(s2c.length + 1000), payload: new Uint8Array(Buffer.from(PATTERN, 'latin1')) }), 'b');
  }
  say(1, 'rld, after b\r\n');
  say(0, `after b: ${PATTERN}\r\n`);

  if (on('c')) push(1, c.frame(1, { flags: RST | ACK, seq: (seqS(s2c.length) - 0x100000) >>> 0, ack: seqC(received(c2s)) }), 'c');
  say(1, `after c: ${PATTERN}\r\n`);
  say(0, `after c: ${PATTERN}\r\n`);

  if (on('d')) push(0, c.frame(0, { flags: FIN | ACK, seq: (seqC(c2s.length) + 0x10000000) >>> 0, ack: seqS(received(s2c)) }), 'd');
  say(0, `after d: ${PATTERN}\r\n`);
  say(1, `after d: ${PATTERN}, bye\r\n`);

  push(0, c.data(0, c2s.length, '', received(s2c), FIN | ACK));
  push(1, c.data(1, s2c.length, '', received(c2s) + 1, FIN | ACK));
  push(0, c.data(0, c2s.length + 1, '', received(s2c) + 1, ACK));
  return { steps, c2s, s2c, forwarded };
}

interface CraftedRun {
  crafted: Crafted;
  h: Harness;
  /** What each step made the gateway emit. */
  emitted: Emitted[][];
  stream: RecordedStream;
}

/** Sends the crafted connection through a Gateway (Harness: every emitted frame must decode). */
async function runCrafted(attacks: readonly Attack[], tagging: Tagging): Promise<CraftedRun> {
  const h = new Harness({}, {}, CONFIG);
  const crafted = craft(new Conn(h, CPORT, ISN_C, ISN_S), attacks, TAGS[tagging]);
  const emitted = crafted.steps.map((s) => h.send(s.frame, s.from));
  // The streams as the receivers get them: the recorder fed every released frame in order.
  const rec = new StreamRecorder({ sink: 'memory' });
  for (const e of h.out) rec.feed(e.frame, 'ethernet');
  const res = await rec.close();
  expect(res.streams.map((s) => s.id)).toEqual([`10.0.0.1.${CPORT}-10.0.0.2.80`]);
  return { crafted, h, emitted, stream: res.streams[0]! };
}

function expectedCounters(attacks: readonly Attack[]) {
  const n = (xs: Attack[]): number => xs.filter((x) => attacks.includes(x)).length;
  const tcpInvalid: Record<string, number> = {};
  if (n(['a', 'c']) > 0) tcpInvalid['rst-out-of-window'] = n(['a', 'c']);
  if (n(['d']) > 0) tcpInvalid['fin-out-of-window'] = 1;
  return { rstIn: n(['a', 'b2', 'b', 'c']), rstAccepted: 0, rstNotExact: n(['b2', 'b']), tcpInvalid };
}

/** Every expectation on a crafted run: streams, no raw pattern, tags, counters, injected segments. */
function expectFailClosed(r: CraftedRun, attacks: readonly Attack[], tagging: Tagging): void {
  const { crafted, h, emitted, stream } = r;
  // Every pattern rewritten: the streams the receivers got are the sent ones, rewritten, and
  // the connection ended with its FINs, not at an injected segment.
  expect(latin1(stream.c2s)).toBe(rewritten(crafted.c2s));
  expect(latin1(stream.s2c)).toBe(rewritten(crafted.s2c));
  expect(stream.end).toBe('fin');
  for (const e of h.out) expect(payloadOf(e.frame)).not.toContain(PATTERN);
  // Tags are bridged byte-exact, on rebuilt frames too.
  const tagBytes = withTags(new Uint8Array(14), TAGS[tagging]).subarray(12, 12 + 4 * TAGS[tagging].length);
  for (const e of h.out) {
    const eth = EthernetFrame.parse(e.frame);
    if (!(eth instanceof EthernetFrame)) expect.fail(eth.detail);
    expect(Buffer.from(eth.tagBytes).equals(Buffer.from(tagBytes))).toBe(true);
  }
  const g = h.gw.stats().gateway;
  expect({ rstIn: g.rstIn, rstAccepted: g.rstAccepted, rstNotExact: g.rstNotExact, tcpInvalid: g.tcpInvalid }).toEqual(expectedCounters(attacks));
  expect(g.enginesReleased).toBe(0);
  for (const [i, s] of crafted.steps.entries()) {
    if (s.attack === undefined) continue;
    const out = emitted[i]!;
    const at = crafted.forwarded[s.attack];
    if (at === undefined) {
      expect(out, `(${s.attack}) is outside the window: dropped`).toEqual([]);
      continue;
    }
    // Inside the window, not exact: forwarded towards the client, which answers it with a
    // challenge ACK (RFC 5961 §3.2) — translated into the rewritten stream, so that it is still
    // in the client's window and not at its RCV.NXT, and without its text.
    expect(out.length).toBe(1);
    const d = decodeFrame(out[0]!.frame, { link: 'ethernet', verifyChecksums: true });
    if (d.kind !== 'tcp') expect.fail(`(${s.attack}) left as ${d.kind}`);
    expect(out[0]!.to).toBe(0);
    expect(d.tcp.flags & (RST | SYN | FIN)).toBe(RST);
    expect(d.payloadLen).toBe(0);
    if (at.seqOut !== undefined) expect(d.tcp.seq).toBe(at.seqOut);
    else {
      // Moved back by the four completed matches (12 bytes), and by the held "Hello wo" or not.
      expect(seqDiff(at.injectedSeq, d.tcp.seq)).toBeGreaterThanOrEqual(12);
      expect(seqDiff(at.injectedSeq, d.tcp.seq)).toBeLessThanOrEqual(12 + 8);
      expect(seqDiff(d.tcp.seq, at.rcvNxt)).toBeGreaterThan(0);
      expect(seqDiff(d.tcp.seq, at.rcvNxt)).toBeLessThan(65535);
    }
    expect(d.tcp.seq).not.toBe(at.rcvNxt);
  }
}

describe('crafted: injected RST/FIN on a rewritten connection', () => {
  for (const tagging of Object.keys(TAGS) as Tagging[]) {
    it(`baseline (${tagging}): without injected segments every "${PATTERN}" is rewritten, streams exact`, async () => {
      const r = await runCrafted([], tagging);
      const { crafted } = r;
      // The data is what the scenario is about: the pattern both ways, the client's stream
      // across the 2^32 wrap, a match split across segments.
      expect(crafted.c2s.split(PATTERN).length - 1).toBe(7);
      expect(crafted.s2c.split(PATTERN).length - 1).toBe(7);
      expect(crafted.s2c).toContain('split: Hello wo' + 'rld, after b');
      expect(ISN_C + 1 + crafted.c2s.length).toBeGreaterThan(2 ** 32);
      expect(latin1(r.stream.c2s)).toBe(rewritten(crafted.c2s));
      expect(latin1(r.stream.s2c)).toBe(rewritten(crafted.s2c));
      expect(r.stream.end).toBe('fin');
      for (const e of r.h.out) expect(payloadOf(e.frame)).not.toContain(PATTERN);
      expect(r.h.gw.stats().gateway.rstIn).toBe(0);
    });
  }

  const NAMES: Record<Attack, string> = {
    a: 'a RST 2^31 from the window is dropped (rst-out-of-window)',
    b2: "a RST at the receiver's last ACK as the receiver numbers it is not exact in the sender's numbering: forwarded translated (rstNotExact)",
    b: 'a RST in the window but not exact is forwarded translated, without its text (rstNotExact), the held split match survives it',
    c: 'a RST+ACK from the server 1 MiB behind its window is dropped (rst-out-of-window)',
    d: 'a FIN 256 MiB ahead of the window is dropped (fin-out-of-window)',
  };
  for (const a of [...ALL, 'b2'] as const) {
    it(`(${a}) ${NAMES[a]}; everything after it is rewritten`, async () => {
      expectFailClosed(await runCrafted([a], 'untagged'), [a], 'untagged');
    });
  }
  for (const tagging of Object.keys(TAGS) as Tagging[]) {
    it(`(a)–(d) on one connection, ${tagging}: all counted by class, nothing after them unrewritten`, async () => {
      expectFailClosed(await runCrafted(ALL, tagging), ALL, tagging);
    });
  }

  it('an exact RST that never reaches the client (insertion), then 12 s of silence: what follows is still rewritten or dropped, never passed raw', async () => {
    // An exact RST is taken (the middle cannot tell), but one that dies before the client (a
    // short TTL behind the gateway) leaves the connection open. The tracker forgets a reset
    // connection closedTimeoutMs (10 s) after the RST; what comes after must not be picked up
    // as a new mid-stream connection that no agent may rewrite.
    const h = new Harness({}, {}, CONFIG);
    const c = new Conn(h, CPORT, ISN_C, ISN_S);
    const { steps } = craft(c, [], []);
    const cut = steps.findIndex((s) => s.from === 1 && payloadOf(s.frame).startsWith('after a:')) + 1;
    for (const s of steps.slice(0, cut)) h.send(s.frame, s.from);
    const sent = steps.slice(3, cut).filter((s) => s.from === 1).map((s) => payloadOf(s.frame)).join('');
    h.send(c.frame(1, { flags: RST, seq: (ISN_S + 1 + sent.length) >>> 0 }), 1);
    expect(h.gw.stats().gateway.rstAccepted).toBe(1);
    h.advance(12_000);
    h.advance(1_000);
    const after = steps.slice(cut).flatMap((s) => h.send(s.frame, s.from));
    expect(steps.slice(cut).filter((s) => payloadOf(s.frame).includes(PATTERN)).length).toBeGreaterThan(0);
    for (const e of after) expect(payloadOf(e.frame)).not.toContain(PATTERN);
  });

  it('tapgate replay --config --streams of the 802.1ad+802.1Q capture writes the rewritten streams', async () => {
    const h = new Harness({}, {}, CONFIG);
    const crafted = craft(new Conn(h, CPORT, ISN_C, ISN_S), ALL, TAGS['802.1ad+802.1Q']);
    const pcap = join(tmp, 'crafted-qinq.pcap');
    const parts = [encodePcapHeader()];
    for (const [i, s] of crafted.steps.entries()) parts.push(encodePcapRecord({ data: s.frame, tsNs: 1_700_000_000_000_000_000n + BigInt(i) * 1_000_000n }));
    writeFileSync(pcap, Buffer.concat(parts));
    const r = await replayCapture(pcap, CONFIG, 'crafted-qinq');
    expect(r.streams).toEqual({ [`10.0.0.1.${CPORT}-10.0.0.2.80`]: { c2s: rewritten(crafted.c2s), s2c: rewritten(crafted.s2c) } });
    for (const p of r.payloads) expect(p).not.toContain(PATTERN);
    const g = r.gateway;
    expect({ rstIn: g.rstIn, rstAccepted: g.rstAccepted, rstNotExact: g.rstNotExact, tcpInvalid: g.tcpInvalid }).toEqual(expectedCounters(ALL));
  });
});

// ---------------------------------------------------------------------------------------------
// Public captures

interface Replayed {
  gateway: Record<string, unknown> & { rstIn: number; rstAccepted?: number; rstNotExact?: number; tcpInvalid?: Record<string, number> };
  /** Stream files by base name: latin1 text of `.c2s` and `.s2c`. */
  streams: Record<string, { c2s: string; s2c: string }>;
  /** TCP payloads of the frames the gateway released, latin1. */
  payloads: string[];
}

/** `tapgate replay <pcap> --config --streams -o` (the command's function), everything read back. */
async function replayCapture(pcap: string, config: string, name: string): Promise<Replayed> {
  const cfg = join(tmp, `${name}.yaml`);
  writeFileSync(cfg, config);
  const dir = join(tmp, `${name}-streams`);
  const out = join(tmp, `${name}-out.pcap`);
  const r = await replay({ in: pcap, out, config: cfg, streams: dir });
  expect(r.exitCode).toBe(0);
  const streams: Replayed['streams'] = {};
  for (const f of readdirSync(dir).filter((x) => x.endsWith('.c2s')).sort()) {
    const base = f.slice(0, -4);
    streams[base] = { c2s: readFileSync(join(dir, f)).toString('latin1'), s2c: readFileSync(join(dir, `${base}.s2c`)).toString('latin1') };
  }
  const released = await readPcapAll(out);
  expect(released.error).toBeUndefined();
  const payloads = released.records.map((rec) => {
    const d = decodeFrame(rec.data, { link: gatewayLink(rec.link), verifyChecksums: true });
    if (d.kind !== 'tcp') expect.fail(`released a ${d.kind} frame`);
    return latin1(rec.data.subarray(d.payloadOff, d.payloadOff + d.payloadLen));
  });
  return { gateway: r.summary['gateway'] as Replayed['gateway'], streams, payloads };
}

interface PublicCapture {
  file: string;
  sha256: string;
  /** What the rule targets, in the capture's own words. */
  config: string;
  /** Original (latin1) → replacement, as the config says. */
  rewrites: ReadonlyArray<[string, string]>;
  /** Frame numbers (1-based) of the injected segments, and of the endpoints' answers to them. */
  injected: readonly number[];
  /** Frames whose payloads make each stream as its receiver gets it (in order). */
  c2sFrames: readonly number[];
  s2cFrames: readonly number[];
  /** Counters the window judgement must give (flow/window.ts). */
  counters: { rstAccepted: number; tcpInvalid: Record<string, number>; rstNotExact: number };
}

const THIS_IS_A_TEST: Pick<PublicCapture, 'config' | 'rewrites'> = {
  config: 'rules:\n  - match: { port: 80 }\n    agent: replace\n    replace:\n      - { find: "THIS_IS_A_TEST", with: "rewritten" }\n',
  rewrites: [['THIS_IS_A_TEST', 'rewritten']],
};

const PUBLIC: PublicCapture[] = [
  {
    // The control of the bug-3286 pair: the same GET / and its 14-byte answer, nothing injected.
    file: 'suricata-bug-3286-01-without_evasion.pcap',
    sha256: '27a4e050b5f5619f53c66f6e081fb53b6f28cef2c78883865f6646e5626cfa69',
    ...THIS_IS_A_TEST,
    injected: [],
    c2sFrames: [4],
    s2cFrames: [6],
    counters: { rstAccepted: 0, tcpInvalid: {}, rstNotExact: 0 },
  },
  {
    // Linux client. After its SYN: an injected RST+ACK (2) and FIN+ACK (3), both ACKing the SYN
    // with a TSecr of 100 (PAWS makes Linux ignore the RST); the client answers the FIN with a
    // RST (4, exact); then the real SYN-ACK, the GET and the answer with the pattern (9).
    file: 'suricata-bug-3286-02-with_evasion_linux.pcap',
    sha256: '0ee0995d83b0acdbc200177febf3fdc09db58c0f3e6392e4b2635009aeaaabfc',
    ...THIS_IS_A_TEST,
    injected: [2, 3, 4],
    c2sFrames: [7],
    s2cFrames: [9],
    // (2) ACKs the SYN exactly but echoes a TSecr from before the SYN: not taken (the PAWS
    // check Linux makes in SYN-SENT), dropped; (4) is at the client's next sequence number.
    counters: { rstAccepted: 1, tcpInvalid: { 'rst-out-of-window': 1 }, rstNotExact: 0 },
  },
  {
    // Windows client (no timestamps): the same injected RST+ACK (2) and FIN+ACK (3), which the
    // client ignores; then the real SYN-ACK, the GET and the answer with the pattern (8).
    file: 'suricata-bug-3286-03-with_evasion_windows.pcap',
    sha256: '218a5be6677ab3cb4146f2acd2f7c22a6c3727c804225ae0808614caf71cf04d',
    ...THIS_IS_A_TEST,
    injected: [2, 3],
    c2sFrames: [6],
    s2cFrames: [8],
    counters: { rstAccepted: 1, tcpInvalid: {}, rstNotExact: 0 },
  },
  {
    // 1.2.0.2:2527 → 1.2.0.3:6649, binary payloads. After the SYN an injected RST+ACK (2: seq 0,
    // ACK = the ISN, not ISN + 1; TTL 46 and the SYN's IP id; reserved bits set); the real
    // handshake; 25 bytes from the client (5); the server's RST+ACK at its next sequence number
    // (7, genuine: the server answers the client's next 150 bytes (8), sent before the RST
    // arrived, with a RST (9)). One rule per data segment: (5) must be rewritten although (2)
    // came first, (8) although (7) came first.
    file: 'zeek-rst-inject-rae.pcap',
    sha256: '7f9f739ea8b7566bd459a4f3a22980102df3af2b0bcbd7616bfc0e3758444784',
    config:
      'rules:\n  - match: { port: 6649 }\n    agent: replace\n    replace:\n' +
      "      - { regex: '\\xc1\\xcf\\xff\\x4a', with: '<first>', maxMatch: 4 }\n" +
      "      - { regex: '\\xec\\x25\\x0f\\xb9\\x3e\\x9c', with: '<second>', maxMatch: 6 }\n",
    rewrites: [
      ['\xc1\xcf\xff\x4a', '<first>'],
      ['\xec\x25\x0f\xb9\x3e\x9c', '<second>'],
    ],
    injected: [2],
    // The server took (7): its stream ends there, and (8) never reached its application.
    c2sFrames: [5],
    s2cFrames: [],
    // (2) does not ACK the SYN: no receiver takes it (RFC 9293 §3.10.7.3). (7) and (9) are exact.
    counters: { rstAccepted: 2, tcpInvalid: { 'rst-out-of-window': 1 }, rstNotExact: 0 },
  },
];

/**
 * Where the public captures are (test/fixtures/README.md says why not in this repository):
 * $TAPGATE_PUBLIC_CAPTURES, test/fixtures/public, or the shared folder beside the checkout.
 */
const PUBLIC_DIR = [process.env['TAPGATE_PUBLIC_CAPTURES'], join(ROOT, 'test/fixtures/public'), join(ROOT, '../shared/fixtures/public')]
  .filter((d): d is string => d !== undefined && d !== '')
  .find((d) => PUBLIC.every((p) => existsSync(join(d, p.file))));

function applyRewrites(s: string, rw: PublicCapture['rewrites']): string {
  return rw.reduce((acc, [from, to]) => acc.split(from).join(to), s);
}

/** Payloads of the given frames (1-based), latin1, concatenated. */
function payloadsOf(records: readonly PcapRecord[], frames: readonly number[]): string {
  return frames
    .map((n) => {
      const rec = records[n - 1]!;
      const d = decodeFrame(rec.data, { link: gatewayLink(rec.link), verifyChecksums: true });
      if (d.kind !== 'tcp') throw new Error(`frame ${n} is ${d.kind}`);
      return latin1(rec.data.subarray(d.payloadOff, d.payloadOff + d.payloadLen));
    })
    .join('');
}

describe.skipIf(PUBLIC_DIR === undefined)('public captures of RST injection (test/fixtures/README.md)', () => {
  const dir = PUBLIC_DIR!;

  for (const p of PUBLIC) {
    const path = (): string => join(dir, p.file);

    it(`${p.file}: the capture is the one of the provenance (sha256, every frame a valid TCP segment)`, async () => {
      expect(createHash('sha256').update(readFileSync(path())).digest('hex')).toBe(p.sha256);
      const { records, error } = await readPcapAll(path());
      expect(error).toBeUndefined();
      for (const rec of records) expect(decodeFrame(rec.data, { link: gatewayLink(rec.link), verifyChecksums: true }).kind).toBe('tcp');
      // Every original the rule targets comes after the first injected segment, once.
      const all = payloadsOf(records, records.map((_, i) => i + 1));
      const after = payloadsOf(records, records.map((_, i) => i + 1).filter((n) => n > (p.injected[0] ?? 0)));
      for (const [from] of p.rewrites) {
        expect(all.split(from).length - 1).toBe(1);
        expect(after).toContain(from);
      }
    });

    const expectRewritten = (r: Replayed, records: readonly PcapRecord[]): void => {
      for (const pl of r.payloads) for (const [from] of p.rewrites) expect(pl).not.toContain(from);
      const streams = Object.values(r.streams);
      expect(streams.length).toBe(1);
      expect(streams[0]!.c2s).toBe(applyRewrites(payloadsOf(records, p.c2sFrames), p.rewrites));
      expect(streams[0]!.s2c).toBe(applyRewrites(payloadsOf(records, p.s2cFrames), p.rewrites));
    };

    if (p.injected.length > 0) {
      it(`${p.file}: baseline without the injected frames ${p.injected.join(', ')}: rewritten, streams exact`, async () => {
        const { records } = await readPcapAll(path());
        const kept = records.filter((_, i) => !p.injected.includes(i + 1));
        const pcap = join(tmp, `baseline-${p.file}`);
        writeFileSync(pcap, Buffer.concat([encodePcapHeader(), ...kept.map((rec) => encodePcapRecord({ data: rec.data, tsNs: rec.tsNs }))]));
        expectRewritten(await replayCapture(pcap, p.config, `baseline-${p.file}`), records);
      });
    }

    it(`${p.file}: nothing after the injected RST passes unrewritten; streams as the receivers get them; counted`, async () => {
      const { records } = await readPcapAll(path());
      const r = await replayCapture(path(), p.config, p.file);
      expectRewritten(r, records);
      const g = r.gateway;
      expect({ rstAccepted: g.rstAccepted, tcpInvalid: g.tcpInvalid, rstNotExact: g.rstNotExact }).toEqual(p.counters);
    });
  }
});

// ---------------------------------------------------------------------------------------------
// Crafted reproductions of the public attack captures

/**
 * The three attack captures of PUBLIC rebuilt from this test's own bytes (its own HTTP text and
 * binary payloads, ISNs and timestamps) in the same shapes: the same frames in the same order,
 * flags, sequence numbers and ACKs relative to the ISNs, options, the injected frames' IP id,
 * TTL and reserved bits, and the captures' pacing (the hold timeout fires between the same frames).
 * They run everywhere, CI included, and each is held to its PUBLIC entry: the same frames
 * injected, the same frames making each stream, the same counters.
 */
interface ReproFrame {
  from: Side;
  frame: Uint8Array;
  /** Time since the previous frame, ms. */
  dtMs: number;
}

interface Reproduction {
  /** PUBLIC[].file of the capture it reproduces: its frame numbers and counters apply. */
  capture: string;
  config: string;
  rewrites: ReadonlyArray<[string, string]>;
  /** Counters without the injected frames (the genuine RSTs stay). */
  baseline: PublicCapture['counters'];
  /** flows.rstRevived (a SYN or data after a RST the tracker took), with and without them. */
  revived: { attack: number; baseline: number };
  /**
   * The forged RST+ACK (frame 2): its ACK as an offset from the client's ISN (1: the SYN exactly),
   * the TSecr it echoes (null: no timestamps), and whether the gateway drops it or, taking it,
   * forwards it to the client unchanged.
   */
  forged: { ackOff: 0 | 1; tsecr: number | null; fate: 'dropped' | 'forwarded' };
  /** The frames; frames[0] is frame 1 of the capture. */
  frames(c: Conn): ReproFrame[];
}

const ts = (tsval: number, tsecr: number): TcpOption => ({ kind: 'timestamps', tsval: tsval >>> 0, tsecr: tsecr >>> 0 });
const NOP: TcpOption = { kind: 'nop' };
const bytes = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'latin1'));

/** `frame` (untagged) with its IPv4 identification / TTL and TCP reserved bits set; checksums redone. */
function tweak(frame: Uint8Array, t: { ident?: number; ttl?: number; reserved?: number }): Uint8Array {
  const f = frame.slice();
  const l3 = 14;
  if (t.ident !== undefined) {
    f[l3 + 4] = t.ident >>> 8;
    f[l3 + 5] = t.ident & 0xff;
  }
  if (t.ttl !== undefined) f[l3 + 8] = t.ttl;
  if (t.reserved !== undefined) {
    const l4 = l3 + (f[l3]! & 0x0f) * 4;
    f[l4 + 12] = (f[l4 + 12]! & 0xf1) | ((t.reserved & 7) << 1);
  }
  return refix(f);
}

/** `n` bytes (latin1) of a fixed pseudo-random sequence: xorshift32 from `seed`. */
function noise(n: number, seed: number): string {
  let x = seed >>> 0;
  let s = '';
  for (let i = 0; i < n; i++) {
    x = (x ^ (x << 13)) >>> 0;
    x = (x ^ (x >>> 17)) >>> 0;
    x = (x ^ (x << 5)) >>> 0;
    s += String.fromCharCode(x & 0xff);
  }
  return s;
}

/** bug-3286's GET and answer; there only the answer has the pattern, here both (both directions checked). */
const REQUEST = `GET /index.html HTTP/1.1\r\nHost: 10.0.0.2\r\nUser-Agent: evasion-test/1.0\r\nX-Greeting: ${PATTERN}\r\nAccept: */*\r\n\r\n`;
const RESPONSE = `HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n\r\n${PATTERN}\n`;
const HTTP_REWRITES: ReadonlyArray<[string, string]> = [[PATTERN, REPLACEMENT]];

/** The client's and the server's timestamp clocks (TSval), ms ticks. */
const TS_C = 1_800_000_000;
const TS_S = 400_000_000;
/** The TSval = TSecr of the forged bug-3286 segments: before TS_C, as there. */
const TS_FORGED = 100;

/**
 * bug-3286-02, Linux client (timestamps, window scale 7): after the SYN (1) a forged RST+ACK (2)
 * and FIN+ACK (3), seq 0, ACKing the SYN exactly, TSval = TSecr = 100 and the SYN's IP id; the
 * client's RST at its next sequence number (4: Linux's answer to the FIN+ACK, which fails its
 * PAWS check in SYN-SENT as the RST+ACK does); the real SYN-ACK (5), ACK (6), the request (7),
 * ACK (8), the response (9), ACK (10). The receivers ACK the rewritten streams.
 */
const REPRO_3286_02: Reproduction = {
  capture: 'suricata-bug-3286-02-with_evasion_linux.pcap',
  config: CONFIG,
  rewrites: HTTP_REWRITES,
  baseline: { rstAccepted: 0, tcpInvalid: {}, rstNotExact: 0 },
  revived: { attack: 1, baseline: 0 },
  // Its TSecr is from before the SYN: Linux ignores it, the tracker too (not taken, dropped).
  forged: { ackOff: 1, tsecr: TS_FORGED, fate: 'dropped' },
  frames(c) {
    const sc = (off: number): number => (c.isnC + 1 + off) >>> 0;
    const ss = (off: number): number => (c.isnS + 1 + off) >>> 0;
    const ident = 0x5a17;
    const synOpts = (tsval: number, tsecr: number): TcpOption[] => [{ kind: 'mss', mss: 1460 }, { kind: 'sack-permitted' }, ts(tsval, tsecr), NOP, { kind: 'wscale', shift: 7 }];
    const forged = (flags: number): Uint8Array => tweak(c.frame(1, { flags, seq: 0, ack: sc(0), window: 64240, options: [ts(TS_FORGED, TS_FORGED)] }), { ident });
    const tsC = (dt: number, ecr: number): TcpOption[] => [NOP, NOP, ts(TS_C + dt, ecr)];
    const tsS = (dt: number, ecr: number): TcpOption[] => [NOP, NOP, ts(TS_S + dt, ecr)];
    const req = rewritten(REQUEST).length;
    const res = rewritten(RESPONSE).length;
    return [
      { from: 0, dtMs: 0, frame: tweak(c.frame(0, { flags: SYN, seq: c.isnC, window: 64240, options: synOpts(TS_C, 0) }), { ident }) },
      { from: 1, dtMs: 62, frame: forged(RST | ACK) },
      { from: 1, dtMs: 1, frame: forged(FIN | ACK) },
      { from: 0, dtMs: 1, frame: c.frame(0, { flags: RST, seq: sc(0), window: 0 }) },
      { from: 1, dtMs: 2, frame: c.frame(1, { flags: SYN | ACK, seq: c.isnS, ack: sc(0), window: 64240, options: synOpts(TS_S, TS_C) }) },
      { from: 0, dtMs: 1, frame: c.frame(0, { flags: ACK, seq: sc(0), ack: ss(0), window: 502, options: tsC(66, TS_S) }) },
      { from: 0, dtMs: 1, frame: c.frame(0, { flags: ACK | PSH, seq: sc(0), ack: ss(0), window: 502, options: tsC(66, TS_S), payload: bytes(REQUEST) }) },
      { from: 1, dtMs: 117, frame: c.frame(1, { flags: ACK, seq: ss(0), ack: sc(req), window: 502, options: tsS(117, TS_C + 66) }) },
      { from: 1, dtMs: 2, frame: c.frame(1, { flags: ACK | PSH, seq: ss(0), ack: sc(req), window: 502, options: tsS(119, TS_C + 66), payload: bytes(RESPONSE) }) },
      { from: 0, dtMs: 1, frame: c.frame(0, { flags: ACK, seq: sc(REQUEST.length), ack: ss(res), window: 502, options: tsC(186, TS_S + 119) }) },
    ];
  },
};

/**
 * bug-3286-03, Windows client (no timestamps; window scale 8): the same forged RST+ACK (2) and
 * FIN+ACK (3), carrying timestamps the SYN did not offer, which Windows ignores and the tracker
 * takes (an exact ACK of the SYN, nothing to echo against); the real SYN-ACK (4), ACK (5), the
 * request (6), ACK (7), the response (8), ACK (9).
 */
const REPRO_3286_03: Reproduction = {
  capture: 'suricata-bug-3286-03-with_evasion_windows.pcap',
  config: CONFIG,
  rewrites: HTTP_REWRITES,
  baseline: { rstAccepted: 0, tcpInvalid: {}, rstNotExact: 0 },
  revived: { attack: 1, baseline: 0 },
  // Taken: the middle cannot tell it from a refusal, which the client must get. The SYN-ACK
  // after it revives the connection, and the agent is still there.
  forged: { ackOff: 1, tsecr: TS_FORGED, fate: 'forwarded' },
  frames(c) {
    const sc = (off: number): number => (c.isnC + 1 + off) >>> 0;
    const ss = (off: number): number => (c.isnS + 1 + off) >>> 0;
    const ident = 0x7e21;
    const synOpts: TcpOption[] = [{ kind: 'mss', mss: 1460 }, NOP, { kind: 'wscale', shift: 8 }, NOP, NOP, { kind: 'sack-permitted' }];
    const forged = (flags: number): Uint8Array => tweak(c.frame(1, { flags, seq: 0, ack: sc(0), window: 8192, options: [ts(TS_FORGED, TS_FORGED)] }), { ident });
    const req = rewritten(REQUEST).length;
    const res = rewritten(RESPONSE).length;
    return [
      { from: 0, dtMs: 0, frame: tweak(c.frame(0, { flags: SYN, seq: c.isnC, window: 8192, options: synOpts }), { ident }) },
      { from: 1, dtMs: 26, frame: forged(RST | ACK) },
      { from: 1, dtMs: 1, frame: forged(FIN | ACK) },
      { from: 1, dtMs: 1, frame: c.frame(1, { flags: SYN | ACK, seq: c.isnS, ack: sc(0), window: 8192, options: synOpts }) },
      { from: 0, dtMs: 1, frame: c.frame(0, { flags: ACK, seq: sc(0), ack: ss(0), window: 256 }) },
      { from: 0, dtMs: 1, frame: c.frame(0, { flags: ACK | PSH, seq: sc(0), ack: ss(0), window: 256, payload: bytes(REQUEST) }) },
      { from: 1, dtMs: 68, frame: c.frame(1, { flags: ACK, seq: ss(0), ack: sc(req), window: 256 }) },
      { from: 1, dtMs: 1, frame: c.frame(1, { flags: ACK | PSH, seq: ss(0), ack: sc(req), window: 256, payload: bytes(RESPONSE) }) },
      { from: 0, dtMs: 59, frame: c.frame(0, { flags: ACK, seq: sc(REQUEST.length), ack: ss(res), window: 256 }) },
    ];
  },
};

/** Binary originals of the rst-inject-rae reproduction (its own, not the capture's). */
const RAE_FIRST = '\x5a\xa5\xc3\x3c';
const RAE_SECOND = '\x9e\x37\x79\xb9\x7f\x4a';
const RAE_DATA1 = noise(9, 0x2545f491) + RAE_FIRST + noise(12, 0x9e3779b9); // 25 bytes
const RAE_DATA2 = noise(70, 0x85ebca6b) + RAE_SECOND + noise(74, 0xc2b2ae35); // 150 bytes
const RAE_REWRITES: ReadonlyArray<[string, string]> = [
  [RAE_FIRST, '<first>'],
  [RAE_SECOND, '<second>'],
];

/**
 * zeek rst-inject-rae: after the SYN (1) a forged RST+ACK (2) whose ACK is the client's ISN, not
 * ISN + 1 (seq 0, no options, the SYN's IP id, a lower TTL, the reserved bits and NS set); the
 * real SYN-ACK (3) and ACK (4); 25 bytes from the client (5); the server's ACK (6, 1.58 s later:
 * past the hold timeout) and its genuine RST+ACK at its next sequence number (7); 150 more
 * bytes from the client, sent before (7) arrived (8); the server's RST answering them (9, no
 * ACK flag, the ACK field its own sequence number, as there).
 */
const REPRO_RAE: Reproduction = {
  capture: 'zeek-rst-inject-rae.pcap',
  config:
    'rules:\n  - match: { port: 80 }\n    agent: replace\n    replace:\n' +
    "      - { regex: '\\x5a\\xa5\\xc3\\x3c', with: '<first>', maxMatch: 4 }\n" +
    "      - { regex: '\\x9e\\x37\\x79\\xb9\\x7f\\x4a', with: '<second>', maxMatch: 6 }\n",
  rewrites: RAE_REWRITES,
  baseline: { rstAccepted: 2, tcpInvalid: {}, rstNotExact: 0 },
  // Data after the genuine RST (7) revives the connection; (9) closes it again.
  revived: { attack: 1, baseline: 1 },
  // Not an ACK of the SYN: no receiver takes it (RFC 9293 §3.10.7.3).
  forged: { ackOff: 0, tsecr: null, fate: 'dropped' },
  frames(c) {
    const sc = (off: number): number => (c.isnC + 1 + off) >>> 0;
    const ss = (off: number): number => (c.isnS + 1 + off) >>> 0;
    const ident = 0x1555;
    const tsA = 600_000;
    const tsB = 530_000;
    const got1 = applyRewrites(RAE_DATA1, RAE_REWRITES).length;
    return [
      {
        from: 0,
        dtMs: 0,
        frame: tweak(c.frame(0, { flags: SYN, seq: c.isnC, window: 16384, options: [{ kind: 'mss', mss: 1372 }, NOP, { kind: 'wscale', shift: 0 }, NOP, NOP, ts(tsA, 0), NOP, NOP, { kind: 'sack-permitted' }] }), { ident }),
      },
      { from: 1, dtMs: 234, frame: tweak(c.frame(1, { flags: TcpFlag.NS | RST | ACK, seq: 0, ack: c.isnC, window: 16384 }), { ident, ttl: 46, reserved: 7 }) },
      {
        from: 1,
        dtMs: 1033,
        frame: c.frame(1, { flags: SYN | ACK, seq: c.isnS, ack: sc(0), window: 65535, options: [{ kind: 'mss', mss: 1440 }, NOP, { kind: 'wscale', shift: 2 }, NOP, NOP, ts(tsB, tsA), NOP, NOP, { kind: 'sack-permitted' }] }),
      },
      { from: 0, dtMs: 2, frame: c.frame(0, { flags: ACK, seq: sc(0), ack: ss(0), window: 17232, options: [NOP, NOP, ts(tsA + 1266, tsB)] }) },
      { from: 0, dtMs: 1, frame: c.frame(0, { flags: ACK | PSH, seq: sc(0), ack: ss(0), window: 17232, options: [NOP, NOP, ts(tsA + 1266, tsB)], payload: bytes(RAE_DATA1) }) },
      { from: 1, dtMs: 1583, frame: c.frame(1, { flags: ACK, seq: ss(0), ack: sc(got1), window: 64134, options: [NOP, NOP, ts(tsB + 2850, tsA + 1266)] }) },
      { from: 1, dtMs: 1, frame: c.frame(1, { flags: RST | ACK, seq: ss(0), ack: sc(got1), window: 0 }) },
      { from: 0, dtMs: 2, frame: c.frame(0, { flags: ACK | PSH, seq: sc(RAE_DATA1.length), ack: ss(0), window: 17232, options: [NOP, NOP, ts(tsA + 2850, tsB + 2850)], payload: bytes(RAE_DATA2) }) },
      { from: 1, dtMs: 1278, frame: c.frame(1, { flags: RST, seq: ss(0), ack: ss(0), window: 0 }) },
    ];
  },
};

const REPROS: readonly Reproduction[] = [REPRO_3286_02, REPRO_3286_03, REPRO_RAE];

/**
 * The ISNs each reproduction runs with: the client's stream across 2^32 and the server's ISN
 * 2^31 - 32 from the forged seq 0; the SYN's ACK wrapping to 0 and the forged seq 0 being the
 * server's real ISN; the client's ISN 0 (the rae forgery ACKs 0) and the server's at 2^32 - 1.
 */
const REPRO_ISNS: ReadonlyArray<{ c: number; s: number }> = [
  { c: ISN_C, s: ISN_S },
  { c: 0xffffffff, s: 0 },
  { c: 0, s: 0xffffffff },
];
const REPRO_CPORT = 41000;

interface ReproRun {
  h: Harness;
  frames: ReproFrame[];
  /** What each frame sent made the gateway emit, by frame number. */
  emitted: Map<number, Emitted[]>;
  /** The streams as the receivers get them: the recorder fed every released frame in order. */
  streams: RecordedStream[];
}

/** Sends the frames but `leaveOut` through a Gateway at the capture's pacing, then as replay ends. */
async function runRepro(r: Reproduction, isn: { c: number; s: number }, leaveOut: readonly number[]): Promise<ReproRun> {
  const h = new Harness({}, {}, r.config);
  const frames = r.frames(new Conn(h, REPRO_CPORT, isn.c, isn.s));
  const emitted = new Map<number, Emitted[]>();
  for (const [i, f] of frames.entries()) {
    h.advance(f.dtMs);
    if (!leaveOut.includes(i + 1)) emitted.set(i + 1, h.send(f.frame, f.from));
  }
  // End of capture, as `tapgate replay` does: hold timeouts fire.
  h.advance(h.gw.holdTimeoutMs + 1);
  const rec = new StreamRecorder({ sink: 'memory' });
  for (const e of h.out) rec.feed(e.frame, 'ethernet');
  return { h, frames, emitted, streams: (await rec.close()).streams };
}

function isRst(frame: Uint8Array): boolean {
  const d = decodeFrame(frame, { link: 'ethernet', verifyChecksums: true });
  return d.kind === 'tcp' && (d.tcp.flags & RST) !== 0;
}

/** The public capture's expectations on a run: no original released, streams exact, counters. */
function expectLikePublic(run: ReproRun, r: Reproduction, p: PublicCapture, counters: PublicCapture['counters'], revived: number): void {
  const { h, frames, streams } = run;
  for (const e of h.out) for (const [from] of r.rewrites) expect(payloadOf(e.frame)).not.toContain(from);
  const text = (ns: readonly number[]): string => ns.map((n) => payloadOf(frames[n - 1]!.frame)).join('');
  expect(streams.map((s) => s.id)).toEqual([`10.0.0.1.${REPRO_CPORT}-10.0.0.2.80`]);
  expect(latin1(streams[0]!.c2s)).toBe(applyRewrites(text(p.c2sFrames), r.rewrites));
  expect(latin1(streams[0]!.s2c)).toBe(applyRewrites(text(p.s2cFrames), r.rewrites));
  const { gateway: g, flows } = h.gw.stats();
  expect({ rstAccepted: g.rstAccepted, tcpInvalid: g.tcpInvalid, rstNotExact: g.rstNotExact }).toEqual(counters);
  expect(g.rstIn).toBe([...run.emitted.keys()].filter((n) => isRst(frames[n - 1]!.frame)).length);
  expect(flows.rstRevived).toBe(revived);
  expect(g.enginesReleased).toBe(0);
}

describe('crafted reproductions of the public attack captures (always run)', () => {
  for (const r of REPROS) {
    const p = PUBLIC.find((x) => x.file === r.capture)!;
    const hex = (n: number): string => `0x${n.toString(16).padStart(8, '0')}`;

    it(`${r.capture}: the reproduction has the capture's shape (forged frames first, every original after them, in the stream frames)`, () => {
      const frames = r.frames(new Conn(new Harness({}, {}, r.config), REPRO_CPORT, ISN_C, ISN_S));
      const tcp = (n: number) => {
        const d = decodeFrame(frames[n - 1]!.frame, { link: 'ethernet', verifyChecksums: true });
        if (d.kind !== 'tcp') throw new Error(`frame ${n} is ${d.kind}`);
        return d.tcp;
      };
      for (let n = 1; n <= frames.length; n++) tcp(n);
      // The forged frames come right after the SYN and carry no data; the RST+ACK is the capture's.
      const first = p.injected[0]!;
      expect(first).toBe(2);
      for (const n of p.injected) expect(payloadOf(frames[n - 1]!.frame)).toBe('');
      expect(tcp(1).flags).toBe(SYN);
      expect(tcp(2).flags & (RST | ACK | SYN | FIN)).toBe(RST | ACK);
      expect(tcp(2).seq).toBe(0);
      expect(tcp(2).ack).toBe((ISN_C + r.forged.ackOff) >>> 0);
      expect(tcp(2).tsecr()).toBe(r.forged.tsecr);
      // Every original the rules target comes after the forged frames.
      const text = (ns: readonly number[]): string => ns.map((n) => payloadOf(frames[n - 1]!.frame)).join('');
      const all = text(frames.map((_, i) => i + 1));
      const after = text(frames.map((_, i) => i + 1).filter((n) => n > first));
      for (const [from] of r.rewrites) {
        expect(after).toContain(from);
        expect(after.split(from).length).toBe(all.split(from).length);
      }
    });

    for (const isn of REPRO_ISNS) {
      const tag = `ISNs ${hex(isn.c)}/${hex(isn.s)}`;
      it(`${r.capture} reproduced, ${tag}: baseline without frames ${p.injected.join(', ')}: rewritten, streams exact, counted`, async () => {
        expectLikePublic(await runRepro(r, isn, p.injected), r, p, r.baseline, r.revived.baseline);
      });
      it(`${r.capture} reproduced, ${tag}: nothing after the forged RST passes unrewritten; streams as the receivers get them; counted as the capture`, async () => {
        const run = await runRepro(r, isn, []);
        expectLikePublic(run, r, p, p.counters, r.revived.attack);
        const out = run.emitted.get(2)!;
        if (r.forged.fate === 'dropped') expect(out).toEqual([]);
        else {
          expect(out.map((e) => e.to)).toEqual([0]);
          expect(Buffer.from(out[0]!.frame).equals(Buffer.from(run.frames[1]!.frame))).toBe(true);
        }
      });
    }
  }
});
