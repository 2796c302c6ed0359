import assert from "node:assert/strict";
import { UsageResponse } from "../supabase/functions/_shared/contracts.ts";
import { createRateLimiter } from "../supabase/functions/_shared/rate-limit.ts";
import {
  appClient,
  atStartOfWindow,
  bridgeStats,
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

/** `usage`: the monthly quota and the per-minute windows as they stand, spending nothing. */

const usage = (user: TestUser, url?: string) =>
  invoke(appClient(user.token, url), "usage", { method: "GET" });

const nextMonth = () => {
  const now = new Date();
  return new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 1)).toISOString();
};

async function charge(user: TestUser, units: number) {
  const sql = database();
  try {
    await sql`select public.increment_usage_if_allowed(${user.id}, ${units})`;
  } finally {
    await sql.end();
  }
}

stackTest(
  "usage shows used, quota, remaining and the reset, and reading it spends nothing",
  async () => {
    const user = await createUser("usage-quota");
    await charge(user, 3);
    const first = await usage(user);
    assert.equal(first.status, 200);
    const { usage: quota } = UsageResponse.parse(first.body);
    assert.deepEqual(quota, {
      used: 3,
      quota: 100,
      remaining: 97,
      resets_at: nextMonth(),
    });
    assert.deepEqual((await usage(user)).body.usage, quota);
  },
);

stackTest("a period that has ended reads as a new, unused one, and is left as it is", async () => {
  const user = await createUser("usage-lapsed");
  const sql = database();
  try {
    await sql`update public.profiles
                 set usage_count = 60,
                     period_start = date_trunc('month', now(), 'UTC') - interval '2 months'
               where id = ${user.id}`;
    const { body } = await usage(user);
    assert.deepEqual(body.usage, { used: 0, quota: 100, remaining: 100, resets_at: nextMonth() });
    const [row] = await sql<{ usage_count: number }[]>`
      select usage_count from public.profiles where id = ${user.id}`;
    assert.equal(row.usage_count, 60);
  } finally {
    await sql.end();
  }
});

stackTest("each window shows the plan's limit and what is left of it now", async () => {
  const user = await createUser("usage-windows");
  await atStartOfWindow(15);
  // Three ai requests, counted as the pipeline counts them.
  const sql = database();
  const client = upstash();
  const limiter = createRateLimiter({ redis: () => client, sql: () => sql });
  try {
    for (let i = 0; i < 3; i++) assert.ok((await limiter.check("ai", user.id, 20)).allowed);
  } finally {
    await sql.end();
  }

  const first = UsageResponse.parse((await usage(user)).body).rate_limits;
  assert.deepEqual(
    { ai: first.ai.remaining, general: first.general.remaining, upload: first.upload.remaining },
    { ai: 17, general: 199, upload: 20 },
  );
  assert.deepEqual([first.ai.limit, first.general.limit, first.upload.limit], [20, 200, 20]);
  for (const window of Object.values(first)) {
    assert.ok(Date.parse(window.resets_at) > Date.now() - 1_000);
    assert.ok(Date.parse(window.resets_at) <= Date.now() + 61_000);
  }
  const second = UsageResponse.parse((await usage(user)).body).rate_limits;
  assert.equal(second.general.remaining, 198, "the usage request itself is a general request");
  assert.equal(second.ai.remaining, 17, "reading the ai window spent none of it");
});

stackTest(
  "a warm usage request costs two Upstash round trips: admission, then all three windows",
  async () => {
    const user = await createUser("usage-round-trips");
    await usage(user);
    await usage(user);
    const before = await bridgeStats();
    for (let i = 0; i < 5; i++) assert.equal((await usage(user)).status, 200);
    const after = await bridgeStats();
    assert.equal(after.requests - before.requests, 10);
  },
);

stackTest("with Redis stopped, usage still answers, from the Postgres counters", async () => {
  const user = await createUser("usage-no-redis");
  await charge(user, 2);
  await atStartOfWindow(15);
  await localRedis.stop();
  try {
    const { status, body } = await usage(user);
    assert.equal(status, 200);
    const parsed = UsageResponse.parse(body);
    assert.equal(parsed.usage.used, 2);
    assert.equal(parsed.rate_limits.general.remaining, 199);
    assert.equal(parsed.rate_limits.ai.remaining, 20);
    assert.equal((await usage(user)).body.rate_limits.general.remaining, 198);
  } finally {
    await localRedis.start();
  }
});

stackTest("usage without a token, or with an expired one, is 401", async () => {
  const user = await createUser("usage-401");
  assert.equal((await invoke(appClient(), "usage", { method: "GET" })).status, 401);
  const expired = await invoke(appClient(await expiredToken(user)), "usage", { method: "GET" });
  assert.equal(expired.status, 401);
  assert.equal(expired.body.error.code, "unauthorized");
});

stackTest("POST usage is 405 with an Allow header", async () => {
  const user = await createUser("usage-405");
  const { status, headers } = await invoke(appClient(user.token), "usage", { body: {} });
  assert.equal(status, 405);
  assert.equal(headers.get("allow"), "GET");
});

stackTest("usage counts against the general limit: 429 once it is spent", async () => {
  const user = await createUser("usage-429");
  const restore = await limitGeneral(user, 2);
  try {
    await atStartOfWindow(10);
    const first = await usage(user);
    assert.equal(first.status, 200);
    assert.equal(first.body.rate_limits.general.limit, 2);
    assert.equal(first.body.rate_limits.general.remaining, 1);
    assert.equal((await usage(user)).status, 200);
    const refused = await usage(user);
    assert.equal(refused.status, 429);
    assert.equal(refused.body.error.code, "rate_limited");
  } finally {
    await restore();
  }
});

stackTest("with the database unreachable, usage is 503 unavailable", async () => {
  const user = await createUser("usage-503");
  await cacheProfile(user.id);
  const gateway = await functionsGateway({
    SUPABASE_DB_URL: "postgresql://postgres:postgres@127.0.0.1:1/postgres",
  });
  try {
    const { status, body } = await usage(user, gateway.url);
    assert.equal(status, 503);
    assert.equal(body.error.code, "unavailable");
  } finally {
    await gateway.close();
  }
});
