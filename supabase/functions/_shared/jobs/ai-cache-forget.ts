import { z } from "zod";
import { forgetAiCacheEntries } from "../ai-cache.ts";
import type { JobHandler } from "./job.ts";

const Payload = z.object({ keys: z.array(z.string().regex(/^[0-9a-f]{64}$/)) });

/**
 * `ai_cache.forget` {keys}: deletes the Redis copies of a deleted account's AI-cache entries.
 * The account's deletion enqueues it with the keys of the rows it deleted, in the same
 * transaction; until it runs, the entries are unreachable anyway (their keys name the user).
 */
export const forgetAiCache: JobHandler = {
  needsStripe: false,
  async run(payload, ctx) {
    await forgetAiCacheEntries(ctx.redis, Payload.parse(payload).keys);
  },
};
