-- Retention (20261206006100): objects past their bucket's retention are queued for removal in
-- batches of 100, once a day; avatars stay while the account lives.
begin;
create extension if not exists pgtap with schema extensions;

select plan(4);

insert into auth.users (id, email) values ('f2000000-0000-4000-8000-00000000000a', 'r@example.test');
insert into storage.objects (bucket_id, name, metadata, created_at, updated_at, last_accessed_at)
select 'user-uploads', 'f2000000-0000-4000-8000-00000000000a/old/' || n || '.png', '{"size":1}',
       now() - interval '100 days', now() - interval '100 days', now() - interval '91 days'
  from generate_series(1, 150) as n;
insert into storage.objects (bucket_id, name, metadata, created_at, updated_at, last_accessed_at) values
  ('user-uploads', 'f2000000-0000-4000-8000-00000000000a/old/read-lately.png', '{"size":1}',
   now() - interval '100 days', now() - interval '100 days', now() - interval '1 day'),
  ('avatars', 'f2000000-0000-4000-8000-00000000000a/avatar/me.png', '{"size":1}',
   now() - interval '400 days', now() - interval '400 days', now() - interval '400 days');

select is(public.enqueue_storage_cleanup(), 2, '150 expired objects make two jobs');
select results_eq(
  $$select sum(jsonb_array_length(payload -> 'names'))::int, max(jsonb_array_length(payload -> 'names'))
      from public.background_jobs where type = 'storage.cleanup' and payload -> 'names' ->> 0 like 'f2000000-%'$$,
  $$values (150, 100)$$,
  'every expired object is in a batch of at most 100, and nothing used lately or kept for life'
);
select is(public.enqueue_storage_cleanup(), 2, 'a second run the same day finds the same jobs');
select is((select count(*) from public.background_jobs where type = 'storage.cleanup' and payload -> 'names' ->> 0 like 'f2000000-%')::int, 2,
  'and queues nothing twice');

select * from finish();
rollback;
