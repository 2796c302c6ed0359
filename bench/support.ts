import type postgres from "postgres";
import { LOCAL_SUPABASE_URL } from "../local/keys.ts";
import { ensureSigningKey, signUserToken } from "../local/signing-key.ts";
import { ensureUser } from "../local/users.ts";
import { load, type LoadResult } from "./http-load.ts";

/** What the benchmarks share: the load settings and the bare `Deno.serve` baseline. */

export const SECONDS = Number(Deno.env.get("BENCH_SECONDS") ?? "10");
export const CONNECTIONS = 64;

const BARE_SERVER = new URL("./bare-server.ts", import.meta.url).pathname;

/** Starts bench/bare-server.ts answering `body`; returns its URL and a stop function. */
async function bareServer(body: string) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-net", BARE_SERVER, body],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const { value } = await reader.read();
  reader.releaseLock();
  const { port } = JSON.parse(value ?? "{}");
  return {
    url: `http://127.0.0.1:${port}/`,
    async stop() {
      child.kill("SIGTERM");
      await child.status;
      await child.stdout.cancel().catch(() => {});
    },
  };
}

/** The baseline: a bare `Deno.serve` answering `body`, under the same load as the functions. */
export async function loadBare(body: string): Promise<LoadResult> {
  const bare = await bareServer(body);
  try {
    return await load(bare.url, { connections: CONNECTIONS, seconds: SECONDS });
  } finally {
    await bare.stop();
  }
}

/** One Markdown table row: name, req/s, p50, p99, non-2xx. */
export function resultRow(name: string, r: LoadResult): string {
  return `| ${name} | ${r.requestsPerSecond.toFixed(0)} | ${r.p50Ms.toFixed(2)} | ${
    r.p99Ms.toFixed(2)
  } | ${r.non2xx} |`;
}

/**
 * `count` users (emails from `emailOf`) on a plan `plan` whose limits never bind, with no usage
 * yet, and a token for each: the callers of an HTTP benchmark.
 */
export async function benchUsers(
  sql: postgres.Sql,
  plan: string,
  count: number,
  emailOf: (n: number) => string,
): Promise<{ ids: string[]; tokens: string[] }> {
  const key = await ensureSigningKey();
  await sql`
    insert into public.plans (id, name, monthly_quota, ai_per_minute, general_per_minute,
                              upload_per_minute)
    values (${plan}, 'Benchmark', 1000000000, 1000000000, 1000000000, 1000000000)
    on conflict (id) do nothing`;
  const ids: string[] = [];
  const tokens: string[] = [];
  for (let n = 0; n < count; n++) {
    const email = emailOf(n);
    const { id } = await ensureUser(sql, email);
    ids.push(id);
    tokens.push(
      await signUserToken(key, { id, email }, { issuer: `${LOCAL_SUPABASE_URL}/auth/v1` }),
    );
  }
  await sql`update public.profiles set plan_id = ${plan}, usage_count = 0 where id = any(${ids})`;
  return { ids, tokens };
}
