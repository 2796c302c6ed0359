import assert from "node:assert/strict";
import {
  base64url,
  exportJWK,
  exportSPKI,
  generateKeyPair,
  type JWK,
  type JWTPayload,
  SignJWT,
  UnsecuredJWT,
} from "jose";
import { LOCAL_ANON_KEY, LOCAL_JWT_SECRET, LOCAL_SERVICE_ROLE_KEY } from "../../../local/keys.ts";
import { type AuthVerifierOptions, bearerToken, createAuthVerifier } from "./auth.ts";
import { ApiError } from "./errors.ts";

const ISSUER = "http://127.0.0.1:54321/auth/v1";
const USER_ID = "6f1c2b9e-3d4a-4c5b-9e8f-0a1b2c3d4e5f";
const SECRET = new TextEncoder().encode(LOCAL_JWT_SECRET);

const es = await generateKeyPair("ES256");
const rs = await generateKeyPair("RS256");
const esJwk: JWK = { ...await exportJWK(es.publicKey), kid: "es-1", alg: "ES256", use: "sig" };
const rsJwk: JWK = { ...await exportJWK(rs.publicKey), kid: "rs-1", alg: "RS256", use: "sig" };

function userClaims(overrides: JWTPayload = {}): JWTPayload {
  const now = Math.floor(Date.now() / 1000);
  return {
    iss: ISSUER,
    aud: "authenticated",
    sub: USER_ID,
    role: "authenticated",
    email: "ada@example.com",
    iat: now,
    exp: now + 3600,
    ...overrides,
  };
}

function sign(
  key: CryptoKey | Uint8Array,
  header: { alg: string; kid?: string },
  claims: JWTPayload = userClaims(),
): Promise<string> {
  return new SignJWT(claims).setProtectedHeader({ ...header, typ: "JWT" }).sign(key);
}

const signEs = (claims?: JWTPayload, kid = "es-1") =>
  sign(es.privateKey, { alg: "ES256", kid }, claims);

/** A JWKS endpoint on a random port that counts its hits and can be rotated or broken. */
function startJwks(initialKeys: JWK[] = [esJwk, rsJwk]) {
  const state = { keys: initialKeys, status: 200, hits: 0 };
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, () => {
    state.hits++;
    return state.status === 200
      ? Response.json({ keys: state.keys })
      : new Response("unavailable", { status: state.status });
  });
  let closed: Promise<void> | undefined;
  const close = () => closed ??= server.shutdown();
  return {
    url: `http://127.0.0.1:${server.addr.port}/auth/v1/.well-known/jwks.json`,
    state,
    close,
    [Symbol.asyncDispose]: close,
  };
}

/**
 * A verifier against `jwksUrl` with the local demo secret and a clock the test moves by hand,
 * starting at the real time so that claims made from `Date.now()` mean what they say.
 */
function verifierFor(jwksUrl: string, overrides: Partial<AuthVerifierOptions> = {}) {
  const clock = { ms: Date.now() };
  const verifier = createAuthVerifier({
    jwtSecret: LOCAL_JWT_SECRET,
    jwksUrl,
    issuer: ISSUER,
    now: () => clock.ms,
    ...overrides,
  });
  return { verifier, clock };
}

async function assertUnauthorized(promise: Promise<unknown>, message = "invalid token") {
  await assert.rejects(promise, (err) => {
    assert.ok(err instanceof ApiError, `expected ApiError, got ${err}`);
    assert.equal(err.status, 401);
    assert.equal(err.code, "unauthorized");
    assert.equal(err.message, message);
    return true;
  });
}

Deno.test("a valid ES256 user token yields a user caller with id and email", async () => {
  await using jwks = startJwks();
  const { verifier } = verifierFor(jwks.url);
  const caller = await verifier.verify(await signEs());
  assert.equal(caller.kind, "user");
  assert.ok(caller.kind === "user");
  assert.equal(caller.id, USER_ID);
  assert.equal(caller.email, "ada@example.com");
  assert.equal(caller.role, "authenticated");
  assert.equal(caller.claims.sub, USER_ID);
});

