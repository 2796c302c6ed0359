import { Device, type DeviceDeleted, DeviceRequest, DevicesQuery } from "../_shared/contracts.ts";
import { jsonObjectSql } from "../_shared/db.ts";
import { ApiError } from "../_shared/errors.ts";
import { json } from "../_shared/http.ts";
import { defineFunction } from "../_shared/pipeline.ts";
import { isExpoPushToken } from "../_shared/push.ts";

/**
 * `devices`: where the caller's push notifications go.
 *
 *   POST   `DeviceRequest` → 201 `Device`: registers this install's Expo push token (again:
 *          idempotent, refreshing platform, app version and last seen). A token belongs to one
 *          user at a time, so registering one another account had moves it here (the phone
 *          changed hands, or its user signed in as someone else). A token that is not an Expo
 *          push token, by expo-server-sdk's own check, is 400 `validation_failed`.
 *   DELETE `?token=` → `DeviceDeleted`: unregisters the caller's own token (sign-out); another
 *          user's token is not touched, and answers `deleted: false` like an unknown one.
 *
 * Deleting the account removes its devices (cascade); Expo's `DeviceNotRegistered` does too.
 */

const DEVICE_JSON = jsonObjectSql(Device, "d");

export const handler = defineFunction(
  {
    name: "devices",
    methods: ["POST", "DELETE"],
    auth: "user",
    rateLimit: "general",
    body: DeviceRequest,
    query: DevicesQuery,
  },
  async ({ req, caller, body, query, sql }) => {
    if (req.method === "DELETE") {
      if (!query.token) {
        throw new ApiError("validation_failed", "token: required", { field: "token" });
      }
      const removed = await sql`
        delete from public.devices
         where user_id = ${caller.id} and expo_push_token = ${query.token}`;
      return json({ deleted: removed.count > 0 } satisfies DeviceDeleted);
    }
    if (!(await isExpoPushToken(body.expo_push_token))) {
      throw new ApiError("validation_failed", "expo_push_token: not an Expo push token", {
        field: "expo_push_token",
      });
    }
    const [row] = await sql`
      insert into public.devices as d (user_id, expo_push_token, platform, app_version)
      values (${caller.id}, ${body.expo_push_token}, ${body.platform}, ${body.app_version ?? null})
      on conflict (expo_push_token) do update
        set user_id = excluded.user_id, platform = excluded.platform,
            app_version = excluded.app_version, last_seen_at = now(),
            created_at = case when d.user_id = excluded.user_id then d.created_at else now() end
      returning ${sql.unsafe(DEVICE_JSON)} as device`;
    return json(Device.parse(row.device), { status: 201 });
  },
);
