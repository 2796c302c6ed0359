/**
 * Verifies Supabase JWTs locally so the hot path never calls Auth. HS256 tokens are checked
 * against the project's legacy secret, ES256/RS256 tokens against the project's JWKS, which is
 * cached here and refetched only when an unknown `kid` shows up (at most once per cooldown).
 */

import {
  decodeProtectedHeader,
  errors,
  importJWK,
  type JWK,
  type JWTPayload,
  jwtVerify,
  type ProtectedHeaderParameters,
} from "jose";
import { ApiError } from "./errors.ts";
import { log } from "./log.ts";

export type Caller =
  | { kind: "user"; id: string; role: "authenticated"; email: string | null; claims: JWTPayload }
  | { kind: "service_role"; claims: JWTPayload }
  | { kind: "anon"; claims: JWTPayload };

export interface AuthVerifierOptions {
  /** Legacy HS256 secret; without it HS256 tokens are rejected. */
  jwtSecret?: string;
  /** e.g. `${SUPABASE_URL}/auth/v1/.well-known/jwks.json`; without it ES256/RS256 are rejected. */
  jwksUrl?: string;
  /** Expected `iss` of user tokens, e.g. `${SUPABASE_URL}/auth/v1`. */
  issuer: string;
  /** Expected `aud` of user tokens; default "authenticated". */
  audience?: string;
  /** Minimum time between two JWKS fetches; default 30 s. */
  jwksRefetchCooldownMs?: number;
  fetch?: typeof fetch;
  /** Clock (ms) for the refetch cooldown, the verdict cache and `exp`/`nbf`; default `Date.now`. */
  now?: () => number;
}

export interface AuthVerifier {
  verify(token: string): Promise<Caller>;
}

type AsymmetricAlg = "ES256" | "RS256";
type Alg = "HS256" | AsymmetricAlg;
type VerifyKey = CryptoKey | Uint8Array;

/** Absorbs small clock skew between Auth and the edge runtime for `exp` and `nbf`. */
const CLOCK_TOLERANCE_S = 5;
/** A hanging JWKS endpoint must not hold requests for longer than this. */
const JWKS_TIMEOUT_MS = 3_000;
/** Supabase rejects shorter secrets; an empty one (unset env var) would make tokens forgeable. */
const MIN_SECRET_LENGTH = 32;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

const invalid = () => new ApiError("unauthorized", "invalid token");

export function bearerToken(req: Request): string | null {
  const match = /^Bearer +(\S+)$/i.exec(req.headers.get("authorization") ?? "");
  return match ? match[1] : null;
}

const VERIFIED_CACHE_SIZE = 10_000;
const VERIFIED_CACHE_MS = 60_000;

export function createAuthVerifier(options: AuthVerifierOptions): AuthVerifier {
  const { jwtSecret, jwksUrl, issuer, audience = "authenticated" } = options;
  if (jwtSecret !== undefined && jwtSecret.length < MIN_SECRET_LENGTH) {
    throw new Error(`jwtSecret must be at least ${MIN_SECRET_LENGTH} characters`);
  }
  if (jwtSecret === undefined && jwksUrl === undefined) {
    throw new Error("createAuthVerifier needs jwtSecret or jwksUrl");
  }
  const secret = jwtSecret === undefined ? undefined : new TextEncoder().encode(jwtSecret);
  const now = options.now ?? Date.now;
  // A check costs about a millisecond of CPU (ES256), more than all the rest of a warm request.
  // A token is immutable, so its verdict is reused until it expires, for at most a minute, and
  // forgotten whenever the JWKS changes, so a withdrawn key stops being honoured at once.
  const verified = new Map<string, { caller: Caller; until: number }>();
  const jwks = jwksUrl === undefined
    ? undefined
    : createJwksCache(jwksUrl, options, () => verified.clear());

  // The header is unauthenticated: it only picks which key to try, never which kind of key.
  async function keyFor({ alg, kid }: ProtectedHeaderParameters): Promise<[Alg, VerifyKey]> {
    if (alg === "HS256" && secret) return [alg, secret];
    if ((alg === "ES256" || alg === "RS256") && typeof kid === "string" && jwks) {
      return [alg, await jwks.key(kid, alg)];
    }
    throw invalid();
  }

  async function verifySignature(token: string): Promise<Caller> {
    let header: ProtectedHeaderParameters;
    try {
      header = decodeProtectedHeader(token);
    } catch {
      throw invalid();
    }
    const [alg, key] = await keyFor(header);

    let claims: JWTPayload;
    try {
      ({ payload: claims } = await jwtVerify(token, key, {
        // Exactly the algorithm the key was chosen for: no HS/asymmetric confusion.
        algorithms: [alg],
        clockTolerance: CLOCK_TOLERANCE_S,
        currentDate: new Date(now()),
        requiredClaims: ["exp"],
      }));
    } catch (err) {
      if (err instanceof errors.JWTExpired) {
        throw new ApiError("unauthorized", "token expired");
      }
      throw invalid();
    }
    return callerOf(claims, issuer, audience);
  }

  return {
    async verify(token) {
      const at = now();
      const hit = verified.get(token);
      if (hit && at < hit.until) return hit.caller;
      if (hit) verified.delete(token);
      const caller = await verifySignature(token);
      if (verified.size >= VERIFIED_CACHE_SIZE) {
        verified.delete(verified.keys().next().value!);
      }
      const expiry = typeof caller.claims.exp === "number" ? caller.claims.exp * 1000 : at;
      verified.set(token, { caller, until: Math.min(expiry, at + VERIFIED_CACHE_MS) });
      return caller;
    },
  };
}

