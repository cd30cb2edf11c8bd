/**
 * The config file's schema (zod v4). Every message says what was expected; the loader adds the
 * file, line:column, document path and the value found. Objects are strict: an unknown key is an
 * error that lists the allowed keys (a typo must never silently disable a rule).
 */

import { z } from 'zod';
import { AGENT_NAMES } from '../agent/registry.js';
import { FTP_MAX_LINE_LIMIT } from '../agent/ftp.js';
import { fieldNameProblem, fieldValueProblem, HTTP_LIMITS, UNREWRITABLE } from '../agent/http/config.js';
import { BUDGET_EXCEEDED_ACTIONS, MAX_MATCH_LIMIT, MAX_STEPS_LIMIT, REGEX_ENGINES, REGEX_FLAGS, replaceRuleProblems } from '../agent/replace.js';
import { DEFAULT_LIMITS, type Limits } from '../stream/limits.js';
import { isCidr6, parseCidr, parseIpBlock, type Cidr, type Cidr6 } from '../wire/cidr.js';
import { nptv6Problem } from '../nat/nptv6.js';

export interface PortRange {
  lo: number;
  hi: number;
}

/** A strict object whose unknown-key error lists the allowed keys. */
function strict<S extends z.ZodRawShape>(shape: S, what: string) {
  const allowed = Object.keys(shape).join(', ');
  return z.strictObject(shape, {
    error: (iss) => {
      if (iss.code === 'unrecognized_keys') {
        const ks = iss.keys.map((k) => `"${k}"`).join(', ');
        return `unknown key${iss.keys.length > 1 ? 's' : ''} ${ks} in ${what}; allowed: ${allowed}`;
      }
      if (iss.code === 'invalid_type') return `expected ${what} (a mapping)`;
      return undefined;
    },
  });
}

function intIn(lo: number, hi: number, what: string) {
  const e = hi === Number.MAX_SAFE_INTEGER
    ? `expected ${what}: an integer >= ${lo}`
    : `expected ${what}: an integer from ${lo} to ${hi}`;
  return z.number({ error: e }).int({ error: e }).min(lo, { error: e }).max(hi, { error: e });
}

const DURATION_UNITS: Readonly<Record<string, number>> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/**
 * A duration in ms: a number (ms), or a string with a unit — "500ms", "10s", "1.5s", "2m", "1h",
 * "7d" — that comes to whole milliseconds.
 */
export function parseDuration(v: unknown): number | string {
  if (typeof v === 'number') return Number.isFinite(v) ? v : `${v} is not a duration: expected milliseconds, or a number with a unit (ms, s, m, h, d), e.g. "10s"`;
  if (typeof v !== 'string') return 'expected a duration: milliseconds, or a number with a unit (ms, s, m, h, d), e.g. "10s"';
  const m = /^\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|d)\s*$/.exec(v);
  if (m === null) return `"${v}" is not a duration: expected a number with a unit (ms, s, m, h, d), e.g. "10s", "2m"`;
  const ms = Number(m[1]) * DURATION_UNITS[m[2]!]!;
  if (Math.abs(ms - Math.round(ms)) > 1e-9) return `"${v}" is not a whole number of milliseconds`;
  return Math.round(ms);
}

/** A duration (see parseDuration) in ms, at least lo. */
function durationIn(lo: number, what: string) {
  const e = `expected ${what}: a duration >= ${lo} ms (milliseconds, or e.g. "10s", "2m")`;
  return z.unknown().transform((v, ctx): number => {
    const r = parseDuration(v);
    if (typeof r === 'string') {
      ctx.issues.push({ code: 'custom', message: r, input: v });
      return lo;
    }
    return r;
  }).pipe(z.number().int({ error: e }).min(lo, { error: e }).max(Number.MAX_SAFE_INTEGER, { error: e }));
}

const PORT_ERR = 'expected a port 1..65535, a range "lo-hi", or a list of those';

