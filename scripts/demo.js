#!/usr/bin/env node
/**
 * `npm run demo` (as root, after `npm ci`): builds the lab, runs the gateway in it with
 * examples/demo.yaml (the http agent), serves two generated files with python3's http.server
 * speaking HTTP/1.1 (keep-alive) in the server namespace, fetches both over ONE connection with
 * curl from the client namespace THROUGH the gateway, and shows what the gateway rewrote ("apple"
 * → "fig", shorter; "cherry" → "blueberry-pie", longer) and how it kept the responses framed:
 * the small one's Content-Length fixed, the large one re-chunked. No --ignore-content-length.
 * The lab is removed at the end, on error and on Ctrl-C.
 */
import { createHash } from 'node:crypto';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gatewayArgv } from '../dist/lab/gateway-argv.js';
import { labDown, labExec, labPreflight, labSpawn, labStateDir, labUp } from '../dist/lab/lab.js';

const PREFIX = 'tgdemo';
const REPO = fileURLToPath(new URL('..', import.meta.url));
const CONFIG = join(REPO, 'examples/demo.yaml');
const SERVER = '10.200.0.2';
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const sha = (b) => createHash('sha256').update(b).digest('hex');
const bold = (s) => (process.stdout.isTTY ? `\x1b[1m${s}\x1b[0m` : s);

let dir = '';
let cleaning = false;
async function cleanup() {
  if (cleaning) return;
  cleaning = true;
  await labDown(PREFIX).catch((e) => process.stderr.write(`lab down failed: ${e.message}\n`));
  if (dir) rmSync(dir, { recursive: true, force: true });
}
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    process.stderr.write(`\n${sig}: removing the lab...\n`);
    void cleanup().then(() => process.exit(130));
  });
}

/**
 * HTTP/1.1 (keep-alive) file server: `python3 -m http.server --protocol` needs python ≥ 3.11, this
 * runs on any python3 the lab supports. Its writes are buffered (64 KiB, flushed after each
 * response), so a small response leaves in one write, header and body together, as most servers
 * send it: the agent then fixes its Content-Length. (Unbuffered, http.server writes the header and
 * then the body; the agent streams such a body as chunked rather than hold it.)
 */
const SERVE = `
import http.server, sys
class H(http.server.SimpleHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    wbufsize = 65536
    def __init__(self, *a, **k):
        super().__init__(*a, directory=sys.argv[3], **k)
http.server.ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), H).serve_forever()
`;

function page(rows) {
  const fruits = ['apple', 'cherry', 'banana', 'kiwi', 'plum'];
  const lines = ['<!doctype html>', '<html><head><title>fruit list: apple and cherry</title></head><body>', '<pre>'];
  let seed = 7;
  const rnd = () => ((seed = (seed * 16807) % 2147483647) / 2147483647);
  for (let i = 0; i < rows; i++) {
    const words = Array.from({ length: 10 }, () => fruits[Math.floor(rnd() * fruits.length)]);
    lines.push(`${String(i).padStart(5, '0')} ${words.join(' ')}`);
  }
  lines.push('</pre></body></html>', '');
  return lines.join('\n');
}

async function gatewayStats() {
  const stateDir = labStateDir(PREFIX);
  const { pid } = JSON.parse(readFileSync(join(stateDir, 'gateway.pid'), 'utf8'));
  const log = join(stateDir, 'gateway.log');
  const before = readFileSync(log, 'utf8').length;
  process.kill(pid, 'SIGUSR1');
  for (let i = 0; i < 100; i++) {
    await sleep(50);
    const line = readFileSync(log, 'utf8').slice(before).split('\n').find((l) => l.startsWith('{"uptimeS"'));
    if (line) return JSON.parse(line);
  }
  return undefined;
}

/** curl's -D file: the header lines of each response (in order). */
function headerBlocks(text) {
  return text.split(/\r\n\r\n/).filter((b) => b.startsWith('HTTP/')).map((b) => b.split('\r\n'));
}

