import assert from "node:assert/strict";
import {
  forgetProfile,
  loadProfile,
  type Profile,
  PROFILE_TTL_SECONDS,
  profileKey,
  refreshProfile,
  storeIfNewer,
} from "../supabase/functions/_shared/profile-cache.ts";
import {
  createUser,
  database,
  fixtureGateway,
  stackTest,
  type TestUser,
  upstash,
} from "./support.ts";

/** The caller's profile comes from Redis once warm, and every write shows on the next read. */

const gateway = await fixtureGateway();

/** `whoami` requires a user and so reads the profile, with no rate limit to run into. */
async function whoami(user: TestUser) {
  const response = await fetch(`${gateway.url}/functions/v1/whoami`, {
    headers: { authorization: `Bearer ${user.token}` },
  });
  return { status: response.status, body: await response.json() };
}

stackTest("a settings update is visible on the very next read through the cache", async () => {
  const user = await createUser("settings");
  assert.deepEqual((await whoami(user)).body.settings, {});
  const sql = database();
  try {
    await sql`update public.profiles set settings = ${sql.json({ theme: "dark" })}
               where id = ${user.id}`;
    await refreshProfile(upstash(), sql, user.id);
  } finally {
    await sql.end();
  }
  assert.deepEqual((await whoami(user)).body.settings, { theme: "dark" });
});

stackTest("100 warm authenticated requests read the profile from Postgres only once", async () => {
  const user = await createUser("warm-reads");
  const sql = database();
  try {
    await sql`select extensions.pg_stat_statements_reset()`;
    for (let i = 0; i < 101; i++) assert.equal((await whoami(user)).status, 200);
    const [{ calls }] = await sql<{ calls: number }[]>`
      select coalesce(sum(calls), 0)::int as calls
        from extensions.pg_stat_statements
       where query ilike '%from public.profiles p%join public.plans pl%'`;
    assert.equal(calls, 1);
  } finally {
    await sql.end();
  }
});

stackTest("a deleted account's still-valid token is refused, cached profile or not", async () => {
  const user = await createUser("deleted");
  assert.equal((await whoami(user)).status, 200);
  const sql = database();
  try {
    await sql`delete from auth.users where id = ${user.id}`;
    await forgetProfile(upstash(), user.id);
  } finally {
    await sql.end();
  }
  const { status, body } = await whoami(user);
  assert.equal(status, 401);
  assert.equal(body.error.code, "unauthorized");
});

stackTest(
  "fifty concurrent first requests for one user read the profile from Postgres once",
  async () => {
    const user = await createUser("concurrent-miss");
    const sql = database();
    try {
      await sql`select extensions.pg_stat_statements_reset()`;
      const statuses = await Promise.all(
        Array.from({ length: 50 }, async () => (await whoami(user)).status),
      );
      assert.ok(statuses.every((status) => status === 200));
      const [{ calls }] = await sql<{ calls: number }[]>`
      select coalesce(sum(calls), 0)::int as calls
        from extensions.pg_stat_statements
       where query ilike '%from public.profiles p%join public.plans pl%'`;
      assert.equal(calls, 1);
    } finally {
      await sql.end();
    }
  },
);

stackTest("a slow reader's older row cannot overwrite the newer one a writer cached", async () => {
  const user = await createUser("stale-write");
  const redis = upstash();
  const sql = database();
  try {
    // A reader loads the row, then stalls before putting it in the cache.
    const stale = await loadProfile(sql, user.id);
    assert.ok(stale);
    // Meanwhile a writer changes the row and caches the new one.
    await sql`update public.profiles set settings = ${sql.json({ theme: "dark" })}
               where id = ${user.id}`;
    const fresh = await refreshProfile(redis, sql, user.id);
    assert.ok(fresh && fresh.version > stale.version);

    assert.equal(await storeIfNewer(redis, user.id, stale, PROFILE_TTL_SECONDS), 0);
    const cached = await redis.get<Profile>(profileKey(user.id));
    assert.equal(cached?.version, fresh.version);
    assert.deepEqual(cached?.settings, { theme: "dark" });
    assert.deepEqual((await whoami(user)).body.settings, { theme: "dark" });
  } finally {
    await sql.end();
  }
});
