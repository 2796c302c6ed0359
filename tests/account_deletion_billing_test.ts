import assert from "node:assert/strict";
import {
  applyJobOf,
  billingTest,
  deliver,
  PRO_PRICE,
  startBilling,
  subscriber,
} from "./billing_support.ts";
import { stripeEvent, type TestSubscription } from "./stripe_server.ts";
import { appClient, database, invoke, processJobs, type TestUser } from "./support.ts";

/**
 * A deleted account can never keep paying: deleting it closes its Stripe customer (every open
 * Checkout session expired, every subscription that can still bill canceled, by the
 * `stripe.close_customer` job), and a subscription that starts anyway, its checkout paid before
 * the job ran, is canceled and its payment refunded once when its events are applied. Asserted on
 * the state the Stripe-compatible test server holds.
 */

const b = await startBilling();
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function deleteAccount(user: TestUser) {
  const { status } = await invoke(appClient(user.token, b.url), "profile", { method: "DELETE" });
  assert.equal(status, 200);
}

/** Runs the worker until no job of this customer is left to do. */
async function runJobsOf(customerId: string) {
  const sql = database();
  try {
    for (let run = 0; run < 40; run++) {
      assert.equal((await processJobs(b.url)).status, 200);
      const [{ pending }] = await sql<{ pending: number }[]>`
        select count(*)::int as pending from public.background_jobs
         where status in ('queued', 'running', 'failed')
           and (payload ->> 'customer_id' = ${customerId}
                or type = 'stripe.apply_event'
                   and payload ->> 'event_id' in (
                     select id from public.stripe_events
                      where payload -> 'data' -> 'object' ->> 'customer' = ${customerId}))`;
      if (pending === 0) return;
      await sleep(250);
    }
    assert.fail(`jobs of ${customerId} are still pending`);
  } finally {
    await sql.end();
  }
}

/** The events Stripe sends when a checkout is paid. */
async function deliverCheckoutCompleted(sessionId: string, subscription: TestSubscription) {
  const events = [
    stripeEvent("checkout.session.completed", {
      id: sessionId,
      object: "checkout.session",
      mode: "subscription",
      status: "complete",
      payment_status: "paid",
      customer: subscription.customer,
      subscription: subscription.id,
    }),
    stripeEvent("customer.subscription.created", subscription),
  ];
  for (const event of events) assert.equal((await deliver(b.url, event)).status, 200);
  return events;
}

const refundsOf = (subscriptionId: string) =>
  b.stripe.refunds().filter((refund) =>
    (refund.metadata as Record<string, string>).subscription_id === subscriptionId
  );

billingTest(
  "a checkout paid after its account was deleted is canceled and its payment refunded once",
  async () => {
    const { user, customerId } = await subscriber(b, "deleted-then-paid");
    const [session] = b.stripe.checkoutSessions().filter((s) => s.customer === customerId);
    await deleteAccount(user);
    // The customer pays on the Checkout page before the deletion's job has run.
    const { subscription } = b.stripe.completeCheckout(String(session.id));
    const events = await deliverCheckoutCompleted(String(session.id), subscription);

    await runJobsOf(customerId);
    for (const event of events) assert.equal((await applyJobOf(event.id))[0].status, "succeeded");
    assert.equal(b.stripe.subscription(subscription.id).status, "canceled");
    const refunds = refundsOf(subscription.id);
    assert.equal(refunds.length, 1, "both events, one refund");
    assert.equal(refunds[0].amount, 1_000);

    // Stripe delivers again (a new event id for the same subscription): nothing more happens.
    const again = stripeEvent("customer.subscription.created", subscription);
    assert.equal((await deliver(b.url, again)).status, 200);
    await runJobsOf(customerId);
    assert.equal((await applyJobOf(again.id))[0].status, "succeeded");
    assert.equal(refundsOf(subscription.id).length, 1);
    assert.equal(b.stripe.cancellations(subscription.id), 1);
  },
);

billingTest(
  "deleting a subscriber's account cancels the subscription and expires open sessions, " +
    "refunding nothing",
  async () => {
    const { user, customerId } = await subscriber(b, "subscribed-then-deleted");
    const [session] = b.stripe.checkoutSessions().filter((s) => s.customer === customerId);
    const { subscription } = b.stripe.completeCheckout(String(session.id));
    await deliverCheckoutCompleted(String(session.id), subscription);
    await runJobsOf(customerId);
    assert.equal(b.stripe.subscription(subscription.id).status, "active");
    // A session opened elsewhere (the Stripe dashboard, an earlier deployment) is still open.
    const other = b.stripe.addCheckoutSession({ customer: customerId, price: PRO_PRICE });

    await deleteAccount(user);
    await runJobsOf(customerId);
    assert.equal(b.stripe.subscription(subscription.id).status, "canceled");
    assert.equal(b.stripe.checkoutSession(String(other.id)).status, "expired");
    assert.equal(refundsOf(subscription.id).length, 0, "a period used is not refunded");
  },
);

billingTest(
  "deleting an account while its checkout is open expires the session, so it cannot be paid",
  async () => {
    const { user, customerId } = await subscriber(b, "open-then-deleted");
    const [session] = b.stripe.checkoutSessions().filter((s) => s.customer === customerId);

    await deleteAccount(user);
    await runJobsOf(customerId);
    assert.equal(b.stripe.checkoutSession(String(session.id)).status, "expired");
    assert.throws(() => b.stripe.completeCheckout(String(session.id)), /expired/);
  },
);

billingTest(
  "a stripe.cancel_subscription job queued by an earlier deployment closes the whole customer",
  async () => {
    const customerId = b.stripe.addCustomer();
    const subscription = b.stripe.addSubscription({ customer: customerId, price: PRO_PRICE });
    const session = b.stripe.addCheckoutSession({ customer: customerId, price: PRO_PRICE });
    const sql = database();
    try {
      await sql`
        select public.enqueue_job('stripe.cancel_subscription', ${
        sql.json({
          user_id: crypto.randomUUID(),
          subscription_id: subscription.id,
          customer_id: customerId,
        })
      })`;
    } finally {
      await sql.end();
    }

    await runJobsOf(customerId);
    assert.equal(b.stripe.subscription(subscription.id).status, "canceled");
    assert.equal(b.stripe.checkoutSession(String(session.id)).status, "expired");
  },
);

billingTest(
  "a checkout paid by a customer that is no account of ours is neither canceled nor refunded",
  async () => {
    const customerId = b.stripe.addCustomer();
    const session = b.stripe.addCheckoutSession({ customer: customerId, price: PRO_PRICE });
    const { subscription } = b.stripe.completeCheckout(String(session.id));
    const events = await deliverCheckoutCompleted(String(session.id), subscription);

    await runJobsOf(customerId);
    for (const event of events) assert.equal((await applyJobOf(event.id))[0].status, "succeeded");
    assert.equal(b.stripe.subscription(subscription.id).status, "active");
    assert.equal(refundsOf(subscription.id).length, 0);
  },
);
