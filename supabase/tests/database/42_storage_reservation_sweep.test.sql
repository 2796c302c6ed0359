-- The sweep (20261206006100): a grant whose URL expired is settled to the real size of what
-- arrived, or released when nothing did; a grant still valid is left alone.
begin;
create extension if not exists pgtap with schema extensions;

select plan(4);

insert into auth.users (id, email) values ('f1000000-0000-4000-8000-00000000000a', 's@example.test');
create temporary table granted on commit drop as
select (public.reserve_storage_bytes('f1000000-0000-4000-8000-00000000000a', 'user-uploads',
  'f1000000-0000-4000-8000-00000000000a/p/' || name, 'image/png', 1000, expires_at)).outcome
  from (values ('abandoned.png', now() - interval '3 hours'),
               ('arrived.png', now() - interval '3 hours'),
               ('pending.png', now() + interval '1 hour')) as g(name, expires_at);
insert into storage.objects (bucket_id, name, metadata)
values ('user-uploads', 'f1000000-0000-4000-8000-00000000000a/p/arrived.png', '{"size":400}');

select is((select used_bytes from public.storage_usage where user_id = 'f1000000-0000-4000-8000-00000000000a')::int, 3000, 'three grants hold 3,000 bytes');
select is(public.settle_storage_reservations(), 2, 'the two expired grants are settled');
select is((select used_bytes from public.storage_usage where user_id = 'f1000000-0000-4000-8000-00000000000a')::int, 1400,
  'the abandoned one is released, the arrived one counts its real size, the pending one its grant');
select results_eq(
  $$select object_name from public.storage_reservations
     where user_id = 'f1000000-0000-4000-8000-00000000000a'$$,
  $$values ('f1000000-0000-4000-8000-00000000000a/p/pending.png')$$,
  'only the grant still valid stays reserved'
);

select * from finish();
rollback;
