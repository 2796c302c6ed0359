-- Subscription state (20261123000600): out-of-order and repeated states never overwrite a newer
-- one, a same-second tie is left to an authoritative read, the plan follows the entitling
-- subscriptions (cancel at period end, past_due, several subscriptions, unknown prices), the
-- reconciliation candidates, the hourly enqueue, and who may call what.
begin;
create extension if not exists pgtap with schema extensions;
set local client_min_messages = warning;

select plan(56);

-- ---------------------------------------------------------------------------------------------
-- Shape and access
-- ---------------------------------------------------------------------------------------------
select has_table('public', 'stripe_subscriptions', 'public.stripe_subscriptions exists');
select col_is_pk('public', 'stripe_subscriptions', 'id', 'subscriptions are keyed by the Stripe subscription id');
select has_table('public', 'stripe_customer_reconciliations', 'public.stripe_customer_reconciliations exists');
select ok(
  (select bool_and(c.relrowsecurity) from pg_class c
    where c.oid in ('public.stripe_subscriptions'::regclass, 'public.stripe_customer_reconciliations'::regclass)),
  'both tables have row level security enabled'
);
select is_empty(
  $$select t || ' ' || priv || ' by ' || r
      from unnest(array['public.stripe_subscriptions', 'public.stripe_customer_reconciliations']) as t
     cross join unnest(array['anon', 'authenticated']) as r
     cross join unnest(array['select', 'insert', 'update', 'delete', 'truncate']) as priv
     where has_table_privilege(r, t, priv)$$,
  'anon and authenticated have no privilege on either table'
);
select is_empty(
  $$select f || ' by ' || r
      from unnest(array[
             'public.apply_stripe_subscription_state(text,text,text,text,timestamptz,boolean,timestamptz,text,boolean,bigint)',
             'public.stripe_customers_to_reconcile(integer,interval)',
             'public.enqueue_stripe_reconcile()']) as f
     cross join unnest(array['anon', 'authenticated']) as r
     where has_function_privilege(r, f::regprocedure, 'execute')$$,
  'anon and authenticated cannot execute the functions'
);
select ok(
  has_function_privilege('service_role',
    'public.apply_stripe_subscription_state(text,text,text,text,timestamptz,boolean,timestamptz,text,boolean,bigint)', 'execute')
  and has_function_privilege('service_role', 'public.stripe_customers_to_reconcile(integer,interval)', 'execute')
  and has_function_privilege('service_role', 'public.enqueue_stripe_reconcile()', 'execute'),
  'service_role executes them'
);
select is_empty(
  $$select p.proname from pg_proc p
     where p.pronamespace = 'public'::regnamespace and p.prosecdef
       and p.proname in ('apply_stripe_subscription_state', 'stripe_customers_to_reconcile', 'enqueue_stripe_reconcile')$$,
  'none of them is security definer'
);
select results_eq(
  $$select schedule, command from cron.job where jobname = 'enqueue-stripe-reconcile'$$,
  $$values ('37 * * * *'::text, 'select public.enqueue_stripe_reconcile()'::text)$$,
  'pg_cron enqueues the reconciliation hourly'
);

-- ---------------------------------------------------------------------------------------------
-- Fixtures: prices, three users (two of them Stripe customers), and a short way to apply
-- ---------------------------------------------------------------------------------------------
update public.plans set stripe_price_id = null where stripe_price_id in ('price_pro_tap', 'price_team_tap');
update public.plans set stripe_price_id = 'price_pro_tap' where id = 'pro';
update public.plans set stripe_price_id = 'price_team_tap' where id = 'team';

insert into auth.users (id, email)
values ('d0000000-0000-4000-8000-00000000000a', 'subs-alice@example.test'),
       ('d0000000-0000-4000-8000-00000000000b', 'subs-bob@example.test'),
       ('d0000000-0000-4000-8000-00000000000c', 'subs-carol@example.test');
