import assert from "node:assert/strict";
import { HistoryResponse } from "../supabase/functions/_shared/contracts.ts";
import { encodeCursor } from "../supabase/functions/_shared/cursor.ts";
import {
  addAnalyses,
  addMessages,
  appClient,
  atStartOfWindow,
  cacheProfile,
  createUser,
  database,
  expiredToken,
  functionsGateway,
  invoke,
  limitGeneral,
  stackTest,
  type TestUser,
} from "./support.ts";

/** `history`: the caller's analyses or chat messages, newest first, a page at a time. */

function history(user: TestUser, params: Record<string, string | number> = {}, url?: string) {
  const query = new URLSearchParams(
    Object.entries(params).map(([key, value]) => [key, String(value)]),
  );
  return invoke(appClient(user.token, url), `history?${query}`, { method: "GET" });
}

/** Every page from the first to the last, as the app scrolls. */
async function allPages(user: TestUser, params: Record<string, string | number>) {
  const pages: HistoryResponse[] = [];
  let cursor: string | null = null;
  do {
    const { status, body } = await history(user, cursor ? { ...params, cursor } : params);
    assert.equal(status, 200);
    const page = HistoryResponse.parse(body);
    pages.push(page);
    cursor = page.next_cursor;
  } while (cursor);
  return pages;
}

const secondsAgo = (n: number) => new Date(Date.now() - n * 1000);
const monthsAgo = (n: number) => {
  const at = new Date();
  at.setUTCMonth(at.getUTCMonth() - n, 15);
  return at;
};

/** Backdates the user's sign-up, and makes the months since have partitions of their own. */
async function signedUpMonthsAgo(user: TestUser, months: number) {
  const sql = database();
  try {
    await sql`update public.profiles set created_at = ${monthsAgo(months)} where id = ${user.id}`;
    await sql`select public.create_event_partitions_between(
                ${monthsAgo(months).toISOString().slice(0, 10)}::date, current_date)`;
  } finally {
    await sql.end();
  }
}

stackTest("history pages through the analyses newest first, without gaps or repeats", async () => {
  const user = await createUser("history-pages");
  const added = await addAnalyses(user.id, Array.from({ length: 25 }, (_, i) => secondsAgo(i)));
  const pages = await allPages(user, { limit: 10 });
  assert.deepEqual(pages.map((page) => page.items.length), [10, 10, 5]);
  assert.deepEqual(pages.map((page) => page.has_more), [true, true, false]);
  assert.deepEqual(
    pages.flatMap((page) => page.items.map((item) => item.id)),
    added.map((row) => row.id).reverse(),
  );
});

stackTest("history answers 20 items when no limit is given", async () => {
  const user = await createUser("history-default");
  await addAnalyses(user.id, Array.from({ length: 22 }, (_, i) => secondsAgo(i)));
  const { status, body } = await history(user);
  assert.equal(status, 200);
  assert.equal(body.type, "analyses");
  assert.equal(body.items.length, 20);
  assert.equal(body.has_more, true);
});

stackTest("a page is full even when the analyses are months apart", async () => {
  const user = await createUser("history-sparse");
  await signedUpMonthsAgo(user, 8);
  const recent = await addAnalyses(user.id, [secondsAgo(3), secondsAgo(2), secondsAgo(1)]);
  const old = await addAnalyses(user.id, [
    monthsAgo(5),
    new Date(monthsAgo(5).getTime() + 3600_000),
  ]);
  const older = await addAnalyses(user.id, [monthsAgo(6)]);

  const pages = await allPages(user, { limit: 5 });
  assert.deepEqual(pages.map((page) => page.items.length), [5, 1]);
  assert.deepEqual(
    pages.flatMap((page) => page.items.map((item) => item.id)),
    [...recent, ...old, ...older].toSorted((a, b) => b.created_at.localeCompare(a.created_at))
      .map((row) => row.id),
  );
});

stackTest("history of messages is newest first, and of one conversation with its id", async () => {
  const user = await createUser("history-messages");
  const first = crypto.randomUUID();
  const second = crypto.randomUUID();
  const inFirst = await addMessages(user.id, first, 4);
  const inSecond = await addMessages(user.id, second, 2);

  const all = await history(user, { type: "messages" });
  assert.equal(all.status, 200);
  const page = HistoryResponse.parse(all.body);
  assert.equal(page.type, "messages");
  assert.deepEqual(
    page.items.map((item) => item.id),
    [...inFirst, ...inSecond].toSorted((a, b) => b.created_at.localeCompare(a.created_at))
      .map((row) => row.id),
  );

  const one = await history(user, { type: "messages", conversation_id: second });
  assert.deepEqual(
    one.body.items.map((item: { id: string }) => item.id),
    inSecond.map((row) => row.id).reverse(),
  );
  assert.ok(
    one.body.items.every((item: { conversation_id: string }) => item.conversation_id === second),
  );
});

