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
  const b = n < 4096 && !longLived ? Buffer.allocUnsafe(n) : Buffer.allocUnsafeSlow(n);
  b.set(a);
  return new Uint8Array(b.buffer, b.byteOffset, n);
}
