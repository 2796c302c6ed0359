-- What each signed-in request met on its way, carried in its own api_metrics row (no statement
-- of its own): whether the profile came from the cache, whether an AI answer came from the AI
-- response cache, and whether Redis was skipped for the Postgres fallbacks. The pipeline sets
-- them per request; the metrics flush writes them with the row it writes anyway.
--
-- ops_cache_and_fallback turns them into hit rates and the fallback share per function over the
-- last hour, and the alert rule `redis_fallback` watches the share over its window.
--
-- touch_last_active stamps profiles.last_active_at for a batch of users, at most once per user
-- per 5 minutes, so that sync's adaptive interval sees users who only read. The metrics flush
-- calls it with the users of its batch (one statement per flush, never per request).
--
-- Re-runnable: every statement is idempotent.

alter table public.api_metrics
  add column if not exists profile_cache_hit boolean,
  add column if not exists ai_cache_hit boolean,
  add column if not exists redis_fallback boolean;

comment on column public.api_metrics.profile_cache_hit is
  'The caller''s profile came from the Redis profile cache (false: read from Postgres). Null where no profile was read.';
comment on column public.api_metrics.ai_cache_hit is
  'An AI answer came from the AI response cache (false: the model was called). Null for requests without an AI answer.';
comment on column public.api_metrics.redis_fallback is
  'Redis did not answer (or was being skipped) and the request used the Postgres fallbacks.';

create or replace view public.ops_cache_and_fallback
  with (security_invoker = true) as
select m.function_name,
       count(*)::integer as requests,
       round((count(*) filter (where m.profile_cache_hit))::numeric
             / nullif(count(m.profile_cache_hit), 0), 4) as profile_cache_hit_rate,
       count(m.ai_cache_hit)::integer as ai_answers,
       round((count(*) filter (where m.ai_cache_hit))::numeric
             / nullif(count(m.ai_cache_hit), 0), 4) as ai_cache_hit_rate,
       round((count(*) filter (where m.redis_fallback))::numeric / count(*), 4) as redis_fallback_share
  from public.api_metrics as m
 where m.created_at > now() - interval '1 hour'
 group by m.function_name
 order by redis_fallback_share desc, requests desc;

comment on view public.ops_cache_and_fallback is
  'Per function over the last hour (signed-in requests): profile cache and AI cache hit rates, and the share of '
  'requests served in Redis fallback mode (Postgres profiles and rate limits). Alert when redis_fallback_share > 0.5.';

revoke all on public.ops_cache_and_fallback from public, anon, authenticated;
grant select on public.ops_cache_and_fallback to service_role;

create or replace function public.touch_last_active(p_user_ids uuid[], p_now timestamptz default now())
  returns integer
  language sql
  volatile
  set search_path = ''
as $$
  with touched as (
    update public.profiles as p
       set last_active_at = p_now
     where p.id = any (p_user_ids)
       and (p.last_active_at is null or p.last_active_at < p_now - interval '5 minutes')
    returning 1
  )
  select pg_catalog.count(*)::integer from touched
$$;
comment on function public.touch_last_active(uuid[], timestamptz) is
  'Sets profiles.last_active_at = p_now for the given users whose stamp is older than 5 minutes (or unset); '
  'returns how many. Called by the functions'' metrics flush with the signed-in users of the batch.';
revoke execute on function public.touch_last_active(uuid[], timestamptz) from public, anon, authenticated;
grant execute on function public.touch_last_active(uuid[], timestamptz) to service_role;
