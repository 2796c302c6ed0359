-- Partition maintenance (20261123000410): monthly partitions made ahead idempotently, rows
-- stranded in the default partition moved into their month, whole months dropped by retention.
begin;
create extension if not exists pgtap with schema extensions;
set local client_min_messages = warning;

select plan(46);

-- ---------------------------------------------------------------------------------------------
-- The objects
-- ---------------------------------------------------------------------------------------------
select has_table('public', 'event_retention', 'event_retention exists');
select results_eq(
  $$select table_name, retention from public.event_retention
    where table_name in ('analyses', 'chat_messages', 'activities', 'api_metrics') order by table_name$$,
  $$values ('activities', interval '1 year'), ('analyses', interval '2 years'),
           ('api_metrics', interval '90 days'), ('chat_messages', interval '2 years')$$,
  'default retention: analyses and chat_messages 2 years, activities 1 year, api_metrics 90 days'
);
select throws_ok(
  $$update public.event_retention set retention = interval '1 hour' where table_name = 'api_metrics'$$,
  '23514', null,
  'a retention under one day is refused'
);
select has_view('public', 'event_partitions', 'event_partitions exists');
select function_returns('public', 'create_event_partitions', array['integer'], 'setof record');
select function_returns('public', 'create_event_partitions_between', array['date', 'date'], 'setof record');
select function_returns('public', 'drop_expired_event_partitions', array[]::text[], 'setof record');
select is(
  (select count(*)::int from information_schema.routine_privileges
   where routine_schema = 'public'
     and routine_name in ('create_event_partitions', 'create_event_partitions_between', 'drop_expired_event_partitions')
     and grantee in ('PUBLIC', 'anon', 'authenticated', 'service_role')),
  0,
  'no API role may execute the maintenance functions'
);
select table_privs_are('public', 'event_retention', 'anon', array[]::text[], 'anon cannot read event_retention');
select table_privs_are('public', 'event_retention', 'authenticated', array['SELECT'],
  'authenticated may only read event_retention');

-- ---------------------------------------------------------------------------------------------
-- Creating months ahead
-- ---------------------------------------------------------------------------------------------
-- The migration made this month through 3 months ahead for every table.
select is(
  (select count(*)::int from public.event_partitions as p
   cross join generate_series(0, 3) as m
   where p.table_name in ('analyses', 'chat_messages', 'activities', 'api_metrics')
     and p.partition_name = p.table_name || '_p'
                            || to_char(date_trunc('month', now() at time zone 'UTC') + make_interval(months => m), 'YYYYMM')),
  16,
  'this month and the next 3 exist for all four tables'
);
select is_empty(
  $$select * from public.create_event_partitions(3)$$,
  'create_event_partitions(3) again creates nothing (idempotent)'
);
select results_eq(
  $$select table_name, partition_name from public.create_event_partitions(5) order by 1, 2$$,
  $$select t, t || '_p' || to_char(date_trunc('month', now() at time zone 'UTC') + make_interval(months => m), 'YYYYMM')
    from unnest(array['activities', 'analyses', 'api_metrics', 'chat_messages']) as t,
         generate_series(4, 5) as m
    order by 1, 2$$,
  'create_event_partitions(5) creates exactly months +4 and +5 of every table'
);
select is_empty(
  $$select * from public.create_event_partitions(5)$$,
  'and a second call creates nothing'
);

-- Bounds are UTC calendar months whatever the session's time zone.
set local timezone = 'Pacific/Auckland';
select results_eq(
  $$select partition_name, range_from, range_to
    from public.create_event_partitions_between('2031-02-10', '2031-03-01') where table_name = 'analyses'$$,
  $$values ('analyses_p203102', '2031-02-01 00:00:00+00'::timestamptz, '2031-03-01 00:00:00+00'::timestamptz),
           ('analyses_p203103', '2031-03-01 00:00:00+00'::timestamptz, '2031-04-01 00:00:00+00'::timestamptz)$$,
  'create_event_partitions_between covers the months of both dates, with UTC month bounds in any time zone'
);
select is(
  pg_get_expr(c.relpartbound, c.oid),
  $$FOR VALUES FROM ('2031-02-01 13:00:00+13') TO ('2031-03-01 13:00:00+13')$$,
  'the catalog holds the UTC month boundary (shown here in Auckland time)'
)
from pg_class as c where c.oid = 'public.analyses_p203102'::regclass;
reset timezone;

