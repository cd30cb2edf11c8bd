/**
 * The HTTP rewriting section of `npm run bench` (issue 16, "side by side"): one response-body
 * rewrite ("Hello world" → "Hi there", and a longer replacement) through tapgate's http agent,
 * mitmproxy (mitmdump as a reverse proxy with a streaming addon) and nginx (reverse proxy with
 * sub_filter), all in the gateway position of one lab, against one origin (nginx serving static
 * files in the server namespace) and one client (curl, wrk in the client namespace).
 *
 * First every path's bodies are checked against the expected rewrite (sha256); a difference fails
 * the section before anything is measured. Then interleaved rounds (every path once per round,
 * same order; each figure the median over the rounds): a 50 MiB body with many matches (twice:
 * the second download shows the process warm) and the same with few (curl, `Connection: close`:
 * MB/s and the middle box's CPU seconds), small keep-alive requests (wrk -c16: requests/s) and
 * one keep-alive connection (wrk -c1: median latency, added against the direct path). Pure helpers (bodies, configs, the addon, parsers) are
 * exported for the tests; bench/README.md has the set-up and the caveats.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gatewayArgv } from '../lab/gateway-argv.js';
import { LAB_IFACES, labDown, labExec, labKill, labSpawn, labStateDir, labUp, nsName } from '../lab/lab.js';
import { median, parseWrk, type LiveRow } from './live.js';
import { profiledArgv, readProfileDir, type ProfileEntry } from './profile.js';

/** The rewrite every path applies to response bodies. Neither replacement contains a pattern,
 *  and no pattern overlaps another, so applying them one after the other (mitmproxy's addon),
 *  together (sub_filter) or per match as bytes stream (tapgate) gives the same bytes. */
export const HTTP_REWRITES: ReadonlyArray<{ find: string; with: string }> = [
  { find: 'Hello world', with: 'Hi there' },
  { find: 'Good bye!', with: 'Farewell, and thanks for all the fish!' },
];

export const HTTP_BENCH_PORT = 8080;
/** The big body: 50 MiB. */
export const BIG_BODY_BYTES = 50 * 1024 * 1024;
/** The warm-up body (unmeasured, after each path comes up): the big body's first 5 MiB. */
export const WARM_BODY_BYTES = 5 * 1024 * 1024;
/** The small body of the keep-alive requests (one of each match, ≤ maxBufferedBody). */
export const SMALL_BODY = 'Hello world! A small keep-alive response, Good bye! The end.\n';

/** Origin (server namespace), transparent paths' target. */
const ORIGIN = '10.200.0.2';
/** The proxies' addresses in the gw namespace: on br-c (the client's side) and br-s. */
const PROXY_CLIENT_SIDE = '10.200.0.254';
const PROXY_SERVER_SIDE = '10.200.0.253';

/**
 * A line with a match of each pattern, or (`hit` false) the same length with none — not even
 * ignoring case: nginx's sub_filter matches case-insensitively ("Hello World" would be replaced).
 */
const bodyLine = (i: number, hit: boolean): string =>
  `${String(i).padStart(8, '0')} ${hit ? 'Hello world' : 'Hello wurld'}, this is a line with filler text abcdefghij. ${hit ? 'Good bye!' : 'Good-bye!'} klmnopqrstuvwx\n`;
/** Bytes per line of the bodies (every line the same length). */
export const BODY_LINE_BYTES = bodyLine(0, true).length;
/** The sparse body has matches on every 720th line: one of each pattern per 65,520 bytes. */
export const SPARSE_EVERY_LINES = 720;

/**
 * Lines `%08d Hello world, …filler… Good bye! …\n` (BODY_LINE_BYTES = 91), cut at `bytes` (the
 * last line may be partial). Every line matches by default: a match of each pattern every 91
 * bytes (about 576,000 of each in 50 MiB); with `every` = n only every n-th line does (the
 * others say "Hello wurld", "Good-bye!"), so the scan is the same and the edits are few.
 */
export function makeBody(bytes: number, every = 1): Buffer {
  const out = Buffer.alloc(bytes);
  for (let i = 0, at = 0; at < bytes; i++) at += out.write(bodyLine(i, i % every === 0), at, 'latin1');
  return out;
}

/** The expected rewrite: each entry applied over the whole body, in order. */
export function rewriteBody(body: Buffer, rewrites = HTTP_REWRITES): Buffer {
  let s = body.toString('latin1');
  for (const r of rewrites) s = s.split(r.find).join(r.with);
  return Buffer.from(s, 'latin1');
}

export function countMatches(body: Buffer, find: string): number {
  let n = 0;
  const pat = Buffer.from(find, 'latin1');
  for (let i = body.indexOf(pat); i >= 0; i = body.indexOf(pat, i + pat.length)) n++;
  return n;
}

/**
 * tapgate's rule: the http agent on the port, response body replacements (examples/http.yaml),
 * with `decode` (gzip bodies are decoded, rewritten and coded again; a request without
 * Accept-Encoding, as curl and wrk send them here, is not changed by it).
 */
