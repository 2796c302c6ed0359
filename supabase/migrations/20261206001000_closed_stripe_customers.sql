-- Closed Stripe customers: the Stripe customer of every deleted account, so that nothing it still
-- starts at Stripe keeps billing.
--
--   public.closed_stripe_customers  one row per Stripe customer whose account was deleted
--   public.close_stripe_customer    records the customer and queues the stripe.close_customer job
--                                   (cancel every subscription that can still bill, expire every
--                                   open Checkout session)
--
-- Deleting an account calls close_stripe_customer in the deleting transaction, so no account is
-- ever gone without its customer closed. A subscription that starts afterwards anyway (a
-- Checkout session paid before the job expired it, or a checkout whose events had not been
-- applied yet) reaches stripe.apply_event as a customer of no profile; finding the customer here
-- is what lets that job cancel and refund it rather than ignore it as a stranger's.
--
-- service_role only: RLS on with no policies, and no privileges for anon/authenticated.
-- Re-runnable: every statement is idempotent.

create table if not exists public.closed_stripe_customers (
  customer_id text        primary key
                          constraint closed_stripe_customers_id_format check (customer_id ~ '^cus_[A-Za-z0-9_]{1,250}$'),
  closed_at   timestamptz not null default now()
);
comment on table public.closed_stripe_customers is
  'Stripe customers (cus_...) of deleted accounts. Written only by close_stripe_customer; a subscription such a customer starts is canceled and refunded.';

alter table public.closed_stripe_customers enable row level security;
revoke all on table public.closed_stripe_customers from anon, authenticated;
grant all on table public.closed_stripe_customers to service_role;

create or replace function public.close_stripe_customer(p_customer_id text)
  returns void
  language plpgsql
  volatile
  set search_path = ''
as $$
begin
  if p_customer_id is null then
    raise exception 'p_customer_id is required' using errcode = '22023';
  end if;
  insert into public.closed_stripe_customers (customer_id)
  values (p_customer_id)
  on conflict (customer_id) do nothing;
  perform public.enqueue_job(
    'stripe.close_customer',
    pg_catalog.jsonb_build_object('customer_id', p_customer_id),
    p_idempotency_key => 'stripe.close_customer:' || p_customer_id);
end
$$;
comment on function public.close_stripe_customer(text) is
  'Records Stripe customer p_customer_id as closed (its account is being deleted) and queues the '
  'stripe.close_customer job once. Call it in the transaction that deletes the account. Errors: 22023 no customer.';
revoke execute on function public.close_stripe_customer(text) from public, anon, authenticated;
grant execute on function public.close_stripe_customer(text) to service_role;

-- Accounts deleted before this migration queued stripe.cancel_subscription jobs naming their
-- customer: those customers are closed too, so a checkout of theirs still completing is refunded.
insert into public.closed_stripe_customers (customer_id, closed_at)
select j.payload ->> 'customer_id', pg_catalog.min(j.created_at)
  from public.background_jobs as j
 where j.type = 'stripe.cancel_subscription'
   and j.payload ->> 'customer_id' ~ '^cus_[A-Za-z0-9_]{1,250}$'
 group by 1
on conflict (customer_id) do nothing;
