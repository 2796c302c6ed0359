-- The monthly usage period, defined once. Metering (increment_usage_if_allowed, refund_usage),
-- reading (current_usage) and statistics (user_statistics, my_statistics) each spelled the
-- period arithmetic out again; this migration gives it three functions and redefines those
-- readers over them, with the same signatures, results and grants.
--
--   public.usage_period_resets_at(period_start)               when a period ends
--   public.usage_period_start(period_start, now)              the period in force at `now`
--   public.usage_this_period(usage_count, period_start, now)  what is used of it at `now`
--
-- Periods are calendar months in UTC: a period starting at period_start resets at
-- (period_start at UTC + 1 month), and a stored period that has ended counts as a new, unused
-- one starting at the beginning of the current UTC month (the lazy rollover). All arithmetic
-- is on the UTC wall clock, so the session's TimeZone (and its DST changes) cannot shift a
-- boundary; that also makes the functions immutable.
--
-- They read nothing, so signed-in users may call them too: my_statistics does, and functions
-- in a view are called with its reader's privileges.
--
-- They have no SET search_path, unlike the rest of the schema, on purpose: a SET clause stops
-- the planner from inlining a SQL function, and these run in the statement every metered request
-- makes (as out-of-line calls, with the setting saved and restored each time, metering ran at
-- about 70 % of a bare update instead of over 90 %). Nothing in them is looked up by name but
-- pg_catalog's operators and public.usage_period_resets_at, written out in full, and they are
-- SECURITY INVOKER, so the path of whoever calls them cannot lend them any privilege.
--
-- Re-runnable: every statement is idempotent.

create or replace function public.usage_period_resets_at(p_period_start timestamptz)
  returns timestamptz
  language sql
  immutable
  parallel safe
as $$
  select (p_period_start at time zone 'UTC' + interval '1 month') at time zone 'UTC'
$$;
comment on function public.usage_period_resets_at(timestamptz) is
  'When the monthly usage period starting at p_period_start ends: one calendar month later, in UTC.';
revoke execute on function public.usage_period_resets_at(timestamptz) from public, anon;
grant execute on function public.usage_period_resets_at(timestamptz) to authenticated, service_role;

create or replace function public.usage_period_start(p_period_start timestamptz, p_now timestamptz)
  returns timestamptz
  language sql
  immutable
  parallel safe
as $$
  select case when public.usage_period_resets_at(p_period_start) <= p_now
              then pg_catalog.date_trunc('month', p_now at time zone 'UTC') at time zone 'UTC'
              else p_period_start end
$$;
comment on function public.usage_period_start(timestamptz, timestamptz) is
  'The start of the usage period in force at p_now for a stored p_period_start: itself while it runs, the start '
  'of p_now''s UTC month once it has ended (the lazy rollover).';
revoke execute on function public.usage_period_start(timestamptz, timestamptz) from public, anon;
grant execute on function public.usage_period_start(timestamptz, timestamptz) to authenticated, service_role;

create or replace function public.usage_this_period(
  p_usage_count integer,
  p_period_start timestamptz,
  p_now timestamptz
)
  returns integer
  language sql
  immutable
  parallel safe
as $$
  select case when public.usage_period_resets_at(p_period_start) <= p_now then 0 else p_usage_count end
$$;
comment on function public.usage_this_period(integer, timestamptz, timestamptz) is
  'The units used in the period in force at p_now: p_usage_count while its period runs, 0 once it has ended.';
revoke execute on function public.usage_this_period(integer, timestamptz, timestamptz) from public, anon;
grant execute on function public.usage_this_period(integer, timestamptz, timestamptz) to authenticated, service_role;

-- -------------------------------------------------------------------------------------------
-- current_usage: the numbers as they stand, and what the metering functions answer when they
-- change nothing.
-- -------------------------------------------------------------------------------------------
create or replace function public.current_usage(p_user_id uuid)
  returns table (allowed boolean, used integer, quota integer, remaining integer, period_resets_at timestamptz)
  language plpgsql
  stable
  set search_path = ''
as $$
declare
  v_now          timestamptz := pg_catalog.now();
  v_period_start timestamptz;
