-- Stripe events keep no personal data longer than they are needed. An event is applied within
-- minutes (or retried for hours); after 30 days only its ids, types, amounts and times are of
-- use, so the customer's email, name, phone and addresses are taken out of the stored payload,
-- wherever in it they appear, by a daily pg_cron job.
--
-- service_role only (and pg_cron, as postgres).
-- Re-runnable: every statement is idempotent.

alter table public.stripe_events
  add column if not exists redacted_at timestamptz;
comment on column public.stripe_events.redacted_at is
  'When the personal data was taken out of payload (redact_stripe_events); NULL while it is whole.';

-- The keys Stripe uses for a person's contact details, in customers, Checkout sessions,
-- invoices, charges and payment methods alike.
create or replace function public.without_personal_data(p_value jsonb)
  returns jsonb
  language plpgsql
  immutable
  set search_path = ''
as $$
begin
  case pg_catalog.jsonb_typeof(p_value)
    when 'object' then
      return coalesce(
        (select pg_catalog.jsonb_object_agg(e.key, public.without_personal_data(e.value))
           from pg_catalog.jsonb_each(p_value) as e
          where e.key <> all (array[
            'email', 'name', 'phone', 'address', 'shipping', 'shipping_details',
            'customer_email', 'customer_name', 'customer_phone', 'customer_address',
            'customer_shipping', 'customer_details', 'billing_details', 'receipt_email'])),
        '{}'::jsonb);
    when 'array' then
      return coalesce(
        (select pg_catalog.jsonb_agg(public.without_personal_data(a.value) order by a.position)
           from pg_catalog.jsonb_array_elements(p_value) with ordinality as a (value, position)),
        '[]'::jsonb);
    else
      return p_value;
  end case;
end
$$;
comment on function public.without_personal_data(jsonb) is
  'p_value with every email, name, phone, address and shipping key removed, at any depth.';
revoke execute on function public.without_personal_data(jsonb) from public, anon, authenticated;
grant execute on function public.without_personal_data(jsonb) to service_role;

create or replace function public.redact_stripe_events(p_older_than interval default '30 days')
  returns integer
  language sql
  volatile
  set search_path = ''
as $$
  with redacted as (
    update public.stripe_events as e
       set payload     = public.without_personal_data(e.payload),
           redacted_at = pg_catalog.now()
     where e.received_at < pg_catalog.now() - p_older_than
       and e.redacted_at is null
    returning 1
  )
  select pg_catalog.count(*)::integer from redacted
$$;
comment on function public.redact_stripe_events(interval) is
  'Takes personal data out of the payload of Stripe events received more than p_older_than ago; returns how many.';
revoke execute on function public.redact_stripe_events(interval) from public, anon, authenticated;
grant execute on function public.redact_stripe_events(interval) to service_role;

select cron.schedule('redact-stripe-events', '55 0 * * *',
  $cmd$select public.redact_stripe_events()$cmd$);
