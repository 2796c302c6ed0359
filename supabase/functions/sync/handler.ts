import {
  type AnalysisItem,
  type MessageItem,
  type ProfileResponse,
  SyncQuery,
  type SyncResponse,
  type Usage,
} from "../_shared/contracts.ts";
import { decodeCursor, encodeCursor, type Position } from "../_shared/cursor.ts";
import { asUser, type Sql, sql, type Tx } from "../_shared/db.ts";
import { ApiError } from "../_shared/errors.ts";
import { json } from "../_shared/http.ts";
import { defineFunction } from "../_shared/pipeline.ts";
import { planJson } from "../_shared/profile-cache.ts";

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

export interface SyncDeps {
  sql: () => Sql;
}

/** Most rows of each table in one answer. */
const BATCH = 100;
const MORE_WAITING_S = 1;
const NIL_ID = "00000000-0000-0000-0000-000000000000";

interface State {
  profile: Omit<ProfileResponse, "email">;
  used: number;
  quota: number;
  remaining: number;
  period_resets_at: Date;
  marker: string;
  member_since: string;
  next_sync_in_s: number;
}

/** The one cheap read: everything but the event rows, and the marker that stands for them. */
async function readState(db: Sql, userId: string): Promise<State | null> {
  const [state] = await db<State[]>`
    select json_build_object(
              'id', p.id,
              'plan', ${planJson(db)},
              'settings', p.settings,
              'subscription_status', p.subscription_status) as profile,
            u.used, u.quota, u.remaining, u.period_resets_at,
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
  return state ?? null;
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

interface EventRow<T> {
  item: T;
  at: string;
  id: string;
}

/**
 * The caller's rows of one table after `from`: the oldest first when catching up from a
 * cursor (so a batch never skips over a row), the newest first without one. The lower bound on
 * created_at lets Postgres skip the months before it.
 */
function events<T>(
  tx: Tx,
  table: "analyses" | "messages",
  userId: string,
  from: Position,
  catchUp: boolean,
) {
  const source = table === "analyses"
    ? tx`jsonb_build_object(
           'id', e.id, 'created_at', e.created_at, 'analysis_type', e.analysis_type,
           'input_kind', e.input_kind, 'input_path', e.input_path, 'model', e.model,
           'cached', e.cached, 'result', e.result)
           as item, e.id, e.created_at
         from public.analyses as e`
    : tx`jsonb_build_object(
           'id', e.id, 'created_at', e.created_at, 'conversation_id', e.conversation_id,
           'role', e.role, 'content', e.content, 'model', e.model)
           as item, e.id, e.created_at
         from public.chat_messages as e`;
  const order = catchUp ? tx`e.created_at, e.id` : tx`e.created_at desc, e.id desc`;
  return tx<EventRow<T>[]>`
    select item, to_char(created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as at, id
      from (select ${source}
             where e.user_id = ${userId}
               and e.created_at >= ${from.created_at}::timestamptz
               and (e.created_at, e.id) > (${from.created_at}::timestamptz, ${from.id}::uuid)
             order by ${order}
             limit ${catchUp ? BATCH + 1 : BATCH}) as rows`;
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
    events<AnalysisItem>(tx, "analyses", userId, from, catchUp),
    events<MessageItem>(tx, "messages", userId, from, catchUp),
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
    analyses: batch.filter((row) => row.kind === "analysis").map((row) => row.item as AnalysisItem),
    messages: batch.filter((row) => row.kind === "message").map((row) => row.item as MessageItem),
    cursor: newest ? { created_at: newest.at, id: newest.id } : from,
    moreWaiting: batch.length < tagged.length,
  };
}

export function createSyncHandler(deps: SyncDeps = { sql }) {
  return defineFunction(
    { name: "sync", methods: ["GET"], auth: "user", rateLimit: "general", query: SyncQuery },
    async ({ req, caller, query }) => {
      const since = query.since ? decodeCursor("sync", query.since, "since") : null;
      const db = deps.sql();
      const state = await readState(db, caller.id);
      if (!state) throw new ApiError("unauthorized", "this account no longer exists");

      const profile: ProfileResponse = { ...state.profile, email: caller.email };
      const usage: Usage = {
        used: state.used,
        quota: state.quota,
        remaining: state.remaining,
        resets_at: state.period_resets_at.toISOString(),
      };
      const etag = await etagOf([
        caller.id,
        query.since ?? null,
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
    },
  );
}
