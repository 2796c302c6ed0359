-- Event tables (20261123000400): monthly range partitions on created_at, a default partition,
-- the per-user indexes, and who may read what: a user only their own rows, anon nothing, nobody
-- but the owner any partition directly.
begin;
create extension if not exists pgtap with schema extensions;

select plan(91);

-- ---------------------------------------------------------------------------------------------
-- Shape: partitioned by range on created_at, primary key (id, created_at), default partition
-- ---------------------------------------------------------------------------------------------
select is_partitioned('public', t, format('%s is partitioned', t))
from unnest(array['analyses', 'chat_messages', 'activities', 'api_metrics']) as t;

select is(
  array(select pg_get_partkeydef(format('public.%I', t)::regclass)
        from unnest(array['analyses', 'chat_messages', 'activities', 'api_metrics']) as t),
  array['RANGE (created_at)', 'RANGE (created_at)', 'RANGE (created_at)', 'RANGE (created_at)'],
  'every event table is partitioned by RANGE (created_at)'
);

select col_is_pk('public', t, array['id', 'created_at'], format('%s primary key is (id, created_at)', t))
from unnest(array['analyses', 'chat_messages', 'activities', 'api_metrics']) as t;

select is(
  (select pg_get_expr(c.relpartbound, c.oid) from pg_class as c
   where c.oid = format('public.%I', t || '_default')::regclass
     and c.relispartition
     and exists (select 1 from pg_inherits as i
                 where i.inhrelid = c.oid and i.inhparent = format('public.%I', t)::regclass)),
  'DEFAULT',
  format('%s_default is the default partition of %s', t, t)
)
from unnest(array['analyses', 'chat_messages', 'activities', 'api_metrics']) as t;

select ok(
  (select count(*) from pg_inherits where inhparent = format('public.%I', t)::regclass) >= 2,
  format('%s has monthly partitions besides the default one', t)
)
from unnest(array['analyses', 'chat_messages', 'activities', 'api_metrics']) as t;

-- Columns worth pinning down.
select col_type_is('public', 'analyses', 'id', 'uuid', 'analyses.id is a uuid');
select col_default_is('public', 'analyses', 'id', 'gen_random_uuid()', 'analyses.id defaults to gen_random_uuid()');
select col_is_null('public', 'analyses', 'result', 'analyses.result may be null: a pending or failed analysis has none (20261206007200)');
select col_default_is('public', 'analyses', 'cached', 'false', 'analyses.cached defaults to false');
select col_type_is('public', 'api_metrics', 'id', 'bigint', 'api_metrics.id is a bigint');
select is(
  (select attidentity from pg_attribute where attrelid = 'public.api_metrics'::regclass and attname = 'id'),
  'a'::"char",
  'api_metrics.id is GENERATED ALWAYS AS IDENTITY'
);
select col_is_null('public', 'api_metrics', 'user_id', 'api_metrics.user_id is optional');

-- Foreign keys: the user's tables cascade from auth.users; api_metrics has none on purpose.
select fk_ok('public', t, 'user_id', 'auth', 'users', 'id', format('%s.user_id references auth.users(id)', t))
from unnest(array['analyses', 'chat_messages', 'activities']) as t;
select is(
  array(select c.confdeltype::text from pg_constraint as c
        where c.contype = 'f' and c.confrelid = 'auth.users'::regclass
          and c.conrelid in ('public.analyses'::regclass, 'public.chat_messages'::regclass, 'public.activities'::regclass)
          and c.conparentid = 0
        order by c.conrelid::regclass::text),
  array['c', 'c', 'c'],
  'the three user tables are ON DELETE CASCADE from auth.users'
);
select col_isnt_fk('public', 'api_metrics', 'user_id', 'api_metrics.user_id is not a foreign key (metrics outlive accounts)');

