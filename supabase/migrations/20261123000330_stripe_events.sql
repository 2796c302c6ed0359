-- Stripe events: every webhook event received, keyed by Stripe's event id, so that a redelivered
-- event is recognised (Stripe delivers at least once, possibly out of order) and processing can
-- be retried from the stored payload.
--
-- The webhook records and claims an event with
--   insert into public.stripe_events (id, type, created, payload)
--   values ($1, $2, to_timestamp($3), $4)
--   on conflict (id) do nothing
--   returning id;                         -- no row: already received
-- and marks it done with `update ... set processed_at = now(), last_error = null`, or keeps
-- processed_at NULL and records last_error so that a retry picks it up (see the partial index).
-- Apply events in `created` order and ignore ones older than what a profile already reflects.
--
-- service_role only: RLS on with no policies, and no privileges for anon/authenticated.
-- Re-runnable: every statement is idempotent.

create table if not exists public.stripe_events (
  id           text        primary key
                           constraint stripe_events_id_format check (id ~ '^evt_[A-Za-z0-9_]{1,250}$'),
  type         text        not null constraint stripe_events_type_not_blank check (pg_catalog.btrim(type) <> ''),
  -- The event's own `created` (when it happened at Stripe), not when it reached us.
  created      timestamptz not null,
  payload      jsonb       not null,
  received_at  timestamptz not null default now(),
  processed_at timestamptz,
  last_error   text
);
comment on table public.stripe_events is
  'Stripe webhook events by event id (evt_...), for idempotent, retryable processing. processed_at NULL = still to do.';
comment on column public.stripe_events.created is 'The event''s created time at Stripe.';
comment on column public.stripe_events.processed_at is 'When processing succeeded; NULL while pending or failed.';

-- What a retry sweep reads: the unprocessed events, oldest first.
create index if not exists stripe_events_unprocessed_idx
  on public.stripe_events (created)
  where processed_at is null;

alter table public.stripe_events enable row level security;
revoke all on table public.stripe_events from anon, authenticated;
grant all on table public.stripe_events to service_role;
