-- History pagination (20261123000420): newest first by (created_at desc, id desc), keyset
-- continuation without gaps or repeats, at most two monthly partitions per call read through
-- the (user_id, created_at) index, and RLS as the caller.
begin;
create extension if not exists pgtap with schema extensions;
set local client_min_messages = warning;
set local timezone = 'UTC';

select plan(44);

-- ---------------------------------------------------------------------------------------------
-- Data. M is the start of the current UTC month. User A (signed up 6 months ago) has:
--   25 analyses in month M, 2 in M-1 with the SAME created_at, none in M-2 and M-3, 3 in M-4.
--   Users C and D have 1,200 each, hourly from the start of M-1 (so in M-1 and M), which makes
--   the planner's choices those of a real table rather than of a few rows.
-- ---------------------------------------------------------------------------------------------
create temporary table m on commit drop as
select (date_trunc('month', now() at time zone 'UTC')) at time zone 'UTC' as m;

select lives_ok(
  $$select count(*) from public.create_event_partitions_between(
      ((now() at time zone 'UTC') - interval '8 months')::date, (now() at time zone 'UTC')::date)$$,
  'partitions for the last 8 months exist'
);

insert into auth.users (id, email) values
  ('a2000000-0000-4000-8000-000000000001', 'page-a@example.test'),
  ('b2000000-0000-4000-8000-000000000002', 'page-b@example.test'),
  ('c2000000-0000-4000-8000-000000000003', 'page-c@example.test'),
  ('d2000000-0000-4000-8000-000000000004', 'page-d@example.test');
update public.profiles set created_at = (select m from m) - interval '6 months'
where id in ('a2000000-0000-4000-8000-000000000001', 'b2000000-0000-4000-8000-000000000002');

insert into public.analyses (user_id, created_at, analysis_type, input_kind, input_hash, result, model)
select 'a2000000-0000-4000-8000-000000000001', (select m from m) + g * interval '1 minute', 'caption', 'text',
       repeat('0', 64), jsonb_build_object('n', g), 'model-x'
from generate_series(1, 25) as g;
insert into public.analyses (id, user_id, created_at, analysis_type, result) values
  ('a2000000-0000-4000-8000-0000000000f1', 'a2000000-0000-4000-8000-000000000001',
   (select m from m) - interval '10 days', 'caption', '{"n":"tie-low"}'),
  ('a2000000-0000-4000-8000-0000000000f2', 'a2000000-0000-4000-8000-000000000001',
   (select m from m) - interval '10 days', 'caption', '{"n":"tie-high"}');
insert into public.analyses (user_id, created_at, analysis_type, result)
select 'a2000000-0000-4000-8000-000000000001', (select m from m) - interval '4 months' + g * interval '1 day',
       'caption', jsonb_build_object('n', 'old-' || g)
from generate_series(1, 3) as g;
insert into public.analyses (user_id, created_at, analysis_type, result)
select 'b2000000-0000-4000-8000-000000000002', (select m from m) + interval '1 hour', 'caption', '{"n":"b"}';
insert into public.analyses (user_id, created_at, analysis_type, result)
select u, (select m from m) - interval '1 month' + g * interval '1 hour', 'caption', '{}'
from generate_series(1, 1200) as g,
     unnest(array['c2000000-0000-4000-8000-000000000003', 'd2000000-0000-4000-8000-000000000004']::uuid[]) as u;
analyze public.analyses;

-- ---------------------------------------------------------------------------------------------
-- Shape
-- ---------------------------------------------------------------------------------------------
select function_returns('public', 'analyses_page', array['uuid', 'timestamp with time zone', 'uuid', 'integer'], 'setof record');
select function_returns('public', 'chat_messages_page',
  array['uuid', 'timestamp with time zone', 'uuid', 'integer', 'uuid'], 'setof record');
select function_returns('public', 'activities_page', array['uuid', 'timestamp with time zone', 'uuid', 'integer'], 'setof record');

