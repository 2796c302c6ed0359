-- Scheduled maintenance with pg_cron (hosted Supabase: Database > Cron; jobs run as the role that
-- scheduled them, postgres, in this database; times are UTC).
--
--   job name                        schedule        what
--   create-event-partitions         15 0 * * *      public.create_event_partitions(): months ahead exist
--   drop-expired-event-partitions   30 0 * * *      public.drop_expired_event_partitions(): retention
--   refresh-user-statistics         7 * * * *       public.refresh_user_statistics() (concurrently)
--   purge-expired-cache             20 * * * *      public.purge_ai_response_cache(), public.purge_rate_limit_hits()
--   purge-finished-jobs             45 0 * * *      public.purge_finished_jobs() (7 days)
--   purge-cron-history              50 0 * * *      cron.job_run_details older than 7 days
--   trigger-job-worker              * * * * *       public.trigger_job_worker(): POST process-jobs
--
-- The daily jobs are spread over 00:15-00:50 and the hourly ones over the hour, so they do not
-- contend with each other. cron.job_run_details gets one row per run (1,440 a day for the
-- every-minute job alone), so it is purged too, as Supabase's docs advise.
--
-- Re-runnable: cron.schedule(job_name, ...) updates the job of that name (pg_cron >= 1.3), and
-- the function is CREATE OR REPLACE.

create extension if not exists pg_cron with schema pg_catalog;
grant usage on schema cron to postgres;
grant all privileges on all tables in schema cron to postgres;

-- -------------------------------------------------------------------------------------------
-- trigger_job_worker: wake the process-jobs edge function
-- -------------------------------------------------------------------------------------------
-- Through pg_net (asynchronous: net.http_post only queues the request and returns its id, so
-- the cron job never waits on the HTTP call), with the project URL and service-role key from
-- Supabase Vault, created once per project (never in a migration, which would put the key in git):
--
--   select vault.create_secret('https://<project-ref>.supabase.co', 'project_url');
--   select vault.create_secret('<service role key>', 'service_role_key');
--
-- Where pg_net, Vault or either secret is missing (the local stack has none of them; it runs
-- the worker itself), it does nothing but RAISE NOTICE and returns NULL. It also does nothing
-- when no job is due, so an idle project makes no edge-function invocations; p_force => true
-- calls the worker anyway.
create or replace function public.trigger_job_worker(p_force boolean default false)
  returns bigint
  language plpgsql
  volatile
  set search_path = ''
as $$
declare
  v_url        text;
  v_key        text;
  v_request_id bigint;
begin
  if not coalesce(p_force, false) and not exists (
    select 1
    from public.background_jobs as j
    where j.status in ('queued', 'failed', 'running')
      and case
            when j.status = 'running' then j.locked_until < pg_catalog.now()
            else j.run_at <= pg_catalog.now()
          end
  ) then
    return null;
  end if;

  if pg_catalog.to_regprocedure('net.http_post(text,jsonb,jsonb,jsonb,integer)') is null then
    raise notice 'trigger_job_worker: pg_net is not installed; not calling process-jobs';
    return null;
  end if;
  if pg_catalog.to_regclass('vault.decrypted_secrets') is null then
    raise notice 'trigger_job_worker: Supabase Vault is not available; not calling process-jobs';
    return null;
  end if;

  -- Dynamic SQL: vault and net do not exist everywhere this function is created (nor, then, can
  -- plpgsql_check resolve these statements).
  perform 'PRAGMA:disable:check';
  execute 'select decrypted_secret from vault.decrypted_secrets where name = $1 order by created_at desc limit 1'
    into v_url using 'project_url';
  execute 'select decrypted_secret from vault.decrypted_secrets where name = $1 order by created_at desc limit 1'
    into v_key using 'service_role_key';
  if v_url is null or v_key is null then
    raise notice 'trigger_job_worker: Vault secret % is missing; not calling process-jobs',
      case when v_url is null then 'project_url' else 'service_role_key' end;
    return null;
  end if;

  execute 'select net.http_post(url := $1, body := $2, params := $3, headers := $4, timeout_milliseconds := $5)'
    into v_request_id
    using pg_catalog.rtrim(v_url, '/') || '/functions/v1/process-jobs',
          pg_catalog.jsonb_build_object('source', 'pg_cron'),
          '{}'::jsonb,
          pg_catalog.jsonb_build_object(
            'Content-Type', 'application/json',
            'Authorization', 'Bearer ' || v_key),
          5000;
  perform 'PRAGMA:enable:check';
  return v_request_id;
end
$$;
comment on function public.trigger_job_worker(boolean) is
  'Asks the process-jobs edge function (POST, via pg_net, URL and service-role key from Vault secrets project_url '
  'and service_role_key) to run, when a background job is due (or always with p_force). Returns the pg_net request '
  'id, or NULL when it did not call (nothing due, or pg_net/Vault/secrets missing: RAISE NOTICE). Run every '
  'minute by pg_cron.';
revoke execute on function public.trigger_job_worker(boolean) from public, anon, authenticated, service_role;

-- -------------------------------------------------------------------------------------------
-- The schedules (created or updated by name)
-- -------------------------------------------------------------------------------------------
select cron.schedule('create-event-partitions', '15 0 * * *',
  $cmd$select count(*) from public.create_event_partitions()$cmd$);
select cron.schedule('drop-expired-event-partitions', '30 0 * * *',
  $cmd$select count(*) from public.drop_expired_event_partitions()$cmd$);
select cron.schedule('refresh-user-statistics', '7 * * * *',
  $cmd$select public.refresh_user_statistics()$cmd$);
select cron.schedule('purge-expired-cache', '20 * * * *',
  $cmd$select public.purge_ai_response_cache(), public.purge_rate_limit_hits()$cmd$);
select cron.schedule('purge-finished-jobs', '45 0 * * *',
  $cmd$select public.purge_finished_jobs()$cmd$);
select cron.schedule('purge-cron-history', '50 0 * * *',
  $cmd$delete from cron.job_run_details where end_time < now() - interval '7 days'$cmd$);
select cron.schedule('trigger-job-worker', '* * * * *',
  $cmd$select public.trigger_job_worker()$cmd$);
