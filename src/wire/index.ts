/**
 * `wire/`: pure parse/serialise of the frames tapgate handles (docs/ARCHITECTURE.md §1): Ethernet with
 * 802.1Q/802.1ad tags, ARP, IPv4, TCP with all options, the Internet checksum (full and
 * incremental), the virtio-net header of TAP GSO, and wrap-safe sequence arithmetic.
 * No state, no clock, no logging; malformed input is a `WireError` result.
 */

export * from './error.js';
export * from './checksum.js';
export * from './seq.js';
export * from './ethernet.js';
export * from './arp.js';
export * from './ipv4.js';
export * from './tcp.js';
export * from './virtio.js';
export * from './frame.js';
