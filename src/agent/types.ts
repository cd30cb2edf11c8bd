/**
 * The agent API (docs/ARCHITECTURE.md §3). An agent reads each direction's byte stream once and in order
 * and answers with edits of that stream. It never sees sequence numbers, packets or
 * retransmissions: positions are 0-based byte positions in the *original* stream of one
 * direction (position 0 = the first data byte after the SYN).
 *
 * Contract, per direction (the engine checks it and treats a violation as an agent bug: the
 * connection falls back to pass-through for that direction, counted):
 * - `feed` is called with consecutive ranges [pos, pos + data.length), each byte once.
 * - The returned edits are sorted, do not overlap, and lie inside the bytes fed so far that are
 *   not yet decided: `at >= previous undecidedFrom` (an agent may edit bytes it held back), and
 *   `at + len <= undecidedFrom` of this answer.
 * - `undecidedFrom` (default: the end of the data fed) says that bytes from there on are not
 *   decided yet (the seed's "PORT 40, " case): the engine releases the segment without them and
 *   asks again when more bytes come. It never decreases, and bytes before it are final.
 * - `flush` decides everything still undecided (end of stream, hold timeout, hold limit): its
 *   answer's `undecidedFrom` is ignored and taken as the end of the data fed. At the end of the
 *   stream (FIN) it is called even when nothing is held: an insertion at the end (`len` 0 at the
 *   end of the data fed) then travels with the FIN segment.
 * - A pure insertion (`len` 0) travels with the segment that *starts* at its position (F maps
 *   an insertion at p to the front of p). One at the very end of the data fed therefore waits
 *   for the sender's next byte, which may never come (a keep-alive connection between
 *   messages): an agent that must append after the last byte fed replaces that byte instead
 *   (the http agent's `carryEndInsertion`).
 * - `snapshot` returns plain data (JSON-serialisable) from which `restore` rebuilds the agent:
 *   the cluster moves it between nodes.
 */

export type Direction = 'c2s' | 's2c';

export interface Edit {
  /** First original byte replaced (0-based stream position). */
  at: number;
  /** How many original bytes are replaced (0 = pure insertion before `at`). */
  len: number;
  /**
   * Replacement bytes (may be empty: deletion). The engine copies them before the agent's call
   * returns to the gateway, so they need only live until the current batch is written: an agent
   * may hand out transient bytes (util/bytes.ts). An agent that keeps edits past its call (the
   * http agent's held fixlen body) keeps copies.
   */
  data: Uint8Array;
}

export interface AgentOutput {
  edits: Edit[];
  /** Bytes from this position on are undecided (held back). Absent = everything fed is decided. */
  undecidedFrom?: number;
  /**
   * The agent gives up on the connection (why, e.g. `http-refused:noFraming`): its edits still
   * apply, then the gateway resets both ends and answers whatever either sends later with a RST
   * (engine/abort.ts). For a message that cannot be forwarded and cannot be answered either (a
   * refused request), so neither end waits for bytes that will never come.
   */
  abort?: string;
  /**
   * What the other direction holds can be decided now (the http agent: the answer to CONNECT /
   * Upgrade opened a tunnel, and bytes the client sent ahead of it wait): the engine flushes that
   * direction at once (reason 'answer') instead of at its hold timeout.
   */
  wake?: boolean;
}

/** Why held bytes must be decided: the stream's end, a RST, the hold timeout, the size limit, or
 *  the other direction's answer (AgentOutput.wake). */
export type FlushReason = 'fin' | 'rst' | 'timeout' | 'limit' | 'answer';

/** What an agent knows about its connection. Runtime handles (sinks, loggers) live here, not in state. */
export interface AgentContext {
  /** Stable connection id, e.g. "10.200.0.1:40000-10.200.0.2:80#0". */
  flowId: string;
  client: { addr: string; port: number };
  server: { addr: string; port: number };
  /** Which directions this agent may edit (a rule may restrict itself to one). */
  directions: ReadonlySet<Direction>;
  /**
   * Runtime: the TAP (0 or 1) the client's segments arrive on, once the gateway knows it (live:
   * from the handshake, engine/track.ts); undefined before, in a replay, or on a cluster node.
   */
  clientFrom?: () => 0 | 1 | undefined;
  /** Runtime: where the agent reports what it did (the gateway's event log); absent = nobody listens. */
  event?: (ev: Record<string, unknown>) => void;
  /**
   * Runtime: a warn line in the gateway's log, rate-limited per `key` as its drop lines are (the
   * agent refused a message…); `obj` is built only when the line is written. Absent = no log.
   */
  log?: (key: string, obj: () => Record<string, unknown>, msg: string) => void;
}

export interface Agent {
  readonly name: string;
  feed(dir: Direction, pos: number, data: Uint8Array): AgentOutput;
  flush(dir: Direction, reason: FlushReason): AgentOutput;
  snapshot(): unknown;
  /**
   * Cluster takeover (docs/ARCHITECTURE.md §5): the bytes of `dir` before `pos` were released by another
   * node after the snapshot this agent was restored from, unseen by it. Drop any partial state
   * (a match in progress, a half line) and expect the next `feed` at `pos`. An agent without it
   * is turned off for that direction after such a gap (counted).
   */
  resync?(dir: Direction, pos: number): void;
  /** Rewrites made so far (matches replaced, endpoints translated): per-rule statistics. */
  rewrites?(): number;
  /**
   * The connection leaves this gateway (closed, expired, moved to another node; a move takes a
   * snapshot first): free what the agent holds of gateway-wide bounds (the http agent's bodies
   * being decoded). Called once; the agent is not used after it.
   */
  dispose?(): void;
}

export interface AgentFactory<Cfg = unknown> {
  readonly name: string;
  create(cfg: Cfg, ctx: AgentContext): Agent;
  restore(cfg: Cfg, ctx: AgentContext, state: unknown): Agent;
}

export const NO_EDITS: AgentOutput = Object.freeze({ edits: [] }) as AgentOutput;
