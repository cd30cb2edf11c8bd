/**
 * The ftp agent: PORT/EPRT/227/229 endpoints rewritten through hooks, byte-exact elsewhere, the
 * same output (and the same hook calls) however the stream is cut, snapshotted or restored.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  createFtp,
  ftpConfigProblems,
  type FtpAgent,
  type FtpConfig,
  type FtpExpectation,
  type FtpHooks,
  type FtpSnapshot,
} from '../../src/agent/ftp.js';
import { createAgent, makeRegistry } from '../../src/agent/registry.js';
import type { AgentContext, AgentOutput, Direction } from '../../src/agent/types.js';
import { AgentDriver, applyEdits } from '../helpers/agent-driver.js';
import { mulberry32 } from '../../src/util/prng.js';
import { simulate } from '../helpers/tcpsim.js';

const CTX: AgentContext = {
  flowId: 'ftp#1',
  client: { addr: '10.200.0.1', port: 40000 },
  server: { addr: '10.201.0.2', port: 21 },
  directions: new Set<Direction>(['c2s', 's2c']),
};

/** Test double: the NAT the gateway will supply. Client 10.200.0.x → 192.0.2.x, port + 1; server 10.201.0.2 → 203.0.113.222, port + 7. */
class FakeNat {
  calls: string[] = [];
  expectations: FtpExpectation[] = [];
  throwOn: string | undefined;
  hooks = (): FtpHooks => ({
    translateClientEndpoint: (a) => {
      this.calls.push(`c ${a.kind} ${a.endpoint.addr}:${a.endpoint.port}`);
      if (a.endpoint.addr === this.throwOn) throw new Error('boom');
      if (!a.endpoint.addr.startsWith('10.200.0.')) return undefined;
      return { addr: `192.0.2.${a.endpoint.addr.split('.')[3]}`, port: (a.endpoint.port + 1) & 0xffff };
    },
    translateServerEndpoint: (a) => {
      this.calls.push(`s ${a.kind} ${a.endpoint.addr}:${a.endpoint.port}`);
      if (a.endpoint.addr !== '10.201.0.2') return undefined;
      return { addr: '203.0.113.222', port: (a.endpoint.port + 7) & 0xffff };
    },
    expect: (x) => {
      this.expectations.push(x);
    },
  });
}


interface RunResult {
  /** What the peer gets; after the agent gave up, up to the last complete line before it. */
  out: string;
  /** The agent gave up (AgentOutput.abort), or undefined. */
  abort: string | undefined;
  calls: string[];
  expectations: FtpExpectation[];
  counters: FtpAgent['counters'];
  maxHeld: number;
}

function run(
  dir: Direction,
  text: string | Buffer,
  cuts: readonly number[] = [],
  snapshotAfter: ReadonlySet<number> = new Set(),
  cfg: FtpConfig = {},
): RunResult {
  const s = typeof text === 'string' ? Buffer.from(text, 'latin1') : text;
  const nat = new FakeNat();
  const f = createFtp(nat.hooks);
  const d = new AgentDriver(f.create(cfg, CTX), dir);
  let p = 0;
  let maxHeld = 0;
  let abort: string | undefined;
  const ends = [...cuts.filter((c) => c > 0 && c < s.length), s.length];
  ends.forEach((end, i) => {
    if (end > p) {
      const o = d.feed(s.subarray(p, end));
      abort ??= o.abort;
    }
    p = Math.max(p, end);
    maxHeld = Math.max(maxHeld, d.fed - d.undecided);
    if (snapshotAfter.has(i)) {
      const snap = JSON.parse(JSON.stringify(d.agent.snapshot())) as unknown;
      d.agent = f.restore(cfg, CTX, snap);
    }
  });
  const last = d.flush();
  abort ??= last.abort;
  const all = applyEdits(s, d.edits).toString('latin1');
  return {
    // Giving up, the agent deletes the rest; how much of the line's verb went before depends on the cut.
    out: abort === undefined ? all : all.slice(0, all.lastIndexOf('\n') + 1),
    abort,
    calls: nat.calls,
    expectations: nat.expectations,
    counters: (d.agent as FtpAgent).counters,
    maxHeld,
  };
}

const out = (dir: Direction, text: string, cfg: FtpConfig = {}): string => run(dir, text, [], new Set(), cfg).out;

// ---------------------------------------------------------------------------------------------

const C2S = [
  'USER anonymous\r\n',
  'PASS guest@\r\n',
  'SYST\r\n',
  'TYPE I\r\n',
  'PORT 10,200,0,1,195,80\r\n',
  'LIST\r\n',
  'port 10,200,0,1,4,0\r\n',
  'EPRT |1|10.200.0.1|50000|\r\n',
  'RETR file.bin\r\n',
  'EPRT |2|fe80::1|5282|\r\n',
  'PASV\r\n',
  'EPSV\r\n',
  'PORT 10,200,0,7,0,21\n',
  'QUIT\r\n',
].join('');

