-- Weekly recommendations (20261206007300): at Monday 09:00 in a user's time zone, users active
-- in the last 14 days with at least 3 analyses are queued, 500 to an ai.recommendations job;
-- others are not; owners alone read their recommendations.
begin;
create extension if not exists pgtap with schema extensions;

select plan(6);

-- Only this file's users are active (rolled back at the end).
update public.profiles set last_active_at = null;
delete from public.background_jobs where type = 'ai.recommendations';

insert into auth.users (id, email)
select ('a7000000-0000-4000-8000-' || lpad(to_hex(g), 12, '0'))::uuid, 'weekly-' || g || '@example.test'
  from generate_series(1, 503) as g;
-- 501 in Berlin, active, 3 analyses each; #502 in Berlin with 2 analyses; #503 in Tokyo.
update public.profiles
   set last_active_at = '2026-12-05T12:00:00Z',
       settings = case when id = 'a7000000-0000-4000-8000-0000000001f7'
                       then '{"timezone":"Asia/Tokyo"}'::jsonb
                       else '{"timezone":"Europe/Berlin"}'::jsonb end
 where id::text like 'a7000000-%';
insert into public.analyses (user_id, created_at, analysis_type, result)
select p.id, '2026-12-04T10:00:00Z', 'clarity', '{"summary":"s","scores":{},"findings":[],"recommendations":[]}'
  from public.profiles as p, generate_series(1, 3) as n
 where p.id::text like 'a7000000-%'
   and not (p.id = 'a7000000-0000-4000-8000-0000000001f6' and n = 3);

select is(public.enqueue_weekly_recommendations('2026-12-07T08:30:00Z'), 2,
  'at 09:30 on Monday in Berlin, 501 users make two jobs');
select results_eq(
  $$select jsonb_array_length(payload -> 'user_ids') from public.background_jobs
     where type = 'ai.recommendations' and payload ->> 'week' = '2026-12-07'
       and payload -> 'user_ids' ->> 0 like 'a7000000-%' order by 1 desc$$,
  $$values (500), (1)$$, 'of 500 users and of 1');
select is((select count(*)::int from public.background_jobs
            where type = 'ai.recommendations' and payload -> 'user_ids' ? 'a7000000-0000-4000-8000-0000000001f6'), 0,
  'a user with two analyses is not queued');
select is((select count(*)::int from public.background_jobs
            where type = 'ai.recommendations' and payload -> 'user_ids' ? 'a7000000-0000-4000-8000-0000000001f7'), 0,
  'nor one whose Monday 09:00 has not come');
select is(public.enqueue_weekly_recommendations('2026-12-07T08:30:00Z'), 2,
  'running the hour again finds the same jobs');

insert into public.recommendations (user_id, week, summary, items, model, analyses_count)
values ('a7000000-0000-4000-8000-000000000001', '2026-12-07', 'mine', '[]', 'm', 3);
set local role authenticated;
select set_config('request.jwt.claims', '{"sub":"a7000000-0000-4000-8000-000000000002","role":"authenticated"}', true);
select is((select count(*)::int from public.recommendations), 0, 'nobody reads another user''s recommendations');

select * from finish();
rollback;
