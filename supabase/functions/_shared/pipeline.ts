import type { Redis } from "@upstash/redis";
import type { z } from "zod";
import { type Admission, admit, rateLimiter } from "./admission.ts";
import { type AuthVerifier, bearerToken, type Caller, createAuthVerifier } from "./auth.ts";
import { type Config, config, ConfigError } from "./config.ts";
import { isDatabaseUnreachable, type Sql, sql } from "./db.ts";
import { ApiError } from "./errors.ts";
import { reportError } from "./error-tracking.ts";
import { addCommonHeaders, requestIdOf } from "./common-headers.ts";
import { corsHeaders, preflight } from "./cors.ts";
import { errorResponse, type Method, readBodyText } from "./http.ts";
import { errorMessage, log } from "./log.ts";
import { createMetrics, type RequestSignals } from "./metrics.ts";
import type { Profile } from "./profile-cache.ts";
import type { RateLimitClass, RateLimitDecision, RateLimiter } from "./rate-limit.ts";
import { markWritten, onReadClient, replicaConfigured, wroteRecently } from "./read-replica.ts";
import { redis } from "./redis.ts";

/**
 * The one request pipeline: every function declares what it needs and gets CORS, a request id,
 * method checks, authentication, the caller's profile (cached) and rate limit, body limits and
 * validation, error mapping, a log line and a metrics row from here, in this order, without
 * repeating any of it.
 */

export type AuthMode = "none" | "user" | "service_role";

type CallerFor<A extends AuthMode> = A extends "user" ? Extract<Caller, { kind: "user" }>
  : A extends "service_role" ? Extract<Caller, { kind: "service_role" }>
  : null;

export interface FunctionSpec<
  A extends AuthMode,
  S extends z.ZodType | undefined,
  Q extends z.ZodType | undefined = undefined,
  P = never,
> {
  name: string;
  methods: readonly Method[];
  auth: A;
  /** Schema of the JSON body of POST, PUT and PATCH requests; without one it is left unread. */
  body?: S;
  /** Schema of the query string, as an object of its parameters (the last of a repeated one). */
  query?: Q;
  /**
   * The per-minute limit class: keyed by user for functions that require one (with the limit of
   * the user's plan), by client IP otherwise (with the limit of the free plan).
   */
  rateLimit?: RateLimitClass;
  /**
   * How to make the Stripe client (`stripe` from `_shared/stripe.ts`), for the functions that use
   * it: named by them rather than imported here, so no other function's module graph holds the
   * SDK, not even its types.
   */
  stripe?: (c: Config) => Promise<P>;
  /**
   * Whether a signed-in request counts as the user's activity (`profiles.last_active_at`);
   * default true. `sync` says false: it is the app's background poll, and counting it would
   * keep every polling app at sync's active interval forever.
   */
  activity?: boolean;
}

export interface Context<
  A extends AuthMode,
  S extends z.ZodType | undefined,
  Q extends z.ZodType | undefined = undefined,
  P = never,
> {
  req: Request;
  url: URL;
  requestId: string;
  config: Config;
  /** The isolate's Postgres client, as the service role (`asUser` for the caller's own rights). */
  sql: Sql;
  /**
   * Runs reads that tolerate lag (history pages, activities, statistics, sync) on the read
   * replica when one is configured, answering and the caller has not just written; on the
   * primary otherwise (`_shared/read-replica.ts`).
   */
  read<T>(work: (db: Sql) => Promise<T>): Promise<T>;
  /** After a write of the caller's data: their reads stay on the primary for a while. */
  wrote(): void;
  /** What this request met, for its metrics row (a handler sets `ai_cache_hit`). */
  signals: RequestSignals;
  /** The isolate's Upstash client. */
  redis: Redis;
  /** The isolate's rate limiter, the one admission uses (to read what is left, say). */
  rateLimiter: RateLimiter;
  /**
   * The Stripe client of a function whose spec names `stripe`, made on first use (503
   * `billing_unavailable` where none is configured).
   */
  stripe: () => Promise<P>;
  caller: CallerFor<A>;
  /** The caller's profile and plan, through the profile cache (functions that require a user). */
  profile: A extends "user" ? Profile : null;
  /** The rate-limit decision that let this request in, when the function is rate limited. */
  rateLimit: RateLimitDecision | null;
  /** The validated body on POST, PUT and PATCH; undefined on other methods. */
  body: S extends z.ZodType ? z.infer<S> : undefined;
  /** The validated query string, when the function declares a schema for it. */
  query: Q extends z.ZodType ? z.infer<Q> : undefined;
}