const C2S_WANT = [
  'USER anonymous\r\n',
  'PASS guest@\r\n',
  'SYST\r\n',
  'TYPE I\r\n',
  'PORT 192,0,2,1,195,81\r\n',
  'LIST\r\n',
  'port 192,0,2,1,4,1\r\n',
  'EPRT |1|192.0.2.1|50001|\r\n',
  'RETR file.bin\r\n',
  'EPRT |2|fe80::1|5282|\r\n',
  'PASV\r\n',
  'EPSV\r\n',
  'PORT 192,0,2,7,0,22\n',
  'QUIT\r\n',
].join('');

const S2C = [
  '220 (vsFTPd 3.0.3)\r\n',
  '331 Please specify the password.\r\n',
  '230-Welcome.\r\n',
  '227 Entering Passive Mode (10,201,0,2,1,1) is text inside a 230 reply.\r\n',
  '230 Login successful.\r\n',
  '215 UNIX Type: L8\r\n',
  '200 PORT command successful. Consider using PASV.\r\n',
  '227 Entering Passive Mode (10,201,0,2,195,80).\r\n',
  '227 Entering passive mode 10,201,0,2,195,80\r\n',
  '227 Logout.\r\n',
  '229 Entering Extended Passive Mode (|||50000|)\r\n',
  '227-Multi-line 10,201,0,2,9,9\r\n',
  ' continuation 10,201,0,2,9,9\r\n',
  '227 Entering Passive Mode (10,201,0,2,0,255)\r\n',
  '150 Here comes the directory listing.\r\n',
  '226 Directory send OK.\r\n',
  '221 Goodbye.\r\n',
].join('');

const S2C_WANT = S2C
  .replace('(10,201,0,2,195,80).', '(203,0,113,222,195,87).')
  .replace('mode 10,201,0,2,195,80', 'mode 203,0,113,222,195,87')
  .replace('(|||50000|)', '(|||50007|)')
  .replace('(10,201,0,2,0,255)', '(203,0,113,222,1,6)');

describe('ftp agent: a control session', () => {
  it('client commands: PORT/port/EPRT |1| rewritten (lengths change), EPRT |2| the hook leaves alone and the rest byte-exact', () => {
    const r = run('c2s', C2S);
    expect(r.out).toBe(C2S_WANT);
    expect(r.counters).toMatchObject({ PORT: 3, EPRT: 1, otherFamily: 0, malformed: 0 });
    expect(r.counters.unchanged).toBeGreaterThanOrEqual(1);
  });

  it('server replies: 227 with and without parentheses, 229, the final line of a 227- reply; 227 Logout. and a 227 inside a 230- reply pass', () => {
    const r = run('s2c', S2C);
    expect(r.out).toBe(S2C_WANT);
    expect(r.counters).toMatchObject({ PASV: 3, EPSV: 1, noEndpoint: 1, malformed: 0 });
  });

  it('announces each data connection once, in order, with who opens it and where it really goes', () => {
    const r = run('c2s', C2S);
    // The four IPv4 endpoints and the IPv6 one of `EPRT |2|` (announced as it was).
    expect(r.expectations).toHaveLength(5);
    expect(r.expectations.find((x) => x.original.addr === 'fe80::1')?.announced).toEqual({ addr: 'fe80::1', port: 5282 });
    expect(r.expectations[0]).toEqual({
      flowId: 'ftp#1',
      kind: 'PORT',
      opener: 'server',
      openerAddr: '10.201.0.2',
      announced: { addr: '192.0.2.1', port: 50001 },
      original: { addr: '10.200.0.1', port: 50000 },
    });
    const s = run('s2c', S2C);
    expect(s.expectations.map((x) => [x.kind, x.opener, x.openerAddr, x.announced.port, x.original.port])).toEqual([
      ['PASV', 'client', '10.200.0.1', 50007, 50000],
      ['PASV', 'client', '10.200.0.1', 50007, 50000],
      ['EPSV', 'client', '10.200.0.1', 50007, 50000],
      ['PASV', 'client', '10.200.0.1', 262, 255],
    ]);
    expect(s.calls[2]).toBe('s EPSV 10.201.0.2:50000'); // EPSV: the control connection's server address
  });

  it('pipelined commands in one segment are all rewritten', () => {
    const t = 'PORT 10,200,0,1,1,1\r\nPORT 10,200,0,2,1,1\r\nNOOP\r\nEPRT !1!10.200.0.3!7!\r\n';
    expect(out('c2s', t)).toBe('PORT 192,0,2,1,1,2\r\nPORT 192,0,2,2,1,2\r\nNOOP\r\nEPRT !1!192.0.2.3!8!\r\n');
  });
});

