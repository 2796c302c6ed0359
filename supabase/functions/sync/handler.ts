import { z } from "zod";
import { AnalysisItem, MessageItem, SyncQuery, type SyncResponse } from "../_shared/contracts.ts";
import { decodeCursor, encodeCursor, type Position } from "../_shared/cursor.ts";
import type { Caller } from "../_shared/auth.ts";
import { asUser, jsonObjectSql, type Sql, type Tx } from "../_shared/db.ts";
import { ApiError } from "../_shared/errors.ts";
import { json } from "../_shared/http.ts";
import { defineFunction } from "../_shared/pipeline.ts";
import { Profile, PROFILE_JSON, profileResponse } from "../_shared/profile-cache.ts";
import { USAGE_COLUMNS, usageOf } from "../_shared/usage.ts";

/**
 * `GET sync?since=<cursor>`: what changed for the caller since the cursor (their analyses and
 * chat messages created after it, newest first), their profile and usage, a new cursor, and
 * when to ask again (`next_sync_in_s`: 30 s when they were active in the last hour, 5 min in the
 * last day, 30 min otherwise; 1 s while changes are still waiting beyond this batch). Without
 * `since`: the newest `BATCH` of each, as on a fresh install; older ones are in `history`.
 *
 * Conditional requests. The ETag is a hash of everything the answer contains except the event
 * rows, which are stood for by the `since` cursor and the caller's sync marker (a version that
 * every write of their analyses or messages moves, migration 20261123000510). All of it comes
 * from one primary-key read of profiles, plans, sync_markers and current_usage; a matching
 * `If-None-Match` is answered 304 from that read alone, without touching the event tables.
 * The read comes before the event rows are read, never after, so an ETag can only be older
 * than its body (the next request then gets a 200 it did not strictly need), never newer (which
 * would answer 304 to a client that lacks a change).
 *
 * A row counts as after the cursor by (created_at, id). Rows are written by single-statement
 * transactions (analyze, chat), whose created_at is within milliseconds of their commit; a row
 * of an older transaction committing after a newer one's could in principle fall behind a
 * cursor taken in between.
 */

/** Most rows of each table in one answer. */
const BATCH = 100;
const MORE_WAITING_S = 1;
const NIL_ID = "00000000-0000-0000-0000-000000000000";

const State = z.object({
  profile: Profile,
  marker: z.string(),
  member_since: z.string(),
  next_sync_in_s: z.number().int(),
});

/** The one cheap read: everything but the event rows, and the marker that stands for them. */
async function readState(db: Sql, userId: string) {
  const [row] = await db`
    select ${db.unsafe(PROFILE_JSON)} as profile,
            ${db.unsafe(USAGE_COLUMNS)},
            coalesce(m.version, 0)::text as marker,
            to_char(p.created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as member_since,
            case when p.last_active_at > now() - interval '1 hour' then 30
                 when p.last_active_at > now() - interval '1 day' then 300
                 else 1800 end as next_sync_in_s
       from public.profiles as p
       join public.plans as pl on pl.id = p.plan_id
       left join public.sync_markers as m on m.user_id = p.id
      cross join lateral public.current_usage(p.id) as u
      where p.id = ${userId}`;
  return row ? { ...State.parse(row), usage: usageOf(row).usage } : null;
}

async function etagOf(parts: unknown[]): Promise<string> {
  const digest = await crypto.subtle.digest(
    "SHA-256",
    new TextEncoder().encode(JSON.stringify(parts)),
  );
  const base64 = btoa(String.fromCharCode(...new Uint8Array(digest)));
  return `"${base64.replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "")}"`;
}

