/**
 * The well-known values of the Supabase CLI's local stack, so that an Expo app (or any
 * supabase-js client) pointed at a local Supabase works against this stack unchanged.
 * They are public demo values, not secrets: they only ever guard 127.0.0.1.
 */

export const LOCAL_JWT_SECRET = "super-secret-jwt-token-with-at-least-32-characters-long";

export const LOCAL_ANON_KEY =
  "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJzdXBhYmFzZS1kZW1vIiwicm9sZSI6ImFub24iLCJleHAiOjE5ODM4MTI5OTZ9.CRXP1A7WOeoJeXxjNni43kdQwgnWNReilDMblYTn_I0";

export const LOCAL_SERVICE_ROLE_KEY =
  "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJzdXBhYmFzZS1kZW1vIiwicm9sZSI6InNlcnZpY2Vfcm9sZSIsImV4cCI6MTk4MzgxMjk5Nn0.EGIM96RAZx35lJzdJsyH-qQwv8Hdp7fsn3W0YpN81IU";

/** The bearer token the local Upstash-REST bridge accepts. */
export const LOCAL_UPSTASH_TOKEN = "local-upstash-token";

/**
 * The ports of the local contract, by the variable that moves each one, so that a second stack
 * (another checkout, a parallel CI job) can run beside the first.
 */
export const DEV_PORTS = {
  LOCAL_GATEWAY_PORT: 54321,
  LOCAL_DB_PORT: 54322,
  LOCAL_BRIDGE_PORT: 8079,
  LOCAL_REDIS_PORT: 54380,
  /** The streaming read replica, when the stack starts one (`up --replica`, LOCAL_REPLICA=1). */
  LOCAL_REPLICA_PORT: 54332,
} as const;

/**
 * Where `deno task test` puts its stack unless told otherwise: a fixed range of its own, so the
 * test run starts beside a running `deno task dev` (Quick start command 2 beside command 1).
 * Below 32768, out of Linux's ephemeral range: the thousands of client connections a test run
 * opens take their local ports from that range, and one of them can hold a fixed port there
 * just when a stack wants to listen on it. The tests' extra stacks use 26xxx and 28xxx for the
 * same reason.
 */
export const TEST_PORTS: Record<keyof typeof DEV_PORTS, number> = {
  LOCAL_GATEWAY_PORT: 25421,
  LOCAL_DB_PORT: 25422,
  LOCAL_BRIDGE_PORT: 25479,
  LOCAL_REDIS_PORT: 25480,
  LOCAL_REPLICA_PORT: 25432,
};

const port = (variable: keyof typeof DEV_PORTS) =>
  Number(Deno.env.get(variable) ?? DEV_PORTS[variable]);

export const LOCAL_PORTS = {
  gateway: port("LOCAL_GATEWAY_PORT"),
  postgres: port("LOCAL_DB_PORT"),
  upstashBridge: port("LOCAL_BRIDGE_PORT"),
  /** Redis itself; only the bridge talks to it. */
  redis: port("LOCAL_REDIS_PORT"),
  /** The read replica of `postgres`, only when the stack is asked for one. */
  replica: port("LOCAL_REPLICA_PORT"),
} as const;

/**
 * Where a stack keeps its cluster, Redis, logs, pid file and signing key (git-ignored). Each stack
 * has its own, so the test run never touches the dev stack's data.
 */
export const LOCAL_STATE_DIR = Deno.env.get("STACK_STATE_DIR") ??
  new URL("../.local/dev", import.meta.url).pathname;

export const LOCAL_SUPABASE_URL = `http://127.0.0.1:${LOCAL_PORTS.gateway}`;
export const LOCAL_DB_URL =
  `postgresql://postgres:postgres@127.0.0.1:${LOCAL_PORTS.postgres}/postgres`;
export const LOCAL_UPSTASH_URL = `http://127.0.0.1:${LOCAL_PORTS.upstashBridge}`;
export const LOCAL_REPLICA_URL =
  `postgresql://postgres:postgres@127.0.0.1:${LOCAL_PORTS.replica}/postgres`;
