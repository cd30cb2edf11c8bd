/**
 * Every queue, buffer and table of the engine has a named limit here (docs/ARCHITECTURE.md §7 convention 4); each is
 * paired with a counter in `Counters` that says how often it was hit.
 */
export interface Limits {
  /** Connection table size; a SYN beyond it is refused (passed through untracked), counted. */
  maxConnections: number;
  /** Bytes of early (out-of-order) segments delayed per direction of one connection. */
  queueBytesPerConn: number;
  /** Segments delayed per direction of one connection. */
  queueSegmentsPerConn: number;
  /** Bytes of early segments delayed over all connections. */
  queueBytesGlobal: number;
  /** Segments beginning further than this past x are discarded rather than delayed. */
  maxAheadBytes: number;
  /** Held-back (undecided) bytes per direction; beyond, the agent is made to decide (flush). */
  maxHeldBytes: number;
  /**
   * Held bytes are flushed (decided as they stand) after the sender has been silent this long
   * and no gap is waiting to be filled. Longer than Linux's initial RTO (1 s) so that a lost
   * segment's retransmission, not the timer, normally completes a split match.
   */
  holdTimeoutMs: number;
  /** Processed-but-unacknowledged original bytes kept per direction for inline normalisation: also the most a sender may have unacknowledged (its window is cut there, bytes past it dropped). */
  normalizeBytesPerConn: number;
  /**
   * The same bytes over all connections: a direction's store grows only while the stores of all
   * hold less (its sender's window is cut there too, bytes past it dropped, counted
   * `storeBudgetFull`), so senders whose receivers never acknowledge cannot fill the memory.
   */
  normalizeBytesGlobal: number;
  /** Commands kept per direction above the acknowledged point; older ones are erased. 0 = no cap. */
  maxCommands: number;
  /** Commands older than this are erased. 0 = no cap. */
  commandMaxAgeMs: number;
  /** Idle timeout for established connections. */
  idleTimeoutMs: number;
  /** Timeout for closing connections (a FIN seen one way), from their last segment. */
  closingTimeoutMs: number;
  /**
   * How long a connection closed both ways (both FINs, both acknowledged) or reset stays in the
   * table, from its close (closed both ways: or from its last segment); one whose FINs were both
   * seen but not both acknowledged stays closingTimeoutMs from its last segment, like a closing
   * one (flow/table.ts expire). Long enough to translate the retransmitted FINs and last ACKs of a close whose final
   * ACK was lost (Linux: 200 ms, then doubling), short enough that a gateway opening thousands of
   * connections a second does not keep minutes of dead ones (Linux conntrack: 10 s after a
   * RST). When the table is full, the oldest of them also makes room for a new SYN.
   */
  closedTimeoutMs: number;
  /**
   * Embryonic connections (handshake not completed; mid-stream ones not yet seen from both
   * sides) are removed this long after they were created: a SYN flood's entries go quickly.
   */
  synTimeoutMs: number;
  /**
   * Embryonic connections in the table at once; a SYN beyond it is refused (dropped, counted)
   * so that a flood cannot fill the table and deny established and new legitimate connections.
   */
  maxHalfOpen: number;
  /**
   * Largest frame accepted, link header + IPv4 packet (a virtio_net_hdr in front is not
   * counted); larger frames are dropped, counted (`frame-oversized`). The default is what the
   * largest IPv4 packet takes behind Ethernet with two VLAN tags.
   */
  maxFrameBytes: number;
  /** Retransmissions of gateway-originated (flushed) bytes before giving up. */
  maxSynthRetries: number;
}

export const DEFAULT_LIMITS: Readonly<Limits> = Object.freeze({
  maxConnections: 100_000,
  queueBytesPerConn: 1 << 20,
  queueSegmentsPerConn: 512,
  queueBytesGlobal: 64 << 20,
  maxAheadBytes: 8 << 20,
  maxHeldBytes: 64 << 10,
  holdTimeoutMs: 1500,
  normalizeBytesPerConn: 4 << 20,
  normalizeBytesGlobal: 512 << 20,
  maxCommands: 0,
  commandMaxAgeMs: 0,
  idleTimeoutMs: 3_600_000,
  closingTimeoutMs: 120_000,
  closedTimeoutMs: 10_000,
  synTimeoutMs: 30_000,
  maxHalfOpen: 25_000,
  maxFrameBytes: 14 + 8 + 65_535,
  maxSynthRetries: 8,
});
