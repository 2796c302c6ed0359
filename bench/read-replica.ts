import postgres from "postgres";
import { LOCAL_DB_URL, LOCAL_REPLICA_URL } from "../local/keys.ts";
import { functionEnv, type GatewayProcess, gatewayProcess } from "./functions.ts";
import { load, type LoadResult, rotatingTokensScript } from "./http-load.ts";
import { benchUsers, CONNECTIONS, resultRow, SECONDS } from "./support.ts";

/**
 * The reads that may go to a read replica (`history` pages and `sync`), under the same load
 * twice in one run: through a gateway whose functions read the primary, and through one whose
 * functions read the stack's streaming replica (`SUPABASE_DB_READ_URL`). Needs the stack with
 * its replica (`deno task up --replica`; `deno task bench` starts it so); on its own,
 * `deno run -A bench/read-replica.ts` prints its section.
 */

const USERS = 100;
const ANALYSES_PER_USER = 30;
const PLAN = "bench_replica";
const EMAIL_LIKE = "bench-replica-%@bench.invalid";
const emailOf = (n: number) => `bench-replica-${n}@bench.invalid`;

async function replicaAnswers(): Promise<boolean> {
  const replica = postgres(LOCAL_REPLICA_URL, { max: 1, connect_timeout: 2, onnotice: () => {} });
  try {
    const [{ standby }] = await replica`select pg_is_in_recovery() as standby`;
    return standby;
  } catch {
    return false;
  } finally {
    await replica.end();
  }
}

/** The bench users, each with `ANALYSES_PER_USER` analyses to page through; their tokens. */
async function usersWithHistory(sql: postgres.Sql): Promise<string[]> {
  const { ids, tokens } = await benchUsers(sql, PLAN, USERS, emailOf);
  await sql`
    insert into public.analyses (user_id, created_at, analysis_type, input_kind, result, model)
    select u.id, now() - n * interval '1 hour', 'caption', 'text',
           '{"summary":"bench","scores":{},"findings":[],"recommendations":[]}'::jsonb, 'bench'
      from unnest(${ids}::uuid[]) as u(id), generate_series(1, ${ANALYSES_PER_USER}::int) as n`;
  return tokens;
}

async function cleanUp(sql: postgres.Sql) {
  await sql`delete from auth.users where email like ${EMAIL_LIKE}`;
  await sql`delete from public.plans where id = ${PLAN}`;
}

interface Runs {
  history: LoadResult;
  sync: LoadResult;
}

async function runs(gateway: GatewayProcess, script: string, tokens: string[]): Promise<Runs> {
  const at = (name: string) => `${gateway.url}/functions/v1/${name}`;
  // Warm both function processes and every user's profile cache.
  for (const token of tokens) {
    for (const name of ["history", "sync"]) {
      const response = await fetch(at(name), { headers: { authorization: `Bearer ${token}` } });
      if (!response.ok) throw new Error(`${name} answered ${response.status} while warming up`);
      await response.body?.cancel();
    }
  }
  const options = { connections: CONNECTIONS, seconds: SECONDS, script };
  return { history: await load(at("history"), options), sync: await load(at("sync"), options) };
}

export async function readReplicaBench(): Promise<string> {
  const title = "## Reads on the read replica beside the primary: history and sync";
  if (!(await replicaAnswers())) {
    return `${title}\n\nSkipped: no replica at ${LOCAL_REPLICA_URL} ` +
      "(start the stack with `deno task up --replica`).";
  }
  const sql = postgres(Deno.env.get("SUPABASE_DB_URL") ?? LOCAL_DB_URL, {
    max: 2,
    onnotice: () => {},
  });
  const results: [string, Runs][] = [];
  try {
    await cleanUp(sql);
    const tokens = await usersWithHistory(sql);
    const script = await rotatingTokensScript(tokens, "GET");
    for (
      const [reads, readUrl] of [["primary", ""], ["replica", LOCAL_REPLICA_URL]] as const
    ) {
      const gateway = await gatewayProcess(
        functionEnv({ SUPABASE_DB_READ_URL: readUrl }),
        () => {},
      );
      try {
        results.push([reads, await runs(gateway, script, tokens)]);
      } finally {
        await gateway.close();
      }
    }
  } finally {
    await cleanUp(sql);
    await sql.end();
  }
  return [
    title,
    "",
    `${USERS} users with ${ANALYSES_PER_USER} analyses each, a token per request in rotation; the`,
    "same functions reading the primary (`SUPABASE_DB_READ_URL` unset) and then the stack's",
    "streaming replica, on the same machine: what the replica takes off the primary, not a",
    "speed-up of its own.",
    "",
    "| endpoint | reads from | req/s | p50 ms | p99 ms | non-2xx |",
    "| --- | --- | ---: | ---: | ---: | ---: |",
    ...results.flatMap(([reads, r]) => [
      resultRow(`\`GET history\` | ${reads}`, r.history),
      resultRow(`\`GET sync\` | ${reads}`, r.sync),
    ]),
  ].join("\n");
}

if (import.meta.main) console.log(await readReplicaBench());
