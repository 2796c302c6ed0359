import assert from "node:assert/strict";
import { DEV_PORTS, LOCAL_STATE_DIR, TEST_PORTS } from "../local/keys.ts";
import { portInUse } from "../local/process.ts";
import { ensureSigningKey } from "../local/signing-key.ts";
import { testRunEnv } from "../local/test-runner.ts";
import { shellEnv, stackTest, SUPABASE_URL } from "./support.ts";

/**
 * The two Quick start commands together: `npm test` while `npm run dev` runs. The test run's
 * stack has ports and a state folder of its own, and either stack stops without the other.
 */

const STACK = new URL("../local/stack.ts", import.meta.url).pathname;
const ROOT = new URL("..", import.meta.url).pathname;

/** The Ctrl-C test's foreground stack (local_stack_test.ts). */
const CTRL_C_PORTS = [26421, 26422, 28579, 26480];

/** A developer's stack with moved ports: the default ones may be taken on a shared machine. */
const DEV_STACK_PORTS = {
  LOCAL_GATEWAY_PORT: "26521",
  LOCAL_DB_PORT: "26522",
  LOCAL_BRIDGE_PORT: "28679",
  LOCAL_REDIS_PORT: "26580",
};

Deno.test("the test run takes its own fixed ports and state folder unless told otherwise", () => {
  const env = testRunEnv({});
  const ports = Object.keys(TEST_PORTS).map((variable) => Number(env[variable]));
  assert.deepEqual(ports, Object.values(TEST_PORTS));
  for (const port of ports) {
    assert.ok(!Object.values(DEV_PORTS).includes(port as never), `${port} is a dev stack port`);
    assert.ok(!CTRL_C_PORTS.includes(port), `${port} is the Ctrl-C test's port`);
  }
  assert.equal(env.STACK_STATE_DIR, `${ROOT}.local/test`);

  const moved = testRunEnv({ LOCAL_DB_PORT: "60001", TEST_STATE_DIR: "/tmp/elsewhere" });
  assert.equal(moved.LOCAL_DB_PORT, "60001");
  assert.equal(moved.STACK_STATE_DIR, "/tmp/elsewhere");
});

async function stack(command: "up" | "down", stateDir: string) {
  const { code, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--quiet", STACK, command],
    clearEnv: true,
    env: shellEnv({ ...DEV_STACK_PORTS, STACK_STATE_DIR: stateDir }),
    stdout: "null",
    stderr: "piped",
  }).output();
  assert.equal(code, 0, new TextDecoder().decode(stderr));
}

async function healthStatus(gateway: string): Promise<number> {
  const response = await fetch(`${gateway}/functions/v1/health`);
  await response.body?.cancel();
  return response.status;
}

stackTest(
  "a dev stack runs beside the test run's stack and stops without touching it",
  async () => {
    const devState = await Deno.makeTempDir({ prefix: "dev-stack-" });
    const devGateway = `http://127.0.0.1:${DEV_STACK_PORTS.LOCAL_GATEWAY_PORT}`;
    const ownKey = await ensureSigningKey();
    try {
      await stack("up", devState);
      const devKey = await ensureSigningKey(`${devState}/signing_keys.json`);

      assert.equal(await healthStatus(devGateway), 200);
      assert.equal(await healthStatus(SUPABASE_URL), 200, "the test run's stack");
      assert.notEqual(devKey.kid, ownKey.kid, "each stack signs with its own key");
      assert.notEqual(devState, LOCAL_STATE_DIR);

      await stack("down", devState);

      for (const port of Object.values(DEV_STACK_PORTS)) {
        assert.equal(portInUse(Number(port)), false, `port ${port} is still taken`);
      }
      assert.equal(await healthStatus(SUPABASE_URL), 200, "the test run's stack");
      assert.equal((await ensureSigningKey()).kid, ownKey.kid);
      const kept = [...Deno.readDirSync(devState)].map((entry) => entry.name).sort();
      assert.ok(kept.includes("postgres") && kept.includes("signing_keys.json"), kept.join(", "));
      assert.equal((await ensureSigningKey(`${devState}/signing_keys.json`)).kid, devKey.kid);
    } finally {
      await stack("down", devState).catch(() => {});
      await Deno.remove(devState, { recursive: true }).catch(() => {});
    }
  },
);