describe('ftp agent: hold-back only as far as needed (seed "PORT 40, " case)', () => {
  const feedAll = (dir: Direction, chunks: string[], cfg: FtpConfig = {}): AgentOutput[] => {
    const a = createFtp(new FakeNat().hooks).create(cfg, CTX);
    let pos = 0;
    return chunks.map((c) => {
      const b = Buffer.from(c, 'latin1');
      const o = a.feed(dir, pos, b);
      pos += b.length;
      return o;
    });
  };

  it('"PORT 10,2" is held from the first digit (the verb is never rewritten), then replaced whole', () => {
    const [a, b] = feedAll('c2s', ['PORT 10,2', '00,0,1,195,80\r\n']);
    expect(a).toEqual({ edits: [], undecidedFrom: 5 });
    expect(b!.edits.map((e) => [e.at, e.len, Buffer.from(e.data).toString()])).toEqual([[5, 17, '192,0,2,1,195,81']]);
    expect(b!.undecidedFrom).toBe(24);
  });

  it('the seed\'s spaced form: "PORT 40, " then "4, 4, 5, 4, 123" (spaces tolerated, rewritten canonically)', () => {
    const [a, b] = feedAll('c2s', ['PORT 10, ', '200, 0, 1, 4, 123\r\n']);
    expect(a!.undecidedFrom).toBe(5);
    expect(Buffer.from(b!.edits[0]!.data).toString()).toBe('192,0,2,1,4,124');
  });

  it('a line that cannot be a candidate is released at once; a possible verb holds nothing', () => {
    expect(feedAll('c2s', ['USER anonym'])[0]!.undecidedFrom).toBe(11);
    expect(feedAll('c2s', ['PO'])[0]!.undecidedFrom).toBe(2);
    expect(feedAll('c2s', ['PORT '])[0]!.undecidedFrom).toBe(5);
    expect(feedAll('s2c', ['22'])[0]!.undecidedFrom).toBe(2);
    expect(feedAll('s2c', ['227 Entering Passive Mode ('])[0]!.undecidedFrom).toBe(27);
    expect(feedAll('s2c', ['227 Entering Passive Mode (10,'])[0]!.undecidedFrom).toBe(27);
    expect(feedAll('s2c', ['229 Entering Extended Passive Mode (||'])[0]!.undecidedFrom).toBe(38);
    expect(feedAll('s2c', ['229 Entering Extended Passive Mode (|||5'])[0]!.undecidedFrom).toBe(39);
  });

  it('227 is decided as soon as the sixth number ends (the rest of the reply is free text)', () => {
    const [a] = feedAll('s2c', ['227 Entering Passive Mode (10,201,0,2,195,80)']);
    expect(a!.edits).toHaveLength(1);
    expect(a!.undecidedFrom).toBe(45);
  });

  it('a malformed candidate is released as soon as it is known to be malformed', () => {
    expect(feedAll('c2s', ['PORT 10,256,'])[0]!.undecidedFrom).toBe(12);
    expect(feedAll('c2s', ['PORT x'])[0]!.undecidedFrom).toBe(6);
    expect(feedAll('s2c', ['227 Logout 2 users'])[0]!.undecidedFrom).toBe(18);
  });

  it('at most maxLine + 1 bytes are ever held; a PORT longer than that is refused (its address never passes)', () => {
    const t = `PORT ${' '.repeat(200)}10,200,0,1,1,1\r\nPORT 10,200,0,1,1,1\r\n`;
    const every = Array.from({ length: t.length }, (_, i) => i);
    const r = run('c2s', t, every, new Set(), { maxLine: 64 });
    expect(r.maxHeld).toBeLessThanOrEqual(65);
    expect(r.abort).toBe('ftp:malformed-command');
    expect(r.out).toBe('');
    expect(r.counters).toMatchObject({ longLines: 1, refusedCommands: 1 });
    // A reply that long is the server's text: it passes.
    const l = `227 ${'x'.repeat(200)} (10,201,0,2,1,1)\r\n227 (10,201,0,2,1,1)\r\n`;
    const q = run('s2c', l, [], new Set(), { maxLine: 64 });
    expect(q.abort).toBeUndefined();
    expect(q.out).toBe(`227 ${'x'.repeat(200)} (10,201,0,2,1,1)\r\n227 (203,0,113,222,1,8)\r\n`);
  });
});

