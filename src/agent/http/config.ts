/**
 * The http agent's options: what is rewritten per direction (body find/replace with the replace
 * agent's rules, header fields set and removed) and the bounds of what it holds. The config
 * loader validates with file positions (src/config/schema.ts); `httpConfigProblems` is the same
 * check for a config built in code, and `resolveHttpConfig` the compiled form, made once per
 * config object.
 */

import { replaceRuleProblems, type ReplaceConfig } from '../replace.js';
import { fieldKey, isFieldValue, isToken } from './syntax.js';

export interface HttpSideConfig {
  /** Body find/replace: the replace agent's rules (find / regex), matched on the de-chunked body. */
  replace?: ReplaceConfig;
  /** Fields set (every existing line of the name is removed, one line added at the end). */
  setHeaders?: Readonly<Record<string, string>>;
  /** Field names removed (case-insensitive). */
  removeHeaders?: readonly string[];
}

export interface HttpResponseConfig extends HttpSideConfig {
  /**
   * With response `replace` rules: ask the server for identity-coded bodies (requests get
   * `Accept-Encoding: identity`, `TE` removed) so that they can be rewritten. Default true.
   */
  identity?: boolean;
}

export interface HttpConfig {
  request?: HttpSideConfig;
  response?: HttpResponseConfig;
  /** Longest header (and trailer) section held, bytes. Longer: refused, counted. */
  maxHeaderBytes?: number;
  /** A rewritten body with a Content-Length up to this is held whole and its length fixed. */
  maxBufferedBody?: number;
  /** Longest chunk-size line (with extensions). Longer: refused, counted. */
  maxChunkLine?: number;
  /** Requests awaiting their response (pipelining). More: refused, counted. */
  maxPipeline?: number;
  /**
   * The server is known to speak HTTP/1.1, so a rewritten request body may be re-framed as
   * chunked before any response told so (RFC 9112 §6.1: "specific user configuration"). Default
   * false: only after an HTTP/1.1 response on the same connection.
   */
  assumeHttp11Server?: boolean;
  /**
   * A body the direction's rules cannot rewrite (content-coded, transfer-coded besides chunked,
   * or no framing the peer accepts could carry a changed length): 'refuse' (default: the message
   * is refused as a malformed one is: a response becomes a 502, a request goes nowhere), or
   * 'pass' (unchanged). Counted either way (passEncoded, …; refused.encoded, …).
   */
  unrewritable?: Unrewritable;
  /**
   * Bodies coded gzip (x-gzip) or deflate are decoded, rewritten and coded again (as the same
   * coding) instead of being unrewritable; requests then offer only those codings (and identity)
   * in Accept-Encoding rather than asking for identity. Default false.
   */
  decode?: boolean;
  /**
   * A coded body may decode to at most this many times its coded size (after its first MiB;
   * default 200, as Apache mod_deflate's DeflateInflateRatioLimit: repetitive text reaches 135):
   * more is refused, counted (refused.codingRatio), so that a small "zip bomb" cannot make the
   * gateway decode and scan gigabytes.
   */
  maxDecodedRatio?: number;
  /**
   * Coded bodies decoded at once on the gateway (every http rule's count together; each holds
   * about 70 KB). One more is treated as not decodable (`unrewritable` decides: refused as
   * `encoded`, or passed), counted in decodeLimited.
   */
  maxDecoding?: number;
}

export type Unrewritable = 'refuse' | 'pass';
export const UNREWRITABLE: readonly Unrewritable[] = ['refuse', 'pass'];

export const HTTP_DEFAULTS = Object.freeze({
  maxHeaderBytes: 16 * 1024,
  maxBufferedBody: 16 * 1024,
  maxChunkLine: 4096,
  maxPipeline: 64,
  maxDecodedRatio: 200,
  maxDecoding: 4096,
});

export const HTTP_LIMITS = Object.freeze({
  maxHeaderBytes: [256, 64 * 1024] as const,
  maxBufferedBody: [0, 64 * 1024] as const,
  maxChunkLine: [32, 64 * 1024] as const,
  maxPipeline: [1, 4096] as const,
  maxDecodedRatio: [1, 1032] as const,
  maxDecoding: [1, 1_000_000] as const,
});

