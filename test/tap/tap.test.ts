/**
 * The TAP addon against the real kernel. Each scenario runs test/tap/fixtures/tap-probe.ts in a
 * fresh network namespace (`unshare -n`): nothing it creates can outlive it.
 */
import { spawnSync } from 'node:child_process';
import { statSync } from 'node:fs';
import { expect, it } from 'vitest';
import { describeE2E, e2eProblems, ensureTestUser, runFixture, SAFE_PATH } from '../lab/e2e-env.js';

const PROBE = 'test/tap/fixtures/tap-probe.ts';

interface Stats {
  rxFrames: number;
  rxBatches: number;
  txFrames: number;
  txDrops: number;
  rxErrors: number;
  lastTxError?: string;
  txThreadFrames: number;
}
interface Err {
  code: string;
  message: string;
}

function probe(scenario: string, vnet: boolean, wrapper: string[] = ['unshare', '-n'], more: string[] = [], timeoutMs?: number): Record<string, unknown> {
  const r = runFixture(wrapper, PROBE, [scenario, ...(vnet ? ['--vnet'] : []), ...more], {}, timeoutMs);
  if (r.json === undefined || typeof r.json !== 'object') {
    throw new Error(`tap-probe ${scenario} printed no result (exit ${r.code}):\n${r.stdout}\n${r.stderr}`);
  }
  return r.json as Record<string, unknown>;
}