export function tapgateHttpYaml(port = HTTP_BENCH_PORT, rewrites = HTTP_REWRITES): string {
  const entries = rewrites.map((r) => `          - { find: ${JSON.stringify(r.find)}, with: ${JSON.stringify(r.with)} }`).join('\n');
  return `# npm run bench, HTTP section: the http agent rewriting response bodies
rules:
  - match: { port: [${port}] }
    agent: http
    http:
      decode: true
      response:
        replace:
${entries}
`;
}

const tempPaths = (dir: string, tag: string): string =>
  ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((k) => `  ${k}_temp_path ${dir}/${tag}-${k};`).join('\n');

/**
 * The origin: static files, keep-alive on (for wrk and the proxies' upstream pools), gzip off but
 * under /gz/ (level 1, for clients that ask: the coded download).
 */
export function originNginxConf(dir: string, listen: string, root: string): string {
  return `worker_processes 1;
daemon off;
pid ${dir}/origin.pid;
error_log ${dir}/origin-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  default_type text/plain;
  sendfile on;
  tcp_nopush on;
  gzip off;
  keepalive_timeout 60s;
  keepalive_requests 1000000;
${tempPaths(dir, 'origin')}
  server {
    listen ${listen} backlog=4096;
    root ${root};
    location /gz/ { alias ${root}/; gzip on; gzip_types *; gzip_comp_level 1; gzip_min_length 0; gzip_proxied any; gzip_http_version 1.0; }
  }
}
`;
}

/** nginx's single-quoted string. */
const nginxQuote = (s: string): string => `'${s.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;

/**
 * The nginx path: one worker (tapgate and mitmproxy are one thread each), a reverse proxy with
 * HTTP/1.1 keep-alive to the origin, sub_filter on every match of every type. sub_filter reads
 * identity only, so the upstream is asked for identity and nginx compresses (level 1, as the
 * origin) for clients that ask: the coded download.
 * `proxy_buffering off` is nginx at its best here: with buffering on (and
 * `proxy_max_temp_file_size 0`, so nothing goes to disk) a 50 MiB body cost 0.6–0.9 s of CPU and
 * 1.7–2.8 s against 0.37 s and 0.63 s without (same box, same run).
 */
export function subFilterNginxConf(dir: string, listen: string, upstream: string, rewrites = HTTP_REWRITES): string {
  return `worker_processes 1;
daemon off;
pid ${dir}/proxy.pid;
error_log ${dir}/proxy-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_timeout 60s;
  keepalive_requests 1000000;
${tempPaths(dir, 'proxy')}
  upstream origin {
    server ${upstream};
    keepalive 32;
    keepalive_requests 1000000;
  }
  server {
    listen ${listen} backlog=4096;
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Accept-Encoding "";
      proxy_buffering off;
      gzip on;
      gzip_types *;
      gzip_comp_level 1;
      gzip_min_length 0;
      sub_filter_once off;
      sub_filter_types *;
${rewrites.map((r) => `      sub_filter ${nginxQuote(r.find)} ${nginxQuote(r.with)};`).join('\n')}
    }
  }
}
`;
}

const pyBytes = (s: string): string => `bytes.fromhex("${Buffer.from(s, 'latin1').toString('hex')}")`;

/**
 * The mitmproxy addon (mitmproxy 8.x). A response over `stream_large_bodies` is rewritten while
 * it streams: `Content-Length` goes, the body is chunked (HTTP/1.1; close-delimited otherwise),
 * and a stateful function replaces in each chunk, keeping back the bytes that could start a match
 * (at most the longest pattern − 1) and never cutting inside one. Smaller responses are rewritten
 * whole in the `response` hook (mitmproxy fixes their Content-Length). A gzip-coded response
 * streams too, through zlib: decoded, the same replacement, coded again at level 1 with a sync
 * flush per chunk (as tapgate does; the stream function is set before mitmproxy's own
 * `stream_large_bodies` check, which keeps a function it finds). It never returns an empty
 * chunk: mitmproxy 8.1 would frame it as the last chunk. `bytes.replace` runs in C: this is the
 * fast way to write such an addon, so the comparison is with mitmproxy at its best.
 */
export function mitmAddonPy(rewrites = HTTP_REWRITES): string {
  return `"""npm run bench, HTTP section: the http agent's body replacements, as a mitmproxy addon."""
import zlib

REPLACE = [
${rewrites.map((r) => `    (${pyBytes(r.find)}, ${pyBytes(r.with)}),`).join('\n')}
]
KEEP = max(len(f) for f, _ in REPLACE) - 1


def apply(data):
    for f, w in REPLACE:
        data = data.replace(f, w)
    return data


