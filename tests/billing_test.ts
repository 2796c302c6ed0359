import assert from "node:assert/strict";
import { BillingResponse } from "../supabase/functions/_shared/contracts.ts";
import {
  billing,
  billingTest,
  customerOf,
  deliver,
  PRO_PRICE,
  startBilling,
  subscriber,
} from "./billing_support.ts";
import { stripeEvent } from "./stripe_server.ts";
import {
  appClient,
  changePlan,
  createUser,
  database,
  fixtureGateway,
  functionsGateway,
  invoke,
  processJobs,
} from "./support.ts";

/**
 * `billing` against a local Stripe-compatible server through the `stripe` SDK: Checkout and the
 * Customer Portal, one customer per user, one session per double tap, the refusals; and the
 * whole way from a completed checkout to the pro limits on the user's next request.
 */

const b = await startBilling();

billingTest(
  "checkout answers a Checkout URL for the plan's price that returns to the app",
  async () => {
    const user = await createUser("checkout");
    const { status, body } = await billing(b.url, user, { action: "checkout", plan: "pro" });
    assert.equal(status, 200);
    const { url } = BillingResponse.parse(body);

    const [session] = b.stripe.checkoutSessions().filter((s) => s.url === url);
    assert.equal(session.mode, "subscription");
    assert.equal(session.customer, await customerOf(user.id));
    assert.deepEqual(session.line_items, [{ price: PRO_PRICE, quantity: "1" }]);
    assert.equal(session.client_reference_id, user.id);
    assert.equal(session.success_url, "aiapp://billing/success?session_id={CHECKOUT_SESSION_ID}");
    assert.equal(session.cancel_url, "aiapp://billing/cancel");
  },
);

billingTest("a user's Stripe customer is created once and kept on the profile", async () => {
  const user = await createUser("customer");
  assert.equal((await billing(b.url, user, { action: "checkout", plan: "pro" })).status, 200);
  assert.equal((await billing(b.url, user, { action: "portal" })).status, 200);
  assert.equal((await billing(b.url, user, { action: "checkout", plan: "pro" })).status, 200);

  const customers = b.stripe.customers().filter((c) =>
    (c.metadata as Record<string, string>).user_id === user.id
  );
  assert.equal(customers.length, 1);
  assert.equal(customers[0].email, user.email);
  assert.equal(await customerOf(user.id), customers[0].id);
});

billingTest("a double tap on checkout makes one customer and one session", async () => {
  const user = await createUser("double-tap");
  const [first, second] = await Promise.all([
    billing(b.url, user, { action: "checkout", plan: "pro" }),
    billing(b.url, user, { action: "checkout", plan: "pro" }),
  ]);
  assert.equal(first.status, 200);
  assert.equal(second.status, 200);
  assert.equal(first.body.url, second.body.url);

  const customerId = await customerOf(user.id);
  assert.equal(
    b.stripe.customers().filter((c) => (c.metadata as Record<string, string>).user_id === user.id)
      .length,
    1,
  );
  assert.equal(b.stripe.checkoutSessions().filter((s) => s.customer === customerId).length, 1);
});

billingTest("portal answers a Customer Portal URL for the user's customer", async () => {
  const { user, customerId } = await subscriber(b);
  const { status, body } = await billing(b.url, user, { action: "portal" });
  assert.equal(status, 200);
  const { url } = BillingResponse.parse(body);
  const [session] = b.stripe.portalSessions().filter((s) => s.url === url);
  assert.equal(session.customer, customerId);
  assert.equal(session.return_url, "aiapp://billing");
});

billingTest("portal before any checkout is 409: there is nothing to manage", async () => {
  const user = await createUser("no-customer");
  const { status, body } = await billing(b.url, user, { action: "portal" });
  assert.equal(status, 409);
  assert.equal(body.error.code, "conflict");
});

