/**
 * Loading the YAML config: parse (yaml), validate (zod, ./schema.ts), map every issue back to the
 * file's line:column through the document's node ranges, check cross-field limits, and compile
 * the rules into matchers (config/select.ts picks the rule of a new connection).
 */

import { createHash } from 'node:crypto';
import { closeSync, constants, openSync, readSync } from 'node:fs';
import { isMap, isPair, isScalar, isSeq, LineCounter, parseDocument, type Document } from 'yaml';
import type { FtpConfig } from '../agent/ftp.js';
import { HTTP_DEFAULTS, type HttpConfig, type HttpSideConfig } from '../agent/http/config.js';
import type { MonitorConfig } from '../agent/monitor.js';
import type { ReplaceConfig, ReplaceRule } from '../agent/replace.js';
import type { Direction } from '../agent/types.js';
import { DEFAULT_LIMITS, type Limits } from '../stream/limits.js';
import { ConfigError, formatPath, type ConfigIssue } from './errors.js';
import { blockContains, formatIpBlock, isCidr6, type IpBlock } from '../wire/cidr.js';
import { ipv6Key, type IpAddr } from '../wire/ip.js';
import { configSchema, type PortRange, type RawConfig } from './schema.js';
import { natConfig, natConfigProblems, type Masquerade, type NatConfig, type NatConfigInput, type NatSide } from '../nat/nat.js';

export type { PortRange } from './schema.js';

/** All given conditions must hold; none given = every connection. */
export interface Matcher {
  /** Either side's port. */
  port?: readonly PortRange[];
  clientPort?: readonly PortRange[];
  serverPort?: readonly PortRange[];
  /** Either side's address. */
  address?: readonly IpBlock[];
  clientAddress?: readonly IpBlock[];
  serverAddress?: readonly IpBlock[];
}

export type RuleDirection = 'both' | 'c2s' | 's2c';

interface RuleCommon {
  /** Position in `rules` (0-based). */
  index: number;
  name?: string;
  match: Matcher;
  direction: RuleDirection;
  /** The directions the agent may edit (AgentContext.directions). */
  directions: ReadonlySet<Direction>;
  /** Where the rule is written (1-based line:column), for logs. */
  line: number;
  col: number;
}

/** A rule with its agent's config, ready for `createAgent(rule.agent, rule.config, ctx)`. */
export type Rule = RuleCommon &
  (
    | { agent: 'replace'; config: ReplaceConfig }
    | { agent: 'monitor'; config: MonitorConfig }
    | { agent: 'ftp'; config: FtpConfig }
    | { agent: 'http'; config: HttpConfig }
  );

export interface Config {
  fileName: string;
  /** First match wins; no match = pass-through (no agent). */
  rules: readonly Rule[];
  /** DEFAULT_LIMITS with the file's overrides. */
  limits: Readonly<Limits>;
  /** NAT on the bridge (docs/ARCHITECTURE.md §6); absent = no NAT. Side 0 = client side (first TAP). */
  nat?: NatSettings;
  /** What happens to traffic a rule may cover that cannot be inspected (engine/policy.ts). */
  policy: PolicySettings;
}

export type PolicyAction = 'drop' | 'pass';

/** The `policy:` section with its defaults applied (README "Fail closed"). */
export interface PolicySettings {
  /** TCP over IPv6 on a port a rule names (IPv6 is not inspected yet). */
  ipv6: PolicyAction;
  /** Tunnels and encapsulations the gateway does not unwrap (wire/opaque.ts), when any rule exists. */
  encapsulated: PolicyAction;
  /** IPv4 TCP with a source route in flight (its header names a hop, not the host it is for) that a rule may cover. */
  sourceRouted: PolicyAction;
  /** Connections first seen mid-stream that a rule matches: dropped, passed, or inspected from the first byte seen. */
  midstream: PolicyAction | 'inspect';
  /**
   * TCP urgent data on a rule's connections: `inline` clears URG and the urgent pointer, so the
   * receiver reads the urgent byte in the stream, where the agent saw it (a receiver without
   * SO_OOBINLINE takes it out of the stream: "Hellox world" with an urgent "x" reads "Hello
   * world"); `keep` forwards them, translated.
   */
  urgent: 'inline' | 'keep';
}

