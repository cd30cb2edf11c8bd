/**
 * What the http agent counts: messages, how each rewritten body was framed, why a body passed
 * unchanged, every normalisation (RFC 9112 §2.2, §5.1, §5.2, §6.3) and every refusal by reason.
 * Plain numbers: they travel in the agent's snapshot.
 */

/** Why a message (and the rest of its direction) was refused. */
export const REFUSE_REASONS = [
  /** Not a request-line / status-line (RFC 9112 §3, §4), HTTP/0.9 included. */
  'startLine',
  /** An HTTP version other than 1.x. */
  'version',
  /** A field line without a colon or with a name that is not a token (RFC 9112 §5). */
  'fieldName',
  /** A control character in a field value (RFC 9110 §5.5). */
  'fieldValue',
  /** Whitespace between a request's field name and colon (RFC 9112 §5.1: MUST reject). */
  'wsBeforeColon',
  /** Transfer-Encoding in an HTTP/1.0 message (RFC 9112 §6.1: framing faulty). */
  'teHttp10',
  /** Transfer-Encoding not ending in exactly one chunked (requests), or not parseable. */
  'transferEncoding',
  /** Content-Length invalid or differing values (RFC 9112 §6.3 point 5). */
  'contentLength',
  /** More than one Host field line (RFC 9112 §3.2). */
  'multipleHost',
  /** Header or trailer section longer than maxHeaderBytes. */
  'headerTooLong',
  /** An invalid chunk-size line or chunk-data not followed by CRLF (RFC 9112 §7.1). */
  'chunk',
  /** A chunk-size line longer than maxChunkLine. */
  'chunkLineTooLong',
  /** More than maxPipeline requests awaiting responses. */
  'pipelineFull',
  /** A 206 for a resource whose responses are rewritten (original bytes must not be delivered). */
  'range',
  /** A 101 to a request that asked for no upgrade (RFC 9110 §15.2.2). */
  'unexpected101',
  /** Bytes sent after CONNECT / Upgrade before the answer, held past the hold timeout or bound. */
  'await',
  /** A normalisation was needed on header bytes already released by a hold timeout. */
  'unnormalised',
  /** Cluster takeover after a gap outside a body of known length: where messages start is lost. */
  'resync',
  /** With `unrewritable: refuse` (the default), a body the rules could not rewrite: content-coded, ... */
  'encoded',
  /** ... transfer-coded besides chunked, ... */
  'transferCoded',
  /** ... too large to hold and no other framing the peer accepts, ... */
  'noFraming',
  /** ... a request with Expect: 100-continue too large or not chunkable, ... */
  'expect',
  /** ... its header released early (hold timeout) before its framing, or a configured header edit, could be made. */
  'released',
  /** A gzip / deflate body (with `decode`) that does not decode: bad data, check value, length, truncated. */
  'coding',
  /** ... that decodes to more than maxDecodedRatio times its coded size. */
  'codingRatio',
  /**
   * The connection ended inside a body whose framing said more was coming, where the peer could
   * not tell: a coded body (no valid end can be made up) or one re-framed as close-delimited.
   */
  'truncated',
  /**
   * A match the hold timeout (or limit) split: its start went out undecided and the bytes after
   * completed it (the replace agent's `splitMatches`); the rest never passes.
   */
  'splitMatch',
  /** A backtracking body rule's match attempt stopped by its maxSteps (budgetExceeded: reset). */
  'regexBudget',
] as const;
export type RefuseReason = (typeof REFUSE_REASONS)[number];