begin
  if p_user_id is null then
    raise exception 'p_user_id must not be null'
      using errcode = '22023';
  end if;

  select public.usage_this_period(p.usage_count, p.period_start, v_now),
         pl.monthly_quota,
         public.usage_period_start(p.period_start, v_now)
    into used, quota, v_period_start
    from public.profiles as p
    join public.plans as pl on pl.id = p.plan_id
   where p.id = p_user_id;
  if not found then
    raise exception 'no profile for user %', p_user_id
      using errcode = 'P0002';
  end if;

  allowed := true;
  remaining := greatest(quota - used, 0);
  period_resets_at := public.usage_period_resets_at(v_period_start);
  return next;
end
$$;
comment on function public.current_usage(uuid) is
  'The user''s monthly usage as it stands, changing nothing: the same row shape as increment_usage_if_allowed '
  'with allowed = true; an ended period reads as a new, unused one. Errors: 22023 bad argument, P0002 unknown user.';
revoke execute on function public.current_usage(uuid) from public, anon, authenticated;
grant execute on function public.current_usage(uuid) to service_role;

-- -------------------------------------------------------------------------------------------
-- The arguments of a metering write, checked in one place.
-- -------------------------------------------------------------------------------------------
-- No SET search_path, for the same reason as the period functions: it runs in every metered
-- request, a SET costs a save and restore of the setting per call, and the body names nothing.
create or replace function public.check_usage_arguments(p_user_id uuid, p_amount integer, p_hint text default null)
  returns void
  language plpgsql
  immutable
as $$
begin
  if p_user_id is null then
    raise exception 'p_user_id must not be null'
      using errcode = '22023';
  end if;
  if p_amount is null or p_amount <= 0 or p_amount > 1000 then
    if p_hint is null then
      raise exception 'p_amount must be an integer from 1 to 1000, got %', coalesce(p_amount::text, 'null')
        using errcode = '22023';
    end if;
    raise exception 'p_amount must be an integer from 1 to 1000, got %', coalesce(p_amount::text, 'null')
      using errcode = '22023', hint = p_hint;
  end if;
end
$$;
comment on function public.check_usage_arguments(uuid, integer, text) is
  'Raises 22023 unless p_user_id is given and p_amount is 1..1000 (with p_hint, if any): the arguments of '
  'increment_usage_if_allowed and refund_usage.';
revoke execute on function public.check_usage_arguments(uuid, integer, text) from public, anon, authenticated;
grant execute on function public.check_usage_arguments(uuid, integer, text) to service_role;

-- -------------------------------------------------------------------------------------------
-- increment_usage_if_allowed: the decision and the record in one statement (see 20261123000200
-- for why that holds under any concurrency).
-- -------------------------------------------------------------------------------------------
create or replace function public.increment_usage_if_allowed(p_user_id uuid, p_amount integer default 1)
  returns table (allowed boolean, used integer, quota integer, remaining integer, period_resets_at timestamptz)
  language plpgsql
  volatile
  set search_path = ''
as $$
declare
  v_now          timestamptz := pg_catalog.now();
  v_period_start timestamptz;
begin
  perform public.check_usage_arguments(p_user_id, p_amount, 'To give units back, call public.refund_usage.');

  -- The row lock and READ COMMITTED's recheck of this WHERE clause against the row's newest
  -- version serialise concurrent callers, so what they record never exceeds the quota. An
  -- ended period is rolled over in the same statement.
  update public.profiles as p
     set usage_count    = public.usage_this_period(p.usage_count, p.period_start, v_now) + p_amount,
         period_start   = public.usage_period_start(p.period_start, v_now),
         last_active_at = v_now
    from public.plans as pl
   where p.id = p_user_id
     and pl.id = p.plan_id
     and public.usage_this_period(p.usage_count, p.period_start, v_now)::bigint + p_amount <= pl.monthly_quota
  returning true, p.usage_count, pl.monthly_quota, p.period_start
       into allowed, used, quota, v_period_start;

  if not found then
    -- Refused (or no such user, P0002): record nothing, report the numbers as they stand.
    select false, u.used, u.quota, u.remaining, u.period_resets_at
      into allowed, used, quota, remaining, period_resets_at
      from public.current_usage(p_user_id) as u;
    return next;
    return;
  end if;

  remaining := greatest(quota - used, 0);
  period_resets_at := public.usage_period_resets_at(v_period_start);
  return next;
