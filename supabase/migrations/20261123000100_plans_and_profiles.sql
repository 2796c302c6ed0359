-- Plans and profiles: what each user may do, and the one row per user that says which plan they
-- are on, how much of this month's quota they used, their app settings and their Stripe link.
--
-- Access model (hosted Supabase conventions):
--   * plans     readable by anon and authenticated (prices and limits are public information),
--               writable only by service_role.
--   * profiles  a signed-in user reads only their own row and may change only `settings`
--               (column privilege + row policy); plan, usage and Stripe fields change only
--               through service_role (edge functions, Stripe webhook). anon reads nothing.
-- Re-runnable: every statement is idempotent.

-- -------------------------------------------------------------------------------------------
-- Shared: updated_at maintenance
-- -------------------------------------------------------------------------------------------
create or replace function public.set_updated_at()
  returns trigger
  language plpgsql
  set search_path = ''
as $$
begin
  new.updated_at := pg_catalog.now();
  return new;
end
$$;
comment on function public.set_updated_at() is
  'Trigger function: sets updated_at to the transaction time on every UPDATE.';
-- Trigger functions cannot be called directly; nothing needs EXECUTE on them (firing a trigger
-- does not check it).
revoke execute on function public.set_updated_at() from public, anon, authenticated, service_role;

-- -------------------------------------------------------------------------------------------
-- plans
-- -------------------------------------------------------------------------------------------
create table if not exists public.plans (
  id                 text        primary key
                                 constraint plans_id_format check (id ~ '^[a-z][a-z0-9_]{0,31}$'),
  name               text        not null
                                 constraint plans_name_not_blank check (pg_catalog.btrim(name) <> ''),
  monthly_quota      integer     not null constraint plans_monthly_quota_non_negative check (monthly_quota >= 0),
  ai_per_minute      integer     not null constraint plans_ai_per_minute_positive check (ai_per_minute > 0),
  general_per_minute integer     not null constraint plans_general_per_minute_positive check (general_per_minute > 0),
  upload_per_minute  integer     not null constraint plans_upload_per_minute_positive check (upload_per_minute > 0),
  -- The Stripe Price a subscription to this plan uses; differs per deployment (test/live mode),
  -- so it is set per environment, never by this migration. NULL for the free plan.
  stripe_price_id    text        unique,
  created_at         timestamptz not null default now(),
  updated_at         timestamptz not null default now()
);
comment on table public.plans is
  'One row per plan. The monthly AI quota and the per-minute rate limits of each rate-limit class live here, not in code.';
comment on column public.plans.monthly_quota is 'Units of metered usage per calendar month (UTC).';
comment on column public.plans.ai_per_minute is 'Rate limit, requests per minute, rate-limit class "ai".';
comment on column public.plans.general_per_minute is 'Rate limit, requests per minute, rate-limit class "general".';
comment on column public.plans.upload_per_minute is 'Rate limit, requests per minute, rate-limit class "upload".';
comment on column public.plans.stripe_price_id is 'Stripe Price id (price_...) for this plan in this deployment; NULL for free.';

create or replace trigger plans_set_updated_at
  before update on public.plans
  for each row execute function public.set_updated_at();

-- Seed. Re-running updates names and limits but never touches stripe_price_id, which each
-- deployment sets for itself.
insert into public.plans (id, name, monthly_quota, ai_per_minute, general_per_minute, upload_per_minute)
values
  ('free', 'Free',   100,  20,  200,  20),
  ('pro',  'Pro',   2000, 100, 1000, 100),
  ('team', 'Team', 10000, 300, 3000, 300)
on conflict (id) do update
  set name               = excluded.name,
      monthly_quota      = excluded.monthly_quota,
      ai_per_minute      = excluded.ai_per_minute,
      general_per_minute = excluded.general_per_minute,
      upload_per_minute  = excluded.upload_per_minute;

alter table public.plans enable row level security;

drop policy if exists "Anyone can read the plans" on public.plans;
create policy "Anyone can read the plans"
  on public.plans
  for select
  to anon, authenticated
  using (true);

-- Default privileges expose new tables fully to the API roles; narrow them to reading.
revoke all on table public.plans from anon, authenticated;
grant select on table public.plans to anon, authenticated;
grant all on table public.plans to service_role;

-- -------------------------------------------------------------------------------------------
-- profiles.settings validation
-- -------------------------------------------------------------------------------------------
create or replace function public.profile_settings_are_valid(p_settings jsonb)
  returns boolean
  language sql
  immutable
  parallel safe
  set search_path = ''
as $$
  -- CASE, not AND, so that the object-only checks never run on a non-object.
  select case
    when p_settings is null or pg_catalog.jsonb_typeof(p_settings) <> 'object' then false
    else
      not exists (
        select 1
        from pg_catalog.jsonb_object_keys(p_settings) as k(key)
        where k.key not in ('locale', 'theme', 'notifications_enabled', 'default_analysis_type')
      )
      and case when p_settings ? 'locale' then
            pg_catalog.jsonb_typeof(p_settings -> 'locale') = 'string'
            and (p_settings ->> 'locale') ~ '^[a-z]{2}(-[A-Z]{2})?$'
          else true end
      and case when p_settings ? 'theme' then
            pg_catalog.jsonb_typeof(p_settings -> 'theme') = 'string'
            and (p_settings ->> 'theme') in ('system', 'light', 'dark')
          else true end
      and case when p_settings ? 'notifications_enabled' then
            pg_catalog.jsonb_typeof(p_settings -> 'notifications_enabled') = 'boolean'
          else true end
      and case when p_settings ? 'default_analysis_type' then
            pg_catalog.jsonb_typeof(p_settings -> 'default_analysis_type') = 'string'
            and pg_catalog.char_length(p_settings ->> 'default_analysis_type') between 1 and 64
          else true end
  end
