import assert from "node:assert/strict";
import { ApiClientError, createApiClient, type Settings } from "../client/index.ts";
import { serverSentEvents } from "../client/sse.ts";
import { waitFor } from "../local/process.ts";
import { billingTest } from "./billing_support.ts";
import { replyTo, startOpenAiServer } from "./openai_server.ts";
import { startStripeServer, TEST_SECRET_KEY } from "./stripe_server.ts";
import {
  addAnalyses,
  addMessages,
  appClient,
  atStartOfWindow,
  createUser,
  database,
  functionsGateway,
  limitGeneral,
  stackTest,
  usedUnits,
} from "./support.ts";

/**
 * The app's typed client (client/) over supabase-js, as the Expo app runs it: against the
 * stack, and against a gateway of the real functions talking to local OpenAI and Stripe servers
 * where a function needs one. Every message carries a fresh uuid, so no run is answered from
 * what an earlier run left in the AI response cache.
 */

const API_KEY = `sk-test-${crypto.randomUUID()}`;
const openai = startOpenAiServer(API_KEY);
const stripe = startStripeServer();
const logs: string[] = [];
const gateway = await functionsGateway({
  OPENAI_BASE_URL: `${openai.url}/v1`,
  OPENAI_API_KEY: API_KEY,
  OPENAI_TIMEOUT_MS: "1000",
  OPENAI_MAX_RETRIES: "1",
  STRIPE_SECRET_KEY: TEST_SECRET_KEY,
  STRIPE_API_BASE: stripe.url,
}, (line) => logs.push(line));

/** The client as the app builds it, over the stack or over `url`. */
const api = (token?: string, url?: string) => createApiClient(appClient(token, url));

const freshMessage = (text = "Hello there") => `${text} ${crypto.randomUUID()}`;

/** What the promise rejected with, which must be an ApiClientError. */
async function failure(promise: Promise<unknown>): Promise<ApiClientError> {
  const error = await promise.then(() => assert.fail("the call succeeded"), (e) => e);
  assert.ok(error instanceof ApiClientError, `not an ApiClientError: ${error}`);
  return error;
}

async function withServer(behaviour: typeof openai.behaviour, work: () => Promise<void>) {
  openai.behaviour = behaviour;
  try {
    await work();
  } finally {
    openai.behaviour = "answer";
  }
}

async function setUsed(userId: string, used: number) {
  const sql = database();
  try {
    await sql`update public.profiles set usage_count = ${used} where id = ${userId}`;
  } finally {
    await sql.end();
  }
}

/** The requests the gateway's functions logged for this user, as `METHOD function`. */
function loggedRequests(userId: string): string[] {
  return logs.flatMap((line) => {
    try {
      const entry = JSON.parse(line.slice(line.indexOf("{")));
      return entry.msg === "request" && entry.user_id === userId
        ? [`${entry.method} ${entry.function}`]
        : [];
    } catch {
      return [];
    }
  });
}

Deno.test("the client imports only client/, contracts.ts, zod and supabase-js", async () => {
  const root = new URL("../", import.meta.url);
  const info = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", "client/index.ts"],
    cwd: root.pathname,
    stdout: "piped",
  }).output();
  assert.ok(info.success, "deno info failed");
  const graph: {
    modules: { kind: string; specifier: string; local?: string; npmPackage?: string }[];
  } = JSON.parse(new TextDecoder().decode(info.stdout));
  const contracts = new URL("supabase/functions/_shared/contracts.ts", root).href;
  const allowedPackages = ["zod", "@supabase/supabase-js"];
  const isAllowed = (module: (typeof graph.modules)[number]) =>
    module.kind === "npm"
      ? allowedPackages.includes(module.npmPackage!.slice(0, module.npmPackage!.lastIndexOf("@")))
      : module.kind === "esm" &&
        (module.specifier.startsWith(new URL("client/", root).href) ||
          module.specifier === contracts);

  assert.deepEqual(graph.modules.filter((module) => !isAllowed(module)), []);
  assert.ok(graph.modules.some((module) => module.specifier === contracts));
  for (const module of graph.modules.filter((m) => m.kind === "esm")) {
    assert.doesNotMatch(await Deno.readTextFile(module.local!), /\bDeno\./, module.specifier);
  }
});

