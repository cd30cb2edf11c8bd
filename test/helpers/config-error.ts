/** The ConfigError a config text raises (tests of precise config errors), or a failed expectation. */
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