function parsePortItem(v: unknown): PortRange | string {
  if (typeof v === 'number') {
    return Number.isInteger(v) && v >= 1 && v <= 65535 ? { lo: v, hi: v } : `port ${v} out of range: ${PORT_ERR}`;
  }
  if (typeof v !== 'string') return PORT_ERR;
  const m = /^\s*([0-9]{1,5})\s*(?:-\s*([0-9]{1,5})\s*)?$/.exec(v);
  if (m === null) return PORT_ERR;
  const lo = Number(m[1]);
  const hi = m[2] === undefined ? lo : Number(m[2]);
  if (lo < 1 || hi > 65535 || lo > 65535) return `port range "${v}" out of 1..65535`;
  if (lo > hi) return `port range "${v}" is empty (${lo} > ${hi})`;
  return { lo, hi };
}

/** A port spec: 8080 | "8000-8099" | [80, "8000-8099"] → ranges. */
const portSpec = z.unknown().transform((v, ctx): PortRange[] => {
  const items = Array.isArray(v) ? v : [v];
  if (Array.isArray(v) && v.length === 0) {
    ctx.issues.push({ code: 'custom', message: `empty list: ${PORT_ERR}`, input: v });
  }
  const out: PortRange[] = [];
  items.forEach((it, i) => {
    const r = parsePortItem(it);
    if (typeof r === 'string') {
      ctx.issues.push({ code: 'custom', message: r, input: it, path: Array.isArray(v) ? [i] : [] });
    } else out.push(r);
  });
  return out;
});

const ADDR_ERR = 'expected an IPv4 address or CIDR ("10.0.0.0/8"), or a list of those';
const BLOCK_ERR = 'expected an IPv4 or IPv6 address or prefix ("10.0.0.0/8", "2001:db8::/32"), or a list of those';

/** A list of blocks (or one) parsed by `parse`, each error at its item. */
function blockList<T>(parse: (s: string) => T | string, err: string) {
  return z.unknown().transform((v, ctx): T[] => {
    const items = Array.isArray(v) ? v : [v];
    if (Array.isArray(v) && v.length === 0) {
      ctx.issues.push({ code: 'custom', message: `empty list: ${err}`, input: v });
    }
    const out: T[] = [];
    items.forEach((it, i) => {
      const r = typeof it === 'string' ? parse(it.trim()) : err;
      if (typeof r === 'string') {
        ctx.issues.push({ code: 'custom', message: r, input: it, path: Array.isArray(v) ? [i] : [] });
      } else out.push(r);
    });
    return out;
  });
}

/** An IPv4 address spec (NAT): "10.0.0.1" | "10.0.0.0/8" | [...] → CIDR blocks. */
const addressSpec = blockList(parseCidr, ADDR_ERR);
/** A rule's address spec, either family: "10.0.0.1" | "2001:db8::/32" | [...]. */
const ruleAddressSpec = blockList(parseIpBlock, BLOCK_ERR);

export const matchSchema = strict(
  {
    port: portSpec.optional(),
    clientPort: portSpec.optional(),
    serverPort: portSpec.optional(),
    address: ruleAddressSpec.optional(),
    clientAddress: ruleAddressSpec.optional(),
    serverAddress: ruleAddressSpec.optional(),
  },
  'match',
);

