import assert from "node:assert/strict";
import { waitFor } from "../local/process.ts";
import { ChatResponse, ErrorEnvelope } from "../supabase/functions/_shared/contracts.ts";
import { fresh, modelStack } from "./ai_support.ts";
import { replyTo } from "./openai_server.ts";
import {
  appClient,
  atStartOfWindow,
  createUser,
  database,
  functionsGateway,
  invoke,
  stackTest,
  usedUnits,
} from "./support.ts";

/**
 * `chat` through the gateway with supabase-js, plain and as server-sent events, its model calls
 * going to a local OpenAI-compatible server. Every message carries a fresh uuid, so no run is
 * answered from what an earlier run left in the AI response cache.
 */

const { server, apiKey: API_KEY, gateway, logs, chat, chatStream, whileModel: whileServer } =
  await modelStack();
const sql = database();

const freshMessage = fresh;

async function messagesOf(userId: string) {
  const rows = await sql<{ conversation_id: string; role: string; content: string }[]>`
    select conversation_id, role, content from public.chat_messages
     where user_id = ${userId} order by created_at, id`;
  return [...rows];
}

stackTest(
  "a first message starts a conversation, both messages are stored, one unit taken",
  async () => {
    const user = await createUser("chat");
    const message = freshMessage();
    const calls = server.calls;

    const { status, body } = await chat(user.token, { message });

    assert.equal(status, 200);
    const response = ChatResponse.parse(body);
    assert.equal(response.cached, false);
    assert.equal(response.reply.role, "assistant");
    assert.equal(response.reply.content, replyTo(message));
    assert.equal(response.reply.conversation_id, response.conversation_id);
    assert.equal(response.reply.model, server.requests.at(-1).model);
    assert.equal(response.usage.used, 1);
    assert.equal(server.calls, calls + 1);
    assert.deepEqual(await messagesOf(user.id), [
      { conversation_id: response.conversation_id, role: "user", content: message },
      { conversation_id: response.conversation_id, role: "assistant", content: replyTo(message) },
    ]);
    assert.equal(await usedUnits(user.id), 1);
  },
);

stackTest("a follow-up sends the conversation so far to the model", async () => {
  const user = await createUser("chat-follow-up");
  const first = freshMessage("First");
  const { body: started } = await chat(user.token, { message: first });
  const second = freshMessage("Second");

  const { status, body } = await chat(user.token, {
    conversation_id: started.conversation_id,
    message: second,
  });

  assert.equal(status, 200);
  assert.equal(body.conversation_id, started.conversation_id);
  const sent = server.requests.at(-1).messages.filter((m: { role: string }) => m.role !== "system");
  assert.deepEqual(sent, [
    { role: "user", content: first },
    { role: "assistant", content: replyTo(first) },
    { role: "user", content: second },
  ]);
  assert.equal((await messagesOf(user.id)).length, 4);
  assert.equal(body.usage.used, 2);
});

stackTest(
  "another user's conversation_id is answered 404 not_found, uncharged and unanswered",
  async () => {
    const owner = await createUser("chat-owner");
    const { body: started } = await chat(owner.token, { message: freshMessage("Secret plans") });
    const intruder = await createUser("chat-intruder");
    const calls = server.calls;

    const { status, body } = await chat(intruder.token, {
      conversation_id: started.conversation_id,
      message: freshMessage("What did they say?"),
    });

    assert.equal(status, 404);
    assert.equal(body.error.code, "not_found");
    assert.doesNotMatch(JSON.stringify(body), /Secret plans/);
    assert.equal(server.calls, calls);
    assert.equal(await usedUnits(intruder.id), 0);
    assert.equal((await messagesOf(intruder.id)).length, 0);
    assert.equal((await messagesOf(owner.id)).length, 2);
  },
);

stackTest(
  "an identical chat is answered from the cache without a model call, at the plan's cache-hit cost",
  async () => {
    const user = await createUser("chat-cache");
    const message = freshMessage();
    const first = await chat(user.token, { message });
    assert.equal(first.status, 200);
    const calls = server.calls;

    const second = await chat(user.token, { message });

    assert.equal(second.status, 200);
    const response = ChatResponse.parse(second.body);
    assert.equal(response.cached, true);
    assert.equal(response.reply.content, first.body.reply.content);
    assert.notEqual(response.conversation_id, first.body.conversation_id);
    assert.equal(response.usage.used, 2, "the cached answer took the free plan's one unit");
    assert.equal(server.calls, calls, "the model was not called again");
    assert.equal((await messagesOf(user.id)).length, 4, "both exchanges are in the history");
  },
);