export type Handler = (req: Request) => Promise<Response>;

const BODY_METHODS = new Set(["POST", "PUT", "PATCH"]);

let verifier: AuthVerifier | undefined;
const metrics = createMetrics(sql);

function authVerifier(c: Config): AuthVerifier {
  verifier ??= createAuthVerifier({
    jwtSecret: c.JWT_SECRET,
    jwksUrl: c.JWKS_URL,
    issuer: c.JWT_ISSUER,
  });
  return verifier;
}

async function authenticate(req: Request, mode: AuthMode, c: Config): Promise<Caller | null> {
  if (mode === "none") return null;
  const token = bearerToken(req);
  if (!token) throw new ApiError("unauthorized", "missing bearer token");
  const caller = await authVerifier(c).verify(token);
  if (mode === "user" && caller.kind !== "user") {
    throw new ApiError("unauthorized", "a signed-in user's token is required");
  }
  if (mode === "service_role" && caller.kind !== "service_role") {
    throw new ApiError("forbidden", "the service role is required");
  }
  return caller;
}

/**
 * The data as the schema parses it, or 400 `validation_failed` naming the first failing field;
 * for a key the schema does not know, the field is that key.
 */
function validated(schema: z.ZodType, data: unknown): unknown {
  const result = schema.safeParse(data);
  if (!result.success) {
    const issue = result.error.issues[0];
    const path = issue.code === "unrecognized_keys" ? [...issue.path, issue.keys[0]] : issue.path;
    const field = path.length > 0 ? path.join(".") : "body";
    throw new ApiError("validation_failed", `${field}: ${issue.message}`, { field });
  }
  return result.data;
}

async function parseBody(req: Request, schema: z.ZodType, maxBytes: number): Promise<unknown> {
  const text = await readBodyText(req, maxBytes);
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch {
    throw new ApiError("invalid_json", "request body is not valid JSON");
  }
  return validated(schema, data);
}

/**
 * Parameters the platform's routing adds on its own, which no function's schema should have to
 * list: supabase-js sends `forceFunctionRegion` whenever the app picks a region.
 */
const ROUTING_PARAMS = ["forceFunctionRegion"];

function parseQuery(url: URL, schema: z.ZodType): unknown {
  const params = Object.fromEntries(url.searchParams);
  for (const name of ROUTING_PARAMS) delete params[name];
  return validated(schema, params);
}

/**
 * Any error as the ApiError to answer with; anything unexpected is logged, reported to error
 * tracking (after the response) and becomes `internal`.
 */
export function toApiError(
  error: unknown,
  fn: string,
  requestId: string,
  userId: string | null = null,
): ApiError {
  if (error instanceof ApiError) return error;
  if (error instanceof ConfigError) {
    reportError(error, { function: fn, request_id: requestId, user_id: userId });
    log.error("configuration invalid", {
      function: fn,
      request_id: requestId,
      variables: error.variables.join(","),
      detail: error.message,
    });
    return new ApiError("internal", "the server is misconfigured");
  }
  if (isDatabaseUnreachable(error)) {
    log.error("database unreachable", {
      function: fn,
      request_id: requestId,
      error: errorMessage(error),
    });
    return new ApiError("unavailable", "the service is unavailable; try again shortly");
  }
  log.error("unhandled error", {
    function: fn,
    request_id: requestId,
    error: error instanceof Error ? `${error.name}: ${error.message}` : String(error),
  });
  reportError(error, { function: fn, request_id: requestId, user_id: userId });
  return new ApiError("internal", "internal error");
}

export function defineFunction<
  A extends AuthMode,
  S extends z.ZodType | undefined = undefined,
  Q extends z.ZodType | undefined = undefined,
  P = never,
