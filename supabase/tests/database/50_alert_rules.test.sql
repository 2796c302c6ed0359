-- Alert rules (20261206008300): the default rules exist, pg_cron evaluates them every minute,
-- and a rule queues alert.notify when it starts firing, as a reminder after repeat_after, and
-- when it resolves, never in between; only the service role reads or changes the rules.
begin;
create extension if not exists pgtap with schema extensions;
set local client_min_messages = warning;

select plan(12);

select results_eq(
  $$select name, metric, threshold from public.alert_rules
     where name in ('function-5xx-share', 'function-p95-latency', 'dead-jobs', 'rate-limit-refusals',
                    'redis-fallback', 'partitions-missing')
     order by name$$,
  $$values ('dead-jobs', 'dead_jobs', 0::numeric), ('function-5xx-share', 'error_rate', 0.05),
           ('function-p95-latency', 'p95_ms', 2000), ('partitions-missing', 'missing_partitions', 0),
           ('rate-limit-refusals', 'rate_limit_refusals', 0.10), ('redis-fallback', 'redis_fallback', 0.5)$$,
  'the six default rules are there with their thresholds'
);
select is(
  (select schedule from cron.job where jobname = 'evaluate-alert-rules'),
  '* * * * *',
  'pg_cron evaluates the rules every minute'
);

-- A rule that always fires: no event table lacks next month's partition, and 0 > -1.
insert into public.alert_rules (name, metric, threshold, view_name, description, enabled)
values ('always-firing', 'missing_partitions', -1, 'event_partitions', 'test', false);

select is(
  (select notified from public.evaluate_alert_rules('2031-01-01 00:00+00', array['always-firing'])),
  'firing', 'a rule that starts firing notifies');
select is(
  (select notified from public.evaluate_alert_rules('2031-01-01 00:30+00', array['always-firing'])),
  null, 'no repeat while it keeps firing');
select is(
  (select notified from public.evaluate_alert_rules('2031-01-01 01:00+00', array['always-firing'])),
  'reminder', 'a reminder once repeat_after (1 hour) has passed');
select is(
  (select notified from public.evaluate_alert_rules('2031-01-01 01:01+00', array['always-firing'])),
  null, 'and then quiet again');
select is(
  (select firing_since from public.alert_rules where name = 'always-firing'),
  '2031-01-01 00:00+00'::timestamptz, 'the rule remembers since when it fires');

update public.alert_rules set threshold = 100 where name = 'always-firing';
select is(
  (select notified from public.evaluate_alert_rules('2031-01-01 01:02+00', array['always-firing'])),
  'resolved', 'a rule whose value falls under its threshold resolves');
select is(
  (select firing_since from public.alert_rules where name = 'always-firing'),
  null, 'and is no longer firing');

select results_eq(
  $$select payload->>'state' from public.background_jobs
     where type = 'alert.notify' and payload->>'rule' = 'always-firing' order by id$$,
  $$values ('firing'), ('reminder'), ('resolved')$$,
  'one alert.notify job per change, in order'
);

select is(
  (select count(*)::int from public.evaluate_alert_rules('2031-01-01 02:00+00') where rule = 'always-firing'),
  0, 'a disabled rule is left out of the evaluation of every enabled rule');

set local role authenticated;
select throws_ok($$select * from public.alert_rules$$, '42501', null,
  'a signed-in user cannot read the alert rules');
reset role;

select * from finish();
rollback;
