/**
 * What every answer carries, whoever makes it (the pipeline, or `serve` for a preflight before
 * the function's modules are loaded): its request id, and the headers that keep a browser from
 * sniffing JSON into HTML, leaking the request URL as a referrer, or caching a per-caller answer.
 * Kept free of npm packages, as the preflight path loads it alone.
 */

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/** Keeps the caller's `x-request-id` when it is a sane identifier, so traces join up. */
export function requestIdOf(req: Request): string {
  const given = req.headers.get("x-request-id");
  return given && REQUEST_ID.test(given) ? given : crypto.randomUUID();
}

const SECURITY_HEADERS = {
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
};

export function addCommonHeaders(headers: Headers, requestId: string): void {
  headers.set("x-request-id", requestId);
  for (const [key, value] of Object.entries(SECURITY_HEADERS)) headers.set(key, value);
  // Answers are per caller; a function that caches on purpose (sync's ETag) says so itself.
  if (!headers.has("cache-control")) headers.set("cache-control", "no-store");
}
