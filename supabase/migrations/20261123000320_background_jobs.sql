-- Background jobs: a small Postgres job queue for the edge functions and scheduled workers.
--
-- Life of a job:
--   queued --claim--> running --complete--> succeeded
--                        |--fail--> failed (retried after a backoff) --claim--> running ...
--                        |--fail on the last attempt--> dead
--                        '--lock expires--> claimable again (or dead if it was the last attempt)
--
-- Order: LOWER priority numbers run first (like Unix nice): 0 is the default, use negative
-- numbers for urgent work and positive ones for background chores. Within one priority, the
-- earliest run_at first, then the oldest id.
--
-- Every claim counts as an attempt, so a job that kills its worker (and so never reports back)
-- still ends `dead` after max_attempts claims instead of being retried forever.
--
-- service_role only. Re-runnable: every statement is idempotent.

create table if not exists public.background_jobs (
  id              bigint      generated always as identity primary key,
  type            text        not null
                              constraint background_jobs_type_length check (pg_catalog.char_length(type) between 1 and 128),
  payload         jsonb       not null default '{}'::jsonb,
  priority        integer     not null default 0,
  run_at          timestamptz not null default now(),
  attempts        integer     not null default 0 constraint background_jobs_attempts_non_negative check (attempts >= 0),
  max_attempts    integer     not null default 5
                              constraint background_jobs_max_attempts_range check (max_attempts between 1 and 100),
  last_error      text,
  locked_by       text,
  locked_until    timestamptz,
  status          text        not null default 'queued'
                              constraint background_jobs_status_valid
                              check (status in ('queued', 'running', 'succeeded', 'failed', 'dead')),
  idempotency_key text        unique
                              constraint background_jobs_idempotency_key_length
                              check (pg_catalog.char_length(idempotency_key) between 1 and 255),
  created_at      timestamptz not null default now(),
  updated_at      timestamptz not null default now(),
  finished_at     timestamptz,
  -- A running job always has a holder and a lock expiry; no other status has either.
  constraint background_jobs_lock_matches_status
    check ((status = 'running') = (locked_by is not null and locked_until is not null)),
  -- finished_at is set exactly for the final states.
  constraint background_jobs_finished_matches_status
    check ((status in ('succeeded', 'dead')) = (finished_at is not null))
);
comment on table public.background_jobs is
  'Job queue. Lower priority numbers run first, then earlier run_at. Use enqueue_job/claim_jobs/complete_job/fail_job.';
comment on column public.background_jobs.priority is 'Lower runs first (0 default; negative = urgent).';
comment on column public.background_jobs.attempts is 'Times the job was claimed (each claim is an attempt).';
comment on column public.background_jobs.idempotency_key is
  'Optional: enqueue_job with a key that exists returns the existing job instead of adding one (until the job is purged).';

-- Claim order: an ordered scan of the claimable statuses, read in exactly the ORDER BY of
-- claim_jobs, so a claim stops after p_limit rows with no sort.
create index if not exists background_jobs_claim_idx
  on public.background_jobs (priority, run_at, id)
  where status in ('queued', 'failed', 'running');
-- Running jobs by lock expiry (expired-lock handling).
create index if not exists background_jobs_running_lock_idx
  on public.background_jobs (locked_until)
  where status = 'running';
-- purge_finished_jobs.
create index if not exists background_jobs_finished_idx
  on public.background_jobs (finished_at)
  where status in ('succeeded', 'dead');

create or replace trigger background_jobs_set_updated_at
  before update on public.background_jobs
  for each row execute function public.set_updated_at();

alter table public.background_jobs enable row level security;
revoke all on table public.background_jobs from anon, authenticated;
revoke all on sequence public.background_jobs_id_seq from anon, authenticated;
grant all on table public.background_jobs to service_role;
grant usage, select on sequence public.background_jobs_id_seq to service_role;

-- -------------------------------------------------------------------------------------------
-- enqueue_job
-- -------------------------------------------------------------------------------------------
create or replace function public.enqueue_job(
  p_type text,
  p_payload jsonb default '{}'::jsonb,
  p_run_at timestamptz default now(),
  p_priority integer default 0,
  p_idempotency_key text default null,
  p_max_attempts integer default 5
)
  returns bigint
  language plpgsql
  volatile
  set search_path = ''
as $$
declare
  v_id bigint;
