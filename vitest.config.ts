import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // e2e tests share namespaces/devices names: run files one at a time.
    fileParallelism: false,
    pool: 'forks',
    // Recycled transient frame memory is overwritten (util/bytes.ts): a frame kept past its
    // batch then shows as corrupt bytes in every test that runs a live gateway.
    env: { TAPGATE_DEBUG_POISON: '1' },
  },
});
