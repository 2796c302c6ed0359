import { ActivitiesQuery, ActivitiesResponse } from "../_shared/contracts.ts";
import { decodeCursor, encodeCursor, type Position } from "../_shared/cursor.ts";
import { asUser, type Tx } from "../_shared/db.ts";
import { fullPage, PAGE_COLUMNS, PageRow } from "../_shared/history-pages.ts";
import { json } from "../_shared/http.ts";
import { defineFunction } from "../_shared/pipeline.ts";

/**
 * `GET activities?limit=&cursor=`: the caller's activity log (analyses, chats, purchases, ...),
 * newest first, `limit` (1..100, default 20) to a page; pass `next_cursor` back as `cursor` for
 * the next, older page until `has_more` is false.
 *
 * Pages come from `activities_page` (SECURITY INVOKER, run as the caller so row level security
 * confines them to the caller's rows), stitched from its two-month windows by `fullPage`, and
 * read from the read replica when there is one (the caller's own writes are read-your-writes).
 */

async function windowPage(tx: Tx, userId: string, before: Position | null, limit: number) {
  const [row] = await tx`
    select ${tx.unsafe(PAGE_COLUMNS)}
      from public.activities_page(${userId}::uuid, ${before?.created_at ?? null}::timestamptz,
                                  ${before?.id ?? null}::uuid, ${limit})`;
  return PageRow.parse(row);
}

export const handler = defineFunction(
  {
    name: "activities",
    methods: ["GET"],
    auth: "user",
    rateLimit: "general",
    query: ActivitiesQuery,
  },
  async ({ caller, query, read }) => {
    const from = query.cursor ? decodeCursor("activities", query.cursor, "cursor") : null;
    const { items, next } = await read((db) =>
      asUser(
        db,
        caller,
        (tx) =>
          fullPage((before, limit) => windowPage(tx, caller.id, before, limit), query.limit, from),
      )
    );
    return json(ActivitiesResponse.parse({
      items,
      next_cursor: next ? encodeCursor("activities", next) : null,
      has_more: next !== null,
    }));
  },
);
