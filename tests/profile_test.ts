import assert from "node:assert/strict";
import { ProfileDeleteResponse, ProfileResponse } from "../supabase/functions/_shared/contracts.ts";
import { profileKey } from "../supabase/functions/_shared/profile-cache.ts";
import {
  addAnalyses,
  addMessages,
  appClient,
  atStartOfWindow,
  cacheProfile,
  createUser,
  database,
  expiredToken,
  functionsGateway,
  invoke,
  limitGeneral,
  localRedis,
  stackTest,
  type TestUser,
  upstash,
} from "./support.ts";

/** `profile`: read, change the settings of, and delete one's own account. */

const as = (user: TestUser) => appClient(user.token);
const get = (user: TestUser) => invoke(as(user), "profile", { method: "GET" });
const patch = (user: TestUser, body: Record<string, unknown>) =>
  invoke(as(user), "profile", { method: "PATCH", body });

stackTest(
  "GET profile answers the caller's profile, plan and limits with their email",
  async () => {
    const user = await createUser("profile-get");
    const { status, body } = await get(user);
    assert.equal(status, 200);
    const profile = ProfileResponse.parse(body);
    assert.equal(profile.id, user.id);
    assert.equal(profile.email, user.email);
    assert.deepEqual(profile.plan, {
      id: "free",
      name: "Free",
      monthly_quota: 100,
      ai_per_minute: 20,
      general_per_minute: 200,
      upload_per_minute: 20,
      max_output_tokens: 800,
      chat_history_chars: 24000,
      cache_hit_cost: 1,
    });
    assert.deepEqual(profile.settings, {});
    assert.equal(profile.subscription_status, null);
  },
);

stackTest(
  "PATCH profile merges settings, keeps the keys left out, and the next GET sees it",
  async () => {
    const user = await createUser("profile-patch");
    const first = await patch(user, { settings: { theme: "dark", notifications_enabled: false } });
    assert.equal(first.status, 200);
    assert.deepEqual(ProfileResponse.parse(first.body).settings, {
      theme: "dark",
      notifications_enabled: false,
    });

    const second = await patch(user, { settings: { locale: "en-US", theme: "light" } });
    const merged = { theme: "light", notifications_enabled: false, locale: "en-US" };
    assert.deepEqual(second.body.settings, merged);
    assert.deepEqual((await get(user)).body.settings, merged);
  },
);

stackTest("PATCH profile with a bad settings value is 400 naming the setting", async () => {
  const user = await createUser("profile-bad-value");
  for (
    const [settings, field] of [
      [{ theme: "neon" }, "settings.theme"],
      [{ locale: "english" }, "settings.locale"],
      [{ notifications_enabled: "yes" }, "settings.notifications_enabled"],
      [{ default_analysis_type: "" }, "settings.default_analysis_type"],
    ] as const
  ) {
    const { status, body } = await patch(user, { settings });
    assert.equal(status, 400, field);
    assert.equal(body.error.code, "validation_failed");
    assert.equal(body.error.field, field);
    assert.match(body.error.message, new RegExp(`^${field}: `));
  }
  assert.deepEqual((await get(user)).body.settings, {});
});

stackTest(
  "PATCH profile with an unknown setting or no settings is 400 naming the field",
  async () => {
    const user = await createUser("profile-unknown");
    const unknown = await patch(user, { settings: { font_size: 14 } });
    assert.equal(unknown.status, 400);
    assert.equal(unknown.body.error.field, "settings.font_size");

    const missing = await patch(user, {});
    assert.equal(missing.status, 400);
    assert.equal(missing.body.error.field, "settings");
  },
);

stackTest("PATCH profile with a body that is not JSON is 400 invalid_json", async () => {
  const user = await createUser("profile-not-json");
  const { status, body } = await invoke(as(user), "profile", {
    method: "PATCH",
    body: "{settings:",
    headers: { "content-type": "application/json" },
  });
  assert.equal(status, 400);
  assert.equal(body.error.code, "invalid_json");
});

stackTest("PATCH profile with a 6 MB body is 413 and changes nothing", async () => {
  const user = await createUser("profile-huge");
  const { status, body } = await patch(user, {
    settings: { default_analysis_type: "x".repeat(6 * 1024 * 1024) },
  });
  assert.equal(status, 413);
  assert.equal(body.error.code, "payload_too_large");
  assert.deepEqual((await get(user)).body.settings, {});
});

stackTest("profile without a token, or with an expired one, is 401", async () => {
  const user = await createUser("profile-401");
  const anonymous = await invoke(appClient(), "profile", { method: "GET" });
  assert.equal(anonymous.status, 401);
  assert.equal(anonymous.body.error.code, "unauthorized");

  const expired = await invoke(appClient(await expiredToken(user)), "profile", { method: "GET" });
  assert.equal(expired.status, 401);
  assert.equal(expired.body.error.message, "token expired");
});

stackTest("POST profile is 405 with an Allow header", async () => {
  const user = await createUser("profile-405");
  const { status, body, headers } = await invoke(as(user), "profile", { body: {} });
  assert.equal(status, 405);
  assert.equal(body.error.code, "method_not_allowed");
  assert.equal(headers.get("allow"), "GET, PATCH, DELETE");
});

