// Lint: typescript-eslint's recommended type-aware rules, plus "no console" in the service code.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['node_modules/', 'dist/', 'data/', 'coverage/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/consistent-type-imports': 'error',
    },
  },
  {
    files: ['api/**', 'workers/**', 'core/**', 'protocols/**', 'db/**', 'service/**', 'services/**'],
    rules: { 'no-console': 'error' },
  },
  // The layers (README, Architecture): each folder imports only the folders beneath it.
  layer(['core/**'], ['api', 'workers', 'services', 'service', 'db', 'protocols', 'dashboards', 'tools'], 'core/ decides and does no I/O: it imports no other layer'),
  layer(['db/**'], ['api', 'workers', 'services', 'service', 'protocols', 'dashboards', 'tools'], 'db/ stores: it imports only core/', ['db/migrate-cli.ts']),
  layer(['protocols/**'], ['api', 'workers', 'services', 'service', 'db', 'dashboards', 'tools'], 'protocols/ speak to devices: they import only core/', ['protocols/**/*.test.ts']),
  layer(['services/**'], ['api', 'workers', 'service', 'dashboards', 'tools'], 'services/ import core/, db/ and protocols/ only'),
  layer(['workers/**'], ['api', 'service', 'dashboards', 'tools'], 'workers/ import services/, core/, db/ and protocols/, never api/ or the composition root'),
  layer(['dashboards/**'], ['api', 'workers', 'service', 'tools'], 'dashboards/ import core/ and services/ only'),
  layer(['api/**'], ['workers', 'service', 'tools'], 'api/ speaks HTTP over services/ and core/: never workers/ or the composition root'),
);

/** A lint rule that keeps `files` from importing the top-level folders `forbidden`. */
function layer(files, forbidden, message, ignores = []) {
  return {
    files,
    ignores,
    rules: {
      'no-restricted-imports': ['error', { patterns: [{ regex: `^(\\.\\./)+(${forbidden.join('|')})/`, message }] }],
    },
  };
}
