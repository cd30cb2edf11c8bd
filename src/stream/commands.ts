/**
 * The modification-command list of one direction of a connection (seed, Figure 7 text;
 * docs/ARCHITECTURE.md §2) and the two mappings it defines:
 *
 * - `F(p)`, original stream position → new stream position. A command's replacement text is
 *   attached to its first original byte; positions strictly inside a replaced or deleted range
 *   map to the end of the replacement; an insertion at `p` (orgLen 0) travels with the segment
 *   that *starts* at `p`. A segment [a, b) becomes [F(a), F(b)).
 * - `G(A) = max p ≤ x such that F(p) ≤ A`, new position acknowledged by the receiver → original
 *   position acknowledged to the sender. Deleted (or held-back) bytes at the ACK point count as
 *   acknowledged; an ACK inside a replacement maps to the replaced range's start, so the sender
 *   resends it and the whole replacement is regenerated.
 *
 * Positions are 0-based stream positions (0 = first data byte after the SYN): never sequence
 * numbers. The list is ordered and non-overlapping; at most one command starts at a position
 * (an insertion at p followed by a command at p is merged into one).
 *
 * Commands whose whole original range is below what the receiver acknowledged are pruned; their
 * cumulative offset is kept as `floorOffset` (the seed's offset, valid for every position from
 * `floorPos` — the end of the last pruned command — up to the first remaining command). A
 * segment reaching below `floorPos` is trimmed there: the receiver has those bytes already.
 */
import { transientBytes } from '../util/bytes.js';
import { ByteStore } from './bytestore.js';

export interface Command {
  /** First original byte replaced (the seed's org_sequence). */
  org: number;
  /** Original bytes replaced (the seed's org_length; 0 = insertion). */
  orgLen: number;
  /** Where the replacement bytes (the seed's new_data) start in the list's data store. */
  dataPos: number;
  /** How many replacement bytes. */
  dataLen: number;
  /** Derived: new position of the replacement's first byte (the seed's new_sequence). */
  newSeq: number;
  /** Derived: cumulative offset new − org after this command (the seed's offset). */
  offset: number;
  /** When the command was created (injected time, ms): for the age cap. */
  createdMs: number;
}

export interface CommandJson {
  org: number;
  orgLen: number;
  data: string;
  createdMs: number;
}

const EMPTY = new Uint8Array(0);

/** The commands of every empty list (shared, never written: `add` replaces it first), so an
 *  idle direction holds no array of its own. */
const NO_COMMANDS = Object.freeze([]) as unknown as Command[];

export class CommandList {
  /** Ordered, non-overlapping. Invariant: cmds[i].org + cmds[i].orgLen <= cmds[i+1].org. */
  private cmds: Command[] = NO_COMMANDS;
  /**
   * The live commands' replacement bytes, in command order ([dataPos, dataPos + dataLen) each),
   * copied in by `add` and released as commands are pruned: a pooled ring (bytestore.ts), so a
   * rewritten bulk flow reuses memory that is already mapped instead of a new backing store per
   * command, and an agent may answer with bytes it reuses after the call. Null while empty.
   */
  private store: ByteStore | null = null;
  /** Index of the first live command (pruned ones are removed lazily, in batches). */
  private head = 0;
  /** Cumulative offset of every command below `floorPos` (pruned or erased). */
  floorOffset = 0;
  /** Positions below this can no longer be mapped exactly (their commands are gone). */
  floorPos = 0;
  /** Commands erased by the cap (not by acknowledgement): positions below `erasedPos` that are
   *  not yet acknowledged cannot be rewritten; segments needing them are discarded. */
  erasedPos = 0;

  get length(): number {
    return this.cmds.length - this.head;
  }

  /** The live commands, oldest first (a view for tests and snapshots). */
  list(): readonly Command[] {
    return this.head === 0 ? this.cmds : this.cmds.slice(this.head);
  }

  /** Original end of the last command (commands may only be appended at or after it). */
  end(): number {
    const last = this.last();
    return last ? last.org + last.orgLen : this.floorPos;
  }

  private last(): Command | undefined {
    return this.cmds.length > this.head ? this.cmds[this.cmds.length - 1] : undefined;
  }

  /** Offset new − org in force just after position `p`'s command (or before the first). */
  offsetAfterLast(): number {
    const last = this.last();
    return last ? last.offset : this.floorOffset;
  }

