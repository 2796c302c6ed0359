import assert from "node:assert/strict";
import { waitFor } from "../local/process.ts";
import {
  AnalyzeResponse,
  ErrorEnvelope,
  HealthResponse,
  ProfileResponse,
} from "../supabase/functions/_shared/contracts.ts";
import {
  applyJobOf,
  billing,
  billingTest,
  deliver,
  PRO_PRICE,
  profileRow,
  recordedEvent,
  startBilling,
  subscriber,
} from "./billing_support.ts";
import { startOpenAiServer } from "./openai_server.ts";
import { stripeEvent } from "./stripe_server.ts";
import {
  appClient,
  cacheProfile,
  createUser,
  database,
  functionsGateway,
  invoke,
  type Invoked,
  localPostgres,
  processJobs,
  stackTest,
  type TestUser,
  waitUntilHealthy,
} from "./support.ts";

/**
 * Fault drills for the database: the stack's Postgres stopped (and, apart, held up past the
 * statement timeout, or accepting connections without ever answering). Health says so within
 * its timeout; a user whose profile is cached still gets it; everything that needs the database
 * answers 503 `unavailable` within the database timeouts, never a raw 500; nothing is charged
 * without its analysis; and once Postgres is back everything works again, the stack's own
 * gateway included.
 */

/** The functions' database timeouts here, shorter than the 5 s defaults to keep drills short. */
const DB_TIMEOUT_MS = 1_000;
/**
 * Not a speed target: a bound this loose only tells an answer given once the timeouts ran out
 * from a request left hanging on a database that is gone.
 */
const ANSWER_BOUND_MS = 2 * DB_TIMEOUT_MS + 4_000;

const API_KEY = `sk-test-${crypto.randomUUID()}`;
const model = startOpenAiServer(API_KEY);
const b = await startBilling({
  OPENAI_BASE_URL: `${model.url}/v1`,
  OPENAI_API_KEY: API_KEY,
  DB_CONNECT_TIMEOUT_MS: String(DB_TIMEOUT_MS),
  DB_STATEMENT_TIMEOUT_MS: String(DB_TIMEOUT_MS),
});

/** `work` while the stack's Postgres is stopped; afterwards the stack answers health 200. */
async function whilePostgresStopped(work: () => Promise<void>) {
  await localPostgres.stop();
  try {
    await work();
  } finally {
    await localPostgres.start();
    await waitUntilHealthy(b.url);
    await waitUntilHealthy();
  }
}

/** A call and how long its answer took, in milliseconds. */
async function timed(call: () => Promise<Invoked>): Promise<Invoked & { ms: number }> {
  const started = performance.now();
  const answer = await call();
  return { ...answer, ms: performance.now() - started };
}

const get = (user: TestUser | null, name: string, url = b.url) =>
  timed(() => invoke(appClient(user?.token, url), name, { method: "GET" }));
const post = (user: TestUser, name: string, body: Record<string, unknown>, url = b.url) =>
  timed(() => invoke(appClient(user.token, url), name, { body }));

const analysisOf = (text: string) => ({ analysis_type: "clarity", input: { kind: "text", text } });

function assertUnavailable(answer: Invoked & { ms: number }, what: string) {
  assert.equal(answer.status, 503, `${what}: ${JSON.stringify(answer.body)}`);
  assert.equal(ErrorEnvelope.parse(answer.body).error.code, "unavailable", what);
  assert.equal(answer.body.error.request_id, answer.headers.get("x-request-id"));
  assert.ok(answer.ms < ANSWER_BOUND_MS, `${what} took ${answer.ms.toFixed(0)} ms`);
}

/** The user's usage counter beside their analyses: made by the model, and answered from cache. */
async function metering(userId: string) {
  const sql = database();
  try {
    const [row] = await sql<{ usage_count: number; models: number; cached: number }[]>`
      select p.usage_count,
             (select count(*) from public.analyses a where a.user_id = p.id and not a.cached)::int
               as models,
             (select count(*) from public.analyses a where a.user_id = p.id and a.cached)::int
               as cached
        from public.profiles p where p.id = ${userId}`;
    return row;
  } finally {
    await sql.end();
  }
}

