import { z } from "zod";
import { analyzeWithModel } from "../ai.ts";
import { errorMessage, log } from "../log.ts";
import type { JobContext, JobHandler } from "./job.ts";

/**
 * `ai.recommendations` (queued hourly by `enqueue_weekly_recommendations` for the users whose
 * Monday 09:00 it is, 500 to a job): one model call per user over a compact summary of their
 * recent analyses (types, summaries and finding titles; never the raw inputs), stored in
 * `recommendations` with `recommendations.ready` queued in the same statement. The user is
 * charged nothing; `ops_model_spend` counts the call.
 *
 * Users who already have this week's are skipped, so a retry redoes only the ones that failed.
 * Users left when the attempt's time is nearly spent go to a follow-up job, so a batch never
 * outlives its lock.
 */

const Payload = z.object({ week: z.iso.date(), user_ids: z.array(z.uuid()) });

/** The analyses a summary is made of, and how much of each. */
const RECENT_ANALYSES = 20;
const SUMMARY_CHARS = 300;
const PARALLEL_USERS = 8;

async function summaryOf(ctx: JobContext, userId: string) {
  const rows = await ctx.sql<{ line: string }[]>`
    select format('- %s: %s%s', a.analysis_type, left(a.result ->> 'summary', ${SUMMARY_CHARS}),
                  coalesce(' (findings: ' || (
                    select string_agg(f ->> 'title', '; ')
                      from jsonb_array_elements(a.result -> 'findings') with ordinality as x(f, n)
                     where x.n <= 3) || ')', '')) as line
      from public.analyses as a
     where a.user_id = ${userId} and a.status = 'done'
       and a.created_at > now() - interval '14 days'
     order by a.created_at desc
     limit ${RECENT_ANALYSES}`;
  return { text: rows.map((row) => row.line).join("\n"), count: rows.length };
}

async function recommend(ctx: JobContext, week: string, userId: string): Promise<void> {
  const [profile] = await ctx.sql<{ max_output_tokens: number }[]>`
    select pl.max_output_tokens
      from public.profiles as p join public.plans as pl on pl.id = p.plan_id
     where p.id = ${userId}`;
  if (!profile) return;
  const summary = await summaryOf(ctx, userId);
  if (summary.count === 0) return;
  const result = await analyzeWithModel(ctx.config, {
    analysisType: "weekly recommendations from these recent analyses",
    input: { kind: "text", text: summary.text },
  }, {
    requestId: `recommendations:${week}:${userId}`,
    maxOutputTokens: profile.max_output_tokens,
  });
  await ctx.sql`
    with inserted as (
      insert into public.recommendations (user_id, week, summary, items, model, analyses_count)
      values (${userId}, ${week}, ${result.summary}, ${ctx.sql.json(result.recommendations)},
              ${ctx.config.OPENAI_MODEL}, ${summary.count})
      on conflict (user_id, week) do nothing
      returning user_id
    )
    select public.enqueue_notification(user_id, 'recommendations.ready', ${week}) from inserted`;
}

export const makeRecommendations: JobHandler = {
  needsStripe: false,
  needsAi: true,
  async run(payload, ctx) {
    const { week, user_ids } = Payload.parse(payload);
    const deadline = Date.now() + ctx.config.JOB_TIMEOUT_MS * 0.7;
    const waiting = (await ctx.sql<{ id: string }[]>`
      select u.id from unnest(${user_ids}::uuid[]) as u(id)
       where not exists (select 1 from public.recommendations as r
                          where r.user_id = u.id and r.week = ${week})
       order by u.id`).map((row) => row.id);
    const failed: string[] = [];
    while (waiting.length > 0 && Date.now() < deadline) {
      await Promise.all(
        waiting.splice(0, PARALLEL_USERS).map((userId) =>
          recommend(ctx, week, userId).catch((error) => {
            failed.push(userId);
            log.warn("recommendations failed", {
              user_id: userId,
              week,
              error: errorMessage(error),
            });
          })
        ),
      );
    }
    if (waiting.length > 0) {
      await ctx.sql`
        select public.enqueue_job('ai.recommendations',
                                  ${ctx.sql.json({ week, user_ids: waiting })}, now(), 10,
                                  ${`ai.recommendations:${week}:${waiting[0]}`})`;
    }
    if (failed.length > 0) {
      throw new Error(`recommendations failed for ${failed.length} of the batch's users`);
    }
  },
};
