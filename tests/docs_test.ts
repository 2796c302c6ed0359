import assert from "node:assert/strict";
import * as contracts from "../supabase/functions/_shared/contracts.ts";
import { statusOf } from "../supabase/functions/_shared/errors.ts";
import { handler } from "../docs/examples/example-handler.ts";
import { callHandler, createUser, stackTest } from "./support.ts";

/**
 * The docs cannot drift from the code: the README stays a front door that links every page, and
 * the functions reference names every function, every contract and every error code with the
 * status the code gives it.
 */

const root = new URL("../", import.meta.url);
const read = (path: string) => Deno.readTextFile(new URL(path, root));

const functionNames = [...Deno.readDirSync(new URL("supabase/functions/", root))]
  .filter((entry) => entry.isDirectory && !entry.name.startsWith("_"))
  .map((entry) => entry.name)
  .sort();

/** The rows of the markdown table whose header row starts with `| ${firstHeader}`. */
function tableRows(markdown: string, firstHeader: string): string[][] {
  const lines = markdown.split("\n");
  const start = lines.findIndex((line) => new RegExp(`^\\| *${firstHeader} +\\|`).test(line));
  assert.ok(start >= 0, `a table headed ${firstHeader}`);
  const rows: string[][] = [];
  for (const line of lines.slice(start + 2)) {
    if (!line.startsWith("|")) break;
    rows.push(line.split("|").slice(1, -1).map((cell) => cell.trim()));
  }
  return rows;
}

Deno.test("the README is a front door of at most 150 lines that links every docs page", async () => {
  const readme = await read("README.md");
  assert.ok(readme.split("\n").length <= 150, "README.md is over 150 lines");
  for (const entry of Deno.readDirSync(new URL("docs/", root))) {
    if (entry.isFile && entry.name.endsWith(".md")) {
      assert.ok(readme.includes(`(docs/${entry.name})`), `README does not link docs/${entry.name}`);
    }
  }
});

Deno.test("every link between the docs points at a file that exists", async () => {
  const pages = [
    "README.md",
    ...[...Deno.readDirSync(new URL("docs/", root))]
      .filter((entry) => entry.name.endsWith(".md")).map((entry) => `docs/${entry.name}`),
  ];
  for (const page of pages) {
    for (const [, target] of (await read(page)).matchAll(/\]\(([^)#:]+)(?:#[^)]*)?\)/g)) {
      const url = new URL(target, new URL(page, root));
      assert.ok(Deno.statSync(url).isFile, `${page} links ${target}, which does not exist`);
    }
  }
});

Deno.test("the functions reference lists every function and only those", async () => {
  const rows = tableRows(await read("docs/functions.md"), "function");
  const listed = rows.map(([name]) => name.replaceAll("`", "")).sort();
  assert.deepEqual(listed, functionNames);
});

Deno.test("the functions reference names every request and response contract, and only real ones", async () => {
  const rows = tableRows(await read("docs/functions.md"), "function");
  const named = rows.flatMap((row) => row.slice(3).join(",").match(/[A-Za-z]+/g) ?? []);
  for (const name of named) assert.ok(name in contracts, `${name} is not in contracts.ts`);
  const bodies = Object.keys(contracts).filter((name) => /(Request|Response|Query)$/.test(name));
  assert.deepEqual(bodies.filter((name) => !named.includes(name)), []);
});

Deno.test("the errors table gives every error code the status the code answers with", async () => {
  const rows = tableRows(await read("docs/functions.md"), "status");
  const documented = new Map<string, number>();
  for (const [status, codes] of rows) {
    for (const [, code] of codes.matchAll(/`([a-z_]+)`/g)) documented.set(code, Number(status));
  }
  for (const code of contracts.ERROR_CODES) {
    assert.equal(documented.get(code), statusOf(code), `${code} is documented with its status`);
  }
});

Deno.test("the example of Writing a function is the checked example file, word for word", async () => {
  const page = await read("docs/functions.md");
  const example = await read("docs/examples/example-handler.ts");
  const shown = page.match(/```ts\n(export const handler = defineFunction[\s\S]*?)```/)?.[1];
  assert.ok(shown, "docs/functions.md shows the example");
  assert.ok(example.endsWith(shown), "the example in the docs is the end of the example file");
});

stackTest("the example handler answers a signed-in user in process", async () => {
  const user = await createUser("docs-example");
  const response = await callHandler(handler, "example", {
    user,
    method: "POST",
    body: { text: "hello" },
  });
  assert.equal(response.status, 200);
  assert.deepEqual(await response.json(), { user: user.id, length: 5, analyses: 0 });
});
