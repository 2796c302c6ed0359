import assert from "node:assert/strict";
import { waitFor } from "../local/process.ts";
import { AnalyzeResponse, ErrorEnvelope } from "../supabase/functions/_shared/contracts.ts";
import { modelStack } from "./ai_support.ts";
import {
  appClient,
  atStartOfWindow,
  changePlan,
  createUser,
  database,
  functionsGateway,
  invoke,
  localRedis,
  stackTest,
  upstash,
  usedUnits,
} from "./support.ts";

/**
 * `analyze` through the gateway with supabase-js, its model calls going to a local
 * OpenAI-compatible server. Every input carries a fresh uuid, so no run is answered from what an
 * earlier run left in the AI response cache.
 */

const { server, apiKey: API_KEY, gateway, logs, analyze, whileModel: whileServer } =
  await modelStack();
const sql = database();

const textRequest = (text = `Is this clear? ${crypto.randomUUID()}`) => ({
  analysis_type: "clarity",
  input: { kind: "text", text },
});

async function analysesOf(userId: string) {
  return await sql<{ id: string; cached: boolean; input_hash: string; result: unknown }[]>`
    select id, cached, input_hash, result from public.analyses
     where user_id = ${userId} order by created_at`;
}

stackTest(
  "an analysis of a text is answered by the model, stored and charged one unit",
  async () => {
    const user = await createUser("analyze");
    const request = textRequest();
    const callsBefore = server.calls;

    const { status, body } = await analyze(user.token, request);

    assert.equal(status, 200);
    const response = AnalyzeResponse.parse(body);
    assert.equal(response.cached, false);
    assert.equal(response.analysis.analysis_type, "clarity");
    assert.equal(response.analysis.input_kind, "text");
    assert.equal(response.analysis.model, server.requests.at(-1).model);
    assert.match(response.analysis.result.summary, /Is this clear\?/);
    assert.deepEqual([response.usage.used, response.usage.quota, response.usage.remaining], [
      1,
      100,
      99,
    ]);
    assert.equal(server.calls, callsBefore + 1);
    const sent = server.requests.at(-1);
    assert.equal(sent.response_format.type, "json_schema");
    assert.deepEqual(sent.messages.at(-1).content.at(-1), {
      type: "text",
      text: request.input.text,
    });

    const [stored] = await analysesOf(user.id);
    assert.equal(stored.id, response.analysis.id);
    assert.equal(stored.cached, false);
    assert.match(stored.input_hash, /^[0-9a-f]{64}$/);
    assert.deepEqual(stored.result, response.analysis.result);
    assert.equal(await usedUnits(user.id), 1);
    const activities = await sql`
    select 1 from public.activities
     where user_id = ${user.id} and kind = 'analysis'
       and detail ->> 'analysis_id' = ${response.analysis.id}`;
    assert.equal(activities.length, 1);
  },
);

stackTest("an image given as an https URL reaches the model as an image part", async () => {
  const user = await createUser("analyze-url");
  const url = `https://example.test/storage/v1/object/sign/photos/${crypto.randomUUID()}.png`;

  const { status, body } = await analyze(user.token, {
    analysis_type: "skin",
    input: { kind: "image_url", url },
  });

  assert.equal(status, 200);
  assert.equal(body.analysis.input_kind, "image_url");
  assert.deepEqual(server.requests.at(-1).messages.at(-1).content.at(-1), {
    type: "image_url",
    image_url: { url },
  });
});

stackTest("an image given as base64 data reaches the model as a data URL", async () => {
  const user = await createUser("analyze-b64");
  const data = btoa(`not really a png ${crypto.randomUUID()}`);

  const { status, body } = await analyze(user.token, {
    analysis_type: "skin",
    input: { kind: "image_base64", media_type: "image/png", data },
  });

  assert.equal(status, 200);
  assert.equal(body.analysis.input_kind, "image_base64");
  assert.deepEqual(server.requests.at(-1).messages.at(-1).content.at(-1), {
    type: "image_url",
    image_url: { url: `data:image/png;base64,${data}` },
  });
});

stackTest(
  "an identical second analysis is answered from the cache without a model call, at the plan's cache-hit cost",
  async () => {
    const user = await createUser("analyze-cache");
    const request = textRequest();
    const first = await analyze(user.token, request);
    assert.equal(first.status, 200);
    const callsAfterFirst = server.calls;

    const second = await analyze(user.token, request);

    assert.equal(second.status, 200);
    const response = AnalyzeResponse.parse(second.body);
    assert.equal(response.cached, true);
    assert.deepEqual(response.analysis.result, first.body.analysis.result);
    assert.equal(response.usage.used, 2, "the cached answer took the free plan's one unit");
    assert.equal(server.calls, callsAfterFirst, "the model was not called again");
    assert.equal(await usedUnits(user.id), 2);
    const stored = await analysesOf(user.id);
    assert.deepEqual(stored.map((row) => row.cached), [false, true]);
    assert.equal(stored[0].input_hash, stored[1].input_hash);
  },
);

