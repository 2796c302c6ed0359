import { addCommonHeaders, requestIdOf } from "./common-headers.ts";

/**
 * CORS, for browsers (Expo web); native apps ignore it. Kept free of npm packages: `serve`
 * answers a preflight from here before the function's own modules are loaded.
 */

const ALLOWED_HEADERS =
  "authorization, apikey, content-type, x-client-info, x-request-id, if-none-match";
const EXPOSED_HEADERS =
  "x-request-id, retry-after, x-ratelimit-limit, x-ratelimit-remaining, x-ratelimit-reset, etag";
/**
 * Every method a function may take, the same for all: a preflight is answered before the
 * function's spec is loaded, and a method the function does not take still gets its 405 (with
 * `Allow`) in the request that follows.
 */
const ALLOWED_METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS";

/** `ALLOWED_ORIGINS` as a list: comma-separated, blanks dropped (`config.ts` parses it so too). */
export function originList(value: string): string[] {
  return value.split(",").map((item) => item.trim()).filter((item) => item.length > 0);
}

/** An origin gets through only when listed, or when `*` was configured on purpose. */
export function corsHeaders(req: Request, allowedOrigins: readonly string[]): Headers {
  const headers = new Headers({ vary: "Origin" });
  const origin = req.headers.get("origin");
  if (!origin) return headers;
  const allowed = allowedOrigins.includes("*") || allowedOrigins.includes(origin);
  if (!allowed) return headers;
  headers.set("access-control-allow-origin", allowedOrigins.includes("*") ? "*" : origin);
  headers.set("access-control-allow-methods", ALLOWED_METHODS);
  headers.set("access-control-allow-headers", ALLOWED_HEADERS);
  headers.set("access-control-expose-headers", EXPOSED_HEADERS);
  headers.set("access-control-max-age", "86400");
  return headers;
}

/** The answer to a CORS preflight (`OPTIONS`): 204 with the CORS and common headers. */
export function preflight(req: Request, allowedOrigins: readonly string[]): Response {
  const headers = corsHeaders(req, allowedOrigins);
  addCommonHeaders(headers, requestIdOf(req));
  return new Response(null, { status: 204, headers });
}
