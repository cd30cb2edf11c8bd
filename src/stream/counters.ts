/**
 * Engine counters: every limit, drop and unusual path has one (docs/ARCHITECTURE.md §7 conventions 3 and 4). Plain
 * numbers in one object so statistics, tests and the cluster can read them without ceremony.
 */
export function newStreamCounters() {
  return {
    /** Segments handed to the stream engine (data, FIN or RST bearing). */
    segments: 0,
    /** Segments processed at least partly (n ≤ x < m): new bytes went to the agent. */
    processed: 0,
    /** Segments (or parts) already processed (m ≤ x): rewritten from stored commands only. */
    alreadyProcessed: 0,
    /** Early segments (n > x) delayed in the queue. */
    delayed: 0,
    /** Delayed segments released after the gap before them was filled. */
    drained: 0,
    /** Early segments discarded: the connection's or the global queue budget was full. */
    queueOverflow: 0,
    /** Early segments discarded because a queued one already covers them. */
    queueDuplicate: 0,
    /** Segments starting too far ahead of x to be plausible (maxAheadBytes). */
    farAhead: 0,
    /** Bytes given to agents. */
    agentBytes: 0,
    /** Modification commands created. */
    commands: 0,
    /** Commands pruned after the receiver acknowledged them. */
    commandsPruned: 0,
    /** Commands erased by the count/age cap before being acknowledged. */
    commandsErased: 0,
    /** Segments discarded because they needed an erased command. */
    erasedDiscard: 0,
    /** Segments fully below the acknowledged floor, sent on as zero-length probes. */
    belowFloor: 0,
    /** Segments trimmed at the front because part of them was below the acknowledged floor. */
    trimmed: 0,
    /** Retransmissions whose bytes differed from the processed ones, rewritten (inline normalisation). */
    normalized: 0,
    /** Bytes of retransmissions that could not be checked (evicted from the normalisation store). */
    normalizeUnverified: 0,
    /** Bytes evicted from the normalisation store by its limit. */
    normalizeEvicted: 0,
    /** Times an agent held bytes back. */
    holds: 0,
    /** Held bytes flushed on FIN / RST / timeout / limit / the other direction's answer (AgentOutput.wake). */
    flushFin: 0,
    flushRst: 0,
    flushTimeout: 0,
    flushLimit: 0,
    flushAnswer: 0,
    /** Segments the gateway originated (flushed held bytes) and their retransmissions. */
    synthSent: 0,
    synthRetransmit: 0,
    synthGiveUp: 0,
    /** Agents that broke the contract or threw: that direction falls back to pass-through. */
    agentViolation: 0,
    agentError: 0,
    /** Segments split because they grew past the receiver's MSS. */
    splits: 0,
    /** Data after the FIN, ignored. */
    dataAfterFin: 0,
    /** ACKs translated, SACK blocks translated, SACK blocks dropped (nothing left to claim). */
    acksTranslated: 0,
    /** Segments whose URG flag and urgent pointer were cleared (`policy.urgent: inline`). */
    urgentInlined: 0,
    /**
     * Segments (or their tails) dropped because they went past what the normalisation store
     * keeps unacknowledged (`normalizeBytesPerConn`): a sender that ignored the window it was given.
     */
    beyondStore: 0,
    /** ACKs whose window was cut to the normalisation store's bound. */
    windowClamped: 0,
    /** Of `beyondStore`: the stores of all connections held `normalizeBytesGlobal`. */
    storeBudgetFull: 0,
    sackTranslated: 0,
    sackDropped: 0,
    /** Cluster takeovers from a snapshot behind the receiver: skips, bytes taken as passed, held bytes dropped. */
    adoptSkips: 0,
    adoptSkippedBytes: 0,
    adoptHeldDropped: 0,
  };
}

export type StreamCounters = ReturnType<typeof newStreamCounters>;

/** Shared between all connections: the global queue budget, and the bytes of every normalisation store. */
export interface GlobalBudget {
  queueBytes: number;
  storeBytes: number;
}
