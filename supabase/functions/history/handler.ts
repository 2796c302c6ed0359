import {
  type AnalysisItem,
  HistoryQuery,
  type HistoryResponse,
  type MessageItem,
} from "../_shared/contracts.ts";
import { decodeCursor, encodeCursor, type Position } from "../_shared/cursor.ts";
import { asUser, type Tx } from "../_shared/db.ts";
import { ApiError } from "../_shared/errors.ts";
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
 * row level security confines every read to the caller's own rows whatever id is passed. Each
 * call reads a two-month window and may come back short while older rows exist, so a page is
 * stitched from consecutive windows until it is full or the history ends, at most
 * `MAX_WINDOWS` calls: two years, the default retention of both tables, so a page is short only
 * where the history ends unless an operator keeps more (and then `has_more` says so).
 */

const MAX_WINDOWS = 12;

interface PageRow {
  items: (AnalysisItem | MessageItem)[];
  next_before_created_at: string | null;
  next_before_id: string | null;
  has_more: boolean;
}

function windowPage(
  tx: Tx,
  query: HistoryQuery,
  userId: string,
  before: Position | null,
  limit: number,
): Promise<PageRow[]> {
  const at = before?.created_at ?? null;
  const id = before?.id ?? null;
  return query.type === "analyses"
    ? tx<PageRow[]>`
        select items, next_before_created_at, next_before_id, has_more
          from public.analyses_page(${userId}::uuid, ${at}::timestamptz, ${id}::uuid, ${limit})`
    : tx<PageRow[]>`
        select items, next_before_created_at, next_before_id, has_more
          from public.chat_messages_page(${userId}::uuid, ${at}::timestamptz, ${id}::uuid,
                                         ${limit}, ${query.conversation_id ?? null}::uuid)`;
}

async function fullPage(tx: Tx, query: HistoryQuery, userId: string, from: Position | null) {
  const items: PageRow["items"] = [];
  let before = from;
  for (let window = 0; window < MAX_WINDOWS; window++) {
    const [page] = await windowPage(tx, query, userId, before, query.limit - items.length);
    items.push(...page.items);
    before = page.has_more
      ? { created_at: page.next_before_created_at!, id: page.next_before_id! }
      : null;
    if (!before || items.length >= query.limit) break;
  }
  return { items, next: before };
}

export const handler = defineFunction(
  { name: "history", methods: ["GET"], auth: "user", rateLimit: "general", query: HistoryQuery },
  async ({ caller, query, sql }) => {
    if (query.conversation_id && query.type !== "messages") {
      throw new ApiError("validation_failed", "conversation_id: only applies to type=messages", {
        field: "conversation_id",
      });
    }
    const from = query.cursor ? decodeCursor(query.type, query.cursor, "cursor") : null;
    const { items, next } = await asUser(
      sql,
      caller,
      (tx) => fullPage(tx, query, caller.id, from),
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
