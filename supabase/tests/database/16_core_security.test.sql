-- Security of the core tables and functions, seen from each API role: what a signed-in user,
-- an anonymous visitor and the service role can read, write and execute.
begin;
create extension if not exists pgtap with schema extensions;

select plan(82);

-- The service-only functions and tables of the core migrations.
create temporary table service_functions (fn regprocedure primary key) on commit drop;
insert into service_functions values
  ('public.increment_usage_if_allowed(uuid,integer)'),
  ('public.refund_usage(uuid,integer,timestamptz)'),
  ('public.rate_limit_hit(text,integer,integer)'),
  ('public.purge_rate_limit_hits()'),
  ('public.ai_cache_get(text)'),
  ('public.ai_cache_put(text,jsonb,text,integer,uuid)'),
  ('public.purge_ai_response_cache()'),
  ('public.enqueue_job(text,jsonb,timestamptz,integer,text,integer)'),
  ('public.claim_jobs(text,integer,integer,text[])'),
  ('public.complete_job(bigint,text)'),
  ('public.fail_job(bigint,text,text)'),
  ('public.purge_finished_jobs(interval)');
create temporary table service_tables (tbl regclass primary key) on commit drop;
insert into service_tables values
  ('public.rate_limit_hits'), ('public.ai_response_cache'), ('public.background_jobs'), ('public.stripe_events');
grant select on service_functions, service_tables to public;

-- ---------------------------------------------------------------------------------------------
-- Catalog-wide rules
-- ---------------------------------------------------------------------------------------------
select is_empty(
  $$select c.oid::regclass::text
      from pg_class c
     where c.relnamespace = 'public'::regnamespace
       and c.relkind in ('r', 'p')
       and not c.relrowsecurity$$,
  'every table in public (partitions included) has row level security enabled'
);
select is_empty(
  $$select p.oid::regprocedure::text
      from pg_proc p
     where p.pronamespace = 'public'::regnamespace
       and p.prosecdef
       and not coalesce(p.proconfig, '{}') @> array['search_path=""']$$,
  'every security definer function in public pins search_path to the empty string'
);
select is(
  array(select p.proname::text from pg_proc p
         where p.pronamespace = 'public'::regnamespace and p.prosecdef
           and (p.oid in (select fn from service_functions)
                or p.proname in ('handle_new_user', 'set_updated_at', 'profile_settings_are_valid'))
         order by 1),
  array['handle_new_user'],
  'of the core functions, only the signup trigger is security definer'
);
select is_empty(
  $$select f.fn::text || ' by ' || r.role
      from service_functions f
     cross join (values ('public'), ('anon'), ('authenticated')) as r(role)
     where exists (select from pg_proc p, aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
                    where p.oid = f.fn
                      and a.privilege_type = 'EXECUTE'
                      and a.grantee = case r.role when 'public' then 0 else r.role::regrole::oid end)$$,
  'no service-only function is granted to PUBLIC, anon or authenticated'
);
select is_empty(
  $$select f.fn::text from service_functions f where not has_function_privilege('service_role', f.fn, 'execute')$$,
  'service_role may execute every service-only function'
);
select is_empty(
  $$select p.proname::text || ' by ' || r.role
      from pg_proc p
     cross join (values ('anon'), ('authenticated')) as r(role)
     where p.oid in ('public.handle_new_user()'::regprocedure, 'public.set_updated_at()'::regprocedure)
       and has_function_privilege(r.role, p.oid, 'execute')$$,
  'anon and authenticated cannot execute the trigger functions'
);
select is_empty(
  $$select t.tbl::text || ' ' || priv || ' by ' || r.role
      from service_tables t
     cross join (values ('anon'), ('authenticated')) as r(role)
     cross join unnest(array['select', 'insert', 'update', 'delete', 'truncate', 'references', 'trigger']) as priv
     where has_table_privilege(r.role, t.tbl, priv)$$,
  'anon and authenticated have no privilege at all on the service-only tables'
);
select is_empty(
  $$select schemaname || '.' || tablename || ': ' || policyname
      from pg_policies
     where (schemaname || '.' || tablename)::regclass in (select tbl from service_tables)$$,
  'the service-only tables have no policies (RLS on, nothing visible to API roles)'
);
select policies_are('public', 'profiles',
  array['Users can read their own profile', 'Users can update their own profile settings'],
  'profiles has exactly the read-own and update-own-settings policies');
