-- Plans and profiles: the seeded plans, the profile every signup gets, its removal with the
-- user, settings validation and the housekeeping triggers.
begin;
create extension if not exists pgtap with schema extensions;

select plan(45);

-- ---------------------------------------------------------------------------------------------
-- plans
-- ---------------------------------------------------------------------------------------------
select has_table('public', 'plans', 'public.plans exists');
select col_is_pk('public', 'plans', 'id', 'plans.id is the primary key');
select columns_are('public', 'plans', array[
  'id', 'name', 'monthly_quota', 'ai_per_minute', 'general_per_minute', 'upload_per_minute',
  'stripe_price_id', 'created_at', 'updated_at', 'max_output_tokens', 'chat_history_chars',
  'cache_hit_cost', 'storage_quota_bytes'
], 'plans has exactly the expected columns');
select results_eq(
  $$select id, monthly_quota, ai_per_minute, general_per_minute, upload_per_minute
    from public.plans where id in ('free', 'pro', 'team') order by monthly_quota$$,
  $$values ('free'::text, 100, 20, 200, 20), ('pro', 2000, 100, 1000, 100), ('team', 10000, 300, 3000, 300)$$,
  'the free, pro and team plans are seeded with their quotas and per-minute limits'
);
select is(
  (select stripe_price_id from public.plans where id = 'free'), null,
  'the free plan has no Stripe price'
);
select col_is_unique('public', 'plans', array['stripe_price_id'], 'a Stripe price belongs to at most one plan');
select throws_ok(
  $$insert into public.plans (id, name, monthly_quota, ai_per_minute, general_per_minute, upload_per_minute)
    values ('broken', 'Broken', -1, 1, 1, 1)$$,
  '23514', null,
  'a plan cannot have a negative quota'
);

-- ---------------------------------------------------------------------------------------------
-- profiles: structure
-- ---------------------------------------------------------------------------------------------
select has_table('public', 'profiles', 'public.profiles exists');
select columns_are('public', 'profiles', array[
  'id', 'plan_id', 'usage_count', 'period_start', 'settings', 'stripe_customer_id',
  'stripe_subscription_id', 'subscription_status', 'last_active_at', 'created_at', 'updated_at'
], 'profiles has exactly the expected columns');
select col_is_pk('public', 'profiles', 'id', 'profiles.id is the primary key');
select fk_ok('public', 'profiles', 'id', 'auth', 'users', 'id', 'profiles.id references auth.users');
select fk_ok('public', 'profiles', 'plan_id', 'public', 'plans', 'id', 'profiles.plan_id references plans');
select is(
  (select array_agg(pg_get_indexdef(i.indexrelid) order by pg_get_indexdef(i.indexrelid))
     from pg_index i
    where i.indrelid = 'public.profiles'::regclass and i.indisunique and i.indpred is not null),
  array[
    'CREATE UNIQUE INDEX profiles_stripe_customer_id_key ON public.profiles USING btree (stripe_customer_id) WHERE (stripe_customer_id IS NOT NULL)',
    'CREATE UNIQUE INDEX profiles_stripe_subscription_id_key ON public.profiles USING btree (stripe_subscription_id) WHERE (stripe_subscription_id IS NOT NULL)'
  ],
  'stripe_customer_id and stripe_subscription_id have partial unique indexes (where not null)'
);
select is(
  (select row(p.prosecdef, p.proconfig)::text from pg_proc p where p.oid = 'public.handle_new_user()'::regprocedure),
  row(true, array['search_path=""'])::text,
  'the signup trigger function is security definer with an empty pinned search_path'
);

-- ---------------------------------------------------------------------------------------------
-- The signup trigger and the cascade
-- ---------------------------------------------------------------------------------------------
insert into auth.users (id, email)
values ('a0000000-0000-4000-8000-000000000001', 'profile-alice@example.test'),
       ('a0000000-0000-4000-8000-000000000002', 'profile-bob@example.test');

select results_eq(
  $$select plan_id, usage_count, settings, period_start = date_trunc('month', now(), 'UTC'),
           stripe_customer_id is null and stripe_subscription_id is null and subscription_status is null
      from public.profiles where id = 'a0000000-0000-4000-8000-000000000001'$$,
  $$values ('free'::text, 0, '{}'::jsonb, true, true)$$,
  'signing up creates a free profile with no usage, empty settings and the current UTC month as period'
);
select is(
  (select count(*) from public.profiles
    where id in ('a0000000-0000-4000-8000-000000000001', 'a0000000-0000-4000-8000-000000000002')),
  2::bigint,
  'every new user gets exactly one profile'
);