export const replaceItemSchema = strict(
  {
    find: z.string({ error: 'expected a string (the literal to find)' }).optional(),
    regex: z.string({ error: 'expected a string (a JavaScript regular expression)' }).optional(),
    with: z.string({ error: 'expected a string (the replacement; may be empty "")' }),
    ignoreCase: z.boolean({ error: 'expected true or false' }).optional(),
    maxMatch: intIn(1, MAX_MATCH_LIMIT, 'the longest match in bytes').optional(),
    flags: z.string({ error: `expected a string of regex flags from "${REGEX_FLAGS}"` }).optional(),
    engine: z.enum(REGEX_ENGINES, { error: `expected one of: ${REGEX_ENGINES.join(', ')}` }).optional(),
    maxSteps: intIn(1, MAX_STEPS_LIMIT, 'the steps one backtracking match attempt may take').optional(),
    budgetExceeded: z
      .enum(BUDGET_EXCEEDED_ACTIONS, { error: `expected one of: ${BUDGET_EXCEEDED_ACTIONS.join(', ')} (what an attempt stopped by maxSteps does)` })
      .optional(),
  },
  'a replace rule',
).superRefine((r, ctx) => {
  // requireEngine: a pattern only the backtracking engine can run must say so (engine:
  // backtracking), so that no rule can stall the gateway unless it was written to accept a budget.
  for (const p of replaceRuleProblems(r, { requireEngine: true, refuseDead: true })) {
    // A present maxMatch / maxSteps / engine was checked by zod already: do not report it twice.
    if (p.field === 'maxMatch' && r.maxMatch !== undefined && p.message.startsWith('expected')) continue;
    if (p.field === 'engine') continue;
    if ((p.field === 'maxSteps' || p.field === 'budgetExceeded') && p.message.startsWith('expected')) continue;
    ctx.addIssue({ code: 'custom', message: p.message, path: p.field === 'rule' ? [] : [p.field] });
  }
  if (r.find !== undefined && r.regex === undefined) {
    if (r.maxMatch !== undefined) ctx.addIssue({ code: 'custom', message: '`maxMatch` applies to regex rules only', path: ['maxMatch'] });
    if (r.flags !== undefined) ctx.addIssue({ code: 'custom', message: '`flags` applies to regex rules only', path: ['flags'] });
    if (r.engine !== undefined) ctx.addIssue({ code: 'custom', message: '`engine` applies to regex rules only', path: ['engine'] });
    if (r.maxSteps !== undefined) ctx.addIssue({ code: 'custom', message: '`maxSteps` applies to regex rules only', path: ['maxSteps'] });
    if (r.budgetExceeded !== undefined) ctx.addIssue({ code: 'custom', message: '`budgetExceeded` applies to regex rules only', path: ['budgetExceeded'] });
  }
  if (r.regex !== undefined && r.find === undefined && r.ignoreCase !== undefined) {
    ctx.addIssue({ code: 'custom', message: '`ignoreCase` applies to find rules; for a regex use flags: "i"', path: ['ignoreCase'] });
  }
});

const ADDR_ONE_ERR = 'expected an IPv4 address or CIDR, e.g. 10.200.0.1 or 10.200.0.0/24';

/** `{ from, to }`: an address or CIDR announced, and the same-sized one to announce instead. */
export const ftpAddressMapSchema = strict(
  {
    from: z.string({ error: ADDR_ONE_ERR }),
    to: z.string({ error: ADDR_ONE_ERR }),
  },
  'an address mapping { from, to }',
).superRefine((m, ctx) => {
  const f = parseCidr(m.from.trim());
  const t = parseCidr(m.to.trim());
  if (typeof f === 'string') ctx.addIssue({ code: 'custom', message: f, path: ['from'] });
  if (typeof t === 'string') ctx.addIssue({ code: 'custom', message: t, path: ['to'] });
  if (typeof f !== 'string' && typeof t !== 'string' && f.prefix !== t.prefix) {
    ctx.addIssue({ code: 'custom', message: `from (/${f.prefix}) and to (/${t.prefix}) must be the same size`, path: ['to'] });
  }
});

/** Options of the ftp agent. */
export const ftpSchema = strict(
  {
    maxLine: intIn(16, FTP_MAX_LINE_LIMIT, 'the longest PORT/EPRT/227/229 line held, in bytes').optional(),
    clientAddress: ftpAddressMapSchema.optional(),
    serverAddress: ftpAddressMapSchema.optional(),
  },
  'ftp options',
);