stackTest(
  "a streamed reply has the same text as the plain one and is stored and charged alike",
  async () => {
    const user = await createUser("chat-stream");
    const message = freshMessage();
    const plain = await chat(user.token, { message });
    // Another conversation, so the model, not the cache, answers the same message again.
    const { body: other } = await chat(user.token, { message: freshMessage("Earlier") });
    const calls = server.calls;

    const { status, events } = await chatStream(user.token, {
      conversation_id: other.conversation_id,
      message,
    });

    assert.equal(status, 200);
    const deltas = events.filter((e) => e.event === "delta");
    assert.ok(deltas.length > 1, "the reply arrived in pieces");
    const streamed = deltas.map((e) => e.data.text).join("");
    assert.equal(streamed, plain.body.reply.content);
    assert.equal(events.at(-1)!.event, "done");
    const done = ChatResponse.parse(events.at(-1)!.data);
    assert.equal(done.reply.content, streamed);
    assert.equal(done.cached, false);
    assert.equal(done.usage.used, 3);
    assert.equal(server.calls, calls + 1);
    assert.equal(server.requests.at(-1).stream, true);
    const stored = await messagesOf(user.id);
    assert.deepEqual(stored.slice(-2).map((m) => [m.role, m.content]), [
      ["user", message],
      ["assistant", streamed],
    ]);
    assert.equal(await usedUnits(user.id), 3);
  },
);

stackTest(
  "a streamed reply answered from the cache arrives whole, at the cache-hit cost",
  async () => {
    const user = await createUser("chat-stream-cache");
    const message = freshMessage();
    const plain = await chat(user.token, { message });

    const { status, events } = await chatStream(user.token, { message });

    assert.equal(status, 200);
    assert.deepEqual(events.map((e) => e.event), ["delta", "done"]);
    assert.equal(events[0].data.text, plain.body.reply.content);
    assert.equal(events[1].data.cached, true);
    assert.equal(await usedUnits(user.id), 2);
  },
);

stackTest(
  "a reply that breaks off after a delta reached the client keeps its charge and ends with an error event",
  async () => {
    const user = await createUser("chat-break");
    await whileServer("break_stream", async () => {
      const { status, events } = await chatStream(user.token, { message: freshMessage() });

      assert.equal(status, 200);
      assert.equal(events[0].event, "delta");
      const last = events.at(-1)!;
      assert.equal(last.event, "error");
      ErrorEnvelope.parse(last.data);
      assert.equal(last.data.error.code, "ai_unavailable");
      assert.equal(last.data.error.usage, undefined, "no refunded usage: nothing was refunded");
      assert.ok(
        logs.some((line) =>
          line.includes("failure after model output was delivered") &&
          line.includes(last.data.error.request_id)
        ),
        "the failure is logged with the request id",
      );
    });
    assert.equal(await usedUnits(user.id), 1);
    assert.equal((await messagesOf(user.id)).length, 0);
  },
);

stackTest(
  "a reply that stalls after a delta times out, keeps its charge and ends with an error event",
  async () => {
    const user = await createUser("chat-stall");
    await whileServer("stall_stream", async () => {
      const { status, events } = await chatStream(user.token, { message: freshMessage() });

      assert.equal(status, 200);
      assert.equal(events[0].event, "delta");
      assert.equal(events.at(-1)!.event, "error");
      assert.equal(events.at(-1)!.data.error.code, "ai_unavailable");
    });
    assert.equal(await usedUnits(user.id), 1);
    assert.equal((await messagesOf(user.id)).length, 0);
  },
);

stackTest(
  "a stream that breaks off before any delta is refunded and ends with an error event",
  async () => {
    const user = await createUser("chat-break-early");
    await whileServer("break_before_output", async () => {
      const { status, events } = await chatStream(user.token, { message: freshMessage() });

      assert.equal(status, 200);
      assert.deepEqual(events.map((e) => e.event), ["error"]);
      assert.equal(events[0].data.error.code, "ai_unavailable");
      assert.equal(events[0].data.error.usage.used, 0);
    });
    assert.equal(await usedUnits(user.id), 0);
  },
);

stackTest(
  "a streamed chat whose provider fails gets a 503 before any event, refunded",
  async () => {
    const user = await createUser("chat-stream-fail");
    await whileServer("fail", async () => {
      const { status, body } = await chatStream(user.token, { message: freshMessage() });

      assert.equal(status, 503);
      assert.equal(body.error.code, "ai_unavailable");
    });
    assert.equal(await usedUnits(user.id), 0);
  },
);

stackTest("a model failure gives the unit back and answers 503 ai_unavailable", async () => {
  const user = await createUser("chat-fail");
  const calls = server.calls;
  await whileServer("fail", async () => {
    const { status, body } = await chat(user.token, { message: freshMessage() });

    assert.equal(status, 503);
    assert.equal(body.error.code, "ai_unavailable");
    assert.doesNotMatch(JSON.stringify(body), /exploded/);
    assert.equal(body.error.usage.used, 0);
  });
  assert.equal(server.calls, calls + 2, "one call and one bounded retry");
  assert.equal(await usedUnits(user.id), 0);
  assert.equal((await messagesOf(user.id)).length, 0);
});