Deno.test("events read a byte at a time arrive whole; an unfinished one is dropped", async () => {
  const sent = 'event: delta\r\ndata: {"text":"h\u00e9llo \u{1F44B}"}\r\n\r\n: a comment\n' +
    'event: done\ndata: {"a":1,\ndata: "b":2}\n\nevent: delta\ndata: unfinished';
  const bytes = new TextEncoder().encode(sent);
  const oneByteAtATime = new ReadableStream<Uint8Array>({
    start(controller) {
      for (const byte of bytes) controller.enqueue(new Uint8Array([byte]));
      controller.close();
    },
  });

  const events = await Array.fromAsync(serverSentEvents(new Response(oneByteAtATime)));

  assert.deepEqual(events, [
    { event: "delta", data: '{"text":"h\u00e9llo \u{1F44B}"}' },
    { event: "done", data: '{"a":1,\n"b":2}' },
  ]);
});

stackTest("health answers the stack's report", async () => {
  const report = await api().health();
  assert.deepEqual(report, { status: "ok", checks: { database: "ok", redis: "ok" } });
});

stackTest("profile.get answers the signed-in user's profile", async () => {
  const user = await createUser("client-profile");
  const profile = await api(user.token).profile.get();
  assert.equal(profile.id, user.id);
  assert.equal(profile.email, user.email);
  assert.equal(profile.plan.id, "free");
});

stackTest("profile.update merges the settings and answers the updated profile", async () => {
  const user = await createUser("client-settings");
  const client = api(user.token);
  await client.profile.update({ theme: "dark" });

  const updated = await client.profile.update({ locale: "en-US" });

  assert.deepEqual(updated.settings, { theme: "dark", locale: "en-US" });
  assert.deepEqual((await client.profile.get()).settings, updated.settings);
});

stackTest("usage answers the monthly quota and the plan's rate windows", async () => {
  const user = await createUser("client-usage");
  const { usage, rate_limits } = await api(user.token).usage();
  assert.deepEqual([usage.used, usage.quota, usage.remaining], [0, 100, 100]);
  assert.equal(rate_limits.ai.limit, 20);
  assert.equal(rate_limits.general.limit, 200);
});

stackTest("history pages through analyses newest first, continuing from next_cursor", async () => {
  const user = await createUser("client-history");
  const now = Date.now();
  const added = await addAnalyses(user.id, [2, 1, 0].map((s) => new Date(now - s * 1000)));
  const client = api(user.token);

  const first = await client.history({ limit: 2 });
  const second = await client.history({ limit: 2, cursor: first.next_cursor! });

  assert.equal(first.type, "analyses");
  assert.deepEqual(first.items.map((a) => a.id), [added[2].id, added[1].id]);
  assert.equal(first.has_more, true);
  assert.deepEqual(second.items.map((a) => a.id), [added[0].id]);
  assert.equal(second.has_more, false);
});

stackTest("history of type messages answers a conversation's messages", async () => {
  const user = await createUser("client-messages");
  const conversation = crypto.randomUUID();
  const added = await addMessages(user.id, conversation, 2);
  await addMessages(user.id, crypto.randomUUID(), 2);

  const page = await api(user.token).history({
    type: "messages",
    conversation_id: conversation,
  });

  assert.equal(page.type, "messages");
  assert.deepEqual(page.items.map((m) => m.id), added.map((m) => m.id).reverse());
  assert.ok(page.items.every((m) => m.conversation_id === conversation));
});

