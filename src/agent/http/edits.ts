/**
 * Collects one answer's edits in stream order and merges edits that touch (an insertion right
 * after a deletion, a chunk header before a replacement at the same position): the engine
 * refuses two edits at one position (agent/types.ts), and fewer commands are cheaper.
 */

import type { Edit } from '../types.js';
import { transientConcat } from '../../util/bytes.js';

export const EMPTY = Buffer.alloc(0);

interface Pending {
  at: number;
  len: number;
  parts: Uint8Array[];
}

export class EditBuilder {
  private readonly list: Pending[] = [];

  /** Replace [at, at + len) by data; must not start before the end of the previous edit. */
  add(at: number, len: number, data: Uint8Array = EMPTY): void {
    if (len === 0 && data.length === 0) return;
    const last = this.list[this.list.length - 1];
    if (last !== undefined) {
      const end = last.at + last.len;
      if (at < end) throw new Error(`http: edit at ${at} before ${end} (agent bug)`);
      if (at === end) {
        last.len += len;
        if (data.length > 0) last.parts.push(data);
        return;
      }
    }
    this.list.push({ at, len, parts: data.length > 0 ? [data] : [] });
  }

  /**
   * Drop every edit of the bytes from `pos` on (a refusal replaces them). A pure insertion at
   * `pos` stays: it ends what came before (the last chunk of the previous message).
   */
  cutFrom(pos: number): void {
    while (this.list.length > 0) {
      const last = this.list[this.list.length - 1]!;
      if (last.at > pos || (last.at === pos && last.len > 0)) this.list.pop();
      else if (last.at + last.len > pos) throw new Error(`http: cut at ${pos} inside an edit (agent bug)`);
      else break;
    }
  }

  /** End of the last edit (or -1). */
  get end(): number {
    const last = this.list[this.list.length - 1];
    return last === undefined ? -1 : last.at + last.len;
  }

  /** The edits; a joined one's bytes are transient (the engine copies an answer's bytes). */
  take(): Edit[] {
    return this.list.map((p) => ({ at: p.at, len: p.len, data: p.parts.length === 0 ? EMPTY : p.parts.length === 1 ? p.parts[0]! : transientConcat(p.parts) }));
  }
}