update public.profiles set stripe_customer_id = 'cus_tap_alice' where id = 'd0000000-0000-4000-8000-00000000000a';
update public.profiles set stripe_customer_id = 'cus_tap_bob' where id = 'd0000000-0000-4000-8000-00000000000b';
-- Alice signed up a day before Bob.
update public.profiles set created_at = now() - interval '1 day' where id = 'd0000000-0000-4000-8000-00000000000a';

-- A state at second `at` after 2026-01-01 (the stamps of the events), with a period ending in
-- 20 days unless told otherwise. An authoritative one is a read from Stripe sent after the
-- current row was stored (it expects the current revision).
create function pg_temp.apply(
  p_sub text, p_customer text, p_status text, p_price text, p_at integer, p_event text,
  p_authoritative boolean default false,
  p_period_end timestamptz default now() + interval '20 days',
  p_cancel_at_period_end boolean default false
)
  returns table (outcome text, plan_id text, profile_changed boolean)
  language sql
as $$
  select a.outcome, a.plan_id, a.profile_changed
    from public.apply_stripe_subscription_state(
      p_sub, p_customer, p_status, p_price, p_period_end, p_cancel_at_period_end,
      timestamptz '2026-01-01 00:00:00+00' + pg_catalog.make_interval(secs => p_at), p_event,
      p_authoritative,
      case when p_authoritative
           then (select s.revision from public.stripe_subscriptions s where s.id = p_sub) end) as a
$$;

create function pg_temp.profile(p_user uuid)
  returns table (plan_id text, stripe_subscription_id text, subscription_status text)
  language sql
as $$
  select p.plan_id, p.stripe_subscription_id, p.subscription_status from public.profiles p where p.id = p_user
$$;

-- ---------------------------------------------------------------------------------------------
-- Ordering
-- ---------------------------------------------------------------------------------------------
select results_eq(
  $$select outcome, plan_id, profile_changed from pg_temp.apply('sub_tap_nobody', 'cus_tap_nobody', 'active', 'price_pro_tap', 0, 'evt_n')$$,
  $$values ('unknown_customer'::text, null::text, false)$$,
  'a state for a customer of no user is not stored'
);
select is_empty($$select 1 from public.stripe_subscriptions where id = 'sub_tap_nobody'$$, 'nothing is stored for it');

