import { z } from "zod";
import { log } from "../log.ts";
import { isResourceMissing, type Stripe } from "../stripe.ts";
import type { JobContext, JobHandler } from "./job.ts";

/**
 * `stripe.close_customer` {customer_id}: the Stripe customer of a deleted account
 * (public.close_stripe_customer queues it) can no longer pay or be billed. Every open Checkout
 * session is expired first, so none can complete after the subscriptions are listed; then every
 * subscription that can still bill (active, trialing, past_due, unpaid, incomplete, paused) is
 * canceled at once. A subscription that started anyway, from a session paid before it was
 * expired, is canceled and refunded when its event is applied (`closeStartedSubscription`).
 *
 * Idempotent: only open sessions and subscriptions that have not ended are acted on, a write
 * that finds its object already done counts as done, and every write carries an idempotency key
 * derived from the object, so a run repeated after a worker died mid-way changes nothing more.
 *
 * Also registered as `stripe.cancel_subscription`, the type earlier deployments queued on
 * deletion: its payload {user_id, subscription_id, customer_id} names the customer, and the
 * subscription it names is one of that customer's.
 */

const Payload = z.object({ customer_id: z.string().min(1) });

/** Statuses from which a subscription never bills again. */
const ENDED = new Set(["canceled", "incomplete_expired"]);

/** Cancels the subscription unless it has ended; whether this call canceled it. */
async function cancelUnlessEnded(stripe: Stripe, subscription: Stripe.Subscription) {
  if (ENDED.has(subscription.status)) return false;
  try {
    await stripe.subscriptions.cancel(subscription.id, {}, {
      idempotencyKey: `cancel:${subscription.id}`,
    });
    return true;
  } catch (error) {
    // Stripe answers a cancel of a canceled subscription as if it did not exist.
    if (isResourceMissing(error)) return false;
    throw error;
  }
}

async function expireOpenSession(stripe: Stripe, sessionId: string) {
  try {
    await stripe.checkout.sessions.expire(sessionId, {}, { idempotencyKey: `expire:${sessionId}` });
  } catch (error) {
    // Completed or expired since it was listed: a completed one's subscription is listed next.
    const { status } = await stripe.checkout.sessions.retrieve(sessionId);
    if (status === "open") throw error;
  }
}

/** Deleted at Stripe (by hand, say): nothing of it can bill any more. */
async function customerIsGone(stripe: Stripe, customerId: string): Promise<boolean> {
  try {
    return (await stripe.customers.retrieve(customerId)).deleted === true;
  } catch (error) {
    if (isResourceMissing(error)) return true;
    throw error;
  }
}

export const closeCustomer: JobHandler = {
  needsStripe: true,
  async run(payload, ctx) {
    const { customer_id: customerId } = Payload.parse(payload);
    const stripe = await ctx.stripe();
    if (await customerIsGone(stripe, customerId)) return;
    for await (
      const session of stripe.checkout.sessions.list({
        customer: customerId,
        status: "open",
        limit: 100,
      })
    ) {
      await expireOpenSession(stripe, session.id);
      log.info("checkout session expired for a deleted account", {
        customer_id: customerId,
        session_id: session.id,
      });
    }
    for await (
      const subscription of stripe.subscriptions.list({
        customer: customerId,
        status: "all",
        limit: 100,
      })
    ) {
      if (await cancelUnlessEnded(stripe, subscription)) {
        log.info("subscription canceled for a deleted account", {
          customer_id: customerId,
          subscription_id: subscription.id,
        });
      }
    }
  },
};

/** Refunds one paid payment of an invoice; false for one the API cannot refund. */
async function refund(
  stripe: Stripe,
  subscriptionId: string,
  payment: Stripe.InvoicePayment.Payment,
): Promise<boolean> {
  const reference = (ref: string | { id: string } | undefined) =>
    ref === undefined ? undefined : typeof ref === "string" ? ref : ref.id;
  const paymentIntent = reference(payment.payment_intent);
  const charge = reference(payment.charge);
  // A payment recorded out of band was not taken through Stripe and cannot be refunded there.
  if (!paymentIntent && !charge) return false;
  try {
    await stripe.refunds.create({
      ...(paymentIntent ? { payment_intent: paymentIntent } : { charge }),
      reason: "requested_by_customer",
      metadata: { subscription_id: subscriptionId, why: "account_deleted" },
    }, { idempotencyKey: `refund:${subscriptionId}:${paymentIntent ?? charge}` });
  } catch (error) {
    // Idempotency keys are forgotten after a day; a payment refunded in full stays so.
    if ((error as { code?: unknown }).code !== "charge_already_refunded") throw error;
  }
  return true;
}

/**
 * A subscription started by a customer of no profile (`checkout.session.completed` or
 * `customer.subscription.created` answered `unknown_customer`): when the customer is a closed
 * one, the account it paid for no longer exists, so the subscription is canceled and every paid
 * payment of its latest invoice refunded. Whether the customer was a closed one (a customer that
 * was never ours is left alone). Repeating it for the same subscription, from a second event or a
 * retry, cancels and refunds nothing more.
 */
export async function closeStartedSubscription(
  ctx: JobContext,
  subscriptionId: string,
): Promise<boolean> {
  const stripe = await ctx.stripe();
  const subscription = await stripe.subscriptions.retrieve(subscriptionId);
  const customerId = typeof subscription.customer === "string"
    ? subscription.customer
    : subscription.customer.id;
  const [closed] = await ctx.sql`
    select 1 from public.closed_stripe_customers where customer_id = ${customerId}`;
  if (!closed) return false;
  await cancelUnlessEnded(stripe, subscription);
  const invoice = subscription.latest_invoice;
  if (invoice) {
    for await (
      const paid of stripe.invoicePayments.list({
        invoice: typeof invoice === "string" ? invoice : invoice.id,
        status: "paid",
        limit: 100,
      })
    ) {
      if (!await refund(stripe, subscriptionId, paid.payment)) {
        log.warn("a deleted account's payment cannot be refunded through Stripe", {
          customer_id: customerId,
          subscription_id: subscriptionId,
          invoice_payment_id: paid.id,
        });
      }
    }
  }
  log.info("subscription of a deleted account canceled and refunded", {
    customer_id: customerId,
    subscription_id: subscriptionId,
  });
  return true;
}
