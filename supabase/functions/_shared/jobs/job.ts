import type { Redis } from "@upstash/redis";
import type { Config } from "../config.ts";
import type { Sql, Tx } from "../db.ts";
import type { Stripe } from "../stripe.ts";

/**
 * What a background job handler is. A handler may run more than once for one job (a worker can
 * die after the work and before reporting it, and a timed-out attempt is retried while the first
 * may still be finishing), so every handler is idempotent: running it again changes nothing more.
 */

export interface JobContext {
  sql: Sql;
  redis: Redis;
  stripe: () => Promise<Stripe>;
  config: Config;
}

export interface JobHandler {
  /**
   * Only workers with Stripe configured claim this job: one without would fail every attempt and
   * leave the job dead, where waiting keeps it for a worker that can run it.
   */
  needsStripe: boolean;
  /** Likewise for a model: only workers with `OPENAI_API_KEY` claim this job. */
  needsAi?: boolean;
  run(payload: unknown, ctx: JobContext): Promise<void>;
}

/**
 * Runs maintenance statements in a transaction whose statement timeout is the job's, not the
 * request-sized default of the pool: a refresh or a purge may rightly take longer.
 */
export function withJobTimeout<T>(ctx: JobContext, work: (tx: Tx) => Promise<T>): Promise<T> {
  return ctx.sql.begin(async (tx) => {
    await tx`select set_config('statement_timeout', ${String(ctx.config.JOB_TIMEOUT_MS)}, true)`;
    return await work(tx);
  }) as Promise<T>;
}
