import { errorMessage, log } from "../log.ts";
import { isResourceMissing, type Stripe } from "../stripe.ts";
import {
  applySubscriptionState,
  readStamp,
  revisionsOf,
  type StateDeps,
  subscriptionStateOf,
} from "../subscription-state.ts";
import type { JobHandler } from "./job.ts";

/**
 * `stripe.reconcile` {}: re-reads from Stripe every subscription of the users whose plan may have
 * drifted (public.stripe_customers_to_reconcile: a paid period that is over, or a customer not
 * re-read for a week) and applies what Stripe says. This is what puts plans right after an outage
 * longer than Stripe's retries, and what ends a subscription canceled at period end on time.
 *
 * A read that loses to a state stored meanwhile is left for a later run to make again. One user's failure (a price mapped to no plan, say) does not stop the
 * others; the job fails at the end so that it is retried and visible, and re-applying what
 * already succeeded changes nothing.
 */

/** Users per run; the hourly schedule works through a backlog. */
const USERS_PER_RUN = 25;

async function reconcileCustomer(
  deps: StateDeps & { stripe: Stripe },
  userId: string,
  customerId: string,
) {
  const revisions = await revisionsOf(deps.sql, { userId });
  const sentAt = Date.now();
  let subscriptions: Stripe.Subscription[] = [];
  try {
    subscriptions = (await deps.stripe.subscriptions.list({
      customer: customerId,
      status: "all",
      limit: 100,
    })).data;
  } catch (error) {
    if (!isResourceMissing(error)) throw error;
    // Deleted at Stripe, or from another Stripe account: leave the stored state alone.
    log.warn("stripe customer not found while reconciling", {
      user_id: userId,
      customer_id: customerId,
    });
  }
  for (const subscription of subscriptions) {
    await applySubscriptionState(
      deps,
      subscriptionStateOf(subscription),
      readStamp(sentAt, revisions.get(subscription.id) ?? null),
    );
  }
  await deps.sql`
    insert into public.stripe_customer_reconciliations (user_id, reconciled_at)
    values (${userId}, now())
    on conflict (user_id) do update set reconciled_at = excluded.reconciled_at`;
}

export const reconcileSubscriptions: JobHandler = {
  needsStripe: true,
  async run(_payload, ctx) {
    const candidates = await ctx.sql<{ user_id: string; customer_id: string; reason: string }[]>`
      select user_id, customer_id, reason
        from public.stripe_customers_to_reconcile(${USERS_PER_RUN})`;
    if (candidates.length === 0) return;
    const deps = { sql: ctx.sql, redis: ctx.redis, stripe: await ctx.stripe() };
    const failures: string[] = [];
    for (const { user_id: userId, customer_id: customerId, reason } of candidates) {
      try {
        await reconcileCustomer(deps, userId, customerId);
      } catch (error) {
        const message = errorMessage(error);
        failures.push(`${userId}: ${message}`);
        log.error("reconciling a customer failed", {
          user_id: userId,
          customer_id: customerId,
          reason,
          error: message,
        });
      }
    }
    if (failures.length > 0) {
      throw new Error(
        `${failures.length} of ${candidates.length} users not reconciled: ${failures.join("; ")}`,
      );
    }
  },
};