stackTest(
  "with Postgres stopped, health answers 503 degraded naming the database within its timeout",
  async () => {
    assert.equal((await get(null, "health")).status, 200);
    await whilePostgresStopped(async () => {
      const { status, body, ms } = await get(null, "health");

      assert.equal(status, 503);
      const health = HealthResponse.parse(body);
      assert.equal(health.status, "degraded");
      assert.deepEqual(health.checks, { database: "down", redis: "ok" });
      // HEALTH_CHECK_TIMEOUT_MS is 1 s; the bound is as loose as the others.
      assert.ok(ms < ANSWER_BOUND_MS, `health took ${ms.toFixed(0)} ms`);
    });
    assert.equal((await get(null, "health")).status, 200);
  },
);

stackTest(
  "with Postgres stopped, a cached profile is still served, usage, history and sync answer 503 " +
    "unavailable within the database timeouts, and their metrics rows arrive once it is back",
  async () => {
    const user = await createUser("pg-down-account");
    for (const name of ["profile", "usage", "history?type=analyses", "sync"]) {
      assert.equal((await get(user, name)).status, 200, `${name} before the outage`);
    }
    const outage: string[] = [];

    await whilePostgresStopped(async () => {
      const profile = await get(user, "profile");
      assert.equal(profile.status, 200, "the profile comes from the profile cache");
      assert.equal(ProfileResponse.parse(profile.body).id, user.id);
      outage.push(profile.headers.get("x-request-id")!);

      for (const name of ["usage", "history?type=analyses", "sync"]) {
        const answer = await get(user, name);
        assertUnavailable(answer, name);
        outage.push(answer.headers.get("x-request-id")!);
      }
    });

    for (const name of ["profile", "usage", "history?type=analyses", "sync"]) {
      assert.equal((await get(user, name)).status, 200, `${name} once Postgres is back`);
    }
    const sql = database();
    try {
      let statuses: number[] = [];
      await waitFor("the outage's metrics rows", async () => {
        const rows = await sql<{ status: number }[]>`
          select status from public.api_metrics where request_id = any(${outage})`;
        statuses = rows.map((row) => row.status).sort();
        return rows.length >= outage.length;
      }, 10_000);
      assert.deepEqual(statuses, [200, 503, 503, 503], "one row per request, none lost");
    } finally {
      await sql.end();
    }
  },
);

stackTest(
  "with Postgres stopped, analyze and chat answer 503 unavailable without calling the model, " +
    "and afterwards the usage counter equals the analyses the model made",
  async () => {
    const user = await createUser("pg-down-ai");
    const seen = `Seen before ${crypto.randomUUID()}`;
    const fresh = `Fresh ${crypto.randomUUID()}`;
    assert.equal((await post(user, "analyze", analysisOf(seen))).status, 200);
    assert.equal((await post(user, "chat", { message: `Hi ${crypto.randomUUID()}` })).status, 200);
    const calls = model.calls;

    await whilePostgresStopped(async () => {
      assertUnavailable(await post(user, "analyze", analysisOf(fresh)), "a fresh analysis");
      assertUnavailable(
        await post(user, "analyze", analysisOf(seen)),
        "an analysis whose answer is in the Redis cache",
      );
      assertUnavailable(
        await post(user, "chat", { message: `Still there? ${crypto.randomUUID()}` }),
        "chat",
      );
    });
    assert.equal(model.calls, calls, "nothing reached the model during the outage");

    const again = await post(user, "analyze", analysisOf(fresh));
    assert.equal(again.status, 200);
    assert.equal(AnalyzeResponse.parse(again.body).cached, false);
    assert.equal((await post(user, "analyze", analysisOf(seen))).body.cached, true);
    const after = await metering(user.id);
    assert.equal(after.models, 2);
    assert.equal(after.cached, 1);
    // One unit for the chat reply, one per analysis the model made and one per cache hit: none
    // for the outage.
    assert.equal(after.usage_count, after.models + after.cached + 1);
  },
);

