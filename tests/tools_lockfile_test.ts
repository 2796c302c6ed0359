import assert from "node:assert/strict";
import { run } from "../local/process.ts";

/**
 * tools/ installs the pinned Supabase CLI with `npm ci`, which installs exactly what
 * tools/package-lock.json records and fails when it is out of step with tools/package.json. The
 * lockfile must record the CLI's package for every platform, so a fork's CI on any runner
 * installs the same CLI, and nothing the stack does rewrites it.
 */

const TOOLS = new URL("../tools/", import.meta.url).pathname;

Deno.test("tools/package-lock.json is what npm would write for tools/package.json", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tools-lock-" });
  try {
    for (const file of ["package.json", "package-lock.json"]) {
      await Deno.copyFile(`${TOOLS}${file}`, `${dir}/${file}`);
    }
    await run("npm", [
      "install",
      "--package-lock-only",
      "--ignore-scripts",
      "--no-audit",
      "--no-fund",
      "--loglevel=error",
    ], { cwd: dir });
    assert.equal(
      await Deno.readTextFile(`${dir}/package-lock.json`),
      await Deno.readTextFile(`${TOOLS}package-lock.json`),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("tools/package-lock.json records the pinned CLI's package for every platform", async () => {
  const lock = JSON.parse(await Deno.readTextFile(`${TOOLS}package-lock.json`));
  const cli = lock.packages["node_modules/supabase"];
  const platforms = Object.keys(cli.optionalDependencies ?? {});
  assert.ok(platforms.some((name) => name.includes("linux-x64")), platforms.join(", "));
  assert.ok(platforms.some((name) => name.includes("darwin-arm64")), platforms.join(", "));
  for (const name of platforms) {
    const entry = lock.packages[`node_modules/${name}`];
    assert.equal(entry?.version, cli.optionalDependencies[name], `${name} is not in the lockfile`);
    assert.match(entry.integrity, /^sha512-/);
  }
});
