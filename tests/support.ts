import { createClient, type SupabaseClient } from "@supabase/supabase-js";
import { Redis } from "@upstash/redis";
import { SignJWT } from "jose";
import postgres from "postgres";
import { type Gateway, startGateway } from "../local/gateway.ts";
import { LOCAL_ANON_KEY, LOCAL_STATE_DIR } from "../local/keys.ts";
import { LocalPostgres } from "../local/postgres.ts";
import { waitFor } from "../local/process.ts";
import { LocalRedis } from "../local/redis.ts";
import { ensureSigningKey, publicJwks, signUserToken } from "../local/signing-key.ts";
import { LOCAL_FUNCTION_ENV } from "../local/stack.ts";
import { ensureUser } from "../local/users.ts";
import type { Handler } from "../supabase/functions/_shared/pipeline.ts";
import { refreshProfile } from "../supabase/functions/_shared/profile-cache.ts";

/** What the tests share: the stack's settings, clients shaped like the app's, and users. */

export const env: Record<string, string> = { ...LOCAL_FUNCTION_ENV, ...Deno.env.toObject() };
export const SUPABASE_URL = env.SUPABASE_URL;
export const ISSUER = `${SUPABASE_URL}/auth/v1`;

/**
 * The environment of a stack that a test starts as a developer would: only what their shell has
 * (the stack derives everything else from its ports and state folder in `vars`), plus `vars`.
 */
export function shellEnv(vars: Record<string, string>): Record<string, string> {
  const denoDir = Deno.env.get("DENO_DIR");
  return {
    PATH: Deno.env.get("PATH") ?? "",
    HOME: Deno.env.get("HOME") ?? "",
    ...(denoDir ? { DENO_DIR: denoDir } : {}),
    ...vars,
  };
}

/** The stack's Redis, for tests that take it away and bring it back. */
export const localRedis = new LocalRedis(LOCAL_STATE_DIR);

/**
 * A test that talks to the running stack. Its servers and pooled keep-alive connections outlive
 * any one test by design, so Deno's per-test op and resource accounting is off for these.
 */
export function stackTest(name: string, fn: () => Promise<void>) {
  Deno.test({ name, fn, sanitizeOps: false, sanitizeResources: false });
}

/** A supabase-js client as the Expo app builds it, optionally signed in with `token`. */
export function appClient(token?: string, url = SUPABASE_URL): SupabaseClient {
  return createClient(url, env.SUPABASE_ANON_KEY ?? LOCAL_ANON_KEY, {
    auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
    global: token ? { headers: { Authorization: `Bearer ${token}` } } : {},
  });
}

export interface Invoked {
  status: number;
  headers: Headers;
  // deno-lint-ignore no-explicit-any
  body: any;
}

/** `functions.invoke`, with the status, headers and parsed body whatever the outcome. */
export async function invoke(
  client: SupabaseClient,
  name: string,
  options: Parameters<SupabaseClient["functions"]["invoke"]>[1] = {},
): Promise<Invoked> {
  const { data, error, response } = await client.functions.invoke(name, options);
  if (!response) throw error;
  if (!error) return { status: response.status, headers: response.headers, body: data };
  const text = await response.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    // Not JSON: the test will say so when it looks at the body.
  }
  return { status: response.status, headers: response.headers, body };
}

export function database(): postgres.Sql {
  return postgres(env.SUPABASE_DB_URL, { max: 4, onnotice: () => {} });
}

/** The units of usage the user has spent this period, as the database holds them. */
export async function usedUnits(userId: string): Promise<number> {
  const sql = database();
  try {
    const [row] = await sql<{ usage_count: number }[]>`
      select usage_count from public.profiles where id = ${userId}`;
    return row.usage_count;
  } finally {
    await sql.end();
  }
}

export interface TestUser {
  id: string;
  email: string;
  token: string;
}