billingTest(
  "with Postgres stopped, billing, the Stripe webhook and the job worker answer 503, and " +
    "Stripe's redelivery is recorded and applied once it is back",
  async () => {
    const { user, customerId } = await subscriber(b, "pg-down-billing");
    const subscription = b.stripe.addSubscription({ customer: customerId, price: PRO_PRICE });
    const event = stripeEvent("customer.subscription.updated", subscription);

    await whilePostgresStopped(async () => {
      assertUnavailable(
        await timed(() => billing(b.url, user, { action: "portal" })),
        "billing portal",
      );
      const started = performance.now();
      const delivery = await deliver(b.url, event);
      const ms = performance.now() - started;
      assert.equal(delivery.status, 503, "a 5xx makes Stripe deliver the event again later");
      assert.equal(delivery.body.error.code, "unavailable");
      assert.ok(ms < ANSWER_BOUND_MS, `the webhook took ${ms.toFixed(0)} ms`);
      assertUnavailable(await timed(() => processJobs(b.url)), "process-jobs");
    });

    assert.deepEqual(await recordedEvent(event.id), [], "the refused delivery left nothing");
    assert.equal((await deliver(b.url, event)).status, 200);
    assert.equal((await recordedEvent(event.id)).length, 1);
    await waitFor("the worker to apply the event", async () => {
      assert.equal((await processJobs(b.url)).status, 200);
      return (await applyJobOf(event.id))[0].status === "succeeded";
    }, 15_000);
    assert.equal((await profileRow(user.id)).plan_id, "pro");
    assert.equal((await billing(b.url, user, { action: "portal" })).status, 200);
  },
);

stackTest(
  "an analysis whose charge waits on a locked row past the statement timeout answers 503 " +
    "unavailable, not 500, and charges nothing",
  async () => {
    const user = await createUser("pg-locked");
    assert.equal((await get(user, "profile")).status, 200);
    const sql = database();
    let release!: () => void;
    const released = new Promise<void>((resolve) => release = resolve);
    let locked!: () => void;
    const isLocked = new Promise<void>((resolve) => locked = resolve);
    const holder = sql.begin(async (tx) => {
      await tx`select 1 from public.profiles where id = ${user.id} for update`;
      locked();
      await released;
    });
    try {
      await isLocked;
      const calls = model.calls;
      assertUnavailable(
        await post(user, "analyze", analysisOf(`Locked ${crypto.randomUUID()}`)),
        "analyze",
      );
      assert.equal(model.calls, calls);
    } finally {
      release();
      await holder;
      await sql.end();
    }

    assert.deepEqual(await metering(user.id), { usage_count: 0, models: 0, cached: 0 });
    assert.equal(
      (await post(user, "analyze", analysisOf(`Free ${crypto.randomUUID()}`))).status,
      200,
    );
    assert.equal((await metering(user.id)).usage_count, 1);
  },
);

stackTest(
  "a database that accepts connections but never answers gets 503 within the connect timeout",
  async () => {
    // A listener that takes connections and never says a word, as a wedged server would.
    const silent = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const held: Deno.Conn[] = [];
    const accepting = (async () => {
      for await (const conn of silent) held.push(conn);
    })().catch(() => {});
    const port = (silent.addr as Deno.NetAddr).port;
    const wedged = await functionsGateway({
      SUPABASE_DB_URL: `postgresql://postgres:postgres@127.0.0.1:${port}/postgres`,
      DB_CONNECT_TIMEOUT_MS: String(DB_TIMEOUT_MS),
      DB_STATEMENT_TIMEOUT_MS: String(DB_TIMEOUT_MS),
    });
    try {
      const user = await createUser("pg-silent");
      await cacheProfile(user.id);

      const health = await get(null, "health", wedged.url);
      assert.equal(health.status, 503);
      assert.equal(health.body.checks.database, "down");
      assert.ok(health.ms < ANSWER_BOUND_MS, `health took ${health.ms.toFixed(0)} ms`);
      const profile = await get(user, "profile", wedged.url);
      assert.equal(profile.status, 200, "the profile comes from the profile cache");
      for (const name of ["usage", "history?type=analyses", "sync"]) {
        assertUnavailable(await get(user, name, wedged.url), name);
      }
    } finally {
      await wedged.close();
      silent.close();
      for (const conn of held) conn.close();
      await accepting;
    }
  },
);