Deno.test("a valid RS256 user token yields a user caller", async () => {
  await using jwks = startJwks();
  const { verifier } = verifierFor(jwks.url);
  const caller = await verifier.verify(await sign(rs.privateKey, { alg: "RS256", kid: "rs-1" }));
  assert.deepEqual([caller.kind, caller.kind === "user" && caller.id], ["user", USER_ID]);
});

Deno.test("a valid HS256 user token signed with the secret yields a user caller", async () => {
  await using jwks = startJwks();
  const { verifier } = verifierFor(jwks.url);
  const caller = await verifier.verify(await sign(SECRET, { alg: "HS256" }));
  assert.deepEqual([caller.kind, caller.kind === "user" && caller.id], ["user", USER_ID]);
  assert.equal(jwks.state.hits, 0);
});

Deno.test("a user token with an empty email yields a user caller with a null email", async () => {
  await using jwks = startJwks();
  const { verifier } = verifierFor(jwks.url);
  const caller = await verifier.verify(await signEs(userClaims({ email: "" })));
  assert.ok(caller.kind === "user");
  assert.equal(caller.email, null);
});

Deno.test("a user token with several audiences including the expected one is accepted", async () => {
  await using jwks = startJwks();
  const { verifier } = verifierFor(jwks.url);
  const caller = await verifier.verify(
    await signEs(userClaims({ aud: ["other", "authenticated"] })),
  );
  assert.equal(caller.kind, "user");
});

Deno.test("the local anon key yields an anon caller", async () => {
  const { verifier } = verifierFor("http://127.0.0.1:9/unused");
  const caller = await verifier.verify(LOCAL_ANON_KEY);
  assert.equal(caller.kind, "anon");
  assert.equal(caller.claims.iss, "supabase-demo");
});

Deno.test("the local service-role key yields a service_role caller", async () => {
  const { verifier } = verifierFor("http://127.0.0.1:9/unused");
  const caller = await verifier.verify(LOCAL_SERVICE_ROLE_KEY);
  assert.equal(caller.kind, "service_role");
});

Deno.test("an unsigned token with alg none is rejected", async () => {
  await using jwks = startJwks();
  const { verifier } = verifierFor(jwks.url);
  await assertUnauthorized(verifier.verify(new UnsecuredJWT(userClaims()).encode()));
});

Deno.test("an ES256 token with its signature stripped is rejected", async () => {
  await using jwks = startJwks();
  const { verifier } = verifierFor(jwks.url);
  const [header, payload] = (await signEs()).split(".");
  await assertUnauthorized(verifier.verify(`${header}.${payload}.`));
});

Deno.test("an expired token is rejected as expired", async () => {
  await using jwks = startJwks();
  const { verifier } = verifierFor(jwks.url);
  const past = Math.floor(Date.now() / 1000) - 60;
  await assertUnauthorized(
    verifier.verify(await signEs(userClaims({ exp: past }))),
    "token expired",
  );
});

Deno.test("a token without exp is rejected", async () => {
  await using jwks = startJwks();
  const { verifier } = verifierFor(jwks.url);
  await assertUnauthorized(verifier.verify(await signEs(userClaims({ exp: undefined }))));
});

Deno.test("a token whose nbf is in the future is rejected", async () => {
  await using jwks = startJwks();
  const { verifier } = verifierFor(jwks.url);
  const later = Math.floor(Date.now() / 1000) + 60;
  await assertUnauthorized(verifier.verify(await signEs(userClaims({ nbf: later }))));
});

Deno.test("a token with a tampered payload is rejected", async () => {
  await using jwks = startJwks();
  const { verifier } = verifierFor(jwks.url);
  const [header, , signature] = (await signEs()).split(".");
  const forged = base64url.encode(
    JSON.stringify(userClaims({ sub: "00000000-0000-4000-8000-000000000000" })),
  );
  await assertUnauthorized(verifier.verify(`${header}.${forged}.${signature}`));
});

