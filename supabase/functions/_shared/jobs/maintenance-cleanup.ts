import { type JobHandler, withJobTimeout } from "./job.ts";

/**
 * `maintenance.cleanup` {}: what the nightly and hourly schedules do, on demand: expired cache
 * entries and rate-limit windows, old finished jobs, event partitions ahead and past retention.
 * Each step is its own transaction, so a partition lock is never held across the purges.
 */
export const cleanUpExpiredData: JobHandler = {
  needsStripe: false,
  async run(_payload, ctx) {
    await withJobTimeout(ctx, (tx) => tx`select public.purge_ai_response_cache()`);
    await withJobTimeout(ctx, (tx) => tx`select public.purge_rate_limit_hits()`);
    await withJobTimeout(ctx, (tx) => tx`select public.purge_finished_jobs()`);
    await withJobTimeout(ctx, (tx) => tx`select count(*) from public.create_event_partitions()`);
    await withJobTimeout(
      ctx,
      (tx) => tx`select count(*) from public.drop_expired_event_partitions()`,
    );
  },
};