select results_eq(
  $$select outcome, plan_id, profile_changed from pg_temp.apply('sub_tap_a1', 'cus_tap_alice', 'incomplete', 'price_pro_tap', 0, 'evt_a_created')$$,
  $$values ('applied'::text, 'free'::text, true)$$,
  'a first state is applied; an incomplete subscription entitles to nothing'
);
select results_eq(
  $$select * from pg_temp.profile('d0000000-0000-4000-8000-00000000000a')$$,
  $$values ('free'::text, 'sub_tap_a1'::text, 'incomplete'::text)$$,
  'the profile shows the subscription and its status'
);
select results_eq(
  $$select outcome, plan_id, profile_changed from pg_temp.apply('sub_tap_a1', 'cus_tap_alice', 'active', 'price_pro_tap', 10, 'evt_a_active')$$,
  $$values ('applied'::text, 'pro'::text, true)$$,
  'a newer state is applied: active on the pro price is the pro plan'
);
select results_eq(
  $$select outcome, plan_id, profile_changed from pg_temp.apply('sub_tap_a1', 'cus_tap_alice', 'incomplete', 'price_pro_tap', 5, 'evt_a_late')$$,
  $$values ('stale'::text, 'pro'::text, false)$$,
  'an older state delivered late is stale'
);
select results_eq(
  $$select status, state_as_of, state_event_id, state_source from public.stripe_subscriptions where id = 'sub_tap_a1'$$,
  $$values ('active'::text, '2026-01-01 00:00:10+00'::timestamptz, 'evt_a_active'::text, 'event'::text)$$,
  'and the stored state is still the newer one'
);
select results_eq(
  $$select outcome, profile_changed from pg_temp.apply('sub_tap_a1', 'cus_tap_alice', 'active', 'price_pro_tap', 10, 'evt_a_active')$$,
  $$values ('duplicate'::text, false)$$,
  'the same event again is a duplicate'
);
select results_eq(
  $$select outcome, plan_id, profile_changed from pg_temp.apply('sub_tap_a1', 'cus_tap_alice', 'canceled', 'price_pro_tap', 10, 'evt_a_same_second')$$,
  $$values ('tie'::text, 'pro'::text, false)$$,
  'another event of the same second is a tie, left to a read from Stripe'
);
select is(
  (select status from public.stripe_subscriptions where id = 'sub_tap_a1'), 'active',
  'a tie changes nothing'
);
select results_eq(
  $$select outcome, plan_id, profile_changed from pg_temp.apply('sub_tap_a1', 'cus_tap_alice', 'canceled', 'price_pro_tap', 10, 'evt_a_same_second', true)$$,
  $$values ('applied'::text, 'free'::text, true)$$,
  'the authoritative read of that second is applied: canceled is free'
);
select results_eq(
  $$select status, state_event_id, state_source, revision from public.stripe_subscriptions where id = 'sub_tap_a1'$$,
  $$values ('canceled'::text, 'evt_a_same_second'::text, 'stripe'::text, 3::bigint)$$,
  'and is marked as read from Stripe, one revision on'
);
select results_eq(
  $$select * from pg_temp.profile('d0000000-0000-4000-8000-00000000000a')$$,
  $$values ('free'::text, 'sub_tap_a1'::text, 'canceled'::text)$$,
  'the profile keeps showing the ended subscription'
);
select results_eq(
  $$select a.outcome, a.profile_changed
      from public.apply_stripe_subscription_state('sub_tap_a1', 'cus_tap_alice', 'active', 'price_pro_tap',
             now() + interval '20 days', false, '2026-01-01 00:00:10+00', null, true, 2) as a$$,
  $$values ('superseded'::text, false)$$,
  'a read sent before the row last changed is superseded (read again) and changes nothing'
);
select results_eq(
  $$select outcome from pg_temp.apply('sub_tap_a1', 'cus_tap_alice', 'canceled', 'price_pro_tap', 2, null, true)$$,
  $$values ('applied'::text)$$,
  'a read sent after it is applied, even when stamped earlier (the read reflects the stored state)'
);
select results_eq(
  $$select state_as_of, state_event_id, revision from public.stripe_subscriptions where id = 'sub_tap_a1'$$,
  $$values ('2026-01-01 00:00:10+00'::timestamptz, null::text, 4::bigint)$$,
  'and keeps the later state_as_of, so older events stay stale'
);
select results_eq(
  $$select a.outcome
      from public.apply_stripe_subscription_state('sub_tap_new', 'cus_tap_alice', 'active', 'price_pro_tap',
             now() + interval '20 days', false, '2026-01-01 00:00:00+00', null, true, 1) as a$$,
  $$values ('superseded'::text)$$,
  'a read expecting a row that is not there is superseded too'
);
select results_eq(
  $$select outcome, profile_changed from pg_temp.apply('sub_tap_a1', 'cus_tap_alice', 'canceled', 'price_pro_tap', 11, 'evt_a_again')$$,
  $$values ('applied'::text, false)$$,
  'a newer state that changes no plan leaves the profile untouched (no cache churn)'
);
select results_eq(
  $$select outcome from pg_temp.apply('sub_tap_a1', 'cus_tap_alice', 'canceled', 'price_pro_tap', 11, 'evt_a_again_2')$$,
  $$values ('tie'::text)$$,
  'a tie is a tie whatever its payload'
);