  /**
   * Appends a command; `data` is copied (the caller may reuse it). Commands come in stream
   * order; an insertion at p followed by a command at p is merged (the insertion's bytes stay
   * first, so anything already released with the insertion is unchanged). Throws on an
   * out-of-order command: that is an engine bug.
   */
  add(org: number, orgLen: number, data: Uint8Array, nowMs: number): void {
    if (orgLen === 0 && data.length === 0) return;
    const last = this.last();
    if (last && last.org === org && last.orgLen === 0) {
      // The insertion's bytes are the last stored: the new ones follow them.
      this.keep(data);
      last.orgLen = orgLen;
      last.dataLen += data.length;
      last.offset = last.offset - orgLen + data.length;
      return;
    }
    const prevEnd = last ? last.org + last.orgLen : this.floorPos;
    if (org < prevEnd) {
      throw new Error(`command at ${org} overlaps the previous one ending at ${prevEnd}`);
    }
    const prevOffset = last ? last.offset : this.floorOffset;
    if (this.cmds === NO_COMMANDS) this.cmds = [];
    const dataPos = this.keep(data);
    this.cmds.push({
      org,
      orgLen,
      dataPos,
      dataLen: data.length,
      newSeq: org + prevOffset,
      offset: prevOffset + data.length - orgLen,
      createdMs: nowMs,
    });
  }

  /** Copies `data` into the store; returns where it starts. */
  private keep(data: Uint8Array): number {
    const st = (this.store ??= new ByteStore());
    const at = st.end;
    st.append(data);
    return at;
  }

  /** Replacement bytes held for the live commands (and the ring holding them: 0 when none). */
  get dataBytes(): number {
    return this.store === null ? 0 : this.store.size;
  }

  get dataCapacity(): number {
    return this.store === null ? 0 : this.store.capacity;
  }

  /** A command's replacement bytes (a copy: snapshots and tests). */
  dataOf(c: Command): Uint8Array {
    return c.dataLen === 0 ? EMPTY : this.store!.read(c.dataPos, c.dataPos + c.dataLen);
  }

  /** Index (absolute into cmds) of the last command with org <= p, or head-1 if none. */
  private lastAtOrBefore(p: number): number {
    return this.lastWhere(p, false);
  }

  /** Index of the last command with newSeq <= A, or head-1 if none. */
  private lastNewAtOrBefore(a: number): number {
    return this.lastWhere(a, true);
  }

