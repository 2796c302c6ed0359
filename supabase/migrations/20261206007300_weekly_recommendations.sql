-- Weekly recommendations: every Monday at 09:00 in each user's time zone (settings.timezone,
-- else the quiet hours' time zone, else UTC), users active in the last 14 days with at least 3
-- analyses in that time get one model call over a compact summary of their recent analyses. The
-- result is stored in `recommendations`, costs the user nothing, and is counted in
-- `ops_model_spend` with every other model call.
--
--   recommendations                   the stored recommendations; owners read their own
--   enqueue_weekly_recommendations    (pg_cron, hourly at :05) queues ai.recommendations jobs of
--                                     at most 500 users each for the users whose local Monday
--                                     09:00 hour it is
--   ops_model_spend                   model calls per day and source (operator view)
--
-- Re-runnable: every statement is idempotent.

create table if not exists public.recommendations (
  id             uuid        primary key default gen_random_uuid(),
  user_id        uuid        not null references auth.users (id) on delete cascade,
  week           date        not null,
  created_at     timestamptz not null default now(),
  summary        text        not null constraint recommendations_summary_length check (pg_catalog.char_length(summary) <= 4000),
  items          jsonb       not null constraint recommendations_items_array check (pg_catalog.jsonb_typeof(items) = 'array'),
  model          text        not null,
  analyses_count integer     not null constraint recommendations_analyses_count_positive check (analyses_count > 0),
  constraint recommendations_once_a_week unique (user_id, week)
);
comment on table public.recommendations is
  'Weekly recommendations made by ai.recommendations jobs, one per user and week (the Monday they are for). '
  'Owners read their own; only service_role writes. Not charged to the user.';
create index if not exists recommendations_created_at_idx on public.recommendations (created_at);

alter table public.recommendations enable row level security;
revoke all on table public.recommendations from anon, authenticated;
grant select on table public.recommendations to authenticated;
grant all on table public.recommendations to service_role;
drop policy if exists "Users read their own recommendations" on public.recommendations;
create policy "Users read their own recommendations" on public.recommendations
  for select to authenticated using (user_id = (select auth.uid()));

-- -------------------------------------------------------------------------------------------
-- enqueue_weekly_recommendations
-- -------------------------------------------------------------------------------------------
create or replace function public.enqueue_weekly_recommendations(p_at timestamptz default now())
  returns integer
  language plpgsql
  volatile
  set search_path = ''
as $$
declare
  v_jobs integer;
begin
  -- The time zone names are read once, not per user.
  with zones as materialized (
    select z.name from pg_catalog.pg_timezone_names as z
  ), active as (
    select p.id, coalesce(z.name, 'UTC') as zone
      from public.profiles as p
      left join zones as z
        on z.name = coalesce(p.settings ->> 'timezone', p.settings -> 'quiet_hours' ->> 'timezone')
     where p.last_active_at > p_at - interval '14 days'
  ), due as (
    select a.id, (p_at at time zone a.zone)::date as week
      from active as a
     where pg_catalog.to_char(p_at at time zone a.zone, 'ID HH24') = '1 09'
       and (select count(*) from public.analyses as x
             where x.user_id = a.id and x.status = 'done'
               and x.created_at > p_at - interval '14 days') >= 3
  ), numbered as (
    select d.id, d.week, (pg_catalog.row_number() over (partition by d.week order by d.id) - 1) / 500 as batch
      from due as d
  ), batches as (
    select n.week, n.batch, pg_catalog.jsonb_agg(n.id order by n.id) as user_ids
      from numbered as n
     group by n.week, n.batch
  )
  select count(public.enqueue_job(
           'ai.recommendations',
           pg_catalog.jsonb_build_object('week', b.week, 'user_ids', b.user_ids),
           p_at, 10,
           pg_catalog.format('ai.recommendations:%s:%s', b.week, b.user_ids ->> 0)))
    into v_jobs
    from batches as b;
  return v_jobs;
end
$$;
comment on function public.enqueue_weekly_recommendations(timestamptz) is
  'Queues ai.recommendations jobs (500 users each) for the users for whom p_at is Monday 09:xx in their time '
  'zone, active in the last 14 days with at least 3 done analyses in that time. Returns the number of jobs.';
revoke execute on function public.enqueue_weekly_recommendations(timestamptz) from public, anon, authenticated;
grant execute on function public.enqueue_weekly_recommendations(timestamptz) to service_role;

select cron.schedule('enqueue-weekly-recommendations', '5 * * * *',
  $cmd$select public.enqueue_weekly_recommendations()$cmd$);

-- -------------------------------------------------------------------------------------------
-- ops_model_spend: what the model was called for, per day; recommendations cost the users
-- nothing, so they are only visible here.
-- -------------------------------------------------------------------------------------------
create or replace view public.ops_model_spend
  with (security_invoker = true) as
select day, source, count(*)::integer as model_calls
  from (
    select pg_catalog.date_trunc('day', a.created_at) as day, 'analyze'::text as source
      from public.analyses as a
     where a.status = 'done' and not a.cached and a.created_at > pg_catalog.now() - interval '30 days'
    union all
    select pg_catalog.date_trunc('day', m.created_at), 'chat'
      from public.chat_messages as m
     where m.role = 'assistant' and m.created_at > pg_catalog.now() - interval '30 days'
    union all
    select pg_catalog.date_trunc('day', r.created_at), 'recommendations'
      from public.recommendations as r
     where r.created_at > pg_catalog.now() - interval '30 days'
  ) as calls
 group by day, source;
comment on view public.ops_model_spend is
  'Model calls per UTC day and source (analyze without cache hits, chat replies, weekly recommendations) over the '
  'last 30 days. service_role only.';
revoke all on table public.ops_model_spend from public, anon, authenticated;
grant select on table public.ops_model_spend to service_role;
