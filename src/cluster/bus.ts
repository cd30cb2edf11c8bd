/**
 * The cluster's sync network as the node (./node.ts) uses it, over NATS: the others' heartbeats on
 * core NATS (`<name>.hb.<node>`; this node's are published by ./beat.ts from a worker), control requests (`<name>.ctl.<node>`, `<name>.ctl.all`: `tapgate cluster`), and
 * the connections' snapshots in a JetStream key-value bucket (`<name>-conns`, one value per
 * connection, history 1, 10-minute TTL), watched from its initial values on. The client
 * reconnects forever; what the connection does is reported to the node (a lost connection
 * freezes its view of who is alive). Everything node-specific stays in the node.
 */
import { connect, ErrorCode, type KV, type KvEntry, type NatsConnection, type QueuedIterator, type Subscription } from 'nats';

/** A subject of cluster `name` (the CLI's control requests use it too). */
export function clusterSubject(name: string, s: string): string {
  return `${name}.${s}`;
}

export interface BusOptions {
  /** NATS URL(s), comma-separated. */
  url: string;
  /** Cluster name: subjects and the bucket are namespaced by it. */
  name: string;
  nodeId: string;
  /** JetStream replicas of the bucket. */
  replicas: number;
}

export interface BusHandlers {
  heartbeat(data: Uint8Array): void;
  control(data: Uint8Array, respond: (d: Uint8Array) => boolean): void;
  /** A connection's snapshot stored (also every initial value), or removed. */
  put(key: string, value: Uint8Array): void;
  del(key: string): void;
  /** The NATS connection went down (`disconnect`, `reconnecting`) or came back (`reconnect`). */
  connection(up: boolean, type: string): void;
}

/**
 * How a node connects to NATS, both its connections (this one and the heartbeat worker's,
 * ./beat.ts): the servers in the order given — every node's connections share one server while
 * it lives, and there a node's closed connections tell the others it is gone (./node.ts probe)
 * — reconnecting forever.
 */
export function natsConnectOptions(url: string, name: string) {
  return { servers: url.split(','), noRandomize: true, name, maxReconnectAttempts: -1, reconnectTimeWait: 100, pingInterval: 2000, timeout: 5000 };
}

/**
 * JetStream requests (a snapshot's put) fail after this long without an answer (the client's
 * default is 5 s): frames waiting for the put are then dropped rather than held, and the put is
 * made again (./node.ts) — sooner, after a stream leader moved.
 */
const JS_TIMEOUT_MS = 2000;

/** How long starting retries what JetStream refuses (not ready yet). */
const STARTUP_RETRY_MS = 15_000;

/**
 * `f` until it resolves, every 250 ms, rethrowing its error after `ms`; undefined as soon as
 * `abandoned` says the result is no longer wanted.
 */
async function retrying<T>(f: () => Promise<T>, ms: number, abandoned: () => boolean = () => false): Promise<T | undefined> {
  const end = Date.now() + ms;
  for (;;) {
    try {
      return await f();
    } catch (e) {
      if (abandoned()) return undefined;
      if (Date.now() > end) throw e;
      await new Promise((r) => setTimeout(r, 250));
      if (abandoned()) return undefined;
    }
  }
}

export class NatsBus {
  private readonly subs: Subscription[] = [];
  /** The bucket's watch: made anew after each reconnect (see `watch`). */
  private watcher: QueuedIterator<KvEntry> | null = null;
  /** Watches made (the latest is the current one), and the one whose initial values were handed over. */
  private watches = 0;
  private syncedWatch = -1;
  private closed = false;

  private constructor(
    private readonly nc: NatsConnection,
    private readonly kv: KV,
    private readonly h: BusHandlers,
  ) {}

