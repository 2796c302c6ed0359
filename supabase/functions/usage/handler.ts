import type { UsageResponse } from "../_shared/contracts.ts";
import { json } from "../_shared/http.ts";
import { defineFunction } from "../_shared/pipeline.ts";
import { limitOf, type RateLimitClass, type RateLimitStanding } from "../_shared/rate-limit.ts";
import { currentUsage } from "../_shared/usage.ts";

/**
 * `GET usage`: the monthly quota (used, quota, remaining, when it resets) and, per rate-limit
 * class, the plan's per-minute limit with what is left of it now (this request's own `general`
 * hit included). Spends nothing and writes nothing: the quota is read with `current_usage`, the
 * windows with the rate limiter's read, from Redis, or from the Postgres counters while Redis
 * is down (as the limits themselves are then enforced).
 */

const rateWindow = (standing: RateLimitStanding) => ({
  limit: standing.limit,
  remaining: standing.remaining,
  resets_at: new Date(standing.resetAt).toISOString(),
});

export const handler = defineFunction(
  { name: "usage", methods: ["GET"], auth: "user", rateLimit: "general" },
  async ({ caller, profile, sql, rateLimiter }) => {
    // Issued in one tick, the three reads share one Upstash round trip.
    const standing = (rateClass: RateLimitClass) =>
      rateLimiter.remaining(rateClass, caller.id, limitOf(profile.plan, rateClass))
        .then(rateWindow);
    const [usage, ai, general, upload] = await Promise.all([
      currentUsage(sql, caller.id),
      standing("ai"),
      standing("general"),
      standing("upload"),
    ]);
    return json({ usage, rate_limits: { ai, general, upload } } satisfies UsageResponse);
  },
);