stackTest("a model that does not answer in time gives the unit back and answers 503", async () => {
  const user = await createUser("chat-timeout");
  await whileServer("hang", async () => {
    const { status, body } = await chat(user.token, { message: freshMessage() });

    assert.equal(status, 503);
    assert.equal(body.error.code, "ai_unavailable");
  });
  assert.equal(await usedUnits(user.id), 0);
  assert.equal((await messagesOf(user.id)).length, 0);
});

stackTest(
  "a user whose quota is spent gets 402 with the numbers, without a model call",
  async () => {
    const user = await createUser("chat-spent");
    await sql`update public.profiles set usage_count = 100 where id = ${user.id}`;
    const calls = server.calls;

    const { status, body } = await chat(user.token, { message: freshMessage() });

    assert.equal(status, 402);
    assert.equal(body.error.code, "quota_exceeded");
    assert.deepEqual([body.error.used, body.error.quota], [100, 100]);
    assert.ok(Date.parse(body.error.resets_at) > Date.now());
    assert.equal(server.calls, calls);
  },
);

stackTest("a chat without a signed-in user's token gets 401", async () => {
  const { status, body } = await chat(undefined, { message: freshMessage() });
  assert.equal(status, 401);
  assert.equal(body.error.code, "unauthorized");
});

stackTest("an empty message gets 400 naming message", async () => {
  const user = await createUser("chat-400");
  const { status, body } = await chat(user.token, { message: "" });
  assert.equal(status, 400);
  assert.equal(body.error.code, "validation_failed");
  assert.equal(body.error.field, "message");
});

stackTest("GET chat gets 405 with an Allow header", async () => {
  const user = await createUser("chat-405");
  const { status, body, headers } = await invoke(appClient(user.token, gateway.url), "chat", {
    method: "GET",
  });
  assert.equal(status, 405);
  assert.equal(body.error.code, "method_not_allowed");
  assert.equal(headers.get("allow"), "POST");
});

stackTest("a chat body over 5 MB gets 413 and nothing is charged", async () => {
  const user = await createUser("chat-413");
  const { status, body } = await chat(user.token, { message: "x".repeat(5_300_000) });
  assert.equal(status, 413);
  assert.equal(body.error.code, "payload_too_large");
  assert.equal(await usedUnits(user.id), 0);
});

stackTest("a free user's 21st ai request within a minute gets 429 with Retry-After", async () => {
  await atStartOfWindow();
  const user = await createUser("chat-429");
  // Invalid bodies are refused after the rate limit counted them, without a model call.
  for (let i = 0; i < 20; i++) {
    assert.equal((await chat(user.token, {})).status, 400);
  }

  const { status, body, headers } = await chat(user.token, { message: freshMessage() });

  assert.equal(status, 429);
  assert.equal(body.error.code, "rate_limited");
  assert.ok(Number(headers.get("retry-after")) >= 1);
});

stackTest("without a configured provider chat answers 503 and charges nothing", async () => {
  const unconfigured = await functionsGateway({ OPENAI_API_KEY: "" });
  try {
    const user = await createUser("chat-503");
    const { status, body } = await chat(user.token, { message: freshMessage() }, unconfigured.url);
    assert.equal(status, 503);
    assert.equal(body.error.code, "ai_unavailable");
    assert.equal(await usedUnits(user.id), 0);
  } finally {
    await unconfigured.close();
  }
});

stackTest(
  "neither answers nor logs carry the API key, and logs carry no message or reply",
  async () => {
    const user = await createUser("chat-secrets");
    const secret = freshMessage("my private message");
    const answered = await chat(user.token, { message: secret });
    const streamed = await chatStream(user.token, {
      conversation_id: answered.body.conversation_id,
      message: secret,
    });
    let failed = answered;
    await whileServer("fail", async () => {
      failed = await chat(user.token, { message: `${secret} again` });
    });
    assert.equal(answered.status, 200);
    assert.equal(streamed.events.at(-1)!.event, "done");
    assert.equal(failed.status, 503);
    const requestId = failed.headers.get("x-request-id")!;
    await waitFor(
      "the failed request's log lines",
      () =>
        Promise.resolve(
          logs.some((line) => line.includes(requestId) && line.includes('"request"')),
        ),
      5_000,
    );

    for (const body of [answered.body, streamed.events, failed.body]) {
      assert.ok(!JSON.stringify(body).includes(API_KEY));
    }
    assert.ok(logs.some((line) => line.includes("model call failed") && line.includes(requestId)));
    for (const line of logs) {
      assert.ok(!line.includes(API_KEY), `a log line carries the key: ${line}`);
      assert.ok(!line.includes("my private message"), `a log line carries the message: ${line}`);
      assert.ok(!line.includes("deterministic answer"), `a log line carries a reply: ${line}`);
    }
  },
);
