/**
 * Heartbeats from a worker thread (docs/ARCHITECTURE.md §5): the node's liveness must not depend
 * on its event loop, which a burst of rewriting or a major GC can hold for tens of milliseconds —
 * with a dead time of 100 ms, a heartbeat late by that much is a false failover. The worker has
 * its own NATS connection and publishes the node's latest NodeInfo every `intervalMs`; the main
 * thread hands it the info at each of its own heartbeat ticks. A main thread that has not done
 * so for `stallMs` is stuck, not busy: the worker stops beating and the others take the node's
 * connections over (a node that forwards nothing must not look alive for long). The worker also
 * answers on `aliveSubject` for as long as its connection lives (see BeatOptions).
 *
 * The worker's source is plain JavaScript (it runs the same in the built CLI and under the test
 * runner), loading the NATS client by the path this module resolves.
 */
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';

export interface BeatOptions {
  url: string;
  /** Subject the heartbeats go to. */
  subject: string;
  /**
   * Subject the worker answers on while its NATS connection lives: a peer's request there gets
   * "no responders" from the server as soon as this process's connection is gone (a SIGKILL
   * closes it at once), which is how the others tell a dead node from a slow one.
   */
  aliveSubject: string;
  /** Connection name (NATS monitoring shows it). */
  name: string;
  intervalMs: number;
  /** The main thread silent this long: no more heartbeats until it speaks again. */
  stallMs: number;
}

const SOURCE = `
const { parentPort, workerData: o } = require('node:worker_threads');
const { connect } = require(o.nats);
let info = null;
let mainMs = Date.now();
let nc = null;
let stopped = false;
parentPort.on('message', (m) => {
  if (m === 'stop') {
    stopped = true;
    clearInterval(timer);
    const done = () => process.exit(0);
    if (nc === null) return done();
    nc.drain().then(done, done);
    return;
  }
  info = m;
  mainMs = Date.now();
});
const timer = setInterval(() => {
  if (nc === null || info === null || stopped || Date.now() - mainMs > o.stallMs) return;
  try { nc.publish(o.subject, info); } catch { /* disconnected: the client reconnects */ }
}, o.intervalMs);
connect({ servers: o.url, name: o.name, maxReconnectAttempts: -1, reconnectTimeWait: 100, pingInterval: 2000, timeout: 5000 })
  .then((c) => {
    nc = c;
    if (stopped) return c.close();
    c.subscribe(o.aliveSubject, { callback: (_e, m) => { try { m.respond(); } catch { /* */ } } });
    c.flush().then(() => parentPort.postMessage('up:' + ((c.info && c.info.server_id) || '')), (e) => parentPort.postMessage('error:' + (e && e.message)));
    (async () => {
      for await (const st of c.status()) {
        if (st.type === 'reconnect') parentPort.postMessage('server:' + ((c.info && c.info.server_id) || ''));
        else if (st.type === 'disconnect') parentPort.postMessage('server:');
      }
    })();
  })
  .catch((e) => parentPort.postMessage('error:' + (e && e.message)));
`;

/** The worker that publishes the node's heartbeats. */
export class HeartbeatWorker {
  private readonly w: Worker;
  private readonly ready: Promise<void>;

  /**
   * The NATS server the worker's connection is on ('' while it is down): a peer's missing
   * liveness subscription proves its death only to a node on that same server (./node.ts probe).
   */
  server = '';

  constructor(o: BeatOptions) {
    const nats = createRequire(import.meta.url).resolve('nats');
    this.w = new Worker(SOURCE, { eval: true, workerData: { ...o, nats } });
    this.w.unref();
    this.ready = new Promise((resolve, reject) => {
      this.w.on('message', (m: string) => {
        if (m.startsWith('up:')) {
          this.server = m.slice(3);
          resolve();
        } else if (m.startsWith('server:')) this.server = m.slice(7);
        else reject(new Error(`cluster heartbeat worker: ${m.replace(/^error:/, '')}`));
      });
      this.w.once('error', reject);
    });
  }

  /** Resolves when the worker's NATS connection is up. */
  start(): Promise<void> {
    return this.ready;
  }

  /** The node's latest heartbeat (also the main thread's sign of life). */
  update(info: Uint8Array): void {
    this.w.postMessage(info);
  }

  async stop(): Promise<void> {
    const gone = new Promise<void>((r) => this.w.once('exit', () => r()));
    this.w.postMessage('stop');
    await Promise.race([gone, new Promise((r) => setTimeout(r, 2000).unref())]);
    await this.w.terminate();
  }
}
