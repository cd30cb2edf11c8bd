/**
 * CRC-32 (IEEE 802.3: reflected polynomial 0xEDB88320, initial and final value 0xFFFFFFFF):
 * the Ethernet frame check sequence, which the frame carries least significant byte first.
 */

const TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

export function crc32(buf: Uint8Array, start = 0, end = buf.length): number {
  let c = 0xffffffff;
  for (let i = start; i < end; i++) c = TABLE[(c ^ buf[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** True when the last 4 bytes of buf[0, end) are the FCS of the bytes before them. */
export function hasValidFcs(buf: Uint8Array, end = buf.length): boolean {
  if (end < 4) return false;
  const fcs = (buf[end - 4]! | (buf[end - 3]! << 8) | (buf[end - 2]! << 16) | (buf[end - 1]! << 24)) >>> 0;
  return crc32(buf, 0, end - 4) === fcs;
}