async function main() {
  const problems = labPreflight();
  if (problems.length > 0) throw new Error(`the demo cannot run here: ${problems.join('; ')}`);
  await labDown(PREFIX); // leftovers of an interrupted run
  dir = mkdtempSync(join(tmpdir(), 'tapgate-demo-'));
  chmodSync(dir, 0o755);
  const files = [
    { name: 'fruit.html', text: page(20000) }, // 1.3 MB: larger than the agent holds, re-chunked
    { name: 'notes.html', text: page(40) }, // 2.7 KB: held whole, Content-Length fixed
  ];
  for (const f of files) writeFileSync(join(dir, f.name), f.text);
  const rewrite = (t) => t.split('apple').join('fig').split('cherry').join('blueberry-pie');

  console.log(bold('1. lab up') + ` (namespaces ${PREFIX}-client/-server/-gw; gateway with ${CONFIG})`);
  const info = await labUp({ prefix: PREFIX, gatewayCommand: gatewayArgv({ config: CONFIG, vnetHdr: true }), cwd: REPO });
  console.log(`   client ${info.clientIp} ⇄ tap-c ⇄ tapgate (pid ${info.gatewayPid}, TAP GSO on) ⇄ tap-s ⇄ server ${info.serverIp}`);

  console.log(bold('2. python3 http.server, HTTP/1.1 keep-alive, port 8000') + ` in ${PREFIX}-server, serving ${dir}`);
  labSpawn(PREFIX, 'server', 'http', ['python3', '-c', SERVE, SERVER, '8000', dir]);
  // Wait for the server locally (inside its namespace), so no connection attempt through the
  // gateway is refused (that would show up as a RST in the statistics).
  for (let i = 0; i < 50; i++) {
    const l = await labExec(PREFIX, 'server', ['curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', `http://${SERVER}:8000/notes.html`]);
    if (l.stdout === '200') break;
    await sleep(100);
  }
  const urls = files.map((f) => `http://${SERVER}:8000/${f.name}`);
  const got = files.map((f) => join(dir, `received-${f.name}`));
  const hdr = join(dir, 'headers');
  let r;
  for (let i = 0; i < 10; i++) {
    r = await labExec(PREFIX, 'client', ['curl', '-sS', '--max-time', '20', '-D', hdr, '-w', '%{http_code} %{num_connects}\n', '-o', got[0], urls[0], '-o', got[1], urls[1]]);
    if (r.code === 0) break;
    await sleep(200);
  }
  if (r?.code !== 0) throw new Error(`curl through the gateway failed: ${r?.stderr}`);
  console.log(bold('3. curl') + ` ${urls.join(' ')} from ${PREFIX}-client, through the gateway`);
  const transfers = r.stdout.trim().split('\n').map((l) => l.split(' '));
  const heads = headerBlocks(readFileSync(hdr, 'latin1'));
  const field = (h, name) => h.find((l) => l.toLowerCase().startsWith(`${name.toLowerCase()}:`)) ?? `(no ${name})`;
  files.forEach((f, i) => {
    const [status, connects] = transfers[i] ?? [];
    const h = heads[i] ?? [];
    const framing = h.some((l) => /^transfer-encoding:\s*chunked/i.test(l)) ? `re-chunked (the server sent Content-Length: ${f.text.length})` : `${field(h, 'Content-Length')} (the server sent ${f.text.length})`;
    console.log(`   ${f.name.padEnd(11)} ${status}  ${(connects === '1' ? 'new connection' : 'same connection').padEnd(15)}  ${framing}; ${field(h, 'X-Rewritten-By')}; ${field(h, 'Server')}`);
  });

  const original = files[0].text;
  const received = readFileSync(got[0], 'utf8');
  const o = original.split('\n');
  const g = received.split('\n');
  console.log('');
  console.log(bold('   fruit.html: original (server)').padEnd(70) + bold('received (client)'));
  for (let i = 1; i < 9; i++) console.log(`   ${(o[i] ?? '').slice(0, 62).padEnd(64)}${(g[i] ?? '').slice(0, 90)}`);
  console.log('');
  const count = (s, w) => s.split(w).length - 1;
  console.log(`   size    ${String(original.length).padStart(9)} bytes  →  ${received.length} bytes`);
  console.log(`   sha256  ${sha(original).slice(0, 16)}…  →  ${sha(received).slice(0, 16)}…`);
  console.log(`   "apple" ${count(original, 'apple')} → ${count(received, 'apple')}, "fig" ${count(original, 'fig')} → ${count(received, 'fig')}; ` +
    `"cherry" ${count(original, 'cherry')} → ${count(received, 'cherry')}, "blueberry-pie" ${count(original, 'blueberry-pie')} → ${count(received, 'blueberry-pie')}`);
  const exact = files.map((f, i) => readFileSync(got[i], 'utf8') === rewrite(f.text));
  console.log(`   both files == original with both replacements applied: ${exact.every(Boolean) ? 'yes' : 'NO'}; one connection: ${transfers.map((t) => t[1]).join('') === '10' ? 'yes' : 'NO'}`);

  const st = await gatewayStats();
  if (st) {
    const gw = st.gateway;
    console.log('');
    console.log(bold('4. gateway statistics'));
    for (const [k, v] of Object.entries({
      'frames in/out': `${gw.framesIn}/${gw.framesOut}`,
      'bytes in/out': `${gw.bytesIn}/${gw.bytesOut}`,
      'TCP frames': gw.tcp,
      'other frames (ARP, ...)': gw.nonTcp,
      'GSO frames in/out': `${gw.gsoIn}/${gw.gsoOut}`,
      'frames rebuilt (payload changed)': gw.rebuilt,
      'frames with headers rewritten': gw.headerRewrites,
      'connections rewritten': gw.connectionsRewritten,
      'rewrite commands': st.stream.commands,
      'ACKs translated': st.stream.acksTranslated,
      'RSTs seen': gw.rstIn,
      malformed: Object.keys(gw.malformed).length ? JSON.stringify(gw.malformed) : 0,
    })) console.log(`   ${k.padEnd(34)} ${v}`);
  }
  if (!exact.every(Boolean)) throw new Error('a received file is not the expected rewrite');
}

let code = 0;
try {
  await main();
} catch (e) {
  process.stderr.write(`demo failed: ${e.message}\n`);
  code = 1;
} finally {
  console.log('');
  console.log(bold('5. lab down'));
  await cleanup();
}
process.exit(code);
