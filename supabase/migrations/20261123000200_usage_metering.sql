-- Usage metering: the monthly quota of metered work (AI calls) per user, decided and recorded
-- in one statement so that concurrent requests can never push a user past their plan's quota.
--
-- Periods are calendar months in UTC: a period starting at period_start resets at
-- (period_start at UTC + 1 month). All month arithmetic below is done on the UTC wall clock so
-- that the session's TimeZone (and its DST changes) cannot shift a period boundary.
--
-- Both functions are for service_role (and postgres, their owner, which the edge functions use).
-- Re-runnable: every statement is idempotent.

create or replace function public.increment_usage_if_allowed(p_user_id uuid, p_amount integer default 1)
  returns table (allowed boolean, used integer, quota integer, remaining integer, period_resets_at timestamptz)
  language plpgsql
  volatile
  set search_path = ''
as $$
declare
  v_now          timestamptz := pg_catalog.now();
  v_month_start  timestamptz := pg_catalog.date_trunc('month', v_now, 'UTC');
  v_period_start timestamptz;
begin
  if p_user_id is null then
    raise exception 'p_user_id must not be null'
      using errcode = '22023';
  end if;
  if p_amount is null or p_amount <= 0 or p_amount > 1000 then
    raise exception 'p_amount must be an integer from 1 to 1000, got %', coalesce(p_amount::text, 'null')
      using errcode = '22023',
            hint = 'To give units back, call public.refund_usage.';
  end if;

  -- The decision and the record are ONE statement. The race this prevents: two requests both
  -- read usage 99 of 100, both decide "fits", both write 100 (or 101). Here the UPDATE takes
  -- the profile's row lock before it writes; a concurrent caller blocks on that lock and, once
  -- the first commits, Postgres re-evaluates this WHERE clause against the row's NEW version
  -- (READ COMMITTED's EvalPlanQual recheck), so the quota test always sees every committed
  -- increment. However many callers run at once, they are serialised on the row and the sum
  -- of what they record never exceeds the quota. (Under REPEATABLE READ or SERIALIZABLE a
  -- concurrent update makes the loser fail with 40001 instead; retry it.)
  --
  -- A stored period that has ended is rolled over in the same statement: usage restarts from
  -- 0 + p_amount and period_start moves to the start of the current UTC month.
  update public.profiles as p
     set usage_count    = (case when (p.period_start at time zone 'UTC' + interval '1 month') at time zone 'UTC' <= v_now
                                then 0 else p.usage_count end) + p_amount,
         period_start   = case when (p.period_start at time zone 'UTC' + interval '1 month') at time zone 'UTC' <= v_now
                               then v_month_start else p.period_start end,
         last_active_at = v_now
    from public.plans as pl
   where p.id = p_user_id
     and pl.id = p.plan_id
     and (case when (p.period_start at time zone 'UTC' + interval '1 month') at time zone 'UTC' <= v_now
               then 0 else p.usage_count end)::bigint + p_amount <= pl.monthly_quota
  returning true, p.usage_count, pl.monthly_quota, p.period_start
       into allowed, used, quota, v_period_start;

  if not found then
    -- Refused (or no such user): record nothing, report the current numbers. A period that has
    -- ended counts as a new, unused one, exactly as the next increment will see it.
    select false,
           case when (p.period_start at time zone 'UTC' + interval '1 month') at time zone 'UTC' <= v_now
                then 0 else p.usage_count end,
           pl.monthly_quota,
           case when (p.period_start at time zone 'UTC' + interval '1 month') at time zone 'UTC' <= v_now
                then v_month_start else p.period_start end
      into allowed, used, quota, v_period_start
      from public.profiles as p
      join public.plans as pl on pl.id = p.plan_id
     where p.id = p_user_id;
    if not found then
      raise exception 'no profile for user %', p_user_id
        using errcode = 'P0002';
    end if;
  end if;

  remaining := greatest(quota - used, 0);
  period_resets_at := (v_period_start at time zone 'UTC' + interval '1 month') at time zone 'UTC';
  return next;
end
$$;
comment on function public.increment_usage_if_allowed(uuid, integer) is
  'Records p_amount (1..1000) units of usage for the user if the whole amount fits in the plan''s monthly quota; '
  'otherwise records nothing. Returns (allowed, used, quota, remaining, period_resets_at) after the call. '
  'Atomic under any concurrency. Errors: 22023 bad argument, P0002 unknown user.';
revoke execute on function public.increment_usage_if_allowed(uuid, integer) from public, anon, authenticated;
grant execute on function public.increment_usage_if_allowed(uuid, integer) to service_role;

-- Gives units back, e.g. when the AI call they were charged for failed. Never below zero and
-- only within the current period: units charged in a period that has since ended are not
-- refunded into the new one. Pass the period_resets_at that increment_usage_if_allowed returned
-- for the charge to make that exact even right after a rollover; when it no longer matches the
-- current period, nothing is refunded.
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
  v_month_start  timestamptz := pg_catalog.date_trunc('month', v_now, 'UTC');
  v_period_start timestamptz;
begin
  if p_user_id is null then
    raise exception 'p_user_id must not be null'
      using errcode = '22023';
  end if;
  if p_amount is null or p_amount <= 0 or p_amount > 1000 then
    raise exception 'p_amount must be an integer from 1 to 1000, got %', coalesce(p_amount::text, 'null')
      using errcode = '22023';
  end if;

  -- One statement, like the increment: row lock, rollover if the stored period ended (then
  -- there is nothing of this period to refund), otherwise subtract, floored at zero.
  update public.profiles as p
     set usage_count  = case when (p.period_start at time zone 'UTC' + interval '1 month') at time zone 'UTC' <= v_now
                              then 0 else greatest(p.usage_count - p_amount, 0) end,
         period_start = case when (p.period_start at time zone 'UTC' + interval '1 month') at time zone 'UTC' <= v_now
                             then v_month_start else p.period_start end
    from public.plans as pl
   where p.id = p_user_id
     and pl.id = p.plan_id
     and (p_period_resets_at is null
          or p_period_resets_at = (case when (p.period_start at time zone 'UTC' + interval '1 month') at time zone 'UTC' <= v_now
                                        then v_month_start else p.period_start end
                                   at time zone 'UTC' + interval '1 month') at time zone 'UTC')
  returning p.usage_count, pl.monthly_quota, p.period_start
       into used, quota, v_period_start;

  if not found then
    -- The charge belongs to another period (or no such user): change nothing.
    select case when (p.period_start at time zone 'UTC' + interval '1 month') at time zone 'UTC' <= v_now
                then 0 else p.usage_count end,
           pl.monthly_quota,
           case when (p.period_start at time zone 'UTC' + interval '1 month') at time zone 'UTC' <= v_now
                then v_month_start else p.period_start end
      into used, quota, v_period_start
      from public.profiles as p
      join public.plans as pl on pl.id = p.plan_id
     where p.id = p_user_id;
    if not found then
      raise exception 'no profile for user %', p_user_id
        using errcode = 'P0002';
    end if;
  end if;

  allowed := true;
  remaining := greatest(quota - used, 0);
  period_resets_at := (v_period_start at time zone 'UTC' + interval '1 month') at time zone 'UTC';
  return next;
end
$$;
comment on function public.refund_usage(uuid, integer, timestamptz) is
  'Gives back p_amount (1..1000) units of the current period (never below zero). With p_period_resets_at '
  '(as returned by the charge), refunds only if that is still the current period. Returns the same row '
  'shape as increment_usage_if_allowed with allowed = true. Errors: 22023 bad argument, P0002 unknown user.';
revoke execute on function public.refund_usage(uuid, integer, timestamptz) from public, anon, authenticated;
grant execute on function public.refund_usage(uuid, integer, timestamptz) to service_role;
