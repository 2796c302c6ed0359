import assert from "node:assert/strict";
import { CONFIG_VARIABLES, ConfigError, parseConfig } from "./config.ts";

const valid = {
  SUPABASE_URL: "https://project.supabase.co/",
  SUPABASE_DB_URL: "postgresql://postgres:secret@db.project.supabase.co:6543/postgres",
  UPSTASH_REDIS_REST_URL: "https://eu1-example.upstash.io",
  UPSTASH_REDIS_REST_TOKEN: "token",
};

Deno.test("a complete environment parses, with the auth URLs derived from SUPABASE_URL", () => {
  const config = parseConfig(valid);
  assert.equal(config.JWKS_URL, "https://project.supabase.co/auth/v1/.well-known/jwks.json");
  assert.equal(config.JWT_ISSUER, "https://project.supabase.co/auth/v1");
  assert.deepEqual(config.ALLOWED_ORIGINS, []);
  assert.equal(config.MAX_BODY_BYTES, 5 * 1024 * 1024);
  assert.equal(config.DB_STATEMENT_TIMEOUT_MS, 5_000);
});

Deno.test("a missing secret fails loudly and names itself", () => {
  const { UPSTASH_REDIS_REST_TOKEN: _, ...missing } = valid;
  assert.throws(() => parseConfig(missing), (error: unknown) => {
    assert.ok(error instanceof ConfigError);
    assert.deepEqual(error.variables, ["UPSTASH_REDIS_REST_TOKEN"]);
    assert.match(error.message, /UPSTASH_REDIS_REST_TOKEN/);
    return true;
  });
});

Deno.test("malformed values are named, each of them", () => {
  assert.throws(
    () =>
      parseConfig({
        ...valid,
        SUPABASE_DB_URL: "mysql://nope",
        JWT_SECRET: "short",
        DB_POOL_MAX: "-1",
      }),
    (error: unknown) => {
      assert.ok(error instanceof ConfigError);
      assert.deepEqual(error.variables.sort(), ["DB_POOL_MAX", "JWT_SECRET", "SUPABASE_DB_URL"]);
      return true;
    },
  );
});

Deno.test("allowed origins are read as a comma-separated list", () => {
  const config = parseConfig({ ...valid, ALLOWED_ORIGINS: " https://a.example , * " });
  assert.deepEqual(config.ALLOWED_ORIGINS, ["https://a.example", "*"]);
});

Deno.test("an empty value counts as unset: optional ones fall back, required ones are named", () => {
  const config = parseConfig({ ...valid, OPENAI_API_KEY: "", APP_VERSION: "" });
  assert.equal(config.OPENAI_API_KEY, undefined);
  assert.equal(config.APP_VERSION, "dev");
  assert.throws(() => parseConfig({ ...valid, SUPABASE_DB_URL: "" }), /SUPABASE_DB_URL/);
});

Deno.test("the deploying guide's configuration table documents every variable the functions read", async () => {
  const readme = await Deno.readTextFile(new URL("../../../docs/deploying.md", import.meta.url));
  const documented = new Set(
    [...readme.matchAll(/^\| `([A-Z][A-Z0-9_]+)` +\|/gm)].map((match) => match[1]),
  );
  assert.deepEqual(CONFIG_VARIABLES.filter((name) => !documented.has(name)), []);
});
