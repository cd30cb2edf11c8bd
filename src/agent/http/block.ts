/**
 * A header section (or trailer section) as held whole: cut into *units* — the start-line, each
 * field line with its obs-fold continuations, whitespace-preceded lines, the final empty line —
 * each with its normalised bytes, so that a later plan replaces or removes whole units and never
 * overlapping pieces. Pure: bytes in, units out.
 *
 * Normalisation (what a recipient is allowed to do instead of rejecting, so that every parser
 * downstream reads the same fields as this one):
 * - bare LF line end → CRLF (RFC 9112 §2.2: a recipient MAY recognise LF alone);
 * - bare CR → SP (§2.2: "replace each bare CR with SP"), NUL in a value → SP (RFC 9110 §5.5);
 * - obs-fold → SP (§5.2: "replace each received obs-fold with one or more SP octets");
 * - whitespace-preceded lines right after the start-line are removed (§2.2: "consume each
 *   whitespace-preceded line without further processing");
 * - whitespace between a field name and its colon: removed in responses and trailers (§5.1: "A
 *   proxy MUST remove any such whitespace from a response"), a refusal in requests (§5.1: MUST
 *   reject).
 * Refused: a start-line that does not parse strictly, a field line without a token name, any
 * other control character in a value.
 */

import type { RefuseReason } from './counters.js';
import { CR, HTAB, isFieldChar, isToken, parseRequestLine, parseStatusLine, SP, type RequestLine, type StatusLine } from './syntax.js';

export type BlockKind = 'request' | 'response' | 'trailer';

export interface Unit {
  kind: 'start' | 'field' | 'ws' | 'end';
  /** Absolute stream position and length of the original bytes. */
  at: number;
  len: number;
  /** The normalised bytes (with CRLF) when they differ from the original, else null. */
  norm: Buffer | null;
  /** Field units: lower-case name. */
  name: string;
  /** Field units: the original-case name as normalised. */
  rawName: string;
  /** Field units: the value, OWS trimmed, folds and bare CR / NUL as SP. */
  value: string;
  /** Field units: whitespace followed the value (trimmed from `value`; not every parser trims it). */
  trailOws?: boolean;
  /** Field units: `fieldKey(name)`, once it was asked for. */
  key?: string;
}

export interface NormTally {
  bareLF: number;
  bareCR: number;
  nulInValue: number;
  obsFold: number;
  wsBeforeColon: number;
  wsLines: number;
}

export interface ParsedBlock {
  units: Unit[];
  request?: RequestLine;
  status?: StatusLine;
  error?: RefuseReason;
  tally: NormTally;
}

const CRLF = Buffer.from('\r\n');

/**
 * Parse a complete section: `b` holds it from its first byte (start-line, or first trailer
 * line) through the LF of the empty line; `base` is the stream position of b[0]. `plain: false`
 * reads every line the general way (the tests compare both).
 */
