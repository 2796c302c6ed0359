import { z } from "zod";
import { errorMessage, log } from "../log.ts";
import {
  type Applied,
  applySubscriptionState,
  type StateDeps,
  subscriptionStateOf,
  syncSubscription,
} from "../subscription-state.ts";
import type { Stripe } from "../stripe.ts";
import type { JobHandler } from "./job.ts";
import { closeStartedSubscription } from "./stripe-close-customer.ts";

/**
 * `stripe.apply_event` {event_id}: applies one recorded webhook event (public.stripe_events) to
 * its subscription and the owner's plan.
 *
 * A subscription event carries the subscription as it was at the event's `created`; it is
 * applied unless a newer state is stored, and on a same-second tie the subscription is read from
 * Stripe instead. Checkout and invoice events carry no subscription state of their own: they are
 * a reason to read the subscription from Stripe.
 *
 * A subscription started (checkout completed, subscription created) by a customer of no profile
 * is, when that customer's account was deleted, canceled and refunded (`closeStartedSubscription`).
 */

/** The event types the webhook records; Stripe's endpoint should send exactly these. */
export const STRIPE_EVENT_TYPES = [
  "checkout.session.completed",
  "customer.subscription.created",
  "customer.subscription.updated",
  "customer.subscription.deleted",
  "invoice.paid",
  "invoice.payment_failed",
] as const;

const Payload = z.object({ event_id: z.string().min(1) });

const RecordedEvent = z.object({
  id: z.string(),
  type: z.enum(STRIPE_EVENT_TYPES),
  created: z.number().int(),
  data: z.object({ object: z.unknown() }),
});
type RecordedEvent = z.infer<typeof RecordedEvent>;

const Reference = z.union([z.string(), z.object({ id: z.string() })]).transform((ref) =>
  typeof ref === "string" ? ref : ref.id
);

const CheckoutSession = z.object({
  mode: z.string(),
  subscription: Reference.nullish(),
});

/** The subscription a completed Checkout session started, if it started one. */
function subscriptionOfCheckout(object: unknown): string | null {
  const session = CheckoutSession.parse(object);
  return session.mode === "subscription" ? session.subscription ?? null : null;
}

const Invoice = z.object({
  parent: z.object({
    subscription_details: z.object({ subscription: Reference }).nullish(),
  }).nullish(),
  // Where endpoints pinned to an API version before 2025-03-31 still send it.
  subscription: Reference.nullish(),
});

/** The subscription an event says was started, or null for any other event. */
function startedSubscription(event: RecordedEvent): string | null {
  switch (event.type) {
    case "customer.subscription.created":
      return subscriptionStateOf(event.data.object).id;
    case "checkout.session.completed":
      return subscriptionOfCheckout(event.data.object);
    default:
      return null;
  }
}

/** What applying the event did, or null when it concerns no subscription (a one-off payment). */
async function apply(
  event: RecordedEvent,
  deps: StateDeps & { stripe: () => Promise<Stripe> },
): Promise<Applied | null> {
  const read = async (subscriptionId: string) =>
    await syncSubscription({ ...deps, stripe: await deps.stripe() }, subscriptionId, event);

  switch (event.type) {
    case "customer.subscription.created":
    case "customer.subscription.updated":
    case "customer.subscription.deleted": {
      const state = subscriptionStateOf(event.data.object);
      const applied = await applySubscriptionState(deps, state, {
        asOf: event.created,
        eventId: event.id,
      });
      return applied.outcome === "tie" ? await read(state.id) : applied;
    }
    case "checkout.session.completed": {
      const subscription = subscriptionOfCheckout(event.data.object);
      return subscription ? await read(subscription) : null;
    }
    case "invoice.paid":
    case "invoice.payment_failed": {
      const invoice = Invoice.parse(event.data.object);
      const subscription = invoice.parent?.subscription_details?.subscription ??
        invoice.subscription;
      return subscription ? await read(subscription) : null;
    }
  }
}

export const applyStripeEvent: JobHandler = {
  needsStripe: true,
  async run(payload, ctx) {
    const { event_id: eventId } = Payload.parse(payload);
    const [row] = await ctx.sql<{ payload: unknown; processed_at: Date | null }[]>`
      select payload, processed_at from public.stripe_events where id = ${eventId}`;
    if (!row) throw new Error(`Stripe event ${eventId} is not recorded`);
    if (row.processed_at) return;
    const event = RecordedEvent.parse(row.payload);
    let applied: Applied | null;
    let closedCustomer = false;
    try {
      applied = await apply(event, ctx);
      const started = startedSubscription(event);
      if (applied?.outcome === "unknown_customer" && started) {
        closedCustomer = await closeStartedSubscription(ctx, started);
      }
    } catch (error) {
      const message = errorMessage(error);
      await ctx.sql`
        update public.stripe_events set last_error = left(${message}, 10000) where id = ${eventId}`;
      throw error;
    }
    if (event.type === "invoice.payment_failed" && applied?.userId) {
      // Queued before the event counts as processed, so a crash in between cannot lose it.
      await ctx.sql`
        select public.enqueue_notification(${applied.userId}, 'billing.payment_failed', ${event.id})`;
    }
    await ctx.sql`
      update public.stripe_events set processed_at = now(), last_error = null where id = ${eventId}`;
    log.info("stripe event applied", {
      event_id: event.id,
      type: event.type,
      outcome: closedCustomer ? "closed_customer" : applied?.outcome ?? "no_subscription",
      user_id: applied?.userId ?? null,
      plan_id: applied?.planId ?? null,
    });
  },
};
