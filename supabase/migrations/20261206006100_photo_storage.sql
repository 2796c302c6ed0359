-- Photos: Supabase Storage buckets and their policies, the per-plan storage quota, and retention.
--
--   storage.buckets     user-uploads (private, 5 MB, jpeg/png/webp/heic) and avatars (public read,
--                       1 MB, jpeg/png/webp), as config.toml's [storage.buckets.*] declares them.
--                       Storage itself enforces file_size_limit and allowed_mime_types.
--   storage.objects     policies: a user may insert, read, update and delete only the objects
--                       under the folder named by their own user id, in both buckets.
--   plans.storage_quota_bytes, storage_usage, storage_reservations
--                       the bytes a user may keep, the bytes counted against it, and the grants
--                       whose object has not been settled yet. reserve_storage_bytes decides
--                       and records in ONE statement (as increment_usage_if_allowed does for
--                       units), release_storage_bytes gives bytes back when objects go, and
--                       settle_storage_reservations (pg_cron) turns each expired grant into the
--                       real size of what arrived, or into nothing.
--   storage_retention   how long each bucket keeps an object after its last use; the daily
--                       enqueue_storage_cleanup queues `storage.cleanup` jobs that delete through
--                       the Storage API (deleting rows of storage.objects would leave the files).
--
-- Re-runnable: every statement is idempotent.

-- -------------------------------------------------------------------------------------------
-- Buckets
-- -------------------------------------------------------------------------------------------
insert into storage.buckets (id, name, public, file_size_limit, allowed_mime_types) values
  ('user-uploads', 'user-uploads', false, 5242880,
   array['image/jpeg', 'image/png', 'image/webp', 'image/heic']),
  ('avatars', 'avatars', true, 1048576,
   array['image/jpeg', 'image/png', 'image/webp'])
on conflict (id) do update
  set name = excluded.name,
      public = excluded.public,
      file_size_limit = excluded.file_size_limit,
      allowed_mime_types = excluded.allowed_mime_types,
      updated_at = pg_catalog.now();

-- -------------------------------------------------------------------------------------------
-- Who may touch which objects: the owner, by the first folder of the object's name
-- -------------------------------------------------------------------------------------------
drop policy if exists "Users can upload into their own folder" on storage.objects;
create policy "Users can upload into their own folder"
  on storage.objects for insert to authenticated
  with check (bucket_id in ('user-uploads', 'avatars')
              and (storage.foldername(name))[1] = (select auth.uid())::text);

drop policy if exists "Users can read the objects in their own folder" on storage.objects;
create policy "Users can read the objects in their own folder"
  on storage.objects for select to authenticated
  using (bucket_id in ('user-uploads', 'avatars')
         and (storage.foldername(name))[1] = (select auth.uid())::text);

drop policy if exists "Users can replace the objects in their own folder" on storage.objects;
create policy "Users can replace the objects in their own folder"
  on storage.objects for update to authenticated
  using (bucket_id in ('user-uploads', 'avatars')
         and (storage.foldername(name))[1] = (select auth.uid())::text)
  with check (bucket_id in ('user-uploads', 'avatars')
              and (storage.foldername(name))[1] = (select auth.uid())::text);

drop policy if exists "Users can delete the objects in their own folder" on storage.objects;
create policy "Users can delete the objects in their own folder"
  on storage.objects for delete to authenticated
  using (bucket_id in ('user-uploads', 'avatars')
         and (storage.foldername(name))[1] = (select auth.uid())::text);

-- -------------------------------------------------------------------------------------------
-- The storage quota
-- -------------------------------------------------------------------------------------------
alter table public.plans
  add column if not exists storage_quota_bytes bigint not null default 104857600
    constraint plans_storage_quota_bytes_non_negative check (storage_quota_bytes >= 0);
comment on column public.plans.storage_quota_bytes is
  'Bytes of Storage objects a user of this plan may keep (reserved when an upload is granted).';
update public.plans
   set storage_quota_bytes = case id when 'free' then 104857600      -- 100 MB
                                     when 'pro'  then 5368709120     -- 5 GB
                                     when 'team' then 21474836480    -- 20 GB
                                     else storage_quota_bytes end
 where id in ('free', 'pro', 'team');

create table if not exists public.storage_usage (
  user_id    uuid        primary key references auth.users (id) on delete cascade,
  used_bytes bigint      not null default 0 constraint storage_usage_used_bytes_non_negative check (used_bytes >= 0),
  updated_at timestamptz not null default pg_catalog.now()
);
comment on table public.storage_usage is
  'Bytes counted against each user''s plans.storage_quota_bytes: settled objects at their real size, '
  'pending grants (storage_reservations) at their declared size.';

