-- The platform the migrations and the other database tests stand on: the roles, schemas,
-- extensions, auth.users and auth.uid() family that hosted Supabase provides, and that local
-- runs get from local/supabase-platform.sql. If this file fails, fix the platform first.
--
-- Runs like every file here: `supabase test db`-style, through pg_prove, as postgres, in one
-- transaction that is rolled back (nothing it creates survives).
begin;
create extension if not exists pgtap with schema extensions;

select plan(68);

-- ---------------------------------------------------------------------------------------------
-- Roles
-- ---------------------------------------------------------------------------------------------
select has_role('anon');
select has_role('authenticated');
select has_role('service_role');
select has_role('authenticator');
select has_role('supabase_admin');
select has_role('supabase_auth_admin');
select has_role('supabase_storage_admin');
select has_role('dashboard_user');

select is((select rolcanlogin from pg_roles where rolname = 'anon'), false, 'anon cannot log in');
select is((select rolcanlogin from pg_roles where rolname = 'authenticated'), false, 'authenticated cannot log in');
select is((select rolcanlogin from pg_roles where rolname = 'service_role'), false, 'service_role cannot log in');
select is((select rolbypassrls from pg_roles where rolname = 'service_role'), true, 'service_role bypasses RLS');
select is((select rolbypassrls from pg_roles where rolname = 'anon'), false, 'anon does not bypass RLS');
select is((select rolbypassrls from pg_roles where rolname = 'authenticated'), false, 'authenticated does not bypass RLS');
select isnt_superuser('anon');
select isnt_superuser('authenticated');
select isnt_superuser('service_role');
select is(
  (select row(rolcanlogin, rolinherit)::text from pg_roles where rolname = 'authenticator'),
  row(true, false)::text,
  'authenticator can log in and does not inherit'
);
select is_member_of('anon',          array['authenticator', 'postgres']::name[]);
select is_member_of('authenticated', array['authenticator', 'postgres']::name[]);
select is_member_of('service_role',  array['authenticator', 'postgres']::name[]);

-- ---------------------------------------------------------------------------------------------
-- Schemas, search_path, extensions, server settings
-- ---------------------------------------------------------------------------------------------
select has_schema('auth');
select has_schema('extensions');
select has_schema('storage');
select ok(
  'extensions' = any (string_to_array(replace(current_setting('search_path'), ' ', ''), ',')),
  'extensions is on the search_path (' || current_setting('search_path') || ')'
);
select ok(
  has_schema_privilege('anon', 'auth', 'usage') and has_schema_privilege('authenticated', 'auth', 'usage'),
  'API roles may use schema auth (for auth.uid() in policies)'
);
select ok(
  has_schema_privilege('anon', 'extensions', 'usage') and has_schema_privilege('authenticated', 'extensions', 'usage')
    and has_schema_privilege('service_role', 'extensions', 'usage'),
  'API roles may use schema extensions'
);

select has_extension('extensions', 'pgcrypto', 'extension pgcrypto is in schema extensions');
select has_extension('extensions', 'uuid-ossp', 'extension uuid-ossp is in schema extensions');
select has_extension('extensions', 'pg_stat_statements', 'extension pg_stat_statements is in schema extensions');
select has_extension('extensions', 'pgtap', 'extension pgtap is in schema extensions');
select lives_ok(
  $$create extension if not exists plpgsql_check with schema extensions$$,
  'plpgsql_check can be created'
);
select ok(
  'pg_cron' = any (string_to_array(replace(current_setting('shared_preload_libraries'), ' ', ''), ',')),
  'pg_cron is in shared_preload_libraries'
);
select is(current_setting('cron.database_name', true), current_database()::text, 'cron.database_name is this database');
select lives_ok(
  $$create extension if not exists pg_cron with schema pg_catalog$$,
  'pg_cron can be created (as the migrations do)'
);

-- ---------------------------------------------------------------------------------------------
-- auth.users and the JWT helpers
-- ---------------------------------------------------------------------------------------------
select has_table('auth', 'users', 'auth.users exists');
select col_is_pk('auth', 'users', 'id', 'auth.users.id is the primary key');
select is(
  array(
    select c from unnest(array[
      'id', 'instance_id', 'aud', 'role', 'email', 'encrypted_password', 'email_confirmed_at',
      'invited_at', 'confirmation_token', 'confirmation_sent_at', 'recovery_token',
      'recovery_sent_at', 'email_change', 'last_sign_in_at', 'raw_app_meta_data',
      'raw_user_meta_data', 'is_super_admin', 'created_at', 'updated_at', 'phone',
      'phone_confirmed_at', 'confirmed_at', 'banned_until', 'is_sso_user', 'deleted_at',
      'is_anonymous'
    ]) as c
    except
    select attname::text from pg_attribute
    where attrelid = 'auth.users'::regclass and attnum > 0 and not attisdropped
  ),
  '{}'::text[],
  'auth.users has the columns apps and test helpers use'
);
select is(
  (select relrowsecurity from pg_class where oid = 'auth.users'::regclass), true,
  'auth.users has row level security enabled'
);
select function_returns('auth', 'uid',   '{}'::name[], 'uuid');
select function_returns('auth', 'role',  '{}'::name[], 'text');
select function_returns('auth', 'email', '{}'::name[], 'text');
select function_returns('auth', 'jwt',   '{}'::name[], 'jsonb');

