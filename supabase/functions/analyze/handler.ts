import { PROMPT_VERSION, requireAi } from "../_shared/ai.ts";
import {
  aiCacheKey,
  canonicalJson,
  readAiCache,
  sha256Hex,
  shareableAnalysisTypes,
  writeAiCache,
} from "../_shared/ai-cache.ts";
import { type AnalysisRequest, analyzeRequest } from "../_shared/analysis.ts";
import {
  type AnalysisResult,
  type AnalyzeAccepted,
  type AnalyzeInput,
  AnalyzeRequest,
  type AnalyzeResponse,
  type DoneAnalysis,
  IdempotencyKey,
} from "../_shared/contracts.ts";
import type { Sql } from "../_shared/db.ts";
import { ApiError } from "../_shared/errors.ts";
import { json } from "../_shared/http.ts";
import { defineFunction } from "../_shared/pipeline.ts";
import type { AnalyzeJobPayload } from "../_shared/jobs/ai-analyze.ts";
import { ownedObject } from "../_shared/storage.ts";
import { Charge, currentUsage } from "../_shared/usage.ts";

/**
 * `POST analyze`: a structured analysis of a text or an image (an https URL, base64 data, or an
 * object the caller uploaded to Storage), stored in `analyses`. A Storage object must be the
 * caller's own (403 otherwise) and exist (404); the model gets a signed URL valid for
 * `ANALYSIS_URL_SECONDS`, made only once the unit is taken, and the analysis keeps its path.
 *
 * Metering, in this order:
 *   1. no provider configured: 503 `ai_unavailable`, nothing charged;
 *   2. the AI response cache: an identical request of the same user (or, for a text analysis
 *      of a type listed in `ai_shareable_analysis_types`, of anyone) is answered from it with
 *      `cached: true`, charged the plan's `cache_hit_cost` (with a cost of 0 it is answered but
 *      not stored);
 *   3. otherwise one unit is taken (`increment_usage_if_allowed`; 402 `quota_exceeded` with the
 *      numbers when the quota is spent) before the model is called, with the plan's
 *      `max_output_tokens`. If the model fails or times out the unit is given back before the
 *      503; once it has answered, the answer is delivered and the unit kept even if storing it
 *      fails (the `Charge` rule).
 * Every answer carries the usage numbers as they stand after it.
 *
 * In the background (`"mode": "background"`, the default for `storage` inputs), step 3 takes
 * the unit the same way, then stores a `pending` analysis and queues its `ai.analyze` job in one
 * statement (`enqueue_background_analysis`) and answers 202 `AnalyzeAccepted`; the job does the
 * model call under the same rules (see `_shared/jobs/ai-analyze.ts`). The job is idempotent on
 * the `Idempotency-Key` header (else the request id): a repeated request is answered with the
 * first one's analysis and charged nothing. A cache hit is answered at once, as in step 2.
 */

/** What is hashed, sent to the model and stored: equal requests must look equal. */
function normalised(request: AnalyzeRequest): { analysisType: string; input: AnalyzeInput } {
  const { input } = request;
  return {
    analysisType: request.analysis_type.trim(),
    input: input.kind === "text"
      ? { kind: "text", text: input.text.trim() }
      : input.kind === "image_url"
      ? { kind: "image_url", url: new URL(input.url).href }
      : input,
  };
}

interface Analysis extends AnalysisRequest {
  inputHash: string;
  result: AnalysisResult;
  model: string;
  cached: boolean;
}

/** The analysis as answered; also what is answered when it could not be stored. */
function analysisItem(analysis: Analysis): DoneAnalysis {
  return {
    id: crypto.randomUUID(),
    created_at: new Date().toISOString(),
    status: "done",
    analysis_type: analysis.analysisType,
    input_kind: analysis.input.kind,
    input_path: analysis.input.kind === "storage"
      ? `${analysis.input.bucket}/${analysis.input.path}`
      : null,
    model: analysis.model,
    cached: analysis.cached,
    result: analysis.result,
  };
}

async function store(db: Sql, userId: string, item: DoneAnalysis, inputHash: string) {
  const [row] = await db<{ created_at: Date }[]>`
    with inserted as (
      insert into public.analyses
        (id, user_id, analysis_type, input_kind, input_path, input_hash, result, model, cached)
      values (${item.id}, ${userId}, ${item.analysis_type}, ${item.input_kind}, ${item.input_path},
              ${inputHash}, ${db.json(item.result)}, ${item.model}, ${item.cached})
      returning id, created_at, cached
    ), activity as (
      insert into public.activities (user_id, kind, detail)
      select ${userId}, 'analysis', jsonb_build_object('analysis_id', id, 'cached', cached)
        from inserted
    )
    select created_at from inserted`;
  return { ...item, created_at: row.created_at.toISOString() };
}

const accepted = (analysisId: string) =>
  json({ analysis_id: analysisId, status: "pending" } satisfies AnalyzeAccepted, { status: 202 });

