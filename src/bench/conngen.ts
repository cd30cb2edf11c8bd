/**
 * A keep-alive connection generator for the concurrency bench (issue 18): it opens many HTTP/1.1
 * connections to a server, asks one request on each, keeps them open, and asks again on all of
 * them when told, checking every answer's body. Run in the lab's client namespace:
 *
 *   node dist/bench/conngen.js HOST PORT[,PORT…] EXPECTED-BODY [--parallel N] [--timeout-ms T]
 *
 * Commands, one per line on stdin; one JSON line answers each on stdout:
 * - `open N`: opens N more connections (at most `parallel` connecting at once; connections go to
 *   the ports in turn, so more than one port's worth of source ports can be used), each asking
 *   one request: `{op, ok, failed, ms, open, why}`;
 * - `round`: one request on every open connection (at most `parallel` in flight): `{op, ok,
 *   failed, ms, open, why}`; a connection that fails is closed and dropped;
 * - `quit`: closes every connection and exits.
 *
 * A request fails (`why`, counted by reason) when it times out (`timeout`: nothing or too little
 * came back in `timeout-ms`, e.g. a SYN the gateway refused), the connection is refused, reset or
 * closed (`error`, `closed`), or the body is not the expected one (`body`: the rule did not
 * rewrite it).
 */
import { connect, type Socket } from 'node:net';
import { createInterface } from 'node:readline';

const REQUEST = (host: string): Buffer => Buffer.from(`GET / HTTP/1.1\r\nHost: ${host}\r\nUser-Agent: tapgate-conngen\r\n\r\n`);
type Why = 'timeout' | 'error' | 'closed' | 'body';

/** One connection: at most one request outstanding. */
class Conn {
  private buf: Buffer = Buffer.alloc(0);
  private done: ((why: Why | null) => void) | null = null;
  private timer: NodeJS.Timeout | null = null;
  dead = false;

  constructor(
    readonly sock: Socket,
    private readonly expect: Buffer,
  ) {
    sock.on('data', (d: Buffer) => this.data(d));
    sock.on('error', () => this.finish('error'));
    sock.on('close', () => this.finish('closed'));
  }

  /** Sends `req` and resolves with null when the expected answer came, else why not. */
  ask(req: Buffer, timeoutMs: number): Promise<Why | null> {
    return new Promise((resolve) => {
      if (this.dead) return resolve('closed');
      this.done = resolve;
      this.buf = Buffer.alloc(0);
      this.timer = setTimeout(() => this.finish('timeout'), timeoutMs);
      this.sock.write(req);
    });
  }

  private data(d: Buffer): void {
    this.buf = this.buf.length === 0 ? d : Buffer.concat([this.buf, d]);
    const end = this.buf.indexOf('\r\n\r\n');
    if (end < 0) return;
    const m = /\r\ncontent-length:\s*(\d+)/i.exec(this.buf.subarray(0, end).toString('latin1'));
    const len = m === null ? 0 : Number(m[1]);
    if (this.buf.length < end + 4 + len) return;
    const body = this.buf.subarray(end + 4, end + 4 + len);
    this.finish(body.equals(this.expect) ? null : 'body');
  }

  private finish(why: Why | null): void {
    if (why !== null && why !== 'body') this.dead = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    const d = this.done;
    this.done = null;
    d?.(why);
  }

  close(): void {
    this.dead = true;
    this.sock.destroy();
  }
}

interface Outcome {
  ok: number;
  failed: number;
  why: Partial<Record<Why, number>>;
}

/** Runs `jobs` with at most `parallel` at once. */
async function pool(n: number, parallel: number, job: (i: number) => Promise<Why | null>): Promise<Outcome> {
  const out: Outcome = { ok: 0, failed: 0, why: {} };
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < n) {
      const why = await job(next++);
      if (why === null) out.ok++;
      else {
        out.failed++;
        out.why[why] = (out.why[why] ?? 0) + 1;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(parallel, n) }, worker));
  return out;
}

function main(): void {
  const [host, portList, expected, ...rest] = process.argv.slice(2);
  if (host === undefined || portList === undefined || expected === undefined) {
    process.stderr.write('usage: conngen HOST PORT[,PORT…] EXPECTED-BODY [--parallel N] [--timeout-ms T]\n');
    process.exit(2);
  }
  const opt = (name: string, dflt: number): number => {
    const i = rest.indexOf(name);
    const v = i >= 0 ? Number(rest[i + 1]) : dflt;
    if (!Number.isInteger(v) || v < 1) {
      process.stderr.write(`conngen: ${name} must be a positive integer\n`);
      process.exit(2);
    }
    return v;
  };
  const parallel = opt('--parallel', 500);
  const timeoutMs = opt('--timeout-ms', 5000);
  const ports = portList.split(',').map(Number);
  const expect = Buffer.from(expected.replace(/\\n/g, '\n'), 'latin1');
  const req = REQUEST(host);
  let conns: Conn[] = [];
  let opened = 0;
  const say = (o: object): void => void process.stdout.write(`${JSON.stringify(o)}\n`);

  const openOne = async (): Promise<Why | null> => {
    const port = ports[opened++ % ports.length]!;
    const sock = connect({ host, port, noDelay: true });
    const c = new Conn(sock, expect);
    const why = await c.ask(req, timeoutMs);
    if (why === null) conns.push(c);
    else c.close();
    return why;
  };

  const commands: string[] = [];
  let busy = false;
  const run = async (): Promise<void> => {
    if (busy) return;
    busy = true;
    while (commands.length > 0) {
      const [op, arg] = commands.shift()!.trim().split(/\s+/);
      const t0 = performance.now();
      if (op === 'open') {
        const r = await pool(Number(arg), parallel, openOne);
        say({ op, ...r, ms: Math.round(performance.now() - t0), open: conns.length });
      } else if (op === 'round') {
        const list = conns;
        const r = await pool(list.length, parallel, (i) => list[i]!.ask(req, timeoutMs));
        conns = conns.filter((c) => !c.dead);
        say({ op, ...r, ms: Math.round(performance.now() - t0), open: conns.length });
      } else if (op === 'quit') {
        for (const c of conns) c.close();
        say({ op, closed: conns.length });
        process.exit(0);
      } else if (op !== '' && op !== undefined) {
        say({ op, error: `unknown command ${op}` });
      }
    }
    busy = false;
  };
  createInterface({ input: process.stdin }).on('line', (l) => {
    commands.push(l);
    void run();
  }).on('close', () => {
    commands.push('quit');
    void run();
  });
}

main();
