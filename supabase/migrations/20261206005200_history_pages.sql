-- One implementation of a history page. analyses_page, chat_messages_page and activities_page
-- (20261123000420, whose header is the contract) were three copies of the same body around a
-- different table; they are now thin wrappers over public.history_page, with the same
-- signatures, results and grants. What each table contributes is its building block
-- <table>_in_window, whose columns are the page's item fields, so the items are those rows as
-- JSON: a column added to a building block reaches the page with no other change.
--
-- The read stays what it was: one query per page through <table>_in_window, which the planner
-- inlines. It runs as dynamic SQL (the table is a parameter) with the window as values, so it
-- is planned with them and the partitions outside the window are pruned at planning: at most
-- two monthly partitions, each through the (user_id, created_at desc, id desc) index.
--
-- Re-runnable: every statement is idempotent.

create or replace function public.history_page(
  p_table text,
  p_user_id uuid,
  p_before_created_at timestamptz,
  p_before_id uuid,
  p_limit integer,
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
  if p_table is null or p_table not in ('analyses', 'chat_messages', 'activities') then
    raise exception 'p_table must be analyses, chat_messages or activities, got %', coalesce(p_table, 'null')
      using errcode = '22023';
  end if;
  if p_conversation_id is not null and p_table <> 'chat_messages' then
    raise exception 'p_conversation_id only applies to chat_messages'
      using errcode = '22023';
  end if;

  select w.before_at, w.before_id, w.window_from, w.window_through
    into v_before_at, v_before_id, v_from, v_through
    from public.history_window(p_before_created_at, p_before_id) as w;

  -- One more row than the page, to know whether the window holds more.
  execute pg_catalog.format(
    $query$
      select coalesce(pg_catalog.jsonb_agg(pg_catalog.to_jsonb(w) - 'n' order by w.n)
                        filter (where w.n <= $7),
                      '[]'::jsonb),
             pg_catalog.count(*),
             (pg_catalog.array_agg(w.created_at) filter (where w.n = $7))[1],
             (pg_catalog.array_agg(w.id) filter (where w.n = $7))[1]
        from (select r.*, pg_catalog.row_number() over (order by r.created_at desc, r.id desc) as n
                from public.%I($1, $2, $3, $4, $5, $6%s) as r) as w
    $query$,
    p_table || '_in_window',
    case when p_table = 'chat_messages' then ', $8' else '' end)
    into items, v_count, v_last_at, v_last_id
    using p_user_id, v_from, v_through, v_before_at, v_before_id, v_limit + 1, v_limit, p_conversation_id;

  select c.next_before_created_at, c.next_before_id, c.has_more
    into next_before_created_at, next_before_id, has_more
    from public.history_next_cursor(p_table, p_user_id, v_from, v_count > v_limit, v_last_at, v_last_id) as c;
  return next;
end
$$;
comment on function public.history_page(text, uuid, timestamptz, uuid, integer, uuid) is
  'One page of the user''s rows of p_table (analyses, chat_messages or activities; of one conversation if '
  'p_conversation_id is given), newest first: (items jsonb, next_before_created_at, next_before_id, has_more). '
  'The implementation of the *_page functions; see 20261123000420_history_pagination.sql for the contract.';
revoke execute on function public.history_page(text, uuid, timestamptz, uuid, integer, uuid) from public, anon;
grant execute on function public.history_page(text, uuid, timestamptz, uuid, integer, uuid)
  to authenticated, service_role;

create or replace function public.analyses_page(
  p_user_id uuid,
  p_before_created_at timestamptz default null,
  p_before_id uuid default null,
  p_limit integer default 20
)
  returns table (items jsonb, next_before_created_at text, next_before_id uuid, has_more boolean)
  language sql
  stable
  set search_path = ''
as $$
  select * from public.history_page('analyses', p_user_id, p_before_created_at, p_before_id, p_limit)
$$;
revoke execute on function public.analyses_page(uuid, timestamptz, uuid, integer) from public, anon;
grant execute on function public.analyses_page(uuid, timestamptz, uuid, integer) to authenticated, service_role;

create or replace function public.chat_messages_page(
  p_user_id uuid,
  p_before_created_at timestamptz default null,
  p_before_id uuid default null,
  p_limit integer default 20,
  p_conversation_id uuid default null
)
  returns table (items jsonb, next_before_created_at text, next_before_id uuid, has_more boolean)
  language sql
  stable
  set search_path = ''
as $$
  select * from public.history_page(
    'chat_messages', p_user_id, p_before_created_at, p_before_id, p_limit, p_conversation_id)
$$;
revoke execute on function public.chat_messages_page(uuid, timestamptz, uuid, integer, uuid) from public, anon;
grant execute on function public.chat_messages_page(uuid, timestamptz, uuid, integer, uuid)
  to authenticated, service_role;

create or replace function public.activities_page(
  p_user_id uuid,
  p_before_created_at timestamptz default null,
  p_before_id uuid default null,
  p_limit integer default 20
)
  returns table (items jsonb, next_before_created_at text, next_before_id uuid, has_more boolean)
  language sql
  stable
  set search_path = ''
as $$
  select * from public.history_page('activities', p_user_id, p_before_created_at, p_before_id, p_limit)
$$;
revoke execute on function public.activities_page(uuid, timestamptz, uuid, integer) from public, anon;
grant execute on function public.activities_page(uuid, timestamptz, uuid, integer) to authenticated, service_role;