/** A new user in `auth.users` with an ES256 access token from the stack's signing key. */
export async function createUser(prefix = "user"): Promise<TestUser> {
  const email = `${prefix}-${crypto.randomUUID()}@example.test`;
  const sql = database();
  try {
    const { id } = await ensureUser(sql, email);
    const token = await signUserToken(await ensureSigningKey(), { id, email }, { issuer: ISSUER });
    return { id, email, token };
  } finally {
    await sql.end();
  }
}

/**
 * A second gateway over `tests/fixtures/functions`, whose functions exist only to exercise the
 * shared pipeline. `functionEnv` overrides what those functions read.
 */
export function fixtureGateway(
  functionEnv: Record<string, string> = {},
  log: (line: string) => void = () => {},
): Promise<Gateway> {
  return gatewayOver(new URL("./fixtures/", import.meta.url).pathname, functionEnv, log);
}

/** A gateway in this process over `<dir>/functions` and `<dir>/config.toml`. */
async function gatewayOver(
  dir: string,
  functionEnv: Record<string, string>,
  log: (line: string) => void,
): Promise<Gateway> {
  const gateway = await startGateway({
    port: 0,
    functionsDir: `${dir}functions`,
    configPath: `${dir}config.toml`,
    env: { ...env, ...functionEnv },
    jwks: publicJwks(await ensureSigningKey()),
    jwtSecret: env.JWT_SECRET,
    issuer: ISSUER,
    log,
  });
  // Its function processes must not outlive the test module; close() signals them at once.
  addEventListener("unload", () => void gateway.close());
  return gateway;
}

/** The Upstash client the functions use, pointed at the stack's bridge. */
export function upstash(): Redis {
  return new Redis({
    url: env.UPSTASH_REDIS_REST_URL,
    token: env.UPSTASH_REDIS_REST_TOKEN,
    enableTelemetry: false,
  });
}

/**
 * Changes a user's plan the way the Stripe webhook does: the row in Postgres, then the profile
 * cache refreshed from it.
 */
export async function changePlan(userId: string, planId: string) {
  const sql = database();
  try {
    await sql`update public.profiles set plan_id = ${planId} where id = ${userId}`;
    await refreshProfile(upstash(), sql, userId);
  } finally {
    await sql.end();
  }
}

/** Sets the bridge's artificial delay before every Redis answer (0 turns it off). */
export async function delayRedis(ms: number) {
  const response = await fetch(`${env.UPSTASH_REDIS_REST_URL}/__local/delay`, {
    method: "POST",
    headers: { authorization: `Bearer ${env.UPSTASH_REDIS_REST_TOKEN}` },
    body: JSON.stringify({ ms }),
  });
  await response.body?.cancel();
  if (!response.ok) throw new Error(`bridge delay: ${response.status}`);
}

/** How many command requests (round trips) and commands the bridge has answered so far. */
export async function bridgeStats(): Promise<{ requests: number; commands: number }> {
  const response = await fetch(`${env.UPSTASH_REDIS_REST_URL}/__local/stats`, {
    headers: { authorization: `Bearer ${env.UPSTASH_REDIS_REST_TOKEN}` },
  });
  return await response.json();
}

/**
 * Waits until the current minute has enough of it left for a burst, so that a test counting
 * "exactly the limit" never straddles the per-minute window boundary.
 */
export async function atStartOfWindow(secondsNeeded = 20) {
  const intoMinute = (Date.now() % 60_000) / 1000;
  if (intoMinute > 60 - secondsNeeded) {
    await new Promise((resolve) => setTimeout(resolve, (61 - intoMinute) * 1000));
  }
}

/**
 * A gateway in a process of its own over the fixture functions, as a second or third instance
 * sharing the stack's Redis and database.
 */