begin
  if p_type is null or pg_catalog.char_length(p_type) not between 1 and 128 then
    raise exception 'p_type must be a string of 1 to 128 characters'
      using errcode = '22023';
  end if;
  if p_idempotency_key is not null and pg_catalog.char_length(p_idempotency_key) not between 1 and 255 then
    raise exception 'p_idempotency_key must be null or a string of 1 to 255 characters'
      using errcode = '22023';
  end if;
  if p_max_attempts is null or p_max_attempts not between 1 and 100 then
    raise exception 'p_max_attempts must be from 1 to 100, got %', coalesce(p_max_attempts::text, 'null')
      using errcode = '22023';
  end if;

  -- Idempotent and concurrency-safe: a concurrent enqueue with the same key waits on the
  -- unique index for the first one's transaction, then DO NOTHING returns no row, and the
  -- SELECT (a new snapshot under READ COMMITTED) finds the committed job. The loop covers the
  -- rare case where that job is purged in between (then the key is free again).
  for i in 1..3 loop
    insert into public.background_jobs (type, payload, run_at, priority, idempotency_key, max_attempts)
    values (p_type, coalesce(p_payload, '{}'::jsonb), coalesce(p_run_at, pg_catalog.now()),
            coalesce(p_priority, 0), p_idempotency_key, p_max_attempts)
    on conflict (idempotency_key) do nothing
    returning id into v_id;
    if v_id is not null then
      return v_id;
    end if;

    select j.id into v_id
    from public.background_jobs as j
    where j.idempotency_key = p_idempotency_key;
    if v_id is not null then
      return v_id;
    end if;
  end loop;

  raise exception 'could not enqueue job with idempotency key %: it keeps appearing and disappearing', p_idempotency_key
    using errcode = '40001';
end
$$;
comment on function public.enqueue_job(text, jsonb, timestamptz, integer, text, integer) is
  'Adds a job and returns its id. With p_idempotency_key, returns the id of the existing job with that key instead '
  '(no duplicate, also under concurrency). Errors: 22023 bad argument.';
revoke execute on function public.enqueue_job(text, jsonb, timestamptz, integer, text, integer) from public, anon, authenticated;
grant execute on function public.enqueue_job(text, jsonb, timestamptz, integer, text, integer) to service_role;

-- -------------------------------------------------------------------------------------------
-- claim_jobs
-- -------------------------------------------------------------------------------------------
create or replace function public.claim_jobs(
  p_worker text,
  p_limit integer default 1,
  p_lock_seconds integer default 300,
  p_types text[] default null
)
  returns setof public.background_jobs
  language plpgsql
  volatile
  set search_path = ''
as $$
begin
  if p_worker is null or pg_catalog.char_length(p_worker) not between 1 and 200 then
    raise exception 'p_worker must be a string of 1 to 200 characters'
      using errcode = '22023';
  end if;
  if p_limit is null or p_limit not between 1 and 1000 then
    raise exception 'p_limit must be from 1 to 1000, got %', coalesce(p_limit::text, 'null')
      using errcode = '22023';
  end if;
  if p_lock_seconds is null or p_lock_seconds not between 1 and 86400 then
    raise exception 'p_lock_seconds must be from 1 to 86400, got %', coalesce(p_lock_seconds::text, 'null')
      using errcode = '22023';
  end if;

  -- A job whose lock expired on its last allowed attempt is not run again: it is dead.
  with expired as (
    select j.id
    from public.background_jobs as j
    where j.status = 'running'
      and j.locked_until < pg_catalog.now()
      and j.attempts >= j.max_attempts
      and (p_types is null or j.type = any (p_types))
    for update skip locked
  )
  update public.background_jobs as j
     set status       = 'dead',
         last_error   = pg_catalog.format('lock of worker %s expired during attempt %s of %s', j.locked_by, j.attempts, j.max_attempts),
         locked_by    = null,
         locked_until = null,
         finished_at  = pg_catalog.now()
    from expired
   where j.id = expired.id;

  -- SKIP LOCKED: concurrent claimers pass over each other's rows instead of waiting, and a row
  -- another claimer changed and committed meanwhile is re-checked against this WHERE clause
  -- after locking (it is then running with a live lock, so it drops out). No job is ever handed
  -- to two workers at once.
  return query
  with candidates as (
    select j.id
    from public.background_jobs as j
    where j.status in ('queued', 'failed', 'running')
      and case
            when j.status = 'running' then j.locked_until < pg_catalog.now() and j.attempts < j.max_attempts
            else j.run_at <= pg_catalog.now()
          end
      and (p_types is null or j.type = any (p_types))
    order by j.priority, j.run_at, j.id
    limit p_limit
    for update skip locked
  ), claimed as (
    update public.background_jobs as j
       set status       = 'running',
           attempts     = j.attempts + 1,
           locked_by    = p_worker,
           locked_until = pg_catalog.now() + pg_catalog.make_interval(secs => p_lock_seconds)
      from candidates
     where j.id = candidates.id
    returning j.*
  )
  select c.*
  from claimed as c
  order by c.priority, c.run_at, c.id;