/** A security gateway's defaults: nothing a rule may cover passes uninspected unless the config says so. */
export const DEFAULT_POLICY: Readonly<PolicySettings> = Object.freeze({ ipv6: 'drop', encapsulated: 'drop', sourceRouted: 'drop', midstream: 'drop', urgent: 'inline' });

export interface NatSettings {
  table: NatConfig;
  /** Side of the FTP clients for the ftp agent's NAT hooks. */
  ftpClientSide: NatSide;
}

/** A new connection as the flow table sees it (client = the side that sent the first SYN). */
export interface ConnKey {
  /** IPv4 as uint32, IPv6 as its key (wire/ip.ts). */
  clientAddr: IpAddr;
  clientPort: number;
  serverAddr: IpAddr;
  serverPort: number;
}

// ---------------------------------------------------------------------------------------------

/**
 * What a connection's rules depend on, as a short hash: the rules and the policy (cluster
 * snapshots carry it, so a node taking a connection over after a reload selects its rule from
 * the config it started under).
 */
export function configDigest(c: Config | null): string {
  if (c === null) return 'none';
  const rules = c.rules.map((r) => ({ ...r, directions: [...r.directions].sort() }));
  return createHash('sha256').update(JSON.stringify({ rules, policy: c.policy })).digest('hex').slice(0, 16);
}

/** Largest config file read: a device or a wrong path (/dev/zero, a log) must not be read forever. */
export const MAX_CONFIG_BYTES = 16 << 20;

export function loadConfig(path: string): Config {
  let text: string;
  try {
    text = readBounded(path, MAX_CONFIG_BYTES);
  } catch (e) {
    throw new ConfigError(path, [{ file: path, path: '', message: `cannot read: ${(e as Error).message}` }]);
  }
  return parseConfig(text, path);
}

/** How long a config that is a pipe may keep the reader waiting between pieces (`check <(…)`). */
const PIPE_WAIT_MS = 5000;
const napCell = new Int32Array(new SharedArrayBuffer(4));

/**
 * The file's text, read in pieces (a FIFO or device has no size to trust); throws past `max`
 * bytes, when a pipe's writer stays silent for PIPE_WAIT_MS, or when the bytes are not UTF-8.
 * Opened non-blocking: a FIFO no one writes reads as empty at once instead of stopping the
 * process (a running gateway reloads on SIGHUP on its event loop: it forwarded nothing meanwhile).
 */
function readBounded(path: string, max: number): string {
  const fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  try {
    const parts: Buffer[] = [];
    let total = 0;
    let waitedMs = 0;
    for (;;) {
      const b = Buffer.allocUnsafe(64 * 1024);
      let n: number;
      try {
        n = readSync(fd, b, 0, b.length, null);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') throw e;
        if (waitedMs >= PIPE_WAIT_MS) throw new Error(`nothing came for ${PIPE_WAIT_MS / 1000} s (a pipe whose writer stalled)`);
        Atomics.wait(napCell, 0, 0, 10);
        waitedMs += 10;
        continue;
      }
      if (n === 0) break;
      waitedMs = 0;
      total += n;
      if (total > max) throw new Error(`larger than ${max >> 20} MiB: not a config file`);
      parts.push(b.subarray(0, n));
    }
    const bytes = Buffer.concat(parts, total);
    try {
      return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
    } catch {
      throw new Error(`not UTF-8 text (first bad byte at offset ${firstBadUtf8(bytes)}): a pattern's raw bytes would be read as something else`);
    }
  } finally {
    closeSync(fd);
  }
}

