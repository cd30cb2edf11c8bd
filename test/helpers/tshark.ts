/**
 * tshark as an independent oracle for tests: frame counts, TCP stream counts and reassembled
 * TCP byte streams, computed by Wireshark's dissectors rather than ours.
 *
 * Missing tools make tests FAIL (requireTool throws), never skip: a green run must mean the
 * cross-checks ran.
 *
 * `tshark -q -z follow,tcp,raw,N` output (Wireshark 4.0), checked on the fixtures:
 *
 *   ===================================================================
 *   Follow: tcp,raw
 *   Filter: tcp.stream eq 0
 *   Node 0: 10.199.0.2:47456
 *   Node 1: 10.199.0.1:8000
 *   474554202f...            <- bytes sent by Node 0: hex, no indent
 *   \t485454502f...          <- bytes sent by Node 1: hex, indented by one TAB
 *   ===================================================================
 *
 * "Node 0" is NOT "the client": it is the source of the first packet of that stream tshark
 * saw. For a capture that starts with the SYN this is the client, but a capture that starts
 * mid-connection with a server segment makes the server Node 0 (verified by cutting
 * http-small.pcap after the request). So the helper finds the client itself: the sender of the
 * SYN (without ACK), else the receiver of the SYN-ACK; with neither it rejects rather than
 * guess. Each output line is one reassembled chunk (roughly one segment); retransmitted bytes
 * appear once and out-of-order segments are put in order (checked on http-loss.pcap).
 */
import { execFile, spawnSync } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** Debian package providing each tool, for the error message. */
const PACKAGE: Readonly<Record<string, string>> = {
  tshark: 'tshark',
  capinfos: 'tshark',
  editcap: 'tshark',
  dumpcap: 'tshark',
  tcpdump: 'tcpdump',
};

/** Throw a clear error if `name` is not on PATH. Call it at the top of a test or suite. */
export function requireTool(name: string): void {
  const r = spawnSync('sh', ['-c', 'command -v "$1"', 'sh', name], { encoding: 'utf8' });
  if (r.status !== 0 || r.stdout.trim() === '') {
    throw new Error(`${name} not installed: run .ci/run or apt-get install ${PACKAGE[name] ?? name}`);
  }
}

export async function tshark(args: string[]): Promise<string> {
  requireTool('tshark');
  // tshark prints a "Running as user root" warning on stderr: ignore stderr unless it fails.
  const { stdout } = await run('tshark', args, { maxBuffer: 256 * 1024 * 1024, encoding: 'utf8' });
  return stdout;
}

/** One `-T fields` value per frame (empty lines kept: frames without the field). */
export async function tsharkFields(pcapPath: string, fields: string[], displayFilter?: string): Promise<string[][]> {
  const args = ['-r', pcapPath, '-T', 'fields', '-E', 'separator=\t'];
  for (const f of fields) args.push('-e', f);
  if (displayFilter !== undefined) args.push('-Y', displayFilter);
  const out = await tshark(args);
  return out
    .split('\n')
    .filter((l, i, a) => !(i === a.length - 1 && l === ''))
    .map((l) => l.split('\t'));
}

/** Number of frames tshark reads (what `tshark -T fields -e frame.number | wc -l` says). */
export async function tsharkFrameCount(pcapPath: string, displayFilter?: string): Promise<number> {
  return (await tsharkFields(pcapPath, ['frame.number'], displayFilter)).length;
}

/** Number of TCP conversations (`tcp.stream` indices) tshark finds. */
export async function tsharkStreamCount(pcapPath: string): Promise<number> {
  const rows = await tsharkFields(pcapPath, ['tcp.stream'], 'tcp');
  const ids = new Set(rows.map((r) => r[0]).filter((s) => s !== ''));
  return ids.size;
}

export interface TcpFollow {
  /** Bytes the client (SYN sender) sent, reassembled by tshark. */
  c2s: Buffer;
  /** Bytes the server sent. */
  s2c: Buffer;
  /** "addr:port" of each side, as tshark prints them. */
  client: string;
  server: string;
}

/** tshark's reassembly of TCP stream `streamIndex` (tshark's `tcp.stream` numbering). */
export async function tsharkFollowTcp(pcapPath: string, streamIndex: number): Promise<TcpFollow> {
  const out = await tshark(['-r', pcapPath, '-q', '-z', `follow,tcp,raw,${streamIndex}`]);
  let node0 = '';
  let node1 = '';
  const n0: Buffer[] = [];
  const n1: Buffer[] = [];
  for (const line of out.split('\n')) {
    if (line.startsWith('Node 0: ')) node0 = line.slice(8).trim();
    else if (line.startsWith('Node 1: ')) node1 = line.slice(8).trim();
    else if (/^\t[0-9a-f]+$/.test(line)) n1.push(Buffer.from(line.slice(1), 'hex'));
    else if (/^[0-9a-f]+$/.test(line)) n0.push(Buffer.from(line, 'hex'));
  }
  if (node0 === '') throw new Error(`tshark follow found no stream ${streamIndex} in ${pcapPath}`);

  const syn = await tsharkFields(
    pcapPath,
    ['ip.src', 'ipv6.src', 'tcp.srcport', 'tcp.flags.ack'],
    `tcp.stream eq ${streamIndex} && tcp.flags.syn == 1`,
  );
  let client: string | undefined;
  const first = syn[0];
  if (first !== undefined) {
    const addr = first[0] !== '' ? first[0] : `[${first[1]}]`;
    const endpoint = `${addr}:${first[2]}`;
    const isAck = first[3] === '1' || first[3] === 'True';
    // A SYN's sender is the client; a SYN-ACK's sender is the server.
    client = isAck ? (endpoint === node0 ? node1 : node0) : endpoint;
  }
  if (client === undefined) {
    throw new Error(`tshark stream ${streamIndex} in ${pcapPath} has no SYN: cannot tell client from server`);
  }
  if (client !== node0 && client !== node1) {
    throw new Error(`tshark stream ${streamIndex}: SYN endpoint ${client} is neither node (${node0}, ${node1})`);
  }
  const c0 = client === node0;
  return {
    c2s: Buffer.concat(c0 ? n0 : n1),
    s2c: Buffer.concat(c0 ? n1 : n0),
    client,
    server: c0 ? node1 : node0,
  };
}
