-- Analyses of a Storage object: input_kind 'storage', and the object's path kept with the
-- analysis (the bytes stay in Storage), returned by the history pages.
--
-- Re-runnable: every statement is idempotent.

alter table public.analyses add column if not exists input_path text
  constraint analyses_input_path_length check (pg_catalog.char_length(input_path) between 1 and 1024);
comment on column public.analyses.input_path is
  'For input_kind storage: "<bucket>/<object name>" of the analysed object; null otherwise.';

alter table public.analyses drop constraint if exists analyses_input_kind_valid;
alter table public.analyses add constraint analyses_input_kind_valid
  check (input_kind in ('text', 'image_url', 'image_base64', 'storage'));

-- The page's building block gains the column (a changed result type needs drop and create).
drop function if exists public.analyses_in_window(uuid, timestamptz, timestamptz, timestamptz, uuid, integer);
create function public.analyses_in_window(
  p_user_id uuid,
  p_from timestamptz,
  p_through timestamptz,
  p_before_created_at timestamptz,
  p_before_id uuid,
  p_limit integer
)
  returns table (
    id uuid, created_at timestamptz, analysis_type text, input_kind text, input_path text, model text,
    cached boolean, result jsonb
  )
  language sql
  stable
  -- No SET search_path and no SECURITY DEFINER, as in 20261123000420: either would stop the
  -- planner from inlining it, and so from pruning partitions.
as $$
  select a.id, a.created_at, a.analysis_type, a.input_kind, a.input_path, a.model, a.cached, a.result
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
revoke execute on function public.analyses_in_window(uuid, timestamptz, timestamptz, timestamptz, uuid, integer)
  from public, anon;
grant execute on function public.analyses_in_window(uuid, timestamptz, timestamptz, timestamptz, uuid, integer)
  to authenticated, service_role;

-- The page carries input_path.
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
                 'input_kind', w.input_kind, 'input_path', w.input_path, 'model', w.model, 'cached', w.cached, 'result', w.result)
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
