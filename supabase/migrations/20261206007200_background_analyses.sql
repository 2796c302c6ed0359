-- Analyses that outlive the request: `analyze` with mode "background" charges the unit, stores a
-- `pending` analysis and queues an `ai.analyze` job in one statement; the worker turns it `done`
-- (result stored, analysis.ready queued) or, when the job ends dead, `failed` with its unit
-- refunded exactly once.
--
--   analyses.status          pending | done | failed (every synchronous analysis is done)
--   analyses.charged_until   the period the unit was taken in (what refund_usage checks)
--   analyses.refunded_at     set in the statement that refunds: the refund-once marker
--   complete_background_analysis  pending -> done, and queues analysis.ready, in one statement
--   fail_background_analysis      pending -> failed, and refunds, in one statement, once
--   background_jobs trigger  an ai.analyze job that ends dead fails its analysis, however it
--                            died (its last attempt failed, or its worker vanished and the lock
--                            expired), so no worker crash can skip or repeat the refund
--
-- Re-runnable: every statement is idempotent.

alter table public.analyses add column if not exists status text not null default 'done';
alter table public.analyses drop constraint if exists analyses_status_valid;
alter table public.analyses add constraint analyses_status_valid check (status in ('pending', 'done', 'failed'));
alter table public.analyses add column if not exists charged_until timestamptz;
alter table public.analyses add column if not exists refunded_at timestamptz;
alter table public.analyses alter column result drop not null;
alter table public.analyses drop constraint if exists analyses_result_when_done;
alter table public.analyses add constraint analyses_result_when_done check ((status = 'done') = (result is not null));
comment on column public.analyses.status is
  'pending (a background analysis queued), done (result stored) or failed (its job ended dead; unit refunded).';
comment on column public.analyses.refunded_at is
  'When the unit of a failed background analysis was given back; set by the refunding statement, so at most once.';

-- Pending analyses by id: what ai.analyze and fail_background_analysis look up.
create index if not exists analyses_pending_idx on public.analyses (id) where status = 'pending';

-- The page's building block gains the status (a changed result type needs drop and create).
drop function if exists public.analyses_in_window(uuid, timestamptz, timestamptz, timestamptz, uuid, integer);
create function public.analyses_in_window(
  p_user_id uuid,
  p_from timestamptz,
  p_through timestamptz,
  p_before_created_at timestamptz,
  p_before_id uuid,
  p_limit integer
)
  returns table (
    id uuid, created_at timestamptz, status text, analysis_type text, input_kind text, input_path text,
    model text, cached boolean, result jsonb
  )
  language sql
  stable
  -- No SET search_path and no SECURITY DEFINER, as in 20261123000420: either would stop the
  -- planner from inlining it, and so from pruning partitions.
as $$
  select a.id, a.created_at, a.status, a.analysis_type, a.input_kind, a.input_path, a.model, a.cached, a.result
  from public.analyses as a
  where a.user_id = p_user_id
    and a.created_at >= p_from
    and a.created_at <= p_through
    and (a.created_at, a.id) < (p_before_created_at, p_before_id)
  order by a.created_at desc, a.id desc
  limit p_limit
$$;
comment on function public.analyses_in_window(uuid, timestamptz, timestamptz, timestamptz, uuid, integer) is
  'Building block of analyses_page: the user''s analyses with p_from <= created_at <= p_through and '
  '(created_at, id) < (p_before_created_at, p_before_id), newest first, at most p_limit. RLS applies.';
revoke execute on function public.analyses_in_window(uuid, timestamptz, timestamptz, timestamptz, uuid, integer)
  from public, anon;
grant execute on function public.analyses_in_window(uuid, timestamptz, timestamptz, timestamptz, uuid, integer)
  to authenticated, service_role;

-- -------------------------------------------------------------------------------------------
-- complete_background_analysis: the result, and analysis.ready, once. created_at moves to the
-- moment the result exists, so `sync` (which reads what was created after its cursor) delivers
-- the finished analysis as a change; the row keeps its id.
-- -------------------------------------------------------------------------------------------
create or replace function public.complete_background_analysis(
  p_id uuid,
  p_result jsonb,
  p_model text,
  p_cached boolean default false
)
  returns boolean
  language plpgsql
  volatile
  set search_path = ''
as $$
declare
  v_user uuid;
  v_type text;