/**
 * Stores the pending analysis and queues its job, in one statement; answers the id of the
 * analysis the job's key stands for (another one's, when a twin request queued first).
 */
async function enqueueAnalysis(
  db: Sql,
  jobKey: string,
  payload: AnalyzeJobPayload,
  inputHash: string,
  chargedUntil: string,
): Promise<string> {
  const { input } = payload;
  const [row] = await db<{ analysis_id: string }[]>`
    select public.enqueue_background_analysis(
             ${jobKey}, ${db.json(payload as never)}, ${input.kind},
             ${input.kind === "storage" ? `${input.bucket}/${input.path}` : null},
             ${inputHash}, ${chargedUntil}) as analysis_id`;
  return row.analysis_id;
}

export const handler = defineFunction(
  { name: "analyze", methods: ["POST"], auth: "user", rateLimit: "ai", body: AnalyzeRequest },
  async (
    { req, caller, profile: { plan }, body, config, requestId, sql: db, redis, signals, wrote },
  ) => {
    requireAi(config);
    const idempotencyKey = req.headers.get("idempotency-key");
    if (idempotencyKey !== null && !IdempotencyKey.safeParse(idempotencyKey).success) {
      throw new ApiError("validation_failed", "Idempotency-Key: must be 1 to 128 characters", {
        field: "Idempotency-Key",
      });
    }
    const model = config.OPENAI_MODEL;
    const ttl = config.AI_CACHE_TTL_SECONDS;
    const asked = normalised(body);
    const request: AnalysisRequest = asked.input.kind === "storage"
      ? {
        ...asked,
        input: {
          ...asked.input,
          version: (await ownedObject(db, caller.id, asked.input.bucket, asked.input.path))
            .version,
        },
      }
      : asked;
    const inputHash = await sha256Hex(canonicalJson(request.input));
    const shared = request.input.kind === "text" &&
      (await shareableAnalysisTypes(db)).has(request.analysisType);
    const owner = shared ? null : caller.id;
    const key = await aiCacheKey({
      prompt: PROMPT_VERSION,
      function: "analyze",
      model,
      analysis_type: request.analysisType,
      input: inputHash,
      user: owner,
    });

    const cached = await readAiCache<AnalysisResult>(redis, db, key, ttl);
    signals.ai_cache_hit = cached !== null;
    signals.ai_cache_hit = cached !== null;
    const answered = (result: AnalysisResult) =>
      analysisItem({ ...request, inputHash, model, result, cached: cached !== null });
    if (cached && plan.cache_hit_cost === 0) {
      // A free answer is not stored: nothing a caller can do for free grows a table.
      const usage = await currentUsage(db, caller.id);
      return json({ analysis: answered(cached), cached: true, usage } satisfies AnalyzeResponse);
    }

    const background = !cached &&
      (body.mode ?? (body.input.kind === "storage" ? "background" : "sync")) === "background";
    if (background) {
      const jobKey = `ai.analyze:${caller.id}:${idempotencyKey ?? requestId}`;
      const [queued] = await db<{ analysis_id: string }[]>`
        select payload ->> 'analysis_id' as analysis_id
          from public.background_jobs where idempotency_key = ${jobKey}`;
      if (queued) return accepted(queued.analysis_id);
      const charge = await Charge.take(db, caller.id, requestId, 1);
      const payload: AnalyzeJobPayload = {
        analysis_id: crypto.randomUUID(),
        user_id: caller.id,
        request_id: requestId,
        analysis_type: request.analysisType,
        input: request.input,
        cache_key: key,
        cache_owner: owner,
        max_output_tokens: plan.max_output_tokens,
      };
      let analysisId: string;
      try {
        analysisId = await enqueueAnalysis(db, jobKey, payload, inputHash, charge.usage.resets_at);
      } catch (error) {
        throw await charge.failed(error);
      }
      // A concurrent twin queued first: this request's unit goes back, its analysis is the answer.
      if (analysisId !== payload.analysis_id) {
        await charge.failed(new Error(`duplicate of analysis ${analysisId}`));
      }
      wrote();
      return accepted(analysisId);
    }

    const charge = await Charge.take(db, caller.id, requestId, cached ? plan.cache_hit_cost : 1);
    let result = cached;
    if (!result) {
      try {
        result = await analyzeRequest(config, request, {
          requestId,
          maxOutputTokens: plan.max_output_tokens,
        });
      } catch (error) {
        throw await charge.failed(error);
      }
    }
    const item = answered(result);
    const [analysis] = await Promise.all([
      charge.deliver(() => store(db, caller.id, item, inputHash), () => item),
      cached ? undefined : writeAiCache(redis, db, {
        key,
        answer: result,
        model,
        ttlSeconds: ttl,
        owner,
      }),
    ]);
    wrote();
    return json(
      { analysis, cached: cached !== null, usage: charge.usage } satisfies AnalyzeResponse,
    );
  },
);
