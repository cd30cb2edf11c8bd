/**
 * The TAP device: where the gateway's frames come from and go to (docs/ARCHITECTURE.md §1 `phy/`, §6).
 *
 * A thin typed wrapper over our N-API addon `native/tap.cc` (built by `npm install` into
 * `build/Release/tap.node`). One `TapDevice` is one attached fd on an existing or new TAP
 * interface, IFF_TAP | IFF_NO_PI, optionally IFF_VNET_HDR with TSO/CSUM offload (TAP GSO).
 *
 * Receiving is batched and allocation-free: the addon reads every frame the kernel has ready
 * (up to `batchFrames`, or until `batchBytes` has no room for one more maximal frame) into one
 * preallocated buffer and makes ONE call into JS per batch. The `FrameBatch` handed to the
 * callback is the same object every time; its frames are views into the same buffer, valid only
 * until the callback returns. Parse/rewrite/forward them synchronously or copy what you keep.
 *
 * With `vnetHdr: true` every frame (read and written) starts with the 10-byte
 * `struct virtio_net_hdr` (flags, gso_type, hdr_len, gso_size, csum_start, csum_offset;
 * little-endian on x86): GSO frames up to ~64 KiB with partial checksums
 * (VIRTIO_NET_HDR_F_NEEDS_CSUM) arrive, and may be written back the same way. Without it,
 * offloads are switched off on the device, so the kernel segments and checksums before handing
 * frames over: every frame is ≤ MTU + 14 and carries full checksums.
 *
 * Writes are synchronous (a TAP write never waits: the kernel takes the frame at once), or with
 * `txThread` a batch of 64 KiB or more is handed to the addon's transmit thread (copied, or for
 * a frame of 4 KiB or more read from a TAP of this process, written from its read buffer; and
 * what follows it queues behind it, in order): the receiving side's stack, which runs inside a
 * TAP write, then overlaps the caller's next batch. A frame the kernel does not take is counted
 * in `txDrops` and never throws; see `write`/`writeBatch`.
 */

import { EventEmitter } from 'node:events';
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

/** Error codes thrown by `TapDevice.open` or carried by the 'error' event. */
export type TapErrorCode =
  | 'TAP_NO_ADDON' // build/Release/tap.node missing: run `npm install`
  | 'TAP_NO_TUN' // no /dev/net/tun (ENOENT)
  | 'TAP_PERM' // EPERM/EACCES: needs CAP_NET_ADMIN
  | 'TAP_BUSY' // EBUSY/EINVAL: name used by a non-TAP device, or the TAP is attached elsewhere
  | 'TAP_OFFLOAD' // TUNSETVNETHDRSZ/TUNSETOFFLOAD refused
  | 'TAP_NAME' // invalid interface name
  | 'TAP_OPEN' // any other open failure
  | 'TAP_GONE' // the device vanished while open (EBADFD/ENODEV/ENXIO/EIO)
  | 'TAP_IO' // other read error
  | 'TAP_CLOSED'; // used after close()

export interface TapError extends Error {
  code: TapErrorCode;
  errno?: number;
  errnoName?: string;
  syscall?: string;
  device?: string;
}

export interface TapOpenOptions {
  /** IFF_VNET_HDR + TSO4/TSO6/CSUM offload: 10-byte virtio-net header on every frame. */
  vnetHdr: boolean;
  /** Most frames per batch (one JS call). Default 64. */
  batchFrames?: number;
  /** Bytes of the batch buffer; a read needs room for one maximal (~64 KiB) frame. Default 1 MiB. */
  batchBytes?: number;
  /** Set the interface MTU after attaching. */
  mtu?: number;
  /** Bring the interface up after attaching. Default false (the lab does it). */
  up?: boolean;
  /**
   * Attach one queue of a multi-queue TAP (IFF_MULTI_QUEUE; the TAP must have been made so:
   * `ip tuntap add mode tap name NAME multi_queue`). Each open attaches one more queue; the
   * kernel gives every flow one queue by its symmetric hash, and a flow written on a queue comes
   * back on it.
   */
  multiQueue?: boolean;
  /**
   * Write large batches (64 KiB or more) from a thread of the addon (native/tap.cc TxThread):
   * for a process that has a core to spare for it (the live gateway on two or more CPUs, one
   * process). Default false: every write in the caller's thread.
   */
  txThread?: boolean;
}

export interface TapCounters {
  rxFrames: number;
  rxBytes: number;
  /** JS callbacks made: rxFrames / rxBatches is the mean batch size. */
  rxBatches: number;
  rxErrors: number;
  txFrames: number;
  txBytes: number;
  /** Frames given to write/writeBatch that the kernel did not take (EAGAIN, EINVAL, link down…). */
  txDrops: number;
  /** errno name of the last failed write, if any. */
  lastTxError?: string;
  /** Of txFrames, those the transmit thread wrote (`txThread`). */
  txThreadFrames: number;
  /**
   * Of txThreadFrames, those written from the read buffer they came in (4 KiB or more, from a TAP
   * of this process, not rebuilt: no copy into the thread's ring).
   */
  txThreadDirectFrames: number;
  /**
   * Frames the kernel dropped on their way to the gateway because the TAP's queue was full (the
   * interface's tx_dropped since the device was opened: the gateway fell behind a burst; the
   * senders retransmit). Read from sysfs when statistics are taken; absent where it is not
   * readable. Raise the interface's `txqueuelen` if it grows.
   */
  queueDrops?: number;
}

