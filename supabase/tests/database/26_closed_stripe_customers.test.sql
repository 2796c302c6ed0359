-- Closed Stripe customers: closing one records it and queues stripe.close_customer once; service role only.
begin;
create extension if not exists pgtap with schema extensions;

select plan(7);

select has_table('public', 'closed_stripe_customers', 'public.closed_stripe_customers exists');
select ok(
  (select relrowsecurity from pg_class where oid = 'public.closed_stripe_customers'::regclass),
  'closed_stripe_customers has row level security enabled'
);

select public.close_stripe_customer('cus_pgtapClosed');
select public.close_stripe_customer('cus_pgtapClosed');
select results_eq(
  $$select count(*)::int from public.closed_stripe_customers where customer_id = 'cus_pgtapClosed'$$,
  $$values (1)$$,
  'a customer closed twice is recorded once'
);
select results_eq(
  $$select type, payload, status from public.background_jobs
     where idempotency_key = 'stripe.close_customer:cus_pgtapClosed'$$,
  $$values ('stripe.close_customer'::text, '{"customer_id": "cus_pgtapClosed"}'::jsonb, 'queued'::text)$$,
  'closing queues one stripe.close_customer job for the customer'
);
select throws_ok(
  $$select public.close_stripe_customer(null)$$,
  '22023', null,
  'closing needs a customer'
);
select ok(
  not has_function_privilege('authenticated', 'public.close_stripe_customer(text)', 'execute')
  and not has_function_privilege('anon', 'public.close_stripe_customer(text)', 'execute')
  and has_function_privilege('service_role', 'public.close_stripe_customer(text)', 'execute'),
  'only the service role may close a customer'
);
select ok(
  not has_table_privilege('authenticated', 'public.closed_stripe_customers', 'select')
  and not has_table_privilege('anon', 'public.closed_stripe_customers', 'select'),
  'users cannot read the closed customers'
);

select * from finish();
rollback;
