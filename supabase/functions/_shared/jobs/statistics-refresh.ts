import { type JobHandler, withJobTimeout } from "./job.ts";

/** `statistics.refresh` {}: recomputes the user statistics now rather than at the next hour. */
export const refreshStatistics: JobHandler = {
  needsStripe: false,
  async run(_payload, ctx) {
    await withJobTimeout(ctx, (tx) => tx`select public.refresh_user_statistics()`);
  },
};
