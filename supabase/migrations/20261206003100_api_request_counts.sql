-- Requests without a user (health checks, refused tokens, Stripe deliveries, the job worker) are
-- counted per minute, function and status in one row of api_request_counts instead of one
-- api_metrics row each, so a flood of junk requests cannot grow a table by a row per request:
-- it adds at most one row per function, status and minute, however many requests it sends.
-- Requests with a user keep their api_metrics row (who did what, for support and active users).
--
-- The functions add to a row with
--   insert ... on conflict (minute, function_name, status) do update set requests = requests + excluded.requests
-- after summing their buffered requests in memory, so a flush is one statement per batch.
--
-- The operator views (20261123000800) are redefined over both tables, so anonymous traffic still
-- counts in error shares and rate-limit refusals; percentiles need each request's duration, so
-- ops_function_latency takes them from the signed-in requests and gives max and mean over all.
--
-- Retention: the api_metrics period in public.event_retention, applied by
-- purge_api_request_counts() (pg_cron, daily).
--
-- Re-runnable: every statement is idempotent.

create table if not exists public.api_request_counts (
  minute            timestamptz      not null
                    constraint api_request_counts_minute_whole
                    check (minute = pg_catalog.date_bin('1 minute', minute, '2000-01-01 00:00:00+00')),
  function_name     text             not null,
  status            integer          not null
                    constraint api_request_counts_status_valid check (status between 100 and 599),
  requests          bigint           not null constraint api_request_counts_requests_positive check (requests > 0),
  total_duration_ms double precision not null
                    constraint api_request_counts_total_duration_non_negative check (total_duration_ms >= 0),
  max_duration_ms   real             not null
                    constraint api_request_counts_max_duration_non_negative check (max_duration_ms >= 0),
  constraint api_request_counts_pkey primary key (minute, function_name, status)
);
comment on table public.api_request_counts is
  'Requests without a signed-in user, counted per minute (UTC), function and status. Requests with a user are '
  'in api_metrics, one row each. Kept as long as api_metrics (public.event_retention). service_role only.';

alter table public.api_request_counts enable row level security;
drop policy if exists "Only the service role reads and writes request counts" on public.api_request_counts;
create policy "Only the service role reads and writes request counts"
  on public.api_request_counts
  for all
  to service_role
  using (true)
  with check (true);
revoke all on table public.api_request_counts from public, anon, authenticated, service_role;
grant select, insert, update, delete on table public.api_request_counts to service_role;

-- -------------------------------------------------------------------------------------------
-- purge_api_request_counts
-- -------------------------------------------------------------------------------------------
create or replace function public.purge_api_request_counts()
  returns integer
  language sql
  volatile
  set search_path = ''
as $$
  with purged as (
    delete from public.api_request_counts as c
    where c.minute < pg_catalog.now() - coalesce(
      (select r.retention from public.event_retention as r where r.table_name = 'api_metrics'),
      interval '90 days')
    returning 1
  )
  select pg_catalog.count(*)::integer from purged
$$;
comment on function public.purge_api_request_counts() is
  'Deletes the request counts older than the api_metrics retention in public.event_retention (90 days when it '
  'has none); returns how many. Safe to run at any time; run daily by pg_cron.';
revoke execute on function public.purge_api_request_counts() from public, anon, authenticated;
grant execute on function public.purge_api_request_counts() to service_role;

select cron.schedule('purge-api-request-counts', '40 0 * * *',
  $cmd$select public.purge_api_request_counts()$cmd$);

-- -------------------------------------------------------------------------------------------
-- The operator views over both tables
-- -------------------------------------------------------------------------------------------
-- Every request as (at, function, status, user, how many): an api_metrics row counts one, a
-- request count row its requests. A time bound on `at` reaches both tables, so the newest
-- partitions and minutes are all that is read.
create or replace view public.api_request_outcomes
  with (security_invoker = true) as
select m.created_at as at, m.function_name, m.status, m.user_id, 1::bigint as requests
  from public.api_metrics as m
union all
select c.minute, c.function_name, c.status, null::uuid, c.requests
  from public.api_request_counts as c;

comment on view public.api_request_outcomes is
  'Every request, signed-in ones one row each (api_metrics) and the others per minute (api_request_counts): '
  'at, function_name, status, user_id (null without a user) and requests.';

create or replace view public.ops_function_latency
  with (security_invoker = true) as
with signed_in as (
  select m.function_name,
         count(*) as requests,
         percentile_cont(0.50) within group (order by m.duration_ms) as p50_ms,
         percentile_cont(0.95) within group (order by m.duration_ms) as p95_ms,
         max(m.duration_ms) as max_ms,
         sum(m.duration_ms) as total_ms
    from public.api_metrics as m
   where m.created_at > now() - interval '1 hour'
   group by m.function_name
), anonymous as (
  select c.function_name,
         sum(c.requests) as requests,
         max(c.max_duration_ms) as max_ms,
         sum(c.total_duration_ms) as total_ms
    from public.api_request_counts as c
   where c.minute > now() - interval '1 hour'
   group by c.function_name
)
select function_name,
       (coalesce(s.requests, 0) + coalesce(a.requests, 0))::integer as requests,
       round(s.p50_ms::numeric, 1) as p50_ms,
       round(s.p95_ms::numeric, 1) as p95_ms,
       round(greatest(s.max_ms, a.max_ms)::numeric, 1) as max_ms,
       round(((coalesce(s.total_ms, 0) + coalesce(a.total_ms, 0))
              / (coalesce(s.requests, 0) + coalesce(a.requests, 0)))::numeric, 1) as mean_ms
  from signed_in as s
  full join anonymous as a using (function_name)
 order by p95_ms desc nulls last, max_ms desc;

comment on view public.ops_function_latency is
  'Slowest functions first over the last hour: p50 and p95 of signed-in requests (the others are counted per '
  'minute, not one by one), max and mean of all. Alert when p95 > 2000 ms.';

create or replace view public.ops_function_errors
  with (security_invoker = true) as
select function_name,
       sum(requests)::integer as requests,
       coalesce(sum(requests) filter (where status >= 500), 0)::integer as server_errors,
       coalesce(sum(requests) filter (where status between 400 and 499), 0)::integer as client_errors,
       round(coalesce(sum(requests) filter (where status >= 500), 0)::numeric / sum(requests), 4)
         as error_rate
  from public.api_request_outcomes
 where at > now() - interval '1 hour'
 group by function_name
 order by error_rate desc, requests desc;

comment on view public.ops_function_errors is
  'Error rate (5xx share) per function over the last hour, requests with and without a user. '
  'Alert when error_rate > 0.05.';

create or replace view public.ops_rate_limit_refusals
  with (security_invoker = true) as
select date_trunc('hour', at) as hour,
       function_name,
       sum(requests)::integer as refusals,
       count(distinct user_id)::integer as users
  from public.api_request_outcomes
 where at > now() - interval '24 hours'
   and status = 429
 group by 1, 2
 order by 1 desc, 3 desc;

comment on view public.ops_rate_limit_refusals is
  'Requests refused with 429 per hour and function over the last 24 hours, with and without a user '
  '(users counts the signed-in ones).';

revoke all on public.api_request_outcomes, public.ops_function_latency, public.ops_function_errors,
              public.ops_rate_limit_refusals
  from public, anon, authenticated;
grant select on public.api_request_outcomes, public.ops_function_latency, public.ops_function_errors,
                public.ops_rate_limit_refusals
  to service_role;