  /** Connects, opens the bucket, subscribes; resolves once the bucket's initial values were handed over. */
  static async connect(o: BusOptions, h: BusHandlers): Promise<NatsBus> {
    const nc = await connect(natsConnectOptions(o.url, `tapgate-${o.nodeId}`));
    // JetStream may not be ready yet (a NATS cluster just formed, a server just restarted).
    const kv = (await retrying(() => nc.jetstream({ timeout: JS_TIMEOUT_MS }).views.kv(`${o.name}-conns`, { history: 1, replicas: o.replicas, ttl: 10 * 60_000 }), STARTUP_RETRY_MS))!;
    const bus = new NatsBus(nc, kv, h);
    void (async () => {
      for await (const st of nc.status()) {
        if (st.type === 'disconnect' || st.type === 'reconnecting') h.connection(false, st.type);
        else if (st.type === 'reconnect') {
          h.connection(true, st.type);
          void bus.watch();
        }
      }
    })();
    const subj = (s: string) => clusterSubject(o.name, s);
    bus.subs.push(
      nc.subscribe(subj('hb.*'), { callback: (_e, m) => h.heartbeat(m.data) }),
      nc.subscribe(subj(`ctl.${o.nodeId}`), { callback: (_e, m) => h.control(m.data, (d) => m.respond(d)) }),
      nc.subscribe(subj('ctl.all'), { callback: (_e, m) => h.control(m.data, (d) => m.respond(d)) }),
      // This connection's liveness subject (the heartbeat worker's is `alive.<node>`): a node is
      // gone at once only when neither answers (./node.ts probe).
      nc.subscribe(subj(`alive.${o.nodeId}.main`), { callback: (_e, m) => m.respond() }),
    );
    await bus.watch();
    return bus;
  }

  /**
   * Watches the bucket from its current values on. After a reconnect the watch is made anew:
   * the server may have restarted, and with it lost the watch's consumer, which the client
   * would notice only after missed idle heartbeats (seconds) — while spare copies go stale. The
   * values come again; the node keeps the newest of each (SpareStore.keep). Resolves once the
   * initial values were handed over.
   */
  private async watch(): Promise<void> {
    const n = ++this.watches;
    this.watcher?.stop();
    this.watcher = null;
    let initialized!: () => void;
    const init = new Promise<void>((r) => (initialized = r));
    // JetStream not back yet after a server restart: again shortly, unless superseded.
    const superseded = () => this.closed || n !== this.watches;
    const w = await retrying(() => this.kv.watch({ key: '>', initializedFn: () => initialized() }), n === 1 ? STARTUP_RETRY_MS : Infinity, superseded);
    if (w === undefined) return;
    if (superseded()) return void w.stop();
    this.watcher = w;
    void (async () => {
      for await (const e of w) {
        if (e.operation === 'PUT') this.h.put(e.key, e.value);
        else this.h.del(e.key);
      }
    })().catch(() => {});
    await init;
    if (n === this.watches) this.syncedWatch = n;
  }

  /** The bucket's values as of the last (re)connect were handed over. */
  get synced(): boolean {
    return this.syncedWatch === this.watches;
  }

  /** The NATS server this connection is on ('' unknown). */
  get server(): string {
    return this.nc.info?.server_id ?? '';
  }

  /**
   * Whether anything listens on `subject` (a peer's liveness subject, ./beat.ts): false when the
   * server answers "no responders" (the peer's connection is gone), true on an answer or when
   * none comes within `timeoutMs` (a slow peer is not a dead one), null while this node's own
   * connection is down (nothing can be told).
   */
  async probe(subject: string, timeoutMs: number): Promise<boolean | null> {
    try {
      await this.nc.request(subject, undefined, { timeout: timeoutMs });
      return true;
    } catch (e) {
      const code = (e as { code?: string }).code;
      if (code === ErrorCode.NoResponders) return false;
      if (code === ErrorCode.Timeout) return true;
      return null;
    }
  }

  /** Stores a connection's snapshot; resolves when JetStream acknowledged it. */
  put(key: string, value: Uint8Array): Promise<unknown> {
    return this.kv.put(key, value);
  }

  /** Removes a connection's snapshot (best effort: the TTL removes what is left). */
  delete(key: string): void {
    this.kv.delete(key).catch(() => {});
  }

  async close(): Promise<void> {
    this.closed = true;
    this.watcher?.stop();
    for (const s of this.subs) s.unsubscribe();
    await this.nc.drain().catch(() => this.nc.close());
  }
}
