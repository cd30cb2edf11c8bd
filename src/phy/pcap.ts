/**
 * pcap and pcapng capture files: a streaming reader (./pcap-read.ts, its input ./pcap-chunks.ts)
 * and a classic-pcap writer (./pcap-write.ts), on the vocabulary of ./pcap-format.ts.
 *
 * This is where recorded frames enter the gateway (`tapgate replay`) and where captures of both
 * sides leave it. Formats, read first:
 *  - classic pcap: draft-ietf-opsawg-pcap (the "libpcap" format, magics a1b2c3d4 / a1b23c4d);
 *  - pcapng: draft-ietf-opsawg-pcapng (SHB, IDB, EPB, SPB, the obsolete PB);
 *  - link types: https://www.tcpdump.org/linktypes.html.
 *
 * Reader design:
 *  - Streaming: bytes come from a file (read in 64 KiB chunks) or any `AsyncIterable<Uint8Array>`
 *    such as a `Readable`; at most one record/block (bounded by `maxBlockBytes`) is buffered.
 *  - Items, not exceptions: the iterator yields `{kind: 'record'}` items and, if the input is bad
 *    (truncated, corrupt, unsupported, unreadable), exactly one final `{kind: 'error'}` item and
 *    then ends. Nothing after a corrupt length can be trusted, so there is no resync. A caller
 *    counts the error and keeps everything yielded before it. The iterator only throws for bugs.
 *  - Time: `tsNs` is a `bigint` of nanoseconds since the Unix epoch. A `number` cannot hold
 *    today's epoch in ns exactly (1.7e18 > 2^53), and replay feeds this time into the engine, so
 *    it must round-trip losslessly (nanosecond pcap → reader → writer → same bytes).
 *  - `data` is a fresh copy owned by the caller (the engine rewrites frames in place).
 */
export * from './pcap-format.js';
export * from './pcap-read.js';
export * from './pcap-write.js';
