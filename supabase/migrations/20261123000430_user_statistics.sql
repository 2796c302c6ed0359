-- Per-user statistics for the app's "your stats" screen and for operators: counting a user's
-- analyses and messages on every request would scan their whole history, so the counts are
-- precomputed in a materialized view, refreshed hourly by pg_cron (20261123000900).
--
--   public.user_statistics          the materialized view, one row per user (profile)
--   public.my_statistics            the signed-in user's own row of it (a view)
--   public.refresh_user_statistics  REFRESH MATERIALIZED VIEW CONCURRENTLY
--
-- Access. A materialized view cannot have row level security, and hosted Supabase's default
-- privileges would let anon and authenticated read all of it through the Data API. So:
--   * user_statistics: no privileges for anon or authenticated; service_role may read it.
--   * my_statistics: a view that returns only the row of auth.uid(). It runs with its owner's
--     privileges (security_invoker = false: that is how it may read user_statistics, which
--     its callers may not) and is a security_barrier view, so a caller's own conditions (even
--     leaky functions) are never evaluated before its auth.uid() filter and cannot see other
--     rows. It stands in for the RLS policy the materialized view cannot have. (The Supabase
--     linter reports it as a "security definer view": that is intended here.)
--   * anon: nothing (no privilege on either; auth.uid() would be NULL anyway).
--
-- Freshness. The counts and last_activity_at are as of the last refresh (at most an hour old).
-- used_this_period and monthly_quota in my_statistics are read live from profiles/plans, so
-- the quota shown is never behind the quota enforced.
--
-- Re-runnable: every statement is idempotent.

-- -------------------------------------------------------------------------------------------
-- user_statistics
-- -------------------------------------------------------------------------------------------
-- Each event table is aggregated once (one pass over all its partitions, hash aggregate) and
-- joined to the profiles; no per-user subqueries. No now()-stamped column: a concurrent
-- refresh rewrites only the rows whose values changed, and a per-row refresh time would
-- change them all.
create materialized view if not exists public.user_statistics as
select
  p.id                                             as user_id,
  p.plan_id,
  coalesce(a.n, 0)::bigint                         as analyses_count,
  coalesce(m.n, 0)::bigint                         as chat_messages_count,
  a.last_at                                        as last_analysis_at,
  m.last_at                                        as last_chat_message_at,
  greatest(a.last_at, m.last_at, e.last_at, p.last_active_at)
                                                   as last_activity_at,
  -- Periods roll over lazily (increment_usage_if_allowed): a stored period that has ended
  -- means nothing used in the current one.
  case when (p.period_start at time zone 'UTC' + interval '1 month') at time zone 'UTC' > now()
       then p.usage_count else 0 end               as used_this_period,
  p.created_at                                     as member_since
from public.profiles as p
left join (
  select x.user_id, count(*) as n, max(x.created_at) as last_at
  from public.analyses as x
  group by x.user_id
) as a on a.user_id = p.id
left join (
  select x.user_id, count(*) as n, max(x.created_at) as last_at
  from public.chat_messages as x
  group by x.user_id
) as m on m.user_id = p.id
left join (
  select x.user_id, max(x.created_at) as last_at
  from public.activities as x
  group by x.user_id
) as e on e.user_id = p.id
with data;
comment on materialized view public.user_statistics is
  'Per-user counts of analyses and chat messages (all retained months), last activity and usage this period, as of '
  'the last public.refresh_user_statistics() (hourly). No RLS possible: not readable by anon/authenticated; '
  'users read their own row through public.my_statistics.';
comment on column public.user_statistics.last_activity_at is
  'Latest of: last analysis, last chat message, last activity-log entry, profiles.last_active_at.';
comment on column public.user_statistics.used_this_period is
  'profiles.usage_count if its period is the current one, else 0; as of the refresh (my_statistics reads it live).';

-- Required by REFRESH ... CONCURRENTLY (a unique index on plain columns, no WHERE), and the
-- lookup by user.
create unique index if not exists user_statistics_user_id_key on public.user_statistics (user_id);

revoke all on table public.user_statistics from public, anon, authenticated, service_role;
grant select on table public.user_statistics to service_role;

-- -------------------------------------------------------------------------------------------
-- my_statistics: the caller's own row
-- -------------------------------------------------------------------------------------------
create or replace view public.my_statistics
  with (security_barrier = true, security_invoker = false)
as
select
  s.user_id,
  p.plan_id,
  s.analyses_count,
  s.chat_messages_count,
  s.last_analysis_at,
  s.last_chat_message_at,
  greatest(s.last_activity_at, p.last_active_at)   as last_activity_at,
  case when (p.period_start at time zone 'UTC' + interval '1 month') at time zone 'UTC' > now()
       then p.usage_count else 0 end               as used_this_period,
  pl.monthly_quota,
  (greatest(p.period_start, (date_trunc('month', now() at time zone 'UTC')) at time zone 'UTC')
     at time zone 'UTC' + interval '1 month') at time zone 'UTC'
                                                   as period_resets_at,
  s.member_since
from public.user_statistics as s
join public.profiles as p on p.id = s.user_id
join public.plans as pl on pl.id = p.plan_id
where s.user_id = (select auth.uid());
comment on view public.my_statistics is
  'The signed-in user''s own statistics: counts as of the last hourly refresh, usage and quota live. '
  'Runs as its owner (the materialized view has no RLS); security_barrier and the auth.uid() filter confine it to '
  'the caller''s row.';

revoke all on table public.my_statistics from public, anon, authenticated, service_role;
grant select on table public.my_statistics to authenticated;

-- -------------------------------------------------------------------------------------------
-- refresh_user_statistics
-- -------------------------------------------------------------------------------------------
-- CONCURRENTLY: the new contents are computed beside the old and merged in, so readers are
-- never blocked (they see the old rows until the refresh commits); only a second refresh waits.
create or replace function public.refresh_user_statistics()
  returns void
  language plpgsql
  volatile
  set search_path = ''
as $$
begin
  refresh materialized view concurrently public.user_statistics;
end
$$;
comment on function public.refresh_user_statistics() is
  'REFRESH MATERIALIZED VIEW CONCURRENTLY public.user_statistics (readers never block). Run hourly by pg_cron; '
  'must be run by the owner (postgres).';
revoke execute on function public.refresh_user_statistics() from public, anon, authenticated, service_role;