describeE2E('TAP device', e2eProblems(['ip', 'unshare', 'runuser', 'useradd']), () => {
  for (const vnet of [false, true]) {
    const mode = vnet ? 'with vnet hdr' : 'without vnet hdr';

    it(`${mode}: a written ARP request is answered by the kernel, and a kernel ARP request is read`, () => {
      const r = probe('roundtrip', vnet);
      expect(r['timeout']).toBeUndefined();
      expect(r['arpReply']).toBe(true);
      expect(r['arpRequestFor']).toBe('10.9.0.3');
      expect(r['vnetHdrLen']).toBe(vnet ? 10 : 0);
      // A plain frame from the kernel carries an all-zero virtio header (no GSO, no csum).
      expect(r['hdr']).toBe(vnet ? '00'.repeat(10) : '');
      expect(r['len']).toBe(42 + (vnet ? 10 : 0));
      const st = r['stats'] as Stats;
      expect(st.txFrames).toBe(1);
      expect(st.rxFrames).toBeGreaterThanOrEqual(2);
    });

    it(`${mode}: frames queued in the kernel come in batches of at most 64, in order, one call each`, () => {
      const r = probe('batch', vnet);
      expect(r['timeout']).toBeUndefined();
      const batches = r['batches'] as number[];
      expect(Math.max(...batches)).toBe(64);
      expect(batches.reduce((a, b) => a + b, 0)).toBeGreaterThanOrEqual(150);
      expect(r['seqs']).toEqual(Array.from({ length: 150 }, (_, i) => i));
      const st = r['stats'] as Stats;
      expect(st.rxBatches).toBe(batches.length);
      // With TUN_F_CSUM the stack leaves UDP checksums partial: NEEDS_CSUM on every datagram.
      expect(r['csumFlags']).toBe(vnet ? 150 : 0);
    });

    it(`${mode}: frames the kernel drops because the queue is full are counted (queueDrops, from sysfs)`, () => {
      // sysfs shows a namespace's devices when mounted in it: a mount namespace of its own.
      const r = probe('overflow', vnet, ['unshare', '-n', '-m', '--propagation', 'private', 'sh', '-c', 'mount -t sysfs sysfs /sys && exec "$0" "$@"']);
      expect(r['timeout']).toBeUndefined();
      expect(r['before']).toBe(0);
      const st = r['stats'] as Stats & { queueDrops: number };
      expect(st.queueDrops).toBeGreaterThan(0);
      expect((r['got'] as number) + st.queueDrops).toBeGreaterThanOrEqual(1500);
    });

    it(`${mode}: readNow reads what is queued at once (the answer to a write), 0 when nothing is, 0 after close`, () => {
      const r = probe('readnow', vnet);
      expect(r['before']).toBe(0);
      expect(r['wrote']).toBe(true);
      expect(r['n']).toBeGreaterThanOrEqual(1);
      expect(r['count']).toBe(r['n']);
      expect(r['arpReply']).toBe(true);
      expect(r['after']).toBe(0);
      expect(r['closed']).toBe(0);
    });

    it(`${mode}: with the transmit thread, frames reach the kernel in the order handed over; close writes what it holds`, () => {
      const r = probe('txthread', vnet);
      expect(r['timeout']).toBeUndefined();
      expect(r['got']).toEqual(Array.from({ length: r['total'] as number }, (_, i) => i));
      const st = r['before'] as Stats;
      expect(st.txDrops).toBe(0);
      // The large batches went through the thread (and possibly what queued behind them).
      expect(st.txThreadFrames).toBeGreaterThanOrEqual(12 * 60);
      // Without it: the same order, every frame written in the caller's thread.
      const sync = probe('txthread', vnet, ['unshare', '-n'], ['--sync']);
      expect(sync['got']).toEqual(Array.from({ length: sync['total'] as number }, (_, i) => i));
      expect((sync['before'] as Stats).txThreadFrames).toBe(0);
      expect((sync['before'] as Stats).txFrames).toBe(sync['total']);
    });

    it(`${mode}: bulk mode: within 20 ms of a large batch a small one goes to the transmit thread too; before and well after, it is written at once`, () => {
      const r = probe('bulkmode', vnet);
      expect(r['timeout']).toBeUndefined();
      expect(r['smallFirst']).toBe(0);
      expect(r['afterLarge']).toBe(60);
      expect(r['smallInBulk']).toBe(65);
      expect(r['smallLater']).toBe(65);
      expect((r['stats'] as Stats).txFrames).toBe(75);
    });

    it(`${mode}: the transmit thread: a batch larger than its ring handed to it asleep is all written; a frame no TAP takes is a counted drop, a batch re-entered from a getter refused; its counts outlive close`, () => {
      const r = probe('txbig', vnet, ['unshare', '-n'], [], 20_000);
      expect(r['timeout']).toBeUndefined();
      expect(r['handed']).toBe(4000);
      const st = r['stats'] as Stats;
      expect(st.txFrames + st.txDrops).toBe(r['total']);
      expect(st.txThreadFrames).toBe(r['total']);
      // A frame no TAP takes (2 MiB, more than the ring): a counted drop, not a hang.
      expect(r['huge']).toBe(0);
      const hs = r['hugeStats'] as Stats;
      expect(hs.txDrops).toBe(st.txDrops + 1);
      expect(hs.lastTxError).toBe('EMSGSIZE');
      expect(r['reentry']).toMatch(/called again/);
      // Closed: the thread's counts stay (60 more frames written at close), never go back.
      const closed = r['closed'] as Stats;
      expect(closed.txFrames + closed.txDrops).toBe((r['total'] as number) + 60 + 1);
      expect(closed.txThreadFrames).toBe((r['total'] as number) + 60);
    });

    it(`${mode}: frames read from a TAP go out through another's transmit thread from the buffer they came in, never read over before they are written`, () => {
      const r = probe('txdirect', vnet);
      expect(r['timeout']).toBeUndefined();
      expect(r['forwarded']).toBe(r['sent']);
      // Every datagram arrives once, byte for byte (a buffer read over too soon: some twice, some never).
      expect(r['bad']).toBe(0);
      expect(r['dups']).toBe(0);
      expect(r['got']).toBe(r['sent']);
      const st = r['stats'] as Stats & { txThreadDirectFrames: number };
      expect(st.txThreadDirectFrames).toBe(r['sent']);
    });

    it(`${mode}: frames the kernel refuses are dropped and counted, not thrown`, () => {
      const r = probe('baddrop', vnet);
      expect(r['tooShort']).toBe(false);
      expect(r['batchWritten']).toBe(2);
      const st = r['stats'] as Stats;
      expect(st.txDrops).toBe(2);
      expect(st.txFrames).toBe(2);
      expect(st.lastTxError).toBe('EINVAL');
    });

    it(`${mode}: a name held by a non-TAP device or an attached TAP is TAP_BUSY`, () => {
      const r = probe('busy', vnet);
      expect((r['lo'] as Err).code).toBe('TAP_BUSY');
      expect((r['twice'] as Err).code).toBe('TAP_BUSY');
      expect((r['twice'] as Err).message).toContain('EBUSY');
      expect((r['bridge'] as Err).code).toBe('TAP_BUSY');
      expect((r['longName'] as Err).code).toBe('TAP_NAME');
      expect((r['afterClose'] as Err).code).toBe('TAP_CLOSED');
    });

    it(`${mode}: deleting the interface under an open device raises an 'error' event (TAP_GONE), no crash`, () => {
      const r = probe('gone', vnet);
      expect(r['timeout']).toBeUndefined();
      expect((r['error'] as Err).code).toBe('TAP_GONE');
      expect((r['error'] as Err).message).toMatch(/EBADFD|ENODEV|EIO/);
      expect(r['alive']).toBe(true);
      expect((r['stats'] as Stats).rxErrors).toBe(1);
    });
  }

  it('an ordinary user without a user namespace gets TAP_PERM naming CAP_NET_ADMIN', () => {
    ensureTestUser();
    const r = probe('open', false, ['runuser', '-u', 'tgtest', '--', 'env', `PATH=${SAFE_PATH}`, 'HOME=/home/tgtest']);
    const e = r['error'] as Err;
    expect(e.code).toBe('TAP_PERM');
    expect(e.message).toContain('needs CAP_NET_ADMIN: run as root or inside `unshare -r -n`');
    // Either open(/dev/net/tun) (mode 0600) or TUNSETIFF (mode 0666) refused it.
    const mode = statSync('/dev/net/tun').mode & 0o777;
    expect(e.message).toContain((mode & 0o006) === 0o006 ? 'EPERM' : 'EACCES');
  });

  it('without /dev/net/tun the error is TAP_NO_TUN', () => {
    // A private mount namespace with an empty tmpfs over /dev/net.
    const ok = spawnSync('unshare', ['-m', 'true']).status === 0;
    expect(ok).toBe(true);
    const r = runFixture(
      ['unshare', '-m', '-n', 'sh', '-c', 'mount -t tmpfs tgnotun /dev/net && exec "$@"', 'sh'],
      PROBE,
      ['open'],
    );
    const e = (r.json as { error?: Err } | undefined)?.error;
    expect(e?.code, r.stderr).toBe('TAP_NO_TUN');
    expect(e?.message).toContain('/dev/net/tun');
  });
});
