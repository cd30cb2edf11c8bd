import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // e2e tests share namespaces/devices names: run files one at a time.
    fileParallelism: false,
    pool: 'forks',
  },
});
