-- api_request_counts (20261206003100): requests without a user, one row per minute, function
-- and status, added to by upsert; only the service role touches it; the operator views count
-- it beside api_metrics; the purge keeps it as long as api_metrics.
begin;
create extension if not exists pgtap with schema extensions;

select plan(14);

select ok((select relrowsecurity from pg_catalog.pg_class where oid = 'public.api_request_counts'::regclass),
          'row level security is on');
select policies_are('public', 'api_request_counts',
                    array['Only the service role reads and writes request counts'],
                    'the one policy is the service role''s');

-- Two flushes of the same minute, function and status add to one row.
insert into public.api_request_counts as c
  (minute, function_name, status, requests, total_duration_ms, max_duration_ms)
values (date_trunc('minute', now()), 'counts_probe', 401, 30, 60, 4),
       (date_trunc('minute', now()), 'counts_probe', 500, 10, 20, 9);
insert into public.api_request_counts as c
  (minute, function_name, status, requests, total_duration_ms, max_duration_ms)
values (date_trunc('minute', now()), 'counts_probe', 401, 20, 40, 6)
on conflict (minute, function_name, status) do update
  set requests          = c.requests + excluded.requests,
      total_duration_ms = c.total_duration_ms + excluded.total_duration_ms,
      max_duration_ms   = greatest(c.max_duration_ms, excluded.max_duration_ms);

select results_eq(
  $$select count(*)::int, sum(requests)::int, max(max_duration_ms)::real from public.api_request_counts
     where function_name = 'counts_probe' and status = 401$$,
  $$values (1, 50, 6::real)$$,
  'an upsert adds to the row of its minute, function and status');
select throws_ok(
  $$insert into public.api_request_counts (minute, function_name, status, requests, total_duration_ms, max_duration_ms)
    values (date_trunc('minute', now()) + interval '5 seconds', 'counts_probe', 200, 1, 1, 1)$$,
  '23514', null, 'a count is for a whole minute');

-- Signed-in requests of the same function, one row each.
insert into public.api_metrics (function_name, method, status, duration_ms, user_id, request_id)
select 'counts_probe', 'GET', case when n <= 45 then 200 else 429 end, n::real,
       '00000000-0000-0000-0000-00000000000c'::uuid, 'counts-' || n
  from generate_series(1, 50) as n;

select is((select requests from public.ops_function_errors where function_name = 'counts_probe'),
          110, 'the error view counts requests with and without a user');
select is((select error_rate from public.ops_function_errors where function_name = 'counts_probe'),
          round(10::numeric / 110, 4), 'anonymous 5xx count in the error rate');
select is((select client_errors from public.ops_function_errors where function_name = 'counts_probe'),
          55, 'anonymous 401s count as client errors');
select is((select requests from public.ops_function_latency where function_name = 'counts_probe'),
          110, 'the latency view counts requests with and without a user');
select is((select p50_ms from public.ops_function_latency where function_name = 'counts_probe'),
          25.5::numeric, 'percentiles come from the signed-in requests');
select is((select max_ms from public.ops_function_latency where function_name = 'counts_probe'),
          50.0::numeric, 'max is over all requests');

insert into public.api_request_counts (minute, function_name, status, requests, total_duration_ms, max_duration_ms)
values (date_trunc('minute', now()), 'counts_probe', 429, 7, 14, 3);
select results_eq(
  $$select refusals, users from public.ops_rate_limit_refusals
     where function_name = 'counts_probe' and hour = date_trunc('hour', now())$$,
  $$values (12, 1)$$,
  'refusals count anonymous 429s too; users counts the signed-in ones');

-- Retention: as long as api_metrics keeps its rows.
insert into public.api_request_counts (minute, function_name, status, requests, total_duration_ms, max_duration_ms)
values (date_trunc('minute', now() - interval '91 days'), 'counts_probe', 401, 1, 1, 1),
       (date_trunc('minute', now() - interval '89 days'), 'counts_probe', 401, 1, 1, 1);
select cmp_ok(public.purge_api_request_counts(), '>=', 1, 'the purge deletes counts past the retention');
select is((select count(*)::int from public.api_request_counts
            where function_name = 'counts_probe' and minute < now() - interval '1 day'),
          1, 'and keeps those within it');

set local role authenticated;
select throws_ok('select * from public.api_request_counts', '42501', null,
                 'a signed-in user cannot read the request counts');
reset role;

select * from finish();
rollback;
