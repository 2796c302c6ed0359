import assert from "node:assert/strict";
import postgres from "postgres";
import { LOCAL_DB_URL } from "../local/keys.ts";

/**
 * increment_usage_if_allowed under real concurrency: many connections hammering one user's
 * quota at once. The pgTAP file 11_usage_metering.test.sql covers the single-caller rules.
 */

const DB_URL = Deno.env.get("SUPABASE_DB_URL") ?? LOCAL_DB_URL;
const POOL = 50;
const CALLERS = 1_000;

interface Metered {
  allowed: boolean;
  used: number;
  quota: number;
  remaining: number;
  period_resets_at: Date;
}

function dbTest(name: string, fn: () => Promise<void>) {
  Deno.test({ name, fn, sanitizeOps: false, sanitizeResources: false });
}

/** A pool with every connection already open, so the callers really run side by side. */
async function openPool(): Promise<postgres.Sql> {
  const sql = postgres(DB_URL, { max: POOL, onnotice: () => {} });
  await Promise.all(Array.from({ length: POOL }, () => sql`select pg_sleep(0.05)`));
  return sql;
}

/** A signed-up user (the auth.users trigger makes the free profile); returns its id. */
async function createUser(sql: postgres.Sql): Promise<string> {
  const [user] = await sql<{ id: string }[]>`
    insert into auth.users (aud, role, email, email_confirmed_at, raw_app_meta_data, raw_user_meta_data)
    values ('authenticated', 'authenticated', ${`metering-${crypto.randomUUID()}@example.test`}, now(),
            '{"provider":"email","providers":["email"]}', '{}')
    returning id`;
  return user.id;
}

async function freeQuota(sql: postgres.Sql): Promise<number> {
  const [plan] = await sql<{ monthly_quota: number }[]>`
    select monthly_quota from public.plans where id = 'free'`;
  return plan.monthly_quota;
}

/** Fires `amounts.length` increments at once for the user and returns every answer. */
function hammer(sql: postgres.Sql, userId: string, amounts: number[]): Promise<Metered[]> {
  return Promise.all(amounts.map(async (amount) => {
    const [row] = await sql<Metered[]>`
      select * from public.increment_usage_if_allowed(${userId}, ${amount})`;
    return row;
  }));
}

async function storedUsage(sql: postgres.Sql, userId: string) {
  const [row] = await sql<{ usage_count: number; in_current_month: boolean }[]>`
    select usage_count, period_start = date_trunc('month', now(), 'UTC') as in_current_month
    from public.profiles where id = ${userId}`;
  return row;
}

dbTest("1,000 concurrent increments for a user with a quota of 100 allow exactly 100", async () => {
  const sql = await openPool();
  const userId = await createUser(sql);
  try {
    assert.equal(await freeQuota(sql), 100, "the free plan's quota is 100");

    const answers = await hammer(sql, userId, Array(CALLERS).fill(1));

    assert.equal(answers.filter((a) => a.allowed).length, 100);
    assert.equal(answers.filter((a) => !a.allowed).length, CALLERS - 100);
    for (const a of answers) {
      assert.ok(a.used <= 100, `no caller ever saw usage above the quota (saw ${a.used})`);
      assert.equal(a.quota, 100);
      assert.equal(a.remaining, 100 - a.used);
    }
    // Each allowed caller recorded one unit, so they saw 1, 2, ..., 100 exactly once each.
    const seen = answers.filter((a) => a.allowed).map((a) => a.used).sort((x, y) => x - y);
    assert.deepEqual(seen, Array.from({ length: 100 }, (_, i) => i + 1));
    assert.equal((await storedUsage(sql, userId)).usage_count, 100);
  } finally {
    await sql`delete from auth.users where id = ${userId}`;
    await sql.end();
  }
});

