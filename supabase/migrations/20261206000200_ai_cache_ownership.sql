-- Whose an AI-cache entry is. An answer may only come back to the user whose request produced
-- it, unless it was produced for an input that carries no personal data: a text analysis of a
-- type the operator lists in ai_shareable_analysis_types. Owned entries go with their owner's
-- account (on delete cascade here; the Redis copies through the `ai_cache.forget` job).
--
-- service_role only: RLS on with no policies, and no privileges for anon/authenticated.
-- Re-runnable: every statement is idempotent.

alter table public.ai_response_cache
  add column if not exists user_id uuid references auth.users (id) on delete cascade;
comment on column public.ai_response_cache.user_id is
  'The user whose request produced the entry; NULL for shareable entries (no personal data).';
create index if not exists ai_response_cache_user_id_idx
  on public.ai_response_cache (user_id)
  where user_id is not null;

create table if not exists public.ai_shareable_analysis_types (
  analysis_type text        primary key
                            constraint ai_shareable_analysis_types_format
                            check (analysis_type = pg_catalog.btrim(analysis_type)
                                   and pg_catalog.length(analysis_type) between 1 and 64),
  created_at    timestamptz not null default now()
);
comment on table public.ai_shareable_analysis_types is
  'Text analysis types whose cached answers may serve any user (their inputs carry no personal data). Empty by default: every entry is per user.';
alter table public.ai_shareable_analysis_types enable row level security;
revoke all on table public.ai_shareable_analysis_types from anon, authenticated;
grant all on table public.ai_shareable_analysis_types to service_role;

drop function if exists public.ai_cache_put(text, jsonb, text, integer);

-- Insert or replace; returns when the entry expires. p_user_id NULL stores a shareable entry.
create or replace function public.ai_cache_put(
  p_key text,
  p_value jsonb,
  p_model text,
  p_ttl_seconds integer,
  p_user_id uuid default null
)
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

  insert into public.ai_response_cache as c (key, value, model, created_at, expires_at, user_id)
  values (p_key, p_value, p_model, pg_catalog.now(),
          pg_catalog.now() + pg_catalog.make_interval(secs => p_ttl_seconds), p_user_id)
  on conflict (key) do update
    set value      = excluded.value,
        model      = excluded.model,
        created_at = excluded.created_at,
        expires_at = excluded.expires_at,
        user_id    = excluded.user_id
  returning c.expires_at into v_expires_at;
  return v_expires_at;
exception
  -- The owner was deleted while their answer was being made: there is no one left to cache for.
  when foreign_key_violation then
    return null;
end
$$;
comment on function public.ai_cache_put(text, jsonb, text, integer, uuid) is
  'Stores (or replaces) the cached value for p_key for p_ttl_seconds (1..31536000), owned by p_user_id (NULL: shareable); returns expires_at, or NULL when the owner no longer exists. Errors: 22023 bad argument.';
revoke execute on function public.ai_cache_put(text, jsonb, text, integer, uuid) from public, anon, authenticated;
grant execute on function public.ai_cache_put(text, jsonb, text, integer, uuid) to service_role;
