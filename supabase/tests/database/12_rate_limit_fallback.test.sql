-- The Postgres rate-limit fallback: rate_limit_hit's fixed window and the purge.
begin;
create extension if not exists pgtap with schema extensions;

select plan(21);

select is(
  (select relpersistence from pg_class where oid = 'public.rate_limit_hits'::regclass), 'u'::"char",
  'rate_limit_hits is unlogged'
);
select is(
  pg_get_function_result('public.rate_limit_hit(text,integer,integer)'::regprocedure),
  'TABLE(allowed boolean, remaining integer, reset_at timestamp with time zone)',
  'rate_limit_hit returns (allowed, remaining, reset_at)'
);

-- The window rate_limit_hit must be in: now() (the transaction's time) aligned down to 60 s.
create temporary table w on commit drop as
select to_timestamp(floor(extract(epoch from now()) / 60) * 60) + interval '60 seconds' as resets_at;

-- ---------------------------------------------------------------------------------------------
-- Exactly N per window
-- ---------------------------------------------------------------------------------------------
select results_eq(
  $$select allowed, remaining, reset_at = (select resets_at from w) from public.rate_limit_hit('test:alice', 3, 60)$$,
  $$values (true, 2, true)$$,
  'hit 1 of 3 is allowed, 2 remain, the window resets at its end'
);
select results_eq(
  $$select allowed, remaining from public.rate_limit_hit('test:alice', 3, 60)$$,
  $$values (true, 1)$$,
  'hit 2 of 3 is allowed, 1 remains'
);
select results_eq(
  $$select allowed, remaining from public.rate_limit_hit('test:alice', 3, 60)$$,
  $$values (true, 0)$$,
  'hit 3 of 3 is allowed, none remain'
);
select results_eq(
  $$select allowed, remaining, reset_at = (select resets_at from w) from public.rate_limit_hit('test:alice', 3, 60)$$,
  $$values (false, 0, true)$$,
  'hit 4 is refused until the window resets'
);
select results_eq(
  $$select allowed from public.rate_limit_hit('test:alice', 3, 60)$$,
  $$values (false)$$,
  'hit 5 is refused as well'
);
select is(
  (select count(*) filter (where h.allowed) from generate_series(1, 25) as g(i)
     cross join lateral public.rate_limit_hit('test:bulk' || left(g.i::text, 0), 10, 60) as h),
  10::bigint,
  'of 25 hits on a key limited to 10, exactly 10 are allowed'
);

select results_eq(
  $$select allowed, remaining from public.rate_limit_hit('test:bob', 3, 60)$$,
  $$values (true, 2)$$,
  'another key has its own window'
);
select results_eq(
  $$select allowed, remaining from public.rate_limit_hit('test:alice', 100, 3600)$$,
  $$values (true, 99)$$,
  'the same key over another window length is counted separately'
);

-- The next window starts from zero: move alice's stored window one window back.
update public.rate_limit_hits
   set window_start = window_start - interval '60 seconds', expires_at = expires_at - interval '60 seconds'
 where key = 'test:alice' and window_seconds = 60;
select results_eq(
  $$select allowed, remaining, reset_at = (select resets_at from w) from public.rate_limit_hit('test:alice', 3, 60)$$,
  $$values (true, 2, true)$$,
  'a new window starts counting from zero'
);
select is(
  (select row(hits, window_start + interval '60 seconds' = (select resets_at from w))::text
     from public.rate_limit_hits where key = 'test:alice' and window_seconds = 60),
  row(1, true)::text,
  'the stored counter was reset to the new window'
);

-- A hit stamped in an older window than the stored one counts in the stored window.
update public.rate_limit_hits
   set window_start = window_start + interval '60 seconds', expires_at = expires_at + interval '60 seconds'
 where key = 'test:bob' and window_seconds = 60;
select results_eq(
  $$select allowed, remaining, reset_at = (select resets_at + interval '60 seconds' from w)
      from public.rate_limit_hit('test:bob', 3, 60)$$,
  $$values (true, 1, true)$$,
  'a late hit from the previous window neither resets nor rewinds the current window'
);

-- ---------------------------------------------------------------------------------------------
-- Arguments
-- ---------------------------------------------------------------------------------------------
select throws_ok($$select * from public.rate_limit_hit(null, 3, 60)$$, '22023', null, 'a NULL key is rejected');
select throws_ok($$select * from public.rate_limit_hit('', 3, 60)$$, '22023', null, 'an empty key is rejected');
select throws_ok($$select * from public.rate_limit_hit(repeat('k', 513), 3, 60)$$, '22023', null, 'a key over 512 characters is rejected');
select throws_ok($$select * from public.rate_limit_hit('test:x', 0, 60)$$, '22023', null, 'a limit below 1 is rejected');
select throws_ok($$select * from public.rate_limit_hit('test:x', 3, 0)$$, '22023', null, 'a window below 1 s is rejected');
select throws_ok($$select * from public.rate_limit_hit('test:x', 3, 86401)$$, '22023', null, 'a window over a day is rejected');

-- ---------------------------------------------------------------------------------------------
-- Purge
-- ---------------------------------------------------------------------------------------------
delete from public.rate_limit_hits where key not like 'test:%';
update public.rate_limit_hits
   set window_start = now() - interval '10 minutes', expires_at = now() - interval '9 minutes'
 where key = 'test:bulk';
update public.rate_limit_hits
   set window_start = now() - interval '61 seconds', expires_at = now() - interval '1 second'
 where key = 'test:bob';
select is(public.purge_rate_limit_hits(), 2, 'purge deletes the two windows that have ended and says so');
select results_eq(
  $$select key, window_seconds from public.rate_limit_hits order by key, window_seconds$$,
  $$values ('test:alice'::text, 60), ('test:alice', 3600)$$,
  'live windows survive the purge'
);

select * from finish();
rollback;
