import type { Redis } from "@upstash/redis";
import { type Sql, sql } from "../_shared/db.ts";
import { json } from "../_shared/http.ts";
import { defineFunction } from "../_shared/pipeline.ts";
import { redis } from "../_shared/redis.ts";
import { withTimeout } from "../_shared/timeout.ts";
import { errorMessage } from "../_shared/log.ts";

export interface HealthDeps {
  sql: () => Sql;
  redis: () => Redis;
}

type Check = { ok: true; latency_ms: number } | { ok: false; latency_ms: number; error: string };

async function check(probe: () => Promise<unknown>, timeoutMs: number, what: string) {
  const started = performance.now();
  const latency = () => Math.round((performance.now() - started) * 10) / 10;
  try {
    await withTimeout(probe(), timeoutMs, what);
    return { ok: true, latency_ms: latency() } satisfies Check;
  } catch (error) {
    const message = errorMessage(error);
    return { ok: false, latency_ms: latency(), error: message } satisfies Check;
  }
}

const startedAt = Date.now();

export function createHealthHandler(deps: HealthDeps = { sql, redis }) {
  return defineFunction(
    { name: "health", methods: ["GET"], auth: "none" },
    async ({ config }) => {
      const timeout = config.HEALTH_CHECK_TIMEOUT_MS;
      const [database, cache] = await Promise.all([
        check(() => deps.sql()`select 1`, timeout, "database"),
        check(() => deps.redis().ping(), timeout, "redis"),
      ]);
      const ok = database.ok && cache.ok;
      return json({
        status: ok ? "ok" : "degraded",
        checks: { database, redis: cache },
        version: config.APP_VERSION,
        uptime_s: Math.round((Date.now() - startedAt) / 1000),
      }, { status: ok ? 200 : 503, headers: { "cache-control": "no-store" } });
    },
  );
}
