-- User statistics (20261123000430): the materialized view counts right after a refresh, has
-- the unique index a concurrent refresh needs, is closed to the API roles, and a user sees only
-- their own row through my_statistics.
begin;
create extension if not exists pgtap with schema extensions;
set local client_min_messages = warning;

select plan(27);

-- ---------------------------------------------------------------------------------------------
-- Shape and access
-- ---------------------------------------------------------------------------------------------
select has_materialized_view('public', 'user_statistics', 'user_statistics is a materialized view');
select has_index('public', 'user_statistics', 'user_statistics_user_id_key', array['user_id']);
select index_is_unique('public', 'user_statistics', 'user_statistics_user_id_key',
  'its index on user_id is UNIQUE (required by REFRESH ... CONCURRENTLY)');
select is(
  (select indpred is null from pg_index where indexrelid = 'public.user_statistics_user_id_key'::regclass),
  true,
  'the unique index has no WHERE clause (REFRESH ... CONCURRENTLY cannot use a partial one)'
);
select ok(
  not has_table_privilege('anon', 'public.user_statistics', 'SELECT')
    and not has_table_privilege('authenticated', 'public.user_statistics', 'SELECT'),
  'anon and authenticated cannot read user_statistics (a materialized view has no RLS)'
);
select ok(has_table_privilege('service_role', 'public.user_statistics', 'SELECT'), 'service_role can read user_statistics');

select has_view('public', 'my_statistics', 'my_statistics is a view');
select ok(
  (select 'security_barrier=true' = any (reloptions) and 'security_invoker=false' = any (reloptions)
   from pg_class where oid = 'public.my_statistics'::regclass),
  'my_statistics is a security_barrier view running as its owner'
);
select table_privs_are('public', 'my_statistics', 'authenticated', array['SELECT'], 'authenticated may only read my_statistics');
select table_privs_are('public', 'my_statistics', 'anon', array[]::text[], 'anon cannot read my_statistics');

select function_returns('public', 'refresh_user_statistics', array[]::text[], 'void');
select ok(
  pg_get_functiondef('public.refresh_user_statistics()'::regprocedure) ~* 'refresh materialized view concurrently public\.user_statistics',
  'refresh_user_statistics refreshes CONCURRENTLY (readers never block)'
);
select is(
  (select count(*)::int from information_schema.routine_privileges
   where routine_schema = 'public' and routine_name = 'refresh_user_statistics'
     and grantee in ('PUBLIC', 'anon', 'authenticated', 'service_role')),
  0,
  'no API role may run refresh_user_statistics'
);

-- ---------------------------------------------------------------------------------------------
-- Counts right after a refresh
-- ---------------------------------------------------------------------------------------------
insert into auth.users (id, email) values
  ('a3000000-0000-4000-8000-000000000001', 'stats-a@example.test'),
  ('b3000000-0000-4000-8000-000000000002', 'stats-b@example.test'),
  ('c3000000-0000-4000-8000-000000000003', 'stats-c@example.test');

insert into public.analyses (user_id, created_at, analysis_type, result)
select 'a3000000-0000-4000-8000-000000000001', now() - g * interval '1 minute', 'caption', '{}'
from generate_series(1, 5) as g;
insert into public.analyses (user_id, created_at, analysis_type, result)
values ('b3000000-0000-4000-8000-000000000002', now() - interval '40 days', 'caption', '{}');
insert into public.chat_messages (user_id, conversation_id, role, content, created_at)
select 'a3000000-0000-4000-8000-000000000001', gen_random_uuid(), 'user', 'hi', now() - interval '1 hour'
from generate_series(1, 3);
insert into public.activities (user_id, kind, created_at)
values ('b3000000-0000-4000-8000-000000000002', 'sign_in', now() - interval '2 days');
update public.profiles set usage_count = 7 where id = 'a3000000-0000-4000-8000-000000000001';
-- B's stored period ended two months ago: nothing used in this one.
update public.profiles
   set usage_count = 50,
       period_start = (date_trunc('month', now() at time zone 'UTC') - interval '2 months') at time zone 'UTC'
 where id = 'b3000000-0000-4000-8000-000000000002';

select lives_ok($$select public.refresh_user_statistics()$$, 'refresh_user_statistics runs');