function callerOf(claims: JWTPayload, issuer: string, audience: string): Caller {
  switch (claims.role) {
    // API keys (anon / service-role) carry no sub and no aud.
    case "anon":
      return { kind: "anon", claims };
    case "service_role":
      return { kind: "service_role", claims };
    case "authenticated": {
      const aud = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
      if (
        typeof claims.sub !== "string" || !UUID.test(claims.sub) ||
        !aud.includes(audience) || claims.iss !== issuer
      ) {
        throw invalid();
      }
      // Anonymous sign-ins carry `email: ""`.
      const email = typeof claims.email === "string" && claims.email !== "" ? claims.email : null;
      return { kind: "user", id: claims.sub, role: "authenticated", email, claims };
    }
    default:
      throw invalid();
  }
}

/**
 * Keys by kid, replaced wholesale by each successful fetch (so a key removed from the JWKS stops
 * verifying) and kept as they are when a fetch fails (so an Auth outage does not log everyone out).
 * Written by hand rather than with jose's createRemoteJWKSet, which stops serving keys once its
 * cache expires while the endpoint is down.
 */
function createJwksCache(url: string, options: AuthVerifierOptions, onReplaced: () => void) {
  const fetchFn = options.fetch ?? fetch;
  const now = options.now ?? Date.now;
  const cooldownMs = options.jwksRefetchCooldownMs ?? 30_000;

  let keys = new Map<string, { alg: AsymmetricAlg; key: CryptoKey }>();
  let lastFetchAt = -Infinity;
  let inFlight: Promise<void> | undefined;

  // Unknown kids are attacker-controlled, so they may trigger one fetch per cooldown and no
  // more; everyone arriving meanwhile waits on that same fetch.
  function refresh(): Promise<void> {
    if (inFlight) return inFlight;
    if (now() - lastFetchAt < cooldownMs) return Promise.resolve();
    lastFetchAt = now();
    inFlight = load().finally(() => inFlight = undefined);
    return inFlight;
  }

  async function load(): Promise<void> {
    try {
      const res = await fetchFn(url, { signal: AbortSignal.timeout(JWKS_TIMEOUT_MS) });
      if (!res.ok) {
        await res.body?.cancel();
        throw new Error(`HTTP ${res.status}`);
      }
      const body = await res.json();
      if (!Array.isArray(body?.keys)) throw new Error("no keys array");
      const next = new Map<string, { alg: AsymmetricAlg; key: CryptoKey }>();
      for (const jwk of body.keys as JWK[]) {
        const alg = algOf(jwk);
        if (!alg || typeof jwk.kid !== "string") continue;
        try {
          next.set(jwk.kid, { alg, key: await importJWK(publicPart(jwk), alg) as CryptoKey });
        } catch {
          // One unusable key must not take the others down with it.
        }
      }
      keys = next;
      onReplaced();
    } catch (err) {
      log.warn("jwks refresh failed", { reason: String(err), cached_keys: keys.size });
    }
  }

  return {
    async key(kid: string, alg: AsymmetricAlg): Promise<CryptoKey> {
      if (!keys.has(kid)) await refresh();
      const entry = keys.get(kid);
      if (!entry || entry.alg !== alg) throw invalid();
      return entry.key;
    },
  };
}

/** The only algorithm a JWKS entry may verify, or null if it is not a signing key we accept. */
function algOf(jwk: JWK): AsymmetricAlg | null {
  if (jwk.use !== undefined && jwk.use !== "sig") return null;
  if (jwk.kty === "EC" && jwk.crv === "P-256" && (jwk.alg ?? "ES256") === "ES256") return "ES256";
  if (jwk.kty === "RSA" && (jwk.alg ?? "RS256") === "RS256") return "RS256";
  return null;
}

/** Drops everything but the public key material (a stray `d` would import a private key). */
function publicPart({ kty, crv, x, y, n, e }: JWK): JWK {
  return kty === "EC" ? { kty, crv, x, y } : { kty, n, e };
}
