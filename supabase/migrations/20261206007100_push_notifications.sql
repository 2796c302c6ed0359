-- Push notifications through Expo: the devices that receive them, the record that makes each
-- (user, kind, subject) notification go out at most once, the tickets whose receipts are checked
-- later, the quiet-hours setting, and the metering path's own trigger for quota.almost_spent.
--
--   devices                  a user's Expo push tokens (one user per token: registering moves it)
--   push_notifications       one row per (user, kind, subject) ever sent: the at-most-once record
--   push_tickets             Expo's ticket ids of sent messages, until their receipt is read
--   enqueue_notification     queues a notify.send job, idempotent on (user, kind, subject)
--   quiet_hours_end          when the user's quiet hours end, if they are in them at a moment
--   increment_usage_if_allowed  as in 20261206005100, and it queues quota.almost_spent in the
--                            same statement when used crosses 80 % of the quota
--   notify-receipts (pg_cron, every 15 minutes)  queues a notify.receipts job
--
-- Re-runnable: every statement is idempotent.

-- -------------------------------------------------------------------------------------------
-- settings: quiet_hours {start, end, timezone} and timezone
-- -------------------------------------------------------------------------------------------
-- A time zone name is checked for its shape only: the constraint must stay immutable, and
-- quiet_hours_end treats a name Postgres does not know as UTC.
create or replace function public.profile_settings_are_valid(p_settings jsonb)
  returns boolean
  language sql
  immutable
  parallel safe
  set search_path = ''