-- A new partition is locked down like the others and gets the partitioned indexes.
select table_privs_are('public', 'analyses_p203102', 'anon', array[]::text[], 'a new partition: no privilege for anon');
select table_privs_are('public', 'analyses_p203102', 'authenticated', array[]::text[],
  'a new partition: no privilege for authenticated');
select table_privs_are('public', 'analyses_p203102', 'service_role', array[]::text[],
  'a new partition: no direct privilege for service_role');
select is((select relrowsecurity from pg_class where oid = 'public.analyses_p203102'::regclass), true,
  'a new partition has row level security enabled');
select has_index('public', 'analyses_p203102', 'analyses_p203102_user_id_created_at_id_idx',
  array['user_id', 'created_at', 'id'], 'a new partition has the (user_id, created_at, id) index');

select throws_ok(
  $$select * from public.create_event_partitions(-1)$$, '22023', null, 'months ahead must not be negative'
);
select throws_ok(
  $$select * from public.create_event_partitions_between('2031-05-01', '2031-04-01')$$, '22023', null,
  'p_from after p_to is refused'
);

-- ---------------------------------------------------------------------------------------------
-- The default partition: far-future rows land there, and are moved out when their month is made
-- ---------------------------------------------------------------------------------------------
insert into auth.users (id, email) values ('a1000000-0000-4000-8000-000000000001', 'maint-a@example.test');
insert into public.analyses (user_id, created_at, analysis_type, result) values
  ('a1000000-0000-4000-8000-000000000001', '2099-01-15 12:00:00+00', 'caption', '{"n":1}'),
  ('a1000000-0000-4000-8000-000000000001', '2099-01-31 23:59:59.999999+00', 'caption', '{"n":2}'),
  ('a1000000-0000-4000-8000-000000000001', '2099-02-01 00:00:00+00', 'caption', '{"n":3}');
insert into public.api_metrics (created_at, function_name, method, status, duration_ms)
values ('2099-01-20 00:00:00+00', 'future', 'GET', 200, 1);

select results_eq(
  $$select tableoid::regclass::text from public.analyses
    where user_id = 'a1000000-0000-4000-8000-000000000001' order by created_at$$,
  $$values ('analyses_default'), ('analyses_default'), ('analyses_default')$$,
  'rows dated far in the future land in the default partition (the insert does not fail)'
);
create temporary table future_metric on commit drop as
select id from public.api_metrics where function_name = 'future';

select results_eq(
  $$select table_name, partition_name, rows_moved
    from public.create_event_partitions_between('2099-01-01', '2099-01-01') order by 1$$,
  $$values ('activities', 'activities_p209901', 0::bigint), ('analyses', 'analyses_p209901', 2::bigint),
           ('api_metrics', 'api_metrics_p209901', 1::bigint), ('chat_messages', 'chat_messages_p209901', 0::bigint)$$,
  'making a month whose rows sit in the default partition moves them (and says how many)'
);
select results_eq(
  $$select result ->> 'n', tableoid::regclass::text from public.analyses
    where user_id = 'a1000000-0000-4000-8000-000000000001' order by created_at$$,
  $$values ('1', 'analyses_p209901'), ('2', 'analyses_p209901'), ('3', 'analyses_default')$$,
  'the month''s rows are now in its partition, the next month''s are still in the default one'
);
select is(
  (select id from public.api_metrics where function_name = 'future'),
  (select id from future_metric),
  'a moved api_metrics row keeps its identity id'
);
select is(
  (select count(*) from public.api_metrics where function_name = 'future'),
  1::bigint,
  'no row was duplicated or lost by the move'
);

-- ---------------------------------------------------------------------------------------------
-- Retention: whole months past retention are dropped, nothing else
-- ---------------------------------------------------------------------------------------------
-- 30 months back to last month, for every table.
select ok(
  (select count(*) from public.create_event_partitions_between(
     ((now() at time zone 'UTC') - interval '30 months')::date,
     ((now() at time zone 'UTC') - interval '1 month')::date)) > 0,
  'partitions for the past 30 months made'
);
-- A row in a month about to be dropped, and one in a month that stays.
insert into public.api_metrics (created_at, function_name, method, status, duration_ms) values
  (((date_trunc('month', now() at time zone 'UTC') - interval '5 months') at time zone 'UTC') + interval '1 day',
   'old', 'GET', 200, 1),
  (((date_trunc('month', now() at time zone 'UTC') - interval '1 month') at time zone 'UTC') + interval '1 day',
   'recent', 'GET', 200, 1);

