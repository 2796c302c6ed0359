import { ERROR_CODES } from "./contracts.ts";

/**
 * The closed set of errors a function can answer with. Anything thrown anywhere in the pipeline
 * or a handler is either an `ApiError` or becomes `internal` (the codes are listed in
 * contracts.ts, which the app's client shares); `http.ts` turns it into the one
 * JSON envelope `{"error":{"code","message","request_id",...details}}`.
 */

export type ErrorCode = typeof ERROR_CODES[number];

export function statusOf(code: ErrorCode): number {
  switch (code) {
    case "invalid_json":
    case "validation_failed":
    case "invalid_signature":
      return 400;
    case "unauthorized":
      return 401;
    case "quota_exceeded":
      return 402;
    case "forbidden":
      return 403;
    case "not_found":
      return 404;
    case "method_not_allowed":
      return 405;
    case "conflict":
      return 409;
    case "payload_too_large":
      return 413;
    case "rate_limited":
      return 429;
    case "internal":
      return 500;
    case "unavailable":
    case "ai_unavailable":
    case "billing_unavailable":
      return 503;
  }
}

/** Extra JSON fields placed beside `code` in the envelope (for example `used`, `quota`). */
export type ErrorDetails = Record<string, unknown>;

export class ApiError extends Error {
  readonly status: number;

  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly details: ErrorDetails = {},
    /** Response headers that belong to this error, such as `Allow` or `Retry-After`. */
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = "ApiError";
    this.status = statusOf(code);
  }
}
