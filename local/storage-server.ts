import { jwtVerify, SignJWT } from "jose";
import postgres from "postgres";
import type { AuthVerifier, Caller } from "../supabase/functions/_shared/auth.ts";
import { bearerToken } from "../supabase/functions/_shared/auth.ts";

/**
 * LOCAL RUNS ONLY: a stand-in for Supabase Storage's REST API at `/storage/v1`, mounted by the
 * local gateway, for what `@supabase/storage-js` calls in this project: signed upload URLs (create,
 * upload to), authenticated uploads, signed download URLs (create, download), authenticated and
 * public downloads, info, list and remove. Hosted Supabase runs the real Storage server; this one
 * keeps the bytes in a folder under the stack's state and the metadata in the real
 * `storage.buckets` / `storage.objects` tables, and, as hosted Storage does, reads and writes
 * `storage.objects` as the caller's role with their claims, so the RLS policies of the migrations
 * allow or refuse each request. Bucket `file_size_limit` and `allowed_mime_types` are enforced
 * here, with Storage's error bodies `{statusCode, code, error, message}`. Signed URLs carry an
 * HS256 JWT made with the project's JWT secret (`{url, exp}`; upload ones also `owner`,
 * `upsert`), checked on use, as Storage's are.
 */

export interface StorageServerOptions {
  /** A superuser connection; each request switches to the caller's role inside it. */
  dbUrl: string;
  /** Where the objects' bytes are kept, one folder per bucket. */
  dataDir: string;
  jwtSecret: string;
}

export interface StorageServer {
  handle(req: Request, verifier: AuthVerifier): Promise<Response>;
  close(): Promise<void>;
}

/** What `createSignedUploadUrl` grants: Storage's fixed two hours. */
export const SIGNED_UPLOAD_SECONDS = 2 * 3600;
/** Storage's global upload limit (config.toml `[storage] file_size_limit`). */
const GLOBAL_FILE_SIZE_LIMIT = 50 * 1024 * 1024;

interface ObjectRow {
  id: string;
  bucket_id: string;
  name: string;
  owner: string | null;
  created_at: Date;
  updated_at: Date;
  last_accessed_at: Date | null;
  metadata: Record<string, unknown> | null;
}

interface Bucket {
  id: string;
  public: boolean;
  file_size_limit: number | null;
  allowed_mime_types: string[] | null;
}

class StorageError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    readonly error: string,
    message: string,
  ) {
    super(message);
  }
}

const notFound = () => new StorageError(404, "NoSuchKey", "not_found", "Object not found");
const noBucket = () =>
  new StorageError(404, "NoSuchBucket", "Bucket not found", "Bucket not found");
const invalidJwt = (message: string) =>
  new StorageError(400, "InvalidJWT", "Unauthorized", message);
const rlsRefused = () =>
  new StorageError(
    403,
    "AccessDenied",
    "Unauthorized",
    "new row violates row-level security policy",
  );

function storageError(error: StorageError): Response {
  return Response.json({
    statusCode: String(error.status),
    code: error.code,
    error: error.error,
    message: error.message,
  }, { status: error.status });
}

/** A name as Storage keeps it: segments of printable characters, none empty, `.` or `..`. */
function objectName(segments: string[]): string {
  const name = segments.map(decodeURIComponent).join("/");
  const parts = name.split("/");
  if (
    parts.length === 0 ||
    parts.some((part) =>
      part === "" || part === "." || part === ".." ||
      [...part].some((char) => char.charCodeAt(0) < 0x20)
    )
  ) {
    throw new StorageError(400, "InvalidKey", "Invalid Input", `Invalid key: ${name}`);
  }
  return name;
}

function mimeAllowed(bucket: Bucket, mime: string): boolean {
  if (!bucket.allowed_mime_types || bucket.allowed_mime_types.length === 0) return true;
  const type = mime.split(";")[0].trim().toLowerCase();
  return bucket.allowed_mime_types.some((allowed) =>
    allowed === type || (allowed.endsWith("/*") && type.startsWith(allowed.slice(0, -1)))
  );
}

