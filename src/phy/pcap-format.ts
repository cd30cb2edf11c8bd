/**
 * The pcap and pcapng vocabulary shared by the reader (./pcap-read.ts) and the writer
 * (./pcap-write.ts): link types, magics and header sizes, the record a reader yields, the
 * errors it reports. Formats: draft-ietf-opsawg-pcap, draft-ietf-opsawg-pcapng; link types:
 * https://www.tcpdump.org/linktypes.html.
 */

// ---------------------------------------------------------------------------------------------
// Link types

/**
 * What a record's bytes start with: an Ethernet header, directly an IP header, or a link header
 * replay turns into raw IP (./capture-fixup.ts): Linux cooked v1/v2 (`tcpdump -i any`), BSD
 * loopback (NULL: a host-order address family; LOOP: network order).
 */
export type PcapLink = 'ethernet' | 'raw-ipv4' | 'linux-sll' | 'linux-sll2' | 'null' | 'loop';

export const LINKTYPE_ETHERNET = 1;
/** LINKTYPE_RAW: raw IP (v4 here; the wire parser rejects anything else). */
export const LINKTYPE_RAW = 101;
/** DLT_RAW as it appears literally in some files: 12 (most BSDs), 14 (OpenBSD). */
export const DLT_RAW_12 = 12;
export const DLT_RAW_14 = 14;
/** LINKTYPE_IPV4 / LINKTYPE_IPV6: raw IP of one version (the raw-IP parser tells them apart). */
export const LINKTYPE_IPV4 = 228;
export const LINKTYPE_IPV6 = 229;
export const LINKTYPE_NULL = 0;
export const LINKTYPE_LOOP = 108;
export const LINKTYPE_LINUX_SLL = 113;
export const LINKTYPE_LINUX_SLL2 = 276;

const LINK_NAMES: Readonly<Record<number, string>> = {
  0: 'NULL (BSD loopback)',
  1: 'ETHERNET',
  6: 'IEEE802_5',
  9: 'PPP',
  12: 'DLT_RAW',
  14: 'DLT_RAW (OpenBSD)',
  101: 'RAW',
  105: 'IEEE802_11',
  108: 'LOOP (OpenBSD loopback)',
  113: 'LINUX_SLL (tcpdump -i any)',
  127: 'IEEE802_11_RADIOTAP',
  228: 'IPV4',
  229: 'IPV6',
  276: 'LINUX_SLL2 (tcpdump -i any)',
};

/** The `PcapLink` a link-type number maps to, or undefined if tapgate cannot replay it. */
export function linkFromLinkType(linkType: number): PcapLink | undefined {
  switch (linkType) {
    case LINKTYPE_ETHERNET:
      return 'ethernet';
    case LINKTYPE_RAW:
    case DLT_RAW_12:
    case DLT_RAW_14:
    case LINKTYPE_IPV4:
    case LINKTYPE_IPV6:
      return 'raw-ipv4';
    case LINKTYPE_LINUX_SLL:
      return 'linux-sll';
    case LINKTYPE_LINUX_SLL2:
      return 'linux-sll2';
    case LINKTYPE_NULL:
      return 'null';
    case LINKTYPE_LOOP:
      return 'loop';
    default:
      return undefined;
  }
}

/** The link-type number the writer records for a `PcapLink`. */
export function linkTypeFromLink(link: PcapLink): number {
  switch (link) {
    case 'ethernet':
      return LINKTYPE_ETHERNET;
    case 'raw-ipv4':
      return LINKTYPE_RAW;
    case 'linux-sll':
      return LINKTYPE_LINUX_SLL;
    case 'linux-sll2':
      return LINKTYPE_LINUX_SLL2;
    case 'null':
      return LINKTYPE_NULL;
    case 'loop':
      return LINKTYPE_LOOP;
  }
}

function linkTypeName(linkType: number): string {
  const name = LINK_NAMES[linkType];
  return name === undefined ? `${linkType}` : `${linkType} (${name})`;
}

export function unsupportedLinkMessage(linkType: number): string {
  return (
    `unsupported link type ${linkTypeName(linkType)}: tapgate replays ` +
    `1 (ETHERNET), 101/12/14/228/229 (raw IP), 113/276 (LINUX_SLL, SLL2) and 0/108 (NULL, LOOP)`
  );
}

// ---------------------------------------------------------------------------------------------
// Items and errors

export interface PcapRecord {
  readonly kind: 'record';
  /** The captured bytes (at most the snap length; a copy the caller owns). */
  readonly data: Uint8Array;
  /** The frame's length on the wire (>= data.length). */
  readonly origLen: number;
  /** Nanoseconds since the Unix epoch (see the file comment for why bigint). */
  readonly tsNs: bigint;
  readonly link: PcapLink;
  /** pcapng interface id within its section; 0 for classic pcap. */
  readonly interfaceId: number;
  /** pcapng section index (0-based, counts SHBs); 0 for classic pcap. */
  readonly section: number;
  /** Byte offset of the record header / block in the input. */
  readonly offset: number;
}

export type PcapErrorCode =
  /** The input could not be read (missing file, permission, stream error). */
  | 'io'
  /** Fewer bytes than a file header. */
  | 'short-header'
  /** Not a pcap/pcapng magic number. */
  | 'bad-magic'
  /** A version this reader does not know. */
  | 'unsupported-version'
  /** The input ends inside a record header, record or block. */
  | 'truncated'
  /** A pcapng block length that is impossible or disagrees with its trailer. */
  | 'bad-block-length'
  /** Captured length above the snap length or the reader's limit. */
  | 'record-too-large'
  /** A record/block whose fields contradict each other (caplen > origLen, bad options…). */
  | 'bad-record'
  /** A link type other than Ethernet / raw IPv4. */
  | 'unsupported-link-type'
  /** A pcapng packet referencing an interface no IDB declared. */
  | 'unknown-interface';

/** Malformed or unreadable capture input. `offset` is where the bad structure starts. */
export class PcapFormatError extends Error {
  override readonly name = 'PcapFormatError';
  readonly code: PcapErrorCode;
  readonly offset: number;
  constructor(code: PcapErrorCode, offset: number, message: string) {
    super(`${message} (at byte offset ${offset})`);
    this.code = code;
    this.offset = offset;
  }
}

export interface PcapErrorItem {
  readonly kind: 'error';
  readonly error: PcapFormatError;
}

export type PcapItem = PcapRecord | PcapErrorItem;

/** Largest record read, and the snap length written, by default. */
export const DEFAULT_MAX_RECORD = 262_144;

export const PCAP_MAGIC_MICRO = 0xa1b2c3d4;
export const PCAP_MAGIC_NANO = 0xa1b23c4d;
export const PCAP_MAGIC_MODIFIED = 0xa1b2cd34; // Kuznetzov's patched libpcap: 24-byte record headers
export const PCAPNG_SHB = 0x0a0d0d0a;
export const PCAPNG_BOM = 0x1a2b3c4d;
export const PCAPNG_IDB = 0x00000001;
export const PCAPNG_PB = 0x00000002; // obsolete Packet Block
export const PCAPNG_SPB = 0x00000003;
export const PCAPNG_EPB = 0x00000006;

export const PCAP_HEADER_LEN = 24;
export const PCAP_RECORD_HEADER_LEN = 16;

export const NS_PER_S = 1_000_000_000n;

export function dv(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

