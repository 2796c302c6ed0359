-- Usage periods (20261206005100): one definition of the monthly period, in UTC whatever the
-- session's time zone, that metering, current_usage and my_statistics all agree on.
begin;
create extension if not exists pgtap with schema extensions;
set local client_min_messages = warning;

select plan(12);

select is(
  public.usage_period_resets_at('2026-01-15 10:00:00+00'),
  '2026-02-15 10:00:00+00'::timestamptz,
  'a period ends one calendar month after it starts'
);
set local timezone = 'America/New_York';
select is(
  public.usage_period_resets_at('2026-03-01 00:00:00+00'),
  '2026-04-01 00:00:00+00'::timestamptz,
  'the month is counted in UTC, not across the session''s DST change'
);
reset timezone;
select is(
  public.usage_period_start('2026-01-15 10:00:00+00', '2026-02-15 09:59:59+00'),
  '2026-01-15 10:00:00+00'::timestamptz,
  'a period that still runs is the period in force'
);
select is(
  public.usage_period_start('2026-01-15 10:00:00+00', '2026-02-15 10:00:00+00'),
  '2026-02-01 00:00:00+00'::timestamptz,
  'once it has ended, the period in force starts with the current UTC month'
);
select is(public.usage_this_period(7, '2026-01-15 10:00:00+00', '2026-02-01 00:00:00+00'), 7,
  'what is used counts while its period runs');
select is(public.usage_this_period(7, '2026-01-15 10:00:00+00', '2026-03-01 00:00:00+00'), 0,
  'nothing is used of a period that has just begun');

select is(
  (select array_agg(distinct provolatile::text) from pg_proc
    where proname in ('usage_period_resets_at', 'usage_period_start', 'usage_this_period')),
  array['i'],
  'the period functions are immutable'
);
select is(
  (select count(*)::int from pg_proc
    where proname in ('usage_period_resets_at', 'usage_period_start', 'usage_this_period')
      and proconfig is null and not prosecdef
      and prolang = (select oid from pg_language where lanname = 'sql')),
  3,
  'the period functions are SQL without SET or SECURITY DEFINER, so the planner inlines them'
);
select ok(
  not has_function_privilege('anon', 'public.usage_period_start(timestamptz, timestamptz)', 'EXECUTE'),
  'anon cannot call the period functions'
);

-- A period that does not start at a month's start (set by hand, or by an earlier rule), here the
-- last instant of last month: it runs until a month after that, and every reader must show the
-- reset the next charge will use (my_statistics used to show the end of this month instead).
insert into auth.users (id, email) values ('a3200000-0000-4000-8000-000000000001', 'periods@example.test');
update public.profiles
   set usage_count = 3,
       period_start = (date_trunc('month', now() at time zone 'UTC') at time zone 'UTC') - interval '1 microsecond'
 where id = 'a3200000-0000-4000-8000-000000000001';
select public.refresh_user_statistics();

select is(
  (select period_resets_at from public.current_usage('a3200000-0000-4000-8000-000000000001')),
  (select (period_start at time zone 'UTC' + interval '1 month') at time zone 'UTC'
     from public.profiles where id = 'a3200000-0000-4000-8000-000000000001'),
  'current_usage resets the running period a month after it started'
);

set local role authenticated;
select set_config('request.jwt.claims', '{"sub":"a3200000-0000-4000-8000-000000000001","role":"authenticated"}', true);
create temporary table shown on commit drop as
select used_this_period, period_resets_at from public.my_statistics;
reset role;

select is(
  (select period_resets_at from shown),
  (select period_resets_at from public.current_usage('a3200000-0000-4000-8000-000000000001')),
  'my_statistics shows the reset current_usage and the metering use'
);
select is(
  (select used_this_period from shown),
  (select used from public.current_usage('a3200000-0000-4000-8000-000000000001')),
  'my_statistics shows what current_usage counts as used'
);

select * from finish();
rollback;
