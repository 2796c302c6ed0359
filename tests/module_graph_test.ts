import assert from "node:assert/strict";
import {
  EXPECTED_PACKAGES,
  functionNames,
  FUNCTIONS_DIR,
  moduleGraph,
  packagesOnFirstUse,
} from "../bench/module-graph.ts";

/**
 * Each function imports the npm packages it uses and no others, and imports the large SDKs
 * (OpenAI, Stripe) only on first use, so a function never boots slower for a package that only
 * some of its requests need. The graphs come from `deno info`; nothing is run.
 */

const names = await functionNames();

Deno.test("every function has a list of the npm packages it is expected to import", () => {
  assert.deepEqual(names, Object.keys(EXPECTED_PACKAGES).sort());
});

for (const name of names) {
  const expected = EXPECTED_PACKAGES[name];
  if (!expected) continue;
  const lazy = expected.onFirstUse.length > 0
    ? `, and ${expected.onFirstUse.join(", ")} only on first use`
    : "";
  Deno.test(`${name} imports only ${expected.atBoot.join(", ")} when it boots${lazy}`, async () => {
    const graph = await moduleGraph(`${FUNCTIONS_DIR}${name}/index.ts`);

    assert.deepEqual(graph.boot.packages, [...expected.atBoot].sort());
    assert.deepEqual(packagesOnFirstUse(graph), [...expected.onFirstUse].sort());
  });
}
