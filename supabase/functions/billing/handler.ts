import type { Config } from "../_shared/config.ts";
import { BillingRequest, type BillingResponse } from "../_shared/contracts.ts";
import { type Sql, sql } from "../_shared/db.ts";
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

export interface BillingDeps {
  sql: () => Sql;
  stripe: () => Promise<Stripe>;
}

/**
 * A double tap within this window gets the same Checkout session (Stripe answers a repeated
 * idempotency key with the first response); a later tap gets a fresh one.
 */
const CHECKOUT_KEY_WINDOW_MS = 10 * 60_000;

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
    const window = Math.floor(Date.now() / CHECKOUT_KEY_WINDOW_MS);
    const session = await client.checkout.sessions.create({
      mode: "subscription",
      customer,
      line_items: [{ price: price.stripe_price_id, quantity: 1 }],
      client_reference_id: caller.id,
      metadata: { user_id: caller.id, plan },
      subscription_data: { metadata: { user_id: caller.id, plan } },
      success_url: successUrl(c),
      cancel_url: c.BILLING_CANCEL_URL,
    }, { idempotencyKey: `checkout:${caller.id}:${plan}:${window}` });
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

export function createBillingHandler(
  deps: BillingDeps = { sql, stripe: () => stripe() },
) {
  return defineFunction(
    {
      name: "billing",
      methods: ["POST"],
      auth: "user",
      rateLimit: "general",
      body: BillingRequest,
    },
    async ({ body, caller, profile, config }) => {
      // Without Stripe configured nothing here can work: say so before anything else.
      const client = await deps.stripe();
      const db = deps.sql();
      const response = body.action === "checkout"
        ? await checkout(db, client, config, caller, profile.plan.id, body.plan)
        : await portal(db, client, config, caller);
      return json(response, { headers: { "cache-control": "no-store" } });
    },
  );
}
