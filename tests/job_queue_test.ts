import assert from "node:assert/strict";
import postgres from "postgres";
import { LOCAL_DB_URL } from "../local/keys.ts";

/**
 * The job queue under concurrency: claimers racing over the same jobs, expired locks and
 * concurrent idempotent enqueues. The pgTAP file 14_background_jobs.test.sql covers the
 * single-caller rules (order, backoff, dead jobs, purge).
 *
 * Each test uses its own job type and claims only that type (claim_jobs' p_types), so it
 * neither takes nor leaves behind jobs of anything else sharing the database.
 */

const DB_URL = Deno.env.get("SUPABASE_DB_URL") ?? LOCAL_DB_URL;

interface Job {
  id: string; // bigint arrives as a string
  attempts: number;
  locked_by: string;
  status: string;
}

function dbTest(name: string, fn: () => Promise<void>) {
  Deno.test({ name, fn, sanitizeOps: false, sanitizeResources: false });
}

function uniqueType(label: string): string {
  return `test.${label}.${crypto.randomUUID()}`;
}

function claim(
  sql: postgres.Sql,
  worker: string,
  limit: number,
  lockSeconds: number,
  type: string,
) {
  return sql<Job[]>`
    select id, attempts, locked_by, status
    from public.claim_jobs(${worker}, ${limit}, ${lockSeconds}, ${[type]}::text[])`;
}

async function complete(sql: postgres.Sql, id: string, worker: string): Promise<boolean> {
  const [row] = await sql<{ ok: boolean }[]>`select public.complete_job(${id}, ${worker}) as ok`;
  return row.ok;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Moves a running job's lock expiry into the past, as if its holder had stalled that long. */
async function expireLock(sql: postgres.Sql, id: string) {
  await sql`update public.background_jobs set locked_until = now() - interval '1 second'
             where id = ${id} and status = 'running'`;
}

dbTest("four concurrent claimers over 400 jobs never get the same job", async () => {
  const sql = postgres(DB_URL, { max: 8, onnotice: () => {} });
  const type = uniqueType("race");
  try {
    const [{ count }] = await sql<{ count: number }[]>`
      select count(public.enqueue_job(${type}, jsonb_build_object('n', n)))::int as count
      from generate_series(1, 400) as n`;
    assert.equal(count, 400);

    const claimedBy = new Map<string, string>();
    const duplicates: string[] = [];
    const workers = ["w1", "w2", "w3", "w4"].map(async (worker) => {
      const mine: string[] = [];
      for (;;) {
        const jobs = await claim(sql, worker, 7, 60, type);
        if (jobs.length === 0) return mine;
        for (const job of jobs) {
          assert.equal(job.locked_by, worker);
          assert.equal(job.status, "running");
          if (claimedBy.has(job.id)) duplicates.push(job.id);
          claimedBy.set(job.id, worker);
          mine.push(job.id);
        }
        // Hold the jobs for a moment, as real work would, while the others keep claiming.
        await sleep(Math.random() * 5);
        for (const job of jobs) {
          assert.equal(await complete(sql, job.id, worker), true, "the holder completes its job");
        }
      }
    });
    const perWorker = await Promise.all(workers);

    assert.deepEqual(duplicates, [], "no job was handed to two claimers");
    assert.equal(claimedBy.size, 400, "every job was claimed");
    assert.ok(
      perWorker.filter((ids) => ids.length > 0).length >= 2,
      `the work was shared between claimers (${perWorker.map((ids) => ids.length).join("/")})`,
    );
    const states = await sql<{ status: string; attempts: number; n: number }[]>`
      select status, attempts, count(*)::int as n from public.background_jobs
      where type = ${type} group by status, attempts`;
    assert.deepEqual([...states], [{ status: "succeeded", attempts: 1, n: 400 }]);
  } finally {
    await sql`delete from public.background_jobs where type = ${type}`;
    await sql.end();
  }
});

dbTest("a job whose lock expired is claimed again by another worker", async () => {
  const sql = postgres(DB_URL, { max: 4, onnotice: () => {} });
  const type = uniqueType("expiry");
  try {
    const [{ id }] = await sql<{ id: string }[]>`select public.enqueue_job(${type}) as id`;

    const [first] = await claim(sql, "stalling-worker", 1, 60, type);
    assert.equal(first.id, id);
    assert.equal(first.attempts, 1);
    assert.equal((await claim(sql, "rescuer", 1, 60, type)).length, 0, "a live lock is respected");

    await expireLock(sql, id);

    const [second] = await claim(sql, "rescuer", 1, 60, type);
    assert.equal(second?.id, id, "the job is claimable again once its lock expired");
    assert.equal(second.locked_by, "rescuer");
    assert.equal(second.attempts, 2);
    assert.equal(await complete(sql, id, "stalling-worker"), false, "the old holder lost the job");
    assert.equal(await complete(sql, id, "rescuer"), true, "the new holder completes it");
  } finally {
    await sql`delete from public.background_jobs where type = ${type}`;
    await sql.end();
  }
});

dbTest("an expired lock raced by several workers goes to exactly one of them", async () => {
  const sql = postgres(DB_URL, { max: 10, onnotice: () => {} });
  const type = uniqueType("expiry-race");
  try {
    const [{ id }] = await sql<{ id: string }[]>`select public.enqueue_job(${type}) as id`;
    await claim(sql, "stalling-worker", 1, 60, type);
    await expireLock(sql, id);

    const results = await Promise.all(
      Array.from({ length: 10 }, (_, i) => claim(sql, `rescuer-${i}`, 1, 60, type)),
    );
    const winners = results.flat();
    assert.equal(winners.length, 1, "exactly one rescuer got the job");
    assert.equal(winners[0].id, id);
  } finally {
    await sql`delete from public.background_jobs where type = ${type}`;
    await sql.end();
  }
});

dbTest("concurrent enqueues with one idempotency key make one job", async () => {
  const sql = postgres(DB_URL, { max: 20, onnotice: () => {} });
  const type = uniqueType("idempotent");
  const key = `test-${crypto.randomUUID()}`;
  try {
    const ids = await Promise.all(Array.from({ length: 50 }, async () => {
      const [row] = await sql<{ id: string }[]>`
        select public.enqueue_job(${type}, '{}'::jsonb, p_idempotency_key => ${key}) as id`;
      return row.id;
    }));
    assert.equal(new Set(ids).size, 1, "every caller got the same job id");
    const [{ n }] = await sql<{ n: number }[]>`
      select count(*)::int as n from public.background_jobs where idempotency_key = ${key}`;
    assert.equal(n, 1);
  } finally {
    await sql`delete from public.background_jobs where type = ${type}`;
    await sql.end();
  }
});
