/**
 * `tapgate replay <in>`: runs the frames of a capture through the gateway in order, with the
 * capture's time injected, writes the frames the gateway releases, and (with --streams) each TCP
 * connection's two reassembled byte streams as the receivers get them.
 */
import { statSync, type Stats } from 'node:fs';
import { makeDirs } from '../util/dirs.js';
import type { ArgumentsCamelCase, Argv, CommandModule } from 'yargs';
import { loadConfig, type Config } from '../config/index.js';
import { Gateway } from '../engine/gateway.js';
import { StreamRecorder } from '../flow/recorder.js';
import { ChecksumSurvey, fillOffloadedChecksums, newCaptureFixCounters, toReplayable, type CaptureFixCounters } from '../phy/capture-fixup.js';
import { PcapReader, PcapWriter, type PcapItem } from '../phy/pcap.js';
import type { LinkType } from '../wire/frame.js';
import { ipToString, type IpAddr } from '../wire/ip.js';
import { CliError, EXIT, fileError, opening } from './errors.js';
import { captureClock, EventFile } from '../engine/event-file.js';
import { makeLogger } from './log.js';

export type ChecksumMode = 'auto' | 'verify' | 'ignore';

interface ReplayArgs {
  in: string;
  out?: string;
  config?: string;
  streams?: string;
  checksums: ChecksumMode;
  json?: boolean;
  /** Append events as JSON lines (engine/events.ts), stamped with the capture's time. */
  events?: string;
}

export interface ReplayResult {
  exitCode: number;
  summary: Record<string, unknown>;
  /** Frames dropped, by reason (gateway and capture), for the summary line. */
  dropped: Record<string, number>;
  /** Hosts treated as offloading their checksums (`--checksums auto`). */
  offloading: string[];
}

/**
 * The input must be a readable file: a clear error before anything is created. `--checksums
 * auto` reads it twice, so it must be a regular file then (a pipe would be empty the second time).
 */
function checkInput(path: string, twice: boolean): Stats {
  if (path === '-' || path === '') {
    throw new CliError('capture from standard input: name it /dev/stdin (with --checksums verify or ignore: a pipe is read once)', EXIT.usage);
  }
  try {
    const st = statSync(path);
    if (st.isDirectory()) throw new CliError(`capture ${path}: is a directory`, EXIT.io);
    if (twice && !st.isFile()) {
      throw new CliError(`capture ${path}: not a regular file (a pipe?): --checksums auto reads the capture twice; save it to a file, or use --checksums verify or ignore`, EXIT.io);
    }
    return st;
  } catch (e) {
    throw fileError(e, 'capture') ?? e;
  }
}

/** An output must not be the input: it would be truncated (-o) or appended to (--events) while it is read. */
function notTheInput(input: Stats, path: string | undefined, what: string): void {
  if (path === undefined) return;
  let st: Stats;
  try {
    st = statSync(path);
  } catch {
    return; // does not exist yet: cannot be the input
  }
  if (st.isFile() && st.dev === input.dev && st.ino === input.ino) {
    throw new CliError(`${what} ${path} is the input capture: it would be overwritten while it is read`, EXIT.usage);
  }
}

/** Largest timestamp a classic pcap record holds (32-bit seconds). */
const PCAP_MAX_NS = 0xffff_ffffn * 1_000_000_000n + 999_999_999n;

function makeStreamsDir(dir: string): void {
  try {
    makeDirs(dir);
    if (!statSync(dir).isDirectory()) throw new CliError(`--streams ${dir}: is not a directory`, EXIT.io);
  } catch (e) {
    throw fileError(e, '--streams') ?? e;
  }
}

/** Every record of the capture as the gateway takes it (capture-fixup.ts), or a capture error. */
async function* replayable(path: string, fix: CaptureFixCounters): AsyncGenerator<{ item: Extract<PcapItem, { kind: 'record' }>; link: LinkType; data: Uint8Array } | { error: string }> {
  for await (const item of new PcapReader(path)) {
    if (item.kind === 'error') {
      yield { error: item.error.message };
      return;
    }
    const r = toReplayable(item.link, item.data, item.origLen === item.data.length, fix);
    if (r !== null) yield { item, link: r.link, data: r.data };
  }
}

