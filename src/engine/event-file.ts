/**
 * Writes events (./events.ts) as JSON lines to a file, appending. Bounded: while more than
 * MAX_PENDING bytes wait for the disk, events are dropped and counted (`dropped`), never
 * buffered without limit; a write error is reported once (`error`) and the rest dropped.
 */
import { createWriteStream, type WriteStream } from 'node:fs';
import type { EventSink } from './events.js';

const MAX_PENDING = 16 << 20;

export class EventFile {
  readonly counters = { written: 0, dropped: 0 };
  error: Error | undefined;
  private constructor(
    private readonly stream: WriteStream,
    /** The event time as text: the wall clock live, the capture's time in replay. */
    private readonly stamp: (nowMs: number) => string,
  ) {
    stream.on('error', (e) => {
      this.error ??= e;
    });
  }

  /** Opens (creates or appends to) `path`; rejects with the fs error (ENOENT, EACCES…). */
  static open(path: string, stamp: (nowMs: number) => string): Promise<EventFile> {
    return new Promise((resolve, reject) => {
      const s = createWriteStream(path, { flags: 'a' });
      s.once('error', reject);
      s.once('open', () => {
        s.off('error', reject);
        resolve(new EventFile(s, stamp));
      });
    });
  }

  readonly sink: EventSink = (ev, nowMs) => {
    if (this.error !== undefined || this.stream.writableLength > MAX_PENDING) {
      this.counters.dropped++;
      return;
    }
    this.stream.write(`${JSON.stringify({ ts: this.stamp(nowMs), ...ev })}\n`);
    this.counters.written++;
  };

  /** Flushes and closes; a write error found then (ENOSPC at the last write) is kept in `error`. */
  close(): Promise<void> {
    return new Promise((resolve) =>
      this.stream.end((e?: Error | null) => {
        if (e) this.error ??= this.stream.errored ?? e;
        resolve();
      }),
    );
  }
}

/** Live: the wall clock. */
export const wallClock = (): string => new Date().toISOString();
/** Replay: the capture's time (ms since the Unix epoch). */
export const captureClock = (nowMs: number): string => new Date(nowMs).toISOString();
