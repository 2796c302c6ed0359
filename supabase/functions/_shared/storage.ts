import type { SupabaseClient } from "@supabase/supabase-js";
import type { Config } from "./config.ts";
import type { Sql } from "./db.ts";
import { ApiError } from "./errors.ts";
import { errorMessage, log } from "./log.ts";

/**
 * Supabase Storage, through `supabase-js` with the service role: the one way this backend makes
 * signed URLs and removes objects (removing rows of `storage.objects` directly would leave the
 * files behind). The SDK is imported on first use, so requests that never touch Storage never
 * load it. Every failure of a call becomes 503 `unavailable`, with Storage's own words only in
 * the log. The quota side (reserve, release) is SQL: see migration 20261206006100.
 */

/** How long the model may fetch an object it is asked to analyse. */
export const ANALYSIS_URL_SECONDS = 5 * 60;

/** A removal of at most this many objects per Storage call (and per `storage.cleanup` job). */
export const REMOVE_BATCH = 100;

type StorageClient = SupabaseClient["storage"];

let client: Promise<StorageClient> | undefined;

function storage(c: Config): Promise<StorageClient> {
  const key = c.SUPABASE_SERVICE_ROLE_KEY;
  if (!key) {
    return Promise.reject(new ApiError("unavailable", "storage is not configured"));
  }
  client ??= import("@supabase/supabase-js").then(({ createClient }) =>
    createClient(c.SUPABASE_URL, key, {
      auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
    }).storage
  ).catch((error) => {
    client = undefined;
    throw error;
  });
  return client;
}

function unavailable(call: string, error: unknown): ApiError {
  if (error instanceof ApiError) return error;
  log.warn("storage call failed", { call, error: errorMessage(error) });
  return new ApiError("unavailable", "storage is unavailable; try again later");
}

export interface UploadUrl {
  signedUrl: string;
  token: string;
  /** When the token stops working, from the token itself. */
  expiresAt: string;
}

export async function createUploadUrl(c: Config, bucket: string, path: string): Promise<UploadUrl> {
  try {
    const { data, error } = await (await storage(c)).from(bucket).createSignedUploadUrl(path);
    if (error) throw error;
    const payload = JSON.parse(
      atob(data.token.split(".")[1].replaceAll("-", "+").replaceAll("_", "/")),
    ) as { exp: number };
    return {
      signedUrl: data.signedUrl,
      token: data.token,
      expiresAt: new Date(payload.exp * 1000).toISOString(),
    };
  } catch (error) {
    throw unavailable("createSignedUploadUrl", error);
  }
}

export async function createDownloadUrl(
  c: Config,
  bucket: string,
  path: string,
  seconds: number,
): Promise<string> {
  try {
    const { data, error } = await (await storage(c)).from(bucket).createSignedUrl(path, seconds);
    if (error) throw error;
    return data.signedUrl;
  } catch (error) {
    throw unavailable("createSignedUrl", error);
  }
}

/** Removes the objects through Storage; answers what was removed, with each real size. */
export async function removeObjects(
  c: Config,
  bucket: string,
  paths: string[],
): Promise<{ name: string; size: number }[]> {
  try {
    const { data, error } = await (await storage(c)).from(bucket).remove(paths);
    if (error) throw error;
    return data.map((object) => ({
      name: object.name,
      size: Number((object.metadata as { size?: number } | null)?.size ?? 0),
    }));
  } catch (error) {
    throw unavailable("remove", error);
  }
}

/** Gives the removed objects' bytes back to their owners' storage quota. */
export async function releaseBytes(
  db: Sql,
  bucket: string,
  removed: { name: string; size: number }[],
): Promise<void> {
  if (removed.length === 0) return;
  await db`
    select public.release_storage_bytes(
      ${bucket}, ${removed.map((r) => r.name)}::text[], ${removed.map((r) => r.size)}::bigint[])`;
}

export interface OwnedObject {
  id: string;
  size: number;
  contentType: string | null;
  /** Changes whenever the object is replaced; part of what identifies an analysis input. */
  version: string;
}

/**
 * The caller's object at `path`, or 403 when the path is in another user's folder, 404 when it
 * does not exist. Read as the service role, after the folder check, so the answer for another
 * user's path never depends on whether it exists.
 */
export async function ownedObject(
  db: Sql,
  userId: string,
  bucket: string,
  path: string,
): Promise<OwnedObject> {
  if (path.split("/")[0] !== userId) {
    throw new ApiError("forbidden", "path: not in your own folder", { field: "path" });
  }
  const [row] = await db<
    { id: string; metadata: Record<string, unknown> | null; version: string | null }[]
  >`
    select id, metadata, coalesce(version, updated_at::text) as version
      from storage.objects
     where bucket_id = ${bucket} and name = ${path}`;
  if (!row) throw new ApiError("not_found", "no such object");
  return {
    id: row.id,
    size: Number(row.metadata?.size ?? 0),
    contentType: typeof row.metadata?.mimetype === "string" ? row.metadata.mimetype : null,
    version: row.version ?? row.id,
  };
}
