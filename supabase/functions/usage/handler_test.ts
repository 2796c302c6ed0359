import assert from "node:assert/strict";
import { UsageResponse } from "../_shared/contracts.ts";
import { callHandler, createUser, stackTest } from "../../../tests/support.ts";
import { handler } from "./handler.ts";

stackTest("a new user's usage called in-process shows the whole free quota left", async () => {
  const user = await createUser("inproc-usage");

  const response = await callHandler(handler, "usage", { user });

  assert.equal(response.status, 200);
  const { usage, rate_limits } = UsageResponse.parse(await response.json());
  assert.equal(usage.used, 0);
  assert.equal(usage.remaining, usage.quota);
  // This request itself spent one of the general class.
  assert.equal(rate_limits.general.remaining, rate_limits.general.limit - 1);
});

stackTest("usage called in-process without a token is 401 unauthorized", async () => {
  const response = await callHandler(handler, "usage");

  assert.equal(response.status, 401);
  assert.equal((await response.json()).error.code, "unauthorized");
});