Deno.test("a token signed by another key under a published kid is rejected", async () => {
  await using jwks = startJwks();
  const { verifier } = verifierFor(jwks.url);
  const impostor = await generateKeyPair("ES256");
  await assertUnauthorized(
    verifier.verify(await sign(impostor.privateKey, { alg: "ES256", kid: "es-1" })),
  );
});

Deno.test("a user token for another audience is rejected", async () => {
  await using jwks = startJwks();
  const { verifier } = verifierFor(jwks.url);
  await assertUnauthorized(verifier.verify(await signEs(userClaims({ aud: "someone-else" }))));
});

Deno.test("a user token from another issuer is rejected", async () => {
  await using jwks = startJwks();
  const { verifier } = verifierFor(jwks.url);
  await assertUnauthorized(
    verifier.verify(await signEs(userClaims({ iss: "https://evil.example/auth/v1" }))),
  );
});

Deno.test("a user token whose sub is not a uuid is rejected", async () => {
  await using jwks = startJwks();
  const { verifier } = verifierFor(jwks.url);
  await assertUnauthorized(verifier.verify(await signEs(userClaims({ sub: "admin" }))));
});

Deno.test("an HS256 token keyed with the ES256 public JWK is rejected", async () => {
  await using jwks = startJwks();
  const { verifier } = verifierFor(jwks.url);
  const hmacKey = new TextEncoder().encode(JSON.stringify(esJwk));
  await assertUnauthorized(verifier.verify(await sign(hmacKey, { alg: "HS256", kid: "es-1" })));
});

Deno.test("an HS256 token keyed with the ES256 public key PEM is rejected", async () => {
  await using jwks = startJwks();
  const { verifier } = verifierFor(jwks.url);
  const hmacKey = new TextEncoder().encode(await exportSPKI(es.publicKey));
  await assertUnauthorized(verifier.verify(await sign(hmacKey, { alg: "HS256", kid: "es-1" })));
});

Deno.test("an HS256 token is rejected when no secret is configured", async () => {
  await using jwks = startJwks();
  const { verifier } = verifierFor(jwks.url, { jwtSecret: undefined });
  await assertUnauthorized(verifier.verify(LOCAL_SERVICE_ROLE_KEY));
});

