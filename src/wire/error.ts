/**
 * Typed parse errors of `wire/` (docs/ARCHITECTURE.md §7 convention 3: malformed input is a result, not an
 * exception). `reason` is a short, stable, machine-friendly code meant to be used as a counter
 * key; `detail` is for humans (logs) and may change.
 */

export type WireLayer = 'ethernet' | 'arp' | 'ipv4' | 'ipv6' | 'tcp' | 'virtio';

export type WireErrorReason =
  // Ethernet II / 802.1Q / 802.1ad
  | 'ethernet-truncated'
  | 'ethernet-vlan-truncated'
  // ARP (RFC 826)
  | 'arp-truncated'
  | 'arp-bad-hardware-type'
  | 'arp-bad-protocol-type'
  | 'arp-bad-address-length'
  | 'arp-bad-opcode'
  // IPv4 (RFC 791)
  | 'ipv4-truncated'
  | 'ipv6-truncated'
  | 'ipv6-chain-truncated'
  | 'ipv6-hbh-not-first'
  | 'ipv6-rh0'
  | 'ipv6-option-unknown'
  | 'ipv6-option-bad'
  | 'ipv6-first-fragment-incomplete'
  | 'ipv6-fragment-bad'
  | 'ipv6-tcp-fragment'
  | 'ipv4-bad-version'
  | 'ipv4-bad-ihl'
  | 'ipv4-header-exceeds-frame'
  | 'ipv4-total-length-below-header'
  | 'ipv4-total-length-exceeds-frame'
  | 'ipv4-option-overflow'
  | 'ipv4-option-bad-length'
  | 'ipv4-bad-checksum'
  // TCP (RFC 9293)
  | 'tcp-truncated'
  | 'tcp-bad-data-offset'
  | 'tcp-data-offset-exceeds-segment'
  | 'tcp-option-overflow'
  | 'tcp-option-bad-length'
  | 'tcp-bad-checksum'
  // virtio-net header
  | 'virtio-truncated'
  | 'virtio-bad-gso-type'
  | 'virtio-bad-csum-offset';

/**
 * A parse failure. A class (not a plain object) so that `x instanceof WireError` tells a result
 * from a view in one monomorphic check; `kind: 'error'` lets it sit in discriminated unions
 * (see `frame.ts`).
 */
export class WireError<L extends WireLayer = WireLayer> {
  readonly kind = 'error' as const;
  constructor(
    readonly layer: L,
    readonly reason: WireErrorReason,
    readonly detail: string,
  ) {}
}

export function isWireError(x: unknown): x is WireError {
  return x instanceof WireError;
}