def streamer():
    """A chunk function for flow.response.stream: b"" marks the end of the body."""
    tail = b""

    def stream(chunk):
        nonlocal tail
        if chunk == b"":
            out, tail = apply(tail), b""
            return [out] if out else []
        data = tail + chunk
        cut = len(data) - KEEP
        moved = True
        while moved and cut > 0:
            moved = False
            for f, _ in REPLACE:
                s = data.find(f, max(0, cut - len(f) + 1), cut + len(f) - 1)
                if s != -1 and s < cut < s + len(f):
                    cut, moved = s, True
        if cut <= 0:
            tail = data
            return []
        out, tail = apply(data[:cut]), data[cut:]
        return [out] if out else []

    return stream


def gzip_streamer():
    """The streamer between a gzip decoder and a gzip encoder (one member out)."""
    inner = streamer()
    dec = zlib.decompressobj(16 + zlib.MAX_WBITS)
    enc = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)

    def stream(chunk):
        if chunk == b"":
            plain = dec.flush()
            parts = (inner(plain) if plain else []) + inner(b"")
            out = b"".join(enc.compress(p) for p in parts) + enc.flush()
        else:
            plain = dec.decompress(chunk)
            parts = inner(plain) if plain else []
            out = b"".join(enc.compress(p) for p in parts)
            if parts:
                out += enc.flush(zlib.Z_SYNC_FLUSH)
        return [out] if out else []

    return stream


def responseheaders(flow):
    coded = flow.response.headers.get("content-encoding", "").strip().lower()
    if coded == "gzip":
        flow.response.stream = gzip_streamer()
    if flow.response.stream:
        flow.response.headers.pop("content-length", None)
        if flow.request.http_version == "HTTP/1.1":
            flow.response.headers["transfer-encoding"] = "chunked"
        else:
            flow.response.headers["connection"] = "close"
        if not callable(flow.response.stream):
            flow.response.stream = streamer()


def response(flow):
    if not flow.response.stream and flow.response.raw_content:
        flow.response.content = apply(flow.response.content)
