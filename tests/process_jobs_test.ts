import assert from "node:assert/strict";
import { ProcessJobsResponse } from "../supabase/functions/_shared/contracts.ts";
import { startBilling } from "./billing_support.ts";
import { TEST_SECRET_KEY } from "./stripe_server.ts";
import { waitFor } from "../local/process.ts";
import {
  addAnalyses,
  addMessages,
  appClient,
  createUser,
  database,
  functionsGateway,
  invoke,
  processJobs,
  stackTest,
} from "./support.ts";

/**
 * `process-jobs`, the background job worker: service role only; failures retried with a growing
 * backoff until dead; concurrent workers never share a job; a worker killed mid-job leaves it to
 * be claimed again once its lock expires, with its effect happening once. Stripe-bound work is a
 * deleted account's subscription cancellation, counted by the Stripe-compatible test server.
 */

const b = await startBilling();
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface JobRow {
  status: string;
  attempts: number;
  last_error: string | null;
  /** Seconds from the last report to the next attempt. */
  backoff_s: number;
}

/** Enqueues a job due now; a lower `priority` is claimed before every job of priority 0. */
async function enqueue(
  type: string,
  payload: unknown,
  maxAttempts = 5,
  priority = 0,
): Promise<string> {
  const sql = database();
  try {
    const [{ id }] = await sql<{ id: string }[]>`
      select public.enqueue_job(${type}, ${sql.json(payload as never)}, now(), ${priority}, null,
                                ${maxAttempts}) as id`;
    return id;
  } finally {
    await sql.end();
  }
}

async function job(id: string): Promise<JobRow> {
  const sql = database();
  try {
    const [row] = await sql<JobRow[]>`
      select status, attempts, last_error,
             extract(epoch from run_at - updated_at)::float8 as backoff_s
        from public.background_jobs where id = ${id}`;
    return row;
  } finally {
    await sql.end();
  }
}

/** Lets a job that is waiting out its backoff run now, as if that time had passed. */
async function makeDue(id: string) {
  const sql = database();
  try {
    await sql`update public.background_jobs set run_at = now() where id = ${id}`;
  } finally {
    await sql.end();
  }
}

/** Lets a running job's lock run out now, as if its worker had stalled that long. */
async function expireLock(id: string) {
  const sql = database();
  try {
    await sql`update public.background_jobs set locked_until = now() - interval '1 second'
               where id = ${id} and status = 'running'`;
  } finally {
    await sql.end();
  }
}

/** Runs the worker until the job has succeeded (another worker, the stack's, may take it). */
async function runUntilSucceeded(id: string, url = b.url) {
  for (let run = 0; run < 40; run++) {
    assert.equal((await processJobs(url)).status, 200);
    if ((await job(id)).status === "succeeded") return;
    await sleep(500);
  }
  assert.fail(`job ${id} did not succeed: ${JSON.stringify(await job(id))}`);
}

/** A deleted account's Stripe customer with one live subscription. */
function customerWithSubscription() {
  const customerId = b.stripe.addCustomer();
  const subscription = b.stripe.addSubscription({ customer: customerId, price: "price_any" });
  return {
    customerId,
    subscriptionId: subscription.id,
    payload: {
      user_id: crypto.randomUUID(),
      subscription_id: subscription.id,
      customer_id: customerId,
    },
  };
}

stackTest("process-jobs refuses anyone but the service role", async () => {
  const user = await createUser("not-service");
  const asUser = await invoke(appClient(user.token, b.url), "process-jobs", { body: {} });
  assert.equal(asUser.status, 403);
  assert.equal(asUser.body.error.code, "forbidden");
  const anonKey = await invoke(appClient(undefined, b.url), "process-jobs", { body: {} });
  assert.equal(anonKey.status, 403, "the app's anon key is not the service role");
  const noToken = await fetch(`${b.url}/functions/v1/process-jobs`, { method: "POST" });
  assert.equal(noToken.status, 401);
  await noToken.body?.cancel();
});

