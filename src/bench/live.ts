/**
 * Live throughput: iperf3 (TCP, client → server) through the lab, in one run:
 * - `bridge`: the kernel alone — a veth pair joins br-c and br-s directly (no gateway attached);
 * - `gateway gso`: `tapgate run` with TAP GSO (vnet header);
 * - `gateway no-gso`: `tapgate run --no-vnet-hdr` (the kernel segments and checksums first).
 * Each case runs `seconds` s, `runs` times; the median is reported, with the ratio to `bridge`.
 * Needs root, iperf3 (Debian package `iperf3`), iproute2, python3 and a built dist/ (the gateway
 * is started from bin/tapgate.js). The lab it builds is removed at the end, also on error.
 */
import { spawnSync } from 'node:child_process';
import { gatewayArgv } from '../cli/lab.js';
import { LAB_IFACES, labDown, labExec, labKill, labSpawn, labUp, nsName } from '../lab/lab.js';

export interface LiveBenchRow {
  name: string;
  /** Median goodput in Gbit/s (iperf3 receiver side). */
  gbps: number;
  /** gbps / the kernel bridge's gbps. */
  ratio: number;
}

export interface LiveBenchOptions {
  /** Seconds per iperf3 run. Default 5. */
  seconds?: number;
  /** Runs per case (median). Default 3. */
  runs?: number;
  /** Lab prefix. Default 'tgbench'. */
  prefix?: string;
  /** Progress lines. */
  log?: (line: string) => void;
}

function sh(argv: string[]): void {
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`\`${argv.join(' ')}\` failed: ${r.stderr || r.error?.message}`);
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

export async function benchLive(opts: LiveBenchOptions = {}): Promise<LiveBenchRow[]> {
  const seconds = opts.seconds ?? 5;
  const runs = opts.runs ?? 3;
  const P = opts.prefix ?? 'tgbench';
  const log = opts.log ?? (() => {});
  if (spawnSync('iperf3', ['--version'], { stdio: 'ignore' }).error !== undefined) {
    throw new Error('iperf3 is not installed (Debian: apt-get install iperf3)');
  }
  const gw = nsName(P, 'gw');
  const server = '10.200.0.2';

  const measure = async (name: string): Promise<number> => {
    const xs: number[] = [];
    for (let i = 0; i < runs; i++) {
      const r = await labExec(P, 'client', ['iperf3', '-c', server, '-t', String(seconds), '-J'], { timeoutMs: (seconds + 20) * 1000 });
      let bps: number | undefined;
      try {
        bps = (JSON.parse(r.stdout) as { end: { sum_received: { bits_per_second: number } } }).end.sum_received.bits_per_second;
      } catch {
        throw new Error(`iperf3 (${name}) failed: ${r.stderr || r.stdout.slice(0, 500)}`);
      }
      xs.push(bps / 1e9);
      log(`${name} run ${i + 1}: ${(bps / 1e9).toFixed(2)} Gbit/s`);
    }
    return median(xs);
  };

  const rows: Array<{ name: string; gbps: number }> = [];
  try {
    await labDown(P);
    await labUp({ prefix: P });
    labSpawn(P, 'server', 'iperf3', ['iperf3', '-s', '-B', server]);
    await new Promise((r) => setTimeout(r, 500));

    // Kernel baseline: the bridges joined by a veth pair, TAPs unattached.
    sh(['ip', '-n', gw, 'link', 'add', 'bx-c', 'type', 'veth', 'peer', 'name', 'bx-s']);
    sh(['ip', '-n', gw, 'link', 'set', 'bx-c', 'master', LAB_IFACES.bridgeClient, 'up']);
    sh(['ip', '-n', gw, 'link', 'set', 'bx-s', 'master', LAB_IFACES.bridgeServer, 'up']);
    rows.push({ name: 'bridge (kernel, veth between bridges)', gbps: await measure('bridge') });
    sh(['ip', '-n', gw, 'link', 'del', 'bx-c']);

    for (const vnetHdr of [true, false]) {
      await labUp({ prefix: P, gatewayCommand: gatewayArgv({ vnetHdr }) });
      const name = `gateway ${vnetHdr ? 'gso (vnet hdr)' : 'no-gso (--no-vnet-hdr)'}`;
      rows.push({ name, gbps: await measure(name) });
      await labKill(P, 'gateway');
    }
  } finally {
    await labDown(P);
  }
  const base = rows[0]!.gbps;
  return rows.map((r) => ({ name: r.name, gbps: Math.round(r.gbps * 100) / 100, ratio: Math.round((r.gbps / base) * 1000) / 1000 }));
}