/**
 * Fields the agent owns (framing and connection management, RFC 9112 §6, §9; RFC 9110 §7.6.1):
 * setting or removing them by config would break the framing it keeps, so it is refused.
 */
export const OWNED_FIELDS: readonly string[] = ['content-length', 'transfer-encoding', 'connection', 'keep-alive', 'upgrade', 'te', 'trailer'];

const SIDE_KEYS = ['replace', 'setHeaders', 'removeHeaders'];
const TOP_KEYS = ['request', 'response', 'maxHeaderBytes', 'maxBufferedBody', 'maxChunkLine', 'maxPipeline', 'assumeHttp11Server', 'unrewritable', 'decode', 'maxDecodedRatio', 'maxDecoding'];

/** Problems of a field name used in setHeaders / removeHeaders ('' = fine). */
export function fieldNameProblem(name: string): string {
  if (!isToken(name)) return `"${name}" is not a field name (token characters only)`;
  if (OWNED_FIELDS.includes(fieldKey(name))) return `"${name}" is managed by the http agent (framing / connection); allowed: any other field`;
  return '';
}

export function fieldValueProblem(value: unknown): string {
  if (typeof value !== 'string') return 'expected a string';
  return isFieldValue(value) ? '' : 'expected a field value: visible characters, spaces inside only, no CR/LF/NUL';
}

/** Everything wrong with an http config (empty = valid), as [path, message]. */
export function httpConfigProblems(cfg: unknown): [string, string][] {
  const out: [string, string][] = [];
  if (cfg === undefined || cfg === null) return out;
  if (typeof cfg !== 'object' || Array.isArray(cfg)) return [['', 'expected a mapping']];
  const c = cfg as Record<string, unknown>;
  for (const k of Object.keys(c)) if (!TOP_KEYS.includes(k)) out.push([k, `unknown key; allowed: ${TOP_KEYS.join(', ')}`]);
  for (const [k, [lo, hi]] of Object.entries(HTTP_LIMITS)) {
    const v = c[k];
    if (v !== undefined && (typeof v !== 'number' || !Number.isInteger(v) || v < lo || v > hi)) out.push([k, `expected an integer from ${lo} to ${hi}`]);
  }
  for (const k of ['assumeHttp11Server', 'decode']) if (c[k] !== undefined && typeof c[k] !== 'boolean') out.push([k, 'expected a boolean']);
  const u = c['unrewritable'];
  if (u !== undefined && !UNREWRITABLE.includes(u as Unrewritable)) out.push(['unrewritable', `expected one of: ${UNREWRITABLE.join(', ')}`]);
  for (const side of ['request', 'response'] as const) {
    const s = c[side];
    if (s === undefined || s === null) continue;
    if (typeof s !== 'object' || Array.isArray(s)) {
      out.push([side, 'expected a mapping']);
      continue;
    }
    const o = s as Record<string, unknown>;
    const keys = side === 'response' ? [...SIDE_KEYS, 'identity'] : SIDE_KEYS;
    for (const k of Object.keys(o)) if (!keys.includes(k)) out.push([`${side}.${k}`, `unknown key; allowed: ${keys.join(', ')}`]);
    const r = o['replace'];
    if (r !== undefined) {
      if (!Array.isArray(r) || r.length === 0) out.push([`${side}.replace`, 'expected a non-empty list of find/regex rules']);
      else r.forEach((rule: unknown, i) => replaceRuleProblems(rule, { refuseDead: true }).forEach((p) => out.push([`${side}.replace[${i}]${p.field === 'rule' ? '' : `.${p.field}`}`, p.message])));
    }
    const set = o['setHeaders'];
    if (set !== undefined && set !== null) {
      if (typeof set !== 'object' || Array.isArray(set)) out.push([`${side}.setHeaders`, 'expected a mapping of field name to value']);
      else {
        for (const [n, v] of Object.entries(set)) {
          const p = fieldNameProblem(n) || fieldValueProblem(v);
          if (p !== '') out.push([`${side}.setHeaders.${n}`, p]);
        }
      }
    }
    const rm = o['removeHeaders'];
    if (rm !== undefined && rm !== null) {
      if (!Array.isArray(rm)) out.push([`${side}.removeHeaders`, 'expected a list of field names']);
      else {
        rm.forEach((n: unknown, i) => {
          const p = typeof n === 'string' ? fieldNameProblem(n) : 'expected a field name';
          if (p !== '') out.push([`${side}.removeHeaders[${i}]`, p]);
        });
      }
    }
    if (side === 'response' && o['identity'] !== undefined && typeof o['identity'] !== 'boolean') out.push(['response.identity', 'expected a boolean']);
  }
  return out;
}