create table if not exists public.storage_reservations (
  bucket_id   text        not null,
  object_name text        not null,
  user_id     uuid        not null references auth.users (id) on delete cascade,
  size_bytes  bigint      not null constraint storage_reservations_size_positive check (size_bytes > 0),
  expires_at  timestamptz not null,
  created_at  timestamptz not null default pg_catalog.now(),
  constraint storage_reservations_pkey primary key (bucket_id, object_name)
);
create index if not exists storage_reservations_expires_at_idx on public.storage_reservations (expires_at);
comment on table public.storage_reservations is
  'Upload grants whose object is not settled yet; settle_storage_reservations replaces each, once its '
  'signed URL has expired, by the real size of what arrived (or by nothing).';

alter table public.storage_usage enable row level security;
alter table public.storage_reservations enable row level security;
-- Written only by the functions below (service role); a user may read their own numbers.
revoke all on table public.storage_usage, public.storage_reservations from anon, authenticated;
grant select on table public.storage_usage to authenticated;
drop policy if exists "Users can read their own storage usage" on public.storage_usage;
create policy "Users can read their own storage usage"
  on public.storage_usage for select to authenticated
  using (user_id = (select auth.uid()));
drop policy if exists "Only the service role reads reservations" on public.storage_reservations;
create policy "Only the service role reads reservations"
  on public.storage_reservations for select to service_role
  using (true);

