/**
 * TCP sequence-number arithmetic modulo 2^32 (RFC 9293 §3.4, RFC 1982 serial numbers).
 *
 * This is the only module that does wrap-around arithmetic. Everything above `wire/` works in
 * 64-bit-safe byte offsets from the ISN (JavaScript numbers, exact up to 2^53): a sequence number
 * is converted into an offset once, at the edge, with `seqToOffset`, and back with `offsetToSeq`.
 * A raw `<` on two sequence numbers is a bug; use `seqLt` and friends.
 */

/** A TCP sequence number: an unsigned 32-bit integer. */
export type Seq = number;

const MOD = 0x1_0000_0000;

/** Normalise any integer into [0, 2^32). */
export function seq(n: number): Seq {
  return ((n % MOD) + MOD) % MOD;
}

/** a + n modulo 2^32 (n may be negative). */
export function seqAdd(a: Seq, n: number): Seq {
  return seq(a + n);
}

/** The signed distance b - a in (-2^31, 2^31]: how far b is ahead of a. */
export function seqDiff(b: Seq, a: Seq): number {
  return ((b - a) | 0);
}

export function seqLt(a: Seq, b: Seq): boolean {
  return seqDiff(b, a) > 0;
}
export function seqLe(a: Seq, b: Seq): boolean {
  return seqDiff(b, a) >= 0;
}
export function seqGt(a: Seq, b: Seq): boolean {
  return seqDiff(a, b) > 0;
}
export function seqGe(a: Seq, b: Seq): boolean {
  return seqDiff(a, b) >= 0;
}

/** lo <= s < hi, in sequence space (the window [lo, hi) must be shorter than 2^31). */
export function seqInRange(s: Seq, lo: Seq, hi: Seq): boolean {
  return seqLe(lo, s) && seqLt(s, hi);
}

export function seqMax(a: Seq, b: Seq): Seq {
  return seqGe(a, b) ? a : b;
}
export function seqMin(a: Seq, b: Seq): Seq {
  return seqLe(a, b) ? a : b;
}

/**
 * Converts a wire sequence number into a byte offset from `isn` (offset 0 is the SYN), using a
 * nearby known offset `near` to resolve the wrap: the result is the offset congruent to
 * `s - isn` modulo 2^32 that is closest to `near`. Offsets may be negative for bytes before the
 * ISN (garbage, or a keep-alive probe just before the first byte).
 */
export function seqToOffset(s: Seq, isn: Seq, near: number): number {
  // seqDiff(s, offsetToSeq(near, isn)) without the modulo: ToInt32 (`| 0`) reduces any integer
  // below 2^53 modulo 2^32 exactly, so the difference of the unreduced values will do. (Per
  // segment this runs a few times: it is the hot path of the tracker and the engine.)
  return near + ((s - isn - near) | 0);
}

/** Converts a byte offset from `isn` back into a wire sequence number. */
export function offsetToSeq(off: number, isn: Seq): Seq {
  // ToUint32 (`>>> 0`) is the modulo 2^32 of an integer below 2^53, negative ones included.
  return (isn + off) >>> 0;
}