delete from auth.users where id = 'a0000000-0000-4000-8000-000000000002';
select is_empty(
  $$select 1 from public.profiles where id = 'a0000000-0000-4000-8000-000000000002'$$,
  'deleting a user deletes their profile (on delete cascade)'
);

select throws_ok(
  $$insert into public.profiles (id) values ('a0000000-0000-4000-8000-0000000000ff')$$,
  '23503', null,
  'a profile cannot exist without its auth.users row'
);
select throws_ok(
  $$update public.profiles set plan_id = 'platinum' where id = 'a0000000-0000-4000-8000-000000000001'$$,
  '23503', null,
  'a profile cannot point at a plan that does not exist'
);
select throws_ok(
  $$update public.profiles set usage_count = -1 where id = 'a0000000-0000-4000-8000-000000000001'$$,
  '23514', null,
  'usage_count can never be negative'
);

-- updated_at is the trigger's, whatever the UPDATE says.
update public.profiles set settings = '{"theme":"dark"}', updated_at = '2000-01-01'
 where id = 'a0000000-0000-4000-8000-000000000001';
select is(
  (select updated_at from public.profiles where id = 'a0000000-0000-4000-8000-000000000001'), now(),
  'updating a profile sets updated_at to now()'
);
update public.plans set updated_at = '2000-01-01' where id = 'team';
select is(
  (select updated_at from public.plans where id = 'team'), now(),
  'updating a plan sets updated_at to now()'
);

-- ---------------------------------------------------------------------------------------------
-- settings validation
-- ---------------------------------------------------------------------------------------------
select ok(public.profile_settings_are_valid('{}'), 'empty settings are valid');
select ok(
  public.profile_settings_are_valid(
    '{"locale":"pt-BR","theme":"system","notifications_enabled":false,"default_analysis_type":"summary"}'),
  'settings with all four keys are valid'
);
select ok(public.profile_settings_are_valid('{"locale":"en"}'), 'a bare language is a valid locale');
select ok(
  public.profile_settings_are_valid(jsonb_build_object('default_analysis_type', repeat('x', 64))),
  'a 64-character default_analysis_type is valid'
);
select is(
  (select provolatile from pg_proc where oid = 'public.profile_settings_are_valid(jsonb)'::regprocedure),
  'i'::"char",
  'profile_settings_are_valid is immutable'
);

select lives_ok(
  $$update public.profiles
       set settings = '{"locale":"de-DE","theme":"light","notifications_enabled":true,"default_analysis_type":"sentiment"}'
     where id = 'a0000000-0000-4000-8000-000000000001'$$,
  'valid settings can be stored'
);

-- Each bad value must be rejected by the check constraint (23514).
select throws_ok(
  format($$update public.profiles set settings = %L where id = 'a0000000-0000-4000-8000-000000000001'$$, bad),
  '23514', null,
  'settings are rejected: ' || why
)
from (values
  ('{"favourite_colour":"red"}',               'unknown key'),
  ('{"theme":"dark","admin":true}',            'unknown key next to a valid one'),
  ('{"locale":"EN"}',                          'upper-case language'),
  ('{"locale":"en-us"}',                       'lower-case region'),
  ('{"locale":"en_US"}',                       'underscore in locale'),
  ('{"locale":"english"}',                     'locale that is a word'),
  ('{"locale":42}',                            'locale that is a number'),
  ('{"theme":"blue"}',                         'theme outside system/light/dark'),
  ('{"theme":null}',                           'theme that is JSON null'),
  ('{"notifications_enabled":"yes"}',          'notifications_enabled that is a string'),
  ('{"default_analysis_type":""}',             'empty default_analysis_type'),
  ('{"default_analysis_type":1}',              'default_analysis_type that is a number'),
  ('[]',                                       'an array instead of an object'),
  ('"dark"',                                   'a string instead of an object')
) as cases(bad, why);

select is(
  public.profile_settings_are_valid(jsonb_build_object('default_analysis_type', repeat('x', 65))), false,
  'a 65-character default_analysis_type is invalid'
);
select is(public.profile_settings_are_valid(null), false, 'NULL settings are invalid');
select is(
  (select settings ->> 'locale' from public.profiles where id = 'a0000000-0000-4000-8000-000000000001'), 'de-DE',
  'rejected updates left the stored settings unchanged'
);

select * from finish();
rollback;
