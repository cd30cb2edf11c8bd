/**
 * What to do with one message, decided from its complete header section: framing normalised
 * (./framing.ts), configured header edits, and the *body method* — how a body whose length may
 * change is framed on the way out. Pure: `decide*` returns a decision, `render` turns it into
 * unit replacements, refusing what it cannot do on bytes a hold timeout already released.
 *
 * Body method per message (RFC 9112 §6; a body is rewritten only when its direction has rules
 * and it is identity-coded):
 * - Content-Length n ≤ maxBufferedBody (and no Expect: 100-continue), the whole body arrived
 *   with the header section: `fixlen` — header and body are held whole and Content-Length is
 *   fixed. Works for any version; no framing change. A body still to come is held this way only
 *   when neither of the next two applies (see DecideOpts.bodyInHand: Nagle's algorithm).
 * - Content-Length, larger: `chunked` — Content-Length replaced by Transfer-Encoding: chunked
 *   when the recipient is known to speak HTTP/1.1: a response whose request and status line are
 *   both 1.1 (§6.1: no Transfer-Encoding unless the request indicates 1.1), a request once the
 *   server answered 1.1 on this connection or `assumeHttp11Server` is set (§6.1: a client MUST
 *   NOT send Transfer-Encoding unless it knows the server handles 1.1).
 * - Else, a response after which the connection closes anyway (§9.3 persistence: `close`
 *   option, or HTTP/1.0 without keep-alive on either side): `toclose` — Content-Length removed,
 *   the body ends when the server closes (§6.3 point 8). HTTP/1.0 keep-alive requests are made
 *   to close (when responses are rewritten) so that this applies to their responses.
 * - Else the body cannot be rewritten: the message is refused (counted: refused.noFraming,
 *   refused.expect), or with `unrewritable: pass` it passes unchanged (passNoFraming, passExpect);
 *   the same for content-coded and transfer-coded bodies.
 * - Chunked bodies stay chunked (`rechunk`); close-delimited ones stay so (`close`).
 * With response rules, requests lose Range / If-Range (the whole representation is asked for,
 * so no original bytes of a rewritten resource are delivered in pieces) and, unless
 * `identity: false`, ask for `Accept-Encoding: identity` (and lose TE); with `decode`, they
 * offer only gzip, deflate and identity instead, and a body coded with one of those is decoded,
 * rewritten and coded again (./coded-body.ts) with the same methods.
 */

import { fieldUnits, fieldValues, type ParsedBlock } from './block.js';
import { OWNED_FIELDS, type ResolvedHttpConfig } from './config.js';
import type { CountKey, RefuseReason } from './counters.js';
import { EMPTY } from './edits.js';
import { requestFraming, responseFraming, type BodyFraming, type Framing } from './framing.js';
import { connectionOptions, fieldKey, isToken } from './syntax.js';
import { codingOf, type Coding } from '../coding/codec.js';

/** What a response needs to know of its request. Plain data (it is queued and snapshotted). */
export interface ReqInfo {
  method: string;
  v11: boolean;
  /** The server closes after answering (close option, or HTTP/1.0 without keep-alive). */
  close: boolean;
  /** CONNECT, or a request with Upgrade: the connection may become a tunnel. */
  tunnel: 'connect' | 'upgrade' | null;
  /**
   * Expect: 100-continue with a body to come ('yes'); 'abandoned' once a final answer came
   * before any of that body (./stream.ts): the answer is the connection's last.
   */
  expect: 'no' | 'yes' | 'abandoned';
}

/**
 * A response with no request waiting for it (sent ahead of one, or one more than was asked for)
 * is read as the answer to a GET, and is the connection's last (decideResponse): the client reads
 * it as the answer to its next request, whatever that is, so what the server sends after it
 * could be paired one way here and another way there.
 */
export const UNPAIRED: Readonly<ReqInfo> = Object.freeze({ method: 'GET', v11: true, close: false, tunnel: null, expect: 'no' });

export type BodyMethod = 'none' | 'pass' | 'fixlen' | 'chunked' | 'rechunk' | 'close' | 'toclose';
export type PassWhy = 'passEncoded' | 'passTransferCoded' | 'passNoFraming' | 'passExpect' | 'passReleased';
/** The refusal of a body the rules cannot rewrite, with `unrewritable: refuse` (the default). */
export const PASS_REFUSAL: Readonly<Record<PassWhy, RefuseReason>> = {
  passEncoded: 'encoded',
  passTransferCoded: 'transferCoded',
  passNoFraming: 'noFraming',
  passExpect: 'expect',
  passReleased: 'released',
};
export type After = 'start' | 'await' | 'tunnel' | 'drop';

