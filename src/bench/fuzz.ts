/**
 * Fuzzing the wire decoder and the gateway (issue 6): random bytes, and frames of real captures
 * mutated the ways an attacker or a broken stack would (bit flips, truncation, extension, length
 * and offset fields, option bytes, random seq/ack/flags/window; IPv6 extension headers put in
 * front of TCP), with the checksums optionally fixed up afterwards so that the mutation reaches
 * the layers behind the checksum check. The captures are replayed as they are and carried over
 * IPv6 (`ipv6Corpus`).
 *
 * Properties (fast-check), shared by the CI tests (test/fuzz/, fixed seeds) and the long runner
 * (scripts/fuzz.ts):
 * - `decodeProperty`: decodeFrame and every accessor of what it returns never throw;
 * - `gatewayProperty`: a Gateway (no rule / replace rule / regex rule, checksums verified or not,
 *   small limits so that every budget bites) fed a capture with mutated frames injected at a
 *   random point never throws; every frame it emits decodes (with checksum verification when the
 *   gateway verifies: a malformed frame is dropped, never forwarded), is not a TCP fragment, and
 *   is within maxFrameBytes; the global queue budget, the table size and the half-open cap hold
 *   after every frame.
 */
import fc from 'fast-check';
import { join } from 'node:path';
import { parseConfig } from '../config/index.js';
import { Gateway } from '../engine/gateway.js';
import { isGatewayLink } from '../phy/capture-fixup.js';
import { readPcapAll } from '../phy/pcap.js';
import { DEFAULT_LIMITS, type Limits } from '../stream/limits.js';
import { decodeFrame, type LinkType } from '../wire/frame.js';
import { IP_PROTO_TCP } from '../wire/ipv4.js';
import { emitIpv6Header, IPV6_HEADER_LEN, ipv6PseudoHeaderSum, walkIpv6 } from '../wire/ipv6.js';

export interface Corpus {
  name: string;
  link: LinkType;
  frames: Uint8Array[];
}

/** The real captures the mutations start from (all Ethernet, real checksums). */
export const CORPUS_FILES = ['http-small.pcap', 'http-loss.pcap'];

export async function loadCorpus(dir: string, files: readonly string[] = CORPUS_FILES): Promise<Corpus[]> {
  const out: Corpus[] = [];
  for (const name of files) {
    const { records, error } = await readPcapAll(join(dir, name));
    if (error) throw new Error(`${name}: ${error.message}`);
    // Plain Uint8Array copies: a Buffer's slice() is a view, and mutate() relies on slice() copying.
    const link = records[0]?.link ?? 'ethernet';
    if (!isGatewayLink(link)) throw new Error(`${name}: link ${link}: the corpus takes Ethernet or raw IP captures`);
    out.push({ name, link, frames: records.map((r) => new Uint8Array(r.data)) });
  }
  return out;
}

// ---- mutations ------------------------------------------------------------------------------

export type Field =
  | 'ipTotalLen'
  | 'ihl'
  | 'ipFlagsFrag'
  | 'ipProto'
  | 'tcpDataOffset'
  | 'seq'
  | 'ack'
  | 'flags'
  | 'window'
  | 'urgent'
  | 'srcPort';

export type Mutation =
  | { op: 'flip'; at: number; bit: number }
  | { op: 'set'; at: number; value: number }
  | { op: 'truncate'; keep: number }
  | { op: 'extend'; bytes: Uint8Array }
  | { op: 'field'; field: Field; value: number }
  /** A byte inside the TCP option area (or the first bytes after the fixed header). */
  | { op: 'tcpOption'; at: number; value: number }
  /** IPv6 only: an extension header of type `next` (its length byte from `bytes`) put in front of what follows the fixed header. */
  | { op: 'ipv6Ext'; next: number; bytes: Uint8Array };

const FIELDS: readonly Field[] = ['ipTotalLen', 'ihl', 'ipFlagsFrag', 'ipProto', 'tcpDataOffset', 'seq', 'ack', 'flags', 'window', 'urgent', 'srcPort'];

