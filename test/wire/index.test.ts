import { describe, it, expect } from 'vitest';
import * as wire from '../../src/wire/index.js';

describe('wire/index', () => {
  it('re-exports the public API of every module', () => {
    for (const name of [
      'sum16', 'fold16', 'finish', 'ipv4PseudoHeaderSum', 'csumReplace16', 'csumReplace32', 'csumReplaceBytes',
      'seqLt', 'seqToOffset', 'offsetToSeq',
      'EthernetFrame', 'EthernetRepr', 'macToString', 'parseMac',
      'ArpPacket', 'ArpRepr',
      'Ipv4Packet', 'Ipv4Repr', 'ipv4ToString', 'parseIpv4',
      'TcpSegment', 'TcpRepr', 'emitTcpOptions', 'tcpOptionsLen',
      'VirtioNetHdr', 'VirtioNetHdrRepr', 'completePartialChecksum',
      'decodeFrame', 'WireError', 'isWireError',
    ] as const) {
      expect(typeof (wire as Record<string, unknown>)[name], name).toBe('function');
    }
    expect(wire.TcpFlag.NS).toBe(0x100);
    expect(wire.ETHERTYPE_QINQ).toBe(0x88a8);
    expect(wire.VIRTIO_NET_HDR_LEN).toBe(10);
  });
});