stackTest(
  "when Redis no longer has the entry, the answer comes from Postgres and Redis gets it back",
  async () => {
    const user = await createUser("analyze-pg-cache");
    const request = textRequest();
    assert.equal((await analyze(user.token, request)).status, 200);
    const [{ key }] = await sql<{ key: string }[]>`
      select key from public.ai_response_cache
       where value -> 'answer' ->> 'summary' like ${`%${request.input.text}%`}`;
    const redisKey = `ai:v1:${key}`;
    assert.equal(await upstash().del(redisKey), 1, "the model's answer was in Redis");
    const calls = server.calls;

    const { status, body } = await analyze(user.token, request);

    assert.equal(status, 200);
    assert.equal(body.cached, true);
    assert.equal(server.calls, calls);
    assert.ok(await upstash().ttl(redisKey) > 0, "Redis holds the entry again, with a TTL");
  },
);

stackTest("with Redis stopped, an identical analysis is still answered from Postgres", async () => {
  const user = await createUser("analyze-no-redis");
  const request = textRequest();
  assert.equal((await analyze(user.token, request)).status, 200);
  const calls = server.calls;

  await localRedis.stop();
  try {
    const { status, body } = await analyze(user.token, request);

    assert.equal(status, 200);
    assert.equal(body.cached, true);
    assert.equal(body.usage.used, 2);
    assert.equal(server.calls, calls);
  } finally {
    await localRedis.start();
  }
});

stackTest("a model failure gives the unit back and answers 503 ai_unavailable", async () => {
  const user = await createUser("analyze-fail");
  const calls = server.calls;
  await whileServer("fail", async () => {
    const { status, body } = await analyze(user.token, textRequest());

    assert.equal(status, 503);
    ErrorEnvelope.parse(body);
    assert.equal(body.error.code, "ai_unavailable");
    assert.doesNotMatch(JSON.stringify(body), /exploded/, "the provider's message stays inside");
    assert.equal(body.error.usage.used, 0);
  });
  assert.equal(server.calls, calls + 2, "one call and one bounded retry");
  assert.equal(await usedUnits(user.id), 0);
  assert.equal((await analysesOf(user.id)).length, 0);
});

stackTest("a model that does not answer in time gives the unit back and answers 503", async () => {
  const user = await createUser("analyze-timeout");
  await whileServer("hang", async () => {
    const { status, body } = await analyze(user.token, textRequest());

    assert.equal(status, 503);
    assert.equal(body.error.code, "ai_unavailable");
  });
  assert.equal(await usedUnits(user.id), 0);
  assert.equal((await analysesOf(user.id)).length, 0);
});

stackTest("model output that is not a valid analysis is a failure and is refunded", async () => {
  const user = await createUser("analyze-invalid");
  await whileServer("invalid_json", async () => {
    const { status, body } = await analyze(user.token, textRequest());

    assert.equal(status, 503);
    assert.equal(body.error.code, "ai_unavailable");
  });
  assert.equal(await usedUnits(user.id), 0);
  assert.equal((await analysesOf(user.id)).length, 0);
});

stackTest(
  "a user whose quota is spent gets 402 with the numbers, without a model call",
  async () => {
    const user = await createUser("analyze-spent");
    await sql`update public.profiles set usage_count = 100 where id = ${user.id}`;
    const calls = server.calls;

    const { status, body } = await analyze(user.token, textRequest());

    assert.equal(status, 402);
    assert.equal(body.error.code, "quota_exceeded");
    assert.equal(body.error.used, 100);
    assert.equal(body.error.quota, 100);
    assert.ok(Date.parse(body.error.resets_at) > Date.now());
    assert.equal(server.calls, calls);
    assert.equal(await usedUnits(user.id), 100);
  },
);

stackTest("an analysis without a signed-in user's token gets 401", async () => {
  const { status, body } = await analyze(undefined, textRequest());
  assert.equal(status, 401);
  assert.equal(body.error.code, "unauthorized");
});

stackTest("an image URL that is not https gets 400 naming input.url", async () => {
  const user = await createUser("analyze-400");
  const { status, body } = await analyze(user.token, {
    analysis_type: "skin",
    input: { kind: "image_url", url: "http://example.test/photo.png" },
  });
  assert.equal(status, 400);
  assert.equal(body.error.code, "validation_failed");
  assert.equal(body.error.field, "input.url");
});

