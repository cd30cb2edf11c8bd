/**
 * How the command line ends: exit codes, and the errors a user can cause (a bad argument, a
 * missing or unwritable file, a config that does not load) answered with one line on stderr
 * and no stack trace. Anything else is a bug and says so.
 */

/** Exit codes (also in `tapgate --help` and the README). */
export const EXIT = {
  ok: 0,
  /** A bad argument or config (`check` found errors). */
  usage: 1,
  /**
   * An input, output or device problem: a capture that cannot be read or ends early, a file that
   * cannot be written, a TAP that cannot be opened (missing, or no privilege), a cluster that
   * cannot be joined.
   */
  io: 2,
  /** An internal error (a bug). */
  internal: 70,
} as const;

export const EXIT_CODES_HELP =
  'Exit codes: 0 ok; 1 bad arguments or config; 2 an input, output or device problem (capture unreadable or truncated, ' +
  'file not writable, TAP not openable, cluster not reachable); 70 internal error (a bug: please report it).';

/** An error the user can fix: its message is all they see. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: number = EXIT.usage,
  ) {
    super(message);
    this.name = 'CliError';
  }
}

const FS_REASONS: Readonly<Record<string, string>> = {
  ENOENT: 'no such file or directory',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  EISDIR: 'is a directory',
  ENOTDIR: 'a part of the path is not a directory',
  EEXIST: 'exists and is not a directory',
  EROFS: 'read-only file system',
  ENOSPC: 'no space left on device',
  EDQUOT: 'disk quota exceeded',
  EFBIG: 'file too large',
  EIO: 'input/output error',
  EMFILE: 'too many open files',
  ELOOP: 'too many symbolic links (a loop?)',
  ENAMETOOLONG: 'file name too long',
  EPIPE: 'broken pipe (its reader is gone)',
  ENXIO: 'no such device or address (a FIFO no one reads?)',
};

/**
 * A Node file-system error as a CliError (`what`: what the path was for, e.g. "--out"), or
 * undefined when `e` is not one.
 */
export function fileError(e: unknown, what: string): CliError | undefined {
  const x = e as NodeJS.ErrnoException | null;
  if (typeof x !== 'object' || x === null || typeof x.code !== 'string' || FS_REASONS[x.code] === undefined) return undefined;
  const path = typeof x.path === 'string' ? ` ${x.path}` : '';
  return new CliError(`${what}${path}: ${FS_REASONS[x.code]}`, EXIT.io);
}

/** Runs `open`; a file-system error it throws becomes a CliError naming `what` (e.g. "--out"). */
export async function opening<T>(what: string, open: () => Promise<T>): Promise<T> {
  try {
    return await open();
  } catch (e) {
    throw fileError(e, what) ?? e;
  }
}
