/**
 * HTTP/1.x grammar, pure functions on bytes and latin1 strings (no state): the start lines
 * (RFC 9112 §3, §4), field-name / field-value characters (RFC 9110 §5.1, §5.5), the framing
 * fields Content-Length (RFC 9110 §8.6) and Transfer-Encoding (RFC 9112 §6.1), connection
 * options (RFC 9110 §7.6.1) and the chunk-size line (RFC 9112 §7.1). Strict where leniency is
 * what request smuggling feeds on (RFC 9112 §11.2): single SP between start-line parts, no
 * whitespace in numbers, chunk extensions only as the grammar allows.
 */

export const CR = 0x0d;
export const LF = 0x0a;
export const SP = 0x20;
export const HTAB = 0x09;

/** tchar (RFC 9110 §5.6.2): "!#$%&'*+-.^_`|~", DIGIT, ALPHA. */
const TCHAR = new Uint8Array(256);
for (const c of "!#$%&'*+-.^_`|~") TCHAR[c.charCodeAt(0)] = 1;
for (let c = 0x30; c <= 0x39; c++) TCHAR[c] = 1;
for (let c = 0x41; c <= 0x5a; c++) TCHAR[c] = TCHAR[c + 0x20] = 1;

export const isTchar = (c: number): boolean => TCHAR[c] === 1;

/**
 * A field name as the applications behind CGI-style gateways tell names apart: lower case, every
 * byte but a letter or digit as "-". CGI, WSGI and Rack turn `-` into `_` (`X_Auth_Role` and
 * `X-Auth-Role` are both HTTP_X_AUTH_ROLE), lighttpd every other byte too (`X.Auth.Role`).
 * The name itself when it has nothing to map (no copy).
 */
export function fieldKey(name: string): string {
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i);
    if (!((c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) || c === 0x2d)) return name.toLowerCase().replace(/[^a-z0-9]/g, '-');
  }
  return name;
}

export function isToken(s: string): boolean {
  if (s.length === 0) return false;
  for (let i = 0; i < s.length; i++) if (TCHAR[s.charCodeAt(i)] !== 1) return false;
  return true;
}

/** field-vchar / SP / HTAB (RFC 9110 §5.5: VCHAR, obs-text). */
export const isFieldChar = (c: number): boolean => c === HTAB || c === SP || (c >= 0x21 && c <= 0x7e) || c >= 0x80;

/** A field value a config may set: field characters only, no leading/trailing whitespace. */
export function isFieldValue(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c > 0xff || !isFieldChar(c)) return false;
  }
  return !/^[ \t]|[ \t]$/.test(s);
}

export interface HttpVersion {
  major: number;
  minor: number;
}

export interface RequestLine {
  method: string;
  target: string;
  version: HttpVersion;
}

export interface StatusLine {
  version: HttpVersion;
  status: number;
}

/**
 * request-line = method SP request-target SP HTTP-version (RFC 9112 §3), one SP each: the
 * "recipients MAY parse on whitespace" leniency of §3 is what §3 itself warns against. The target
 * may hold obs-text (raw UTF-8 paths are common and unambiguous), never whitespace or CTLs.
 * HTTP/0.9 (no version) is not HTTP/1.x: refused.
 */
