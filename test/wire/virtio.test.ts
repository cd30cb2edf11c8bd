import { describe, it, expect } from 'vitest';
import { WireError } from '../../src/wire/error.js';
import {
  VIRTIO_NET_HDR_F_NEEDS_CSUM,
  VIRTIO_NET_HDR_GSO_ECN,
  VIRTIO_NET_HDR_GSO_TCPV4,
  VirtioNetHdr,
  VirtioNetHdrRepr,
  completePartialChecksum,
} from '../../src/wire/virtio.js';
import { TcpSegment } from '../../src/wire/tcp.js';
import { SYN, SYN_LO_PARTIAL, hex, toHex } from './fixtures.js';

/** A TSO super-frame header as tun.c writes it on x86: NEEDS_CSUM, TCPV4, hdr_len 66, gso_size 1448, csum 34+16. */
const GSO_LE = '01 01 4200 a805 2200 1000';
const GSO_BE = '01 01 0042 05a8 0022 0010';

function ok(b: Uint8Array, le = true): VirtioNetHdr {
  const h = VirtioNetHdr.parse(b, le);
  if (h instanceof WireError) throw new Error(h.reason);
  return h;
}

describe('virtio-net header', () => {
  it('deconstructs a little-endian GSO header', () => {
    const h = ok(hex(GSO_LE));
    expect(h.flags).toBe(VIRTIO_NET_HDR_F_NEEDS_CSUM);
    expect(h.needsCsum).toBe(true);
    expect(h.dataValid).toBe(false);
    expect(h.gsoType).toBe(VIRTIO_NET_HDR_GSO_TCPV4);
    expect([h.hdrLen, h.gsoSize, h.csumStart, h.csumOffset]).toEqual([66, 1448, 34, 16]);
  });
  it('the same header in big-endian (TUNSETVNETBE) reads the same', () => {
    const h = ok(hex(GSO_BE), false);
    expect([h.hdrLen, h.gsoSize, h.csumStart, h.csumOffset]).toEqual([66, 1448, 34, 16]);
  });
  it('repr re-encodes byte-exact in both byte orders', () => {
    for (const [x, le] of [[GSO_LE, true], [GSO_BE, false]] as const) {
      const r = VirtioNetHdrRepr.parse(ok(hex(x), le)) as VirtioNetHdrRepr;
      const out = new Uint8Array(10);
      expect(r.emit(out, le)).toBe(10);
      expect(toHex(out)).toBe(x.replace(/ /g, ''));
    }
  });
  it('the default repr is all zeros (no GSO, checksums complete)', () => {
    const out = new Uint8Array(12).fill(0xee);
    new VirtioNetHdrRepr().emit(out);
    expect(toHex(out)).toBe('00000000000000000000eeee');
  });
  it('setters write in the chosen byte order', () => {
    const b = new Uint8Array(10);
    const h = ok(b);
    h.setFlags(1);
    h.setGsoType(VIRTIO_NET_HDR_GSO_TCPV4);
    h.setHdrLen(66);
    h.setGsoSize(1448);
    h.setCsumStart(34);
    h.setCsumOffset(16);
    expect(toHex(b)).toBe(GSO_LE.replace(/ /g, ''));
  });
  it('every truncation below 10 bytes is virtio-truncated, without throwing', () => {
    const b = hex(GSO_LE);
    for (let n = 0; n < 10; n++) expect((VirtioNetHdr.parse(b.subarray(0, n)) as WireError).reason).toBe('virtio-truncated');
  });
  it('an unknown GSO type is rejected; the ECN bit is accepted', () => {
    const b = hex(GSO_LE);
    b[1] = 2;
    expect((VirtioNetHdrRepr.parse(ok(b)) as WireError).reason).toBe('virtio-bad-gso-type');
    b[1] = VIRTIO_NET_HDR_GSO_TCPV4 | VIRTIO_NET_HDR_GSO_ECN;
    expect(VirtioNetHdrRepr.parse(ok(b))).toBeInstanceOf(VirtioNetHdrRepr);
  });
  it('a checksum field outside the frame is rejected when the frame length is given', () => {
    const h = ok(hex(GSO_LE));
    expect((VirtioNetHdrRepr.parse(h, 51) as WireError).reason).toBe('virtio-bad-csum-offset');
    expect(VirtioNetHdrRepr.parse(h, 52)).toBeInstanceOf(VirtioNetHdrRepr);
  });
  it('completePartialChecksum turns the loopback capture into the full checksum', () => {
    const f = hex(SYN_LO_PARTIAL);
    completePartialChecksum(f, 34, 16);
    expect(toHex(f.subarray(14))).toBe(toHex(hex(SYN).subarray(14)));
    const seg = TcpSegment.parse(f.subarray(34)) as TcpSegment;
    expect(seg.verifyChecksum(0x7f000001, 0x7f000001)).toBe(true);
    expect(() => completePartialChecksum(f, 60, 16)).toThrow(RangeError);
  });
});