/** Offset of the first byte that makes `b` invalid UTF-8 (by halving: the decoder says only whether). */
function firstBadUtf8(b: Buffer): number {
  const ok = (n: number): boolean => {
    try {
      new TextDecoder('utf-8', { fatal: true }).decode(b.subarray(0, n), { stream: true });
      return true;
    } catch {
      return false;
    }
  };
  let lo = 0;
  let hi = b.length;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (ok(mid)) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

export function parseConfig(text: string, fileName = '<config>'): Config {
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: false, uniqueKeys: true });
  const at = (offset: number | undefined): { line?: number; col?: number } => {
    if (offset === undefined) return {};
    const p = lc.linePos(offset);
    return { line: p.line, col: p.col };
  };
  if (doc.errors.length > 0) {
    throw new ConfigError(
      fileName,
      doc.errors.map((e) => ({
        file: fileName,
        ...at(e.pos[0]),
        path: '',
        message: `YAML: ${e.message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, '')}`,
      })),
    );
  }
  let data: unknown;
  try {
    data = doc.toJS({ maxAliasCount: 1000 });
  } catch (e) {
    throw new ConfigError(fileName, [{ file: fileName, line: 1, col: 1, path: '', message: `YAML: ${(e as Error).message}` }]);
  }
  if (data === null || data === undefined) {
    throw new ConfigError(fileName, [{ file: fileName, line: 1, col: 1, path: '', message: 'empty config: expected a mapping with `rules:`' }]);
  }

  const issue = (path: readonly PropertyKey[], message: string, onKey = false): ConfigIssue => ({
    file: fileName,
    ...at(locate(doc, path, onKey)),
    path: formatPath(path),
    message,
  });

  const res = configSchema.safeParse(data);
  if (!res.success) {
    const issues = res.error.issues.map((iss) => {
      if (iss.code === 'unrecognized_keys') {
        // Point at the (first) unknown key itself.
        return issue([...iss.path, iss.keys[0]!], iss.message, true);
      }
      const value = valueAt(data, iss.path);
      let msg = iss.message;
      if (value === undefined && (iss.code === 'invalid_type' || iss.code === 'invalid_value')) msg = `missing; ${msg}`;
      else if (value !== undefined && ['invalid_type', 'invalid_value', 'too_small', 'too_big'].includes(iss.code)) {
        msg = `${msg}, got ${show(value)}`;
      }
      return issue(iss.path, msg);
    });
    // One value can fail two checks with one message (1e300: not a safe integer, and too big): said once.
    throw new ConfigError(fileName, [...new Map(issues.map((x) => [`${x.path}\n${x.message}`, x])).values()]);
  }
  const raw = res.data;
  const limits: Limits = { ...DEFAULT_LIMITS };
  for (const [k, v] of Object.entries(raw.limits ?? {})) {
    if (v !== undefined) limits[k as keyof Limits] = v;
  }

  // Cross-check: an agent that must hold more bytes than the engine allows would be flushed
  // mid-match and silently miss it.
  const held: ConfigIssue[] = [];
  raw.rules.forEach((r, i) => {
    r.replace?.forEach((x, j) => {
      const need = x.regex !== undefined ? (x.maxMatch ?? 1) - 1 : Buffer.byteLength(x.find ?? '', 'utf8') - 1;
      if (need > limits.maxHeldBytes) {
        const field = x.regex !== undefined ? 'maxMatch' : 'find';
        held.push(
          issue(
            ['rules', i, 'replace', j, field],
            `needs up to ${need} held-back bytes, more than limits.maxHeldBytes (${limits.maxHeldBytes})`,
          ),
        );
      }
    });
  });
  raw.rules.forEach((r, i) => {
    if (r.agent === 'http') held.push(...httpHeldProblems(r.http ?? {}, limits).map(([path, m]) => issue(['rules', i, 'http', ...path], m)));
  });
  if (held.length > 0) throw new ConfigError(fileName, held);

  const p = raw.policy ?? {};
  const policy: PolicySettings = {
    ipv6: p.ipv6 ?? p.uninspectable ?? DEFAULT_POLICY.ipv6,
    encapsulated: p.encapsulated ?? p.uninspectable ?? DEFAULT_POLICY.encapsulated,
    sourceRouted: p.sourceRouted ?? p.uninspectable ?? DEFAULT_POLICY.sourceRouted,
    midstream: p.midstream ?? DEFAULT_POLICY.midstream,
    urgent: p.urgent ?? DEFAULT_POLICY.urgent,
  };
  const cfg: Config = { fileName, rules: raw.rules.map((r, i) => compileRule(r, i, locate(doc, ['rules', i]), lc)), limits, policy };
  if (raw.nat !== undefined) {
    const nat = compileNat(raw.nat);
    const problems = natConfigProblems(nat.table);
    if (problems.length > 0) throw new ConfigError(fileName, problems.map((m) => issue(['nat'], m)));
    // Rules see each endpoint by its real address: a rule naming only addresses the NAT hands
    // out (a 1:1 or NPTv6 mapped range, a masquerade address) would never match.
    const t = nat.table;
    const natOnly = (b: IpBlock): boolean => {
      if (isCidr6(b)) return t.nptv6.some((m) => b.prefix >= m.mapped.prefix && blockContains(m.mapped, ipv6Key(b.bytes, 0)));
      return t.oneToOne.some((m) => b.prefix >= m.mapped.prefix && blockContains(m.mapped, b.addr)) || (b.prefix === 32 && t.masquerade.some((m) => m.address === b.addr));
    };
    const mapped: ConfigIssue[] = [];
    raw.rules.forEach((r, i) => {
      for (const k of ['address', 'clientAddress', 'serverAddress'] as const) {
        (r.match?.[k] ?? []).forEach((b, j) => {
          if (natOnly(b)) mapped.push(issue(['rules', i, 'match', k, j], `${formatIpBlock(b)} is an address the NAT hands out; rules see real addresses (name the real one)`));
        });
      }
    });
    if (mapped.length > 0) throw new ConfigError(fileName, mapped);
    cfg.nat = nat;
  }
  return cfg;
}