/**
 * One received batch. The same object is reused for every batch of a device: read it inside the
 * callback. Frame i is `buf[offset(i) .. offset(i)+length(i))`, including the virtio header when
 * `vnetHdrLen` is 10.
 */
export interface FrameBatch {
  /** The buffer this batch was read into (one of the device's few: read it per batch). */
  readonly buf: Buffer;
  /** [offset0, length0, offset1, length1, ...]; only the first 2 * count entries are valid. */
  readonly offsets: Uint32Array;
  readonly count: number;
  readonly vnetHdrLen: number;
  offset(i: number): number;
  length(i: number): number;
  /** A view (no copy) of frame i; allocates a small Buffer object. */
  frame(i: number): Buffer;
}

export type FramesCallback = (batch: FrameBatch) => void;

/** The addon's native object (see native/tap.cc). */
interface NativeTap {
  readonly name: string;
  readonly vnetHdrLen: number;
  /** The read buffers; a batch goes into one no transmit thread still writes from. */
  readonly batches: Buffer[];
  /** Frame offsets and lengths, then (last element) the index of the last batch's buffer. */
  readonly offsets: Uint32Array;
  readonly batchFrames: number;
  start(onFrames: (count: number) => void, onError: (err: TapError) => void): void;
  pause(): void;
  write(frame: Uint8Array): boolean;
  writeBatch(frames: readonly Uint8Array[]): number;
  readNow(): number;
  close(): void;
  stats(): TapCounters;
  setUp(up: boolean): void;
  setMtu(mtu: number): void;
  getMtu(): number;
  ref(): void;
  unref(): void;
}

interface NativeModule {
  TapDevice: new (name: string, vnetHdr: boolean, batchFrames?: number, batchBytes?: number, multiQueue?: boolean, txThread?: boolean) => NativeTap;
  VNET_HDR_LEN: number;
  MAX_FRAME: number;
}

/** Where the addon is: <repo>/build/Release/tap.node, from src/phy/ and from dist/phy/ alike. */
export const ADDON_PATH = fileURLToPath(new URL('../../build/Release/tap.node', import.meta.url));

let addon: NativeModule | undefined;

/** Load the addon once; a clear TAP_NO_ADDON error if it has not been built. */
export function loadTapAddon(): NativeModule {
  if (addon !== undefined) return addon;
  if (!existsSync(ADDON_PATH)) {
    throw tapError(
      'TAP_NO_ADDON',
      `the TAP addon is not built (${ADDON_PATH} is missing): run \`npm install\` ` +
        '(it runs node-gyp; needs a C++17 compiler, make and python3)',
    );
  }
  const require = createRequire(import.meta.url);
  try {
    addon = require(ADDON_PATH) as NativeModule;
  } catch (e) {
    throw tapError(
      'TAP_NO_ADDON',
      `cannot load the TAP addon ${ADDON_PATH}: ${(e as Error).message}; rebuild it with \`npm install\``,
    );
  }
  return addon;
}

function tapError(code: TapErrorCode, message: string): TapError {
  return Object.assign(new Error(message), { code });
}

class Batch implements FrameBatch {
  count = 0;
  buf: Buffer;
  private readonly at: number;
  constructor(
    private readonly bufs: readonly Buffer[],
    readonly offsets: Uint32Array,
    readonly vnetHdrLen: number,
  ) {
    this.buf = bufs[0]!;
    this.at = offsets.length - 1;
  }
  /** After a read of `count` frames: the buffer they are in. */
  filled(count: number): void {
    this.count = count;
    if (count > 0) this.buf = this.bufs[this.offsets[this.at]!]!;
  }
  offset(i: number): number {
    return this.offsets[2 * i]!;
  }
  length(i: number): number {
    return this.offsets[2 * i + 1]!;
  }
  frame(i: number): Buffer {
    const o = this.offsets[2 * i]!;
    return this.buf.subarray(o, o + this.offsets[2 * i + 1]!);
  }
}

export interface TapDeviceEvents {
  error: [err: TapError];
  close: [];
}

/**
 * The kernel's count of frames it dropped transmitting on interface `name` (for a TAP: towards
 * the program reading it, its queue full), or undefined when sysfs does not have it.
 */
export function kernelTxDropped(name: string): number | undefined {
  try {
    const v = Number(readFileSync(`/sys/class/net/${name}/statistics/tx_dropped`, 'utf8').trim());
    return Number.isFinite(v) ? v : undefined;
  } catch {
    return undefined;
  }
}

/**
 * An attached TAP interface. Events: 'error' (TapError; e.g. TAP_GONE when the interface was
 * deleted — reading stops, the device should be closed), 'close'. As with any EventEmitter, an
 * 'error' without a listener is thrown: attach one.
 */