/** The request body, refused with `tooLarge` as soon as it passes `limit` bytes. */
async function readCapped(
  req: Request,
  limit: number,
  tooLarge: () => Error,
): Promise<Uint8Array<ArrayBuffer>> {
  if (Number(req.headers.get("content-length") ?? "0") > limit) throw tooLarge();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of req.body ?? new ReadableStream<Uint8Array>()) {
    size += chunk.length;
    if (size > limit) throw tooLarge();
    chunks.push(chunk);
  }
  const bytes = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.length;
  }
  return bytes;
}

interface Part {
  name: string | null;
  filename: string | null;
  type: string | null;
  bytes: Uint8Array<ArrayBuffer>;
}

/**
 * The parts of a multipart/form-data body. By hand because storage-js sends the file under the
 * empty field name, which the runtime's `Request.formData()` drops.
 */
function multipart(body: Uint8Array<ArrayBuffer>, contentType: string): Part[] {
  const boundary = contentType.match(/boundary="?([^";]+)"?/)?.[1];
  if (!boundary) {
    throw new StorageError(
      400,
      "InvalidRequest",
      "Invalid Input",
      "multipart body without boundary",
    );
  }
  // With a CRLF in front, every delimiter (the first included) is CRLF "--" boundary.
  const data = new Uint8Array(body.length + 2);
  data.set([0x0d, 0x0a]);
  data.set(body, 2);
  const encoder = new TextEncoder();
  const delimiter = encoder.encode(`\r\n--${boundary}`);
  const blankLine = encoder.encode("\r\n\r\n");
  const find = (from: number, needle: Uint8Array) => {
    outer: for (let i = from; i <= data.length - needle.length; i++) {
      for (let j = 0; j < needle.length; j++) if (data[i + j] !== needle[j]) continue outer;
      return i;
    }
    return -1;
  };
  const parts: Part[] = [];
  let at = find(0, delimiter);
  while (at >= 0) {
    const start = at + delimiter.length;
    if (data[start] === 0x2d && data[start + 1] === 0x2d) break; // the closing "--"
    const headerEnd = find(start, blankLine);
    const next = headerEnd < 0 ? -1 : find(headerEnd + 4, delimiter);
    if (next < 0) break;
    const headers = new TextDecoder().decode(data.subarray(start + 2, headerEnd));
    const disposition = headers.match(/content-disposition:([^\r\n]*)/i)?.[1] ?? "";
    parts.push({
      name: disposition.match(/\bname="([^"]*)"/)?.[1] ?? null,
      filename: disposition.match(/\bfilename="([^"]*)"/)?.[1] ?? null,
      type: headers.match(/content-type:\s*([^\r\n]*)/i)?.[1]?.trim() ?? null,
      bytes: data.slice(headerEnd + 4, next),
    });
    at = next;
  }
  return parts;
}

/** Storage's object metadata, as `storage.objects.metadata` holds it. */
function metadataOf(bytes: Uint8Array, mimetype: string, cacheControl: string, etag: string) {
  return {
    eTag: `"${etag}"`,
    size: bytes.length,
    mimetype,
    cacheControl,
    lastModified: new Date().toUTCString(),
    contentLength: bytes.length,
    httpStatusCode: 200,
  };
}

