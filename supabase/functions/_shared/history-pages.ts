import { z } from "zod";
import type { Position } from "./cursor.ts";

/**
 * Full pages from the `*_page` SQL functions (`history_page`, migration 20261206005200): each
 * call reads a two-month window and may come back short while older rows exist, so a page is
 * stitched from consecutive windows until it is full or the history ends, at most
 * `MAX_WINDOWS` calls: two years, the default retention of the event tables, so a page is short
 * only where the history ends unless an operator keeps more (and then `has_more` says so).
 * Used by `history` and `activities`.
 */

const MAX_WINDOWS = 12;

/** The row of a `*_page` function; its items are parsed with the whole answer. */
export const PageRow = z.object({
  items: z.array(z.unknown()),
  next_before_created_at: z.string().nullable(),
  next_before_id: z.string().nullable(),
  has_more: z.boolean(),
});
export type PageRow = z.infer<typeof PageRow>;

/** The columns to select from a `*_page` function. */
export const PAGE_COLUMNS = Object.keys(PageRow.shape).join(", ");

/** Up to `limit` items from `from` (newest first), and where the next page starts, if anywhere. */
export async function fullPage(
  windowPage: (before: Position | null, limit: number) => Promise<PageRow>,
  limit: number,
  from: Position | null,
): Promise<{ items: unknown[]; next: Position | null }> {
  const items: unknown[] = [];
  let before = from;
  for (let window = 0; window < MAX_WINDOWS; window++) {
    const page = await windowPage(before, limit - items.length);
    items.push(...page.items);
    before = page.has_more
      ? { created_at: page.next_before_created_at!, id: page.next_before_id! }
      : null;
    if (!before || items.length >= limit) break;
  }
  return { items, next: before };
}