export class TapDevice extends EventEmitter<TapDeviceEvents> {
  /** The interface name (as the kernel has it: a pattern like "tap%d" is resolved). */
  readonly name: string;
  readonly vnetHdr: boolean;
  /** 10 with vnetHdr, else 0: bytes of virtio-net header in front of each frame. */
  readonly vnetHdrLen: number;
  #native: NativeTap;
  #batch: Batch;
  #cb: FramesCallback | undefined;
  #closed = false;
  /** The interface's tx_dropped when it was opened (undefined: not readable). */
  #queueDropsBase: number | undefined;

  private constructor(native: NativeTap, vnetHdr: boolean) {
    super();
    this.#native = native;
    this.name = native.name;
    this.vnetHdr = vnetHdr;
    this.vnetHdrLen = native.vnetHdrLen;
    this.#batch = new Batch(native.batches, native.offsets, native.vnetHdrLen);
    this.#queueDropsBase = kernelTxDropped(this.name);
  }

  /** Attach to (or create) the TAP `name` in the caller's network namespace. Throws TapError. */
  static open(name: string, options: TapOpenOptions): TapDevice {
    const m = loadTapAddon();
    const native = new m.TapDevice(name, options.vnetHdr, options.batchFrames, options.batchBytes, options.multiQueue === true, options.txThread === true);
    const dev = new TapDevice(native, options.vnetHdr);
    try {
      if (options.mtu !== undefined) native.setMtu(options.mtu);
      if (options.up === true) native.setUp(true);
    } catch (e) {
      native.close();
      throw e;
    }
    return dev;
  }

  /** Largest frame a read can return (virtio header included). */
  static get maxFrame(): number {
    return loadTapAddon().MAX_FRAME;
  }

  /** Set the receive callback and start reading (replaces a previous callback). */
  onFrames(cb: FramesCallback): this {
    if (this.#closed) throw tapError('TAP_CLOSED', `TAP '${this.name}' is closed`);
    this.#cb = cb;
    this.#native.start(this.#onCount, this.#onError);
    return this;
  }

  /** Stop reading until `resume()` (frames wait in the kernel; its queue drops beyond ~1000). */
  pause(): void {
    if (!this.#closed) this.#native.pause();
  }

  resume(): void {
    if (!this.#closed && this.#cb !== undefined) this.#native.start(this.#onCount, this.#onError);
  }

  /**
   * Reads what is ready now, without waiting for the event loop: the frames land in `batch` (the
   * object the callback gets, same validity rules) and their count is returned (0: none ready).
   * Meant to be called from inside a frame callback (of this device or another one), e.g. right
   * after writing to this device, when its answer is likely queued already. Read errors go to the
   * 'error' event, as when polling.
   */
  readNow(): number {
    if (this.#closed) return 0;
    const n = this.#native.readNow();
    this.#batch.filled(n);
    return n;
  }

  /** The batch object the callback receives (and `readNow` fills). */
  get batch(): FrameBatch {
    return this.#batch;
  }

  /** Write one frame (with its virtio header when vnetHdr). False = dropped (counted). */
  write(frame: Uint8Array): boolean {
    return this.#native.write(frame);
  }

  /**
   * Write frames in order; returns how many the kernel took. A refused frame is counted in
   * txDrops and skipped; on EAGAIN/ENOBUFS the remaining frames are dropped (counted) at once.
   * With `txThread`, a batch the thread takes returns how many were handed over (the caller's
   * buffers are free at return: they are copied; only frames in the addon's own read buffers are
   * written from there, which no later read overwrites first); what the kernel refuses later is
   * counted in txDrops. A frame in a read buffer must not be changed once handed over.
   */
  writeBatch(frames: readonly Uint8Array[]): number {
    return this.#native.writeBatch(frames);
  }

  /** Frames the kernel dropped because the TAP's queue was full (undefined: not readable). */
  queueDrops(): number | undefined {
    const base = this.#queueDropsBase;
    const now = base === undefined ? undefined : kernelTxDropped(this.name);
    return now === undefined || base === undefined ? undefined : Math.max(0, now - base);
  }

  stats(): TapCounters {
    const s = this.#native.stats();
    const queueDrops = this.queueDrops();
    return queueDrops === undefined ? s : { ...s, queueDrops };
  }

  setUp(up = true): void {
    this.#native.setUp(up);
  }

  setMtu(mtu: number): void {
    this.#native.setMtu(mtu);
  }

  getMtu(): number {
    return this.#native.getMtu();
  }

  /** Let the process exit while the device is open (like socket.unref()). */
  unref(): this {
    this.#native.unref();
    return this;
  }

  ref(): this {
    this.#native.ref();
    return this;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Detach. A non-persistent TAP disappears; a persistent one (ip tuntap add) stays. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#native.close();
    this.#cb = undefined;
    this.emit('close');
  }

  #onCount = (count: number): void => {
    this.#batch.filled(count);
    this.#cb?.(this.#batch);
  };

  #onError = (err: TapError): void => {
    this.emit('error', err);
  };
}
