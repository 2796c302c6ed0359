import assert from "node:assert/strict";
import { waitFor } from "../local/process.ts";
import { appClient, database, functionsGateway, invoke, localRedis, stackTest } from "./support.ts";

stackTest("health answers 200 with nothing but ok for the database and Redis", async () => {
  const { status, body } = await invoke(appClient(), "health", { method: "GET" });
  assert.equal(status, 200);
  assert.deepEqual(body, { status: "ok", checks: { database: "ok", redis: "ok" } });
});

stackTest(
  "health reports 503 degraded while Redis is stopped and 200 once it is back",
  async () => {
    await localRedis.stop();
    try {
      const down = await invoke(appClient(), "health", { method: "GET" });
      assert.equal(down.status, 503);
      assert.deepEqual(down.body, {
        status: "degraded",
        checks: { database: "ok", redis: "down" },
      });
    } finally {
      await localRedis.start();
    }
    const back = await invoke(appClient(), "health", { method: "GET" });
    assert.equal(back.status, 200);
    assert.equal(back.body.checks.redis, "ok");
  },
);

stackTest(
  "a failing check's error text stays out of the answer and goes to the log under the request id",
  async () => {
    const logs: string[] = [];
    // Nothing listens on port 1: every Upstash call is refused at once.
    const gateway = await functionsGateway(
      { UPSTASH_REDIS_REST_URL: "http://127.0.0.1:1" },
      (line) => logs.push(line),
    );
    try {
      const response = await fetch(`${gateway.url}/functions/v1/health`);
      const text = await response.text();
      assert.equal(response.status, 503);
      assert.deepEqual(JSON.parse(text), {
        status: "degraded",
        checks: { database: "ok", redis: "down" },
      });
      const requestId = response.headers.get("x-request-id")!;
      await waitFor("the health log line", () =>
        Promise.resolve(
          logs.some((line) => line.includes("health check failed") && line.includes(requestId)),
        ), 5_000);
      const line = logs.find((line) =>
        line.includes("health check failed") && line.includes(requestId)
      )!;
      const logged = JSON.parse(line.slice(line.indexOf("{")));
      assert.equal(logged.dependency, "redis");
      assert.ok(logged.error.length > 0, "the log names the error");
      assert.ok(!text.includes(logged.error), "the answer does not");
    } finally {
      await gateway.close();
    }
  },
);

stackTest(
  "health is rate limited per client address with the free plan's general limit",
  async () => {
    const sql = database();
    try {
      const [free] = await sql<{ general_per_minute: number }[]>`
      select general_per_minute from public.plans where id = 'free'`;
      const { status, headers } = await invoke(appClient(), "health", { method: "GET" });
      assert.equal(status, 200);
      assert.equal(headers.get("x-ratelimit-limit"), String(free.general_per_minute));
      assert.ok(Number(headers.get("x-ratelimit-remaining")) < free.general_per_minute);
    } finally {
      await sql.end();
    }
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
