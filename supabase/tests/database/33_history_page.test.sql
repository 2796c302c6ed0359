-- History pages (20261206005200): analyses_page, chat_messages_page and activities_page are one
-- implementation, public.history_page, and answer what it answers for their table.
begin;
create extension if not exists pgtap with schema extensions;
set local client_min_messages = warning;

select plan(8);

insert into auth.users (id, email) values ('a3300000-0000-4000-8000-000000000001', 'pages@example.test');
insert into public.analyses (user_id, created_at, analysis_type, result)
select 'a3300000-0000-4000-8000-000000000001', now() - g * interval '1 minute', 'caption', '{}'
  from generate_series(1, 5) as g;
insert into public.chat_messages (user_id, conversation_id, role, content, created_at)
select 'a3300000-0000-4000-8000-000000000001', 'c3300000-0000-4000-8000-000000000001', 'user', 'hi',
       now() - g * interval '1 minute'
  from generate_series(1, 4) as g;
insert into public.chat_messages (user_id, conversation_id, role, content)
values ('a3300000-0000-4000-8000-000000000001', gen_random_uuid(), 'user', 'elsewhere');
insert into public.activities (user_id, kind, created_at)
select 'a3300000-0000-4000-8000-000000000001', 'sign_in', now() - g * interval '1 minute'
  from generate_series(1, 3) as g;

select results_eq(
  $$select * from public.analyses_page('a3300000-0000-4000-8000-000000000001', null, null, 2)$$,
  $$select * from public.history_page('analyses', 'a3300000-0000-4000-8000-000000000001', null, null, 2)$$,
  'analyses_page is history_page over analyses'
);
select results_eq(
  $$select * from public.chat_messages_page('a3300000-0000-4000-8000-000000000001', null, null, 10,
                                              'c3300000-0000-4000-8000-000000000001')$$,
  $$select * from public.history_page('chat_messages', 'a3300000-0000-4000-8000-000000000001', null, null, 10,
                                        'c3300000-0000-4000-8000-000000000001')$$,
  'chat_messages_page is history_page over chat_messages'
);
select results_eq(
  $$select * from public.activities_page('a3300000-0000-4000-8000-000000000001')$$,
  $$select * from public.history_page('activities', 'a3300000-0000-4000-8000-000000000001', null, null, 20)$$,
  'activities_page is history_page over activities'
);

select is(
  (select array_agg(k order by k)
     from public.analyses_page('a3300000-0000-4000-8000-000000000001') as p,
          jsonb_object_keys(p.items -> 0) as k),
  array['analysis_type', 'cached', 'created_at', 'id', 'input_kind', 'input_path', 'model', 'result', 'status'],
  'an analysis item has the fields of analyses_in_window'
);
select is(
  (select jsonb_array_length(items)
     from public.chat_messages_page('a3300000-0000-4000-8000-000000000001', null, null, 20,
                                    'c3300000-0000-4000-8000-000000000001')),
  4,
  'a conversation''s page holds only that conversation''s messages'
);
select is(
  (select array_agg(k order by k)
     from public.activities_page('a3300000-0000-4000-8000-000000000001') as p,
          jsonb_object_keys(p.items -> 0) as k),
  array['created_at', 'detail', 'id', 'kind'],
  'an activity item has the fields of activities_in_window'
);

select throws_ok(
  $$select * from public.history_page('profiles', 'a3300000-0000-4000-8000-000000000001', null, null, 20)$$,
  '22023', null,
  'history_page reads only the three event tables'
);
select ok(
  not has_function_privilege('anon', 'public.history_page(text, uuid, timestamptz, uuid, integer, uuid)', 'EXECUTE'),
  'anon cannot call history_page'
);

select * from finish();
rollback;