stackTest("a misspelt function name is 404 not_found", async () => {
  const user = await createUser("profile-404");
  const { status, body } = await invoke(as(user), "profiles", { method: "GET" });
  assert.equal(status, 404);
  assert.equal(body.error.code, "not_found");
});

stackTest(
  "profile counts against the general limit: 429 with Retry-After once it is spent",
  async () => {
    const user = await createUser("profile-429");
    const restore = await limitGeneral(user, 2);
    try {
      await atStartOfWindow(10);
      assert.equal((await get(user)).status, 200);
      assert.equal((await patch(user, { settings: { theme: "dark" } })).status, 200);
      const refused = await get(user);
      assert.equal(refused.status, 429);
      assert.equal(refused.body.error.code, "rate_limited");
      assert.ok(Number(refused.headers.get("retry-after")) >= 1);
    } finally {
      await restore();
    }
  },
);

stackTest("with Redis stopped, GET profile still answers from Postgres", async () => {
  const user = await createUser("profile-no-redis");
  await patch(user, { settings: { theme: "dark" } });
  await localRedis.stop();
  try {
    const { status, body } = await get(user);
    assert.equal(status, 200);
    assert.equal(body.id, user.id);
    assert.deepEqual(body.settings, { theme: "dark" });
  } finally {
    await localRedis.start();
  }
});

stackTest(
  "with the database unreachable, PATCH profile is 503 and GET answers from the cache",
  async () => {
    const user = await createUser("profile-no-db");
    await cacheProfile(user.id);
    const gateway = await functionsGateway({
      SUPABASE_DB_URL: "postgresql://postgres:postgres@127.0.0.1:1/postgres",
    });
    try {
      const client = appClient(user.token, gateway.url);
      const read = await invoke(client, "profile", { method: "GET" });
      assert.equal(read.status, 200);
      assert.equal(read.body.id, user.id);

      const write = await invoke(client, "profile", {
        method: "PATCH",
        body: { settings: { theme: "dark" } },
      });
      assert.equal(write.status, 503);
      assert.equal(write.body.error.code, "unavailable");
    } finally {
      await gateway.close();
    }
  },
);

stackTest(
  "DELETE profile removes the user and every row of theirs; the token is then refused",
  async () => {
    const user = await createUser("profile-delete");
    await patch(user, { settings: { theme: "dark" } });
    await addAnalyses(user.id, [new Date(), new Date()]);
    await addMessages(user.id, crypto.randomUUID(), 2);

    const { status, body } = await invoke(as(user), "profile", { method: "DELETE" });
    assert.equal(status, 200);
    assert.deepEqual(ProfileDeleteResponse.parse(body), { deleted: true });

    const sql = database();
    try {
      const [left] = await sql<Record<string, number>[]>`
      select (select count(*) from auth.users where id = ${user.id})::int as users,
             (select count(*) from public.profiles where id = ${user.id})::int as profiles,
             (select count(*) from public.analyses where user_id = ${user.id})::int as analyses,
             (select count(*) from public.chat_messages where user_id = ${user.id})::int as messages,
             (select count(*) from public.activities where user_id = ${user.id})::int as activities,
             (select count(*) from public.sync_markers where user_id = ${user.id})::int as markers,
             (select count(*) from public.background_jobs
               where payload ->> 'user_id' = ${user.id})::int as jobs`;
      assert.deepEqual(left, {
        users: 0,
        profiles: 0,
        analyses: 0,
        messages: 0,
        activities: 0,
        markers: 0,
        jobs: 0,
      });
    } finally {
      await sql.end();
    }
    assert.deepEqual(await upstash().get(profileKey(user.id)), {
      deleted: true,
      version: Number.MAX_SAFE_INTEGER,
    });

    for (const name of ["profile", "usage", "history", "sync"]) {
      const after = await invoke(as(user), name, { method: "GET" });
      assert.equal(after.status, 401, name);
      assert.equal(after.body.error.code, "unauthorized");
    }
  },
);

stackTest(
  "DELETE profile of a Stripe customer closes the customer once, subscription known or not",
  async () => {
    const user = await createUser("profile-customer");
    const customer = `cus_${crypto.randomUUID().replaceAll("-", "")}`;
    const sql = database();
    try {
      // A customer whose checkout is still open: no subscription on the profile yet.
      await sql`update public.profiles set stripe_customer_id = ${customer} where id = ${user.id}`;
      const { status } = await invoke(as(user), "profile", { method: "DELETE" });
      assert.equal(status, 200);

      const jobs = await sql<{ type: string; payload: unknown; idempotency_key: string }[]>`
        select type, payload, idempotency_key from public.background_jobs
         where payload ->> 'customer_id' = ${customer}`;
      assert.deepEqual([...jobs], [{
        type: "stripe.close_customer",
        payload: { customer_id: customer },
        idempotency_key: `stripe.close_customer:${customer}`,
      }]);
      const closed = await sql`
        select 1 from public.closed_stripe_customers where customer_id = ${customer}`;
      assert.equal(closed.length, 1);
      // No Stripe here to run it against; account_deletion_billing_test covers what it does.
      await sql`delete from public.background_jobs where payload ->> 'customer_id' = ${customer}`;
      await sql`delete from public.closed_stripe_customers where customer_id = ${customer}`;
    } finally {
      await sql.end();
    }
  },
);
