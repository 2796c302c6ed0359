import assert from "node:assert/strict";
import postgres from "postgres";
import {
  AnalysisItem,
  AnalyzeAccepted,
  type AnalyzeRequest,
  Device,
  HistoryResponse,
  RecommendationsResponse,
  SyncResponse,
} from "../supabase/functions/_shared/contracts.ts";
import { createApiClient } from "../client/index.ts";
import { fresh, modelStack } from "./ai_support.ts";
import { startExpoPushServer } from "./expo_push_server.ts";
import {
  appClient,
  createUser,
  database,
  env,
  invoke,
  processJobs,
  stackTest,
  type TestUser,
  usedUnits,
} from "./support.ts";

/**
 * Analyses in the background and push notifications, through the gateway: `analyze` with
 * mode "background", the `process-jobs` worker running `ai.analyze`, `notify.send` and
 * `notify.receipts`, expo-server-sdk sending to a local Expo-compatible push server
 * (`EXPO_BASE_URL`) and the model answering from the local OpenAI-compatible server. Time is
 * moved by moving a job's `run_at` (or its lock's expiry), never by sleeping.
 */

const push = startExpoPushServer();
const { server: model, gateway, analyze, whileModel } = await modelStack({
  EXPO_BASE_URL: push.url,
});
const sql = database();

const call = (user: TestUser, name: string, options: Parameters<typeof invoke>[2] = {}) =>
  invoke(appClient(user.token, gateway.url), name, options);

async function runWorker() {
  const { status, body } = await processJobs(gateway.url);
  assert.equal(status, 200, JSON.stringify(body));
}

/** A user with notifications on (plus `settings`) and one registered device; its token. */
async function withDevice(settings: Record<string, unknown> = {}) {
  const user = await createUser("push");
  await sql`
    update public.profiles
       set settings = ${sql.json({ notifications_enabled: true, ...settings } as never)}
     where id = ${user.id}`;
  const token = `ExponentPushToken[${crypto.randomUUID()}]`;
  const { status } = await call(user, "devices", {
    body: { expo_push_token: token, platform: "ios" },
  });
  assert.equal(status, 201);
  return { user, token };
}

const pushesTo = (token: string, kind?: string) =>
  push.messages.filter((m) => m.to === token && (!kind || m.data?.kind === kind));

const backgroundRequest = (): AnalyzeRequest => ({
  analysis_type: "clarity",
  input: { kind: "text", text: fresh("Background") },
  mode: "background",
});

async function analyzeInBackground(user: TestUser) {
  const { status, body } = await analyze(user.token, backgroundRequest());
  assert.equal(status, 202, JSON.stringify(body));
  return AnalyzeAccepted.parse(body).analysis_id;
}

async function jobOf(analysisId: string) {
  const [job] = await sql<{ id: string; status: string; attempts: number }[]>`
    select id, status, attempts from public.background_jobs
     where type = 'ai.analyze' and payload ->> 'analysis_id' = ${analysisId}`;
  return job;
}

/** `history?id=`: the one analysis, as its user sees it. */
async function analysisById(user: TestUser, id: string) {
  const { status, body } = await call(user, `history?id=${id}`, { method: "GET" });
  assert.equal(status, 200);
  const page = HistoryResponse.parse(body);
  assert.equal(page.type, "analyses");
  return AnalysisItem.parse(page.items[0]);
}

async function analysisRows(userId: string) {
  return await sql<{ id: string; status: string; refunded_at: Date | null }[]>`
    select id, status, refunded_at from public.analyses where user_id = ${userId}`;
}

stackTest(
  "a background analysis answers 202, the worker completes it, and only its user's device is told",
  async () => {
    const { user, token } = await withDevice();
    const other = await withDevice();

    const analysisId = await analyzeInBackground(user);
    assert.equal((await analysisById(user, analysisId)).status, "pending");
    assert.equal(await usedUnits(user.id), 1, "the unit is taken before the job is queued");

    await runWorker();
    await runWorker();

    const done = await analysisById(user, analysisId);
    assert.equal(done.status, "done");
    assert.match(done.result!.summary, /Background/);
    const synced = SyncResponse.parse((await call(user, "sync", { method: "GET" })).body);
    assert.equal(synced.analyses.find((a) => a.id === analysisId)?.status, "done");
    assert.equal(pushesTo(token, "analysis.ready").length, 1);
    assert.equal(pushesTo(token, "analysis.ready")[0].data?.analysis_id, analysisId);
    assert.equal(pushesTo(other.token).length, 0);
    assert.equal(await usedUnits(user.id), 1);
  },
);

