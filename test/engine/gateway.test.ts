/**
 * The gateway on real captures: pass-through is the identity; with a replace rule the released
 * frames carry exactly the rewritten stream (checked with tshark on the output), every frame
 * leaves with correct checksums, and retransmitted / out-of-order segments took the engine's
 * already-processed and delayed paths.
 */
import { isGatewayLink } from '../../src/phy/capture-fixup.js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/index.js';
import { Gateway } from '../../src/engine/gateway.js';
import { PcapWriter, readPcapAll } from '../../src/phy/pcap.js';
import { decodeFrame } from '../../src/wire/frame.js';
import { tsharkFollowTcp, tsharkStreamCount } from '../helpers/tshark.js';

const FIX = join(import.meta.dirname, '../fixtures');
const tmp = mkdtempSync(join(tmpdir(), 'tapgate-gw-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

async function runThrough(file: string, configText: string | null, verifyChecksums = true) {
  const { records, error } = await readPcapAll(join(FIX, file));
  expect(error).toBeUndefined();
  const gw = new Gateway({ config: configText ? parseConfig(configText, 'test.yaml') : null, verifyChecksums });
  const out: Array<{ data: Uint8Array; tsNs: bigint }> = [];
  let now = 0;
  for (const r of records) {
    now = Number(r.tsNs / 1000n) / 1000;
    const emit = (f: Uint8Array) => out.push({ data: f.slice(), tsNs: r.tsNs });
    gw.tick(now, emit);
    if (!isGatewayLink(r.link)) throw new Error(`fixture link ${r.link}: Ethernet or raw IP expected`);
    gw.handleFrame(r.data, 0, now, emit, r.link);
  }
  gw.tick(now + 10_000, (f) => out.push({ data: f.slice(), tsNs: 0n }));
  return { records, out, gw };
}

describe('gateway on real captures', () => {
  for (const file of ['http-small.pcap', 'http-small.pcapng', 'http-small-nano.pcap', 'http-loss.pcap', 'http-dumpcap.pcapng']) {
    it(`passes ${file} through unchanged without a config (identity)`, async () => {
      // http-dumpcap.pcapng has loopback frames captured with checksum offload (partial sums).
      const { records, out } = await runThrough(file, null, !file.includes('dumpcap'));
      expect(out.length).toBe(records.length);
      for (let i = 0; i < records.length; i++) expect(Buffer.from(out[i]!.data).equals(Buffer.from(records[i]!.data))).toBe(true);
    });
  }

  it('drops and counts frames with bad checksums when verifying (offloaded loopback capture)', async () => {
    const { records, out, gw } = await runThrough('http-dumpcap.pcapng', null, true);
    const bad = gw.stats().gateway.malformed['tcp-bad-checksum'] ?? 0;
    expect(bad).toBeGreaterThan(0);
    expect(out.length + bad).toBe(records.length);
  });

  it('rewrites the HTTP body of a lossy capture exactly, with valid checksums', async () => {
    const cfg = `
rules:
  - match: { port: 8000 }
    agent: replace
    replace:
      - { find: "quick brown fox", with: "slow red cat, much slower" }
      - { find: "lazy dog", with: "dog" }
      - { regex: "Server: [^\\\\r]*", with: "Server: tapgate", maxMatch: 200 }
`;
    const { out, gw } = await runThrough('http-loss.pcap', cfg);
    for (const o of out) {
      const d = decodeFrame(o.data, { link: 'ethernet', verifyChecksums: true });
      expect(d.kind).not.toBe('error');
    }
    const outFile = join(tmp, 'loss-out.pcap');
    const w = await PcapWriter.open(outFile, { link: 'ethernet', precision: 'nano' });
    for (const o of out) await w.write(o);
    await w.close();
    const inFile = join(FIX, 'http-loss.pcap');
    expect(await tsharkStreamCount(outFile)).toBe(await tsharkStreamCount(inFile));
    const orig = await tsharkFollowTcp(inFile, 0);
    const got = await tsharkFollowTcp(outFile, 0);
    const expected = orig.s2c
      .toString('latin1')
      .replace(/Server: [^\r]*/, 'Server: tapgate')
      .split('quick brown fox')
      .join('slow red cat, much slower')
      .split('lazy dog')
      .join('dog');
    expect(got.c2s.equals(orig.c2s)).toBe(true);
    expect(got.s2c.toString('latin1')).toBe(expected);
    const s = gw.stats().stream;
    // Over 1,600 matches; close ones travel as one command (agent/replace.ts, MERGE_GAP).
    expect(gw.stats().agents.replace.matches).toBeGreaterThan(1600);
    expect(s.commands).toBeGreaterThan(100);
    // The capture's retransmissions and out-of-order segments went through the method's paths.
    expect(s.alreadyProcessed + s.delayed).toBeGreaterThan(0);
  });
});