end
$$;
comment on function public.increment_usage_if_allowed(uuid, integer) is
  'Records p_amount (1..1000) units of usage for the user if the whole amount fits in the plan''s monthly quota; '
  'otherwise records nothing. Returns (allowed, used, quota, remaining, period_resets_at) after the call. '
  'Atomic under any concurrency. Errors: 22023 bad argument, P0002 unknown user.';
revoke execute on function public.increment_usage_if_allowed(uuid, integer) from public, anon, authenticated;
grant execute on function public.increment_usage_if_allowed(uuid, integer) to service_role;

-- -------------------------------------------------------------------------------------------
-- refund_usage: units of the current period back, never below zero; with p_period_resets_at
-- (what the charge returned) only while that period is still the current one.
-- -------------------------------------------------------------------------------------------
create or replace function public.refund_usage(
  p_user_id uuid,
  p_amount integer,
  p_period_resets_at timestamptz default null
)
  returns table (allowed boolean, used integer, quota integer, remaining integer, period_resets_at timestamptz)
  language plpgsql
  volatile
  set search_path = ''
as $$
declare
  v_now          timestamptz := pg_catalog.now();
  v_period_start timestamptz;
begin
  perform public.check_usage_arguments(p_user_id, p_amount);

  -- One statement, like the increment. An ended period rolls over with nothing of it used, so
  -- there is nothing to refund (0 - p_amount floors at 0).
  update public.profiles as p
     set usage_count  = greatest(public.usage_this_period(p.usage_count, p.period_start, v_now) - p_amount, 0),
         period_start = public.usage_period_start(p.period_start, v_now)
    from public.plans as pl
   where p.id = p_user_id
     and pl.id = p.plan_id
     and (p_period_resets_at is null
          or p_period_resets_at = public.usage_period_resets_at(public.usage_period_start(p.period_start, v_now)))
  returning p.usage_count, pl.monthly_quota, p.period_start
       into used, quota, v_period_start;

  if not found then
    -- The charge belongs to another period (or no such user, P0002): change nothing.
    select u.allowed, u.used, u.quota, u.remaining, u.period_resets_at
      into allowed, used, quota, remaining, period_resets_at
      from public.current_usage(p_user_id) as u;
    return next;
    return;
  end if;

  allowed := true;
  remaining := greatest(quota - used, 0);
  period_resets_at := public.usage_period_resets_at(v_period_start);
  return next;
end
$$;
comment on function public.refund_usage(uuid, integer, timestamptz) is
  'Gives back p_amount (1..1000) units of the current period (never below zero). With p_period_resets_at '
  '(as returned by the charge), refunds only if that is still the current period. Returns the same row '
  'shape as increment_usage_if_allowed with allowed = true. Errors: 22023 bad argument, P0002 unknown user.';
revoke execute on function public.refund_usage(uuid, integer, timestamptz) from public, anon, authenticated;
grant execute on function public.refund_usage(uuid, integer, timestamptz) to service_role;

-- -------------------------------------------------------------------------------------------
-- user_statistics and my_statistics (see 20261123000430 for what they are and who may read
-- them), over the same period functions. A materialized view cannot be replaced in place, so
-- both are made again, with the same columns, index, comments and privileges; the refresh
-- function and its schedule refer to them by name and keep working.
-- -------------------------------------------------------------------------------------------
drop view if exists public.my_statistics;
drop materialized view if exists public.user_statistics;

create materialized view public.user_statistics as
select
  p.id                                             as user_id,
  p.plan_id,
  coalesce(a.n, 0)::bigint                         as analyses_count,
  coalesce(m.n, 0)::bigint                         as chat_messages_count,
  a.last_at                                        as last_analysis_at,
  m.last_at                                        as last_chat_message_at,
  greatest(a.last_at, m.last_at, e.last_at, p.last_active_at)
                                                   as last_activity_at,
  public.usage_this_period(p.usage_count, p.period_start, now())
                                                   as used_this_period,
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

create view public.my_statistics
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
  public.usage_this_period(p.usage_count, p.period_start, now())
                                                   as used_this_period,
  pl.monthly_quota,
  public.usage_period_resets_at(public.usage_period_start(p.period_start, now()))
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
