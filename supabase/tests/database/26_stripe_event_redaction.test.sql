-- Stripe events older than 30 days keep no personal data (20261206000300).
begin;
create extension if not exists pgtap with schema extensions;

select plan(6);

insert into public.stripe_events (id, type, created, payload, received_at) values
  ('evt_redaction_old', 'checkout.session.completed', now() - interval '40 days',
   '{"id": "evt_redaction_old", "data": {"object": {"id": "cs_1", "customer": "cus_1",
     "customer_email": "ann@example.test",
     "customer_details": {"email": "ann@example.test", "name": "Ann", "address": {"city": "Oslo"}},
     "amount_total": 900,
     "lines": [{"id": "li_1", "billing_details": {"name": "Ann"}, "price": "price_pro"}]}}}',
   now() - interval '40 days'),
  ('evt_redaction_new', 'checkout.session.completed', now() - interval '1 day',
   '{"id": "evt_redaction_new", "data": {"object": {"customer_email": "bob@example.test"}}}',
   now() - interval '1 day');

select is(public.redact_stripe_events(), 1, 'one event is old enough to redact');
select is(
  (select payload from public.stripe_events where id = 'evt_redaction_old'),
  '{"id": "evt_redaction_old", "data": {"object": {"id": "cs_1", "customer": "cus_1",
    "amount_total": 900, "lines": [{"id": "li_1", "price": "price_pro"}]}}}'::jsonb,
  'its emails, names and addresses are gone at every depth; ids, amounts and prices stay'
);
select isnt(
  (select redacted_at from public.stripe_events where id = 'evt_redaction_old'), null,
  'it is marked as redacted'
);
select is(
  (select payload #>> '{data,object,customer_email}' from public.stripe_events
    where id = 'evt_redaction_new'),
  'bob@example.test',
  'an event from yesterday keeps its payload whole'
);
select is(public.redact_stripe_events(), 0, 'a second run finds nothing left to redact');
select is(
  (select schedule from cron.job where jobname = 'redact-stripe-events'), '55 0 * * *',
  'pg_cron redacts once a day'
);

select * from finish();
rollback;
