-- The AI response cache: put/get, expiry, the purge.
begin;
create extension if not exists pgtap with schema extensions;

select plan(19);

select has_table('public', 'ai_response_cache', 'public.ai_response_cache exists');
select col_is_pk('public', 'ai_response_cache', 'key', 'the cache is keyed by key');
select col_not_null('public', 'ai_response_cache', 'expires_at', 'every entry has an expiry');

-- Keys as the edge functions make them: SHA-256 hex of the normalised input.
create temporary table k on commit drop as
select encode(extensions.digest('summarise: hello', 'sha256'), 'hex') as live,
       encode(extensions.digest('summarise: old', 'sha256'), 'hex') as old,
       encode(extensions.digest('summarise: missing', 'sha256'), 'hex') as missing;

select is(
  public.ai_cache_put((select live from k), '{"summary":"hi"}', 'gpt-4o-mini', 3600),
  now() + interval '1 hour',
  'put stores an entry and returns when it expires'
);
select is(
  public.ai_cache_get((select live from k)), '{"summary":"hi"}'::jsonb,
  'get returns the stored value'
);
select is(
  public.ai_cache_get((select missing from k)), null::jsonb,
  'get returns NULL for a key never stored'
);

select lives_ok(
  $$select public.ai_cache_put((select live from k), '{"summary":"hello"}', 'gpt-4o', 60)$$,
  'put on an existing key replaces the entry'
);
select results_eq(
  $$select value, model, expires_at = now() + interval '60 seconds' from public.ai_response_cache where key = (select live from k)$$,
  $$values ('{"summary":"hello"}'::jsonb, 'gpt-4o'::text, true)$$,
  'the replacement has the new value, model and expiry'
);

-- An entry whose time is up.
insert into public.ai_response_cache (key, value, model, created_at, expires_at)
values ((select old from k), '{"summary":"stale"}', 'gpt-4o-mini', now() - interval '2 hours', now() - interval '1 hour');
select is(
  public.ai_cache_get((select old from k)), null::jsonb,
  'get ignores an expired entry'
);
select is(
  public.ai_cache_get((select live from k)), '{"summary":"hello"}'::jsonb,
  'get still returns a live entry'
);

select throws_ok(
  $$select public.ai_cache_put('ABCDEF', '{}', 'gpt-4o', 60)$$, '22023', null,
  'put rejects a key that is not a SHA-256 hex'
);
select throws_ok(
  $$select public.ai_cache_put(upper((select live from k)), '{}', 'gpt-4o', 60)$$, '22023', null,
  'put rejects upper-case hex (keys are lower-case)'
);
select throws_ok(
  $$select public.ai_cache_put((select live from k), '{}', 'gpt-4o', 0)$$, '22023', null,
  'put rejects a TTL of 0'
);
select throws_ok(
  $$select public.ai_cache_put((select live from k), null, 'gpt-4o', 60)$$, '22023', null,
  'put rejects a NULL value'
);
select throws_ok(
  $$select public.ai_cache_put((select live from k), '{}', ' ', 60)$$, '22023', null,
  'put rejects a blank model'
);
select throws_ok(
  $$insert into public.ai_response_cache (key, value, model, expires_at) values ('not-a-hash', '{}', 'm', now() + interval '1 minute')$$,
  '23514', null,
  'the table itself rejects keys that are not a SHA-256 hex'
);

-- Purge: exactly the expired entries.
delete from public.ai_response_cache where key not in (select live from k union all select old from k);
select is(public.purge_ai_response_cache(), 1, 'purge deletes the expired entry and returns the count');
select results_eq(
  $$select key from public.ai_response_cache$$,
  $$select live from k$$,
  'the live entry survives the purge'
);
select is(public.purge_ai_response_cache(), 0, 'a second purge finds nothing');

select * from finish();
rollback;
