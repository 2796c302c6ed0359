import postgres from "postgres";
import { startGateway } from "../local/gateway.ts";
import {
  LOCAL_DB_URL,
  LOCAL_JWT_SECRET,
  LOCAL_SUPABASE_URL,
  LOCAL_UPSTASH_TOKEN,
  LOCAL_UPSTASH_URL,
} from "../local/keys.ts";
import { run } from "../local/process.ts";
import { ensureSigningKey, publicJwks, signUserToken } from "../local/signing-key.ts";
import { LOCAL_FUNCTION_ENV } from "../local/stack.ts";
import { ensureUser } from "../local/users.ts";
import { load, type LoadResult, rotatingTokensScript } from "./http-load.ts";
import { CONNECTIONS, loadBare, resultRow, SECONDS } from "./support.ts";

/**
 * The hot path every authenticated request pays (JWT check, profile cache, rate limit, and for a
 * metered request one usage increment) through a gateway, against a bare `Deno.serve` and
 * against pgbench's bare conditional `update`, all in one run on this machine.
 *
 * It runs the test fixtures `whoami` (a cached authenticated GET) and `metered` (the metered
 * path without a model call) for users spread over a plan whose limits never bind.
 */

const USERS = 200;
const FIXTURES = new URL("../tests/fixtures/", import.meta.url).pathname;

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

/** CPU seconds (user + system) the processes matching each pattern have used so far. */
async function cpuSeconds(patterns: Record<string, string[]>): Promise<Record<string, number>> {
  const ticksPerSecond = 100;
  const totals: Record<string, number> = {};
  for (const [name, args] of Object.entries(patterns)) {
    const pids = (await run("pgrep", args).catch(() => "")).split("\n").filter(Boolean);
    let ticks = 0;
    for (const pid of pids) {
      const stat = await Deno.readTextFile(`/proc/${pid}/stat`).catch(() => "");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      ticks += Number(fields[11] ?? 0) + Number(fields[12] ?? 0);
    }
    totals[name] = ticks / ticksPerSecond;
  }
  return totals;
}

/** Where the CPU goes: the machine's processes that serve a request, by what they are. */
function processesFor(fn: string): Record<string, string[]> {
  return {
    [`function process (${fn})`]: ["-f", `function-worker.ts .*/${fn}/index.ts`],
    "gateway (this benchmark's process)": ["-f", "bench/run.ts"],
    "Upstash bridge (the stack's process)": ["-f", "local/stack.ts dev"],
    "redis-server": ["-x", "redis-server"],
    "Postgres (all backends)": ["-u", "postgres"],
  };
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
  const cpuBefore = await cpuSeconds(processesFor(fn));
  const result = await load(url, { connections: CONNECTIONS, seconds: SECONDS, script });
  const cpuAfter = await cpuSeconds(processesFor(fn));
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
    cpuPerRequest: Object.fromEntries(
      Object.keys(cpuAfter).map((name) => [
        name,
        ((cpuAfter[name] - cpuBefore[name]) / result.requests) * 1e6,
      ]),
    ),
  };
}

