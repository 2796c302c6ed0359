-- The job queue: enqueue idempotency, claim order, completion by the lock holder only, retries
-- with a growing backoff ending in `dead`, expired locks, and the purge. Concurrent claimers are
-- proven in tests/job_queue_test.ts.
begin;
create extension if not exists pgtap with schema extensions;

select plan(45);

-- A queue with only this file's jobs (rolled back at the end).
delete from public.background_jobs;

select has_table('public', 'background_jobs', 'public.background_jobs exists');
select ok(
  exists (select from pg_indexes where schemaname = 'public' and tablename = 'background_jobs'
                                   and indexname = 'background_jobs_claim_idx'
                                   and indexdef like '%(priority, run_at, id)%'),
  'an index supports the claim order (priority, run_at, id)'
);

-- ---------------------------------------------------------------------------------------------
-- enqueue_job
-- ---------------------------------------------------------------------------------------------
create temporary table ids (name text primary key, id bigint) on commit drop;

insert into ids values ('plain', public.enqueue_job('send_email', '{"to":"a@example.test"}'));
select results_eq(
  $$select type, payload, priority, run_at = now(), attempts, max_attempts, status, locked_by, finished_at
      from public.background_jobs where id = (select id from ids where name = 'plain')$$,
  $$values ('send_email'::text, '{"to":"a@example.test"}'::jsonb, 0, true, 0, 5, 'queued'::text, null::text, null::timestamptz)$$,
  'enqueue_job adds a queued job with the defaults'
);

insert into ids values ('keyed', public.enqueue_job('charge', '{}', p_idempotency_key => 'order-42'));
select is(
  public.enqueue_job('charge', '{"again":true}', p_idempotency_key => 'order-42'),
  (select id from ids where name = 'keyed'),
  'a second enqueue with the same idempotency key returns the existing job id'
);
select is(
  (select count(*) from public.background_jobs where idempotency_key = 'order-42'), 1::bigint,
  'and adds no duplicate'
);
select is(
  (select payload from public.background_jobs where idempotency_key = 'order-42'), '{}'::jsonb,
  'and leaves the existing job as it was'
);
select isnt(
  public.enqueue_job('charge', '{}', p_idempotency_key => 'order-43'),
  (select id from ids where name = 'keyed'),
  'another key makes another job'
);
select throws_ok($$select public.enqueue_job('')$$, '22023', null, 'an empty type is rejected');
select throws_ok($$select public.enqueue_job('x', p_max_attempts => 0)$$, '22023', null, 'max_attempts below 1 is rejected');
select throws_ok($$select public.enqueue_job('x', p_idempotency_key => '')$$, '22023', null, 'an empty idempotency key is rejected');

-- ---------------------------------------------------------------------------------------------
-- Claim order
-- ---------------------------------------------------------------------------------------------
delete from public.background_jobs;
delete from ids;
insert into ids values
  ('low-old',   public.enqueue_job('t', p_priority => 5,  p_run_at => now() - interval '1 hour')),
  ('mid-new',   public.enqueue_job('t', p_priority => 0,  p_run_at => now() - interval '1 minute')),
  ('mid-old',   public.enqueue_job('t', p_priority => 0,  p_run_at => now() - interval '1 hour')),
  ('urgent',    public.enqueue_job('t', p_priority => -1, p_run_at => now())),
  ('future',    public.enqueue_job('t', p_priority => -9, p_run_at => now() + interval '1 minute'));

select results_eq(
  $$select c.id from public.claim_jobs('w1', 2, 60) as c$$,
  $$select id from ids where name in ('urgent', 'mid-old') order by name = 'mid-old'$$,
  'claims go to the lowest priority number first, then the earliest run_at'
);
select results_eq(
  $$select c.id from public.claim_jobs('w1', 10, 60) as c$$,
  $$select id from ids where name in ('mid-new', 'low-old') order by name = 'low-old'$$,
  'the next claim takes the rest in order and skips jobs that are not due yet'
);
select results_eq(
  $$select status, attempts, locked_by, locked_until = now() + interval '60 seconds'
      from public.background_jobs where id = (select id from ids where name = 'urgent')$$,
  $$values ('running'::text, 1, 'w1'::text, true)$$,
  'a claimed job is running, locked by its worker until the lock expires, with one attempt'
);
select is_empty(
  $$select * from public.claim_jobs('w2', 10, 60)$$,
  'running jobs with a live lock are not claimed again'
);
-- A worker may claim only the types it handles.
insert into ids values
  ('email', public.enqueue_job('send_email', p_priority => 1)),
  ('thumb', public.enqueue_job('make_thumbnail', p_priority => 0));
