import assert from "node:assert/strict";
import { StripeWebhookResponse } from "../supabase/functions/_shared/contracts.ts";
import {
  applyJobOf,
  billingTest,
  deliver,
  PREVIOUS_WEBHOOK_SECRET,
  PRO_PRICE,
  profileRow,
  recordedEvent,
  startBilling,
  subscriber,
  WEBHOOK_SECRET,
} from "./billing_support.ts";
import { signature, stripeEvent } from "./stripe_server.ts";
import { functionsGateway, processJobs } from "./support.ts";

/**
 * `stripe-webhook`: only deliveries whose Stripe signature verifies (made by the SDK's own test
 * helper) are recorded, each once however often and however concurrently it arrives, and each is
 * applied by the job worker once.
 */

const b = await startBilling();
const now = () => Math.floor(Date.now() / 1000);

/** A customer.subscription.created event for a new subscriber's fresh pro subscription. */
async function subscriptionCreated() {
  const { user, customerId } = await subscriber(b);
  const subscription = b.stripe.addSubscription({ customer: customerId, price: PRO_PRICE });
  return { user, event: stripeEvent("customer.subscription.created", subscription) };
}

async function assertNoTrace(eventId: string) {
  assert.deepEqual(await recordedEvent(eventId), [], "no event is recorded");
  assert.deepEqual(await applyJobOf(eventId), [], "no job is enqueued");
}

billingTest(
  "a verified event is recorded, acknowledged at once, and applied by the worker",
  async () => {
    const { user, event } = await subscriptionCreated();

    const delivery = await deliver(b.url, event);
    assert.equal(delivery.status, 200);
    assert.deepEqual(StripeWebhookResponse.parse(delivery.body), { received: true });
    const [recorded] = await recordedEvent(event.id);
    assert.equal(recorded.type, "customer.subscription.created");
    assert.equal(recorded.processed_at, null, "the webhook itself applies nothing");
    assert.equal((await profileRow(user.id)).plan_id, "free");

    const run = await processJobs(b.url);
    assert.equal(run.status, 200);
    assert.ok(run.body.succeeded >= 1);
    assert.equal((await applyJobOf(event.id))[0].status, "succeeded");
    assert.notEqual((await recordedEvent(event.id))[0].processed_at, null);
    assert.deepEqual(await profileRow(user.id), {
      plan_id: "pro",
      stripe_subscription_id: JSON.parse(event.payload).data.object.id,
      subscription_status: "active",
    });
  },
);

billingTest("a tampered body is refused with 400 and leaves no trace", async () => {
  const { event } = await subscriptionCreated();
  const tampered = event.payload.replace('"status":"active"', '"status":"trialing"');
  assert.notEqual(tampered, event.payload);
  const header = await signature(event.payload, WEBHOOK_SECRET);

  const delivery = await deliver(b.url, event, { header, body: tampered });
  assert.equal(delivery.status, 400);
  assert.equal(delivery.body.error.code, "invalid_signature");
  await assertNoTrace(event.id);
});

billingTest(
  "a body signed with another secret is refused with 400 and leaves no trace",
  async () => {
    const { event } = await subscriptionCreated();
    const delivery = await deliver(b.url, event, { secret: "whsec_someone_else" });
    assert.equal(delivery.status, 400);
    assert.equal(delivery.body.error.code, "invalid_signature");
    await assertNoTrace(event.id);
  },
);

billingTest("an expired signature is refused with 400 and leaves no trace", async () => {
  const { event } = await subscriptionCreated();
  const delivery = await deliver(b.url, event, { timestamp: now() - 3600 });
  assert.equal(delivery.status, 400);
  assert.equal(delivery.body.error.code, "invalid_signature");
  await assertNoTrace(event.id);
});

billingTest("a delivery without a Stripe-Signature header is refused with 400", async () => {
  const { event } = await subscriptionCreated();
  const response = await fetch(`${b.url}/functions/v1/stripe-webhook`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: event.payload,
  });
  const body = await response.json();
  assert.equal(response.status, 400);
  assert.equal(body.error.code, "invalid_signature");
  await assertNoTrace(event.id);
});

/**
 * Stripe's tolerance is 300 s. The signatures below sit a minute inside and a minute outside it,
 * so the time a delivery takes to arrive and be verified cannot move either across the line.
 */