select is(
  (select count(*) from public.analyses_page('a2000000-0000-4000-8000-000000000001')), 1::bigint,
  'a page is exactly one row'
);
select is(
  (select array_agg(k order by k) from public.analyses_page('a2000000-0000-4000-8000-000000000001') as p,
                                     jsonb_object_keys(p.items -> 0) as k),
  array['analysis_type', 'cached', 'created_at', 'id', 'input_kind', 'input_path', 'model', 'result', 'status'],
  'analyses items carry only the fields the app shows (no user_id, no input_hash)'
);

-- ---------------------------------------------------------------------------------------------
-- Walk A's whole history, 20 at a time, following the contract
-- ---------------------------------------------------------------------------------------------
create temporary table pages (
  n int, before_at timestamptz, before_id uuid, items jsonb,
  next_at timestamptz, next_id uuid, has_more boolean
) on commit drop;
do $$
declare
  v_at timestamptz;
  v_id uuid;
  v_n  int := 0;
  r    record;
begin
  loop
    v_n := v_n + 1;
    select * into r from public.analyses_page('a2000000-0000-4000-8000-000000000001', v_at, v_id, 20);
    insert into pages values (v_n, v_at, v_id, r.items, r.next_before_created_at::timestamptz, r.next_before_id, r.has_more);
    exit when not r.has_more or v_n >= 20;
    v_at := r.next_before_created_at;
    v_id := r.next_before_id;
  end loop;
end
$$;

select results_eq(
  $$select n, jsonb_array_length(items), has_more from pages order by n$$,
  $$values (1, 20, true), (2, 7, true), (3, 0, true), (4, 3, true), (5, 0, false)$$,
  'pages: 20 (full), 7 (rest of the window), 0 (empty window), 3, then the end at the sign-up month'
);
select is(
  (select array_agg((i ->> 'id')::uuid order by p.n, o) from pages as p, jsonb_array_elements(p.items) with ordinality as e(i, o)),
  (select array_agg(id order by created_at desc, id desc) from public.analyses
   where user_id = 'a2000000-0000-4000-8000-000000000001'),
  'following the cursors yields every one of A''s analyses exactly once, newest first by (created_at, id)'
);
select is(
  (select (next_at, next_id) from pages where n = 1),
  (select ((items -> 19 ->> 'created_at')::timestamptz, (items -> 19 ->> 'id')::uuid) from pages where n = 1),
  'after a full page the cursor is its last item'
);
select matches(
  (select next_before_created_at from public.analyses_page('a2000000-0000-4000-8000-000000000001')),
  '^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$',
  'the cursor''s created_at is an ISO 8601 UTC string with microseconds (JavaScript Dates would drop them)'
);
select is(
  (select next_before_created_at::timestamptz from public.analyses_page('a2000000-0000-4000-8000-000000000001')),
  (select ((select m from m) + interval '6 minutes')),
  'and it reads back as exactly the instant of the page''s last item'
);
select is(
  (select (next_at, next_id) from pages where n = 2),
  ((select m from m) - interval '1 month', '00000000-0000-0000-0000-000000000000'::uuid),
  'after a short page the cursor is the window''s start, "strictly before" (zero id)'
);
select is(
  (select (next_at, next_id) from pages where n = 5),
  (null::timestamptz, null::uuid),
  'at the end the cursor is NULL'
);
select is(
  (select array_agg(i ->> 'result' order by o) from pages as p, jsonb_array_elements(p.items) with ordinality as e(i, o)
   where p.n = 2 and i -> 'result' ->> 'n' like 'tie%'),
  array['{"n": "tie-high"}', '{"n": "tie-low"}'],
  'rows with the same created_at come in id order (descending), neither lost nor repeated'
);
select is(
  (select items -> 0 -> 'result' ->> 'n' from pages where n = 1), '25',
  'the first page starts with the newest analysis'
);

