import type { Redis } from "@upstash/redis";
import type { Sql } from "./db.ts";
import { errorMessage, log } from "./log.ts";
import { askRedis } from "./redis.ts";

/**
 * The AI response cache: model answers keyed by the SHA-256 of everything that decides them, so
 * an identical request is answered without calling (or paying for) the model. Redis answers
 * first; `ai_response_cache` in Postgres holds every entry too, so a Redis miss, eviction or
 * outage costs a database read rather than a model call, and a Postgres hit is copied back into
 * Redis for the next request.
 *
 * An entry belongs to the user whose request produced it (`owner`), and callers put that user in
 * the key, so an answer only ever comes back to its owner: `cached: true` must not tell anyone what
 * someone else asked. Only text analyses of a type the operator lists in
 * `ai_shareable_analysis_types` (inputs that carry no personal data) are shared, owned by no one.
 * Deleting an account deletes its entries: the rows by cascade, the Redis copies through the
 * `ai_cache.forget` job.
 */

export const aiCacheRedisKey = (key: string) => `ai:v1:${key}`;

/** What both stores hold: the answer and when it was made, which bounds any later copy's TTL. */
interface Entry<T> {
  answer: T;
  stored_at: number;
}

/** JSON with object keys sorted at every level, so equal values always give equal text. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const entries = Object.entries(value)
      .filter(([, item]) => item !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([key, item]) => `${JSON.stringify(key)}:${canonicalJson(item)}`);
    return `{${entries.join(",")}}`;
  }
  return JSON.stringify(value);
}

export async function sha256Hex(text: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return Array.from(new Uint8Array(digest), (byte) => byte.toString(16).padStart(2, "0")).join("");
}

/** The cache key of a request: callers pass the model, the function and the normalised input. */
export function aiCacheKey(parts: Record<string, unknown>): Promise<string> {
  return sha256Hex(canonicalJson(parts));
}

const nowSeconds = () => Math.floor(Date.now() / 1000);

async function toRedis<T>(redis: Redis, key: string, entry: Entry<T>, ttlSeconds: number) {
  if (ttlSeconds <= 0) return;
  await askRedis(
    "ai cache write",
    () => redis.set(aiCacheRedisKey(key), entry, { ex: ttlSeconds }),
  );
}

/** The cached answer for `key`, or null. Never fails because Redis did. */
export async function readAiCache<T>(
  redis: Redis,
  sql: Sql,
  key: string,
  ttlSeconds: number,
): Promise<T | null> {
  const cached = await askRedis("ai cache read", () => redis.get<Entry<T>>(aiCacheRedisKey(key)));
  if (cached) return cached.answer;
  const [row] = await sql<{ entry: Entry<T> | null }[]>`
    select public.ai_cache_get(${key}) as entry`;
  if (!row.entry) return null;
  // Redis did answer (it just had no entry): give it the remainder of the entry's lifetime.
  if (cached === null) {
    await toRedis(redis, key, row.entry, row.entry.stored_at + ttlSeconds - nowSeconds());
  }
  return row.entry.answer;
}

/**
 * Stores a fresh model answer in both places. A failure here is logged, not thrown: the caller
 * already paid for the answer and gets it; only the next identical request misses the cache.
 */
export async function writeAiCache<T>(
  redis: Redis,
  sql: Sql,
  entry: { key: string; answer: T; model: string; ttlSeconds: number; owner: string | null },
): Promise<void> {
  const { key, model, ttlSeconds, owner } = entry;
  const stored: Entry<T> = { answer: entry.answer, stored_at: nowSeconds() };
  await Promise.all([
    toRedis(redis, key, stored, ttlSeconds),
    sql`select public.ai_cache_put(${key}, ${sql.json(stored as never)}, ${model}, ${ttlSeconds},
                                   ${owner})`
      .then(() => {}, (error) => log.warn("ai cache write failed", { error: errorMessage(error) })),
  ]);
}

const SHAREABLE_TTL_MS = 60_000;
let shareable: { types: Promise<Set<string>>; until: number } | undefined;

/**
 * The analysis types whose text answers may serve every user, read at most once a minute per
 * isolate: an operator's change to the list applies within a minute.
 */
export function shareableAnalysisTypes(sql: Sql): Promise<Set<string>> {
  if (!shareable || Date.now() >= shareable.until) {
    const types = sql<{ analysis_type: string }[]>`
      select analysis_type from public.ai_shareable_analysis_types`
      .then((rows) => new Set(rows.map((row) => row.analysis_type)));
    shareable = { types, until: Date.now() + SHAREABLE_TTL_MS };
    types.catch(() => shareable = undefined);
  }
  return shareable.types;
}

/** Redis deletes per command when forgetting a user's entries. */
const FORGET_BATCH = 500;

/** Deletes the Redis copies of these entries (their rows went with the account). */
export async function forgetAiCacheEntries(redis: Redis, keys: readonly string[]): Promise<void> {
  for (let start = 0; start < keys.length; start += FORGET_BATCH) {
    await redis.del(...keys.slice(start, start + FORGET_BATCH).map(aiCacheRedisKey));
  }
}
