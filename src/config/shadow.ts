/**
 * Rules that can never match: rules are tried in order and the first match wins, so a rule is
 * shadowed when an earlier rule matches every connection it matches. The test is sufficient,
 * not complete (it looks at each condition on its own): a rule it names is surely dead; one it
 * does not name may still be. Only the earlier rules that match one connection of a rule are
 * tried (config/select.ts RuleIndex), so a long rule list is not compared pair by pair.
 */

import { blockWithin, isCidr6, type IpBlock } from '../wire/cidr.js';
import { ipv6Key, type IpAddr } from '../wire/ip.js';
import type { ConnKey, Matcher, PortRange, Rule } from './load.js';
import { ruleIndex, ruleMatches } from './select.js';

/** Every port of `inner` is in `outer` (ranges as written, possibly overlapping). */
function portsWithin(inner: readonly PortRange[], outer: readonly PortRange[]): boolean {
  const merged: PortRange[] = [];
  for (const r of [...outer].sort((a, b) => a.lo - b.lo)) {
    const last = merged[merged.length - 1];
    if (last !== undefined && r.lo <= last.hi + 1) last.hi = Math.max(last.hi, r.hi);
    else merged.push({ lo: r.lo, hi: r.hi });
  }
  return inner.every((r) => merged.some((m) => m.lo <= r.lo && r.hi <= m.hi));
}

/** Every address of `inner` is in `outer`. */
function cidrsWithin(inner: readonly IpBlock[], outer: readonly IpBlock[]): boolean {
  return inner.every((c) => outer.some((o) => blockWithin(c, o)));
}

/**
 * A condition of `a` on either side holds for every connection `b` matches when one of b's
 * conditions (either side, client side, server side) is within it.
 */
function eitherCovered<T>(a: readonly T[] | undefined, bs: (readonly T[] | undefined)[], within: (i: readonly T[], o: readonly T[]) => boolean): boolean {
  return a === undefined || bs.some((b) => b !== undefined && within(b, a));
}

function sideCovered<T>(a: readonly T[] | undefined, b: readonly T[] | undefined, within: (i: readonly T[], o: readonly T[]) => boolean): boolean {
  return a === undefined || (b !== undefined && within(b, a));
}

/** Every connection `b` matches, `a` matches too. */
export function covers(a: Matcher, b: Matcher): boolean {
  return (
    eitherCovered(a.port, [b.port, b.clientPort, b.serverPort], portsWithin) &&
    sideCovered(a.clientPort, b.clientPort, portsWithin) &&
    sideCovered(a.serverPort, b.serverPort, portsWithin) &&
    eitherCovered(a.address, [b.address, b.clientAddress, b.serverAddress], cidrsWithin) &&
    sideCovered(a.clientAddress, b.clientAddress, cidrsWithin) &&
    sideCovered(a.serverAddress, b.serverAddress, cidrsWithin)
  );
}

/**
 * One connection the matcher matches (the first port and address of each condition), or null
 * when that one does not (conditions that exclude each other there).
 */
function witness(m: Matcher): ConnKey | null {
  const first = (bs: readonly IpBlock[] | undefined): IpAddr | undefined => {
    const b = bs?.[0];
    return b === undefined ? undefined : isCidr6(b) ? ipv6Key(b.bytes, 0) : b.addr;
  };
  const serverAddr = first(m.serverAddress) ?? first(m.address);
  const clientAddr = first(m.clientAddress) ?? first(m.address);
  // An address condition on one side only: the other side of the same family.
  const other = typeof (serverAddr ?? clientAddr) === 'string' ? '\0\0\0\0\0\0\0\0' : 0;
  const c: ConnKey = {
    clientAddr: clientAddr ?? other,
    clientPort: m.clientPort?.[0]?.lo ?? m.port?.[0]?.lo ?? 0,
    serverAddr: serverAddr ?? other,
    serverPort: m.serverPort?.[0]?.lo ?? m.port?.[0]?.lo ?? 0,
  };
  return ruleMatches({ match: m } as Rule, c) ? c : null;
}

/** Each rule no connection can reach, with the first earlier rule that takes all of its connections. */
export function shadowedRules(rules: readonly Rule[]): { rule: Rule; by: Rule }[] {
  const out: { rule: Rule; by: Rule }[] = [];
  const index = ruleIndex(rules);
  rules.forEach((r, i) => {
    // A rule that takes all of r's connections takes this one: only those that do are tried.
    const w = witness(r.match);
    const earlier = w === null ? rules.slice(0, i) : index.matching(w, i).map((j) => rules[j]!);
    const by = earlier.find((e) => covers(e.match, r.match));
    if (by !== undefined) out.push({ rule: r, by });
  });
  return out;
}
