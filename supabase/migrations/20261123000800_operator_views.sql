-- What an operator watches, computed from api_metrics (one row per function request):
-- latency and error rate per function over the last hour, active users per hour, and rate-limit
-- refusals. Every view bounds created_at so only the newest partitions are read.
--
-- The views run with the caller's rights (security_invoker), so api_metrics' RLS decides: only
-- the service role (and the owner) read them; the app's roles are not granted anything.

create or replace view public.ops_function_latency
  with (security_invoker = true) as
select function_name,
       count(*)::integer as requests,
       round(percentile_cont(0.50) within group (order by duration_ms)::numeric, 1) as p50_ms,
       round(percentile_cont(0.95) within group (order by duration_ms)::numeric, 1) as p95_ms,
       round(max(duration_ms)::numeric, 1) as max_ms
  from public.api_metrics
 where created_at > now() - interval '1 hour'
 group by function_name
 order by p95_ms desc;

comment on view public.ops_function_latency is
  'Slowest functions first: p50 and p95 duration over the last hour. Alert when p95 > 2000 ms.';

create or replace view public.ops_function_errors
  with (security_invoker = true) as
select function_name,
       count(*)::integer as requests,
       count(*) filter (where status >= 500)::integer as server_errors,
       count(*) filter (where status between 400 and 499)::integer as client_errors,
       round(count(*) filter (where status >= 500)::numeric / count(*), 4) as error_rate
  from public.api_metrics
 where created_at > now() - interval '1 hour'
 group by function_name
 order by error_rate desc, requests desc;

comment on view public.ops_function_errors is
  'Error rate (5xx share) per function over the last hour. Alert when error_rate > 0.05.';

create or replace view public.ops_active_users_hourly
  with (security_invoker = true) as
select date_trunc('hour', created_at) as hour,
       count(distinct user_id)::integer as active_users,
       count(*)::integer as requests
  from public.api_metrics
 where created_at > now() - interval '7 days'
   and user_id is not null
 group by 1
 order by 1 desc;

comment on view public.ops_active_users_hourly is
  'Distinct signed-in users per hour over the last 7 days.';

create or replace view public.ops_rate_limit_refusals
  with (security_invoker = true) as
select date_trunc('hour', created_at) as hour,
       function_name,
       count(*)::integer as refusals,
       count(distinct user_id)::integer as users
  from public.api_metrics
 where created_at > now() - interval '24 hours'
   and status = 429
 group by 1, 2
 order by 1 desc, 3 desc;

comment on view public.ops_rate_limit_refusals is
  'Requests refused with 429 per hour and function over the last 24 hours.';

revoke all on public.ops_function_latency, public.ops_function_errors,
              public.ops_active_users_hourly, public.ops_rate_limit_refusals
  from public, anon, authenticated;
grant select on public.ops_function_latency, public.ops_function_errors,
                public.ops_active_users_hourly, public.ops_rate_limit_refusals
  to service_role;
