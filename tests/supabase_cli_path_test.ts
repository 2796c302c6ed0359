import assert from "node:assert/strict";
import { CONFIG_VARIABLES } from "../supabase/functions/_shared/config.ts";

/**
 * The Supabase CLI's own stack (`supabase start` + `supabase functions serve` + `deno task
 * redis`), for machines with Docker: what can be checked without it.
 */

const SUPABASE = new URL("../supabase/", import.meta.url);

Deno.test(
  "functions/.env.example names every setting the functions read, but those functions serve sets",
  async () => {
    const text = await Deno.readTextFile(new URL("functions/.env.example", SUPABASE));
    const named = text.split("\n")
      .map((line) => line.match(/^([A-Z][A-Z0-9_]*)=/)?.[1])
      .filter((name): name is string => name !== undefined);
    assert.equal(new Set(named).size, named.length, "a variable is named twice");
    assert.deepEqual(
      [...named].sort(),
      CONFIG_VARIABLES.filter((name) => !name.startsWith("SUPABASE_")).sort(),
    );
  },
);

/**
 * `schema.object` references to the platform's schemas, outside comments (`--` and
 * `comment on ... is '...'`) and outside literals without a space (values such as the job type
 * 'storage.cleanup'; dynamic SQL has spaces).
 */
function platformReferences(sql: string): string[] {
  const code = sql.replace(/--.*$/gm, "")
    .replace(/\bcomment on [^;]*? is\s+'(?:[^']|'')*'(?:\s+'(?:[^']|'')*')*\s*;/gi, "")
    .replace(/'[^'\s]*'/g, "''");
  return [
    ...code.matchAll(/\b(auth|storage|extensions|vault|cron|net)\.([a-z_][a-z0-9_]*)/gi),
  ].map((match) => `${match[1]}.${match[2]}`.toLowerCase());
}

Deno.test("the migrations use only the platform objects listed in platform-objects.json", async () => {
  const { objects } = JSON.parse(
    await Deno.readTextFile(new URL("platform-objects.json", SUPABASE)),
  ) as { objects: Record<string, { provided_by: string; local: string }> };
  const unlisted: string[] = [];
  for await (const entry of Deno.readDir(new URL("migrations/", SUPABASE))) {
    if (!entry.name.endsWith(".sql")) continue;
    const sql = await Deno.readTextFile(new URL(`migrations/${entry.name}`, SUPABASE));
    for (const object of new Set(platformReferences(sql))) {
      if (!(object in objects)) unlisted.push(`${object} (${entry.name})`);
    }
  }
  assert.deepEqual(unlisted, [], "add them to supabase/platform-objects.json, with their source");
  for (const [object, { provided_by, local }] of Object.entries(objects)) {
    assert.ok(provided_by && local, `${object} says where it comes from`);
  }
});

Deno.test("a platform object missing from the list is found in a migration's code", () => {
  assert.deepEqual(
    platformReferences(
      "-- auth.sessions in a comment is not a use\nselect storage.foldername(name), Auth.Users",
    ),
    ["storage.foldername", "auth.users"],
  );
});
