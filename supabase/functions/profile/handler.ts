import type { Redis } from "@upstash/redis";
import type { Caller } from "../_shared/auth.ts";
import {
  type ProfileDeleteResponse,
  ProfileUpdateRequest,
  type Settings,
} from "../_shared/contracts.ts";
import { asUser, type Sql } from "../_shared/db.ts";
import { ApiError } from "../_shared/errors.ts";
import { json } from "../_shared/http.ts";
import { errorMessage, log } from "../_shared/log.ts";
import { defineFunction } from "../_shared/pipeline.ts";
import {
  forgetProfile,
  type Profile,
  profileResponse,
  refreshProfile,
} from "../_shared/profile-cache.ts";

/**
 * `profile`: the caller's own account.
 *   GET     the profile, plan and limits, from the profile cache, with the email of the token.
 *   PATCH   `{"settings": {...}}` merges into the settings (keys left out keep their value),
 *           written as the caller: row level security and the column grant let a user change
 *           their own `settings` and nothing else, whatever this code does. Any other key is
 *           refused by the schema. The cache is refreshed before answering, so the next read
 *           sees the change.
 *   DELETE  the account and everything that belongs to it (every table cascades from
 *           auth.users). The Stripe customer is closed in the same transaction (its
 *           subscriptions canceled and open Checkout sessions expired by a background job), so
 *           no account is ever gone while it can still be billed, and the cache keeps a
 *           tombstone, so the caller's still-valid token is refused from then on.
 */

/** What the account's reads and writes go through: the context's clients. */
interface Clients {
  sql: Sql;
  redis: Redis;
}

const gone = () => new ApiError("unauthorized", "this account no longer exists");

async function updateSettings(
  { sql: db, redis }: Clients,
  caller: Extract<Caller, { kind: "user" }>,
  settings: Settings,
): Promise<Profile> {
  const updated = await asUser(db, caller, (tx) =>
    tx`update public.profiles
          set settings = settings || ${tx.json(settings)}
        where id = ${caller.id}
        returning id`);
  if (updated.length === 0) throw gone();
  const profile = await refreshProfile(redis, db, caller.id);
  if (!profile) throw gone();
  return profile;
}

async function deleteAccount({ sql: db, redis }: Clients, userId: string): Promise<void> {
  const deleted = await db.begin(async (tx) => {
    // Locked, so no subscription can be attached to the account between this read and the end.
    const [account] = await tx<{ customer_id: string | null }[]>`
      select stripe_customer_id as customer_id
        from public.profiles
       where id = ${userId}
         for update`;
    if (!account) return false;
    // Whether or not a subscription is known yet: a Checkout session may still be open, or a
    // completed one's events not applied.
    if (account.customer_id) {
      await tx`select public.close_stripe_customer(${account.customer_id})`;
    }
    // The account's AI-cache rows go by cascade below; their Redis copies need the keys.
    await tx`
      select public.enqueue_job('ai_cache.forget', jsonb_build_object('keys', jsonb_agg(key)))
        from public.ai_response_cache
       where user_id = ${userId}
      having count(*) > 0`;
    // Storage objects have no key to the account: queued for removal through the Storage API.
    await tx`select public.enqueue_account_storage_removal(${userId})`;
    await tx`delete from auth.users where id = ${userId}`;
    return true;
  });
  if (!deleted) throw gone();
  try {
    await forgetProfile(redis, userId);
  } catch (error) {
    // The account is gone either way; its cache entry then lapses within PROFILE_TTL_SECONDS.
    log.warn("profile tombstone not written", {
      user_id: userId,
      error: errorMessage(error),
    });
  }
}

export const handler = defineFunction(
  {
    name: "profile",
    methods: ["GET", "PATCH", "DELETE"],
    auth: "user",
    rateLimit: "general",
    body: ProfileUpdateRequest,
  },
  async ({ req, caller, profile, body, sql, redis, wrote }) => {
    switch (req.method) {
      case "PATCH": {
        const updated = await updateSettings({ sql, redis }, caller, body.settings);
        wrote();
        return json(profileResponse(updated, caller.email));
      }
      case "DELETE":
        await deleteAccount({ sql, redis }, caller.id);
        return json({ deleted: true } satisfies ProfileDeleteResponse);
      default:
        return json(profileResponse(profile, caller.email));
    }
  },
);