-- ---------------------------------------------------------------------------------------------
-- Indexes: partitioned (defined on the parent), present on every partition
-- ---------------------------------------------------------------------------------------------
select has_index('public', 'analyses', 'analyses_user_id_created_at_idx', array['user_id', 'created_at', 'id']);
select has_index('public', 'chat_messages', 'chat_messages_user_id_created_at_idx', array['user_id', 'created_at', 'id']);
select has_index('public', 'activities', 'activities_user_id_created_at_idx', array['user_id', 'created_at', 'id']);
select has_index('public', 'chat_messages', 'chat_messages_conversation_id_created_at_idx', array['conversation_id', 'created_at', 'id']);
select has_index('public', 'api_metrics', 'api_metrics_user_id_created_at_idx', array['user_id', 'created_at']);
select has_index('public', 'api_metrics', 'api_metrics_function_name_created_at_idx', array['function_name', 'created_at']);
select has_index('public', 'api_metrics', 'api_metrics_created_at_idx', array['created_at']);

select is(
  (select pg_get_indexdef(format('public.%I', i)::regclass) ~ format('ON ONLY public\.%s USING btree \(user_id, created_at DESC', t)),
  true,
  format('%s is a partitioned btree index on (user_id, created_at desc ...)', i)
)
from (values ('analyses', 'analyses_user_id_created_at_idx'),
             ('chat_messages', 'chat_messages_user_id_created_at_idx'),
             ('activities', 'activities_user_id_created_at_idx'),
             ('api_metrics', 'api_metrics_user_id_created_at_idx')) as x(t, i);

select is(
  (select count(*) from pg_inherits where inhparent = format('public.%I', i)::regclass),
  (select count(*) from pg_inherits where inhparent = format('public.%I', t)::regclass),
  format('%s exists on every partition of %s', i, t)
)
from (values ('analyses', 'analyses_user_id_created_at_idx'),
             ('chat_messages', 'chat_messages_user_id_created_at_idx'),
             ('activities', 'activities_user_id_created_at_idx'),
             ('api_metrics', 'api_metrics_function_name_created_at_idx')) as x(t, i);

-- ---------------------------------------------------------------------------------------------
-- Row level security, policies and privileges
-- ---------------------------------------------------------------------------------------------
select is(
  (select relrowsecurity from pg_class where oid = format('public.%I', t)::regclass), true,
  format('%s has row level security enabled', t)
)
from unnest(array['analyses', 'chat_messages', 'activities', 'api_metrics']) as t;

select policies_are('public', 'analyses', array['Users can read their own analyses']);
select policies_are('public', 'chat_messages', array['Users can read their own chat messages']);
select policies_are('public', 'activities', array['Users can read their own activities']);
select policies_are('public', 'api_metrics', array[]::name[], 'api_metrics has no policy (service_role only)');
select policy_cmd_is('public', 'analyses', 'Users can read their own analyses', 'select', 'the analyses policy is for SELECT only');
select policy_roles_are('public', 'analyses', 'Users can read their own analyses', array['authenticated']);

select table_privs_are('public', t, 'anon', array[]::text[], format('anon has no privilege on %s', t))
from unnest(array['analyses', 'chat_messages', 'activities', 'api_metrics']) as t;
select table_privs_are('public', t, 'authenticated', array['SELECT'], format('authenticated may only SELECT %s', t))
from unnest(array['analyses', 'chat_messages', 'activities']) as t;
select table_privs_are('public', 'api_metrics', 'authenticated', array[]::text[], 'authenticated has no privilege on api_metrics');
select table_privs_are('public', 'api_metrics', 'service_role', array['SELECT', 'INSERT', 'DELETE'],
  'service_role may read, write and delete api_metrics');

