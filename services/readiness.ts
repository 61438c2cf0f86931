// Readiness: named checks of the services a process depends on, each with a short deadline, so
// /health/ready answers quickly and names exactly what is down.
export type ReadinessCheck = () => Promise<unknown>;

const CHECK_TIMEOUT_MS = 2_000;

export class Readiness {
  private readonly checks = new Map<string, ReadinessCheck>();

  add(name: string, check: ReadinessCheck): void {
    this.checks.set(name, check);
  }

  /** Every check's state: `ok`, or `down: <reason>`. */
  async check(): Promise<Record<string, string>> {
    const entries = await Promise.all(
      [...this.checks].map(async ([name, check]) => [name, await runWithTimeout(check)] as const),
    );
    return Object.fromEntries(entries);
  }
}

async function runWithTimeout(check: ReadinessCheck): Promise<string> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<string>((resolve) => {
    timer = setTimeout(() => resolve('down: no answer within 2 s'), CHECK_TIMEOUT_MS);
  });
  try {
    return await Promise.race([
      check().then(() => 'ok', (error: unknown) => `down: ${error instanceof Error ? error.message || error.name : String(error)}`),
      timeout,
    ]);
  } finally {
    clearTimeout(timer);
  }
}
