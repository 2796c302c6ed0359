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

/**
 * The identifiers a limiter's Redis window refused, each until that window resets: the library's
 * ephemeral cache, handed to it here so that a refusal from it is told apart from an answer of
 * Redis. It only remembers refusals, it never counts: a retry within the block is refused without
 * an Upstash command (the count of the window cannot have gone down since, as refused requests are
 * not counted), and every other request is decided by Redis (or Postgres) as before. It can refuse
 * a retry that comes before the announced reset but after the previous minute's weight in the
 * sliding window has faded enough; it never lets one more through.
 */
class BlockedIdentifiers extends Map<string, number> {
  static readonly MAX = 10_000;

  override set(identifier: string, resetAt: number): this {
    // Entries are otherwise dropped only when looked up after their reset: a flood of addresses
    // must not grow the isolate without bound.
    if (this.size >= BlockedIdentifiers.MAX) {
      const now = Date.now();
      for (const [key, until] of this) if (until <= now) this.delete(key);
      if (this.size >= BlockedIdentifiers.MAX) this.clear();
    }
    return super.set(identifier, resetAt);
  }

  /** When the refusal of `identifier` ends, or null when it is not refused now. */
  blockedUntil(identifier: string): number | null {
    const until = this.get(identifier);
    return until !== undefined && until > Date.now() ? until : null;
  }
}

interface Limiter {
  ratelimit: Ratelimit;
  blocked: BlockedIdentifiers;
}

const limiters = new Map<string, Limiter>();

/**
 * One limiter per class and limit, made once per isolate so that its refusals are remembered. All
 * limiters of a class share its prefix, hence its counters: a plan change moves the user to another
 * limit (and its own memory of refusals), not to a fresh window.
 */
function limiter(redis: Redis, rateClass: RateLimitClass, limit: number): Limiter {
  const key = `${rateClass}:${limit}`;
  let found = limiters.get(key);
  if (!found) {
    const blocked = new BlockedIdentifiers();
    found = {
      blocked,
      ratelimit: new Ratelimit({
        redis,
        limiter: Ratelimit.slidingWindow(limit, `${WINDOW_SECONDS} s`),
        prefix: redisPrefix(rateClass),
        timeout: REDIS_TIMEOUT_MS,
        analytics: false,
        ephemeralCache: blocked,
      }),
    };
    limiters.set(key, found);
  }
  return found;
}

const redisPrefix = (rateClass: RateLimitClass) => `ratelimit:${rateClass}`;

/** The Postgres counter of a class and identifier, named like the Redis keys of its limiter. */
const postgresKey = (rateClass: RateLimitClass, identifier: string) =>
  `${redisPrefix(rateClass)}:${identifier}`;

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
      const { ratelimit, blocked } = limiter(deps.redis(), rateClass, limit);
      // Answered from memory, outside `askRedis`: it says nothing about whether Redis is back.
      const blockedUntil = blocked.blockedUntil(postgresKey(rateClass, identifier));
      if (blockedUntil !== null) {
        return { allowed: false, limit, remaining: 0, resetAt: blockedUntil, source: "redis" };
      }
      const result = await askRedis("rate limit", async () => {
        const answer = await ratelimit.limit(identifier);
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
        () => limiter(deps.redis(), rateClass, limit).ratelimit.getRemaining(identifier),
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
