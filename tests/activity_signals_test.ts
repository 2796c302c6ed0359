import assert from "node:assert/strict";
import { waitFor } from "../local/process.ts";
import { appClient, createUser, database, invoke, stackTest } from "./support.ts";

/**
 * What every signed-in request leaves behind without a statement of its own: the caller's
 * last_active_at (stamped with the metrics flush) and the cache and fallback signals in its
 * api_metrics row, which ops_cache_and_fallback sums up.
 */

stackTest("a user who only reads gets sync's active interval of 30 seconds", async () => {
  const user = await createUser("reader");
  const client = appClient(user.token);
  const sql = database();
  try {
    const history = await invoke(client, "history", { method: "GET" });
    assert.equal(history.status, 200);
    await waitFor("last_active_at stamped by the metrics flush", async () => {
      const [row] = await sql`select last_active_at from public.profiles where id = ${user.id}`;
      return row.last_active_at !== null;
    }, 10_000);
    const sync = await invoke(client, "sync", { method: "GET" });
    assert.equal(sync.status, 200);
    assert.equal(sync.body.next_sync_in_s, 30);
  } finally {
    await sql.end();
  }
});

stackTest(
  "each signed-in request's metrics row says whether its profile came from the cache and whether Redis was skipped",
  async () => {
    const user = await createUser("signals");
    const client = appClient(user.token);
    const sql = database();
    try {
      for (let i = 0; i < 2; i++) {
        assert.equal((await invoke(client, "usage", { method: "GET" })).status, 200);
      }
      let rows: { profile_cache_hit: boolean; redis_fallback: boolean }[] = [];
      await waitFor("both metrics rows", async () => {
        rows = await sql`
          select profile_cache_hit, redis_fallback from public.api_metrics
           where user_id = ${user.id} and created_at > now() - interval '5 minutes'
           order by id`;
        return rows.length === 2;
      }, 10_000);
      assert.deepEqual([...rows], [
        { profile_cache_hit: false, redis_fallback: false },
        { profile_cache_hit: true, redis_fallback: false },
      ]);
      const [view] = await sql`
        select profile_cache_hit_rate, redis_fallback_share from public.ops_cache_and_fallback
         where function_name = 'usage'`;
      assert.ok(Number(view.profile_cache_hit_rate) > 0);
      assert.ok(view.redis_fallback_share !== null);
    } finally {
      await sql.end();
    }
  },
);
