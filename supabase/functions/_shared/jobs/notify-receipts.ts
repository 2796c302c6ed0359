import { log } from "../log.ts";
import { pushReceipts } from "../push.ts";
import type { JobHandler } from "./job.ts";

/**
 * `notify.receipts` (queued every 15 minutes by pg_cron): reads Expo's receipts of the stored
 * tickets. `DeviceNotRegistered` removes the device (the app was uninstalled or the token
 * rotated); any other receipt, good or bad, ends its ticket (the bad ones are logged). A ticket
 * without a receipt yet waits for the next run, until Expo's day of keeping receipts is over.
 * A refused request (429, 5xx) fails the job, and the queue retries it after its backoff.
 */

/** Tickets read per run; the rest wait a quarter of an hour. */
const TICKETS_PER_RUN = 10_000;

export const readPushReceipts: JobHandler = {
  needsStripe: false,
  async run(_payload, { sql, config }) {
    await sql`delete from public.push_tickets where created_at < now() - interval '1 day'`;
    const tickets = await sql<{ id: string; device_id: string }[]>`
      select id, device_id from public.push_tickets order by created_at limit ${TICKETS_PER_RUN}`;
    if (tickets.length === 0) return;
    const receipts = await pushReceipts(config, tickets.map((ticket) => ticket.id));
    const unregistered: string[] = [];
    const ended: string[] = [];
    for (const ticket of tickets) {
      const receipt = receipts[ticket.id];
      if (!receipt) continue;
      ended.push(ticket.id);
      if (receipt.status === "error") {
        if (receipt.details?.error === "DeviceNotRegistered") unregistered.push(ticket.device_id);
        else {
          log.warn("push receipt error", {
            ticket_id: ticket.id,
            error: receipt.details?.error ?? null,
            message: receipt.message,
          });
        }
      }
    }
    if (unregistered.length > 0) {
      await sql`delete from public.devices where id = any(${unregistered}::uuid[])`;
    }
    if (ended.length > 0) {
      await sql`delete from public.push_tickets where id = any(${ended}::text[])`;
    }
  },
};