select lives_ok(
  $$insert into auth.users (id, aud, role, email, encrypted_password, email_confirmed_at,
                            raw_app_meta_data, raw_user_meta_data, created_at, updated_at)
    values ('11111111-1111-4111-8111-111111111111', 'authenticated', 'authenticated', 'alice@example.test',
            extensions.crypt('password', extensions.gen_salt('bf')), now(),
            '{"provider":"email","providers":["email"]}', '{}', now(), now()),
           ('22222222-2222-4222-8222-222222222222', 'authenticated', 'authenticated', 'bob@example.test',
            extensions.crypt('password', extensions.gen_salt('bf')), now(),
            '{"provider":"email","providers":["email"]}', '{}', now(), now())$$,
  'postgres can insert users into auth.users'
);
select lives_ok(
  $$insert into auth.users (email, is_anonymous) values (null, true)$$,
  'auth.users.id defaults to a new uuid; NULL emails are allowed'
);
select throws_ok(
  $$insert into auth.users (email) values ('alice@example.test')$$,
  '23505', null,
  'auth.users emails are unique'
);

-- A table as a migration would create it: new objects in public are granted to the API roles
-- by default privileges (as on hosted Supabase), and RLS decides which rows they see.
create table public.platform_probe (
  id bigint generated always as identity primary key,
  user_id uuid not null default auth.uid(),
  body text not null
);
alter table public.platform_probe enable row level security;
create policy platform_probe_owner on public.platform_probe
  for all to authenticated
  using ((select auth.uid()) = user_id)
  with check ((select auth.uid()) = user_id);
create function public.platform_probe_fn() returns int language sql as 'select 1';
insert into public.platform_probe (user_id, body) values
  ('11111111-1111-4111-8111-111111111111', 'alice''s'),
  ('22222222-2222-4222-8222-222222222222', 'bob''s');

select table_privs_are('public', 'platform_probe', 'anon',
  array['DELETE', 'INSERT', 'REFERENCES', 'SELECT', 'TRIGGER', 'TRUNCATE', 'UPDATE'],
  'new tables in public are granted to anon (default privileges)');
select table_privs_are('public', 'platform_probe', 'authenticated',
  array['DELETE', 'INSERT', 'REFERENCES', 'SELECT', 'TRIGGER', 'TRUNCATE', 'UPDATE'],
  'new tables in public are granted to authenticated (default privileges)');
select table_privs_are('public', 'platform_probe', 'service_role',
  array['DELETE', 'INSERT', 'REFERENCES', 'SELECT', 'TRIGGER', 'TRUNCATE', 'UPDATE'],
  'new tables in public are granted to service_role (default privileges)');
select ok(
  has_sequence_privilege('authenticated', pg_get_serial_sequence('public.platform_probe', 'id'), 'usage, select, update'),
  'new sequences in public are granted to authenticated (default privileges)'
);
select ok(
  exists (select from pg_proc p, aclexplode(p.proacl) a
          where p.oid = 'public.platform_probe_fn()'::regprocedure and a.grantee = 'authenticated'::regrole),
  'new functions in public are granted to authenticated explicitly (default privileges)'
);

-- As a signed-in user: PostgREST does `set local role authenticated` and sets the claims.
set local role authenticated;
select set_config('request.jwt.claims',
  '{"sub":"11111111-1111-4111-8111-111111111111","role":"authenticated","email":"alice@example.test","aal":"aal1"}',
  true);

select is(current_user::text, 'authenticated', 'postgres can set role authenticated');
select is(auth.uid(), '11111111-1111-4111-8111-111111111111'::uuid, 'auth.uid() reads sub from request.jwt.claims');
select is(auth.role(), 'authenticated', 'auth.role() reads role from request.jwt.claims');
select is(auth.email(), 'alice@example.test', 'auth.email() reads email from request.jwt.claims');
select is(auth.jwt() ->> 'aal', 'aal1', 'auth.jwt() returns all of request.jwt.claims');
select results_eq(
  $$select body from public.platform_probe$$,
  $$values ('alice''s')$$,
  'RLS with auth.uid(): authenticated sees only its own rows'
);
select lives_ok(
  $$insert into public.platform_probe (body) values ('alice''s second')$$,
  'RLS with auth.uid(): authenticated may insert its own row (user_id defaults to auth.uid())'
);
select throws_ok(
  $$insert into public.platform_probe (user_id, body) values ('22222222-2222-4222-8222-222222222222', 'forged')$$,
  '42501', null,
  'RLS with auth.uid(): authenticated cannot insert rows for another user'
);
select throws_ok(
  $$select * from auth.users$$,
  '42501', null,
  'authenticated cannot read auth.users'
);
select set_config('request.jwt.claim.sub', '22222222-2222-4222-8222-222222222222', true);
select is(auth.uid(), '22222222-2222-4222-8222-222222222222'::uuid,
  'auth.uid() prefers the legacy request.jwt.claim.sub when it is set');
select set_config('request.jwt.claim.sub', '', true);
select set_config('request.jwt.claims', '', true);
select is(auth.uid(), null::uuid, 'auth.uid() is NULL when no claims are set');
select is(auth.jwt(), null::jsonb, 'auth.jwt() is NULL when no claims are set');

-- As an anonymous visitor.
reset role;
set local role anon;
select set_config('request.jwt.claims', '{"role":"anon"}', true);

select is(auth.role(), 'anon', 'auth.role() is anon for the anon key');
select is(auth.uid(), null::uuid, 'auth.uid() is NULL for anon');
select throws_ok(
  $$select * from auth.users$$,
  '42501', null,
  'anon cannot read auth.users'
);
select is_empty(
  $$select * from public.platform_probe$$,
  'RLS: anon sees no rows of a table without an anon policy'
);

-- As the service role.
reset role;
set local role service_role;
select set_config('request.jwt.claims', '{"role":"service_role"}', true);

select is(
  (select count(*) from public.platform_probe), 3::bigint,
  'service_role bypasses RLS and sees every row'
);
reset role;

select * from finish();
rollback;
