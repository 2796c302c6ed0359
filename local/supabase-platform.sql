-- local/supabase-platform.sql
--
-- LOCAL RUNS ONLY. Never copy this into supabase/migrations: hosted Supabase already has all
-- of it, and a migration that tried to create it there would fail or clash.
--
-- Hosted Supabase (and the CLI's Docker image) start from a Postgres that already has the
-- platform's roles, schemas, extensions, `auth.users`, the `auth.uid()` family and a minimal
-- `storage` schema. Our local stack starts from a plain Debian PostgreSQL 15 instead, so this
-- file adds what migrations and pgTAP tests written for hosted Supabase rely on. It follows
-- the definitions in supabase/postgres (migrations/db/init-scripts) and supabase/auth
-- (migrations/), trimmed to what applications touch.
--
-- Apply it as the superuser `postgres` to the target database, BEFORE the migrations:
--   psql -v ON_ERROR_STOP=1 -f local/supabase-platform.sql "postgresql://postgres:postgres@127.0.0.1:54322/postgres"
-- The server must run with shared_preload_libraries = 'pg_cron,pg_stat_statements' and
-- cron.database_name = 'postgres' (pg_cron itself is created by the project's migrations).
--
-- Plain SQL (no psql meta-commands), so any client can send it, even as one multi-statement
-- string; with psql, pass -v ON_ERROR_STOP=1.
--
-- Idempotent: applying it again changes nothing and raises no error. On purpose it only
-- creates what is missing and (re)sets grants this file owns; it never grants on objects a
-- migration created, so re-applying it can't undo a migration's REVOKE.

set client_min_messages = warning;

do $$
begin
  if not (select rolsuper from pg_roles where rolname = current_user) then
    raise exception 'local/supabase-platform.sql must be applied by a superuser (it was: %)', current_user;
  end if;
end $$;

-- ---------------------------------------------------------------------------------------------
-- Roles
-- ---------------------------------------------------------------------------------------------
-- Created if missing, then their attributes are (re)asserted, so a second run is a no-op.
-- None of them gets a password here: nothing local logs in as them; `postgres` uses `set role`.
do $$
declare
  r record;
begin
  for r in
    select * from (values
      -- The Data API roles. A request's JWT `role` claim picks one of them.
      ('anon',                   'nologin noinherit'),
      ('authenticated',          'nologin noinherit'),
      ('service_role',           'nologin noinherit bypassrls'),
      -- PostgREST logs in as authenticator and `set role`s to one of the three above.
      ('authenticator',          'login noinherit'),
      -- Platform administrators that hosted Supabase has and tooling or dumps may reference.
      ('supabase_admin',         'login superuser createdb createrole replication bypassrls'),
      ('supabase_auth_admin',    'login noinherit createrole noreplication'),
      ('supabase_storage_admin', 'login noinherit createrole noreplication'),
      ('dashboard_user',         'nologin nosuperuser createdb createrole replication')
    ) as t(name, attrs)
  loop
    if not exists (select from pg_roles where rolname = r.name) then
      execute format('create role %I with %s', r.name, r.attrs);
    else
      execute format('alter role %I with %s', r.name, r.attrs);
    end if;
  end loop;
end $$;

-- authenticator may become any API role; postgres may `set role` to them as well (tests do).
-- Re-granting an existing membership only raises a NOTICE.
grant anon, authenticated, service_role to authenticator;
grant anon, authenticated, service_role to postgres;

-- Hosted Supabase's short statement timeouts for API roles (they apply to sessions that log in
-- as these roles; a `set role` keeps the session's own timeout).
alter role anon set statement_timeout = '3s';
alter role authenticated set statement_timeout = '8s';

-- ---------------------------------------------------------------------------------------------
-- Schemas, search_path
-- ---------------------------------------------------------------------------------------------
create schema if not exists extensions;
create schema if not exists auth authorization supabase_admin;
create schema if not exists storage authorization supabase_admin;

grant usage on schema public     to postgres, anon, authenticated, service_role;
grant usage on schema extensions to postgres, anon, authenticated, service_role;
-- Usage only, so that policies and functions can call auth.uid() etc. The auth TABLES are not
-- granted to the API roles (below), exactly as on hosted Supabase.
grant usage on schema auth       to anon, authenticated, service_role;
grant usage on schema storage    to postgres, anon, authenticated, service_role;

grant all on schema auth    to supabase_auth_admin, dashboard_user, postgres;
grant all on schema storage to supabase_storage_admin, dashboard_user, postgres;
grant all on schema extensions to dashboard_user;

-- Hosted Supabase has `extensions` on the path (for postgres, and via PostgREST's
-- extra_search_path for API requests), so unqualified gen_random_uuid()/crypt()/pgTAP's
-- plan()/ok() resolve. A database-level default also covers sessions that `set role` and
-- every role that logs in, which is what `supabase test db`-style pgTAP files expect.
do $$
begin
  execute format('alter database %I set search_path to "$user", public, extensions', current_database());
end $$;
alter role postgres       set search_path to "$user", public, extensions;
alter role supabase_admin set search_path to "$user", public, auth, extensions;
alter role supabase_auth_admin    set search_path to auth;
alter role supabase_storage_admin set search_path to storage;
-- And for the rest of this script's own session:
set search_path to public, extensions;

-- ---------------------------------------------------------------------------------------------
-- Default privileges on public: what makes hosted Supabase "auto-expose" new objects to the
-- Data API roles. Row Level Security, not grants, is what protects rows.
-- ---------------------------------------------------------------------------------------------
-- Objects created later by postgres (the role migrations run as) ...
alter default privileges for role postgres in schema public grant all on tables    to anon, authenticated, service_role;
alter default privileges for role postgres in schema public grant all on sequences to anon, authenticated, service_role;
alter default privileges for role postgres in schema public grant all on functions to anon, authenticated, service_role;
-- ... and by supabase_admin, as hosted Supabase also sets.
alter default privileges for role supabase_admin in schema public grant all on tables    to postgres, anon, authenticated, service_role;
alter default privileges for role supabase_admin in schema public grant all on sequences to postgres, anon, authenticated, service_role;
alter default privileges for role supabase_admin in schema public grant all on functions to postgres, anon, authenticated, service_role;

-- ---------------------------------------------------------------------------------------------
-- Extensions (where hosted Supabase puts them)
-- ---------------------------------------------------------------------------------------------
create extension if not exists "uuid-ossp"        with schema extensions;
create extension if not exists pgcrypto           with schema extensions;
create extension if not exists pg_stat_statements with schema extensions;
-- pgtap and plpgsql_check are installed on the server (postgresql-15-pgtap,
-- postgresql-15-plpgsql-check) but, as on hosted Supabase, not created here: tests run
-- `create extension if not exists pgtap with schema extensions;` inside their own transaction.
-- pg_cron is created by the project's migrations (`with schema pg_catalog`).

-- Realtime's publication, so `alter publication supabase_realtime add table ...` applies.
do $$
begin
  if not exists (select from pg_publication where pubname = 'supabase_realtime') then
    create publication supabase_realtime;
  end if;
end $$;

-- ---------------------------------------------------------------------------------------------
-- auth: users and the JWT helper functions
-- ---------------------------------------------------------------------------------------------
-- The columns of auth.users as Supabase Auth (GoTrue) has them today. Only `id` differs:
-- GoTrue generates ids itself; here it defaults to gen_random_uuid() for tests and seeds.
create table if not exists auth.users (
  instance_id                 uuid,
  id                          uuid        not null default gen_random_uuid(),
  aud                         varchar(255),
  role                        varchar(255),
  email                       varchar(255),
  encrypted_password          varchar(255),
  email_confirmed_at          timestamptz,
  invited_at                  timestamptz,
  confirmation_token          varchar(255),
  confirmation_sent_at        timestamptz,
  recovery_token              varchar(255),
  recovery_sent_at            timestamptz,
  email_change_token_new      varchar(255),
  email_change                varchar(255),
  email_change_sent_at        timestamptz,
  last_sign_in_at             timestamptz,
  raw_app_meta_data           jsonb,
  raw_user_meta_data          jsonb,
  is_super_admin              boolean,
  created_at                  timestamptz,
  updated_at                  timestamptz,
  phone                       text        default null,
  phone_confirmed_at          timestamptz,
  phone_change                text        default '',
  phone_change_token          varchar(255) default '',
  phone_change_sent_at        timestamptz,
  confirmed_at                timestamptz generated always as (least(email_confirmed_at, phone_confirmed_at)) stored,
  email_change_token_current  varchar(255) default '',
  email_change_confirm_status smallint    default 0 check (email_change_confirm_status >= 0 and email_change_confirm_status <= 2),
  banned_until                timestamptz,
  reauthentication_token      varchar(255) default '',
  reauthentication_sent_at    timestamptz,
  is_sso_user                 boolean     not null default false,
  deleted_at                  timestamptz,
  is_anonymous                boolean     not null default false,
  constraint users_pkey primary key (id),
  constraint users_phone_key unique (phone)
);
comment on table auth.users is 'Auth: Stores user login data within a secure schema.';
comment on column auth.users.is_sso_user is 'Auth: Set this column to true when the account comes from SSO. These accounts can have duplicate emails.';

-- GoTrue's email uniqueness: one non-SSO account per email (NULL emails never collide).
create unique index if not exists users_email_partial_key on auth.users (email) where (is_sso_user = false);
create index if not exists users_instance_id_idx       on auth.users (instance_id);
create index if not exists users_instance_id_email_idx on auth.users (instance_id, lower((email)::text));
create index if not exists users_is_anonymous_idx      on auth.users (is_anonymous);

alter table auth.users owner to supabase_auth_admin;
alter table auth.users enable row level security;
-- As hosted: no grants to anon/authenticated/service_role. postgres and dashboard_user may
-- manage users (seeds and test helpers insert into auth.users as postgres).
revoke all on auth.users from anon, authenticated, service_role;
grant all on auth.users to postgres, dashboard_user;

-- The JWT helpers, as Supabase Auth defines them: PostgREST puts the verified claims in the
-- transaction-local setting request.jwt.claims (JSON); older PostgREST versions set one
-- request.jwt.claim.<name> per claim, which is read first. Empty strings count as unset.
create or replace function auth.uid()
  returns uuid
  language sql stable
  set search_path to ''
as $$
  select
    coalesce(
      nullif(current_setting('request.jwt.claim.sub', true), ''),
      (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
    )::uuid
$$;

create or replace function auth.role()
  returns text
  language sql stable
  set search_path to ''
as $$
  select
    coalesce(
      nullif(current_setting('request.jwt.claim.role', true), ''),
      (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
    )::text
$$;

create or replace function auth.email()
  returns text
  language sql stable
  set search_path to ''
as $$
  select
    coalesce(
      nullif(current_setting('request.jwt.claim.email', true), ''),
      (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'email')
    )::text
$$;

create or replace function auth.jwt()
  returns jsonb
  language sql stable
  set search_path to ''
as $$
  select
    coalesce(
      nullif(current_setting('request.jwt.claim', true), ''),
      nullif(current_setting('request.jwt.claims', true), '')
    )::jsonb
$$;

comment on function auth.uid()   is 'Deprecated. Use auth.jwt() -> ''sub'' instead.';
comment on function auth.role()  is 'Deprecated. Use auth.jwt() -> ''role'' instead.';
comment on function auth.email() is 'Deprecated. Use auth.jwt() -> ''email'' instead.';

alter function auth.uid()   owner to supabase_auth_admin;
alter function auth.role()  owner to supabase_auth_admin;
alter function auth.email() owner to supabase_auth_admin;
alter function auth.jwt()   owner to supabase_auth_admin;
grant execute on function auth.uid(), auth.role(), auth.email(), auth.jwt()
  to postgres, anon, authenticated, service_role, dashboard_user;

-- ---------------------------------------------------------------------------------------------
-- storage: enough for migrations that create buckets or storage policies
-- ---------------------------------------------------------------------------------------------
create table if not exists storage.buckets (
  id                 text        not null,
  name               text        not null,
  owner              uuid,
  owner_id           text,
  created_at         timestamptz default now(),
  updated_at         timestamptz default now(),
  public             boolean     default false,
  avif_autodetection boolean     default false,
  file_size_limit    bigint,
  allowed_mime_types text[],
  constraint buckets_pkey primary key (id)
);
create unique index if not exists bname on storage.buckets using btree (name);

create table if not exists storage.objects (
  id               uuid        not null default gen_random_uuid(),
  bucket_id        text,
  name             text,
  owner            uuid,
  owner_id         text,
  created_at       timestamptz default now(),
  updated_at       timestamptz default now(),
  last_accessed_at timestamptz default now(),
  metadata         jsonb,
  path_tokens      text[]      generated always as (string_to_array(name, '/')) stored,
  version          text,
  user_metadata    jsonb,
  constraint objects_pkey primary key (id),
  constraint objects_bucketId_fkey foreign key (bucket_id) references storage.buckets (id)
);
create unique index if not exists bucketid_objname on storage.objects using btree (bucket_id, name);
create index if not exists name_prefix_search on storage.objects using btree (name text_pattern_ops);

alter table storage.buckets owner to supabase_storage_admin;
alter table storage.objects owner to supabase_storage_admin;
alter table storage.buckets enable row level security;
alter table storage.objects enable row level security;
-- As hosted (via supabase_storage_admin's default privileges): all API roles have table
-- privileges on storage; RLS policies decide which rows they see.
grant all on storage.buckets, storage.objects to postgres, anon, authenticated, service_role, dashboard_user;

-- The path helpers storage policies use, e.g. (storage.foldername(name))[1] = auth.uid()::text
create or replace function storage.foldername(name text)
  returns text[]
  language plpgsql immutable
  set search_path to ''
as $$
declare
  _parts text[];
begin
  select pg_catalog.string_to_array(name, '/') into _parts;
  return _parts[1:pg_catalog.array_length(_parts, 1) - 1];
end
$$;

create or replace function storage.filename(name text)
  returns text
  language plpgsql immutable
  set search_path to ''
as $$
declare
  _parts text[];
begin
  select pg_catalog.string_to_array(name, '/') into _parts;
  return _parts[pg_catalog.array_length(_parts, 1)];
end
$$;

create or replace function storage.extension(name text)
  returns text
  language plpgsql immutable
  set search_path to ''
as $$
declare
  _parts text[];
  _filename text;
begin
  select pg_catalog.string_to_array(name, '/') into _parts;
  select _parts[pg_catalog.array_length(_parts, 1)] into _filename;
  return pg_catalog.reverse(pg_catalog.split_part(pg_catalog.reverse(_filename), '.', 1));
end
$$;

alter function storage.foldername(text) owner to supabase_storage_admin;
alter function storage.filename(text)   owner to supabase_storage_admin;
alter function storage.extension(text)  owner to supabase_storage_admin;
grant execute on function storage.foldername(text), storage.filename(text), storage.extension(text)
  to postgres, anon, authenticated, service_role, dashboard_user;

reset client_min_messages;
