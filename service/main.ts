// `npm start`: checks the services, migrates, then runs the API, the workers or both (ROLE).
// A dependency that is missing at start gives one clear line and exit code 1.
import closeWithGrace from 'close-with-grace';
import { loadConfig, redactUrl } from '../core/config.ts';
import { DependencyError, OtterError } from '../core/errors.ts';
import { startOtter } from './service.ts';

function fail(line: string): never {
  process.stderr.write(`otter: ${line}\n`);
  process.exit(1);
}

async function main(): Promise<void> {
  let config;
  try {
    config = loadConfig(process.env);
  } catch (error) {
    fail(`invalid configuration: ${(error as Error).message}`);
  }
  let service;
  try {
    service = await startOtter(config);
  } catch (error) {
    if (error instanceof DependencyError) {
      fail(`cannot start: ${error.dependency} is not reachable at ${error.url} — ${error.hint}`);
    }
    if (error instanceof OtterError) fail(`cannot start: ${error.message}`);
    const message = error instanceof Error ? error.message : String(error);
    fail(`cannot start: ${redactUrl(message)}`);
  }
  const running = service;
  closeWithGrace({ delay: 10_000, logger: false }, async ({ signal, err }) => {
    if (err) running.logger.error({ err }, 'fatal error, shutting down');
    else running.logger.info({ signal }, 'shutting down');
    await running.stop();
  });
}

await main();
