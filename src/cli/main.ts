/**
 * The `tapgate` command line: one yargs command module per command, thin handlers. Errors a
 * user can cause end in one line on stderr and an exit code from ./errors.ts; only a bug shows a
 * stack trace (with -v).
 */
import './signals.js'; // first: before anything else loads
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { ConfigError } from '../config/index.js';
import { checkCommand } from './check.js';
import { clusterCommand } from './cluster.js';
import { CliError, EXIT, EXIT_CODES_HELP } from './errors.js';
import { labCommand } from './lab.js';
import { logLevel, LOG_LEVELS } from './log.js';
import { replayCommand } from './replay.js';
import { runCommand } from './run.js';

// Standard output whose reader went away (EPIPE: `tapgate run … | tee log` after tee exited,
// `tapgate check … | head -1`): unhandled, the stream's 'error' event ended the process with a
// stack trace — the live gateway too, at its next SIGUSR1. What would be printed is lost, said
// once; the command goes on (the gateway keeps forwarding). Standard error likewise, silently.
let stdoutClosed = false;
process.stdout.on('error', (e: NodeJS.ErrnoException) => {
  if (stdoutClosed) return;
  stdoutClosed = true;
  process.stderr.write(`tapgate: standard output is closed (${e.code ?? e.message}): what would be printed there is lost\n`);
});
process.stderr.on('error', () => {});

/** Options that take several values; any other given twice is refused (yargs would make it an array). */
const MULTI: ReadonlySet<string> = new Set(['_', '$0', 'tap', 'cmd']);
/** Options naming a file or directory: an empty value is refused, not taken as "not given". */
const PATHS: ReadonlySet<string> = new Set(['config', 'out', 'streams', 'events', 'pcap']);
const kebab = (k: string): string => k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);

function checkValues(a: Record<string, unknown>): void {
  for (const [k, v] of Object.entries(a)) {
    if (MULTI.has(k) || k.length === 1) continue; // aliases (-o, -q, -v, -h) repeat their long names
    if (Array.isArray(v)) throw new CliError(`--${kebab(k)} is given more than once`);
    if (PATHS.has(k) && v === '') throw new CliError(`--${k}: expected a path, got an empty value`);
  }
}

function report(err: unknown): void {
  if (err instanceof CliError || err instanceof ConfigError) {
    process.stderr.write(`tapgate: ${err.message}\n`);
    process.exitCode = err instanceof CliError ? err.exitCode : EXIT.usage;
    return;
  }
  const e = err instanceof Error ? err : new Error(String(err));
  const verbose = process.env.TAPGATE_LOG === 'debug' || process.env.TAPGATE_LOG === 'trace';
  process.stderr.write(`tapgate: internal error: ${e.message} (a bug: please report it${verbose ? '' : '; -v shows where'})\n`);
  if (verbose && e.stack !== undefined) process.stderr.write(`${e.stack}\n`);
  process.exitCode = EXIT.internal;
}

try {
  await yargs(hideBin(process.argv))
    .scriptName('tapgate')
    .option('log-level', { type: 'string', choices: LOG_LEVELS, describe: 'log level (default info, or TAPGATE_LOG)', global: true })
    .option('quiet', { alias: 'q', type: 'boolean', describe: 'log errors only', global: true })
    .option('verbose', { alias: 'v', type: 'boolean', describe: 'log debug messages (and the stack of an internal error)', global: true })
    .middleware((a) => {
      const level = a['logLevel'] as string | undefined ?? (a['verbose'] === true ? 'debug' : a['quiet'] === true ? 'error' : undefined);
      if (level !== undefined) process.env.TAPGATE_LOG = level;
      logLevel(); // an unknown TAPGATE_LOG is a usage error before anything starts
      checkValues(a);
    })
    .command(replayCommand)
    .command(runCommand)
    .command(checkCommand)
    .command(labCommand)
    .command(clusterCommand)
    .demandCommand(1, 'name a command')
    .strict()
    .fail((msg, err, y) => {
      if (err) throw err;
      process.stderr.write(`${y.help()}\n\ntapgate: ${msg}\n`);
      process.exit(EXIT.usage);
    })
    .epilogue(EXIT_CODES_HELP)
    .alias('h', 'help')
    .help()
    .parseAsync();
} catch (e) {
  report(e);
}
