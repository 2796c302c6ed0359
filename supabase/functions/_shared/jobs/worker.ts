import type { ProcessJobsResponse } from "../contracts.ts";
import { reportError } from "../error-tracking.ts";
import { errorMessage, log } from "../log.ts";
import { withTimeout } from "../timeout.ts";
import type { JobContext, JobHandler } from "./job.ts";

/**
 * One run of the job worker: claims due jobs in waves of `concurrency` (so every claimed job
 * starts at once and its lock only has to cover its own timeout), runs each through its handler
 * with a deadline, and reports each outcome to the queue (`complete_job` / `fail_job`, which
 * schedules the retry with a growing backoff or makes the job dead after its last attempt). The
 * queue's SKIP LOCKED claim means concurrent runs never get the same job.
 */

export interface WorkerOptions {
  /** Unique per run: only the claimer may complete or fail a job. */
  worker: string;
  types: string[];
  batchSize: number;
  concurrency: number;
  timeoutMs: number;
}

/** Time to report an outcome after a job's deadline, before its lock lets others claim it. */
const LOCK_MARGIN_S = 5;

interface ClaimedJob {
  id: string;
  type: string;
  payload: unknown;
  attempts: number;
  max_attempts: number;
}

export async function runJobs(
  ctx: JobContext,
  handlers: Readonly<Record<string, JobHandler>>,
  options: WorkerOptions,
): Promise<ProcessJobsResponse> {
  const summary: ProcessJobsResponse = { claimed: 0, succeeded: 0, failed: 0, dead: 0 };
  if (options.types.length === 0) return summary;
  const lockSeconds = Math.ceil(options.timeoutMs / 1000) + LOCK_MARGIN_S;

  const runOne = async (job: ClaimedJob) => {
    try {
      await withTimeout(
        handlers[job.type].run(job.payload, ctx),
        options.timeoutMs,
        `job ${job.id} (${job.type})`,
      );
      await ctx.sql`select public.complete_job(${job.id}, ${options.worker})`;
      summary.succeeded++;
    } catch (error) {
      const message = errorMessage(error);
      const [{ status }] = await ctx.sql<{ status: string | null }[]>`
        select public.fail_job(${job.id}, ${options.worker}, ${message}) as status`;
      if (status === "dead") summary.dead++;
      else summary.failed++;
      log.warn(status === "dead" ? "job dead" : "job failed", {
        job_id: job.id,
        type: job.type,
        attempt: job.attempts,
        max_attempts: job.max_attempts,
        error: message,
      });
      reportError(error, { function: "process-jobs", job_type: job.type, job_id: job.id });
    }
  };

  while (summary.claimed < options.batchSize) {
    const wave = Math.min(options.concurrency, options.batchSize - summary.claimed);
    const jobs = await ctx.sql<ClaimedJob[]>`
      select id, type, payload, attempts, max_attempts
        from public.claim_jobs(${options.worker}, ${wave}, ${lockSeconds},
                               ${options.types}::text[])`;
    if (jobs.length === 0) break;
    summary.claimed += jobs.length;
    await Promise.all(jobs.map(runOne));
  }
  return summary;
}
