import assert from "node:assert/strict";
import postgres from "postgres";
import { LocalPostgres } from "../local/postgres.ts";
import { run } from "../local/process.ts";

/**
 * Deploying starts from a fresh clone: no `.local/`, no signing key, no installed tools, and a
 * database that never saw the local stack. `supabase-platform.sql` stands in for what hosted
 * Supabase already has; the pinned CLI's `db push` does the rest, as `supabase link` + `db push`
 * do against a project.
 */

const ROOT = new URL("..", import.meta.url).pathname;

/** A copy of what `git clone` gives: the files git tracks (and new ones it does not ignore). */
async function freshClone(into: string): Promise<void> {
  const listed = await run("git", ["ls-files", "--cached", "--others", "--exclude-standard"], {
    cwd: ROOT,
  });
  for (const file of listed.split("\n").filter(Boolean)) {
    const target = `${into}/${file}`;
    await Deno.mkdir(target.replace(/\/[^/]*$/, ""), { recursive: true });
    await Deno.copyFile(`${ROOT}${file}`, target).catch((error) => {
      // Deleted in the working tree but not yet committed: a clone would not have it either.
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    });
  }
}

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

Deno.test({
  name: "the pinned CLI's db push deploys every migration from a fresh clone to a fresh database",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "fresh-clone-" });
    const clone = `${dir}/clone`;
    const db = new LocalPostgres(`${dir}/state`, freePort());
    try {
      await freshClone(clone);
      await db.init();
      await db.start();
      await db.applyPlatform();

      await db.pushMigrations(clone);

      const sql = postgres(db.url, { max: 1, onnotice: () => {} });
      try {
        const applied = await sql<{ version: string }[]>`
          select version from supabase_migrations.schema_migrations order by version`;
        const shipped = [...Deno.readDirSync(`${clone}/supabase/migrations`)]
          .map((entry) => entry.name.split("_")[0])
          .sort();
        assert.deepEqual(applied.map((row) => row.version), shipped);
      } finally {
        await sql.end();
      }
      const made = [...Deno.readDirSync(`${clone}/supabase`)].map((entry) => entry.name);
      assert.ok(!made.includes("signing_keys.json"), "deploying needs no local signing key");
    } finally {
      await db.stop().catch(() => {});
      await Deno.remove(dir, { recursive: true });
    }
  },
});
