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
    files: ['api/**', 'workers/**', 'core/**', 'protocols/**', 'db/**', 'service/**'],
    rules: { 'no-console': 'error' },
  },
);