/** A field value for http setHeaders: a string (a number is taken as its text). */
const httpFieldValue = z
  .union([z.string(), z.number()], { error: 'expected a string (the field value)' })
  .transform((v) => String(v))
  .superRefine((v, ctx) => {
    const p = fieldValueProblem(v);
    if (p !== '') ctx.addIssue({ code: 'custom', message: p });
  });

/** One direction of the http agent: body find/replace, header fields set and removed. */
function httpSide(what: string, extra: z.ZodRawShape = {}) {
  return strict(
    {
      replace: z
        .array(replaceItemSchema, { error: 'expected a list of { find, with } / { regex, with, maxMatch } rules (matched on the body)' })
        .min(1, { error: 'expected at least one find/regex rule' })
        .optional(),
      setHeaders: z.record(z.string(), httpFieldValue, { error: 'expected a mapping of field name to value' }).nullish(),
      removeHeaders: z.array(z.string({ error: 'expected a field name' }), { error: 'expected a list of field names' }).nullish(),
      ...extra,
    },
    what,
  ).superRefine((o, ctx) => {
    for (const n of Object.keys(o.setHeaders ?? {})) {
      const p = fieldNameProblem(n);
      if (p !== '') ctx.addIssue({ code: 'custom', message: p, path: ['setHeaders', n] });
    }
    (o.removeHeaders ?? []).forEach((n, i) => {
      const p = fieldNameProblem(n);
      if (p !== '') ctx.addIssue({ code: 'custom', message: p, path: ['removeHeaders', i] });
    });
  });
}

const httpBound = (k: keyof typeof HTTP_LIMITS, what: string) => intIn(HTTP_LIMITS[k][0], HTTP_LIMITS[k][1], what).optional();

/** Options of the http agent (src/agent/http/config.ts). */
export const httpSchema = strict(
  {
    request: httpSide('http request options').nullish(),
    response: httpSide('http response options', { identity: z.boolean({ error: 'expected true or false' }).optional() }).nullish(),
    maxHeaderBytes: httpBound('maxHeaderBytes', 'the longest header section held, in bytes'),
    maxBufferedBody: httpBound('maxBufferedBody', 'the largest body held whole to fix its Content-Length, in bytes'),
    maxChunkLine: httpBound('maxChunkLine', 'the longest chunk-size line, in bytes'),
    maxPipeline: httpBound('maxPipeline', 'the requests awaiting responses'),
    assumeHttp11Server: z.boolean({ error: 'expected true or false' }).optional(),
    unrewritable: z.enum(UNREWRITABLE, { error: `expected one of: ${UNREWRITABLE.join(', ')}` }).optional(),
    decode: z.boolean({ error: 'expected true or false' }).optional(),
    maxDecodedRatio: httpBound('maxDecodedRatio', 'how many times its coded size a coded body may decode to'),
    maxDecoding: httpBound('maxDecoding', 'the coded bodies decoded at once on the gateway'),
  },
  'http options',
);

const AGENT_ERR = `expected one of: ${AGENT_NAMES.join(', ')}`;