stackTest(
  "sync with the ETag of its last answer is notModified until something changes",
  async () => {
    const user = await createUser("client-sync");
    await addAnalyses(user.id);
    const client = api(user.token);
    const first = await client.sync();
    assert.equal(first.notModified, false);
    if (first.notModified) return;
    const caughtUp = await client.sync({ since: first.data.cursor });
    assert.equal(caughtUp.notModified, false);
    if (caughtUp.notModified) return;
    assert.match(caughtUp.etag ?? "", /^"[A-Za-z0-9_-]+"$/);

    const unchanged = await client.sync({ since: caughtUp.data.cursor, etag: caughtUp.etag });
    assert.deepEqual(unchanged, { notModified: true, etag: caughtUp.etag });

    const [added] = await addAnalyses(user.id);
    const changed = await client.sync({ since: caughtUp.data.cursor, etag: caughtUp.etag });
    assert.equal(changed.notModified, false);
    if (changed.notModified) return;
    assert.deepEqual(changed.data.analyses.map((a) => a.id), [added.id]);
    assert.notEqual(changed.etag, caughtUp.etag);
  },
);

stackTest("analyze answers the stored analysis and the usage after it", async () => {
  const user = await createUser("client-analyze");
  const text = freshMessage("Analyse this");

  const response = await api(user.token, gateway.url).analyze({
    analysis_type: "caption",
    input: { kind: "text", text },
  });

  assert.ok("analysis" in response, "a text is analysed in the request");
  assert.equal(response.cached, false);
  assert.equal(response.analysis.analysis_type, "caption");
  assert.match(response.analysis.result.summary, new RegExp(text));
  assert.equal(response.usage.used, 1);
});

stackTest("chat answers the assistant's reply in a new conversation", async () => {
  const user = await createUser("client-chat");
  const message = freshMessage();

  const response = await api(user.token, gateway.url).chat({ message });

  assert.equal(response.reply.role, "assistant");
  assert.equal(response.reply.content, replyTo(message));
  assert.equal(response.reply.conversation_id, response.conversation_id);
  assert.equal(response.usage.used, 1);
});

stackTest("chatStream hands over pieces whose concatenation is the final reply", async () => {
  const user = await createUser("client-stream");
  const message = freshMessage();
  const deltas: string[] = [];

  const response = await api(user.token, gateway.url).chatStream({ message }, {
    onDelta: (text) => deltas.push(text),
  });

  assert.ok(deltas.length > 1, "the reply arrived in pieces");
  assert.equal(deltas.join(""), response.reply.content);
  assert.equal(response.reply.content, replyTo(message));
  assert.equal(response.cached, false);
  assert.equal(response.usage.used, 1);
});

stackTest(
  "a streamed reply that breaks off rejects with ai_unavailable after its first pieces",
  async () => {
    const user = await createUser("client-stream-break");
    const deltas: string[] = [];
    await withServer("break_stream", async () => {
      const error = await failure(
        api(user.token, gateway.url).chatStream({ message: freshMessage() }, {
          onDelta: (text) => deltas.push(text),
        }),
      );

      assert.equal(error.code, "ai_unavailable");
      assert.equal(error.status, 200, "the stream had begun");
      assert.ok(error.requestId);
      assert.equal(error.usage, undefined, "nothing was refunded: pieces had been delivered");
    });
    assert.ok(deltas.length >= 1);
    assert.equal(await usedUnits(user.id), 1);
  },
);

stackTest("aborting chatStream mid-reply rejects it with code aborted", async () => {
  const user = await createUser("client-stream-abort");
  const controller = new AbortController();
  await withServer("stall_stream", async () => {
    const error = await failure(
      api(user.token, gateway.url).chatStream({ message: freshMessage() }, {
        onDelta: () => controller.abort(),
        signal: controller.signal,
      }),
    );

    assert.equal(error.code, "aborted");
    assert.equal(error.status, 0);
  });
});

billingTest("billing.checkout answers a Checkout URL and billing.portal a Portal URL", async () => {
  const user = await createUser("client-billing");
  const client = api(user.token, gateway.url);

  const checkout = await client.billing.checkout("pro");
  const portal = await client.billing.portal();

  assert.ok(stripe.checkoutSessions().some((session) => session.url === checkout.url));
  assert.ok(stripe.portalSessions().some((session) => session.url === portal.url));
});

