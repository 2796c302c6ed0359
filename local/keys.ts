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
 * The ports of the local contract. Each can be moved with an environment variable, so that a
 * second stack (another checkout, a parallel CI job) can run beside the first.
 */
const port = (variable: string, fallback: number) => Number(Deno.env.get(variable) ?? fallback);

export const LOCAL_PORTS = {
  gateway: port("LOCAL_GATEWAY_PORT", 54321),
  postgres: port("LOCAL_DB_PORT", 54322),
  upstashBridge: port("LOCAL_BRIDGE_PORT", 8079),
  /** Redis itself; only the bridge talks to it. */
  redis: port("LOCAL_REDIS_PORT", 54380),
} as const;

export const LOCAL_SUPABASE_URL = `http://127.0.0.1:${LOCAL_PORTS.gateway}`;
export const LOCAL_DB_URL =
  `postgresql://postgres:postgres@127.0.0.1:${LOCAL_PORTS.postgres}/postgres`;
export const LOCAL_UPSTASH_URL = `http://127.0.0.1:${LOCAL_PORTS.upstashBridge}`;
