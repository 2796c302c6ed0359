import { ApiError } from "../_shared/errors.ts";
import { json, readBodyText } from "../_shared/http.ts";
import { STRIPE_EVENT_TYPES } from "../_shared/jobs/stripe-apply-event.ts";
import { defineFunction } from "../_shared/pipeline.ts";
import { verifyWebhook, webhookSecrets } from "../_shared/stripe.ts";

/**
 * `POST stripe-webhook`, called by Stripe, not by users: no token, no rate limit; the signature
 * over the raw body is the authentication, so the body is read as text and never parsed before
 * it verifies. A verified event is recorded and a job to apply it enqueued, in one statement,
 * and Stripe gets its 200 at once; the job worker applies it. A redelivery (Stripe delivers at
 * least once) finds the event recorded and enqueues nothing.
 */

const HANDLED = new Set<string>(STRIPE_EVENT_TYPES);

/** Jobs that apply events run before background chores. */
const APPLY_PRIORITY = -10;

export const handler = defineFunction(
  { name: "stripe-webhook", methods: ["POST"], auth: "none" },
  async ({ req, config, sql }) => {
    const secrets = webhookSecrets(config);
    if (secrets.length === 0) {
      throw new ApiError("billing_unavailable", "the Stripe webhook is not configured");
    }
    const rawBody = await readBodyText(req, config.MAX_BODY_BYTES);
    const event = await verifyWebhook(rawBody, req.headers.get("stripe-signature"), secrets);
    if (HANDLED.has(event.type)) {
      await sql`
          with recorded as (
            insert into public.stripe_events (id, type, created, payload)
            values (${event.id}, ${event.type}, to_timestamp(${event.created}), ${rawBody}::text::jsonb)
            on conflict (id) do nothing
            returning id
          )
          select public.enqueue_job(
                   'stripe.apply_event', jsonb_build_object('event_id', id), now(),
                   ${APPLY_PRIORITY}, 'stripe.apply_event:' || id)
            from recorded`;
    }
    return json({ received: true });
  },
);
