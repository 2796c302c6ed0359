import assert from "node:assert/strict";
import { callHandler, stackTest } from "../../../tests/support.ts";
import { handler } from "./handler.ts";

stackTest("health called in-process answers ok for Postgres and Redis", async () => {
  const response = await callHandler(handler, "health");

  assert.equal(response.status, 200);
  assert.deepEqual(await response.json(), {
    status: "ok",
    checks: { database: "ok", redis: "ok" },
  });
  assert.ok(response.headers.get("x-request-id"));
});
