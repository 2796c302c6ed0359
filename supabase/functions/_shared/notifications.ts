import { z } from "zod";

/**
 * Every push notification this backend sends, by kind: what its payload carries and the title
 * and body the user reads. One place, so the words of a notification are found by its kind.
 * They are queued by `enqueue_notification` (SQL: from the metering path, background analyses,
 * recommendations and the Stripe event handling), and sent by the `notify.send` job.
 */

export const NotificationKind = z.enum([
  "analysis.ready",
  "quota.almost_spent",
  "billing.payment_failed",
  "recommendations.ready",
]);
export type NotificationKind = z.infer<typeof NotificationKind>;

export interface NotificationContent {
  title: string;
  body: string;
  /** What the app gets with it, to open the right screen. */
  data: Record<string, unknown>;
}

const Data = z.record(z.string(), z.unknown());

export function notificationContent(
  kind: NotificationKind,
  subject: string,
  rawData: unknown,
): NotificationContent {
  const data = Data.parse(rawData ?? {});
  switch (kind) {
    case "analysis.ready":
      return {
        title: "Your analysis is ready",
        body: typeof data.analysis_type === "string"
          ? `Your ${data.analysis_type} analysis is done. Tap to see the results.`
          : "Tap to see the results.",
        data: { kind, analysis_id: subject },
      };
    case "quota.almost_spent":
      return {
        title: "You have used most of this month's analyses",
        body: typeof data.used === "number" && typeof data.quota === "number"
          ? `${data.used} of ${data.quota} used. Upgrade to keep going without a pause.`
          : "Upgrade to keep going without a pause.",
        data: { kind, period: subject },
      };
    case "billing.payment_failed":
      return {
        title: "Your payment did not go through",
        body: "Update your payment method to keep your plan.",
        data: { kind },
      };
    case "recommendations.ready":
      return {
        title: "Your weekly recommendations are here",
        body: "A few ideas based on your recent analyses.",
        data: { kind, week: subject },
      };
  }
}
