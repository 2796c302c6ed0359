import assert from "node:assert/strict";
import {
  applyJobOf,
  billingTest,
  cachedPlan,
  deliver,
  PRO_PRICE,
  profileRow,
  startBilling,
  subscriber,
  TEAM_PRICE,
} from "./billing_support.ts";
import { stripeEvent } from "./stripe_server.ts";
import { database, processJobs } from "./support.ts";

/**
 * Applying Stripe's events: whatever the order and however close together they come, the plan
 * ends as Stripe says; cancellations take effect when they should; and the reconciliation puts
 * right what no event told.
 */

const b = await startBilling();
const now = () => Math.floor(Date.now() / 1000);

/** Delivers each event in turn, running the worker after each, as separate deliveries would. */
async function applyInTurn(...events: ReturnType<typeof stripeEvent>[]) {
  for (const event of events) {
    assert.equal((await deliver(b.url, event)).status, 200);
    assert.equal((await processJobs(b.url)).status, 200);
    assert.equal((await applyJobOf(event.id))[0].status, "succeeded");
  }
}

/** A reconciliation run, as the hourly schedule would enqueue it. */
/** `invoice.payment_failed` for an open invoice of the subscription, 30 s ago. */
function paymentFailed(customerId: string, subscriptionId: string) {
  return stripeEvent("invoice.payment_failed", {
    id: `in_test_${crypto.randomUUID().slice(0, 8)}`,
    object: "invoice",
    customer: customerId,
    status: "open",
    parent: {
      type: "subscription_details",
      subscription_details: { subscription: subscriptionId },
    },
  }, now() - 30);
}

async function reconcile() {
  const sql = database();
  try {
    await sql`select public.enqueue_job('stripe.reconcile', '{}'::jsonb)`;
  } finally {
    await sql.end();
  }
  assert.equal((await processJobs(b.url)).status, 200);
}

billingTest(
  "an older subscription update delivered after a newer one leaves the user pro",
  async () => {
    const { user, customerId } = await subscriber(b);
    const subscription = b.stripe.addSubscription({ customer: customerId, price: PRO_PRICE });
    const newer = stripeEvent("customer.subscription.updated", subscription, now());
    const older = stripeEvent(
      "customer.subscription.updated",
      { ...subscription, status: "incomplete" },
      now() - 30,
    );

    await applyInTurn(newer);
    assert.equal((await profileRow(user.id)).plan_id, "pro");
    await applyInTurn(older);
    assert.deepEqual(await profileRow(user.id), {
      plan_id: "pro",
      stripe_subscription_id: subscription.id,
      subscription_status: "active",
    });
  },
);

/**
 * Two updates of one subscription in the same second: pro, then team (the user upgraded in the
 * portal). Stripe reports team.
 */
async function sameSecondUpgrade() {
  const { user, customerId } = await subscriber(b);
  const pro = b.stripe.addSubscription({ customer: customerId, price: PRO_PRICE });
  const team = b.stripe.updateSubscription(pro.id, { price: TEAM_PRICE });
  const second = now();
  return {
    user,
    subscriptionId: pro.id,
    first: stripeEvent("customer.subscription.updated", pro, second),
    last: stripeEvent("customer.subscription.updated", team, second),
  };
}

billingTest(
  "two updates in the same second, delivered in order, end in the state Stripe reports",
  async () => {
    const { user, subscriptionId, first, last } = await sameSecondUpgrade();
    await applyInTurn(first, last);
    assert.equal((await profileRow(user.id)).plan_id, "team");
    assert.equal(b.stripe.calls(`GET /v1/subscriptions/${subscriptionId}`), 1, "the tie was read");
  },
);

billingTest(
  "two updates in the same second, delivered in reverse, end in the state Stripe reports",
  async () => {
    const { user, subscriptionId, first, last } = await sameSecondUpgrade();
    await applyInTurn(last, first);
    assert.equal((await profileRow(user.id)).plan_id, "team");
    assert.equal(b.stripe.calls(`GET /v1/subscriptions/${subscriptionId}`), 1, "the tie was read");
  },
);

