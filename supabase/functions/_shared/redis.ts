import { Redis } from "@upstash/redis";
import { config } from "./config.ts";

let client: Redis | undefined;

/**
 * The isolate's one Upstash client. Auto-pipelining folds the commands a request issues in the
 * same tick into one HTTP round trip. Retries are off: when Redis is slow or gone, callers fall
 * back (to Postgres) within their own timeout instead of waiting through a retry ladder.
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
    });
  }
  return client;
}
