import { z } from "zod";
import { originList } from "./cors.ts";

/**
 * Every setting the functions read, validated once. Reading is lazy so that a bad value fails the
 * request that needs it (500, with a log line naming the variable) instead of crashing the
 * isolate at boot, where the client would only see the platform's opaque 502.
 */

const postgresUrl = z.string().regex(/^postgres(ql)?:\/\//, "must be a postgres:// URL");

const positiveInt = (fallback: number) => z.coerce.number().int().positive().default(fallback);

const ConfigSchema = z.object({
  SUPABASE_URL: z.url(),
  SUPABASE_DB_URL: z.string().regex(/^postgres(ql)?:\/\//, "must be a postgres:// URL"),
  /** The legacy HS256 secret; without it only asymmetric (JWKS) tokens are accepted. */
  JWT_SECRET: z.string().min(32, "must be at least 32 characters").optional(),
  /** Defaults to the project's own `/auth/v1/.well-known/jwks.json`. */
  JWKS_URL: z.url().optional(),
  /** Defaults to `${SUPABASE_URL}/auth/v1`, the `iss` Supabase Auth puts in user tokens. */
  JWT_ISSUER: z.string().min(1).optional(),
  /** Set by Supabase. Storage calls (signed URLs, removals) need it; without it they answer 503. */
  SUPABASE_SERVICE_ROLE_KEY: z.string().min(1).optional(),
  UPSTASH_REDIS_REST_URL: z.url(),
  UPSTASH_REDIS_REST_TOKEN: z.string().min(1),
  /** Origins allowed by CORS; `*` allows any origin and must be set explicitly. */
  ALLOWED_ORIGINS: z.string().transform(originList).default([]),
  DB_POOL_MAX: positiveInt(3),
  DB_CONNECT_TIMEOUT_MS: positiveInt(5_000),
  DB_STATEMENT_TIMEOUT_MS: positiveInt(5_000),
  HEALTH_CHECK_TIMEOUT_MS: positiveInt(1_000),
  MAX_BODY_BYTES: positiveInt(5 * 1024 * 1024),
  APP_VERSION: z.string().min(1).default("dev"),

  /** Without a key (and base URL) the AI functions answer 503 `ai_unavailable`. */
  OPENAI_API_KEY: z.string().min(1).optional(),
  /** Any OpenAI-compatible server; defaults to OpenAI's own. */
  OPENAI_BASE_URL: z.url().optional(),
  OPENAI_MODEL: z.string().min(1).default("gpt-4o-mini"),
  OPENAI_TIMEOUT_MS: positiveInt(30_000),
  OPENAI_MAX_RETRIES: z.coerce.number().int().min(0).max(5).default(2),
  AI_CACHE_TTL_SECONDS: positiveInt(7 * 24 * 3600),

  /** Without it the billing functions answer 503 `billing_unavailable`. */
  STRIPE_SECRET_KEY: z.string().min(1).optional(),
  /** The signing secret of the webhook endpoint (`whsec_...`); several may be comma-separated. */
  STRIPE_WEBHOOK_SECRET: z.string().min(1).optional(),
  /** Another Stripe API host, such as a local Stripe-compatible server (`http://127.0.0.1:12111`). */
  STRIPE_API_BASE: z.url().optional(),
  STRIPE_TIMEOUT_MS: positiveInt(10_000),
  /** Where Checkout and the Customer Portal send the user back: app deep links work. */
  BILLING_SUCCESS_URL: z.string().min(1).default("aiapp://billing/success"),
  BILLING_CANCEL_URL: z.string().min(1).default("aiapp://billing/cancel"),
  BILLING_RETURN_URL: z.string().min(1).default("aiapp://billing"),

  /**
   * Another Expo push API host (`http://127.0.0.1:8123`, the tests' push server); unset is Expo's
   * own. expo-server-sdk reads this variable from the environment itself when it loads.
   */
  EXPO_BASE_URL: z.url().optional(),
  /** Expo's access token, when the project enables enhanced push security. */
  EXPO_ACCESS_TOKEN: z.string().min(1).optional(),

  /**
   * Error tracking: with a DSN, unhandled errors and failed jobs go to Sentry (`@sentry/deno`,
   * loaded on the first report); without one nothing is loaded or sent.
   */
  SENTRY_DSN: z.url().optional(),
  /** Defaults to APP_VERSION. */
  SENTRY_RELEASE: z.string().min(1).optional(),
  SENTRY_ENVIRONMENT: z.string().min(1).default("production"),

  /** Where `alert.notify` posts (a Slack-compatible incoming webhook); unset: alerts are logged. */
  ALERT_WEBHOOK_URL: z.url().optional(),
  /** The dashboard an alert links to; defaults to the hosted project's Supabase dashboard. */
  ALERT_DASHBOARD_URL: z.url().optional(),

  /**
   * A read replica (Supabase's, through its pooler) for the reads that tolerate lag; unset, every
   * read goes to SUPABASE_DB_URL. Hosted Supabase refuses secrets named SUPABASE_*, so there it
   * is DB_READ_URL; SUPABASE_DB_READ_URL is the local stack's name, and DB_READ_URL wins.
   */
  SUPABASE_DB_READ_URL: postgresUrl.optional(),
  DB_READ_URL: postgresUrl.optional(),
  /** After a user's write, that user's reads stay on the primary this long. */
  READ_AFTER_WRITE_MS: positiveInt(5_000),
  /** A replica further behind than this is not read from. */
  MAX_REPLICA_LAG_MS: positiveInt(10_000),

  /** Background jobs one `process-jobs` run claims at most, in waves of JOB_CONCURRENCY. */
  JOB_BATCH_SIZE: positiveInt(20),
  JOB_CONCURRENCY: positiveInt(4),
  /** Per attempt; the job's lock outlasts it, so nobody claims a job its worker still runs. */
  JOB_TIMEOUT_MS: positiveInt(20_000),
});

/** The names of every variable read, for the check that docs/deploying.md documents each one. */
export const CONFIG_VARIABLES: readonly string[] = Object.keys(ConfigSchema.shape);

export type Config = z.infer<typeof ConfigSchema> & {
  JWKS_URL: string;
  JWT_ISSUER: string;
};

export class ConfigError extends Error {
  constructor(readonly variables: string[], detail: string) {
    super(`invalid configuration: ${detail}`);
    this.name = "ConfigError";
  }
}

/** Parses a set of environment variables; exported for tests, functions use `config()`. */
export function parseConfig(env: Record<string, string | undefined>): Config {
  // An empty value (`supabase secrets set X=`) means unset, as it does for a shell.
  const set = Object.fromEntries(Object.entries(env).filter(([, value]) => value !== ""));
  const result = ConfigSchema.safeParse(set);
  if (!result.success) {
    const variables = [...new Set(result.error.issues.map((issue) => String(issue.path[0])))];
    const detail = result.error.issues
      .map((issue) => `${String(issue.path[0])}: ${issue.message}`)
      .join("; ");
    throw new ConfigError(variables, detail);
  }
  const parsed = result.data;
  const base = parsed.SUPABASE_URL.replace(/\/+$/, "");
  return {
    ...parsed,
    JWKS_URL: parsed.JWKS_URL ?? `${base}/auth/v1/.well-known/jwks.json`,
    JWT_ISSUER: parsed.JWT_ISSUER ?? `${base}/auth/v1`,
  };
}

let cached: Config | undefined;

export function config(): Config {
  cached ??= parseConfig(Deno.env.toObject());
  return cached;
}
