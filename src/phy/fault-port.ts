/**
 * Impairment as middleware (./port.ts): a fault injector (./fault.ts) on the frames read from the
 * port it wraps (`in`: the gateway itself meets loss, reordering and duplicates), and one on the
 * frames written to it (`out`: what the endpoint on that side receives). Frames an injector keeps
 * (delay, reorder, rate queue) are copies; they leave on `poll` / `write` once due, and all at
 * once on `drain` / a final `write`.
 */
import { FaultInjector, type FaultCounters, type FaultPending, type FaultSpec } from './fault.js';
import type { FrameHandler, Port } from './port.js';

export type FaultStats = FaultCounters & { spec: string; pending: FaultPending };

export class FaultPort implements Port {
  private onFrame: FrameHandler = () => {};
  /** Time of the frame (or poll) being handled: what held input is delivered with. */
  private nowMs = 0;
  private readonly deliver = (f: Uint8Array): void => this.onFrame(f, this.nowMs);
  /** What the out-injector releases, written to the inner port at the end of a `write`. */
  private readonly released: Uint8Array[] = [];
  private readonly toWrite = (f: Uint8Array): void => {
    this.released.push(f);
  };

  constructor(
    private readonly inner: Port,
    readonly inInjector: FaultInjector | undefined,
    readonly outInjector: FaultInjector | undefined,
  ) {}

  /** Injectors from specs: `salt` per point, so one spec at several points draws differently. */
  static wrap(inner: Port, spec: { in?: FaultSpec | undefined; out?: FaultSpec | undefined }, o: { vnetHdr: boolean; saltIn: number; saltOut: number }): FaultPort {
    const mk = (s: FaultSpec | undefined, salt: number) => (s === undefined ? undefined : new FaultInjector(s, { vnetHdr: o.vnetHdr, salt }));
    return new FaultPort(inner, mk(spec.in, o.saltIn), mk(spec.out, o.saltOut));
  }

  get name(): string {
    return this.inner.name;
  }

  listen(onFrame: FrameHandler, onBatch: (nowMs: number) => void, clock: () => number): void {
    this.onFrame = onFrame;
    const fin = this.inInjector;
    this.inner.listen(
      fin === undefined
        ? onFrame
        : (f, now) => {
            this.nowMs = now;
            fin.push(f, now, this.deliver);
          },
      onBatch,
      clock,
    );
  }

  readNow(nowMs: number): number {
    return this.inner.readNow(nowMs);
  }

  poll(nowMs: number): void {
    this.nowMs = nowMs;
    this.inInjector?.poll(nowMs, this.deliver);
    this.inner.poll(nowMs);
  }

  write(frames: readonly Uint8Array[], nowMs: number, final = false): number {
    const fo = this.outInjector;
    if (fo === undefined) return this.inner.write(frames, nowMs, final);
    fo.poll(nowMs, this.toWrite);
    for (const f of frames) fo.push(f, nowMs, this.toWrite);
    if (final) fo.flush(this.toWrite);
    const n = this.inner.write(this.released, nowMs, final);
    this.released.length = 0;
    return n;
  }

  nextDueMs(): number | undefined {
    const due = Math.min(this.inner.nextDueMs() ?? Infinity, this.inInjector?.nextDueMs() ?? Infinity, this.outInjector?.nextDueMs() ?? Infinity);
    return due === Infinity ? undefined : due;
  }

  drain(nowMs: number): void {
    this.nowMs = nowMs;
    this.inInjector?.flush(this.deliver);
    this.inner.drain(nowMs);
  }

  pause(): void {
    this.inner.pause();
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