create temporary table expected_drop on commit drop as
select p.table_name, p.partition_name
from public.event_partitions as p
join public.event_retention as r using (table_name)
where not p.is_default and p.range_to <= now() - r.retention;

create temporary table dropped on commit drop as
select * from public.drop_expired_event_partitions();

select set_eq(
  $$select table_name, partition_name from dropped$$,
  $$select table_name, partition_name from expected_drop$$,
  'drop_expired_event_partitions drops exactly the partitions whose upper bound is older than now() - retention'
);
select is_empty(
  $$select 1 from dropped as d
    where to_regclass('public.' || quote_ident(d.partition_name)) is not null$$,
  'the dropped partitions are gone'
);
select is_empty(
  $$select p.partition_name
    from public.event_partitions as p join public.event_retention as r using (table_name)
    where not p.is_default and p.range_to <= now() - r.retention$$,
  'no partition past its retention is left'
);
-- Known cases, by name.
select ok(
  exists (select 1 from dropped
          where partition_name = 'api_metrics_p' || to_char((now() at time zone 'UTC') - interval '5 months', 'YYYYMM')),
  'api_metrics (90 days): the month 5 months ago is dropped'
);
select ok(
  to_regclass('public.api_metrics_p' || to_char((now() at time zone 'UTC') - interval '2 months', 'YYYYMM')) is not null,
  'api_metrics (90 days): the month 2 months ago stays'
);
select ok(
  exists (select 1 from dropped
          where partition_name = 'activities_p' || to_char((now() at time zone 'UTC') - interval '13 months', 'YYYYMM')),
  'activities (1 year): the month 13 months ago is dropped'
);
select ok(
  to_regclass('public.activities_p' || to_char((now() at time zone 'UTC') - interval '11 months', 'YYYYMM')) is not null,
  'activities (1 year): the month 11 months ago stays'
);
select ok(
  exists (select 1 from dropped
          where partition_name = 'analyses_p' || to_char((now() at time zone 'UTC') - interval '25 months', 'YYYYMM')),
  'analyses (2 years): the month 25 months ago is dropped'
);
select ok(
  to_regclass('public.analyses_p' || to_char((now() at time zone 'UTC') - interval '23 months', 'YYYYMM')) is not null,
  'analyses (2 years): the month 23 months ago stays'
);
select ok(
  to_regclass('public.analyses_p' || to_char(now() at time zone 'UTC', 'YYYYMM')) is not null
    and to_regclass('public.analyses_default') is not null,
  'the current month and the default partition stay'
);
select results_eq(
  $$select function_name from public.api_metrics where function_name in ('old', 'recent')$$,
  $$values ('recent')$$,
  'the rows of a dropped month are gone with it; the others stay'
);
select is_empty(
  $$select * from public.drop_expired_event_partitions()$$,
  'a second run drops nothing'
);

-- Retention is configuration: shorten it and the next run drops more.
update public.event_retention set retention = interval '6 months' where table_name = 'analyses';
select results_eq(
  $$select partition_name from public.drop_expired_event_partitions()
    where partition_name = 'analyses_p' || to_char((now() at time zone 'UTC') - interval '8 months', 'YYYYMM')$$,
  $$values ('analyses_p' || to_char((now() at time zone 'UTC') - interval '8 months', 'YYYYMM'))$$,
  'after shortening analyses retention to 6 months, the month 8 months ago is dropped'
);
select ok(
  to_regclass('public.analyses_p' || to_char((now() at time zone 'UTC') - interval '4 months', 'YYYYMM')) is not null,
  'and the month 4 months ago stays'
);
select ok(
  (select min(range_from) from public.event_partitions where table_name = 'analyses')
    >= (now() - interval '6 months' - interval '1 month'),
  'no analyses month older than retention + 1 month remains'
);

-- A table without a partition for a month that already has rows keeps working (default).
select lives_ok(
  $$insert into public.analyses (user_id, created_at, analysis_type, result)
    values ('a1000000-0000-4000-8000-000000000001', now() - interval '10 years', 'caption', '{}')$$,
  'a row for a long-dropped month still inserts (into the default partition)'
);
select is(
  (select count(*)::int from public.drop_expired_event_partitions() where partition_name like '%default%'),
  0,
  'the default partition is never dropped'
);

select * from finish();
rollback;