function cpuTable(cached: Measured, metered: Measured): string[] {
  const names = Object.keys(cached.cpuPerRequest).map((name) => name.replace(/ \(whoami\)$/, ""));
  const rows = names.map((name, i) => {
    const a = Object.values(cached.cpuPerRequest)[i];
    const b = Object.values(metered.cpuPerRequest)[i];
    return `| ${name} | ${a.toFixed(0)} | ${b.toFixed(0)} |`;
  });
  const sum = (m: Measured) => Object.values(m.cpuPerRequest).reduce((x, y) => x + y, 0);
  return [
    "| CPU µs per request | `GET whoami` | `POST metered` |",
    "| --- | ---: | ---: |",
    ...rows,
    `| total | ${sum(cached).toFixed(0)} | ${sum(metered).toFixed(0)} |`,
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

export async function hotPathBench(): Promise<string> {
  const sql = postgres(LOCAL_DB_URL, { max: 2, onnotice: () => {} });
  const key = await ensureSigningKey();
  const gateway = await startGateway({
    port: 0,
    functionsDir: `${FIXTURES}functions`,
    configPath: `${FIXTURES}config.toml`,
    env: { ...LOCAL_FUNCTION_ENV, ...Deno.env.toObject() },
    jwks: publicJwks(key),
    jwtSecret: LOCAL_JWT_SECRET,
    issuer: `${LOCAL_SUPABASE_URL}/auth/v1`,
    log: () => {},
  });
  const ids: string[] = [];
  try {
    await sql`
      insert into public.plans (id, name, monthly_quota, ai_per_minute, general_per_minute,
                                upload_per_minute)
      values ('bench', 'Benchmark', 1000000000, 1000000000, 1000000000, 1000000000)
      on conflict (id) do nothing`;
    const tokens: string[] = [];
    for (let i = 0; i < USERS; i++) {
      const email = `bench-${i}@bench.invalid`;
      const { id } = await ensureUser(sql, email);
      ids.push(id);
      tokens.push(
        await signUserToken(key, { id, email }, { issuer: `${LOCAL_SUPABASE_URL}/auth/v1` }),
      );
    }
    await sql`update public.profiles set plan_id = 'bench', usage_count = 0
               where id = any(${ids})`;

    const getScript = await rotatingTokensScript(tokens, "GET");
    const postScript = await rotatingTokensScript(tokens, "POST", "{}");
    const whoamiUrl = `${gateway.url}/functions/v1/whoami`;
    const meteredUrl = `${gateway.url}/functions/v1/metered`;
    // Warm every user's profile cache and each function process before measuring.
    for (const token of tokens) {
      const headers = { authorization: `Bearer ${token}` };
      await (await fetch(whoamiUrl, { headers })).body?.cancel();
      await (await fetch(meteredUrl, { method: "POST", headers, body: "{}" })).body?.cancel();
    }
    const sample = await (await fetch(whoamiUrl, {
      headers: { authorization: `Bearer ${tokens[0]}` },
    })).text();

    const baseline = await loadBare(sample);
    const cached = await measure(sql, whoamiUrl, getScript, "whoami");
    const metered = await measure(sql, meteredUrl, postScript, "metered");
    const [{ overgrant }] = await sql<{ overgrant: number }[]>`
      select count(*)::int as overgrant from public.profiles p join public.plans pl
          on pl.id = p.plan_id where p.id = any(${ids}) and p.usage_count > pl.monthly_quota`;
    const updateTps = await pgbenchBareUpdate(sql, ids);

    const getRatio = cached.result.requestsPerSecond / baseline.requestsPerSecond;
    const meteredRatio = metered.result.requestsPerSecond / updateTps;
    const perRequest = (name: string, m: Measured) =>
      `| ${name} | ${m.roundTripsPerRequest.toFixed(2)} | ${m.statementsPerRequest.toFixed(2)} | ${
        m.metricsInsertsPerRequest.toFixed(3)
      } |`;
    return [
      "## Hot path: warm authenticated requests against the bare baselines",
      "",
      `${USERS} users spread over a plan whose limits never bind; each request carries the JWT of`,
      "the next user in turn. `whoami` is a warm, cached, rate-limited authenticated GET; `metered`",
      "adds one `increment_usage_if_allowed`. Both go through a local gateway (one proxy hop that",
      "the hosted platform has too) to their function process.",
      "",
      "| endpoint | req/s | p50 ms | p99 ms | non-2xx |",
      "| --- | ---: | ---: | ---: | ---: |",
      resultRow("bare `Deno.serve`, same JSON", baseline),
      resultRow("`GET whoami` (JWT, profile cache, rate limit)", cached.result),
      resultRow("`POST metered` (the above + one usage increment)", metered.result),
      `| pgbench bare conditional \`update\`, spread users (tps) | ${updateTps.toFixed(0)} | | | |`,
      "",
      "| per request | Upstash round trips | Postgres statements | metrics inserts (batched) |",
      "| --- | ---: | ---: | ---: |",
      perRequest("`GET whoami`", cached),
      perRequest("`POST metered`", metered),
      "",
      "Auth network calls per warm request: 0 (tokens are verified in the function against the cached",
      "JWKS; a verified token's verdict is reused until it expires, for at most a minute).",
      "",
      "| target | measured | verdict |",
      "| --- | --- | --- |",
      `| cached GET >= 20 % of bare \`Deno.serve\` | ${pct(getRatio, 1)} | ${
        verdict(getRatio >= 0.2)
      } |`,
      `| metered >= 50 % of the bare conditional update | ${pct(meteredRatio, 1)} | ${
        verdict(meteredRatio >= 0.5)
      } |`,
      `| 1 Upstash round trip per warm request | ${cached.roundTripsPerRequest.toFixed(2)} / ${
        metered.roundTripsPerRequest.toFixed(2)
      } | ${
        verdict(cached.roundTripsPerRequest <= 1.05 && metered.roundTripsPerRequest <= 1.05)
      } |`,
      `| 0 (GET) / 1 (metered) Postgres statements | ${cached.statementsPerRequest.toFixed(2)} / ${
        metered.statementsPerRequest.toFixed(2)
      } | ${verdict(cached.statementsPerRequest < 0.05 && metered.statementsPerRequest <= 1.05)} |`,
      `| no usage over-grant | ${overgrant} profiles over quota | ${verdict(overgrant === 0)} |`,
      "",
      "### Where the time goes",
      "",
      "CPU each process spent per request during the runs above (from /proc; 2 cores in all, shared",
      "with wrk, so the total bounds throughput below 2,000,000 / total req/s). Locally every hop is a Deno",
      "HTTP server or client on the same two cores: the gateway's proxy, the function, and the",
      "Upstash bridge that stands in for Upstash; in production the last two hops are Supabase's and",
      "Upstash's machines, not the function's.",
      "",
      ...cpuTable(cached, metered),
    ].join("\n");
  } finally {
    await gateway.close();
    await sql`delete from auth.users where id = any(${ids})`;
    await sql`delete from public.plans where id = 'bench'`;
    await sql.end();
  }
}
