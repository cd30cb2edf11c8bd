/**
 * Drives an agent the way the engine does and checks the contract of src/agent/types.ts on every
 * answer: undecidedFrom monotone and within the data fed; edits sorted, non-overlapping, not
 * before the previous undecidedFrom, and decided. Shared by the agent tests.
 */
import { expect } from 'vitest';
import type { Agent, AgentOutput, Direction, Edit } from '../../src/agent/types.js';

/** Applies edits (absolute positions from 0) to a whole stream. */
export function applyEdits(s: Buffer, edits: readonly Edit[]): Buffer {
  const parts: Uint8Array[] = [];
  let p = 0;
  for (const e of edits) {
    parts.push(s.subarray(p, e.at), e.data);
    p = e.at + e.len;
  }
  parts.push(s.subarray(p));
  return Buffer.concat(parts);
}

export class AgentDriver {
  edits: Edit[] = [];
  undecided = 0;
  fed = 0;
  constructor(
    public agent: Agent,
    private readonly dir: Direction = 'c2s',
  ) {}

  private check(out: AgentOutput, flushed: boolean): void {
    const und = flushed ? this.fed : (out.undecidedFrom ?? this.fed);
    expect(und).toBeGreaterThanOrEqual(this.undecided); // monotone
    expect(und).toBeLessThanOrEqual(this.fed);
    let prevEnd = this.undecided;
    for (const e of out.edits) {
      expect(e.at).toBeGreaterThanOrEqual(prevEnd); // sorted, non-overlapping, >= previous undecidedFrom
      expect(e.len).toBeGreaterThanOrEqual(0);
      expect(e.at + e.len).toBeLessThanOrEqual(und); // decided and within fed data
      prevEnd = e.at + e.len;
      this.edits.push({ at: e.at, len: e.len, data: Buffer.from(e.data) });
    }
    this.undecided = und;
  }

  feed(data: Uint8Array): AgentOutput {
    const copy = new Uint8Array(data);
    const out = this.agent.feed(this.dir, this.fed, copy);
    copy.fill(0x7e); // the agent must not keep our buffer
    this.fed += data.length;
    this.check(out, false);
    return out;
  }

  flush(): AgentOutput {
    const out = this.agent.flush(this.dir, 'fin');
    this.check(out, true);
    return out;
  }
}
