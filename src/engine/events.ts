/**
 * The event log (`--events FILE`, in the spirit of Suricata's eve.json): one JSON object per
 * line, each with `event` and the time (`ts`, added by the sink). README "Operating" documents
 * the fields. Kinds:
 * - `flow`: a connection ended (or was still open when the gateway stopped): its endpoints, the
 *   rule and agent it got, frames and payload bytes per direction as they came in and as they
 *   went out (after rewriting), how long it lasted and how it ended;
 * - `ftp`: the ftp agent translated an address and expects a data connection;
 * - `drop` (and other warnings): what the gateway dropped and why, rate-limited per reason like
 *   the log (a summary says how many were left out).
 * The gateway keeps per-connection tallies only while an event sink is set.
 */

/** Receives every event; `nowMs` is the gateway's time (capture time in replay). */
export type EventSink = (ev: Record<string, unknown>, nowMs: number) => void;

/** What one connection carried, per side it came from (0: client side, 1: server side). */
export interface FlowTally {
  framesIn: [number, number];
  bytesIn: [number, number];
  framesOut: [number, number];
  bytesOut: [number, number];
  /** The rule (name, else 1-based position) and agent it got; null: no rule matched. */
  rule: string | null;
  agent: string | null;
}

export function newTally(): FlowTally {
  return { framesIn: [0, 0], bytesIn: [0, 0], framesOut: [0, 0], bytesOut: [0, 0], rule: null, agent: null };
}

/**
 * What `t` counted, for an entry re-made with its other side as the client: sides swapped, no
 * rule yet (the new entry's is its own to find).
 */
export function swappedTally(t: FlowTally): FlowTally {
  const sw = (x: [number, number]): [number, number] => [x[1], x[0]];
  return { framesIn: sw(t.framesIn), bytesIn: sw(t.bytesIn), framesOut: sw(t.framesOut), bytesOut: sw(t.bytesOut), rule: null, agent: null };
}

export type FlowEnd = 'fin' | 'rst' | 'abort' | 'timeout' | 'moved' | 'open';

export interface FlowInfo {
  id: string;
  client: string;
  server: string;
  createdMs: number;
  midstream: boolean;
  state: string;
}

/** The `flow` event. Directions: c2s = what the client sent, s2c = what the server sent. */
export function flowEvent(f: FlowInfo, t: FlowTally, end: FlowEnd, nowMs: number): Record<string, unknown> {
  const dir = (i: 0 | 1) => ({ frames: t.framesIn[i], bytes: t.bytesIn[i], framesOut: t.framesOut[i], bytesOut: t.bytesOut[i] });
  return {
    event: 'flow',
    flow: f.id,
    client: f.client,
    server: f.server,
    rule: t.rule,
    agent: t.agent,
    midstream: f.midstream,
    durationMs: Math.max(0, Math.round(nowMs - f.createdMs)),
    end,
    state: f.state,
    c2s: dir(0),
    s2c: dir(1),
  };
}
