import assert from "node:assert/strict";
import { createUser, fixtureGateway, stackTest } from "./support.ts";

/**
 * Error tracking through `@sentry/deno` against a local Sentry-envelope sink: the SDK posts its
 * envelopes to the DSN's host, where this server keeps them.
 */

interface Envelope {
  raw: string;
  // deno-lint-ignore no-explicit-any
  event: any;
}

function sentrySink() {
  const envelopes: Envelope[] = [];
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, async (req) => {
    const raw = await req.text();
    // An envelope is a header line, then item header and payload lines.
    const lines = raw.split("\n").filter((line) => line.length > 0);
    for (let i = 1; i + 1 < lines.length; i += 2) {
      if (JSON.parse(lines[i]).type === "event") {
        envelopes.push({ raw, event: JSON.parse(lines[i + 1]) });
      }
    }
    return Response.json({ id: crypto.randomUUID() });
  });
  return {
    envelopes,
    dsn: `http://public@127.0.0.1:${server.addr.port}/1`,
    close: () => server.shutdown(),
  };
}

async function eventually(check: () => boolean, what: string) {
  const deadline = Date.now() + 15_000;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

stackTest(
  "an internal error is reported to Sentry once, tagged with function, request id, user, release and environment, and without email, token or body; a 4xx is not reported",
  async () => {
    const sink = sentrySink();
    const gateway = await fixtureGateway({
      SENTRY_DSN: sink.dsn,
      SENTRY_RELEASE: "release-under-test",
      SENTRY_ENVIRONMENT: "test",
    });
    try {
      const user = await createUser("sentry");
      const secretPrompt = `secret prompt ${crypto.randomUUID()}`;
      const call = (body: string) =>
        fetch(`${gateway.url}/functions/v1/broken`, {
          method: "POST",
          headers: { authorization: `Bearer ${user.token}`, "content-type": "application/json" },
          body,
        });

      const refused = await call(JSON.stringify({ prompt: secretPrompt, extra: true }));
      assert.deepEqual(refused.status, 400);
      await refused.body?.cancel();

      const failed = await call(JSON.stringify({ prompt: secretPrompt }));
      assert.deepEqual(failed.status, 500);
      assert.deepEqual((await failed.json()).error.code, "internal");
      const requestId = failed.headers.get("x-request-id")!;

      await eventually(() => sink.envelopes.length > 0, "the error report");
      // Whatever else would come has come by the time a second flush could have left.
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      assert.deepEqual(sink.envelopes.length, 1, "exactly one event, and none for the 400");

      const [{ raw, event }] = sink.envelopes;
      assert.deepEqual(event.tags.function, "broken");
      assert.deepEqual(event.tags.request_id, requestId);
      assert.deepEqual(event.user, { id: user.id });
      assert.deepEqual(event.release, "release-under-test");
      assert.deepEqual(event.environment, "test");
      assert.match(JSON.stringify(event.exception), /forced internal error/);
      for (const forbidden of [user.email, user.token, secretPrompt, "authorization"]) {
        assert.ok(
          !raw.includes(forbidden),
          `the report must not contain ${forbidden.slice(0, 20)}`,
        );
      }
      assert.deepEqual(event.request, undefined);
    } finally {
      await gateway.close();
      await sink.close();
    }
  },
);