export const ruleSchema = strict(
  {
    name: z.string({ error: 'expected a string' }).optional(),
    match: matchSchema.nullish(),
    direction: z.enum(['both', 'c2s', 's2c'], { error: 'expected one of: both, c2s, s2c' }).default('both'),
    agent: z.enum(AGENT_NAMES, { error: AGENT_ERR }),
    replace: z
      .array(replaceItemSchema, { error: 'expected a list of { find, with } / { regex, with, maxMatch } rules' })
      .min(1, { error: 'expected at least one find/regex rule' })
      .optional(),
    ftp: ftpSchema.nullish(),
    http: httpSchema.nullish(),
  },
  'a rule',
).superRefine((r, ctx) => {
  if (r.agent === 'replace' && r.replace === undefined) {
    ctx.addIssue({ code: 'custom', message: 'agent replace needs `replace:`, a list of find/regex rules', path: ['replace'] });
  }
  if (r.agent !== 'replace' && r.replace !== undefined) {
    ctx.addIssue({ code: 'custom', message: `\`replace\` is only for agent replace (this rule's agent is ${r.agent})`, path: ['replace'] });
  }
  if (r.agent !== 'ftp' && r.ftp !== undefined && r.ftp !== null) {
    ctx.addIssue({ code: 'custom', message: `\`ftp\` is only for agent ftp (this rule's agent is ${r.agent})`, path: ['ftp'] });
  }
  if (r.agent !== 'http' && r.http !== undefined && r.http !== null) {
    ctx.addIssue({ code: 'custom', message: `\`http\` is only for agent http (this rule's agent is ${r.agent})`, path: ['http'] });
  }
  if (r.agent === 'http' && r.direction !== 'both') {
    ctx.addIssue({
      code: 'custom',
      message: 'agent http reads both directions (responses are paired with requests); choose what is rewritten with http.request / http.response',
      path: ['direction'],
    });
  }
});

/** Limits that may be 0 ("no cap" / "never retry"); the others must be at least 1. */
const ZERO_OK: ReadonlySet<keyof Limits> = new Set(['maxCommands', 'commandMaxAgeMs', 'maxSynthRetries']);
/**
 * Limits with a larger least value: the normalisation store's bound is also the most a sender is
 * given as its window, which must be able to say 65535 unscaled and one unit at scale 14.
 */
const LEAST: Partial<Record<keyof Limits, number>> = { normalizeBytesPerConn: 65536, normalizeBytesGlobal: 65536 };

const limitsShape = Object.fromEntries(
  (Object.keys(DEFAULT_LIMITS) as (keyof Limits)[]).map((k) => [
    k,
    (k.endsWith('Ms') ? durationIn(ZERO_OK.has(k) ? 0 : 1, k) : intIn(LEAST[k] ?? (ZERO_OK.has(k) ? 0 : 1), Number.MAX_SAFE_INTEGER, k)).optional(),
  ]),
) as unknown as { [K in keyof Limits]: z.ZodOptional<z.ZodType<number, unknown>> };

export const limitsSchema = strict(limitsShape, 'limits');

const SIDE_ERR = 'expected client or server (the side of the bridge the hosts are on)';
const natSide = z.enum(['client', 'server'], { error: SIDE_ERR });

/** One address or CIDR (for NAT mappings). */
const oneCidr = z.string({ error: ADDR_ONE_ERR }).transform((v, ctx): Cidr => {
  const r = parseCidr(v.trim());
  if (typeof r === 'string') {
    ctx.issues.push({ code: 'custom', message: r, input: v });
    return { addr: 0, prefix: 32, mask: 0xffff_ffff };
  }
  return r;
});

/** A single port range "lo-hi" (or one number). */
const oneRange = z.unknown().transform((v, ctx): PortRange => {
  const r = parsePortItem(v);
  if (typeof r === 'string') {
    ctx.issues.push({ code: 'custom', message: r, input: v });
    return { lo: 1, hi: 1 };
  }
  return r;
});

/** `{ side, real, mapped }`: hosts of `real` on `side` appear as `mapped` on the other side. */
export const natOneToOneSchema = strict(
  { side: natSide, real: oneCidr, mapped: oneCidr },
  'a 1:1 mapping { side, real, mapped }',
).superRefine((m, ctx) => {
  if (m.real.prefix !== m.mapped.prefix) {
    ctx.addIssue({ code: 'custom', message: `real (/${m.real.prefix}) and mapped (/${m.mapped.prefix}) must be the same size`, path: ['mapped'] });
  }
});

