import { z } from "zod";
import { writeAiCache } from "../ai-cache.ts";
import { analyzeRequest, type HashedInput } from "../analysis.ts";
import { AnalyzeInput } from "../contracts.ts";
import type { JobHandler } from "./job.ts";

/**
 * `ai.analyze`: the model call of a background analysis (`analyze` with mode "background").
 * The unit was taken by the request before the job was queued, so:
 *
 * - the model is called only while the analysis is `pending` (a failed one was refunded; a
 *   done one was delivered), and a run after a crash finds it done and stops;
 * - success is one statement (`complete_background_analysis`): result stored, status done,
 *   `analysis.ready` queued, and only if it was still pending, so a retry that succeeds late
 *   stores nothing twice and the unit is charged once;
 * - a failure is left to the queue: retried after its backoff, and when the job ends dead
 *   (last attempt failed, or its worker vanished), the database's trigger fails the analysis
 *   and refunds its unit, once (`fail_background_analysis`).
 */

const Payload = z.object({
  analysis_id: z.uuid(),
  user_id: z.uuid(),
  request_id: z.string(),
  analysis_type: z.string(),
  input: z.union([
    AnalyzeInput,
    z.object({
      kind: z.literal("storage"),
      bucket: z.enum(["user-uploads", "avatars"]),
      path: z.string(),
      version: z.string(),
    }),
  ]),
  cache_key: z.string(),
  cache_owner: z.uuid().nullable(),
  max_output_tokens: z.number().int().positive(),
});
export type AnalyzeJobPayload = z.infer<typeof Payload>;

export const analyzeInBackground: JobHandler = {
  needsStripe: false,
  needsAi: true,
  async run(payload, { sql, redis, config }) {
    const job = Payload.parse(payload);
    const [pending] = await sql`
      select 1 from public.analyses
       where id = ${job.analysis_id} and user_id = ${job.user_id} and status = 'pending'`;
    if (!pending) return;
    const result = await analyzeRequest(
      config,
      { analysisType: job.analysis_type, input: job.input as HashedInput },
      { requestId: job.request_id, maxOutputTokens: job.max_output_tokens },
    );
    const model = config.OPENAI_MODEL;
    const [{ completed }] = await sql<{ completed: boolean }[]>`
      select public.complete_background_analysis(${job.analysis_id}, ${sql.json(result)},
                                                 ${model}) as completed`;
    if (completed) {
      await writeAiCache(redis, sql, {
        key: job.cache_key,
        answer: result,
        model,
        ttlSeconds: config.AI_CACHE_TTL_SECONDS,
        owner: job.cache_owner,
      });
    }
  },
};
