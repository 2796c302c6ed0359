import assert from "node:assert/strict";
import { startGateway } from "../local/gateway.ts";
import { waitFor } from "../local/process.ts";
import { ensureSigningKey, publicJwks } from "../local/signing-key.ts";
import { env, ISSUER, stackTest } from "./support.ts";

/**
 * `serve`, what every function's index.ts runs: a CORS preflight, often a fresh isolate's first
 * request from a browser, is answered without the function's handler module and the npm packages
 * behind it, and the loading of that module starts right after.
 */

const SERVE = new URL("../supabase/functions/_shared/serve.ts", import.meta.url).href;
const ORIGIN = "http://localhost:8081";

stackTest(
  "a preflight is answered while the handler's module is still loading, and starts that loading",
  async () => {
    let loadingStarted = false;
    const probe = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, () => {
      loadingStarted = true;
      return new Response(null, { status: 204 });
    });
    const dir = await Deno.makeTempDir();
    try {
      await Deno.mkdir(`${dir}/functions/slow`, { recursive: true });
      await Deno.writeTextFile(`${dir}/config.toml`, "[functions.slow]\nverify_jwt = false\n");
      await Deno.writeTextFile(
        `${dir}/functions/slow/index.ts`,
        `import { serve } from ${JSON.stringify(SERVE)};\nserve(() => import("./handler.ts"));\n`,
      );
      // A handler module that says it has started loading, and then never finishes.
      await Deno.writeTextFile(
        `${dir}/functions/slow/handler.ts`,
        `await fetch("http://127.0.0.1:${probe.addr.port}/");\n` +
          "await new Promise(() => {});\n" +
          "export const handler = () => new Response();\n",
      );
      const gateway = await startGateway({
        port: 0,
        functionsDir: `${dir}/functions`,
        configPath: `${dir}/config.toml`,
        env: { ALLOWED_ORIGINS: ORIGIN },
        jwks: publicJwks(await ensureSigningKey()),
        jwtSecret: env.JWT_SECRET,
        issuer: ISSUER,
        log: () => {},
      });
      try {
        const response = await fetch(`${gateway.url}/functions/v1/slow`, {
          method: "OPTIONS",
          headers: { origin: ORIGIN, "access-control-request-method": "POST" },
        });
        await response.body?.cancel();

        assert.equal(response.status, 204);
        assert.equal(response.headers.get("access-control-allow-origin"), ORIGIN);
        assert.match(response.headers.get("access-control-allow-methods") ?? "", /POST/);
        assert.ok(response.headers.get("x-request-id"));
        assert.equal(response.headers.get("x-content-type-options"), "nosniff");
        await waitFor("the handler's module to start loading", () => {
          return Promise.resolve(loadingStarted);
        }, 10_000);
      } finally {
        await gateway.close();
      }
    } finally {
      await probe.shutdown();
      await Deno.remove(dir, { recursive: true });
    }
  },
);