export const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ op: fc.constant('flip' as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
  fc.record({ op: fc.constant('set' as const), at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }),
  fc.record({ op: fc.constant('truncate' as const), keep: fc.nat() }),
  fc.record({ op: fc.constant('extend' as const), bytes: fc.uint8Array({ minLength: 1, maxLength: 64 }) }),
  fc.record({
    op: fc.constant('field' as const),
    field: fc.constantFrom(...FIELDS),
    value: fc.oneof(fc.nat(), fc.integer({ min: 0, max: 0xffffffff }), fc.constantFrom(0, 1, 0xffff, 0xffffffff, 0x7fffffff, 0x80000000)),
  }),
  fc.record({ op: fc.constant('tcpOption' as const), at: fc.integer({ min: 0, max: 39 }), value: fc.integer({ min: 0, max: 255 }) }),
  fc.record({
    op: fc.constant('ipv6Ext' as const),
    // Hop-by-Hop, Routing, Fragment, Destination Options, AH, ESP, No Next Header, or anything.
    next: fc.oneof(fc.constantFrom(0, 43, 44, 60, 51, 50, 59), fc.integer({ min: 0, max: 255 })),
    bytes: fc.uint8Array({ minLength: 0, maxLength: 40 }),
  }),
);

function put16(b: Uint8Array, o: number, v: number): void {
  if (o + 1 >= b.length) return;
  b[o] = (v >>> 8) & 0xff;
  b[o + 1] = v & 0xff;
}
function put32(b: Uint8Array, o: number, v: number): void {
  put16(b, o, v >>> 16);
  put16(b, o + 2, v & 0xffff);
}

const isV6 = (b: Uint8Array): boolean => b[12] === 0x86 && b[13] === 0xdd;

/** Where the layers of an Ethernet/IPv4 or /IPv6 frame start (no VLAN tags; the corpus has none; IPv6: TCP after the fixed header). */
function l3l4(b: Uint8Array): { l3: number; l4: number } {
  const l3 = 14;
  if (isV6(b)) return { l3, l4: l3 + IPV6_HEADER_LEN };
  const ihl = b.length > l3 ? (b[l3]! & 0x0f) * 4 : 20;
  return { l3, l4: l3 + Math.max(20, ihl) };
}

