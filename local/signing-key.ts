import { exportJWK, generateKeyPair, importJWK, type JWK, SignJWT } from "jose";
import { LOCAL_STATE_DIR } from "./keys.ts";

/**
 * The local stack's ES256 signing key, in the format the Supabase CLI uses for
 * `[auth] signing_keys_path` (a JSON array of private JWKs). Made on first start in the stack's
 * state folder: every stack gets its own key, and only the public half is ever served.
 * `supabase/config.toml` does not name it, because `supabase link` and `db push` read every file
 * config.toml names, and a fresh clone has none.
 */

export const SIGNING_KEYS_PATH = `${LOCAL_STATE_DIR}/signing_keys.json`;

type PrivateJwk = JWK & { kid: string; d: string };

export async function ensureSigningKey(path: string = SIGNING_KEYS_PATH): Promise<PrivateJwk> {
  try {
    const keys = JSON.parse(await Deno.readTextFile(path)) as PrivateJwk[];
    if (keys.length > 0) return keys[0];
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  const { privateKey } = await generateKeyPair("ES256", { extractable: true });
  const jwk = await exportJWK(privateKey);
  const key: PrivateJwk = {
    ...jwk,
    kid: crypto.randomUUID(),
    alg: "ES256",
    use: "sig",
    key_ops: ["sign", "verify"],
    ext: true,
  } as PrivateJwk;
  await Deno.mkdir(path.replace(/\/[^/]*$/, ""), { recursive: true });
  await Deno.writeTextFile(path, JSON.stringify([key], null, 2) + "\n", { mode: 0o600 });
  return key;
}

/** The public half, as `/auth/v1/.well-known/jwks.json` publishes it. */
export function publicJwks(key: PrivateJwk): { keys: JWK[] } {
  const { d: _d, key_ops: _ops, ext: _ext, ...rest } = key;
  return { keys: [{ ...rest, key_ops: ["verify"] }] };
}

export interface TokenUser {
  id: string;
  email: string | null;
}

/** WebCrypto refuses a private key whose `key_ops` includes "verify", as the CLI's file has. */
export function privateKey(key: PrivateJwk) {
  const { key_ops: _ops, ...jwk } = key;
  return importJWK(jwk, "ES256");
}

/** Signs a user access token shaped like the ones Supabase Auth issues. */
export async function signUserToken(
  key: PrivateJwk,
  user: TokenUser,
  options: { issuer: string; expiresInSeconds?: number },
): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return await new SignJWT({
    email: user.email ?? undefined,
    role: "authenticated",
    aal: "aal1",
    session_id: crypto.randomUUID(),
    is_anonymous: false,
    app_metadata: { provider: "email", providers: ["email"] },
    user_metadata: {},
  })
    .setProtectedHeader({ alg: "ES256", kid: key.kid, typ: "JWT" })
    .setSubject(user.id)
    .setAudience("authenticated")
    .setIssuer(options.issuer)
    .setIssuedAt(now)
    .setExpirationTime(now + (options.expiresInSeconds ?? 3600))
    .sign(await privateKey(key));
}
