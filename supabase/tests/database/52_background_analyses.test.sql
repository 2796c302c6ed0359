-- Background analyses (20261206007200): a pending analysis and its job are queued together,
-- once per key; a job that ends dead fails its analysis and refunds its unit exactly once,
-- however often it is made dead; completion is once and queues analysis.ready.
begin;
create extension if not exists pgtap with schema extensions;

select plan(8);

insert into auth.users (id, email) values ('e0000000-0000-4000-8000-00000000000a', 'bg@example.test');
select public.increment_usage_if_allowed('e0000000-0000-4000-8000-00000000000a', 2);

select is(public.enqueue_background_analysis('k1',
  '{"analysis_id":"e1000000-0000-4000-8000-000000000001","user_id":"e0000000-0000-4000-8000-00000000000a","analysis_type":"t"}',
  'text', null, repeat('a', 64),
  (select period_resets_at from public.current_usage('e0000000-0000-4000-8000-00000000000a'))),
  'e1000000-0000-4000-8000-000000000001'::uuid, 'the first request owns its analysis');
select is(public.enqueue_background_analysis('k1',
  '{"analysis_id":"e1000000-0000-4000-8000-000000000002","user_id":"e0000000-0000-4000-8000-00000000000a","analysis_type":"t"}',
  'text', null, repeat('a', 64), null),
  'e1000000-0000-4000-8000-000000000001'::uuid, 'a twin with the same key gets the first one''s analysis');
select is((select count(*)::int from public.analyses where user_id = 'e0000000-0000-4000-8000-00000000000a'), 1,
  'and stores nothing');

update public.background_jobs set status = 'running', attempts = 3, locked_by = 'w', locked_until = now() - interval '1 s'
 where idempotency_key = 'k1';
select public.claim_jobs('other', 10, 60, array['ai.analyze']);
select results_eq(
  $$select status, refunded_at is not null from public.analyses where id = 'e1000000-0000-4000-8000-000000000001'$$,
  $$values ('failed', true)$$, 'a job whose last lock expired is dead, and its analysis failed');
select is((select usage_count from public.profiles where id = 'e0000000-0000-4000-8000-00000000000a'), 1,
  'its unit is refunded');
select is(public.fail_background_analysis('e1000000-0000-4000-8000-000000000001'), false,
  'failing it again changes nothing');
select is((select usage_count from public.profiles where id = 'e0000000-0000-4000-8000-00000000000a'), 1,
  'and refunds nothing more');
select is(public.complete_background_analysis('e1000000-0000-4000-8000-000000000001',
  '{"summary":"late","scores":{},"findings":[],"recommendations":[]}', 'm'), false,
  'a late result of a failed analysis is not stored');

select * from finish();
rollback;