/** Applies mutations to a copy of `frame`; `fix` recomputes the IPv4 and TCP checksums after. */
export function mutate(frame: Uint8Array, muts: readonly Mutation[], fix: boolean): Uint8Array {
  let b = frame.slice();
  for (const m of muts) {
    const { l3, l4 } = l3l4(b);
    switch (m.op) {
      case 'flip':
        if (b.length > 0) b[m.at % b.length]! ^= 1 << m.bit;
        break;
      case 'set':
        if (b.length > 0) b[m.at % b.length] = m.value;
        break;
      case 'truncate':
        b = b.slice(0, m.keep % (b.length + 1));
        break;
      case 'extend': {
        const e = new Uint8Array(b.length + m.bytes.length);
        e.set(b);
        e.set(m.bytes, b.length);
        b = e;
        break;
      }
      case 'tcpOption':
        if (l4 + 20 + m.at < b.length) b[l4 + 20 + m.at] = m.value;
        break;
      case 'ipv6Ext': {
        if (!isV6(b) || b.length < l3 + IPV6_HEADER_LEN) break;
        // The header chains to what the fixed header named; its length byte says (len+1)*8 bytes
        // (what is given is padded or cut to that: a lying length is what the truncation and
        // byte mutations are for).
        const len = m.next === 44 ? 8 : m.next === 51 ? ((m.bytes[1] ?? 0) % 6 + 2) * 4 : ((m.bytes[1] ?? 0) % 4 + 1) * 8;
        const h = new Uint8Array(len);
        h.set(m.bytes.subarray(0, len));
        h[0] = b[l3 + 6]!;
        if (m.next !== 44) h[1] = m.next === 51 ? len / 4 - 2 : len / 8 - 1;
        const e = new Uint8Array(b.length + len);
        e.set(b.subarray(0, l3 + IPV6_HEADER_LEN));
        e.set(h, l3 + IPV6_HEADER_LEN);
        e.set(b.subarray(l3 + IPV6_HEADER_LEN), l3 + IPV6_HEADER_LEN + len);
        e[l3 + 6] = m.next;
        put16(e, l3 + 4, ((e[l3 + 4]! << 8) | e[l3 + 5]!) + len);
        b = e;
        break;
      }
      case 'field':
        if (isV6(b)) {
          switch (m.field) {
            case 'ipTotalLen': put16(b, l3 + 4, m.value & 0xffff); continue;
            case 'ihl': if (l3 < b.length) b[l3] = (b[l3]! & 0xf0) | (m.value & 0x0f); continue;
            case 'ipFlagsFrag': put16(b, l3 + 2, m.value & 0xffff); continue; // the flow label's low bits
            case 'ipProto': if (l3 + 6 < b.length) b[l3 + 6] = m.value & 0xff; continue;
            default: break; // TCP fields: at l4 as for IPv4
          }
        }
        switch (m.field) {
          case 'ipTotalLen': put16(b, l3 + 2, m.value & 0xffff); break;
          case 'ihl': if (l3 < b.length) b[l3] = (b[l3]! & 0xf0) | (m.value & 0x0f); break;
          case 'ipFlagsFrag': put16(b, l3 + 6, m.value & 0xffff); break;
          case 'ipProto': if (l3 + 9 < b.length) b[l3 + 9] = m.value & 0xff; break;
          case 'tcpDataOffset': if (l4 + 12 < b.length) b[l4 + 12] = ((m.value & 0x0f) << 4) | (b[l4 + 12]! & 0x0f); break;
          case 'seq': put32(b, l4 + 4, m.value >>> 0); break;
          case 'ack': put32(b, l4 + 8, m.value >>> 0); break;
          case 'flags': if (l4 + 13 < b.length) b[l4 + 13] = m.value & 0xff; break;
          case 'window': put16(b, l4 + 14, m.value & 0xffff); break;
          case 'urgent': put16(b, l4 + 18, m.value & 0xffff); break;
          case 'srcPort': put16(b, l4, m.value & 0xffff); break;
        }
        break;
    }
  }
  return fix ? fixChecksums(b) : b;
}

/** Recomputes the IPv4 header checksum and the TCP checksum (IPv6: the TCP checksum) where the lengths allow it. */
export function fixChecksums(b: Uint8Array): Uint8Array {
  const l3 = 14;
  if (isV6(b)) return fixChecksums6(b);
  if (b.length < l3 + 20 || b[12] !== 0x08 || b[13] !== 0x00) return b;
  const ihl = (b[l3]! & 0x0f) * 4;
  if (ihl < 20 || l3 + ihl > b.length) return b;
  put16(b, l3 + 10, 0);
  put16(b, l3 + 10, csum(b, l3, l3 + ihl, 0));
  const end = l3 + ((b[l3 + 2]! << 8) | b[l3 + 3]!);
  const l4 = l3 + ihl;
  const fragWord = (b[l3 + 6]! << 8) | b[l3 + 7]!;
  if (b[l3 + 9] !== 6 || (fragWord & 0x3fff) !== 0 || end < l4 + 18 || end > b.length) return b;
  put16(b, l4 + 16, 0);
  let pseudo = 6 + (end - l4);
  for (let i = 12; i < 20; i += 2) pseudo += (b[l3 + i]! << 8) | b[l3 + i + 1]!;
  put16(b, l4 + 16, csum(b, l4, end, pseudo));
  return b;
}

function fixChecksums6(b: Uint8Array): Uint8Array {
  const l3 = 14;
  if (b.length < l3 + IPV6_HEADER_LEN || b[l3]! >>> 4 !== 6) return b;
  const w = walkIpv6(b, l3);
  const end = l3 + IPV6_HEADER_LEN + ((b[l3 + 4]! << 8) | b[l3 + 5]!);
  if (w.error !== null || w.upperProto !== IP_PROTO_TCP || end > b.length || end < w.upperOff + 18) return b;
  const l4 = w.upperOff;
  put16(b, l4 + 16, 0);
  put16(b, l4 + 16, csum(b, l4, end, ipv6PseudoHeaderSum(b, l3 + 8, l3 + 24, IP_PROTO_TCP, end - l4)));
  return b;
}