stackTest("history items carry only the columns the app shows", async () => {
  const user = await createUser("history-columns");
  await addAnalyses(user.id);
  await addMessages(user.id, crypto.randomUUID(), 1);
  const analyses = await history(user, { type: "analyses" });
  assert.deepEqual(
    Object.keys(analyses.body.items[0]).toSorted(),
    [
      "analysis_type",
      "cached",
      "created_at",
      "id",
      "input_kind",
      "input_path",
      "model",
      "result",
      "status",
    ],
  );
  const messages = await history(user, { type: "messages" });
  assert.deepEqual(
    Object.keys(messages.body.items[0]).toSorted(),
    ["content", "conversation_id", "created_at", "id", "model", "role"],
  );
});

stackTest("an invalid query is 400 naming the parameter", async () => {
  const user = await createUser("history-400");
  const cases: [Record<string, string | number>, string][] = [
    [{ limit: 0 }, "limit"],
    [{ limit: 101 }, "limit"],
    [{ limit: "ten" }, "limit"],
    [{ type: "photos" }, "type"],
    [{ page: 2 }, "page"],
    [{ type: "messages", conversation_id: "not-a-uuid" }, "conversation_id"],
    [{ type: "analyses", conversation_id: crypto.randomUUID() }, "conversation_id"],
  ];
  for (const [params, field] of cases) {
    const { status, body } = await history(user, params);
    assert.equal(status, 400, JSON.stringify(params));
    assert.equal(body.error.code, "validation_failed");
    assert.equal(body.error.field, field, JSON.stringify(params));
  }
});

stackTest("a malformed, altered or foreign cursor is 400 naming cursor", async () => {
  const user = await createUser("history-cursor");
  await addAnalyses(user.id, [secondsAgo(2), secondsAgo(1)]);
  const { body } = await history(user, { limit: 1 });
  const genuine: string = body.next_cursor;
  const position = { created_at: "2026-01-01T00:00:00.000000Z", id: crypto.randomUUID() };
  const altered = genuine.slice(0, 10) + (genuine[10] === "A" ? "B" : "A") + genuine.slice(11);
  const cursors = [
    "not a cursor",
    altered,
    btoa(JSON.stringify({ v: 1, k: "analyses", t: "yesterday", i: position.id })),
    btoa(JSON.stringify({ v: 2, k: "analyses", t: position.created_at, i: position.id })),
    encodeCursor("messages", position),
    encodeCursor("sync", position),
  ];
  for (const cursor of cursors) {
    const refused = await history(user, { limit: 1, cursor });
    assert.equal(refused.status, 400, cursor);
    assert.equal(refused.body.error.code, "validation_failed");
    assert.equal(refused.body.error.field, "cursor");
  }
  assert.equal((await history(user, { limit: 1, cursor: genuine })).status, 200);
});

stackTest("history without a token, or with an expired one, is 401", async () => {
  const user = await createUser("history-401");
  const anonymous = await invoke(appClient(), "history", { method: "GET" });
  assert.equal(anonymous.status, 401);
  const expired = await invoke(appClient(await expiredToken(user)), "history", { method: "GET" });
  assert.equal(expired.status, 401);
  assert.equal(expired.body.error.code, "unauthorized");
});

stackTest("POST history is 405 with an Allow header", async () => {
  const user = await createUser("history-405");
  const { status, body, headers } = await invoke(appClient(user.token), "history", { body: {} });
  assert.equal(status, 405);
  assert.equal(body.error.code, "method_not_allowed");
  assert.equal(headers.get("allow"), "GET");
});

stackTest("history counts against the general limit: 429 once it is spent", async () => {
  const user = await createUser("history-429");
  const restore = await limitGeneral(user, 2);
  try {
    await atStartOfWindow(10);
    assert.equal((await history(user)).status, 200);
    assert.equal((await history(user)).status, 200);
    const refused = await history(user);
    assert.equal(refused.status, 429);
    assert.equal(refused.body.error.code, "rate_limited");
    assert.ok(Number(refused.headers.get("retry-after")) >= 1);
  } finally {
    await restore();
  }
});

stackTest("with the database unreachable, history is 503 unavailable", async () => {
  const user = await createUser("history-503");
  await cacheProfile(user.id);
  const gateway = await functionsGateway({
    SUPABASE_DB_URL: "postgresql://postgres:postgres@127.0.0.1:1/postgres",
  });
  try {
    const { status, body } = await history(user, {}, gateway.url);
    assert.equal(status, 503);
    assert.equal(body.error.code, "unavailable");
  } finally {
    await gateway.close();
  }
});
