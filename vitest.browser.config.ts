// The console's browser tests (test/browser/): Debian's Chromium through playwright-core against a
// real Otter and a simulated fleet; one file at a time, as each drives a browser and a rollout.
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/browser/**/*.test.ts'],
    pool: 'forks',
    fileParallelism: false,
    testTimeout: 120_000,
    hookTimeout: 90_000,
    globalSetup: ['test/helpers/global-setup.ts'],
  },
});