/**
 * The corpus carried over IPv6: every IPv4 TCP frame becomes the same segment from
 * 2001:db8::<the IPv4 address> (its TCP checksum recomputed; `ext`: behind a Destination
 * Options header of 8 bytes); other frames are left out.
 */
export function ipv6Corpus(c: Corpus, ext = false): Corpus {
  return { name: `${c.name} over IPv6${ext ? ' (Destination Options)' : ''}`, link: c.link, frames: c.frames.flatMap((f) => {
    const v6 = toIpv6Frame(f, c.link, ext);
    return v6 === null ? [] : [v6];
  }) };
}

/** One IPv4 TCP frame carried over IPv6 (see ipv6Corpus); null for anything else. */
export function toIpv6Frame(f: Uint8Array, link: LinkType, ext: boolean): Uint8Array | null {
  const d = decodeFrame(f, { link, verifyChecksums: false });
  if (d.kind !== 'tcp' || d.ip === null) return null;
  const seg = f.subarray(d.l4Off, d.ipEnd);
  const l3 = d.l3Off;
  const x = ext ? new Uint8Array([IP_PROTO_TCP, 0, 1, 4, 0, 0, 0, 0]) : new Uint8Array(0);
  const out = new Uint8Array(l3 + IPV6_HEADER_LEN + x.length + seg.length);
  out.set(f.subarray(0, l3));
  if (l3 >= 2) out.set([0x86, 0xdd], l3 - 2);
  const v6 = (a: number): Uint8Array => {
    const b = new Uint8Array(16);
    b.set([0x20, 0x01, 0x0d, 0xb8]);
    put32(b, 12, a);
    return b;
  };
  emitIpv6Header(out, l3, x.length + seg.length, ext ? 60 : IP_PROTO_TCP, v6(d.ip.src), v6(d.ip.dst));
  out.set(x, l3 + IPV6_HEADER_LEN);
  out.set(seg, l3 + IPV6_HEADER_LEN + x.length);
  return link === 'ethernet' ? fixChecksums6(out) : out;
}

function csum(b: Uint8Array, from: number, to: number, acc: number): number {
  let s = acc;
  let i = from;
  for (; i + 1 < to; i += 2) s += (b[i]! << 8) | b[i + 1]!;
  if (i < to) s += b[i]! << 8;
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return ~s & 0xffff;
}

// ---- properties -----------------------------------------------------------------------------

/** decodeFrame and every accessor of its result, on arbitrary bytes: must never throw. */
export function decodeAll(b: Uint8Array, link: LinkType): string {
  let kinds = '';
  for (const [verifyChecksums, ipv6] of [[true, true], [false, true], [true, false]] as const) {
    const d = decodeFrame(b, { link, verifyChecksums, ipv6 });
    kinds += d.kind;
    if (d.kind === 'tcp') {
      const t = d.tcp;
      void [t.srcPort, t.dstPort, t.seq, t.ack, t.flags, t.window, t.urgent, t.seqLen, t.payloadLen, t.optionBytes.length];
      void [t.mss(), t.windowScale(), t.sackPermitted(), t.tsval(), t.tsecr(), t.options().length];
      for (let i = 0; i < t.sackBlockCount(); i++) void [t.sackLeft(i), t.sackRight(i)];
      if (d.payloadOff + d.payloadLen > b.length || d.payloadLen < 0) throw new Error(`payload outside the frame: ${d.payloadOff}+${d.payloadLen} > ${b.length}`);
    } else if (d.kind === 'ipv4-other') {
      void [d.ip.options.length, d.ip.payload.length, d.fragOffset, d.moreFrags];
    }
    if (d.kind === 'tcp' && d.ip6 !== null) {
      const p = d.ip6;
      void [p.payloadLength, p.nextHeader, p.hopLimit, p.src.length, p.dst.length, p.flowLabel, p.trafficClass];
      if (d.l4Off < d.l3Off + IPV6_HEADER_LEN || d.ipEnd > b.length) throw new Error(`IPv6 TCP outside the packet: l4 ${d.l4Off}, end ${d.ipEnd} of ${b.length}`);
    }
  }
  return kinds;
}

