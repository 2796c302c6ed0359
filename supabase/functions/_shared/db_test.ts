import assert from "node:assert/strict";
import { LOCAL_DB_URL } from "../../../local/keys.ts";
import { asUser, createSql } from "./db.ts";

/** Needs the local stack's database (`deno task test` starts it). */
const url = Deno.env.get("SUPABASE_DB_URL") ?? LOCAL_DB_URL;

Deno.test({
  name: "asUser runs the work as role authenticated with the caller's claims",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const sql = createSql(url, { max: 1, connectTimeoutMs: 5_000, statementTimeoutMs: 5_000 });
    try {
      const id = crypto.randomUUID();
      const claims = { sub: id, role: "authenticated", email: "someone@example.test" };
      const [row] = await asUser(
        sql,
        { kind: "user", id, role: "authenticated", email: claims.email, claims },
        (tx) =>
          tx<{ role: string; uid: string; email: string }[]>`
          select current_user as role, auth.uid()::text as uid, auth.email() as email`,
      );
      assert.deepEqual(row, { role: "authenticated", uid: id, email: "someone@example.test" });

      const [after] = await sql<{ role: string }[]>`select current_user as role`;
      assert.equal(after.role, "postgres", "the role does not leak out of the transaction");
    } finally {
      await sql.end();
    }
  },
});
