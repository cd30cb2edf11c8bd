/**
 * The JIT warm-up (src/engine/warmup.ts): its synthetic traffic is valid and reaches every part
 * it is meant to warm (no malformed frame, no NAT drop, handshakes completed, every rule's agent
 * fed, GSO frames with a vnet header), and — checked with V8's own trace in a child process —
 * a real gateway built after it runs its first frames of every kind (ARP, ICMP, UDP, TCP) in the
 * optimised code, without deoptimising handleFrame or its output path.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig, parseConfig } from '../../src/config/index.js';
import { WARM_RULES_MAX, warmUp, warmupRules } from '../../src/engine/warmup.js';
import { tapgateHttpYaml } from '../../src/bench/http.js';

const REPO = join(import.meta.dirname, '../..');
const SMALL_STORE_RULES = 'rules:\n  - match: { port: 80 }\n    agent: replace\n    replace:\n      - { find: "Hello world", with: "Hi there" }\n';
const example = (f: string) => loadConfig(join(REPO, 'examples', f));

describe('warmUp', () => {
  const cases = [
    { name: 'no config', config: null, vnetHdr: false, rules: 0, nat: false },
    { name: 'no config, vnet header', config: null, vnetHdr: true, rules: 0, nat: false },
    { name: 'replace rules, vnet header', config: example('replace.yaml'), vnetHdr: true, rules: 1, nat: false },
    { name: 'masquerade + ftp + replace (cluster.yaml)', config: example('cluster.yaml'), vnetHdr: true, rules: 2, nat: true },
    { name: 'one-to-one NAT + ftp (ftp-nat.yaml)', config: example('ftp-nat.yaml'), vnetHdr: false, rules: 1, nat: true },
    // A download among the answers (warmup-talk.ts BULK_TALK), through the http agent.
    { name: 'the HTTP bench\'s http rule, vnet header', config: parseConfig(tapgateHttpYaml(80), 'http.yaml'), vnetHdr: true, rules: 1, nat: false },
    // Stores too small for the download's frames in flight: it is left out, nothing is dropped.
    { name: 'replace rules with small stores, vnet header', config: parseConfig(`limits:\n  normalizeBytesPerConn: 131072\n  normalizeBytesGlobal: 65536\n${SMALL_STORE_RULES}`, 'small.yaml'), vnetHdr: true, rules: 1, nat: false },
  ];
  for (const c of cases) {
    it(`${c.name}: valid traffic that reaches what it warms`, () => {
      const r = warmUp({ config: c.config, vnetHdr: c.vnetHdr, frames: 3000 });
      const s = r.stats;
      expect(r.frames).toBeGreaterThanOrEqual(3000);
      expect(s.gateway.framesIn).toBe(r.frames);
      expect(s.gateway.malformed).toEqual({});
      expect(s.gateway.natDropped).toEqual({});
      expect(s.gateway.wrongSide, 'the warm-up sends every frame from its sender\'s side').toBe(0);
      // Nothing refused or dropped for want of room: the paths warmed are those of valid traffic.
      expect(s.gateway.tcpInvalid).toEqual({});
      expect([s.stream.beyondStore, s.stream.storeBudgetFull]).toEqual([0, 0]);
      // Every frame goes out again (the retransmitted duplicate too); rewrites may add some.
      expect(s.gateway.framesOut).toBeGreaterThanOrEqual(r.frames);
      expect(s.flows.created).toBeGreaterThan(0);
      expect(s.flows.halfOpen).toBe(0);
      if (c.vnetHdr) expect(s.gateway.gsoIn).toBeGreaterThan(0);
      else expect(s.gateway.gsoIn).toBe(0);
      if (c.rules > 0) {
        expect(s.stream.agentBytes).toBeGreaterThan(0);
        expect(s.stream.delayed, 'out-of-order segments queued').toBeGreaterThan(0);
        expect(s.stream.drained).toBe(s.stream.delayed);
        expect(s.stream.alreadyProcessed, 'retransmissions').toBeGreaterThan(0);
        expect(s.stream.agentError + s.stream.agentViolation).toBe(0);
      }
      if (c.nat) expect(s.nat!.translated).toBeGreaterThan(0);
    });
  }

  it('warms one rule of each shape, at most WARM_RULES_MAX: 2,000 rules cost what a few do', () => {
    const rule = (i: number) =>
      i % 500 === 7
        ? `  - match: { serverAddress: 10.1.${i >> 8}.${i & 255} }\n    agent: replace\n    replace: [ { regex: "x${i}+", with: "y", maxMatch: 8 } ]\n`
        : `  - match: { serverAddress: 10.1.${i >> 8}.${i & 255} }\n    agent: replace\n    replace: [ { find: "x${i}", with: "y${i}" } ]\n`;
    const config = parseConfig(`rules:\n${Array.from({ length: 2000 }, (_, i) => rule(i)).join('')}  - { agent: ftp }\n`, 'many.yaml');
    // Literal rules alike, regex rules alike, the ftp rule: three shapes, in config order.
    expect(warmupRules(config).map((r) => r.index)).toEqual([0, 7, 2000]);
    const r = warmUp({ config, vnetHdr: true, frames: 3000 });
    // One round is a connection per warmed rule (17 frames each): not one per rule (34,000).
    expect(r.frames).toBeLessThan(3000 + 17 * 4);
    expect(r.stats.stream.agentBytes).toBeGreaterThan(0);
    const distinct = parseConfig(`rules:\n${Array.from({ length: 100 }, (_, i) => `  - match: { port: ${1000 + i} }\n    agent: replace\n    replace: [ { find: "x", with: "y" }${', { find: "z", with: "w" }'.repeat(i % 70)} ]\n`).join('')}`, 'shapes.yaml');
    expect(warmupRules(distinct)).toHaveLength(WARM_RULES_MAX);
    // Options that choose code make shapes of their own: the engines, a budget action, flags.
    const engines = parseConfig(`rules:\n${['{ regex: "ab+c", with: "x", maxMatch: 16 }', '{ regex: "ab+d", engine: linear, with: "y", maxMatch: 9 }', '{ regex: "(?<=a)b+c", with: "x", maxMatch: 16, engine: backtracking }', '{ regex: "(?<=b)b+c", with: "x", maxMatch: 16, engine: backtracking, budgetExceeded: pass }', '{ regex: "ab+c", with: "x", maxMatch: 16, flags: "i" }', '{ regex: "a(?=b)", with: "x", maxMatch: 16, engine: backtracking }'].map((e, i) => `  - match: { port: ${81 + i} }\n    agent: replace\n    replace: [ ${e} ]\n`).join('')}`, 'engines.yaml');
    expect(warmupRules(engines).map((r) => r.index)).toEqual([0, 1, 2, 3, 4]);
  });

  it('leaves a real gateway built with the same options optimised for every frame kind (V8 trace)', () => {
    // The child builds the real gateway first (as LiveGateway does), warms up, then sends the real
    // gateway ARP, ICMP, UDP and TCP frames at fractional times to a different output function.
    const script = `
      import { Gateway } from './src/engine/gateway.ts';
      import { warmUp } from './src/engine/warmup.ts';
      import { loadConfig } from './src/config/index.ts';
      import { pino } from 'pino';
      const log = pino({ level: 'silent' });
      const config = loadConfig('examples/replace.yaml');
      const gw = new Gateway({ config, vnetHdr: true, verifyChecksums: true, log: log.child({ mod: 'gateway' }) });
      // The frames the warm-up builds, captured from a second warm-up's scratch gateway's input.
      const frames = [];
      const orig = Gateway.prototype.handleFrame;
      Gateway.prototype.handleFrame = function (f, from, now, emit) { if (frames.length < 400) frames.push([f.slice(), from]); return orig.call(this, f, from, now, emit); };
      warmUp({ config, vnetHdr: true, log, frames: 400 });
      Gateway.prototype.handleFrame = orig;
      warmUp({ config, vnetHdr: true, log });
      await new Promise((r) => setTimeout(r, 200)); // concurrent compilation finishes
      console.log('REAL-TRAFFIC-START');
      let out = 0;
      const emit = function realEmit(f) { out += f.length; };
      let now = 5000.123;
      for (const [f, from] of frames) gw.handleFrame(f, from, (now += 0.37), emit);
      console.log('REAL-TRAFFIC-END', out > 0);
    `;
    const r = spawnSync(process.execPath, ['--trace-deopt', '--import', 'tsx', '--input-type=module', '-e', script], { cwd: REPO, encoding: 'utf8', timeout: 60_000 });
    expect(r.status, r.stderr).toBe(0);
    const after = r.stdout.slice(r.stdout.indexOf('REAL-TRAFFIC-START'));
    expect(after).toContain('REAL-TRAFFIC-END true');
    const during = after.slice(0, after.indexOf('REAL-TRAFFIC-END'));
    const bailouts = during.split('\n').filter((l) => l.includes('bailout') && /<JSFunction (handleFrame|handleTcp|out|decodeFrame|lookup|onSegment|handle)\b/.test(l));
    expect(bailouts).toEqual([]);
  });

  it('leaves a download through the http agent optimised: GSO frames, a match every 45 bytes, ACKs behind the data (V8 trace)', () => {
    // The HTTP bench's rule and body (bench/warm.ts): the first 4 MiB response after the warm-up
    // must not run into a path of the stream engine or the frame path the warm-up never took
    // ("Insufficient type feedback": window translation, pruning and store growth while the
    // command list holds later commands, as ACKs behind the data make it) or numbers of another
    // representation ("not a Smi": boxed positions, agent/replace.ts NO_POS). Such deoptimisations
    // made the first download after a start run at about 60 % of the second.
    const script = `
      import { measureWarm } from './src/bench/warm.ts';
      await measureWarm(4, 1, (what) => console.log(what === 'warm' ? 'REAL-TRAFFIC-START' : 'REAL-TRAFFIC-END'));
    `;
    // --trace-generalization needs Sparkplug off (V8 11 aborts printing a baseline frame).
    const r = spawnSync(process.execPath, ['--trace-deopt-verbose', '--trace-generalization', '--no-sparkplug', '--import', 'tsx', '--input-type=module', '-e', script], { cwd: REPO, encoding: 'utf8', timeout: 120_000, maxBuffer: 256 * 1024 * 1024 });
    expect(r.status, r.stderr.slice(-2000)).toBe(0);
    const after = r.stdout.slice(r.stdout.indexOf('REAL-TRAFFIC-START'));
    expect(after).toContain('REAL-TRAFFIC-END');
    const during = after.slice(0, after.indexOf('REAL-TRAFFIC-END')).split('\n');
    // No field of ours went from small integers to doubles, in the warm-up or after it, but those
    // that hold 32-bit numbers (sequence numbers, timestamps, a CRC) or times: a position widened
    // boxes every value of its field (a heap number per read that escapes), and after the warm-up
    // every object of its class changes map and the optimised code on them is thrown away
    // (agent/replace.ts NO_POS). V8 may print two trace lines into one: a name stops at '['.
    const inherent = /^(seq|ack|tsval|tsecr|check|left|right|firstEnd|\w+Ms)$/;
    const widened = r.stdout.split('\n').flatMap((l) => {
      const m = /^\[generalizing\]([^\s[:]+):s\{[^}[]*\}->d\{/.exec(l);
      return m !== null && !inherent.test(m[1]!) && /\/src\/(wire|flow|engine|stream|agent)\//.test(l) ? [l.replace(/0x[0-9a-f]+/g, '')] : [];
    });
    expect(widened).toEqual([]);
    const found: string[] = [];
    during.forEach((l, i) => {
      const m = /^\[bailout \(kind: [^,]*, reason: ([^)]*)\): begin\. deoptimizing \S+ <JSFunction (\S+)/.exec(l);
      if (m === null || !/^(Insufficient type feedback|not a Smi|lost precision|Smi)/.test(m[1]!)) return;
      const at = /deoptimize at <[^>]*\/src\/((?:wire|flow|engine|stream|agent)[^:>]*)/.exec(during[i + 1] ?? '');
      if (at !== null) found.push(`${m[2]} (${at[1]}): ${m[1]}`);
    });
    expect(found).toEqual([]);
  }, 150_000);

  it('leaves the paths of a real Linux connection optimised: options, sequence numbers over 2^31, SACK (V8 trace)', () => {
    // A real capture (test/fixtures/http-loss.pcap: curl and python's http.server, with
    // timestamps, window scaling, SACK, loss and retransmissions) replayed into a gateway after
    // the warm-up, a replace rule rewriting its body. The code that parses and tracks the
    // segments and translates their numbers must have run during the warm-up: no deoptimisation
    // for a path it never took ("Insufficient type feedback") or for numbers it never saw ("not
    // a Smi", "lost precision"), as happened when warm-up segments had no options and
    // sequence numbers below 2^31.
    const script = `
      import { Gateway } from './src/engine/gateway.ts';
      import { warmUp } from './src/engine/warmup.ts';
      import { loadConfig } from './src/config/index.ts';
      import { readPcapAll } from './src/phy/pcap-read.ts';
      import { pino } from 'pino';
      import { writeFileSync } from 'node:fs';
      const log = pino({ level: 'silent' });
      const file = process.env.TMPDIR_WARM + '/fox.yaml';
      writeFileSync(file, 'rules:\\n  - match: { port: 8000 }\\n    agent: replace\\n    replace:\\n      - { find: "quick brown", with: "slow red" }\\n');
      const config = loadConfig(file);
      const gw = new Gateway({ config, vnetHdr: false, verifyChecksums: true, log: log.child({ mod: 'gateway' }) });
      const { records } = await readPcapAll('test/fixtures/http-loss.pcap');
      warmUp({ config, vnetHdr: false, log });
      await new Promise((r) => setTimeout(r, 300)); // concurrent compilation finishes
      console.log('REAL-TRAFFIC-START');
      const emit = function realEmit(f) {};
      const t0 = Number(records[0].tsNs / 1000n) / 1000;
      for (const r of records) {
        const d = r.data;
        const side = ((d[34] << 8) | d[35]) === 8000 ? 1 : 0;
        gw.handleFrame(new Uint8Array(d), side, 1e6 + Number(r.tsNs / 1000n) / 1000 - t0, emit);
      }
      console.log('REAL-TRAFFIC-END', gw.stats().agents.replace.matches);
    `;
    const tmp = mkdtempSync(join(tmpdir(), 'tapgate-warm-'));
    try {
      const r = spawnSync(process.execPath, ['--trace-deopt-verbose', '--import', 'tsx', '--input-type=module', '-e', script], { cwd: REPO, encoding: 'utf8', timeout: 60_000, env: { ...process.env, TMPDIR_WARM: tmp } });
      expect(r.status, r.stderr).toBe(0);
      const after = r.stdout.slice(r.stdout.indexOf('REAL-TRAFFIC-START'));
      expect(after).toContain('REAL-TRAFFIC-END 1600'); // every line's match replaced
      const during = after.slice(0, after.indexOf('REAL-TRAFFIC-END')).split('\n');
      const found: string[] = [];
      during.forEach((l, i) => {
        const m = /^\[bailout \(kind: [^,]*, reason: ([^)]*)\): begin\. deoptimizing \S+ <JSFunction (\S+)/.exec(l);
        if (m === null || !/^(Insufficient type feedback|not a Smi|lost precision|Smi)/.test(m[1]!)) return;
        const at = /deoptimize at <[^>]*\/src\/((?:wire|flow|engine|stream\/connection)[^:>]*)/.exec(during[i + 1] ?? '');
        if (at !== null) found.push(`${m[2]} (${at[1]}): ${m[1]}`);
      });
      expect(found).toEqual([]);
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });
});

