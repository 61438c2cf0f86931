import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts', 'protocols/examples/**/*.test.ts'],
    // the fault suite restarts shared services: it runs on its own (vitest.faults.config.ts);
    // the browser tests drive Chromium: they run on their own too (vitest.browser.config.ts)
    exclude: ['test/faults/**', 'test/browser/**', 'node_modules/**'],
    pool: 'forks',
    testTimeout: 60_000,
    hookTimeout: 60_000,
    globalSetup: ['test/helpers/global-setup.ts'],
    reporters: ['default'],
  },
});
