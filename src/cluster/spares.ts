/**
 * The spare copies a cluster node keeps (docs/ARCHITECTURE.md §5): the latest published state of
 * every connection another node owns, found by its key or by the tuple its frames carry on
 * either side, what each side acknowledged since (the ACKs seen on the segments), and the
 * connection's latest frames (copies, bounded per connection and in total) to replay at
 * takeover. Everything here is bounded and counted; the node decides when a spare is taken over.
 */
import type { RawTuple, Side } from '../engine/gateway.js';
import { seqGt } from '../wire/seq.js';
import type { ClusterSnapshot } from './node.js';

export interface Spare {
  key: string;
  snap: ClusterSnapshot;
  /** Highest ACK sent by side 0 / side 1 since (seen on the segments). */
  acks: [number | undefined, number | undefined];
  rawKeys: string[];
  /**
   * The connection's latest frames as seen on the segments (copies, the last `recentMs`, bounded):
   * replayed at takeover, so what the sender sent while the owner was dead crosses at once
   * instead of after its next retransmission timeout.
   */
  recent: Array<{ frame: Uint8Array; from: Side; ms: number }>;
  recentBytes: number;
}

export interface SpareLimits {
  /** Spare copies kept at most (more are refused, counted). */
  maxSpares: number;
  /** How long frames are kept for replay, and how many bytes per connection and in all. */
  recentMs: number;
  recentBytesPerConn: number;
  recentBytesTotal: number;
}

/** The node's counters this store adds to. */
export interface SpareCounters {
  sparesKept: number;
  sparesRefused: number;
  recentKept: number;
  recentDropped: number;
}

/** A frame's tuple as it arrives on `side`: the key spares and local connections are found by. */
export function tupleKey(side: Side, t: RawTuple): string {
  return `${side}:${t.src}:${t.sport}:${t.dst}:${t.dport}`;
}

export class SpareStore {
  private readonly byKey = new Map<string, Spare>();
  private readonly byRaw = new Map<string, Spare>();
  /** Bytes of frames kept for replay, over all spares. */
  private recentBytes = 0;

  constructor(
    private readonly limits: SpareLimits,
    private readonly counters: SpareCounters,
  ) {}

  get size(): number {
    return this.byKey.size;
  }

  get(key: string): Spare | undefined {
    return this.byKey.get(key);
  }

  /** The spare whose frames arrive on a side with this tuple (tupleKey). */
  byTuple(rawKey: string): Spare | undefined {
    return this.byRaw.get(rawKey);
  }

  values(): IterableIterator<Spare> {
    return this.byKey.values();
  }

  /**
   * A published snapshot of `key`: kept (the spare returned), or not — the store is full
   * (counted), or it is older than the one kept from the same owner and incarnation (a
   * hand-over's final state always wins; a new incarnation numbers its publications anew).
   */
  keep(key: string, snap: ClusterSnapshot): Spare | null {
    let sp = this.byKey.get(key);
    if (sp === undefined) {
      if (this.byKey.size >= this.limits.maxSpares) {
        this.counters.sparesRefused++;
        return null;
      }
      sp = { key, snap, acks: [undefined, undefined], rawKeys: [], recent: [], recentBytes: 0 };
      this.byKey.set(key, sp);
      this.counters.sparesKept++;
    } else if (sp.snap.owner === snap.owner && sp.snap.ownerEpoch === snap.ownerEpoch && snap.seq < sp.snap.seq && snap.final === null) return null;
    sp.snap = snap;
    for (const side of [0, 1] as const) {
      const t = snap.raw[side];
      if (t === null) continue;
      const rk = tupleKey(side, t);
      if (!sp.rawKeys.includes(rk)) {
        sp.rawKeys.push(rk);
        this.byRaw.set(rk, sp);
      }
    }
    return sp;
  }

  /** Forgets `key` (taken over, deleted, or stale); returns the spare it was. */
  drop(key: string): Spare | undefined {
    const sp = this.byKey.get(key);
    if (sp === undefined) return undefined;
    this.byKey.delete(key);
    this.recentBytes -= sp.recentBytes;
    sp.recentBytes = 0;
    for (const rk of sp.rawKeys) if (this.byRaw.get(rk) === sp) this.byRaw.delete(rk);
    return sp;
  }

  /** A frame of the spare's connection seen on the segments (`from`): its ACK, and a copy to replay. */
  observe(sp: Spare, from: Side, ack: number, frame: Uint8Array, nowMs: number): void {
    const a = sp.acks[from];
    if (a === undefined || seqGt(ack, a)) sp.acks[from] = ack;
    const { recentMs, recentBytesPerConn, recentBytesTotal } = this.limits;
    const r = sp.recent;
    let drop = 0;
    while (drop < r.length && (nowMs - r[drop]!.ms > recentMs || sp.recentBytes + frame.length > recentBytesPerConn)) {
      sp.recentBytes -= r[drop]!.frame.length;
      this.recentBytes -= r[drop]!.frame.length;
      drop++;
    }
    if (drop > 0) r.splice(0, drop);
    if (frame.length > recentBytesPerConn || this.recentBytes + frame.length > recentBytesTotal) {
      this.counters.recentDropped++;
      return;
    }
    r.push({ frame: frame.slice(), from, ms: nowMs });
    sp.recentBytes += frame.length;
    this.recentBytes += frame.length;
    this.counters.recentKept++;
  }

  /** The age of the oldest spare's snapshot (status). */
  ageMaxMs(nowMs: number): number {
    let max = 0;
    for (const sp of this.byKey.values()) max = Math.max(max, nowMs - sp.snap.ms);
    return max;
  }
}
