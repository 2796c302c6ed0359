-- The photo buckets and who may touch which objects (20261206006100): each user only the objects
-- under their own folder, in both buckets; another user and anon nothing.
begin;
create extension if not exists pgtap with schema extensions;

select plan(12);

select results_eq(
  $$select id, public, file_size_limit, allowed_mime_types from storage.buckets
     where id in ('user-uploads', 'avatars') order by id$$,
  $$values ('avatars', true, 1048576::bigint, array['image/jpeg', 'image/png', 'image/webp']),
           ('user-uploads', false, 5242880::bigint,
            array['image/jpeg', 'image/png', 'image/webp', 'image/heic'])$$,
  'the buckets have the limits config.toml declares'
);

insert into auth.users (id, email) values
  ('e0000000-0000-4000-8000-00000000000a', 'a@example.test'),
  ('e0000000-0000-4000-8000-00000000000b', 'b@example.test');

-- As user A
set local role authenticated;
select set_config('request.jwt.claims',
  '{"sub":"e0000000-0000-4000-8000-00000000000a","role":"authenticated"}', true);
select lives_ok(
  $$insert into storage.objects (bucket_id, name, metadata) values
      ('user-uploads', 'e0000000-0000-4000-8000-00000000000a/progress/one.png', '{"size":10}'),
      ('avatars', 'e0000000-0000-4000-8000-00000000000a/avatar/me.png', '{"size":5}')$$,
  'a user may upload into their own folder in each bucket'
);
select throws_ok(
  $$insert into storage.objects (bucket_id, name)
    values ('user-uploads', 'e0000000-0000-4000-8000-00000000000b/progress/planted.png')$$,
  '42501', null, 'a user may not upload into another user''s folder'
);
select throws_ok(
  $$insert into storage.objects (bucket_id, name) values ('user-uploads', 'loose.png')$$,
  '42501', null, 'a user may not upload outside any user folder'
);
select is((select count(*) from storage.objects)::int, 2, 'a user reads their own objects');
select results_eq(
  $$with changed as (update storage.objects set metadata = '{"size":11}'
                      where name like 'e0000000-0000-4000-8000-00000000000a/%' returning 1)
    select count(*)::int from changed$$,
  $$values (2)$$,
  'a user may replace their own objects'
);
reset role;

-- As user B
set local role authenticated;
select set_config('request.jwt.claims',
  '{"sub":"e0000000-0000-4000-8000-00000000000b","role":"authenticated"}', true);
select is((select count(*) from storage.objects)::int, 0, 'another user reads none of them');
select results_eq(
  $$with changed as (update storage.objects set metadata = '{}' returning 1)
    select count(*)::int from changed$$,
  $$values (0)$$,
  'another user changes none of them'
);
select results_eq(
  $$with gone as (delete from storage.objects returning 1) select count(*)::int from gone$$,
  $$values (0)$$,
  'another user deletes none of them'
);
reset role;

-- As anon
set local role anon;
select set_config('request.jwt.claims', '{"role":"anon"}', true);
select is((select count(*) from storage.objects)::int, 0, 'anon reads no object');
select throws_ok(
  $$insert into storage.objects (bucket_id, name)
    values ('avatars', 'e0000000-0000-4000-8000-00000000000a/avatar/x.png')$$,
  '42501', null, 'anon may not upload'
);
reset role;

-- A again: deletes their own
set local role authenticated;
select set_config('request.jwt.claims',
  '{"sub":"e0000000-0000-4000-8000-00000000000a","role":"authenticated"}', true);
select results_eq(
  $$with gone as (delete from storage.objects returning 1) select count(*)::int from gone$$,
  $$values (2)$$,
  'a user may delete their own objects'
);
reset role;

select * from finish();
rollback;