`;
}

/** wrk --latency: the 50 % and 99 % lines, in µs. */
export function parseWrkLatency(out: string): { p50Us: number; p99Us: number } {
  const pick = (pct: string): number => {
    const m = new RegExp(`^\\s*${pct}%\\s+([\\d.]+)(us|ms|s)\\s*$`, 'm').exec(out);
    if (!m) throw new Error(`no ${pct}% line in wrk --latency output: ${out.slice(0, 500)}`);
    return Number(m[1]) * (m[2] === 'us' ? 1 : m[2] === 'ms' ? 1e3 : 1e6);
  };
  return { p50Us: pick('50'), p99Us: pick('99') };
}

/** curl -w '%{http_code} %{size_download} %{time_total}'. */
export function parseCurlW(out: string): { code: number; bytes: number; seconds: number } {
  const m = /(\d{3}) (\d+) ([\d.]+)\s*$/.exec(out.trim());
  if (!m) throw new Error(`unexpected curl -w output: ${JSON.stringify(out.slice(-200))}`);
  return { code: Number(m[1]), bytes: Number(m[2]), seconds: Number(m[3]) };
}

export type HttpPathId = 'direct' | 'tapgate' | 'tapgate-pass' | 'mitmproxy' | 'nginx';

export const HTTP_PATH_NAMES: Record<HttpPathId, string> = {
  direct: 'direct (kernel bridge, no rewrite)',
  tapgate: 'tapgate, http agent',
  'tapgate-pass': 'tapgate, no rule (pass-through)',
  mitmproxy: 'mitmproxy (mitmdump, reverse, streaming addon)',
  nginx: 'nginx sub_filter (reverse proxy)',
};

export interface HttpVerify {
  path: string;
  /** The big body as received equals the expected one (rewritten, or the original for
   *  paths without rewrite); likewise the sparse and the small body. */
  bigOk: boolean;
  sparseOk: boolean;
  smallOk: boolean;
  /** The big body asked for gzip (curl --compressed): it came gzip-coded and decodes to the expected bytes. */
  gzipOk: boolean;
  bigSha: string;
  /** A 50 MiB download on a keep-alive connection (no `Connection: close`): seconds to the end
   *  of the response, or undefined when curl gave up after `keepAliveProbeSeconds`. */
  keepAliveSeconds: number | undefined;
}

export interface HttpReport {
  /** Why the section did not run (a missing program): printed instead of the tables. */
  skipped?: string;
  /** The paths' bodies differ: nothing was measured. */
  failed?: string;
  versions: string[];
  bodyBytes: number;
  matches: number;
  sparseMatches: number;
  keepAliveProbeSeconds: number;
  verify: HttpVerify[];
  /** Big body, MB/s (10^6 bytes of the original body per second of curl's time_total). */
  throughput: LiveRow[];
  /** CPU seconds of the gw namespace's processes per big download (the middle box's own cost). */
  cpuSeconds: LiveRow[];
  /** The big body again through the same process right after (warm: JIT, memory pools). */
  warmThroughput: LiveRow[];
  warmCpuSeconds: LiveRow[];
  /** The big body gzip-coded (curl --compressed; MB/s of the decoded body). */
  gzipThroughput: LiveRow[];
  gzipCpuSeconds: LiveRow[];
  /** The same for the sparse body (few matches: the scan without the edits). */
  sparseThroughput: LiveRow[];
  sparseCpuSeconds: LiveRow[];
  /** wrk -c16 keep-alive, small body. */
  rps: LiveRow[];
  /** wrk -c1 keep-alive, small body: median latency in µs. */
  latency: LiveRow[];
  notes: string[];
  profile?: ProfileEntry[] | undefined;
  profileWorkload?: 'download' | 'wrk' | undefined;
}

export interface HttpBenchOptions {
  /** Rounds (median). Default 3. */
  runs?: number;
  /** Seconds per wrk run. Default 5. */
  wrkSeconds?: number;
  /** wrk connections of the requests/s runs. Default 16. */
  wrkConns?: number;
  /** How long the keep-alive probe waits for the big body. Default 10. */
  keepAliveProbeSeconds?: number;
  /** Measure (false: only the profile, with `profile`). Default true. */
  measure?: boolean;
  /**
   * A CPU profile of tapgate (http agent): 'download' = under `profileDownloads` 50 MiB
   * downloads, 'wrk' = under one wrk -c16 run of small keep-alive requests.
   */
  profile?: 'download' | 'wrk' | undefined;
  profileDownloads?: number;
  keepProfile?: string | undefined;
  /** Lab prefix. Default 'tgbhttp'. */
  prefix?: string;
  log?: (line: string) => void;
}

function sh(argv: string[], allowFail = false): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8' });
  if (r.status !== 0 && !allowFail) throw new Error(`\`${argv.join(' ')}\` failed: ${r.stderr || r.error?.message}`);
  return { status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

/** First line of `bin args` (stdout or stderr), or undefined when it cannot run. */
function versionOf(bin: string, args: string[]): string | undefined {
  const r = spawnSync(bin, args, { encoding: 'utf8', timeout: 20_000 });
  if (r.error !== undefined) return undefined;
  return `${r.stdout}\n${r.stderr}`.split('\n').map((l) => l.trim()).find((l) => l !== '') ?? bin;
}

/** Why the section cannot run here (undefined: it can), and the versions it will compare. */
export function httpBenchPreflight(): { skip?: string; versions: string[] } {
  const versions: string[] = [];
  const missing: string[] = [];
  const nginx = versionOf('nginx', ['-v']);
  if (nginx === undefined) missing.push('nginx (the origin and the sub_filter path; Debian: apt-get install nginx)');
  else {
    versions.push(nginx);
    const conf = spawnSync('nginx', ['-V'], { encoding: 'utf8' });
    if (!`${conf.stdout}${conf.stderr}`.includes('http_sub_module')) missing.push('nginx built with http_sub_module (Debian: apt-get install nginx)');
  }
  const mitm = versionOf('mitmdump', ['--version']);
  if (mitm === undefined) missing.push('mitmdump (Debian: apt-get install mitmproxy)');
  else versions.push(mitm);
  if (versionOf('curl', ['--version']) === undefined) missing.push('curl');
  if (versionOf('wrk', ['-v']) === undefined) missing.push('wrk');
  return missing.length > 0 ? { skip: `needs ${missing.join(', ')}`, versions } : { versions };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

/** Where two buffers first differ (for the failure message). */
function firstDiff(a: Buffer, b: Buffer): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return n;
}

/** utime + stime of every process in a namespace, in seconds. */
function namespaceCpuSeconds(ns: string): number {
  const r = sh(['ip', 'netns', 'pids', ns], true);
  let ticks = 0;
  for (const pid of r.stdout.split('\n').map(Number).filter((n) => Number.isInteger(n) && n > 0)) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      ticks += Number(f[11]) + Number(f[12]); // fields 14 and 15 (utime, stime), after pid and comm
    } catch {
      /* gone */
    }
  }
  return ticks / 100; // USER_HZ: 100 on Linux
}