export function newHttpCounters() {
  return {
    requests: 0,
    responses: 0,
    /** 1xx responses other than 101. */
    informational: 0,
    /** Responses with no request waiting for them (paired as a GET). */
    unpairedResponses: 0,

    /** Bodies that went through the body rules, and replacements made in them. */
    bodiesRewritten: 0,
    bodyMatches: 0,
    /** Backtracking regex attempts in bodies stopped by their maxSteps budget (no match there). */
    regexBudgetExceeded: 0,
    /** Body segments a long list of literals scanned rule by rule or in JS (the replace agent's). */
    longListFallbacks: 0,
    /** How rewritten bodies were framed: Content-Length fixed (held whole), ... */
    framedFixedLength: 0,
    /** ... Content-Length re-framed as chunked, ... */
    framedChunked: 0,
    /** ... chunked re-chunked, ... */
    rechunked: 0,
    /** ... Content-Length re-framed as close-delimited, ... */
    framedClose: 0,
    /** ... close-delimited as sent. */
    closeDelimited: 0,
    /** Bodies with rules that passed unchanged (`unrewritable: pass`; refused ones count in
     *  `refused`): content-coded (gzip...), ... */
    passEncoded: 0,
    /** ... transfer-coded other than chunked alone, ... */
    passTransferCoded: 0,
    /** ... too large to hold and no other framing the peer accepts, ... */
    passNoFraming: 0,
    /** ... request with Expect: 100-continue too large or not chunkable, ... */
    passExpect: 0,
    /** ... header released early (hold timeout) before its framing could be changed. */
    passReleased: 0,

    /** Header lines removed / added by setHeaders and removeHeaders. */
    headersRemoved: 0,
    headersAdded: 0,
    /** Requests asked for identity coding (Accept-Encoding), Range/If-Range removed. */
    identityRequested: 0,
    /** Requests whose Accept-Encoding lost codings `decode` does not handle (br, zstd, *...). */
    acceptEncodingFiltered: 0,
    /** Rewritten bodies that were gzip / deflate coded: decoded, rewritten, coded again. */
    bodiesDecoded: 0,
    /** Bytes after the end of a coded body's data (after its last gzip member, or its zlib or
     *  deflate stream): dropped, as clients ignore them. */
    codedTrailingBytes: 0,
    rangeRemoved: 0,
    /**
     * Responses of a resource the rules rewrite whose metadata described the original bytes:
     * Content-Length of a HEAD or 304 removed (RFC 9110 §8.6, §15.4.5: it must equal the length
     * a GET would deliver, which only the rewrite knows), ETag made weak (§8.8.1: not the same
     * bytes), Accept-Ranges removed (ranges of it are not served: Range is taken off requests).
     */
    validatorsChanged: 0,
    /** HTTP/1.0 keep-alive requests made to close (their responses may be close-delimited). */
    keepAliveClosed: 0,
    /** Connections switched to a tunnel (CONNECT 2xx, 101): the rest passes unparsed. */
    tunnels: 0,

    /** Normalised: bare LF line ends (CR added), bare CR (→ SP), NUL in values (→ SP), ... */
    bareLF: 0,
    bareCR: 0,
    nulInValue: 0,
    /** ... obs-fold (→ SP), whitespace before a response field's colon (removed), ... */
    obsFold: 0,
    wsBeforeColon: 0,
    /** ... whitespace-preceded lines after the start-line (removed), empty lines before it, ... */
    wsLines: 0,
    emptyLines: 0,
    /** ... Content-Length removed beside Transfer-Encoding, or rewritten to one plain value, ... */
    teWithCl: 0,
    contentLengthFixed: 0,
    /** ... Transfer-Encoding rewritten to one canonical line (`chunked,`, a trailing tab, several lines), ... */
    transferEncodingFixed: 0,
    /** ... Connection options naming a field the rule removes or sets, or a framing field, dropped, ... */
    connectionOptionsRemoved: 0,
    /** ... framing fields removed from messages that have no body (1xx, 204, 304) or trailers. */
    bodylessFraming: 0,
    trailerFramingRemoved: 0,

    /** Refusals per direction, and by reason. */
    refusedRequests: 0,
    refusedResponses: 0,
    refused: Object.fromEntries(REFUSE_REASONS.map((r) => [r, 0])) as Record<RefuseReason, number>,
    /** Requests that waited on 100-continue and got a final answer before their body: made the connection's last. */
    expectAbandoned: 0,
    /** Header sections released by a hold timeout before they were complete. */
    headerFlushed: 0,
    /** Cosmetic header edits (set/remove) that fell on bytes already released. */
    editsLost: 0,
    /** Bytes deleted after a response re-framed as close-delimited (the server sent more). */
    afterCloseBytes: 0,
    /** Cluster takeovers after a gap: continued inside a known-length body / lost. */
    resyncKept: 0,
    resyncLost: 0,
    /**
     * Gateway-wide, in the gateway's counters only (0 in a connection's): coded bodies being
     * decoded now (each holds about 70 KB), bounded by `maxDecoding`; and coded bodies that found
     * the bound reached (treated as not decodable: refused as `encoded`, or passed).
     */
    decodingNow: 0,
    decodeLimited: 0,
  };
}
export type HttpCounters = ReturnType<typeof newHttpCounters>;
/** The plain counts (every key but `refused`). */
export type CountKey = Exclude<keyof HttpCounters, 'refused'>;

/**
 * Counts into a connection's counters (they travel in its snapshot) and, when given, the
 * gateway's (every http agent of a registry adds to one object: `stats().agents.http`).
 */
export class Tally {
  constructor(
    readonly own: HttpCounters,
    private readonly all?: HttpCounters,
  ) {}

  add(k: CountKey, n = 1): void {
    this.own[k] += n;
    if (this.all !== undefined) this.all[k] += n;
  }

  refuse(reason: RefuseReason): void {
    this.own.refused[reason]++;
    if (this.all !== undefined) this.all.refused[reason]++;
  }

  /** One more coded body being decoded on the gateway (see decoderFree). */
  takeDecoder(): void {
    if (this.all !== undefined) this.all.decodingNow++;
  }

  /**
   * Whether one more coded body may be decoded now, `max` at once on the gateway (taken with
   * takeDecoder when it starts; a cluster import takes its place whatever the bound). Without
   * gateway counters there is no gateway-wide bound.
   */
  decoderFree(max: number): boolean {
    return this.all === undefined || this.all.decodingNow < max;
  }

  /** A coded body being decoded ended (or its connection left the gateway). */
  releaseDecoder(): void {
    if (this.all !== undefined && this.all.decodingNow > 0) this.all.decodingNow--;
  }
}

/** A deep copy (restore, snapshot); unknown keys of `from` are ignored. */
export function copyCounters(from: Partial<HttpCounters> | undefined): HttpCounters {
  const c = newHttpCounters();
  if (from === undefined) return c;
  for (const k of Object.keys(c) as (keyof HttpCounters)[]) {
    if (k === 'refused') continue;
    const v = from[k];
    if (typeof v === 'number') (c as Record<string, unknown>)[k] = v;
  }
  for (const r of REFUSE_REASONS) {
    const v = from.refused?.[r];
    if (typeof v === 'number') c.refused[r] = v;
  }
  return c;
}
