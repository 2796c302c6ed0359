import assert from "node:assert/strict";
import { startBilling } from "./billing_support.ts";
import { startOpenAiServer } from "./openai_server.ts";
import { createUser, stackTest } from "./support.ts";

/**
 * Every answer of every function, whatever made it (the handler, an error, a preflight, a
 * stream), tells browsers not to sniff its type, not to leak the URL as a referrer, and not to
 * keep it in any cache unless the function chose its own caching.
 */

const API_KEY = `sk-test-${crypto.randomUUID()}`;
const model = startOpenAiServer(API_KEY);
const b = await startBilling({ OPENAI_BASE_URL: `${model.url}/v1`, OPENAI_API_KEY: API_KEY });

async function answer(name: string, init: RequestInit = {}) {
  const response = await fetch(`${b.url}/functions/v1/${name}`, init);
  await response.body?.cancel();
  return response;
}

function assertSecurityHeaders(response: Response, what: string, cacheControl = "no-store") {
  assert.equal(response.headers.get("x-content-type-options"), "nosniff", what);
  assert.equal(response.headers.get("referrer-policy"), "no-referrer", what);
  assert.equal(response.headers.get("cache-control"), cacheControl, what);
}

stackTest(
  "successes, errors, preflights and streams of every kind of function carry nosniff, " +
    "no-referrer and no-store",
  async () => {
    const user = await createUser("headers");
    const bearer = { authorization: `Bearer ${user.token}` };
    const answers: [string, number, Response][] = [
      ["health", 200, await answer("health")],
      ["profile", 200, await answer("profile", { headers: bearer })],
      ["usage without a token", 401, await answer("usage")],
      ["history with a bad query", 400, await answer("history?type=nope", { headers: bearer })],
      ["sync with PUT", 405, await answer("sync", { method: "PUT", headers: bearer })],
      [
        "a preflight of analyze",
        204,
        await answer("analyze", {
          method: "OPTIONS",
          headers: {
            origin: "http://localhost:8081",
            "access-control-request-method": "POST",
          },
        }),
      ],
      [
        "a streamed chat",
        200,
        await answer("chat", {
          method: "POST",
          headers: { ...bearer, "content-type": "application/json", accept: "text/event-stream" },
          body: JSON.stringify({ message: `headers ${crypto.randomUUID()}` }),
        }),
      ],
      [
        "a stripe-webhook delivery with a bad signature",
        400,
        await answer("stripe-webhook", {
          method: "POST",
          headers: { "stripe-signature": "t=1,v1=forged", "content-type": "application/json" },
          body: JSON.stringify({ id: "evt_forged", type: "invoice.paid" }),
        }),
      ],
    ];
    for (const [what, status, response] of answers) {
      assert.equal(response.status, status, what);
      assertSecurityHeaders(response, what);
    }
  },
);

stackTest(
  "sync keeps its own private, no-cache beside the security headers, on 200 and 304",
  async () => {
    const user = await createUser("headers-sync");
    const bearer = { authorization: `Bearer ${user.token}` };
    const first = await answer("sync", { headers: bearer });
    assert.equal(first.status, 200);
    assertSecurityHeaders(first, "sync 200", "private, no-cache");
    const again = await answer("sync", {
      headers: { ...bearer, "if-none-match": first.headers.get("etag")! },
    });
    assert.equal(again.status, 304);
    assertSecurityHeaders(again, "sync 304", "private, no-cache");
  },
);
