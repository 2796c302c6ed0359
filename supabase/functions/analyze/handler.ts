import type { Redis } from "@upstash/redis";
import { analyzeWithModel, PROMPT_VERSION, requireAi } from "../_shared/ai.ts";
import {
  aiCacheKey,
  canonicalJson,
  readAiCache,
  sha256Hex,
  writeAiCache,
} from "../_shared/ai-cache.ts";
import {
  type AnalysisItem,
  type AnalysisResult,
  type AnalyzeInput,
  AnalyzeRequest,
  type AnalyzeResponse,
} from "../_shared/contracts.ts";
import { type Sql, sql } from "../_shared/db.ts";
import { json } from "../_shared/http.ts";
import { defineFunction } from "../_shared/pipeline.ts";
import { redis } from "../_shared/redis.ts";
import { currentUsage, refundAfterFailure, takeUsage } from "../_shared/usage.ts";

/**
 * `POST analyze`: a structured analysis of a text or an image (an https URL, such as a signed
 * Supabase Storage URL, or base64 data), stored in `analyses`.
 *
 * Metering, in this order:
 *   1. no provider configured: 503 `ai_unavailable`, nothing charged;
 *   2. the AI response cache: an identical request (same model, prompt version, analysis type
 *      and input) is answered from it with `cached: true` and is NOT charged: the model did no
 *      work for it;
 *   3. otherwise one unit is taken (`increment_usage_if_allowed`; 402 `quota_exceeded` with the
 *      numbers when the quota is spent), the model is called, and on any failure or timeout the
 *      unit is given back (`refund_usage`, for the period it was taken in) before the 503.
 * Every answer carries the usage numbers as they stand after it.
 */

export interface AnalyzeDeps {
  sql: () => Sql;
  redis: () => Redis;
}

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

interface AnalysisRow extends Omit<AnalysisItem, "created_at"> {
  created_at: Date;
}

async function store(
  db: Sql,
  userId: string,
  analysis: {
    analysisType: string;
    input: AnalyzeInput;
    inputHash: string;
    result: AnalysisResult;
    model: string;
    cached: boolean;
  },
): Promise<AnalysisItem> {
  const [row] = await db<AnalysisRow[]>`
    with inserted as (
      insert into public.analyses
        (user_id, analysis_type, input_kind, input_hash, result, model, cached)
      values (${userId}, ${analysis.analysisType}, ${analysis.input.kind}, ${analysis.inputHash},
              ${db.json(analysis.result)}, ${analysis.model}, ${analysis.cached})
      returning id, created_at, analysis_type, input_kind, model, cached, result
    ), activity as (
      insert into public.activities (user_id, kind, detail)
      select ${userId}, 'analysis', jsonb_build_object('analysis_id', id, 'cached', cached)
        from inserted
    )
    select * from inserted`;
  return { ...row, created_at: row.created_at.toISOString() };
}

export function createAnalyzeHandler(deps: AnalyzeDeps = { sql, redis }) {
  return defineFunction(
    { name: "analyze", methods: ["POST"], auth: "user", rateLimit: "ai", body: AnalyzeRequest },
    async ({ caller, body, config, requestId }) => {
      requireAi(config);
      const db = deps.sql();
      const model = config.OPENAI_MODEL;
      const ttl = config.AI_CACHE_TTL_SECONDS;
      const request = normalised(body);
      const inputHash = await sha256Hex(canonicalJson(request.input));
      const key = await aiCacheKey({
        prompt: PROMPT_VERSION,
        function: "analyze",
        model,
        analysis_type: request.analysisType,
        input: inputHash,
      });
      const row = { ...request, inputHash, model };

      const cached = await readAiCache<AnalysisResult>(deps.redis(), db, key, ttl);
      if (cached) {
        const [analysis, usage] = await Promise.all([
          store(db, caller.id, { ...row, result: cached, cached: true }),
          currentUsage(db, caller.id),
        ]);
        return json({ analysis, cached: true, usage } satisfies AnalyzeResponse);
      }

      const usage = await takeUsage(db, caller.id);
      try {
        const result = await analyzeWithModel(config, request, requestId);
        const [analysis] = await Promise.all([
          store(db, caller.id, { ...row, result, cached: false }),
          writeAiCache(deps.redis(), db, key, result, model, ttl),
        ]);
        return json({ analysis, cached: false, usage } satisfies AnalyzeResponse);
      } catch (error) {
        throw await refundAfterFailure(db, caller.id, usage, error, requestId);
      }
    },
  );
}
