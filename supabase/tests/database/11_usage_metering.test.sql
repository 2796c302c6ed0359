-- Usage metering: increment_usage_if_allowed and refund_usage, one scenario at a time. The
-- concurrency proof (1,000 parallel callers) is tests/usage_metering_test.ts.
begin;
create extension if not exists pgtap with schema extensions;

select plan(43);

insert into auth.users (id, email)
values ('b0000000-0000-4000-8000-000000000001', 'meter-alice@example.test');

-- The current period's reset time, computed independently of the functions.
create temporary table expected on commit drop as
select date_trunc('month', now(), 'UTC') as month_start,
       (date_trunc('month', now(), 'UTC') at time zone 'UTC' + interval '1 month') at time zone 'UTC' as resets_at;

-- ---------------------------------------------------------------------------------------------
-- Shape
-- ---------------------------------------------------------------------------------------------
select is(
  pg_get_function_result('public.increment_usage_if_allowed(uuid,integer)'::regprocedure),
  'TABLE(allowed boolean, used integer, quota integer, remaining integer, period_resets_at timestamp with time zone)',
  'increment_usage_if_allowed returns (allowed, used, quota, remaining, period_resets_at)'
);
select is(
  pg_get_function_arguments('public.increment_usage_if_allowed(uuid,integer)'::regprocedure),
  'p_user_id uuid, p_amount integer DEFAULT 1',
  'increment_usage_if_allowed takes (p_user_id, p_amount default 1)'
);
select is(
  pg_get_function_result('public.refund_usage(uuid,integer,timestamptz)'::regprocedure),
  'TABLE(allowed boolean, used integer, quota integer, remaining integer, period_resets_at timestamp with time zone)',
  'refund_usage returns the same row shape'
);

-- ---------------------------------------------------------------------------------------------
-- Allowed, refused, refused whole
-- ---------------------------------------------------------------------------------------------
select results_eq(
  $$select allowed, used, quota, remaining, period_resets_at = (select resets_at from expected)
      from public.increment_usage_if_allowed('b0000000-0000-4000-8000-000000000001')$$,
  $$values (true, 1, 100, 99, true)$$,
  'a first call is allowed and records one unit (p_amount defaults to 1)'
);
select isnt(
  (select last_active_at from public.profiles where id = 'b0000000-0000-4000-8000-000000000001'), null,
  'an allowed call marks the user active'
);
select results_eq(
  $$select allowed, used, remaining from public.increment_usage_if_allowed('b0000000-0000-4000-8000-000000000001', 99)$$,
  $$values (true, 100, 0)$$,
  'an amount that exactly fills the quota is allowed'
);
select results_eq(
  $$select allowed, used, quota, remaining, period_resets_at = (select resets_at from expected)
      from public.increment_usage_if_allowed('b0000000-0000-4000-8000-000000000001', 1)$$,
  $$values (false, 100, 100, 0, true)$$,
  'a call over the quota is refused and reports the current numbers'
);
select is(
  (select usage_count from public.profiles where id = 'b0000000-0000-4000-8000-000000000001'), 100,
  'a refused call records nothing'
);

update public.profiles set usage_count = 95 where id = 'b0000000-0000-4000-8000-000000000001';
select results_eq(
  $$select allowed, used, remaining from public.increment_usage_if_allowed('b0000000-0000-4000-8000-000000000001', 10)$$,
  $$values (false, 95, 5)$$,
  'an amount larger than what is left is refused whole'
);
select is(
  (select usage_count from public.profiles where id = 'b0000000-0000-4000-8000-000000000001'), 95,
  'a refused amount is not partially recorded'
);
select results_eq(
  $$select allowed, used, remaining from public.increment_usage_if_allowed('b0000000-0000-4000-8000-000000000001', 5)$$,
  $$values (true, 100, 0)$$,
  'what is left can still be used'
);

