/**
 * The lab end to end, as root: namespaces, bridges, persistent TAPs, a pure-JS forwarder as the
 * "gateway" (test/lab/fixtures/forwarder.ts), ping and HTTP through it, TSO frames with a vnet
 * header, and a labDown that leaves nothing behind — also after a "crash".
 */
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { labDown, labExec, labKill, labPing, labSpawn, labStatus, labUp } from '../../src/lab/lab.js';
import { LAB_IFACES } from '../../src/lab/names.js';
import { attachedQueues } from '../../src/lab/sys.js';
import { describeE2E, e2eProblems } from './e2e-env.js';

const P = 'tgl';
const NS = [`${P}-client`, `${P}-server`, `${P}-gw`];

interface FwdStats {
  maxFrame: number;
  gsoFrames: number;
  needsCsum: number;
  checkedCsum: number;
  badCsum: number;
  c: { rxFrames: number; txDrops: number };
  s: { rxFrames: number; txDrops: number };
}

function netnsList(): string[] {
  return spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout.split('\n').map((l) => l.split(' ')[0]!).filter(Boolean);
}

async function until<T>(what: string, f: () => Promise<T | undefined> | T | undefined, ms = 10_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describeE2E('lab', e2eProblems(['ip', 'unshare', 'python3', 'curl']), () => {
  let dir = '';
  let big: Buffer;
  const statsFile = (): string => join(dir, 'fwd.json');
  const gateway = (vnet: boolean): string[] => [
    process.execPath, '--import', 'tsx', 'test/lab/fixtures/forwarder.ts', ...(vnet ? ['--vnet'] : []), '--stats', statsFile(),
  ];
  const readStats = (): FwdStats => JSON.parse(readFileSync(statsFile(), 'utf8')) as FwdStats;

  /** curl a file from the server namespace's http.server into dir, return its bytes. */
  async function fetchFile(name: string): Promise<Buffer> {
    const out = join(dir, `got-${name}`);
    rmSync(out, { force: true });
    const r = await labExec(P, 'client', ['curl', '-sS', '--max-time', '20', '-o', out, '-w', '%{http_code}', `http://10.200.0.2:8080/${name}`]);
    expect(r.stdout, r.stderr).toBe('200');
    return readFileSync(out);
  }

  beforeAll(async () => {
    await labDown(P); // whatever an earlier, interrupted run left
    dir = mkdtempSync(join(tmpdir(), 'tapgate-lab-'));
    chmodSync(dir, 0o755);
    big = randomBytes(1 << 20);
    writeFileSync(join(dir, 'big.bin'), big);
    writeFileSync(join(dir, 'hello.txt'), 'Hello world\n');
  });

  afterAll(async () => {
    await labDown(P);
    rmSync(dir, { recursive: true, force: true });
  });

  it('labUp twice is harmless: same namespaces, links, addresses', async () => {
    const a = await labUp({ prefix: P });
    // name + MAC of every link (operstate may still be settling: a bridge gets carrier late).
    const links = async (): Promise<string> =>
      (await labExec(P, 'gw', ['ip', '-br', 'link'])).stdout.split('\n').map((l) => l.split(/\s+/).filter((_, i) => i !== 1 && i !== 3).join(' ')).join('\n');
    const links1 = await links();
    const raw1 = (await labExec(P, 'gw', ['ip', '-br', 'link'])).stdout;
    const addr1 = (await labExec(P, 'client', ['ip', '-br', 'addr'])).stdout;
    const b = await labUp({ prefix: P });
    expect(b.namespaces).toEqual(a.namespaces);
    expect(await links()).toBe(links1);
    expect(links1.split('\n').map((l) => l.split(' ')[0]).sort().join(' ')).toBe(' br-c br-s lo tap-c tap-s vc@if2 vs@if2');
    expect((await labExec(P, 'client', ['ip', '-br', 'addr'])).stdout).toBe(addr1);
    expect(addr1).toContain('10.200.0.1/24');
    const st = labStatus(P);
    expect(st.up).toBe(true);
    // Persistent TAPs exist, but nobody is attached yet: no carrier, nothing passes.
    expect(st.taps['tap-c']).toEqual({ exists: true, attached: false });
    expect(st.taps['tap-s']).toEqual({ exists: true, attached: false });
    expect(raw1).toMatch(/tap-c\s.*NO-CARRIER/);
    const ping = await labPing(P, 'client', '10.200.0.2', { count: 1, timeoutMs: 300 });
    expect(ping.received).toBe(0);
  });

  it('with a vnet-hdr forwarder: ping, curl, and TSO super-frames > 1514 bytes for a 1 MB file', async () => {
    const info = await labUp({ prefix: P, gatewayCommand: gateway(true) });
    expect(info.gatewayPid).toBeGreaterThan(0);
    const st = labStatus(P);
    expect(st.taps['tap-c'].attached && st.taps['tap-s'].attached).toBe(true);
    const ping = await labPing(P, 'client', '10.200.0.2', { count: 3 });
    expect(ping.received).toBe(3);

    labSpawn(P, 'server', 'http', ['python3', '-m', 'http.server', '8080', '--bind', '10.200.0.2', '--directory', dir]);
    await until('http.server', async () => {
      const r = await labExec(P, 'client', ['curl', '-s', '-o', '/dev/null', '--max-time', '2', 'http://10.200.0.2:8080/hello.txt']);
      return r.code === 0 ? true : undefined;
    });
    expect((await fetchFile('hello.txt')).toString()).toBe('Hello world\n');
    expect((await fetchFile('big.bin')).equals(big)).toBe(true);

    await new Promise((r) => setTimeout(r, 250)); // the forwarder dumps stats every 100 ms
    const s = readStats();
    // The server's veth does TSO; the TAP (TUN_F_TSO4) takes the GSO skb whole.
    expect(s.maxFrame).toBeGreaterThan(1514);
    expect(s.maxFrame).toBeLessThanOrEqual(65535 + 14);
    expect(s.gsoFrames).toBeGreaterThan(0);
    expect(s.needsCsum).toBeGreaterThan(0);
    expect(s.badCsum).toBe(0);
    expect(s.c.txDrops + s.s.txDrops).toBe(0);
    await labKill(P, 'gateway');
  });

  it('without vnet hdr (after a vnet run on the same persistent TAPs): frames ≤ 1514, full checksums', async () => {
    rmSync(statsFile(), { force: true });
    const info = await labUp({ prefix: P, gatewayCommand: gateway(false) });
    expect(info.gatewayPid).toBeGreaterThan(0);
    expect((await labPing(P, 'client', '10.200.0.2', { count: 3 })).received).toBe(3);
    expect((await fetchFile('big.bin')).equals(big)).toBe(true);
    await new Promise((r) => setTimeout(r, 250));
    const s = readStats();
    // The kernel segments and checksums for a TAP without offloads, even with the endpoints'
    // TSO/tx-csum on — and the addon turned off the offloads the previous attach left on.
    expect(s.maxFrame).toBeLessThanOrEqual(1514);
    expect(s.gsoFrames).toBe(0);
    expect(s.checkedCsum).toBeGreaterThan(700);
    expect(s.badCsum).toBe(0);
  });

  it('labUp does not start a second gateway while one runs', async () => {
    const before = labStatus(P).processes.find((p) => p.name === 'gateway');
    expect(before?.alive).toBe(true);
    const again = await labUp({ prefix: P, gatewayCommand: gateway(false) });
    expect(again.gatewayPid).toBe(before?.pid);
  });

  it('labDown leaves nothing: namespaces, links, processes, state', async () => {
    const st = labStatus(P);
    const pids = st.processes.map((p) => p.pid);
    expect(pids.length).toBeGreaterThanOrEqual(2); // gateway + http
    await labDown(P);
    expect(netnsList().filter((n) => NS.includes(n))).toEqual([]);
    for (const pid of pids) expect(existsSync(`/proc/${pid}`)).toBe(false);
    expect(existsSync(st.stateDir)).toBe(false);
    const rootLinks = spawnSync('ip', ['-br', 'link'], { encoding: 'utf8' }).stdout;
    expect(rootLinks).not.toMatch(/^(tap-c|tap-s|br-c|br-s|vc|vs)[\s@]/m);
    await labDown(P); // and again: harmless
    expect(labStatus(P).up).toBe(false);
  });

  it('labDown works after a crash: stray processes in the namespaces, state dir lost', async () => {
    const info = await labUp({ prefix: P, gatewayCommand: gateway(false) });
    // A process the lab does not know about (no pid file), as a crashed test would leave.
    const stray = spawn('ip', ['netns', 'exec', `${P}-server`, 'sleep', '600'], { detached: true, stdio: 'ignore' });
    stray.unref();
    await until('stray process', () => (existsSync(`/proc/${stray.pid}`) ? true : undefined));
    rmSync(info.stateDir, { recursive: true, force: true }); // the memory of labUp is gone
    await labDown(P);
    expect(netnsList().filter((n) => NS.includes(n))).toEqual([]);
    await until('stray process to end', () => (existsSync(`/proc/${stray.pid}`) ? undefined : true), 5000);
    await until('gateway to end', () => (existsSync(`/proc/${info.gatewayPid}`) ? undefined : true), 5000);
  });

  it('with queues: 2, labUp returns once both queues of each TAP are attached, not when carrier comes with the first', async () => {
    // A "gateway" that attaches queue 0 of both TAPs, and queue 1 of each 1.5 s later.
    const attach = [
      'import fcntl, os, struct, time',
      'def q(name):',
      "  fd = os.open('/dev/net/tun', os.O_RDWR)",
      "  fcntl.ioctl(fd, 0x400454ca, struct.pack('16sH', name, 0x0002 | 0x1000 | 0x0100))",
      '  return fd',
      "held = [q(b'tap-c'), q(b'tap-s')]",
      'time.sleep(1.5)',
      "held += [q(b'tap-c'), q(b'tap-s')]",
      'time.sleep(600)',
    ].join('\n');
    await labUp({ prefix: P, config: { queues: 2 }, gatewayCommand: ['python3', '-c', attach] });
    for (const t of [LAB_IFACES.tapClient, LAB_IFACES.tapServer]) expect(attachedQueues(`${P}-gw`, t), t).toBe(2);
    await labDown(P);
  });
});