stackTest("a run answers what it did: how many jobs it claimed and how each ended", async () => {
  // Four jobs claimed ahead of anything else queued, by a worker that claims four per run; only
  // Stripe-configured workers (not the stack's own) claim these types.
  const worker = await startWorkerGateway({ JOB_BATCH_SIZE: "4", JOB_CONCURRENCY: "4" });
  const FIRST = -1_000;
  const ids: string[] = [];
  try {
    for (let i = 0; i < 2; i++) {
      ids.push(
        await enqueue("stripe.cancel_subscription", customerWithSubscription().payload, 5, FIRST),
      );
    }
    // A payload the handler refuses: the job throws, with attempts left and on its last.
    ids.push(await enqueue("stripe.cancel_subscription", {}, 3, FIRST));
    ids.push(await enqueue("stripe.cancel_subscription", {}, 1, FIRST));

    const { status, body } = await processJobs(worker.url);
    assert.equal(status, 200);
    assert.deepEqual(ProcessJobsResponse.parse(body), {
      claimed: 4,
      succeeded: 2,
      failed: 1,
      dead: 1,
    });
    const states = await Promise.all(ids.map(async (id) => (await job(id)).status));
    assert.deepEqual(states, ["succeeded", "succeeded", "failed", "dead"]);
  } finally {
    const sql = database();
    try {
      await sql`delete from public.background_jobs where id in ${sql(ids)}`;
    } finally {
      await sql.end();
    }
    await worker.close();
  }
});

stackTest("a deleted account's subscriptions are canceled at Stripe, once", async () => {
  const { customerId, subscriptionId, payload } = customerWithSubscription();
  const second = b.stripe.addSubscription({ customer: customerId, price: "price_other" });

  await runUntilSucceeded(await enqueue("stripe.cancel_subscription", payload));
  assert.equal(b.stripe.subscription(subscriptionId).status, "canceled");
  assert.equal(
    b.stripe.subscription(second.id).status,
    "canceled",
    "every live one of the customer",
  );

  await runUntilSucceeded(await enqueue("stripe.cancel_subscription", payload));
  assert.equal(b.stripe.cancellations(subscriptionId), 1, "running it again cancels nothing more");
  assert.equal(b.stripe.cancellations(second.id), 1);
});

stackTest(
  "a job that throws is retried with a growing delay and is dead after its last attempt",
  async () => {
    const { payload } = customerWithSubscription();
    const id = await enqueue("stripe.cancel_subscription", payload, 3);
    b.stripe.setFailing(true);
    try {
      await processJobs(b.url);
      const first = await job(id);
      assert.equal(first.status, "failed");
      assert.equal(first.attempts, 1);
      assert.match(first.last_error ?? "", /down/);

      await makeDue(id);
      await processJobs(b.url);
      const second = await job(id);
      assert.equal(second.status, "failed");
      assert.equal(second.attempts, 2);
      assert.ok(second.backoff_s > first.backoff_s, "the delay grows");

      await makeDue(id);
      const last = await processJobs(b.url);
      assert.ok(last.body.dead >= 1);
      const dead = await job(id);
      assert.equal(dead.status, "dead");
      assert.equal(dead.attempts, 3);

      await processJobs(b.url);
      assert.equal((await job(id)).attempts, 3, "a dead job is never claimed again");
    } finally {
      b.stripe.setFailing(false);
    }
  },
);

