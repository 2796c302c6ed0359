import assert from "node:assert/strict";
import { waitFor } from "../local/process.ts";
import {
  AnalyzeResponse,
  BillingResponse,
  ChatResponse,
  ErrorEnvelope,
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
  createUser,
  database,
  invoke,
  type Invoked,
  processJobs,
  stackTest,
  type TestUser,
  usedUnits,
} from "./support.ts";

/**
 * Fault drills for the providers: a model that hangs and a Stripe that hangs or fails. Each
 * function answers its documented 503 once its own timeout (and bounded retries) has run out,
 * refunds what it charged, and works again as soon as the provider does; the Stripe webhook
 * keeps recording events while Stripe is down, and the job worker applies them once it is back.
 * (analyze_test.ts, chat_test.ts and billing_test.ts prove the refunds and error bodies of each
 * failure in detail; here it is the time to answer and the recovery.)
 */

const OPENAI_TIMEOUT_MS = 1_000;
const OPENAI_MAX_RETRIES = 1;
const STRIPE_TIMEOUT_MS = 1_000;
/** The Stripe SDK's one network retry (`maxNetworkRetries` in _shared/stripe.ts). */
const STRIPE_RETRIES = 1;
/**
 * Not a speed target: added to every attempt's timeout, a margin this loose only tells an answer
 * given once the timeouts ran out from a request left hanging on its provider.
 */
const MARGIN_MS = 5_000;
const MODEL_BOUND_MS = OPENAI_TIMEOUT_MS * (OPENAI_MAX_RETRIES + 1) + MARGIN_MS;
const STRIPE_BOUND_MS = STRIPE_TIMEOUT_MS * (STRIPE_RETRIES + 1) + MARGIN_MS;

const API_KEY = `sk-test-${crypto.randomUUID()}`;
const model = startOpenAiServer(API_KEY);
const b = await startBilling({
  OPENAI_BASE_URL: `${model.url}/v1`,
  OPENAI_API_KEY: API_KEY,
  OPENAI_TIMEOUT_MS: String(OPENAI_TIMEOUT_MS),
  OPENAI_MAX_RETRIES: String(OPENAI_MAX_RETRIES),
  STRIPE_TIMEOUT_MS: String(STRIPE_TIMEOUT_MS),
});

/** A call and how long its answer took, in milliseconds. */
async function timed(call: () => Promise<Invoked>): Promise<Invoked & { ms: number }> {
  const started = performance.now();
  const answer = await call();
  return { ...answer, ms: performance.now() - started };
}

const post = (user: TestUser, name: string, body: Record<string, unknown>, stream = false) =>
  timed(() =>
    invoke(appClient(user.token, b.url), name, {
      body,
      headers: stream ? { Accept: "text/event-stream" } : {},
    })
  );

const analysisOf = (text: string) => ({ analysis_type: "clarity", input: { kind: "text", text } });

/** `work` while the model never answers; afterwards it answers again. */
async function whileModelHangs(work: () => Promise<void>) {
  model.behaviour = "hang";
  try {
    await work();
  } finally {
    model.behaviour = "answer";
  }
}

function assertAnsweredInTime(
  answer: Invoked & { ms: number },
  code: string,
  boundMs: number,
  what: string,
) {
  assert.equal(answer.status, 503, `${what}: ${JSON.stringify(answer.body)}`);
  assert.equal(ErrorEnvelope.parse(answer.body).error.code, code);
  assert.ok(answer.ms < boundMs, `${what} took ${answer.ms.toFixed(0)} ms`);
}

/** The events of a streamed chat answer, in order. */
async function eventsOf(answer: Invoked): Promise<{ event: string; data: unknown }[]> {
  const text = await (answer.body as Response).text();
  return text.split("\n\n").filter((block) => block.trim()).map((block) => {
    const field = (name: string) =>
      block.split("\n").find((line) => line.startsWith(`${name}: `))!.slice(name.length + 2);
    return { event: field("event"), data: JSON.parse(field("data")) };
  });
}

stackTest(
  "while the model hangs, analyze answers 503 ai_unavailable within its timeout and refunds, " +
    "and works again once the model answers",
  async () => {
    const user = await createUser("model-hangs-analyze");
    await whileModelHangs(async () => {
      const answer = await post(user, "analyze", analysisOf(`Hung ${crypto.randomUUID()}`));
      assertAnsweredInTime(answer, "ai_unavailable", MODEL_BOUND_MS, "analyze");
      assert.equal(answer.body.error.usage.used, 0);
    });

    const answer = await post(user, "analyze", analysisOf(`Back ${crypto.randomUUID()}`));
    assert.equal(answer.status, 200);
    assert.equal(AnalyzeResponse.parse(answer.body).cached, false);
    assert.equal(await usedUnits(user.id), 1);
  },
);

