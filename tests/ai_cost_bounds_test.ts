import assert from "node:assert/strict";
import { fresh, modelStack } from "./ai_support.ts";
import {
  addMessages,
  changePlan,
  createUser,
  database,
  ownPlan,
  stackTest,
  usedUnits,
} from "./support.ts";

/** What one metered request may cost is the plan's to say, never the client's. */

const ai = await modelStack();
const sql = database();
const textAnalysis = () => ({ analysis_type: "clarity", input: { kind: "text", text: fresh() } });

stackTest(
  "every model call carries the plan's output-token cap: 800 on free, 2,000 on pro",
  async () => {
    const user = await createUser("bounds-tokens");
    const sent = () => ai.server.requests.at(-1).max_completion_tokens;

    assert.equal((await ai.analyze(user.token, textAnalysis())).status, 200);
    assert.equal(sent(), 800);
    assert.equal((await ai.chat(user.token, { message: fresh() })).status, 200);
    assert.equal(sent(), 800);
    await changePlan(user.id, "pro");
    assert.equal((await ai.chatStream(user.token, { message: fresh() })).status, 200);
    assert.equal(sent(), 2000);
  },
);

stackTest("a client cannot ask for more output tokens: the field is refused", async () => {
  const user = await createUser("bounds-client");
  const calls = ai.server.calls;

  const { status, body } = await ai.chat(user.token, { message: fresh(), max_tokens: 100_000 });

  assert.equal(status, 400);
  assert.equal(body.error.field, "max_tokens");
  assert.equal(ai.server.calls, calls);
});

stackTest(
  "chat sends only the newest earlier messages that fit the plan's character budget",
  async () => {
    const user = await createUser("bounds-history");
    const conversation = crypto.randomUUID();
    await addMessages(user.id, conversation, 20);
    const message = fresh("Next");
    // 'message 20' and 'message 19' are 10 characters each; a third would not fit.
    const restore = await ownPlan(user, { chat_history_chars: message.length + 25 });
    try {
      const { status } = await ai.chat(user.token, { conversation_id: conversation, message });

      assert.equal(status, 200);
      const sent = ai.server.requests.at(-1).messages;
      assert.deepEqual(sent.slice(1).map((m: { content: string }) => m.content), [
        "message 19",
        "message 20",
        message,
      ]);
    } finally {
      await restore();
    }
  },
);

stackTest(
  "with a cache-hit cost of 0 a cached answer is free and stores nothing",
  async () => {
    const user = await createUser("bounds-free-hits");
    const restore = await ownPlan(user, { cache_hit_cost: 0 });
    try {
      const analysis = textAnalysis();
      const message = fresh();
      assert.equal((await ai.analyze(user.token, analysis)).status, 200);
      assert.equal((await ai.chat(user.token, { message })).status, 200);

      const again = await ai.analyze(user.token, analysis);
      const replied = await ai.chat(user.token, { message });

      assert.equal(again.body.cached, true);
      assert.equal(again.body.usage.used, 2);
      assert.equal(replied.body.cached, true);
      const [{ analyses, messages, activities }] = await sql<
        { analyses: number; messages: number; activities: number }[]
      >`
        select (select count(*) from public.analyses where user_id = ${user.id})::int as analyses,
               (select count(*) from public.chat_messages where user_id = ${user.id})::int
                 as messages,
               (select count(*) from public.activities where user_id = ${user.id})::int
                 as activities`;
      assert.deepEqual([analyses, messages, activities], [1, 2, 2]);
    } finally {
      await restore();
    }
    assert.equal(await usedUnits(user.id), 2);
  },
);

stackTest("a cache hit with the quota spent is refused 402 like any metered request", async () => {
  const user = await createUser("bounds-hit-quota");
  const restore = await ownPlan(user, { monthly_quota: 1 });
  try {
    const analysis = textAnalysis();
    assert.equal((await ai.analyze(user.token, analysis)).status, 200);

    const { status, body } = await ai.analyze(user.token, analysis);

    assert.equal(status, 402);
    assert.equal(body.error.code, "quota_exceeded");
    assert.equal(body.error.used, 1);
  } finally {
    await restore();
  }
});