$$;
comment on function public.profile_settings_are_valid(jsonb) is
  'True when the value is a JSON object whose only keys are locale (^[a-z]{2}(-[A-Z]{2})?$), '
  'theme (system|light|dark), notifications_enabled (boolean) and default_analysis_type '
  '(string of 1..64 characters), each optional. Used by the profiles.settings check constraint.';
-- Everyone keeps EXECUTE: the check constraint calls it with the privileges of whoever writes
-- profiles.settings (a signed-in user does), and clients may use it to validate before saving.
grant execute on function public.profile_settings_are_valid(jsonb) to public, anon, authenticated, service_role;

-- -------------------------------------------------------------------------------------------
-- profiles
-- -------------------------------------------------------------------------------------------
create table if not exists public.profiles (
  id                     uuid        primary key references auth.users (id) on delete cascade,
  plan_id                text        not null default 'free' references public.plans (id) on update cascade,
  -- Units used in the current period. Written only by increment_usage_if_allowed/refund_usage.
  usage_count            integer     not null default 0
                                     constraint profiles_usage_count_non_negative check (usage_count >= 0),
  -- Start of the current calendar month in UTC; a new period starts lazily (see
  -- increment_usage_if_allowed), so a stale value here just means "no usage since".
  period_start           timestamptz not null default pg_catalog.date_trunc('month', now(), 'UTC'),
  settings               jsonb       not null default '{}'::jsonb
                                     constraint profiles_settings_valid check (public.profile_settings_are_valid(settings)),
  stripe_customer_id     text,
  stripe_subscription_id text,
  -- Stripe's subscription status as last reported by the webhook (active, trialing, past_due,
  -- canceled, unpaid, incomplete, incomplete_expired, paused); NULL when never subscribed.
  subscription_status    text,
  last_active_at         timestamptz,
  created_at             timestamptz not null default now(),
  updated_at             timestamptz not null default now()
);
comment on table public.profiles is
  'One row per auth.users row (created by the on_auth_user_created trigger, removed with the user). '
  'Users read their own row and may change only settings; everything else is service_role''s.';
comment on column public.profiles.settings is
  'App settings, validated by public.profile_settings_are_valid: locale, theme, notifications_enabled, default_analysis_type.';

-- The Stripe webhook finds the profile by customer or subscription id; each belongs to one user.
create unique index if not exists profiles_stripe_customer_id_key
  on public.profiles (stripe_customer_id) where stripe_customer_id is not null;
create unique index if not exists profiles_stripe_subscription_id_key
  on public.profiles (stripe_subscription_id) where stripe_subscription_id is not null;
-- Covers the foreign key (changing or deleting a plan looks up its profiles).
create index if not exists profiles_plan_id_idx on public.profiles (plan_id);

create or replace trigger profiles_set_updated_at
  before update on public.profiles
  for each row execute function public.set_updated_at();

alter table public.profiles enable row level security;

drop policy if exists "Users can read their own profile" on public.profiles;
create policy "Users can read their own profile"
  on public.profiles
  for select
  to authenticated
  using ((select auth.uid()) = id);

drop policy if exists "Users can update their own profile settings" on public.profiles;
create policy "Users can update their own profile settings"
  on public.profiles
  for update
  to authenticated
  using ((select auth.uid()) = id)
  with check ((select auth.uid()) = id);

-- Column privileges do what a policy cannot: the update policy picks the row, and this makes
-- `settings` the only column a user's UPDATE may name. No INSERT/DELETE for users (the trigger
-- and the cascade do both), and nothing at all for anon.
revoke all on table public.profiles from anon, authenticated;
grant select on table public.profiles to authenticated;
grant update (settings) on table public.profiles to authenticated;
grant all on table public.profiles to service_role;

-- -------------------------------------------------------------------------------------------
-- A profile for every new user
-- -------------------------------------------------------------------------------------------
-- SECURITY DEFINER because it runs as whoever inserts into auth.users (Supabase Auth's own
-- role), which has no privileges on public.profiles. search_path is pinned and every name is
-- qualified, so nothing on the caller's path can hijack it.
create or replace function public.handle_new_user()
  returns trigger
  language plpgsql
  security definer
  set search_path = ''
as $$
begin
  insert into public.profiles (id) values (new.id)
  on conflict (id) do nothing;
  return new;
end
$$;
comment on function public.handle_new_user() is
  'Trigger function on auth.users: creates the user''s profile on the free plan.';
revoke execute on function public.handle_new_user() from public, anon, authenticated, service_role;

create or replace trigger on_auth_user_created
  after insert on auth.users
  for each row execute function public.handle_new_user();

-- Users that signed up before this migration get their profile too.
insert into public.profiles (id)
select u.id from auth.users as u
on conflict (id) do nothing;
