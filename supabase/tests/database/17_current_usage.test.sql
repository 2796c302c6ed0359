-- Reading usage and rate limits without spending them (20261123000500): current_usage and
-- rate_limit_remaining report what increment_usage_if_allowed and rate_limit_hit would see,
-- and change nothing.
begin;
create extension if not exists pgtap with schema extensions;

select plan(26);

insert into auth.users (id, email)
values ('b1700000-0000-4000-8000-000000000001', 'current-usage@example.test');

create temporary table expected on commit drop as
select (date_trunc('month', now(), 'UTC') at time zone 'UTC' + interval '1 month') at time zone 'UTC' as resets_at,
       to_timestamp(floor(extract(epoch from now()) / 60) * 60) + interval '60 seconds' as window_ends;

-- ---------------------------------------------------------------------------------------------
-- Shape and privileges
-- ---------------------------------------------------------------------------------------------
select is(
  pg_get_function_result('public.current_usage(uuid)'::regprocedure),
  pg_get_function_result('public.increment_usage_if_allowed(uuid,integer)'::regprocedure),
  'current_usage returns the row shape of increment_usage_if_allowed'
);
select is(
  pg_get_function_result('public.rate_limit_remaining(text,integer,integer)'::regprocedure),
  'TABLE(remaining integer, reset_at timestamp with time zone)',
  'rate_limit_remaining returns (remaining, reset_at)'
);
select is(
  (select array_agg(provolatile::text order by proname) from pg_proc
    where oid in ('public.current_usage(uuid)'::regprocedure,
                  'public.rate_limit_remaining(text,integer,integer)'::regprocedure)),
  array['s', 's'],
  'both are declared stable: they only read'
);
select ok(
  has_function_privilege('service_role', 'public.current_usage(uuid)', 'execute')
    and has_function_privilege('service_role', 'public.rate_limit_remaining(text,integer,integer)', 'execute'),
  'service_role may execute both'
);
select is_empty(
  $$select f || ' by ' || r
      from unnest(array['public.current_usage(uuid)', 'public.rate_limit_remaining(text,integer,integer)']) as f,
           unnest(array['anon', 'authenticated']) as r
     where has_function_privilege(r, f::regprocedure, 'execute')$$,
  'anon and authenticated may execute neither'
);
select is_empty(
  $$select p.oid::regprocedure::text
      from pg_proc p, aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
     where p.oid in ('public.current_usage(uuid)'::regprocedure,
                     'public.rate_limit_remaining(text,integer,integer)'::regprocedure)
       and a.privilege_type = 'EXECUTE' and a.grantee = 0$$,
  'neither is granted to PUBLIC'
);
select ok(
  not (select prosecdef from pg_proc where oid = 'public.current_usage(uuid)'::regprocedure)
    and not (select prosecdef from pg_proc where oid = 'public.rate_limit_remaining(text,integer,integer)'::regprocedure),
  'neither is security definer'
);

-- ---------------------------------------------------------------------------------------------
-- current_usage
-- ---------------------------------------------------------------------------------------------
select results_eq(
  $$select allowed, used, quota, remaining, period_resets_at = (select resets_at from expected)
      from public.current_usage('b1700000-0000-4000-8000-000000000001')$$,
  $$values (true, 0, 100, 100, true)$$,
  'a new user has used nothing of the free quota, which resets at the start of next month'
);
select lives_ok(
  $$select public.increment_usage_if_allowed('b1700000-0000-4000-8000-000000000001', 3)$$,
  'three units are charged'
);
select results_eq(
  $$select allowed, used, quota, remaining from public.current_usage('b1700000-0000-4000-8000-000000000001')$$,
  $$values (true, 3, 100, 97)$$,
  'current_usage shows the units charged'
);

-- The row is exactly as before a read: no write, no updated_at bump, no activity stamp.
create temporary table before_read on commit drop as
select usage_count, period_start, updated_at, last_active_at
  from public.profiles where id = 'b1700000-0000-4000-8000-000000000001';