interface Action {
  data: Buffer;
  /** norm: required for an unambiguous message; frame: the body method needs it; edit: configured. */
  kind: 'norm' | 'frame' | 'edit';
}

export interface Decision {
  error?: RefuseReason;
  body: BodyFraming;
  method: BodyMethod;
  passWhy?: PassWhy;
  /** The body's content coding, decoded to be rewritten (`decode`); absent: identity. */
  coding?: Coding;
  actions: Map<number, Action>;
  /** Lines added before the empty line, with their kind. */
  adds: { data: Buffer; kind: Action['kind'] }[];
  after: After;
  /** Requests: what the response will need. */
  req?: ReqInfo;
  /** Counters for the normalisations and header edits (added once, when committed). */
  counts: CountKey[];
}

export interface DecideOpts {
  /** Do not hold the body (a hold timeout flushed, or the header was partly released). */
  noFixlen?: boolean;
  /** Coded bodies are not decoded (the gateway's maxDecoding is reached): as without `decode`. */
  noDecode?: boolean;
  /** Framing cannot be changed (its Content-Length line was released): pass instead. */
  noReframe?: boolean;
  /**
   * Body bytes that arrived with the header section. A Content-Length body that did not all
   * arrive with it is streamed (chunked, close-delimited) where the peer allows, not held: a
   * sender using Nagle's algorithm waits for the ACK of a small header segment before it sends
   * the rest, and the receiver cannot ACK what is held here.
   */
  bodyInHand?: number;
}

const line = (name: string, value: string): Buffer => Buffer.from(`${name}: ${value}\r\n`, 'latin1');
const TE_CHUNKED = line('Transfer-Encoding', 'chunked');
// Made once: read-only like TE_CHUNKED (a message's plan only reads them).
const AE_IDENTITY = line('Accept-Encoding', 'identity');
const CONNECTION_CLOSE = line('Connection', 'close');
/** host:port, the host a reg-name, an IPv4 address or an IPv6 literal in brackets (RFC 9112 §3.2.3). */
const AUTHORITY_FORM = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]+):[0-9]{1,5}$/;
const ENCODING_FIELDS: ReadonlySet<string> = new Set(['accept-encoding', 'te']);
const ACCEPT_ENCODING: ReadonlySet<string> = new Set(['accept-encoding']);
const TE_FIELD: ReadonlySet<string> = new Set(['te']);
const RANGE_FIELDS: ReadonlySet<string> = new Set(['range', 'if-range']);
const CONNECTION_FIELDS: ReadonlySet<string> = new Set(['connection', 'keep-alive']);
const ACCEPT_RANGES: ReadonlySet<string> = new Set(['accept-ranges']);
/** Fields no trailer carries: framing, Host, and what connection management reads (RFC 9110 §6.5.1). */
const TRAILER_FRAMING: ReadonlySet<string> = new Set([...OWNED_FIELDS, 'host']);

/** The decision framing alone makes (normalisation of Content-Length / Transfer-Encoding). */
function base(f: Framing): Decision {
  const d: Decision = { body: f.body, method: 'none', actions: new Map(), adds: [], after: 'start', counts: [] };
  if (f.error !== undefined) d.error = f.error;
  for (const x of f.drop) {
    d.actions.set(x.unit, { data: EMPTY, kind: 'norm' });
    // A Transfer-Encoding line dropped is part of the one canonical line (counted once below).
    if (x.why !== 'transferEncodingFixed') d.counts.push(x.why);
  }
  if (f.clFix !== undefined) {
    d.actions.set(f.clFix.unit, { data: line('Content-Length', String(f.clFix.n)), kind: 'norm' });
    d.counts.push('contentLengthFixed');
  }
  if (f.teFix !== undefined) {
    d.actions.set(f.teFix.unit, { data: f.teFix.value === 'chunked' ? TE_CHUNKED : line('Transfer-Encoding', f.teFix.value), kind: 'norm' });
    d.counts.push('transferEncodingFixed');
  }
  return d;
}