select results_eq(
  $$select c.id from public.claim_jobs('mailer', 10, 60, array['send_email']) as c$$,
  $$select id from ids where name = 'email'$$,
  'a claim with p_types takes only jobs of those types'
);
select results_eq(
  $$select c.id from public.claim_jobs('any', 10, 60) as c$$,
  $$select id from ids where name = 'thumb'$$,
  'a claim without p_types takes any type'
);
select throws_ok($$select * from public.claim_jobs('w1', 0, 60)$$, '22023', null, 'a claim limit below 1 is rejected');
select throws_ok($$select * from public.claim_jobs('', 1, 60)$$, '22023', null, 'an empty worker name is rejected');

-- ---------------------------------------------------------------------------------------------
-- Completion
-- ---------------------------------------------------------------------------------------------
select is(
  public.complete_job((select id from ids where name = 'urgent'), 'w2'), false,
  'a worker that does not hold the job cannot complete it'
);
select is(
  public.complete_job((select id from ids where name = 'urgent'), 'w1'), true,
  'the lock holder completes the job'
);
select results_eq(
  $$select status, locked_by, locked_until, finished_at = now()
      from public.background_jobs where id = (select id from ids where name = 'urgent')$$,
  $$values ('succeeded'::text, null::text, null::timestamptz, true)$$,
  'a completed job is succeeded, unlocked, with finished_at'
);
select is(
  public.complete_job((select id from ids where name = 'urgent'), 'w1'), false,
  'a job cannot be completed twice'
);

-- ---------------------------------------------------------------------------------------------
-- Failure: backoff, then dead
-- ---------------------------------------------------------------------------------------------
delete from public.background_jobs;
delete from ids;
insert into ids values ('flaky', public.enqueue_job('t', p_max_attempts => 3));

select lives_ok($$select * from public.claim_jobs('w1', 1, 60)$$, 'attempt 1 is claimed');
select is(
  public.fail_job((select id from ids where name = 'flaky'), 'w2', 'not mine'), null,
  'a worker that does not hold the job cannot fail it'
);
select is(
  public.fail_job((select id from ids where name = 'flaky'), 'w1', 'timeout'), 'failed',
  'failing attempt 1 of 3 leaves the job failed (to be retried)'
);
select results_eq(
  $$select status, run_at - now(), last_error, locked_by, finished_at
      from public.background_jobs where id = (select id from ids where name = 'flaky')$$,
  $$values ('failed'::text, interval '20 seconds', 'timeout'::text, null::text, null::timestamptz)$$,
  'after attempt 1 the job is retried in 20 s (2^1 x 10 s), with the error kept'
);
select is_empty($$select * from public.claim_jobs('w1', 1, 60)$$, 'a failed job is not claimed before its backoff ends');

update public.background_jobs set run_at = now() where id = (select id from ids where name = 'flaky');
select results_eq(
  $$select attempts from public.claim_jobs('w1', 1, 60)$$, $$values (2)$$,
  'once the backoff has passed the failed job is claimed again (attempt 2)'
);
select is(public.fail_job((select id from ids where name = 'flaky'), 'w1', 'timeout again'), 'failed', 'attempt 2 fails');
select is(
  (select run_at - now() from public.background_jobs where id = (select id from ids where name = 'flaky')),
  interval '40 seconds',
  'after attempt 2 the delay has grown to 40 s (2^2 x 10 s)'
);