billingTest("checkout for the plan the user is already on is 409", async () => {
  const user = await createUser("already-pro");
  await changePlan(user.id, "pro");
  const { status, body } = await billing(b.url, user, { action: "checkout", plan: "pro" });
  assert.equal(status, 409);
  assert.equal(body.error.code, "conflict");
  assert.equal(b.stripe.customers().filter((c) => c.email === user.email).length, 0);
});

billingTest(
  "checkout for another plan while subscribed is 409: that is the portal's job",
  async () => {
    const user = await createUser("already-team");
    await changePlan(user.id, "team");
    const { status, body } = await billing(b.url, user, { action: "checkout", plan: "pro" });
    assert.equal(status, 409);
    assert.match(body.error.message, /portal/);
  },
);

billingTest("checkout for the free plan is refused as invalid", async () => {
  const user = await createUser("free-checkout");
  const { status, body } = await billing(b.url, user, { action: "checkout", plan: "free" });
  assert.equal(status, 400);
  assert.equal(body.error.code, "validation_failed");
  assert.equal(body.error.field, "plan");
});

billingTest("billing needs a signed-in user", async () => {
  const { status, body } = await invoke(appClient(undefined, b.url), "billing", {
    body: { action: "portal" },
  });
  assert.equal(status, 401);
  assert.equal(body.error.code, "unauthorized");
});

billingTest("without a Stripe key billing answers 503 billing_unavailable", async () => {
  const unconfigured = await functionsGateway({ STRIPE_SECRET_KEY: "" });
  try {
    const user = await createUser("no-stripe");
    const { status, body } = await billing(unconfigured.url, user, {
      action: "checkout",
      plan: "pro",
    });
    assert.equal(status, 503);
    assert.equal(body.error.code, "billing_unavailable");
  } finally {
    await unconfigured.close();
  }
});

billingTest("while Stripe is down checkout answers 503 billing_unavailable", async () => {
  const user = await createUser("stripe-down");
  b.stripe.setFailing(true);
  try {
    const { status, body } = await billing(b.url, user, { action: "checkout", plan: "pro" });
    assert.equal(status, 503);
    assert.equal(body.error.code, "billing_unavailable");
  } finally {
    b.stripe.setFailing(false);
  }
  assert.equal((await billing(b.url, user, { action: "checkout", plan: "pro" })).status, 200);
});

billingTest(
  "after a completed checkout is applied, the next metered request has the pro quota and rate limit",
  async () => {
    const sql = database();
    const plans = Object.fromEntries(
      (await sql<{ id: string; monthly_quota: number; general_per_minute: number }[]>`
        select id, monthly_quota, general_per_minute from public.plans where id in ('free', 'pro')`)
        .map((plan) => [plan.id, plan]),
    );
    await sql.end();
    const metered = await fixtureGateway();
    const { user, customerId } = await subscriber(b, "upgrade");
    const call = () => invoke(appClient(user.token, metered.url), "metered", { body: {} });

    const before = await call();
    assert.equal(before.status, 200);
    assert.equal(before.body.usage.quota, plans.free.monthly_quota);
    assert.equal(before.headers.get("x-ratelimit-limit"), String(plans.free.general_per_minute));

    // What Stripe holds and sends once the user has paid on the Checkout page.
    const subscription = b.stripe.addSubscription({ customer: customerId, price: PRO_PRICE });
    const completed = stripeEvent("checkout.session.completed", {
      id: `cs_test_${crypto.randomUUID().slice(0, 8)}`,
      object: "checkout.session",
      mode: "subscription",
      status: "complete",
      payment_status: "paid",
      customer: customerId,
      client_reference_id: user.id,
      subscription: subscription.id,
    });
    assert.equal((await deliver(b.url, completed)).status, 200);
    assert.equal((await processJobs(b.url)).status, 200);

    const after = await call();
    assert.equal(after.status, 200);
    assert.equal(after.body.usage.quota, plans.pro.monthly_quota);
    assert.equal(after.headers.get("x-ratelimit-limit"), String(plans.pro.general_per_minute));
    await metered.close();
  },
);
