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
 * The lease (fencing, docs/ARCHITECTURE.md §5). The worker hears its own heartbeats back from the
 * server: one heard back was delivered to every other node no earlier than it was sent, and the
 * others judge a node dead only after `deadMs` without one. So the node holds its lease until
 * `leaseMs` (< deadMs) after the send time of the latest heartbeat heard back, and forwards
 * nothing once it has expired: before anyone may take its connections over. A lease that ran
 * out is lost for good: the heartbeats say `fenced`, and the node comes back only as a new
 * incarnation. A dropped connection alone does not end it (the client reconnects, to another
 * server of a NATS cluster, and the heartbeats come back in time): the others find a node gone
 * before deadMs only when neither of its two connections is there any more (./node.ts probe).
 *
 * The worker's source is plain JavaScript (it runs the same in the built CLI and under the test
 * runner), loading the NATS client by the path this module resolves.
 */
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import { natsConnectOptions } from './bus.js';

export interface BeatOptions {
  /** NATS URL(s), comma-separated. */
  url: string;
  /**
   * Subject the heartbeats go to, this node's own (`<name>.hb.<id>`): the worker hears its own
   * heartbeats back there (the lease), the others hear every node's on `<name>.hb.*`.
   */
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
  /** The lease (0: none, no fencing): see the file comment. */
  leaseMs: number;
}

/**
 * The lease, shared with the worker (Float64Array over a SharedArrayBuffer):
 * [LEASE_FROM] the send time of the latest heartbeat of the current incarnation heard back, 0 none
 * yet; [LEASE_INC] the incarnation it is of; [LEASE_LOST] the incarnation whose lease was lost
 * (it is never renewed again).
 */
const LEASE_FROM = 0;
const LEASE_INC = 1;
const LEASE_LOST = 2;

const SOURCE = `
const { parentPort, workerData: o } = require('node:worker_threads');
const { connect } = require(o.nats);
const lease = new Float64Array(o.lease);
let info = null;
let inc = 0;
let mainMs = Date.now();
let nc = null;
let stopped = false;
// The lease of incarnation inc is lost: for good (a later echo does not bring it back).
const lose = () => { if (o.leaseMs > 0 && inc !== 0 && lease[${LEASE_INC}] === inc) lease[${LEASE_LOST}] = inc; };
const expired = (now) => o.leaseMs > 0 && lease[${LEASE_FROM}] > 0 && now - lease[${LEASE_FROM}] > o.leaseMs;
parentPort.on('message', (m) => {
  if (m === 'stop') {
    stopped = true;
    clearInterval(timer);
    const done = () => process.exit(0);
    if (nc === null) return done();
    nc.drain().then(done, done);
    return;
  }
  if (m.inc !== inc) {
    inc = m.inc;
    lease[${LEASE_FROM}] = 0;
    lease[${LEASE_INC}] = inc;
  }
  info = m.info;
  mainMs = Date.now();
});
const timer = setInterval(() => {
  const now = Date.now();
  if (expired(now)) lose();
  if (nc === null || info === null || stopped || now - mainMs > o.stallMs) return;
  const fenced = lease[${LEASE_LOST}] === inc;
  try { nc.publish(o.subject, '{"sentMs":' + now + ',"fenced":' + fenced + ',' + info.slice(1)); } catch { /* disconnected: the client reconnects */ }
}, o.intervalMs);
connect(o.connect)
  .then((c) => {
    nc = c;
    if (stopped) return c.close();
    c.subscribe(o.aliveSubject, { callback: (_e, m) => { try { m.respond(); } catch { /* */ } } });
    // Our own heartbeats, heard back: the server had them, so every other node has them too
    // (or later). The lease runs from the send time of the latest one, if it came in time.
    c.subscribe(o.subject, { callback: (_e, m) => {
      let h;
      try { h = JSON.parse(m.string()); } catch { return; }
      if (h.startedMs !== inc || h.fenced || lease[${LEASE_LOST}] === inc || typeof h.sentMs !== 'number') return;
      const now = Date.now();
      if (expired(now)) return lose();
      // One sent before a partition, heard back after it: too old to extend anything.
      if (o.leaseMs > 0 && now - h.sentMs > o.leaseMs) return;
      if (h.sentMs > lease[${LEASE_FROM}]) lease[${LEASE_FROM}] = h.sentMs;
    } });
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

/** The worker that publishes the node's heartbeats and keeps its lease. */
export class HeartbeatWorker {
  private readonly w: Worker;
  private readonly ready: Promise<void>;
  private readonly lease = new Float64Array(new SharedArrayBuffer(3 * 8));

  /**
   * The NATS server the worker's connection is on ('' while it is down): a peer's missing
   * liveness subscription proves its death only to a node on that same server (./node.ts probe).
   */
  server = '';

  constructor(private readonly o: BeatOptions) {
    const nats = createRequire(import.meta.url).resolve('nats');
    this.w = new Worker(SOURCE, { eval: true, workerData: { ...o, nats, lease: this.lease.buffer, connect: natsConnectOptions(o.url, o.name) } });
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

  /**
   * The node's latest heartbeat, a JSON object (also the main thread's sign of life), of its
   * incarnation `inc` (a new one starts without a lease).
   */
  update(info: string, inc: number): void {
    this.w.postMessage({ info, inc });
  }

  /**
   * Until when incarnation `inc` holds the lease (Unix ms): 0 when it has none yet, -1 when it
   * lost it (for good), Infinity without fencing. Read on every frame: no message, one shared
   * array.
   */
  leaseUntil(inc: number): number {
    const l = this.lease;
    if (this.o.leaseMs <= 0) return Infinity;
    if (l[LEASE_LOST] === inc) return -1;
    if (l[LEASE_INC] !== inc || l[LEASE_FROM] === 0) return 0;
    return l[LEASE_FROM]! + this.o.leaseMs;
  }

  async stop(): Promise<void> {
    const gone = new Promise<void>((r) => this.w.once('exit', () => r()));
    this.w.postMessage('stop');
    await Promise.race([gone, new Promise((r) => setTimeout(r, 2000).unref())]);
    await this.w.terminate();
  }
}
