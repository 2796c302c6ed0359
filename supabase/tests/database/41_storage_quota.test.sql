-- The storage quota (20261206006100): a grant is checked against the bucket's limits and the
-- plan's quota and reserved in one statement; nothing is recorded for a refused one; a removed
-- object gives back what it holds.
begin;
create extension if not exists pgtap with schema extensions;

select plan(10);

insert into auth.users (id, email) values ('f0000000-0000-4000-8000-00000000000a', 'q@example.test');
update public.plans set storage_quota_bytes = 10000 where id = 'free';

select results_eq(
  $$select id, storage_quota_bytes from public.plans where id in ('pro', 'team') order by id$$,
  $$values ('pro', 5368709120::bigint), ('team', 21474836480::bigint)$$,
  'paid plans keep 5 GB and 20 GB'
);

create temporary table grants on commit drop as
select n, (public.reserve_storage_bytes('f0000000-0000-4000-8000-00000000000a', 'user-uploads',
          'f0000000-0000-4000-8000-00000000000a/p/' || n || '.png', 'image/png', 1000,
          now() + interval '2 hours')).*
  from generate_series(1, 1000) as n;

select is((select count(*) from grants where outcome = 'reserved')::int, 10,
  'of 1,000 grants of 1,000 bytes with room for 10,000, exactly 10 are reserved');
select is((select count(*) from grants where outcome = 'quota_exceeded')::int, 990,
  'the rest are refused as quota_exceeded');
select results_eq(
  $$select used_bytes, quota_bytes from grants where n = 1000$$,
  $$values (10000::bigint, 10000::bigint)$$,
  'a refusal reports the bytes used and the quota'
);
select is((select count(*) from public.storage_reservations where user_id = 'f0000000-0000-4000-8000-00000000000a')::int, 10,
  'only the granted uploads are reserved');

select is(
  (public.reserve_storage_bytes('f0000000-0000-4000-8000-00000000000a', 'user-uploads', 'f0000000-0000-4000-8000-00000000000a/p/x.html',
   'text/html', 10, now())).outcome,
  'mime_type_not_allowed', 'a type the bucket does not take is refused'
);
select is(
  (public.reserve_storage_bytes('f0000000-0000-4000-8000-00000000000a', 'avatars', 'f0000000-0000-4000-8000-00000000000a/p/big.png',
   'image/png', 1048577, now())).outcome,
  'too_large', 'a size over the bucket''s limit is refused'
);
select is(
  (public.reserve_storage_bytes('f0000000-0000-4000-8000-00000000000a', 'somebody-elses', 'f0000000-0000-4000-8000-00000000000a/p/a.png',
   'image/png', 1, now())).outcome,
  'no_such_bucket', 'a bucket this backend does not manage is refused'
);

-- One of the grants arrived at 600 bytes and is removed; another is removed before the sweep.
select is(
  public.release_storage_bytes('user-uploads',
    array['f0000000-0000-4000-8000-00000000000a/p/1.png', 'f0000000-0000-4000-8000-00000000000a/p/2.png'],
    array[600, 0]::bigint[]),
  2000::bigint, 'removing objects of pending grants gives back what the grants reserved'
);
select is(
  public.release_storage_bytes('user-uploads', array['f0000000-0000-4000-8000-00000000000a/p/settled.png'],
    array[700]::bigint[]),
  700::bigint, 'removing a settled object gives back its real size'
);

select * from finish();
rollback;
