/**
 * Capture as middleware (./port.ts): every frame that crosses the wrapped port is recorded in a
 * classic pcap file (./pcap-write.ts) — frames read as they came from the device, frames written
 * as they went to it — so the file is that side's view of each connection, as tcpdump on the TAP
 * would show it. The virtio header is not recorded; a GSO frame is one large record (as tcpdump
 * shows GSO packets) and partial checksums appear as bad checksums (as with any capture taken
 * with checksum offload). A capture that cannot keep up drops records (`dropped`) rather than
 * buffering without bound (`maxQueued` bytes).
 */
import type { WriteStream } from 'node:fs';
import { PcapWriter } from './pcap.js';
import type { FrameHandler, Port } from './port.js';

export interface CaptureOptions {
  path: string;
  stream: WriteStream;
  /** Bytes of virtio header in front of each frame (not recorded). */
  vnetHdrLen: number;
  /** Most bytes queued for the file before records are dropped. */
  maxQueued: number;
  /** Unix-epoch ns of time 0 of the caller's clock (records carry wall-clock time). */
  epochNs: bigint;
  /** Where a failed write is reported (once per failure). */
  onError: (path: string, err: Error) => void;
}

export class CapturePort implements Port {
  readonly writer: PcapWriter;
  dropped = 0;

  constructor(
    private readonly inner: Port,
    private readonly o: CaptureOptions,
  ) {
    this.writer = PcapWriter.fromStream(o.stream, { link: 'ethernet', precision: 'nano', snaplen: 262144 });
  }

  get name(): string {
    return this.inner.name;
  }

  get path(): string {
    return this.o.path;
  }

  listen(onFrame: FrameHandler, onBatch: (nowMs: number) => void, clock: () => number): void {
    this.inner.listen(
      (f, now) => {
        this.record(f, now);
        onFrame(f, now);
      },
      onBatch,
      clock,
    );
  }

  readNow(nowMs: number): number {
    return this.inner.readNow(nowMs);
  }

  poll(nowMs: number): void {
    this.inner.poll(nowMs);
  }

  write(frames: readonly Uint8Array[], nowMs: number, final = false): number {
    for (const f of frames) this.record(f, nowMs);
    return this.inner.write(frames, nowMs, final);
  }

  nextDueMs(): number | undefined {
    return this.inner.nextDueMs();
  }

  drain(nowMs: number): void {
    this.inner.drain(nowMs);
  }

  pause(): void {
    this.inner.pause();
  }

  async close(): Promise<void> {
    await this.inner.close();
    await this.writer.close().catch(() => {});
  }

  private record(frame: Uint8Array, nowMs: number): void {
    if (this.o.stream.writableLength > this.o.maxQueued) {
      this.dropped++;
      return;
    }
    const tsNs = this.o.epochNs + BigInt(Math.round(nowMs * 1e6));
    // encodePcapRecord copies synchronously: the device's buffer may be reused afterwards.
    this.writer.write({ data: frame.subarray(this.o.vnetHdrLen), tsNs }).catch((e: Error) => {
      this.dropped++;
      this.o.onError(this.o.path, e);
    });
  }
}
