import { z } from "zod";
import { REMOVE_BATCH, removeObjects } from "../storage.ts";
import type { JobHandler } from "./job.ts";

const Payload = z.object({ user_id: z.uuid() });

/**
 * `storage.delete_account` {user_id}: removes every object under a deleted account's folder, in
 * every bucket this backend manages, through the Storage API (`storage.objects` has no key to
 * `auth.users`, so nothing cascades, and deleting its rows would leave the files). The account's
 * deletion enqueues it twice in its own transaction: at once, and again once every upload URL
 * it was granted has expired, for an upload that was still under way.
 */
export const deleteAccountObjects: JobHandler = {
  needsStripe: false,
  async run(payload, ctx) {
    const { user_id: userId } = Payload.parse(payload);
    for (;;) {
      const batch = await ctx.sql<{ bucket_id: string; names: string[] }[]>`
        select o.bucket_id, array_agg(o.name) as names
          from (select bucket_id, name from storage.objects
                 where name like ${userId + "/%"}
                   and bucket_id in (select bucket_id from public.storage_retention)
                 limit ${REMOVE_BATCH}) as o
         group by o.bucket_id`;
      if (batch.length === 0) return;
      for (const { bucket_id, names } of batch) {
        const removed = await removeObjects(ctx.config, bucket_id, names);
        if (removed.length === 0) {
          throw new Error(`storage removed none of ${names.length} objects in ${bucket_id}`);
        }
      }
    }
  },
};
