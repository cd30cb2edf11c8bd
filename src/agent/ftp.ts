/**
 * The `ftp` agent (docs/ARCHITECTURE.md §3, §6): rewrites the data-connection endpoints that an FTP control
 * connection carries, so that FTP works through NAT, and announces the data connections it saw
 * so that the NAT can expect them.
 *
 * What is rewritten (RFC 959, RFC 1123 §4.1.2.6, RFC 2428):
 * - c2s `PORT h1,h2,h3,h4,p1,p2` (verb case-insensitive; spaces around the numbers tolerated, as
 *   the seed's "PORT 40, 4, 4, 5, 4, 123" example has them; nothing but spaces/CR may follow);
 * - c2s `EPRT |1|a.b.c.d|port|` and `EPRT |2|ipv6-address|port|` (any delimiter 33..126; an
 *   IPv6 address rewritten is written in RFC 5952 text); other families pass unchanged, counted;
 * - s2c `227 ...h1,h2,h3,h4,p1,p2...`: the address starts at the first digit after "227 " (RFC
 *   1123: "the User-PI should scan the reply for the first digit"), with or without parentheses;
 *   what follows the six numbers is free text;
 * - s2c `229 ...(|||port|)`: the port after the first "(" and three delimiters.
 * Only the endpoint text is replaced (`10,200,0,1,195,80`, `10.200.0.1|50000`, `50000`); the verb,
 * reply text, delimiters and line ends stay byte-exact. Replies in a multi-line reply (`227-`
 * ... `227 `) are text except its final line; lines of another code's multi-line reply are text.
 *
 * Streaming (the seed's "PORT 40, " case): the stream is cut into lines at LF. A line that cannot
 * be one of the above is decided at once (released, nothing held) and skipped to its LF. A line
 * that still can be holds back only from the first byte an edit could touch (the first digit of
 * the address/port): the verb and reply text before it are never rewritten, so they are released
 * ("It is possible to leave 'PORT_' within the first data packet", seed). The line is decided at
 * its end (PORT/EPRT: the line end, since trailing garbage makes the command invalid) or as soon
 * as the endpoint is complete (227 after the sixth number, 229 at the closing ")"), or when it is
 * malformed (a number > 255, a missing field, a stray byte, another EPRT family) or longer than
 * `maxLine` bytes, so at most maxLine bytes are ever held. A malformed or overlong 227/229 passes
 * (counted: the server's text); a PORT / EPRT that does not parse strictly makes the agent give
 * up on the connection (`refusedCommands`, abort `ftp:malformed-command`): servers take some
 * such lines (vsftpd: trailing bytes, leading zeros) and would get an address untranslated; so
 * does a PORT / EPRT behind Telnet commands or blanks, or with a tab after it (`disguisedCommand`). An
 * endpoint a hook refuses (`FtpHooks`: another host's address, the NAT full) ends the same way
 * (`refusedEndpoints`). After giving up, everything fed is deleted and no hook is called. `flush` deletes held bytes (counted):
 * they are the part of a candidate line that may carry an endpoint, and released they would
 * cross untranslated (the inside address a NAT hides, a client pausing inside PORT). At the end
 * of the stream that is all, mid-stream (a hold timeout or limit) the line is parsed on: if it
 * turns out to carry an endpoint, that endpoint cannot be translated any more (part of it is
 * gone), so the rest is deleted and the agent gives up on the connection
 * (`splitLines`, abort `ftp:split-command`), the way the replace agent treats a match a flush
 * split; any other line passes. The decision depends only on the bytes, never on how they
 * were cut into `feed` calls.
 *
 * Translation is not state: it comes from runtime hooks (`FtpHooks`) that the factory gets from
 * an `FtpHooksProvider` when the registry is made (like the monitor's sink). The gateway will
 * supply hooks backed by its NAT table (`NatTable.expectData` allocates the announced port and
 * registers the expectation); without one, the hooks come from the rule's static mapping
 * (`clientAddress` / `serverAddress`). Each hook is called exactly once per decided endpoint, in
 * stream order, when its line is decided, and never again after a snapshot/restore.
 */

import { parseCidr, type Cidr } from '../wire/cidr.js';
import { ipv4ToString } from '../wire/ipv4.js';
import { ipv6ToString, parseIpv6 } from '../wire/ipv6.js';
import type { Agent, AgentContext, AgentFactory, AgentOutput, Direction, Edit, FlushReason } from './types.js';
import { NO_EDITS } from './types.js';

// ---------------------------------------------------------------------------------------------
// Config and hooks

export interface FtpAddressMap {
  /** Address or CIDR as announced. */
  from: string;
  /** Address or CIDR (same size) to announce instead; host bits are kept. */
  to: string;
}

