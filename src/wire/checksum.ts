/**
 * The Internet checksum: RFC 1071 (computation) and RFC 1624 (incremental update).
 *
 * Terms used below:
 * - an *accumulator* (`acc`) is an unfolded one's-complement sum of 16-bit big-endian words,
 *   kept below 2^32 so it can be carried between calls (pseudo-header, header, payload);
 * - a *sum* is an accumulator folded into 16 bits (`fold16`);
 * - a *checksum* is the complemented folded sum (`finish`), what goes on the wire.
 *
 * Chaining `sum16` over several ranges is only correct when every range but the last has an
 * even length (a word must not straddle two calls).
 */

const TWO32 = 0x1_0000_0000;

/**
 * Adds the 16-bit big-endian words of `buf[start, end)` to `acc`. An odd trailing byte is
 * padded with a zero low byte (RFC 1071 §4.1). The result stays below 2^32.
 */
export function sum16(buf: Uint8Array, start = 0, end = buf.length, acc = 0): number {
  // JS numbers are exact to 2^53: a 64 KiB range adds < 2^31, so no fold is needed in the loop.
  let s = 0;
  let i = start;
  const even = end - ((end - start) & 1);
  for (; i + 8 <= even; i += 8) {
    s +=
      ((buf[i]! << 8) | buf[i + 1]!) +
      ((buf[i + 2]! << 8) | buf[i + 3]!) +
      ((buf[i + 4]! << 8) | buf[i + 5]!) +
      ((buf[i + 6]! << 8) | buf[i + 7]!);
  }
  for (; i < even; i += 2) s += (buf[i]! << 8) | buf[i + 1]!;
  if (even < end) s += buf[even]! << 8;
  let r = acc + s;
  // Keep the accumulator 32-bit safe: a partial fold preserves the sum modulo 0xffff.
  while (r >= TWO32) r = (r % 0x10000) + Math.floor(r / 0x10000);
  return r;
}

/** Folds an accumulator (any non-negative integer below 2^53) into 16 bits. */
export function fold16(acc: number): number {
  let r = acc;
  while (r > 0xffff) r = (r % 0x10000) + Math.floor(r / 0x10000);
  return r;
}

/** The checksum of an accumulator: its folded sum, complemented. */
export function finish(acc: number): number {
  return ~fold16(acc) & 0xffff;
}

/**
 * The accumulator of the IPv4 pseudo-header (RFC 9293 §3.1, RFC 768): source, destination,
 * zero + protocol, and the TCP/UDP length (header + data). Addresses are uint32 numbers.
 */
export function ipv4PseudoHeaderSum(src: number, dst: number, proto: number, l4len: number): number {
  return (
    (src >>> 16) + (src & 0xffff) + (dst >>> 16) + (dst & 0xffff) + (proto & 0xff) + (l4len & 0xffff)
  );
}

/**
 * RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'). Updates a checksum `csum` (as found on the wire)
 * for one 16-bit word changed from `oldWord` to `newWord`. Unlike eqn. 2 it never yields the
 * "-0" (0x0000 where 0xffff is meant) of RFC 1141; for a checksum that covers at least one
 * non-zero word (TCP/UDP with a pseudo-header, IPv4 headers) the result equals a full
 * recomputation.
 */
export function csumReplace16(csum: number, oldWord: number, newWord: number): number {
  return ~fold16((~csum & 0xffff) + (~oldWord & 0xffff) + (newWord & 0xffff)) & 0xffff;
}

/** RFC 1624 eqn. 3 for a 32-bit field (two words): sequence and acknowledgement numbers, addresses. */
export function csumReplace32(csum: number, oldU32: number, newU32: number): number {
  return (
    ~fold16(
      (~csum & 0xffff) +
        (~(oldU32 >>> 16) & 0xffff) +
        (~oldU32 & 0xffff) +
        ((newU32 >>> 16) & 0xffff) +
        (newU32 & 0xffff),
    ) & 0xffff
  );
}

/**
 * The same update for a *sum* rather than a checksum: S' = S + ~m + m'. This is what a partial
 * checksum holds (virtio-net NEEDS_CSUM / CHECKSUM_PARTIAL: the field carries the folded,
 * uncomplemented pseudo-header sum and the device adds the rest), so a NAT that changes an
 * address must update it with these, not with `csumReplace*`.
 */
export function sumReplace16(sum: number, oldWord: number, newWord: number): number {
  return fold16((sum & 0xffff) + (~oldWord & 0xffff) + (newWord & 0xffff));
}

/** `sumReplace16` for a 32-bit field. */
export function sumReplace32(sum: number, oldU32: number, newU32: number): number {
  return fold16(
    (sum & 0xffff) +
      (~(oldU32 >>> 16) & 0xffff) +
      (~oldU32 & 0xffff) +
      ((newU32 >>> 16) & 0xffff) +
      (newU32 & 0xffff),
  );
}

function swap16(x: number): number {
  return ((x & 0xff) << 8) | (x >>> 8);
}

/**
 * RFC 1624 eqn. 3 for a changed byte range: `oldBytes` replaced by `newBytes` (same length) at
 * offset `start` of the checksummed data (only its parity matters: bytes at odd offsets are the
 * low bytes of their words, RFC 1071 §2(B) byte-order independence, so the range's sum is
 * byte-swapped). Throws if the lengths differ (a caller bug).
 */
export function csumReplaceBytes(
  csum: number,
  oldBytes: Uint8Array,
  newBytes: Uint8Array,
  start: number,
): number {
  if (oldBytes.length !== newBytes.length) {
    throw new RangeError(`csumReplaceBytes: lengths differ (${oldBytes.length} vs ${newBytes.length})`);
  }
  let o = fold16(sum16(oldBytes));
  let n = fold16(sum16(newBytes));
  if (start & 1) {
    o = swap16(o);
    n = swap16(n);
  }
  return ~fold16((~csum & 0xffff) + (~o & 0xffff) + n) & 0xffff;
}
