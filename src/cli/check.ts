/**
 * `tapgate check <config>`: loads a config as `run` would, without starting anything. Errors
 * (file:line) on stderr and exit 1; else the rules as understood on stdout, and a warning on
 * stderr for each rule no connection can reach (config/shadow.ts).
 */
import type { ArgumentsCamelCase, Argv, CommandModule } from 'yargs';
import { formatIpBlock, loadConfig, type Config, type Matcher, type PortRange, type Rule } from '../config/index.js';
import { shadowedRules } from '../config/shadow.js';

interface CheckArgs {
  config: string;
}

const ports = (rs: readonly PortRange[]): string => rs.map((r) => (r.lo === r.hi ? `${r.lo}` : `${r.lo}-${r.hi}`)).join(',');

function describeMatch(m: Matcher): string {
  const parts: string[] = [];
  if (m.port) parts.push(`port ${ports(m.port)}`);
  if (m.clientPort) parts.push(`client port ${ports(m.clientPort)}`);
  if (m.serverPort) parts.push(`server port ${ports(m.serverPort)}`);
  if (m.address) parts.push(`address ${m.address.map(formatIpBlock).join(',')}`);
  if (m.clientAddress) parts.push(`client ${m.clientAddress.map(formatIpBlock).join(',')}`);
  if (m.serverAddress) parts.push(`server ${m.serverAddress.map(formatIpBlock).join(',')}`);
  return parts.length === 0 ? 'every connection' : parts.join(', ');
}

export const ruleLabel = (r: Rule): string => `rule ${r.index + 1}${r.name !== undefined ? ` "${r.name}"` : ''} (line ${r.line})`;

/** The config as understood, one line per item. */
export function describeConfig(c: Config): string[] {
  const lines = [`${c.fileName}: ${c.rules.length} rule${c.rules.length === 1 ? '' : 's'} (first match wins; no match: passed uninspected)`];
  for (const r of c.rules) {
    const dir = r.direction === 'both' ? '' : `, edits ${r.direction} only`;
    lines.push(`  ${ruleLabel(r)}: ${describeMatch(r.match)} → agent ${r.agent}${dir}`);
  }
  const p = c.policy;
  lines.push(`  policy: ipv6 ${p.ipv6}, encapsulated ${p.encapsulated}, sourceRouted ${p.sourceRouted}, midstream ${p.midstream}, urgent ${p.urgent}`);
  if (c.nat !== undefined) {
    const t = c.nat.table;
    lines.push(`  nat: ${t.oneToOne.length} one-to-one, ${t.masquerade.length} masquerade mapping${t.masquerade.length === 1 ? '' : 's'}`);
  }
  return lines;
}

export const checkCommand: CommandModule<object, CheckArgs> = {
  command: 'check <config>',
  describe: 'Validate a config without starting anything: errors with file:line, the rules as understood, unreachable rules',
  builder: (y: Argv) =>
    y
      .positional('config', { type: 'string', demandOption: true, describe: 'YAML config' })
      .example('$0 check examples/http.yaml', 'exit 0 and the rules, or exit 1 and the errors') as unknown as Argv<CheckArgs>,
  handler: (a: ArgumentsCamelCase<CheckArgs>) => {
    const c = loadConfig(a.config); // a ConfigError ends in main.ts: its lines on stderr, exit 1
    process.stdout.write(`${describeConfig(c).join('\n')}\n`);
    for (const s of shadowedRules(c.rules)) {
      process.stderr.write(`tapgate: warning: ${c.fileName}: ${ruleLabel(s.rule)} can never match: ${ruleLabel(s.by)} takes every connection it matches\n`);
    }
  },
};