stackTest("GET analyze gets 405 with an Allow header", async () => {
  const user = await createUser("analyze-405");
  const { status, body, headers } = await invoke(appClient(user.token, gateway.url), "analyze", {
    method: "GET",
  });
  assert.equal(status, 405);
  assert.equal(body.error.code, "method_not_allowed");
  assert.equal(headers.get("allow"), "POST");
});

stackTest("an analysis body over 5 MB gets 413 and nothing is charged", async () => {
  const user = await createUser("analyze-413");
  const { status, body } = await analyze(user.token, {
    analysis_type: "skin",
    input: { kind: "image_base64", media_type: "image/png", data: "A".repeat(5_300_000) },
  });
  assert.equal(status, 413);
  assert.equal(body.error.code, "payload_too_large");
  assert.equal(await usedUnits(user.id), 0);
});

stackTest("a free user's 21st ai request within a minute gets 429 with Retry-After", async () => {
  await atStartOfWindow();
  const user = await createUser("analyze-429");
  // Invalid bodies are refused after the rate limit counted them, without a model call.
  for (let i = 0; i < 20; i++) {
    assert.equal((await analyze(user.token, {})).status, 400);
  }

  const { status, body, headers } = await analyze(user.token, textRequest());

  assert.equal(status, 429);
  assert.equal(body.error.code, "rate_limited");
  assert.ok(Number(headers.get("retry-after")) >= 1);
  assert.equal(await usedUnits(user.id), 0);
});

stackTest("without a configured provider analyze answers 503 and charges nothing", async () => {
  const unconfigured = await functionsGateway({ OPENAI_API_KEY: "" });
  try {
    const user = await createUser("analyze-503");
    const { status, body } = await analyze(user.token, textRequest(), unconfigured.url);
    assert.equal(status, 503);
    assert.equal(body.error.code, "ai_unavailable");
    assert.equal(await usedUnits(user.id), 0);
  } finally {
    await unconfigured.close();
  }
});

stackTest("neither answers nor logs carry the API key, and logs carry no prompt", async () => {
  const user = await createUser("analyze-secrets");
  const secretText = `my private text ${crypto.randomUUID()}`;
  const answered = await analyze(user.token, textRequest(secretText));
  let failed = answered;
  await whileServer("fail", async () => {
    failed = await analyze(user.token, textRequest(`${secretText} again`));
  });
  assert.equal(answered.status, 200);
  assert.equal(failed.status, 503);
  const requestId = failed.headers.get("x-request-id")!;
  await waitFor(
    "the failed request's log lines",
    () =>
      Promise.resolve(logs.some((line) => line.includes(requestId) && line.includes('"request"'))),
    5_000,
  );

  for (const response of [answered, failed]) {
    assert.ok(!JSON.stringify(response.body).includes(API_KEY));
    assert.ok(![...response.headers.values()].some((value) => value.includes(API_KEY)));
  }
  assert.ok(logs.some((line) => line.includes("model call failed") && line.includes(requestId)));
  for (const line of logs) {
    assert.ok(!line.includes(API_KEY), `a log line carries the key: ${line}`);
    assert.ok(!line.includes("my private text"), `a log line carries the prompt: ${line}`);
  }
});

stackTest(
  "200 concurrent analyses from one user with 50 units left: 50 answered, 150 get 402",
  async () => {
    const user = await createUser("analyze-burst");
    const planId = `test_ai_${crypto.randomUUID().slice(0, 8)}`;
    await sql`
      insert into public.plans
        (id, name, monthly_quota, ai_per_minute, general_per_minute, upload_per_minute)
      values (${planId}, 'AI burst test', 100, 10000, 10000, 10000)`;
    try {
      await sql`update public.profiles set usage_count = 50 where id = ${user.id}`;
      await changePlan(user.id, planId);
      const calls = server.calls;

      const outcomes = await Promise.all(
        Array.from(
          { length: 200 },
          (_, i) => analyze(user.token, textRequest(`burst ${i} ${planId}`)),
        ),
      );

      const statuses = outcomes.map((o) => o.status);
      assert.equal(statuses.filter((s) => s === 200).length, 50);
      assert.equal(statuses.filter((s) => s === 402).length, 150);
      const used = outcomes.filter((o) => o.status === 200).map((o) => o.body.usage.used);
      assert.deepEqual(
        used.sort((a, b) => a - b),
        Array.from({ length: 50 }, (_, i) => 51 + i),
        "each answered request took exactly one of the 50 units",
      );
      for (const refused of outcomes.filter((o) => o.status === 402)) {
        assert.deepEqual([refused.body.error.used, refused.body.error.quota], [100, 100]);
      }
      assert.equal(await usedUnits(user.id), 100);
      assert.equal(server.calls, calls + 50);
    } finally {
      await sql`delete from auth.users where id = ${user.id}`;
      await sql`delete from public.plans where id = ${planId}`;
    }
  },
);
