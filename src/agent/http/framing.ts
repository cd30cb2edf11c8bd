/**
 * Message body length (RFC 9112 §6.3) of a parsed header section, and the framing normalisation
 * that makes it unambiguous before the message is forwarded (RFC 9112 §11.2, request smuggling):
 * - Transfer-Encoding and Content-Length together: Content-Length removed (§6.3 point 3: "An
 *   intermediary that chooses to forward the message MUST first remove the received
 *   Content-Length field").
 * - Content-Length repeated with one value ("42, 42", two lines) or with leading zeros: rewritten
 *   to one plain value (RFC 9110 §8.6 allows replacing it with a single instance); differing or
 *   invalid values are refused (§6.3 point 5).
 * - Transfer-Encoding in HTTP/1.0 refused (§6.1: "MUST treat the message as if the framing is
 *   faulty"); in a request it must be chunked alone (§6.3 point 4 asks for chunked last; other
 *   codings before it are read otherwise by servers that compare the value with "chunked":
 *   gunicorn 20–21 took `gzip, chunked` for no body, and what followed for a request — TE.0
 *   smuggling); in a response chunked must be alone where it is present (Python's http.client
 *   and Node's llhttp read `gzip, chunked` and `chunked,` as close-delimited); chunked takes no
 *   parameters (RFC 9112 §7.1). What is accepted goes out as one canonical line (the parsed
 *   codings: `Transfer-Encoding: chunked`) instead of the lines as received (`chunked,`, a
 *   trailing tab, several lines).
 * - Responses without a body (1xx, 204, 304, HEAD, 2xx to CONNECT; §6.3 points 1, 2) lose any
 *   Transfer-Encoding (and Content-Length where it is forbidden: 1xx, 204, 2xx to CONNECT), so
 *   that no lax client reads a body after them.
 * Pure: units in, decisions out.
 */

import { fieldUnits, fieldValues, type ParsedBlock } from './block.js';
import type { RefuseReason } from './counters.js';
import { parseContentLength, parseTransferCodings } from './syntax.js';

export type BodyFraming = { kind: 'none' } | { kind: 'length'; n: number } | { kind: 'chunked' } | { kind: 'close' };

export interface Framing {
  body: BodyFraming;
  /** Transfer codings as listed (lower case); [] without Transfer-Encoding. */
  codings: string[];
  /** Units removed, with the counter that says why. */
  drop: { unit: number; why: 'teWithCl' | 'contentLengthFixed' | 'bodylessFraming' | 'transferEncodingFixed' }[];
  /** The Content-Length unit rewritten to one plain value. */
  clFix?: { unit: number; n: number };
  /** The Transfer-Encoding unit rewritten to one canonical line (the others dropped). */
  teFix?: { unit: number; value: string };
  error?: RefuseReason;
}

const NONE: BodyFraming = { kind: 'none' };

/**
 * Content-Length of a message: refused when invalid, or (`bodiless`: a HEAD or 304 answer, whose
 * Content-Length is the representation's and no body follows) removed.
 */
function contentLength(pb: ParsedBlock, f: Framing, bodiless = false): void {
  const units = fieldUnits(pb, 'content-length');
  if (units.length === 0) return;
  const cl = parseContentLength(fieldValues(pb, 'content-length'));
  if (!cl.ok) {
    if (bodiless) for (const u of units) f.drop.push({ unit: u, why: 'bodylessFraming' });
    else f.error = 'contentLength';
    return;
  }
  // Whitespace after the value is trimmed here, not by every parser (llhttp refuses "3\t").
  if (!cl.canonical || units.some((u) => pb.units[u]!.trailOws === true)) {
    f.clFix = { unit: units[0]!, n: cl.n };
    for (const u of units.slice(1)) f.drop.push({ unit: u, why: 'contentLengthFixed' });
  }
  if (!bodiless) f.body = cl.n > 0 ? { kind: 'length', n: cl.n } : NONE;
}

/** Transfer codings; sets `error` when unparseable or (for HTTP/1.0) present at all. */
function transferCodings(pb: ParsedBlock, f: Framing, http10: boolean): boolean {
  const te = fieldValues(pb, 'transfer-encoding');
  if (te.length === 0) return false;
  if (http10) {
    f.error = 'teHttp10';
    return true;
  }
  const c = parseTransferCodings(te);
  if (c === undefined || c.length === 0) {
    f.error = 'transferEncoding';
    return true;
  }
  f.codings = c;
  for (const u of fieldUnits(pb, 'content-length')) f.drop.push({ unit: u, why: 'teWithCl' });
  // One canonical line unless it is one already (a single line, exactly the parsed list, nothing
  // after it: the bytes every parser reads alike).
  const units = fieldUnits(pb, 'transfer-encoding');
  const want = c.join(', ');
  const u0 = pb.units[units[0]!]!;
  if (units.length !== 1 || u0.norm !== null || u0.trailOws === true || u0.value !== want) {
    f.teFix = { unit: units[0]!, value: want };
    for (const u of units.slice(1)) f.drop.push({ unit: u, why: 'transferEncodingFixed' });
  }
  return true;
}

export function requestFraming(pb: ParsedBlock): Framing {
  const f: Framing = { body: NONE, codings: [], drop: [] };
  const v = pb.request!.version;
  if (transferCodings(pb, f, v.minor === 0)) {
    if (f.error !== undefined) return f;
    if (f.codings.length !== 1 || f.codings[0] !== 'chunked') f.error = 'transferEncoding';
    else f.body = { kind: 'chunked' };
    return f;
  }
  contentLength(pb, f);
  return f;
}

/** What the response's request was, as far as framing is concerned. */
export interface ResponseContext {
  head: boolean;
  connect: boolean;
}

export function responseFraming(pb: ParsedBlock, req: ResponseContext): Framing {
  const f: Framing = { body: NONE, codings: [], drop: [] };
  const st = pb.status!;
  const s = st.status;
  const connect2xx = req.connect && s >= 200 && s < 300;
  if (req.head || s < 200 || s === 204 || s === 304 || connect2xx) {
    for (const u of fieldUnits(pb, 'transfer-encoding')) f.drop.push({ unit: u, why: 'bodylessFraming' });
    if (s < 200 || s === 204 || connect2xx) for (const u of fieldUnits(pb, 'content-length')) f.drop.push({ unit: u, why: 'bodylessFraming' });
    // HEAD, 304: kept when valid (one plain value), removed when not (Node refuses `5,6`, `0,0`).
    else contentLength(pb, f, true);
    f.drop.sort((a, b) => a.unit - b.unit);
    return f;
  }
  if (transferCodings(pb, f, st.version.minor === 0)) {
    if (f.error !== undefined) return f;
    const chunked = f.codings.filter((c) => c === 'chunked').length;
    // §6.3 point 4 reads a response whose chunked is not final until the connection closes;
    // curl and nginx read it as chunked and keep the connection: what follows would be one
    // more message there and body here. And chunked after another coding (`gzip, chunked`) is
    // chunked to curl and nginx, close-delimited to Python's http.client. Ambiguous: refused.
    if (chunked > 1 || (chunked === 1 && f.codings.length > 1)) f.error = 'transferEncoding';
    // §6.3 point 4: no chunked at all: read until the connection closes.
    else f.body = chunked === 1 ? { kind: 'chunked' } : { kind: 'close' };
    return f;
  }
  contentLength(pb, f);
  if (f.error === undefined && fieldUnits(pb, 'content-length').length === 0) f.body = { kind: 'close' };
  return f;
}
