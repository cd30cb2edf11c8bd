/**
 * The replace agent's regex engines, measured on one direction fed in 1448-byte segments:
 * the linear engine (one pass over all starts), the same Pike VM run at every candidate start
 * (`linearSearch: 'per-start'`, what the linear engine did before), the budgeted backtracking
 * engine, and, as the baseline in the same run, the RegExp path the agent used before that (a
 * global RegExp search per 16 KiB block, then a sticky RegExp in the candidate's window;
 * reimplemented here for one rule, same algorithm). Each figure is the median of `runs` timed
 * runs after warm-up runs. Then a sender dribbling 1-byte segments (`runDribbleBench`).
 *
 *   npx tsx src/bench/regex.ts [--runs N]
 */
import { createReplace, type RegexRule } from '../agent/replace.js';
import type { AgentContext, Direction } from '../agent/types.js';
import { transientRecycle } from '../util/bytes.js';

const MSS = 1448;
const CTX: AgentContext = {
  flowId: 'bench',
  client: { addr: '10.0.0.1', port: 40000 },
  server: { addr: '10.0.0.2', port: 80 },
  directions: new Set<Direction>(['c2s', 's2c']),
};

export interface RegexScenario {
  name: string;
  rule: RegexRule;
  data: Buffer;
  /** Engines not run here (they would not finish, or take minutes). */
  skip?: readonly ('RegExp' | 'per-start' | 'backtracking')[];
}

export interface RegexRow {
  scenario: string;
  engine: string;
  ms: number;
  mbPerSec: number;
  /** Event-loop time per KiB of input: what a client sending that pattern's worst case costs. */
  usPerKiB: number;
  edits: number;
}

/**
 * The scenarios: HTTP headers, the engine bench's text, catastrophic patterns, and the linear
 * engine's worst cases (threads that live long, and many starts alive at once; maxMatch up to
 * the limit).
 */
export function regexScenarios(scale = 1): RegexScenario[] {
  const http = Buffer.from(
    (
      'HTTP/1.1 200 OK\r\nServer: nginx/1.18.0 (Ubuntu)\r\nContent-Type: text/html\r\nContent-Length: 1024\r\n\r\n' +
      'the quick brown fox jumps over the lazy dog 0123456789 Some Text With Capitals\n'.repeat(12)
    ).repeat(Math.round(600 * scale)),
    'latin1',
  );
  const text = Buffer.alloc(Math.round(2 * 1024 * 1024 * scale));
  const line = 'the quick brown fox jumps over the lazy dog 0123456789 abcdefghijklmnopq\n';
  for (let o = 0; o < text.length; o += line.length) text.write(line, o, 'latin1');
  for (let o = 2000; o + 20 < text.length; o += 4096) text.write('tapgate-marker-here', o, 'latin1');
  return [
    { name: 'HTTP responses, Server header', rule: { regex: 'Server: [^\\r]*', with: 'Server: tapgate', maxMatch: 200 }, data: http },
    { name: 'HTTP responses, (?m)^Content-Length: \\d+$', rule: { regex: '^Content-Length: (\\d+)$', with: 'Content-Length: $1', maxMatch: 40, flags: 'm' }, data: http },
    { name: 'text, marker every 4 KiB', rule: { regex: 'tapgate-marker-[a-z]+', with: 'REWRITTEN', maxMatch: 64 }, data: text },
    {
      name: '(a|aa)+b over 20 "a" + "x", repeated (64 KiB)',
      rule: { regex: '(a|aa)+b', with: 'X', maxMatch: 64 },
      data: Buffer.from(`${'a'.repeat(20)}x`.repeat(Math.ceil(65536 / 21)).slice(0, 65536), 'latin1'),
    },
    {
      name: '(a|aa)+b over 64 KiB of "a"',
      rule: { regex: '(a|aa)+b', with: 'X', maxMatch: 64 },
      data: Buffer.alloc(65536, 'a'),
      skip: ['RegExp'],
    },
    {
      name: 'worst case: (a|aa)+b over 40 "a" + "xb", repeated (64 KiB), maxMatch 64',
      rule: { regex: '(a|aa)+b', with: 'X', maxMatch: 64 },
      data: tile(`${'a'.repeat(40)}xb`, 65536),
      skip: ['RegExp', 'backtracking'],
    },
    {
      name: 'worst case: (.*a){20}, 19 "a" per window (16 KiB), maxMatch 256',
      rule: { regex: '(.*a){20}', with: 'X', maxMatch: 256 },
      data: tile(`a${'b'.repeat(13)}`, 16384),
      skip: ['RegExp', 'backtracking'],
    },
    {
      name: 'worst case: (.*a){20}, 19 "a" per window (256 KiB), maxMatch 65535',
      rule: { regex: '(.*a){20}', with: 'X', maxMatch: 65535 },
      data: tile(`a${'b'.repeat(3449)}`, 262144),
      skip: ['RegExp', 'per-start', 'backtracking'],
    },
    {
      name: 'worst case: [^z]*zq over 30 "a" + "q", repeated (256 KiB), maxMatch 65536',
      rule: { regex: '[^z]*zq', with: 'X', maxMatch: 65536 },
      data: tile(`${'a'.repeat(30)}q`, 262144),
      skip: ['RegExp', 'per-start', 'backtracking'],
    },
  ];
}

