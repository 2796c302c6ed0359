-- Reading usage and rate limits without spending them: what the `usage` and `sync` functions
-- (and answers that cost nothing, such as a cached analysis) show the user.
--
--   public.current_usage(p_user_id)                           the monthly quota as it stands
--   public.rate_limit_remaining(p_key, p_limit, p_window_s)   what is left of a Postgres rate window
--
-- Both only read. current_usage applies the lazy rollover of increment_usage_if_allowed
-- (20261123000200) without writing it: a stored period that has ended counts as a new, unused
-- one, exactly as the next charge will see it. rate_limit_remaining reads the counter
-- rate_limit_hit (20261123000300) keeps, for when Redis cannot be asked.
--
-- service_role only. Re-runnable: every statement is idempotent.

create or replace function public.current_usage(p_user_id uuid)
  returns table (allowed boolean, used integer, quota integer, remaining integer, period_resets_at timestamptz)
  language plpgsql
  stable
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

  allowed := true;
  remaining := greatest(quota - used, 0);
  period_resets_at := (v_period_start at time zone 'UTC' + interval '1 month') at time zone 'UTC';
  return next;
end
$$;
comment on function public.current_usage(uuid) is
  'The user''s monthly usage as it stands, changing nothing: the same row shape as increment_usage_if_allowed '
  'with allowed = true; an ended period reads as a new, unused one. Errors: 22023 bad argument, P0002 unknown user.';
revoke execute on function public.current_usage(uuid) from public, anon, authenticated;
grant execute on function public.current_usage(uuid) to service_role;

create or replace function public.rate_limit_remaining(p_key text, p_limit integer, p_window_seconds integer)
  returns table (remaining integer, reset_at timestamptz)
  language plpgsql
  stable
  set search_path = ''
as $$
declare
  v_window_start timestamptz;
  v_hits         integer;
  v_expires_at   timestamptz;
begin
  v_window_start := public.rate_limit_window_start(p_key, p_limit, p_window_seconds);

  -- A stored window that is not older than the current one is the one rate_limit_hit would
  -- count the next hit in (see its comment); an older one has ended and counts as empty.
  select h.hits, h.expires_at
    into v_hits, v_expires_at
    from public.rate_limit_hits as h
   where h.key = p_key
     and h.window_seconds = p_window_seconds
     and h.window_start >= v_window_start;

  if found then
    remaining := greatest(p_limit - v_hits, 0);
    reset_at := v_expires_at;
  else
    remaining := p_limit;
    reset_at := v_window_start + pg_catalog.make_interval(secs => p_window_seconds);
  end if;
  return next;
end
$$;
comment on function public.rate_limit_remaining(text, integer, integer) is
  'How many hits p_key has left in the current fixed window of p_window_seconds under p_limit, and when the '
  'window resets, as rate_limit_hit counts them; changes nothing. Errors: 22023 bad argument.';
revoke execute on function public.rate_limit_remaining(text, integer, integer) from public, anon, authenticated;
grant execute on function public.rate_limit_remaining(text, integer, integer) to service_role;
