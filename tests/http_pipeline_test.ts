import assert from "node:assert/strict";
import { LOCAL_ANON_KEY } from "../local/keys.ts";
import {
  appClient,
  createUser,
  fixtureGateway,
  invoke,
  stackTest,
  SUPABASE_URL,
} from "./support.ts";

/**
 * The shared pipeline's HTTP behaviour, seen from a client: CORS, request ids, the error envelope,
 * body limits and validation, and the gateway's own `verify_jwt` and routing.
 */

const logs: string[] = [];
const gateway = await fixtureGateway({}, (line) => logs.push(line));
const user = await createUser("http");
const app = () => appClient(user.token, gateway.url);

stackTest("an OPTIONS preflight from an allowed origin is answered with CORS headers", async () => {
  const response = await fetch(`${gateway.url}/functions/v1/whoami`, {
    method: "OPTIONS",
    headers: {
      origin: "http://localhost:8081",
      "access-control-request-method": "POST",
      "access-control-request-headers": "authorization, content-type",
    },
  });
  await response.body?.cancel();
  assert.equal(response.status, 204);
  assert.equal(response.headers.get("access-control-allow-origin"), "http://localhost:8081");
  assert.match(response.headers.get("access-control-allow-methods") ?? "", /POST/);
  assert.match(response.headers.get("access-control-allow-headers") ?? "", /authorization/);
  assert.ok(response.headers.get("x-request-id"));
});

stackTest("an origin that is not configured gets no CORS permission", async () => {
  const response = await fetch(`${gateway.url}/functions/v1/whoami`, {
    method: "OPTIONS",
    headers: { origin: "https://evil.example", "access-control-request-method": "POST" },
  });
  await response.body?.cancel();
  assert.equal(response.headers.get("access-control-allow-origin"), null);
});

stackTest("a JSON body within the limit reaches the handler validated", async () => {
  const { status, body } = await invoke(app(), "whoami", { body: { message: "hello" } });
  assert.equal(status, 200);
  assert.equal(body.message, "hello");
});

stackTest("a 6 MB body is refused with 413 payload_too_large", async () => {
  const { status, body } = await invoke(app(), "whoami", {
    body: { message: "x".repeat(6 * 1024 * 1024) },
  });
  assert.equal(status, 413);
  assert.equal(body.error.code, "payload_too_large");
});

stackTest("a 6 MB body sent without a Content-Length is refused with 413 too", async () => {
  const chunk = new TextEncoder().encode("x".repeat(64 * 1024));
  let sent = 0;
  const stream = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (sent >= 6 * 1024 * 1024) return controller.close();
      sent += chunk.byteLength;
      controller.enqueue(chunk);
    },
  });
  const response = await fetch(`${gateway.url}/functions/v1/whoami`, {
    method: "POST",
    headers: { authorization: `Bearer ${user.token}`, "content-type": "application/json" },
    body: stream,
  });
  const body = await response.json();
  assert.equal(response.status, 413);
  assert.equal(body.error.code, "payload_too_large");
});

stackTest("invalid JSON is refused with 400 invalid_json", async () => {
  const { status, body } = await invoke(app(), "whoami", {
    body: '{"message": "unterminated',
    headers: { "content-type": "application/json" },
  });
  assert.equal(status, 400);
  assert.equal(body.error.code, "invalid_json");
});

stackTest("a body of the wrong shape is refused with 400 naming the field", async () => {
  const { status, body } = await invoke(app(), "whoami", { body: { message: 42 } });
  assert.equal(status, 400);
  assert.equal(body.error.code, "validation_failed");
  assert.equal(body.error.field, "message");
  assert.match(body.error.message, /^message: /);
});

stackTest("a method the function does not serve gets 405 with an Allow header", async () => {
  const { status, body, headers } = await invoke(app(), "whoami", { method: "DELETE" });
  assert.equal(status, 405);
  assert.equal(body.error.code, "method_not_allowed");
  assert.equal(headers.get("allow"), "GET, POST");
});

stackTest("every response carries an x-request-id, and a caller's own id is kept", async () => {
  const own = "req-from-the-app-123";
  const responses = await Promise.all([
    invoke(app(), "whoami", { method: "GET", headers: { "x-request-id": own } }),
    invoke(app(), "whoami", { body: "{", headers: { "content-type": "application/json" } }),
    invoke(appClient(undefined, gateway.url), "whoami", { method: "GET" }),
    invoke(app(), "no-such-function", { method: "GET" }),
    invoke(appClient(), "health", { method: "GET" }),
  ]);
  assert.equal(responses[0].headers.get("x-request-id"), own);
  for (const { headers, body } of responses) {
    const id = headers.get("x-request-id");
    assert.ok(id, "x-request-id missing");
    if (body?.error) assert.equal(body.error.request_id, id);
  }
});

stackTest("an unknown function is answered with 404 not_found", async () => {
  const { status, body } = await invoke(appClient(undefined, SUPABASE_URL), "no-such-function");
  assert.equal(status, 404);
  assert.equal(body.error.code, "not_found");
});

stackTest("the gateway enforces verify_jwt = true before the function runs", async () => {
  const none = await fetch(`${gateway.url}/functions/v1/gated`);
  const refused = await none.json();
  assert.equal(none.status, 401);
  assert.equal(refused.error.code, "unauthorized");

  const { status } = await invoke(appClient(undefined, gateway.url), "gated", { method: "GET" });
  assert.equal(status, 200, "the anon key is a valid JWT for the gateway");
  assert.ok(LOCAL_ANON_KEY);
});

stackTest("a missing setting fails the request with 500 and a log line naming it", async () => {
  const broken = await fixtureGateway({ UPSTASH_REDIS_REST_TOKEN: "" }, (line) => logs.push(line));
  try {
    const { status, body } = await invoke(appClient(user.token, broken.url), "whoami", {
      method: "GET",
    });
    assert.equal(status, 500);
    assert.equal(body.error.code, "internal");
    assert.doesNotMatch(body.error.message, /UPSTASH/, "the client is not told the internals");
    assert.ok(logs.some((line) => line.includes("UPSTASH_REDIS_REST_TOKEN")));
  } finally {
    await broken.close();
  }
});
