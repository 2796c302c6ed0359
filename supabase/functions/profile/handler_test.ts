import assert from "node:assert/strict";
import { ProfileResponse } from "../_shared/contracts.ts";
import { callHandler, createUser, stackTest } from "../../../tests/support.ts";
import { handler } from "./handler.ts";

stackTest(
  "a new user's profile called in-process is on the free plan with its limits",
  async () => {
    const user = await createUser("inproc-profile");

    const response = await callHandler(handler, "profile", { user });

    assert.equal(response.status, 200);
    const profile = ProfileResponse.parse(await response.json());
    assert.equal(profile.id, user.id);
    assert.equal(profile.email, user.email);
    assert.equal(profile.plan.id, "free");
    assert.ok(profile.plan.general_per_minute > 0);
  },
);

stackTest("settings changed in-process are what the next in-process read answers", async () => {
  const user = await createUser("inproc-settings");

  const patched = await callHandler(handler, "profile", {
    user,
    method: "PATCH",
    body: { settings: { theme: "dark" } },
  });
  assert.equal(patched.status, 200);
  await patched.body?.cancel();

  const read = await callHandler(handler, "profile", { user });
  assert.equal(ProfileResponse.parse(await read.json()).settings.theme, "dark");
});