export interface FtpConfig {
  /** Longest candidate line held (bytes, without LF). Default 512. */
  maxLine?: number;
  /** Static mapping for PORT/EPRT (the address the client announces → what the server sees). */
  clientAddress?: FtpAddressMap;
  /** Static mapping for 227 (the address the server announces → what the client sees). */
  serverAddress?: FtpAddressMap;
}

export const FTP_DEFAULT_MAX_LINE = 512;
export const FTP_MAX_LINE_LIMIT = 65536;

export type FtpKind = 'PORT' | 'EPRT' | 'PASV' | 'EPSV';

export interface FtpEndpoint {
  /** Dotted quad; RFC 5952 text for `EPRT |2|` (IPv6). */
  addr: string;
  port: number;
}

export interface FtpAnnouncement {
  /** PORT/EPRT (c2s, active mode) or the 227 (PASV) / 229 (EPSV) reply (s2c, passive mode). */
  kind: FtpKind;
  /** As written in the stream. EPSV carries no address: `addr` is `ctx.server.addr`. */
  endpoint: FtpEndpoint;
  ctx: AgentContext;
}

export interface FtpExpectation {
  flowId: string;
  kind: FtpKind;
  /** Who will open the data connection: the server for PORT/EPRT, the client for PASV/EPSV. */
  opener: 'client' | 'server';
  /** The opener's address as the agent's context has it. */
  openerAddr: string;
  /** What the opener was told (after translation): where its SYN will go. */
  announced: FtpEndpoint;
  /** The endpoint as the announcing side wrote it: where the connection must really arrive. */
  original: FtpEndpoint;
}

/**
 * Runtime hooks of one ftp agent. A translate hook returns the endpoint to announce instead,
 * undefined to leave it unchanged (no translation applies), or null to refuse it (an endpoint
 * that would open a path the config did not mean: another host's address, the other family, no
 * room for its expectation): the agent then gives up on the connection (`refusedEndpoints`, abort
 * `ftp:refused-endpoint`), so the line reaches the peer neither translated nor as written. For
 * EPSV only the port can be written: the returned address is reported in the expectation but not
 * in the stream. A hook that throws or returns an invalid endpoint leaves the text unchanged
 * (counted as hookErrors).
 */
export interface FtpHooks {
  translateClientEndpoint(a: FtpAnnouncement): FtpEndpoint | undefined | null;
  translateServerEndpoint(a: FtpAnnouncement): FtpEndpoint | undefined | null;
  expect(x: FtpExpectation): void;
}

export type FtpHooksProvider = (cfg: FtpConfig, ctx: AgentContext) => FtpHooks;

/** Everything wrong with an ftp config (empty = valid), as [field, message]. */
export function ftpConfigProblems(cfg: unknown): [string, string][] {
  const out: [string, string][] = [];
  if (cfg === undefined || cfg === null) return out;
  if (typeof cfg !== 'object') return [['', 'expected a mapping']];
  const c = cfg as Record<string, unknown>;
  for (const k of Object.keys(c)) {
    if (!['maxLine', 'clientAddress', 'serverAddress'].includes(k)) out.push([k, 'unknown key; allowed: maxLine, clientAddress, serverAddress']);
  }
  const ml = c['maxLine'];
  if (ml !== undefined && (typeof ml !== 'number' || !Number.isInteger(ml) || ml < 16 || ml > FTP_MAX_LINE_LIMIT)) {
    out.push(['maxLine', `expected an integer from 16 to ${FTP_MAX_LINE_LIMIT}`]);
  }
  for (const k of ['clientAddress', 'serverAddress'] as const) {
    const m = c[k] as Record<string, unknown> | undefined;
    if (m === undefined) continue;
    if (typeof m !== 'object' || m === null) {
      out.push([k, 'expected { from, to }']);
      continue;
    }
    const f = typeof m['from'] === 'string' ? parseCidr(m['from']) : 'expected an address or CIDR';
    const t = typeof m['to'] === 'string' ? parseCidr(m['to']) : 'expected an address or CIDR';
    if (typeof f === 'string') out.push([`${k}.from`, f]);
    if (typeof t === 'string') out.push([`${k}.to`, t]);
    if (typeof f !== 'string' && typeof t !== 'string' && f.prefix !== t.prefix) out.push([k, `from /${f.prefix} and to /${t.prefix} differ in size`]);
  }
  return out;
}

function compileMap(m: FtpAddressMap | undefined): ((a: FtpEndpoint) => FtpEndpoint | undefined) | undefined {
  if (m === undefined) return undefined;
  const f = parseCidr(m.from) as Cidr;
  const t = parseCidr(m.to) as Cidr;
  return (e) => {
    const a = parseAddr(e.addr);
    if (a === undefined || ((a & f.mask) >>> 0) !== f.addr) return undefined;
    return { addr: ipv4ToString((t.addr | (a & ~f.mask)) >>> 0), port: e.port };
  };
}