const sideOf = (s: 'client' | 'server'): NatSide => (s === 'client' ? 0 : 1);

function compileNat(n: NonNullable<RawConfig['nat']>): NatSettings {
  const input: NatConfigInput = {
    oneToOne: (n.oneToOne ?? []).map((m) => ({ side: sideOf(m.side), real: m.real, mapped: m.mapped })),
    nptv6: (n.nptv6 ?? []).map((m) => ({ side: sideOf(m.side), real: m.real, mapped: m.mapped })),
    masquerade: (n.masquerade ?? []).map((m) => {
      const r: Partial<Masquerade> & Pick<Masquerade, 'side' | 'sources' | 'address'> = {
        side: sideOf(m.side),
        sources: m.sources ?? [{ addr: 0, prefix: 0, mask: 0 }],
        address: m.address.addr,
      };
      if (m.ports !== undefined) r.ports = m.ports;
      if (m.icmpIds !== undefined) r.icmpIds = m.icmpIds;
      if (m.preservePort !== undefined) r.preservePort = m.preservePort;
      return r;
    }),
  };
  const lim: Record<string, number> = {};
  for (const [k, v] of Object.entries(n.limits ?? {})) if (v !== undefined) lim[k] = v;
  const to: Record<string, number> = {};
  for (const [k, v] of Object.entries(n.timeouts ?? {})) if (v !== undefined) to[k] = v;
  input.limits = lim;
  input.timeouts = to;
  return { table: natConfig(input), ftpClientSide: sideOf(n.ftpClientSide ?? 'client') };
}

const FTP_CONTROL_PORT: PortRange = { lo: 21, hi: 21 };