export function parseBlock(b: Buffer, base: number, kind: BlockKind, plain = true): ParsedBlock {
  const tally: NormTally = { bareLF: 0, bareCR: 0, nulInValue: 0, obsFold: 0, wsBeforeColon: 0, wsLines: 0 };
  // Physical lines: [start, contentEnd) content, up to and including the LF at lf.
  // The section as latin1 text, once: lines, names and values are found and cut in it (string
  // searches and substrings, no Buffer call per line); the bytes are read again only for a line
  // that needs normalising.
  const t = b.toString('latin1');
  const lines: { s: number; ce: number; lf: number }[] = [];
  for (let s = 0; s < b.length; ) {
    const lf = t.indexOf('\n', s);
    if (lf < 0) throw new Error('http: parseBlock without a final LF (agent bug)');
    const bare = lf === s || t.charCodeAt(lf - 1) !== CR;
    if (bare) tally.bareLF++;
    lines.push({ s, ce: bare ? lf : lf - 1, lf });
    s = lf + 1;
  }
  const out: ParsedBlock = { units: [], tally };
  const units = out.units;
  const phys: number[][] = [];
  let i = 0;
  if (kind !== 'trailer') {
    const l = lines[0]!;
    let text: string;
    if (plain && l.ce !== l.lf && !hasCR(t, l.s, l.ce)) {
      // The usual start-line: CRLF, no bare CR: nothing to normalise.
      text = t.substring(l.s, l.ce);
      units.push({ kind: 'start', at: base + l.s, len: l.lf + 1 - l.s, norm: null, name: '', rawName: '', value: '' });
    } else {
      const content = cleanCR(b.subarray(l.s, l.ce), tally);
      text = content.toString('latin1');
      units.push(unit('start', base + l.s, l.lf + 1 - l.s, Buffer.concat([content, CRLF]), b.subarray(l.s, l.lf + 1)));
    }
    phys.push([0]);
    if (kind === 'request') {
      const r = parseRequestLine(text);
      if (r === undefined) return { ...out, error: 'startLine' };
      out.request = r;
      if (r.version.major !== 1) return { ...out, error: 'version' };
    } else {
      const st = parseStatusLine(text);
      if (st === undefined) return { ...out, error: 'startLine' };
      out.status = st;
      if (st.version.major !== 1) return { ...out, error: 'version' };
    }
    i = 1;
  }
  let last: 'none' | 'ws' | 'field' = 'none';
  for (; i < lines.length; i++) {
    const l = lines[i]!;
    if (l.ce === l.s) {
      // The usual empty line is CRLF already: nothing to compare.
      const crlf = plain && l.lf === l.s + 1;
      units.push(crlf ? { kind: 'end', at: base + l.s, len: 2, norm: null, name: '', rawName: '', value: '' } : unit('end', base + l.s, l.lf + 1 - l.s, CRLF, b.subarray(l.s, l.lf + 1)));
      phys.push([i]);
      break;
    }
    const first = b[l.s]!;
    if (first === SP || first === HTAB) {
      if (last === 'field') {
        // obs-fold: the line continues the previous field line.
        tally.obsFold++;
        const u = units[units.length - 1]!;
        u.len = base + l.lf + 1 - u.at;
        phys[phys.length - 1]!.push(i);
        continue;
      }
      tally.wsLines++;
      units.push(unit('ws', base + l.s, l.lf + 1 - l.s, Buffer.alloc(0), b.subarray(l.s, l.lf + 1)));
      phys.push([i]);
      last = 'ws';
      continue;
    }
    units.push(unit('field', base + l.s, l.lf + 1 - l.s, null, null));
    phys.push([i]);
    last = 'field';
  }
  // Field units: join folded lines with SP, clean bare CR / NUL, split name and value. The usual
  // line (one physical line ending in CRLF, nothing to clean) keeps norm null without a copy.
  for (let u = 0; u < units.length; u++) {
    const un = units[u]!;
    if (un.kind !== 'field') continue;
    const ph = phys[u]!;
    if (plain && ph.length === 1) {
      const r = plainField(t, lines[ph[0]!]!, un, kind);
      if (r === 'done') continue;
      if (r !== 'other') return { ...out, error: r };
    }
    let content: Buffer;
    let changed: boolean;
    if (ph.length === 1) {
      const l = lines[ph[0]!]!;
      const raw = b.subarray(l.s, l.ce);
      content = cleanCR(raw, tally);
      changed = content !== raw || l.ce === l.lf;
    } else {
      const parts: Buffer[] = [];
      for (const k of ph) {
        const l = lines[k]!;
        if (parts.length > 0) parts.push(Buffer.from(' '));
        parts.push(cleanCR(b.subarray(l.s, l.ce), tally));
      }
      content = Buffer.concat(parts);
      changed = true;
    }
    const colon = content.indexOf(0x3a);
    if (colon <= 0) return { ...out, error: 'fieldName' };
    let nameEnd = colon;
    while (nameEnd > 0 && (content[nameEnd - 1] === SP || content[nameEnd - 1] === HTAB)) nameEnd--;
    if (nameEnd !== colon) {
      if (kind === 'request') return { ...out, error: 'wsBeforeColon' };
      tally.wsBeforeColon++;
      changed = true;
    }
    const rawName = content.toString('latin1', 0, nameEnd);
    if (!isToken(rawName)) return { ...out, error: 'fieldName' };
    let rest = content.subarray(colon + 1);
    let copied = false;
    for (let k = 0; k < rest.length; k++) {
      const c = rest[k]!;
      if (c === 0) {
        if (!copied) rest = Buffer.from(rest); // never write the caller's bytes
        copied = changed = true;
        rest[k] = SP;
        tally.nulInValue++;
      } else if (!isFieldChar(c)) return { ...out, error: 'fieldValue' };
    }
    let vs = 0;
    let ve = rest.length;
    while (vs < ve && (rest[vs] === SP || rest[vs] === HTAB)) vs++;
    while (ve > vs && (rest[ve - 1] === SP || rest[ve - 1] === HTAB)) ve--;
    un.rawName = rawName;
    un.name = rawName.toLowerCase();
    un.value = rest.toString('latin1', vs, ve);
    if (ve < rest.length) un.trailOws = true;
    un.norm = changed ? Buffer.concat([Buffer.from(`${rawName}:`, 'latin1'), rest, CRLF]) : null;
  }
  return out;
}

