import { LOCAL_DB_URL, LOCAL_SUPABASE_URL } from "../local/keys.ts";
import postgres from "postgres";
import { run, waitFor } from "../local/process.ts";
import { databaseBench } from "./database.ts";
import { functionsBench } from "./functions.ts";
import { hotPathBench } from "./hot-path.ts";
import { ensureWrk, load } from "./http-load.ts";
import { readReplicaBench } from "./read-replica.ts";
import { CONNECTIONS, loadBare, resultRow, SECONDS } from "./support.ts";
import { workerBench } from "./worker.ts";

/**
 * `deno task bench`: every benchmark, on the local stack (started here if it is not running),
 * written to bench/results.md with the machine and the date. Targets are checked here, never by
 * timed assertions in tests.
 */

const ROOT = new URL("..", import.meta.url).pathname;
const STACK = `${ROOT}local/stack.ts`;
const RESULTS = `${ROOT}bench/results.md`;

async function healthy(): Promise<boolean> {
  try {
    const response = await fetch(`${LOCAL_SUPABASE_URL}/functions/v1/health`);
    await response.body?.cancel();
    return response.ok;
  } catch {
    return false;
  }
}

async function machine(): Promise<string> {
  const cpu = (await Deno.readTextFile("/proc/cpuinfo")).match(/model name\s*:\s*(.+)/)?.[1];
  const memory = Math.round(Deno.systemMemoryInfo().total / 1024 ** 3);
  return [
    `- Date: ${new Date().toISOString()}`,
    `- Machine: ${navigator.hardwareConcurrency} cores (${cpu ?? "unknown CPU"}), ${memory} GiB`,
    `- Deno ${Deno.version.deno}, ${
      (await run("postgres", ["--version"]).catch(() =>
        run("/usr/lib/postgresql/15/bin/postgres", ["--version"])
      )).trim()
    }`,
    `- Load: wrk, ${CONNECTIONS} connections, ${SECONDS} s per endpoint, on loopback`,
  ].join("\n");
}

/** Far above what the load generator can send in a minute, so the limit never binds. */
const UNBINDING_LIMIT = 1_000_000_000;

/**
 * Runs `work` with the free plan's `general` limit out of the way: `health` is limited per client
 * address at that limit, and the load comes from one address. The functions read the free plan at
 * most once a minute, so this waits until `health` answers with the new limit.
 */
async function withUnbindingHealthLimit<T>(healthUrl: string, work: () => Promise<T>): Promise<T> {
  const sql = postgres(Deno.env.get("SUPABASE_DB_URL") ?? LOCAL_DB_URL, { max: 1 });
  const [{ limit }] = await sql<{ limit: number }[]>`
    select general_per_minute as limit from public.plans where id = 'free'`;
  await sql`update public.plans set general_per_minute = ${UNBINDING_LIMIT} where id = 'free'`;
  try {
    await waitFor("health to use the raised limit", async () => {
      const response = await fetch(healthUrl);
      await response.body?.cancel();
      return response.headers.get("x-ratelimit-limit") === String(UNBINDING_LIMIT);
    }, 70_000);
    return await work();
  } finally {
    await sql`update public.plans set general_per_minute = ${limit} where id = 'free'`;
    await sql.end();
  }
}

async function healthSection(): Promise<string> {
  const healthUrl = `${LOCAL_SUPABASE_URL}/functions/v1/health`;
  const sample = await (await fetch(healthUrl)).text();
  const baseline = await loadBare(sample);
  const health = await withUnbindingHealthLimit(
    healthUrl,
    () => load(healthUrl, { connections: CONNECTIONS, seconds: SECONDS }),
  );
  const ratio = health.requestsPerSecond / baseline.requestsPerSecond;
  return [
    "## HTTP: health through the gateway against a bare Deno.serve",
    "",
    "`health` pays the whole pipeline plus one Postgres `select 1` and one Redis `PING` per request,",
    "and the local gateway's proxy hop; the baseline answers the same JSON with nothing behind it.",
    "Its per-address limit is raised out of the way for the run (the load comes from one address).",
    "",
    "| endpoint | req/s | p50 ms | p99 ms | non-2xx |",
    "| --- | ---: | ---: | ---: | ---: |",
    resultRow("bare `Deno.serve`", baseline),
    resultRow("`GET /functions/v1/health`", health),
    "",
    `Ratio health / bare: ${(ratio * 100).toFixed(1)} %.`,
  ].join("\n");
}

async function main() {
  await ensureWrk();
  const startedHere = !(await healthy());
  if (startedHere) await run(Deno.execPath(), ["run", "-A", STACK, "up", "--replica"]);
  try {
    const sections = [
      `# Benchmark results\n\n${await machine()}`,
      await healthSection(),
      await hotPathBench(),
      await functionsBench(),
      await readReplicaBench(),
    ];
    sections.push(await databaseBench(Deno.env.get("SUPABASE_DB_URL") ?? LOCAL_DB_URL));
    sections.push(await workerBench(Deno.env.get("SUPABASE_DB_URL") ?? LOCAL_DB_URL));
    await Deno.writeTextFile(RESULTS, sections.join("\n\n") + "\n");
    // Aligned tables read better in a diff between two runs.
    await run(Deno.execPath(), ["fmt", "--quiet", RESULTS]);
    console.log(sections.join("\n\n"));
    console.log(`\nwritten to ${RESULTS}`);
  } finally {
    if (startedHere) await run(Deno.execPath(), ["run", "-A", STACK, "down"]);
  }
}

await main();
