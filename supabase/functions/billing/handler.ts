import type { Config } from "../_shared/config.ts";
import { BillingRequest, type BillingResponse } from "../_shared/contracts.ts";
import type { Sql } from "../_shared/db.ts";
import { ApiError } from "../_shared/errors.ts";
import { json } from "../_shared/http.ts";
import { defineFunction } from "../_shared/pipeline.ts";
import { billingUnavailable, type Stripe, stripe } from "../_shared/stripe.ts";

/**
 * `POST billing`: where the app sends a user to pay. `checkout` opens Stripe Checkout for a paid
 * plan, `portal` the Customer Portal (change plan or card, cancel). Neither changes the plan:
 * that happens when Stripe's events arrive (stripe-webhook), so the plan never runs ahead of what
 * Stripe says.
 */

/**
 * Subscription statuses that entitle to a plan (as in apply_stripe_subscription_state): while the
 * customer has one, a second subscription would bill twice.
 */
const ENTITLING_STATUSES = new Set(["active", "trialing", "past_due"]);

interface Caller {
  id: string;
  email: string | null;
}

async function storedCustomer(db: Sql, userId: string): Promise<string | null> {
  const [row] = await db<{ stripe_customer_id: string | null }[]>`
    select stripe_customer_id from public.profiles where id = ${userId}`;
  return row?.stripe_customer_id ?? null;
}

/**
 * The user's Stripe customer, created on first need. Concurrent first requests send the same
 * idempotency key, so Stripe makes one customer and both store the same id.
 */
async function ensureCustomer(db: Sql, client: Stripe, caller: Caller): Promise<string> {
  const stored = await storedCustomer(db, caller.id);
  if (stored) return stored;
  const customer = await client.customers.create(
    { email: caller.email ?? undefined, metadata: { user_id: caller.id } },
    { idempotencyKey: `customer:${caller.id}` },
  );
  await db`
    update public.profiles set stripe_customer_id = ${customer.id}
     where id = ${caller.id} and stripe_customer_id is null`;
  return (await storedCustomer(db, caller.id)) ?? customer.id;
}

/** The success URL with the session id Stripe fills in, so the app can tell which one came back. */
function successUrl(c: Config): string {
  const separator = c.BILLING_SUCCESS_URL.includes("?") ? "&" : "?";
  return `${c.BILLING_SUCCESS_URL}${separator}session_id={CHECKOUT_SESSION_ID}`;
}

/**
 * Refuses a checkout that could make the user pay twice, reading Stripe itself (the profile's
 * subscription status lags behind the webhook): 409 while a subscription entitles them to a
 * plan, or while a Checkout session for another plan is open (its URL in `checkout_url`). An
 * open session for this plan is answered again instead of a new one. Otherwise answers the
 * customer's newest session of any status, which keys the new one.
 */
async function priorCheckout(
  client: Stripe,
  customer: string,
  plan: string,
): Promise<{ reuse: BillingResponse } | { newest: string | null }> {
  for await (const sub of client.subscriptions.list({ customer, limit: 100 })) {
    if (ENTITLING_STATUSES.has(sub.status)) {
      throw new ApiError(
        "conflict",
        "you already have a subscription; change plans in the customer portal",
      );
    }
  }
  // Newest first. At most one session is open at a time (this rule) and a session lives at most
  // a day, so any open one is among the newest.
  const { data: sessions } = await client.checkout.sessions.list({ customer, limit: 100 });
  const open = sessions.find((session) => session.status === "open");
  if (open?.url && open.metadata?.plan === plan) return { reuse: { url: open.url } };
  if (open) {
    throw new ApiError(
      "conflict",
      "a checkout for another plan is open; finish or cancel it first",
      { checkout_url: open.url },
    );
  }
  return { newest: sessions[0]?.id ?? null };
}

async function checkout(
  db: Sql,
  client: Stripe,
  c: Config,
  caller: Caller,
  currentPlan: string,
  plan: string,
): Promise<BillingResponse> {
  if (currentPlan === plan) {
    throw new ApiError("conflict", `you are already on the ${plan} plan`);
  }
  if (currentPlan !== "free") {
    // A second subscription would bill twice; changing plans is the portal's job.
    throw new ApiError(
      "conflict",
      `you are subscribed to the ${currentPlan} plan; change plans in the customer portal`,
    );
  }
  const [price] = await db<{ stripe_price_id: string | null }[]>`
    select stripe_price_id from public.plans where id = ${plan}`;
  if (!price?.stripe_price_id) {
    throw new ApiError("billing_unavailable", `the ${plan} plan cannot be bought here`);
  }
  try {
    const customer = await ensureCustomer(db, client, caller);
    const prior = await priorCheckout(client, customer, plan);
    if ("reuse" in prior) return prior.reuse;
    const session = await client.checkout.sessions.create({
      mode: "subscription",
      customer,
      line_items: [{ price: price.stripe_price_id, quantity: 1 }],
      client_reference_id: caller.id,
      metadata: { user_id: caller.id, plan },
      subscription_data: { metadata: { user_id: caller.id, plan } },
      success_url: successUrl(c),
      cancel_url: c.BILLING_CANCEL_URL,
    }, {
      // A double tap lists the same newest session, so Stripe makes one session for both (it
      // answers a repeated key with the first response); once that session has ended, the next
      // checkout lists it as the newest and gets a fresh key.
      idempotencyKey: `checkout:${caller.id}:${plan}:${prior.newest ?? "first"}`,
    });
    if (!session.url) throw new Error(`checkout session ${session.id} has no URL`);
    return { url: session.url };
  } catch (error) {
    throw billingUnavailable(error, "checkout");
  }
}

async function portal(
  db: Sql,
  client: Stripe,
  c: Config,
  caller: Caller,
): Promise<BillingResponse> {
  const customer = await storedCustomer(db, caller.id);
  if (!customer) throw new ApiError("conflict", "there is no subscription to manage yet");
  try {
    const session = await client.billingPortal.sessions.create({
      customer,
      return_url: c.BILLING_RETURN_URL,
    });
    return { url: session.url };
  } catch (error) {
    throw billingUnavailable(error, "portal");
  }
}

export const handler = defineFunction(
  {
    name: "billing",
    methods: ["POST"],
    auth: "user",
    rateLimit: "general",
    body: BillingRequest,
    stripe,
  },
  async ({ body, caller, profile, config, sql: db, stripe }) => {
    // Without Stripe configured nothing here can work: say so before anything else.
    const client = await stripe();
    const response = body.action === "checkout"
      ? await checkout(db, client, config, caller, profile.plan.id, body.plan)
      : await portal(db, client, config, caller);
    return json(response);
  },
);
