-- What one metered request may cost the operator, per plan. The functions read these with the
-- plan (profile cache) and always send them to the provider; nothing a client sends can raise them.
--
--   max_output_tokens   sent as max_completion_tokens on every model call
--   chat_history_chars  chat sends the newest earlier messages that fit this many characters
--                       (the new message always goes; it is at most 8,000 characters itself)
--   cache_hit_cost      units an answer from the AI response cache takes from the monthly quota.
--                       0 makes cache hits free; they are then answered but not stored, so a
--                       free answer cannot grow history tables either.
--
-- Re-runnable: the columns are added if missing; the defaults of the three seeded plans are set
-- only where a column was just added (an operator's later change is kept).

alter table public.plans
  add column if not exists max_output_tokens integer not null default 800
    constraint plans_max_output_tokens_positive check (max_output_tokens > 0),
  add column if not exists chat_history_chars integer not null default 24000
    constraint plans_chat_history_chars_positive check (chat_history_chars > 0),
  add column if not exists cache_hit_cost integer not null default 1
    constraint plans_cache_hit_cost_non_negative check (cache_hit_cost >= 0);

comment on column public.plans.max_output_tokens is
  'Output tokens one model call may produce (max_completion_tokens), whatever the client asks.';
comment on column public.plans.chat_history_chars is
  'Characters of earlier chat messages sent with a new one; the oldest are left out first.';
comment on column public.plans.cache_hit_cost is
  'Units an AI-cache answer takes from the monthly quota; 0 = free, and then not stored.';

update public.plans as pl
   set max_output_tokens  = seed.max_output_tokens,
       chat_history_chars = seed.chat_history_chars
  from (values ('pro', 2000, 64000), ('team', 4000, 128000))
         as seed (id, max_output_tokens, chat_history_chars)
 where pl.id = seed.id
   and pl.max_output_tokens = 800
   and pl.chat_history_chars = 24000;