export function decodeProperty(corpus: readonly Corpus[]) {
  return fc.property(
    fc.nat({ max: corpus.length - 1 }),
    fc.nat(),
    fc.array(mutationArb, { minLength: 1, maxLength: 6 }),
    fc.boolean(),
    (ci, fi, muts, fix) => {
      const c = corpus[ci]!;
      decodeAll(mutate(c.frames[fi % c.frames.length]!, muts, fix), c.link);
    },
  );
}

export function randomBytesDecodeProperty() {
  return fc.property(fc.uint8Array({ maxLength: 200 }), fc.constantFrom<LinkType>('ethernet', 'raw-ipv4'), (b, link) => {
    decodeAll(b, link);
  });
}

export const FUZZ_CONFIGS = {
  none: null,
  replace: `
rules:
  - match: { port: 8000 }
    agent: replace
    replace:
      - { find: "quick brown fox", with: "slow red cat, much slower" }
      - { find: "lazy dog", with: "" }
      - { find: "HTTP", with: "HTTPS" }
`,
  regex: `
rules:
  - agent: replace
    replace:
      - { regex: "line [0-9]+", with: "L", maxMatch: 16 }
      - { regex: "Server: [^\\\\r]*", with: "Server: x", maxMatch: 200 }
`,
} as const;
export type FuzzConfigName = keyof typeof FUZZ_CONFIGS;

/** Small budgets, so that a mutated stream hits every limit. */
export const FUZZ_LIMITS: Limits = {
  ...DEFAULT_LIMITS,
  maxConnections: 6,
  maxHalfOpen: 3,
  queueBytesPerConn: 16 << 10,
  queueSegmentsPerConn: 16,
  queueBytesGlobal: 24 << 10,
  maxAheadBytes: 256 << 10,
  maxHeldBytes: 4 << 10,
  normalizeBytesPerConn: 64 << 10,
  synTimeoutMs: 2_000,
};

const PARSED = new Map<FuzzConfigName, ReturnType<typeof parseConfig> | null>();
function configOf(name: FuzzConfigName) {
  let c = PARSED.get(name);
  if (c === undefined) {
    const text = FUZZ_CONFIGS[name];
    c = text === null ? null : parseConfig(text, `fuzz-${name}.yaml`);
    PARSED.set(name, c);
  }
  return c;
}

export interface Injection {
  fi: number;
  muts: Mutation[];
  fix: boolean;
  from: 0 | 1;
  /** Milliseconds the clock moves before this frame (timers run). */
  dt: number;
}

export interface GatewayCase {
  ci: number;
  /** Real frames replayed before the injections (mod capture length + 1). */
  cut: number;
  injections: Injection[];
  config: FuzzConfigName;
  verify: boolean;
  /** Replay the rest of the capture after the injections. */
  rest: boolean;
}

export const injectionArb: fc.Arbitrary<Injection> = fc.record({
  fi: fc.nat(),
  muts: fc.array(mutationArb, { minLength: 0, maxLength: 4 }),
  fix: fc.boolean(),
  from: fc.constantFrom<0 | 1>(0, 1),
  dt: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 5_000 })),
});

export const gatewayCaseArb = (corpus: readonly Corpus[]): fc.Arbitrary<GatewayCase> =>
  fc.record({
    ci: fc.nat({ max: corpus.length - 1 }),
    cut: fc.nat(),
    injections: fc.array(injectionArb, { minLength: 1, maxLength: 12 }),
    config: fc.constantFrom<FuzzConfigName>('none', 'replace', 'regex'),
    verify: fc.boolean(),
    rest: fc.boolean(),
  });

