/**
 * Config errors: every issue says where (file, line:column, path in the document) and what was
 * expected, so a user can fix a file without reading the schema.
 */

export interface ConfigIssue {
  file: string;
  /** 1-based; absent when the issue has no place in the text (e.g. the file cannot be read). */
  line?: number;
  col?: number;
  /** Path in the document, e.g. `rules[1].replace[0].maxMatch` ('' = the document itself). */
  path: string;
  message: string;
}

export function formatIssue(i: ConfigIssue): string {
  const where = i.line === undefined ? i.file : `${i.file}:${i.line}:${i.col ?? 1}`;
  return i.path === '' ? `${where}: ${i.message}` : `${where}: ${i.path}: ${i.message}`;
}

/** Issues a ConfigError's message lists; the rest are counted (a large broken file made a message of megabytes). */
export const MAX_LISTED_ISSUES = 50;

export class ConfigError extends Error {
  override readonly name = 'ConfigError';

  constructor(
    readonly file: string,
    readonly issues: readonly ConfigIssue[],
  ) {
    const head = `invalid config ${file}: ${issues.length} error${issues.length === 1 ? '' : 's'}`;
    const listed = issues.slice(0, MAX_LISTED_ISSUES).map((i) => `  ${formatIssue(i)}`);
    const more = issues.length > MAX_LISTED_ISSUES ? [`  … and ${issues.length - MAX_LISTED_ISSUES} more`] : [];
    super([head, ...listed, ...more].join('\n'));
  }
}

/** `['rules', 1, 'replace', 0, 'maxMatch']` → `rules[1].replace[0].maxMatch`. */
export function formatPath(path: readonly PropertyKey[]): string {
  let s = '';
  for (const seg of path) {
    if (typeof seg === 'number') s += `[${seg}]`;
    else {
      const k = String(seg);
      s += /^[A-Za-z_$][A-Za-z0-9_$]*$/.test(k) ? (s === '' ? k : `.${k}`) : `[${JSON.stringify(k)}]`;
    }
  }
  return s;
}
