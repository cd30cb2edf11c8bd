/** `n` uninitialised bytes with a backing store of their own, as a plain Uint8Array (whose
 *  `slice` copies): kept as long as they like, they pin nothing else. */
export function ownBytes(n: number): Uint8Array {
  const b = Buffer.allocUnsafeSlow(n);
  return new Uint8Array(b.buffer, b.byteOffset, n);
}

/**
 * Copying bytes the engine must keep past the current call (the caller's buffers, TAP batches,
 * are reused). Not `x.slice()`: on a Node Buffer that is a view, not a copy. Not
 * `new Uint8Array(x)`: that zero-fills before copying, twice the cost on the hot path.
 * Returns a plain Uint8Array (whose `slice` copies) over uninitialised memory it then fills.
 */
export function copyBytes(a: Uint8Array, longLived = false): Uint8Array {
  const n = a.length;
  // Small short-lived copies come from Node's shared 8 KiB pool slabs; a long-lived small copy
  // would pin a whole slab, so it (and every large one) gets its own backing store.
  if (n >= 4096 || longLived) {
    const own = ownBytes(n);
    own.set(a);
    return own;
  }
  const b = Buffer.allocUnsafe(n);
  b.set(a);
  return new Uint8Array(b.buffer, b.byteOffset, n);
}

/** The slabs `transientBytes` cuts from: their size, the largest piece cut (bigger ones get their
 *  own store: a rebuilt GSO frame of 64 KiB and its payload fit), how many are kept for reuse. */
const SLAB_BYTES = 1024 * 1024;
const SLAB_PIECE_MAX = 256 * 1024;
const SLABS_KEPT = 8;
/** `TAPGATE_DEBUG_POISON=1` (the test suite sets it, vitest.config.ts): recycled bytes are
 *  overwritten with 0xA5 (see transientRecycle). Off by default: it costs a write per byte. */
const POISON = process.env['TAPGATE_DEBUG_POISON'] === '1';
/** Slabs reused after `transientRecycle` (the first SLABS_KEPT made). */
const slabs: ArrayBuffer[] = [];
/** The slab being cut: its index (≥ slabs.length: one not kept), the slab, bytes cut from it. */
let slabIndex = -1;
/** No slab yet (shared: a recycle makes no buffer). */
const NO_SLAB = new ArrayBuffer(0);
let slab = NO_SLAB;
let slabUsed = 0;

/**
 * Uninitialised bytes for a buffer that dies within the current batch: a rebuilt frame (written
 * to the TAP at the batch's end), a rewritten payload (copied into its frame). Pieces are cut
 * from shared 1 MiB slabs, so a frame costs a view, not a backing store of its own: per small
 * keep-alive request, making backing stores (and collecting them) was a tenth of the gateway's
 * time, and a fresh 64 KiB store for every rebuilt GSO frame costs its pages' first touch. A
 * piece keeps its whole slab alive: never use this for bytes kept past the batch (copyBytes is
 * for those). Pieces over 256 KiB get their own backing store.
 *
 * Until `transientRecycle` is called, no byte is handed out twice (a full slab is followed by a
 * new one). The live loop calls it once a batch is written (engine/live.ts `flush`): from then on
 * the kept slabs are cut again from their start, no new memory at all.
 */
export function transientBytes(n: number): Uint8Array {
  if (n > SLAB_PIECE_MAX) return ownBytes(n);
  if (slabUsed + n > slab.byteLength) nextSlab();
  const out = new Uint8Array(slab, slabUsed, n);
  // 8-byte aligned pieces.
  slabUsed += (n + 7) & ~7;
  return out;
}

/** `parts` one after the other in transient bytes (see transientBytes). */
export function transientConcat(parts: readonly Uint8Array[]): Uint8Array {
  let n = 0;
  for (const q of parts) n += q.length;
  const out = transientBytes(n);
  let off = 0;
  for (const q of parts) {
    out.set(q, off);
    off += q.length;
  }
  return out;
}

function nextSlab(): void {
  slabIndex++;
  if (slabIndex < slabs.length) slab = slabs[slabIndex]!;
  else {
    slab = Buffer.allocUnsafeSlow(SLAB_BYTES).buffer;
    if (slabs.length < SLABS_KEPT) slabs.push(slab); // then slabIndex === slabs.length - 1
  }
  slabUsed = 0;
}

/**
 * Every piece `transientBytes` handed out is dead: the kept slabs are cut again from their start.
 * Only for the owner of the batch, once everything built in it was written and nothing keeps a
 * piece (engine/live.ts: every port that keeps a frame past `write` keeps a copy; the cluster's
 * held frames are copies). Anything else never calls it, and its pieces are never reused.
 */
export function transientRecycle(): void {
  if (POISON) {
    // Debugging: every byte handed out since the last recycle is overwritten, so a piece kept
    // past its batch shows as corrupt bytes (bad checksums, wrong bodies) rather than passing.
    for (let i = 0; i <= slabIndex && i < slabs.length; i++) new Uint8Array(slabs[i]!, 0, i === slabIndex ? slabUsed : SLAB_BYTES).fill(0xa5);
  }
  slabIndex = -1;
  slab = NO_SLAB;
  slabUsed = 0;
}
