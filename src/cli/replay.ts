/**
 * `tapgate replay <in>`: runs the frames of a capture through the gateway in order, with the
 * capture's time injected, writes the frames the gateway releases, and (with --streams) each TCP
 * connection's two reassembled byte streams as the receivers get them.
 */
import { mkdirSync } from 'node:fs';
import type { ArgumentsCamelCase, Argv, CommandModule } from 'yargs';
import { loadConfig, ConfigError, type Config } from '../config/index.js';
import { Gateway } from '../engine/gateway.js';
import { StreamRecorder } from '../engine/recorder.js';
import { PcapReader, PcapWriter, type PcapLink } from '../phy/pcap.js';
import { makeLogger } from './log.js';

interface ReplayArgs {
  in: string;
  out?: string;
  config?: string;
  streams?: string;
  checksums: 'verify' | 'ignore';
}

export interface ReplayResult {
  exitCode: number;
  summary: Record<string, unknown>;
}

export async function replay(a: Omit<ReplayArgs, 'checksums'> & { checksums?: 'verify' | 'ignore' }): Promise<ReplayResult> {
  const log = makeLogger().child({ mod: 'replay' });
  let config: Config | null = null;
  if (a.config) config = loadConfig(a.config);
  const gw = new Gateway({ config, verifyChecksums: (a.checksums ?? 'verify') === 'verify', log: log.child({ mod: 'gateway' }) });
  const reader = new PcapReader(a.in);
  let writer: PcapWriter | null = null;
  let recorder: StreamRecorder | null = null;
  if (a.streams) {
    mkdirSync(a.streams, { recursive: true });
    recorder = new StreamRecorder({ dir: a.streams });
  }
  let link: PcapLink = 'ethernet';
  let tsNs = 0n;
  let nowMs = 0;
  let captureError: string | null = null;
  const pending: Uint8Array[] = [];
  const emit = (frame: Uint8Array) => {
    pending.push(frame);
  };
  const drain = async () => {
    for (const f of pending) {
      if (writer) await writer.write({ data: f, tsNs });
      recorder?.feed(f, link);
    }
    pending.length = 0;
  };
  for await (const item of reader) {
    if (item.kind === 'error') {
      captureError = item.error.message;
      break;
    }
    if (!writer && a.out) writer = await PcapWriter.open(a.out, { link: item.link, precision: 'nano' });
    link = item.link;
    tsNs = item.tsNs;
    nowMs = Number(item.tsNs / 1000n) / 1000;
    gw.tick(nowMs, emit);
    await drain();
    gw.handleFrame(item.data, 0, nowMs, emit, item.link);
    await drain();
  }
  // End of capture: let hold timeouts fire so held bytes are not lost from the output.
  gw.tick(nowMs + gw.holdTimeoutMs + 1, emit);
  await drain();
  if (!writer && a.out) writer = await PcapWriter.open(a.out, { link, precision: 'nano' });
  await writer?.close();
  const rec = recorder ? await recorder.close() : null;
  const stats = gw.stats();
  const summary: Record<string, unknown> = {
    input: a.in,
    records: reader.stats.records,
    captureError,
    ...stats,
    streams: rec ? { connections: rec.connections, files: rec.files.length } : undefined,
  };
  return { exitCode: captureError ? 2 : 0, summary };
}

export const replayCommand: CommandModule<object, ReplayArgs> = {
  command: 'replay <in>',
  describe: 'Run the frames of a pcap/pcapng capture through the gateway',
  builder: (y: Argv) =>
    y
      .positional('in', { type: 'string', demandOption: true, describe: 'capture file (pcap or pcapng)' })
      .option('out', { alias: 'o', type: 'string', describe: 'write released frames to this pcap' })
      .option('config', { type: 'string', describe: 'YAML config (rules, limits)' })
      .option('streams', { type: 'string', describe: 'write each connection\'s reassembled streams into this directory' })
      .option('checksums', {
        choices: ['verify', 'ignore'] as const,
        default: 'verify' as const,
        describe: 'ignore: accept the bad TCP/IP checksums of captures taken with checksum offload',
      }) as unknown as Argv<ReplayArgs>,
  handler: async (a: ArgumentsCamelCase<ReplayArgs>) => {
    try {
      const r = await replay(a);
      process.stdout.write(formatSummary(r.summary) + '\n');
      process.exitCode = r.exitCode;
    } catch (e) {
      if (e instanceof ConfigError) {
        process.stderr.write(`${e.message}\n`);
        process.exitCode = 1;
        return;
      }
      throw e;
    }
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
