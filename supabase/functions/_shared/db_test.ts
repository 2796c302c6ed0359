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

Deno.test({
  name:
    "a client runs fragments, parameters, rows and queries made before its driver loaded, each query once",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    // In a process of its own, so that no other test has loaded postgres.js already.
    const script = `
      import { createSql } from ${JSON.stringify(new URL("./db.ts", import.meta.url).href)};
      const sql = createSql(${JSON.stringify(url)}, {
        max: 1, connectTimeoutMs: 5000, statementTimeoutMs: 5000,
      });
      const columns = sql.unsafe("n, label");
      const parameter = sql.json([{ n: 1, label: "one" }]);
      const rows = sql([{ n: 4 }]);
      const once = sql\`insert into lazy_probe values (5)\`;
      await sql\`create temp table lazy_probe (n int)\`;
      await sql\`insert into lazy_probe \${rows}\`;
      await once;
      await once;
      const [{ fives }] = await sql\`select count(*)::int as fives from lazy_probe where n = 5\`;
      const [row] = await sql\`
        select \${columns} from jsonb_to_recordset(\${parameter}) as r(n int, label text)\`;
      const [{ inside }] = await sql.begin((tx) => tx\`select n as inside from lazy_probe\`);
      console.log(JSON.stringify({ row, inside, fives }));
      await sql.end();
    `;
    const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
      args: ["eval", "--ext=ts", script],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(code, 0, new TextDecoder().decode(stderr));
    assert.deepEqual(JSON.parse(new TextDecoder().decode(stdout)), {
      row: { n: 1, label: "one" },
      inside: 4,
      fives: 1,
    });
  },
});