select policies_are('public', 'plans', array['Anyone can read the plans'],
  'plans has exactly the public read policy');
select is(
  (select array_agg(privilege_type::text order by privilege_type) from information_schema.role_table_grants
    where table_schema = 'public' and table_name = 'profiles' and grantee = 'authenticated'),
  array['SELECT'],
  'authenticated has only SELECT on profiles as a whole'
);
select is(
  (select array_agg(column_name::text order by column_name) from information_schema.column_privileges
    where table_schema = 'public' and table_name = 'profiles' and grantee = 'authenticated'
      and privilege_type = 'UPDATE'),
  array['settings'],
  'the only column authenticated may update is settings'
);
select ok(
  not has_table_privilege('anon', 'public.profiles', 'select')
    and not has_any_column_privilege('anon', 'public.profiles', 'select'),
  'anon has no read privilege on profiles'
);

-- ---------------------------------------------------------------------------------------------
-- Two users
-- ---------------------------------------------------------------------------------------------
insert into auth.users (id, email)
values ('c0000000-0000-4000-8000-00000000000a', 'sec-alice@example.test'),
       ('c0000000-0000-4000-8000-00000000000b', 'sec-bob@example.test');
update public.profiles set settings = '{"theme":"light"}', stripe_customer_id = 'cus_bob'
 where id = 'c0000000-0000-4000-8000-00000000000b';

-- ---------------------------------------------------------------------------------------------
-- As Alice (authenticated)
-- ---------------------------------------------------------------------------------------------
set local role authenticated;
select set_config('request.jwt.claims', '{"sub":"c0000000-0000-4000-8000-00000000000a","role":"authenticated"}', true);

select results_eq(
  $$select id from public.profiles$$,
  $$values ('c0000000-0000-4000-8000-00000000000a'::uuid)$$,
  'a user sees only their own profile'
);
select is_empty(
  $$select id from public.profiles where id = 'c0000000-0000-4000-8000-00000000000b'$$,
  'a user cannot read another user''s profile even by id'
);

select throws_ok(
  format($$update public.profiles set %s where id = 'c0000000-0000-4000-8000-00000000000a'$$, assignment),
  '42501', null,
  'a user cannot change their own ' || col
)
from (values
  ('plan_id',                'plan_id = ''team'''),
  ('usage_count',            'usage_count = 0'),
  ('period_start',           'period_start = now()'),
  ('stripe_customer_id',     'stripe_customer_id = ''cus_mine'''),
  ('stripe_subscription_id', 'stripe_subscription_id = ''sub_mine'''),
  ('subscription_status',    'subscription_status = ''active'''),
  ('last_active_at',         'last_active_at = now()'),
  ('created_at',             'created_at = now()'),
  ('id',                     'id = ''c0000000-0000-4000-8000-00000000000b''')
) as cases(col, assignment);
select throws_ok(
  $$update public.profiles set settings = '{"theme":"dark"}', plan_id = 'pro'
     where id = 'c0000000-0000-4000-8000-00000000000a'$$,
  '42501', null,
  'a user cannot smuggle a plan change into a settings update'
);