export async function replay(a: Omit<ReplayArgs, 'checksums'> & { checksums?: ChecksumMode }): Promise<ReplayResult> {
  const log = makeLogger().child({ mod: 'replay' });
  const mode = a.checksums ?? 'auto';
  const input = checkInput(a.in, mode === 'auto');
  notTheInput(input, a.out, '--out');
  notTheInput(input, a.events, '--events');
  let config: Config | null = null;
  if (a.config !== undefined) config = loadConfig(a.config);
  // --checksums auto: a first pass finds the hosts whose TCP checksums are all wrong (captured
  // before the NIC computed them); their segments get the checksums the wire had.
  let offload = new Map<IpAddr, { good: number; bad: number }>();
  if (mode === 'auto') {
    const survey = new ChecksumSurvey();
    for await (const r of replayable(a.in, newCaptureFixCounters())) if (!('error' in r)) survey.add({ link: r.link, data: r.data });
    offload = survey.offloadingHosts();
    for (const [h, e] of offload) {
      log.warn({ host: ipToString(h), bad: e.bad, good: e.good }, 'checksum offload: this host\'s TCP checksums are wrong in the capture; filled in (--checksums verify to drop them)');
    }
  }
  const ev = a.events;
  const events = ev === undefined ? undefined : await opening('--events', () => EventFile.open(ev, captureClock));
  const gw = new Gateway({ config, verifyChecksums: mode !== 'ignore', log: log.child({ mod: 'gateway' }), ...(events !== undefined ? { events: events.sink } : {}) });
  let writer: PcapWriter | null = null;
  let recorder: StreamRecorder | null = null;
  if (a.streams !== undefined) {
    makeStreamsDir(a.streams);
    recorder = new StreamRecorder({ dir: a.streams });
  }
  const openOut = (link: LinkType): Promise<PcapWriter> => opening('--out', () => PcapWriter.open(a.out!, { link, precision: 'nano' }));
  let outLink: LinkType | undefined;
  /** A file-system error of an output as a CliError naming it (disk full, EIO…). */
  const io = async <T>(what: string, f: () => T | Promise<T>): Promise<T> => {
    try {
      return await f();
    } catch (e) {
      throw fileError(e, what) ?? e;
    }
  };
  const fix = newCaptureFixCounters();
  let link: LinkType = 'ethernet';
  let tsNs = 0n;
  let nowMs = 0;
  let records = 0;
  let written = 0;
  let captureError: string | null = null;
  const pending: Uint8Array[] = [];
  const emit = (frame: Uint8Array) => {
    pending.push(frame);
  };
  const drain = async () => {
    for (const f of pending) {
      written++;
      if (writer) {
        if (tsNs < 0n || tsNs > PCAP_MAX_NS) {
          throw new CliError(`--out ${a.out}: record ${records} of the capture is stamped ${tsNs} ns from 1970, which a pcap record cannot hold (1970 to 2106)`, EXIT.io);
        }
        await io('--out', () => writer!.write({ data: f, tsNs }));
      }
      if (recorder !== null) await io('--streams', () => recorder!.feed(f, link));
    }
    pending.length = 0;
  };
  for await (const r of replayable(a.in, fix)) {
    if ('error' in r) {
      captureError = r.error;
      break;
    }
    records++;
    if (!writer && a.out !== undefined) writer = await openOut((outLink = r.link));
    if (writer && r.link !== outLink) {
      throw new CliError(`--out ${a.out}: record ${records} is ${r.link}, the ones before ${outLink}: a pcap file has one link type (split the capture by interface, e.g. with tshark -i, or leave out -o)`, EXIT.io);
    }
    if (offload.size > 0) fillOffloadedChecksums(r, offload, fix);
    link = r.link;
    tsNs = r.item.tsNs;
    nowMs = Number(r.item.tsNs / 1000n) / 1000;
    gw.tick(nowMs, emit);
    await drain();
    gw.handleFrame(r.data, 0, nowMs, emit, r.link);
    await drain();
  }
  // End of capture: let hold timeouts fire so held bytes are not lost from the output.
  gw.tick(nowMs + gw.holdTimeoutMs + 1, emit);
  await drain();
  if (!writer && a.out !== undefined) writer = await openOut(link);
  if (writer) await io('--out', () => writer!.close());
  gw.flushEvents(nowMs + gw.holdTimeoutMs + 1);
  await events?.close();
  const rec = recorder ? await io('--streams', () => recorder!.close()) : null;
  const stats = gw.stats();
  const g = stats.gateway;
  const dropped: Record<string, number> = {};
  const add = (prefix: string, o: Record<string, number>) => {
    for (const [k, v] of Object.entries(o)) if (v > 0) dropped[`${prefix}${k}`] = v;
  };
  add('', g.malformed);
  add('nat:', g.natDropped);
  add('tcp-invalid:', g.tcpInvalid);
  add('policy:', g.policy.dropped);
  if (fix.linkNotIp > 0) dropped['link-not-ip'] = fix.linkNotIp;
  const summary: Record<string, unknown> = {
    input: a.in,
    records: records + fix.linkNotIp,
    written,
    captureError,
    capture: { ...fix, offloadingHosts: [...offload.keys()].map(ipToString).join(' ') || undefined },
    ...stats,
    streams: rec ? { connections: rec.connections, files: rec.files.length } : undefined,
    events: events !== undefined ? { ...events.counters, ...(events.error !== undefined ? { error: events.error.message } : {}) } : undefined,
  };
  if (events?.error !== undefined) {
    log.error({ events: a.events, err: events.error.message }, 'event log write failed: events after it were dropped');
  }
  return { exitCode: captureError || events?.error !== undefined ? EXIT.io : EXIT.ok, summary, dropped, offloading: [...offload.keys()].map(ipToString) };
}

