import { z } from "zod";
import { log } from "../log.ts";
import { isResourceMissing, type Stripe } from "../stripe.ts";
import type { JobHandler } from "./job.ts";

/**
 * `stripe.cancel_subscription` {user_id, subscription_id, customer_id}: a deleted account stops
 * being billed. Every subscription of the customer that has not ended is canceled at once, the
 * one named included (a checkout completed while the account was being deleted is caught too).
 *
 * Idempotent: each subscription is read first and only canceled when it has not ended, and a
 * cancel that finds the subscription gone (Stripe answers a second cancel that way) counts as
 * done, so a run repeated after a worker died mid-way changes nothing more.
 */

const Payload = z.object({
  user_id: z.uuid(),
  subscription_id: z.string().min(1).nullish(),
  customer_id: z.string().min(1).nullish(),
});

const ENDED = new Set(["canceled", "incomplete_expired"]);

async function statusOf(stripe: Stripe, subscriptionId: string): Promise<string | null> {
  try {
    return (await stripe.subscriptions.retrieve(subscriptionId)).status;
  } catch (error) {
    if (isResourceMissing(error)) return null;
    throw error;
  }
}

async function subscriptionsOf(stripe: Stripe, customerId: string): Promise<Map<string, string>> {
  try {
    const list = await stripe.subscriptions.list({
      customer: customerId,
      status: "all",
      limit: 100,
    });
    return new Map(list.data.map((sub) => [sub.id, sub.status]));
  } catch (error) {
    if (isResourceMissing(error)) return new Map();
    throw error;
  }
}

export const cancelSubscription: JobHandler = {
  needsStripe: true,
  async run(payload, ctx) {
    const job = Payload.parse(payload);
    const stripe = await ctx.stripe();
    const statuses = job.customer_id
      ? await subscriptionsOf(stripe, job.customer_id)
      : new Map<string, string>();
    if (job.subscription_id && !statuses.has(job.subscription_id)) {
      const status = await statusOf(stripe, job.subscription_id);
      if (status) statuses.set(job.subscription_id, status);
    }
    for (const [subscriptionId, status] of statuses) {
      if (ENDED.has(status)) continue;
      try {
        await stripe.subscriptions.cancel(subscriptionId);
      } catch (error) {
        if (isResourceMissing(error)) continue;
        throw error;
      }
      log.info("subscription canceled for a deleted account", {
        user_id: job.user_id,
        subscription_id: subscriptionId,
      });
    }
  },
};