/**
 * Remove every line (not already acted on) whose name is one of `names` (`fieldKey` forms) as an
 * application behind a CGI-style gateway reads it: `X_Auth_Role` and `X.Auth.Role` are
 * HTTP_X_AUTH_ROLE there like `X-Auth-Role` (gunicorn's WSGI environ; Puma CVE-2024-45614;
 * lighttpd), so a field the rule removes or sets would reach it under another spelling.
 */
function removeFields(pb: ParsedBlock, d: Decision, names: ReadonlySet<string>, kind: Action['kind'], count?: CountKey): number {
  let n = 0;
  pb.units.forEach((u, i) => {
    if (u.kind === 'field' && names.has((u.key ??= fieldKey(u.name))) && !d.actions.has(i)) {
      d.actions.set(i, { data: EMPTY, kind });
      if (count !== undefined) d.counts.push(count);
      n++;
    }
  });
  return n;
}

function addLines(d: Decision, data: Buffer, kind: Action['kind']): void {
  if (data.length === 0) return;
  d.adds.push({ data, kind });
  if (kind === 'edit') for (let i = data.indexOf(0x0a); i >= 0; i = data.indexOf(0x0a, i + 1)) d.counts.push('headersAdded');
}

/**
 * Body rewriting possible at all: rules present and the body identity-coded, or (with `decode`)
 * coded once with a coding the agent decodes: that coding.
 */
function rewritable(pb: ParsedBlock, f: Framing, rules: unknown, decode: boolean): PassWhy | 'yes' | 'no' | Coding {
  if (rules === null) return 'no';
  if (!(f.codings.length === 0 || (f.codings.length === 1 && f.codings[0] === 'chunked'))) return 'passTransferCoded';
  const ce = listItems(fieldValues(pb, 'content-encoding'))
    .map((s) => s.toLowerCase())
    .filter((s) => s !== 'identity');
  if (ce.length === 0) return 'yes';
  const c = ce.length === 1 && decode ? codingOf(ce[0]!) : undefined;
  return c ?? 'passEncoded';
}

/** The items of comma-separated list fields (RFC 9110 §5.6.1), empty ones left out. */
function listItems(values: readonly string[]): string[] {
  return values
    .flatMap((v) => v.split(','))
    .map((s) => s.trim())
    .filter((s) => s !== '');
}

/** A weight (RFC 9110 §12.4.2): `q=` 0 to 1 with up to three decimals, the item's only parameter here. */
const WEIGHT = /^\s*q\s*=\s*(0(?:\.\d{0,3})?|1(?:\.0{0,3})?)\s*$/i;

/**
 * Accept-Encoding offering only what `decode` handles (RFC 9110 §12.5.3): other codings are
 * taken out; "*" with a weight above 0 becomes gzip and deflate with that weight (those not
 * listed), "*;q=0" stays (it only forbids); identity when nothing is left. A request without the
 * field gets `identity`: without it any coding is acceptable (a server may pick br).
 */
function acceptDecodable(pb: ParsedBlock, d: Decision): void {
  const units = fieldUnits(pb, 'accept-encoding');
  if (units.length === 0) {
    addLines(d, AE_IDENTITY, 'edit');
    d.counts.push('acceptEncodingFiltered');
    return;
  }
  const items = listItems(fieldValues(pb, 'accept-encoding'));
  const name = (item: string): string => item.split(';')[0]!.trim().toLowerCase();
  const listed = new Set(items.map(name));
  const keep: string[] = [];
  let changed = false;
  for (const item of items) {
    const n = name(item);
    if (n === 'identity' || codingOf(n) !== undefined) keep.push(item);
    else if (n === '*') {
      const params = item.slice(item.indexOf(';') + 1);
      const q = item.includes(';') ? WEIGHT.exec(params)?.[1] : undefined;
      if (q !== undefined && Number(q) === 0) {
        keep.push(item); // it only forbids
        continue;
      }
      changed = true;
      if (item.includes(';') && q === undefined) continue; // a weight that does not parse: left out
      for (const c of ['gzip', 'deflate']) {
        if (listed.has(c)) continue;
        listed.add(c);
        keep.push(q === undefined ? c : `${c};q=${q}`);
      }
    } else changed = true;
  }
  if (!changed) return;
  removeFields(pb, d, ACCEPT_ENCODING, 'edit');
  addLines(d, line('Accept-Encoding', keep.length > 0 ? keep.join(', ') : 'identity'), 'edit');
  d.counts.push('acceptEncodingFiltered');
}

