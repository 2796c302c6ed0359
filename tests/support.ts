import { createClient, type SupabaseClient } from "@supabase/supabase-js";
import { Redis } from "@upstash/redis";
import postgres from "postgres";
import { type Gateway, startGateway } from "../local/gateway.ts";
import { LOCAL_ANON_KEY } from "../local/keys.ts";
import { LocalRedis } from "../local/redis.ts";
import { ensureSigningKey, publicJwks, signUserToken } from "../local/signing-key.ts";
import { LOCAL_FUNCTION_ENV } from "../local/stack.ts";
import { ensureUser } from "../local/users.ts";
import { refreshProfile } from "../supabase/functions/_shared/profile-cache.ts";

/** What the tests share: the stack's settings, clients shaped like the app's, and users. */

export const env: Record<string, string> = { ...LOCAL_FUNCTION_ENV, ...Deno.env.toObject() };
export const SUPABASE_URL = env.SUPABASE_URL;
export const ISSUER = `${SUPABASE_URL}/auth/v1`;
const STATE_DIR = env.STACK_STATE_DIR ?? new URL("../.local/dev", import.meta.url).pathname;

/** The stack's Redis, for tests that take it away and bring it back. */
export const localRedis = new LocalRedis(STATE_DIR);

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