stackTest("two workers running at once never run the same job", async () => {
  const settings = { JOB_CONCURRENCY: "3", JOB_BATCH_SIZE: "50" };
  const first = await startWorkerGateway(settings);
  const second = await startWorkerGateway(settings);
  try {
    // Both function processes running before the race starts.
    await Promise.all([processJobs(first.url), processJobs(second.url)]);
    const accounts = Array.from({ length: 12 }, customerWithSubscription);
    const ids = [];
    for (const account of accounts) {
      ids.push(await enqueue("stripe.cancel_subscription", account.payload));
    }
    // Each job takes a while at Stripe, so both workers are in the middle of jobs at once.
    b.stripe.setDelay("GET /v1/subscriptions", 300);

    const [a, c] = await Promise.all([processJobs(first.url), processJobs(second.url)]);
    assert.ok(a.body.claimed > 0 && c.body.claimed > 0, "both workers took jobs");
    for (const id of ids) {
      const row = await job(id);
      assert.equal(row.status, "succeeded");
      assert.equal(row.attempts, 1, "claimed once");
    }
    for (const { subscriptionId } of accounts) {
      assert.equal(b.stripe.calls(`DELETE /v1/subscriptions/${subscriptionId}`), 1);
    }
  } finally {
    b.stripe.setDelay("GET /v1/subscriptions", 0);
    await first.close();
    await second.close();
  }
});

stackTest(
  "a worker killed in the middle of a job leaves it to be claimed again once its lock expires, " +
    "and its effect happens once",
  async () => {
    // A 30 s job timeout gives a 35 s lock, which the test ends by hand rather than waiting.
    const doomed = await startWorkerGateway({ JOB_TIMEOUT_MS: "30000" });
    const { subscriptionId, payload } = customerWithSubscription();
    const cancel = `DELETE /v1/subscriptions/${subscriptionId}`;
    // Held long enough that the worker is surely killed before Stripe answers it.
    b.stripe.setDelay(cancel, 10_000);
    const id = await enqueue("stripe.cancel_subscription", payload);

    const arrived = b.stripe.arrival(cancel);
    const run = processJobs(doomed.url).catch(() => null);
    await arrived;
    await doomed.close();
    await run;
    b.stripe.setDelay(cancel, 0);

    const orphaned = await job(id);
    assert.equal(orphaned.status, "running", "nobody reported on it");
    assert.equal(orphaned.attempts, 1);
    await processJobs(b.url);
    assert.equal((await job(id)).attempts, 1, "not claimable while its lock holds");

    // Stripe carries out the cancel the dead worker sent, as it would.
    await waitFor(
      "the held cancel to be carried out",
      () => Promise.resolve(b.stripe.subscription(subscriptionId).status === "canceled"),
      30_000,
    );
    await expireLock(id);
    await runUntilSucceeded(id);
    assert.equal((await job(id)).attempts, 2, "claimed again once the lock expired");
    assert.equal(b.stripe.subscription(subscriptionId).status, "canceled");
    assert.equal(b.stripe.cancellations(subscriptionId), 1, "canceled once");
    assert.equal(b.stripe.calls(cancel), 1, "the second run saw it done");
  },
);

stackTest("a worker without Stripe leaves Stripe jobs queued for one that has it", async () => {
  const withoutStripe = await functionsGateway({ STRIPE_SECRET_KEY: "" });
  try {
    const { subscriptionId, payload } = customerWithSubscription();
    const id = await enqueue("stripe.cancel_subscription", payload, 1);
    await processJobs(withoutStripe.url);
    const waiting = await job(id);
    assert.equal(waiting.status, "queued");
    assert.equal(waiting.attempts, 0, "no attempt used up");

    await runUntilSucceeded(id);
    assert.equal(b.stripe.subscription(subscriptionId).status, "canceled");
  } finally {
    await withoutStripe.close();
  }
});

stackTest(
  "statistics are refreshed on demand: a user's new analyses and messages show",
  async () => {
    const user = await createUser("statistics");
    await addAnalyses(user.id, [new Date(), new Date()]);
    await addMessages(user.id, crypto.randomUUID(), 3);
    const counts = async () => {
      const sql = database();
      try {
        return [
          ...await sql<{ analyses_count: number; chat_messages_count: number }[]>`
        select analyses_count::int, chat_messages_count::int
          from public.user_statistics where user_id = ${user.id}`,
        ];
      } finally {
        await sql.end();
      }
    };
    assert.deepEqual(await counts(), [], "the user is not in the statistics yet");

    await runUntilSucceeded(await enqueue("statistics.refresh", {}));
    assert.deepEqual(await counts(), [{ analyses_count: 2, chat_messages_count: 3 }]);
  },
);