export async function gatewayProcess(): Promise<{ url: string; close(): Promise<void> }> {
  const fixtures = new URL("./fixtures/", import.meta.url).pathname;
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      new URL("../local/gateway.ts", import.meta.url).pathname,
      "--functions-dir",
      `${fixtures}functions`,
      "--config",
      `${fixtures}config.toml`,
    ],
    env,
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const lines = child.stdout.pipeThrough(new TextDecoderStream());
  const reader = lines.getReader();
  let text = "";
  while (!text.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) throw new Error("the gateway process exited before it listened");
    text += value;
  }
  const url = JSON.parse(text.split("\n")[0]).gateway as string;
  // Its functions log through its stdout; keep reading so they never block on a full pipe.
  const drained = (async () => {
    while (!(await reader.read()).done) { /* discard */ }
  })();
  addEventListener("unload", () => {
    try {
      child.kill("SIGTERM");
    } catch { /* already gone */ }
  });
  return {
    url,
    async close() {
      child.kill("SIGTERM");
      await child.status;
      await drained.catch(() => {});
    },
  };
}

/**
 * A gateway of its own over the real `supabase/functions`, for tests whose functions must talk
 * to a test server of theirs (an OpenAI- or Stripe-compatible one): `functionEnv` overrides what
 * those functions read, on top of the stack's settings.
 */
export function functionsGateway(
  functionEnv: Record<string, string>,
  log: (line: string) => void = () => {},
): Promise<Gateway> {
  return gatewayOver(new URL("../supabase/", import.meta.url).pathname, functionEnv, log);
}

/**
 * One run of the job worker (`process-jobs`) on the gateway at `url`, with the service-role key
 * as pg_cron sends it; returns the run's summary.
 */
export async function processJobs(url = SUPABASE_URL): Promise<Invoked> {
  const serviceRole = appClient(env.SUPABASE_SERVICE_ROLE_KEY, url);
  return await invoke(serviceRole, "process-jobs", { body: { source: "test" } });
}

/** A token of `user` that expired an hour ago, correctly signed otherwise. */
export async function expiredToken(user: TestUser): Promise<string> {
  return await signUserToken(await ensureSigningKey(), user, {
    issuer: ISSUER,
    expiresInSeconds: -3600,
  });
}

/** What `addAnalyses` and `addMessages` return of each row they write. */
export interface AddedRow {
  id: string;
  /** As Postgres keeps it, with microseconds. */
  created_at: string;
}

/** Oldest first by (created_at, id), the order the history functions page in (reversed). */
const inHistoryOrder = (rows: AddedRow[]) =>
  rows.toSorted((a, b) => a.created_at.localeCompare(b.created_at) || a.id.localeCompare(b.id));

/** Runs `work` in a transaction as the service role, the role the event tables grant writes to. */
async function asServiceRole<T>(work: (sql: postgres.TransactionSql) => Promise<T>): Promise<T> {
  const sql = database();
  try {
    return await sql.begin(async (tx) => {
      await tx`set local role service_role`;
      return await work(tx);
    }) as T;
  } finally {
    await sql.end();
  }
}

/**
 * Analyses of `userId` written straight into the table, as `analyze` writes them: one per
 * instant in `at` (default: one, now), oldest first in the answer.
 */
export function addAnalyses(userId: string, at: Date[] = [new Date()]): Promise<AddedRow[]> {
  return asServiceRole((tx) =>
    tx<AddedRow[]>`
      insert into public.analyses (user_id, created_at, analysis_type, input_kind, result, model)
      select ${userId}, t.at, 'caption', 'text',
             jsonb_build_object('summary', 'analysis ' || t.n, 'scores', jsonb_build_object('n', 50),
                                'findings', '[]'::jsonb, 'recommendations', '[]'::jsonb),
             'test-model'
        from unnest(${at.map((d) => d.toISOString())}::timestamptz[]) with ordinality as t(at, n)
      returning id, to_char(created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
                as created_at`
  ).then(inHistoryOrder);
}

