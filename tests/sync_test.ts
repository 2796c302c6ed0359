import assert from "node:assert/strict";
import { waitFor } from "../local/process.ts";
import { SyncResponse } from "../supabase/functions/_shared/contracts.ts";
import { encodeCursor } from "../supabase/functions/_shared/cursor.ts";
import {
  addAnalyses,
  addMessages,
  appClient,
  atStartOfWindow,
  cacheProfile,
  changePlan,
  createUser,
  database,
  expiredToken,
  functionsGateway,
  invoke,
  type Invoked,
  limitGeneral,
  stackTest,
  type TestUser,
} from "./support.ts";

/** `sync`: what changed since the app last asked, answered 304 when nothing did. */

function sync(
  user: TestUser,
  params: Record<string, string> = {},
  headers: Record<string, string> = {},
  url?: string,
): Promise<Invoked> {
  const query = new URLSearchParams(params);
  return invoke(appClient(user.token, url), `sync?${query}`, { method: "GET", headers });
}

/** A sync that must answer 200, parsed. */
async function synced(user: TestUser, since?: string) {
  const response = await sync(user, since ? { since } : {});
  assert.equal(response.status, 200);
  return { ...SyncResponse.parse(response.body), etag: response.headers.get("etag")! };
}

async function sql<T>(work: (db: ReturnType<typeof database>) => Promise<T>): Promise<T> {
  const db = database();
  try {
    return await work(db);
  } finally {
    await db.end();
  }
}

stackTest(
  "sync without a cursor returns the newest rows, the profile, usage and a cursor",
  async () => {
    const user = await createUser("sync-first");
    const analyses = await addAnalyses(user.id, [new Date(), new Date()]);
    const messages = await addMessages(user.id, crypto.randomUUID(), 2);

    const first = await synced(user);
    assert.deepEqual(first.analyses.map((a) => a.id), analyses.map((a) => a.id).reverse());
    assert.deepEqual(first.messages.map((m) => m.id), messages.map((m) => m.id).reverse());
    assert.equal(first.profile.id, user.id);
    assert.equal(first.profile.email, user.email);
    assert.equal(first.profile.plan.id, "free");
    assert.deepEqual(first.usage.used, 0);
    assert.equal(first.next_sync_in_s, 1800, "never active");
    assert.match(first.etag, /^"[A-Za-z0-9_-]+"$/);
  },
);

stackTest("sync with its own cursor and the ETag it gave answers 304 with no body", async () => {
  const user = await createUser("sync-304");
  await addAnalyses(user.id);
  const first = await synced(user);
  const caughtUp = await synced(user, first.cursor);
  assert.deepEqual([caughtUp.analyses, caughtUp.messages], [[], []]);
  assert.equal(caughtUp.cursor, first.cursor, "nothing new, so the cursor stays");

  const again = await sync(user, { since: first.cursor }, { "if-none-match": caughtUp.etag });
  assert.equal(again.status, 304);
  assert.equal(again.body, "");
  assert.equal(again.headers.get("etag"), caughtUp.etag);
  const weak = await sync(user, { since: first.cursor }, { "if-none-match": `W/${caughtUp.etag}` });
  assert.equal(weak.status, 304);
});

stackTest(
  "after a new analysis, the same conditional sync answers 200 with just that analysis",
  async () => {
    const user = await createUser("sync-change");
    await addAnalyses(user.id);
    const first = await synced(user);
    const caughtUp = await synced(user, first.cursor);

    const [added] = await addAnalyses(user.id);
    const changed = await sync(user, { since: first.cursor }, { "if-none-match": caughtUp.etag });
    assert.equal(changed.status, 200);
    const body = SyncResponse.parse(changed.body);
    assert.deepEqual(body.analyses.map((a) => a.id), [added.id]);
    assert.deepEqual(body.messages, []);
    assert.notEqual(body.cursor, first.cursor);
    assert.notEqual(changed.headers.get("etag"), caughtUp.etag);

    const after = await synced(user, body.cursor);
    assert.deepEqual([after.analyses, after.messages], [[], []]);
  },
);

stackTest("the 304 answer reads no event table: it comes while they are locked", async () => {
  const user = await createUser("sync-no-read");
  await addAnalyses(user.id);
  await addMessages(user.id, crypto.randomUUID(), 2);
  const { cursor } = await synced(user);
  const { etag } = await synced(user, cursor);
  const db = database();
  const locker = await db.reserve();
  try {
    await locker`begin`;
    // No reader gets past this lock until the transaction ends.
    await locker`lock table public.analyses, public.chat_messages in access exclusive mode`;
    const conditional = await sync(user, { since: cursor }, { "if-none-match": etag });
    assert.equal(conditional.status, 304);

    // The control: the same request without If-None-Match reads them, so it waits on the lock.
    const unconditional = sync(user, { since: cursor });
    await waitFor("the unconditional sync to wait on the lock", async () => {
      const [{ waiting }] = await db<{ waiting: number }[]>`
        select count(*)::int as waiting from pg_locks
         where not granted
           and relation in ('public.analyses'::regclass, 'public.chat_messages'::regclass)`;
      return waiting > 0;
    }, 4_000);
    await locker`commit`;
    assert.equal((await unconditional).status, 200);
  } finally {
    await locker`rollback`.catch(() => {});
    locker.release();
    await db.end();
  }
});

