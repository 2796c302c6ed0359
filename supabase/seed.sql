-- Demo data for a LOCAL database, so the app has someone to sign in as and something to show:
-- one user on each plan, with analyses, chat history and activities over this month and the last.
--
-- Loaded by `deno task up --seed` / `deno task dev --seed` (the Docker-free stack) and by
-- `supabase start` / `supabase db reset` (the CLI's Docker stack). Never by production:
-- `supabase db push` does not run seed files. Idempotent: a second run changes nothing.
--
--   email                  plan   password (for supabase start's Auth)
--   demo-free@example.com  free   demo-password
--   demo-pro@example.com   pro    demo-password
--   demo-team@example.com  team   demo-password

begin;

create temporary table demo_users (id uuid primary key, email text not null, plan_id text not null)
  on commit drop;
insert into demo_users (id, email, plan_id) values
  ('d0000000-0000-4000-8000-000000000001', 'demo-free@example.com', 'free'),
  ('d0000000-0000-4000-8000-000000000002', 'demo-pro@example.com',  'pro'),
  ('d0000000-0000-4000-8000-000000000003', 'demo-team@example.com', 'team');

-- The columns Supabase Auth reads when a user signs in with a password; its token columns must
-- be '' rather than NULL. public.handle_new_user() makes each profile on the free plan.
insert into auth.users (instance_id, id, aud, role, email, encrypted_password, email_confirmed_at,
                        confirmation_token, recovery_token, email_change_token_new, email_change,
                        raw_app_meta_data, raw_user_meta_data, created_at, updated_at)
select '00000000-0000-0000-0000-000000000000', d.id, 'authenticated', 'authenticated', d.email,
       extensions.crypt('demo-password', extensions.gen_salt('bf')), now(), '', '', '', '',
       '{"provider":"email","providers":["email"]}', '{}', now() - interval '60 days', now()
  from demo_users d
 where not exists (select 1 from auth.users u where u.id = d.id or u.email = d.email);

-- Supabase Auth signs a password user in through their email identity; the Docker-free stack
-- has no auth.identities (it issues tokens itself), so the rows are made only where it exists.
do $$
begin
  if pg_catalog.to_regclass('auth.identities') is not null then
    insert into auth.identities (id, user_id, provider_id, provider, identity_data, last_sign_in_at,
                                 created_at, updated_at)
    select d.id, d.id, d.id::text, 'email',
           pg_catalog.jsonb_build_object('sub', d.id::text, 'email', d.email, 'email_verified', true),
           now(), now(), now()
      from demo_users d
     where not exists (select 1 from auth.identities i where i.user_id = d.id);
  end if;
end
$$;

-- Signed up two months ago, like the history below: the history pages stop at the sign-up month.
update public.profiles p
   set plan_id = d.plan_id, created_at = u.created_at
  from demo_users d join auth.users u on u.id = d.id
 where p.id = d.id and (p.plan_id, p.created_at) is distinct from (d.plan_id, u.created_at);

-- Days before now at which each user did something: this month and the month before.
create temporary table demo_days (days_ago integer primary key) on commit drop;
insert into demo_days (days_ago) values (0), (1), (3), (6), (10), (17), (26), (33), (41), (52);

insert into public.analyses (user_id, created_at, analysis_type, input_kind, input_hash, result, model)
select d.id,
       now() - pg_catalog.make_interval(days => n.days_ago, hours => 2),
       (array['summary', 'sentiment', 'keywords'])[1 + n.days_ago % 3],
       'text',
       pg_catalog.encode(extensions.digest(d.email || n.days_ago, 'sha256'), 'hex'),
       pg_catalog.jsonb_build_object(
         'text', pg_catalog.format('Demo analysis from %s days ago for %s.', n.days_ago, d.email)),
       'gpt-4o-mini'
  from demo_users d cross join demo_days n
 where not exists (select 1 from public.analyses a where a.user_id = d.id);

-- One conversation a month per user: a question and its answer.
insert into public.chat_messages (user_id, conversation_id, role, content, model, created_at)
select d.id,
       pg_catalog.md5(d.email || c.days_ago)::uuid,
       m.role,
       m.content,
       case when m.role = 'assistant' then 'gpt-4o-mini' end,
       now() - pg_catalog.make_interval(days => c.days_ago) + m.after
  from demo_users d
 cross join (values (2), (35)) as c (days_ago)
 cross join (values
   ('user',      'What can you tell me about my last analysis?', interval '0 seconds'),
   ('assistant', 'It is a demo answer from the seed data.',      interval '5 seconds')
 ) as m (role, content, after)
 where not exists (select 1 from public.chat_messages x where x.user_id = d.id);

insert into public.activities (user_id, kind, detail, created_at)
select d.id, a.kind, a.detail, now() - pg_catalog.make_interval(days => a.days_ago)
  from demo_users d
 cross join (values
   ('sign_in',  '{}'::jsonb,                       0),
   ('analysis', '{"analysis_type":"summary"}',     1),
   ('sign_in',  '{}',                              34)
 ) as a (kind, detail, days_ago)
 where not exists (select 1 from public.activities x where x.user_id = d.id);

commit;
