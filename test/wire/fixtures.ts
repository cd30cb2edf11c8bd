/**
 * Byte fixtures shared by the wire tests. Frames are Ethernet II without FCS, as read from a
 * TAP. SYN / SYN-ACK are Linux 6.x loopback captures (tcpdump -xx) with MACs filled in and
 * the TCP checksum completed (loopback carries CHECKSUM_PARTIAL; SYN_LO_PARTIAL is the raw
 * capture); the others were built with an independent script (Python struct + RFC 1071).
 */

export function hex(s: string): Uint8Array {
  const clean = s.replace(/\s+/g, '');
  const out = new Uint8Array(clean.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(clean.slice(2 * i, 2 * i + 2), 16);
  return out;
}

export function toHex(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex');
}

/** 127.0.0.1:34228 → :45678 SYN, win 65495, [mss 65495, sackOK, TS 1745028372/0, nop, wscale 10]. */
export const SYN =
  '525400d4e5f6 525400a1b2c3 0800' +
  '4500003c662b40004006d68e7f0000017f000001' +
  '85b4b26e3431b84a00000000a002ffd7be480000' +
  '0204ffd7 0402 080a6803051400000000 01 03030a';

/** The same SYN as captured on lo: zero MACs, TCP checksum = pseudo-header sum (partial). */
export const SYN_LO_PARTIAL =
  '000000000000 000000000000 0800' +
  '4500003c662b40004006d68e7f0000017f000001' +
  '85b4b26e3431b84a00000000a002ffd7fe300000' +
  '0204ffd7 0402 080a6803051400000000 01 03030a';

/** SYN-ACK behind an 802.1ad S-tag (VID 100) and an 802.1Q C-tag (PCP 5, VID 200). */
export const QINQ_SYNACK =
  '525400a1b2c3 525400d4e5f6 88a80064 8100a0c8 0800' +
  '4500003c0000400040063cba7f0000017f000001' +
  'b26e85b48c422a4e3431b84ba012ffcb0dc40000' +
  '0204ffd70402080ad7e3220b680305140103030a';

/**
 * 10.0.1.2:80 → 10.0.0.1:34228 PSH|ACK "hello world", options [nop, nop, TS, nop, nop,
 * SACK (875673700-875674700, 875675700-875676700)]; data offset 13.
 */
export const DATA_SACK =
  '525400a1b2c3 525400d4e5f6 0800' +
  '45000053ab51400040067a510a0001020a000001' +
  '005085b48c422a4f3431b856d01801f61dcd0000' +
  '0101 080ad7e3220d68030515 0101 0512 3431b8643431bc4c 3431c0343431c41c' +
  '68656c6c6f20776f726c64';

/** who-has 10.0.0.2 tell 10.0.0.1, padded to the 60-byte Ethernet minimum. */
export const ARP_REQ =
  'ffffffffffff 525400a1b2c3 0806' +
  '0001 0800 06 04 0001 525400a1b2c3 0a000001 000000000000 0a000002' +
  '000000000000000000000000000000000000';

/** IGMPv2 report for 224.0.0.251, TTL 1, TOS 0xc0, IPv4 Router Alert option (RFC 2113). */
export const IGMP_RA =
  '01005e0000fb 525400a1b2c3 0800' +
  '46c00020000040000102f91b0a000001e00000fb 94040000' +
  '16000904e00000fb';

/** Pure ACK, 54 bytes + 6 bytes of Ethernet padding. */
export const ACK_PADDED =
  '525400d4e5f6 525400a1b2c3 0800' +
  '45000028662e40004006bf9f0a0000010a000102' +
  '85b400503431b8568c422a5a501001f56fb40000' +
  '000000000000';

/** First fragment (MF, offset 0) of a TCP segment: 20 bytes TCP header + 12 of 24 data bytes. */
export const TCP_FRAG1 =
  '525400d4e5f6 525400a1b2c3 0800' +
  '45000034123420004006338e0a0000010a000102' +
  '85b400503431b8568c422a5a501801f560850000414141414141414141414141';

/** UDP 10.0.0.1:5353 → 10.0.1.2:53, "abcd". */
export const UDP =
  '525400d4e5f6 525400a1b2c3 0800' +
  '4500002000074000401125c40a0000010a000102' +
  '14e90035000c000061626364';

/** All Ethernet fixtures with the length up to which a frame is complete (ARP/IP end). */
export const ALL: ReadonlyArray<readonly [string, string, number]> = [
  ['SYN', SYN, 74],
  ['QINQ_SYNACK', QINQ_SYNACK, 82],
  ['DATA_SACK', DATA_SACK, 97],
  ['ARP_REQ', ARP_REQ, 42],
  ['IGMP_RA', IGMP_RA, 46],
  ['ACK_PADDED', ACK_PADDED, 54],
  ['TCP_FRAG1', TCP_FRAG1, 66],
  ['UDP', UDP, 46],
];

/** Straightforward RFC 1071 reference: words, 64-bit sum via BigInt-free loop, fold, complement. */
export function refSum(bytes: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < bytes.length; i += 2) {
    const hi = bytes[i]!;
    const lo = i + 1 < bytes.length ? bytes[i + 1]! : 0;
    s += hi * 256 + lo;
  }
  while (s > 0xffff) s = (s % 65536) + Math.floor(s / 65536);
  return s;
}
export function refChecksum(bytes: ArrayLike<number>): number {
  return 0xffff - refSum(bytes);
}
/** Reference TCP checksum over pseudo-header + segment (with the checksum field zeroed). */
export function refTcpChecksum(src: number, dst: number, seg: Uint8Array): number {
  const ph = [
    src >>> 24, (src >>> 16) & 255, (src >>> 8) & 255, src & 255,
    dst >>> 24, (dst >>> 16) & 255, (dst >>> 8) & 255, dst & 255,
    0, 6, seg.length >>> 8, seg.length & 255,
  ];
  const s = seg.slice();
  s[16] = 0;
  s[17] = 0;
  return refChecksum([...ph, ...s]);
}
