-- When user_statistics was last refreshed, so that the `statistics` function can say how old
-- the counts it answers are. The materialized view itself has no now()-stamped column on
-- purpose (a concurrent refresh rewrites only the rows that changed), so the time is kept in a
-- one-row table that refresh_user_statistics stamps in the same transaction as the refresh.
--
-- Re-runnable: every statement is idempotent.

create table if not exists public.user_statistics_refresh (
  singleton    boolean     primary key default true constraint user_statistics_refresh_one_row check (singleton),
  refreshed_at timestamptz not null
);
comment on table public.user_statistics_refresh is
  'One row: when public.user_statistics was last refreshed (by public.refresh_user_statistics). '
  'Signed-in users read it; only the refresh writes it.';

alter table public.user_statistics_refresh enable row level security;
drop policy if exists "Signed-in users read when the statistics were refreshed" on public.user_statistics_refresh;
create policy "Signed-in users read when the statistics were refreshed"
  on public.user_statistics_refresh
  for select
  to authenticated, service_role
  using (true);
revoke all on table public.user_statistics_refresh from public, anon, authenticated, service_role;
grant select on table public.user_statistics_refresh to authenticated, service_role;

-- The view was last made with data when its migration ran: that is its first refresh.
insert into public.user_statistics_refresh (refreshed_at) values (now())
  on conflict (singleton) do nothing;

create or replace function public.refresh_user_statistics()
  returns void
  language plpgsql
  volatile
  set search_path = ''
as $$
begin
  refresh materialized view concurrently public.user_statistics;
  insert into public.user_statistics_refresh (refreshed_at) values (pg_catalog.now())
    on conflict (singleton) do update set refreshed_at = excluded.refreshed_at;
end
$$;
comment on function public.refresh_user_statistics() is
  'REFRESH MATERIALIZED VIEW CONCURRENTLY public.user_statistics (readers never block) and stamps '
  'public.user_statistics_refresh. Run hourly by pg_cron; must be run by the owner (postgres).';
revoke execute on function public.refresh_user_statistics() from public, anon, authenticated, service_role;
