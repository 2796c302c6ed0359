-- Sync markers (20261123000510): every statement that writes a user's analyses or chat
-- messages moves that user's marker once, whoever writes them; nobody but service_role sees it.
begin;
create extension if not exists pgtap with schema extensions;

select plan(19);

insert into auth.users (id, email) values
  ('d2500000-0000-4000-8000-000000000001', 'marker-a@example.test'),
  ('d2500000-0000-4000-8000-000000000002', 'marker-b@example.test');

create temporary table a on commit drop as select 'd2500000-0000-4000-8000-000000000001'::uuid as id;
create temporary table b on commit drop as select 'd2500000-0000-4000-8000-000000000002'::uuid as id;
grant select on a, b to public;

-- ---------------------------------------------------------------------------------------------
-- Access
-- ---------------------------------------------------------------------------------------------
select ok(
  (select relrowsecurity from pg_class where oid = 'public.sync_markers'::regclass),
  'sync_markers has row level security'
);
select policies_are('public', 'sync_markers', array[]::name[], 'sync_markers has no policies');
select is_empty(
  $$select r || ' ' || p
      from unnest(array['anon', 'authenticated']) as r,
           unnest(array['select', 'insert', 'update', 'delete', 'truncate', 'references', 'trigger']) as p
     where has_table_privilege(r, 'public.sync_markers', p)$$,
  'anon and authenticated have no privilege on sync_markers'
);
select ok(
  not (select prosecdef from pg_proc where oid = 'public.bump_sync_markers()'::regprocedure),
  'the trigger function is security invoker'
);
select is_empty(
  $$select r from unnest(array['anon', 'authenticated', 'service_role']) as r
     where has_function_privilege(r, 'public.bump_sync_markers()', 'execute')$$,
  'nobody may call the trigger function directly'
);
select is(
  (select array_agg(tgrelid::regclass::text || ' ' || tgname order by tgrelid::regclass::text, tgname)
     from pg_trigger
    where tgfoid = 'public.bump_sync_markers()'::regprocedure
      and tgrelid in ('public.analyses'::regclass, 'public.chat_messages'::regclass)),
  array['analyses analyses_bump_sync_markers_on_delete', 'analyses analyses_bump_sync_markers_on_insert',
        'analyses analyses_bump_sync_markers_on_update',
        'chat_messages chat_messages_bump_sync_markers_on_delete',
        'chat_messages chat_messages_bump_sync_markers_on_insert',
        'chat_messages chat_messages_bump_sync_markers_on_update'],
  'both partitioned tables carry the insert, update and delete triggers'
);

-- ---------------------------------------------------------------------------------------------
-- Moves, as the service role writes
-- ---------------------------------------------------------------------------------------------
set local role service_role;

select is_empty(
  $$select 1 from public.sync_markers where user_id = (select id from a)$$,
  'a user with no writes yet has no marker'
);
insert into public.analyses (user_id, analysis_type, result)
select (select id from a), 'caption', '{}' from generate_series(1, 3);
select is(
  (select version from public.sync_markers where user_id = (select id from a)), 1::bigint,
  'a first statement of three rows makes the marker, at version 1'
);
insert into public.chat_messages (user_id, conversation_id, role, content)
values ((select id from a), gen_random_uuid(), 'user', 'hi'), ((select id from a), gen_random_uuid(), 'assistant', 'hello');
select is(
  (select version from public.sync_markers where user_id = (select id from a)), 2::bigint,
  'a statement writing two messages moves it once'
);
update public.analyses set model = 'changed' where user_id = (select id from a);
select is(
  (select version from public.sync_markers where user_id = (select id from a)), 3::bigint,
  'an update moves it'
);
delete from public.chat_messages where user_id = (select id from a) and role = 'user';
select is(
  (select version from public.sync_markers where user_id = (select id from a)), 4::bigint,
  'a delete moves it'
);
update public.analyses set model = 'none' where false;
select is(
  (select version from public.sync_markers where user_id = (select id from a)), 4::bigint,
  'a statement that changes no row moves nothing'
);
insert into public.analyses (user_id, analysis_type, result) values ((select id from b), 'caption', '{}');
select results_eq(
  $$select user_id, version from public.sync_markers where user_id in ((select id from a), (select id from b))
     order by user_id$$,
  $$values ((select id from a), 4::bigint), ((select id from b), 1::bigint)$$,
  'another user''s write moves only their own marker'
);
insert into public.analyses (user_id, analysis_type, result)
values ((select id from a), 'caption', '{}'), ((select id from b), 'caption', '{}');
select results_eq(
  $$select user_id, version from public.sync_markers where user_id in ((select id from a), (select id from b))
     order by user_id$$,
  $$values ((select id from a), 5::bigint), ((select id from b), 2::bigint)$$,
  'a statement writing for two users moves both, once each'
);
select isnt(
  (select changed_at from public.sync_markers where user_id = (select id from a)), null,
  'the marker records when it last moved'
);

reset role;

-- ---------------------------------------------------------------------------------------------
-- Deleting the account
-- ---------------------------------------------------------------------------------------------
select lives_ok(
  $$delete from auth.users where id = (select id from a)$$,
  'deleting a user with rows in both tables cascades without tripping over the marker'
);
select is_empty(
  $$select 1 from public.sync_markers where user_id = (select id from a)$$,
  'the marker goes with the account'
);
select is(
  (select version from public.sync_markers where user_id = (select id from b)), 2::bigint,
  'the other user''s marker is untouched'
);

-- ---------------------------------------------------------------------------------------------
-- Users see nothing of it
-- ---------------------------------------------------------------------------------------------
set local role authenticated;
select set_config('request.jwt.claims', '{"sub":"d2500000-0000-4000-8000-000000000002","role":"authenticated"}', true);
select throws_ok(
  $$select * from public.sync_markers$$,
  '42501', null,
  'a signed-in user cannot read even their own marker'
);
reset role;

select * from finish();
rollback;
