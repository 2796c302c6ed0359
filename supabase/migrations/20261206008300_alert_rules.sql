-- Alerts that arrive: thresholds over the operator views, kept as rows, evaluated every minute
-- by pg_cron, each change of state queued as an `alert.notify` job that the job worker posts to
-- ALERT_WEBHOOK_URL (Slack-compatible), retried by the queue like any job.
--
--   alert_rules            one row per rule: which metric, the threshold its value must exceed,
--                          over which window, from how many requests on, how often to remind,
--                          and its state (firing_since, last_notified_at, last_value)
--   alert_metric_value     the value of one metric at an instant (null: not enough data)
--   evaluate_alert_rules   compares every enabled rule (or the named ones) with its threshold at
--                          p_now and queues `alert.notify` when a rule starts firing, when it
--                          resolves, and as a reminder every repeat_after while it keeps firing
--
-- Every metric is computed at an explicit instant (p_now) from the tables under the operator
-- views, so a test drives time by passing it rather than by waiting.
--
-- The metrics:
--   error_rate          the highest 5xx share of one function (api_request_outcomes), among
--                       the functions with at least min_requests in the window
--   p95_ms              the highest p95 duration of one function (signed-in requests)
--   dead_jobs           background jobs that became dead in the window
--   rate_limit_refusals the share of all requests refused with 429 (at least min_requests)
--   redis_fallback      the share of signed-in requests served in Redis fallback mode
--   missing_partitions  event tables without a partition for next month (the window is unused)
--
-- Re-runnable: every statement is idempotent; the default rules are inserted once and then left
-- to the operator.

create table if not exists public.alert_rules (
  name             text          primary key
                   constraint alert_rules_name_format check (name ~ '^[a-z0-9][a-z0-9_.-]{0,63}$'),
  metric           text          not null
                   constraint alert_rules_metric_known check (metric in (
                     'error_rate', 'p95_ms', 'dead_jobs', 'rate_limit_refusals', 'redis_fallback',
                     'missing_partitions')),
  threshold        numeric       not null,
  "window"         interval      not null default interval '5 minutes'
                   constraint alert_rules_window_positive check ("window" > interval '0'),
  min_requests     integer       not null default 0 constraint alert_rules_min_requests_non_negative check (min_requests >= 0),
  repeat_after     interval      not null default interval '1 hour'
                   constraint alert_rules_repeat_after_positive check (repeat_after > interval '0'),
  view_name        text          not null,
  description      text          not null,
  enabled          boolean       not null default true,
  firing_since     timestamptz,
  last_notified_at timestamptz,
  last_value       numeric,
  evaluated_at     timestamptz
);
comment on table public.alert_rules is
  'Alert thresholds over the operator views, and each rule''s state. A rule fires while its metric''s value exceeds '
  'threshold; evaluate_alert_rules (pg_cron, every minute) queues alert.notify on start, on resolve, and every '
  'repeat_after while it fires. service_role only.';

alter table public.alert_rules enable row level security;
drop policy if exists "Only the service role reads and changes alert rules" on public.alert_rules;
create policy "Only the service role reads and changes alert rules"
  on public.alert_rules
  for all
  to service_role
  using (true)
  with check (true);
revoke all on table public.alert_rules from public, anon, authenticated, service_role;
grant select, insert, update, delete on table public.alert_rules to service_role;

insert into public.alert_rules (name, metric, threshold, "window", min_requests, view_name, description) values
  ('function-5xx-share',   'error_rate',          0.05, interval '5 minutes', 20, 'ops_function_errors',
   'A function answers more than 5 % of its requests with a 5xx'),
  ('function-p95-latency', 'p95_ms',              2000, interval '5 minutes', 20, 'ops_function_latency',
   'A function''s p95 latency is above 2 s'),
  ('dead-jobs',            'dead_jobs',           0,    interval '1 hour',    0,  'background_jobs',
   'Background jobs used every attempt and are dead'),
  ('rate-limit-refusals',  'rate_limit_refusals', 0.10, interval '5 minutes', 20, 'ops_rate_limit_refusals',
   'More than 10 % of requests are refused with 429'),
  ('redis-fallback',       'redis_fallback',      0.5,  interval '5 minutes', 5,  'ops_cache_and_fallback',
   'Redis is not answering: most requests use the Postgres fallbacks'),
  ('partitions-missing',   'missing_partitions',  0,    interval '1 day',     0,  'event_partitions',
   'An event table has no partition for next month')
on conflict (name) do nothing;

-- -------------------------------------------------------------------------------------------
-- alert_metric_value
-- -------------------------------------------------------------------------------------------
create or replace function public.alert_metric_value(
  p_metric text,
  p_now timestamptz,
  p_window interval,
  p_min_requests integer
)
  returns numeric
  language plpgsql
  stable
  set search_path = ''
as $$
declare
  v_value numeric;
  v_next  timestamptz;