stackTest(
  "a worker that died after storing the result leaves one analysis, one charge and one push",
  async () => {
    const { user, token } = await withDevice();
    const analysisId = await analyzeInBackground(user);
    await runWorker();
    await runWorker();
    const calls = model.calls;

    // As if the worker died before reporting: the job is running, its lock expired.
    const job = await jobOf(analysisId);
    await sql`
      update public.background_jobs
         set status = 'running', finished_at = null, locked_by = 'vanished-worker',
             locked_until = now() - interval '1 second'
       where id = ${job.id}`;
    await runWorker();
    await runWorker();

    assert.equal((await jobOf(analysisId)).status, "succeeded");
    assert.equal(model.calls, calls, "a done analysis is never sent to the model again");
    assert.deepEqual((await analysisRows(user.id)).map((a) => a.status), ["done"]);
    assert.equal(await usedUnits(user.id), 1);
    assert.equal(pushesTo(token, "analysis.ready").length, 1);
  },
);

stackTest(
  "a worker that died during the model call is replaced, and the analysis is still done once",
  async () => {
    const { user, token } = await withDevice();
    const analysisId = await analyzeInBackground(user);

    // A worker claims the job and vanishes; its lock then expires.
    await sql`select * from public.claim_jobs('vanished-worker', 1000, 60, array['ai.analyze'])`;
    await sql`
      update public.background_jobs set locked_until = now() - interval '1 second'
       where locked_by = 'vanished-worker'`;
    await runWorker();
    await runWorker();

    const job = await jobOf(analysisId);
    assert.deepEqual([job.status, job.attempts], ["succeeded", 2]);
    assert.deepEqual((await analysisRows(user.id)).map((a) => a.status), ["done"]);
    assert.equal(await usedUnits(user.id), 1);
    assert.equal(pushesTo(token, "analysis.ready").length, 1);
  },
);

stackTest(
  "a model failing every attempt ends the analysis failed, refunded once, with no push",
  async () => {
    const { user, token } = await withDevice();
    const { status } = await analyze(user.token, {
      analysis_type: "clarity",
      input: { kind: "text", text: fresh("Paid for") },
    });
    assert.equal(status, 200);
    const analysisId = await analyzeInBackground(user);
    assert.equal(await usedUnits(user.id), 2);

    await whileModel("fail", async () => {
      for (let attempt = 0; attempt < 3; attempt++) {
        const job = await jobOf(analysisId);
        await sql`update public.background_jobs set run_at = now() where id = ${job.id}`;
        await runWorker();
      }
    });

    const job = await jobOf(analysisId);
    assert.equal(job.status, "dead");
    const [failed] = (await analysisRows(user.id)).filter((a) => a.id === analysisId);
    assert.equal(failed.status, "failed");
    assert.ok(failed.refunded_at);
    assert.equal(await usedUnits(user.id), 1, "the background unit came back, the other stayed");
    const [{ again }] = await sql`
      select public.fail_background_analysis(${analysisId}) as again`;
    assert.equal(again, false);
    assert.equal(await usedUnits(user.id), 1);
    await runWorker();
    assert.equal(pushesTo(token, "analysis.ready").length, 0);
  },
);

stackTest(
  "a repeated background request with the same Idempotency-Key is charged once",
  async () => {
    const { user } = await withDevice();
    const headers = { "Idempotency-Key": crypto.randomUUID() };
    const request = backgroundRequest();
    const first = await invoke(appClient(user.token, gateway.url), "analyze", {
      body: request,
      headers,
    });
    const second = await invoke(appClient(user.token, gateway.url), "analyze", {
      body: request,
      headers,
    });
    assert.deepEqual([first.status, second.status], [202, 202]);
    assert.equal(second.body.analysis_id, first.body.analysis_id);
    assert.equal(await usedUnits(user.id), 1);
    assert.equal((await analysisRows(user.id)).length, 1);
    await runWorker();
  },
);

stackTest(
  "a background request whose Idempotency-Key is too long gets 400 naming it, uncharged",
  async () => {
    const { user } = await withDevice();

    const { status, body } = await invoke(appClient(user.token, gateway.url), "analyze", {
      body: backgroundRequest(),
      headers: { "Idempotency-Key": "k".repeat(300) },
    });

    assert.equal(status, 400);
    assert.equal(body.error.code, "validation_failed");
    assert.equal(body.error.field, "Idempotency-Key");
    assert.equal(await usedUnits(user.id), 0);
    assert.equal((await analysisRows(user.id)).length, 0);
  },
);