  /** Binary search over the live commands, ordered by org and (so) by newSeq alike. */
  private lastWhere(v: number, byNew: boolean): number {
    let lo = this.head;
    let hi = this.cmds.length - 1;
    let ans = this.head - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const c = this.cmds[mid]!;
      if ((byNew ? c.newSeq : c.org) <= v) {
        ans = mid;
        lo = mid + 1;
      } else {
        hi = mid - 1;
      }
    }
    return ans;
  }

  /** F(p): the new position of original position p (see the file comment). */
  map(p: number): number {
    const i = this.lastAtOrBefore(p);
    if (i < this.head) return p + this.floorOffset;
    const c = this.cmds[i]!;
    if (c.org === p) return c.newSeq;
    const end = c.org + c.orgLen;
    if (p < end) return c.newSeq + c.dataLen;
    return p + c.offset;
  }

  /**
   * G(A) = max p ≤ limit such that F(p) ≤ A (see the file comment). `limit` is x, the first
   * original position not yet processed: nothing beyond it may be acknowledged to the sender.
   */
  unmap(a: number, limit: number): number {
    const i = this.lastNewAtOrBefore(a);
    let p: number;
    if (i < this.head) {
      p = a - this.floorOffset;
    } else {
      const c = this.cmds[i]!;
      p = a < c.newSeq + c.dataLen ? c.org : a - c.offset;
    }
    return p < limit ? p : limit;
  }

  /**
   * Rewrites original bytes [a, a + payload.length) (plus, when `fin`, the FIN's position
   * a + payload.length, so that an insertion there travels before the FIN). Returns the new
   * payload: the same object when no command touches the range (zero copy), else transient bytes
   * (util/bytes.ts) that live until the segment's frame is built.
   */
  rewrite(a: number, payload: Uint8Array, fin: boolean): Uint8Array {
    const b = a + payload.length;
    const stop = fin ? b + 1 : b;
    // First command that can touch [a, stop): the last one starting at or before a, if it
    // extends past a (or is an insertion exactly at a), else the next one.
    let i = this.lastAtOrBefore(a);
    if (i < this.head) i = this.head;
    else {
      const c = this.cmds[i]!;
      if (c.org < a && c.org + c.orgLen <= a) i++;
    }
    if (i >= this.cmds.length || this.cmds[i]!.org >= stop) return payload;

    // Two passes over the same pieces (original bytes kept, replacement bytes): their total,
    // then the copy. Without replacement bytes, a single piece of the payload is returned as a
    // view (zero copy).
    const first = i;
    let total = 0;
    let pieces = 0;
    let only = -1;
    let replaced = false;
    let pos = a;
    for (; i < this.cmds.length; i++) {
      const c = this.cmds[i]!;
      if (c.org >= stop) break;
      if (c.org > pos) {
        total += c.org - pos;
        pieces++;
        only = pos;
        pos = c.org;
      }
      if (c.org >= a && c.dataLen > 0) {
        total += c.dataLen;
        replaced = true;
      }
      const cend = c.org + c.orgLen;
      const clipped = cend < b ? cend : b;
      if (clipped > pos) pos = clipped;
    }
    if (pos < b) {
      total += b - pos;
      pieces++;
      only = pos;
    }
    if (total === 0) return EMPTY;
    if (!replaced && pieces === 1) return payload.subarray(only - a, only - a + total);
    const out = transientBytes(total);
    const store = this.store;
    let off = 0;
    pos = a;
    for (i = first; i < this.cmds.length; i++) {
      const c = this.cmds[i]!;
      if (c.org >= stop) break;
      if (c.org > pos) {
        out.set(payload.subarray(pos - a, c.org - a), off);
        off += c.org - pos;
        pos = c.org;
      }
      if (c.org >= a && c.dataLen > 0) {
        store!.copyTo(c.dataPos, c.dataPos + c.dataLen, out, off);
        off += c.dataLen;
      }
      const cend = c.org + c.orgLen;
      const clipped = cend < b ? cend : b;
      if (clipped > pos) pos = clipped;
    }
    if (pos < b) out.set(payload.subarray(pos - a, b - a), off);
    return out;
  }

  /**
   * The receiver has every original byte below `p` (p = G(ack)): commands wholly below p are
   * no longer needed. Returns how many were pruned.
   */
  prune(p: number): number {
    let n = 0;
    while (this.head < this.cmds.length) {
      const c = this.cmds[this.head]!;
      const end = c.org + c.orgLen;
      if (end > p || c.org >= p) break;
      // Positions up to the end of a removed command can no longer be mapped; from there to
      // the next command the floor offset maps them exactly, so the floor goes no further.
      this.floorOffset = c.offset;
      if (end > this.floorPos) this.floorPos = end;
      this.head++;
      n++;
    }
    if (n > 0) this.compact();
    return n;
  }

  /**
   * Erases the oldest commands while over `maxCount` or older than `maxAgeMs` (0 = no cap).
   * Positions they covered, if not acknowledged yet, become unmappable (`erasedPos`).
   */
  cap(maxCount: number, maxAgeMs: number, nowMs: number): number {
    let n = 0;
    while (this.head < this.cmds.length) {
      const c = this.cmds[this.head]!;
      const over = maxCount > 0 && this.length > maxCount;
      const old = maxAgeMs > 0 && nowMs - c.createdMs > maxAgeMs;
      if (!over && !old) break;
      this.floorOffset = c.offset;
      const end = c.org + c.orgLen;
      // An insertion at p is needed by the segment starting at p: erasing it makes p unmappable.
      const unmappable = c.orgLen === 0 ? end + 1 : end;
      if (unmappable > this.erasedPos) this.erasedPos = unmappable;
      this.head++;
      n++;
    }
    this.compact();
    return n;
  }

  private compact(): void {
    const st = this.store;
    if (st !== null) {
      st.dropBelow(this.head < this.cmds.length ? this.cmds[this.head]!.dataPos : st.end);
      // A list down to one command or none (what is left when the receiver caught up: an
      // insertion at the front waits for the next byte) keeps no ring, and starts none, sized
      // for the bulk transfer before: an idle connection would hold it until it expires.
      if (this.cmds.length - this.head <= 1) st.shrink();
    }
    if (this.head > 64 && this.head * 2 > this.cmds.length) {
      this.cmds = this.cmds.slice(this.head);
      this.head = 0;
    } else if (this.head === this.cmds.length && this.head > 0) {
      this.cmds = NO_COMMANDS;
      this.head = 0;
    }
  }

  toJSON(): { floorOffset: number; floorPos: number; erasedPos: number; cmds: CommandJson[] } {
    return {
      floorOffset: this.floorOffset,
      floorPos: this.floorPos,
      erasedPos: this.erasedPos,
      cmds: this.list().map((c) => ({
        org: c.org,
        orgLen: c.orgLen,
        data: base64(this.dataOf(c)),
        createdMs: c.createdMs,
      })),
    };
  }

  static fromJSON(j: ReturnType<CommandList['toJSON']>): CommandList {
    const l = new CommandList();
    l.floorOffset = j.floorOffset;
    l.floorPos = j.cmds.length > 0 ? Math.min(j.floorPos, j.cmds[0]!.org) : j.floorPos;
    for (const c of j.cmds) {
      l.add(c.org, c.orgLen, new Uint8Array(Buffer.from(c.data, 'base64')), c.createdMs);
    }
    l.floorPos = j.floorPos;
    l.erasedPos = j.erasedPos;
    return l;
  }
}

function base64(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.length).toString('base64');
}
