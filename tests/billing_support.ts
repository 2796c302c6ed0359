import type { Gateway } from "../local/gateway.ts";
import { readProfile } from "../supabase/functions/_shared/profile-cache.ts";
import {
  signature,
  startStripeServer,
  type StripeServer,
  type StripeTestEvent,
  TEST_SECRET_KEY,
} from "./stripe_server.ts";
import {
  appClient,
  createUser,
  database,
  functionsGateway,
  invoke,
  type Invoked,
  stackTest,
  type TestUser,
  upstash,
} from "./support.ts";

/**
 * What the billing, webhook and job tests share: the real functions on a gateway of their own
 * pointed at a local Stripe-compatible server, signed deliveries, users who went through
 * checkout, and the plans' Stripe prices seeded for the duration of each test.
 */

export const WEBHOOK_SECRET = "whsec_test_current";
/** A secret being rotated out: still configured, so deliveries signed with it still verify. */
export const PREVIOUS_WEBHOOK_SECRET = "whsec_test_previous";
export const PRO_PRICE = "price_pro_test";
export const TEAM_PRICE = "price_team_test";

export interface Billing {
  stripe: StripeServer;
  gateway: Gateway;
  url: string;
}

/** The Stripe-compatible server and a gateway whose functions use it; `env` adds settings. */
export async function startBilling(env: Record<string, string> = {}): Promise<Billing> {
  const stripe = startStripeServer();
  const gateway = await functionsGateway({
    STRIPE_SECRET_KEY: TEST_SECRET_KEY,
    STRIPE_WEBHOOK_SECRET: `${WEBHOOK_SECRET},${PREVIOUS_WEBHOOK_SECRET}`,
    STRIPE_API_BASE: stripe.url,
    ...env,
  });
  return { stripe, gateway, url: gateway.url };
}

/**
 * A test with the pro and team plans sold at the test prices; whatever was there before is put
 * back afterwards, whatever the outcome.
 */
export function billingTest(name: string, fn: () => Promise<void>) {
  stackTest(name, async () => {
    const sql = database();
    try {
      const before = await sql<{ id: string; stripe_price_id: string | null }[]>`
        select id, stripe_price_id from public.plans where id in ('pro', 'team')`;
      await sql`update public.plans set stripe_price_id = null
                 where stripe_price_id in (${PRO_PRICE}, ${TEAM_PRICE})`;
      await sql`update public.plans set stripe_price_id = ${PRO_PRICE} where id = 'pro'`;
      await sql`update public.plans set stripe_price_id = ${TEAM_PRICE} where id = 'team'`;
      try {
        await fn();
      } finally {
        await sql`update public.plans set stripe_price_id = null where id in ('pro', 'team')`;
        for (const plan of before) {
          await sql`update public.plans set stripe_price_id = ${plan.stripe_price_id}
                     where id = ${plan.id}`;
        }
      }
    } finally {
      await sql.end();
    }
  });
}

export interface Delivery {
  status: number;
  // deno-lint-ignore no-explicit-any
  body: any;
}

/** POSTs an event to `stripe-webhook` as Stripe does, signed now with the current secret. */
export async function deliver(
  url: string,
  event: StripeTestEvent,
  options: { secret?: string; timestamp?: number; header?: string; body?: string } = {},
): Promise<Delivery> {
  const header = options.header ??
    await signature(event.payload, options.secret ?? WEBHOOK_SECRET, options.timestamp);
  const response = await fetch(`${url}/functions/v1/stripe-webhook`, {
    method: "POST",
    headers: { "content-type": "application/json", "stripe-signature": header },
    body: options.body ?? event.payload,
  });
  return { status: response.status, body: await response.json() };
}

/** `billing` as the app calls it, through supabase-js. */
export function billing(
  url: string,
  user: TestUser,
  body: { action: "checkout"; plan: string } | { action: "portal" },
): Promise<Invoked> {
  return invoke(appClient(user.token, url), "billing", { body });
}

export interface Subscriber {
  user: TestUser;
  customerId: string;
}

/** A new user who opened Checkout (so has a Stripe customer) but has not paid yet. */
export async function subscriber(b: Billing, prefix = "subscriber"): Promise<Subscriber> {
  const user = await createUser(prefix);
  const opened = await billing(b.url, user, { action: "checkout", plan: "pro" });
  if (opened.status !== 200) throw new Error(`checkout: ${JSON.stringify(opened.body)}`);
  return { user, customerId: await customerOf(user.id) };
}

export async function customerOf(userId: string): Promise<string> {
  const sql = database();
  try {
    const [row] = await sql<{ stripe_customer_id: string }[]>`
      select stripe_customer_id from public.profiles where id = ${userId}`;
    return row.stripe_customer_id;
  } finally {
    await sql.end();
  }
}

export interface ProfileRow {
  plan_id: string;
  stripe_subscription_id: string | null;
  subscription_status: string | null;
}

/** The profile as Postgres has it. */
export async function profileRow(userId: string): Promise<ProfileRow> {
  const sql = database();
  try {
    const [row] = await sql<ProfileRow[]>`
      select plan_id, stripe_subscription_id, subscription_status
        from public.profiles where id = ${userId}`;
    return row;
  } finally {
    await sql.end();
  }
}

/** The plan the functions see for this user: the profile cache first, as the pipeline reads it. */
export async function cachedPlan(userId: string): Promise<string | undefined> {
  const sql = database();
  try {
    return (await readProfile(upstash(), sql, userId)).profile?.plan.id;
  } finally {
    await sql.end();
  }
}

export interface JobRow {
  status: string;
  attempts: number;
  last_error: string | null;
}

/** The job that applies a recorded event, if any. */
export async function applyJobOf(eventId: string): Promise<JobRow[]> {
  const sql = database();
  try {
    return [
      ...await sql<JobRow[]>`
        select status, attempts, last_error from public.background_jobs
         where idempotency_key = ${`stripe.apply_event:${eventId}`}`,
    ];
  } finally {
    await sql.end();
  }
}

/** The recorded event, if any. */
export async function recordedEvent(
  eventId: string,
): Promise<{ type: string; processed_at: Date | null }[]> {
  const sql = database();
  try {
    return [
      ...await sql<{ type: string; processed_at: Date | null }[]>`
        select type, processed_at from public.stripe_events where id = ${eventId}`,
    ];
  } finally {
    await sql.end();
  }
}
