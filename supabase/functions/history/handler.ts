import { AnalysisItem, HistoryQuery, HistoryResponse } from "../_shared/contracts.ts";
import { decodeCursor, encodeCursor, type Position } from "../_shared/cursor.ts";
import { asUser, jsonObjectSql, type Tx } from "../_shared/db.ts";
import { ApiError } from "../_shared/errors.ts";
import { fullPage, PAGE_COLUMNS, PageRow } from "../_shared/history-pages.ts";
import { json } from "../_shared/http.ts";
import { defineFunction } from "../_shared/pipeline.ts";

/**
 * `GET history?type=analyses|messages&limit=&cursor=&conversation_id=`: the caller's analyses or
 * chat messages (of one conversation, if given), newest first, `limit` (1..100, default 20) to
 * a page; pass `next_cursor` back as `cursor` for the next, older page until `has_more` is
 * false. Only the columns the app shows.
 *
 * Pages come from `analyses_page` / `chat_messages_page` (migration 20261123000420). Those are
 * SECURITY INVOKER and executable by `authenticated`, so they run as the caller (`asUser`) and
 * row level security confines every read to the caller's own rows whatever id is passed; a page
 * is stitched from their two-month windows by `fullPage` (`_shared/history-pages.ts`).
 *
 * `?id=` answers a page of that one analysis (404 when the caller has none with that id): how
 * the app follows a background analysis from `pending` to `done` or `failed`. It reads the
 * primary: the analysis it follows was just written by the worker, not by the caller.
 */

const ANALYSIS_JSON = jsonObjectSql(AnalysisItem, "a");

async function windowPage(
  tx: Tx,
  query: HistoryQuery,
  userId: string,
  before: Position | null,
  limit: number,
) {
  const at = before?.created_at ?? null;
  const id = before?.id ?? null;
  const [row] = query.type === "analyses"
    ? await tx`
        select ${tx.unsafe(PAGE_COLUMNS)}
          from public.analyses_page(${userId}::uuid, ${at}::timestamptz, ${id}::uuid, ${limit})`
    : await tx`
        select ${tx.unsafe(PAGE_COLUMNS)}
          from public.chat_messages_page(${userId}::uuid, ${at}::timestamptz, ${id}::uuid,
                                         ${limit}, ${query.conversation_id ?? null}::uuid)`;
  return PageRow.parse(row);
}

export const handler = defineFunction(
  { name: "history", methods: ["GET"], auth: "user", rateLimit: "general", query: HistoryQuery },
  async ({ caller, query, read, sql }) => {
    if (query.conversation_id && query.type !== "messages") {
      throw new ApiError("validation_failed", "conversation_id: only applies to type=messages", {
        field: "conversation_id",
      });
    }
    if (query.id) {
      if (query.type !== "analyses") {
        throw new ApiError("validation_failed", "id: only applies to type=analyses", {
          field: "id",
        });
      }
      const id = query.id;
      const [row] = await asUser(
        sql,
        caller,
        (tx) =>
          tx`select ${
            tx.unsafe(ANALYSIS_JSON)
          } as item from public.analyses as a where a.id = ${id}`,
      );
      if (!row) throw new ApiError("not_found", "no such analysis");
      return json(
        {
          type: "analyses",
          items: [AnalysisItem.parse(row.item)],
          next_cursor: null,
          has_more: false,
        } satisfies HistoryResponse,
      );
    }
    const from = query.cursor ? decodeCursor(query.type, query.cursor, "cursor") : null;
    // A page tolerates replica lag; the caller's own writes are read-your-writes (the context).
    const { items, next } = await read((db) =>
      asUser(
        db,
        caller,
        (tx) =>
          fullPage(
            (before, limit) => windowPage(tx, query, caller.id, before, limit),
            query.limit,
            from,
          ),
      )
    );
    return json(
      {
        type: query.type,
        items,
        next_cursor: next ? encodeCursor(query.type, next) : null,
        has_more: next !== null,
      } as HistoryResponse,
    );
  },
);
