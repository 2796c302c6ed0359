import type { Config } from "../config.ts";
import { analyzeInBackground } from "./ai-analyze.ts";
import { forgetAiCache } from "./ai-cache-forget.ts";
import { makeRecommendations } from "./ai-recommendations.ts";
import { notifyAlert } from "./alert-notify.ts";
import type { JobHandler } from "./job.ts";
import { cleanUpExpiredData } from "./maintenance-cleanup.ts";
import { readPushReceipts } from "./notify-receipts.ts";
import { sendNotification } from "./notify-send.ts";
import { refreshStatistics } from "./statistics-refresh.ts";
import { cleanUpStorage } from "./storage-cleanup.ts";
import { applyStripeEvent } from "./stripe-apply-event.ts";
import { closeCustomer } from "./stripe-close-customer.ts";
import { reconcileSubscriptions } from "./stripe-reconcile.ts";

/** Every job type the worker runs, by the `type` it is enqueued with. */
export const JOB_HANDLERS: Readonly<Record<string, JobHandler>> = {
  "ai_cache.forget": forgetAiCache,
  "stripe.apply_event": applyStripeEvent,
  "stripe.close_customer": closeCustomer,
  // What earlier deployments queued on deletion; jobs of that type may still be waiting.
  "stripe.cancel_subscription": closeCustomer,
  "stripe.reconcile": reconcileSubscriptions,
  "statistics.refresh": refreshStatistics,
  "maintenance.cleanup": cleanUpExpiredData,
  "storage.cleanup": cleanUpStorage,
  "ai.analyze": analyzeInBackground,
  "ai.recommendations": makeRecommendations,
  "notify.send": sendNotification,
  "notify.receipts": readPushReceipts,
  "alert.notify": notifyAlert,
};

/**
 * The types a worker with this configuration can run, and so claims. A type it does not know (a
 * job from a newer deployment, say) or cannot run stays queued for a worker that can.
 */
export function runnableJobTypes(
  c: Config,
  handlers: Readonly<Record<string, JobHandler>> = JOB_HANDLERS,
): string[] {
  return Object.entries(handlers)
    .filter(([, handler]) => !handler.needsStripe || c.STRIPE_SECRET_KEY !== undefined)
    .filter(([, handler]) => !handler.needsAi || c.OPENAI_API_KEY !== undefined)
    .map(([type]) => type);
}