stackTest(
  "expired data is cleaned up on demand, and what has not expired is kept",
  async () => {
    const sql = database();
    const tag = crypto.randomUUID();
    const cacheKey = async (label: string) =>
      Array.from(
        new Uint8Array(
          await crypto.subtle.digest("SHA-256", new TextEncoder().encode(`${tag}:${label}`)),
        ),
        (byte) => byte.toString(16).padStart(2, "0"),
      ).join("");
    const [expiredKey, liveKey] = [await cacheKey("expired"), await cacheKey("live")];
    const jobType = `test.cleanup.${tag}`;
    // An api_metrics month far past its 90-day retention, which no other test writes to.
    const expiredMonth = "2020-01-01";
    try {
      await sql`
        insert into public.ai_response_cache (key, value, model, created_at, expires_at)
        values (${expiredKey}, '{}', 'test-model', now() - interval '2 days', now() - interval '1 day'),
               (${liveKey}, '{}', 'test-model', now(), now() + interval '1 day')`;
      await sql`
        insert into public.rate_limit_hits (key, window_seconds, window_start, hits, expires_at)
        values (${`test:${tag}:ended`}, 60, now() - interval '2 minutes', 1, now() - interval '1 minute'),
               (${`test:${tag}:open`}, 60, now(), 1, now() + interval '1 minute')`;
      await sql`
        insert into public.background_jobs (type, payload, status, attempts, finished_at)
        values (${jobType}, '{"finished":"8 days ago"}', 'succeeded', 1, now() - interval '8 days'),
               (${jobType}, '{"finished":"1 hour ago"}', 'succeeded', 1, now() - interval '1 hour')`;
      await sql`select count(*) from public.create_event_partitions_between(${expiredMonth}, ${expiredMonth})`;
      const partitions = async () =>
        (await sql<{ partition_name: string }[]>`
          select partition_name from public.event_partitions
           where table_name = 'api_metrics'
             and range_from in (${expiredMonth}::timestamptz,
                                date_trunc('month', now(), 'UTC'))
           order by range_from`).map((p) => p.partition_name);
      const current = (await partitions()).at(-1);
      assert.deepEqual(await partitions(), ["api_metrics_p202001", current]);

      await runUntilSucceeded(await enqueue("maintenance.cleanup", {}));

      assert.deepEqual(
        (await sql`select key from public.ai_response_cache where key in (${expiredKey}, ${liveKey})`)
          .map((r) => r.key),
        [liveKey],
        "the expired cache entry is gone, the live one kept",
      );
      assert.deepEqual(
        (await sql`select key from public.rate_limit_hits where key like ${`test:${tag}:%`}`)
          .map((r) => r.key),
        [`test:${tag}:open`],
        "the ended window's counter is gone, the open one kept",
      );
      assert.deepEqual(
        (await sql`select payload->>'finished' as finished from public.background_jobs
                    where type = ${jobType}`).map((r) => r.finished),
        ["1 hour ago"],
        "the job finished over a week ago is gone, the recent one kept",
      );
      assert.deepEqual(
        await partitions(),
        [current],
        "the expired month is dropped, this one kept",
      );
    } finally {
      await sql`delete from public.ai_response_cache where key in (${expiredKey}, ${liveKey})`;
      await sql`delete from public.rate_limit_hits where key like ${`test:${tag}:%`}`;
      await sql`delete from public.background_jobs where type = ${jobType}`;
      await sql`drop table if exists public.api_metrics_p202001`;
      await sql.end();
    }
  },
);

/** Another worker (its own function process) on the same Stripe server. */
function startWorkerGateway(settings: Record<string, string>) {
  return functionsGateway({
    STRIPE_SECRET_KEY: TEST_SECRET_KEY,
    STRIPE_API_BASE: b.stripe.url,
    ...settings,
  });
}
