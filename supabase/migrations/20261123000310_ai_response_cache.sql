-- AI response cache: model answers keyed by the SHA-256 of the normalised input, so identical
-- requests within the TTL are answered without calling the model again.
--
-- Expired rows are never returned (ai_cache_get filters on expires_at) and are deleted by
-- purge_ai_response_cache(), which a scheduled job can run.
--
-- service_role only: RLS on with no policies, and no privileges for anon/authenticated.
-- Re-runnable: every statement is idempotent.

create table if not exists public.ai_response_cache (
  key        text        primary key
                         constraint ai_response_cache_key_is_sha256_hex check (key ~ '^[0-9a-f]{64}$'),
  value      jsonb       not null,
  model      text        not null constraint ai_response_cache_model_not_blank check (pg_catalog.btrim(model) <> ''),
  created_at timestamptz not null default now(),
  expires_at timestamptz not null,
  constraint ai_response_cache_expires_after_created check (expires_at > created_at)
);
comment on table public.ai_response_cache is
  'Cached AI responses. key = lowercase hex SHA-256 of the normalised input (include the model and prompt version in what you hash).';
create index if not exists ai_response_cache_expires_at_idx on public.ai_response_cache (expires_at);

alter table public.ai_response_cache enable row level security;
revoke all on table public.ai_response_cache from anon, authenticated;
grant all on table public.ai_response_cache to service_role;

-- The lookup: the cached value, or NULL when there is none or it has expired.
create or replace function public.ai_cache_get(p_key text)
  returns jsonb
  language sql
  stable
  set search_path = ''
as $$
  select c.value
  from public.ai_response_cache as c
  where c.key = p_key
    and c.expires_at > pg_catalog.now()
$$;
comment on function public.ai_cache_get(text) is
  'The cached value for p_key, or NULL when absent or expired.';
revoke execute on function public.ai_cache_get(text) from public, anon, authenticated;
grant execute on function public.ai_cache_get(text) to service_role;

-- Insert or replace; returns when the entry expires.
create or replace function public.ai_cache_put(p_key text, p_value jsonb, p_model text, p_ttl_seconds integer)
  returns timestamptz
  language plpgsql
  volatile
  set search_path = ''
as $$
declare
  v_expires_at timestamptz;
begin
  if p_key is null or p_key !~ '^[0-9a-f]{64}$' then
    raise exception 'p_key must be a lowercase hex SHA-256 (64 characters)'
      using errcode = '22023';
  end if;
  if p_value is null then
    raise exception 'p_value must not be null'
      using errcode = '22023';
  end if;
  if p_model is null or pg_catalog.btrim(p_model) = '' then
    raise exception 'p_model must not be empty'
      using errcode = '22023';
  end if;
  if p_ttl_seconds is null or p_ttl_seconds not between 1 and 31536000 then
    raise exception 'p_ttl_seconds must be from 1 to 31536000 (one year), got %', coalesce(p_ttl_seconds::text, 'null')
      using errcode = '22023';
  end if;

  insert into public.ai_response_cache as c (key, value, model, created_at, expires_at)
  values (p_key, p_value, p_model, pg_catalog.now(), pg_catalog.now() + pg_catalog.make_interval(secs => p_ttl_seconds))
  on conflict (key) do update
    set value      = excluded.value,
        model      = excluded.model,
        created_at = excluded.created_at,
        expires_at = excluded.expires_at
  returning c.expires_at into v_expires_at;
  return v_expires_at;
end
$$;
comment on function public.ai_cache_put(text, jsonb, text, integer) is
  'Stores (or replaces) the cached value for p_key for p_ttl_seconds (1..31536000); returns expires_at. Errors: 22023 bad argument.';
revoke execute on function public.ai_cache_put(text, jsonb, text, integer) from public, anon, authenticated;
grant execute on function public.ai_cache_put(text, jsonb, text, integer) to service_role;

create or replace function public.purge_ai_response_cache()
  returns integer
  language sql
  volatile
  set search_path = ''
as $$
  with purged as (
    delete from public.ai_response_cache as c
    where c.expires_at <= pg_catalog.now()
    returning 1
  )
  select pg_catalog.count(*)::integer from purged
$$;
comment on function public.purge_ai_response_cache() is
  'Deletes expired cache entries; returns how many.';
revoke execute on function public.purge_ai_response_cache() from public, anon, authenticated;
grant execute on function public.purge_ai_response_cache() to service_role;
