import postgres from "postgres";
import { type Gateway, startGateway } from "../local/gateway.ts";
import {
  LOCAL_DB_URL,
  LOCAL_JWT_SECRET,
  LOCAL_SUPABASE_URL,
  LOCAL_UPSTASH_TOKEN,
  LOCAL_UPSTASH_URL,
} from "../local/keys.ts";
import { run } from "../local/process.ts";
import { ensureSigningKey, publicJwks } from "../local/signing-key.ts";
import { LOCAL_FUNCTION_ENV } from "../local/stack.ts";
import { KEY as SKELETON_KEY } from "./fixtures/skeleton.ts";
import { type Frame, profileUnderLoad } from "./cpu-profile.ts";
import { load, type LoadResult, rotatingTokensScript } from "./http-load.ts";
import { cpuSeconds, perRequest } from "./process-cpu.ts";
import { benchUsers, CONNECTIONS, loadBare, resultRow, SECONDS } from "./support.ts";

/**
 * The hot path every authenticated request pays (JWT check, profile cache, rate limit, and for a
 * metered request one usage increment) through a gateway, against a bare `Deno.serve` and
 * against pgbench's bare conditional `update`, all in one run on this machine.
 *
 * It runs the test fixtures `whoami` (a cached authenticated GET) and `metered` (the metered
 * path without a model call) for users spread over a plan whose limits never bind.
 */

const USERS = 200;
const TEST_FIXTURES = new URL("../tests/fixtures/", import.meta.url).pathname;
const BENCH_FIXTURES = new URL("./fixtures/", import.meta.url).pathname;
const SUPABASE_DIR = new URL("../supabase/", import.meta.url).pathname;

async function bridgeRoundTrips(): Promise<number> {
  const response = await fetch(`${LOCAL_UPSTASH_URL}/__local/stats`, {
    headers: { authorization: `Bearer ${LOCAL_UPSTASH_TOKEN}` },
  });
  return (await response.json()).requests;
}

async function statements(sql: postgres.Sql, pattern: string): Promise<number> {
  const [{ calls }] = await sql<{ calls: number }[]>`
    select coalesce(sum(calls), 0)::float8 as calls from extensions.pg_stat_statements
     where query ilike ${pattern}`;
  return calls;
}

interface Measured {
  result: LoadResult;
  roundTripsPerRequest: number;
  statementsPerRequest: number;
  metricsInsertsPerRequest: number;
  /** CPU microseconds per request, by process. */
  cpuPerRequest: Record<string, number>;
}

async function measure(
  sql: postgres.Sql,
  url: string,
  script: string,
  fn: string,
): Promise<Measured> {
  const trips = await bridgeRoundTrips();
  await sql`select extensions.pg_stat_statements_reset()`;
  const cpuBefore = await cpuSeconds(fn);
  const result = await load(url, { connections: CONNECTIONS, seconds: SECONDS, script });
  const cpuAfter = await cpuSeconds(fn);
  await new Promise((resolve) => setTimeout(resolve, 500));
  const total = await statements(sql, "%");
  const metrics = await statements(sql, "%insert into public.api_metrics%");
  const own = await statements(sql, "%pg_stat_statements%");
  return {
    result,
    roundTripsPerRequest: ((await bridgeRoundTrips()) - trips) / result.requests,
    // The benchmark's own statements are counted on both sides of the reset, so a GET can come out
    // a hair below zero.
    statementsPerRequest: Math.max(0, (total - metrics - own) / result.requests),
    metricsInsertsPerRequest: metrics / result.requests,
    cpuPerRequest: perRequest(cpuBefore, cpuAfter, result.requests),
  };
}

function cpuTable(columns: [string, Measured][]): string[] {
  const names = Object.keys(columns[0][1].cpuPerRequest);
  const sum = (m: Measured) => Object.values(m.cpuPerRequest).reduce((x, y) => x + y, 0);
  return [
    `| CPU µs per request | ${columns.map(([label]) => label).join(" | ")} |`,
    `| --- |${" ---: |".repeat(columns.length)}`,
    ...names.map((name) =>
      `| ${name} | ${columns.map(([, m]) => m.cpuPerRequest[name].toFixed(0)).join(" | ")} |`
    ),
    `| total | ${columns.map(([, m]) => sum(m).toFixed(0)).join(" | ")} |`,
  ];
}

