import assert from "node:assert/strict";
import { BillingResponse } from "../supabase/functions/_shared/contracts.ts";
import { billing, billingTest, PRO_PRICE, startBilling, subscriber } from "./billing_support.ts";
import { createUser, database } from "./support.ts";

/**
 * A user can never have two checkouts to pay at once: while Stripe shows a subscription that
 * entitles them to a plan, or an open Checkout session for another plan, `checkout` is 409; an
 * open session for the same plan is answered again rather than a second one made. Decided from
 * Stripe's own state, which the profile only follows once the webhook has been applied.
 */

const b = await startBilling();

const sessionsOf = (customerId: string) =>
  b.stripe.checkoutSessions().filter((session) => session.customer === customerId);

/** A user whose Stripe customer exists already, as after an earlier checkout. */
async function customerUser(prefix: string) {
  const user = await createUser(prefix);
  const customerId = b.stripe.addCustomer(user.email);
  const sql = database();
  try {
    await sql`update public.profiles set stripe_customer_id = ${customerId} where id = ${user.id}`;
  } finally {
    await sql.end();
  }
  return { user, customerId };
}

billingTest(
  "a checkout for the plan whose session opened an hour ago answers that session's URL again",
  async () => {
    const { user, customerId } = await customerUser("reopen");
    const earlier = b.stripe.addCheckoutSession({
      customer: customerId,
      price: PRO_PRICE,
      plan: "pro",
      created: Math.floor(Date.now() / 1000) - 3600,
    });

    const again = await billing(b.url, user, { action: "checkout", plan: "pro" });
    assert.equal(again.status, 200);
    assert.equal(BillingResponse.parse(again.body).url, earlier.url);
    assert.equal(sessionsOf(customerId).length, 1, "no session made");
  },
);

billingTest(
  "a checkout for team while a pro session is open is 409 with the open session's URL",
  async () => {
    const { user, customerId } = await subscriber(b, "other-plan");
    const [pro] = sessionsOf(customerId);
    const { status, body } = await billing(b.url, user, { action: "checkout", plan: "team" });
    assert.equal(status, 409);
    assert.equal(body.error.code, "conflict");
    assert.equal(body.error.checkout_url, pro.url);
    assert.equal(sessionsOf(customerId).length, 1, "no team session made");
  },
);

billingTest(
  "a checkout while Stripe has an active subscription the profile does not show yet is 409",
  async () => {
    const { user, customerId } = await subscriber(b, "paid-not-applied");
    const [session] = sessionsOf(customerId);
    // Paid at Stripe; the webhook has not been applied, so the profile still says free.
    b.stripe.completeCheckout(String(session.id));

    for (const plan of ["pro", "team"]) {
      const { status, body } = await billing(b.url, user, { action: "checkout", plan });
      assert.equal(status, 409, plan);
      assert.equal(body.error.code, "conflict");
      assert.match(body.error.message, /portal/);
    }
    assert.equal(sessionsOf(customerId).length, 1, "no session made");
  },
);

billingTest("once the open session has expired, checkout opens a new one", async () => {
  const { user, customerId } = await subscriber(b, "expired");
  const [first] = sessionsOf(customerId);
  b.stripe.expireCheckoutSession(String(first.id));

  const { status, body } = await billing(b.url, user, { action: "checkout", plan: "pro" });
  assert.equal(status, 200);
  const { url } = BillingResponse.parse(body);
  const sessions = sessionsOf(customerId);
  assert.equal(sessions.length, 2);
  assert.deepEqual(
    sessions.filter((session) => session.status === "open").map((session) => session.url),
    [url],
  );
});