const REQUEST_LINE = /^([!#$%&'*+\-.^_`|~0-9A-Za-z]+) ([^\x00-\x20\x7f]+) HTTP\/([0-9])\.([0-9])$/;

export function parseRequestLine(line: string): RequestLine | undefined {
  const m = REQUEST_LINE.exec(line);
  if (m === null) return undefined;
  return { method: m[1]!, target: m[2]!, version: { major: Number(m[3]), minor: Number(m[4]) } };
}

/**
 * status-line = HTTP-version SP status-code SP [ reason-phrase ] (RFC 9112 §4); a missing
 * "SP reason" is accepted (common, and nothing can be read into it).
 */
// A status code of 100 or more (RFC 9110 §15: 1xx–5xx; clients read 000–099 differently: Node and
// Go as final answers, where 1xx would be informational).
const STATUS_LINE = /^HTTP\/([0-9])\.([0-9]) ([1-9][0-9]{2})(?: [\t\x20-\x7e\x80-\xff]*)?$/;

export function parseStatusLine(line: string): StatusLine | undefined {
  const m = STATUS_LINE.exec(line);
  if (m === null) return undefined;
  return { version: { major: Number(m[1]), minor: Number(m[2]) }, status: Number(m[3]) };
}

/**
 * Whether `held` (a start-line's first bytes, no LF yet) can still become a request-line or
 * status-line that parses: what a hold timeout may release before the line ends (a slow
 * sender). Anything else is no HTTP/1.x start-line (an HTTP/0.9 answer is its body from the
 * first byte), and releasing it would let its bytes past the rules unparsed.
 */
const REQUEST_LINE_PREFIX = /^(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]*|[!#$%&'*+\-.^_`|~0-9A-Za-z]+ [^\x00-\x20\x7f]*|[!#$%&'*+\-.^_`|~0-9A-Za-z]+ [^\x00-\x20\x7f]+ (?:H(?:T(?:T(?:P(?:\/(?:[0-9](?:\.(?:[0-9]\r?)?)?)?)?)?)?)?)?)$/;
const STATUS_LINE_PREFIX = /^(?:H(?:T(?:T(?:P(?:\/(?:[0-9](?:\.(?:[0-9](?: (?:[1-9](?:[0-9](?:[0-9](?: [\t\x20-\x7e\x80-\xff]*)?\r?)?)?)?)?)?)?)?)?)?)?)?)$/;

export function startLinePrefix(held: string, kind: 'request' | 'response'): boolean {
  return (kind === 'request' ? REQUEST_LINE_PREFIX : STATUS_LINE_PREFIX).test(held);
}

/**
 * Elements of a comma-separated list (RFC 9110 §5.6.1): OWS trimmed, empty elements dropped; a
 * comma inside a quoted-string (with its quoted-pairs) does not separate.
 */
export function listElements(values: readonly string[]): string[] {
  const out: string[] = [];
  const push = (e: string): void => {
    const t = e.replace(/^[ \t]+|[ \t]+$/g, '');
    if (t !== '') out.push(t);
  };
  for (const v of values) {
    let start = 0;
    let quoted = false;
    for (let i = 0; i < v.length; i++) {
      const c = v[i];
      if (quoted && c === '\\') i++;
      else if (c === '"') quoted = !quoted;
      else if (c === ',' && !quoted) {
        push(v.slice(start, i));
        start = i + 1;
      }
    }
    push(v.slice(start));
  }
  return out;
}

/** Connection options (RFC 9110 §7.6.1), lower case; undefined when one is not a token. */
export function connectionOptions(values: readonly string[]): Set<string> | undefined {
  const out = new Set<string>();
  for (const e of listElements(values)) {
    if (!isToken(e)) return undefined;
    out.add(e.toLowerCase());
  }
  return out;
}

/** Largest Content-Length accepted: 2^53 - 1 (15 digits are always exact). */
const CL_DIGITS = 15;

/**
 * Content-Length = 1*DIGIT (RFC 9110 §8.6), over every field line: one value, or the same value
 * repeated ("42, 42", or two lines), which §8.6 lets a recipient replace with one instance.
 * `canonical` is false when the fields must be rewritten to one plain "Content-Length: n"
 * (repeated, or leading zeros that a lax parser might read as octal).
 */
export type ContentLength = { ok: true; n: number; canonical: boolean } | { ok: false; why: string };

/** One plain value: digits, no leading zero (the usual case, answered without splitting). */
const PLAIN_CL = /^(?:0|[1-9][0-9]*)$/;

export function parseContentLength(values: readonly string[]): ContentLength {
  if (values.length === 1 && values[0]!.length <= CL_DIGITS && PLAIN_CL.test(values[0]!)) return { ok: true, n: Number(values[0]), canonical: true };
  let n = -1;
  let count = 0;
  let canonical = values.length === 1;
  for (const v of values) {
    const parts = v.split(',');
    if (parts.length > 1) canonical = false;
    for (const p of parts) {
      const t = p.replace(/^[ \t]+|[ \t]+$/g, '');
      if (!/^[0-9]+$/.test(t)) return { ok: false, why: `not a number: ${JSON.stringify(t)}` };
      const digits = t.replace(/^0+(?=.)/, '');
      if (digits !== t) canonical = false;
      if (digits.length > CL_DIGITS) return { ok: false, why: 'too large' };
      const x = Number(digits);
      if (n >= 0 && x !== n) return { ok: false, why: `differing values ${n} and ${x}` };
      n = x;
      count++;
    }
  }
  if (count === 0) return { ok: false, why: 'empty' };
  return { ok: true, n, canonical };
}

/**
 * Transfer-Encoding (RFC 9112 §6.1): the list of transfer codings over every field line, names
 * lower-cased; each element is token *( OWS ";" OWS token "=" ( token / quoted-string ) ).
 */
const CODING = /^([!#$%&'*+\-.^_`|~0-9A-Za-z]+)(?:[ \t]*;[ \t]*[!#$%&'*+\-.^_`|~0-9A-Za-z]+=(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+|"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"))*$/;

export function parseTransferCodings(values: readonly string[]): string[] | undefined {
  const out: string[] = [];
  for (const e of listElements(values)) {
    const m = CODING.exec(e);
    if (m === null) return undefined;
    const name = m[1]!.toLowerCase();
    // "The chunked coding does not define any parameters. Their presence SHOULD be treated as an
    // error" (RFC 9112 §7.1): `chunked;a=b` is not chunked to every parser.
    if (name === 'chunked' && m[0].length !== m[1]!.length) return undefined;
    out.push(name);
  }
  return out;
}

/**
 * chunk-size [ chunk-ext ] before CRLF (RFC 9112 §7.1, §7.1.1):
 *   chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
 * The line is given without its line end; any other byte (a bare CR, whitespace after the size
 * without ";", "0x", a sign) makes it invalid. At most 16 hex digits, value ≤ 2^53 - 1: sizes a
 * 32- or 64-bit parser would wrap are refused rather than forwarded.
 */
const CHUNK_LINE = /^([0-9A-Fa-f]{1,16})((?:[ \t]*;[ \t]*[!#$%&'*+\-.^_`|~0-9A-Za-z]+(?:[ \t]*=[ \t]*(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+|"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"))?)*)$/;

export function parseChunkLine(line: string): number | undefined {
  const m = CHUNK_LINE.exec(line);
  if (m === null) return undefined;
  const n = parseInt(m[1]!, 16);
  return Number.isSafeInteger(n) ? n : undefined;
}