begin
  update public.analyses as a
     set status = 'done', result = p_result, model = p_model, cached = coalesce(p_cached, false),
         created_at = pg_catalog.now()
   where a.id = p_id and a.status = 'pending'
  returning a.user_id, a.analysis_type into v_user, v_type;
  if not found then
    return false;
  end if;
  insert into public.activities (user_id, kind, detail)
  values (v_user, 'analysis', pg_catalog.jsonb_build_object('analysis_id', p_id, 'cached', coalesce(p_cached, false)));
  perform public.enqueue_notification(v_user, 'analysis.ready', p_id::text,
    pg_catalog.jsonb_build_object('analysis_id', p_id, 'analysis_type', v_type));
  return true;
end
$$;
comment on function public.complete_background_analysis(uuid, jsonb, text, boolean) is
  'Stores the result of a pending analysis (status done) and queues its analysis.ready notification; false '
  '(and nothing changes) when the analysis is not pending any more.';
revoke execute on function public.complete_background_analysis(uuid, jsonb, text, boolean) from public, anon, authenticated;
grant execute on function public.complete_background_analysis(uuid, jsonb, text, boolean) to service_role;

-- -------------------------------------------------------------------------------------------
-- fail_background_analysis: pending -> failed and the unit back, in one transaction, once.
-- -------------------------------------------------------------------------------------------
create or replace function public.fail_background_analysis(p_id uuid)
  returns boolean
  language plpgsql
  volatile
  set search_path = ''
as $$
declare
  v_user  uuid;
  v_until timestamptz;
begin
  update public.analyses as a
     set status = 'failed', refunded_at = pg_catalog.now()
   where a.id = p_id and a.status = 'pending' and a.refunded_at is null
  returning a.user_id, a.charged_until into v_user, v_until;
  if not found then
    return false;
  end if;
  perform public.refund_usage(v_user, 1, v_until);
  return true;
end
$$;
comment on function public.fail_background_analysis(uuid) is
  'Marks a pending analysis failed and refunds its unit (for the period it was charged in), at most once: '
  'false when it was not pending.';
revoke execute on function public.fail_background_analysis(uuid) from public, anon, authenticated;
grant execute on function public.fail_background_analysis(uuid) to service_role;

create or replace function public.fail_analysis_of_dead_job()
  returns trigger
  language plpgsql
  set search_path = ''
as $$
begin
  perform public.fail_background_analysis((new.payload ->> 'analysis_id')::uuid);
  return null;
end
$$;
comment on function public.fail_analysis_of_dead_job() is
  'Trigger function: an ai.analyze job that became dead fails (and refunds) its analysis.';
revoke execute on function public.fail_analysis_of_dead_job() from public, anon, authenticated, service_role;

create or replace trigger background_jobs_fail_dead_analysis
  after update of status on public.background_jobs
  for each row
  when (new.status = 'dead' and old.status is distinct from 'dead' and new.type = 'ai.analyze')
  execute function public.fail_analysis_of_dead_job();

-- -------------------------------------------------------------------------------------------
-- enqueue_background_analysis: the pending analysis and its ai.analyze job, together. The job's
-- idempotency key decides which request owns the analysis: a twin finds the first one's job and
-- gets its analysis id back (and stores nothing).
-- -------------------------------------------------------------------------------------------
create or replace function public.enqueue_background_analysis(
  p_job_key text,
  p_payload jsonb,
  p_input_kind text,
  p_input_path text,
  p_input_hash text,
  p_charged_until timestamptz
)
  returns uuid
  language plpgsql
  volatile
  set search_path = ''
as $$
declare
  v_job bigint;
  v_id  uuid;
begin
  v_job := public.enqueue_job('ai.analyze', p_payload, pg_catalog.now(), 0, p_job_key, 3);
  select (j.payload ->> 'analysis_id')::uuid into v_id
    from public.background_jobs as j
   where j.id = v_job;
  if v_id = (p_payload ->> 'analysis_id')::uuid then
    insert into public.analyses
      (id, user_id, status, analysis_type, input_kind, input_path, input_hash, result, charged_until)
    values (v_id, (p_payload ->> 'user_id')::uuid, 'pending', p_payload ->> 'analysis_type', p_input_kind,
            p_input_path, p_input_hash, null, p_charged_until);
  end if;
  return v_id;
end
$$;
comment on function public.enqueue_background_analysis(text, jsonb, text, text, text, timestamptz) is
  'Stores a pending analysis (id, user and type from p_payload) and queues its ai.analyze job (3 attempts) under '
  'p_job_key; returns the analysis id the key stands for, which is another request''s when its job came first.';
revoke execute on function public.enqueue_background_analysis(text, jsonb, text, text, text, timestamptz)
  from public, anon, authenticated;
grant execute on function public.enqueue_background_analysis(text, jsonb, text, text, text, timestamptz)
  to service_role;