describe('ftp agent: odd input passes unchanged, counted, and never stalls', () => {
  it('"227 Logout." does not hold anything or stop the next reply from being rewritten', () => {
    const t = '227 Logout.\r\n227 Entering Passive Mode (10,201,0,2,1,2)\r\n';
    const r = run('s2c', t, Array.from({ length: t.length }, (_, i) => i));
    expect(r.out).toBe('227 Logout.\r\n227 Entering Passive Mode (203,0,113,222,1,9)\r\n');
    expect(r.maxHeld).toBeLessThanOrEqual(14); // only the digits
    expect(r.counters.noEndpoint).toBe(1);
  });

  it.each([
    'PORT 10,200,0,1,195,256\r\n',
    'PORT 10,200,0,1,195\r\n',
    'PORT 10,200,0,1,195,80x\r\n',
    'PORT 10,200,0,1,195,1000\r\n',
    'PORT 10,200,,1,195,80\r\n',
    'PORT \r\n',
    'PORT 10,200,0,1,200,10\0junk\r\n',
    'PORT 10,200,0,1,200,10\r\r\n',
    'PORT 10,200,0,1,200,0010\r\n',
    'EPRT |1|10.200.0.256|5|\r\n',
    'EPRT |1|10.200.0|5|\r\n',
    'EPRT |1|10.200.0.1|65536|\r\n',
    'EPRT |1|10.200.0.1|051210|\r\n',
    'EPRT |1|10.200.0.1|5\r\n',
    'EPRT 1|10.200.0.1|5|\r\n',
    'EPRT |3|x|5282|\r\n',
  ])('a PORT / EPRT that does not parse strictly (%j): refused, the agent gives up, nothing of its address passes', (t) => {
    const r = run('c2s', `NOOP\r\n${t}PORT 10,200,0,1,0,1\r\n`);
    expect(r.abort).toBe('ftp:malformed-command');
    expect(r.out).toBe('NOOP\r\n');
    expect(r.counters.refusedCommands).toBe(1);
    expect(r.calls).toEqual([]);
  });

  it.each([
    '\xff\xf4\xff\xf2PORT 10,200,0,1,0,22\r\n',
    ' PORT 10,200,0,1,0,22\r\n',
    '\tport 10,200,0,1,0,22\r\n',
    'PORT\t10,200,0,1,0,22\r\n',
    '\xffPORT 10,200,0,1,0,22\r\n',
    '\xff\xf4EPRT |1|10.200.0.7|22|\r\n',
    'EPRT\t|1|10.200.0.7|22|\r\n',
  ])('a PORT / EPRT behind Telnet commands or blanks (%j), which a lenient server reads: refused, none of its argument passes', (t) => {
    const text = `NOOP\r\n${t}PORT 10,200,0,1,0,1\r\n`;
    for (const cuts of [[], Array.from({ length: text.length }, (_, i) => i)]) {
      const r = run('c2s', text, cuts);
      expect(r.abort).toBe('ftp:malformed-command');
      expect(r.out.startsWith('NOOP\r\n')).toBe(true);
      expect(r.out.slice(6)).toMatch(/^[\xff\xf4\xf2 \tPORTEPRTport]*$/); // the verb at most, never an argument byte
      expect(r.counters.refusedCommands).toBe(1);
      expect(r.calls).toEqual([]);
    }
  });

  it('Telnet commands before other verbs (ABOR), blank-led other commands, PORTS and a bare PORT pass; the next PORT is translated', () => {
    const t = '\xff\xf4\xff\xf2ABOR\r\n NOOP\r\nPORTS 1\r\nPORT\r\n \t\r\nPORT 10,200,0,1,0,1\r\n';
    for (const cuts of [[], Array.from({ length: t.length }, (_, i) => i)]) {
      const r = run('c2s', t, cuts);
      expect(r.abort).toBeUndefined();
      expect(r.out).toBe('\xff\xf4\xff\xf2ABOR\r\n NOOP\r\nPORTS 1\r\nPORT\r\n \t\r\nPORT 192,0,2,1,0,2\r\n');
      expect(r.counters.refusedCommands).toBe(0);
    }
  });

  it.each([
    ['227 Entering Passive Mode (10,201,0,2,195)\r\n', 's2c'],
    ['227 Entering Passive Mode (10,201,0,999,195,80)\r\n', 's2c'],
    ['229 Entering Extended Passive Mode (|||99999|)\r\n', 's2c'],
    ['229 Entering Extended Passive Mode (|||50000)\r\n', 's2c'],
    ['229 Entering Extended Passive Mode (||50000|)\r\n', 's2c'],
  ] as [string, Direction][])('malformed %j passes unchanged, counted', (t, dir) => {
    const r = run(dir, t + (dir === 'c2s' ? 'PORT 10,200,0,1,0,1\r\n' : '227 (10,201,0,2,0,1)\r\n'));
    expect(r.out).toBe(t + (dir === 'c2s' ? 'PORT 192,0,2,1,0,2\r\n' : '227 (203,0,113,222,0,8)\r\n'));
    expect(r.counters.malformed).toBe(1);
  });

  it('EPRT |2| (IPv6): rewritten in RFC 5952 text when the hook translates it; a hook answering IPv4 is refused', () => {
    const hooks = (to: string) =>
      createFtp(() => ({
        translateClientEndpoint: (x) => (x.endpoint.addr === '2001:db8::1' ? { addr: to, port: x.endpoint.port } : undefined),
        translateServerEndpoint: () => undefined,
        expect: () => {},
      })).create({}, CTX);
    const a = hooks('2001:db8:1:d550::1');
    const o = a.feed('c2s', 0, Buffer.from('EPRT !2!2001:DB8:0::1!5282!\r\nEPRT |2|2001:db8::zz|1|\r\n'));
    const input = Buffer.from('EPRT !2!2001:DB8:0::1!5282!\r\nEPRT |2|2001:db8::zz|1|\r\n', 'latin1');
    // The second does not parse: refused, deleted from its address on.
    expect(o.abort).toBe('ftp:malformed-command');
    expect(applyEdits(input, o.edits).toString('latin1')).toBe('EPRT !2!2001:db8:1:d550::1!5282!\r\n');
    expect((a as FtpAgent).counters).toMatchObject({ EPRT: 1, malformed: 1, refusedCommands: 1 });
    const bad = hooks('192.0.2.1');
    const o2 = bad.feed('c2s', 0, Buffer.from('EPRT |2|2001:db8::1|5282|\r\n'));
    expect(o2.edits).toEqual([]);
    expect((bad as FtpAgent).counters.hookErrors).toBe(1);
  });

  it('EPRT with another family is refused (counted); 229 whose hook only moves the address is unchanged', () => {
    expect(run('c2s', 'EPRT |3|x|5282|\r\n').counters).toMatchObject({ otherFamily: 1, refusedCommands: 1 });
    const a = createFtp(() => ({
      translateClientEndpoint: () => undefined,
      translateServerEndpoint: (x) => ({ addr: '1.2.3.4', port: x.endpoint.port }),
      expect: () => {},
    })).create({}, CTX);
    const o = a.feed('s2c', 0, Buffer.from('229 Entering Extended Passive Mode (|||50000|)\r\n'));
    expect(o.edits).toEqual([]);
  });

  it('a throwing hook or an invalid answer leaves the line unchanged (hookErrors)', () => {
    const nat = new FakeNat();
    nat.throwOn = '10.200.0.9';
    const a = createFtp(nat.hooks).create({}, CTX) as FtpAgent;
    expect(a.feed('c2s', 0, Buffer.from('PORT 10,200,0,9,1,1\r\n')).edits).toEqual([]);
    const b = createFtp(() => ({
      translateClientEndpoint: () => ({ addr: '300.1.1.1', port: 1 }),
      translateServerEndpoint: () => ({ addr: '1.1.1.1', port: 70000 }),
      expect: () => {},
    })).create({}, CTX) as FtpAgent;
    expect(b.feed('c2s', 0, Buffer.from('PORT 10,200,0,9,1,1\r\n')).edits).toEqual([]);
    expect(b.feed('s2c', 0, Buffer.from('227 (10,200,0,9,1,1)\r\n')).edits).toEqual([]);
    expect(a.counters.hookErrors + b.counters.hookErrors).toBe(3);
  });

  it('a mid-line flush deletes the held bytes (the address digits: never released untranslated) and skips the rest of that line', () => {
    const nat = new FakeNat();
    const d = new AgentDriver(createFtp(nat.hooks).create({}, CTX), 'c2s');
    d.feed(Buffer.from('PORT 10,200'));
    expect(d.undecided).toBe(5);
    d.flush();
    d.feed(Buffer.from(',0,1,1,1\r\nPORT 10,200,0,1,1,1\r\n'));
    d.flush();
    const s = Buffer.from('PORT 10,200,0,1,1,1\r\nPORT 10,200,0,1,1,1\r\n');
    expect(applyEdits(s, d.edits).toString()).toBe('PORT ,0,1,1,1\r\nPORT 192,0,2,1,1,2\r\n');
    expect((d.agent as FtpAgent).counters.flushedLines).toBe(1);
  });

  it('a hold timeout in the middle of a PORT: the line is parsed on; an endpoint it carries cannot be translated any more, so the rest never passes and the agent gives up', () => {
    const nat = new FakeNat();
    const a = createFtp(nat.hooks).create({}, CTX) as FtpAgent;
    expect(a.feed('c2s', 0, Buffer.from('PORT 10,200')).undecidedFrom).toBe(5);
    // "10,200" deleted: released, the inside address would cross untranslated.
    expect(a.flush('c2s', 'timeout')).toEqual({ edits: [{ at: 5, len: 6, data: Buffer.alloc(0) }], undecidedFrom: 11 });
    expect(a.feed('c2s', 11, Buffer.from(',0,1,1'))).toEqual({ edits: [], undecidedFrom: 11 }); // held: not decided yet
    const out = a.feed('c2s', 17, Buffer.from(',1\r\nNOOP\r\n'));
    expect(out).toEqual({ edits: [{ at: 11, len: 16, data: Buffer.alloc(0) }], undecidedFrom: 27, abort: 'ftp:split-command' });
    expect(a.counters).toMatchObject({ flushedLines: 1, splitLines: 1, PORT: 0 });
    // No hook is asked: it would expect a data connection for a command the server never gets.
    expect(nat.calls).toEqual([]);
    // Given up: what comes after is deleted, and no hook is called.
    expect(a.feed('c2s', 27, Buffer.from('PORT 10,200,0,1,1,1\r\n'))).toEqual({ edits: [{ at: 27, len: 21, data: Buffer.alloc(0) }], undecidedFrom: 48 });
    expect(nat.calls).toEqual([]);
    expect((JSON.parse(JSON.stringify(a.snapshot())) as { dirs: { c2s: { mode: string } } }).dirs.c2s.mode).toBe('gone');

    // Not an endpoint after all (a number over 255): a malformed PORT, refused as any.
    const b = createFtp(nat.hooks).create({}, CTX) as FtpAgent;
    b.feed('c2s', 0, Buffer.from('PORT 10,200'));
    b.flush('c2s', 'limit');
    const snap = JSON.parse(JSON.stringify(b.snapshot()));
    expect(snap.dirs.c2s.mode).toBe('forced');
    const c = createFtp(nat.hooks).restore({}, CTX, snap) as FtpAgent;
    const more = c.feed('c2s', 11, Buffer.from(',0,1,1,999\r\nPORT 10,200,0,1,1,1\r\n'));
    expect(more.abort).toBe('ftp:malformed-command');
    expect(c.counters).toMatchObject({ malformed: 1, refusedCommands: 1, splitLines: 0, PORT: 0 });

    // Any endpoint in a forced line ends it, even one no mapping would change (asking would be expecting).
    const d = createFtp(nat.hooks).create({}, CTX) as FtpAgent;
    d.feed('c2s', 0, Buffer.from('PORT 172,16'));
    d.flush('c2s', 'timeout');
    expect(d.feed('c2s', 11, Buffer.from(',0,5,4,1\r\n')).abort).toBe('ftp:split-command');
  });

  it('a multi-line reply ends at a line of its code followed by anything but "-" (a bare "211", as ftplib reads it): the next 227 is translated', () => {
    const t = '211-status\r\n211\r\n227 Entering Passive Mode (10,201,0,2,195,80)\r\n';
    expect(run('s2c', t).out).toBe('211-status\r\n211\r\n227 Entering Passive Mode (203,0,113,222,195,87)\r\n');
    // Still text inside the reply: a "211-" line or one of another code.
    const u = '211-status\r\n227 (10,201,0,2,1,1)\r\n211-more\r\n211 end\r\n227 (10,201,0,2,1,1)\r\n';
    expect(run('s2c', u).out).toBe('211-status\r\n227 (10,201,0,2,1,1)\r\n211-more\r\n211 end\r\n227 (203,0,113,222,1,8)\r\n');
  });

  it('a direction outside ctx.directions is not edited', () => {
    const a = createFtp(new FakeNat().hooks).create({}, { ...CTX, directions: new Set<Direction>(['s2c']) });
    expect(a.feed('c2s', 0, Buffer.from('PORT 10,200,0,1,1,1\r\n'))).toEqual({ edits: [] });
  });

  it('throws on a feed at the wrong position (engine bug)', () => {
    const a = createFtp(new FakeNat().hooks).create({}, CTX);
    a.feed('c2s', 0, Buffer.from('NOOP'));
    expect(() => a.feed('c2s', 3, Buffer.from('x'))).toThrow(/expected 4/);
  });

  it('binary junk and bare CRs stay byte-exact', () => {
    const junk = Buffer.from(Array.from({ length: 600 }, (_, i) => (i * 37 + 11) & 0xff));
    const t = Buffer.concat([junk, Buffer.from('\rPORT 10,200,0,1,1,1\r\n')]);
    const r = run('c2s', t, [100, 300, 599]);
    expect(Buffer.from(r.out, 'latin1').subarray(0, 600).equals(junk)).toBe(true);
  });
});

