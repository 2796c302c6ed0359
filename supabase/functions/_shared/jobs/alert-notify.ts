import { z } from "zod";
import type { Config } from "../config.ts";
import { log } from "../log.ts";
import type { JobHandler } from "./job.ts";

/**
 * `alert.notify` {rule, state, ...}: one change of an alert rule's state (queued by
 * `evaluate_alert_rules`: `firing`, `reminder` while it keeps firing, `resolved`), posted to
 * `ALERT_WEBHOOK_URL` as a Slack-compatible incoming-webhook body: `text` for notifications and
 * plain clients, `blocks` with the rule, its value, the threshold and a link to the operator view.
 * A refused or failed post throws, so the queue retries it with its backoff. Without a webhook the
 * alert is the log line `alert`.
 */

const Payload = z.object({
  rule: z.string(),
  state: z.enum(["firing", "reminder", "resolved"]),
  description: z.string(),
  metric: z.string(),
  value: z.number().nullable(),
  threshold: z.number(),
  view: z.string(),
  firing_since: z.string(),
  at: z.string(),
});
type Payload = z.infer<typeof Payload>;

const POST_TIMEOUT_MS = 10_000;

const HEADLINE: Record<Payload["state"], string> = {
  firing: ":red_circle: Alert firing",
  reminder: ":red_circle: Alert still firing",
  resolved: ":large_green_circle: Alert resolved",
};

/** Where the link of an alert leads: the SQL editor of the project's dashboard, on the view. */
function viewLink(c: Config, view: string): string {
  const ref = new URL(c.SUPABASE_URL).hostname.match(/^([a-z0-9]+)\.supabase\.co$/)?.[1];
  const base = c.ALERT_DASHBOARD_URL ??
    (ref ? `https://supabase.com/dashboard/project/${ref}` : c.SUPABASE_URL);
  const query = encodeURIComponent(`select * from public.${view};`);
  return `${base.replace(/\/+$/, "")}/sql/new?content=${query}`;
}

/** The Slack-compatible body of one alert message. */
function alertMessage(alert: Payload, link: string) {
  const value = alert.value === null ? "no data" : String(alert.value);
  const text = `${HEADLINE[alert.state]}: ${alert.rule}: ${alert.description} ` +
    `(value ${value}, threshold ${alert.threshold})`;
  return {
    text,
    blocks: [
      {
        type: "header",
        text: { type: "plain_text", text: `${HEADLINE[alert.state]}: ${alert.rule}` },
      },
      { type: "section", text: { type: "mrkdwn", text: alert.description } },
      {
        type: "section",
        fields: [
          { type: "mrkdwn", text: `*Rule*\n${alert.rule} (${alert.metric})` },
          { type: "mrkdwn", text: `*Value*\n${value}` },
          { type: "mrkdwn", text: `*Threshold*\n${alert.threshold}` },
          { type: "mrkdwn", text: `*Firing since*\n${alert.firing_since}` },
        ],
      },
      { type: "section", text: { type: "mrkdwn", text: `<${link}|Open ${alert.view}>` } },
    ],
  };
}

export const notifyAlert: JobHandler = {
  needsStripe: false,
  async run(payload, ctx) {
    const alert = Payload.parse(payload);
    const link = viewLink(ctx.config, alert.view);
    log.warn("alert", {
      rule: alert.rule,
      state: alert.state,
      value: alert.value,
      threshold: alert.threshold,
      view: alert.view,
    });
    const url = ctx.config.ALERT_WEBHOOK_URL;
    if (!url) return;
    const response = await fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(alertMessage(alert, link)),
      signal: AbortSignal.timeout(POST_TIMEOUT_MS),
    });
    const answer = await response.text();
    if (!response.ok) {
      throw new Error(`alert webhook answered ${response.status}: ${answer.slice(0, 200)}`);
    }
  },
};
