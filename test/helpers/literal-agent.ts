/** A small literal find/replace agent with hold-back, independent of src/agent/replace.ts. */
import type { Agent, AgentOutput, Direction, Edit } from '../../src/agent/types.js';

export function literalAgent(find: string, repl: string): Agent {
  const p = Buffer.from(find, 'latin1');
  const r = Buffer.from(repl, 'latin1');
  const st: Record<Direction, { buf: Buffer; start: number }> = {
    c2s: { buf: Buffer.alloc(0), start: 0 },
    s2c: { buf: Buffer.alloc(0), start: 0 },
  };
  return {
    name: 'literal',
    feed(dir: Direction, pos: number, data: Uint8Array): AgentOutput {
      const s = st[dir];
      if (s.buf.length === 0) s.start = pos;
      s.buf = Buffer.concat([s.buf, data]);
      const edits: Edit[] = [];
      let i = 0;
      for (;;) {
        const k = s.buf.indexOf(p, i);
        if (k < 0) break;
        edits.push({ at: s.start + k, len: p.length, data: r });
        i = k + p.length;
      }
      // Keep the longest suffix (after the last match) that is a proper prefix of the pattern.
      let keep = 0;
      for (let k = Math.min(p.length - 1, s.buf.length - i); k > 0; k--) {
        if (s.buf.subarray(s.buf.length - k).equals(p.subarray(0, k))) {
          keep = k;
          break;
        }
      }
      const u = s.start + s.buf.length - keep;
      s.buf = s.buf.subarray(s.buf.length - keep);
      s.start = u;
      return { edits, undecidedFrom: u };
    },
    flush(dir: Direction): AgentOutput {
      st[dir].buf = Buffer.alloc(0);
      return { edits: [] };
    },
    snapshot: () => null,
  };
}

