-- Cron schedules (20261123000900): the pg_cron jobs exist once each, by name, with their
-- schedules; every scheduled command runs; trigger_job_worker is harmless without pg_net.
begin;
create extension if not exists pgtap with schema extensions;
set local client_min_messages = warning;

select plan(20);

select has_extension('pg_catalog', 'pg_cron', 'pg_cron is installed in pg_catalog (as Supabase does)');

select results_eq(
  $$select jobname::text collate "default", schedule from cron.job
    where jobname in ('create-event-partitions', 'drop-expired-event-partitions', 'refresh-user-statistics',
                      'purge-expired-cache', 'purge-finished-jobs', 'purge-cron-history', 'trigger-job-worker')
    order by jobname$$,
  $$values ('create-event-partitions', '15 0 * * *'),
           ('drop-expired-event-partitions', '30 0 * * *'),
           ('purge-cron-history', '50 0 * * *'),
           ('purge-expired-cache', '20 * * * *'),
           ('purge-finished-jobs', '45 0 * * *'),
           ('refresh-user-statistics', '7 * * * *'),
           ('trigger-job-worker', '* * * * *')$$,
  'the jobs, by name, with their schedules: daily partitions/retention/job purge, hourly refresh and cache purge, '
  'the worker every minute'
);
select is_empty(
  $$select jobname from cron.job where jobname is not null group by jobname having count(*) > 1$$,
  'no job name is scheduled twice'
);
select is(
  (select count(*)::int from cron.job
   where jobname in ('create-event-partitions', 'drop-expired-event-partitions', 'refresh-user-statistics',
                     'purge-expired-cache', 'purge-finished-jobs', 'purge-cron-history', 'trigger-job-worker')
     and active and database = current_database() and username = 'postgres'),
  7,
  'all seven are active and run as postgres in this database'
);

-- What each one runs.
select results_eq(
  $$select jobname::text collate "default", command from cron.job
    where jobname in ('create-event-partitions', 'drop-expired-event-partitions', 'refresh-user-statistics',
                      'purge-expired-cache', 'purge-finished-jobs', 'trigger-job-worker')
    order by jobname$$,
  $$values ('create-event-partitions', 'select count(*) from public.create_event_partitions()'),
           ('drop-expired-event-partitions', 'select count(*) from public.drop_expired_event_partitions()'),
           ('purge-expired-cache', 'select public.purge_ai_response_cache(), public.purge_rate_limit_hits()'),
           ('purge-finished-jobs', 'select public.purge_finished_jobs()'),
           ('refresh-user-statistics', 'select public.refresh_user_statistics()'),
           ('trigger-job-worker', 'select public.trigger_job_worker()')$$,
  'each job calls its maintenance function'
);

-- Every scheduled command runs as is (inside this transaction, which is rolled back).
select lives_ok(command, format('the command of %s runs', jobname))
from cron.job
where jobname in ('create-event-partitions', 'drop-expired-event-partitions', 'refresh-user-statistics',
                  'purge-expired-cache', 'purge-finished-jobs', 'purge-cron-history', 'trigger-job-worker')
order by jobname;

-- Scheduling again by name updates the job instead of adding one (what makes the migration
-- re-runnable).
create temporary table worker_job on commit drop as
select jobid from cron.job where jobname = 'trigger-job-worker';
select cron.schedule('trigger-job-worker', '*/2 * * * *', 'select public.trigger_job_worker()');
select is(
  (select array_agg(jobid) from cron.job where jobname = 'trigger-job-worker'),
  (select array_agg(jobid) from worker_job),
  'cron.schedule with an existing name updates that job (same id, still one job)'
);
select is(
  (select schedule from cron.job where jobname = 'trigger-job-worker'), '*/2 * * * *',
  'and changes its schedule'
);

-- ---------------------------------------------------------------------------------------------
-- trigger_job_worker
-- ---------------------------------------------------------------------------------------------
select function_returns('public', 'trigger_job_worker', array['boolean'], 'bigint');
select is(
  (select count(*)::int from information_schema.routine_privileges
   where routine_schema = 'public' and routine_name = 'trigger_job_worker'
     and grantee in ('PUBLIC', 'anon', 'authenticated', 'service_role')),
  0,
  'no API role may call trigger_job_worker'
);

-- With no job due it calls nothing.
delete from public.background_jobs;
select is(public.trigger_job_worker(), null, 'no job due: nothing is called');

-- With a job due, where pg_net is missing (the local stack) it only raises a notice.
insert into public.background_jobs (type) values ('test.trigger');
select lives_ok($$select public.trigger_job_worker()$$, 'trigger_job_worker runs without error with a job due');
select lives_ok($$select public.trigger_job_worker(p_force => true)$$, 'and when forced');
select case
  when to_regprocedure('net.http_post(text,jsonb,jsonb,jsonb,integer)') is null then
    is(public.trigger_job_worker(true), null, 'without pg_net it returns NULL (no request made)')
  else
    skip('pg_net is installed here: the request is queued', 1)
end;

select * from finish();
rollback;