/** Hooks from the rule's static mapping; expectations are not registered anywhere. */
export const staticFtpHooks: FtpHooksProvider = (cfg) => {
  const c = compileMap(cfg.clientAddress);
  const s = compileMap(cfg.serverAddress);
  return {
    translateClientEndpoint: (a) => c?.(a.endpoint),
    translateServerEndpoint: (a) => s?.(a.endpoint),
    expect: () => {},
  };
};

// ---------------------------------------------------------------------------------------------
// Line parsing: a pure function of the bytes of one line so far

const SP = 0x20;
const CR = 0x0d;
const LF = 0x0a;
const TAB = 0x09;
/** Telnet "interpret as command" (RFC 854): IAC IP, IAC DM come before an ABOR (RFC 959 §4.1.3). */
const IAC = 0xff;
const isDigit = (c: number): boolean => c >= 0x30 && c <= 0x39;
const upper = (c: number): number => (c >= 0x61 && c <= 0x7a ? c - 0x20 : c);

type Why = 'none' | 'malformed' | 'noEndpoint' | 'otherFamily';

type Parse =
  | { k: 'need'; /** Line index from which bytes are undecided (= line length: nothing held). */ hold: number }
  | { k: 'pass'; why: Why }
  | { k: 'found'; kind: FtpKind; start: number; end: number; addr: string; port: number; delim: number };

const NEED = (hold: number): Parse => ({ k: 'need', hold });
const PASS = (why: Why): Parse => ({ k: 'pass', why });

/** `word` (4 bytes + SP) at the line start: 'yes', 'maybe' (prefix so far) or 'no'. */
function startsWith(b: Uint8Array, n: number, word: string): 'yes' | 'maybe' | 'no' {
  const m = Math.min(n, word.length);
  for (let i = 0; i < m; i++) if (upper(b[i]!) !== word.charCodeAt(i)) return 'no';
  return n >= word.length ? 'yes' : 'maybe';
}

/**
 * A PORT / EPRT that a lenient server could read although the line is not in the form above:
 * Telnet commands (IAC x) or blanks before the verb, a tab after it ("\xff\xf4PORT 10,…",
 * " PORT 10,…", "PORT\t10,…"). vsftpd rejects these; servers that strip Telnet commands or
 * blanks would take an address untranslated. 'yes' once anything but blanks follows the verb,
 * 'maybe' while the line could still become one. The strict form is not asked here.
 */
function disguisedCommand(b: Uint8Array, n: number, complete: boolean): 'yes' | 'maybe' | 'no' {
  let i = 0;
  // A Telnet command is IAC and a byte from 240 on; an IAC before anything else is skipped alone.
  while (i < n && (b[i] === IAC || b[i] === SP || b[i] === TAB)) i += b[i] === IAC && i + 1 < n && b[i + 1]! >= 0xf0 ? 2 : 1;
  const blank = (c: number): boolean => c === SP || c === TAB || c === CR;
  const more = complete ? 'no' : 'maybe';
  if (i >= n) return more;
  const m = Math.min(n - i, 4);
  let port = true;
  let eprt = true;
  for (let k = 0; k < m; k++) {
    const c = upper(b[i + k]!);
    port &&= c === 'PORT'.charCodeAt(k);
    eprt &&= c === 'EPRT'.charCodeAt(k);
  }
  if (!port && !eprt) return 'no';
  let j = i + 4;
  if (j > n) return more;
  if (j < n && !blank(b[j]!)) return 'no'; // another verb ("PORTS")
  for (; j < n; j++) if (!blank(b[j]!)) return 'yes';
  return more;
}

/** Index after a run of spaces. */
function skipSp(b: Uint8Array, i: number, n: number): number {
  while (i < n && b[i] === SP) i++;
  return i;
}

/** After the argument of a command: only spaces, then CR, may remain. */
function lineEnd(b: Uint8Array, i: number, n: number, complete: boolean): 'ok' | 'need' | 'bad' {
  i = skipSp(b, i, n);
  if (i < n && b[i] === CR) i++;
  if (i < n) return 'bad';
  return complete ? 'ok' : 'need';
}

/** Six comma-separated decimal numbers 0..255 from b[i] (a digit or spaces before one). */
function tuple6(b: Uint8Array, i: number, n: number, complete: boolean): { end: number; nums: number[] } | 'need' | 'bad' {
  const nums: number[] = [];
  for (let f = 0; f < 6; f++) {
    i = skipSp(b, i, n);
    if (i === n) return complete ? 'bad' : 'need';
    if (!isDigit(b[i]!)) return 'bad';
    let v = 0;
    let len = 0;
    while (i < n && isDigit(b[i]!)) {
      v = v * 10 + b[i]! - 0x30;
      if (++len > 3) return 'bad';
      i++;
    }
    if (i === n && !complete) return 'need'; // the number may go on
    if (v > 255) return 'bad';
    nums.push(v);
    if (f === 5) return { end: i, nums };
    i = skipSp(b, i, n);
    if (i === n) return complete ? 'bad' : 'need';
    if (b[i] !== 0x2c) return 'bad';
    i++;
  }
  return 'bad';
}

