import type { Redis } from "@upstash/redis";
import { z } from "zod";
import { Plan, ProfileResponse } from "./contracts.ts";
import { jsonObjectSql, type Sql } from "./db.ts";
import { errorMessage, log } from "./log.ts";
import { askRedis } from "./redis.ts";

/**
 * Read-through cache of a user's profile and plan in Redis. What it holds changes only through
 * writes that end in `refreshProfile` or `forgetProfile`; the usage counter, which changes on
 * every metered request, is deliberately not in it, so it can never be served stale.
 *
 * Entries carry the row's version (`updated_at` in microseconds) and are only ever replaced by
 * a newer one (`SET_IF_NEWER`), so a slow reader that loaded the row before a write cannot put
 * the old row back after the writer refreshed it.
 */

/**
 * A profile as the cache holds it: what `ProfileResponse` answers but the email (which comes
 * from the token), and the row's version.
 */
export const Profile = ProfileResponse.omit({ email: true }).extend({ version: z.number() });
export type Profile = z.infer<typeof Profile>;

/** What `profile` and `sync` answer for a cached profile and the caller's email. */
export function profileResponse(profile: Profile, email: string | null): ProfileResponse {
  const { version: _, ...shown } = profile;
  return { ...shown, email };
}

/** What a deleted account leaves behind, so a still-valid token cannot refill the cache. */
interface Tombstone {
  deleted: true;
  version: number;
}

export const PROFILE_TTL_SECONDS = 300;
/** Longer than any access token lives, so no token outlives the tombstone of its account. */
const TOMBSTONE_TTL_SECONDS = 2 * 3600;

/** v2: plans gained their cost bounds; a v1 entry, without them, is never read. */
export const profileKey = (userId: string) => `profile:v2:${userId}`;

/**
 * Upstash runs a script under its global lock (no other command of the database meanwhile) unless
 * the first line says `allow-key-locking`; this one touches only KEYS[1], so it locks only that.
 */
const SET_IF_NEWER = `#!lua flags=allow-key-locking
local current = redis.call('GET', KEYS[1])
if current then
  local ok, decoded = pcall(cjson.decode, current)
  if ok and type(decoded) == 'table' and tonumber(decoded.version) and
     tonumber(decoded.version) >= tonumber(ARGV[2]) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
return 1`;

/** Puts `entry` in the cache unless it holds a version at least as new; answers 1 if it did. */
export function storeIfNewer(
  redis: Redis,
  userId: string,
  entry: Profile | Tombstone,
  ttl: number,
) {
  return redis.eval(SET_IF_NEWER, [profileKey(userId)], [
    JSON.stringify(entry),
    String(entry.version),
    String(ttl),
  ]);
}

/** A `Plan` as JSON, from the row of `public.plans` aliased `pl` in the query it is part of. */
export const PLAN_JSON = jsonObjectSql(Plan, "pl");

/**
 * A `Profile` as JSON, from the rows of `public.profiles` aliased `p` and of its plan aliased
 * `pl`. The version is `updated_at` in microseconds.
 */
export const PROFILE_JSON = jsonObjectSql(Profile, "p", {
  version: "(extract(epoch from p.updated_at) * 1000000)::float8",
  plan: PLAN_JSON,
});

/**
 * One database read of the profile joined with its plan, parsed: a row that does not fit the
 * contract fails here, on a cache miss, rather than reach a client.
 */
export async function loadProfile(sql: Sql, userId: string): Promise<Profile | null> {
  const [row] = await sql`
    select ${sql.unsafe(PROFILE_JSON)} as profile
      from public.profiles p
      join public.plans pl on pl.id = p.plan_id
     where p.id = ${userId}`;
  return row ? Profile.parse(row.profile) : null;
}

const loading = new Map<string, Promise<Profile | null>>();
/**
 * How long a load stays shared after its row is in Redis: requests whose Redis read went out
 * before the row arrived there still miss, and must join this load rather than start another.
 */
const SETTLE_MS = 250;

/** Concurrent misses for one user in this isolate share one database read. */
function loadOnce(sql: Sql, redis: Redis | null, userId: string): Promise<Profile | null> {
  let pending = loading.get(userId);
  if (!pending) {
    const forget = () => {
      if (loading.get(userId) === pending) loading.delete(userId);
    };
    pending = loadProfile(sql, userId).then(async (profile) => {
      if (profile && redis) {
        await storeIfNewer(redis, userId, profile, PROFILE_TTL_SECONDS).catch(() => {});
        setTimeout(forget, SETTLE_MS);
      } else {
        forget();
      }
      return profile;
    }, (error) => {
      forget();
      throw error;
    });
    loading.set(userId, pending);
  }
  return pending;
}

export interface CachedRead {
  profile: Profile | null;
  /** Whether Redis answered; false means the profile came from Postgres because it did not. */
  redisOk: boolean;
  /** Whether the answer came from the cache (a profile or a deleted account's tombstone). */
  cacheHit: boolean;
}

/**
 * The caller's profile: Redis first, Postgres on a miss or when Redis does not answer. `GETEX`
 * (with no option it only reads) is used rather than `GET` because the Upstash client batches
 * reads and writes into separate auto-pipelines, and the rate limiter's script is a write: this
 * way both travel in the same HTTP round trip.
 */
export async function readProfile(redis: Redis, sql: Sql, userId: string): Promise<CachedRead> {
  const cached = await askRedis(
    "profile cache read",
    () => redis.getex<Profile | Tombstone>(profileKey(userId)),
  );
  if (cached === undefined) {
    return { profile: await loadOnce(sql, null, userId), redisOk: false, cacheHit: false };
  }
  if (cached && "deleted" in cached) return { profile: null, redisOk: true, cacheHit: true };
  if (cached) return { profile: cached, redisOk: true, cacheHit: true };
  return { profile: await loadOnce(sql, redis, userId), redisOk: true, cacheHit: false };
}

/** After a write to the profile (or its plan): put the fresh row in the cache. */
export async function refreshProfile(
  redis: Redis,
  sql: Sql,
  userId: string,
): Promise<Profile | null> {
  // A load shared from before the write would hand the old row to this isolate's next misses.
  loading.delete(userId);
  const profile = await loadProfile(sql, userId);
  try {
    if (profile) await storeIfNewer(redis, userId, profile, PROFILE_TTL_SECONDS);
    else await forgetProfile(redis, userId);
  } catch (error) {
    // The entry expires within PROFILE_TTL_SECONDS; say so rather than fail the write.
    log.warn("profile cache refresh failed", {
      user_id: userId,
      error: errorMessage(error),
    });
  }
  return profile;
}

/** After an account is deleted: no later read may bring its profile back. */
export async function forgetProfile(redis: Redis, userId: string) {
  loading.delete(userId);
  await storeIfNewer(
    redis,
    userId,
    { deleted: true, version: Number.MAX_SAFE_INTEGER },
    TOMBSTONE_TTL_SECONDS,
  );
}
