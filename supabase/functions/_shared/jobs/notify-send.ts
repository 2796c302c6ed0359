import { z } from "zod";
import { errorMessage, log } from "../log.ts";
import { notificationContent, NotificationKind } from "../notifications.ts";
import { pushStatusOf, sendPush } from "../push.ts";
import type { JobHandler } from "./job.ts";

/**
 * `notify.send`: one notification to every device of its user, through Expo.
 *
 * - Only when the user's `settings.notifications_enabled` is true (otherwise it is dropped).
 * - During the user's quiet hours it is deferred, not dropped: a new `notify.send` job marked
 *   `deferred` is queued for the end of the window, and that one sends whatever the hour.
 * - At most once per (user, kind, subject): the `push_notifications` row is claimed before
 *   anything is sent. If Expo refuses before any message went out (429 after the SDK's own
 *   retries, or 5xx), the claim is given back and the error left to the queue's retry backoff;
 *   once a chunk went out, a retry finds the claim and sends nothing again.
 * - Tickets are stored for `notify.receipts`; a ticket that already says `DeviceNotRegistered`
 *   removes its device at once.
 */

const Payload = z.object({
  user_id: z.uuid(),
  kind: NotificationKind,
  subject: z.string().min(1),
  data: z.unknown().optional(),
  deferred: z.boolean().optional(),
});

const Recipient = z.object({
  notifications_enabled: z.boolean().nullable(),
  quiet_until: z.date().nullable(),
});

export const sendNotification: JobHandler = {
  needsStripe: false,
  async run(payload, { sql, config }) {
    const job = Payload.parse(payload);
    const [row] = await sql`
      select (p.settings ->> 'notifications_enabled')::boolean as notifications_enabled,
             public.quiet_hours_end(p.settings, now()) as quiet_until
        from public.profiles as p
       where p.id = ${job.user_id}`;
    if (!row) return;
    const recipient = Recipient.parse(row);
    if (recipient.notifications_enabled !== true) return;
    if (recipient.quiet_until && !job.deferred) {
      await sql`
        select public.enqueue_job('notify.send', ${sql.json({ ...job, deferred: true } as never)},
                                  ${recipient.quiet_until})`;
      return;
    }

    const devices = await sql<{ id: string; expo_push_token: string }[]>`
      select id, expo_push_token from public.devices where user_id = ${job.user_id} order by id`;
    if (devices.length === 0) return;
    const [claim] = await sql<{ id: string }[]>`
      insert into public.push_notifications (user_id, kind, subject)
      values (${job.user_id}, ${job.kind}, ${job.subject})
      on conflict (user_id, kind, subject) do nothing
      returning id`;
    if (!claim) return;

    const content = notificationContent(job.kind, job.subject, job.data);
    const deviceOf = new Map(devices.map((device) => [device.expo_push_token, device.id]));
    let anySent = false;
    try {
      await sendPush(
        config,
        devices.map((device) => ({ to: device.expo_push_token, sound: "default", ...content })),
        async (chunk, tickets) => {
          anySent = true;
          const accepted = tickets.flatMap((ticket, i) =>
            ticket.status === "ok"
              ? [{
                id: ticket.id,
                notification_id: claim.id,
                device_id: deviceOf.get(String(chunk[i].to))!,
              }]
              : []
          );
          const unregistered = tickets.flatMap((ticket, i) =>
            ticket.status === "error" && ticket.details?.error === "DeviceNotRegistered"
              ? [deviceOf.get(String(chunk[i].to))!]
              : []
          );
          if (accepted.length > 0) {
            await sql`insert into public.push_tickets ${sql(accepted)} on conflict (id) do nothing`;
          }
          if (unregistered.length > 0) {
            await sql`delete from public.devices where id = any(${unregistered}::uuid[])`;
          }
        },
      );
    } catch (error) {
      if (!anySent) {
        await sql`delete from public.push_notifications where id = ${claim.id}`;
      }
      log.warn("push send failed", {
        user_id: job.user_id,
        kind: job.kind,
        status: pushStatusOf(error),
        retried: !anySent,
        error: errorMessage(error),
      });
      if (!anySent) throw error;
    }
  },
};