billingTest("a deleted subscription makes the user free, in the cache at once", async () => {
  const { user, customerId } = await subscriber(b);
  const subscription = b.stripe.addSubscription({ customer: customerId, price: PRO_PRICE });
  await applyInTurn(stripeEvent("customer.subscription.created", subscription, now() - 60));
  assert.equal(await cachedPlan(user.id), "pro");

  const canceled = b.stripe.updateSubscription(subscription.id, { status: "canceled" });
  await applyInTurn(stripeEvent("customer.subscription.deleted", canceled));
  assert.equal(await cachedPlan(user.id), "free");
  assert.equal((await profileRow(user.id)).subscription_status, "canceled");
});

billingTest(
  "a subscription set to cancel at period end keeps the plan until then, and ends with the period",
  async () => {
    const { user, customerId } = await subscriber(b);
    const subscription = b.stripe.addSubscription({ customer: customerId, price: PRO_PRICE });
    const canceling = b.stripe.updateSubscription(subscription.id, { cancelAtPeriodEnd: true });
    await applyInTurn(stripeEvent("customer.subscription.updated", canceling));
    assert.equal(await cachedPlan(user.id), "pro", "paid until the end of the period");

    // The period ends: Stripe cancels the subscription; its event is lost.
    const sql = database();
    try {
      await sql`update public.stripe_subscriptions
                   set current_period_end = now() - interval '1 minute'
                 where id = ${subscription.id}`;
    } finally {
      await sql.end();
    }
    b.stripe.updateSubscription(subscription.id, { status: "canceled" });
    await reconcile();
    assert.equal(await cachedPlan(user.id), "free");
    assert.equal((await profileRow(user.id)).subscription_status, "canceled");
  },
);

billingTest(
  "after an outage longer than Stripe's retries, reconciliation gives a paying user their plan",
  async () => {
    const { user, customerId } = await subscriber(b);
    b.stripe.addSubscription({ customer: customerId, price: PRO_PRICE });
    assert.equal((await profileRow(user.id)).plan_id, "free", "no event ever arrived");

    await reconcile();
    assert.equal(await cachedPlan(user.id), "pro");
  },
);

billingTest(
  "a failed payment keeps the plan while Stripe retries, and unpaid ends it",
  async () => {
    const { user, customerId } = await subscriber(b);
    const subscription = b.stripe.addSubscription({ customer: customerId, price: PRO_PRICE });
    await applyInTurn(stripeEvent("customer.subscription.created", subscription, now() - 60));

    b.stripe.updateSubscription(subscription.id, { status: "past_due" });
    await applyInTurn(paymentFailed(customerId, subscription.id));
    assert.deepEqual(await profileRow(user.id), {
      plan_id: "pro",
      stripe_subscription_id: subscription.id,
      subscription_status: "past_due",
    });

    const unpaid = b.stripe.updateSubscription(subscription.id, { status: "unpaid" });
    await applyInTurn(stripeEvent("customer.subscription.updated", unpaid));
    assert.equal(await cachedPlan(user.id), "free");
  },
);

billingTest("an event about a customer of no user is applied as nothing", async () => {
  const stranger = b.stripe.addSubscription({ customer: "cus_not_ours", price: PRO_PRICE });
  await applyInTurn(stripeEvent("customer.subscription.updated", stranger));
});

billingTest(
  "a failed payment queues one billing.payment_failed notification for its user",
  async () => {
    const { user, customerId } = await subscriber(b);
    const subscription = b.stripe.addSubscription({ customer: customerId, price: PRO_PRICE });
    await applyInTurn(stripeEvent("customer.subscription.created", subscription, now() - 60));
    const failed = paymentFailed(customerId, subscription.id);

    await applyInTurn(failed);
    await deliver(b.url, failed);
    assert.equal((await processJobs(b.url)).status, 200);

    const sql = database();
    try {
      const jobs = await sql`
      select payload ->> 'subject' as subject from public.background_jobs
       where type = 'notify.send' and payload ->> 'user_id' = ${user.id}
         and payload ->> 'kind' = 'billing.payment_failed'`;
      assert.deepEqual(jobs.map((job) => job.subject), [failed.id]);
    } finally {
      await sql.end();
    }
  },
);