// ---------------------------------------------------------------------------------------------
// Chunking, snapshot/restore

const LINES_C2S = [
  'PORT 10,200,0,1,195,80\r\n', 'port 10,200,0,3,4,0\n', 'PORT 10, 200, 0, 1, 4, 123\r\n', 'EPRT |1|10.200.0.1|50000|\r\n',
  'EPRT |2|::1|5|\r\n', 'PORT 10,200,0,1,195,256\r\n', 'PORT 10,200,0,1\r\n', 'NOOP\r\n', 'PO\r\n', 'POR', '\r\n',
  'PORT 1,2,3,4,5,6\r\n', 'USER x\r\n', 'PORT 10,200,0,1,195,80 trailing\r\n', `PORT ${'9'.repeat(40)}\r\n`, '\xff\xf4\xff\xf2ABOR\r\n',
];
const LINES_S2C = [
  '227 Entering Passive Mode (10,201,0,2,195,80).\r\n', '227 Entering passive mode 10,201,0,2,195,80\r\n', '227 Logout.\r\n',
  '229 Entering Extended Passive Mode (|||50000|)\r\n', '227-first 10,201,0,2,1,1\r\n', '227 last (10,201,0,2,1,1)\r\n',
  '230-x\r\n', '227 (10,201,0,2,2,2)\r\n', '230 ok\r\n', '150 ok\r\n', '227 (10,201,0,2,1,256)\r\n', '229 (|||1|)\n', '22', '7 ',
  '(10,201,0,2,3,3)\r\n', '2', '\r\n', `227 ${'x'.repeat(40)} 10,201,0,2,4,4\r\n`,
];

