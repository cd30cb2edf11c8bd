/**
 * pino loggers for the CLI: pretty on a TTY, JSON lines otherwise; always to stderr so that
 * stdout stays for results. Child loggers per module (`log.child({ mod: 'gateway' })`).
 */
import { pino, type Logger } from 'pino';

export function makeLogger(level: string = process.env.TAPGATE_LOG ?? 'info'): Logger {
  if (process.stderr.isTTY) {
    return pino({
      level,
      transport: { target: 'pino-pretty', options: { destination: 2, colorize: true, translateTime: 'SYS:HH:MM:ss.l' } },
    });
  }
  return pino({ level }, pino.destination(2));
}