Deno.test("a token with an ES256 header but an HMAC signature made with the secret is rejected", async () => {
  await using jwks = startJwks();
  const { verifier } = verifierFor(jwks.url);
  const encode = (value: unknown) => base64url.encode(JSON.stringify(value));
  const input = `${encode({ alg: "ES256", kid: "es-1", typ: "JWT" })}.${encode(userClaims())}`;
  const key = await crypto.subtle.importKey(
    "raw",
    SECRET,
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const mac = await crypto.subtle.sign("HMAC", key, new TextEncoder().encode(input));
  await assertUnauthorized(verifier.verify(`${input}.${base64url.encode(new Uint8Array(mac))}`));
});

Deno.test("an ES256 token signed by a published RS256 kid is rejected", async () => {
  await using jwks = startJwks();
  const { verifier } = verifierFor(jwks.url);
  await assertUnauthorized(verifier.verify(await signEs(userClaims(), "rs-1")));
});

Deno.test("an ES256 token without a kid is rejected", async () => {
  await using jwks = startJwks();
  const { verifier } = verifierFor(jwks.url);
  await assertUnauthorized(verifier.verify(await sign(es.privateKey, { alg: "ES256" })));
  assert.equal(jwks.state.hits, 0);
});

Deno.test("an HS384 token signed with the secret is rejected", async () => {
  await using jwks = startJwks();
  const { verifier } = verifierFor(jwks.url);
  await assertUnauthorized(verifier.verify(await sign(SECRET, { alg: "HS384" })));
});

Deno.test("a correctly signed token with an unknown role is rejected", async () => {
  await using jwks = startJwks();
  const { verifier } = verifierFor(jwks.url);
  await assertUnauthorized(
    verifier.verify(await sign(SECRET, { alg: "HS256" }, userClaims({ role: "supabase_admin" }))),
  );
});

Deno.test("malformed token strings are rejected", async () => {
  await using jwks = startJwks();
  const { verifier } = verifierFor(jwks.url);
  for (const token of ["", "not-a-jwt", "a.b.c", "...", `${LOCAL_ANON_KEY}x`, "Bearer x"]) {
    await assertUnauthorized(verifier.verify(token));
  }
});

Deno.test("concurrent first requests share one JWKS fetch and all verify", async () => {
  await using jwks = startJwks();
  const { verifier } = verifierFor(jwks.url);
  const token = await signEs();
  const callers = await Promise.all(Array.from({ length: 50 }, () => verifier.verify(token)));
  assert.ok(callers.every((caller) => caller.kind === "user"));
  assert.equal(jwks.state.hits, 1);
});

Deno.test("a flood of unknown kids causes one JWKS fetch per cooldown window", async () => {
  await using jwks = startJwks();
  const { verifier, clock } = verifierFor(jwks.url);
  const tokens = await Promise.all(
    Array.from({ length: 1_000 }, () => signEs(userClaims(), crypto.randomUUID())),
  );
  const results = await Promise.allSettled(tokens.map((token) => verifier.verify(token)));
  assert.ok(results.every((r) => r.status === "rejected" && r.reason instanceof ApiError));
  assert.equal(jwks.state.hits, 1);

  clock.ms += 29_999;
  await assertUnauthorized(verifier.verify(await signEs(userClaims(), crypto.randomUUID())));
  assert.equal(jwks.state.hits, 1);

  clock.ms += 2;
  await assertUnauthorized(verifier.verify(await signEs(userClaims(), crypto.randomUUID())));
  assert.equal(jwks.state.hits, 2);
});

Deno.test("a cached kid keeps verifying while the JWKS server is gone", async () => {
  await using jwks = startJwks();
  const { verifier, clock } = verifierFor(jwks.url);
  assert.equal((await verifier.verify(await signEs())).kind, "user");
  await jwks.close();

  clock.ms += 60_000;
  await assertUnauthorized(verifier.verify(await signEs(userClaims(), "unknown")));
  assert.equal((await verifier.verify(await signEs())).kind, "user");
});

Deno.test("a cached kid keeps verifying while the JWKS endpoint answers 500", async () => {
  await using jwks = startJwks();
  const { verifier, clock } = verifierFor(jwks.url);
  assert.equal((await verifier.verify(await signEs())).kind, "user");
  jwks.state.status = 500;

  clock.ms += 60_000;
  await assertUnauthorized(verifier.verify(await signEs(userClaims(), "unknown")));
  assert.equal(jwks.state.hits, 2);
  assert.equal((await verifier.verify(await signEs())).kind, "user");
});

Deno.test("a newly published kid is picked up once the cooldown has passed, and only once", async () => {
  await using jwks = startJwks([esJwk]);
  const { verifier, clock } = verifierFor(jwks.url);
  assert.equal((await verifier.verify(await signEs())).kind, "user");

  const next = await generateKeyPair("ES256");
  jwks.state.keys = [esJwk, { ...await exportJWK(next.publicKey), kid: "es-2" }];
  const rotated = await sign(next.privateKey, { alg: "ES256", kid: "es-2" });
  await assertUnauthorized(verifier.verify(rotated));
  assert.equal(jwks.state.hits, 1);

  clock.ms += 30_000;
  assert.equal((await verifier.verify(rotated)).kind, "user");
  assert.equal((await verifier.verify(rotated)).kind, "user");
  assert.equal((await verifier.verify(await signEs())).kind, "user");
  assert.equal(jwks.state.hits, 2);
});

Deno.test("a kid first seen after the cooldown is fetched on its first use", async () => {
  await using jwks = startJwks([esJwk]);
  const { verifier, clock } = verifierFor(jwks.url);
  assert.equal((await verifier.verify(await signEs())).kind, "user");

  clock.ms += 45_000;
  jwks.state.keys = [esJwk, rsJwk];
  assert.equal(
    (await verifier.verify(await sign(rs.privateKey, { alg: "RS256", kid: "rs-1" }))).kind,
    "user",
  );
  assert.equal(jwks.state.hits, 2);
});

Deno.test("a kid removed from the JWKS stops verifying after the next fetch", async () => {
  await using jwks = startJwks();
  const { verifier, clock } = verifierFor(jwks.url);
  assert.equal((await verifier.verify(await signEs())).kind, "user");

  jwks.state.keys = [rsJwk];
  clock.ms += 30_000;
  await assertUnauthorized(verifier.verify(await signEs(userClaims(), "unknown")));
  await assertUnauthorized(verifier.verify(await signEs()));
});

Deno.test("a token verified before its key was withdrawn is refused at once after", async () => {
  await using jwks = startJwks();
  const { verifier, clock } = verifierFor(jwks.url);
  const token = await signEs();
  assert.equal((await verifier.verify(token)).kind, "user");
  assert.equal((await verifier.verify(token)).kind, "user", "its verdict is cached");

  jwks.state.keys = [rsJwk];
  clock.ms += 30_000;
  // Any unknown kid makes the verifier fetch the JWKS again, which no longer has es-1.
  await assertUnauthorized(verifier.verify(await signEs(userClaims(), "unknown")));
  assert.equal(jwks.state.hits, 2);
  // Still well inside the minute its verdict was cached for.
  await assertUnauthorized(verifier.verify(token));
});

Deno.test("a cached verdict ends when its token expires, inside the cache's minute", async () => {
  await using jwks = startJwks();
  const { verifier, clock } = verifierFor(jwks.url);
  const exp = Math.floor(clock.ms / 1000) + 20;
  const token = await signEs(userClaims({ exp }));
  assert.equal((await verifier.verify(token)).kind, "user");

  // Past exp and past the verifier's 5 s tolerance for clock skew, 30 s after it was cached.
  clock.ms = (exp + 10) * 1000;
  await assertUnauthorized(verifier.verify(token), "token expired");
});

Deno.test("a hanging JWKS endpoint fails the request after the fetch timeout", async () => {
  const hangingFetch = (_input: string | URL | Request, init?: RequestInit) =>
    new Promise<Response>((_, reject) => {
      init?.signal?.addEventListener("abort", () => reject(init.signal?.reason));
    });
  const { verifier } = verifierFor("http://127.0.0.1:9/jwks.json", { fetch: hangingFetch });
  const started = performance.now();
  await assertUnauthorized(verifier.verify(await signEs()));
  assert.ok(performance.now() - started < 10_000);
});

Deno.test("createAuthVerifier refuses a secret shorter than 32 characters", () => {
  assert.throws(() => createAuthVerifier({ jwtSecret: "", issuer: ISSUER }));
  assert.throws(() => createAuthVerifier({ jwtSecret: "short-secret", issuer: ISSUER }));
});

Deno.test("createAuthVerifier refuses a configuration with neither secret nor JWKS", () => {
  assert.throws(() => createAuthVerifier({ issuer: ISSUER }));
});

Deno.test("bearerToken reads the token whatever the case of the scheme", () => {
  for (const value of ["Bearer abc.def.ghi", "bearer abc.def.ghi", "BEARER  abc.def.ghi"]) {
    const req = new Request("http://x", { headers: { authorization: value } });
    assert.equal(bearerToken(req), "abc.def.ghi");
  }
});

Deno.test("bearerToken returns null without a usable Bearer header", () => {
  for (
    const value of [undefined, "", "Basic abc", "Bearer", "Bearer ", "Bearer a b", "Bearerabc"]
  ) {
    const headers: HeadersInit = value === undefined ? {} : { authorization: value };
    assert.equal(bearerToken(new Request("http://x", { headers })), null);
  }
});