end
$$;
comment on function public.claim_jobs(text, integer, integer, text[]) is
  'Claims up to p_limit due jobs for p_worker for p_lock_seconds (queued/failed jobs whose run_at has come, and '
  'running jobs whose lock expired), lowest priority number first, then earliest run_at; only jobs of p_types '
  'when given. Returns the claimed rows (status running, attempts already incremented). Errors: 22023 bad argument.';
revoke execute on function public.claim_jobs(text, integer, integer, text[]) from public, anon, authenticated;
grant execute on function public.claim_jobs(text, integer, integer, text[]) to service_role;

-- -------------------------------------------------------------------------------------------
-- complete_job / fail_job
-- -------------------------------------------------------------------------------------------
-- Only the lock holder can finish a job. A worker whose lock expired may still finish it as
-- long as no other worker has claimed it since.
create or replace function public.complete_job(p_id bigint, p_worker text)
  returns boolean
  language plpgsql
  volatile
  set search_path = ''
as $$
begin
  update public.background_jobs as j
     set status       = 'succeeded',
         locked_by    = null,
         locked_until = null,
         finished_at  = pg_catalog.now()
   where j.id = p_id
     and j.status = 'running'
     and j.locked_by = p_worker;
  return found;
end
$$;
comment on function public.complete_job(bigint, text) is
  'Marks the job succeeded if p_worker holds it; returns false (and changes nothing) otherwise.';
revoke execute on function public.complete_job(bigint, text) from public, anon, authenticated;
grant execute on function public.complete_job(bigint, text) to service_role;

-- Records a failed attempt. With attempts left, the job is retried after an exponential
-- backoff of 2^attempts x 10 s (20 s, 40 s, 80 s, ...) capped at one hour; on the last attempt
-- it becomes dead. Returns the job's new status ('failed' or 'dead'), or NULL when p_worker
-- does not hold the job (nothing changes then).
create or replace function public.fail_job(p_id bigint, p_worker text, p_error text)
  returns text
  language plpgsql
  volatile
  set search_path = ''
as $$
declare
  v_status text;
begin
  update public.background_jobs as j
     set status       = case when j.attempts >= j.max_attempts then 'dead' else 'failed' end,
         last_error   = pg_catalog.left(coalesce(p_error, 'unknown error'), 10000),
         run_at       = case when j.attempts >= j.max_attempts then j.run_at
                             else pg_catalog.now() + least(interval '10 seconds' * pg_catalog.power(2, least(j.attempts, 20)),
                                                           interval '1 hour') end,
         locked_by    = null,
         locked_until = null,
         finished_at  = case when j.attempts >= j.max_attempts then pg_catalog.now() end
   where j.id = p_id
     and j.status = 'running'
     and j.locked_by = p_worker
  returning j.status into v_status;
  return v_status;
end
$$;
comment on function public.fail_job(bigint, text, text) is
  'Records a failed attempt by the lock holder: status failed with run_at = now() + least(2^attempts * 10 s, 1 h), '
  'or dead once attempts >= max_attempts. Returns the new status, or NULL if p_worker does not hold the job.';
revoke execute on function public.fail_job(bigint, text, text) from public, anon, authenticated;
grant execute on function public.fail_job(bigint, text, text) to service_role;

-- -------------------------------------------------------------------------------------------
-- purge_finished_jobs
-- -------------------------------------------------------------------------------------------
create or replace function public.purge_finished_jobs(p_older_than interval default interval '7 days')
  returns integer
  language plpgsql
  volatile
  set search_path = ''
as $$
declare
  v_count integer;
begin
  if p_older_than is null or p_older_than < interval '0' then
    raise exception 'p_older_than must be a non-negative interval'
      using errcode = '22023';
  end if;
  delete from public.background_jobs as j
  where j.status in ('succeeded', 'dead')
    and j.finished_at < pg_catalog.now() - p_older_than;
  get diagnostics v_count = row_count;
  return v_count;
end
$$;
comment on function public.purge_finished_jobs(interval) is
  'Deletes succeeded and dead jobs that finished more than p_older_than ago; returns how many.';
revoke execute on function public.purge_finished_jobs(interval) from public, anon, authenticated;
grant execute on function public.purge_finished_jobs(interval) to service_role;