/** Replace every Content-Length line by `first` (EMPTY = remove them all). */
function replaceCl(pb: ParsedBlock, d: Decision, first: Buffer): void {
  fieldUnits(pb, 'content-length').forEach((u, i) => d.actions.set(u, { data: i === 0 ? first : EMPTY, kind: 'frame' }));
}

export function decideRequest(pb: ParsedBlock, cfg: ResolvedHttpConfig, server11: boolean, o: DecideOpts = {}): Decision {
  const f = requestFraming(pb);
  const d = base(f);
  if (d.error !== undefined) return d;
  if (fieldUnits(pb, 'host').length > 1) return { ...d, error: 'multipleHost' };
  const r = pb.request!;
  const v11 = r.version.minor >= 1;
  const conn = connectionOptions(fieldValues(pb, 'connection')) ?? new Set<string>();
  const side = cfg.request;
  removeFields(pb, d, side.remove, 'edit', 'headersRemoved');
  addLines(d, side.add, 'edit');
  let forcedClose = false;
  if (cfg.response.replace !== null) {
    if (cfg.acceptEncoding === 'identity' && !cfg.request.remove.has('accept-encoding')) {
      removeFields(pb, d, ENCODING_FIELDS, 'edit');
      addLines(d, AE_IDENTITY, 'edit');
      d.counts.push('identityRequested');
    } else if (cfg.acceptEncoding === 'decodable') {
      removeFields(pb, d, TE_FIELD, 'edit');
      if (!cfg.request.remove.has('accept-encoding')) acceptDecodable(pb, d);
    }
    if (removeFields(pb, d, RANGE_FIELDS, 'edit') > 0) d.counts.push('rangeRemoved');
    if (!v11 && conn.has('keep-alive') && !conn.has('close')) {
      removeFields(pb, d, CONNECTION_FIELDS, 'frame');
      addLines(d, CONNECTION_CLOSE, 'frame');
      d.counts.push('keepAliveClosed');
      forcedClose = true;
    }
  }
  // CONNECT names its target in authority form (RFC 9112 §3.2.3): any other is no tunnel
  // request but a malformed request line (a client sending `CONNECT /x` reads a 2xx as an
  // ordinary answer, and its body would pass as tunnel bytes). Upgrade is asked for only with
  // the `upgrade` connection option (RFC 9110 §7.8): without it a 101 is unexpected.
  if (r.method === 'CONNECT' && !AUTHORITY_FORM.test(r.target)) return { ...d, error: 'startLine' };
  const tunnel = r.method === 'CONNECT' ? 'connect' : fieldUnits(pb, 'upgrade').length > 0 && conn.has('upgrade') ? 'upgrade' : null;
  const expect = fieldValues(pb, 'expect').some((v) => /(^|,)[ \t]*100-continue[ \t]*(,|$)/i.test(v));
  const body = f.body.kind === 'chunked' || (f.body.kind === 'length' && f.body.n > 0);
  d.req = { method: r.method, v11, close: forcedClose || conn.has('close') || (!v11 && !conn.has('keep-alive')), tunnel, expect: expect && body ? 'yes' : 'no' };
  d.after = tunnel !== null ? 'await' : 'start';
  chooseBody(pb, f, d, cfg.request.replace, cfg.decode && o.noDecode !== true, o, {
    fixlen: !expect,
    fixlenMax: cfg.maxBufferedBody,
    chunked: v11 && (server11 || cfg.assumeHttp11Server),
    toclose: false,
    tooLarge: expect ? 'passExpect' : 'passNoFraming',
  });
  guardConnection(pb, d, side.remove);
  return d;
}

