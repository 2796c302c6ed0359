-- History pagination: "the latest N of this user, before this cursor", newest first, for the
-- app's history screens (the `history` and `sync` edge functions call these).
--
--   public.analyses_page(p_user_id, p_before_created_at, p_before_id, p_limit)
--   public.chat_messages_page(p_user_id, p_before_created_at, p_before_id, p_limit, p_conversation_id)
--   public.activities_page(p_user_id, p_before_created_at, p_before_id, p_limit)
--
-- Each returns exactly ONE row:
--   items                  jsonb array of at most p_limit objects, newest first, ordered by
--                          (created_at desc, id desc), with only the fields the app shows:
--                            analyses       id, created_at, analysis_type, input_kind, model, cached, result
--                            chat_messages  id, created_at, conversation_id, role, content, model
--                            activities     id, created_at, kind, detail
--   next_before_created_at  \  the cursor to pass back as p_before_created_at / p_before_id for
--   next_before_id          /  the next (older) page; both NULL when there is nothing older
--   has_more               false when the user's history is exhausted (then the cursor is NULL)
--
-- next_before_created_at is TEXT on purpose: an ISO 8601 UTC instant with all six fractional
-- digits ('2026-11-23T08:28:17.936017Z'), which Postgres reads back exactly as
-- p_before_created_at. As a timestamptz, postgres.js (and any JavaScript client) would turn it
-- into a Date and drop the microseconds, and the truncated cursor would silently skip the rows
-- of the same millisecond (two messages saved in one transaction share created_at). Pass it
-- on as the string it is. (items[].created_at is a JSON string with microseconds too.)
--
-- THE CONTRACT. Keyset pagination on (created_at, id): a page holds the rows with
-- (created_at, id) < (p_before_created_at, p_before_id), newest first. No cursor (NULL
-- p_before_created_at) means "the newest". p_before_id NULL with a p_before_created_at means
-- "strictly before that instant". p_limit is clamped to 1..100 (default 20).
--
-- Each call reads a bounded WINDOW, not the whole history: the calendar month (UTC) of the
-- cursor and the month before it (with no cursor: this month and last month). That is at most
-- two monthly partitions, each read through its (user_id, created_at desc, id desc) index, so a
-- call costs the same for a user with 3 rows as for one with 30,000. An unbounded
-- `created_at < cursor` would instead probe every month the table keeps (24 for analyses) for a
-- user who has few rows.
-- The price: a page can come back SHORT (fewer than p_limit items, even none) while
-- has_more = true. That only means "nothing more in this window"; it does not mean "the end".
-- The caller simply continues from the returned cursor (which then points at the start of the
-- window, i.e. the next older two months), until it has as many items as it wants or has_more is
-- false. Never stop on a short page; stop on has_more = false. So:
--
--     cursor := (null, null); items := []
--     loop
--       page := analyses_page(user, cursor.created_at, cursor.id, wanted - len(items))
--       items += page.items
--       exit when not page.has_more or len(items) >= wanted
--       cursor := (page.next_before_created_at, page.next_before_id)
--     end loop
--     -- give the client `cursor` (the last page's next_*) to continue later
--
-- has_more is false once the window reaches the start of the user's history: the later of the
-- user's sign-up month (profiles.created_at; nobody has history from before they signed up) and
-- the table's retention horizon (public.event_retention; older months are dropped). So walking
-- to the end takes at most one call per two months of the user's account age.
-- The cursor after a full page is that page's last item; after a short page it is the window's
-- start with id 00000000-0000-0000-0000-000000000000 ("strictly before this instant"). Treat
-- it as opaque: pass both values back as they came.
--
-- Rows dated after the end of the current month (clock skew, imports) are not shown on the
-- first page; rows dated before the user's profile was created are not reached.
--
-- Security: SECURITY INVOKER, so row level security applies as to any query of the caller:
--   * authenticated (a user's token): sees only their own rows. Asking for another user's id
--     returns an empty page (has_more may still be true; the caller should pass its own id).
--   * service_role (the edge functions): sees the rows of the p_user_id it passes; the edge
--     function must pass the caller's verified id.
--   * anon: no EXECUTE.
--
-- Each page function computes its window (history_window) and then reads it with one query, the
-- SQL function <table>_in_window(...) (inlined into that query by the planner). The window is
-- passed as plain values, so the partitions outside it are pruned (at planning, or at executor
-- start-up once the session caches a generic plan) and never scanned. The *_in_window functions
-- are building blocks (and what the pgTAP test EXPLAINs); they follow the same security rules.
--
-- Re-runnable: every statement is idempotent.

-- -------------------------------------------------------------------------------------------
-- The cursor after a page (shared by the three page functions)
-- -------------------------------------------------------------------------------------------
create or replace function public.history_next_cursor(
  p_table text,
  p_user_id uuid,
  p_window_from timestamptz,
  p_window_has_more boolean,
  p_last_created_at timestamptz,
  p_last_id uuid
)
  returns table (next_before_created_at text, next_before_id uuid, has_more boolean)
  language plpgsql
  stable
  set search_path = ''
as $$
declare
  v_retention_from timestamptz;
  v_signup_from    timestamptz;
begin
  if p_window_has_more then
    -- The window holds more than the page: continue right after the page's last item.
    next_before_created_at := pg_catalog.to_char(p_last_created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');
    next_before_id := p_last_id;
    has_more := true;
    return next;
    return;
  end if;

  -- The window is exhausted. Older rows can exist only back to the later of:
  --   the retention horizon: the month the oldest rows the table may still keep fall in;
  select pg_catalog.date_trunc('month', (pg_catalog.now() at time zone 'UTC') - r.retention) at time zone 'UTC'
    into v_retention_from
    from public.event_retention as r
   where r.table_name = p_table;
  --   the user's sign-up month: nobody has history from before they signed up.
  select pg_catalog.date_trunc('month', p.created_at at time zone 'UTC') at time zone 'UTC'
    into v_signup_from
    from public.profiles as p
   where p.id = p_user_id;

  -- With neither known (no retention row and no profile), stop rather than walk back forever.
  has_more := p_user_id is not null
              and coalesce(p_window_from > greatest(v_retention_from, v_signup_from), false);
  if has_more then
    -- Continue strictly before the window's start.
    next_before_created_at := pg_catalog.to_char(p_window_from at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');
    next_before_id := '00000000-0000-0000-0000-000000000000'::uuid;
  end if;
  return next;
end
$$;
comment on function public.history_next_cursor(text, uuid, timestamptz, boolean, timestamptz, uuid) is
  'Building block of the *_page functions: the cursor after a page. If the window had more rows than the page: the '
  'page''s last item. Otherwise: the window''s start ("strictly before", id 00000000-...), or NULL/has_more = false '
  'once the window reaches the later of the user''s sign-up month and the table''s retention horizon.';

-- -------------------------------------------------------------------------------------------
-- The window a page reads (shared by the three page functions)
-- -------------------------------------------------------------------------------------------
create or replace function public.history_window(
  p_before_created_at timestamptz,
  p_before_id uuid
)
  returns table (before_at timestamptz, before_id uuid, window_from timestamptz, window_through timestamptz)
  language plpgsql
  stable
  set search_path = ''
as $$
declare
  v_min_id constant uuid := '00000000-0000-0000-0000-000000000000'::uuid;
begin
  -- The cursor, normalised: (before_at, before_id) is exclusive; window_through is the newest
  -- instant the page can hold (timestamptz has microsecond resolution).
  if p_before_created_at is null then
    before_at := (pg_catalog.date_trunc('month', pg_catalog.now() at time zone 'UTC') + interval '1 month')
                 at time zone 'UTC';
    before_id := v_min_id;
  else
    before_at := p_before_created_at;
    before_id := coalesce(p_before_id, v_min_id);
  end if;
  window_through := case when before_id = v_min_id then before_at - interval '1 microsecond' else before_at end;
  -- The window: the month of window_through and the month before it (UTC).
  window_from := (pg_catalog.date_trunc('month', window_through at time zone 'UTC') - interval '1 month')
                 at time zone 'UTC';
  return next;
end
$$;
comment on function public.history_window(timestamptz, uuid) is
  'Building block of the *_page functions: the cursor normalised to an exclusive (before_at, before_id) and the '
  'two-month window [window_from, window_through] (UTC months) the page reads. No cursor means "the newest".';

-- -------------------------------------------------------------------------------------------
-- analyses
-- -------------------------------------------------------------------------------------------
create or replace function public.analyses_in_window(
  p_user_id uuid,
  p_from timestamptz,
  p_through timestamptz,
  p_before_created_at timestamptz,
  p_before_id uuid,
  p_limit integer
)
  returns table (
    id uuid, created_at timestamptz, analysis_type text, input_kind text, model text, cached boolean, result jsonb
  )
  language sql
  stable
  -- Deliberately no SET search_path (and no SECURITY DEFINER): either would stop the planner
  -- from inlining it, and so from pruning partitions. Every name is schema-qualified instead,
  -- and as SECURITY INVOKER it never runs with more privileges than its caller.
as $$
  select a.id, a.created_at, a.analysis_type, a.input_kind, a.model, a.cached, a.result
  from public.analyses as a
  where a.user_id = p_user_id
    and a.created_at >= p_from
    and a.created_at <= p_through
    and (a.created_at, a.id) < (p_before_created_at, p_before_id)
  order by a.created_at desc, a.id desc
  limit p_limit
$$;
comment on function public.analyses_in_window(uuid, timestamptz, timestamptz, timestamptz, uuid, integer) is
  'Building block of analyses_page: the user''s analyses with p_from <= created_at <= p_through and '
  '(created_at, id) < (p_before_created_at, p_before_id), newest first, at most p_limit. RLS applies.';

create or replace function public.analyses_page(
  p_user_id uuid,
  p_before_created_at timestamptz default null,
  p_before_id uuid default null,
  p_limit integer default 20
)
  returns table (items jsonb, next_before_created_at text, next_before_id uuid, has_more boolean)
  language plpgsql
  stable
  set search_path = ''
as $$
declare
  v_limit       integer := least(greatest(coalesce(p_limit, 20), 1), 100);
  v_before_at   timestamptz;
  v_before_id   uuid;
  v_through     timestamptz;
  v_from        timestamptz;
  v_count       bigint;
  v_last_at     timestamptz;
  v_last_id     uuid;
begin
  select w.before_at, w.before_id, w.window_from, w.window_through
    into v_before_at, v_before_id, v_from, v_through
    from public.history_window(p_before_created_at, p_before_id) as w;

  -- One more row than the page, to know whether the window holds more.
  select
    coalesce(pg_catalog.jsonb_agg(
               pg_catalog.jsonb_build_object(
                 'id', w.id, 'created_at', w.created_at, 'analysis_type', w.analysis_type,
                 'input_kind', w.input_kind, 'model', w.model, 'cached', w.cached, 'result', w.result)
               order by w.n) filter (where w.n <= v_limit),
             '[]'::jsonb),
    pg_catalog.count(*),
    (pg_catalog.array_agg(w.created_at) filter (where w.n = v_limit))[1],
    (pg_catalog.array_agg(w.id) filter (where w.n = v_limit))[1]
  into items, v_count, v_last_at, v_last_id
  from (
    select r.*, pg_catalog.row_number() over (order by r.created_at desc, r.id desc) as n
    from public.analyses_in_window(p_user_id, v_from, v_through, v_before_at, v_before_id, v_limit + 1) as r
  ) as w;

  select c.next_before_created_at, c.next_before_id, c.has_more
    into next_before_created_at, next_before_id, has_more
    from public.history_next_cursor('analyses', p_user_id, v_from, v_count > v_limit, v_last_at, v_last_id) as c;
  return next;
end
$$;
comment on function public.analyses_page(uuid, timestamptz, uuid, integer) is
  'One page of the user''s analyses, newest first: (items jsonb, next_before_created_at, next_before_id, has_more). '
  'Reads at most two monthly partitions per call; a short page with has_more = true means "continue from the '
  'cursor". See the migration 20261123000420_history_pagination.sql for the contract.';

-- -------------------------------------------------------------------------------------------
-- chat_messages (optionally of one conversation)
-- -------------------------------------------------------------------------------------------
create or replace function public.chat_messages_in_window(
  p_user_id uuid,
  p_from timestamptz,
  p_through timestamptz,
  p_before_created_at timestamptz,
  p_before_id uuid,
  p_limit integer,
  p_conversation_id uuid default null
)
  returns table (id uuid, created_at timestamptz, conversation_id uuid, role text, content text, model text)
  language sql
  stable
  -- No SET search_path, so that it is inlined (see analyses_in_window).
as $$
  select m.id, m.created_at, m.conversation_id, m.role, m.content, m.model
  from public.chat_messages as m
  where m.user_id = p_user_id
    and (p_conversation_id is null or m.conversation_id = p_conversation_id)
    and m.created_at >= p_from
    and m.created_at <= p_through
    and (m.created_at, m.id) < (p_before_created_at, p_before_id)
  order by m.created_at desc, m.id desc
  limit p_limit
$$;
comment on function public.chat_messages_in_window(uuid, timestamptz, timestamptz, timestamptz, uuid, integer, uuid) is
  'Building block of chat_messages_page: the user''s messages (of one conversation if p_conversation_id is given) '
  'with p_from <= created_at <= p_through and (created_at, id) < (p_before_created_at, p_before_id), newest first, '
  'at most p_limit. RLS applies.';

create or replace function public.chat_messages_page(
  p_user_id uuid,
  p_before_created_at timestamptz default null,
  p_before_id uuid default null,
  p_limit integer default 20,
  p_conversation_id uuid default null
)
  returns table (items jsonb, next_before_created_at text, next_before_id uuid, has_more boolean)
  language plpgsql
  stable
  set search_path = ''
as $$
declare
  v_limit     integer := least(greatest(coalesce(p_limit, 20), 1), 100);
  v_before_at timestamptz;
  v_before_id uuid;
  v_through   timestamptz;
  v_from      timestamptz;
  v_count     bigint;
  v_last_at   timestamptz;
  v_last_id   uuid;
begin
  select w.before_at, w.before_id, w.window_from, w.window_through
    into v_before_at, v_before_id, v_from, v_through
    from public.history_window(p_before_created_at, p_before_id) as w;

  select
    coalesce(pg_catalog.jsonb_agg(
               pg_catalog.jsonb_build_object(
                 'id', w.id, 'created_at', w.created_at, 'conversation_id', w.conversation_id,
                 'role', w.role, 'content', w.content, 'model', w.model)
               order by w.n) filter (where w.n <= v_limit),
             '[]'::jsonb),
    pg_catalog.count(*),
    (pg_catalog.array_agg(w.created_at) filter (where w.n = v_limit))[1],
    (pg_catalog.array_agg(w.id) filter (where w.n = v_limit))[1]
  into items, v_count, v_last_at, v_last_id
  from (
    select r.*, pg_catalog.row_number() over (order by r.created_at desc, r.id desc) as n
    from public.chat_messages_in_window(
           p_user_id, v_from, v_through, v_before_at, v_before_id, v_limit + 1, p_conversation_id) as r
  ) as w;

  select c.next_before_created_at, c.next_before_id, c.has_more
    into next_before_created_at, next_before_id, has_more
    from public.history_next_cursor('chat_messages', p_user_id, v_from, v_count > v_limit, v_last_at, v_last_id) as c;
  return next;
end
$$;
comment on function public.chat_messages_page(uuid, timestamptz, uuid, integer, uuid) is
  'One page of the user''s chat messages (of one conversation if p_conversation_id is given), newest first: '
  '(items jsonb, next_before_created_at, next_before_id, has_more). Same contract as analyses_page.';

-- -------------------------------------------------------------------------------------------
-- activities
-- -------------------------------------------------------------------------------------------
create or replace function public.activities_in_window(
  p_user_id uuid,
  p_from timestamptz,
  p_through timestamptz,
  p_before_created_at timestamptz,
  p_before_id uuid,
  p_limit integer
)
  returns table (id uuid, created_at timestamptz, kind text, detail jsonb)
  language sql
  stable
  -- No SET search_path, so that it is inlined (see analyses_in_window).
as $$
  select e.id, e.created_at, e.kind, e.detail
  from public.activities as e
  where e.user_id = p_user_id
    and e.created_at >= p_from
    and e.created_at <= p_through
    and (e.created_at, e.id) < (p_before_created_at, p_before_id)
  order by e.created_at desc, e.id desc
  limit p_limit
$$;
comment on function public.activities_in_window(uuid, timestamptz, timestamptz, timestamptz, uuid, integer) is
  'Building block of activities_page: the user''s activities with p_from <= created_at <= p_through and '
  '(created_at, id) < (p_before_created_at, p_before_id), newest first, at most p_limit. RLS applies.';

create or replace function public.activities_page(
  p_user_id uuid,
  p_before_created_at timestamptz default null,
  p_before_id uuid default null,
  p_limit integer default 20
)
  returns table (items jsonb, next_before_created_at text, next_before_id uuid, has_more boolean)
  language plpgsql
  stable
  set search_path = ''
as $$
declare
  v_limit     integer := least(greatest(coalesce(p_limit, 20), 1), 100);
  v_before_at timestamptz;
  v_before_id uuid;
  v_through   timestamptz;
  v_from      timestamptz;
  v_count     bigint;
  v_last_at   timestamptz;
  v_last_id   uuid;
begin
  select w.before_at, w.before_id, w.window_from, w.window_through
    into v_before_at, v_before_id, v_from, v_through
    from public.history_window(p_before_created_at, p_before_id) as w;

  select
    coalesce(pg_catalog.jsonb_agg(
               pg_catalog.jsonb_build_object('id', w.id, 'created_at', w.created_at, 'kind', w.kind, 'detail', w.detail)
               order by w.n) filter (where w.n <= v_limit),
             '[]'::jsonb),
    pg_catalog.count(*),
    (pg_catalog.array_agg(w.created_at) filter (where w.n = v_limit))[1],
    (pg_catalog.array_agg(w.id) filter (where w.n = v_limit))[1]
  into items, v_count, v_last_at, v_last_id
  from (
    select r.*, pg_catalog.row_number() over (order by r.created_at desc, r.id desc) as n
    from public.activities_in_window(p_user_id, v_from, v_through, v_before_at, v_before_id, v_limit + 1) as r
  ) as w;

  select c.next_before_created_at, c.next_before_id, c.has_more
    into next_before_created_at, next_before_id, has_more
    from public.history_next_cursor('activities', p_user_id, v_from, v_count > v_limit, v_last_at, v_last_id) as c;
  return next;
end
$$;
comment on function public.activities_page(uuid, timestamptz, uuid, integer) is
  'One page of the user''s activity log, newest first: (items jsonb, next_before_created_at, next_before_id, '
  'has_more). Same contract as analyses_page.';

-- -------------------------------------------------------------------------------------------
-- Who may call them: signed-in users (RLS limits them to their own rows) and service_role.
-- -------------------------------------------------------------------------------------------
revoke execute on function
  public.history_window(timestamptz, uuid),
  public.history_next_cursor(text, uuid, timestamptz, boolean, timestamptz, uuid),
  public.analyses_in_window(uuid, timestamptz, timestamptz, timestamptz, uuid, integer),
  public.analyses_page(uuid, timestamptz, uuid, integer),
  public.chat_messages_in_window(uuid, timestamptz, timestamptz, timestamptz, uuid, integer, uuid),
  public.chat_messages_page(uuid, timestamptz, uuid, integer, uuid),
  public.activities_in_window(uuid, timestamptz, timestamptz, timestamptz, uuid, integer),
  public.activities_page(uuid, timestamptz, uuid, integer)
  from public, anon;
grant execute on function
  public.history_window(timestamptz, uuid),
  public.history_next_cursor(text, uuid, timestamptz, boolean, timestamptz, uuid),
  public.analyses_in_window(uuid, timestamptz, timestamptz, timestamptz, uuid, integer),
  public.analyses_page(uuid, timestamptz, uuid, integer),
  public.chat_messages_in_window(uuid, timestamptz, timestamptz, timestamptz, uuid, integer, uuid),
  public.chat_messages_page(uuid, timestamptz, uuid, integer, uuid),
  public.activities_in_window(uuid, timestamptz, timestamptz, timestamptz, uuid, integer),
  public.activities_page(uuid, timestamptz, uuid, integer)
  to authenticated, service_role;