-- The cursor is exclusive and exact.
select is(
  (select items -> 0 ->> 'id' from public.analyses_page('a2000000-0000-4000-8000-000000000001',
     (select m from m) - interval '10 days', 'a2000000-0000-4000-8000-0000000000f2', 5)),
  'a2000000-0000-4000-8000-0000000000f1',
  'a cursor on the first of two rows with the same created_at continues with the second'
);
select is(
  (select jsonb_array_length(items) from public.analyses_page('a2000000-0000-4000-8000-000000000001',
     (select m from m) - interval '10 days', null, 5)),
  0,
  'p_before_id NULL means strictly before p_before_created_at'
);
select is(
  (select jsonb_array_length(items) from public.analyses_page('a2000000-0000-4000-8000-000000000001', null, null, 1000)),
  27,
  'p_limit is capped (at 100): the whole two-month window, 27 rows, in one page'
);
select is(
  (select jsonb_array_length(items) from public.analyses_page('a2000000-0000-4000-8000-000000000001', null, null, 0)),
  1,
  'p_limit below 1 is raised to 1'
);
select is(
  (select (jsonb_array_length(items), has_more) from public.analyses_page(null)),
  (0, false),
  'a NULL user gets an empty last page'
);

-- ---------------------------------------------------------------------------------------------
-- Bounded work: at most two partitions, through the (user_id, created_at) index
-- ---------------------------------------------------------------------------------------------
create function pg_temp.plan_of(p_query text) returns jsonb language plpgsql as $$
declare
  v_plan jsonb;
begin
  execute 'explain (analyze, costs off, timing off, format json) ' || p_query into v_plan;
  return v_plan;
end
$$;
-- The nodes of a plan that read a table and actually ran.
create function pg_temp.scans(p_plan jsonb) returns table (node text, relation text, index_name text)
language sql as $$
  select n ->> 'Node Type', n ->> 'Relation Name', n ->> 'Index Name'
  from jsonb_path_query(p_plan, 'strict $.**') as n
  where jsonb_typeof(n) = 'object' and n ? 'Node Type'
    and (n ? 'Relation Name' or n ? 'Index Name')
    and (n ->> 'Actual Loops')::int > 0
$$;

-- The page query exactly as analyses_page runs it for the first page of a heavy user (C: 1,200
-- rows in the window): this month and last month, newest first, 21 rows.
create temporary table first_page_plan on commit drop as
select pg_temp.plan_of(format(
  'select * from public.analyses_in_window(%L, %L, %L, %L, %L, 21)',
  'c2000000-0000-4000-8000-000000000003',
  (select m from m) - interval '1 month',
  (select m from m) + interval '1 month' - interval '1 microsecond',
  (select m from m) + interval '1 month',
  '00000000-0000-0000-0000-000000000000')) as plan;

select cmp_ok(
  (select count(distinct relation) from first_page_plan, pg_temp.scans(plan) where relation is not null)::int,
  '<=', 2,
  'EXPLAIN: the first page reads at most 2 partitions'
);
select is_empty(
  $$select 1 from first_page_plan, pg_temp.scans(plan) where relation !~ '^analyses_p\d{6}$'$$,
  'EXPLAIN: neither the default partition nor anything else is read'
);
select is_empty(
  $$select 1 from first_page_plan, pg_temp.scans(plan)
    where node not in ('Index Scan', 'Index Only Scan', 'Bitmap Index Scan', 'Bitmap Heap Scan')$$,
  'EXPLAIN: no sequential scan'
);
select ok(
  (select bool_and(index_name ~ '^analyses_p\d{6}_user_id_created_at_id_idx$') and count(*) > 0
   from first_page_plan, pg_temp.scans(plan) where node like '%Index%Scan'),
  'EXPLAIN: the scans use the (user_id, created_at desc, id desc) index'
);
select ok(
  (select count(*) from first_page_plan, pg_temp.scans(plan) where node = 'Index Scan') > 0,
  'EXPLAIN: an ordered index scan (no sort of the user''s rows)'
);

