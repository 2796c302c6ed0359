-- Subscription state: what each Stripe subscription was last known to be, and the profile's plan
-- derived from it, kept equal to what Stripe says whatever order and however many times events
-- are delivered.
--
--   public.stripe_subscriptions             one row per subscription: status, price, period end,
--                                           cancel_at_period_end, and the position of that state
--                                           in time (state_as_of, state_event_id, state_source)
--   public.apply_stripe_subscription_state  stores a subscription's state unless it is older than
--                                           what is stored, then sets the profile's plan from it
--   public.stripe_customer_reconciliations  when each user's subscriptions were last re-read
--   public.stripe_customers_to_reconcile    the users whose plan may have drifted from Stripe
--   public.enqueue_stripe_reconcile         adds the hourly stripe.reconcile job (pg_cron)
--
-- Ordering. Stripe delivers at least once and in any order; an event's `created` (seconds) says
-- when the change happened. A state from an event is stored with its `created` (state_as_of):
--   * a later `created` replaces the stored state;
--   * an earlier one is stale and ignored;
--   * the same second is ambiguous (two changes in one second cannot be ordered by `created`):
--     the caller reads the subscription from Stripe and applies that read as authoritative.
--     Nothing is ever dropped on a tie.
-- A read from Stripe (a tie, a checkout or invoice event, the reconciliation) reflects at least
-- every state stored before it was sent. So it is applied compare-and-set: the caller notes the
-- row's revision before sending the read and the read replaces the row only if that revision is
-- still there; otherwise something was stored meanwhile (outcome superseded) and the caller reads
-- again. Its state_as_of becomes the later of the stored one and the caller's stamp, so events
-- made after the read never look older than it.
-- Reading from Stripe is how every doubt is settled, so the worst a lost or reordered event can
-- do is leave a state that the next event, or the reconciliation, replaces with Stripe's.
--
-- Plan. A subscription entitles its user to the plan whose stripe_price_id is its price while
-- its status is active, trialing or past_due (Stripe is still retrying the payment), except once
-- the period of a subscription set to cancel at its end is over. canceled, unpaid, incomplete,
-- incomplete_expired, paused and any status Stripe adds later entitle to nothing. A user with
-- several entitling subscriptions gets the one with the largest quota; with none, free.
--
-- service_role only. Re-runnable: every statement is idempotent.

-- -------------------------------------------------------------------------------------------
-- stripe_subscriptions
-- -------------------------------------------------------------------------------------------
create table if not exists public.stripe_subscriptions (
  id                   text        primary key
                                   constraint stripe_subscriptions_id_format check (id ~ '^sub_[A-Za-z0-9_]{1,250}$'),
  user_id              uuid        not null references public.profiles (id) on delete cascade,
  customer_id          text        not null,
  -- Not restricted to today's statuses: one Stripe adds later must not make events fail; it
  -- simply entitles to nothing.
  status               text        not null constraint stripe_subscriptions_status_not_blank check (pg_catalog.btrim(status) <> ''),
  price_id             text,
  current_period_end   timestamptz,
  cancel_at_period_end boolean     not null default false,
  state_as_of          timestamptz not null,
  state_event_id       text,
  state_source         text        not null
                                   constraint stripe_subscriptions_state_source_valid check (state_source in ('event', 'stripe')),
  -- Incremented by every write: what a read from Stripe is compared against before it is stored.
  revision             bigint      not null default 1,
  created_at           timestamptz not null default now(),
  updated_at           timestamptz not null default now()
);
comment on table public.stripe_subscriptions is
  'The last known state of each Stripe subscription of our users. Written only by apply_stripe_subscription_state.';
comment on column public.stripe_subscriptions.state_as_of is
  'The Stripe `created` time (second resolution) up to which this state is known to be current.';
comment on column public.stripe_subscriptions.state_event_id is
  'The event whose payload (or whose same-second tie, read from Stripe) gave this state; NULL for a reconciliation read.';