-- ---------------------------------------------------------------------------------------------
-- Entitlement
-- ---------------------------------------------------------------------------------------------
select results_eq(
  $$select outcome, plan_id from pg_temp.apply('sub_tap_b1', 'cus_tap_bob', 'active', 'price_pro_tap', 100, 'evt_b1',
                                               p_period_end => now() + interval '3 days', p_cancel_at_period_end => true)$$,
  $$values ('applied'::text, 'pro'::text)$$,
  'set to cancel at the end of a period not yet over: still pro'
);
select results_eq(
  $$select outcome, plan_id from pg_temp.apply('sub_tap_b1', 'cus_tap_bob', 'active', 'price_pro_tap', 101, 'evt_b2',
                                               p_period_end => now() - interval '1 minute', p_cancel_at_period_end => true)$$,
  $$values ('applied'::text, 'free'::text)$$,
  'once that period is over: free'
);
select results_eq(
  $$select plan_id from pg_temp.apply('sub_tap_b1', 'cus_tap_bob', 'past_due', 'price_pro_tap', 102, 'evt_b3')$$,
  $$values ('pro'::text)$$,
  'past_due (Stripe still retrying the payment) keeps the plan'
);
select results_eq(
  $$select plan_id from pg_temp.apply('sub_tap_b1', 'cus_tap_bob', 'unpaid', 'price_pro_tap', 103, 'evt_b4')$$,
  $$values ('free'::text)$$,
  'unpaid ends it'
);
select results_eq(
  $$select plan_id from pg_temp.apply('sub_tap_b1', 'cus_tap_bob', 'trialing', 'price_pro_tap', 104, 'evt_b5')$$,
  $$values ('pro'::text)$$,
  'trialing entitles'
);
select results_eq(
  $$select plan_id from pg_temp.apply('sub_tap_b1', 'cus_tap_bob', 'some_future_status', 'price_pro_tap', 105, 'evt_b6')$$,
  $$values ('free'::text)$$,
  'a status Stripe may add later is stored and entitles to nothing'
);
select results_eq(
  $$select plan_id from pg_temp.apply('sub_tap_b1', 'cus_tap_bob', 'active', 'price_pro_tap', 106, 'evt_b7')$$,
  $$values ('pro'::text)$$,
  'active again: pro'
);
select results_eq(
  $$select plan_id from pg_temp.apply('sub_tap_b2', 'cus_tap_bob', 'active', 'price_team_tap', 107, 'evt_b8')$$,
  $$values ('team'::text)$$,
  'with a pro and a team subscription the user gets the larger plan'
);
select results_eq(
  $$select * from pg_temp.profile('d0000000-0000-4000-8000-00000000000b')$$,
  $$values ('team'::text, 'sub_tap_b2'::text, 'active'::text)$$,
  'and the profile names that subscription'
);
select results_eq(
  $$select plan_id from pg_temp.apply('sub_tap_b2', 'cus_tap_bob', 'canceled', 'price_team_tap', 108, 'evt_b9')$$,
  $$values ('pro'::text)$$,
  'when the team one ends, the pro one still counts'
);
select throws_ok(
  $$select * from pg_temp.apply('sub_tap_b3', 'cus_tap_bob', 'active', 'price_unmapped', 109, 'evt_b10')$$,
  'P0002', null,
  'an entitling price that is no plan''s fails loudly rather than downgrade a paying user'
);
select is_empty(
  $$select 1 from public.stripe_subscriptions where id = 'sub_tap_b3'$$,
  'and stores nothing'
);
select results_eq(
  $$select outcome, plan_id from pg_temp.apply('sub_tap_b3', 'cus_tap_bob', 'canceled', 'price_unmapped', 109, 'evt_b11')$$,
  $$values ('applied'::text, 'pro'::text)$$,
  'an ended subscription on such a price is stored without complaint'
);
select throws_ok(
  $$select * from pg_temp.apply('sub_tap_b1', 'cus_tap_alice', 'active', 'price_pro_tap', 200, 'evt_x')$$,
  '23514', null,
  'a subscription cannot move to another user''s customer'
);
select throws_ok(
  $$select * from public.apply_stripe_subscription_state('sub_tap_x', 'cus_tap_bob', 'active', null, null, false, null, null, false)$$,
  '22023', null,
  'a state without its time is refused'
);

-- ---------------------------------------------------------------------------------------------
-- Reconciliation candidates and the hourly job
-- ---------------------------------------------------------------------------------------------
-- Only this file's customers, for these checks (rolled back at the end).
update public.profiles set stripe_customer_id = null, stripe_subscription_id = null
 where stripe_customer_id is not null
   and id not in ('d0000000-0000-4000-8000-00000000000a', 'd0000000-0000-4000-8000-00000000000b');