/** `If-None-Match` compares weakly: `W/"x"` matches `"x"`; `*` matches any current answer. */
function matches(ifNoneMatch: string | null, etag: string): boolean {
  if (!ifNoneMatch) return false;
  return ifNoneMatch.split(",").some((tag) => {
    const trimmed = tag.trim();
    return trimmed === "*" || trimmed.replace(/^W\//, "") === etag;
  });
}

/** An event table sync reads, and the contract of the items it answers from it. */
interface EventSource<T extends z.ZodObject> {
  table: string;
  item: T;
  /** The item as JSON, from the table's row aliased `e`. */
  json: string;
}

const eventSource = <T extends z.ZodObject>(table: string, item: T): EventSource<T> => ({
  table,
  item,
  json: jsonObjectSql(item, "e"),
});

const ANALYSES = eventSource("public.analyses", AnalysisItem);
const MESSAGES = eventSource("public.chat_messages", MessageItem);

/**
 * The caller's rows of one table after `from`: the oldest first when catching up from a
 * cursor (so a batch never skips over a row), the newest first without one. The lower bound on
 * created_at lets Postgres skip the months before it.
 */
async function events<T extends z.ZodObject>(
  tx: Tx,
  source: EventSource<T>,
  userId: string,
  from: Position,
  catchUp: boolean,
) {
  const order = catchUp ? tx`e.created_at, e.id` : tx`e.created_at desc, e.id desc`;
  const rows = await tx`
    select item, to_char(created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as at, id
      from (select ${tx.unsafe(source.json)} as item, e.id, e.created_at
              from ${tx.unsafe(source.table)} as e
             where e.user_id = ${userId}
               and e.created_at >= ${from.created_at}::timestamptz
               and (e.created_at, e.id) > (${from.created_at}::timestamptz, ${from.id}::uuid)
             order by ${order}
             limit ${catchUp ? BATCH + 1 : BATCH}) as rows`;
  return z.array(z.object({ item: source.item, at: z.string(), id: z.string() })).parse(rows);
}

const newestFirst = (a: { at: string; id: string }, b: { at: string; id: string }) =>
  a.at === b.at ? (a.id < b.id ? 1 : -1) : (a.at < b.at ? 1 : -1);

interface Changes {
  analyses: AnalysisItem[];
  messages: MessageItem[];
  cursor: Position;
  moreWaiting: boolean;
}

async function readChanges(
  tx: Tx,
  userId: string,
  since: Position | null,
  memberSince: string,
): Promise<Changes> {
  const from = since ?? { created_at: memberSince, id: NIL_ID };
  const catchUp = since !== null;
  const [analyses, messages] = await Promise.all([
    events(tx, ANALYSES, userId, from, catchUp),
    events(tx, MESSAGES, userId, from, catchUp),
  ]);
  const tagged = [
    ...analyses.map((row) => ({ ...row, kind: "analysis" as const })),
    ...messages.map((row) => ({ ...row, kind: "message" as const })),
  ].sort(newestFirst);
  // Catching up, the batch is the BATCH oldest rows of both tables together, so the cursor
  // (the newest of them) leaves nothing unsent behind it.
  const batch = catchUp ? tagged.slice(-BATCH) : tagged;
  const newest = batch[0];
  return {
    analyses: batch.flatMap((row) => row.kind === "analysis" ? [row.item] : []),
    messages: batch.flatMap((row) => row.kind === "message" ? [row.item] : []),
    cursor: newest ? { created_at: newest.at, id: newest.id } : from,
    moreWaiting: batch.length < tagged.length,
  };
}

export const handler = defineFunction(
  {
    name: "sync",
    methods: ["GET"],
    auth: "user",
    rateLimit: "general",
    query: SyncQuery,
    // The poll itself is not activity: the interval it answers must be able to back off.
    activity: false,
  },
  async ({ req, caller, query, read }) => {
    const since = query.since ? decodeCursor("sync", query.since, "since") : null;
    // All of it from one read client, so that the ETag's marker and the rows agree: on the
    // replica they lag together, and the caller's own writes are read from the primary.
    return await read((db) => answer(db, req, caller, query.since ?? null, since));
  },
);

async function answer(
  db: Sql,
  req: Request,
  caller: Extract<Caller, { kind: "user" }>,
  sinceCursor: string | null,
  since: Position | null,
): Promise<Response> {
  const state = await readState(db, caller.id);
  if (!state) throw new ApiError("unauthorized", "this account no longer exists");

  const profile = profileResponse(state.profile, caller.email);
  const { usage } = state;
  const etag = await etagOf([
    caller.id,
    sinceCursor,
    state.marker,
    profile,
    usage,
    state.next_sync_in_s,
  ]);
  const headers = { etag, "cache-control": "private, no-cache" };
  if (matches(req.headers.get("if-none-match"), etag)) {
    return new Response(null, { status: 304, headers });
  }

  const changes = await asUser(
    db,
    caller,
    (tx) => readChanges(tx, caller.id, since, state.member_since),
  );
  return json(
    {
      analyses: changes.analyses,
      messages: changes.messages,
      profile,
      usage,
      cursor: encodeCursor("sync", changes.cursor),
      next_sync_in_s: changes.moreWaiting ? MORE_WAITING_S : state.next_sync_in_s,
    } satisfies SyncResponse,
    { headers },
  );
}