function compileRule(r: RawConfig['rules'][number], index: number, offset: number | undefined, lc: LineCounter): Rule {
  const pos = offset === undefined ? { line: 0, col: 0 } : lc.linePos(offset);
  const m = r.match ?? {};
  const match: Matcher = {};
  if (m.port !== undefined) match.port = m.port;
  if (m.clientPort !== undefined) match.clientPort = m.clientPort;
  if (m.serverPort !== undefined) match.serverPort = m.serverPort;
  if (m.address !== undefined) match.address = m.address;
  if (m.clientAddress !== undefined) match.clientAddress = m.clientAddress;
  if (m.serverAddress !== undefined) match.serverAddress = m.serverAddress;
  // The ftp agent's well-known port: a rule `agent: ftp` without `match` applies to port 21.
  if (r.agent === 'ftp' && r.match == null) match.serverPort = [FTP_CONTROL_PORT];
  const directions = new Set<Direction>(r.direction === 'both' ? ['c2s', 's2c'] : [r.direction]);
  const common: RuleCommon = { index, match, direction: r.direction, directions, line: pos.line, col: pos.col };
  if (r.name !== undefined) common.name = r.name;
  if (r.agent === 'replace') {
    const rules: ReplaceRule[] = (r.replace ?? []).map((x) => {
      if (x.regex !== undefined) {
        const rr: ReplaceRule = { regex: x.regex, with: x.with, maxMatch: x.maxMatch ?? 1 };
        if (x.flags !== undefined) rr.flags = x.flags;
        if (x.engine !== undefined) rr.engine = x.engine;
        if (x.maxSteps !== undefined) rr.maxSteps = x.maxSteps;
        if (x.budgetExceeded !== undefined) rr.budgetExceeded = x.budgetExceeded;
        return rr;
      }
      const lr: ReplaceRule = { find: x.find ?? '', with: x.with };
      if (x.ignoreCase !== undefined) lr.ignoreCase = x.ignoreCase;
      return lr;
    });
    return { ...common, agent: 'replace', config: rules };
  }
  if (r.agent === 'ftp') {
    const f = r.ftp ?? {};
    const config: FtpConfig = {};
    if (f.maxLine !== undefined) config.maxLine = f.maxLine;
    if (f.clientAddress !== undefined) config.clientAddress = { from: f.clientAddress.from.trim(), to: f.clientAddress.to.trim() };
    if (f.serverAddress !== undefined) config.serverAddress = { from: f.serverAddress.from.trim(), to: f.serverAddress.to.trim() };
    return { ...common, agent: 'ftp', config };
  }
  if (r.agent === 'http') return { ...common, agent: 'http', config: compileHttp(r.http ?? {}) };
  return { ...common, agent: 'monitor', config: undefined };
}

type RawHttp = NonNullable<RawConfig['rules'][number]['http']>;

/**
 * What an http rule holds at most (a header section, with a body of up to maxBufferedBody when
 * its Content-Length is fixed; a body rule's undecided tail) against limits.maxHeldBytes: past
 * it the engine would flush mid-header and the agent could not fix the framing.
 */
function httpHeldProblems(h: RawHttp, limits: Limits): [(string | number)[], string][] {
  const out: [(string | number)[], string][] = [];
  const header = h.maxHeaderBytes ?? HTTP_DEFAULTS.maxHeaderBytes;
  const body = h.maxBufferedBody ?? HTTP_DEFAULTS.maxBufferedBody;
  if (header + body > limits.maxHeldBytes) {
    const field = h.maxBufferedBody !== undefined || h.maxHeaderBytes === undefined ? 'maxBufferedBody' : 'maxHeaderBytes';
    out.push([[field], `maxHeaderBytes + maxBufferedBody (${header} + ${body}) is more than limits.maxHeldBytes (${limits.maxHeldBytes}), which the held header and body must fit in`]);
  }
  for (const side of ['request', 'response'] as const) {
    h[side]?.replace?.forEach((x, j) => {
      const need = x.regex !== undefined ? (x.maxMatch ?? 1) - 1 : Buffer.byteLength(x.find ?? '', 'utf8') - 1;
      if (need > limits.maxHeldBytes) {
        out.push([[side, 'replace', j, x.regex !== undefined ? 'maxMatch' : 'find'], `needs up to ${need} held-back bytes, more than limits.maxHeldBytes (${limits.maxHeldBytes})`]);
      }
    });
  }
  return out;
}

