import type { HealthResponse } from "../_shared/contracts.ts";
import { json } from "../_shared/http.ts";
import { errorMessage, log } from "../_shared/log.ts";
import { defineFunction } from "../_shared/pipeline.ts";
import { withTimeout } from "../_shared/timeout.ts";

/**
 * `GET health`, no token: whether Postgres and Redis answer within `HEALTH_CHECK_TIMEOUT_MS`.
 * Anyone can ask, so the answer says only "ok" or "down" per dependency; what went wrong (the
 * driver's or Upstash's error, how long it took, the deployed version) goes to the log under the
 * request id. Rate limited per client address like any caller without a user, and it writes
 * nothing to the database.
 */

type Dependency = keyof HealthResponse["checks"];

export const handler = defineFunction(
  { name: "health", methods: ["GET"], auth: "none", rateLimit: "general" },
  async ({ config, requestId, sql, redis }) => {
    const check = async (dependency: Dependency, probe: () => Promise<unknown>) => {
      const started = performance.now();
      try {
        await withTimeout(probe(), config.HEALTH_CHECK_TIMEOUT_MS, dependency);
        return "ok" as const;
      } catch (error) {
        log.warn("health check failed", {
          function: "health",
          request_id: requestId,
          dependency,
          error: errorMessage(error),
          duration_ms: Math.round(performance.now() - started),
          version: config.APP_VERSION,
        });
        return "down" as const;
      }
    };
    const [database, cache] = await Promise.all([
      check("database", () => sql`select 1`),
      check("redis", () => redis.ping()),
    ]);
    const ok = database === "ok" && cache === "ok";
    return json(
      {
        status: ok ? "ok" : "degraded",
        checks: { database, redis: cache },
      } satisfies HealthResponse,
      { status: ok ? 200 : 503 },
    );
  },
);
