// Drains the webhook outbox (docs/operations.md#webhooks): every round it seals new outbox events
// into deliveries, claims the deliveries that are due (the first pending one of each stream), and
// POSTs them. Every worker process runs one; Postgres alone coordinates them (an advisory lock for
// sealing, leases for deliveries), so a restart or a lost Redis loses nothing.
import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import {
  DELIVERY_HEADER,
  OUTBOX_ROW_EVENTS,
  SIGNATURE_HEADER,
  WEBHOOK_BATCH_WINDOW_MS,
  WEBHOOK_HISTORY_MS,
  WEBHOOK_MAX_EVENTS,
  WEBHOOK_TIMEOUT_MS,
  afterFailure,
  deliveryBody,
  refusalOf,
  signDelivery,
} from '../core/webhooks.ts';
import type { Db } from '../db/connection.ts';
import { retryTransient } from '../db/transient-errors.ts';
import {
  claimDueDeliveries,
  deliveryEvents,
  markAttemptFailed,
  markDelivered,
  pruneWebhookHistory,
  sealWebhookEvents,
  type ClaimedDelivery,
} from '../db/queries/webhooks.ts';
import type { Metrics } from '../services/metrics.ts';
import { RoundLoop } from '../core/round-loop.ts';

export interface WebhookDelivererOptions {
  /** The wait after the first failed attempt; doubled after each further one (WEBHOOK_RETRY_BASE_MS). */
  retryBaseMs: number;
  /** How often an idle deliverer looks for work. */
  pollMs?: number;
  /** Deliveries this process sends at once. */
  maxInFlight?: number;
  /** How long a claim lasts: longer than an attempt can take, so only a crashed sender's runs out. */
  leaseMs?: number;
  timeoutMs?: number;
}

const USER_AGENT = 'Otter-Webhooks/1';
const PRUNE_EVERY_MS = 10 * 60_000;
const ROUND_FAILURE_LOG_MS = 10_000;

/** Why a request got no answer, in a few words. */
function describeFailure(error: unknown, timeoutMs: number): string {
  if (error instanceof Error && (error.name === 'TimeoutError')) return `no answer within ${timeoutMs / 1000} s`;
  if (error instanceof Error && error.name === 'AbortError') return 'interrupted: the process stopped';
  const cause = (error as { cause?: { code?: string; message?: string } })?.cause;
  return cause?.code ?? cause?.message ?? (error instanceof Error ? error.message : String(error));
}

export class WebhookDeliverer {
  private readonly db: Db;
  private readonly logger: Logger;
  private readonly metrics: Metrics;
  private readonly options: Required<WebhookDelivererOptions>;
  private readonly inFlight = new Set<Promise<void>>();
  /** Aborts the requests in flight when the process stops. */
  private readonly stopping = new AbortController();
  private readonly loop: RoundLoop;
  private nextPruneAt = Date.now() + Math.random() * PRUNE_EVERY_MS;
  private failedRounds = 0;
  private lastFailureLogAt = 0;

  constructor(db: Db, logger: Logger, metrics: Metrics, options: WebhookDelivererOptions) {
    this.db = db;
    this.logger = logger;
    this.metrics = metrics;
    this.options = { pollMs: 250, maxInFlight: 8, leaseMs: 60_000, timeoutMs: WEBHOOK_TIMEOUT_MS, ...options };
    this.loop = new RoundLoop(
      async () => {
        await this.round();
        return this.options.pollMs;
      },
      (err) => {
        this.roundFailed(err);
        return this.options.pollMs;
      },
    );
  }

  start(): void {
    this.loop.start();
  }

  /** Runs a round now (after the current one). */
  poke(): void {
    this.loop.poke();
  }

  /** Stops looking for work; requests in flight are cut short and their deliveries released for a retry. */
  async stop(): Promise<void> {
    await this.loop.stop();
    this.stopping.abort();
    await Promise.all([...this.inFlight]);
  }