billingTest("a signature four minutes old is accepted (Stripe's 300 s tolerance)", async () => {
  const { event } = await subscriptionCreated();
  const delivery = await deliver(b.url, event, { timestamp: now() - 240 });
  assert.equal(delivery.status, 200);
  assert.equal((await recordedEvent(event.id)).length, 1);
});

billingTest("a signature six minutes old is refused", async () => {
  const { event } = await subscriptionCreated();
  const delivery = await deliver(b.url, event, { timestamp: now() - 360 });
  assert.equal(delivery.status, 400);
  assert.equal(delivery.body.error.code, "invalid_signature");
  await assertNoTrace(event.id);
});

billingTest(
  "a header with two signatures of which one is valid is accepted (Stripe rolling its secret)",
  async () => {
    const { event } = await subscriptionCreated();
    const timestamp = now();
    const signed = (secret: string) =>
      signature(event.payload, secret, timestamp).then((header) => header.split(",v1=")[1]);
    const header = `t=${timestamp},v1=${await signed("whsec_expired_secret")},v1=${await signed(
      WEBHOOK_SECRET,
    )}`;

    const delivery = await deliver(b.url, event, { header });
    assert.equal(delivery.status, 200);
    assert.equal((await recordedEvent(event.id)).length, 1);
  },
);

billingTest("a delivery signed with the secret being rotated out still verifies", async () => {
  const { event } = await subscriptionCreated();
  const delivery = await deliver(b.url, event, { secret: PREVIOUS_WEBHOOK_SECRET });
  assert.equal(delivery.status, 200);
  assert.equal((await recordedEvent(event.id)).length, 1);
});

billingTest(
  "the same event delivered five times at once is recorded and applied once",
  async () => {
    const { user, customerId } = await subscriber(b);
    const subscription = b.stripe.addSubscription({ customer: customerId, price: PRO_PRICE });
    const invoice = {
      id: `in_test_${crypto.randomUUID().slice(0, 8)}`,
      object: "invoice",
      customer: customerId,
      status: "paid",
      parent: {
        type: "subscription_details",
        subscription_details: { subscription: subscription.id },
      },
    };
    const event = stripeEvent("invoice.paid", invoice);
    const header = await signature(event.payload, WEBHOOK_SECRET);

    const deliveries = await Promise.all(
      Array.from({ length: 5 }, () => deliver(b.url, event, { header })),
    );
    assert.deepEqual(deliveries.map((d) => d.status), [200, 200, 200, 200, 200]);
    assert.equal((await recordedEvent(event.id)).length, 1);
    assert.equal((await applyJobOf(event.id)).length, 1, "one job to apply it");

    await processJobs(b.url);
    await processJobs(b.url);
    const [job] = await applyJobOf(event.id);
    assert.equal(job.status, "succeeded");
    assert.equal(job.attempts, 1, "run once");
    assert.equal(
      b.stripe.calls(`GET /v1/subscriptions/${subscription.id}`),
      1,
      "the subscription was read from Stripe once: the event was applied once",
    );
    assert.equal((await profileRow(user.id)).plan_id, "pro");

    const replay = await deliver(b.url, event);
    assert.equal(replay.status, 200, "a later redelivery is acknowledged");
    await processJobs(b.url);
    assert.equal(b.stripe.calls(`GET /v1/subscriptions/${subscription.id}`), 1, "and not applied");
  },
);

billingTest("an event type the backend does not use is acknowledged and not recorded", async () => {
  const event = stripeEvent("customer.updated", { id: "cus_unused", object: "customer" });
  const delivery = await deliver(b.url, event);
  assert.equal(delivery.status, 200);
  await assertNoTrace(event.id);
});

billingTest("without a webhook secret the webhook answers 503 billing_unavailable", async () => {
  const unconfigured = await functionsGateway({ STRIPE_WEBHOOK_SECRET: "" });
  try {
    const { event } = await subscriptionCreated();
    const delivery = await deliver(unconfigured.url, event);
    assert.equal(delivery.status, 503);
    assert.equal(delivery.body.error.code, "billing_unavailable");
    await assertNoTrace(event.id);
  } finally {
    await unconfigured.close();
  }
});
