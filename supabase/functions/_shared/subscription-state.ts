import type { Redis } from "@upstash/redis";
import { z } from "zod";
import type { Sql } from "./db.ts";
import { refreshProfile } from "./profile-cache.ts";
import type { Stripe } from "./stripe.ts";

/**
 * A Stripe subscription's state as this backend keeps it, and the one way to store it:
 * `apply_stripe_subscription_state` (migration 20261123000600) stores it unless it is older than
 * what is stored, sets the owner's plan from it, and the profile cache is refreshed whenever
 * that changed the profile. Reads from Stripe are stored compare-and-set against the revision
 * the row had before the read was sent (see the migration for why).
 */

export interface SubscriptionState {
  id: string;
  customerId: string;
  status: string;
  priceId: string | null;
  /** Seconds since the epoch. */
  currentPeriodEnd: number | null;
  cancelAtPeriodEnd: boolean;
}

/** The part of a Stripe subscription object (in an event or from the API) this reads. */
const StripeSubscription = z.object({
  id: z.string(),
  object: z.literal("subscription"),
  customer: z.union([z.string(), z.object({ id: z.string() })]),
  status: z.string(),
  cancel_at_period_end: z.boolean(),
  // Webhook endpoints pinned to an API version before 2025-03-31 still send it here.
  current_period_end: z.number().optional(),
  items: z.object({
    data: z.array(z.object({
      price: z.object({ id: z.string() }),
      current_period_end: z.number().optional(),
    })),
  }),
});

export function subscriptionStateOf(object: unknown): SubscriptionState {
  const sub = StripeSubscription.parse(object);
  const item = sub.items.data[0];
  return {
    id: sub.id,
    customerId: typeof sub.customer === "string" ? sub.customer : sub.customer.id,
    status: sub.status,
    priceId: item?.price.id ?? null,
    currentPeriodEnd: item?.current_period_end ?? sub.current_period_end ?? null,
    cancelAtPeriodEnd: sub.cancel_at_period_end,
  };
}

/** Where a state sits in time, and whether it came from reading Stripe. */
export interface Stamp {
  /** Seconds since the epoch: the event's `created`, or what a read from Stripe reflects. */
  asOf: number;
  eventId: string | null;
  /** For a read from Stripe: the row's revision before the read was sent (null: no row). */
  read?: { revision: number | null };
}

export type Outcome =
  | "applied"
  | "stale"
  | "duplicate"
  | "tie"
  | "superseded"
  | "unknown_customer";

export interface Applied {
  outcome: Outcome;
  userId: string | null;
  planId: string | null;
  profileChanged: boolean;
}

export interface StateDeps {
  sql: Sql;
  redis: Redis;
}

export async function applySubscriptionState(
  deps: StateDeps,
  state: SubscriptionState,
  stamp: Stamp,
): Promise<Applied> {
  const periodEnd = state.currentPeriodEnd === null
    ? null
    : new Date(state.currentPeriodEnd * 1000);
  const [row] = await deps.sql<
    { outcome: Outcome; user_id: string | null; plan_id: string | null; profile_changed: boolean }[]
  >`
    select outcome, user_id, plan_id, profile_changed
      from public.apply_stripe_subscription_state(
        ${state.id}, ${state.customerId}, ${state.status}, ${state.priceId}, ${periodEnd},
        ${state.cancelAtPeriodEnd}, ${new Date(stamp.asOf * 1000)}, ${stamp.eventId},
        ${stamp.read !== undefined}, ${stamp.read?.revision ?? null})`;
  if (row.profile_changed && row.user_id) {
    await refreshProfile(deps.redis, deps.sql, row.user_id);
  }
  return {
    outcome: row.outcome,
    userId: row.user_id,
    planId: row.plan_id,
    profileChanged: row.profile_changed,
  };
}

/** The revisions of stored subscriptions, noted before reading them from Stripe. */
export async function revisionsOf(
  sql: Sql,
  where: { subscriptionId: string } | { userId: string },
): Promise<Map<string, number>> {
  const rows = "subscriptionId" in where
    ? await sql<{ id: string; revision: string }[]>`
        select id, revision from public.stripe_subscriptions where id = ${where.subscriptionId}`
    : await sql<{ id: string; revision: string }[]>`
        select id, revision from public.stripe_subscriptions where user_id = ${where.userId}`;
  return new Map(rows.map((row) => [row.id, Number(row.revision)]));
}

/**
 * The stamp of a state read from Stripe by a request sent at `sentAtMs`. The read reflects every
 * change made before it was sent; it is dated one second earlier, because `created` has
 * one-second resolution and clocks differ slightly, so that no change made after the read can
 * ever look older than it (at worst it ties, and a tie is read again). A read made because of an
 * event reflects that event, so it is never dated before it.
 */
export function readStamp(
  sentAtMs: number,
  revision: number | null,
  event?: { id: string; created: number },
): Stamp {
  return {
    asOf: Math.max(Math.floor(sentAtMs / 1000) - 1, event?.created ?? 0),
    eventId: event?.id ?? null,
    read: { revision },
  };
}

/** Reads that lose to a write made meanwhile are made again, at most this many times. */
const READ_ATTEMPTS = 3;

/** Reads one subscription from Stripe and stores what it says. */
export async function syncSubscription(
  deps: StateDeps & { stripe: Stripe },
  subscriptionId: string,
  event?: { id: string; created: number },
): Promise<Applied> {
  for (let attempt = 1;; attempt++) {
    const revision = (await revisionsOf(deps.sql, { subscriptionId })).get(subscriptionId) ?? null;
    const sentAt = Date.now();
    const subscription = await deps.stripe.subscriptions.retrieve(subscriptionId);
    const applied = await applySubscriptionState(
      deps,
      subscriptionStateOf(subscription),
      readStamp(sentAt, revision, event),
    );
    if (applied.outcome !== "superseded") return applied;
    if (attempt === READ_ATTEMPTS) {
      throw new Error(`subscription ${subscriptionId} kept changing while it was read`);
    }
  }
}
