import { z } from "zod";
import { ApiError } from "./errors.ts";

/**
 * The opaque cursors of `history` and `sync`: a position in a user's history, (created_at, id),
 * as base64url of a small versioned JSON that also names the list it belongs to, so that a
 * cursor of one list handed to another is refused instead of silently meaning something else.
 *
 * created_at stays the string Postgres wrote, with all six fractional digits: as a JavaScript
 * Date it would lose the microseconds, and rows of the same millisecond would be skipped.
 * Cursors are not signed: a forged one can only point into the caller's own rows, which row
 * level security (or the caller's own id) already confines the reads to.
 */

export interface Position {
  /** An ISO 8601 UTC instant with microseconds, as `2026-11-23T08:28:17.936017Z`. */
  created_at: string;
  id: string;
}

export type CursorKind = "analyses" | "messages" | "activities" | "sync" | "uploads";

const VERSION = 1;

/**
 * True when `value` names a real instant of years 1 to 9999 exactly as written. JavaScript's
 * parser lets through what Postgres refuses (year 0000, February 30) or reads differently (hour
 * 24), so the written fields must survive a round trip through a Date unchanged.
 */
function isRealInstant(value: string): boolean {
  const at = new Date(`${value.slice(0, 19)}Z`);
  return !Number.isNaN(at.getTime()) && at.getUTCFullYear() >= 1 &&
    at.toISOString().slice(0, 19) === value.slice(0, 19);
}

const Instant = z.string().regex(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/).refine(
  isRealInstant,
);

const Encoded = z.strictObject({
  v: z.literal(VERSION),
  k: z.enum(["analyses", "messages", "activities", "sync", "uploads"]),
  t: Instant,
  i: z.guid(),
});

function toBase64Url(text: string): string {
  const bytes = new TextEncoder().encode(text);
  return btoa(String.fromCharCode(...bytes)).replaceAll("+", "-").replaceAll("/", "_")
    .replace(/=+$/, "");
}

function fromBase64Url(text: string): string {
  if (!/^[A-Za-z0-9_-]+$/.test(text)) throw new Error("not base64url");
  const binary = atob(text.replaceAll("-", "+").replaceAll("_", "/"));
  return new TextDecoder("utf-8", { fatal: true }).decode(
    Uint8Array.from(binary, (char) => char.charCodeAt(0)),
  );
}

export function encodeCursor(kind: CursorKind, position: Position): string {
  return toBase64Url(
    JSON.stringify({ v: VERSION, k: kind, t: position.created_at, i: position.id }),
  );
}

/** The position a cursor of `kind` holds, or 400 `validation_failed` naming `field`. */
export function decodeCursor(kind: CursorKind, cursor: string, field: string): Position {
  let decoded: z.infer<typeof Encoded> | undefined;
  try {
    const parsed = Encoded.safeParse(JSON.parse(fromBase64Url(cursor)));
    if (parsed.success) decoded = parsed.data;
  } catch {
    // Not base64url, not UTF-8 or not JSON: malformed, answered below.
  }
  if (!decoded || decoded.k !== kind) {
    throw new ApiError("validation_failed", `${field}: not a valid ${kind} cursor`, { field });
  }
  return { created_at: decoded.t, id: decoded.i.toLowerCase() };
}