as $$
  select case
    when p_settings is null or pg_catalog.jsonb_typeof(p_settings) <> 'object' then false
    else
      not exists (
        select 1
        from pg_catalog.jsonb_object_keys(p_settings) as k(key)
        where k.key not in ('locale', 'theme', 'notifications_enabled', 'default_analysis_type',
                            'timezone', 'quiet_hours')
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
      and case when p_settings ? 'timezone' then
            pg_catalog.jsonb_typeof(p_settings -> 'timezone') = 'string'
            and (p_settings ->> 'timezone') ~ '^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+){0,2}$'
            and pg_catalog.char_length(p_settings ->> 'timezone') <= 64
          else true end
      and case when p_settings ? 'quiet_hours' then
            pg_catalog.jsonb_typeof(p_settings -> 'quiet_hours') = 'object'
            and (select pg_catalog.array_agg(k order by k)
                   from pg_catalog.jsonb_object_keys(p_settings -> 'quiet_hours') as k)
                = array['end', 'start', 'timezone']
            and pg_catalog.jsonb_typeof(p_settings -> 'quiet_hours' -> 'start') = 'string'
            and pg_catalog.jsonb_typeof(p_settings -> 'quiet_hours' -> 'end') = 'string'
            and pg_catalog.jsonb_typeof(p_settings -> 'quiet_hours' -> 'timezone') = 'string'
            and (p_settings -> 'quiet_hours' ->> 'start') ~ '^([01][0-9]|2[0-3]):[0-5][0-9]$'
            and (p_settings -> 'quiet_hours' ->> 'end') ~ '^([01][0-9]|2[0-3]):[0-5][0-9]$'
            and (p_settings -> 'quiet_hours' ->> 'timezone') ~ '^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+){0,2}$'
            and pg_catalog.char_length(p_settings -> 'quiet_hours' ->> 'timezone') <= 64
          else true end
  end
$$;
comment on function public.profile_settings_are_valid(jsonb) is
  'True when the value is a JSON object whose only keys are locale (^[a-z]{2}(-[A-Z]{2})?$), '
  'theme (system|light|dark), notifications_enabled (boolean), default_analysis_type '
  '(string of 1..64 characters), timezone (an IANA-shaped name) and quiet_hours '
  '({start, end: "HH:MM", timezone}), each optional. Used by the profiles.settings check constraint.';
grant execute on function public.profile_settings_are_valid(jsonb) to public, anon, authenticated, service_role;

-- The time zone a user's settings name, or UTC when none or one Postgres does not know.
create or replace function public.settings_time_zone(p_name text)
  returns text
  language sql
  stable
  set search_path = ''
as $$
  select coalesce(
    (select z.name from pg_catalog.pg_timezone_names as z where z.name = p_name limit 1), 'UTC')
$$;
comment on function public.settings_time_zone(text) is
  'p_name if Postgres knows that time zone, else UTC: what the settings'' time zones are read as.';
revoke execute on function public.settings_time_zone(text) from public, anon, authenticated;
grant execute on function public.settings_time_zone(text) to service_role;

-- When the quiet hours of p_settings end, if p_at falls inside them; null otherwise. A window
-- whose start is after its end spans midnight (22:00-07:00); equal start and end is no window.
create or replace function public.quiet_hours_end(p_settings jsonb, p_at timestamptz)
  returns timestamptz
  language plpgsql
  stable
  set search_path = ''
as $$
declare
  v_zone  text;
  v_local timestamp;
  v_start time;
  v_end   time;
  v_time  time;
  v_until timestamp;
begin
  if p_settings is null or pg_catalog.jsonb_typeof(p_settings -> 'quiet_hours') is distinct from 'object' then
    return null;
  end if;
  v_zone  := public.settings_time_zone(p_settings -> 'quiet_hours' ->> 'timezone');
  v_local := p_at at time zone v_zone;
  v_start := (p_settings -> 'quiet_hours' ->> 'start')::time;
  v_end   := (p_settings -> 'quiet_hours' ->> 'end')::time;
  v_time  := v_local::time;
  if v_start = v_end then
    return null;
  end if;
  if v_start < v_end then
    if v_time < v_start or v_time >= v_end then
      return null;
    end if;
  elsif v_time < v_start and v_time >= v_end then
    return null;
  end if;
  v_until := v_local::date + v_end;
  if v_until <= v_local then
    v_until := v_until + interval '1 day';
  end if;
  return v_until at time zone v_zone;
end
$$;
comment on function public.quiet_hours_end(jsonb, timestamptz) is
  'When the quiet hours of the settings (quiet_hours {start, end, timezone}) end, if p_at is inside them; '
  'null when it is not or the settings have none.';
revoke execute on function public.quiet_hours_end(jsonb, timestamptz) from public, anon, authenticated;
grant execute on function public.quiet_hours_end(jsonb, timestamptz) to service_role;

-- -------------------------------------------------------------------------------------------
-- devices
-- -------------------------------------------------------------------------------------------
create table if not exists public.devices (
  id              uuid        primary key default gen_random_uuid(),
  user_id         uuid        not null references auth.users (id) on delete cascade,
  expo_push_token text        not null unique
                              constraint devices_expo_push_token_length check (pg_catalog.char_length(expo_push_token) between 1 and 255),
  platform        text        not null constraint devices_platform_valid check (platform in ('ios', 'android', 'web')),
  app_version     text        constraint devices_app_version_length check (pg_catalog.char_length(app_version) between 1 and 64),
  last_seen_at    timestamptz not null default now(),
  created_at      timestamptz not null default now()
);
comment on table public.devices is
  'Expo push tokens of each user''s devices. A token belongs to one user at a time: registering it again moves it. '
  'Deleted with the account, and when Expo reports DeviceNotRegistered.';
create index if not exists devices_user_id_idx on public.devices (user_id);

alter table public.devices enable row level security;
revoke all on table public.devices from anon, authenticated;
grant select, delete on table public.devices to authenticated;
grant all on table public.devices to service_role;

drop policy if exists "Users read their own devices" on public.devices;
create policy "Users read their own devices" on public.devices
  for select to authenticated using (user_id = (select auth.uid()));
drop policy if exists "Users remove their own devices" on public.devices;
create policy "Users remove their own devices" on public.devices
  for delete to authenticated using (user_id = (select auth.uid()));

-- -------------------------------------------------------------------------------------------
-- push_notifications and push_tickets
-- -------------------------------------------------------------------------------------------
create table if not exists public.push_notifications (
  id         bigint      generated always as identity primary key,
  user_id    uuid        not null references auth.users (id) on delete cascade,
  kind       text        not null
                         constraint push_notifications_kind_valid
                         check (kind in ('analysis.ready', 'quota.almost_spent', 'billing.payment_failed', 'recommendations.ready')),
  subject    text        not null constraint push_notifications_subject_length check (pg_catalog.char_length(subject) between 1 and 200),
  sent_at    timestamptz not null default now(),
  constraint push_notifications_once unique (user_id, kind, subject)
);
comment on table public.push_notifications is
  'Every notification that went out, once per (user, kind, subject): notify.send claims its row before sending, '
  'so a notification is sent at most once. service_role only.';

create table if not exists public.push_tickets (
  id              text        primary key constraint push_tickets_id_length check (pg_catalog.char_length(id) between 1 and 255),
  notification_id bigint      not null references public.push_notifications (id) on delete cascade,
  device_id       uuid        not null references public.devices (id) on delete cascade,
  created_at      timestamptz not null default now()
);
comment on table public.push_tickets is
  'Expo tickets of sent messages whose receipt notify.receipts has not read yet (Expo keeps receipts about a day). '
  'service_role only.';
create index if not exists push_tickets_created_at_idx on public.push_tickets (created_at);
create index if not exists push_tickets_device_id_idx on public.push_tickets (device_id);
create index if not exists push_tickets_notification_id_idx on public.push_tickets (notification_id);

alter table public.push_notifications enable row level security;
alter table public.push_tickets enable row level security;
revoke all on table public.push_notifications, public.push_tickets from anon, authenticated;
grant all on table public.push_notifications, public.push_tickets to service_role;
drop policy if exists "Only the service role reads notifications" on public.push_notifications;
create policy "Only the service role reads notifications" on public.push_notifications
  for all to service_role using (true) with check (true);
drop policy if exists "Only the service role reads tickets" on public.push_tickets;
create policy "Only the service role reads tickets" on public.push_tickets
  for all to service_role using (true) with check (true);

-- -------------------------------------------------------------------------------------------
-- enqueue_notification
-- -------------------------------------------------------------------------------------------
create or replace function public.enqueue_notification(
  p_user_id uuid,
  p_kind text,
  p_subject text,
  p_data jsonb default '{}'::jsonb
)
  returns bigint
  language sql
  volatile
  set search_path = ''
as $$
  select public.enqueue_job(
    'notify.send',
    pg_catalog.jsonb_build_object('user_id', p_user_id, 'kind', p_kind, 'subject', p_subject,
                                  'data', coalesce(p_data, '{}'::jsonb)),
    pg_catalog.now(), 0,
    pg_catalog.format('notify:%s:%s:%s', p_kind, p_user_id, pg_catalog.left(p_subject, 160)))
$$;
comment on function public.enqueue_notification(uuid, text, text, jsonb) is
  'Queues a notify.send job for (user, kind, subject), once: the job''s idempotency key is made of the three, '
  'and push_notifications keeps the record after the job is purged.';
revoke execute on function public.enqueue_notification(uuid, text, text, jsonb) from public, anon, authenticated;
grant execute on function public.enqueue_notification(uuid, text, text, jsonb) to service_role;

-- -------------------------------------------------------------------------------------------
-- increment_usage_if_allowed: as in 20261206005100, plus quota.almost_spent. The row lock
-- serialises concurrent charges, so exactly one of them sees used cross 80 % of the quota; it
-- queues the notification inside this same call, and the job's key (the period) makes it once
-- per period. The hot path pays nothing more on every other call.
-- -------------------------------------------------------------------------------------------
create or replace function public.increment_usage_if_allowed(p_user_id uuid, p_amount integer default 1)
  returns table (allowed boolean, used integer, quota integer, remaining integer, period_resets_at timestamptz)
  language plpgsql
  volatile
  set search_path = ''
as $$
declare
  v_now          timestamptz := pg_catalog.now();
  v_period_start timestamptz;
begin
  perform public.check_usage_arguments(p_user_id, p_amount, 'To give units back, call public.refund_usage.');

  update public.profiles as p
     set usage_count    = public.usage_this_period(p.usage_count, p.period_start, v_now) + p_amount,
         period_start   = public.usage_period_start(p.period_start, v_now),
         last_active_at = v_now
    from public.plans as pl
   where p.id = p_user_id
     and pl.id = p.plan_id
     and public.usage_this_period(p.usage_count, p.period_start, v_now)::bigint + p_amount <= pl.monthly_quota
  returning true, p.usage_count, pl.monthly_quota, p.period_start
       into allowed, used, quota, v_period_start;

  if not found then
    select false, u.used, u.quota, u.remaining, u.period_resets_at
      into allowed, used, quota, remaining, period_resets_at
      from public.current_usage(p_user_id) as u;
    return next;
    return;
  end if;

  if (used - p_amount)::bigint * 5 < quota::bigint * 4 and used::bigint * 5 >= quota::bigint * 4 then
    perform public.enqueue_notification(
      p_user_id, 'quota.almost_spent', pg_catalog.to_char(v_period_start at time zone 'UTC', 'YYYY-MM'),
      pg_catalog.jsonb_build_object('used', used, 'quota', quota));
  end if;

  remaining := greatest(quota - used, 0);
  period_resets_at := public.usage_period_resets_at(v_period_start);
  return next;
end
$$;
comment on function public.increment_usage_if_allowed(uuid, integer) is
  'Records p_amount (1..1000) units of usage for the user if the whole amount fits in the plan''s monthly quota; '
  'otherwise records nothing. Returns (allowed, used, quota, remaining, period_resets_at) after the call. '
  'Atomic under any concurrency. The call that makes used cross 80 % of the quota queues quota.almost_spent. '
  'Errors: 22023 bad argument, P0002 unknown user.';
revoke execute on function public.increment_usage_if_allowed(uuid, integer) from public, anon, authenticated;
grant execute on function public.increment_usage_if_allowed(uuid, integer) to service_role;

-- -------------------------------------------------------------------------------------------
-- notify.receipts every 15 minutes (one job per quarter hour, whichever worker runs it)
-- -------------------------------------------------------------------------------------------
create or replace function public.enqueue_push_receipts()
  returns bigint
  language sql
  volatile
  set search_path = ''
as $$
  select public.enqueue_job('notify.receipts', '{}'::jsonb, pg_catalog.now(), 0,
    'notify.receipts:' || pg_catalog.to_char(pg_catalog.now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI'))
$$;
comment on function public.enqueue_push_receipts() is
  'Queues a notify.receipts job (pg_cron, every 15 minutes).';
revoke execute on function public.enqueue_push_receipts() from public, anon, authenticated;
grant execute on function public.enqueue_push_receipts() to service_role;

select cron.schedule('enqueue-push-receipts', '*/15 * * * *',
  $cmd$select public.enqueue_push_receipts()$cmd$);