-- ---------------------------------------------------------------------------------------------
-- Bad arguments and unknown users change nothing
-- ---------------------------------------------------------------------------------------------
update public.profiles set usage_count = 50 where id = 'b0000000-0000-4000-8000-000000000001';
select throws_ok(
  $$select * from public.increment_usage_if_allowed('b0000000-0000-4000-8000-000000000001', 0)$$,
  '22023', null, 'an amount of 0 is rejected with 22023'
);
select throws_ok(
  $$select * from public.increment_usage_if_allowed('b0000000-0000-4000-8000-000000000001', -5)$$,
  '22023', null, 'a negative amount is rejected with 22023 (it never acts as a refund)'
);
select throws_ok(
  $$select * from public.increment_usage_if_allowed('b0000000-0000-4000-8000-000000000001', null)$$,
  '22023', null, 'a NULL amount is rejected with 22023'
);
select throws_ok(
  $$select * from public.increment_usage_if_allowed('b0000000-0000-4000-8000-000000000001', 1001)$$,
  '22023', null, 'an amount over 1000 is rejected with 22023'
);
select lives_ok(
  $$select * from public.increment_usage_if_allowed('b0000000-0000-4000-8000-000000000001', 1000)$$,
  'an amount of exactly 1000 is accepted as an argument'
);
select is(
  (select usage_count from public.profiles where id = 'b0000000-0000-4000-8000-000000000001'), 50,
  'rejected arguments changed nothing'
);
select throws_ok(
  $$select * from public.increment_usage_if_allowed('b0000000-0000-4000-8000-0000000000ff', 1)$$,
  'P0002', 'no profile for user b0000000-0000-4000-8000-0000000000ff',
  'an unknown user raises P0002'
);
select throws_ok(
  $$select * from public.increment_usage_if_allowed(null, 1)$$,
  '22023', null, 'a NULL user raises 22023'
);

-- ---------------------------------------------------------------------------------------------
-- Period rollover
-- ---------------------------------------------------------------------------------------------
update public.profiles
   set usage_count = 100,
       period_start = (select month_start from expected) - interval '1 month'
 where id = 'b0000000-0000-4000-8000-000000000001';
select results_eq(
  $$select allowed, used, quota, remaining, period_resets_at = (select resets_at from expected)
      from public.increment_usage_if_allowed('b0000000-0000-4000-8000-000000000001', 101)$$,
  $$values (false, 0, 100, 100, true)$$,
  'after the period ended, a refused call reports the new period: 0 used, new reset time'
);
select results_eq(
  $$select usage_count, period_start < (select month_start from expected)
      from public.profiles where id = 'b0000000-0000-4000-8000-000000000001'$$,
  $$values (100, true)$$,
  'a refused call does not even record the rollover'
);
select results_eq(
  $$select allowed, used, remaining, period_resets_at = (select resets_at from expected)
      from public.increment_usage_if_allowed('b0000000-0000-4000-8000-000000000001', 7)$$,
  $$values (true, 7, 93, true)$$,
  'after the period ended, usage restarts from 0 + amount'
);
select is(
  (select period_start from public.profiles where id = 'b0000000-0000-4000-8000-000000000001'),
  (select month_start from expected),
  'the rollover moves period_start to the start of the current UTC month'
);

-- A period that started mid-month (e.g. set by hand) lasts one month from its start.
update public.profiles
   set usage_count = 100, period_start = now() - interval '20 days'
 where id = 'b0000000-0000-4000-8000-000000000001';
select results_eq(
  $$select allowed, used, period_resets_at = (select period_start + interval '1 month' from public.profiles
                                               where id = 'b0000000-0000-4000-8000-000000000001')
      from public.increment_usage_if_allowed('b0000000-0000-4000-8000-000000000001', 1)$$,
  $$values (false, 100, true)$$,
  'a period that has not yet lasted a month is not rolled over'
);

-- Period boundaries are UTC whatever the session's time zone.
update public.profiles set usage_count = 0, period_start = (select month_start from expected)
 where id = 'b0000000-0000-4000-8000-000000000001';
set local timezone = 'America/New_York';
select is(
  (select period_resets_at from public.increment_usage_if_allowed('b0000000-0000-4000-8000-000000000001', 1)),
  (select resets_at from expected),
  'period_resets_at is the first of next month at 00:00 UTC also in a New York session'
);
set local timezone = 'Pacific/Kiritimati';
update public.profiles
   set usage_count = 100, period_start = (select month_start from expected) - interval '1 month'
 where id = 'b0000000-0000-4000-8000-000000000001';
select lives_ok(
  $$select * from public.increment_usage_if_allowed('b0000000-0000-4000-8000-000000000001', 1)$$,
  'a rollover in a UTC+14 session'
);
select is(
  (select period_start from public.profiles where id = 'b0000000-0000-4000-8000-000000000001'),
  (select month_start from expected),
  'a rollover in a UTC+14 session starts the period at the UTC month start, not the local one'
);
reset timezone;