/** Decimal 0..65535 from b[i] up to a non-digit; 'need' when it may go on. */
function port5(b: Uint8Array, i: number, n: number, complete: boolean): { end: number; v: number } | 'need' | 'bad' {
  let v = 0;
  let len = 0;
  while (i < n && isDigit(b[i]!)) {
    v = v * 10 + b[i]! - 0x30;
    if (++len > 5) return 'bad';
    i++;
  }
  if (i === n && !complete) return 'need';
  if (len === 0 || v > 65535) return 'bad';
  return { end: i, v };
}

const quad = (x: number[]): string => `${x[0]}.${x[1]}.${x[2]}.${x[3]}`;

function parsePortCmd(b: Uint8Array, n: number, complete: boolean): Parse {
  const i = skipSp(b, 5, n);
  if (i === n) return complete ? PASS('malformed') : NEED(n);
  const t = tuple6(b, i, n, complete);
  if (t === 'need') return NEED(i);
  if (t === 'bad') return PASS('malformed');
  const e = lineEnd(b, t.end, n, complete);
  if (e === 'need') return NEED(i);
  if (e === 'bad') return PASS('malformed');
  return { k: 'found', kind: 'PORT', start: i, end: t.end, addr: quad(t.nums), port: t.nums[4]! * 256 + t.nums[5]!, delim: 0 };
}

function parseEprt(b: Uint8Array, n: number, complete: boolean): Parse {
  let i = 5;
  const need = (): Parse => (complete ? PASS('malformed') : NEED(n));
  if (i === n) return need();
  const d = b[i++]!;
  if (d < 33 || d > 126 || isDigit(d) || d === 0x2e) return PASS('malformed');
  const afStart = i;
  while (i < n && isDigit(b[i]!)) i++;
  if (i === n) return need();
  if (b[i] !== d || i === afStart) return PASS('malformed');
  if (i - afStart !== 1 || (b[afStart] !== 0x31 && b[afStart] !== 0x32)) return PASS('otherFamily');
  const start = ++i;
  if (b[afStart] === 0x32) return parseEprt6(b, n, complete, start, d);
  // IPv4 dotted quad, then the delimiter.
  const parts: number[] = [];
  let v = -1;
  let len = 0;
  for (; i < n && b[i] !== d; i++) {
    const c = b[i]!;
    if (isDigit(c)) {
      v = (v < 0 ? 0 : v * 10) + c - 0x30;
      if (++len > 3 || v > 255) return PASS('malformed');
    } else if (c === 0x2e && v >= 0 && parts.length < 3) {
      parts.push(v);
      v = -1;
      len = 0;
    } else return PASS('malformed');
  }
  if (i === n) return complete ? PASS('malformed') : NEED(start);
  if (v < 0 || parts.length !== 3) return PASS('malformed');
  parts.push(v);
  return eprtTail(b, n, complete, i + 1, start, d, quad(parts));
}

/** After an EPRT address (`addr`, from `start`) and its delimiter: the port at `i`, the delimiter, the line end. */
function eprtTail(b: Uint8Array, n: number, complete: boolean, i: number, start: number, d: number, addr: string): Parse {
  const p = port5(b, i, n, complete);
  if (p === 'need') return NEED(start);
  if (p === 'bad' || b[p.end] !== d) return PASS('malformed');
  const e = lineEnd(b, p.end + 1, n, complete);
  if (e === 'need') return NEED(start);
  if (e === 'bad') return PASS('malformed');
  return { k: 'found', kind: 'EPRT', start, end: p.end, addr, port: p.v, delim: d };
}

/** The rest of `EPRT |2|` from `start`: an IPv6 address (RFC 4291 text), the delimiter, the port. */
function parseEprt6(b: Uint8Array, n: number, complete: boolean, start: number, d: number): Parse {
  let i = start;
  while (i < n && b[i] !== d && i - start <= 45) {
    const c = b[i]!;
    if (!(isDigit(c) || (c >= 0x61 && c <= 0x66) || (c >= 0x41 && c <= 0x46) || c === 0x3a || c === 0x2e)) return PASS('malformed');
    i++;
  }
  if (i === n) return complete ? PASS('malformed') : NEED(start);
  if (b[i] !== d) return PASS('malformed');
  const bytes = parseIpv6(Buffer.from(b.subarray(start, i)).toString('latin1'));
  if (bytes === null) return PASS('malformed');
  return eprtTail(b, n, complete, i + 1, start, d, ipv6ToString(bytes));
}

