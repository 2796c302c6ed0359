import { decodeJwt, decodeProtectedHeader } from "jose";
import assert from "node:assert/strict";
import { startGateway } from "../local/gateway.ts";
import { LocalPostgres } from "../local/postgres.ts";
import { portInUse, waitFor } from "../local/process.ts";
import { ensureSigningKey, publicJwks } from "../local/signing-key.ts";
import { env, ISSUER, shellEnv, stackTest, SUPABASE_URL } from "./support.ts";

/** The local stack's own contract: its commands, its JWKS, and its gateway's reloading. */

const STACK = new URL("../local/stack.ts", import.meta.url).pathname;

async function stack(...args: string[]) {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--quiet", STACK, ...args],
    env,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return { code, stdout: decoder.decode(stdout), stderr: decoder.decode(stderr) };
}

stackTest(
  "the token command prints only an ES256 user token, for the same user each time",
  async () => {
    const email = `token-${crypto.randomUUID()}@example.test`;
    const first = await stack("token", email);
    const second = await stack("token", email);
    assert.equal(first.code, 0, first.stderr);
    const token = first.stdout.trim();
    assert.match(token, /^[\w-]+\.[\w-]+\.[\w-]+$/, "stdout holds the token and nothing else");
    assert.equal(first.stdout, `${token}\n`);

    const header = decodeProtectedHeader(token);
    const claims = decodeJwt(token);
    assert.equal(header.alg, "ES256");
    assert.equal(header.kid, (await ensureSigningKey()).kid);
    assert.equal(claims.email, email);
    assert.equal(claims.role, "authenticated");
    assert.equal(claims.aud, "authenticated");
    assert.equal(claims.iss, ISSUER);
    assert.equal(decodeJwt(second.stdout.trim()).sub, claims.sub, "the user is created once");
  },
);

stackTest("the JWKS endpoint publishes the signing key's public half only", async () => {
  const response = await fetch(`${SUPABASE_URL}/auth/v1/.well-known/jwks.json`);
  const jwks = await response.json();
  assert.equal(response.status, 200);
  assert.deepEqual(jwks, publicJwks(await ensureSigningKey()));
  assert.equal(jwks.keys[0].d, undefined);
  assert.equal(jwks.keys[0].alg, "ES256");
});

stackTest(
  "starting the stack while it runs says so instead of failing on taken ports",
  async () => {
    const again = await stack("up");
    assert.equal(again.code, 0);
    assert.match(again.stdout, /already running/);

    const foreground = await stack("dev");
    assert.equal(foreground.code, 1);
    assert.match(foreground.stderr, /already running|already in use/);
  },
);

stackTest("the gateway restarts a function when its file changes", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.mkdir(`${dir}/functions/hello`, { recursive: true });
    await Deno.writeTextFile(`${dir}/config.toml`, "[functions.hello]\nverify_jwt = false\n");
    const write = (text: string) =>
      Deno.writeTextFile(
        `${dir}/functions/hello/index.ts`,
        `Deno.serve(() => new Response(${JSON.stringify(text)}));\n`,
      );
    await write("first version");
    const gateway = await startGateway({
      port: 0,
      functionsDir: `${dir}/functions`,
      configPath: `${dir}/config.toml`,
      env: {},
      jwks: publicJwks(await ensureSigningKey()),
      jwtSecret: env.JWT_SECRET,
      issuer: ISSUER,
      watch: true,
      log: () => {},
    });
    try {
      const hello = () => fetch(`${gateway.url}/functions/v1/hello`).then((r) => r.text());
      assert.equal(await hello(), "first version");
      await write("second version");
      await waitFor("the new version", async () => (await hello()) === "second version", 15_000);
    } finally {
      await gateway.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

stackTest("Ctrl-C stops everything the foreground stack started", async () => {
  const ports = {
    LOCAL_GATEWAY_PORT: "26421",
    LOCAL_DB_PORT: "26422",
    LOCAL_BRIDGE_PORT: "28579",
    LOCAL_REDIS_PORT: "26480",
  };
  const stateDir = await Deno.makeTempDir({ prefix: "stack-ctrl-c-" });
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", STACK, "dev"],
    clearEnv: true,
    env: shellEnv({ ...ports, STACK_STATE_DIR: stateDir }),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const output = new Response(child.stdout).text();
  const errors = new Response(child.stderr).text();
  try {
    await waitFor("the second stack", async () => {
      const response = await fetch(
        `http://127.0.0.1:${ports.LOCAL_GATEWAY_PORT}/functions/v1/health`,
      );
      await response.body?.cancel();
      return response.status === 200;
    }, 120_000);
    child.kill("SIGINT");
    const status = await child.status;
    assert.equal(status.code, 0, await errors);
    assert.match(await output, /Local stack is up/);
    for (const port of Object.values(ports)) {
      assert.equal(portInUse(Number(port)), false, `port ${port} is still taken`);
    }
    assert.equal(await new LocalPostgres(stateDir, 26422).running(), false);
  } finally {
    try {
      child.kill("SIGKILL");
    } catch { /* already stopped */ }
    await Deno.remove(stateDir, { recursive: true }).catch(() => {});
  }
});