stackTest(
  "while the model hangs, chat answers 503 ai_unavailable within its timeout and refunds, " +
    "and works again once the model answers",
  async () => {
    const user = await createUser("model-hangs-chat");
    await whileModelHangs(async () => {
      const answer = await post(user, "chat", { message: `Hung ${crypto.randomUUID()}` });
      assertAnsweredInTime(answer, "ai_unavailable", MODEL_BOUND_MS, "chat");
      assert.equal(answer.body.error.usage.used, 0);
    });

    const answer = await post(user, "chat", { message: `Back ${crypto.randomUUID()}` });
    assert.equal(answer.status, 200);
    assert.equal(ChatResponse.parse(answer.body).cached, false);
    assert.equal(await usedUnits(user.id), 1);
  },
);

stackTest(
  "while the model hangs, a streamed chat answers 503 ai_unavailable before any event within " +
    "its timeout, and streams again once the model answers",
  async () => {
    const user = await createUser("model-hangs-stream");
    await whileModelHangs(async () => {
      const answer = await post(user, "chat", { message: `Hung ${crypto.randomUUID()}` }, true);
      assertAnsweredInTime(answer, "ai_unavailable", MODEL_BOUND_MS, "streamed chat");
    });
    assert.equal(await usedUnits(user.id), 0);

    const answer = await post(user, "chat", { message: `Back ${crypto.randomUUID()}` }, true);
    assert.equal(answer.status, 200);
    const events = await eventsOf(answer);
    assert.equal(events[0].event, "delta");
    assert.equal(events.at(-1)!.event, "done");
    assert.equal(ChatResponse.parse(events.at(-1)!.data).usage.used, 1);
  },
);

billingTest(
  "while Stripe hangs, billing answers 503 billing_unavailable within STRIPE_TIMEOUT_MS, and " +
    "works again once Stripe answers",
  async () => {
    // Held far past the timeout and its retry, as a Stripe that stopped answering would be.
    const route = "POST /v1/customers";
    b.stripe.setDelay(route, STRIPE_BOUND_MS);
    try {
      const user = await createUser("stripe-hangs");
      const answer = await timed(() => billing(b.url, user, { action: "checkout", plan: "pro" }));
      assertAnsweredInTime(answer, "billing_unavailable", STRIPE_BOUND_MS, "checkout");
    } finally {
      b.stripe.setDelay(route, 0);
    }

    // Another user: Stripe answers the first user's idempotency key only once the held request
    // it still holds is done.
    const user = await createUser("stripe-answers");
    const { status, body } = await billing(b.url, user, { action: "checkout", plan: "pro" });
    assert.equal(status, 200);
    BillingResponse.parse(body);
  },
);

billingTest(
  "while Stripe is down the webhook still records events, the job applying one fails and is " +
    "retried, and once Stripe is back a later run applies it",
  async () => {
    const { user, customerId } = await subscriber(b, "stripe-down-jobs");
    const subscription = b.stripe.addSubscription({ customer: customerId, price: PRO_PRICE });
    // Applying a completed checkout means reading its subscription from Stripe.
    const completed = stripeEvent("checkout.session.completed", {
      id: `cs_test_${crypto.randomUUID().slice(0, 8)}`,
      object: "checkout.session",
      mode: "subscription",
      status: "complete",
      payment_status: "paid",
      customer: customerId,
      client_reference_id: user.id,
      subscription: subscription.id,
    });

    b.stripe.setFailing(true);
    try {
      const delivery = await deliver(b.url, completed);
      assert.equal(delivery.status, 200);
      assert.equal((await recordedEvent(completed.id)).length, 1);

      await waitFor("a run to try applying it", async () => {
        assert.equal((await processJobs(b.url)).status, 200);
        return (await applyJobOf(completed.id))[0].attempts > 0;
      }, 15_000);
      const [failed] = await applyJobOf(completed.id);
      assert.equal(failed.status, "failed", "failed for now, to be retried: not dead");
      assert.equal(failed.attempts, 1);
      assert.ok(failed.last_error);
      assert.equal((await recordedEvent(completed.id))[0].processed_at, null);
      assert.equal((await profileRow(user.id)).plan_id, "free");
    } finally {
      b.stripe.setFailing(false);
    }

    await makeApplyJobDue(completed.id);
    await waitFor("a later run to apply the event", async () => {
      assert.equal((await processJobs(b.url)).status, 200);
      return (await applyJobOf(completed.id))[0].status === "succeeded";
    }, 15_000);
    assert.notEqual((await recordedEvent(completed.id))[0].processed_at, null);
    assert.equal((await profileRow(user.id)).plan_id, "pro");
  },
);

/** Lets the retry of the job applying `eventId` run now, as if its backoff had passed. */
async function makeApplyJobDue(eventId: string) {
  const sql = database();
  try {
    await sql`update public.background_jobs set run_at = now()
               where idempotency_key = ${`stripe.apply_event:${eventId}`}`;
  } finally {
    await sql.end();
  }
}
