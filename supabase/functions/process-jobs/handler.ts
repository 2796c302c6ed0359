import type { Redis } from "@upstash/redis";
import { type Sql, sql } from "../_shared/db.ts";
import { json } from "../_shared/http.ts";
import type { JobHandler } from "../_shared/jobs/job.ts";
import { JOB_HANDLERS, runnableJobTypes } from "../_shared/jobs/registry.ts";
import { runJobs } from "../_shared/jobs/worker.ts";
import { defineFunction } from "../_shared/pipeline.ts";
import { redis } from "../_shared/redis.ts";
import { type Stripe, stripe } from "../_shared/stripe.ts";

/**
 * `POST process-jobs` (service role): one run of the background job worker, woken every minute
 * by pg_cron through pg_net (the local stack wakes it itself). Answers with what the run did.
 */

export interface ProcessJobsDeps {
  sql: () => Sql;
  redis: () => Redis;
  stripe: () => Promise<Stripe>;
  handlers: Readonly<Record<string, JobHandler>>;
}

export function createProcessJobsHandler(
  deps: ProcessJobsDeps = { sql, redis, stripe: () => stripe(), handlers: JOB_HANDLERS },
) {
  return defineFunction(
    { name: "process-jobs", methods: ["POST"], auth: "service_role" },
    async ({ config }) => {
      const summary = await runJobs(
        { sql: deps.sql(), redis: deps.redis(), stripe: deps.stripe, config },
        deps.handlers,
        {
          worker: `process-jobs:${crypto.randomUUID()}`,
          types: runnableJobTypes(config, deps.handlers),
          batchSize: config.JOB_BATCH_SIZE,
          concurrency: config.JOB_CONCURRENCY,
          timeoutMs: config.JOB_TIMEOUT_MS,
        },
      );
      return json(summary);
    },
  );
}