update public.background_jobs set run_at = now() where id = (select id from ids where name = 'flaky');
select results_eq($$select attempts from public.claim_jobs('w1', 1, 60)$$, $$values (3)$$, 'attempt 3 is claimed');
select is(
  public.fail_job((select id from ids where name = 'flaky'), 'w1', 'gave up'), 'dead',
  'failing the last attempt makes the job dead'
);
select results_eq(
  $$select status, attempts, last_error, locked_by, finished_at = now()
      from public.background_jobs where id = (select id from ids where name = 'flaky')$$,
  $$values ('dead'::text, 3, 'gave up'::text, null::text, true)$$,
  'a dead job keeps its last error and is finished'
);
select is_empty($$select * from public.claim_jobs('w1', 10, 60)$$, 'a dead job is never claimed');

-- The backoff is capped at one hour.
insert into ids values ('stubborn', public.enqueue_job('t', p_max_attempts => 50));
update public.background_jobs set attempts = 11 where id = (select id from ids where name = 'stubborn');
select lives_ok($$select * from public.claim_jobs('w1', 1, 60)$$, 'attempt 12 is claimed');
select is(public.fail_job((select id from ids where name = 'stubborn'), 'w1', 'again'), 'failed', 'attempt 12 fails');
select is(
  (select run_at - now() from public.background_jobs where id = (select id from ids where name = 'stubborn')),
  interval '1 hour',
  'the retry delay never exceeds one hour'
);

-- ---------------------------------------------------------------------------------------------
-- Expired locks
-- ---------------------------------------------------------------------------------------------
delete from public.background_jobs;
delete from ids;
insert into ids values ('slow', public.enqueue_job('t', p_max_attempts => 2));
select lives_ok($$select * from public.claim_jobs('w1', 1, 30)$$, 'w1 claims the job');
-- w1 stalls: its lock runs out.
update public.background_jobs set locked_until = now() - interval '1 second'
 where id = (select id from ids where name = 'slow');
select results_eq(
  $$select id, attempts, locked_by from public.claim_jobs('w2', 1, 30)$$,
  $$select id, 2, 'w2'::text from ids where name = 'slow'$$,
  'a running job whose lock expired is claimed again, by another worker'
);
select is(
  public.complete_job((select id from ids where name = 'slow'), 'w1'), false,
  'the worker that lost the lock can no longer complete the job'
);
-- w2 stalls too, on the last allowed attempt.
update public.background_jobs set locked_until = now() - interval '1 second'
 where id = (select id from ids where name = 'slow');
select is_empty(
  $$select * from public.claim_jobs('w3', 1, 30)$$,
  'a job whose lock expired on its last attempt is not claimed again'
);
select results_eq(
  $$select status, locked_by, finished_at = now(), last_error like '%expired%'
      from public.background_jobs where id = (select id from ids where name = 'slow')$$,
  $$values ('dead'::text, null::text, true, true)$$,
  'it is dead instead, with the expiry as its last error'
);

-- ---------------------------------------------------------------------------------------------
-- Purge
-- ---------------------------------------------------------------------------------------------
delete from public.background_jobs;
delete from ids;
insert into ids values
  ('old-done',  public.enqueue_job('t')),
  ('old-dead',  public.enqueue_job('t')),
  ('new-done',  public.enqueue_job('t')),
  ('queued',    public.enqueue_job('t'));
update public.background_jobs set status = 'succeeded', finished_at = now() - interval '8 days'
 where id = (select id from ids where name = 'old-done');
update public.background_jobs set status = 'dead', finished_at = now() - interval '8 days'
 where id = (select id from ids where name = 'old-dead');
update public.background_jobs set status = 'succeeded', finished_at = now() - interval '1 day'
 where id = (select id from ids where name = 'new-done');
select is(public.purge_finished_jobs(), 2, 'purge deletes succeeded and dead jobs finished over 7 days ago');
select results_eq(
  $$select id from public.background_jobs order by id$$,
  $$select id from ids where name in ('new-done', 'queued') order by id$$,
  'recent and unfinished jobs are kept'
);
select is(public.purge_finished_jobs(interval '1 hour'), 1, 'a shorter retention purges the recent finished job too');

select * from finish();
rollback;