function parse227(b: Uint8Array, n: number, complete: boolean): Parse {
  let i = 4;
  while (i < n && !isDigit(b[i]!)) i++;
  if (i === n) return complete ? PASS('noEndpoint') : NEED(n);
  const t = tuple6(b, i, n, complete);
  if (t === 'need') return NEED(i);
  if (t === 'bad') return PASS('malformed');
  return { k: 'found', kind: 'PASV', start: i, end: t.end, addr: quad(t.nums), port: t.nums[4]! * 256 + t.nums[5]!, delim: 0 };
}

function parse229(b: Uint8Array, n: number, complete: boolean, serverAddr: string): Parse {
  let i = 4;
  while (i < n && b[i] !== 0x28) i++;
  if (i === n) return complete ? PASS('noEndpoint') : NEED(n);
  const need = (): Parse => (complete ? PASS('malformed') : NEED(n));
  if (++i === n) return need();
  const d = b[i]!;
  if (d < 33 || d > 126 || isDigit(d)) return PASS('malformed');
  for (let k = 1; k <= 2; k++) {
    if (i + k === n) return need();
    if (b[i + k] !== d) return PASS('malformed');
  }
  const start = i + 3;
  if (start === n) return need();
  const p = port5(b, start, n, complete);
  if (p === 'need') return NEED(start);
  if (p === 'bad' || b[p.end] !== d) return PASS('malformed');
  if (p.end + 1 === n) return complete ? PASS('malformed') : NEED(start);
  if (b[p.end + 1] !== 0x29) return PASS('malformed');
  return { k: 'found', kind: 'EPSV', start, end: p.end, addr: serverAddr, port: p.v, delim: d };
}

/** The verdict on a line so far (without its LF). `ml` = the open multi-line reply's code or -1. */
function parseLine(dir: Direction, b: Uint8Array, n: number, complete: boolean, ml: number, serverAddr: string): Parse {
  if (dir === 'c2s') {
    const port = startsWith(b, n, 'PORT ');
    const eprt = startsWith(b, n, 'EPRT ');
    if (port === 'yes') return parsePortCmd(b, n, complete);
    if (eprt === 'yes') return parseEprt(b, n, complete);
    const hidden = disguisedCommand(b, n, complete);
    if (hidden === 'yes') return PASS('malformed');
    return (port === 'maybe' || eprt === 'maybe' || hidden === 'maybe') && !complete ? NEED(n) : PASS('none');
  }
  const ok = (code: number): boolean => ml === -1 || ml === code;
  const r227 = ok(227) ? startsWith(b, n, '227 ') : 'no';
  const r229 = ok(229) ? startsWith(b, n, '229 ') : 'no';
  if (r227 === 'yes') return parse227(b, n, complete);
  if (r229 === 'yes') return parse229(b, n, complete, serverAddr);
  return (r227 === 'maybe' || r229 === 'maybe') && !complete ? NEED(n) : PASS('none');
}

// ---------------------------------------------------------------------------------------------
// The agent

export function newFtpCounters() {
  return {
    /** Endpoints rewritten, by kind. */
    PORT: 0,
    EPRT: 0,
    PASV: 0,
    EPSV: 0,
    /** Endpoints found that the hook left unchanged. */
    unchanged: 0,
    /** Candidate lines that did not parse (number > 255, missing field, stray byte). */
    malformed: 0,
    /** 227/229 replies without an endpoint ("227 Logout."). */
    noEndpoint: 0,
    /** EPRT with a family other than 1 (IPv4). */
    otherFamily: 0,
    /** Candidate lines longer than maxLine, passed. */
    longLines: 0,
    /** Lines whose held bytes were released by a flush. */
    flushedLines: 0,
    /**
     * Of those, lines a hold timeout or limit released that turned out to carry an endpoint to
     * translate: it cannot be any more, so the rest never passes and the agent gives up.
     */
    splitLines: 0,
    /** A hook threw or returned an invalid endpoint. */
    hookErrors: 0,
    /** Endpoints a hook refused (FtpHooks): the agent gave up on the connection. */
    refusedEndpoints: 0,
    /**
     * PORT / EPRT commands that did not parse strictly (malformed, another family, longer than
     * maxLine): servers take some of them (vsftpd: trailing bytes, leading zeros), and passed
     * unchanged they would carry an address untranslated, so the agent gives up on the connection.
     */
    refusedCommands: 0,
  };
}
export type FtpCounters = ReturnType<typeof newFtpCounters>;

