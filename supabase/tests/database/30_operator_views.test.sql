-- The operator views summarise api_metrics for the service role and nobody else.
begin;
create extension if not exists pgtap with schema extensions;

select plan(9);

insert into public.api_metrics (function_name, method, status, duration_ms, user_id, request_id)
select 'ops_probe', 'GET', case when n <= 90 then 200 when n <= 95 then 429 else 500 end,
       n::real, case when n % 2 = 0 then '00000000-0000-0000-0000-00000000000a'::uuid
                     else '00000000-0000-0000-0000-00000000000b'::uuid end,
       'ops-' || n
  from generate_series(1, 100) as n;

select is((select requests from public.ops_function_latency where function_name = 'ops_probe'),
          100, 'latency counts the last hour''s requests');
select is((select p50_ms from public.ops_function_latency where function_name = 'ops_probe'),
          50.5, 'p50 is the median duration');
select is((select p95_ms from public.ops_function_latency where function_name = 'ops_probe'),
          95.1, 'p95 is the 95th percentile duration');
select is((select error_rate from public.ops_function_errors where function_name = 'ops_probe'),
          0.0500, 'the error rate is the 5xx share');
select is((select client_errors from public.ops_function_errors where function_name = 'ops_probe'),
          5, '429s count as client errors, not as failures');
select ok((select active_users >= 2 from public.ops_active_users_hourly
            where hour = date_trunc('hour', now())), 'active users are counted per hour');
select is((select refusals from public.ops_rate_limit_refusals
            where function_name = 'ops_probe' and hour = date_trunc('hour', now())),
          5, 'rate-limit refusals are counted per hour and function');

set local role authenticated;
select throws_ok('select * from public.ops_function_latency', '42501', null,
                 'a signed-in user cannot read the operator views');
reset role;

set local role service_role;
select isnt_empty('select * from public.ops_function_errors', 'the service role reads them');
reset role;

select * from finish();
rollback;
