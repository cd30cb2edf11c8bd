/**
 * FTP agent hooks backed by a NatTable (docs/ARCHITECTURE.md §6 "FTP data connections are expected and
 * translated"): how the gateway will supply `FtpHooks` once NAT runs on the bridge.
 *
 * - PORT/EPRT (the client announces where the server should connect): the client's endpoint is
 *   translated as the NAT shows it on the server's side (1:1 → the mapped address, same port;
 *   masquerade → the shared address and a newly allocated port, with an expectation that sends
 *   the server's connection back to the client's real endpoint).
 * - 227/229 (the server announces where the client should connect): the same, from the server's
 *   side (a published server behind 1:1 → its public address; behind masquerade → an allocated
 *   port with an expectation).
 * - `EPRT |2|` (IPv6): the address as NPTv6 (./nptv6.ts) maps it, same port; stateless, so no
 *   expectation is made (the data connection is translated by the prefix mapping).
 * The NAT registers the expectation itself (`expectData`), so the agent's `expect` hook only
 * forwards to an optional observer (logs, metrics). Time comes from `now()`, a runtime handle of
 * the gateway (its injected clock), never read inside.
 *
 * `AgentContext` addresses are taken as the gateway will fill them for a NATed flow: the real
 * addresses of each side (the client's before source NAT, the server's after destination NAT).
 */

import type { AgentContext } from '../agent/types.js';
import type { FtpEndpoint, FtpExpectation, FtpHooks, FtpHooksProvider } from '../agent/ftp.js';
import { parseIpv4 } from '../wire/ipv4.js';
import { ipv4ToString } from '../wire/ipv4.js';
import type { NatSide, NatTable } from './nat.js';
import { ipv6ToString, parseIpv6 } from '../wire/ipv6.js';
import { nptv6Announced } from './nptv6.js';

export interface NatFtpOptions {
  /**
   * Side of the bridge the FTP clients are on (the servers are on the other) when a connection's
   * own is not known (`AgentContext.clientFrom`: a replay, a cluster node).
   */
  clientSide: NatSide;
  /** The gateway's clock, ms. */
  now: () => number;
  /** Sees every expectation the agent announces. */
  observe?: (x: FtpExpectation) => void;
}

export function natFtpHooks(nat: NatTable, opts: NatFtpOptions): FtpHooksProvider {
  /**
   * `e` as announced from `side` by `own` (the announcer's real address) for `peer` to connect
   * to. An endpoint that is not the announcer's own address (FTP bounce: another host, another
   * family than the control connection's) is refused (null): expected, it would open a path from
   * the peer to that host; passed, it would carry an inside address out. The same when the NAT
   * has no room for its expectation. EPSV (no address) has the announcer's.
   */
  const via = (side: NatSide, e: FtpEndpoint, own: string, peer: string, ctx: AgentContext): FtpEndpoint | undefined | null => {
    const a6 = e.addr.includes(':') ? parseIpv6(e.addr) : null;
    if (a6 !== null) {
      const o6 = parseIpv6(own);
      if (o6 === null || ipv6ToString(o6) !== ipv6ToString(a6)) return null;
      // NPTv6 is stateless: the data connection to the announced address is translated back by
      // the prefix mapping itself; nothing to expect.
      const m = nptv6Announced(nat.cfg.nptv6, a6, side);
      return m === undefined ? undefined : { addr: ipv6ToString(m), port: e.port };
    }
    const a = parseIpv4(e.addr);
    const o = parseIpv4(own);
    const p = parseIpv4(peer);
    if (a === null || o === null || p === null || a !== o) return null;
    const r = nat.expectData(side, 'tcp', a, e.port, p, opts.now(), ctx.flowId);
    // null = refused (no port, too many expectations: counted by the NAT).
    if (r === null) return null;
    return r === undefined ? undefined : { addr: ipv4ToString(r.addr), port: r.port };
  };
  /** The side this control connection's client is on: its own where the gateway knows it. */
  const clientSide = (ctx: AgentContext): NatSide => ctx.clientFrom?.() ?? opts.clientSide;
  return (_cfg, ctx): FtpHooks => ({
    translateClientEndpoint: (a) => via(clientSide(ctx), a.endpoint, ctx.client.addr, ctx.server.addr, ctx),
    translateServerEndpoint: (a) => via(clientSide(ctx) === 0 ? 1 : 0, a.endpoint, ctx.server.addr, ctx.client.addr, ctx),
    expect: (x) => opts.observe?.(x),
  });
}