interface DirState {
  /** End of the data fed. */
  pos: number;
  /** Stream position of the current line's first byte. */
  lineStart: number;
  /** The current line's bytes while it is a candidate (≤ maxLine + 1); empty when skipping. */
  line: Buffer;
  /**
   * 'scan': the line may still be a candidate; 'skip': decided, pass up to its LF; 'forced': a
   * hold timeout or limit released part of a candidate line, which is parsed on: an endpoint
   * found in it makes the agent give up (it can no longer be translated), anything else passes.
   * 'gone': the agent gave up on the connection (an abort): everything fed after is deleted and
   * no hook is called again (no expectation is made for a connection being reset).
   */
  mode: 'scan' | 'skip' | 'forced' | 'gone';
  /** The last undecidedFrom answered. */
  undecided: number;
  /** s2c: up to the first 4 bytes of the current line (latin1), for multi-line reply tracking. */
  head: string;
  /** s2c: the code of the open multi-line reply ("227-"), -1 when none. */
  ml: number;
}

/** The state `snapshot` returns (version 1). */
export interface FtpSnapshot {
  v: 1;
  dirs: Record<Direction, Omit<DirState, 'line'> & { line: string }>;
  counters: FtpCounters;
}

const EMPTY = Buffer.alloc(0);

function freshDir(): DirState {
  return { pos: 0, lineStart: 0, line: EMPTY, mode: 'scan', undecided: 0, head: '', ml: -1 };
}

function parseAddr(s: string): number | undefined {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s);
  if (m === null) return undefined;
  let a = 0;
  for (let i = 1; i <= 4; i++) {
    const v = Number(m[i]);
    if (v > 255) return undefined;
    a = a * 256 + v;
  }
  return a;
}

export class FtpAgent implements Agent {
  readonly name = 'ftp';
  readonly counters: FtpCounters;

  rewrites(): number {
    const c = this.counters;
    return c.PORT + c.EPRT + c.PASV + c.EPSV;
  }
  private readonly st: Record<Direction, DirState>;

  constructor(
    private readonly ctx: AgentContext,
    private readonly hooks: FtpHooks,
    private readonly maxLine: number,
    snap?: { st: Record<Direction, DirState>; counters: FtpCounters },
    /** What every ftp agent of a registry adds to (the gateway's `stats().agents.ftp`). */
    private readonly total?: FtpCounters,
  ) {
    this.st = snap?.st ?? { c2s: freshDir(), s2c: freshDir() };
    this.counters = snap?.counters ?? newFtpCounters();
  }

  /** Counts in this connection's counters (they travel in its snapshot) and the registry's. */
  private count(k: keyof FtpCounters): void {
    this.counters[k]++;
    if (this.total !== undefined) this.total[k]++;
  }

  feed(dir: Direction, pos: number, data: Uint8Array): AgentOutput {
    if (!this.ctx.directions.has(dir)) return NO_EDITS;
    const st = this.st[dir];
    if (pos !== st.pos) throw new Error(`ftp: ${dir} fed at ${pos}, expected ${st.pos} (engine bug)`);
    const released = st.undecided;
    const edits: Edit[] = [];
    const n = data.length;
    if (st.mode === 'gone') {
      st.pos = st.undecided = pos + n;
      return { edits: n > 0 ? [{ at: pos, len: n, data: EMPTY }] : [], undecidedFrom: st.pos };
    }
    let i = 0;
    while (i < n) {
      const lf = data.indexOf(LF, i);
      const end = lf < 0 ? n : lf; // bytes [i, end) belong to the current line
      if (dir === 's2c' && st.head.length < 4) st.head += Buffer.from(data.buffer, data.byteOffset + i, Math.min(end - i, 4 - st.head.length)).toString('latin1');
      if (st.mode !== 'skip') {
        // Keep at most maxLine + 1 bytes: one more than allowed decides the line as too long.
        const room = this.maxLine + 1 - st.line.length;
        const take = Math.min(end - i, room);
        const part = Buffer.from(data.buffer, data.byteOffset + i, take);
        const line = st.line.length === 0 ? part : Buffer.concat([st.line, part]);
        const complete = lf >= 0 && take === end - i;
        st.pos = pos + i + take;
        const heldFrom = st.undecided;
        const giveUp = this.decide(dir, st, line, complete, edits);
        if (giveUp !== null) {
          // What this line held, and everything after it, never passes; lines decided before it
          // in this feed keep their edits (they end before it).
          const from = Math.max(released, heldFrom);
          st.pos = pos + n;
          st.mode = 'gone';
          st.line = EMPTY;
          st.undecided = st.pos;
          return { edits: [...edits, { at: from, len: st.pos - from, data: EMPTY }], undecidedFrom: st.pos, abort: giveUp };
        }
        i += take;
        if ((st.mode as DirState['mode']) !== 'skip' && !complete) { // decide() may have switched it
          if (i < end) continue; // cut at maxLine + 1: decide() switched to skip
          st.line = Buffer.from(line); // copy: the caller may reuse its buffer
          continue;
        }
      }
      // Skip (or the line just completed): up to and including the LF.
      i = lf < 0 ? n : lf + 1;
      st.pos = pos + i;
      if (lf >= 0) this.endLine(dir, st);
      else st.undecided = st.pos;
    }
    st.pos = pos + n;
    if (st.mode === 'skip') st.undecided = st.pos;
    return { edits, undecidedFrom: st.undecided };
  }

