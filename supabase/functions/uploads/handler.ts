import type { Caller } from "../_shared/auth.ts";
import type { Config } from "../_shared/config.ts";
import {
  type StoredObject,
  UPLOAD_BUCKETS,
  type UploadDeleted,
  type UploadGrant,
  UploadRequest,
  type UploadsPage,
  UploadsQuery,
} from "../_shared/contracts.ts";
import { decodeCursor, encodeCursor } from "../_shared/cursor.ts";
import { asUser, type Sql } from "../_shared/db.ts";
import { ApiError } from "../_shared/errors.ts";
import { json } from "../_shared/http.ts";
import { defineFunction } from "../_shared/pipeline.ts";
import { createUploadUrl, ownedObject, releaseBytes, removeObjects } from "../_shared/storage.ts";

/**
 * `uploads`: the app's photos in Supabase Storage, under the plan's storage quota.
 *
 *   POST   {bucket, content_type, size_bytes, purpose} → 201 UploadGrant: a signed upload URL
 *          for a path the server chooses, `<user id>/<purpose>/<uuid>.<ext>`. The bucket's
 *          limits and the quota are checked and `size_bytes` reserved in one statement
 *          (`reserve_storage_bytes`; 402 `quota_exceeded` with `used` and `quota` in bytes),
 *          before Storage is asked for the URL; a grant whose object never arrives is released
 *          by the `settle-storage-reservations` schedule once the URL has expired.
 *   GET    ?bucket=&limit=&cursor= → UploadsPage: the caller's objects, newest first.
 *   DELETE ?bucket=&path= → UploadDeleted: removed through the Storage API, its bytes released.
 */

type UserCaller = Extract<Caller, { kind: "user" }>;

/** How long a grant's bytes stay reserved before the sweep looks: Storage's URL lifetime. */
const GRANT_SECONDS = 2 * 3600;

const EXTENSIONS: Record<string, string> = {
  "image/jpeg": "jpg",
  "image/png": "png",
  "image/webp": "webp",
  "image/heic": "heic",
};

interface Reservation {
  outcome: "reserved" | "no_such_bucket" | "mime_type_not_allowed" | "too_large" | "quota_exceeded";
  used_bytes: string;
  quota_bytes: string;
  size_limit: string | null;
}

async function grant(
  db: Sql,
  userId: string,
  body: UploadRequest,
  c: Config,
): Promise<UploadGrant> {
  const uploadId = crypto.randomUUID();
  const extension = EXTENSIONS[body.content_type] ?? "bin";
  const path = `${userId}/${body.purpose}/${uploadId}.${extension}`;
  const [reservation] = await db<Reservation[]>`
    select outcome, used_bytes, quota_bytes, size_limit
      from public.reserve_storage_bytes(${userId}, ${body.bucket}, ${path}, ${body.content_type},
                                        ${body.size_bytes}, now() + make_interval(secs => ${GRANT_SECONDS}))`;
  switch (reservation.outcome) {
    case "reserved":
      break;
    case "quota_exceeded":
      throw new ApiError("quota_exceeded", "the storage quota is used up", {
        used: Number(reservation.used_bytes),
        quota: Number(reservation.quota_bytes),
      });
    case "too_large":
      throw new ApiError(
        "validation_failed",
        `size_bytes: the bucket takes at most ${reservation.size_limit} bytes`,
        { field: "size_bytes" },
      );
    case "mime_type_not_allowed":
      throw new ApiError("validation_failed", "content_type: not allowed in this bucket", {
        field: "content_type",
      });
    case "no_such_bucket":
      throw new ApiError("validation_failed", "bucket: no such bucket", { field: "bucket" });
  }
  try {
    const url = await createUploadUrl(c, body.bucket, path);
    return {
      upload_id: uploadId,
      bucket: body.bucket,
      path,
      signed_url: url.signedUrl,
      token: url.token,
      expires_at: url.expiresAt,
    };
  } catch (error) {
    // No URL, no upload: the reservation goes at once rather than at the sweep.
    await releaseBytes(db, body.bucket, [{ name: path, size: 0 }]);
    throw error;
  }
}

interface ObjectRow {
  bucket_id: StoredObject["bucket"];
  name: string;
  size_bytes: string;
  content_type: string | null;
  created_at: string;
  id: string;
}

async function list(
  db: Sql,
  caller: UserCaller,
  query: UploadsQuery,
): Promise<UploadsPage> {
  const after = query.cursor ? decodeCursor("uploads", query.cursor, "cursor") : null;
  // As the caller: the storage policies, not this query, decide what is theirs.
  const rows = await asUser(db, caller, (tx) =>
    tx<ObjectRow[]>`
      select o.bucket_id, o.name, coalesce((o.metadata ->> 'size')::bigint, 0) as size_bytes,
             o.metadata ->> 'mimetype' as content_type, o.id,
             to_char(o.created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as created_at
        from storage.objects as o
       where o.name like ${caller.id + "/%"}
         and o.bucket_id = any(${query.bucket ? [query.bucket] : [...UPLOAD_BUCKETS]}::text[])
         and (${after?.created_at ?? null}::timestamptz is null
              or (o.created_at, o.id) < (${after?.created_at ?? null}::timestamptz, ${
      after?.id ?? null
    }::uuid))
       order by o.created_at desc, o.id desc
       limit ${query.limit + 1}`);
  const page = rows.slice(0, query.limit);
  const last = page.at(-1);
  const hasMore = rows.length > query.limit;
  return {
    items: page.map((row) => ({
      bucket: row.bucket_id,
      path: row.name,
      size_bytes: Number(row.size_bytes),
      content_type: row.content_type,
      created_at: row.created_at,
    })),
    next_cursor: hasMore && last
      ? encodeCursor("uploads", { created_at: last.created_at, id: last.id })
      : null,
    has_more: hasMore,
  };
}

async function remove(
  db: Sql,
  userId: string,
  query: UploadsQuery,
  c: Config,
): Promise<UploadDeleted> {
  if (!query.path) {
    throw new ApiError("validation_failed", "path: required", { field: "path" });
  }
  const bucket = query.bucket ?? "user-uploads";
  await ownedObject(db, userId, bucket, query.path);
  const removed = await removeObjects(c, bucket, [query.path]);
  if (removed.length === 0) throw new ApiError("not_found", "no such object");
  await releaseBytes(db, bucket, removed);
  const [standing] = await db<{ used_bytes: string; quota_bytes: string }[]>`
    select coalesce(u.used_bytes, 0) as used_bytes, pl.storage_quota_bytes as quota_bytes
      from public.profiles as p
      join public.plans as pl on pl.id = p.plan_id
      left join public.storage_usage as u on u.user_id = p.id
     where p.id = ${userId}`;
  return {
    deleted: true,
    storage: {
      used_bytes: Number(standing?.used_bytes ?? 0),
      quota_bytes: Number(standing?.quota_bytes ?? 0),
    },
  };
}

export const handler = defineFunction(
  {
    name: "uploads",
    methods: ["GET", "POST", "DELETE"],
    auth: "user",
    rateLimit: "upload",
    body: UploadRequest,
    query: UploadsQuery,
  },
  async ({ req, caller, body, query, config, sql }) => {
    switch (req.method) {
      case "POST":
        return json(await grant(sql, caller.id, body, config), { status: 201 });
      case "DELETE":
        return json(await remove(sql, caller.id, query, config));
      default:
        return json(await list(sql, caller, query));
    }
  },
);
