import assert from "node:assert/strict";
import { waitFor } from "../local/process.ts";
import { appClient, database, invoke, stackTest } from "./support.ts";

/**
 * Requests without a user are counted per minute, function and status in api_request_counts,
 * not recorded one row each: a flood of junk grows no table by a row per request, and the
 * operator views still count it.
 */

interface CountRow {
  minute: Date;
  status: number;
  requests: number;
}

/** The counts of `fn` from `since` (a whole minute) on. */
async function countsOf(fn: string, since: Date): Promise<CountRow[]> {
  const sql = database();
  try {
    return await sql<CountRow[]>`
      select minute, status, requests::int from public.api_request_counts
       where function_name = ${fn} and minute >= ${since} order by minute, status`;
  } finally {
    await sql.end();
  }
}

const total = (rows: CountRow[], status: number) =>
  rows.filter((row) => row.status === status).reduce((sum, row) => sum + row.requests, 0);

const thisMinute = () => new Date(Math.floor(Date.now() / 60_000) * 60_000);

stackTest(
  "fifty requests with a bad token to one function add at most a row per minute and status, " +
    "counting fifty, and no api_metrics row",
  async () => {
    const since = thisMinute();
    const before = await countsOf("usage", since);
    const ids = Array.from({ length: 50 }, () => `anon-${crypto.randomUUID()}`);
    for (const id of ids) {
      const { status } = await invoke(appClient("not-a-token"), "usage", {
        method: "GET",
        headers: { "x-request-id": id },
      });
      assert.equal(status, 401);
    }

    let after: CountRow[] = [];
    await waitFor("the counts of fifty requests", async () => {
      after = await countsOf("usage", since);
      return total(after, 401) - total(before, 401) === 50;
    }, 10_000);
    const rows401 = after.filter((row) => row.status === 401);
    assert.ok(rows401.length <= 2, `${rows401.length} rows for fifty requests in a minute or two`);

    const sql = database();
    try {
      const [{ rows }] = await sql<{ rows: number }[]>`
        select count(*)::int as rows from public.api_metrics where request_id = any(${ids})`;
      assert.equal(rows, 0);
    } finally {
      await sql.end();
    }
  },
);

stackTest(
  "health checks are counted, not recorded, and the operator views include them",
  async () => {
    const since = thisMinute();
    const before = await countsOf("health", since);
    for (let i = 0; i < 5; i++) {
      assert.equal((await invoke(appClient(), "health", { method: "GET" })).status, 200);
    }
    await waitFor("the health counts", async () => {
      return total(await countsOf("health", since), 200) - total(before, 200) === 5;
    }, 10_000);

    const sql = database();
    try {
      const [latency] = await sql`select * from public.ops_function_latency
                                 where function_name = 'health'`;
      assert.ok(latency.requests >= 5);
      assert.ok(Number(latency.max_ms) >= 0 && Number(latency.mean_ms) >= 0);
      const [errors] = await sql`select * from public.ops_function_errors
                                where function_name = 'health'`;
      assert.ok(errors.requests >= 5);
    } finally {
      await sql.end();
    }
  },
);