/** One direction's rewriting, compiled. */
export interface SideRules {
  /** Body rules (the replace agent's config), or null: bodies pass. */
  replace: ReplaceConfig | null;
  /** Names whose lines are removed (removeHeaders and the names set), as `fieldKey` gives them. */
  remove: ReadonlySet<string>;
  /** Lines added at the end of the header section: "Name: value\r\n". */
  add: Buffer;
}

export interface ResolvedHttpConfig {
  request: SideRules;
  response: SideRules;
  /**
   * What requests may accept (with response rules): `identity` (Accept-Encoding: identity),
   * `decodable` (the codings `decode` handles, and identity), `asSent` (unchanged).
   */
  acceptEncoding: 'identity' | 'decodable' | 'asSent';
  /** Decode gzip / deflate bodies to rewrite them (HttpConfig.decode). */
  decode: boolean;
  maxDecodedRatio: number;
  maxDecoding: number;
  maxHeaderBytes: number;
  maxBufferedBody: number;
  maxChunkLine: number;
  maxPipeline: number;
  assumeHttp11Server: boolean;
  unrewritable: Unrewritable;
}

function side(s: HttpSideConfig | undefined): SideRules {
  const remove = new Set<string>((s?.removeHeaders ?? []).map((n) => fieldKey(n)));
  let add = '';
  for (const [n, v] of Object.entries(s?.setHeaders ?? {})) {
    remove.add(fieldKey(n));
    add += `${n}: ${v}\r\n`;
  }
  const r = s?.replace;
  return { replace: r !== undefined && r.length > 0 ? r : null, remove, add: Buffer.from(add, 'latin1') };
}

const resolved = new WeakMap<object, ResolvedHttpConfig>();

/** Validated and compiled; throws an Error naming the first problem. */
export function resolveHttpConfig(cfg: HttpConfig | null | undefined): ResolvedHttpConfig {
  if (cfg !== null && typeof cfg === 'object') {
    const hit = resolved.get(cfg);
    if (hit !== undefined) return hit;
  }
  const p = httpConfigProblems(cfg);
  if (p.length > 0) throw new Error(`http: ${p[0]![0] === '' ? '' : `${p[0]![0]}: `}${p[0]![1]}`);
  const c = cfg ?? {};
  const response = side(c.response);
  const r: ResolvedHttpConfig = {
    request: side(c.request),
    response,
    acceptEncoding: response.replace === null || c.response?.identity === false ? 'asSent' : c.decode === true ? 'decodable' : 'identity',
    decode: c.decode ?? false,
    maxDecodedRatio: c.maxDecodedRatio ?? HTTP_DEFAULTS.maxDecodedRatio,
    maxDecoding: c.maxDecoding ?? HTTP_DEFAULTS.maxDecoding,
    maxHeaderBytes: c.maxHeaderBytes ?? HTTP_DEFAULTS.maxHeaderBytes,
    maxBufferedBody: c.maxBufferedBody ?? HTTP_DEFAULTS.maxBufferedBody,
    maxChunkLine: c.maxChunkLine ?? HTTP_DEFAULTS.maxChunkLine,
    maxPipeline: c.maxPipeline ?? HTTP_DEFAULTS.maxPipeline,
    assumeHttp11Server: c.assumeHttp11Server ?? false,
    unrewritable: c.unrewritable ?? 'refuse',
  };
  if (cfg !== null && typeof cfg === 'object') resolved.set(cfg, r);
  return r;
}