stackTest("a DeviceNotRegistered receipt removes that device", async () => {
  const { user, token } = await withDevice();
  await analyzeInBackground(user);
  await runWorker();
  await runWorker();
  assert.equal(pushesTo(token, "analysis.ready").length, 1);
  push.unregistered.add(token);

  // Its own job, not enqueue_push_receipts(): that tick is keyed by the minute, so another
  // test's tick in the same minute would already have run it.
  await sql`select public.enqueue_job('notify.receipts', '{}'::jsonb)`;
  await runWorker();

  const devices = await sql`select 1 from public.devices where user_id = ${user.id}`;
  assert.equal(devices.length, 0);
  const tickets = await sql`
    select 1 from public.push_tickets as t join public.push_notifications as n
      on n.id = t.notification_id where n.user_id = ${user.id}`;
  assert.equal(tickets.length, 0);
});

stackTest("a notification during quiet hours is deferred to their end, then sent", async () => {
  const { user, token } = await withDevice({
    quiet_hours: { start: "00:00", end: "23:59", timezone: "UTC" },
  });
  await sql`select public.enqueue_notification(${user.id}, 'billing.payment_failed', 'evt_quiet')`;
  await runWorker();
  assert.equal(pushesTo(token).length, 0, "nothing goes out in the quiet hours");

  const [deferred] = await sql<{ id: string; run_at: Date }[]>`
    select id, run_at from public.background_jobs
     where type = 'notify.send' and status = 'queued' and payload ->> 'user_id' = ${user.id}`;
  const [{ end }] = await sql<{ end: Date }[]>`
    select (date_trunc('day', now() at time zone 'UTC') + interval '23 hours 59 minutes')
             at time zone 'UTC' as end`;
  assert.equal(deferred.run_at.toISOString(), end.toISOString());

  // The end of the window comes.
  await sql`update public.background_jobs set run_at = now() where id = ${deferred.id}`;
  await runWorker();
  assert.equal(pushesTo(token, "billing.payment_failed").length, 1);
});

stackTest("a notification is not sent to a user who turned notifications off", async () => {
  const { user, token } = await withDevice({ notifications_enabled: false });
  await sql`select public.enqueue_notification(${user.id}, 'billing.payment_failed', 'evt_off')`;
  await runWorker();
  assert.equal(pushesTo(token).length, 0);
});

stackTest(
  "Expo answering 503 leaves the notification to the queue's retry, then it goes once",
  async () => {
    const { user, token } = await withDevice();
    push.failSends = { status: 503, times: 1 };
    await sql`select public.enqueue_notification(${user.id}, 'billing.payment_failed', 'evt_503')`;
    await runWorker();
    assert.equal(pushesTo(token).length, 0);
    const [job] = await sql<{ id: string; status: string }[]>`
    select id, status from public.background_jobs
     where idempotency_key = ${`notify:billing.payment_failed:${user.id}:evt_503`}`;
    assert.equal(job.status, "failed");

    await sql`update public.background_jobs set run_at = now() where id = ${job.id}`;
    await runWorker();
    await sql`select public.enqueue_notification(${user.id}, 'billing.payment_failed', 'evt_503')`;
    await runWorker();
    assert.equal(pushesTo(token, "billing.payment_failed").length, 1);
  },
);

stackTest(
  "quota.almost_spent is sent exactly once when 100 concurrent charges cross 80 %",
  async () => {
    const { user, token } = await withDevice();
    const pool = postgres(env.SUPABASE_DB_URL, { max: 20, prepare: false, onnotice: () => {} });
    try {
      const outcomes = await Promise.all(
        Array.from(
          { length: 100 },
          () => pool`select allowed from public.increment_usage_if_allowed(${user.id}, 1)`,
        ),
      );
      assert.equal(
        outcomes.filter(([row]) => row.allowed).length,
        100,
      );
    } finally {
      await pool.end();
    }
    const jobs = await sql`
    select 1 from public.background_jobs
     where type = 'notify.send' and payload ->> 'user_id' = ${user.id}
       and payload ->> 'kind' = 'quota.almost_spent'`;
    assert.equal(jobs.length, 1);
    await runWorker();
    assert.equal(pushesTo(token, "quota.almost_spent").length, 1);
  },
);

stackTest("devices refuses a token that is not an Expo push token", async () => {
  const user = await createUser("push");
  const { status, body } = await call(user, "devices", {
    body: { expo_push_token: "not-a-push-token", platform: "android" },
  });
  assert.equal(status, 400);
  assert.equal(body.error.code, "validation_failed");
  assert.equal(body.error.field, "expo_push_token");
});