/** `count` chat messages of one conversation, alternating user and assistant, as `chat` writes them. */
export function addMessages(
  userId: string,
  conversationId: string,
  count = 2,
): Promise<AddedRow[]> {
  return asServiceRole((tx) =>
    tx<AddedRow[]>`
      insert into public.chat_messages (user_id, conversation_id, role, content, model, created_at)
      select ${userId}, ${conversationId}, case when n % 2 = 1 then 'user' else 'assistant' end,
             'message ' || n, 'test-model', now() + n * interval '1 microsecond'
        from generate_series(1, ${count}::int) as n
      returning id, to_char(created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
                as created_at`
  ).then(inHistoryOrder);
}

/**
 * Puts `user` on a plan of their own: the free plan with `changes`; returns what puts them back
 * on free and removes that plan.
 */
export async function ownPlan(
  user: TestUser,
  changes: Record<string, number>,
): Promise<() => Promise<void>> {
  const plan = `test_${crypto.randomUUID().slice(0, 8)}`;
  const sql = database();
  try {
    await sql`
      insert into public.plans
      select ${plan}, 'Test plan', monthly_quota, ai_per_minute, general_per_minute,
             upload_per_minute, null, now(), now(), max_output_tokens, chat_history_chars,
             cache_hit_cost
        from public.plans where id = 'free'`;
    await sql`update public.plans set ${sql(changes)} where id = ${plan}`;
  } finally {
    await sql.end();
  }
  await changePlan(user.id, plan);
  return async () => {
    await changePlan(user.id, "free");
    const cleanup = database();
    try {
      await cleanup`delete from public.plans where id = ${plan}`;
    } finally {
      await cleanup.end();
    }
  };
}

/** Puts `user` on a plan of their own whose `general` limit is `perMinute`. */
export function limitGeneral(user: TestUser, perMinute: number): Promise<() => Promise<void>> {
  return ownPlan(user, { general_per_minute: perMinute });
}

/** Puts the user's profile in the profile cache, as any request of theirs would. */
export async function cacheProfile(userId: string) {
  const sql = database();
  try {
    await refreshProfile(upstash(), sql, userId);
  } finally {
    await sql.end();
  }
}

/** The stack's Postgres, for tests that take it away and bring it back (the stack survives it). */
export const localPostgres = new LocalPostgres(LOCAL_STATE_DIR);

/**
 * Waits until `health` on the gateway at `url` answers 200 again, as every fault drill does at
 * its end, so the tests after it find the stack whole.
 */
export async function waitUntilHealthy(url = SUPABASE_URL, timeoutMs = 30_000) {
  await waitFor(`health 200 at ${url}`, async () => {
    const response = await fetch(`${url}/functions/v1/health`);
    await response.body?.cancel();
    return response.status === 200;
  }, timeoutMs);
}

/**
 * Calls a function's handler in this process, the way its `Deno.serve` would, with no server in
 * between: the functions' settings are put into this process's environment first (a value set
 * there already wins, as in the stack), and `user` signs in with an HS256 token of the legacy
 * JWT secret, which is verified without fetching the JWKS from a gateway.
 */
export async function callHandler(
  handler: Handler,
  path: string,
  options: { user?: TestUser; method?: string; body?: unknown; headers?: HeadersInit } = {},
): Promise<Response> {
  for (const [key, value] of Object.entries(env)) {
    if (Deno.env.get(key) === undefined) Deno.env.set(key, value);
  }
  const headers = new Headers(options.headers);
  if (options.user) {
    const token = await new SignJWT({ email: options.user.email, role: "authenticated" })
      .setProtectedHeader({ alg: "HS256", typ: "JWT" })
      .setSubject(options.user.id)
      .setAudience("authenticated")
      .setIssuer(ISSUER)
      .setIssuedAt()
      .setExpirationTime("10 minutes")
      .sign(new TextEncoder().encode(env.JWT_SECRET));
    headers.set("authorization", `Bearer ${token}`);
  }
  if (options.body !== undefined) headers.set("content-type", "application/json");
  return await handler(
    new Request(`${SUPABASE_URL}/functions/v1/${path}`, {
      method: options.method ?? "GET",
      headers,
      body: options.body === undefined ? undefined : JSON.stringify(options.body),
    }),
  );
}