function tile(unit: string, size: number): Buffer {
  return Buffer.from(unit.repeat(Math.ceil(size / unit.length)).slice(0, size), 'latin1');
}

/** Run the replace agent over `data` in MSS pieces; the number of edits. */
function runAgent(rule: RegexRule, data: Buffer, linearSearch: 'unanchored' | 'per-start' = 'unanchored'): number {
  const a = createReplace({ linearSearch }).create([rule], CTX);
  let n = 0;
  for (let p = 0; p < data.length; p += MSS) n += a.feed('s2c', p, data.subarray(p, p + MSS)).edits.length;
  return n + a.flush('s2c', 'fin').edits.length;
}

/** The previous RegExp path for one rule (same windows, same hold-back), counting edits. */
function runRegExp(rule: RegexRule, data: Buffer): number {
  const flags = rule.flags ?? '';
  const sticky = new RegExp(rule.regex, `${flags}y`);
  const scan = /\$|\\[bB]|\(\?<?[=!]/.test(rule.regex) ? null : new RegExp(rule.regex, `${flags}g`);
  const mm = rule.maxMatch;
  let tail = Buffer.alloc(0);
  let prev = -1;
  let edits = 0;
  const decide = (buf: Buffer, final: boolean): void => {
    const off = prev >= 0 ? 1 : 0;
    const s = (off ? String.fromCharCode(prev) : '') + buf.toString('latin1');
    const n = buf.length;
    const windowMatch = (q: number): number => {
      const at = q + off;
      const ws = at > 0 ? at - 1 : 0;
      sticky.lastIndex = at - ws;
      const m = sticky.exec(s.substring(ws, Math.min(at + mm, s.length)));
      return m === null ? 0 : m[0].length;
    };
    let pos = 0;
    for (;;) {
      const decidedEnd = final ? n : Math.max(pos, n - mm + 1);
      let found = -1;
      let len = 0;
      if (scan === null) {
        for (let q = pos; q < decidedEnd && found < 0; q++) if ((len = windowMatch(q)) > 0) found = q;
      } else {
        for (let q0 = pos; q0 < decidedEnd && found < 0; q0 += 16 * 1024) {
          const q1 = Math.min(q0 + 16 * 1024, decidedEnd);
          const ts = q0 + off > 0 ? q0 + off - 1 : 0;
          const t = s.substring(ts, Math.min(q1 - 1 + off + mm, s.length));
          let from = q0 + off - ts;
          for (;;) {
            scan.lastIndex = from;
            const m = scan.exec(t);
            if (m === null) break;
            const q = m.index + ts - off;
            if (q >= q1) break;
            if ((len = windowMatch(q)) > 0) {
              found = q;
              break;
            }
            from = m.index + 1;
          }
        }
      }
      if (found < 0) {
        const hold = final ? n : decidedEnd;
        if (hold > 0) prev = buf[hold - 1]!;
        tail = Buffer.from(buf.subarray(hold));
        return;
      }
      edits++;
      pos = found + len;
    }
  };
  for (let p = 0; p < data.length; p += MSS) decide(Buffer.concat([tail, data.subarray(p, p + MSS)]), false);
  decide(tail, true);
  return edits;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

export function runRegexBench(opts: { runs?: number; scale?: number } = {}): RegexRow[] {
  const runs = opts.runs ?? 7;
  const rows: RegexRow[] = [];
  for (const sc of regexScenarios(opts.scale)) {
    const engines: [string, () => number][] = [];
    const skip = sc.skip ?? [];
    if (!skip.includes('RegExp')) engines.push(['RegExp (before)', () => runRegExp(sc.rule, sc.data)]);
    if (!skip.includes('per-start')) engines.push(['linear, per start (before)', () => runAgent({ ...sc.rule, engine: 'linear' }, sc.data, 'per-start')]);
    engines.push(['linear', () => runAgent({ ...sc.rule, engine: 'linear' }, sc.data)]);
    if (!skip.includes('backtracking')) {
      engines.push(['backtracking, maxSteps 10000', () => runAgent({ ...sc.rule, engine: 'backtracking', maxSteps: 10_000 }, sc.data)]);
    }
    // Interleaved rounds: every engine once per round, so load changes hit all alike.
    const times = engines.map(() => [] as number[]);
    const edits = engines.map(() => 0);
    for (let r = 0; r < runs + 2; r++) {
      engines.forEach(([, f], i) => {
        const t0 = process.hrtime.bigint();
        edits[i] = f();
        const ms = Number(process.hrtime.bigint() - t0) / 1e6;
        if (r >= 2) times[i]!.push(ms);
      });
    }
    engines.forEach(([name], i) => {
      const ms = median(times[i]!);
      rows.push({ scenario: sc.name, engine: name, ms, mbPerSec: sc.data.length / ms / 1e3, usPerKiB: (ms * 1000) / (sc.data.length / 1024), edits: edits[i]! });
    });
  }
  return rows;
}

export interface DribbleRow {
  case: string;
  ms: number;
  usPerFeed: number;
}

/**
 * A sender dribbling one byte per segment under a regex rule with a large window (`maxMatch`):
 * every feed holds the last maxMatch - 1 bytes, so what a feed costs beyond its byte is the
 * rescan the search state saves. Measured as is, and after a hold timeout (the agent then also
 * checks that no match crosses the forced decision: replace.ts `Forced`), in the same run.
 */
export function runDribbleBench(opts: { runs?: number; maxMatch?: number } = {}): DribbleRow[] {
  const runs = opts.runs ?? 5;
  const mm = opts.maxMatch ?? 16384;
  const rule: RegexRule = { regex: '(?:token|key)[:=][A-Za-z0-9]{8}', with: 'x', maxMatch: mm };
  const one = Buffer.from('b');
  const run = (forced: boolean): number => {
    const a = createReplace({ joinMatches: true }).create([rule], CTX);
    let pos = 0;
    const big = Buffer.alloc(mm * 2, 0x61);
    a.feed('c2s', pos, big);
    pos += big.length;
    if (forced) a.flush('c2s', 'timeout');
    const t0 = process.hrtime.bigint();
    for (let n = 0; n < mm; n++) {
      a.feed('c2s', pos++, one);
      transientRecycle(); // as the engine does after every batch
    }
    return Number(process.hrtime.bigint() - t0) / 1e6;
  };
  const cases: [string, boolean][] = [['1-byte feeds, maxMatch ' + mm, false], ['the same after a hold timeout', true]];
  const times = cases.map(() => [] as number[]);
  for (let r = 0; r < runs + 1; r++) {
    cases.forEach(([, forced], i) => {
      const ms = run(forced);
      if (r >= 1) times[i]!.push(ms);
    });
  }
  return cases.map(([name], i) => {
    const ms = median(times[i]!);
    return { case: name, ms, usPerFeed: (ms * 1000) / mm };
  });
}

function main(): void {
  const i = process.argv.indexOf('--runs');
  const runs = i > 0 ? Number(process.argv[i + 1]) : 7;
  const rows = runRegexBench({ runs });
  let base: RegexRow | undefined;
  console.log('| scenario | engine | median ms | MB/s | µs/KiB | × RegExp | edits |');
  console.log('|---|---|---|---|---|---|---|');
  for (const r of rows) {
    if (r.engine.startsWith('RegExp')) base = r;
    else if (base !== undefined && base.scenario !== r.scenario) base = undefined;
    const ratio = base === undefined ? 'n/a' : (base.ms / r.ms).toFixed(2);
    console.log(`| ${r.scenario} | ${r.engine} | ${r.ms.toFixed(2)} | ${r.mbPerSec.toFixed(1)} | ${r.usPerKiB.toFixed(1)} | ${ratio} | ${r.edits} |`);
  }
  const d = runDribbleBench({ runs });
  console.log('\n| dribble | median ms | µs per feed | × without a hold timeout |');
  console.log('|---|---|---|---|');
  for (const r of d) console.log(`| ${r.case} | ${r.ms.toFixed(1)} | ${r.usPerFeed.toFixed(1)} | ${(r.ms / d[0]!.ms).toFixed(2)} |`);
}

if (import.meta.url === `file://${process.argv[1]}`) main();