/** One line for stderr: what came in, what went out, what was dropped and why. */
export function summaryLine(r: ReplayResult): string {
  const s = r.summary;
  const drops = Object.entries(r.dropped).sort((x, y) => y[1] - x[1]);
  const total = drops.reduce((n, [, v]) => n + v, 0);
  const why = drops.length === 0 ? '' : ` (${drops.map(([k, v]) => `${k} ${v}`).join(', ')})`;
  const err = s['captureError'] ? `; capture error: ${String(s['captureError'])}` : '';
  return `tapgate replay: ${String(s['records'])} records, ${String(s['written'])} frames written, ${total} dropped${why}${err}`;
}

export const replayCommand: CommandModule<object, ReplayArgs> = {
  command: 'replay <in>',
  describe: 'Run the frames of a pcap/pcapng capture through the gateway',
  builder: (y: Argv) =>
    y
      .positional('in', { type: 'string', demandOption: true, describe: 'capture file (pcap or pcapng: Ethernet, raw IP, Linux cooked SLL/SLL2, BSD NULL/LOOP)' })
      .option('out', { alias: 'o', type: 'string', describe: 'write released frames to this pcap' })
      .option('config', { type: 'string', describe: 'YAML config (rules, limits)' })
      .option('streams', { type: 'string', describe: 'write each connection\'s reassembled streams into this directory' })
      .option('checksums', {
        choices: ['auto', 'verify', 'ignore'] as const,
        default: 'auto' as const,
        describe: 'auto: drop bad checksums, except a host whose TCP checksums are all wrong (checksum offload on the capturing host: filled in, with a warning); verify: drop every bad one; ignore: accept them',
      })
      .option('json', { type: 'boolean', describe: 'print the summary as JSON' })
      .option('events', { type: 'string', describe: 'append events as JSON lines to FILE (a record per connection, ftp translations, drops), stamped with the capture\'s time' }) as unknown as Argv<ReplayArgs>,
  handler: async (a: ArgumentsCamelCase<ReplayArgs>) => {
    const r = await replay(a);
    process.stdout.write((a.json === true ? JSON.stringify(r.summary) : formatSummary(r.summary)) + '\n');
    process.stderr.write(`${summaryLine(r)}\n`);
    process.exitCode = r.exitCode;
  },
};

export function formatSummary(s: Record<string, unknown>, indent = ''): string {
  const lines: string[] = [];
  for (const [k, v] of Object.entries(s)) {
    if (v === undefined) continue;
    if (v && typeof v === 'object' && !Array.isArray(v)) {
      const inner = formatSummary(v as Record<string, unknown>, indent + '  ');
      lines.push(`${indent}${k}:${inner ? '\n' + inner : ' {}'}`);
    } else if (typeof v === 'number' && v === 0 && indent !== '') {
      continue;
    } else {
      lines.push(`${indent}${k}: ${String(v)}`);
    }
  }
  return lines.join('\n');
}
