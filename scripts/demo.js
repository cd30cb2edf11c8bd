#!/usr/bin/env node
/**
 * `npm run demo` (as root, after `npm ci`): builds the lab, runs the gateway in it with
 * examples/demo.yaml, serves a generated page with `python3 -m http.server 8000` in the server
 * namespace, fetches it with curl from the client namespace THROUGH the gateway, and shows what
 * the gateway rewrote ("apple" → "fig", shorter; "cherry" → "blueberry-pie", longer). The lab is
 * removed at the end, on error and on Ctrl-C.
 */
import { createHash } from 'node:crypto';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gatewayArgv } from '../dist/cli/lab.js';
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

function page() {
  const fruits = ['apple', 'cherry', 'banana', 'kiwi', 'plum'];
  const lines = ['<!doctype html>', '<html><head><title>fruit list: apple and cherry</title></head><body>', '<pre>'];
  let seed = 7;
  const rnd = () => ((seed = (seed * 16807) % 2147483647) / 2147483647);
  for (let i = 0; i < 20000; i++) {
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

async function main() {
  const problems = labPreflight();
  if (problems.length > 0) throw new Error(`the demo cannot run here: ${problems.join('; ')}`);
  await labDown(PREFIX); // leftovers of an interrupted run
  dir = mkdtempSync(join(tmpdir(), 'tapgate-demo-'));
  chmodSync(dir, 0o755);
  const original = page();
  writeFileSync(join(dir, 'fruit.html'), original);

  console.log(bold('1. lab up') + ` (namespaces ${PREFIX}-client/-server/-gw; gateway with ${CONFIG})`);
  const info = await labUp({ prefix: PREFIX, gatewayCommand: gatewayArgv({ config: CONFIG, vnetHdr: true }), cwd: REPO });
  console.log(`   client ${info.clientIp} ⇄ tap-c ⇄ tapgate (pid ${info.gatewayPid}, TAP GSO on) ⇄ tap-s ⇄ server ${info.serverIp}`);

  console.log(bold('2. python3 -m http.server 8000') + ` in ${PREFIX}-server, serving ${join(dir, 'fruit.html')}`);
  labSpawn(PREFIX, 'server', 'http', ['python3', '-m', 'http.server', '8000', '--bind', SERVER, '--directory', dir]);
  // Wait for the server locally (inside its namespace), so no connection attempt through the
  // gateway is refused (that would show up as a RST in the statistics).
  for (let i = 0; i < 50; i++) {
    const l = await labExec(PREFIX, 'server', ['curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', `http://${SERVER}:8000/`]);
    if (l.stdout === '200') break;
    await sleep(100);
  }
  const got = join(dir, 'received.html');
  let r;
  for (let i = 0; i < 50; i++) {
    // The replace agent is not HTTP-aware: Content-Length is the original's, so read to close.
    r = await labExec(PREFIX, 'client', ['curl', '-sS', '--max-time', '20', '--ignore-content-length', '-o', got, '-w', '%{http_code}', `http://${SERVER}:8000/fruit.html`]);
    if (r.stdout === '200') break;
    await sleep(200);
  }
  if (r?.stdout !== '200') throw new Error(`curl through the gateway failed: ${r?.stderr}`);
  console.log(bold('3. curl') + ` http://${SERVER}:8000/fruit.html from ${PREFIX}-client, through the gateway`);

  const received = readFileSync(got, 'utf8');
  const expected = original.split('apple').join('fig').split('cherry').join('blueberry-pie');
  const o = original.split('\n');
  const g = received.split('\n');
  console.log('');
  console.log(bold('   original (server)').padEnd(70) + bold('received (client)'));
  for (let i = 1; i < 9; i++) console.log(`   ${(o[i] ?? '').slice(0, 62).padEnd(64)}${(g[i] ?? '').slice(0, 90)}`);
  console.log('');
  const count = (s, w) => s.split(w).length - 1;
  console.log(`   size    ${String(original.length).padStart(9)} bytes  →  ${received.length} bytes`);
  console.log(`   sha256  ${sha(original).slice(0, 16)}…  →  ${sha(received).slice(0, 16)}…`);
  console.log(`   "apple" ${count(original, 'apple')} → ${count(received, 'apple')}, "fig" ${count(original, 'fig')} → ${count(received, 'fig')}; ` +
    `"cherry" ${count(original, 'cherry')} → ${count(received, 'cherry')}, "blueberry-pie" ${count(original, 'blueberry-pie')} → ${count(received, 'blueberry-pie')}`);
  console.log(`   received == original with both replacements applied: ${received === expected ? 'yes' : 'NO'}`);

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
  if (received !== expected) throw new Error('the received page is not the expected rewrite');
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
