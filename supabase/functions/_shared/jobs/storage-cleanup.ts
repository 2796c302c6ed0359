import { z } from "zod";
import { UploadBucket } from "../contracts.ts";
import { releaseBytes, REMOVE_BATCH, removeObjects } from "../storage.ts";
import type { JobHandler } from "./job.ts";

const Payload = z.object({
  bucket: UploadBucket,
  names: z.array(z.string().min(1)).min(1).max(REMOVE_BATCH),
});

/**
 * `storage.cleanup` {bucket, names}: removes up to 100 objects through the Storage API and gives
 * their bytes back. Queued daily for objects past their bucket's retention
 * (`enqueue_storage_cleanup`) and, in an account's deletion, for every object in its folders
 * (`enqueue_account_storage_removal`). Removal comes first: run again, it finds them gone and
 * releases nothing twice.
 */
export const cleanUpStorage: JobHandler = {
  needsStripe: false,
  async run(payload, ctx) {
    const { bucket, names } = Payload.parse(payload);
    await releaseBytes(ctx.sql, bucket, await removeObjects(ctx.config, bucket, names));
  },
};