-- A user with few rows (A's 3 in M-4) from a cursor: still 2 partitions, not every month before.
create temporary table sparse_plan on commit drop as
select pg_temp.plan_of(format(
  'select * from public.analyses_in_window(%L, %L, %L, %L, %L, 21)',
  'a2000000-0000-4000-8000-000000000001',
  (select m from m) - interval '5 months',
  (select m from m) - interval '3 months' - interval '1 microsecond',
  (select m from m) - interval '3 months',
  '00000000-0000-0000-0000-000000000000')) as plan;
select cmp_ok(
  (select count(distinct relation) from sparse_plan, pg_temp.scans(plan) where relation is not null)::int,
  '<=', 2,
  'EXPLAIN: a page from a cursor months back also reads at most 2 partitions'
);

-- The real function: count the scans it makes (this transaction's statistics), now and again
-- after ten more calls (by then the session runs it with a cached generic plan, whose
-- partitions are pruned at executor start-up instead of at planning).
create function pg_temp.scan_counts() returns table (relid oid, seq bigint, idx bigint, user_idx bigint)
language sql as $$
  select s.relid, coalesce(s.seq_scan, 0), coalesce(s.idx_scan, 0),
         (select coalesce(sum(pg_stat_get_xact_numscans(x.indexrelid)), 0)::bigint
          from pg_index as x join pg_class as ic on ic.oid = x.indexrelid
          where x.indrelid = s.relid and ic.relname ~ '_user_id_created_at_id_idx$')
  from pg_stat_xact_user_tables as s
  join pg_inherits as i on i.inhrelid = s.relid and i.inhparent = 'public.analyses'::regclass
$$;
create function pg_temp.delta(p_before text, p_after text)
returns table (partitions int, seq bigint, idx bigint, user_idx bigint)
language plpgsql as $$
begin
  return query execute format(
    'select count(*) filter (where a.seq + a.idx > b.seq + b.idx)::int, sum(a.seq - b.seq)::bigint,
            sum(a.idx - b.idx)::bigint, sum(a.user_idx - b.user_idx)::bigint
     from %I as a join %I as b using (relid)', p_after, p_before);
end
$$;

create temporary table calls_0 on commit drop as select * from pg_temp.scan_counts();
select public.analyses_page('c2000000-0000-4000-8000-000000000003');
create temporary table calls_1 on commit drop as select * from pg_temp.scan_counts();
select cmp_ok((select partitions from pg_temp.delta('calls_0', 'calls_1')), '<=', 2,
  'analyses_page itself touches at most 2 partitions');
select is((select seq from pg_temp.delta('calls_0', 'calls_1')), 0::bigint,
  'analyses_page makes no sequential scan');
select ok((select idx = user_idx and user_idx > 0 from pg_temp.delta('calls_0', 'calls_1')),
  'analyses_page reads only through the (user_id, created_at) index');

select count(*) from generate_series(1, 10) as g, public.analyses_page('c2000000-0000-4000-8000-000000000003');
create temporary table calls_11 on commit drop as select * from pg_temp.scan_counts();
select public.analyses_page('c2000000-0000-4000-8000-000000000003');
create temporary table calls_12 on commit drop as select * from pg_temp.scan_counts();
select cmp_ok((select partitions from pg_temp.delta('calls_11', 'calls_12')), '<=', 2,
  'after many calls in one session (generic plan) it still touches at most 2 partitions');
select ok((select seq = 0 and idx = user_idx and user_idx > 0 from pg_temp.delta('calls_11', 'calls_12')),
  'and still only through the (user_id, created_at) index');

-- ---------------------------------------------------------------------------------------------
-- chat_messages_page (with and without a conversation) and activities_page
-- ---------------------------------------------------------------------------------------------
insert into public.chat_messages (user_id, conversation_id, role, content, created_at)
select 'a2000000-0000-4000-8000-000000000001',
       case when g % 2 = 0 then 'c0000000-0000-4000-8000-0000000000aa'::uuid
            else 'c0000000-0000-4000-8000-0000000000bb'::uuid end,
       case when g % 3 = 0 then 'assistant' else 'user' end, 'message ' || g,
       (select m from m) + g * interval '1 second'
from generate_series(1, 9) as g;
insert into public.activities (user_id, kind, detail, created_at) values
  ('a2000000-0000-4000-8000-000000000001', 'sign_in', '{"device":"ios"}', (select m from m) + interval '1 hour'),
  ('a2000000-0000-4000-8000-000000000001', 'purchase', '{"plan":"pro"}', (select m from m) + interval '2 hours');

select is(
  (select array_agg(i ->> 'content' order by o)
   from public.chat_messages_page('a2000000-0000-4000-8000-000000000001', null, null, 4) as p,
        jsonb_array_elements(p.items) with ordinality as e(i, o)),
  array['message 9', 'message 8', 'message 7', 'message 6'],
  'chat_messages_page: newest first'
);
select is(
  (select array_agg(i ->> 'content' order by o)
   from public.chat_messages_page('a2000000-0000-4000-8000-000000000001', null, null, 20,
                                  'c0000000-0000-4000-8000-0000000000aa') as p,
        jsonb_array_elements(p.items) with ordinality as e(i, o)),
  array['message 8', 'message 6', 'message 4', 'message 2'],
  'chat_messages_page: only the given conversation'
);
select is(
  (select array_agg(k order by k) from public.chat_messages_page('a2000000-0000-4000-8000-000000000001') as p,
                                     jsonb_object_keys(p.items -> 0) as k),
  array['content', 'conversation_id', 'created_at', 'id', 'model', 'role'],
  'chat_messages items carry id, created_at, conversation_id, role, content, model'
);
select is(
  (select array_agg(i ->> 'kind' order by o)
   from public.activities_page('a2000000-0000-4000-8000-000000000001') as p,
        jsonb_array_elements(p.items) with ordinality as e(i, o)),
  array['purchase', 'sign_in'],
  'activities_page: newest first'
);
select is(
  (select array_agg(k order by k) from public.activities_page('a2000000-0000-4000-8000-000000000001') as p,
                                     jsonb_object_keys(p.items -> 0) as k),
  array['created_at', 'detail', 'id', 'kind'],
  'activities items carry id, created_at, kind, detail'
);

-- ---------------------------------------------------------------------------------------------
-- Security: as the user (RLS), as service_role, not as anon
-- ---------------------------------------------------------------------------------------------
select is(
  (select count(*)::int from information_schema.routine_privileges
   where routine_schema = 'public' and routine_name like any (array['%\_page', '%\_in\_window', 'history\_next\_cursor'])
     and grantee in ('PUBLIC', 'anon')),
  0,
  'anon may execute none of the pagination functions'
);
select is(
  (select prosecdef from pg_proc where oid = 'public.analyses_page(uuid, timestamptz, uuid, integer)'::regprocedure),
  false,
  'analyses_page is SECURITY INVOKER (RLS applies to its caller)'
);

set local role authenticated;
select set_config('request.jwt.claims', '{"sub":"a2000000-0000-4000-8000-000000000001","role":"authenticated"}', true);
select is(
  (select jsonb_array_length(items) from public.analyses_page('a2000000-0000-4000-8000-000000000001')),
  20,
  'a user pages through their own analyses'
);
select is(
  (select jsonb_array_length(items) from public.analyses_page('b2000000-0000-4000-8000-000000000002')),
  0,
  'a user asking for another user''s analyses gets none (RLS)'
);
select is(
  (select count(*) from public.analyses_in_window('b2000000-0000-4000-8000-000000000002'::uuid,
     '-infinity', 'infinity', 'infinity', '00000000-0000-0000-0000-000000000000', 100)),
  0::bigint,
  'nor through the building block'
);
select is(
  (select jsonb_array_length(items) from public.chat_messages_page('a2000000-0000-4000-8000-000000000001')),
  9,
  'a user pages through their own chat messages'
);

reset role;
set local role service_role;
select set_config('request.jwt.claims', '{"role":"service_role"}', true);
select is(
  (select items -> 0 -> 'result' ->> 'n' from public.analyses_page('b2000000-0000-4000-8000-000000000002')),
  'b',
  'service_role reads the page of the user it names'
);

reset role;
set local role anon;
select set_config('request.jwt.claims', '{"role":"anon"}', true);
select throws_ok(
  $$select * from public.analyses_page('a2000000-0000-4000-8000-000000000001')$$,
  '42501', null,
  'anon cannot call analyses_page'
);
reset role;

select * from finish();
rollback;