-- Checks the grant against the bucket's limits and the plan's quota, and records it: ONE
-- statement decides and reserves. The upsert takes the user's storage_usage row lock; a
-- concurrent grant waits on it and then re-evaluates the WHERE against the row's new version
-- (READ COMMITTED's recheck), so however many grants run at once the reserved sum never passes
-- the quota. outcome: reserved | no_such_bucket | mime_type_not_allowed | too_large |
-- quota_exceeded (nothing recorded unless reserved).
create or replace function public.reserve_storage_bytes(
  p_user_id uuid,
  p_bucket_id text,
  p_object_name text,
  p_content_type text,
  p_size_bytes bigint,
  p_expires_at timestamptz
)
  returns table (outcome text, used_bytes bigint, quota_bytes bigint, size_limit bigint)
  language plpgsql
  volatile
  set search_path = ''
as $$
declare
  v_bucket storage.buckets%rowtype;
begin
  if p_user_id is null or p_object_name is null or p_size_bytes is null or p_size_bytes <= 0 then
    raise exception 'p_user_id, p_object_name and a positive p_size_bytes are required'
      using errcode = '22023';
  end if;
  select pl.storage_quota_bytes into quota_bytes
    from public.profiles as p join public.plans as pl on pl.id = p.plan_id
   where p.id = p_user_id;
  if not found then
    raise exception 'no profile for user %', p_user_id using errcode = 'P0002';
  end if;

  select * into v_bucket from storage.buckets as b where b.id = p_bucket_id;
  if not found or not exists (select from public.storage_retention as r where r.bucket_id = p_bucket_id) then
    outcome := 'no_such_bucket';
  elsif v_bucket.allowed_mime_types is not null
        and not (p_content_type = any (v_bucket.allowed_mime_types)) then
    outcome := 'mime_type_not_allowed';
  elsif v_bucket.file_size_limit is not null and p_size_bytes > v_bucket.file_size_limit then
    outcome := 'too_large';
  else
    with counted as (
      insert into public.storage_usage as u (user_id, used_bytes)
      select p_user_id, p_size_bytes where p_size_bytes <= quota_bytes
      on conflict (user_id) do update
        set used_bytes = u.used_bytes + excluded.used_bytes, updated_at = pg_catalog.now()
        where u.used_bytes + excluded.used_bytes <= quota_bytes
      returning u.used_bytes
    ), reserved as (
      insert into public.storage_reservations (bucket_id, object_name, user_id, size_bytes, expires_at)
      select p_bucket_id, p_object_name, p_user_id, p_size_bytes, p_expires_at from counted
    )
    select c.used_bytes into used_bytes from counted as c;
    outcome := case when used_bytes is null then 'quota_exceeded' else 'reserved' end;
  end if;
  size_limit := v_bucket.file_size_limit;

  if used_bytes is null then
    select coalesce((select u.used_bytes from public.storage_usage as u where u.user_id = p_user_id), 0)
      into used_bytes;
  end if;
  return next;
end
$$;
comment on function public.reserve_storage_bytes(uuid, text, text, text, bigint, timestamptz) is
  'Reserves p_size_bytes of the user''s storage quota for an upload grant of p_bucket_id/p_object_name if the '
  'bucket is one of ours, takes p_content_type and p_size_bytes, and the quota has room; records nothing '
  'otherwise. Returns (outcome, used_bytes, quota_bytes, size_limit). Atomic under any concurrency.';
revoke execute on function public.reserve_storage_bytes(uuid, text, text, text, bigint, timestamptz)
  from public, anon, authenticated;
grant execute on function public.reserve_storage_bytes(uuid, text, text, text, bigint, timestamptz)
  to service_role;

-- Gives back the bytes of objects that were removed through the Storage API: for a grant still
-- pending, what it reserved (that is what the counter holds), otherwise the object's real size.
-- The owner is the first folder of each name. Never below zero.
create or replace function public.release_storage_bytes(
  p_bucket_id text,
  p_object_names text[],
  p_sizes bigint[]
)
  returns bigint
  language sql
  volatile
  set search_path = ''
as $$
  with removed as (
    select n.name, n.size from unnest(p_object_names, p_sizes) as n(name, size)  -- multi-array unnest is FROM syntax: no schema
  ), pending as (
    delete from public.storage_reservations as r
     using removed
     where r.bucket_id = p_bucket_id and r.object_name = removed.name
    returning r.object_name, r.size_bytes
  ), released as (
    select (storage.foldername(removed.name))[1]::uuid as user_id,
           pg_catalog.sum(coalesce(pending.size_bytes, removed.size, 0))::bigint as bytes
      from removed left join pending on pending.object_name = removed.name
     where (storage.foldername(removed.name))[1] ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
     group by 1
  ), updated as (
    update public.storage_usage as u
       set used_bytes = greatest(u.used_bytes - released.bytes, 0), updated_at = pg_catalog.now()
      from released
     where u.user_id = released.user_id
    returning released.bytes
  )
  select coalesce(pg_catalog.sum(bytes), 0)::bigint from updated
$$;
comment on function public.release_storage_bytes(text, text[], bigint[]) is
  'Gives back the bytes of objects removed from p_bucket_id (names and their real sizes, in step): a pending '
  'grant''s reservation, or the real size. Returns the bytes released.';
revoke execute on function public.release_storage_bytes(text, text[], bigint[]) from public, anon, authenticated;
grant execute on function public.release_storage_bytes(text, text[], bigint[]) to service_role;

-- Every grant whose signed URL expired more than p_grace ago is settled: the counter moves from
-- the reserved size to the real size of the object that arrived, or to nothing. The grace covers
-- an upload that started just before the URL expired.
create or replace function public.settle_storage_reservations(p_grace interval default '10 minutes')
  returns integer
  language sql
  volatile
  set search_path = ''
as $$
  with expired as (
    delete from public.storage_reservations as r
     where r.expires_at < pg_catalog.now() - p_grace
    returning r.bucket_id, r.object_name, r.user_id, r.size_bytes
  ), delta as (
    select e.user_id,
           pg_catalog.sum(coalesce((o.metadata ->> 'size')::bigint, 0) - e.size_bytes)::bigint as bytes,
           pg_catalog.count(*)::integer as settled
      from expired as e
      left join storage.objects as o on o.bucket_id = e.bucket_id and o.name = e.object_name
     group by e.user_id
  ), updated as (
    update public.storage_usage as u
       set used_bytes = greatest(u.used_bytes + delta.bytes, 0), updated_at = pg_catalog.now()
      from delta
     where u.user_id = delta.user_id
    returning delta.settled
  )
  select coalesce(pg_catalog.sum(settled), 0)::integer from updated
$$;
comment on function public.settle_storage_reservations(interval) is
  'Settles the upload grants whose URL expired over p_grace ago: reserved bytes become the real size of the '
  'object that arrived, or are released. Returns how many were settled. Run by pg_cron.';
revoke execute on function public.settle_storage_reservations(interval) from public, anon, authenticated;
grant execute on function public.settle_storage_reservations(interval) to service_role;

-- -------------------------------------------------------------------------------------------
-- Retention
-- -------------------------------------------------------------------------------------------
create table if not exists public.storage_retention (
  bucket_id text     primary key references storage.buckets (id) on delete cascade,
  -- null: kept as long as the account lives (account deletion removes it).
  keep_for  interval constraint storage_retention_keep_for_positive check (keep_for > interval '0')
);
comment on table public.storage_retention is
  'The buckets this backend manages, and how long each keeps an object after its last use (created, '
  'replaced or read); null keeps it while the account lives.';
insert into public.storage_retention (bucket_id, keep_for) values
  ('user-uploads', interval '90 days'),
  ('avatars', null)
on conflict (bucket_id) do nothing;
alter table public.storage_retention enable row level security;
revoke all on table public.storage_retention from anon, authenticated;
drop policy if exists "Only the service role reads storage retention" on public.storage_retention;
create policy "Only the service role reads storage retention"
  on public.storage_retention for select to service_role
  using (true);

-- One `storage.cleanup` job per 100 objects past their bucket's retention (the job deletes them
-- through the Storage API and releases their bytes). Keyed by the day and the batch's first
-- name, so a second run on the same day queues nothing new.
create or replace function public.enqueue_storage_cleanup()
  returns integer
  language sql
  volatile
  set search_path = ''
