import { Redis } from "@upstash/redis";
import { config } from "./config.ts";
import { errorMessage, log } from "./log.ts";
import { withTimeout } from "./timeout.ts";

let client: Redis | undefined;

/**
 * The isolate's one Upstash client. Auto-pipelining folds the commands a request issues in the
 * same tick into one HTTP round trip. Retries are off: when Redis is slow or gone, callers fall
 * back (to Postgres) within their own timeout instead of waiting through a retry ladder.
 * Responses come as plain JSON rather than base64: everything stored here is UTF-8 text (JSON
 * and counters), and decoding base64 was the largest piece of the client's CPU per request.
 */
export function redis(): Redis {
  if (!client) {
    const c = config();
    client = new Redis({
      url: c.UPSTASH_REDIS_REST_URL,
      token: c.UPSTASH_REDIS_REST_TOKEN,
      enableAutoPipelining: true,
      retry: { retries: 0 },
      enableTelemetry: false,
      responseEncoding: false,
    });
  }
  return client;
}

/**
 * Whether Redis is worth asking. After a failure (an error or no answer within the caller's
 * timeout) requests go straight to their Postgres fallback, and one request per
 * `RETRY_INTERVAL_MS` tries Redis again, so a slow Redis costs one timeout per interval rather
 * than one per request. Each switch is logged once.
 */
export const REDIS_TIMEOUT_MS = 1_000;
const RETRY_INTERVAL_MS = 2_000;
let failingSince: number | null = null;
let lastAttempt = 0;

export const redisHealth = {
  shouldTry(): boolean {
    const now = Date.now();
    if (failingSince !== null && now - lastAttempt < RETRY_INTERVAL_MS) return false;
    lastAttempt = now;
    return true;
  },
  failed(reason: string) {
    if (failingSince === null) {
      failingSince = Date.now();
      log.warn("redis unavailable; using the Postgres fallbacks", { reason });
    }
  },
  succeeded() {
    if (failingSince !== null) {
      log.info("redis is back", { after_ms: Date.now() - failingSince });
      failingSince = null;
    }
  },
};

/**
 * One Redis operation under the health switch above: its result, or `undefined` when Redis is
 * being skipped, fails, or does not answer within `REDIS_TIMEOUT_MS`, which sends the caller to
 * its Postgres fallback. `operation` throws to report an answer that is no answer.
 */
export async function askRedis<T>(
  what: string,
  operation: () => Promise<T>,
): Promise<T | undefined> {
  if (!redisHealth.shouldTry()) return undefined;
  try {
    const value = await withTimeout(operation(), REDIS_TIMEOUT_MS, what);
    redisHealth.succeeded();
    return value;
  } catch (error) {
    redisHealth.failed(errorMessage(error));
    return undefined;
  }
}