export async function benchHttp(opts: HttpBenchOptions = {}): Promise<HttpReport> {
  const runs = opts.runs ?? 3;
  const wrkSeconds = opts.wrkSeconds ?? 5;
  const wrkConns = opts.wrkConns ?? 16;
  const kaSeconds = opts.keepAliveProbeSeconds ?? 10;
  const measure = opts.measure ?? true;
  const P = opts.prefix ?? 'tgbhttp';
  const log = opts.log ?? (() => {});
  const pre = httpBenchPreflight();
  const report: HttpReport = {
    versions: pre.versions,
    bodyBytes: BIG_BODY_BYTES,
    matches: 0,
    sparseMatches: 0,
    keepAliveProbeSeconds: kaSeconds,
    verify: [],
    throughput: [],
    cpuSeconds: [],
    warmThroughput: [],
    warmCpuSeconds: [],
    gzipThroughput: [],
    gzipCpuSeconds: [],
    sparseThroughput: [],
    sparseCpuSeconds: [],
    rps: [],
    latency: [],
    notes: [],
  };
  if (pre.skip !== undefined) {
    report.skipped = pre.skip;
    return report;
  }

  const tmp = mkdtempSync(join(tmpdir(), 'tapgate-bench-http-'));
  try {
    // Bodies, configs.
    chmodSync(tmp, 0o755); // nginx's workers run as nobody / www-data: they read www/ through it
    const www = join(tmp, 'www');
    mkdirSync(www, { mode: 0o755 });
    const big = makeBody(BIG_BODY_BYTES);
    const bigExpected = rewriteBody(big);
    const sparse = makeBody(BIG_BODY_BYTES, SPARSE_EVERY_LINES);
    const sparseExpected = rewriteBody(sparse);
    const small = Buffer.from(SMALL_BODY, 'latin1');
    const smallExpected = rewriteBody(small);
    report.matches = HTTP_REWRITES.reduce((n, r) => n + countMatches(big, r.find), 0);
    report.sparseMatches = HTTP_REWRITES.reduce((n, r) => n + countMatches(sparse, r.find), 0);
    writeFileSync(join(www, 'big.txt'), big);
    writeFileSync(join(www, 'sparse.txt'), sparse);
    writeFileSync(join(www, 'warm.txt'), big.subarray(0, WARM_BODY_BYTES));
    writeFileSync(join(www, 'small.txt'), small);
    const rules = join(tmp, 'http.yaml');
    writeFileSync(rules, tapgateHttpYaml());
    const originConf = join(tmp, 'origin.conf');
    writeFileSync(originConf, originNginxConf(tmp, `${ORIGIN}:${HTTP_BENCH_PORT}`, www));
    const proxyConf = join(tmp, 'proxy.conf');
    writeFileSync(proxyConf, subFilterNginxConf(tmp, `${PROXY_CLIENT_SIDE}:${HTTP_BENCH_PORT}`, `${ORIGIN}:${HTTP_BENCH_PORT}`));
    const addon = join(tmp, 'rewrite_addon.py');
    writeFileSync(addon, mitmAddonPy());
    mkdirSync(join(tmp, 'mitm'));

    // The lab: client — br-c [gw] br-s — server; the origin for the whole section.
    await labDown(P);
    await labUp({ prefix: P });
    const gw = nsName(P, 'gw');
    labSpawn(P, 'server', 'origin', ['nginx', '-p', tmp, '-c', originConf]);

    const curl = async (url: string, extra: string[], out = '/dev/null', maxSeconds = 120) => {
      const r = await labExec(P, 'client', ['curl', '-s', '--max-time', String(maxSeconds), ...extra, '-o', out, '-w', '%{http_code} %{size_download} %{time_total}', url], {
        timeoutMs: (maxSeconds + 10) * 1000,
      });
      return { exit: r.code, out: r.stdout, err: r.stderr };
    };
    const logTail = (name: string): string => {
      try {
        return readFileSync(join(labStateDir(P), `${name}.log`), 'utf8').slice(-1500);
      } catch {
        return '(no log)';
      }
    };
    const waitReady = async (host: string, what: string, logName: string): Promise<void> => {
      const deadline = Date.now() + 20_000;
      for (;;) {
        const r = await curl(`http://${host}:${HTTP_BENCH_PORT}/small.txt`, [], '/dev/null', 2);
        if (r.exit === 0 && r.out.startsWith('200')) return;
        if (Date.now() > deadline) {
          throw new Error(`${what} did not answer on ${host}:${HTTP_BENCH_PORT} within 20 s (curl exit ${r.exit}); log: ${logTail(logName)}`);
        }
        await sleep(200);
      }
    };
    // Nothing joins the bridges yet: ask the origin from its own namespace.
    for (let deadline = Date.now() + 20_000; ; await sleep(200)) {
      const r = await labExec(P, 'server', ['curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', `http://${ORIGIN}:${HTTP_BENCH_PORT}/small.txt`]);
      if (r.stdout === '200') break;
      if (Date.now() > deadline) throw new Error(`the origin nginx does not answer (${r.stdout} ${r.stderr}); log: ${logTail('origin')}`);
    }

    const proxyAddrs = (on: boolean): void => {
      if (on) {
        sh(['ip', '-n', gw, 'addr', 'add', `${PROXY_CLIENT_SIDE}/24`, 'dev', LAB_IFACES.bridgeClient]);
        sh(['ip', '-n', gw, 'addr', 'add', `${PROXY_SERVER_SIDE}/32`, 'dev', LAB_IFACES.bridgeServer]);
        sh(['ip', '-n', gw, 'route', 'add', `${ORIGIN}/32`, 'dev', LAB_IFACES.bridgeServer, 'src', PROXY_SERVER_SIDE]);
      } else {
        sh(['ip', '-n', gw, 'route', 'del', `${ORIGIN}/32`], true);
        sh(['ip', '-n', gw, 'addr', 'del', `${PROXY_SERVER_SIDE}/32`, 'dev', LAB_IFACES.bridgeServer], true);
        sh(['ip', '-n', gw, 'addr', 'del', `${PROXY_CLIENT_SIDE}/24`, 'dev', LAB_IFACES.bridgeClient], true);
      }
    };

    interface Path {
      id: HttpPathId;
      host: string;
      rewrites: boolean;
      up: () => Promise<void>;
      down: () => Promise<void>;
    }
    const tapgatePath = (id: HttpPathId, config: string | undefined): Path => ({
      id, host: ORIGIN, rewrites: config !== undefined,
      up: async () => {
        await labUp({ prefix: P, gatewayCommand: gatewayArgv({ vnetHdr: true, ...(config !== undefined ? { config } : {}) }) });
        await waitReady(ORIGIN, HTTP_PATH_NAMES[id], 'gateway');
      },
      down: async () => void (await labKill(P, 'gateway')),
    });
    const paths: Path[] = [
      {
        id: 'direct', host: ORIGIN, rewrites: false,
        up: async () => {
          sh(['ip', '-n', gw, 'link', 'add', 'bx-c', 'type', 'veth', 'peer', 'name', 'bx-s']);
          sh(['ip', '-n', gw, 'link', 'set', 'bx-c', 'master', LAB_IFACES.bridgeClient, 'up']);
          sh(['ip', '-n', gw, 'link', 'set', 'bx-s', 'master', LAB_IFACES.bridgeServer, 'up']);
          await waitReady(ORIGIN, 'the kernel bridge', 'origin');
        },
        down: async () => void sh(['ip', '-n', gw, 'link', 'del', 'bx-c'], true),
      },
      tapgatePath('tapgate', rules),
      tapgatePath('tapgate-pass', undefined),
      {
        id: 'mitmproxy', host: PROXY_CLIENT_SIDE, rewrites: true,
        up: async () => {
          proxyAddrs(true);
          labSpawn(P, 'gw', 'mitmdump', [
            'mitmdump', '--mode', `reverse:http://${ORIGIN}:${HTTP_BENCH_PORT}/`, '--listen-host', PROXY_CLIENT_SIDE, '--listen-port', String(HTTP_BENCH_PORT),
            '-s', addon, '--set', `confdir=${join(tmp, 'mitm')}`, '--set', 'stream_large_bodies=1m', '--set', 'flow_detail=0', '-q',
          ]);
          await waitReady(PROXY_CLIENT_SIDE, HTTP_PATH_NAMES.mitmproxy, 'mitmdump');
        },
        down: async () => {
          await labKill(P, 'mitmdump');
          proxyAddrs(false);
        },
      },
      {
        id: 'nginx', host: PROXY_CLIENT_SIDE, rewrites: true,
        up: async () => {
          proxyAddrs(true);
          labSpawn(P, 'gw', 'nginxproxy', ['nginx', '-p', tmp, '-c', proxyConf]);
          await waitReady(PROXY_CLIENT_SIDE, HTTP_PATH_NAMES.nginx, 'nginxproxy');
        },
        down: async () => {
          await labKill(P, 'nginxproxy');
          proxyAddrs(false);
        },
      },
    ];
    const url = (p: Path, file: string) => `http://${p.host}:${HTTP_BENCH_PORT}/${file}`;

    // ---- 1. Same bytes from every path, or nothing is measured ----
    if (measure) {
      const problems: string[] = [];
      for (const p of paths) {
        const name = HTTP_PATH_NAMES[p.id];
        await p.up();
        try {
          const file = join(tmp, `verify-${p.id}.bin`);
          const got = async (f: string, extra: string[]): Promise<Buffer> => {
            const r = await curl(url(p, f), extra, file);
            if (r.exit !== 0) throw new Error(`${name}: curl ${f} failed (exit ${r.exit}): ${r.err.slice(0, 300)}`);
            const b = readFileSync(file);
            rmSync(file, { force: true });
            return b;
          };
          const b = await got('big.txt', ['-H', 'Connection: close']);
          const sp = await got('sparse.txt', ['-H', 'Connection: close']);
          const s = await got('small.txt', []);
          const hdr = join(tmp, `verify-${p.id}.hdr`);
          const gz = await got('gz/big.txt', ['--compressed', '-H', 'Connection: close', '-D', hdr]);
          const coded = /^content-encoding:\s*gzip\s*$/im.test(readFileSync(hdr, 'latin1'));
          rmSync(hdr, { force: true });
          const wantB = p.rewrites ? bigExpected : big;
          const wantSp = p.rewrites ? sparseExpected : sparse;
          const wantS = p.rewrites ? smallExpected : small;
          const v: HttpVerify = { path: name, bigOk: b.equals(wantB), sparseOk: sp.equals(wantSp), smallOk: s.equals(wantS), gzipOk: coded && gz.equals(wantB), bigSha: sha256(b), keepAliveSeconds: undefined };
          const differs = (what: string, got: Buffer, want: Buffer) =>
            `${name}: ${what} sha256 ${sha256(got).slice(0, 16)}…, ${got.length} bytes; expected ${sha256(want).slice(0, 16)}…, ${want.length} bytes; first difference at byte ${firstDiff(got, want)}`;
          if (!v.bigOk) problems.push(differs('50 MiB body', b, wantB));
          if (!v.sparseOk) problems.push(differs('sparse 50 MiB body', sp, wantSp));
          if (!coded) problems.push(`${name}: the gzip download did not come gzip-coded`);
          else if (!v.gzipOk) problems.push(differs('gzip 50 MiB body (decoded)', gz, wantB));
          if (!v.smallOk) problems.push(`${name}: small body ${JSON.stringify(s.toString('latin1').slice(0, 120))}, expected ${JSON.stringify(wantS.toString('latin1'))}`);
          if (p.rewrites) {
            // The same download on a keep-alive connection: the client waits for the end of the
            // response itself, not for the connection's close.
            const r = await curl(url(p, 'big.txt'), [], '/dev/null', kaSeconds);
            if (r.exit === 0) v.keepAliveSeconds = parseCurlW(r.out).seconds;
            else if (r.exit !== 28) problems.push(`${name}: keep-alive download failed (curl exit ${r.exit}): ${r.err.slice(0, 300)}`);
          }
          report.verify.push(v);
          log(`verify ${name}: big ${v.bigOk ? 'ok' : 'DIFFERS'}, sparse ${v.sparseOk ? 'ok' : 'DIFFERS'}, small ${v.smallOk ? 'ok' : 'DIFFERS'}, gzip ${v.gzipOk ? 'ok' : 'DIFFERS'}, sha256 ${v.bigSha.slice(0, 16)}…${p.rewrites ? `, keep-alive ${v.keepAliveSeconds === undefined ? `not complete in ${kaSeconds} s` : `${v.keepAliveSeconds.toFixed(2)} s`}` : ''}`);
        } finally {
          await p.down();
        }
      }
      if (problems.length > 0) {
        report.failed = `the paths do not produce the expected bodies:\n    ${problems.join('\n    ')}`;
        return report;
      }
    }

    // ---- 2. Interleaved rounds ----
    const results = new Map<HttpPathId, { mbps: number[]; cpu: number[]; warmMbps: number[]; warmCpu: number[]; gzMbps: number[]; gzCpu: number[]; spMbps: number[]; spCpu: number[]; rps: number[]; lat: number[] }>();
    for (const p of paths) results.set(p.id, { mbps: [], cpu: [], warmMbps: [], warmCpu: [], gzMbps: [], gzCpu: [], spMbps: [], spCpu: [], rps: [], lat: [] });
    for (let round = 0; measure && round < runs; round++) {
      for (const p of paths) {
        const name = HTTP_PATH_NAMES[p.id];
        const res = results.get(p.id)!;
        await p.up();
        try {
          // Unmeasured: JIT (tapgate), caches, the proxies' upstream connections.
          await curl(url(p, 'warm.txt'), ['-H', 'Connection: close']);
          /** One 50 MiB download: MB/s and the middle box's CPU seconds. `coded`: asked for gzip
           *  (curl decodes; its size_download is the coded size, so the file's size is checked). */
          const download = async (file: string, want: number, coded = false): Promise<[number, number]> => {
            const out = coded ? join(tmp, 'coded.bin') : '/dev/null';
            const cpu0 = namespaceCpuSeconds(gw);
            const r = await curl(url(p, file), ['-H', 'Connection: close', ...(coded ? ['--compressed'] : [])], out);
            const cpu1 = namespaceCpuSeconds(gw);
            const c = r.exit === 0 ? parseCurlW(r.out) : undefined;
            const got = coded ? (statSync(out, { throwIfNoEntry: false })?.size ?? -1) : c?.bytes;
            if (coded) rmSync(out, { force: true });
            if (c === undefined || c.code !== 200 || got !== want) {
              throw new Error(`${name} round ${round + 1}: ${file} download failed (curl exit ${r.exit}, ${r.out}, expected ${want} bytes): ${r.err.slice(0, 300)}`);
            }
            return [BIG_BODY_BYTES / c.seconds / 1e6, cpu1 - cpu0];
          };
          const [mbps, cpu] = await download('big.txt', p.rewrites ? bigExpected.length : big.length);
          res.mbps.push(mbps);
          res.cpu.push(cpu);
          const [warmMbps, warmCpu] = await download('big.txt', p.rewrites ? bigExpected.length : big.length);
          res.warmMbps.push(warmMbps);
          res.warmCpu.push(warmCpu);
          const [gzMbps, gzCpu] = await download('gz/big.txt', p.rewrites ? bigExpected.length : big.length, true);
          res.gzMbps.push(gzMbps);
          res.gzCpu.push(gzCpu);
          const [spMbps, spCpu] = await download('sparse.txt', p.rewrites ? sparseExpected.length : sparse.length);
          res.spMbps.push(spMbps);
          res.spCpu.push(spCpu);
          const w = await labExec(P, 'client', ['wrk', '-t1', `-c${wrkConns}`, `-d${wrkSeconds}s`, url(p, 'small.txt')], { timeoutMs: (wrkSeconds + 20) * 1000 });
          const wr = parseWrk(w.stdout);
          if (wr.errors > wr.requests / 100) report.notes.push(`${name} wrk round ${round + 1}: ${wr.errors} errors in ${wr.requests} requests`);
          res.rps.push(wr.rps);
          const l = await labExec(P, 'client', ['wrk', '-t1', '-c1', `-d${wrkSeconds}s`, '--latency', url(p, 'small.txt')], { timeoutMs: (wrkSeconds + 20) * 1000 });
          const lat = parseWrkLatency(l.stdout);
          res.lat.push(lat.p50Us);
          log(`${name} round ${round + 1}: ${mbps.toFixed(1)} MB/s (gw CPU ${cpu.toFixed(2)} s), again ${warmMbps.toFixed(1)} MB/s (${warmCpu.toFixed(2)} s), gzip ${gzMbps.toFixed(1)} MB/s (${gzCpu.toFixed(2)} s), sparse ${spMbps.toFixed(1)} MB/s (${spCpu.toFixed(2)} s), ${wr.rps.toFixed(0)} req/s, p50 ${lat.p50Us.toFixed(0)} µs`);
        } finally {
          await p.down();
        }
      }
    }
    for (const p of paths) {
      const r = results.get(p.id)!;
      const name = HTTP_PATH_NAMES[p.id];
      if (r.mbps.length > 0) report.throughput.push({ name, value: median(r.mbps), runs: r.mbps });
      if (r.cpu.length > 0) report.cpuSeconds.push({ name, value: median(r.cpu), runs: r.cpu });
      if (r.warmMbps.length > 0) report.warmThroughput.push({ name, value: median(r.warmMbps), runs: r.warmMbps });
      if (r.warmCpu.length > 0) report.warmCpuSeconds.push({ name, value: median(r.warmCpu), runs: r.warmCpu });
      if (r.gzMbps.length > 0) report.gzipThroughput.push({ name, value: median(r.gzMbps), runs: r.gzMbps });
      if (r.gzCpu.length > 0) report.gzipCpuSeconds.push({ name, value: median(r.gzCpu), runs: r.gzCpu });
      if (r.spMbps.length > 0) report.sparseThroughput.push({ name, value: median(r.spMbps), runs: r.spMbps });
      if (r.spCpu.length > 0) report.sparseCpuSeconds.push({ name, value: median(r.spCpu), runs: r.spCpu });
      if (r.rps.length > 0) report.rps.push({ name, value: median(r.rps), runs: r.rps });
      if (r.lat.length > 0) report.latency.push({ name, value: median(r.lat), runs: r.lat });
    }

    // ---- 3. Profile of tapgate (http agent) under the big downloads ----
    if (opts.profile !== undefined) {
      const profDir = join(tmp, 'prof');
      await labUp({ prefix: P, gatewayCommand: profiledArgv(gatewayArgv({ vnetHdr: true, config: rules }), profDir) });
      await waitReady(ORIGIN, 'tapgate (profiled)', 'gateway');
      if (opts.profile === 'download') {
        for (let i = 0; i < (opts.profileDownloads ?? 3); i++) {
          const r = await curl(`http://${ORIGIN}:${HTTP_BENCH_PORT}/big.txt`, ['-H', 'Connection: close']);
          if (r.exit === 0) log(`profiled download ${i + 1} (tapgate, http agent, --cpu-prof): ${(BIG_BODY_BYTES / parseCurlW(r.out).seconds / 1e6).toFixed(1)} MB/s`);
        }
      } else {
        // 10 s at least: start-up and the JIT warm-up are a fixed ~1 s of the profile.
        const secs = Math.max(10, wrkSeconds);
        const w = await labExec(P, 'client', ['wrk', '-t1', `-c${wrkConns}`, `-d${secs}s`, `http://${ORIGIN}:${HTTP_BENCH_PORT}/small.txt`], { timeoutMs: (secs + 20) * 1000 });
        log(`profiled wrk run (tapgate, http agent, --cpu-prof): ${parseWrk(w.stdout).rps.toFixed(0)} req/s`);
      }
      await labKill(P, 'gateway', { graceMs: 15_000 }); // SIGTERM: a graceful exit writes the profile
      const entries = readProfileDir(profDir, opts.keepProfile);
      if (entries === undefined) report.notes.push('profile: no .cpuprofile written');
      else {
        report.profile = entries;
        report.profileWorkload = opts.profile;
      }
    }
    await labDown(P);
  } finally {
    await labDown(P);
    rmSync(tmp, { recursive: true, force: true });
  }
  return report;
}