dbTest(
  "1,000 concurrent increments right after a period ended allow exactly 100 in the new period",
  async () => {
    const sql = await openPool();
    const userId = await createUser(sql);
    try {
      assert.equal(await freeQuota(sql), 100, "the free plan's quota is 100");
      // Last month's quota fully used: the period must roll over exactly once, under contention.
      await sql`
      update public.profiles
         set usage_count = 100,
             period_start = date_trunc('month', now(), 'UTC') - interval '1 month'
       where id = ${userId}`;

      const answers = await hammer(sql, userId, Array(CALLERS).fill(1));

      assert.equal(answers.filter((a) => a.allowed).length, 100);
      const stored = await storedUsage(sql, userId);
      assert.equal(stored.usage_count, 100);
      assert.equal(stored.in_current_month, true, "period_start moved to the current UTC month");
      const [expected] = await sql<{ resets_at: Date }[]>`
      select (date_trunc('month', now(), 'UTC') at time zone 'UTC' + interval '1 month')
               at time zone 'UTC' as resets_at`;
      for (const a of answers) {
        assert.equal(a.period_resets_at.getTime(), expected.resets_at.getTime());
      }
    } finally {
      await sql`delete from auth.users where id = ${userId}`;
      await sql.end();
    }
  },
);

dbTest(
  "concurrent increments of mixed sizes never exceed the quota and lose no update",
  async () => {
    const sql = await openPool();
    const userId = await createUser(sql);
    try {
      const amounts = Array.from({ length: CALLERS }, (_, i) => (i * 7) % 9 + 1); // 1..9
      const answers = await hammer(sql, userId, amounts);

      const recorded = answers.reduce((sum, a, i) => sum + (a.allowed ? amounts[i] : 0), 0);
      const stored = await storedUsage(sql, userId);
      assert.equal(
        stored.usage_count,
        recorded,
        "the stored usage is the sum of the allowed amounts",
      );
      // 112 of the callers ask for 1 unit, more than the quota: so some of them were refused,
      // which can only happen with nothing left. Whatever the order, the quota ends exactly full.
      assert.equal(recorded, 100, "the quota is used up exactly, never overshot");
    } finally {
      await sql`delete from auth.users where id = ${userId}`;
      await sql.end();
    }
  },
);

dbTest(
  "concurrent charges and refunds keep usage within the quota, and it is the charges minus the refunds",
  async () => {
    const sql = await openPool();
    const userId = await createUser(sql);
    try {
      await sql`update public.profiles set usage_count = 50 where id = ${userId}`;
      // As analyze does: every caller is charged; every other one, its model call having
      // failed, is refunded what it was charged, and only when the charge was allowed.
      const seen: number[] = [];
      const outcomes = await Promise.all(Array.from({ length: CALLERS }, async (_, i) => {
        const [charge] = await sql<Metered[]>`
          select * from public.increment_usage_if_allowed(${userId}, 3)`;
        seen.push(charge.used);
        if (!charge.allowed || i % 2 === 0) {
          return { charged: charge.allowed ? 3 : 0, refunded: 0 };
        }
        const [refund] = await sql<Metered[]>`
          select * from public.refund_usage(${userId}, 3, ${charge.period_resets_at})`;
        seen.push(refund.used);
        return { charged: 3, refunded: 3 };
      }));
      const charged = outcomes.reduce((sum, o) => sum + o.charged, 0);
      const refunded = outcomes.reduce((sum, o) => sum + o.refunded, 0);
      assert.ok(seen.every((used) => used >= 0 && used <= 100), "usage stayed within 0..100");
      assert.ok(refunded > 0, "some charges were refunded");
      assert.ok(
        outcomes.some((o) => o.charged === 0),
        "some charges were refused at the quota",
      );
      assert.equal(
        (await storedUsage(sql, userId)).usage_count,
        50 + charged - refunded,
        "used units are the starting 50 plus every allowed charge minus every refund",
      );
    } finally {
      await sql`delete from auth.users where id = ${userId}`;
      await sql.end();
    }
  },
);

dbTest("deleting the user removes the profile the signup trigger made", async () => {
  const sql = postgres(DB_URL, { max: 2, onnotice: () => {} });
  try {
    const userId = await createUser(sql);
    const before = await sql`select 1 from public.profiles where id = ${userId}`;
    assert.equal(before.length, 1);
    await sql`delete from auth.users where id = ${userId}`;
    const after = await sql`select 1 from public.profiles where id = ${userId}`;
    assert.equal(after.length, 0);
  } finally {
    await sql.end();
  }
});
