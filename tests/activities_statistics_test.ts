import assert from "node:assert/strict";
import { appClient, createUser, database, invoke, stackTest } from "./support.ts";

/** The user's own activity log (`activities`) and statistics (`statistics`). */

async function addActivities(userId: string, kinds: string[]) {
  const sql = database();
  try {
    await sql`
      insert into public.activities (user_id, kind, detail, created_at)
      select ${userId}, k.kind, jsonb_build_object('n', k.n), now() - k.n * interval '1 second'
        from unnest(${kinds}::text[]) with ordinality as k(kind, n)`;
  } finally {
    await sql.end();
  }
}

stackTest(
  "activities pages the caller's own activity log newest first and continues from its cursor",
  async () => {
    const user = await createUser("activities");
    const other = await createUser("activities-other");
    await addActivities(user.id, ["analysis", "chat", "purchase"]);
    await addActivities(other.id, ["analysis"]);
    const client = appClient(user.token);

    const first = await invoke(client, "activities?limit=2", { method: "GET" });
    assert.equal(first.status, 200);
    assert.deepEqual(first.body.items.map((item: { kind: string }) => item.kind), [
      "analysis",
      "chat",
    ]);
    assert.equal(first.body.has_more, true);
    assert.equal(first.headers.get("x-ratelimit-limit"), "200", "the general class of free");

    const rest = await invoke(
      client,
      `activities?limit=2&cursor=${encodeURIComponent(first.body.next_cursor)}`,
      { method: "GET" },
    );
    assert.equal(rest.status, 200);
    assert.deepEqual(rest.body.items.map((item: { kind: string }) => item.kind), ["purchase"]);
    assert.deepEqual(rest.body.items[0].detail, { n: 3 });
    assert.equal(rest.body.has_more, false);
    assert.equal(rest.body.next_cursor, null);

    const wrongCursor = await invoke(client, "activities?cursor=nonsense", { method: "GET" });
    assert.equal(wrongCursor.status, 400);
    assert.equal(wrongCursor.body.error.code, "validation_failed");
  },
);

stackTest(
  "statistics answers the caller's counts as of the last refresh, and when that was",
  async () => {
    const user = await createUser("statistics");
    const client = appClient(user.token);
    const before = await invoke(client, "statistics", { method: "GET" });
    assert.equal(before.status, 200);
    assert.equal(before.body.statistics, null, "an account newer than the last refresh");

    const sql = database();
    let refreshedAt: Date;
    try {
      await sql`
        insert into public.analyses (user_id, analysis_type, input_kind, result, model)
        values (${user.id}, 'caption', 'text', '{"summary":"s","scores":{},"findings":[],"recommendations":[]}', 'm')`;
      await sql`select public.refresh_user_statistics()`;
      [{ refreshed_at: refreshedAt }] = await sql`
        select refreshed_at from public.user_statistics_refresh`;
    } finally {
      await sql.end();
    }

    const after = await invoke(client, "statistics", { method: "GET" });
    assert.equal(after.status, 200);
    assert.equal(after.body.statistics.analyses_count, 1);
    assert.equal(after.body.statistics.chat_messages_count, 0);
    assert.equal(after.body.statistics.plan_id, "free");
    assert.equal(new Date(after.body.refreshed_at).getTime(), refreshedAt.getTime());
  },
);