begin
  case p_metric
  when 'error_rate' then
    select pg_catalog.max(f.rate) into v_value
      from (select o.function_name,
                   (pg_catalog.sum(o.requests) filter (where o.status >= 500))::numeric
                     / pg_catalog.sum(o.requests) as rate
              from public.api_request_outcomes as o
             where o.at > p_now - p_window and o.at <= p_now
             group by o.function_name
            having pg_catalog.sum(o.requests) >= p_min_requests) as f;
  when 'p95_ms' then
    select pg_catalog.max(f.p95) into v_value
      from (select (pg_catalog.percentile_cont(0.95) within group (order by m.duration_ms))::numeric as p95
              from public.api_metrics as m
             where m.created_at > p_now - p_window and m.created_at <= p_now
             group by m.function_name
            having pg_catalog.count(*) >= p_min_requests) as f;
  when 'dead_jobs' then
    select pg_catalog.count(*) into v_value
      from public.background_jobs as j
     where j.status = 'dead' and j.finished_at > p_now - p_window and j.finished_at <= p_now;
  when 'rate_limit_refusals' then
    select (pg_catalog.sum(o.requests) filter (where o.status = 429))::numeric / pg_catalog.sum(o.requests)
      into v_value
      from public.api_request_outcomes as o
     where o.at > p_now - p_window and o.at <= p_now
    having pg_catalog.sum(o.requests) >= p_min_requests;
  when 'redis_fallback' then
    select (pg_catalog.count(*) filter (where m.redis_fallback))::numeric / pg_catalog.count(*)
      into v_value
      from public.api_metrics as m
     where m.created_at > p_now - p_window and m.created_at <= p_now
    having pg_catalog.count(*) >= greatest(p_min_requests, 1);
  when 'missing_partitions' then
    v_next := (pg_catalog.date_trunc('month', p_now at time zone 'UTC') + interval '1 month') at time zone 'UTC';
    select pg_catalog.count(*) into v_value
      from public.event_retention as r
     where not exists (
       select 1 from public.event_partitions as p
        where p.table_name = r.table_name and not p.is_default
          and p.range_from <= v_next and p.range_to > v_next);
  else
    raise exception 'unknown alert metric %', p_metric using errcode = '22023';
  end case;
  return v_value;
end
$$;
comment on function public.alert_metric_value(text, timestamptz, interval, integer) is
  'The value of an alert metric over (p_now - p_window, p_now]; null when fewer than p_min_requests requests '
  'make the share or percentile meaningless. See the header of migration 20261206008300 for each metric.';
revoke execute on function public.alert_metric_value(text, timestamptz, interval, integer) from public, anon, authenticated;
grant execute on function public.alert_metric_value(text, timestamptz, interval, integer) to service_role;

-- -------------------------------------------------------------------------------------------
-- evaluate_alert_rules
-- -------------------------------------------------------------------------------------------
create or replace function public.evaluate_alert_rules(
  p_now timestamptz default now(),
  p_rules text[] default null
)
  returns table (rule text, value numeric, firing boolean, notified text)
  language plpgsql
  volatile
  set search_path = ''
as $$
declare
  v_rule   public.alert_rules;
  v_value  numeric;
  v_firing boolean;
  v_state  text;
begin
  for v_rule in
    select * from public.alert_rules as r
     where (p_rules is null and r.enabled) or r.name = any (p_rules)
     order by r.name
     for update
  loop
    v_value := public.alert_metric_value(v_rule.metric, p_now, v_rule."window", v_rule.min_requests);
    v_firing := v_value is not null and v_value > v_rule.threshold;
    v_state := case
      when v_firing and v_rule.firing_since is null then 'firing'
      when v_firing and v_rule.last_notified_at <= p_now - v_rule.repeat_after then 'reminder'
      when not v_firing and v_rule.firing_since is not null then 'resolved'
    end;
    if v_state is not null then
      perform public.enqueue_job(
        'alert.notify',
        pg_catalog.jsonb_build_object(
          'rule', v_rule.name,
          'state', v_state,
          'description', v_rule.description,
          'metric', v_rule.metric,
          'value', v_value,
          'threshold', v_rule.threshold,
          'view', v_rule.view_name,
          'firing_since', coalesce(v_rule.firing_since, p_now),
          'at', p_now),
        p_idempotency_key => 'alert:' || v_rule.name || ':' || v_state || ':' || p_now::text,
        p_max_attempts => 8);
    end if;
    update public.alert_rules as r
       set firing_since     = case when v_firing then coalesce(r.firing_since, p_now) end,
           last_notified_at = case when v_state is not null then p_now else r.last_notified_at end,
           last_value       = v_value,
           evaluated_at     = p_now
     where r.name = v_rule.name;
    rule := v_rule.name;
    value := v_value;
    firing := v_firing;
    notified := v_state;
    return next;
  end loop;
end
$$;
comment on function public.evaluate_alert_rules(timestamptz, text[]) is
  'Evaluates the enabled alert rules (or exactly the named ones, enabled or not) at p_now; queues alert.notify '
  '(state firing, reminder or resolved) for each change and records each rule''s state. pg_cron, every minute.';
revoke execute on function public.evaluate_alert_rules(timestamptz, text[]) from public, anon, authenticated;
grant execute on function public.evaluate_alert_rules(timestamptz, text[]) to service_role;

select cron.schedule('evaluate-alert-rules', '* * * * *',
  $cmd$select count(*) from public.evaluate_alert_rules()$cmd$);
