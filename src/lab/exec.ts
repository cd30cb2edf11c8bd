/**
 * Running commands inside a lab namespace (`ip netns exec`), and ping between the lab's hosts.
 */
import { spawn } from 'node:child_process';
import { LabError, type LabRole, PING_SCRIPT, checkPrefix, nsName } from './names.js';

export interface ExecResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface ExecOptions {
  timeoutMs?: number;
  input?: string;
  env?: Record<string, string>;
  cwd?: string;
}

/** Run argv inside a lab namespace (`ip netns exec`) and collect its output. Never throws on exit code. */
export function labExec(prefix: string, role: LabRole, argv: string[], opts: ExecOptions = {}): Promise<ExecResult> {
  checkPrefix(prefix);
  return new Promise((resolve, reject) => {
    const child = spawn('ip', ['netns', 'exec', nsName(prefix, role), ...argv], {
      stdio: ['pipe', 'pipe', 'pipe'],
      cwd: opts.cwd ?? process.cwd(),
      env: { ...process.env, ...opts.env },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer =
      opts.timeoutMs !== undefined ? setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs) : undefined;
    child.on('error', (e) => {
      if (timer !== undefined) clearTimeout(timer);
      reject(new LabError('LAB_ENV', `cannot run ip netns exec: ${e.message}`));
    });
    child.on('close', (code, signal) => {
      if (timer !== undefined) clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
    // A command that exits without reading its stdin (EPIPE) is not an error of ours.
    child.stdin.on('error', () => {});
    child.stdin.end(opts.input ?? '');
  });
}

export interface PingResult {
  sent: number;
  received: number;
  rttMs: number[];
  raw: ExecResult;
}

/** ICMP echo from a lab namespace (netns/icmp-ping.py: raw socket, no iputils needed). */
export async function labPing(
  prefix: string,
  from: LabRole,
  dst: string,
  opts: { count?: number; timeoutMs?: number; size?: number } = {},
): Promise<PingResult> {
  const count = opts.count ?? 3;
  const timeoutS = (opts.timeoutMs ?? 1000) / 1000;
  const raw = await labExec(prefix, from, ['python3', PING_SCRIPT, dst, String(count), String(timeoutS), String(opts.size ?? 56)], {
    timeoutMs: count * (timeoutS + 0.1) * 1000 + 5000,
  });
  try {
    const j = JSON.parse(raw.stdout.trim().split('\n').pop() ?? '') as { sent: number; received: number; rtt_ms: number[] };
    return { sent: j.sent, received: j.received, rttMs: j.rtt_ms, raw };
  } catch {
    throw new LabError('LAB_CMD', `ping from ${from} to ${dst} failed: ${raw.stderr.trim() || raw.stdout.trim()}`);
  }
}