  flush(dir: Direction, reason: FlushReason): AgentOutput {
    if (!this.ctx.directions.has(dir)) return NO_EDITS;
    const st = this.st[dir];
    let edits: Edit[] = [];
    if (st.undecided < st.pos) {
      // Held bytes are the part of a candidate line that may carry an endpoint (address digits):
      // deleted, never released untranslated (under NAT they are the address the NAT hides). At
      // the end of the stream the line is over; mid-stream (timeout, limit) it is parsed on, so
      // that an endpoint it turns out to carry never passes (the agent gives up).
      this.count('flushedLines');
      edits = [{ at: st.undecided, len: st.pos - st.undecided, data: EMPTY }];
      if (reason === 'fin' || reason === 'rst') {
        st.mode = 'skip';
        st.line = EMPTY;
      } else st.mode = 'forced';
    }
    st.undecided = st.pos;
    return { edits, undecidedFrom: st.pos };
  }

  /**
   * Cluster takeover after a gap (types.ts): where the next line starts is unknown, so the rest
   * of the current line passes unexamined (skip to its LF), as after a line too long.
   */
  resync(dir: Direction, pos: number): void {
    const gone = this.st[dir].mode === 'gone';
    this.st[dir] = { pos, lineStart: pos, line: EMPTY, mode: gone ? 'gone' : 'skip', undecided: pos, head: 'xxxx', ml: -1 };
  }

  snapshot(): FtpSnapshot {
    const d = (s: DirState) => ({ ...s, line: s.line.toString('base64') });
    return { v: 1, dirs: { c2s: d(this.st.c2s), s2c: d(this.st.s2c) }, counters: { ...this.counters } };
  }

  /**
   * Decides the current line so far (`st.pos` is the end of `line`) if it can be; the abort
   * reason when the agent gives up on the connection instead (a forced line that carries an
   * endpoint, a refused endpoint, a PORT / EPRT that does not parse), else null.
   */
  private decide(dir: Direction, st: DirState, line: Buffer, complete: boolean, edits: Edit[]): string | null {
    // Only the first maxLine bytes are looked at; one byte more (not the LF) makes a line that is
    // still undecided there a long line. Parsing is monotone in the prefix, so this does not
    // depend on where the chunks end.
    const long = line.length > this.maxLine;
    let v = parseLine(dir, line, long ? this.maxLine : line.length, complete && !long, st.ml, this.ctx.server.addr);
    // A command still a PORT / EPRT candidate at maxLine is one too long to read (c2s).
    const command = dir === 'c2s' && (v.k === 'need' || (v.k === 'pass' && v.why !== 'none'));
    if (v.k === 'need' && long) {
      this.count('longLines');
      v = PASS('none');
    }
    if (v.k === 'need') {
      st.undecided = Math.max(st.undecided, st.lineStart + v.hold);
      return null;
    }
    const forced = st.mode === 'forced';
    st.mode = 'skip';
    st.line = EMPTY;
    st.undecided = st.pos;
    if (v.k === 'pass') {
      if (v.why !== 'none') this.count(v.why);
      if (!command) return null;
      this.count('refusedCommands');
      return 'ftp:malformed-command';
    }
    // Part of a forced line went as it stood: an endpoint cannot get new text, nor be expected.
    if (forced) {
      this.count('splitLines');
      return 'ftp:split-command';
    }
    const rep = this.translate(dir, v);
    if (rep === null) {
      this.count('refusedEndpoints');
      return 'ftp:refused-endpoint';
    }
    if (rep === undefined) return null;
    this.count(v.kind);
    edits.push({ at: st.lineStart + v.start, len: v.end - v.start, data: Buffer.from(rep, 'latin1') });
    return null;
  }

  private endLine(dir: Direction, st: DirState): void {
    if (dir === 's2c') {
      // A multi-line reply ends at a line of its code followed by anything but '-' (a bare
      // "211" line included, as Python's ftplib reads it; RFC 959 writes a space).
      const m = /^(\d{3})([^]?)/.exec(st.head);
      if (m !== null) {
        const code = Number(m[1]);
        if (st.ml === -1 && m[2] === '-') st.ml = code;
        else if (st.ml === code && m[2] !== '-') st.ml = -1;
      }
    }
    st.lineStart = st.pos;
    st.undecided = st.pos;
    st.line = EMPTY;
    st.head = '';
    st.mode = 'scan';
  }

