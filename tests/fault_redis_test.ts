import assert from "node:assert/strict";
import { waitFor } from "../local/process.ts";
import { aiCacheRedisKey } from "../supabase/functions/_shared/ai-cache.ts";
import {
  AnalyzeResponse,
  BillingResponse,
  ChatResponse,
  HealthResponse,
  HistoryResponse,
  ProfileResponse,
  SyncResponse,
  UsageResponse,
} from "../supabase/functions/_shared/contracts.ts";
import { profileKey } from "../supabase/functions/_shared/profile-cache.ts";
import { billing, billingTest, startBilling } from "./billing_support.ts";
import { startOpenAiServer } from "./openai_server.ts";
import {
  appClient,
  createUser,
  database,
  invoke,
  localRedis,
  stackTest,
  type TestUser,
  upstash,
  usedUnits,
  waitUntilHealthy,
} from "./support.ts";

/**
 * Fault drill for Redis: with the stack's Redis stopped, health says so, and every user function
 * still answers (profiles and rate limits from Postgres, the AI response cache from
 * `ai_response_cache`); once Redis is back the functions use it again.
 */

const API_KEY = `sk-test-${crypto.randomUUID()}`;
const model = startOpenAiServer(API_KEY);
const b = await startBilling({ OPENAI_BASE_URL: `${model.url}/v1`, OPENAI_API_KEY: API_KEY });

/** `work` while the stack's Redis is stopped; afterwards the stack answers health 200. */
async function whileRedisStopped(work: () => Promise<void>) {
  await localRedis.stop();
  try {
    await work();
  } finally {
    await localRedis.start();
    await waitUntilHealthy(b.url);
    await waitUntilHealthy();
  }
}

const get = (user: TestUser | null, name: string) =>
  invoke(appClient(user?.token, b.url), name, { method: "GET" });
const post = (user: TestUser, name: string, body: Record<string, unknown>) =>
  invoke(appClient(user.token, b.url), name, { body });

const analysisOf = (text: string) => ({ analysis_type: "clarity", input: { kind: "text", text } });

stackTest(
  "with Redis stopped, health is degraded naming redis while profile, usage, history and sync " +
    "answer from Postgres, and once it is back the profile is cached in Redis again",
  async () => {
    const user = await createUser("redis-down-account");
    assert.equal((await get(user, "profile")).status, 200);

    await whileRedisStopped(async () => {
      const health = await get(null, "health");
      assert.equal(health.status, 503);
      assert.deepEqual(HealthResponse.parse(health.body).checks, { database: "ok", redis: "down" });

      const profile = await get(user, "profile");
      assert.equal(profile.status, 200);
      assert.equal(ProfileResponse.parse(profile.body).id, user.id);
      assert.ok(profile.headers.get("x-ratelimit-limit"), "the rate limit was still decided");
      const usage = await get(user, "usage");
      assert.equal(usage.status, 200);
      assert.equal(UsageResponse.parse(usage.body).usage.used, 0);
      const history = await get(user, "history?type=analyses");
      assert.equal(history.status, 200);
      assert.deepEqual(HistoryResponse.parse(history.body).items, []);
      const sync = await get(user, "sync");
      assert.equal(sync.status, 200);
      assert.equal(SyncResponse.parse(sync.body).profile.id, user.id);
    });

    await waitFor("the profile to be cached in Redis again", async () => {
      assert.equal((await get(user, "profile")).status, 200);
      return await upstash().exists(profileKey(user.id)) === 1;
    }, 15_000);
    for (const name of ["usage", "history?type=analyses", "sync"]) {
      assert.equal((await get(user, name)).status, 200, name);
    }
  },
);

stackTest(
  "with Redis stopped, analyze and chat are answered and charged, identical requests come " +
    "from ai_response_cache at the cache-hit cost, and once it is back the answer is in Redis again",
  async () => {
    const user = await createUser("redis-down-ai");
    const text = `Clear enough? ${crypto.randomUUID()}`;
    const message = `Hello ${crypto.randomUUID()}`;
    const calls = model.calls;

    await whileRedisStopped(async () => {
      const first = await post(user, "analyze", analysisOf(text));
      assert.equal(first.status, 200);
      assert.equal(AnalyzeResponse.parse(first.body).cached, false);
      const again = await post(user, "analyze", analysisOf(text));
      assert.equal(again.status, 200);
      assert.equal(AnalyzeResponse.parse(again.body).cached, true);
      assert.equal(again.body.usage.used, 2);

      const reply = await post(user, "chat", { message });
      assert.equal(reply.status, 200);
      assert.equal(ChatResponse.parse(reply.body).cached, false);
      const repeated = await post(user, "chat", { message });
      assert.equal(repeated.status, 200);
      assert.equal(ChatResponse.parse(repeated.body).cached, true);
      assert.equal(repeated.body.usage.used, 4);
    });
    assert.equal(model.calls, calls + 2, "the model answered each question once");
    assert.equal(await usedUnits(user.id), 4);

    const sql = database();
    let key: string;
    try {
      [{ key }] = await sql<{ key: string }[]>`
        select key from public.ai_response_cache
         where value -> 'answer' ->> 'summary' like ${`%${text}%`}`;
    } finally {
      await sql.end();
    }
    let hits = 0;
    await waitFor("the analysis to be cached in Redis again", async () => {
      const answer = await post(user, "analyze", analysisOf(text));
      assert.equal(answer.status, 200);
      assert.equal(answer.body.cached, true);
      hits++;
      return await upstash().exists(aiCacheRedisKey(key)) === 1;
    }, 15_000);
    assert.equal(model.calls, calls + 2);
    assert.equal(await usedUnits(user.id), 4 + hits, "each cache hit cost one unit");
  },
);

billingTest("with Redis stopped, billing still opens a Checkout session", async () => {
  const user = await createUser("redis-down-billing");
  await whileRedisStopped(async () => {
    const { status, body } = await billing(b.url, user, { action: "checkout", plan: "pro" });
    assert.equal(status, 200);
    BillingResponse.parse(body);
  });
  assert.equal((await billing(b.url, user, { action: "portal" })).status, 200);
});