select lives_ok(
  $$select * from public.current_usage('b1700000-0000-4000-8000-000000000001')$$,
  'the usage is read'
);
select results_eq(
  $$select usage_count, period_start, updated_at, last_active_at
      from public.profiles where id = 'b1700000-0000-4000-8000-000000000001'$$,
  $$select * from before_read$$,
  'a read changes nothing in the profile'
);

-- A period that has ended.
update public.profiles
   set usage_count = 80,
       period_start = date_trunc('month', now(), 'UTC') - interval '2 months'
 where id = 'b1700000-0000-4000-8000-000000000001';
select results_eq(
  $$select used, remaining, period_resets_at = (select resets_at from expected)
      from public.current_usage('b1700000-0000-4000-8000-000000000001')$$,
  $$values (0, 100, true)$$,
  'an ended period reads as a new, unused one that resets at the start of next month'
);
select results_eq(
  $$select usage_count, period_start < date_trunc('month', now(), 'UTC')
      from public.profiles where id = 'b1700000-0000-4000-8000-000000000001'$$,
  $$values (80, true)$$,
  'and the stored period is left to the next charge to roll over'
);
select results_eq(
  $$select used, remaining from public.increment_usage_if_allowed('b1700000-0000-4000-8000-000000000001', 5)$$,
  $$values (5, 95)$$,
  'the next charge indeed starts the new period from zero'
);

-- A plan change shows at once.
update public.profiles set plan_id = 'pro' where id = 'b1700000-0000-4000-8000-000000000001';
select results_eq(
  $$select quota, remaining from public.current_usage('b1700000-0000-4000-8000-000000000001')$$,
  $$values (2000, 1995)$$,
  'the quota is the current plan''s'
);

select throws_ok(
  $$select * from public.current_usage('b1700000-0000-4000-8000-0000000000ff')$$,
  'P0002', null,
  'an unknown user is P0002, as for increment_usage_if_allowed'
);
select throws_ok(
  $$select * from public.current_usage(null)$$,
  '22023', null,
  'a null user is 22023'
);

-- ---------------------------------------------------------------------------------------------
-- rate_limit_remaining
-- ---------------------------------------------------------------------------------------------
select results_eq(
  $$select remaining, reset_at = (select window_ends from expected)
      from public.rate_limit_remaining('test:remaining', 5, 60)$$,
  $$values (5, true)$$,
  'a key never hit has the whole limit left until the end of the current window'
);
select lives_ok(
  $$select public.rate_limit_hit('test:remaining', 5, 60) from generate_series(1, 2)$$,
  'two hits are counted'
);
select results_eq(
  $$select remaining, reset_at = (select window_ends from expected)
      from public.rate_limit_remaining('test:remaining', 5, 60)$$,
  $$values (3, true)$$,
  'after two hits, three remain'
);
select results_eq(
  $$select remaining from public.rate_limit_remaining('test:remaining', 5, 60)$$,
  $$values (3)$$,
  'reading counts no hit'
);
select results_eq(
  $$select remaining from public.rate_limit_hit('test:remaining', 5, 60)$$,
  $$values (2)$$,
  'the next hit leaves what the read said, less one'
);

-- A counter from a window that has ended.
update public.rate_limit_hits
   set window_start = window_start - interval '5 minutes', expires_at = expires_at - interval '5 minutes'
 where key = 'test:remaining';
select results_eq(
  $$select remaining, reset_at = (select window_ends from expected)
      from public.rate_limit_remaining('test:remaining', 5, 60)$$,
  $$values (5, true)$$,
  'a counter of an ended window counts as empty'
);

select throws_ok(
  $$select * from public.rate_limit_remaining('', 5, 60)$$,
  '22023', null,
  'an empty key is 22023'
);
select throws_ok(
  $$select * from public.rate_limit_remaining('k', 0, 60)$$,
  '22023', null,
  'a limit below 1 is 22023'
);

select * from finish();
rollback;