stackTest("registering a token another user had moves it to the new user", async () => {
  const { user: first, token } = await withDevice();
  const second = await createUser("push");
  const again = await call(second, "devices", {
    body: { expo_push_token: token, platform: "android", app_version: "2.0.0" },
  });
  assert.equal(again.status, 201);
  assert.equal(Device.parse(again.body).platform, "android");
  const owners = await sql`select user_id from public.devices where expo_push_token = ${token}`;
  assert.deepEqual(owners.map((o) => o.user_id), [second.id]);

  const refused = await call(first, `devices?token=${encodeURIComponent(token)}`, {
    method: "DELETE",
  });
  assert.deepEqual([refused.status, refused.body.deleted], [200, false]);
  const removed = await call(second, `devices?token=${encodeURIComponent(token)}`, {
    method: "DELETE",
  });
  assert.deepEqual([removed.status, removed.body.deleted], [200, true]);
});

stackTest("deleting an account removes its devices", async () => {
  const { user } = await withDevice();
  const { status } = await call(user, "profile", { method: "DELETE" });
  assert.equal(status, 200);
  const devices = await sql`select 1 from public.devices where user_id = ${user.id}`;
  assert.equal(devices.length, 0);
});

stackTest(
  "weekly recommendations are made at 09:00 on Monday, free, pushed and returned to their user",
  async () => {
    const { user, token } = await withDevice({ timezone: "Europe/Berlin" });
    for (let i = 0; i < 3; i++) {
      const { status } = await analyze(user.token, {
        analysis_type: "clarity",
        input: { kind: "text", text: fresh(`Weekly ${i}`) },
      });
      assert.equal(status, 200);
    }
    const used = await usedUnits(user.id);
    const calls = model.calls;
    // Monday 2026-12-07 09:30 in Berlin is 08:30 UTC.
    const [{ jobs }] = await sql`
      select public.enqueue_weekly_recommendations('2026-12-07T08:30:00Z') as jobs`;
    assert.ok(jobs >= 1);
    await sql`
      update public.background_jobs set run_at = now()
       where type = 'ai.recommendations' and payload -> 'user_ids' ? ${user.id}`;
    await runWorker();
    await runWorker();

    assert.equal(model.calls, calls + 1, "one model call for the user");
    assert.match(model.requests.at(-1).messages.at(-1).content[1].text, /Weekly 0/);
    assert.equal(await usedUnits(user.id), used, "recommendations cost the user nothing");
    const { status, body } = await call(user, "recommendations", { method: "GET" });
    assert.equal(status, 200);
    const { recommendation } = RecommendationsResponse.parse(body);
    assert.equal(recommendation?.week, "2026-12-07");
    assert.equal(pushesTo(token, "recommendations.ready").length, 1);
    const [spend] = await sql`
      select model_calls from public.ops_model_spend
       where source = 'recommendations' and day = date_trunc('day', now())`;
    assert.ok(spend.model_calls >= 1);
  },
);

stackTest("nobody else reads a user's devices or recommendations", async () => {
  const { user } = await withDevice();
  const other = await createUser("push");
  await sql`
    insert into public.recommendations (user_id, week, summary, items, model, analyses_count)
    values (${user.id}, '2026-11-30', 'Mine', '["a"]', 'm', 3)`;
  const { body } = await call(other, "recommendations", { method: "GET" });
  assert.equal(RecommendationsResponse.parse(body).recommendation, null);
  const mine = RecommendationsResponse.parse(
    (await call(user, "recommendations", { method: "GET" })).body,
  );
  assert.equal(mine.recommendation?.summary, "Mine");
});

stackTest(
  "the app's client registers its device, waits for a background analysis, and signs out",
  async () => {
    const user = await createUser("push-client");
    await sql`update public.profiles set settings = '{"notifications_enabled": true}' where id = ${user.id}`;
    const api = createApiClient(appClient(user.token, gateway.url));
    const token = `ExpoPushToken[${crypto.randomUUID()}]`;

    const device = await api.devices.register({ expo_push_token: token, platform: "android" });
    assert.equal(device.expo_push_token, token);
    assert.equal((await api.recommendations()).recommendation, null);
    const accepted = await api.analyze(backgroundRequest());
    assert.ok("analysis_id" in accepted);
    const waiting = api.waitForAnalysis(accepted.analysis_id, { intervalMs: 50 });
    await runWorker();
    await runWorker();
    const analysis = await waiting;
    assert.deepEqual([analysis.id, analysis.status], [accepted.analysis_id, "done"]);
    assert.equal(pushesTo(token, "analysis.ready").length, 1);

    assert.equal((await api.devices.unregister(token)).deleted, true);
  },
);