const FUNCTION_CPU = "function process";

function framesTable(label: string, frames: Frame[]): string[] {
  return [
    `Top ${frames.length} frames by self time, ${label} (share of the process's busy time):`,
    "",
    "| frame | where | self |",
    "| --- | --- | ---: |",
    ...frames.map((f) =>
      `| \`${f.name}\` | ${f.where ? `\`${f.where}\`` : ""} | ${(f.selfShare * 100).toFixed(1)} % |`
    ),
  ];
}

/** Transactions per second of the bare conditional update, users spread out, with pgbench. */
async function pgbenchBareUpdate(sql: postgres.Sql, ids: string[]): Promise<number> {
  await sql`create table if not exists public.bench_user_ids (n int primary key, id uuid not null)`;
  await sql`truncate public.bench_user_ids`;
  await sql`insert into public.bench_user_ids ${sql(ids.map((id, n) => ({ n: n + 1, id })))}`;
  const script = await Deno.makeTempFile({ suffix: ".sql" });
  await Deno.writeTextFile(
    script,
    `\\set n random(1, ${ids.length})
update public.profiles set usage_count = usage_count + 1
 where id = (select id from public.bench_user_ids where n = :n)
   and usage_count + 1 <= 1000000000;
`,
  );
  try {
    const output = await run("/usr/lib/postgresql/15/bin/pgbench", [
      "--no-vacuum",
      "--client",
      "8",
      "--jobs",
      "2",
      "--time",
      String(SECONDS),
      "--file",
      script,
      LOCAL_DB_URL,
    ]);
    return Number(output.match(/tps = ([\d.]+)/)?.[1] ?? NaN);
  } finally {
    await Deno.remove(script);
    await sql`drop table public.bench_user_ids`;
  }
}

const pct = (part: number, whole: number) => `${((part / whole) * 100).toFixed(1)} %`;
const verdict = (ok: boolean) => (ok ? "met" : "**missed**");

/** The function process's CPU per request against its skeleton's, both from this run. */
const TARGET_CPU_RATIO = 1.6;

interface Gateways {
  /** tests/fixtures: `whoami` and `metered`. */
  fixtures: Gateway;
  /** bench/fixtures: the skeletons. */
  skeletons: Gateway;
  /** supabase/functions: the real `profile`. */
  functions: Gateway;
}

async function startGateways(jwks: { keys: unknown[] }): Promise<Gateways> {
  const start = (dir: string) =>
    startGateway({
      port: 0,
      functionsDir: `${dir}functions`,
      configPath: `${dir}config.toml`,
      env: { ...LOCAL_FUNCTION_ENV, ...Deno.env.toObject() },
      jwks,
      jwtSecret: LOCAL_JWT_SECRET,
      issuer: `${LOCAL_SUPABASE_URL}/auth/v1`,
      log: () => {},
    });
  return {
    fixtures: await start(TEST_FIXTURES),
    skeletons: await start(BENCH_FIXTURES),
    functions: await start(SUPABASE_DIR),
  };
}

export async function hotPathBench(): Promise<string> {
  const sql = postgres(LOCAL_DB_URL, { max: 2, onnotice: () => {} });
  const gateways = await startGateways(publicJwks(await ensureSigningKey()));
  let ids: string[] = [];
  const scripts: string[] = [];
  try {
    const users = await benchUsers(sql, "bench", USERS, (n) => `bench-${n}@bench.invalid`);
    ids = users.ids;
    const tokens = users.tokens;

    const getScript = await rotatingTokensScript(tokens, "GET");
    const postScript = await rotatingTokensScript(tokens, "POST", "{}");
    scripts.push(getScript, postScript);
    const urls = {
      whoami: `${gateways.fixtures.url}/functions/v1/whoami`,
      metered: `${gateways.fixtures.url}/functions/v1/metered`,
      profile: `${gateways.functions.url}/functions/v1/profile`,
      skeletonGet: `${gateways.skeletons.url}/functions/v1/skeleton-get`,
      skeletonMetered: `${gateways.skeletons.url}/functions/v1/skeleton-metered`,
    };
    // Warm every user's profile cache and each function process before measuring.
    for (const token of tokens) {
      const headers = { authorization: `Bearer ${token}` };
      await (await fetch(urls.whoami, { headers })).body?.cancel();
      await (await fetch(urls.profile, { headers })).body?.cancel();
      await (await fetch(urls.metered, { method: "POST", headers, body: "{}" })).body?.cancel();
    }
    const sample = await (await fetch(urls.whoami, {
      headers: { authorization: `Bearer ${tokens[0]}` },
    })).text();
    await (await fetch(`${LOCAL_UPSTASH_URL}/set/${SKELETON_KEY}`, {
      method: "POST",
      headers: { authorization: `Bearer ${LOCAL_UPSTASH_TOKEN}` },
      body: sample,
    })).body?.cancel();
    for (const token of tokens.slice(0, 10)) {
      const headers = { authorization: `Bearer ${token}` };
      await (await fetch(urls.skeletonGet, { headers })).body?.cancel();
      await (await fetch(urls.skeletonMetered, { method: "POST", headers, body: "{}" })).body
        ?.cancel();
    }

    const baseline = await loadBare(sample);
    const skeletonGet = await measure(sql, urls.skeletonGet, getScript, "skeleton-get");
    const cached = await measure(sql, urls.whoami, getScript, "whoami");
    const profile = await measure(sql, urls.profile, getScript, "profile");
    const skeletonMetered = await measure(
      sql,
      urls.skeletonMetered,
      postScript,
      "skeleton-metered",
    );
    const metered = await measure(sql, urls.metered, postScript, "metered");
    const [{ overgrant }] = await sql<{ overgrant: number }[]>`
      select count(*)::int as overgrant from public.profiles p join public.plans pl
          on pl.id = p.plan_id where p.id = any(${ids}) and p.usage_count > pl.monthly_quota`;
    const updateTps = await pgbenchBareUpdate(sql, ids);
    const env = { ...LOCAL_FUNCTION_ENV, ...Deno.env.toObject() };
    const profiling = { seconds: SECONDS, connections: CONNECTIONS };
    const profileFrames = await profileUnderLoad(
      `${SUPABASE_DIR}functions/profile/index.ts`,
      env,
      { ...profiling, script: getScript },
    );
    const meteredFrames = await profileUnderLoad(
      `${TEST_FIXTURES}functions/metered/index.ts`,
      env,
      { ...profiling, script: postScript },
    );

    const getRatio = cached.result.requestsPerSecond / baseline.requestsPerSecond;
    const meteredRatio = metered.result.requestsPerSecond / updateTps;
    const own = (m: Measured) => m.cpuPerRequest[FUNCTION_CPU];
    const cpuRatios: [string, Measured, Measured][] = [
      ["`GET whoami` / skeleton GET", cached, skeletonGet],
      ["`GET profile` / skeleton GET", profile, skeletonGet],
      ["`POST metered` / skeleton metered", metered, skeletonMetered],
    ];
    const perRequest = (name: string, m: Measured) =>
      `| ${name} | ${m.roundTripsPerRequest.toFixed(2)} | ${m.statementsPerRequest.toFixed(2)} | ${
        m.metricsInsertsPerRequest.toFixed(3)
      } |`;
    return [
      "## Hot path: warm authenticated requests against the bare baselines",
      "",
      `${USERS} users spread over a plan whose limits never bind; each request carries the JWT of`,
      "the next user in turn. `whoami` is a warm, cached, rate-limited authenticated GET, `profile`",
      "the real function's; `metered` adds one `increment_usage_if_allowed`. Each goes through a",
      "local gateway (one proxy hop that the hosted platform has too) to its function process. The",
      "skeletons are the floor of this architecture, served the same way: `Deno.serve` with one",
      "Upstash REST call to the bridge answering the same JSON (skeleton GET), plus the metered",
      "request's one Postgres statement (skeleton metered); bench/fixtures/functions.",
      "",
      "| endpoint | req/s | p50 ms | p99 ms | non-2xx |",
      "| --- | ---: | ---: | ---: | ---: |",
      resultRow("bare `Deno.serve`, same JSON", baseline),
      resultRow("skeleton GET (`Deno.serve` + one Upstash call)", skeletonGet.result),
      resultRow("`GET whoami` (JWT, profile cache, rate limit)", cached.result),
      resultRow("`GET profile` (the real function, cached)", profile.result),
      resultRow("skeleton metered (+ one Postgres statement)", skeletonMetered.result),
      resultRow("`POST metered` (the above + one usage increment)", metered.result),
      `| pgbench bare conditional \`update\`, spread users (tps) | ${updateTps.toFixed(0)} | | | |`,
      "",
      "| per request | Upstash round trips | Postgres statements | metrics inserts (batched) |",
      "| --- | ---: | ---: | ---: |",
      perRequest("skeleton GET", skeletonGet),
      perRequest("`GET whoami`", cached),
      perRequest("`GET profile`", profile),
      perRequest("skeleton metered", skeletonMetered),
      perRequest("`POST metered`", metered),
      "",
      "Auth network calls per warm request: 0 (tokens are verified in the function against the cached",
      "JWKS; a verified token's verdict is reused until it expires, for at most a minute).",
      "",
      "| target | measured | verdict |",
      "| --- | --- | --- |",
      ...cpuRatios.map(([label, fn, skeleton]) =>
        `| function process CPU per request, ${label} <= ${TARGET_CPU_RATIO}× | ${
          own(fn).toFixed(0)
        } / ${own(skeleton).toFixed(0)} µs = ${(own(fn) / own(skeleton)).toFixed(2)}× | ${
          verdict(own(fn) / own(skeleton) <= TARGET_CPU_RATIO)
        } |`
      ),
      `| cached GET >= 20 % of bare \`Deno.serve\` (req/s) | ${pct(getRatio, 1)} | ${
        verdict(getRatio >= 0.2)
      } |`,
      `| metered >= 50 % of the bare conditional update | ${pct(meteredRatio, 1)} | ${
        verdict(meteredRatio >= 0.5)
      } |`,
      `| 1 Upstash round trip per warm request | ${cached.roundTripsPerRequest.toFixed(2)} / ${
        profile.roundTripsPerRequest.toFixed(2)
      } / ${metered.roundTripsPerRequest.toFixed(2)} | ${
        verdict(
          [cached, profile, metered].every((m) => m.roundTripsPerRequest <= 1.05),
        )
      } |`,
      `| 0 (GET) / 1 (metered) Postgres statements | ${cached.statementsPerRequest.toFixed(2)} / ${
        profile.statementsPerRequest.toFixed(2)
      } / ${metered.statementsPerRequest.toFixed(2)} | ${
        verdict(
          cached.statementsPerRequest < 0.05 && profile.statementsPerRequest < 0.05 &&
            metered.statementsPerRequest <= 1.05,
        )
      } |`,
      `| no usage over-grant | ${overgrant} profiles over quota | ${verdict(overgrant === 0)} |`,
      "",
      "### Where the time goes",
      "",
      "CPU each process of this stack spent per request during the runs above (from /proc: user +",
      "system; Postgres is its postmaster with every backend, those that ended during the run",
      "included; 2 cores in all, shared with wrk, so the total bounds throughput below 2,000,000 /",
      "total req/s). Locally every hop is a Deno HTTP server or client on the same two cores: the",
      "gateway's proxy, the function, and the Upstash bridge that stands in for Upstash; in",
      "production the last two hops are Supabase's and Upstash's machines, not the function's.",
      "",
      ...cpuTable([
        ["skeleton GET", skeletonGet],
        ["`GET whoami`", cached],
        ["`GET profile`", profile],
        ["skeleton metered", skeletonMetered],
        ["`POST metered`", metered],
      ]),
      "",
      "A V8 CPU profile of the function process under the same load (served straight, without the",
      `gateway, sampled every 100 µs for ${SECONDS} s after a 1-s warm-up), bench/cpu-profile.ts.`,
      "",
      ...framesTable("`GET profile` (cached)", profileFrames),
      "",
      ...framesTable("`POST metered`", meteredFrames),
    ].join("\n");
  } finally {
    for (const gateway of Object.values(gateways)) await gateway.close();
    for (const script of scripts) await Deno.remove(script).catch(() => {});
    await sql`delete from auth.users where id = any(${ids})`;
    await sql`delete from public.plans where id = 'bench'`;
    await sql.end();
  }
}
if (import.meta.main) console.log(await hotPathBench());
