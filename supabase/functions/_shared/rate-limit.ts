import { Ratelimit } from "@upstash/ratelimit";
import type { Redis } from "@upstash/redis";
import { Plan } from "./contracts.ts";
import type { Sql } from "./db.ts";
import { PLAN_JSON } from "./profile-cache.ts";
import { askRedis, REDIS_TIMEOUT_MS } from "./redis.ts";

/**
 * Per-minute rate limits by class, with the limit taken from the caller's plan. Redis (sliding
 * window, `@upstash/ratelimit`) decides when it answers within the timeout; otherwise the shared
 * Postgres limiter `rate_limit_hit` does, so the limit holds across every instance even while
 * Redis is down or slow. A timeout is never taken as permission.
 */

export type RateLimitClass = "ai" | "general" | "upload";

export interface RateLimitDecision {
  allowed: boolean;
  limit: number;
  remaining: number;
  /** When the window resets, in milliseconds since the epoch. */
  resetAt: number;
  source: "redis" | "postgres";
}

/** What is left of a window now, without spending any of it. */
export type RateLimitStanding = Omit<RateLimitDecision, "allowed">;

const WINDOW_SECONDS = 60;

export function limitOf(plan: Plan, rateClass: RateLimitClass): number {
  switch (rateClass) {
    case "ai":
      return plan.ai_per_minute;
    case "general":
      return plan.general_per_minute;
    case "upload":
      return plan.upload_per_minute;
  }
}

const ANONYMOUS_PLAN_TTL_MS = 60_000;
let anonymous: { plan: Promise<Plan>; until: number } | undefined;

/**
 * The limits for callers without a user: the free plan's, read from `plans` at most once a
 * minute per isolate (plans change rarely, and this path has no profile read to share a round
 * trip with).
 */
export function anonymousPlan(sql: Sql): Promise<Plan> {
  if (!anonymous || Date.now() >= anonymous.until) {
    const plan = sql`select ${
      sql.unsafe(PLAN_JSON)
    } as plan from public.plans as pl where pl.id = 'free'`
      .then(([row]) => Plan.parse(row.plan));
    anonymous = { plan, until: Date.now() + ANONYMOUS_PLAN_TTL_MS };
    plan.catch(() => anonymous = undefined);
  }
  return anonymous.plan;
}

const limiters = new Map<string, Ratelimit>();

/**
 * One limiter per class and limit, made once per isolate so the library's cache of identifiers
 * it already refused keeps working. All limiters of a class share its prefix, hence its counters:
 * a plan change moves the user to another limit, not to a fresh window.
 */
function limiter(redis: Redis, rateClass: RateLimitClass, limit: number): Ratelimit {
  const key = `${rateClass}:${limit}`;
  let found = limiters.get(key);
  if (!found) {
    found = new Ratelimit({
      redis,
      limiter: Ratelimit.slidingWindow(limit, `${WINDOW_SECONDS} s`),
      prefix: `ratelimit:${rateClass}`,
      timeout: REDIS_TIMEOUT_MS,
      analytics: false,
    });
    limiters.set(key, found);
  }
  return found;
}

/** The Postgres counter of a class and identifier, named like the Redis keys of its limiter. */
const postgresKey = (rateClass: RateLimitClass, identifier: string) =>
  `ratelimit:${rateClass}:${identifier}`;

async function postgresDecision(
  sql: Sql,
  rateClass: RateLimitClass,
  identifier: string,
  limit: number,
): Promise<RateLimitDecision> {
  const [row] = await sql<{ allowed: boolean; remaining: number; reset_at: Date }[]>`
    select allowed, remaining, reset_at
      from public.rate_limit_hit(${postgresKey(rateClass, identifier)}, ${limit},
                                 ${WINDOW_SECONDS})`;
  return {
    allowed: row.allowed,
    limit,
    remaining: row.remaining,
    resetAt: row.reset_at.getTime(),
    source: "postgres",
  };
}

async function postgresStanding(
  sql: Sql,
  rateClass: RateLimitClass,
  identifier: string,
  limit: number,
): Promise<RateLimitStanding> {
  const [row] = await sql<{ remaining: number; reset_at: Date }[]>`
    select remaining, reset_at
      from public.rate_limit_remaining(${postgresKey(rateClass, identifier)}, ${limit},
                                       ${WINDOW_SECONDS})`;
  return { limit, remaining: row.remaining, resetAt: row.reset_at.getTime(), source: "postgres" };
}

export interface RateLimiter {
  check(rateClass: RateLimitClass, identifier: string, limit: number): Promise<RateLimitDecision>;
  /**
   * What `check` would still let through in the current window, spending nothing; read from
   * wherever `check` counts right now. Reads of several classes issued together travel in one
   * Upstash round trip (auto-pipelining).
   */
  remaining(
    rateClass: RateLimitClass,
    identifier: string,
    limit: number,
  ): Promise<RateLimitStanding>;
}

export function createRateLimiter(deps: { redis: () => Redis; sql: () => Sql }): RateLimiter {
  return {
    async check(rateClass, identifier, limit) {
      const result = await askRedis("rate limit", async () => {
        const answer = await limiter(deps.redis(), rateClass, limit).limit(identifier);
        if (answer.reason === "timeout") throw new Error(`no answer within ${REDIS_TIMEOUT_MS} ms`);
        return answer;
      });
      if (!result) return await postgresDecision(deps.sql(), rateClass, identifier, limit);
      return {
        allowed: result.success,
        limit: result.limit,
        remaining: result.remaining,
        resetAt: result.reset,
        source: "redis",
      };
    },
    async remaining(rateClass, identifier, limit) {
      const result = await askRedis(
        "rate limit read",
        () => limiter(deps.redis(), rateClass, limit).getRemaining(identifier),
      );
      if (!result) return await postgresStanding(deps.sql(), rateClass, identifier, limit);
      return {
        limit: result.limit,
        remaining: result.remaining,
        resetAt: result.reset,
        source: "redis",
      };
    },
  };
}