function transcript(dir: Direction, idx: number[]): string {
  const lines = dir === 'c2s' ? LINES_C2S : LINES_S2C;
  return idx.map((i) => lines[i % lines.length]).join('');
}

describe('ftp agent: the cut never changes the result', () => {
  const lines: [Direction, string][] = [
    ...LINES_C2S.filter((l) => l.endsWith('\n')).map((l): [Direction, string] => ['c2s', l]),
    ...LINES_S2C.filter((l) => l.endsWith('\n')).map((l): [Direction, string] => ['s2c', l]),
  ];

  it.each(lines)('%s %j split at every byte offset = unsplit (output and hook calls)', (dir, l) => {
    const t = `${l}${l}`;
    const want = run(dir, t, []);
    for (let k = 1; k < t.length; k++) {
      const got = run(dir, t, [k]);
      expect(got.out).toBe(want.out);
      expect(got.calls).toEqual(want.calls);
    }
    expect(run(dir, t, Array.from({ length: t.length }, (_, i) => i)).out).toBe(want.out);
  });

  it('the whole session, split at every byte offset and fed byte by byte', () => {
    for (const [dir, t, w] of [['c2s', C2S, C2S_WANT], ['s2c', S2C, S2C_WANT]] as const) {
      for (let k = 1; k < t.length; k++) expect(run(dir, t, [k]).out).toBe(w);
      expect(run(dir, t, Array.from({ length: t.length }, (_, i) => i)).out).toBe(w);
    }
  });

  it('snapshot/restore (through JSON) after every byte continues identically', () => {
    for (const [dir, t, w] of [['c2s', C2S, C2S_WANT], ['s2c', S2C, S2C_WANT]] as const) {
      const every = Array.from({ length: t.length }, (_, i) => i);
      const r = run(dir, t, every, new Set(every));
      expect(r.out).toBe(w);
      expect(r.calls).toEqual(run(dir, t).calls);
      expect(r.counters).toEqual(run(dir, t).counters);
    }
  });

  it('random transcripts, random cuts, random snapshots = one piece (fast-check)', () => {
    const arb = fc.constantFrom<Direction>('c2s', 's2c').chain((dir) =>
      fc.array(fc.nat(40), { maxLength: 14 }).chain((idx) => {
        const t = transcript(dir, idx);
        return fc.record({
          dir: fc.constant(dir),
          t: fc.constant(t),
          cuts: fc.uniqueArray(fc.integer({ min: 1, max: Math.max(1, t.length) }), { maxLength: 20 }).map((c) => c.sort((a, b) => a - b)),
          snaps: fc.uniqueArray(fc.nat(20), { maxLength: 5 }),
          maxLine: fc.constantFrom(16, 32, 512),
        });
      }),
    );
    fc.assert(
      fc.property(arb, ({ dir, t, cuts, snaps, maxLine }) => {
        const want = run(dir, t, [], new Set(), { maxLine });
        const got = run(dir, t, cuts, new Set(snaps), { maxLine });
        expect(got.out).toBe(want.out);
        expect(got.calls).toEqual(want.calls);
        expect(got.counters).toEqual(want.counters);
        expect(got.maxHeld).toBeLessThanOrEqual(maxLine + 1);
      }),
      { seed: 0xf7b, numRuns: 500 },
    );
  });

  it('snapshot is plain JSON; a bad one is refused', () => {
    const f = createFtp(new FakeNat().hooks);
    const a = f.create({}, CTX);
    a.feed('c2s', 0, Buffer.from('NOOP\r\nPORT 10,2'));
    const snap = a.snapshot() as FtpSnapshot;
    expect(JSON.parse(JSON.stringify(snap))).toEqual(snap);
    expect(snap.dirs.c2s).toMatchObject({ pos: 15, lineStart: 6, undecided: 11, mode: 'scan', line: Buffer.from('PORT 10,2').toString('base64') });
    expect(() => f.restore({}, CTX, { v: 2 })).toThrow(/bad snapshot/);
    expect(() => f.restore({}, CTX, { ...snap, dirs: { ...snap.dirs, s2c: { ...snap.dirs.s2c, mode: 'x' } } })).toThrow(/bad snapshot/);
  });
});