-- A user on another plan gets that plan's quota.
update public.profiles set plan_id = 'pro', usage_count = 0, period_start = (select month_start from expected)
 where id = 'b0000000-0000-4000-8000-000000000001';
select results_eq(
  $$select allowed, used, quota, remaining from public.increment_usage_if_allowed('b0000000-0000-4000-8000-000000000001', 500)$$,
  $$values (true, 500, 2000, 1500)$$,
  'the quota comes from the user''s plan (pro: 2000)'
);
update public.plans set monthly_quota = 400 where id = 'pro';
select results_eq(
  $$select allowed, used, quota, remaining from public.increment_usage_if_allowed('b0000000-0000-4000-8000-000000000001', 1)$$,
  $$values (false, 500, 400, 0)$$,
  'a quota lowered below the usage refuses everything and reports 0 remaining'
);
update public.plans set monthly_quota = 2000 where id = 'pro';
update public.profiles set plan_id = 'free', usage_count = 10 where id = 'b0000000-0000-4000-8000-000000000001';

-- ---------------------------------------------------------------------------------------------
-- Refunds
-- ---------------------------------------------------------------------------------------------
select results_eq(
  $$select allowed, used, quota, remaining, period_resets_at = (select resets_at from expected)
      from public.refund_usage('b0000000-0000-4000-8000-000000000001', 4)$$,
  $$values (true, 6, 100, 94, true)$$,
  'a refund gives units back'
);
select results_eq(
  $$select allowed, used, remaining from public.refund_usage('b0000000-0000-4000-8000-000000000001', 50)$$,
  $$values (true, 0, 100)$$,
  'a refund larger than the usage stops at zero'
);
select is(
  (select usage_count from public.profiles where id = 'b0000000-0000-4000-8000-000000000001'), 0,
  'usage never goes below zero'
);
select throws_ok(
  $$select * from public.refund_usage('b0000000-0000-4000-8000-000000000001', 0)$$,
  '22023', null, 'a refund of 0 is rejected with 22023'
);
select throws_ok(
  $$select * from public.refund_usage('b0000000-0000-4000-8000-000000000001', -3)$$,
  '22023', null, 'a negative refund is rejected with 22023'
);
select throws_ok(
  $$select * from public.refund_usage('b0000000-0000-4000-8000-000000000001', null)$$,
  '22023', null, 'a NULL refund is rejected with 22023'
);
select throws_ok(
  $$select * from public.refund_usage('b0000000-0000-4000-8000-000000000001', 1001)$$,
  '22023', null, 'a refund over 1000 is rejected with 22023'
);
select throws_ok(
  $$select * from public.refund_usage('b0000000-0000-4000-8000-0000000000ff', 1)$$,
  'P0002', null, 'a refund for an unknown user raises P0002'
);

-- Refunds stay within their period.
update public.profiles
   set usage_count = 80, period_start = (select month_start from expected) - interval '1 month'
 where id = 'b0000000-0000-4000-8000-000000000001';
select results_eq(
  $$select allowed, used, remaining, period_resets_at = (select resets_at from expected)
      from public.refund_usage('b0000000-0000-4000-8000-000000000001', 30)$$,
  $$values (true, 0, 100, true)$$,
  'a refund after the period ended refunds nothing into the new period'
);
select results_eq(
  $$select usage_count, period_start = (select month_start from expected)
      from public.profiles where id = 'b0000000-0000-4000-8000-000000000001'$$,
  $$values (0, true)$$,
  'that refund started the new period at zero'
);
select lives_ok(
  $$select * from public.increment_usage_if_allowed('b0000000-0000-4000-8000-000000000001', 20)$$,
  'usage in the new period'
);
select results_eq(
  $$select used from public.refund_usage('b0000000-0000-4000-8000-000000000001', 5,
                                         (select resets_at - interval '1 month' from expected))$$,
  $$values (20)$$,
  'a refund for a charge of the previous period (by its period_resets_at) changes nothing'
);
select results_eq(
  $$select used from public.refund_usage('b0000000-0000-4000-8000-000000000001', 5,
                                         (select resets_at from expected))$$,
  $$values (15)$$,
  'a refund for a charge of the current period (by its period_resets_at) is applied'
);
select is(
  (select usage_count from public.profiles where id = 'b0000000-0000-4000-8000-000000000001'), 15,
  'the stored usage matches the refunds'
);

select * from finish();
rollback;