as $$
  with expired as (
    select o.bucket_id, o.name,
           (pg_catalog.row_number() over (partition by o.bucket_id order by o.name) - 1) / 100 as batch
      from storage.objects as o
      join public.storage_retention as r on r.bucket_id = o.bucket_id and r.keep_for is not null
     where greatest(o.created_at, o.updated_at, coalesce(o.last_accessed_at, o.created_at))
           < pg_catalog.now() - r.keep_for
  ), batches as (
    select bucket_id, pg_catalog.array_agg(name order by name) as names
      from expired group by bucket_id, batch
  )
  select pg_catalog.count(public.enqueue_job(
           'storage.cleanup',
           pg_catalog.jsonb_build_object('bucket', b.bucket_id, 'names', pg_catalog.to_jsonb(b.names)),
           pg_catalog.now(), 0,
           'storage.cleanup:' || b.bucket_id || ':' || pg_catalog.to_char(pg_catalog.now(), 'YYYY-MM-DD')
             || ':' || b.names[1]))::integer
    from batches as b
$$;
comment on function public.enqueue_storage_cleanup() is
  'Queues one storage.cleanup job per 100 objects kept longer than their bucket''s storage_retention. '
  'Returns the jobs queued. Run daily by pg_cron.';
revoke execute on function public.enqueue_storage_cleanup() from public, anon, authenticated;
grant execute on function public.enqueue_storage_cleanup() to service_role;

-- In an account's deletion transaction: `storage.cleanup` jobs for every object under the
-- account's folder in every bucket this backend manages (storage.objects has no key to
-- auth.users, so nothing cascades), at once; and, for uploads granted but not yet arrived, a
-- batch that runs once their URLs have expired, so an upload still under way goes too.
create or replace function public.enqueue_account_storage_removal(p_user_id uuid)
  returns integer
  language sql
  volatile
  set search_path = ''
as $$
  with owned as (
    select o.bucket_id, o.name, pg_catalog.now() as run_at
      from storage.objects as o
     where o.name like p_user_id::text || '/%'
       and o.bucket_id in (select r.bucket_id from public.storage_retention as r)
    union all
    select r.bucket_id, r.object_name, r.expires_at + interval '15 minutes'
      from public.storage_reservations as r
     where r.user_id = p_user_id
  ), numbered as (
    select owned.*, (pg_catalog.row_number() over (partition by bucket_id, run_at = pg_catalog.now()
                                                   order by name) - 1) / 100 as batch
      from owned
  ), batches as (
    select bucket_id, pg_catalog.array_agg(name order by name) as names, pg_catalog.max(run_at) as run_at
      from numbered group by bucket_id, run_at = pg_catalog.now(), batch
  )
  select pg_catalog.count(public.enqueue_job(
           'storage.cleanup',
           pg_catalog.jsonb_build_object('bucket', b.bucket_id, 'names', pg_catalog.to_jsonb(b.names)),
           b.run_at))::integer
    from batches as b
$$;
comment on function public.enqueue_account_storage_removal(uuid) is
  'Queues storage.cleanup jobs for every object of the user''s folders (and, after their URLs expire, '
  'for their pending upload grants). Call it in the account''s deletion transaction. Returns the jobs queued.';
revoke execute on function public.enqueue_account_storage_removal(uuid) from public, anon, authenticated;
grant execute on function public.enqueue_account_storage_removal(uuid) to service_role;

select cron.schedule('settle-storage-reservations', '*/5 * * * *',
  $cmd$select public.settle_storage_reservations()$cmd$);
select cron.schedule('enqueue-storage-cleanup', '40 0 * * *',
  $cmd$select public.enqueue_storage_cleanup()$cmd$);