delete from public.background_jobs where type = 'stripe.reconcile';

select results_eq(
  $$select user_id, customer_id, reason from public.stripe_customers_to_reconcile()$$,
  $$values ('d0000000-0000-4000-8000-00000000000b'::uuid, 'cus_tap_bob'::text, 'unchecked'::text),
           ('d0000000-0000-4000-8000-00000000000a'::uuid, 'cus_tap_alice'::text, 'unchecked'::text)$$,
  'customers never re-read are candidates, newest users first; users without a customer never are'
);
insert into public.stripe_customer_reconciliations (user_id, reconciled_at)
values ('d0000000-0000-4000-8000-00000000000a', now() - interval '1 hour'),
       ('d0000000-0000-4000-8000-00000000000b', now() - interval '8 days');
select results_eq(
  $$select user_id, reason from public.stripe_customers_to_reconcile()$$,
  $$values ('d0000000-0000-4000-8000-00000000000b'::uuid, 'unchecked'::text)$$,
  'a customer re-read within the week is not; one re-read longer ago is'
);
update public.stripe_customer_reconciliations set reconciled_at = now()
 where user_id = 'd0000000-0000-4000-8000-00000000000b';
select is_empty(
  $$select 1 from public.stripe_customers_to_reconcile()$$,
  'with every customer re-read lately, nobody'
);
select is(public.enqueue_stripe_reconcile(), null::bigint, 'and the hourly run enqueues nothing');

update public.stripe_subscriptions set current_period_end = now() - interval '2 hours' where id = 'sub_tap_b1';
select results_eq(
  $$select user_id, customer_id, reason from public.stripe_customers_to_reconcile()$$,
  $$values ('d0000000-0000-4000-8000-00000000000b'::uuid, 'cus_tap_bob'::text, 'period_ended'::text)$$,
  'an entitling subscription whose period is over makes its user a candidate, re-read lately or not'
);
select results_eq(
  $$select user_id, reason from public.stripe_customers_to_reconcile(p_recheck_after => interval '30 minutes')$$,
  $$values ('d0000000-0000-4000-8000-00000000000b'::uuid, 'period_ended'::text),
           ('d0000000-0000-4000-8000-00000000000a'::uuid, 'unchecked'::text)$$,
  'period_ended candidates come first, and once only'
);
select is(
  (select count(*)::int from public.stripe_customers_to_reconcile(1, interval '30 minutes')), 1,
  'p_limit bounds the list'
);
select isnt(public.enqueue_stripe_reconcile(), null::bigint, 'with a candidate the hourly run enqueues a job');
select results_eq(
  $$select type, payload, priority, status, idempotency_key
      from public.background_jobs where type = 'stripe.reconcile'$$,
  $$values ('stripe.reconcile'::text, '{}'::jsonb, 10, 'queued'::text,
            'stripe.reconcile:' || to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24'))$$,
  'a low-priority stripe.reconcile job keyed by the hour'
);
select is(
  public.enqueue_stripe_reconcile(),
  (select id from public.background_jobs where type = 'stripe.reconcile'),
  'a second run in the same hour returns the same job'
);
select is(
  (select count(*)::int from public.background_jobs where type = 'stripe.reconcile'), 1,
  'and adds none'
);

-- ---------------------------------------------------------------------------------------------
-- Deleting an account
-- ---------------------------------------------------------------------------------------------
delete from auth.users where id = 'd0000000-0000-4000-8000-00000000000b';
select is_empty(
  $$select 1 from public.stripe_subscriptions where user_id = 'd0000000-0000-4000-8000-00000000000b'
    union all
    select 1 from public.stripe_customer_reconciliations where user_id = 'd0000000-0000-4000-8000-00000000000b'$$,
  'a deleted account takes its subscription state and reconciliation record with it'
);
select results_eq(
  $$select outcome from pg_temp.apply('sub_tap_b1', 'cus_tap_bob', 'canceled', 'price_pro_tap', 300, 'evt_b_deleted')$$,
  $$values ('unknown_customer'::text)$$,
  'and a later event for its customer concerns nobody'
);

select * from finish();
rollback;