/** A CR in t[from, to). */
function hasCR(t: string, from: number, to: number): boolean {
  const i = t.indexOf('\r', from);
  return i >= 0 && i < to;
}

/**
 * The usual field line, read from the text alone: one physical line ending in CRLF, no CR or NUL
 * inside, no whitespace before the colon. 'done' (name and value set, nothing to normalise), the
 * refusal the general path would give, in its order, or 'other' (the general path reads it;
 * nothing was counted here).
 */
function plainField(t: string, l: { s: number; ce: number; lf: number }, un: Unit, kind: BlockKind): 'done' | 'other' | RefuseReason {
  if (l.ce === l.lf || hasCR(t, l.s, l.ce)) return 'other';
  const colon = t.indexOf(':', l.s);
  if (colon <= l.s || colon >= l.ce) return 'fieldName';
  const before = t.charCodeAt(colon - 1);
  if (before === SP || before === HTAB) return kind === 'request' ? 'wsBeforeColon' : 'other';
  const rawName = t.substring(l.s, colon);
  if (!isToken(rawName)) return 'fieldName';
  for (let k = colon + 1; k < l.ce; k++) {
    const c = t.charCodeAt(k);
    if (c === 0) return 'other';
    if (!isFieldChar(c)) return 'fieldValue';
  }
  let vs = colon + 1;
  let ve = l.ce;
  while (vs < ve && (t.charCodeAt(vs) === SP || t.charCodeAt(vs) === HTAB)) vs++;
  while (ve > vs && (t.charCodeAt(ve - 1) === SP || t.charCodeAt(ve - 1) === HTAB)) ve--;
  un.rawName = rawName;
  un.name = rawName.toLowerCase();
  un.value = t.substring(vs, ve);
  un.norm = null;
  if (ve < l.ce) un.trailOws = true;
  return 'done';
}

function unit(kind: Unit['kind'], at: number, len: number, norm: Buffer | null, orig: Buffer | null): Unit {
  const same = norm !== null && orig !== null && norm.equals(orig);
  return { kind, at, len, norm: same ? null : norm, name: '', rawName: '', value: '' };
}

/** Bare CR (every CR inside a line's content) → SP (RFC 9112 §2.2); a copy when changed. */
function cleanCR(c: Buffer, tally: NormTally): Buffer {
  if (c.indexOf(CR) < 0) return c;
  const out = Buffer.from(c);
  for (let k = 0; k < out.length; k++) {
    if (out[k] === CR) {
      out[k] = SP;
      tally.bareCR++;
    }
  }
  return out;
}

/** Values of every field line named `name` (lower case). */
export function fieldValues(pb: ParsedBlock, name: string): string[] {
  const out: string[] = [];
  for (const u of pb.units) if (u.kind === 'field' && u.name === name) out.push(u.value);
  return out;
}

/** Indexes of the units of field `name`. */
export function fieldUnits(pb: ParsedBlock, name: string): number[] {
  const out: number[] = [];
  pb.units.forEach((u, i) => {
    if (u.kind === 'field' && u.name === name) out.push(i);
  });
  return out;
}
