/**
 * The minimal Node.js TAP forwarder baseline of `npm run bench` (issue 7): our TAP addon and
 * nothing else. Every frame read from one TAP is written to the other unchanged, with the live
 * gateway's I/O structure (src/engine/live.ts): one writeBatch per batch, and the answer to a
 * write read at once with readNow. No parsing, no tracking, no rules: what any Node.js program
 * on this addon pays per frame (waking the event loop, entering JS, a view per frame), so
 * tapgate's figures against it are the gateway's own cost, and its figures against the C
 * forwarder the runtime's.
 *
 *   node dist/bench/nodefwd.js TAP_A TAP_B [--vnet]
 */
import { fileURLToPath } from 'node:url';
import { TapDevice, type FrameBatch } from '../phy/tap.js';

/** Most batches one callback handles back to back (as LiveGateway's CHAIN_MAX). */
const CHAIN_MAX = 16;

export function startNodeForwarder(a: string, b: string, vnetHdr: boolean): [TapDevice, TapDevice] {
  const devs = [TapDevice.open(a, { vnetHdr }), TapDevice.open(b, { vnetHdr })] as const;
  const q: Uint8Array[] = [];
  const forward = (to: TapDevice, batch: FrameBatch): number => {
    const buf = batch.buf;
    for (let i = 0; i < batch.count; i++) q.push(new Uint8Array(buf.buffer, buf.byteOffset + batch.offset(i), batch.length(i)));
    const n = to.writeBatch(q);
    q.length = 0;
    return n;
  };
  devs.forEach((dev, side) => {
    dev.on('error', (e) => {
      process.stderr.write(`nodefwd: ${e.message}\n`);
      process.exit(2);
    });
    dev.onFrames((first) => {
      let s = side;
      let batch = first;
      for (let i = 1; ; i++) {
        const to = devs[1 - s]!;
        if (forward(to, batch) === 0 || i >= CHAIN_MAX || to.readNow() === 0) return;
        s = 1 - s;
        batch = to.batch;
      }
    });
  });
  return [devs[0], devs[1]];
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [a, b] = process.argv.slice(2);
  if (a === undefined || b === undefined) {
    process.stderr.write('usage: nodefwd TAP_A TAP_B [--vnet]\n');
    process.exit(1);
  }
  startNodeForwarder(a, b, process.argv.includes('--vnet'));
  process.on('SIGTERM', () => process.exit(0));
}
