import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts', 'protocols/examples/**/*.test.ts'],
    // the fault suite restarts shared services: it runs on its own (vitest.faults.config.ts);
    // the browser tests drive Chromium: they run on their own too (vitest.browser.config.ts)
    exclude: ['test/faults/**', 'test/browser/**', 'node_modules/**'],
    pool: 'forks',
    // two files at a time: most integration tests wait on devices, timers and the network rather
    // than the CPU, so two overlap well on a 2-core machine (measured: 760 s → 420 s for this suite)
    maxWorkers: 2,
    testTimeout: 60_000,
    hookTimeout: 60_000,
    globalSetup: ['test/helpers/global-setup.ts'],
    reporters: ['default'],
  },
});
