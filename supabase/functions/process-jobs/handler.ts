import { json } from "../_shared/http.ts";
import { JOB_HANDLERS, runnableJobTypes } from "../_shared/jobs/registry.ts";
import { runJobs } from "../_shared/jobs/worker.ts";
import { defineFunction } from "../_shared/pipeline.ts";
import { stripe } from "../_shared/stripe.ts";

/**
 * `POST process-jobs` (service role): one run of the background job worker, woken every minute
 * by pg_cron through pg_net (the local stack wakes it itself). Answers with what the run did.
 */

export const handler = defineFunction(
  { name: "process-jobs", methods: ["POST"], auth: "service_role", stripe },
  async ({ config, sql, redis, stripe }) => {
    const summary = await runJobs(
      { sql, redis, stripe, config },
      JOB_HANDLERS,
      {
        worker: `process-jobs:${crypto.randomUUID()}`,
        types: runnableJobTypes(config, JOB_HANDLERS),
        batchSize: config.JOB_BATCH_SIZE,
        concurrency: config.JOB_CONCURRENCY,
        timeoutMs: config.JOB_TIMEOUT_MS,
      },
    );
    return json(summary);
  },
);
