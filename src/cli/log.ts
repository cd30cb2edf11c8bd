/**
 * pino loggers for the CLI: pretty on a TTY, JSON lines otherwise; always to stderr so that
 * stdout stays for results. Child loggers per module (`log.child({ mod: 'gateway' })`). The
 * level comes from `--log-level` / `-q` / `-v` (main.ts sets TAPGATE_LOG) or TAPGATE_LOG.
 */
import { pino, type Logger } from 'pino';
import { CliError } from './errors.js';

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

/** The level to log at: `level`, else TAPGATE_LOG, else info; a CliError for an unknown one. */
export function logLevel(level: string | undefined = process.env.TAPGATE_LOG): string {
  if (level === undefined || level === '') return 'info';
  if (!(LOG_LEVELS as readonly string[]).includes(level)) {
    throw new CliError(`log level '${level}' (--log-level or TAPGATE_LOG): expected one of ${LOG_LEVELS.join(', ')}`);
  }
  return level;
}

export function makeLogger(level?: string): Logger {
  const l = logLevel(level);
  if (process.stderr.isTTY) {
    return pino({
      level: l,
      transport: { target: 'pino-pretty', options: { destination: 2, colorize: true, translateTime: 'SYS:HH:MM:ss.l' } },
    });
  }
  return pino({ level: l }, pino.destination(2));
}
