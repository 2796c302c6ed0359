import type { z } from "zod";
import { ERROR_CODES, ErrorEnvelope, Usage } from "../supabase/functions/_shared/contracts.ts";

/**
 * Every way a call can fail, as one error class the app can switch on. The codes are the
 * contract's, plus three that only the client can produce, because no server answered them:
 *   `network_error`     no answer arrived (offline, DNS, connection refused or cut mid-way);
 *   `aborted`           the app aborted the call through its AbortSignal;
 *   `invalid_response`  an answer arrived but is not what the contract says (a proxy's HTML
 *                       error page, a body that fails its schema, a stream cut before its end).
 */

export type ServerErrorCode = typeof ERROR_CODES[number];
export type ClientErrorCode = ServerErrorCode | "network_error" | "aborted" | "invalid_response";

/** What a 402 says of the quota (and an `ai_unavailable` of the quota after its refund). */
export type QuotaState = Pick<Usage, "used" | "quota" | "resets_at">;
const QuotaState = Usage.pick({ used: true, quota: true, resets_at: true });

export interface ApiClientErrorDetails {
  /**
   * The HTTP status of the answer that carried the error: 0 when none arrived or nothing was
   * sent, 200 for the `error` event that ends a stream begun with a 200.
   */
  status: number;
  /** The server's request id, for support and the logs; null when no server answered. */
  requestId: string | null;
  /** Seconds to wait before trying again (`rate_limited`). */
  retryAfter?: number;
  usage?: QuotaState;
  /** The field a `validation_failed` is about, as a dotted path (`settings.theme`). */
  field?: string;
  /** What the transport threw, for `network_error` and `aborted`. */
  cause?: unknown;
}

export class ApiClientError extends Error {
  readonly status: number;
  readonly requestId: string | null;
  readonly retryAfter?: number;
  readonly usage?: QuotaState;
  readonly field?: string;

  constructor(readonly code: ClientErrorCode, message: string, details: ApiClientErrorDetails) {
    super(message);
    this.name = "ApiClientError";
    this.status = details.status;
    this.requestId = details.requestId;
    if (details.retryAfter !== undefined) this.retryAfter = details.retryAfter;
    if (details.usage !== undefined) this.usage = details.usage;
    if (details.field !== undefined) this.field = details.field;
    if (details.cause !== undefined) this.cause = details.cause;
  }
}

/**
 * An argument the contract refuses, named exactly as the server would name it (the pipeline's
 * rule: the issue's path, or for an unknown key that key), so the app handles both alike.
 */
export function invalidArgument(error: z.ZodError): ApiClientError {
  const issue = error.issues[0];
  const path = issue.code === "unrecognized_keys" ? [...issue.path, issue.keys[0]] : issue.path;
  const field = path.length > 0 ? path.join(".") : "body";
  return new ApiClientError("validation_failed", `${field}: ${issue.message}`, {
    status: 0,
    requestId: null,
    field,
  });
}

function retryAfterOf(headers: Headers, details: Record<string, unknown>): number | undefined {
  const header = Number(headers.get("retry-after") ?? Number.NaN);
  if (Number.isFinite(header)) return header;
  return typeof details.retry_after === "number" ? details.retry_after : undefined;
}

/** A 402 has the numbers beside the code; an `ai_unavailable` has `usage` after its refund. */
function quotaOf(details: Record<string, unknown>): QuotaState | undefined {
  const beside = QuotaState.safeParse(details);
  if (beside.success) return beside.data;
  const nested = QuotaState.safeParse(details.usage);
  return nested.success ? nested.data : undefined;
}

/** The error an envelope describes; `status` is that of the answer that carried it. */
export function fromEnvelope(
  envelope: ErrorEnvelope,
  status: number,
  headers: Headers,
): ApiClientError {
  const { code, message, request_id: requestId, ...details } = envelope.error;
  return new ApiClientError(code, message, {
    status,
    requestId,
    retryAfter: retryAfterOf(headers, details),
    usage: quotaOf(details),
    field: typeof details.field === "string" ? details.field : undefined,
  });
}

/** A non-2xx answer: the envelope it carries, or `invalid_response` when it carries none. */
export function fromAnswer(name: string, response: Response, body: unknown): ApiClientError {
  const envelope = ErrorEnvelope.safeParse(body);
  if (envelope.success) return fromEnvelope(envelope.data, response.status, response.headers);
  return unexpectedAnswer(name, response, `answered ${response.status} without an error envelope`);
}

export function unexpectedAnswer(name: string, response: Response, what: string): ApiClientError {
  return new ApiClientError("invalid_response", `${name} ${what}`, {
    status: response.status,
    requestId: response.headers.get("x-request-id"),
  });
}

/** A call that got no answer: aborted by the app, or lost on the way. */
export function noAnswer(name: string, cause: unknown, signal?: AbortSignal): ApiClientError {
  const aborted = signal?.aborted ?? false;
  const reason = cause instanceof Error ? `: ${cause.message}` : "";
  return new ApiClientError(
    aborted ? "aborted" : "network_error",
    aborted ? `${name} was aborted` : `${name} could not be reached${reason}`,
    { status: 0, requestId: null, cause },
  );
}

/**
 * A refusal by Supabase Storage itself (`{statusCode, error, message}`, surfaced by storage-js
 * as an error with `status`), in the client's codes: the bucket's size limit is
 * `payload_too_large`, a type it does not take `validation_failed`.
 */
export function fromStorage(name: string, error: unknown): ApiClientError {
  const status = Number((error as { status?: unknown } | null)?.status ?? 0);
  const message = error instanceof Error ? error.message : String(error);
  if (!status) return noAnswer(name, error);
  const code: ServerErrorCode = status === 413
    ? "payload_too_large"
    : status === 400 || status === 415
    ? "validation_failed"
    : status === 401
    ? "unauthorized"
    : status === 403
    ? "forbidden"
    : status === 404
    ? "not_found"
    : status === 409
    ? "conflict"
    : "unavailable";
  return new ApiClientError(code, `${name}: ${message}`, { status, requestId: null, cause: error });
}
