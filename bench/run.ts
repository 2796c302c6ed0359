import { LOCAL_DB_URL, LOCAL_SUPABASE_URL } from "../local/keys.ts";
import { run } from "../local/process.ts";
import { databaseBench } from "./database.ts";
import { functionsBench } from "./functions.ts";
import { hotPathBench } from "./hot-path.ts";
import { ensureWrk, load } from "./http-load.ts";
import { readReplicaBench } from "./read-replica.ts";
import { CONNECTIONS, loadBare, resultRow, SECONDS } from "./support.ts";

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

async function healthSection(): Promise<string> {
  const healthUrl = `${LOCAL_SUPABASE_URL}/functions/v1/health`;
  const sample = await (await fetch(healthUrl)).text();
  const baseline = await loadBare(sample);
  const health = await load(healthUrl, { connections: CONNECTIONS, seconds: SECONDS });
  const ratio = health.requestsPerSecond / baseline.requestsPerSecond;
  return [
    "## HTTP: health through the gateway against a bare Deno.serve",
    "",
    "`health` pays the whole pipeline plus one Postgres `select 1` and one Redis `PING` per request,",
    "and the local gateway's proxy hop; the baseline answers the same JSON with nothing behind it.",
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
