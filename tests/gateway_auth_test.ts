import { exportJWK, generateKeyPair, type JWTPayload, SignJWT } from "jose";
import assert from "node:assert/strict";
import { LOCAL_JWT_SECRET } from "../local/keys.ts";
import { ensureSigningKey, privateKey, publicJwks } from "../local/signing-key.ts";
import {
  appClient,
  createUser,
  fixtureGateway,
  invoke,
  ISSUER,
  stackTest,
  type TestUser,
} from "./support.ts";

/**
 * Authentication as the app meets it: tokens sent through supabase-js to a function whose
 * pipeline requires a signed-in user (`whoami`), verified in the function without a network
 * round trip.
 */

const gateway = await fixtureGateway();
const user = await createUser("auth");
const signingKey = await ensureSigningKey();

const b64url = (value: string | Uint8Array) =>
  btoa(typeof value === "string" ? value : String.fromCharCode(...value))
    .replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");

function userClaims(subject: TestUser, overrides: JWTPayload = {}): JWTPayload {
  const now = Math.floor(Date.now() / 1000);
  return {
    sub: subject.id,
    email: subject.email,
    role: "authenticated",
    aud: "authenticated",
    iss: ISSUER,
    iat: now,
    exp: now + 600,
    ...overrides,
  };
}

async function es256(claims: JWTPayload, key = signingKey): Promise<string> {
  return await new SignJWT(claims)
    .setProtectedHeader({ alg: "ES256", kid: signingKey.kid, typ: "JWT" })
    .sign(await privateKey(key));
}

async function hmac(header: object, claims: JWTPayload, secret: string): Promise<string> {
  const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
  const key = await crypto.subtle.importKey(
    "raw",
    new TextEncoder().encode(secret),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const signature = await crypto.subtle.sign("HMAC", key, new TextEncoder().encode(input));
  return `${input}.${b64url(new Uint8Array(signature))}`;
}

function whoami(token?: string) {
  return invoke(appClient(token, gateway.url), "whoami", { method: "GET" });
}

stackTest("a protected function accepts an ES256 user token checked against the JWKS", async () => {
  const { status, body } = await whoami(user.token);
  assert.equal(status, 200);
  assert.deepEqual(body, {
    id: user.id,
    email: user.email,
    role: "authenticated",
    settings: {},
    message: null,
  });
});

stackTest(
  "a protected function accepts an HS256 user token signed with the legacy secret",
  async () => {
    const token = await hmac({ alg: "HS256", typ: "JWT" }, userClaims(user), LOCAL_JWT_SECRET);
    const { status, body } = await whoami(token);
    assert.equal(status, 200);
    assert.equal(body.id, user.id);
  },
);

const rejected: Record<string, () => Promise<string | undefined>> = {
  "no user token (only the anon key)": () => Promise.resolve(undefined),
  "an expired token": () =>
    es256(userClaims(user, { iat: Math.floor(Date.now() / 1000) - 7200, exp: 1_700_000_000 })),
  "a token signed with another key under the same kid": async () => {
    const { privateKey } = await generateKeyPair("ES256", { extractable: true });
    return es256(userClaims(user), { ...signingKey, ...(await exportJWK(privateKey)) });
  },
  "a token with alg none": () =>
    Promise.resolve(
      `${b64url(JSON.stringify({ alg: "none", typ: "JWT" }))}.${
        b64url(JSON.stringify(userClaims(user)))
      }.`,
    ),
  "a token whose payload was tampered with": async () => {
    const [header, , signature] = (await es256(userClaims(user))).split(".");
    const forged = b64url(JSON.stringify(userClaims(user, { role: "service_role" })));
    return `${header}.${forged}.${signature}`;
  },
  "an HS256 token whose HMAC key is the public signing key": () =>
    hmac(
      { alg: "HS256", typ: "JWT", kid: signingKey.kid },
      userClaims(user),
      JSON.stringify(publicJwks(signingKey).keys[0]),
    ),
  "an ES256 token signed with the legacy secret": () =>
    hmac({ alg: "ES256", typ: "JWT", kid: signingKey.kid }, userClaims(user), LOCAL_JWT_SECRET),
  "a token for another audience": () => es256(userClaims(user, { aud: "someone-else" })),
  "a token from another issuer": () =>
    es256(userClaims(user, { iss: "https://evil.example/auth/v1" })),
  "a token that is not valid before a future time": () =>
    es256(userClaims(user, { nbf: Math.floor(Date.now() / 1000) + 3600 })),
};

for (const [what, makeToken] of Object.entries(rejected)) {
  stackTest(`a protected function rejects ${what} with 401 and the error envelope`, async () => {
    const { status, body, headers } = await whoami(await makeToken());
    assert.equal(status, 401);
    assert.equal(body.error.code, "unauthorized");
    assert.equal(body.error.request_id, headers.get("x-request-id"));
  });
}

stackTest("a request without any Authorization header is rejected with 401", async () => {
  const response = await fetch(`${gateway.url}/functions/v1/whoami`);
  const body = await response.json();
  assert.equal(response.status, 401);
  assert.equal(body.error.code, "unauthorized");
  assert.ok(body.error.request_id);
});

stackTest("a flood of 1,000 tokens with unknown kids makes at most one JWKS fetch", async () => {
  let fetches = 0;
  const jwks = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, () => {
    fetches++;
    return Response.json(publicJwks(signingKey));
  });
  const counted = await fixtureGateway({
    JWKS_URL: `http://127.0.0.1:${jwks.addr.port}/jwks.json`,
  });
  try {
    const call = async (token: string) => {
      const response = await fetch(`${counted.url}/functions/v1/whoami`, {
        headers: { authorization: `Bearer ${token}` },
      });
      await response.body?.cancel();
      return response.status;
    };
    assert.equal(await call(user.token), 200);
    assert.equal(fetches, 1);

    const { privateKey } = await generateKeyPair("ES256");
    const forged = await Promise.all(
      Array.from({ length: 1_000 }, () =>
        new SignJWT(userClaims(user))
          .setProtectedHeader({ alg: "ES256", kid: crypto.randomUUID() })
          .sign(privateKey)),
    );
    const statuses: number[] = [];
    for (let i = 0; i < forged.length; i += 50) {
      statuses.push(...await Promise.all(forged.slice(i, i + 50).map(call)));
    }
    assert.ok(statuses.every((status) => status === 401));
    // The first fetch was moments ago, so the 30 s cooldown allows no other.
    assert.equal(fetches, 1, `expected no further JWKS fetch, saw ${fetches - 1}`);
  } finally {
    await counted.close();
    await jwks.shutdown();
  }
});
