/** Config error tests: the ConfigError a config text raises, and the shape of a single precise error. */
import { expect } from 'vitest';
import { ConfigError, parseConfig } from '../../src/config/index.js';

export function errorOf(text: string, file = 'conf.yaml'): ConfigError {
  try {
    parseConfig(text, file);
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return e as ConfigError;
  }
  throw new Error('expected a ConfigError');
}

/** `text` raises exactly one issue, at `line` of conf.yaml and document path `path`, whose message matches `msg`. */
export function expectOneIssue(text: string, line: number, path: string, msg: RegExp): void {
  const e = errorOf(text);
  expect(e.issues).toHaveLength(1);
  const i = e.issues[0]!;
  expect(i).toMatchObject({ file: 'conf.yaml', line, path });
  expect(i.message).toMatch(msg);
  expect(e.message).toContain(`conf.yaml:${line}:`);
  expect(e.message).toContain(`${path}: `);
}
