import assert from "node:assert/strict";
import { withTimeout } from "./timeout.ts";

Deno.test("withTimeout passes on a value that arrives in time", async () => {
  assert.equal(await withTimeout(Promise.resolve(42), 1_000, "answer"), 42);
});

Deno.test("withTimeout passes on a failure that arrives in time", async () => {
  await assert.rejects(withTimeout(Promise.reject(new Error("boom")), 1_000, "answer"), /boom/);
});

Deno.test("withTimeout rejects, naming what timed out, once the deadline passes", async () => {
  let release = () => {};
  const never = new Promise<void>((resolve) => release = resolve);
  await assert.rejects(withTimeout(never, 50, "the probe"), /the probe timed out after 50 ms/);
  release();
});