export function decideResponse(pb: ParsedBlock, cfg: ResolvedHttpConfig, req: ReqInfo, o: DecideOpts = {}): Decision {
  const st = pb.status!;
  const s = st.status;
  const f = responseFraming(pb, { head: req.method === 'HEAD', connect: req.tunnel === 'connect' });
  const d = base(f);
  if (d.error !== undefined) return d;
  // A 1xx is a response too: its fields reach the client (curl stores the Set-Cookie of a 103
  // or a 101; browsers that of a WebSocket handshake's 101).
  if (s < 200) removeFields(pb, d, cfg.response.remove, 'edit', 'headersRemoved');
  if (s === 101) {
    if (req.tunnel !== 'upgrade') return { ...d, error: 'unexpected101' };
    d.after = 'tunnel';
    return d;
  }
  if (s < 200) return d;
  const v11 = st.version.minor >= 1;
  const conn = connectionOptions(fieldValues(pb, 'connection')) ?? new Set<string>();
  const rules = cfg.response.replace;
  if (s === 206 && rules !== null && f.body.kind !== 'none') return { ...d, error: 'range' };
  removeFields(pb, d, cfg.response.remove, 'edit', 'headersRemoved');
  addLines(d, cfg.response.add, 'edit');
  const how = rewritable(pb, f, rules, cfg.decode && o.noDecode !== true);
  if (req.tunnel !== 'connect' && (how === 'yes' || how === 'gzip' || how === 'deflate')) describeRewritten(pb, d, req.method === 'HEAD' || s === 304);
  if (req.tunnel === 'connect' && s >= 200 && s < 300) d.after = 'tunnel';
  const unpaired = req === UNPAIRED;
  // The connection's last answer: to nothing asked (UNPAIRED), or a final one before the body of
  // a request that waited on 100-continue (./stream.ts `abandonExpect`).
  const last = unpaired || req.expect === 'abandoned';
  const closes = last || req.close || conn.has('close') || (!v11 && !conn.has('keep-alive'));
  chooseBody(pb, f, d, rules, cfg.decode && o.noDecode !== true, o, { fixlen: true, fixlenMax: cfg.maxBufferedBody, chunked: req.v11 && v11, toclose: closes, tooLarge: 'passNoFraming' });
  if (d.method === 'toclose' || last) {
    // The body now ends with the connection, or the answer is the connection's last: say so,
    // without a keep-alive beside it.
    removeFields(pb, d, CONNECTION_FIELDS, 'frame');
    addLines(d, CONNECTION_CLOSE, 'frame');
  }
  // What the server sends after its last answer is deleted (afterCloseBytes): a HEAD's answer
  // taken for a GET's would make the next answer's body a message of its own here.
  if (last) d.after = 'drop';
  guardConnection(pb, d, cfg.response.remove);
  return d;
}

/** Fields no connection option may name: the framing ones. */
const FRAMING_FIELDS: ReadonlySet<string> = new Set(['content-length', 'transfer-encoding', 'host', 'connection']);

/**
 * Connection options naming a field the rule removes or sets, or a framing field, are dropped
 * (the Connection lines rewritten without them): the next hop removes the fields a Connection
 * option names (RFC 9110 §7.6.1), so `Connection: close, X-Auth-Role` would take away the line
 * setHeaders added. Read as leniently as those next hops read it (Apache's mod_proxy splits at
 * commas, whitespace and ";", Varnish at commas): a piece that is no token goes too, so that an
 * invalid list does not carry a name past this.
 */
function guardConnection(pb: ParsedBlock, d: Decision, managed: ReadonlySet<string>): void {
  const units = fieldUnits(pb, 'connection').filter((u) => !d.actions.has(u));
  if (units.length === 0) return;
  const pieces = units.flatMap((u) => pb.units[u]!.value.split(/[\s,;]+/)).filter((p) => p !== '');
  const drop = (p: string): boolean => {
    if (!isToken(p)) return true;
    const k = fieldKey(p);
    return managed.has(k) || FRAMING_FIELDS.has(k);
  };
  if (!pieces.some(drop)) return;
  const keep = pieces.filter((p) => !drop(p));
  units.forEach((u, i) => d.actions.set(u, { data: i === 0 && keep.length > 0 ? line('Connection', keep.join(', ')) : EMPTY, kind: 'edit' }));
  d.counts.push('connectionOptionsRemoved');
}

/**
 * Metadata of a representation the rules rewrite (counted once per message): a bodiless answer
 * (HEAD, 304) loses the original Content-Length, an ETag becomes weak, Accept-Ranges goes (see
 * HttpCounters.validatorsChanged). nginx's sub_filter does the same to ETag and Accept-Ranges.
 */
function describeRewritten(pb: ParsedBlock, d: Decision, bodiless: boolean): void {
  let n = 0;
  if (bodiless) {
    for (const u of fieldUnits(pb, 'content-length')) {
      d.actions.set(u, { data: EMPTY, kind: 'edit' });
      n++;
    }
  }
  n += removeFields(pb, d, ACCEPT_RANGES, 'edit');
  for (const u of fieldUnits(pb, 'etag')) {
    const v = pb.units[u]!.value;
    if (d.actions.has(u) || v.startsWith('W/')) continue;
    d.actions.set(u, { data: line(pb.units[u]!.rawName, `W/${v}`), kind: 'edit' });
    n++;
  }
  if (n > 0) d.counts.push('validatorsChanged');
}

