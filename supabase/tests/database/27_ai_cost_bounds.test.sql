-- What one metered request may cost, per plan (20261206000100).
begin;
create extension if not exists pgtap with schema extensions;

select plan(4);

select results_eq(
  $$select id, max_output_tokens, chat_history_chars, cache_hit_cost
      from public.plans where id in ('free', 'pro', 'team') order by monthly_quota$$,
  $$values ('free'::text, 800, 24000, 1), ('pro', 2000, 64000, 1), ('team', 4000, 128000, 1)$$,
  'each seeded plan bounds output tokens and chat history, and charges one unit for a cache hit'
);
select throws_ok(
  $$update public.plans set max_output_tokens = 0 where id = 'free'$$, '23514', null,
  'a plan cannot allow zero output tokens'
);
select throws_ok(
  $$update public.plans set chat_history_chars = -1 where id = 'free'$$, '23514', null,
  'a plan cannot have a negative chat history budget'
);
select lives_ok(
  $$update public.plans set cache_hit_cost = 0 where id = 'free'$$,
  'a plan may make cache hits free'
);

select * from finish();
rollback;