/** One IPv6 prefix (for NPTv6). */
const onePrefix6 = z.string({ error: 'expected an IPv6 prefix, e.g. fd00:200::/64' }).transform((v, ctx): Cidr6 => {
  const r = parseIpBlock(v.trim());
  if (typeof r === 'string' || !isCidr6(r)) {
    ctx.issues.push({ code: 'custom', message: typeof r === 'string' ? r : `"${v.trim()}" is IPv4: NPTv6 translates IPv6 prefixes (oneToOne is for IPv4)`, input: v });
    return { family: 6, bytes: new Uint8Array(16), prefix: 64 };
  }
  return r;
});

/** `{ side, real, mapped }` of IPv6 prefixes: hosts of `real` on `side` appear as `mapped` on the other side (RFC 6296). */
export const natNptv6Schema = strict(
  { side: natSide, real: onePrefix6, mapped: onePrefix6 },
  'an NPTv6 mapping { side, real, mapped }',
).superRefine((m, ctx) => {
  const p = nptv6Problem({ side: 0, real: m.real, mapped: m.mapped });
  if (p !== null) ctx.addIssue({ code: 'custom', message: p, path: ['mapped'] });
});

/** `{ side, address, ports, sources?, icmpIds?, preservePort? }`: many-to-one with port translation. */
export const natMasqueradeSchema = strict(
  {
    side: natSide,
    address: oneCidr,
    sources: addressSpec.optional(),
    ports: oneRange.optional(),
    icmpIds: oneRange.optional(),
    preservePort: z.boolean({ error: 'expected true or false' }).optional(),
  },
  'a masquerade rule { side, address, ports }',
).superRefine((m, ctx) => {
  if (m.address.prefix !== 32) ctx.addIssue({ code: 'custom', message: 'expected one address (no /prefix)', path: ['address'] });
});

const msPos = (what: string) => durationIn(1, what).optional();

export const natSchema = strict(
  {
    oneToOne: z.array(natOneToOneSchema, { error: 'expected a list of { side, real, mapped }' }).optional(),
    nptv6: z.array(natNptv6Schema, { error: 'expected a list of { side, real, mapped } (IPv6 prefixes)' }).optional(),
    masquerade: z.array(natMasqueradeSchema, { error: 'expected a list of { side, address, ports }' }).optional(),
    timeouts: strict(
      {
        tcpEstablished: msPos('tcpEstablished'),
        tcpTransitory: msPos('tcpTransitory'),
        udp: msPos('udp'),
        icmp: msPos('icmp'),
        expectation: msPos('expectation'),
      },
      'nat timeouts',
    ).optional(),
    limits: strict(
      {
        maxEntries: intIn(0, Number.MAX_SAFE_INTEGER, 'maxEntries').optional(),
        maxExpectations: intIn(0, Number.MAX_SAFE_INTEGER, 'maxExpectations').optional(),
      },
      'nat limits',
    ).optional(),
    /** Side of the FTP clients (for the ftp agent's NAT hooks); default client. */
    ftpClientSide: natSide.optional(),
  },
  'the nat section',
);

const POLICY_ERR = 'expected drop or pass';
const policyAction = z.enum(['drop', 'pass'], { error: POLICY_ERR });

/** What the gateway does with traffic a rule may cover but it cannot inspect (engine/policy.ts). */
export const policySchema = strict(
  {
    uninspectable: policyAction.optional(),
    ipv6: policyAction.optional(),
    encapsulated: policyAction.optional(),
    sourceRouted: policyAction.optional(),
    midstream: z.enum(['drop', 'pass', 'inspect'], { error: 'expected drop, pass or inspect' }).optional(),
    urgent: z.enum(['inline', 'keep'], { error: 'expected inline or keep' }).optional(),
  },
  'the policy section',
);

export const configSchema = strict(
  {
    rules: z.array(ruleSchema, { error: 'expected a list of rules' }),
    limits: limitsSchema.optional(),
    nat: natSchema.optional(),
    policy: policySchema.optional(),
  },
  'the config',
);

export type RawConfig = z.output<typeof configSchema>;
