import { StatisticsResponse, UserStatistics } from "../_shared/contracts.ts";
import { asUser, jsonObjectSql } from "../_shared/db.ts";
import { json } from "../_shared/http.ts";
import { defineFunction } from "../_shared/pipeline.ts";

/**
 * `GET statistics`: the caller's row of `my_statistics` (counts as of the last hourly refresh of
 * `user_statistics`, usage and quota live) and `refreshed_at`, when that refresh was. A new
 * account has no row until the next refresh: `statistics` is then null. Read as the caller (the
 * view confines itself to `auth.uid()`), from the read replica when there is one.
 */

const STATISTICS_JSON = jsonObjectSql(UserStatistics, "s");

export const handler = defineFunction(
  { name: "statistics", methods: ["GET"], auth: "user", rateLimit: "general" },
  async ({ caller, read }) => {
    const [row] = await read((db) =>
      asUser(db, caller, (tx) =>
        tx`
          select (select ${
          tx.unsafe(STATISTICS_JSON)
        } from public.my_statistics as s) as statistics,
                 (select r.refreshed_at from public.user_statistics_refresh as r) as refreshed_at`)
    );
    return json(StatisticsResponse.parse({
      statistics: row.statistics,
      refreshed_at: row.refreshed_at?.toISOString() ?? null,
    }));
  },
);
