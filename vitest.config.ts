import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts', 'protocols/examples/**/*.test.ts'],
    // the fault suite restarts shared services: it runs on its own (vitest.faults.config.ts)
    exclude: ['test/faults/**', 'node_modules/**'],
    pool: 'forks',
    testTimeout: 60_000,
    hookTimeout: 60_000,
    globalSetup: ['test/helpers/global-setup.ts'],
    reporters: ['default'],
  },
});
