import assert from "node:assert/strict";
import { encodeCursor } from "../supabase/functions/_shared/cursor.ts";
import {
  addAnalyses,
  addMessages,
  appClient,
  createUser,
  database,
  invoke,
  stackTest,
} from "./support.ts";

/**
 * One user's token never reaches another user's account through `profile`, `usage`, `history`
 * or `sync`: whatever B sends, B sees and changes only B. A has settings, usage, analyses and a
 * conversation; B has none.
 */

const alice = await createUser("isolation-a");
const bob = await createUser("isolation-b");
const conversation = crypto.randomUUID();
const aliceAnalyses = await addAnalyses(alice.id, [new Date(), new Date()]);
const aliceMessages = await addMessages(alice.id, conversation, 2);
await invoke(appClient(alice.token), "profile", {
  method: "PATCH",
  body: { settings: { theme: "dark", locale: "fr" } },
});
{
  const sql = database();
  try {
    await sql`select public.increment_usage_if_allowed(${alice.id}, 7)`;
  } finally {
    await sql.end();
  }
}

const asBob = (name: string, options: Parameters<typeof invoke>[2] = { method: "GET" }) =>
  invoke(appClient(bob.token), name, options);

async function aliceRow() {
  const sql = database();
  try {
    const [row] = await sql`
      select plan_id, usage_count, settings, stripe_customer_id, stripe_subscription_id,
             subscription_status, period_start
        from public.profiles where id = ${alice.id}`;
    return { ...row };
  } finally {
    await sql.end();
  }
}

const aliceIds = new Set([...aliceAnalyses, ...aliceMessages].map((row) => row.id));
const noneOfAlice = (items: { id: string }[]) =>
  assert.ok(items.every((item) => !aliceIds.has(item.id)), "an item of A's reached B");

stackTest("B's profile is B's own", async () => {
  const { status, body } = await asBob("profile");
  assert.equal(status, 200);
  assert.equal(body.id, bob.id);
  assert.equal(body.email, bob.email);
  assert.deepEqual(body.settings, {});
});

stackTest(
  "B's PATCH cannot name A, nor touch plan, usage or Stripe fields: 400 naming the key",
  async () => {
    const before = await aliceRow();
    const attempts: [Record<string, unknown>, string][] = [
      [{ id: alice.id, settings: { theme: "light" } }, "id"],
      [{ user_id: alice.id, settings: { theme: "light" } }, "user_id"],
      [{ plan_id: "team", settings: {} }, "plan_id"],
      [{ usage_count: 0, settings: {} }, "usage_count"],
      [{ period_start: "2000-01-01", settings: {} }, "period_start"],
      [{ stripe_customer_id: "cus_x", settings: {} }, "stripe_customer_id"],
      [{ stripe_subscription_id: "sub_x", settings: {} }, "stripe_subscription_id"],
      [{ subscription_status: "active", settings: {} }, "subscription_status"],
      [{ settings: { theme: "light", plan_id: "team" } }, "settings.plan_id"],
    ];
    for (const [body, field] of attempts) {
      const refused = await asBob("profile", { method: "PATCH", body });
      assert.equal(refused.status, 400, field);
      assert.equal(refused.body.error.code, "validation_failed");
      assert.equal(refused.body.error.field, field);
    }
    assert.deepEqual(await aliceRow(), before);
    assert.equal((await asBob("profile")).body.plan.id, "free");
  },
);

stackTest("B's usage shows B's numbers, not A's", async () => {
  const { status, body } = await asBob("usage");
  assert.equal(status, 200);
  assert.equal(body.usage.used, 0);
});

stackTest(
  "B's history holds none of A's analyses or messages, even given A's conversation",
  async () => {
    for (
      const query of [
        "history",
        "history?type=messages",
        `history?type=messages&conversation_id=${conversation}`,
      ]
    ) {
      const { status, body } = await asBob(query);
      assert.equal(status, 200, query);
      assert.deepEqual(body.items, [], query);
      assert.equal(body.has_more, false, query);
    }
  },
);

stackTest("a cursor pointing into A's history still pages only through B's", async () => {
  const [newest] = aliceAnalyses.toReversed();
  const cursor = encodeCursor("analyses", newest);
  const { status, body } = await asBob(`history?cursor=${cursor}`);
  assert.equal(status, 200);
  noneOfAlice(body.items);
});

stackTest("B's sync holds none of A's rows, from no cursor or from one of A's", async () => {
  const fresh = await asBob("sync");
  assert.equal(fresh.status, 200);
  assert.equal(fresh.body.profile.id, bob.id);
  assert.deepEqual([fresh.body.analyses, fresh.body.messages], [[], []]);

  const alicesSync = await invoke(appClient(alice.token), "sync", { method: "GET" });
  assert.equal(alicesSync.body.analyses.length, 2, "A does see her own");
  const early = encodeCursor("sync", {
    created_at: "2000-01-01T00:00:00.000000Z",
    id: "00000000-0000-0000-0000-000000000000",
  });
  for (const since of [alicesSync.body.cursor, early]) {
    const { status, body } = await asBob(`sync?since=${since}`);
    assert.equal(status, 200);
    noneOfAlice([...body.analyses, ...body.messages]);
    assert.equal(body.profile.id, bob.id);
    assert.equal(body.usage.used, 0);
  }
});

stackTest("A's ETag is no use to B: B's conditional sync answers B's own data", async () => {
  const alicesSync = await invoke(appClient(alice.token), "sync", { method: "GET" });
  const etag = alicesSync.headers.get("etag")!;
  const { status, body } = await asBob("sync", {
    method: "GET",
    headers: { "if-none-match": etag },
  });
  assert.equal(status, 200);
  assert.equal(body.profile.id, bob.id);
});

stackTest("another user deleting their account leaves A's account whole", async () => {
  const carol = await createUser("isolation-c");
  await addAnalyses(carol.id);
  const before = await aliceRow();
  const { status } = await invoke(appClient(carol.token), "profile", { method: "DELETE" });
  assert.equal(status, 200);
  assert.deepEqual(await aliceRow(), before);
  const { body } = await invoke(appClient(alice.token), "history", { method: "GET" });
  assert.equal(body.items.length, 2);
});
