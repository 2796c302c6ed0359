import assert from "node:assert/strict";
import { appClient, invoke, localRedis, stackTest } from "./support.ts";

stackTest("health answers 200 with the database and Redis checks through supabase-js", async () => {
  const { status, body } = await invoke(appClient(), "health", { method: "GET" });
  assert.equal(status, 200);
  assert.equal(body.status, "ok");
  assert.equal(body.checks.database.ok, true);
  assert.equal(body.checks.redis.ok, true);
  assert.equal(typeof body.checks.database.latency_ms, "number");
  assert.equal(typeof body.version, "string");
  assert.equal(typeof body.uptime_s, "number");
});

stackTest(
  "health reports 503 degraded while Redis is stopped and 200 once it is back",
  async () => {
    await localRedis.stop();
    try {
      const down = await invoke(appClient(), "health", { method: "GET" });
      assert.equal(down.status, 503);
      assert.equal(down.body.status, "degraded");
      assert.equal(down.body.checks.redis.ok, false);
      assert.equal(typeof down.body.checks.redis.error, "string");
      assert.equal(down.body.checks.database.ok, true);
    } finally {
      await localRedis.start();
    }
    const back = await invoke(appClient(), "health", { method: "GET" });
    assert.equal(back.status, 200);
    assert.equal(back.body.checks.redis.ok, true);
  },
);

stackTest("health refuses POST with 405 and an Allow header", async () => {
  const { status, body, headers } = await invoke(appClient(), "health", { body: {} });
  assert.equal(status, 405);
  assert.equal(body.error.code, "method_not_allowed");
  assert.equal(headers.get("allow"), "GET");
});

Deno.test("health imports neither Stripe nor OpenAI", async () => {
  const entry = new URL("../supabase/functions/health/index.ts", import.meta.url).pathname;
  const { stdout, success } = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", entry],
    stdout: "piped",
    stderr: "null",
  }).output();
  assert.ok(success);
  const graph = JSON.parse(new TextDecoder().decode(stdout));
  // The module list, not `npmPackages`: that one lists every package in the lockfile.
  const npm = (graph.modules as { specifier: string }[])
    .map((module) => module.specifier)
    .filter((specifier) => specifier.startsWith("npm:"))
    .join(" ");
  assert.match(npm, /npm:\/postgres@/, "the graph lists the npm modules health uses");
  assert.doesNotMatch(npm, /\/stripe@|\/openai@/);
});
