import { RecommendationsResponse } from "../_shared/contracts.ts";
import { asUser } from "../_shared/db.ts";
import { json } from "../_shared/http.ts";
import { defineFunction } from "../_shared/pipeline.ts";

/**
 * `GET recommendations`: the caller's latest weekly recommendations (made by the
 * `ai.recommendations` job on Monday mornings), or `null` before the first. Read as the caller,
 * so row level security confines it to their own.
 */

export const handler = defineFunction(
  { name: "recommendations", methods: ["GET"], auth: "user", rateLimit: "general" },
  async ({ caller, sql }) => {
    const rows = await asUser(sql, caller, (tx) =>
      tx`
        select id, to_char(week, 'YYYY-MM-DD') as week,
               to_char(created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as created_at,
               summary, items, analyses_count
          from public.recommendations
         where user_id = ${caller.id}
         order by week desc
         limit 1`);
    return json(RecommendationsResponse.parse({ recommendation: rows[0] ?? null }));
  },
);
