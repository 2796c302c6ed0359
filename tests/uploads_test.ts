import assert from "node:assert/strict";
import postgres from "postgres";
import { createApiClient } from "../client/index.ts";
import {
  AnalyzeResponse,
  HistoryResponse,
  UploadDeleted,
  UploadGrant,
  UploadsPage,
} from "../supabase/functions/_shared/contracts.ts";
import { modelStack } from "./ai_support.ts";
import {
  appClient,
  atStartOfWindow,
  createUser,
  database,
  env,
  invoke,
  ownPlan,
  processJobs,
  stackTest,
  SUPABASE_URL,
  type TestUser,
} from "./support.ts";

/**
 * Photos through the gateway with supabase-js, as the Expo app sends them: `uploads` grants a
 * signed URL under the storage quota, the bytes go straight to Storage (`/storage/v1`, the local
 * stand-in in local/storage-server.ts, whose writes the storage policies decide), `analyze` hands
 * the model a short-lived signed URL, and deletion gives the bytes back.
 */

const { server, gateway, analyze } = await modelStack();
const sql = database();

/** A PNG of exactly `size` bytes: the signature, then filler. */
function png(size = 1024): Blob {
  const bytes = new Uint8Array(size);
  bytes.set([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  for (let i = 8; i < size; i++) bytes[i] = (i * 31) % 256;
  return new Blob([bytes], { type: "image/png" });
}

const grantBody = (size = 1024, extra: Record<string, unknown> = {}) => ({
  bucket: "user-uploads",
  content_type: "image/png",
  size_bytes: size,
  purpose: "progress",
  ...extra,
});

const uploads = (user: TestUser, options: Parameters<typeof invoke>[2] = {}) =>
  invoke(appClient(user.token, gateway.url), "uploads", options);

async function grant(user: TestUser, size = 1024) {
  const { status, body } = await uploads(user, { body: grantBody(size) });
  assert.equal(status, 201, JSON.stringify(body));
  return UploadGrant.parse(body);
}

/** Grant, then upload through the granted URL as the app does (`uploadToSignedUrl`). */
async function uploaded(user: TestUser, file = png()) {
  const granted = await grant(user, file.size);
  const { error } = await appClient(user.token).storage.from("user-uploads")
    .uploadToSignedUrl(granted.path, granted.token, file);
  assert.equal(error, null);
  return granted;
}

async function usedBytes(userId: string): Promise<number> {
  const [row] = await sql<{ used: string }[]>`
    select coalesce((select used_bytes from public.storage_usage where user_id = ${userId}), 0)
           as used`;
  return Number(row.used);
}

async function objectExists(path: string): Promise<boolean> {
  const [row] = await sql<{ found: boolean }[]>`
    select exists (select from storage.objects where bucket_id = 'user-uploads' and name = ${path})
           as found`;
  return row.found;
}

stackTest(
  "a 1 KB PNG uploaded through a granted URL is listed, analysed from a signed URL and deleted, " +
    "and its bytes are released",
  async () => {
    const user = await createUser("photo");
    const file = png(1024);
    const granted = await uploaded(user, file);
    assert.match(granted.path, new RegExp(`^${user.id}/progress/${granted.upload_id}\\.png$`));
    assert.equal(await usedBytes(user.id), 1024);

    const listed = UploadsPage.parse((await uploads(user, { method: "GET" })).body);
    assert.deepEqual(listed.items.map((item) => [item.path, item.size_bytes, item.content_type]), [
      [granted.path, 1024, "image/png"],
    ]);

    const answer = await analyze(user.token, {
      analysis_type: "posture",
      input: { kind: "storage", bucket: "user-uploads", path: granted.path },
      mode: "sync",
    });
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    const { analysis } = AnalyzeResponse.parse(answer.body);
    assert.equal(analysis.input_kind, "storage");
    assert.equal(analysis.input_path, `user-uploads/${granted.path}`);
    const sent = server.requests.at(-1).messages.at(-1).content.find((part: { type: string }) =>
      part.type === "image_url"
    ).image_url.url as string;
    assert.ok(sent.startsWith(`${SUPABASE_URL}/storage/v1/object/sign/user-uploads/`), sent);
    const token = JSON.parse(atob(new URL(sent).searchParams.get("token")!.split(".")[1]));
    assert.equal(token.exp - token.iat, 300, "the model's URL is valid for five minutes");
    const downloaded = await fetch(sent);
    assert.equal(downloaded.status, 200);
    assert.deepEqual(
      new Uint8Array(await downloaded.arrayBuffer()),
      new Uint8Array(await file.arrayBuffer()),
    );

    const history = HistoryResponse.parse(
      (await invoke(appClient(user.token, gateway.url), "history", { method: "GET" })).body,
    );
    assert.equal(history.type, "analyses");
    assert.equal(
      history.type === "analyses" ? history.items[0].input_path : null,
      `user-uploads/${granted.path}`,
    );

    const deleted = await invoke(
      appClient(user.token, gateway.url),
      `uploads?path=${granted.path}`,
      { method: "DELETE" },
    );
    assert.equal(deleted.status, 200, JSON.stringify(deleted.body));
    assert.equal(UploadDeleted.parse(deleted.body).storage.used_bytes, 0);
    assert.equal(await usedBytes(user.id), 0);
    assert.equal(await objectExists(granted.path), false);
    assert.equal((await fetch(sent)).status, 404, "the signed URL no longer finds it");
  },
);

stackTest(
  "another user cannot read, list, analyse or delete a user's object, through the functions or " +
    "Storage",
  async () => {
    const owner = await createUser("owner");
    const other = await createUser("other");
    const granted = await uploaded(owner);

    const listed = UploadsPage.parse((await uploads(other, { method: "GET" })).body);
    assert.deepEqual(listed.items, []);
    const analysed = await analyze(other.token, {
      analysis_type: "posture",
      input: { kind: "storage", bucket: "user-uploads", path: granted.path },
    });
    assert.equal(analysed.status, 403);
    const deleted = await invoke(
      appClient(other.token, gateway.url),
      `uploads?path=${granted.path}`,
      { method: "DELETE" },
    );
    assert.equal(deleted.status, 403);
    assert.equal(deleted.body.error.code, "forbidden");

    const storage = appClient(other.token).storage.from("user-uploads");
    const download = await storage.download(granted.path);
    assert.equal((download.error as { status?: number } | null)?.status, 404);
    const signed = await storage.createSignedUrl(granted.path, 60);
    assert.equal((signed.error as { status?: number } | null)?.status, 404);
    const folder = await storage.list(`${owner.id}/progress`);
    assert.deepEqual(folder.data, []);
    const removed = await storage.remove([granted.path]);
    assert.deepEqual(removed.data, []);
    const planted = await storage.upload(`${owner.id}/progress/planted.png`, png());
    assert.equal((planted.error as { status?: number } | null)?.status, 403);

    assert.equal(await objectExists(granted.path), true);
    const mine = await appClient(owner.token).storage.from("user-uploads").download(granted.path);
    assert.equal(mine.error, null);
    assert.equal(mine.data!.size, 1024);
  },
);

stackTest("Storage itself refuses a 6 MB file and a text/html file", async () => {
  const user = await createUser("limits");
  const storage = appClient(user.token).storage.from("user-uploads");

  const big = await storage.upload(`${user.id}/progress/big.png`, png(6 * 1024 * 1024));
  assert.equal((big.error as { status?: number } | null)?.status, 413);
  const html = await storage.upload(
    `${user.id}/progress/page.html`,
    new Blob(["<h1>hi</h1>"], { type: "text/html" }),
  );
  assert.equal((html.error as { status?: number } | null)?.status, 415);

  // A granted URL does not lift the bucket's limits either.
  const granted = await grant(user, 1024);
  const tooBig = await storage.uploadToSignedUrl(granted.path, granted.token, png(6 * 1024 * 1024));
  assert.equal((tooBig.error as { status?: number } | null)?.status, 413);
  assert.equal(await objectExists(granted.path), false);
});

stackTest(
  "a grant for the wrong bucket, type or size, or a path outside the caller's folder, is " +
    "refused and reserves nothing",
  async () => {
    const user = await createUser("refused");
    const other = await createUser("refused-other");
    const cases: [Record<string, unknown>, number, string][] = [
      [grantBody(1024, { bucket: "somewhere-else" }), 400, "bucket"],
      [grantBody(1024, { content_type: "text/html" }), 400, "content_type"],
      [grantBody(5 * 1024 * 1024 + 1), 400, "size_bytes"],
      [grantBody(1024, { purpose: "../../etc" }), 400, "purpose"],
      [grantBody(1024, { purpose: "pro\u0000gress" }), 400, "purpose"],
    ];
    for (const [body, status, field] of cases) {
      const answer = await uploads(user, { body });
      assert.equal(answer.status, status, JSON.stringify(answer.body));
      assert.equal(answer.body.error.field, field);
    }
    const paths: [string, number][] = [
      [`${user.id}/progress/../../${other.id}/x.png`, 400],
      [`${other.id}/progress/x.png`, 403],
      [`${user.id}/progress/missing.png`, 404],
    ];
    for (const [path, status] of paths) {
      const answer = await invoke(
        appClient(user.token, gateway.url),
        `uploads?path=${encodeURIComponent(path)}`,
        { method: "DELETE" },
      );
      assert.equal(answer.status, status, `${path}: ${JSON.stringify(answer.body)}`);
    }
    assert.equal(await usedBytes(user.id), 0);
  },
);

stackTest("the 21st grant in a minute on the free plan is refused with 429", async () => {
  const user = await createUser("grant-burst");
  await atStartOfWindow();
  const statuses = [];
  for (let i = 0; i < 21; i++) statuses.push((await uploads(user, { body: grantBody(10) })).status);
  assert.deepEqual(statuses, [...Array(20).fill(201), 429]);
  assert.equal(await usedBytes(user.id), 200, "the refused grant reserved nothing");
});

stackTest(
  "1,000 concurrent reservations for a user with room for 10 grant exactly 10",
  async () => {
    const user = await createUser("quota-sql");
    const restore = await ownPlan(user, { storage_quota_bytes: 10_000 });
    // Enough connections that the statements really do run at once.
    const pool = postgres(env.SUPABASE_DB_URL, { max: 32, onnotice: () => {} });
    try {
      const outcomes = await Promise.all(
        Array.from({ length: 1000 }, (_, n) =>
          pool<{ outcome: string }[]>`
            select outcome from public.reserve_storage_bytes(
              ${user.id}, 'user-uploads', ${`${user.id}/p/${n}.png`}, 'image/png', 1000,
              now() + interval '2 hours')`.then(([row]) => row.outcome)),
      );
      assert.equal(outcomes.filter((o) => o === "reserved").length, 10);
      assert.equal(outcomes.filter((o) => o === "quota_exceeded").length, 990);
      assert.equal(await usedBytes(user.id), 10_000);
    } finally {
      await pool.end();
      await restore();
    }
  },
);

stackTest(
  "concurrent grants over HTTP for a user with room for 3 grant exactly 3; the rest are 402 " +
    "with the bytes used and the quota",
  async () => {
    const user = await createUser("quota-http");
    const restore = await ownPlan(user, { storage_quota_bytes: 3_000, upload_per_minute: 100 });
    try {
      const answers = await Promise.all(
        Array.from({ length: 30 }, () => uploads(user, { body: grantBody(1000) })),
      );
      assert.equal(answers.filter((a) => a.status === 201).length, 3);
      const refused = answers.filter((a) => a.status === 402);
      assert.equal(refused.length, 27);
      assert.deepEqual(
        [refused[0].body.error.code, refused[0].body.error.used, refused[0].body.error.quota],
        ["quota_exceeded", 3000, 3000],
      );
    } finally {
      await restore();
    }
  },
);

stackTest(
  "a grant whose object never arrived is released by the sweep after it expired",
  async () => {
    const user = await createUser("abandoned");
    const arrived = await uploaded(user, png(700));
    const abandoned = await grant(user, 2000);
    assert.equal(await usedBytes(user.id), 2700);

    await sql`
    update public.storage_reservations set expires_at = now() - interval '1 hour'
     where object_name in (${arrived.path}, ${abandoned.path})`;
    await sql`select public.settle_storage_reservations()`;

    assert.equal(await usedBytes(user.id), 700, "only the object that arrived still counts");
  },
);

stackTest(
  "objects past their bucket's retention are removed through Storage and their bytes released",
  async () => {
    const user = await createUser("retention");
    const old = await uploaded(user, png(500));
    const recent = await uploaded(user, png(300));
    await sql`select public.settle_storage_reservations(interval '-3 hours')`;
    await sql`
      update storage.objects
         set created_at = now() - interval '100 days', updated_at = now() - interval '100 days',
             last_accessed_at = now() - interval '91 days'
       where bucket_id = 'user-uploads' and name = ${old.path}`;

    await sql`select public.enqueue_storage_cleanup()`;
    assert.equal((await processJobs(gateway.url)).status, 200);

    assert.equal(await objectExists(old.path), false);
    assert.equal(await objectExists(recent.path), true);
    assert.equal(await usedBytes(user.id), 300);
    const gone = await appClient(user.token).storage.from("user-uploads").download(old.path);
    assert.equal((gone.error as { status?: number } | null)?.status, 404);
  },
);

stackTest("deleting an account removes every object in its folder from Storage", async () => {
  const user = await createUser("leaving");
  const photo = await uploaded(user);
  const avatar = await appClient(user.token).storage.from("avatars")
    .upload(`${user.id}/avatar/me.png`, png(200));
  assert.equal(avatar.error, null);

  const deleted = await invoke(appClient(user.token, gateway.url), "profile", { method: "DELETE" });
  assert.equal(deleted.status, 200);
  assert.equal((await processJobs(gateway.url)).status, 200);

  const [left] = await sql<{ count: number }[]>`
    select count(*)::int as count from storage.objects where name like ${user.id + "/%"}`;
  assert.equal(left.count, 0);
  const file = await fetch(
    `${SUPABASE_URL}/storage/v1/object/public/avatars/${user.id}/avatar/me.png`,
  );
  assert.equal(file.status, 404);
  assert.equal(await objectExists(photo.path), false);
});

stackTest("the app's client uploads a photo and has it analysed by its path", async () => {
  const user = await createUser("client-photo");
  // The functions run on this file's gateway (with the model server); Storage is the stack's.
  const api = createApiClient({
    functions: appClient(user.token, gateway.url).functions,
    storage: appClient(user.token).storage,
  });
  const file = png(2048);

  const granted = await api.uploadPhoto(file, { purpose: "meal" });
  assert.match(granted.path, new RegExp(`^${user.id}/meal/.+\\.png$`));
  const stored = await appClient(user.token).storage.from("user-uploads").download(granted.path);
  assert.deepEqual(
    new Uint8Array(await stored.data!.arrayBuffer()),
    new Uint8Array(await file.arrayBuffer()),
  );

  const accepted = await api.analyzePhoto(granted.path, "nutrition");
  assert.ok("analysis_id" in accepted, "a photo is analysed in the background");
  const waiting = api.waitForAnalysis(accepted.analysis_id, { intervalMs: 50 });
  assert.equal((await processJobs(gateway.url)).status, 200);
  const analysis = await waiting;
  assert.equal(analysis.status, "done");
  assert.equal(analysis.input_path, `user-uploads/${granted.path}`);
  assert.deepEqual((await api.uploads.list()).items.map((item) => item.path), [granted.path]);
  assert.equal((await api.uploads.delete(granted.path)).storage.used_bytes, 0);

  await assert.rejects(
    api.uploadPhoto(new Blob(["<p>"], { type: "text/html" }), { purpose: "meal" }),
    (error: { code?: string }) => error.code === "validation_failed",
  );
});