  private async round(): Promise<void> {
    if (Date.now() >= this.nextPruneAt) {
      this.nextPruneAt = Date.now() + PRUNE_EVERY_MS;
      await this.prune();
    }
    await sealWebhookEvents(this.db, { maxEvents: WEBHOOK_MAX_EVENTS, rowEvents: OUTBOX_ROW_EVENTS, windowMs: WEBHOOK_BATCH_WINDOW_MS });
    const free = this.options.maxInFlight - this.inFlight.size;
    const claims = await claimDueDeliveries(this.db, { limit: free, leaseMs: this.options.leaseMs });
    for (const claim of claims) {
      const sending: Promise<void> = this.attempt(claim)
        .catch((err: unknown) => this.logger.warn({ err: (err as Error).message, deliveryId: claim.id }, 'webhook outcome not written; the delivery goes again when its lease runs out'))
        .finally(() => {
          this.inFlight.delete(sending);
          // the next batch of the same stream may go now
          this.poke();
        });
      this.inFlight.add(sending);
    }
  }

  private async attempt(claim: ClaimedDelivery): Promise<void> {
    const started = performance.now();
    let status: number | null = null;
    let refusal: string | undefined;
    try {
      const body = deliveryBody(claim.id, await deliveryEvents(this.db, claim.id));
      const response = await fetch(claim.url, {
        method: 'POST',
        body,
        headers: {
          'content-type': 'application/json',
          'user-agent': USER_AGENT,
          [SIGNATURE_HEADER]: signDelivery(claim.secret, body),
          [DELIVERY_HEADER]: claim.id,
        },
        // a redirect is an answer like any other that is not 2xx: never followed
        redirect: 'manual',
        signal: AbortSignal.any([AbortSignal.timeout(this.options.timeoutMs), this.stopping.signal]),
      });
      status = response.status;
      refusal = refusalOf(status, response.headers.get('location'));
      await response.body?.cancel().catch(() => {});
    } catch (error) {
      refusal = describeFailure(error, this.options.timeoutMs);
    }
    this.metrics.webhookAttemptSeconds.observe((performance.now() - started) / 1000);

    const write = <T>(fn: () => Promise<T>) => retryTransient(fn, { maxRetryTime: 30_000 });
    if (refusal === undefined) {
      await write(() => markDelivered(this.db, claim, status!));
      this.metrics.webhookAttempts.inc({ result: 'delivered' });
      this.metrics.webhookEventsDelivered.inc(claim.eventCount);
      return;
    }
    const interrupted = this.stopping.signal.aborted;
    const next = interrupted ? { retryAt: Date.now() } : afterFailure(claim.attempts, claim.createdAt.getTime(), Date.now(), this.options.retryBaseMs);
    const retryAt = 'retryAt' in next ? new Date(next.retryAt) : null;
    await write(() => markAttemptFailed(this.db, claim, { status, error: refusal, retryAt }));
    this.metrics.webhookAttempts.inc({ result: retryAt ? 'retry' : 'expired' });
    if (!interrupted) {
      this.logger.warn(
        { webhookId: claim.webhookId, deliveryId: claim.id, attempts: claim.attempts, status, error: refusal, retryAt: retryAt?.toISOString() ?? null },
        retryAt ? 'webhook delivery failed; retrying' : 'webhook delivery failed for 24 h; given up',
      );
    }
  }

  /** A failing round (Postgres away) is logged once per ROUND_FAILURE_LOG_MS, with how many failed. */
  private roundFailed(err: unknown): void {
    this.failedRounds += 1;
    if (Date.now() - this.lastFailureLogAt < ROUND_FAILURE_LOG_MS) return;
    this.lastFailureLogAt = Date.now();
    this.logger.warn({ err: (err as Error).message, failedRounds: this.failedRounds }, 'webhook round failed; trying again');
    this.failedRounds = 0;
  }

  private async prune(): Promise<void> {
    const before = new Date(Date.now() - WEBHOOK_HISTORY_MS);
    let removed = 0;
    for (let n = -1; n !== 0 && !this.loop.isStopped; removed += n) n = await pruneWebhookHistory(this.db, before);
    if (removed > 0) this.logger.info({ removed }, 'old webhook deliveries deleted');
  }
}
