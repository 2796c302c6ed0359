-- Stripe events: idempotent recording by event id and the unprocessed index.
begin;
create extension if not exists pgtap with schema extensions;

select plan(12);

select has_table('public', 'stripe_events', 'public.stripe_events exists');
select col_is_pk('public', 'stripe_events', 'id', 'events are keyed by the Stripe event id');
select columns_are('public', 'stripe_events', array[
  'id', 'type', 'created', 'payload', 'received_at', 'processed_at', 'last_error', 'redacted_at'
], 'stripe_events has exactly the expected columns');
select col_type_is('public', 'stripe_events', 'created', 'timestamp with time zone', 'created is a timestamptz');
select ok(
  exists (select from pg_index i
           where i.indrelid = 'public.stripe_events'::regclass
             and pg_get_expr(i.indpred, i.indrelid) = '(processed_at IS NULL)'),
  'a partial index covers the unprocessed events'
);

-- The webhook's insert: a redelivery is recognised by its id.
select results_eq(
  $$insert into public.stripe_events (id, type, created, payload)
    values ('evt_1Test', 'customer.subscription.updated', to_timestamp(1763856000), '{"id":"evt_1Test"}')
    on conflict (id) do nothing
    returning id$$,
  $$values ('evt_1Test'::text)$$,
  'a new event is recorded'
);
select is_empty(
  $$insert into public.stripe_events (id, type, created, payload)
    values ('evt_1Test', 'customer.subscription.updated', to_timestamp(1763856000), '{"id":"evt_1Test"}')
    on conflict (id) do nothing
    returning id$$,
  'a redelivered event is recognised and not recorded twice'
);
select results_eq(
  $$select received_at = now(), processed_at, created = '2025-11-23 00:00:00+00'::timestamptz
      from public.stripe_events where id = 'evt_1Test'$$,
  $$values (true, null::timestamptz, true)$$,
  'a recorded event has received_at, keeps Stripe''s created, and is unprocessed'
);
select results_eq(
  $$select id from public.stripe_events where processed_at is null and id = 'evt_1Test'$$,
  $$values ('evt_1Test'::text)$$,
  'unprocessed events can be found'
);
update public.stripe_events set processed_at = now() where id = 'evt_1Test';
select is_empty(
  $$select id from public.stripe_events where processed_at is null and id = 'evt_1Test'$$,
  'a processed event is no longer pending'
);

select throws_ok(
  $$insert into public.stripe_events (id, type, created, payload) values ('cus_123', 'x', now(), '{}')$$,
  '23514', null,
  'an id that is not a Stripe event id is rejected'
);
select throws_ok(
  $$insert into public.stripe_events (id, type, created, payload) values ('evt_2', 'x', now(), null)$$,
  '23502', null,
  'the payload is required'
);

select * from finish();
rollback;
