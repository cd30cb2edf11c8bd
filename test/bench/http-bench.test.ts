/**
 * The HTTP rewriting section of `npm run bench` (src/bench/http.ts), without the lab: the bodies
 * and the expected rewrite, the three paths' configurations (tapgate's rule parses, nginx accepts
 * both configs, the mitmproxy addon's streaming replacement equals the whole-body one at every
 * chunking), the output parsers, and what the section prints when skipped or failed.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { parseConfig } from '../../src/config/index.js';
import {
  BODY_LINE_BYTES,
  SPARSE_EVERY_LINES,
  HTTP_PATH_NAMES,
  HTTP_REWRITES,
  SMALL_BODY,
  countMatches,
  makeBody,
  mitmAddonPy,
  originNginxConf,
  parseCurlW,
  parseWrkLatency,
  rewriteBody,
  subFilterNginxConf,
  tapgateHttpYaml,
  type HttpReport,
} from '../../src/bench/http.js';
import { printHttp } from '../../src/bench/http-print.js';

const hasPython = spawnSync('python3', ['--version'], { stdio: 'ignore' }).error === undefined;
const nginxV = spawnSync('nginx', ['-V'], { encoding: 'utf8' });
const hasNginxSub = nginxV.error === undefined && `${nginxV.stdout}${nginxV.stderr}`.includes('http_sub_module');

function tmp(): string {
  return mkdtempSync(join(tmpdir(), 'tapgate-http-bench-test-'));
}

describe('HTTP bench: bodies', () => {
  it('the big body is exactly the size asked, a match of each pattern on every line', () => {
    const L = BODY_LINE_BYTES;
    const b = makeBody(L * 1000 + 10);
    expect(b.length).toBe(L * 1000 + 10);
    for (const r of HTTP_REWRITES) expect(countMatches(b, r.find)).toBe(1000);
    const lower = Buffer.from(b.toString('latin1').toLowerCase(), 'latin1');
    for (const r of HTTP_REWRITES) expect(countMatches(lower, r.find.toLowerCase()), 'no extra match for a case-insensitive sub_filter').toBe(1000);
    expect(b.subarray(0, L).toString('latin1')).toMatch(/^00000000 Hello world, .* Good bye! .*\n$/);
  });

  it('the sparse body: the same size and line length, matches only on every n-th line', () => {
    const n = SPARSE_EVERY_LINES;
    const b = makeBody(BODY_LINE_BYTES * n * 3, n);
    expect(b.length).toBe(BODY_LINE_BYTES * n * 3);
    for (const r of HTTP_REWRITES) expect(countMatches(b, r.find)).toBe(3);
    expect(countMatches(b, 'Hello wurld')).toBe(3 * (n - 1));
    // nginx's sub_filter ignores case: no other line may match that way either.
    const lower = Buffer.from(b.toString('latin1').toLowerCase(), 'latin1');
    for (const r of HTTP_REWRITES) expect(countMatches(lower, r.find.toLowerCase())).toBe(3);
  });

  it('the expected rewrite replaces every match and leaves no pattern behind', () => {
    const b = makeBody(BODY_LINE_BYTES * 50);
    const r = rewriteBody(b);
    for (const x of HTTP_REWRITES) {
      expect(countMatches(r, x.find)).toBe(0);
      expect(countMatches(r, x.with)).toBe(50);
    }
    const per = HTTP_REWRITES.reduce((n, x) => n + x.with.length - x.find.length, 0);
    expect(r.length).toBe(b.length + 50 * per);
    expect(rewriteBody(Buffer.from(SMALL_BODY, 'latin1')).toString('latin1')).toBe('Hi there! A small keep-alive response, Farewell, and thanks for all the fish! The end.\n');
  });

  it('no replacement contains a pattern and no pattern overlaps another (so every path has one right answer)', () => {
    for (const a of HTTP_REWRITES) {
      for (const b of HTTP_REWRITES) {
        expect(a.with.includes(b.find)).toBe(false);
        if (a !== b) for (let k = 1; k < Math.min(a.find.length, b.find.length); k++) expect(a.find.endsWith(b.find.slice(0, k))).toBe(false);
      }
    }
  });
});

describe('HTTP bench: the paths', () => {
  it("tapgate's rule is a valid http agent config on the port", () => {
    const cfg = parseConfig(tapgateHttpYaml(8080), 'http-bench.yaml');
    expect(cfg.rules.length).toBe(1);
    expect(tapgateHttpYaml(8080)).toContain('agent: http');
    expect(tapgateHttpYaml(8080)).toContain('{ find: "Hello world", with: "Hi there" }');
  });

  it.skipIf(!hasNginxSub)('nginx accepts the origin and the sub_filter configs (nginx -t)', () => {
    const dir = tmp();
    try {
      const confs = {
        origin: originNginxConf(dir, '127.0.0.1:18080', dir),
        proxy: subFilterNginxConf(dir, '127.0.0.1:18081', '127.0.0.1:18080'),
      };
      expect(confs.proxy).toContain("sub_filter 'Hello world' 'Hi there';");
      expect(confs.proxy).toContain('sub_filter_once off;');
      expect(confs.proxy).toContain('proxy_http_version 1.1;');
      for (const [name, text] of Object.entries(confs)) {
        const f = join(dir, `${name}.conf`);
        writeFileSync(f, text);
        const r = spawnSync('nginx', ['-t', '-q', '-p', dir, '-c', f], { encoding: 'utf8' });
        expect(r.status, `${name}: ${r.stderr}`).toBe(0);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it.skipIf(!hasPython)("the mitmproxy addon's streaming replacement equals the whole-body rewrite, chunked at every size, never with an empty chunk", () => {
    const dir = tmp();
    try {
      writeFileSync(join(dir, 'rewrite_addon.py'), mitmAddonPy());
      const body = makeBody(BODY_LINE_BYTES * 40 + 17);
      writeFileSync(join(dir, 'body.bin'), body);
      // Every chunk size 1..100 (each boundary falls at every offset of a match), and large ones.
      const harness = `
import sys
sys.path.insert(0, ${JSON.stringify(dir)})
import rewrite_addon as a
body = open(${JSON.stringify(join(dir, 'body.bin'))}, "rb").read()
sizes = list(range(1, 101)) + [1000, 4096, 65536]
for n in sizes:
    s = a.streamer()
    out = []
    for i in range(0, len(body), n):
        out += s(body[i:i + n])
    out += s(b"")
    assert all(len(c) > 0 for c in out), n
    sys.stdout.buffer.write(b"".join(out))
    sys.stdout.buffer.write(b"\\n--\\n")
sys.stdout.buffer.write(a.apply(body))
`;
      const r = spawnSync('python3', ['-c', harness], { maxBuffer: 64 * 1024 * 1024 });
      expect(r.status, r.stderr.toString()).toBe(0);
      const parts = r.stdout.toString('latin1').split('\n--\n');
      const want = rewriteBody(body).toString('latin1');
      expect(parts.length).toBe(104);
      for (const p of parts) expect(p).toBe(want);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('HTTP bench: the mitmproxy addon on gzip', () => {
  it.skipIf(!hasPython)('its gzip stream function decodes, rewrites and codes again: one gzip stream of the rewrite, whatever the chunks', () => {
    const dir = tmp();
    try {
      writeFileSync(join(dir, 'rewrite_addon.py'), mitmAddonPy());
      const body = makeBody(BODY_LINE_BYTES * 3000 + 5);
      writeFileSync(join(dir, 'body.gz'), gzipSync(body, { level: 6 }));
      const harness = `
import gzip, sys
sys.path.insert(0, ${JSON.stringify(dir)})
import rewrite_addon as a
z = open(${JSON.stringify(join(dir, 'body.gz'))}, "rb").read()
for n in (1, 7, 1000, 65536, len(z)):
    s = a.gzip_streamer()
    out = []
    for i in range(0, len(z), n):
        out += s(z[i:i + n])
    out += s(b"")
    assert all(len(c) > 0 for c in out), n
    sys.stdout.buffer.write(gzip.decompress(b"".join(out)))
    sys.stdout.buffer.write(b"\\n--\\n")
`;
      const r = spawnSync('python3', ['-c', harness], { maxBuffer: 64 * 1024 * 1024 });
      expect(r.status, r.stderr.toString()).toBe(0);
      const parts = r.stdout.toString('latin1').split('\n--\n');
      expect(parts.length).toBe(6);
      const want = rewriteBody(body).toString('latin1');
      for (const p of parts.slice(0, 5)) expect(p === want).toBe(true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('HTTP bench: parsers', () => {
  it('wrk --latency percentiles in µs, whatever the unit', () => {
    const out = `  Latency Distribution
     50%   81.00us
     75%  103.00us
     90%  136.00us
     99%    1.34ms
  52571 requests in 3.00s, 13.04MB read
Requests/sec:  17514.70`;
    expect(parseWrkLatency(out)).toEqual({ p50Us: 81, p99Us: 1340 });
    expect(parseWrkLatency(out.replace('81.00us', '1.20s')).p50Us).toBe(1.2e6);
    expect(() => parseWrkLatency('Requests/sec: 1')).toThrow(/50%/);
  });

  it('curl -w code, size and time', () => {
    expect(parseCurlW('200 67745059 1.408282')).toEqual({ code: 200, bytes: 67745059, seconds: 1.408282 });
    expect(() => parseCurlW('')).toThrow(/curl/);
  });
});

describe('HTTP bench: what it prints', () => {
  const log = vi.spyOn(console, 'log').mockImplementation(() => {});
  const table = (rows: Array<Record<string, string | number>>) => JSON.stringify(rows);
  const base = (): HttpReport => ({
    versions: ['nginx version: nginx/1.22.1', 'Mitmproxy: 8.1.1'],
    bodyBytes: 1,
    matches: 2,
    sparseMatches: 1,
    keepAliveProbeSeconds: 10,
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
  });
  const printed = () => log.mock.calls.map((c) => String(c[0])).join('\n');
  afterEach(() => {
    log.mockClear();
    process.exitCode = undefined;
  });

  it('a missing program: one line saying the section was skipped and why, no goals', () => {
    const goals = printHttp({ ...base(), skipped: 'needs mitmdump (Debian: apt-get install mitmproxy)' }, table);
    expect(goals).toEqual([]);
    expect(printed()).toMatch(/SKIPPED — needs mitmdump \(Debian: apt-get install mitmproxy\)/);
    expect(process.exitCode).toBeUndefined();
  });

  it('different bodies: FAILED loudly, a failing exit code, no figures', () => {
    const goals = printHttp({ ...base(), failed: 'nginx sub_filter (reverse proxy): 50 MiB body sha256 …' }, table);
    expect(printed()).toMatch(/!!! HTTP rewriting section FAILED/);
    expect(goals.join('\n')).toMatch(/FAILED/);
    expect(process.exitCode).toBe(1);
  });

  it('goal lines from the same run: 3× mitmproxy, ≥ nginx sub_filter, and a stalled keep-alive download', () => {
    const row = (name: string, value: number) => ({ name, value, runs: [value] });
    const rep = base();
    rep.throughput = [row(HTTP_PATH_NAMES.tapgate, 90), row(HTTP_PATH_NAMES.mitmproxy, 30), row(HTTP_PATH_NAMES.nginx, 100)];
    rep.verify = [{ path: HTTP_PATH_NAMES.tapgate, bigOk: true, sparseOk: true, smallOk: true, gzipOk: true, bigSha: 'ab', keepAliveSeconds: undefined }];
    const goals = printHttp(rep, table);
    expect(goals[0]).toMatch(/≥ 3× mitmproxy's: tapgate 90\.0 vs mitmproxy 30\.0 MB\/s \(×3\.00\) — HOLDS/);
    expect(goals[1]).toMatch(/≥ nginx sub_filter's: tapgate 90\.0 vs nginx 100\.0 MB\/s \(×0\.90\) — MISSED/);
    expect(goals[2]).toMatch(/keep-alive.*BROKEN/);
    expect(printed()).toMatch(/NOT COMPLETE after 10 s/);
  });

  it('the second download through the same process (warm): its own table and goal lines, its own CPU rows', () => {
    const row = (name: string, value: number) => ({ name, value, runs: [value] });
    const rep = base();
    rep.bodyBytes = 100e6;
    rep.throughput = [row(HTTP_PATH_NAMES.tapgate, 50), row(HTTP_PATH_NAMES.mitmproxy, 40), row(HTTP_PATH_NAMES.nginx, 60)];
    rep.warmThroughput = [row(HTTP_PATH_NAMES.tapgate, 130), row(HTTP_PATH_NAMES.mitmproxy, 40), row(HTTP_PATH_NAMES.nginx, 60)];
    rep.warmCpuSeconds = [row(HTTP_PATH_NAMES.tapgate, 0.5), row(HTTP_PATH_NAMES.mitmproxy, 1), row(HTTP_PATH_NAMES.nginx, 1)];
    const goals = printHttp(rep, table);
    expect(goals[0]).toMatch(/3× mitmproxy's: tapgate 50\.0 vs mitmproxy 40\.0 MB\/s \(×1\.25\) — MISSED/);
    expect(goals[2]).toMatch(/3× mitmproxy's, warm \(the second download\): tapgate 130\.0 vs mitmproxy 40\.0 MB\/s \(×3\.25; per CPU second 200 vs 100 MB, ×2\.00\) — HOLDS/);
    expect(goals[3]).toMatch(/nginx sub_filter's, warm: tapgate 130\.0 vs nginx 60\.0 .* — HOLDS/);
    expect(printed()).toMatch(/the same 50 MiB again right after, through the same process/);
  });

  it('the gzip download: its own table with ratios against mitmproxy and nginx, no goal line', () => {
    const row = (name: string, value: number) => ({ name, value, runs: [value] });
    const rep = base();
    rep.bodyBytes = 100e6;
    rep.gzipThroughput = [row(HTTP_PATH_NAMES.tapgate, 60), row(HTTP_PATH_NAMES.mitmproxy, 20), row(HTTP_PATH_NAMES.nginx, 120)];
    rep.gzipCpuSeconds = [row(HTTP_PATH_NAMES.tapgate, 2), row(HTTP_PATH_NAMES.mitmproxy, 4), row(HTTP_PATH_NAMES.nginx, 1)];
    expect(printHttp(rep, table)).toEqual([]);
    const out = printed();
    expect(out).toMatch(/asked for gzip \(curl --compressed/);
    const rows = JSON.parse(out.split('\n').find((l) => l.startsWith('[') && l.includes('"MB/s":60'))!) as Array<Record<string, number>>;
    expect(rows[0]).toMatchObject({ 'MB/s': 60, 'gw CPU s': 2, 'MB per gw CPU s': 50, 'vs mitmproxy': 3, 'vs nginx sub_filter': 0.5 });
  });

  it('the nginx and mitmproxy paths are set up for the gzip download', () => {
    expect(subFilterNginxConf('/d', '127.0.0.1:1', '127.0.0.1:2')).toMatch(/gzip on;[\s\S]*proxy_set_header Accept-Encoding "";|proxy_set_header Accept-Encoding "";[\s\S]*gzip on;/);
    expect(originNginxConf('/d', '127.0.0.1:1', '/w')).toMatch(/location \/gz\/ \{ alias \/w\/; gzip on;/);
    expect(mitmAddonPy()).toMatch(/if coded == "gzip":\n\s+flow\.response\.stream = gzip_streamer\(\)/);
    expect(tapgateHttpYaml(8080)).toMatch(/decode: true/);
  });
});