comment on column public.stripe_subscriptions.state_source is
  '''event'': an event''s payload; ''stripe'': read from the Stripe API (authoritative at state_as_of).';

-- The profile's plan is recomputed from a user's subscriptions.
create index if not exists stripe_subscriptions_user_id_idx on public.stripe_subscriptions (user_id);
-- Reconciliation looks for entitling subscriptions whose period is over.
create index if not exists stripe_subscriptions_entitling_period_end_idx
  on public.stripe_subscriptions (current_period_end)
  where status in ('active', 'trialing', 'past_due');

create or replace trigger stripe_subscriptions_set_updated_at
  before update on public.stripe_subscriptions
  for each row execute function public.set_updated_at();

alter table public.stripe_subscriptions enable row level security;
revoke all on table public.stripe_subscriptions from anon, authenticated;
grant all on table public.stripe_subscriptions to service_role;

-- -------------------------------------------------------------------------------------------
-- stripe_customer_reconciliations
-- -------------------------------------------------------------------------------------------
create table if not exists public.stripe_customer_reconciliations (
  user_id       uuid        primary key references public.profiles (id) on delete cascade,
  reconciled_at timestamptz not null
);
comment on table public.stripe_customer_reconciliations is
  'When the stripe.reconcile job last re-read each user''s subscriptions from Stripe.';

alter table public.stripe_customer_reconciliations enable row level security;
revoke all on table public.stripe_customer_reconciliations from anon, authenticated;
grant all on table public.stripe_customer_reconciliations to service_role;

-- -------------------------------------------------------------------------------------------
-- apply_stripe_subscription_state
-- -------------------------------------------------------------------------------------------
create or replace function public.apply_stripe_subscription_state(
  p_subscription_id      text,
  p_customer_id          text,
  p_status               text,
  p_price_id             text,
  p_current_period_end   timestamptz,
  p_cancel_at_period_end boolean,
  p_as_of                timestamptz,
  p_event_id             text,
  p_authoritative        boolean default false,
  p_expected_revision    bigint default null
)
  returns table (outcome text, user_id uuid, plan_id text, profile_changed boolean)
  language plpgsql
  volatile
  set search_path = ''
as $$
declare
  v_user     uuid;
  v_stored   public.stripe_subscriptions;
  v_plan     text;
  v_sub      text;
  v_status   text;
  v_price    text;
begin
  if p_subscription_id is null or p_customer_id is null or p_status is null or p_as_of is null
     or p_cancel_at_period_end is null or p_authoritative is null then
    raise exception 'p_subscription_id, p_customer_id, p_status, p_cancel_at_period_end, p_as_of and p_authoritative are required'
      using errcode = '22023';
  end if;
  profile_changed := false;

  -- The profile's row lock serialises every change to one user's subscriptions, so two workers
  -- applying events of the same user at once take turns and each compares against the other's
  -- committed result.
  select p.id into v_user
    from public.profiles as p
   where p.stripe_customer_id = p_customer_id
     for update;
  if v_user is null then
    -- Not a customer of any current user (never linked, or the account was deleted).
    outcome := 'unknown_customer';
    return next;
    return;
  end if;
  user_id := v_user;

  select s.* into v_stored
    from public.stripe_subscriptions as s
   where s.id = p_subscription_id;
  if found and v_stored.user_id <> v_user then
    raise exception 'subscription % belongs to user %, not to the customer % of user %',
      p_subscription_id, v_stored.user_id, p_customer_id, v_user
      using errcode = '23514';
  end if;
  if p_authoritative then
    if v_stored.revision is distinct from p_expected_revision then
      outcome := 'superseded';
    end if;
  elsif found then
    if p_as_of < v_stored.state_as_of then
      outcome := 'stale';
    elsif p_as_of = v_stored.state_as_of then
      outcome := case when p_event_id is not distinct from v_stored.state_event_id
                      then 'duplicate' else 'tie' end;
    end if;
  end if;
  if outcome is not null then
    select p.plan_id into plan_id from public.profiles as p where p.id = v_user;
    return next;
    return;
  end if;

  insert into public.stripe_subscriptions as s
    (id, user_id, customer_id, status, price_id, current_period_end, cancel_at_period_end,
     state_as_of, state_event_id, state_source)
  values
    (p_subscription_id, v_user, p_customer_id, p_status, p_price_id, p_current_period_end,
     p_cancel_at_period_end, p_as_of, p_event_id,
     case when p_authoritative then 'stripe' else 'event' end)
  on conflict (id) do update
    set status               = excluded.status,
        price_id             = excluded.price_id,
        current_period_end   = excluded.current_period_end,
        cancel_at_period_end = excluded.cancel_at_period_end,
        state_as_of          = greatest(s.state_as_of, excluded.state_as_of),
        state_event_id       = excluded.state_event_id,
        state_source         = excluded.state_source,
        revision             = s.revision + 1;
  outcome := 'applied';

  -- The plan follows the best entitling subscription. An entitling subscription whose price is
  -- no plan's sorts first and fails the call: granting nothing would silently downgrade a paying
  -- user, so the job fails loudly until the price is mapped in public.plans.
  select s.id, s.status, pl.id, s.price_id
    into v_sub, v_status, v_plan, v_price
    from public.stripe_subscriptions as s
    left join public.plans as pl on pl.stripe_price_id = s.price_id
   where s.user_id = v_user
     and s.status in ('active', 'trialing', 'past_due')
     and not (s.cancel_at_period_end and s.current_period_end <= pg_catalog.now())
   order by pl.monthly_quota desc nulls first, s.state_as_of desc, s.id
   limit 1;
  if v_sub is not null and v_plan is null then
    raise exception 'price % of subscription % is not the stripe_price_id of any plan', v_price, v_sub
      using errcode = 'P0002',
            hint = 'Set public.plans.stripe_price_id for this deployment, then retry the job.';
  end if;
  if v_sub is null then
    -- Free; the profile still shows the latest subscription and its (ended) status.
    v_plan := 'free';
    select s.id, s.status into v_sub, v_status
      from public.stripe_subscriptions as s
     where s.user_id = v_user
     order by s.state_as_of desc, s.id
     limit 1;
  end if;

  update public.profiles as p
     set plan_id                = v_plan,
         stripe_subscription_id = v_sub,
         subscription_status    = v_status
   where p.id = v_user
     and (p.plan_id, p.stripe_subscription_id, p.subscription_status)
         is distinct from (v_plan, v_sub, v_status);
  profile_changed := found;
  plan_id := v_plan;
  return next;
end
$$;
comment on function public.apply_stripe_subscription_state(text, text, text, text, timestamptz, boolean, timestamptz, text, boolean, bigint) is
  'Stores the state of Stripe subscription p_subscription_id of customer p_customer_id and sets the owner''s plan, '
  'subscription id and status from their subscriptions. An event''s state (p_as_of = its created): applied when newer '
  'than stored; stale when older (nothing changes); duplicate for the same event again; tie for another event of the '
  'same second (read the subscription from Stripe and apply that). A read from Stripe (p_authoritative, with the '
  'revision the row had before the read was sent, NULL for no row): applied when that revision is still there, '
  'stamped with the later of the stored state_as_of and p_as_of; superseded otherwise (read again). '
  'unknown_customer when no profile has that customer. Returns the owner, their plan and whether the profile '
  'changed (refresh its cache then). Errors: 22023 missing argument, P0002 an entitling price maps to no plan.';
revoke execute on function public.apply_stripe_subscription_state(text, text, text, text, timestamptz, boolean, timestamptz, text, boolean, bigint)
  from public, anon, authenticated;
grant execute on function public.apply_stripe_subscription_state(text, text, text, text, timestamptz, boolean, timestamptz, text, boolean, bigint)
  to service_role;

-- -------------------------------------------------------------------------------------------
-- stripe_customers_to_reconcile
-- -------------------------------------------------------------------------------------------
-- Two kinds of drift, in this order:
--   period_ended  an entitling subscription whose period is over: Stripe has renewed, failed or
--                 canceled it by now (or it was set to cancel at period end), and no event told
--                 us, or none was due (a cancellation at period end takes effect here);
--   unchecked     a customer not re-read for p_recheck_after, newest users first: events lost
--                 in an outage longer than Stripe's retries (3 days), such as a completed
--                 checkout, show up here.
create or replace function public.stripe_customers_to_reconcile(
  p_limit integer default 50,
  p_recheck_after interval default interval '7 days'
)
  returns table (user_id uuid, customer_id text, reason text)
  language sql
  stable
  set search_path = ''
as $$
  with period_ended as (
    select distinct on (p.id) p.id, p.stripe_customer_id, s.current_period_end
      from public.stripe_subscriptions as s
      join public.profiles as p on p.id = s.user_id
     where s.status in ('active', 'trialing', 'past_due')
       and s.current_period_end <= pg_catalog.now()
       and p.stripe_customer_id is not null
     order by p.id, s.current_period_end
  ), unchecked as (
    select p.id, p.stripe_customer_id, r.reconciled_at, p.created_at
      from public.profiles as p
      left join public.stripe_customer_reconciliations as r on r.user_id = p.id
     where p.stripe_customer_id is not null
       and (r.reconciled_at is null or r.reconciled_at < pg_catalog.now() - p_recheck_after)
       and p.id not in (select e.id from period_ended as e)
  )
  select c.id, c.stripe_customer_id, c.reason
    from (
      select e.id, e.stripe_customer_id, 'period_ended' as reason, 0 as rank,
             e.current_period_end as since, null::timestamptz as newest
        from period_ended as e
      union all
      select u.id, u.stripe_customer_id, 'unchecked', 1, u.reconciled_at, u.created_at
        from unchecked as u
    ) as c
   order by c.rank, c.since nulls first, c.newest desc, c.id
   limit greatest(coalesce(p_limit, 50), 0)
$$;
comment on function public.stripe_customers_to_reconcile(integer, interval) is
  'The users (and Stripe customers) whose plan may have drifted from Stripe, at most p_limit: first those with an '
  'entitling subscription whose period is over (reason period_ended), then those not re-read for p_recheck_after, '
  'never re-read and newest users first (reason unchecked).';
revoke execute on function public.stripe_customers_to_reconcile(integer, interval) from public, anon, authenticated;
grant execute on function public.stripe_customers_to_reconcile(integer, interval) to service_role;

-- -------------------------------------------------------------------------------------------
-- enqueue_stripe_reconcile (hourly, pg_cron)
-- -------------------------------------------------------------------------------------------
-- One job an hour at most (the key names the hour), and none when nothing may have drifted, so
-- a deployment without Stripe customers never queues work no worker of it would run.
create or replace function public.enqueue_stripe_reconcile()
  returns bigint
  language plpgsql
  volatile
  set search_path = ''
as $$
begin
  if not exists (select from public.stripe_customers_to_reconcile(1)) then
    return null;
  end if;
  return public.enqueue_job(
    'stripe.reconcile', '{}'::jsonb, pg_catalog.now(), 10,
    'stripe.reconcile:' || pg_catalog.to_char(pg_catalog.now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24'));
end
$$;
comment on function public.enqueue_stripe_reconcile() is
  'Enqueues this hour''s stripe.reconcile job when some user may have drifted; returns its id, or NULL when none '
  'may have. Run hourly by pg_cron.';
revoke execute on function public.enqueue_stripe_reconcile() from public, anon, authenticated;
grant execute on function public.enqueue_stripe_reconcile() to service_role;

create extension if not exists pg_cron with schema pg_catalog;
select cron.schedule('enqueue-stripe-reconcile', '37 * * * *',
  $cmd$select public.enqueue_stripe_reconcile()$cmd$);
