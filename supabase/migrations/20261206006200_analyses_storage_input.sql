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

-- The page's building block gains the column (a changed result type needs drop and create);
-- history_page (20261206005200) turns its columns into the items, so analyses_page carries it.
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