describe('ftp agent: static config and registry', () => {
  it('the registry makes an ftp agent with the rule\'s static mapping (CIDR keeps host bits)', () => {
    const cfg: FtpConfig = { clientAddress: { from: '10.200.0.0/24', to: '10.100.0.0/24' }, serverAddress: { from: '10.201.0.2', to: '203.0.113.9' } };
    const a = createAgent('ftp', cfg, CTX);
    expect(a.name).toBe('ftp');
    const o = a.feed('c2s', 0, Buffer.from('PORT 10,200,0,7,195,80\r\nPORT 10,9,0,7,195,80\r\n'));
    expect(o.edits.map((e) => Buffer.from(e.data).toString())).toEqual(['10,100,0,7,195,80']);
    const s = a.feed('s2c', 0, Buffer.from('227 Entering Passive Mode (10,201,0,2,195,80).\r\n229 (|||6|)\r\n'));
    expect(s.edits.map((e) => Buffer.from(e.data).toString())).toEqual(['203,0,113,9,195,80']);
  });

  it('hooks supplied by the registry are used (the gateway\'s NAT)', () => {
    const nat = new FakeNat();
    const a = createAgent('ftp', undefined, CTX, makeRegistry({ ftpHooks: nat.hooks }));
    a.feed('c2s', 0, Buffer.from('PORT 10,200,0,1,0,1\r\n'));
    expect(nat.expectations).toHaveLength(1);
  });

  it('bad config is refused with the field', () => {
    expect(ftpConfigProblems({ maxLine: 3 })[0]![0]).toBe('maxLine');
    expect(ftpConfigProblems({ clientAddress: { from: '10.0.0.0/24', to: '10.1.0.1' } })[0]![1]).toMatch(/differ in size/);
    expect(ftpConfigProblems({ serverAddress: { from: 'x', to: '10.1.0.1' } })[0]![0]).toBe('serverAddress.from');
    expect(() => createAgent('ftp', { maxLen: 5 }, CTX)).toThrow(/maxLen: unknown key/);
  });
});

describe('ftp agent in the stream engine (reference TCP pair)', () => {
  it('the session arrives rewritten under tiny segments, loss, reordering and duplication', () => {
    for (let seed = 1; seed <= 12; seed++) {
      const rand = mulberry32(seed);
      const nat = new FakeNat();
      const agent = createFtp(nat.hooks).create({}, CTX);
      const res = simulate({
        rand,
        data: [Buffer.from(C2S, 'latin1'), Buffer.from(S2C, 'latin1')],
        isn: [0xfffffff0, 7],
        mss: 1 + (seed % 9),
        loss: 0.1,
        dup: 0.05,
        reorder: 0.25,
        sack: seed % 2 === 0,
        agent,
        limits: { holdTimeoutMs: 1e9 },
      });
      expect(res.errors).toEqual([]);
      expect(res.finished).toBe(true);
      expect(Buffer.from(res.received[0]).toString('latin1')).toBe(C2S_WANT);
      expect(Buffer.from(res.received[1]).toString('latin1')).toBe(S2C_WANT);
      expect(nat.expectations).toHaveLength(9); // 8 IPv4 endpoints and the IPv6 one of EPRT |2|
    }
  });
});
