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

/** The slab `transientBytes` cuts from, and the largest piece it cuts (bigger ones get their own). */
const SLAB_BYTES = 256 * 1024;
const SLAB_PIECE_MAX = 16 * 1024;
let slab = new ArrayBuffer(0);
let slabUsed = 0;

/**
 * Uninitialised bytes for a buffer that dies within the current batch: a rebuilt frame (written
 * to the TAP at the batch's end), a rewritten payload (copied into its frame). Pieces are cut
 * from a shared 256 KiB slab, so a small frame costs a view, not a backing store of its own: per
 * small keep-alive request, making backing stores (and collecting them) was a tenth of the
 * gateway's time. A piece keeps its whole slab alive: never use this for bytes kept past the
 * batch (copyBytes is for those). Pieces over 16 KiB get their own backing store.
 */
export function transientBytes(n: number): Uint8Array {
  if (n > SLAB_PIECE_MAX) return ownBytes(n);
  if (slabUsed + n > slab.byteLength) {
    slab = Buffer.allocUnsafeSlow(SLAB_BYTES).buffer;
    slabUsed = 0;
  }
  const out = new Uint8Array(slab, slabUsed, n);
  // 8-byte aligned pieces.
  slabUsed += (n + 7) & ~7;
  return out;
}
