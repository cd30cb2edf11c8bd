/**
 * The connections with a timer pending, by when it is due (engine/rewrite.ts `due`): a tick takes
 * only those due, in time order, instead of visiting every connection with a timer (a sender
 * keeping 50,000 connections holding bytes — each ending with a pattern's prefix — made every
 * 10 ms tick cost 10.6 ms). A binary min-heap with lazy removal: each item is queued at the
 * earliest time it was scheduled for; a later schedule of an item already queued earlier changes
 * nothing (the earlier entry is taken, the owner finds the item's real time and schedules it
 * again); entries of cancelled items, or superseded by an earlier one, are skipped when they come
 * up. Bounded by the pushes: one per item and earlier schedule.
 */
export class TimerQueue<T extends object> {
  private readonly at: number[] = [];
  private readonly items: T[] = [];
  /** Each queued item and the time its live entry is due. */
  private readonly queued = new Map<T, number>();

  get size(): number {
    return this.queued.size;
  }

  /** The items queued, in no order. */
  keys(): IterableIterator<T> {
    return this.queued.keys();
  }

  /** Queue `x` for `t` (Infinity: cancel); an earlier time already queued stands. */
  schedule(x: T, t: number): void {
    if (t === Infinity) {
      this.queued.delete(x);
      return;
    }
    const q = this.queued.get(x);
    if (q !== undefined && q <= t) return;
    this.queued.set(x, t);
    this.push(t, x);
  }

  cancel(x: T): void {
    this.queued.delete(x);
  }

  /** The next item due at or before `now`, taken off the queue (schedule it again if it still has a timer), or undefined. */
  takeDue(now: number): T | undefined {
    while (this.at.length > 0 && this.at[0]! <= now) {
      const t = this.at[0]!;
      const x = this.pop();
      if (this.queued.get(x) !== t) continue; // cancelled, or superseded by an earlier entry
      this.queued.delete(x);
      return x;
    }
    return undefined;
  }

  private push(t: number, x: T): void {
    const at = this.at;
    const items = this.items;
    let i = at.length;
    at.push(t);
    items.push(x);
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (at[p]! <= t) break;
      at[i] = at[p]!;
      items[i] = items[p]!;
      i = p;
    }
    at[i] = t;
    items[i] = x;
  }

  private pop(): T {
    const at = this.at;
    const items = this.items;
    const top = items[0]!;
    const t = at.pop()!;
    const x = items.pop()!;
    const n = at.length;
    if (n > 0) {
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= n) break;
        const c = l + 1 < n && at[l + 1]! < at[l]! ? l + 1 : l;
        if (at[c]! >= t) break;
        at[i] = at[c]!;
        items[i] = items[c]!;
        i = c;
      }
      at[i] = t;
      items[i] = x;
    }
    return top;
  }
}