/** An object without its undefined properties (exactOptionalPropertyTypes). */
function defined<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
}

function compileHttp(h: RawHttp): HttpConfig {
  const side = (s: NonNullable<RawHttp['request']> | null | undefined): HttpSideConfig | undefined => {
    if (s == null) return undefined;
    const out: HttpSideConfig = {};
    // Body rules are the replace agent's own (same schema), passed as written.
    if (s.replace !== undefined) out.replace = s.replace.map((x) => defined(x) as ReplaceRule);
    if (s.setHeaders != null) out.setHeaders = { ...s.setHeaders };
    if (s.removeHeaders != null) out.removeHeaders = [...s.removeHeaders];
    return out;
  };
  const c: HttpConfig = {};
  const req = side(h.request);
  const resp = side(h.response);
  if (req !== undefined) c.request = req;
  if (resp !== undefined) {
    c.response = resp;
    const id = (h.response as { identity?: boolean } | null | undefined)?.identity;
    if (id !== undefined) c.response.identity = id;
  }
  for (const k of ['maxHeaderBytes', 'maxBufferedBody', 'maxChunkLine', 'maxPipeline', 'maxDecodedRatio', 'maxDecoding'] as const) {
    const v = h[k];
    if (v !== undefined) c[k] = v;
  }
  if (h.assumeHttp11Server !== undefined) c.assumeHttp11Server = h.assumeHttp11Server;
  if (h.unrewritable !== undefined) c.unrewritable = h.unrewritable;
  if (h.decode !== undefined) c.decode = h.decode;
  return c;
}

// ---------------------------------------------------------------------------------------------
// Mapping document paths to text positions

/**
 * Offset of the node at `path` (or of its key when `onKey`); when the path goes beyond what is
 * written (a missing key), the deepest existing node: the mapping that lacks the key.
 */
function locate(doc: Document, path: readonly PropertyKey[], onKey = false): number | undefined {
  let node: unknown = doc.contents;
  let best = rangeStart(node);
  for (let i = 0; i < path.length; i++) {
    const seg = path[i]!;
    const last = i === path.length - 1;
    if (isMap(node)) {
      const pair = node.items.find((p) => isPair(p) && String(isScalar(p.key) ? p.key.value : p.key) === String(seg));
      if (pair === undefined) break;
      const keyPos = rangeStart(pair.key);
      if (last && onKey) return keyPos ?? best;
      node = pair.value;
      best = rangeStart(node) ?? keyPos ?? best; // `key:` with no value: the key
    } else if (isSeq(node) && typeof seg === 'number') {
      node = node.items[seg];
      best = rangeStart(node) ?? best;
    } else break;
  }
  return best;
}

function rangeStart(node: unknown): number | undefined {
  const r = (node as { range?: [number, number, number] } | null)?.range;
  return r === undefined ? undefined : r[0];
}

function valueAt(data: unknown, path: readonly PropertyKey[]): unknown {
  let v = data;
  for (const seg of path) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<PropertyKey, unknown>)[seg];
  }
  return v;
}

function show(v: unknown): string {
  if (Array.isArray(v)) return v.length === 0 ? 'an empty list' : `a list of ${v.length}`;
  if (v === null) return 'null (empty)';
  if (typeof v === 'object') return 'a mapping';
  if (typeof v === 'number' && !Number.isFinite(v)) return String(v); // JSON would say null
  const s = JSON.stringify(v);
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}