stackTest("a call without a session fails as unauthorized, with the request id", async () => {
  const error = await failure(api().profile.get());
  assert.equal(error.code, "unauthorized");
  assert.equal(error.status, 401);
  assert.match(error.requestId ?? "", /^[0-9a-f-]{36}$/);
});

stackTest(
  "bad arguments fail as validation_failed naming the field, and never leave the device",
  async () => {
    const user = await createUser("client-invalid");
    const client = api(user.token, gateway.url);
    const refusals = [
      [client.profile.update({ theme: "neon" } as unknown as Settings), "settings.theme"],
      [client.profile.update({ colour: "red" } as Settings), "settings.colour"],
      [client.history({ limit: 0 }), "limit"],
      [client.sync({ since: "" }), "since"],
      [client.chat({ message: "" }), "message"],
      [client.chatStream({ message: "x".repeat(8_001) }), "message"],
      [
        client.analyze({ analysis_type: "caption", input: { kind: "text", text: "" } }),
        "input.text",
      ],
      [client.billing.checkout("free" as "pro"), "plan"],
    ] as const;

    for (const [call, field] of refusals) {
      const error = await failure(call);
      assert.equal(error.code, "validation_failed");
      assert.equal(error.field, field);
      assert.equal(error.status, 0);
      assert.equal(error.requestId, null);
    }

    // A valid call after them: its log line is the first and only one this user caused.
    await client.profile.get();
    await waitFor(
      "the request's log line",
      () => Promise.resolve(loggedRequests(user.id).length > 0),
      10_000,
    );
    assert.deepEqual(loggedRequests(user.id), ["GET profile"]);
  },
);

stackTest("a spent quota fails as quota_exceeded with the usage numbers", async () => {
  const user = await createUser("client-402");
  await setUsed(user.id, 100);

  const error = await failure(
    api(user.token, gateway.url).analyze({
      analysis_type: "caption",
      input: { kind: "text", text: freshMessage() },
    }),
  );

  assert.equal(error.code, "quota_exceeded");
  assert.equal(error.status, 402);
  assert.ok(error.requestId);
  assert.deepEqual([error.usage?.used, error.usage?.quota], [100, 100]);
  assert.ok(Date.parse(error.usage!.resets_at) > Date.now());
});

stackTest("a request over the rate limit fails as rate_limited with retryAfter", async () => {
  await atStartOfWindow();
  const user = await createUser("client-429");
  const restore = await limitGeneral(user, 1);
  try {
    const client = api(user.token);
    await client.usage();

    const error = await failure(client.usage());

    assert.equal(error.code, "rate_limited");
    assert.equal(error.status, 429);
    assert.ok(error.retryAfter !== undefined && error.retryAfter >= 1);
  } finally {
    await restore();
  }
});

stackTest("a model failure fails as ai_unavailable, with the quota after the refund", async () => {
  const user = await createUser("client-503");
  await withServer("fail", async () => {
    const error = await failure(api(user.token, gateway.url).chat({ message: freshMessage() }));

    assert.equal(error.code, "ai_unavailable");
    assert.equal(error.status, 503);
    assert.ok(error.requestId);
    assert.equal(error.usage?.used, 0);
  });
});

stackTest("a backend that cannot be reached fails as network_error", async () => {
  const user = await createUser("client-offline");
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const closedPort = listener.addr.port;
  listener.close();

  const error = await failure(api(user.token, `http://127.0.0.1:${closedPort}`).profile.get());

  assert.equal(error.code, "network_error");
  assert.equal(error.status, 0);
  assert.equal(error.requestId, null);
});

stackTest("after profile.delete, profile.get fails as unauthorized", async () => {
  const user = await createUser("client-delete");
  const client = api(user.token);

  assert.deepEqual(await client.profile.delete(), { deleted: true });

  const error = await failure(client.profile.get());
  assert.equal(error.code, "unauthorized");
  assert.equal(error.status, 401);
});