select lives_ok(
  $$update public.profiles set settings = '{"theme":"dark","locale":"fr-FR"}'
     where id = 'c0000000-0000-4000-8000-00000000000a'$$,
  'a user can update their own settings'
);
select is(
  (select settings from public.profiles where id = 'c0000000-0000-4000-8000-00000000000a'),
  '{"theme":"dark","locale":"fr-FR"}'::jsonb,
  'the new settings are stored'
);
select is_empty(
  $$update public.profiles set settings = '{"theme":"dark"}'
     where id = 'c0000000-0000-4000-8000-00000000000b' returning id$$,
  'a user''s update of another user''s settings changes no row'
);
select throws_ok(
  $$update public.profiles set settings = '{"is_admin":true}' where id = 'c0000000-0000-4000-8000-00000000000a'$$,
  '23514', null,
  'settings a user writes are validated too'
);
select throws_ok(
  $$insert into public.profiles (id) values ('c0000000-0000-4000-8000-00000000000c')$$,
  '42501', null,
  'a user cannot insert profiles'
);
select throws_ok(
  $$delete from public.profiles where id = 'c0000000-0000-4000-8000-00000000000a'$$,
  '42501', null,
  'a user cannot delete profiles'
);

select is(
  (select count(*) from public.plans where id in ('free', 'pro', 'team')), 3::bigint,
  'a user can read the plans'
);
select throws_ok(
  $$update public.plans set monthly_quota = 1000000 where id = 'free'$$,
  '42501', null,
  'a user cannot change a plan'
);
select throws_ok(
  $$insert into public.plans (id, name, monthly_quota, ai_per_minute, general_per_minute, upload_per_minute)
    values ('mine', 'Mine', 1000000, 1, 1, 1)$$,
  '42501', null,
  'a user cannot add a plan'
);

select throws_ok(
  format('select * from %s', tbl),
  '42501', null,
  'a user cannot read ' || tbl::text
)
from service_tables;
select throws_ok(
  sql, '42501', null, 'a user cannot write ' || tbl
)
from (values
  ('public.rate_limit_hits',   $$insert into public.rate_limit_hits (key, window_seconds, window_start, hits, expires_at) values ('x', 60, now(), 1, now())$$),
  ('public.ai_response_cache', $$delete from public.ai_response_cache$$),
  ('public.background_jobs',   $$insert into public.background_jobs (type) values ('x')$$),
  ('public.stripe_events',     $$update public.stripe_events set processed_at = now()$$)
) as cases(tbl, sql);

select throws_ok(
  call, '42501', null, 'a user cannot execute ' || fn
)
from (values
  ('increment_usage_if_allowed', $$select * from public.increment_usage_if_allowed('c0000000-0000-4000-8000-00000000000a', 1)$$),
  ('refund_usage',               $$select * from public.refund_usage('c0000000-0000-4000-8000-00000000000a', 1)$$),
  ('rate_limit_hit',             $$select * from public.rate_limit_hit('k', 1, 60)$$),
  ('purge_rate_limit_hits',      $$select public.purge_rate_limit_hits()$$),
  ('ai_cache_get',               $$select public.ai_cache_get('k')$$),
  ('ai_cache_put',               $$select public.ai_cache_put('k', '{}', 'm', 60)$$),
  ('purge_ai_response_cache',    $$select public.purge_ai_response_cache()$$),
  ('enqueue_job',                $$select public.enqueue_job('t')$$),
  ('claim_jobs',                 $$select * from public.claim_jobs('w', 1, 60)$$),
  ('complete_job',               $$select public.complete_job(1, 'w')$$),
  ('fail_job',                   $$select public.fail_job(1, 'w', 'e')$$),
  ('purge_finished_jobs',        $$select public.purge_finished_jobs()$$)
) as cases(fn, call);

-- ---------------------------------------------------------------------------------------------
-- As an anonymous visitor
-- ---------------------------------------------------------------------------------------------
reset role;
set local role anon;
select set_config('request.jwt.claims', '{"role":"anon"}', true);

