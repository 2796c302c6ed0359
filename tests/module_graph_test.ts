import assert from "node:assert/strict";
import { parse as parseToml } from "smol-toml";
import {
  EXPECTED_PACKAGES,
  functionNames,
  FUNCTIONS_DIR,
  moduleGraph,
  packagesOnFirstUse,
} from "../bench/module-graph.ts";

/**
 * Each function imports the npm packages it uses and no others: none at boot (a CORS preflight
 * is answered without them), the pipeline's with its handler, and the large SDKs (OpenAI,
 * Stripe) and postgres.js only on first use, so a function never starts slower for a package
 * that only some of its requests need. The graphs come from `deno info`; nothing is run.
 */

const names = await functionNames();

Deno.test("every function has a list of the npm packages it is expected to import", () => {
  assert.deepEqual(names, Object.keys(EXPECTED_PACKAGES).sort());
});

for (const name of names) {
  const expected = EXPECTED_PACKAGES[name];
  if (!expected) continue;
  Deno.test(
    `${name} boots with no npm package, loads ${expected.withHandler.join(", ")} with its ` +
      `handler, and ${expected.onFirstUse.join(", ")} only on first use`,
    async () => {
      const graph = await moduleGraph(`${FUNCTIONS_DIR}${name}/index.ts`);

      assert.deepEqual(graph.boot.packages, []);
      assert.deepEqual(graph.handler.packages, [...expected.withHandler].sort());
      assert.deepEqual(packagesOnFirstUse(graph), [...expected.onFirstUse].sort());
    },
  );
}

Deno.test(
  "each function's deno.json pins exactly the packages it imports, at import_map.json's versions",
  async () => {
    const root = JSON.parse(
      await Deno.readTextFile(new URL("../import_map.json", import.meta.url)),
    ).imports as Record<string, string>;
    for (const name of names) {
      const own = JSON.parse(await Deno.readTextFile(`${FUNCTIONS_DIR}${name}/deno.json`));
      const expected = [
        ...EXPECTED_PACKAGES[name].withHandler,
        ...EXPECTED_PACKAGES[name].onFirstUse,
      ]
        .sort();
      assert.deepEqual(
        own,
        { imports: Object.fromEntries(expected.map((pkg) => [pkg, root[pkg]])) },
        `supabase/functions/${name}/deno.json`,
      );
    }
  },
);

Deno.test("config.toml bundles each function with its own deno.json", async () => {
  const config = parseToml(
    await Deno.readTextFile(new URL("../supabase/config.toml", import.meta.url)),
  ) as { functions: Record<string, { import_map?: string }> };
  assert.deepEqual(
    Object.fromEntries(names.map((name) => [name, config.functions[name]?.import_map])),
    Object.fromEntries(names.map((name) => [name, `./functions/${name}/deno.json`])),
  );
});
