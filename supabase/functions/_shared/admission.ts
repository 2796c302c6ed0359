import type { Caller } from "./auth.ts";
import type { Plan } from "./contracts.ts";
import { isDatabaseUnreachable, sql } from "./db.ts";
import { ApiError } from "./errors.ts";
import { errorMessage, log } from "./log.ts";
import type { RequestSignals } from "./metrics.ts";
import { type Profile, readProfile } from "./profile-cache.ts";
import {
  anonymousPlan,
  createRateLimiter,
  limitOf,
  type RateLimitClass,
  type RateLimitDecision,
} from "./rate-limit.ts";
import { redis } from "./redis.ts";

/**
 * Admission: whether a request goes on to its handler, and on what terms. For a signed-in user,
 * their profile and plan (through the profile cache) and, when the function is rate limited, the
 * limit of that plan; for a caller without a user, the free plan's limit by client address. What
 * comes out is the profile, the decision and the headers it implies; a refusal is thrown as 429
 * `rate_limited` carrying the same headers.
 */

export interface Admission {
  /** The caller's profile and plan; null for a caller without a user. */
  profile: Profile | null;
  /** The rate-limit decision that let the request in; null when none was taken. */
  decision: RateLimitDecision | null;
  /** What the decision implies for the response (`X-RateLimit-*`). */
  headers: Record<string, string>;
  /** What admission met on its way, for the request's metrics row. */
  signals: RequestSignals;
}

export interface AdmissionRequest {
  req: Request;
  requestId: string;
  caller: Caller | null;
  /** The function's limit class, when it is rate limited. */
  rateClass: RateLimitClass | undefined;
}

/** The isolate's rate limiter: the one admission counts with, also handed to handlers. */
export const rateLimiter = createRateLimiter({ redis, sql });

const NO_SIGNALS: RequestSignals = {
  profile_cache_hit: null,
  ai_cache_hit: null,
  redis_fallback: null,
};

/** The one entry point: the terms a request is admitted on, or the ApiError refusing it. */
export async function admit(request: AdmissionRequest): Promise<Admission> {
  const { caller, rateClass } = request;
  if (caller?.kind === "user") return await admitUser(caller, rateClass);
  const notLimited = { profile: null, decision: null, headers: {}, signals: { ...NO_SIGNALS } };
  if (!rateClass) return notLimited;
  const decision = await anonymousDecision(request, rateClass);
  return decision ? allowedOrRefused(rateClass, null, decision, notLimited.signals) : notLimited;
}

/**
 * The plan each user had on their last request here. With it, the profile read and the rate
 * limit check go out together in one Upstash round trip instead of one after the other; the
 * profile then confirms the guess, and only when the plan changed is the limit asked again.
 */
const planHints = new Map<string, Plan>();
const MAX_PLAN_HINTS = 10_000;

async function admitUser(
  caller: Extract<Caller, { kind: "user" }>,
  rateClass: RateLimitClass | undefined,
): Promise<Admission> {
  const hint = planHints.get(caller.id);
  const guessed = hint && rateClass
    ? rateLimiter.check(rateClass, caller.id, limitOf(hint, rateClass))
    : null;
  // Should the profile read fail, the guess is left unawaited: it must not become unhandled.
  guessed?.catch(() => {});
  const { profile, redisOk, cacheHit } = await readProfile(redis(), sql(), caller.id);
  if (!profile) throw new ApiError("unauthorized", "this account no longer exists");
  if (planHints.size >= MAX_PLAN_HINTS) planHints.clear();
  planHints.set(caller.id, profile.plan);
  const signals = { ...NO_SIGNALS, profile_cache_hit: cacheHit, redis_fallback: !redisOk };
  if (!rateClass) return { profile, decision: null, headers: {}, signals };

  const limit = limitOf(profile.plan, rateClass);
  let decision = guessed ? await guessed : null;
  if (!decision || decision.limit !== limit) {
    decision = await rateLimiter.check(rateClass, caller.id, limit);
  }
  signals.redis_fallback ||= decision.source === "postgres";
  return allowedOrRefused(rateClass, profile, decision, signals);
}

/** A caller without a user is limited by the address the platform's proxy saw. */
function clientIp(req: Request): string {
  const forwarded = req.headers.get("x-forwarded-for")?.split(",").map((part) => part.trim());
  // The last entry is the one the proxy added; earlier ones are whatever the client claimed.
  return forwarded?.at(-1) || "unknown";
}

async function anonymousDecision(
  { req, requestId }: AdmissionRequest,
  rateClass: RateLimitClass,
): Promise<RateLimitDecision | null> {
  try {
    const plan = await anonymousPlan(sql());
    return await rateLimiter.check(rateClass, `ip:${clientIp(req)}`, limitOf(plan, rateClass));
  } catch (error) {
    if (!isDatabaseUnreachable(error)) throw error;
    // Without a user there is nothing to charge, and health must still report the outage: while
    // the free plan cannot be read or no store can count, such a caller is let through.
    log.warn("rate limit skipped for a caller without a user: database unreachable", {
      request_id: requestId,
      error: errorMessage(error),
    });
    return null;
  }
}

function allowedOrRefused(
  rateClass: RateLimitClass,
  profile: Profile | null,
  decision: RateLimitDecision,
  signals: RequestSignals,
): Admission {
  const headers = rateLimitHeaders(decision);
  if (!decision.allowed) {
    throw new ApiError(
      "rate_limited",
      `too many ${rateClass} requests; try again in a moment`,
      { retry_after: Number(headers["retry-after"]) },
      headers,
    );
  }
  return { profile, decision, headers, signals };
}

/** The headers a limit decision implies; a refusal adds `Retry-After`. */
function rateLimitHeaders(decision: RateLimitDecision): Record<string, string> {
  const headers: Record<string, string> = {
    "x-ratelimit-limit": String(decision.limit),
    "x-ratelimit-remaining": String(decision.remaining),
    "x-ratelimit-reset": String(Math.ceil(decision.resetAt / 1000)),
  };
  if (!decision.allowed) {
    headers["retry-after"] = String(Math.max(1, Math.ceil((decision.resetAt - Date.now()) / 1000)));
  }
  return headers;
}