stackTest("the ETag changes with everything the answer shows", async () => {
  const user = await createUser("sync-etag");
  // Active just now: the activity stamp a request leaves after its response (the metrics flush)
  // then moves nothing the answer shows, so each change below is the only one between two polls.
  await sql((db) => db`update public.profiles set last_active_at = now() where id = ${user.id}`);
  const [analysis] = await addAnalyses(user.id);
  const { cursor } = await synced(user);
  const changes: [string, () => Promise<unknown>][] = [
    ["a new message", () => addMessages(user.id, crypto.randomUUID(), 2)],
    [
      "a deleted analysis",
      () => sql((db) => db`delete from public.analyses where id = ${analysis.id}`),
    ],
    ["a settings change", () =>
      invoke(appClient(user.token), "profile", {
        method: "PATCH",
        body: { settings: { theme: "dark" } },
      })],
    [
      "a unit of usage",
      () => sql((db) => db`select public.increment_usage_if_allowed(${user.id})`),
    ],
    ["a plan change", () => changePlan(user.id, "pro")],
  ];
  let etag = (await synced(user, cursor)).etag;
  for (const [change, make] of changes) {
    await make();
    const response = await sync(user, { since: cursor }, { "if-none-match": etag });
    assert.equal(response.status, 200, change);
    const next = response.headers.get("etag")!;
    assert.notEqual(next, etag, change);
    etag = next;
    assert.equal(
      (await sync(user, { since: cursor }, { "if-none-match": etag })).status,
      304,
      change,
    );
  }
  const last = await synced(user, cursor);
  assert.equal(last.profile.plan.id, "pro");
  assert.deepEqual(last.profile.settings, { theme: "dark" });
  assert.equal(last.usage.used, 1);
  assert.equal(last.messages.length, 2);
});

stackTest(
  "next_sync_in_s is 30 s after activity in the last hour, 5 min in the last day, 30 min otherwise",
  async () => {
    const user = await createUser("sync-interval");
    for (
      const [lastActive, expected] of [
        ["10 minutes", 30],
        ["5 hours", 300],
        ["3 days", 1800],
      ] as const
    ) {
      await sql((db) =>
        db`update public.profiles set last_active_at = now() - ${lastActive}::interval
          where id = ${user.id}`
      );
      assert.equal((await synced(user)).next_sync_in_s, expected, lastActive);
    }
  },
);

stackTest(
  "catching up on more than a batch: the oldest 100 first, then the rest at once",
  async () => {
    const user = await createUser("sync-batch");
    const start = await synced(user);
    // One statement: all 130 share created_at, so only the id orders them.
    const added = await addAnalyses(user.id, Array.from({ length: 130 }, () => new Date()));

    const first = await synced(user, start.cursor);
    assert.equal(first.analyses.length, 100);
    assert.equal(first.next_sync_in_s, 1, "more is waiting");
    const rest = await synced(user, first.cursor);
    assert.equal(rest.analyses.length, 30);
    assert.equal(rest.next_sync_in_s, 1800);

    const ids = [...first.analyses, ...rest.analyses].map((a) => a.id);
    assert.equal(new Set(ids).size, 130);
    assert.deepEqual(ids.toSorted(), added.map((a) => a.id).toSorted());
  },
);

stackTest("a malformed or foreign since, or an unknown parameter, is 400 naming it", async () => {
  const user = await createUser("sync-400");
  const position = { created_at: "2026-01-01T00:00:00.000000Z", id: crypto.randomUUID() };
  const cases: [Record<string, string>, string][] = [
    [{ since: "garbage" }, "since"],
    [{ since: encodeCursor("analyses", position) }, "since"],
    [{ since: "" }, "since"],
    [{ cursor: encodeCursor("sync", position) }, "cursor"],
  ];
  for (const [params, field] of cases) {
    const { status, body } = await sync(user, params);
    assert.equal(status, 400, JSON.stringify(params));
    assert.equal(body.error.code, "validation_failed");
    assert.equal(body.error.field, field);
  }
});

stackTest("sync without a token, or with an expired one, is 401", async () => {
  const user = await createUser("sync-401");
  assert.equal((await invoke(appClient(), "sync", { method: "GET" })).status, 401);
  const expired = await invoke(appClient(await expiredToken(user)), "sync", { method: "GET" });
  assert.equal(expired.status, 401);
  assert.equal(expired.body.error.code, "unauthorized");
});

stackTest("POST sync is 405 with an Allow header", async () => {
  const user = await createUser("sync-405");
  const { status, headers } = await invoke(appClient(user.token), "sync", { body: {} });
  assert.equal(status, 405);
  assert.equal(headers.get("allow"), "GET");
});

stackTest(
  "sync counts against the general limit, conditional or not: 429 once it is spent",
  async () => {
    const user = await createUser("sync-429");
    const restore = await limitGeneral(user, 2);
    try {
      await atStartOfWindow(10);
      const first = await sync(user);
      assert.equal(first.status, 200);
      const notModified = await sync(user, {}, { "if-none-match": first.headers.get("etag")! });
      assert.equal(notModified.status, 304);
      const refused = await sync(user, {}, { "if-none-match": first.headers.get("etag")! });
      assert.equal(refused.status, 429);
      assert.equal(refused.body.error.code, "rate_limited");
    } finally {
      await restore();
    }
  },
);

stackTest("with the database unreachable, sync is 503 unavailable", async () => {
  const user = await createUser("sync-503");
  await cacheProfile(user.id);
  const gateway = await functionsGateway({
    SUPABASE_DB_URL: "postgresql://postgres:postgres@127.0.0.1:1/postgres",
  });
  try {
    const { status, body } = await sync(user, {}, {}, gateway.url);
    assert.equal(status, 503);
    assert.equal(body.error.code, "unavailable");
  } finally {
    await gateway.close();
  }
});
