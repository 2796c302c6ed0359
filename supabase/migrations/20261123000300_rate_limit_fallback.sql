-- Rate limiting fallback: the fixed-window limiter the edge functions use when Redis cannot be
-- reached. One row per (key, window length); one INSERT ... ON CONFLICT DO UPDATE ... RETURNING
-- both counts the hit and reads the count back, under the row's lock, so concurrent hits on the
-- same key are serialised and exactly p_limit of them are allowed per window.
--
-- Windows are aligned to the Unix epoch (a 60 s window runs hh:mm:00 to hh:mm+1:00). Like any
-- fixed window, a client can get up to 2 x p_limit through across one boundary; that is the
-- accepted price of one row and one statement per hit.
--
-- UNLOGGED on purpose: these counters live for one window, are rewritten on every request and
-- are worthless after a crash. Skipping the WAL makes each hit much cheaper; the cost is that
-- a crash (not a clean restart) empties the table, which only resets the current windows, and
-- that unlogged tables are not copied to read replicas or backups, which do not need them.
--
-- service_role only. Re-runnable: every statement is idempotent.

create unlogged table if not exists public.rate_limit_hits (
  key            text        not null
                             constraint rate_limit_hits_key_length check (pg_catalog.char_length(key) between 1 and 512),
  window_seconds integer     not null constraint rate_limit_hits_window_positive check (window_seconds > 0),
  window_start   timestamptz not null,
  hits           integer     not null constraint rate_limit_hits_hits_positive check (hits > 0),
  expires_at     timestamptz not null,
  -- The same key may be limited over several window lengths (per minute and per hour) at once.
  constraint rate_limit_hits_pkey primary key (key, window_seconds)
);
comment on table public.rate_limit_hits is
  'Fixed-window rate-limit counters (the Postgres fallback when Redis is unreachable). '
  'UNLOGGED: counters are throw-away; a crash only resets the current windows.';
create index if not exists rate_limit_hits_expires_at_idx on public.rate_limit_hits (expires_at);

alter table public.rate_limit_hits enable row level security;
-- No policies: anon and authenticated get no rows and, below, no privileges either.
revoke all on table public.rate_limit_hits from anon, authenticated;
grant all on table public.rate_limit_hits to service_role;

-- The arguments every rate_limit_* function takes, checked once, and the fixed window they fall in.
create or replace function public.rate_limit_window_start(p_key text, p_limit integer, p_window_seconds integer)
  returns timestamptz
  language plpgsql
  stable
  set search_path = ''
as $$
begin
  if p_key is null or pg_catalog.char_length(p_key) not between 1 and 512 then
    raise exception 'p_key must be a string of 1 to 512 characters'
      using errcode = '22023';
  end if;
  if p_limit is null or p_limit < 1 then
    raise exception 'p_limit must be at least 1, got %', coalesce(p_limit::text, 'null')
      using errcode = '22023';
  end if;
  if p_window_seconds is null or p_window_seconds not between 1 and 86400 then
    raise exception 'p_window_seconds must be from 1 to 86400, got %', coalesce(p_window_seconds::text, 'null')
      using errcode = '22023';
  end if;
  return pg_catalog.to_timestamp(
    (pg_catalog.floor(extract(epoch from pg_catalog.now()) / p_window_seconds) * p_window_seconds)::double precision
  );
end
$$;
comment on function public.rate_limit_window_start(text, integer, integer) is
  'Building block of rate_limit_hit and rate_limit_remaining: checks their arguments (22023 on a bad one) and '
  'returns the start of the current fixed window of p_window_seconds.';
revoke execute on function public.rate_limit_window_start(text, integer, integer) from public, anon, authenticated;
grant execute on function public.rate_limit_window_start(text, integer, integer) to service_role;

create or replace function public.rate_limit_hit(p_key text, p_limit integer, p_window_seconds integer)
  returns table (allowed boolean, remaining integer, reset_at timestamptz)
  language plpgsql
  volatile
  set search_path = ''
as $$
declare
  v_window_start timestamptz;
  v_hits         integer;
begin
  v_window_start := public.rate_limit_window_start(p_key, p_limit, p_window_seconds);

  -- The one statement that counts and decides. A hit from a newer window restarts the count;
  -- a hit stamped in an older window than the stored one (a transaction that started just
  -- before the boundary) is counted in the stored window instead of resetting it.
  insert into public.rate_limit_hits as h (key, window_seconds, window_start, hits, expires_at)
  values (p_key, p_window_seconds, v_window_start, 1,
          v_window_start + pg_catalog.make_interval(secs => p_window_seconds))
  on conflict (key, window_seconds) do update
    set hits         = case when excluded.window_start > h.window_start then 1
                            else least(h.hits, 2147483646) + 1 end,
        window_start = greatest(h.window_start, excluded.window_start),
        expires_at   = greatest(h.expires_at, excluded.expires_at)
  returning h.hits, h.expires_at into v_hits, reset_at;

  allowed := v_hits <= p_limit;
  remaining := greatest(p_limit - v_hits, 0);
  return next;
end
$$;
comment on function public.rate_limit_hit(text, integer, integer) is
  'Counts one hit on p_key in the current fixed window of p_window_seconds (1..86400) and returns whether it is '
  'within p_limit, how many hits remain in the window and when the window resets. Atomic under concurrency. '
  'Put the rate-limit class in the key (e.g. ''ai:<user id>''). Errors: 22023 bad argument.';
revoke execute on function public.rate_limit_hit(text, integer, integer) from public, anon, authenticated;
grant execute on function public.rate_limit_hit(text, integer, integer) to service_role;

create or replace function public.purge_rate_limit_hits()
  returns integer
  language sql
  volatile
  set search_path = ''
as $$
  with purged as (
    delete from public.rate_limit_hits as h
    where h.expires_at <= pg_catalog.now()
    returning 1
  )
  select pg_catalog.count(*)::integer from purged
$$;
comment on function public.purge_rate_limit_hits() is
  'Deletes the counters of windows that have ended; returns how many. Safe to run at any time.';
revoke execute on function public.purge_rate_limit_hits() from public, anon, authenticated;
grant execute on function public.purge_rate_limit_hits() to service_role;
