/**
 * What a JIT warm-up connection says (engine/warmup.ts): bytes shaped like the traffic the rule's
 * agent will meet, so that V8 optimises the paths real traffic takes, not only the scan.
 * - A replace rule: text with its literal patterns in it (the match, edit and sequence-shift
 *   paths), both ways; talk BULK_TALK's answer is a download.
 * - An http rule: an HTTP/1.1 exchange whose bodies carry the rule's literals, one of four shapes
 *   in turn: a small body (held whole, its Content-Length fixed), a large one with
 *   Content-Length (re-framed as chunked), a chunked one, and — with `decode` — a gzip-coded one
 *   (else a second Content-Length one); talk BULK_TALK's large body is a download's. With request
 *   rules the request is a POST whose body carries theirs.
 * - Anything else (no rule, monitor, ftp), and a rule whose patterns are all regexes (a match
 *   cannot be made up for them): plain text.
 * Without this, an http rule's warm-up connections were answered with text: the agent refused
 * them, and its body path first ran on real traffic, unoptimised (bench/README, "A gateway's first
 * connections").
 */
import { gzipSync } from 'node:zlib';
import type { Rule } from '../config/load.js';
import type { ReplaceConfig } from '../agent/replace.js';
import { HTTP_DEFAULTS } from '../agent/http/config.js';

export interface Talk {
  /** The client's bytes (sent in order, MSS-sized segments). */
  request: Uint8Array;
  /** The server's answer (its first segments reordered and repeated). */
  response: Uint8Array;
}

/** The plain text's line (44 bytes). */
const FOX = 'the quick brown fox jumps over the lazy dog\n';
/** A plain-text response: 11 segments of the warm-up's MSS, as before bodies were shaped. */
const PLAIN_RESPONSE = 11 * 1448;
/** Bytes of a small http body (in one segment with its header: held whole) and of the large ones
 *  above the held-whole bound. */
const SMALL_BODY = 1024;
const LARGE_EXTRA = 32 * 1024;
/**
 * Talk number BULK_TALK answers with BULK_BYTES (a download: GSO frames acknowledged as they come,
 * the stores and command lists growing and shrinking): a gateway warmed on short answers alone
 * threw code away in its first real download ("insufficient type feedback" on paths no warm-up
 * answer reached), which ran at about half the speed of the second.
 */
const BULK_TALK = 5;
const BULK_BYTES = 512 * 1024;
/**
 * The talk whose request carries no pattern whatever the port (a download's has none either, but
 * downloads come only with TAP GSO): a direction never rewritten, settled when the connection
 * ends — the path of a real connection's unrewritten requests at its close (`Connection.settled`
 * read both directions' state there; a gateway without vnet headers first read it at the first
 * real close: "insufficient type feedback").
 */
const PLAIN_REQUEST_TALK = 6;

/**
 * The warm-up connection number `k` on a port with `rule` (undefined: no rule); `downloads`: talk
 * BULK_TALK is a download on this port (warmup.ts bulkPorts says where).
 */
export function warmupTalk(rule: Rule | undefined, k: number, downloads = false): Talk {
  const bulk = downloads && k === BULK_TALK;
  if (rule?.agent === 'http') return httpTalk(rule.config, k, bulk);
  const finds = rule?.agent === 'replace' ? literals(rule.config) : [];
  // A download's request carries no pattern, nor PLAIN_REQUEST_TALK's: their direction is never rewritten (settled at the end).
  const request = Buffer.from('GET / HTTP/1.1\r\nHost: warm\r\n\r\n' + (bulk || k === PLAIN_REQUEST_TALK ? '' : text(finds, 600, k)), 'latin1');
  return { request, response: Buffer.from(text(finds, bulk ? BULK_BYTES : PLAIN_RESPONSE, k), 'latin1') };
}

function httpTalk(cfg: Extract<Rule, { agent: 'http' }>['config'], k: number, bulk: boolean): Talk {
  const resFinds = literals(cfg.response?.replace);
  const reqFinds = literals(cfg.request?.replace);
  const large = bulk ? BULK_BYTES : (cfg.maxBufferedBody ?? HTTP_DEFAULTS.maxBufferedBody) + LARGE_EXTRA;
  const shape = k % 4;
  let head = 'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nServer: warm\r\n';
  let body: Buffer;
  if (shape === 0) {
    body = Buffer.from(text(resFinds, SMALL_BODY, k), 'latin1');
    head += `Content-Length: ${body.length}\r\n`;
  } else if (shape === 2) {
    // Chunks of 4 KiB and a last short one, then the terminating chunk.
    const plain = text(resFinds, large, k);
    const parts: string[] = [];
    for (let i = 0; i < plain.length; i += 4096) {
      const c = plain.slice(i, i + 4096);
      parts.push(`${c.length.toString(16)}\r\n${c}\r\n`);
    }
    parts.push('0\r\n\r\n');
    body = Buffer.from(parts.join(''), 'latin1');
    head += 'Transfer-Encoding: chunked\r\n';
  } else if (shape === 3 && cfg.decode === true) {
    body = gzipSync(Buffer.from(text(resFinds, large, k), 'latin1'), { level: 1 });
    head += `Content-Encoding: gzip\r\nContent-Length: ${body.length}\r\n`;
  } else {
    body = Buffer.from(text(resFinds, large, k), 'latin1');
    head += `Content-Length: ${body.length}\r\n`;
  }
  const response = Buffer.concat([Buffer.from(head + '\r\n', 'latin1'), body]);
  // A download's request is curl's: no Accept-Encoding, which the agent adds (the request grows:
  // every frame of the answer has its ACK translated, as in a real download).
  const accept = cfg.decode === true && !bulk ? 'Accept-Encoding: gzip\r\n' : '';
  if (reqFinds.length === 0 || k % 2 === 0) return { request: Buffer.from(`GET /warm HTTP/1.1\r\nHost: warm\r\n${accept}\r\n`, 'latin1'), response };
  const b = text(reqFinds, SMALL_BODY, k);
  const request = Buffer.from(`POST /warm HTTP/1.1\r\nHost: warm\r\n${accept}Content-Type: text/plain\r\nContent-Length: ${b.length}\r\n\r\n${b}`, 'latin1');
  return { request, response };
}

/** The literal patterns of replace rules (regex rules have none to offer). */
function literals(rules: ReplaceConfig | undefined): string[] {
  return (rules ?? []).flatMap((r) => ('find' in r && r.find.length > 0 ? [Buffer.from(r.find, 'utf8').toString('latin1')] : []));
}

/** `len` bytes (latin1) of numbered lines, each with the next of `finds` in it when there are any. */
function text(finds: readonly string[], len: number, k: number): string {
  const out: string[] = [];
  let n = 0;
  for (let i = 0; n < len; i++) {
    const f = finds.length > 0 ? ` ${finds[(i + k) % finds.length]} ` : ' ';
    const line = `${String(i).padStart(5, '0')}${f}${FOX}`;
    out.push(line);
    n += line.length;
  }
  return out.join('').slice(0, len);
}