-- No partition is reachable directly by an API role, and each has RLS on with no policy.
select is_empty(
  $$select c.relname
    from pg_inherits as i
    join pg_class as c on c.oid = i.inhrelid
    cross join unnest(array['anon', 'authenticated', 'service_role']) as r(role)
    where i.inhparent in ('public.analyses'::regclass, 'public.chat_messages'::regclass,
                          'public.activities'::regclass, 'public.api_metrics'::regclass)
      and has_table_privilege(r.role, c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')$$,
  'no API role has any privilege on any partition'
);
select is_empty(
  $$select c.relname
    from pg_inherits as i
    join pg_class as c on c.oid = i.inhrelid
    where i.inhparent in ('public.analyses'::regclass, 'public.chat_messages'::regclass,
                          'public.activities'::regclass, 'public.api_metrics'::regclass)
      and not c.relrowsecurity$$,
  'every partition has row level security enabled'
);
select ok(
  not has_sequence_privilege('anon', 'public.api_metrics_id_seq', 'USAGE, SELECT, UPDATE')
    and not has_sequence_privilege('authenticated', 'public.api_metrics_id_seq', 'USAGE, SELECT, UPDATE'),
  'anon and authenticated have no privilege on the api_metrics identity sequence'
);

-- ---------------------------------------------------------------------------------------------
-- Behaviour with data
-- ---------------------------------------------------------------------------------------------
insert into auth.users (id, email) values
  ('a0000000-0000-4000-8000-000000000001', 'event-a@example.test'),
  ('b0000000-0000-4000-8000-000000000002', 'event-b@example.test');

insert into public.analyses (user_id, analysis_type, input_kind, input_hash, result, model) values
  ('a0000000-0000-4000-8000-000000000001', 'caption', 'text', repeat('a', 64), '{"text":"a1"}', 'm'),
  ('a0000000-0000-4000-8000-000000000001', 'caption', 'image_url', null, '{"text":"a2"}', 'm'),
  ('b0000000-0000-4000-8000-000000000002', 'caption', 'text', null, '{"text":"b1"}', 'm');
insert into public.chat_messages (user_id, conversation_id, role, content) values
  ('a0000000-0000-4000-8000-000000000001', 'c0000000-0000-4000-8000-00000000000a', 'user', 'hi'),
  ('b0000000-0000-4000-8000-000000000002', 'c0000000-0000-4000-8000-00000000000b', 'user', 'hello'),
  ('b0000000-0000-4000-8000-000000000002', 'c0000000-0000-4000-8000-00000000000b', 'assistant', 'hey');
insert into public.activities (user_id, kind) values
  ('a0000000-0000-4000-8000-000000000001', 'sign_in'),
  ('b0000000-0000-4000-8000-000000000002', 'sign_in');
insert into public.api_metrics (function_name, method, status, duration_ms, user_id, request_id) values
  ('analyze', 'POST', 200, 812.5, 'a0000000-0000-4000-8000-000000000001', 'req-1'),
  ('analyze', 'POST', 200, 640, 'b0000000-0000-4000-8000-000000000002', 'req-2'),
  ('health', 'GET', 200, 1.2, null, 'req-3');

select is(
  (select tableoid::regclass::text from public.analyses where result ->> 'text' = 'a1'),
  'analyses_p' || to_char(now() at time zone 'UTC', 'YYYYMM'),
  'a row written now lands in this month''s partition'
);
select throws_ok(
  $$insert into public.analyses (user_id, analysis_type, input_hash, result)
    values ('a0000000-0000-4000-8000-000000000001', 'caption', 'not-a-hash', '{}')$$,
  '23514', null,
  'input_hash must be a SHA-256 in lowercase hex'
);
select throws_ok(
  $$insert into public.analyses (user_id, analysis_type, input_kind, result)
    values ('a0000000-0000-4000-8000-000000000001', 'caption', 'video', '{}')$$,
  '23514', null,
  'input_kind must be text, image_url, image_base64 or storage'
);
select throws_ok(
  $$insert into public.chat_messages (user_id, conversation_id, role, content)
    values ('a0000000-0000-4000-8000-000000000001', gen_random_uuid(), 'system', 'x')$$,
  '23514', null,
  'chat_messages.role must be user or assistant'
);
select throws_ok(
  $$insert into public.analyses (user_id, analysis_type, result)
    values ('dead0000-0000-4000-8000-000000000000', 'caption', '{}')$$,
  '23503', null,
  'analyses.user_id must be an existing user'
);

-- As user A.
set local role authenticated;
select set_config('request.jwt.claims',
  '{"sub":"a0000000-0000-4000-8000-000000000001","role":"authenticated"}', true);

select results_eq(
  $$select result ->> 'text' from public.analyses order by 1$$,
  $$values ('a1'), ('a2')$$,
  'a user reads only their own analyses'
);
select results_eq(
  $$select content from public.chat_messages$$,
  $$values ('hi')$$,
  'a user reads only their own chat messages'
);
select results_eq(
  $$select user_id from public.activities$$,
  $$values ('a0000000-0000-4000-8000-000000000001'::uuid)$$,
  'a user reads only their own activities'
);
select is_empty(
  $$select 1 from public.analyses where user_id = 'b0000000-0000-4000-8000-000000000002'$$,
  'asking for another user''s analyses by id returns nothing'
);
select throws_ok(
  $$select * from public.api_metrics$$,
  '42501', null,
  'a user cannot read api_metrics'
);
select throws_ok(
  $$insert into public.analyses (user_id, analysis_type, result)
    values ('a0000000-0000-4000-8000-000000000001', 'caption', '{}')$$,
  '42501', null,
  'a user cannot insert analyses (the functions write them)'
);
select throws_ok(
  $$delete from public.chat_messages$$,
  '42501', null,
  'a user cannot delete chat messages directly'
);
select throws_ok(
  $$truncate public.activities$$,
  '42501', null,
  'a user cannot truncate an event table'
);
select throws_ok(
  format('select * from public.%I', 'analyses_p' || to_char(now() at time zone 'UTC', 'YYYYMM')),
  '42501', null,
  'a user cannot read a monthly partition directly (which would bypass the parent''s policy)'
);
select throws_ok(
  $$select * from public.chat_messages_default$$,
  '42501', null,
  'a user cannot read the default partition directly'
);

-- As user B: the mirror image.
select set_config('request.jwt.claims',
  '{"sub":"b0000000-0000-4000-8000-000000000002","role":"authenticated"}', true);
select results_eq(
  $$select content from public.chat_messages order by content$$,
  $$values ('hello'), ('hey')$$,
  'with another user''s claims, that user''s rows and only those'
);

-- As anon.
reset role;
set local role anon;
select set_config('request.jwt.claims', '{"role":"anon"}', true);
select throws_ok($$select * from public.analyses$$, '42501', null, 'anon cannot read analyses');
select throws_ok($$select * from public.chat_messages$$, '42501', null, 'anon cannot read chat_messages');
select throws_ok(
  format('select * from public.%I', 'activities_p' || to_char(now() at time zone 'UTC', 'YYYYMM')),
  '42501', null,
  'anon cannot read a partition directly'
);

-- As service_role (what the edge functions use).
reset role;
set local role service_role;
select set_config('request.jwt.claims', '{"role":"service_role"}', true);
select is((select count(*) from public.analyses where user_id in ('a0000000-0000-4000-8000-000000000001',
                                                                  'b0000000-0000-4000-8000-000000000002')),
          3::bigint, 'service_role reads every user''s analyses');
select lives_ok(
  $$insert into public.analyses (user_id, analysis_type, result)
    values ('b0000000-0000-4000-8000-000000000002', 'caption', '{"text":"b2"}')$$,
  'service_role writes analyses'
);
select is((select count(*) from public.api_metrics where request_id in ('req-1', 'req-2', 'req-3')), 3::bigint,
  'service_role reads api_metrics');
select lives_ok(
  $$insert into public.api_metrics (function_name, method, status, duration_ms) values ('health', 'GET', 200, 0.8)$$,
  'service_role writes api_metrics (the identity needs no sequence privilege)'
);
reset role;

-- Deleting a user removes their rows (every month) but keeps their request metrics.
delete from auth.users where id = 'b0000000-0000-4000-8000-000000000002';
select is(
  (select count(*) from public.analyses where user_id = 'b0000000-0000-4000-8000-000000000002')
  + (select count(*) from public.chat_messages where user_id = 'b0000000-0000-4000-8000-000000000002')
  + (select count(*) from public.activities where user_id = 'b0000000-0000-4000-8000-000000000002'),
  0::bigint,
  'deleting a user cascades to their analyses, messages and activities'
);
select is(
  (select count(*) from public.api_metrics where user_id = 'b0000000-0000-4000-8000-000000000002'),
  1::bigint,
  'deleting a user keeps their api_metrics rows'
);

select * from finish();
rollback;
