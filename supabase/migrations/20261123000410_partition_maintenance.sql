-- Partition maintenance for the event tables (20261123000400): make the monthly partitions
-- ahead of time and drop whole months once they are past their retention.
--
--   public.event_retention                   which tables are event tables, and how long each keeps rows
--   public.event_partitions                  view: every partition of those tables with its bounds
--   public.create_event_partitions_between   make the monthly partitions covering a range of dates
--   public.create_event_partitions           ... from this month through N months ahead (pg_cron, daily)
--   public.drop_expired_event_partitions     drop the months past retention (pg_cron, daily)
--
-- Months are calendar months in UTC: <table>_pYYYYMM holds created_at in
-- [YYYY-MM-01 00:00:00+00, first of the next month 00:00:00+00). All month arithmetic is done on
-- the UTC wall clock, so the session's TimeZone can never shift a boundary.
--
-- Rows in the default partition. Postgres refuses to create a partition for a range that rows in
-- the default partition already cover ("updated partition constraint for default partition
-- would be violated"). That happens when rows arrive for a month before its partition exists
-- (writes dated far ahead, or the daily job not running for a long while). So when making a
-- month, create_event_partitions_between first checks the default partition and, if it holds
-- rows of that month, MOVES them: it copies them aside, deletes them from the default
-- partition, creates the partition and inserts them again through the parent (which routes
-- them to the new partition), all in the caller's transaction and under an ACCESS EXCLUSIVE
-- lock on the table, so no row is lost, duplicated or seen twice. Its result says how many rows
-- it moved. The default partition is normally empty (partitions exist 3 months ahead), which
-- keeps that check (and the scan Postgres itself makes of the default partition when a
-- partition is added) cheap.
--
-- Locks. Adding or dropping a partition takes an ACCESS EXCLUSIVE lock on the table (and,
-- for tables with a foreign key to auth.users, a SHARE ROW EXCLUSIVE lock on auth.users while
-- the foreign key is cloned onto the new partition, which pauses sign-ups and sign-ins) until
-- the transaction ends. So both functions first work out what to do from the catalog alone (the
-- usual daily run has nothing to do and takes no lock at all), then lock every table involved,
-- in name order and each before its partitions (the order queries take them in, so no
-- deadlock with readers or writers), and only then create or drop: the DDL never waits while
-- holding locks already taken, and auth.users is locked only from the first partition made to
-- the end of the transaction (for the cron job: the milliseconds the DDL takes).
-- Each lock is awaited at most lock_timeout (5 s) instead of queueing every request behind a
-- long-running query; on timeout the function fails (visible in cron.job_run_details) and the
-- next daily run tries again, which is harmless: both are idempotent and work months ahead.
-- Two runs at once are safe too: the second waits for the first's locks and then skips what it
-- made.
--
-- Only the owner of the tables (postgres: migrations and pg_cron jobs run as postgres) can
-- add or drop partitions, so the functions are not executable by the API roles.
--
-- Re-runnable: every statement is idempotent.

-- -------------------------------------------------------------------------------------------
-- event_retention
-- -------------------------------------------------------------------------------------------
create table if not exists public.event_retention (
  table_name text        primary key
                         constraint event_retention_table_name_format check (table_name ~ '^[a-z_][a-z0-9_]{0,47}$'),
  retention  interval    not null
                         constraint event_retention_retention_min check (retention >= interval '1 day'),
  updated_at timestamptz not null default now()
);
comment on table public.event_retention is
  'The event tables (monthly partitioned on created_at, in schema public) and how long each keeps its rows. '
  'A month is dropped once its newest possible row is older than now() - retention, so rows live at least '
  'retention and at most retention + 1 month (+ 1 day until the daily job runs). Change retention with an UPDATE. '
  'A table is maintained (partitions created, expired ones dropped) only while it has a row here.';
comment on column public.event_retention.table_name is 'Table in schema public, partitioned by range on created_at.';
comment on column public.event_retention.retention is
  'Minimum age of rows before their month may be dropped. At least 1 day.';

create or replace trigger event_retention_set_updated_at
  before update on public.event_retention
  for each row execute function public.set_updated_at();

-- Defaults. Re-running never overwrites a retention an operator has changed.
insert into public.event_retention (table_name, retention)
values
  ('analyses',      interval '2 years'),
  ('chat_messages', interval '2 years'),
  ('activities',    interval '1 year'),
  ('api_metrics',   interval '90 days')
on conflict (table_name) do nothing;

alter table public.event_retention enable row level security;
-- Retention periods are not secret (the privacy policy states them), and the history page
-- functions (20261123000420), which run as the signed-in user, read them to know where a
-- user's history ends. Only the owner (postgres) changes them.
drop policy if exists "Signed-in users can read the retention periods" on public.event_retention;
create policy "Signed-in users can read the retention periods"
  on public.event_retention
  for select
  to authenticated
  using (true);
revoke all on table public.event_retention from anon, authenticated, service_role;
grant select on table public.event_retention to authenticated, service_role;

-- -------------------------------------------------------------------------------------------
-- event_partitions: what exists, with bounds as timestamps
-- -------------------------------------------------------------------------------------------
-- pg_get_expr renders a bound as FOR VALUES FROM ('<timestamptz>') TO ('<timestamptz>') in the
-- session's DateStyle/TimeZone; reading it back in the same session gives the exact instant.
-- MINVALUE/MAXVALUE bounds (never made here) come out as NULL.
create or replace view public.event_partitions
  with (security_invoker = true)
as
select
  r.table_name,
  c.relname::text                                  as partition_name,
  b.bound = 'DEFAULT'                              as is_default,
  (pg_catalog.regexp_match(b.bound, '^FOR VALUES FROM \(''([^'']*)''\) TO \(''([^'']*)''\)$'))[1]::timestamptz
                                                   as range_from,
  (pg_catalog.regexp_match(b.bound, '^FOR VALUES FROM \(''([^'']*)''\) TO \(''([^'']*)''\)$'))[2]::timestamptz
                                                   as range_to
from public.event_retention as r
join pg_catalog.pg_class as parent
  on parent.relname = r.table_name
 and parent.relnamespace = 'public'::regnamespace
 and parent.relkind = 'p'
join pg_catalog.pg_inherits as i on i.inhparent = parent.oid
join pg_catalog.pg_class as c on c.oid = i.inhrelid
cross join lateral (select pg_catalog.pg_get_expr(c.relpartbound, c.oid) as bound) as b;
comment on view public.event_partitions is
  'Every partition of the tables in public.event_retention, with its range [range_from, range_to) '
  '(NULL for the default partition).';
revoke all on table public.event_partitions from anon, authenticated, service_role;
grant select on table public.event_partitions to service_role;

-- -------------------------------------------------------------------------------------------
-- create_event_partitions_between
-- -------------------------------------------------------------------------------------------
create or replace function public.create_event_partitions_between(p_from date, p_to date)
  returns table (table_name text, partition_name text, range_from timestamptz, range_to timestamptz, rows_moved bigint)
  language plpgsql
  volatile
  set search_path = ''
  set lock_timeout = '5s'
as $$
declare
  v_table   text;
  v_month   date;
  v_name    text;
  v_default text;
  v_lo      text;
  v_hi      text;
  v_rows    bigint;
  v_todo    record;
  v_tables  text[];
  v_months  date[];
begin
  if p_from is null or p_to is null or p_from > p_to then
    raise exception 'p_from and p_to must be dates with p_from <= p_to, got % and %',
      coalesce(p_from::text, 'null'), coalesce(p_to::text, 'null')
      using errcode = '22023';
  end if;
  if p_to - p_from > 3660 then
    raise exception 'refusing to create partitions for more than 10 years at once (% to %)', p_from, p_to
      using errcode = '22023';
  end if;

  for v_table in
    select r.table_name from public.event_retention as r
    where not exists (
      select 1 from pg_catalog.pg_class as c
      where c.relname = r.table_name and c.relnamespace = 'public'::regnamespace and c.relkind = 'p')
  loop
    raise warning 'public.event_retention lists "%", which is not a partitioned table in schema public; skipped', v_table;
  end loop;

  -- 1. What is missing: (table, month) pairs no partition covers yet. Reads the catalog only, so
  --    the usual daily run, with nothing to do, takes no lock at all.
  select coalesce(pg_catalog.array_agg(x.table_name order by x.table_name, x.month), '{}'),
         coalesce(pg_catalog.array_agg(x.month order by x.table_name, x.month), '{}')
    into v_tables, v_months
  from (
    select r.table_name, m.month::date as month
    from public.event_retention as r
    join pg_catalog.pg_class as c
      on c.relname = r.table_name and c.relnamespace = 'public'::regnamespace and c.relkind = 'p'
    cross join pg_catalog.generate_series(
      pg_catalog.date_trunc('month', p_from::timestamp),
      pg_catalog.date_trunc('month', p_to::timestamp),
      interval '1 month') as m(month)
    where not exists (
      select 1 from public.event_partitions as p
      where p.table_name = r.table_name and not p.is_default
        and (p.partition_name = r.table_name || '_p' || pg_catalog.to_char(m.month, 'YYYYMM')
             or (p.range_from < ((m.month + interval '1 month') at time zone 'UTC')
                 and p.range_to > (m.month at time zone 'UTC'))))
  ) as x;

  -- A month some other partition covers in part is left alone (creating ours would fail).
  for v_todo in
    select r.table_name, p.partition_name, m.month
    from public.event_retention as r
    cross join pg_catalog.generate_series(
      pg_catalog.date_trunc('month', p_from::timestamp),
      pg_catalog.date_trunc('month', p_to::timestamp),
      interval '1 month') as m(month)
    join public.event_partitions as p
      on p.table_name = r.table_name and not p.is_default
     and p.partition_name <> r.table_name || '_p' || pg_catalog.to_char(m.month, 'YYYYMM')
     and p.range_from < ((m.month + interval '1 month') at time zone 'UTC')
     and p.range_to > (m.month at time zone 'UTC')
  loop
    raise warning 'public.%: % already covers part of %; no partition made for that month',
      v_todo.table_name, v_todo.partition_name, pg_catalog.to_char(v_todo.month, 'YYYY-MM');
  end loop;

  -- 2. Lock every table that gets a partition, all of them BEFORE creating anything, in name
  --    order, and each before its partitions (the order queries take them in). So the DDL
  --    below never waits with locks already held (in particular the one on auth.users that
  --    cloning the foreign key takes), and cannot deadlock with readers or writers.
  for v_table in select distinct t.name from pg_catalog.unnest(v_tables) as t(name) order by 1 loop
    execute pg_catalog.format('lock table only public.%I in access exclusive mode', v_table);
  end loop;

  -- 3. Create them.
  for v_i in 1 .. pg_catalog.cardinality(v_tables) loop
    v_table := v_tables[v_i];
    v_month := v_months[v_i];
    v_name  := v_table || '_p' || pg_catalog.to_char(v_month, 'YYYYMM');
    if pg_catalog.to_regclass('public.' || pg_catalog.quote_ident(v_name)) is not null then
      if exists (select 1 from public.event_partitions as p where p.partition_name = v_name) then
        continue;  -- a concurrent run made it while this one waited for the lock
      end if;
      raise exception 'public.% exists but is not a partition of public.%', v_name, v_table
        using errcode = '42P07';
    end if;
    -- Bounds as UTC literals, so the catalog reads the same in every session.
    v_lo := pg_catalog.to_char(v_month, 'YYYY-MM-DD') || ' 00:00:00+00';
    v_hi := pg_catalog.to_char(v_month + interval '1 month', 'YYYY-MM-DD') || ' 00:00:00+00';

    select p.partition_name into v_default
    from public.event_partitions as p
    where p.table_name = v_table and p.is_default;

    v_rows := 0;
    if v_default is not null then
      execute pg_catalog.format(
        'select count(*) from public.%I where created_at >= %L and created_at < %L',
        v_default, v_lo, v_hi)
        into v_rows;
    end if;

    if v_rows > 0 then
      -- Move this month's rows out of the default partition: aside, delete, create, put back
      -- through the parent (which now routes them to the new partition). OVERRIDING SYSTEM
      -- VALUE keeps identity values (api_metrics.id) as they were.
      execute pg_catalog.format(
        'create temporary table event_partition_move on commit drop as '
        'select * from public.%I where created_at >= %L and created_at < %L',
        v_table, v_lo, v_hi);
      execute pg_catalog.format(
        'delete from public.%I where created_at >= %L and created_at < %L',
        v_default, v_lo, v_hi);
      execute pg_catalog.format(
        'create table public.%I partition of public.%I for values from (%L) to (%L)',
        v_name, v_table, v_lo, v_hi);
      execute pg_catalog.format(
        'insert into public.%I overriding system value select * from pg_temp.event_partition_move',
        v_table);
      drop table pg_temp.event_partition_move;
      raise notice 'public.%: moved % row(s) of % from % into the new partition %',
        v_table, v_rows, pg_catalog.to_char(v_month, 'YYYY-MM'), v_default, v_name;
    else
      execute pg_catalog.format(
        'create table public.%I partition of public.%I for values from (%L) to (%L)',
        v_name, v_table, v_lo, v_hi);
    end if;

    -- Hosted Supabase's default privileges just granted the new partition to the API roles:
    -- take that back (reads go through the parent and its policies), and deny all by RLS.
    execute pg_catalog.format('revoke all on table public.%I from anon, authenticated, service_role', v_name);
    execute pg_catalog.format('alter table public.%I enable row level security', v_name);

    table_name     := v_table;
    partition_name := v_name;
    range_from     := v_lo::timestamptz;
    range_to       := v_hi::timestamptz;
    rows_moved     := v_rows;
    return next;
  end loop;
end
$$;
comment on function public.create_event_partitions_between(date, date) is
  'Creates the missing monthly partitions <table>_pYYYYMM of every table in public.event_retention for each month '
  'from the month of p_from through the month of p_to (both inclusive, UTC months), moving any rows of those months '
  'out of the default partition. Idempotent. Returns one row per partition created (rows_moved: rows taken from '
  'the default partition). Waits at most 5 s for a lock. Errors: 22023 bad range.';
revoke execute on function public.create_event_partitions_between(date, date)
  from public, anon, authenticated, service_role;

-- -------------------------------------------------------------------------------------------
-- create_event_partitions
-- -------------------------------------------------------------------------------------------
create or replace function public.create_event_partitions(p_months_ahead integer default 3)
  returns table (table_name text, partition_name text, range_from timestamptz, range_to timestamptz, rows_moved bigint)
  language plpgsql
  volatile
  set search_path = ''
as $$
declare
  v_this_month date := pg_catalog.date_trunc('month', pg_catalog.now() at time zone 'UTC')::date;
begin
  if p_months_ahead is null or p_months_ahead < 0 or p_months_ahead > 120 then
    raise exception 'p_months_ahead must be from 0 to 120, got %', coalesce(p_months_ahead::text, 'null')
      using errcode = '22023';
  end if;
  return query
    select * from public.create_event_partitions_between(
      v_this_month, (v_this_month + pg_catalog.make_interval(months => p_months_ahead))::date);
end
$$;
comment on function public.create_event_partitions(integer) is
  'Creates the missing monthly partitions of every event table from the current UTC month through p_months_ahead '
  '(0..120, default 3) months ahead; see create_event_partitions_between. Idempotent; run daily by pg_cron.';
revoke execute on function public.create_event_partitions(integer) from public, anon, authenticated, service_role;

-- -------------------------------------------------------------------------------------------
-- drop_expired_event_partitions
-- -------------------------------------------------------------------------------------------
create or replace function public.drop_expired_event_partitions()
  returns table (table_name text, partition_name text, range_from timestamptz, range_to timestamptz)
  language plpgsql
  volatile
  set search_path = ''
  set lock_timeout = '5s'
as $$
declare
  v_names  text[];
  v_table  text;
  v_part   record;
begin
  select coalesce(pg_catalog.array_agg(p.partition_name), '{}')
    into v_names
  from public.event_partitions as p
  join public.event_retention as r on r.table_name = p.table_name
  where not p.is_default
    and p.range_to is not null
    -- Every row the partition can hold is older than the retention.
    and p.range_to <= (pg_catalog.now() at time zone 'UTC' - r.retention) at time zone 'UTC';

  -- Lock the tables first, all of them, before dropping anything (dropping a partition locks
  -- the table and its default partition; taking the partition first could deadlock with a
  -- reader, which locks the table first).
  for v_table in
    select distinct p.table_name from public.event_partitions as p
    where p.partition_name = any (v_names) order by 1
  loop
    execute pg_catalog.format('lock table only public.%I in access exclusive mode', v_table);
  end loop;

  for v_part in
    select p.table_name, p.partition_name, p.range_from, p.range_to
    from public.event_partitions as p
    where p.partition_name = any (v_names)
    order by p.table_name, p.range_from
  loop
    execute pg_catalog.format('drop table public.%I', v_part.partition_name);
    table_name     := v_part.table_name;
    partition_name := v_part.partition_name;
    range_from     := v_part.range_from;
    range_to       := v_part.range_to;
    return next;
  end loop;
end
$$;
comment on function public.drop_expired_event_partitions() is
  'Drops (DROP TABLE, no row-by-row delete) every monthly partition of the event tables whose upper bound is older '
  'than now() - its table''s retention in public.event_retention; returns what it dropped. Never touches the default '
  'partition: rows there (which should not exist) stay until create_event_partitions_between moves them into their '
  'month. Waits at most 5 s for a lock. Run daily by pg_cron.';
revoke execute on function public.drop_expired_event_partitions() from public, anon, authenticated, service_role;

-- Partitions from this month through three months ahead, right away.
select count(*) from public.create_event_partitions();