function chooseBody(
  pb: ParsedBlock,
  f: Framing,
  d: Decision,
  rules: unknown,
  decode: boolean,
  o: DecideOpts,
  can: { fixlen: boolean; fixlenMax: number; chunked: boolean; toclose: boolean; tooLarge: PassWhy },
): void {
  const b = f.body;
  if (b.kind === 'none') return;
  const rw = rewritable(pb, f, rules, decode);
  if (rw === 'gzip' || rw === 'deflate') d.coding = rw;
  else if (rw !== 'yes') {
    d.method = 'pass';
    if (rw !== 'no') d.passWhy = rw;
    return;
  }
  // A body still to come is streamed rather than held when the peer accepts it (DecideOpts.bodyInHand).
  const streamRest = b.kind === 'length' && o.bodyInHand !== undefined && b.n > o.bodyInHand && (can.chunked || can.toclose);
  if (b.kind === 'chunked') d.method = 'rechunk';
  else if (b.kind === 'close') d.method = 'close';
  else if (can.fixlen && !o.noFixlen && !o.noReframe && b.n <= can.fixlenMax && !streamRest) d.method = 'fixlen';
  else if (o.noReframe) {
    d.method = 'pass';
    d.passWhy = 'passReleased';
  } else if (can.chunked) {
    d.method = 'chunked';
    replaceCl(pb, d, TE_CHUNKED);
  } else if (can.toclose) {
    d.method = 'toclose';
    replaceCl(pb, d, EMPTY);
    d.after = 'drop';
  } else {
    d.method = 'pass';
    d.passWhy = can.tooLarge;
  }
}

/** Decision for a trailer section: framing fields are removed (RFC 9110 §6.5.1). */
export function decideTrailers(pb: ParsedBlock, remove: ReadonlySet<string>): Decision {
  const d: Decision = { body: { kind: 'none' }, method: 'none', actions: new Map(), adds: [], after: 'start', counts: [] };
  removeFields(pb, d, TRAILER_FRAMING, 'norm', 'trailerFramingRemoved');
  // A field the rule removes (or sets) does not cross as a trailer either: recipients that merge
  // trailers into the header fields would take it (CVE-2013-5704, Apache's RequestHeader unset).
  removeFields(pb, d, remove, 'edit', 'headersRemoved');
  return d;
}

export interface Rendered {
  /** Unit replacements, in stream order, none before `released`. */
  ops: { at: number; len: number; data: Buffer }[];
  /** A normalisation fell on released bytes: the message must be refused. */
  refuse: boolean;
  /** A framing change fell on released bytes: decide again with noReframe. */
  frameLost: boolean;
  /** Configured edits that fell on released bytes (dropped). */
  lost: number;
}

/**
 * Unit replacements for a decision. Units starting before `released` (already forwarded by a
 * hold timeout) cannot change. `fixlen` = the new Content-Length for a fixlen body.
 */
export function render(pb: ParsedBlock, d: Decision, released: number, fixlen?: number): Rendered {
  const r: Rendered = { ops: [], refuse: false, frameLost: false, lost: 0 };
  const actions = new Map(d.actions);
  if (fixlen !== undefined) replaceClFixlen(pb, actions, fixlen);
  pb.units.forEach((u, i) => {
    let data: Buffer;
    let kind: Action['kind'];
    const a = actions.get(i);
    if (u.kind === 'end' && d.adds.length > 0) {
      data = Buffer.concat([...d.adds.map((x) => x.data), Buffer.from('\r\n')]);
      kind = d.adds.some((x) => x.kind === 'frame') ? 'frame' : 'edit';
    } else if (a !== undefined) {
      data = a.data;
      kind = a.kind;
    } else if (u.norm !== null) {
      data = u.norm;
      kind = 'norm';
    } else return;
    if (u.at < released) {
      if (u.norm !== null || kind === 'norm') r.refuse = true;
      else if (kind === 'frame') r.frameLost = true;
      else r.lost++;
      return;
    }
    r.ops.push({ at: u.at, len: u.len, data });
  });
  return r;
}

function replaceClFixlen(pb: ParsedBlock, actions: Map<number, Action>, n: number): void {
  fieldUnits(pb, 'content-length').forEach((u, i) => actions.set(u, { data: i === 0 ? line('Content-Length', String(n)) : EMPTY, kind: 'frame' }));
}
