import assert from "node:assert/strict";
import postgres from "postgres";
import { LOCAL_PORTS, LOCAL_REPLICA_URL, LOCAL_STATE_DIR } from "../local/keys.ts";
import { LocalPostgres } from "../local/postgres.ts";
import { waitFor } from "../local/process.ts";
import {
  addAnalyses,
  appClient,
  createUser,
  database,
  functionsGateway,
  invoke,
  stackTest,
} from "./support.ts";

/**
 * Read routing against the stack's real streaming replica (`deno task test` starts it; for a dev
 * stack, `deno task up --replica`): reads that tolerate lag land on the replica, a user's own
 * writes are read back from the primary, and a stopped replica sends reads to the primary.
 * Replay is paused with `pg_wal_replay_pause()` so that "on the replica" and "on the primary"
 * answer differently.
 */

const localReplica = new LocalPostgres(LOCAL_STATE_DIR, LOCAL_PORTS.replica, "replica");

function replicaDatabase() {
  return postgres(LOCAL_REPLICA_URL, { max: 1, onnotice: () => {} });
}

/** A gateway whose functions read from the replica; a paused replica stays usable here. */
function replicaGateway() {
  return functionsGateway({
    SUPABASE_DB_READ_URL: LOCAL_REPLICA_URL,
    READ_AFTER_WRITE_MS: "5000",
    MAX_REPLICA_LAG_MS: "600000",
  });
}

/**
 * Waits until the replica has replayed everything the primary has written so far: up to the
 * insert position, not the write position, because the local cluster commits asynchronously
 * and a commit record may not have reached the write position yet.
 */
async function caughtUp() {
  const primary = database();
  const replica = replicaDatabase();
  try {
    const [{ lsn }] = await primary`select pg_current_wal_insert_lsn()::text as lsn`;
    await waitFor("the replica to catch up", async () => {
      const [row] = await replica`
        select pg_last_wal_replay_lsn() >= ${lsn}::pg_lsn as done`;
      return row.done;
    }, 15_000);
  } finally {
    await primary.end();
    await replica.end();
  }
}

async function withReplayPaused(work: () => Promise<void>) {
  await caughtUp();
  const replica = replicaDatabase();
  try {
    await replica`select pg_wal_replay_pause()`;
    await work();
  } finally {
    await replica`select pg_wal_replay_resume()`;
    await replica.end();
  }
}

stackTest("a history page is read from the read replica", async () => {
  const gateway = await replicaGateway();
  const user = await createUser("replica-read");
  const client = appClient(user.token, gateway.url);
  const replica = replicaDatabase();
  try {
    const [first] = await addAnalyses(user.id);
    await withReplayPaused(async () => {
      // Written on the primary after the replica stopped replaying: only the primary has it.
      await addAnalyses(user.id);
      const page = await invoke(client, "history", { method: "GET" });
      assert.equal(page.status, 200);
      assert.deepEqual(page.body.items.map((item: { id: string }) => item.id), [first.id]);
      const [{ in_recovery }] = await replica`select pg_is_in_recovery() as in_recovery`;
      assert.equal(in_recovery, true);
      const readers = await replica`
        select count(*)::int as n from pg_stat_activity where application_name = 'edge-function-read'`;
      assert.ok(readers[0].n > 0, "the functions hold connections to the replica");
    });
  } finally {
    await replica.end();
    await gateway.close();
  }
});

stackTest(
  "after changing their settings a user reads them back from the primary while the replica lags",
  async () => {
    const gateway = await replicaGateway();
    const user = await createUser("replica-ryw");
    const other = await createUser("replica-other");
    const client = appClient(user.token, gateway.url);
    try {
      // Both profiles reach the replica before it stops replaying.
      await invoke(client, "sync", { method: "GET" });
      await invoke(appClient(other.token, gateway.url), "sync", { method: "GET" });
      await withReplayPaused(async () => {
        const patched = await invoke(client, "profile", {
          method: "PATCH",
          body: { settings: { theme: "dark" } },
        });
        assert.equal(patched.status, 200);
        const synced = await invoke(client, "sync", { method: "GET" });
        assert.equal(synced.status, 200);
        assert.equal(synced.body.profile.settings.theme, "dark");

        // Without a write of their own, the other user's analysis written since is not there yet.
        await addAnalyses(other.id);
        const page = await invoke(appClient(other.token, gateway.url), "history", {
          method: "GET",
        });
        assert.deepEqual(page.body.items, []);
      });
    } finally {
      await gateway.close();
    }
  },
);

stackTest("reads go to the primary while the replica is stopped", async () => {
  const gateway = await replicaGateway();
  const user = await createUser("replica-down");
  const client = appClient(user.token, gateway.url);
  try {
    assert.equal((await invoke(client, "history", { method: "GET" })).status, 200);
    await localReplica.stop();
    const [added] = await addAnalyses(user.id);
    for (const name of ["history", "activities", "statistics", "sync"]) {
      const answer = await invoke(client, name, { method: "GET" });
      assert.equal(answer.status, 200, `${name}: ${JSON.stringify(answer.body)}`);
      if (name === "history") {
        assert.deepEqual(answer.body.items.map((item: { id: string }) => item.id), [added.id]);
      }
    }
  } finally {
    await localReplica.start();
    await caughtUp();
    await gateway.close();
  }
});
