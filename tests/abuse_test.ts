import assert from "node:assert/strict";
import { ErrorEnvelope } from "../supabase/functions/_shared/contracts.ts";
import { fresh, modelStack } from "./ai_support.ts";
import { changePlan, createUser, env, stackTest, usedUnits } from "./support.ts";

/**
 * Hostile requests, as an attacker sends them, against every way into a model call: whatever
 * arrives, no answer is a 5xx, every refusal is the JSON error envelope with a request id, and
 * the model never works for more units than were charged.
 */

const ai = await modelStack();
const MAX_BODY_BYTES = 5 * 1024 * 1024;
const REQUESTS_PER_ENDPOINT = 50;

const nested = (depth: number) => "[".repeat(depth) + "]".repeat(depth);
/** A JSON body of exactly `bytes` bytes whose text field fills it. */
const padded = (bytes: number, wrap: (text: string) => string) => {
  const shell = wrap("").length;
  return wrap("a".repeat(bytes - shell));
};

const analyzeText = (text: string) =>
  JSON.stringify({ analysis_type: "clarity", input: { kind: "text", text } });

/** Raw bodies, as no well-behaved client would send them. */
const HOSTILE: Record<"analyze" | "chat", string[]> = {
  analyze: [
    analyzeText(`essay\u0000${crypto.randomUUID()}`),
    analyzeText(`essay\ud800${crypto.randomUUID()}`),
    JSON.stringify({ analysis_type: "x\u0000", input: { kind: "text", text: fresh() } }),
    JSON.stringify({ analysis_type: "\udfff", input: { kind: "text", text: fresh() } }),
    padded(MAX_BODY_BYTES - 1, analyzeText),
    nested(100_000),
    `{"analysis_type":${nested(5_000)},"input":{"kind":"text","text":"x"}}`,
    JSON.stringify({ analysis_type: 7, input: { kind: "text", text: fresh() } }),
    JSON.stringify({ analysis_type: "clarity", input: { kind: "text", text: ["a"] } }),
    JSON.stringify({ analysis_type: "clarity", input: "text" }),
    `{"analysis_type":"clarity","analysis_type":"x\\u0000","input":{"kind":"text","text":"y"}}`,
    `{"analysis_type":"clarity","input":{"kind":"text","text":"y","text":"\\ud800"}}`,
    "null",
    "",
    "{",
    '"\\u0000"',
  ],
  chat: [
    JSON.stringify({ message: `essay 1\u0000` }),
    JSON.stringify({ message: `essay \udc00 2` }),
    padded(MAX_BODY_BYTES - 1, (text) => JSON.stringify({ message: text })),
    nested(100_000),
    JSON.stringify({ message: { text: "hi" } }),
    JSON.stringify({ message: "hi", conversation_id: "not-a-uuid\u0000" }),
    `{"message":"hello","message":"again\\u0000"}`,
    `{"message":"hello","conversation_id":null}`,
    JSON.stringify({ message: 12 }),
    "[]",
    "true",
  ],
};

interface Outcome {
  status: number;
  body: string;
}

async function send(token: string, fn: string, body: string, stream: boolean): Promise<Outcome> {
  const response = await fetch(`${ai.gateway.url}/functions/v1/${fn}`, {
    method: "POST",
    headers: {
      authorization: `Bearer ${token}`,
      apikey: env.SUPABASE_ANON_KEY,
      "content-type": "application/json",
      ...(stream ? { accept: "text/event-stream" } : {}),
    },
    body,
  });
  return { status: response.status, body: await response.text() };
}

for (
  const [fn, stream] of [["analyze", false], ["chat", false], ["chat", true]] as const
) {
  stackTest(
    `${REQUESTS_PER_ENDPOINT} hostile ${fn}${
      stream ? " (streamed)" : ""
    } requests get no 5xx, only enveloped 4xx, and no unpaid model call`,
    async () => {
      const user = await createUser("abuse");
      // Limits that do not bind, so every request meets the validation, not the rate limiter.
      await changePlan(user.id, "team");
      const calls = ai.server.calls;
      const bodies = HOSTILE[fn];

      const outcomes: Outcome[] = [];
      for (let i = 0; i < REQUESTS_PER_ENDPOINT; i++) {
        outcomes.push(await send(user.token, fn, bodies[i % bodies.length], stream));
      }

      for (const [i, { status, body }] of outcomes.entries()) {
        const what = `request ${i} (${bodies[i % bodies.length].slice(0, 60)})`;
        assert.ok(status >= 400 && status < 500, `${what} answered ${status}`);
        const envelope = ErrorEnvelope.parse(JSON.parse(body));
        assert.ok(envelope.error.request_id, `${what} has a request id`);
      }
      assert.ok(
        ai.server.calls - calls <= await usedUnits(user.id),
        "model calls made never outnumber units charged",
      );
      assert.equal(ai.server.calls, calls, "none of it reached the model");
    },
  );
}