>(
  spec: FunctionSpec<A, S, Q, P>,
  handle: (ctx: Context<A, S, Q, P>) => Promise<Response>,
): Handler {
  const allow = spec.methods.join(", ");

  return async function pipeline(req: Request): Promise<Response> {
    const started = performance.now();
    const requestId = requestIdOf(req);
    let cors: Headers | null = null;
    let caller: Caller | null = null;
    let admission: Admission | null = null;
    let signals: RequestSignals = {
      profile_cache_hit: null,
      ai_cache_hit: null,
      redis_fallback: null,
    };
    let marking: Promise<void> | undefined;
    let response: Response;
    try {
      const c = config();
      // What `serve` answers before this module is loaded, the same here: no log line, no row.
      if (req.method === "OPTIONS") return preflight(req, c.ALLOWED_ORIGINS);
      cors = corsHeaders(req, c.ALLOWED_ORIGINS);
      if (!spec.methods.includes(req.method as Method)) {
        throw new ApiError("method_not_allowed", `${req.method} is not allowed`, {}, { allow });
      } else {
        caller = await authenticate(req, spec.auth, c);
        const user = caller?.kind === "user" ? caller : null;
        // Asked in the same Upstash round trip as the profile and the rate limit.
        const recentWrite = user && replicaConfigured(c) ? wroteRecently(redis(), user.id) : null;
        recentWrite?.catch(() => {});
        admission = await admit({ req, requestId, caller, rateClass: spec.rateLimit });
        signals = admission.signals;
        const body = spec.body && BODY_METHODS.has(req.method)
          ? await parseBody(req, spec.body, c.MAX_BODY_BYTES)
          : undefined;
        const url = new URL(req.url);
        const query = spec.query ? parseQuery(url, spec.query) : undefined;
        response = await handle({
          req,
          url,
          requestId,
          config: c,
          sql: sql(),
          read: (work) => onReadClient(recentWrite, work),
          wrote: () => {
            if (user) marking = markWritten(redis(), user.id);
          },
          signals,
          redis: redis(),
          rateLimiter,
          stripe: () =>
            spec.stripe
              ? spec.stripe(c)
              : Promise.reject(new Error(`${spec.name} does not declare that it uses Stripe`)),
          caller: caller as CallerFor<A>,
          profile: admission.profile as Context<A, S, Q, P>["profile"],
          rateLimit: admission.decision,
          body: body as Context<A, S, Q, P>["body"],
          query: query as Context<A, S, Q, P>["query"],
        });
      }
    } catch (error) {
      const userId = caller?.kind === "user" ? caller.id : null;
      response = errorResponse(toApiError(error, spec.name, requestId, userId), requestId);
    }
    // The marker of a write must be in Redis before the writer can read again.
    if (marking) await marking;

    response = withHeaders(response, (headers) => {
      cors?.forEach((value, key) => headers.set(key, value));
      for (const [key, value] of Object.entries(admission?.headers ?? {})) headers.set(key, value);
      addCommonHeaders(headers, requestId);
    });
    const userId = caller?.kind === "user" ? caller.id : null;
    const durationMs = Math.round((performance.now() - started) * 10) / 10;
    log.info("request", {
      function: spec.name,
      request_id: requestId,
      user_id: userId,
      method: req.method,
      status: response.status,
      duration_ms: durationMs,
    });
    if (req.method !== "OPTIONS") {
      metrics.record({
        function_name: spec.name,
        method: req.method,
        status: response.status,
        duration_ms: durationMs,
        user_id: userId,
        request_id: requestId,
        ...signals,
        active: spec.activity !== false,
      });
    }
    return response;
  };
}

/**
 * `response` with the pipeline's headers added. A response made here or by a handler is changed
 * in place; one whose headers are immutable (from `fetch` or `Response.redirect`) is copied.
 */
function withHeaders(response: Response, add: (headers: Headers) => void): Response {
  try {
    add(response.headers);
    return response;
  } catch (error) {
    if (!(error instanceof TypeError)) throw error;
    const headers = new Headers(response.headers);
    add(headers);
    return new Response(response.body, {
      status: response.status,
      statusText: response.statusText,
      headers,
    });
  }
}