  /**
   * Call the hooks for an endpoint; the replacement text (the caller counts it), undefined to
   * leave it, or null when a hook refused it.
   */
  private translate(dir: Direction, f: Extract<Parse, { k: 'found' }>): string | undefined | null {
    const original: FtpEndpoint = { addr: f.addr, port: f.port };
    const a: FtpAnnouncement = { kind: f.kind, endpoint: { ...original }, ctx: this.ctx };
    let t: FtpEndpoint | undefined | null;
    try {
      t = dir === 'c2s' ? this.hooks.translateClientEndpoint(a) : this.hooks.translateServerEndpoint(a);
    } catch {
      this.count('hookErrors');
      t = undefined;
    }
    if (t === null) return null;
    let addr = t?.addr;
    // The announced address must be of the family written (EPRT |2| takes IPv6, the rest IPv4).
    const v6 = f.addr.includes(':');
    if (t !== undefined && ((v6 ? parseIpv6(t.addr) === null : parseAddr(t.addr) === undefined) || !Number.isInteger(t.port) || t.port < 0 || t.port > 65535)) {
      this.count('hookErrors');
      t = undefined;
      addr = undefined;
    }
    const announced: FtpEndpoint = t === undefined ? original : { addr: addr!, port: t.port };
    try {
      this.hooks.expect({
        flowId: this.ctx.flowId,
        kind: f.kind,
        opener: dir === 'c2s' ? 'server' : 'client',
        openerAddr: dir === 'c2s' ? this.ctx.server.addr : this.ctx.client.addr,
        announced,
        original,
      });
    } catch {
      this.count('hookErrors');
    }
    const same = f.kind === 'EPSV' ? announced.port === original.port : announced.addr === original.addr && announced.port === original.port;
    if (same) {
      this.count('unchanged');
      return undefined;
    }
    const [a1, a2, a3, a4] = announced.addr.split('.').map(Number) as [number, number, number, number];
    switch (f.kind) {
      case 'PORT':
      case 'PASV':
        return `${a1},${a2},${a3},${a4},${announced.port >> 8},${announced.port & 255}`;
      case 'EPRT':
        return `${announced.addr}${String.fromCharCode(f.delim)}${announced.port}`;
      case 'EPSV':
        return `${announced.port}`;
    }
  }
}

function maxLineOf(cfg: FtpConfig | undefined): number {
  return cfg?.maxLine ?? FTP_DEFAULT_MAX_LINE;
}

function checkCfg(cfg: unknown): FtpConfig {
  const p = ftpConfigProblems(cfg);
  if (p.length > 0) throw new Error(`ftp: ${p[0]![0] === '' ? '' : `${p[0]![0]}: `}${p[0]![1]}`);
  return (cfg ?? {}) as FtpConfig;
}

function restoreDir(x: unknown, dir: Direction): DirState {
  const bad = (why: string): never => {
    throw new Error(`ftp: bad snapshot (${dir}: ${why})`);
  };
  const o = x as Record<string, unknown> | null;
  if (typeof o !== 'object' || o === null) return bad('not an object');
  const { pos, lineStart, line, mode, undecided, head, ml } = o;
  if (![pos, lineStart, undecided].every((v) => Number.isSafeInteger(v) && (v as number) >= 0)) return bad('positions');
  if (typeof line !== 'string' || (mode !== 'scan' && mode !== 'skip' && mode !== 'forced' && mode !== 'gone') || typeof head !== 'string' || head.length > 4) return bad('line');
  if (!Number.isInteger(ml) || (ml as number) < -1 || (ml as number) > 999) return bad('ml');
  const l = Buffer.from(line, 'base64');
  if ((lineStart as number) + l.length > (pos as number) || (undecided as number) > (pos as number)) return bad('line length');
  return { pos: pos as number, lineStart: lineStart as number, line: l, mode, undecided: undecided as number, head, ml: ml as number };
}

/** The ftp agent factory; hooks per connection come from `hooksFor` (default: static mapping). */
export function createFtp(hooksFor: FtpHooksProvider = staticFtpHooks, total?: FtpCounters): AgentFactory<FtpConfig | undefined> {
  return {
    name: 'ftp',
    create(cfg, ctx) {
      const c = checkCfg(cfg);
      return new FtpAgent(ctx, hooksFor(c, ctx), maxLineOf(c), undefined, total);
    },
    restore(cfg, ctx, state) {
      const c = checkCfg(cfg);
      const s = state as Partial<FtpSnapshot> | null;
      if (typeof s !== 'object' || s === null || s.v !== 1 || typeof s.dirs !== 'object' || typeof s.counters !== 'object') {
        throw new Error('ftp: bad snapshot (expected { v: 1, dirs, counters })');
      }
      const st = { c2s: restoreDir(s.dirs.c2s, 'c2s'), s2c: restoreDir(s.dirs.s2c, 's2c') };
      return new FtpAgent(ctx, hooksFor(c, ctx), maxLineOf(c), { st, counters: { ...newFtpCounters(), ...s.counters } }, total);
    },
  };
}

export const ftpFactory = createFtp();
