import { Redis } from "@upstash/redis";
import assert from "node:assert/strict";
import { LOCAL_UPSTASH_TOKEN } from "../local/keys.ts";
import { portInUse, waitFor } from "../local/process.ts";
import { shellEnv } from "./support.ts";

/**
 * `deno task redis`: Redis and the Upstash bridge alone, for the Supabase CLI's own stack
 * (`supabase start` + `supabase functions serve`), which has no Redis.
 */

const STACK = new URL("../local/stack.ts", import.meta.url).pathname;

/** Apart from the test run's, the dev stack's and the other tests' stacks. */
const PORTS = { LOCAL_BRIDGE_PORT: "28979", LOCAL_REDIS_PORT: "26880" };

Deno.test({
  name: "deno task redis serves the Upstash REST protocol on Redis until Ctrl-C stops both",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const stateDir = await Deno.makeTempDir({ prefix: "redis-only-" });
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", STACK, "redis"],
      clearEnv: true,
      env: shellEnv({ ...PORTS, STACK_STATE_DIR: stateDir }),
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const output = new Response(child.stdout).text();
    const errors = new Response(child.stderr).text();
    try {
      const redis = new Redis({
        url: `http://127.0.0.1:${PORTS.LOCAL_BRIDGE_PORT}`,
        token: LOCAL_UPSTASH_TOKEN,
        retry: false,
      });
      await waitFor("the bridge", async () => {
        try {
          return (await redis.ping()) === "PONG";
        } catch {
          return false;
        }
      }, 30_000);
      await redis.set("beside-supabase-start", "yes");
      assert.equal(await redis.get("beside-supabase-start"), "yes");

      child.kill("SIGINT");
      assert.equal((await child.status).code, 0, await errors);
      assert.match(await output, /host\.docker\.internal:28979/);
      for (const port of Object.values(PORTS)) {
        assert.equal(portInUse(Number(port)), false, `port ${port} is still taken`);
      }
    } finally {
      try {
        child.kill("SIGKILL");
      } catch { /* already stopped */ }
      await Deno.remove(stateDir, { recursive: true }).catch(() => {});
    }
  },
});