select results_eq(
  $$select user_id, analyses_count, chat_messages_count, used_this_period
    from public.user_statistics
    where user_id in ('a3000000-0000-4000-8000-000000000001', 'b3000000-0000-4000-8000-000000000002',
                      'c3000000-0000-4000-8000-000000000003')
    order by user_id$$,
  $$values ('a3000000-0000-4000-8000-000000000001'::uuid, 5::bigint, 3::bigint, 7),
           ('b3000000-0000-4000-8000-000000000002'::uuid, 1::bigint, 0::bigint, 0),
           ('c3000000-0000-4000-8000-000000000003'::uuid, 0::bigint, 0::bigint, 0)$$,
  'counts per user right after the refresh (usage of an ended period counts as 0)'
);
select is(
  (select last_activity_at from public.user_statistics where user_id = 'a3000000-0000-4000-8000-000000000001'),
  (select max(created_at) from public.analyses where user_id = 'a3000000-0000-4000-8000-000000000001'),
  'last activity is the latest of analyses, messages and activities'
);
select is(
  (select last_activity_at from public.user_statistics where user_id = 'b3000000-0000-4000-8000-000000000002'),
  (select created_at from public.activities where user_id = 'b3000000-0000-4000-8000-000000000002'),
  'last activity includes the activity log'
);
select is(
  (select last_activity_at from public.user_statistics where user_id = 'c3000000-0000-4000-8000-000000000003'),
  null,
  'a user who did nothing has no last activity'
);

-- New rows show after the next refresh, not before.
insert into public.analyses (user_id, analysis_type, result)
values ('c3000000-0000-4000-8000-000000000003', 'caption', '{}');
select is(
  (select analyses_count from public.user_statistics where user_id = 'c3000000-0000-4000-8000-000000000003'),
  0::bigint,
  'the view is a snapshot until refreshed'
);
select public.refresh_user_statistics();
select is(
  (select analyses_count from public.user_statistics where user_id = 'c3000000-0000-4000-8000-000000000003'),
  1::bigint,
  'a second (concurrent) refresh picks up the new row'
);
delete from auth.users where id = 'c3000000-0000-4000-8000-000000000003';
select public.refresh_user_statistics();
select is_empty(
  $$select 1 from public.user_statistics where user_id = 'c3000000-0000-4000-8000-000000000003'$$,
  'a deleted user''s row goes at the next refresh'
);

-- ---------------------------------------------------------------------------------------------
-- A user sees only their own statistics
-- ---------------------------------------------------------------------------------------------
set local role authenticated;
select set_config('request.jwt.claims', '{"sub":"a3000000-0000-4000-8000-000000000001","role":"authenticated"}', true);

select results_eq(
  $$select user_id, analyses_count, chat_messages_count, used_this_period, monthly_quota from public.my_statistics$$,
  $$values ('a3000000-0000-4000-8000-000000000001'::uuid, 5::bigint, 3::bigint, 7,
            (select monthly_quota from public.plans where id = 'free'))$$,
  'my_statistics returns exactly the caller''s own row'
);
select is_empty(
  $$select 1 from public.my_statistics where user_id = 'b3000000-0000-4000-8000-000000000002'$$,
  'filtering my_statistics on another user''s id returns nothing'
);
select throws_ok(
  $$select * from public.user_statistics$$,
  '42501', null,
  'a user cannot read the materialized view itself'
);

select set_config('request.jwt.claims', '{"sub":"b3000000-0000-4000-8000-000000000002","role":"authenticated"}', true);
select results_eq(
  $$select user_id, analyses_count, used_this_period from public.my_statistics$$,
  $$values ('b3000000-0000-4000-8000-000000000002'::uuid, 1::bigint, 0)$$,
  'with another user''s claims, that user''s row'
);
-- Usage is live: a charge shows at once, without a refresh.
reset role;
update public.profiles set usage_count = 1,
       period_start = (date_trunc('month', now() at time zone 'UTC')) at time zone 'UTC'
 where id = 'b3000000-0000-4000-8000-000000000002';
set local role authenticated;
select is(
  (select used_this_period from public.my_statistics), 1,
  'used_this_period in my_statistics is live (no refresh needed)'
);

reset role;
set local role anon;
select set_config('request.jwt.claims', '{"role":"anon"}', true);
select throws_ok($$select * from public.my_statistics$$, '42501', null, 'anon cannot read my_statistics');
reset role;

select * from finish();
rollback;
