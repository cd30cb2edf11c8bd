/**
 * A port: one side of the live gateway, where frames come from and go to. The TAP device is one
 * (`TapPort`); middleware wraps a port and is one too, the way smoltcp's `phy/` wraps a device:
 * `CapturePort` (./capture-port.ts) records what crosses, `FaultPort` (./fault-port.ts) impairs
 * it. The live loop (engine/live.ts) bridges two ports and knows nothing of capture or
 * impairment.
 *
 * Frames read are handed to the handler one by one, as views valid only during the call; a
 * port that keeps a frame (a delayed one) copies it. `write` takes frames the caller may reuse
 * after the call, but for frames read from a TAP (views of its read buffer), which must not be
 * changed once written: the TAP's transmit thread may still write from them (phy/tap.ts). Time is passed in: a port owns no clock, except that a device's read event
 * must say when it happened (`listen`'s `clock`).
 */
import type { TapCounters, TapDevice } from './tap.js';

/** A frame read from a port, at `nowMs`. */
export type FrameHandler = (frame: Uint8Array, nowMs: number) => void;

export interface Port {
  /** The device's name (the TAP's). */
  readonly name: string;
  /**
   * Starts reading: every frame read goes to `onFrame`; after each batch the device reported
   * by itself (not after `readNow`), `onBatch` runs with the batch's time.
   */
  listen(onFrame: FrameHandler, onBatch: (nowMs: number) => void, clock: () => number): void;
  /** Reads what the device holds right now, frames to the handler; returns how many. */
  readNow(nowMs: number): number;
  /** Hands held input that is due to the handler (delayed frames). */
  poll(nowMs: number): void;
  /**
   * Writes `frames` after held output that is due (an empty list writes only that); `final`
   * releases everything held. Returns how many frames the device took.
   */
  write(frames: readonly Uint8Array[], nowMs: number, final?: boolean): number;
  /** When the port next needs `poll` / `write` for frames it holds back; undefined = none held. */
  nextDueMs(): number | undefined;
  /** Stop: every held input frame goes to the handler now. */
  drain(nowMs: number): void;
  /** Stops reading (frames stay queued in the device). */
  pause(): void;
  close(): Promise<void>;
}

/** The TAP device as a port: batches from the addon, handed on frame by frame. */
export class TapPort implements Port {
  private onFrame: FrameHandler = () => {};

  constructor(readonly dev: TapDevice) {}

  get name(): string {
    return this.dev.name;
  }

  listen(onFrame: FrameHandler, onBatch: (nowMs: number) => void, clock: () => number): void {
    this.onFrame = onFrame;
    this.dev.onFrames(() => {
      const now = clock();
      this.deliver(now);
      onBatch(now);
    });
  }

  readNow(nowMs: number): number {
    const n = this.dev.readNow();
    if (n > 0) this.deliver(nowMs);
    return n;
  }

  /** The device's current batch to the handler. */
  private deliver(nowMs: number): void {
    const b = this.dev.batch;
    const buf = b.buf;
    const h = this.onFrame;
    for (let i = 0; i < b.count; i++) {
      // A plain Uint8Array view, not a Buffer: the engine copies with slice() (see Gateway).
      h(new Uint8Array(buf.buffer, buf.byteOffset + b.offset(i), b.length(i)), nowMs);
    }
  }

  poll(): void {}

  write(frames: readonly Uint8Array[]): number {
    return frames.length === 0 ? 0 : this.dev.writeBatch(frames);
  }

  nextDueMs(): number | undefined {
    return undefined;
  }

  drain(): void {}

  pause(): void {
    this.dev.pause();
  }

  stats(): TapCounters {
    return this.dev.stats();
  }

  close(): Promise<void> {
    this.dev.close();
    return Promise.resolve();
  }
}