select throws_ok($$select * from public.profiles$$, '42501', null, 'anon cannot read profiles');
select throws_ok(
  $$update public.profiles set settings = '{}'$$, '42501', null, 'anon cannot update profiles'
);
select is(
  (select count(*) from public.plans where id in ('free', 'pro', 'team')), 3::bigint,
  'anon can read the plans'
);
select throws_ok($$delete from public.plans$$, '42501', null, 'anon cannot delete plans');
select throws_ok(
  format('select * from %s', tbl), '42501', null, 'anon cannot read ' || tbl::text
)
from service_tables;
select throws_ok(
  call, '42501', null, 'anon cannot execute ' || fn
)
from (values
  ('increment_usage_if_allowed', $$select * from public.increment_usage_if_allowed('c0000000-0000-4000-8000-00000000000a', 1)$$),
  ('refund_usage',               $$select * from public.refund_usage('c0000000-0000-4000-8000-00000000000a', 1)$$),
  ('rate_limit_hit',             $$select * from public.rate_limit_hit('k', 1, 60)$$),
  ('purge_rate_limit_hits',      $$select public.purge_rate_limit_hits()$$),
  ('ai_cache_get',               $$select public.ai_cache_get('k')$$),
  ('ai_cache_put',               $$select public.ai_cache_put('k', '{}', 'm', 60)$$),
  ('purge_ai_response_cache',    $$select public.purge_ai_response_cache()$$),
  ('enqueue_job',                $$select public.enqueue_job('t')$$),
  ('claim_jobs',                 $$select * from public.claim_jobs('w', 1, 60)$$),
  ('complete_job',               $$select public.complete_job(1, 'w')$$),
  ('fail_job',                   $$select public.fail_job(1, 'w', 'e')$$),
  ('purge_finished_jobs',        $$select public.purge_finished_jobs()$$)
) as cases(fn, call);

-- ---------------------------------------------------------------------------------------------
-- Nothing the users tried changed anything
-- ---------------------------------------------------------------------------------------------
reset role;
select results_eq(
  $$select id, plan_id, usage_count, settings, stripe_customer_id
      from public.profiles
     where id in ('c0000000-0000-4000-8000-00000000000a', 'c0000000-0000-4000-8000-00000000000b')
     order by id$$,
  $$values ('c0000000-0000-4000-8000-00000000000a'::uuid, 'free'::text, 0, '{"theme":"dark","locale":"fr-FR"}'::jsonb, null::text),
           ('c0000000-0000-4000-8000-00000000000b'::uuid, 'free'::text, 0, '{"theme":"light"}'::jsonb, 'cus_bob'::text)$$,
  'only Alice''s own settings changed; plans, usage, Stripe fields and Bob''s row are untouched'
);
select is(
  (select monthly_quota from public.plans where id = 'free'), 100,
  'the free plan''s quota is untouched'
);

-- ---------------------------------------------------------------------------------------------
-- As the service role
-- ---------------------------------------------------------------------------------------------
set local role service_role;
select set_config('request.jwt.claims', '{"role":"service_role"}', true);

select is(
  (select count(*) from public.profiles
    where id in ('c0000000-0000-4000-8000-00000000000a', 'c0000000-0000-4000-8000-00000000000b')),
  2::bigint,
  'service_role reads every profile'
);
select lives_ok(
  $$update public.profiles
       set plan_id = 'pro', stripe_customer_id = 'cus_alice', stripe_subscription_id = 'sub_alice',
           subscription_status = 'active'
     where id = 'c0000000-0000-4000-8000-00000000000a'$$,
  'service_role changes plan and Stripe fields'
);
select throws_ok(
  $$update public.profiles set stripe_customer_id = 'cus_bob' where id = 'c0000000-0000-4000-8000-00000000000a'$$,
  '23505', null,
  'a Stripe customer belongs to one profile only'
);
select results_eq(
  $$select allowed, quota from public.increment_usage_if_allowed('c0000000-0000-4000-8000-00000000000a', 1)$$,
  $$values (true, 2000)$$,
  'service_role meters usage (against the new plan''s quota)'
);
select lives_ok(
  $$select public.enqueue_job('t'), public.ai_cache_get(repeat('0', 64)), public.purge_rate_limit_hits()$$,
  'service_role uses the queue, the cache and the rate limiter'
);
select lives_ok(
  $$select count(*) from public.rate_limit_hits, public.ai_response_cache, public.background_jobs, public.stripe_events$$,
  'service_role reads the service-only tables'
);
reset role;

select * from finish();
rollback;
