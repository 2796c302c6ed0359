-- Sync markers: one small row per user whose `version` moves whenever the user's analyses or
-- chat messages change, so that the `sync` function can tell "nothing changed since you last
-- asked" (304 Not Modified) from one primary-key read, without touching the event tables.
--
-- A table of its own rather than a column of profiles: the increments happen in the
-- transactions that write analyses and messages, and on profiles they would queue behind (and
-- hold up) the row lock usage metering takes on every metered request, bump profiles.updated_at
-- (the profile cache's version) on every event, and make the hottest row of the schema hotter.
--
-- Maintained by statement-level triggers on the partitioned parents, with transition tables:
-- one upsert per statement and user, however many rows the statement wrote (a chat exchange is
-- two rows; deleting an account cascades over all of its rows). The parents' statement triggers
-- fire for every write through the parent, which is the only way the API roles can write them
-- (partitions are revoked from them, 20261123000400).
--
-- A row is made on a user's first change (version 1); no row reads as version 0. It goes with
-- the profile. During an account deletion the cascade may reach the event tables after the
-- profile is gone: then there is no marker left to move, and none is made.
--
-- service_role only. Re-runnable: every statement is idempotent.

create table if not exists public.sync_markers (
  user_id    uuid        primary key references public.profiles (id) on delete cascade,
  version    bigint      not null default 1 constraint sync_markers_version_positive check (version > 0),
  changed_at timestamptz not null default now()
);
comment on table public.sync_markers is
  'Per user, a version that moves on every insert, update or delete of their analyses or chat messages '
  '(triggers on the partitioned tables). The sync function hashes it into its ETag. service_role only.';
comment on column public.sync_markers.version is 'Incremented once per statement that changed the user''s rows.';
comment on column public.sync_markers.changed_at is 'When the last such statement''s transaction started.';

alter table public.sync_markers enable row level security;
-- No policies: anon and authenticated get no rows and, below, no privileges either.
revoke all on table public.sync_markers from anon, authenticated;
grant all on table public.sync_markers to service_role;

create or replace function public.bump_sync_markers()
  returns trigger
  language plpgsql
  set search_path = ''
as $$
begin
  insert into public.sync_markers as m (user_id)
  select distinct c.user_id
    from changed_rows as c
   where exists (select 1 from public.profiles as p where p.id = c.user_id)
  on conflict (user_id) do update
    set version    = m.version + 1,
        changed_at = pg_catalog.now();
  return null;
end
$$;
comment on function public.bump_sync_markers() is
  'Statement trigger function (transition table changed_rows with a user_id column): moves the sync marker of '
  'every user the statement changed rows of.';
-- Firing a trigger does not check EXECUTE; nobody needs to call it.
revoke execute on function public.bump_sync_markers() from public, anon, authenticated, service_role;

create or replace trigger analyses_bump_sync_markers_on_insert
  after insert on public.analyses
  referencing new table as changed_rows
  for each statement execute function public.bump_sync_markers();
create or replace trigger analyses_bump_sync_markers_on_update
  after update on public.analyses
  referencing new table as changed_rows
  for each statement execute function public.bump_sync_markers();
create or replace trigger analyses_bump_sync_markers_on_delete
  after delete on public.analyses
  referencing old table as changed_rows
  for each statement execute function public.bump_sync_markers();

create or replace trigger chat_messages_bump_sync_markers_on_insert
  after insert on public.chat_messages
  referencing new table as changed_rows
  for each statement execute function public.bump_sync_markers();
create or replace trigger chat_messages_bump_sync_markers_on_update
  after update on public.chat_messages
  referencing new table as changed_rows
  for each statement execute function public.bump_sync_markers();
create or replace trigger chat_messages_bump_sync_markers_on_delete
  after delete on public.chat_messages
  referencing old table as changed_rows
  for each statement execute function public.bump_sync_markers();
