import assert from "node:assert/strict";
import { AnalyzeResponse, ChatResponse } from "../supabase/functions/_shared/contracts.ts";
import { fresh, modelStack } from "./ai_support.ts";
import { createUser, database, stackTest, type TestUser, usedUnits } from "./support.ts";

/**
 * The charge follows the value delivered: model output that reached the client is charged
 * whatever fails afterwards; a refund happens only when nothing reached it; and nothing the
 * client sends can make the model work for a request that was not charged first.
 */

const ai = await modelStack();
const sql = database();

const NUL = "\u0000";
const LONE_SURROGATE = "\ud800";

/** Makes every insert of `user`'s rows into `table` fail in Postgres, as a broken disk would. */
async function failingInserts(table: "analyses" | "chat_messages", user: TestUser) {
  const name = `fail_${crypto.randomUUID().replaceAll("-", "")}`;
  await sql.unsafe(`
    create function public.${name}() returns trigger language plpgsql as $$
    begin
      raise exception 'storage refused on purpose';
    end $$;
    create trigger ${name} before insert on public.${table}
      for each row when (new.user_id = '${user.id}') execute function public.${name}();`);
  return async () => {
    await sql.unsafe(`drop trigger ${name} on public.${table}; drop function public.${name}();`);
  };
}

for (
  const [field, body] of [
    ["analysis_type", { analysis_type: `x${NUL}`, input: { kind: "text", text: fresh() } }],
    ["input.text", {
      analysis_type: "clarity",
      input: { kind: "text", text: `${fresh()}${LONE_SURROGATE}` },
    }],
    ["input.url", {
      analysis_type: "clarity",
      input: { kind: "image_url", url: `https://example.test/${NUL}.png` },
    }],
  ] as const
) {
  stackTest(
    `analyze refuses U+0000 or a lone surrogate in ${field} with 400 naming it, before any charge or model call`,
    async () => {
      const user = await createUser("money-door");
      const calls = ai.server.calls;

      const { status, body: answer } = await ai.analyze(user.token, body);

      assert.equal(status, 400);
      assert.equal(answer.error.code, "validation_failed");
      assert.equal(answer.error.field, field);
      assert.ok(answer.error.request_id);
      assert.equal(ai.server.calls, calls, "the model was not called");
      assert.equal(await usedUnits(user.id), 0);
    },
  );
}

stackTest(
  "chat refuses U+0000 in the message, plain or streamed, before any charge or model call",
  async () => {
    const user = await createUser("money-door-chat");
    const calls = ai.server.calls;

    const plain = await ai.chat(user.token, { message: `essay 1${NUL}` });
    const streamed = await ai.chatStream(user.token, { message: `essay 1${NUL}` });

    for (const { status, body } of [plain, streamed]) {
      assert.equal(status, 400);
      assert.equal(body.error.code, "validation_failed");
      assert.equal(body.error.field, "message");
    }
    assert.equal(ai.server.calls, calls);
    assert.equal(await usedUnits(user.id), 0);
  },
);

stackTest(
  "model output Postgres could not store as it is is stored with U+FFFD and charged",
  async () => {
    const user = await createUser("money-unstorable");
    await ai.whileModel("unstorable_output", async () => {
      const analysis = await ai.analyze(user.token, {
        analysis_type: "clarity",
        input: { kind: "text", text: fresh() },
      });
      const reply = await ai.chat(user.token, { message: fresh() });

      assert.equal(analysis.status, 200);
      const analysed = AnalyzeResponse.parse(analysis.body).analysis.result;
      assert.match(analysed.summary, /\ufffd\ufffd$/);
      assert.deepEqual(Object.keys(analysed.scores), ["nul\ufffd"]);
      assert.equal(reply.status, 200);
      assert.match(ChatResponse.parse(reply.body).reply.content, /\ufffd\ufffd$/);
    });
    assert.equal(await usedUnits(user.id), 2);
    const [{ count }] = await sql<{ count: number }[]>`
      select (select count(*) from public.analyses where user_id = ${user.id})::int
           + (select count(*) from public.chat_messages where user_id = ${user.id})::int as count`;
    assert.equal(count, 3, "the analysis and both messages are stored");
  },
);

stackTest(
  "an analysis the model answered is delivered and charged even when storing it fails, and the failure is logged",
  async () => {
    const user = await createUser("money-store-fails");
    const restore = await failingInserts("analyses", user);
    try {
      const calls = ai.server.calls;

      const { status, body, headers } = await ai.analyze(user.token, {
        analysis_type: "clarity",
        input: { kind: "text", text: fresh("Keep me") },
      });

      assert.equal(status, 200);
      const response = AnalyzeResponse.parse(body);
      assert.match(response.analysis.result.summary, /Keep me/);
      assert.equal(response.usage.used, 1);
      assert.equal(ai.server.calls, calls + 1);
      const requestId = headers.get("x-request-id")!;
      assert.ok(
        ai.logs.some((line) =>
          line.includes("failure after model output was delivered") && line.includes(requestId)
        ),
        "the storage failure is logged with the request id",
      );
    } finally {
      await restore();
    }
    assert.equal(await usedUnits(user.id), 1);
  },
);

stackTest(
  "a chat reply is delivered and charged even when storing it fails, plain and streamed",
  async () => {
    const user = await createUser("money-chat-store-fails");
    const restore = await failingInserts("chat_messages", user);
    try {
      const plain = await ai.chat(user.token, { message: fresh() });
      const streamed = await ai.chatStream(user.token, { message: fresh() });

      assert.equal(plain.status, 200);
      assert.ok(ChatResponse.parse(plain.body).reply.content.length > 0);
      assert.equal(streamed.status, 200);
      assert.equal(streamed.events.at(-1)!.event, "done");
      const done = ChatResponse.parse(streamed.events.at(-1)!.data);
      assert.equal(
        done.reply.content,
        streamed.events.filter((e) => e.event === "delta").map((e) => e.data.text).join(""),
      );
    } finally {
      await restore();
    }
    assert.equal(await usedUnits(user.id), 2);
  },
);

stackTest(
  "a model failure before any output refunds exactly once, for analyze and plain chat",
  async () => {
    const user = await createUser("money-refund");
    await ai.whileModel("fail", async () => {
      const analysis = await ai.analyze(user.token, {
        analysis_type: "clarity",
        input: { kind: "text", text: fresh() },
      });
      const reply = await ai.chat(user.token, { message: fresh() });

      for (const { status, body } of [analysis, reply]) {
        assert.equal(status, 503);
        assert.equal(body.error.code, "ai_unavailable");
        assert.equal(body.error.usage.used, 0);
      }
    });
    assert.equal(await usedUnits(user.id), 0);
  },
);

stackTest(
  "every model call made for a user was charged first: calls never outnumber units charged",
  async () => {
    const user = await createUser("money-ledger");
    const calls = ai.server.calls;
    for (const text of [fresh(), fresh(), fresh()]) {
      assert.equal((await ai.chat(user.token, { message: text })).status, 200);
    }
    assert.equal((await ai.chatStream(user.token, { message: fresh() })).status, 200);
    assert.equal(ai.server.calls - calls, 4);
    assert.equal(await usedUnits(user.id), 4);
  },
);