export function createStorageServer(options: StorageServerOptions): StorageServer {
  const db = postgres(options.dbUrl, { max: 4, onnotice: () => {}, prepare: false });
  const secret = new TextEncoder().encode(options.jwtSecret);

  /** Runs `work` as the caller's database role with their claims, as Storage does. */
  function asCaller<T>(caller: Caller, work: (tx: postgres.TransactionSql) => Promise<T>) {
    const role = caller.kind === "user" ? "authenticated" : caller.kind;
    return db.begin(async (tx) => {
      await tx`select set_config('role', ${role}, true),
                      set_config('request.jwt.claims', ${JSON.stringify(caller.claims)}, true)`;
      return await work(tx);
    }) as Promise<T>;
  }

  async function callerOf(req: Request, verifier: AuthVerifier): Promise<Caller> {
    const token = bearerToken(req);
    if (!token) throw invalidJwt("headers must have required property 'authorization'");
    try {
      return await verifier.verify(token);
    } catch {
      throw invalidJwt("invalid signature");
    }
  }

  async function bucket(id: string): Promise<Bucket> {
    const [found] = await db<Bucket[]>`
      select id, public, file_size_limit, allowed_mime_types from storage.buckets where id = ${id}`;
    if (!found) throw noBucket();
    return found;
  }

  const filePath = (bucketId: string, name: string) => `${options.dataDir}/${bucketId}/${name}`;

  async function sign(claims: Record<string, unknown>, seconds: number) {
    return await new SignJWT(claims).setProtectedHeader({ alg: "HS256", typ: "JWT" })
      .setIssuedAt().setExpirationTime(Math.floor(Date.now() / 1000) + seconds).sign(secret);
  }

  async function verifySigned(token: string | null, url: string) {
    if (!token) throw invalidJwt("querystring must have required property 'token'");
    let payload;
    try {
      ({ payload } = await jwtVerify(token, secret, { algorithms: ["HS256"] }));
    } catch (error) {
      throw invalidJwt(
        (error as { code?: string }).code === "ERR_JWT_EXPIRED"
          ? "jwt expired"
          : "invalid signature",
      );
    }
    if (payload.url !== url) throw invalidJwt("url mismatch");
    return payload;
  }

  /** The body of an upload, its type and cache control, refused past the bucket's limits. */
  async function readUpload(req: Request, target: Bucket) {
    const limit = Math.min(
      target.file_size_limit ?? GLOBAL_FILE_SIZE_LIMIT,
      GLOBAL_FILE_SIZE_LIMIT,
    );
    const tooLarge = () =>
      new StorageError(
        413,
        "EntityTooLarge",
        "Payload too large",
        "The object exceeded the maximum allowed size",
      );
    const contentType = req.headers.get("content-type") ?? "application/octet-stream";
    let bytes: Uint8Array<ArrayBuffer>;
    let mimetype = contentType;
    let cacheControl = req.headers.get("cache-control") ?? "no-cache";
    const body = await readCapped(
      req,
      contentType.startsWith("multipart/form-data") ? limit + 64 * 1024 : limit,
      tooLarge,
    );
    if (contentType.startsWith("multipart/form-data")) {
      const form = multipart(body, contentType);
      const file = form.find((part) => part.filename !== null);
      if (!file) {
        throw new StorageError(400, "InvalidRequest", "Invalid Input", "No file in the form");
      }
      mimetype = file.type ?? "text/plain;charset=UTF-8";
      const formCache = form.find((part) => part.name === "cacheControl");
      if (formCache) cacheControl = `max-age=${new TextDecoder().decode(formCache.bytes)}`;
      if (file.bytes.length > limit) throw tooLarge();
      bytes = file.bytes;
    } else {
      bytes = body;
    }
    if (!mimeAllowed(target, mimetype)) {
      throw new StorageError(
        415,
        "InvalidMimeType",
        "invalid_mime_type",
        `mime type ${mimetype} is not supported`,
      );
    }
    return { bytes, mimetype, cacheControl };
  }

  /** Stores the bytes and the row in one go: the row is written by `tx`, as whoever `tx` is. */
  async function store(
    tx: postgres.TransactionSql,
    target: Bucket,
    name: string,
    owner: string | null,
    upsert: boolean,
    upload: { bytes: Uint8Array<ArrayBuffer>; mimetype: string; cacheControl: string },
  ) {
    const digest = await crypto.subtle.digest("SHA-256", upload.bytes);
    const etag = [...new Uint8Array(digest)].slice(0, 16)
      .map((b) => b.toString(16).padStart(2, "0")).join("");
    const metadata = metadataOf(upload.bytes, upload.mimetype, upload.cacheControl, etag);
    let rows: { id: string }[];
    try {
      rows = upsert
        ? await tx<{ id: string }[]>`
            insert into storage.objects (bucket_id, name, owner, owner_id, metadata, version)
            values (${target.id}, ${name}, ${owner}, ${owner}, ${
          tx.json(metadata)
        }, ${crypto.randomUUID()})
            on conflict (bucket_id, name) do update
              set metadata = excluded.metadata, version = excluded.version, owner = excluded.owner,
                  owner_id = excluded.owner_id, updated_at = now(), last_accessed_at = now()
            returning id`
        : await tx<{ id: string }[]>`
            insert into storage.objects (bucket_id, name, owner, owner_id, metadata, version)
            values (${target.id}, ${name}, ${owner}, ${owner}, ${
          tx.json(metadata)
        }, ${crypto.randomUUID()})
            returning id`;
    } catch (error) {
      const code = (error as { code?: string }).code;
      if (code === "23505") {
        throw new StorageError(409, "Duplicate", "Duplicate", "The resource already exists");
      }
      if (code === "42501") throw rlsRefused();
      throw error;
    }
    const path = filePath(target.id, name);
    await Deno.mkdir(path.slice(0, path.lastIndexOf("/")), { recursive: true });
    const temporary = `${path}.${crypto.randomUUID()}.part`;
    await Deno.writeFile(temporary, upload.bytes);
    await Deno.rename(temporary, path);
    return rows[0].id;
  }

  async function download(row: ObjectRow) {
    await db`update storage.objects set last_accessed_at = now() where id = ${row.id}`;
    const bytes = await Deno.readFile(filePath(row.bucket_id, row.name)).catch(() => {
      throw notFound();
    });
    const metadata = row.metadata ?? {};
    return new Response(bytes, {
      headers: {
        "content-type": String(metadata.mimetype ?? "application/octet-stream"),
        "content-length": String(bytes.length),
        "cache-control": String(metadata.cacheControl ?? "no-cache"),
        etag: String(metadata.eTag ?? ""),
        "last-modified": row.updated_at.toUTCString(),
      },
    });
  }

  async function visibleObject(caller: Caller, bucketId: string, name: string) {
    const [row] = await asCaller(caller, (tx) =>
      tx<ObjectRow[]>`
        select id, bucket_id, name, owner, created_at, updated_at, last_accessed_at, metadata
          from storage.objects where bucket_id = ${bucketId} and name = ${name}`);
    if (!row) throw notFound();
    return row;
  }

  async function route(req: Request, verifier: AuthVerifier): Promise<Response> {
    const url = new URL(req.url);
    const parts = url.pathname.replace(/^\/storage\/v1\//, "").split("/");
    const [area, ...rest] = parts;
    if (area !== "object") throw new StorageError(404, "NotFound", "Not Found", "Route not found");

    // /object/upload/sign/:bucket/*
    if (rest[0] === "upload" && rest[1] === "sign") {
      const target = await bucket(rest[2]);
      const name = objectName(rest.slice(3));
      const resource = `${target.id}/${name}`;
      if (req.method === "POST") {
        const caller = await callerOf(req, verifier);
        // As Storage: may this caller create the object? Tried, then rolled back.
        await asCaller(caller, async (tx) => {
          await tx.savepoint(async (sp) => {
            try {
              await sp`insert into storage.objects (bucket_id, name, owner, owner_id)
                       values (${target.id}, ${name}, ${caller.kind === "user" ? caller.id : null},
                               ${caller.kind === "user" ? caller.id : null})`;
            } catch (error) {
              if ((error as { code?: string }).code === "42501") throw rlsRefused();
              if ((error as { code?: string }).code !== "23505") throw error;
            }
            throw new Rollback();
          }).catch((error) => {
            if (!(error instanceof Rollback)) throw error;
          });
        });
        const token = await sign({
          owner: caller.kind === "user" ? caller.id : undefined,
          url: resource,
          upsert: req.headers.get("x-upsert") === "true",
        }, SIGNED_UPLOAD_SECONDS);
        return Response.json({ url: `/object/upload/sign/${resource}?token=${token}`, token });
      }
      if (req.method === "PUT") {
        const claims = await verifySigned(url.searchParams.get("token"), resource);
        const upload = await readUpload(req, target);
        // The grant was checked against the policies when the URL was made; the upload itself
        // is Storage's own write, for the owner the token names.
        const owner = typeof claims.owner === "string" ? claims.owner : null;
        const id = await db.begin((tx) =>
          store(tx, target, name, owner, claims.upsert === true, upload)
        );
        return Response.json({ Key: resource, Id: id });
      }
    }

    // /object/sign/:bucket/* (create: POST; use: GET ?token=)
    if (rest[0] === "sign") {
      const target = await bucket(rest[1]);
      const name = objectName(rest.slice(2));
      const resource = `${target.id}/${name}`;
      if (req.method === "POST") {
        const caller = await callerOf(req, verifier);
        await visibleObject(caller, target.id, name);
        const { expiresIn } = await req.json().catch(() => ({})) as { expiresIn?: number };
        if (!Number.isInteger(expiresIn) || expiresIn! < 1) {
          throw new StorageError(400, "InvalidRequest", "Invalid Input", "expiresIn must be >= 1");
        }
        const token = await sign({ url: resource }, expiresIn!);
        return Response.json({ signedURL: `/object/sign/${resource}?token=${token}` });
      }
      if (req.method === "GET") {
        await verifySigned(url.searchParams.get("token"), resource);
        const [row] = await db<ObjectRow[]>`
          select id, bucket_id, name, owner, created_at, updated_at, last_accessed_at, metadata
            from storage.objects where bucket_id = ${target.id} and name = ${name}`;
        if (!row) throw notFound();
        return await download(row);
      }
    }

    // /object/public/:bucket/*
    if (rest[0] === "public" && req.method === "GET") {
      const target = await bucket(rest[1]);
      if (!target.public) throw notFound();
      const name = objectName(rest.slice(2));
      const [row] = await db<ObjectRow[]>`
        select id, bucket_id, name, owner, created_at, updated_at, last_accessed_at, metadata
          from storage.objects where bucket_id = ${target.id} and name = ${name}`;
      if (!row) throw notFound();
      return await download(row);
    }

    // /object/info/:bucket/*
    if (rest[0] === "info" && req.method === "GET") {
      const caller = await callerOf(req, verifier);
      const target = await bucket(rest[1]);
      const row = await visibleObject(caller, target.id, objectName(rest.slice(2)));
      const metadata = row.metadata ?? {};
      return Response.json({
        id: row.id,
        name: row.name,
        bucket_id: row.bucket_id,
        size: metadata.size ?? null,
        content_type: metadata.mimetype ?? null,
        cache_control: metadata.cacheControl ?? null,
        etag: metadata.eTag ?? null,
        metadata,
        last_modified: row.updated_at.toISOString(),
        created_at: row.created_at.toISOString(),
      });
    }

    // /object/list/:bucket
    if (rest[0] === "list" && req.method === "POST") {
      const caller = await callerOf(req, verifier);
      const target = await bucket(rest[1]);
      const body = await req.json().catch(() => ({})) as {
        prefix?: string;
        limit?: number;
        offset?: number;
        search?: string;
      };
      const prefix = (body.prefix ?? "").replace(/^\/+|\/+$/g, "");
      const base = prefix ? `${prefix}/` : "";
      const rows = await asCaller(caller, (tx) =>
        tx<ObjectRow[]>`
          select id, bucket_id, name, owner, created_at, updated_at, last_accessed_at, metadata
            from storage.objects
           where bucket_id = ${target.id} and starts_with(name, ${base})
           order by name`);
      const seen = new Set<string>();
      const entries: unknown[] = [];
      for (const row of rows) {
        const rest = row.name.slice(base.length);
        const slash = rest.indexOf("/");
        const entry = slash < 0 ? rest : rest.slice(0, slash);
        if (body.search && !entry.includes(body.search)) continue;
        if (seen.has(entry)) continue;
        seen.add(entry);
        entries.push(
          slash < 0
            ? {
              name: entry,
              id: row.id,
              updated_at: row.updated_at.toISOString(),
              created_at: row.created_at.toISOString(),
              last_accessed_at: row.last_accessed_at?.toISOString() ?? null,
              metadata: row.metadata,
            }
            : {
              name: entry,
              id: null,
              updated_at: null,
              created_at: null,
              last_accessed_at: null,
              metadata: null,
            },
        );
      }
      const offset = body.offset ?? 0;
      return Response.json(entries.slice(offset, offset + (body.limit ?? 100)));
    }

    // /object/:bucket (DELETE {prefixes}), /object/authenticated/:bucket/*, /object/:bucket/*
    const authenticated = rest[0] === "authenticated";
    const bucketId = authenticated ? rest[1] : rest[0];
    const target = await bucket(bucketId);
    const segments = authenticated ? rest.slice(2) : rest.slice(1);
    const caller = await callerOf(req, verifier);
    if (req.method === "DELETE" && segments.length === 0) {
      const { prefixes } = await req.json().catch(() => ({})) as { prefixes?: unknown[] };
      const names = (prefixes ?? []).map((entry) =>
        typeof entry === "string" ? entry : (entry as { path?: string })?.path
      ).filter((name): name is string => typeof name === "string");
      if (names.length === 0 || names.length > 1000) {
        throw new StorageError(
          400,
          "InvalidRequest",
          "Invalid Input",
          "prefixes must hold 1 to 1000 names",
        );
      }
      const removed = await asCaller(caller, (tx) =>
        tx<ObjectRow[]>`
          delete from storage.objects where bucket_id = ${target.id} and name = any(${names})
          returning id, bucket_id, name, owner, created_at, updated_at, last_accessed_at, metadata`);
      for (const row of removed) {
        await Deno.remove(filePath(row.bucket_id, row.name)).catch(() => {});
      }
      return Response.json(removed.map((row) => ({
        ...row,
        created_at: row.created_at.toISOString(),
        updated_at: row.updated_at.toISOString(),
        last_accessed_at: row.last_accessed_at?.toISOString() ?? null,
      })));
    }
    const name = objectName(segments);
    if (req.method === "GET") return await download(await visibleObject(caller, target.id, name));
    if (req.method === "POST" || req.method === "PUT") {
      const upload = await readUpload(req, target);
      const owner = caller.kind === "user" ? caller.id : null;
      const upsert = req.method === "PUT" || req.headers.get("x-upsert") === "true";
      const id = await asCaller(caller, (tx) => store(tx, target, name, owner, upsert, upload));
      return Response.json({ Id: id, Key: `${target.id}/${name}` });
    }
    throw new StorageError(405, "MethodNotAllowed", "Method Not Allowed", "Method not allowed");
  }

  return {
    async handle(req, verifier) {
      try {
        return await route(req, verifier);
      } catch (error) {
        if (error instanceof StorageError) return storageError(error);
        console.error(`[storage] ${error instanceof Error ? error.message : String(error)}`);
        return storageError(
          new StorageError(500, "InternalError", "Internal", "Internal Server Error"),
        );
      }
    },
    async close() {
      await db.end({ timeout: 5 });
    },
  };
}

/** Thrown to roll a savepoint back on purpose. */
class Rollback extends Error {}
