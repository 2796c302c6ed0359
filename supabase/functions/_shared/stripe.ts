import type Stripe from "stripe";
import { type Config, config } from "./config.ts";
import { ApiError } from "./errors.ts";
import { log } from "./log.ts";

/**
 * Stripe, for the functions that need it. The SDK is a large module that most functions never
 * touch, so it is imported on first use rather than at boot; the client is then made once per
 * isolate. It talks through `fetch` (the edge runtime has no Node http), and to
 * STRIPE_API_BASE instead of api.stripe.com when that is set (a local Stripe-compatible server).
 */

export type { Stripe };

/** Stripe's own tolerance: a signature older than this is refused, which stops replays. */
const SIGNATURE_TOLERANCE_S = 300;

let sdk: Promise<typeof Stripe> | undefined;
let client: Promise<Stripe> | undefined;

function loadSdk(): Promise<typeof Stripe> {
  sdk ??= import("stripe").then((module) => module.default).catch((error) => {
    sdk = undefined;
    throw error;
  });
  return sdk;
}

/** The isolate's Stripe client; 503 `billing_unavailable` when no secret key is configured. */
export function stripe(c: Config = config()): Promise<Stripe> {
  const key = c.STRIPE_SECRET_KEY;
  if (!key) {
    return Promise.reject(new ApiError("billing_unavailable", "billing is not configured"));
  }
  client ??= loadSdk().then((Sdk) => {
    const base = c.STRIPE_API_BASE ? new URL(c.STRIPE_API_BASE) : undefined;
    const protocol = base?.protocol === "http:" ? "http" : "https";
    return new Sdk(key, {
      httpClient: Sdk.createFetchHttpClient(),
      timeout: c.STRIPE_TIMEOUT_MS,
      // One retry rides out a blip; the SDK adds idempotency keys, so a retried write is safe.
      maxNetworkRetries: 1,
      ...(base && {
        host: base.hostname,
        port: Number(base.port || (protocol === "http" ? 80 : 443)),
        protocol,
      }),
    });
  }).catch((error) => {
    client = undefined;
    throw error;
  });
  return client;
}

/** Whether Stripe answered that the object asked for does not exist (or no longer does). */
export function isResourceMissing(error: unknown): boolean {
  return (error as { code?: unknown } | null)?.code === "resource_missing";
}

/**
 * Any failure of a Stripe call, as what the caller should see: 503 `billing_unavailable`. The log
 * line keeps Stripe's type, code and request id for support, and nothing of the request itself.
 */
export function billingUnavailable(error: unknown, what: string): ApiError {
  if (error instanceof ApiError) return error;
  const detail = error as { type?: string; code?: string; requestId?: string; message?: string };
  log.error("stripe call failed", {
    call: what,
    type: detail?.type ?? null,
    code: detail?.code ?? null,
    stripe_request_id: detail?.requestId ?? null,
    error: detail?.message ?? String(error),
  });
  return new ApiError("billing_unavailable", "billing is unavailable right now; try again shortly");
}

/** The webhook signing secrets: several during a rotation, any of which may sign. */
export function webhookSecrets(c: Config = config()): string[] {
  return (c.STRIPE_WEBHOOK_SECRET ?? "").split(",").map((s) => s.trim()).filter((s) => s !== "");
}

/**
 * Verifies a webhook delivery on its raw body, with Web Crypto, against each configured secret,
 * and returns the event. Any failure (no header, another secret, a changed byte, a timestamp past
 * the tolerance) is 400 `invalid_signature`.
 */
export async function verifyWebhook(
  rawBody: string,
  signature: string | null,
  secrets: readonly string[],
): Promise<Stripe.Event> {
  if (!signature) throw new ApiError("invalid_signature", "missing Stripe-Signature header");
  const Sdk = await loadSdk();
  const crypto = Sdk.createSubtleCryptoProvider();
  for (const secret of secrets) {
    try {
      return await Sdk.webhooks.constructEventAsync(
        rawBody,
        signature,
        secret,
        SIGNATURE_TOLERANCE_S,
        crypto,
      );
    } catch {
      // Try the next secret; which one failed, and why, is not the sender's business.
    }
  }
  throw new ApiError("invalid_signature", "the Stripe signature does not verify");
}