/** Runs one case; throws (with a reason) when an invariant breaks. Returns frames emitted. */
export function runGatewayCase(corpus: readonly Corpus[], k: GatewayCase): number {
  const c = corpus[k.ci]!;
  const limits = FUZZ_LIMITS;
  const gw = new Gateway({ config: configOf(k.config), verifyChecksums: k.verify, limits });
  let emitted = 0;
  let now = 0;
  const emit = (f: Uint8Array): void => {
    emitted++;
    checkEmitted(f, c.link, k.verify, limits);
  };
  const check = (): void => {
    if (gw.queuedBytes > limits.queueBytesGlobal || gw.queuedBytes < 0) throw new Error(`queued bytes ${gw.queuedBytes} outside [0, ${limits.queueBytesGlobal}]`);
    if (gw.flows.size > limits.maxConnections) throw new Error(`flow table ${gw.flows.size} > ${limits.maxConnections}`);
    if (gw.flows.halfOpen > limits.maxHalfOpen || gw.flows.halfOpen < 0) throw new Error(`half-open ${gw.flows.halfOpen} outside [0, ${limits.maxHalfOpen}]`);
  };
  const n = c.frames.length;
  const cut = k.cut % (n + 1);
  for (let i = 0; i < cut; i++) {
    now += 1;
    gw.tick(now, emit);
    gw.handleFrame(c.frames[i]!.slice(), 0, now, emit, c.link);
    check();
  }
  for (const inj of k.injections) {
    now += inj.dt;
    gw.tick(now, emit);
    gw.handleFrame(mutate(c.frames[inj.fi % n]!, inj.muts, inj.fix), inj.from, now, emit, c.link);
    check();
  }
  if (k.rest) {
    for (let i = cut; i < n; i++) {
      now += 1;
      gw.tick(now, emit);
      gw.handleFrame(c.frames[i]!.slice(), 0, now, emit, c.link);
      check();
    }
  }
  gw.tick(now + 60_000, emit);
  check();
  return emitted;
}

function checkEmitted(f: Uint8Array, link: LinkType, verify: boolean, limits: Limits): void {
  if (f.length > limits.maxFrameBytes) throw new Error(`emitted a frame of ${f.length} bytes > maxFrameBytes`);
  const d = decodeFrame(f, { link, verifyChecksums: verify, ipv6: true });
  if (d.kind === 'error') throw new Error(`emitted a malformed frame: ${d.reason}: ${d.detail}`);
  if (d.kind === 'ipv4-other' && d.protocol === 6 && d.isFragment) throw new Error('emitted a TCP fragment');
}

export function gatewayProperty(corpus: readonly Corpus[]) {
  return fc.property(gatewayCaseArb(corpus), (k) => {
    runGatewayCase(corpus, k);
  });
}

/** Random bytes (alone, or behind a valid Ethernet + IPv4/TCP or IPv6/TCP prefix of a corpus frame) into a gateway with a rule. */
export function randomBytesGatewayProperty(corpus: readonly Corpus[]) {
  return fc.property(
    fc.uint8Array({ maxLength: 300 }),
    fc.nat({ max: 82 }),
    fc.boolean(),
    fc.nat({ max: corpus.length - 1 }),
    (bytes, prefixLen, verify, ci) => {
      const c = corpus[ci]!;
      const gw = new Gateway({ config: configOf('replace'), verifyChecksums: verify, limits: FUZZ_LIMITS });
      const emit = (f: Uint8Array): void => checkEmitted(f, c.link, verify, FUZZ_LIMITS);
      for (let i = 0; i < Math.min(3, c.frames.length); i++) gw.handleFrame(c.frames[i]!.slice(), 0, i, emit, c.link);
      const f = new Uint8Array(prefixLen + bytes.length);
      f.set(c.frames[0]!.subarray(0, prefixLen));
      f.set(bytes, prefixLen);
      gw.handleFrame(f, 0, 10, emit, c.link);
      gw.handleFrame(fixChecksums(f.slice()), 1, 11, emit, c.link);
      gw.tick(100_000, emit);
    },
  );
}
