/**
 * Runs the real @upstash/redis and @upstash/ratelimit clients against the local Upstash-REST
 * bridge (local/upstash-bridge.ts), which must already be running in front of a redis-server.
 * A few raw requests check what the clients cannot show: status codes and error bodies.
 */

import assert from "node:assert/strict";
import { errors, Redis, type RedisConfigNodejs } from "@upstash/redis";
import { Ratelimit } from "@upstash/ratelimit";
import { LOCAL_UPSTASH_TOKEN, LOCAL_UPSTASH_URL } from "../local/keys.ts";

const url = Deno.env.get("UPSTASH_REDIS_REST_URL") ?? LOCAL_UPSTASH_URL;
const token = Deno.env.get("UPSTASH_REDIS_REST_TOKEN") ?? LOCAL_UPSTASH_TOKEN;

/** Configured like supabase/functions/_shared/redis.ts, so tests exercise the same paths. */
function client(overrides: Partial<RedisConfigNodejs> = {}): Redis {
  return new Redis({
    url,
    token,
    enableAutoPipelining: true,
    retry: { retries: 0 },
    enableTelemetry: false,
    ...overrides,
  });
}

/** A unique key prefix per test, so runs (and parallel test files) never share keys. */
function namespace(): string {
  return `test:upstash-bridge:${crypto.randomUUID()}:`;
}

async function cleanup(ns: string): Promise<void> {
  const redis = client();
  const keys = await redis.keys(`${ns}*`);
  if (keys.length > 0) await redis.del(...keys);
}

function raw(path: string, init: RequestInit = {}): Promise<Response> {
  return fetch(`${url}${path}`, {
    method: "POST",
    ...init,
    headers: { authorization: `Bearer ${token}`, ...init.headers },
  });
}

async function setDelay(ms: number): Promise<void> {
  const res = await raw("/__local/delay", { body: JSON.stringify({ ms }) });
  const body = await res.text();
  assert.equal(res.status, 200, body);
}

/** How many command requests the bridge has taken so far (`/__local/stats`). */
async function bridgeRequests(): Promise<number> {
  const res = await raw("/__local/stats", { method: "GET" });
  return (await res.json()).requests;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function sha1(text: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-1", new TextEncoder().encode(text));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

Deno.test("a value written with set can be read back with get", async () => {
  const ns = namespace();
  const redis = client();
  try {
    assert.equal(await redis.set(`${ns}plain`, "hello"), "OK");
    assert.equal(await redis.get(`${ns}plain`), "hello");
    await redis.set(`${ns}object`, { name: "Zoë", tags: ["a", "b"], n: 3 });
    assert.deepEqual(await redis.get(`${ns}object`), { name: "Zoë", tags: ["a", "b"], n: 3 });
    assert.equal(await redis.get(`${ns}missing`), null);
  } finally {
    await cleanup(ns);
  }
});

Deno.test("expire sets a TTL that ttl reports, and the key is gone once it lapses", async () => {
  const ns = namespace();
  const redis = client();
  try {
    await redis.set(`${ns}k`, "v");
    assert.equal(await redis.ttl(`${ns}k`), -1);
    assert.equal(await redis.expire(`${ns}k`, 100), 1);
    const ttl = await redis.ttl(`${ns}k`);
    assert.ok(ttl > 90 && ttl <= 100, `ttl was ${ttl}`);

    await redis.set(`${ns}short`, "v", { px: 60_000 });
    assert.equal(await redis.get(`${ns}short`), "v");
    const pttl = await redis.pttl(`${ns}short`);
    assert.ok(pttl > 0 && pttl <= 60_000, `pttl was ${pttl}`);
    // Its expiry moved to a moment already past, rather than waited for.
    assert.equal(await redis.pexpireat(`${ns}short`, Date.now() - 1_000), 1);
    assert.equal(await redis.get(`${ns}short`), null);
    assert.equal(await redis.ttl(`${ns}short`), -2);
  } finally {
    await cleanup(ns);
  }
});

const awkwardValues = [
  "héllo wörld ✓ 日本語 🚀 \u{1F9EA}",
  'line1\r\nline2\u0000nul\ttab\\backslash"quote',
  "$5\r\nfake RESP\r\n",
  "OK",
  "PONG",
  "T0s=",
  "",
  "x".repeat(300_000) + "é",
];

for (const encoding of ["base64", false] as const) {
  Deno.test(
    `unicode and binary-ish values round-trip unchanged with ${
      encoding ? "base64" : "plain"
    } response encoding`,
    async () => {
      const ns = namespace();
      // Raw strings back, so "OK" or "" are not reinterpreted as JSON by the client.
      const redis = client({ responseEncoding: encoding, automaticDeserialization: false });
      try {
        const keys = awkwardValues.map((_, i) => `${ns}${i}`);
        for (const [i, value] of awkwardValues.entries()) {
          assert.equal(await redis.set(keys[i], value), "OK");
          assert.equal(await redis.get(keys[i]), value);
        }
        assert.deepEqual(await redis.mget(...keys), awkwardValues);
      } finally {
        await cleanup(ns);
      }
    },
  );
}

Deno.test("a pipeline returns each command's result in order", async () => {
  const ns = namespace();
  const redis = client({ enableAutoPipelining: false });
  try {
    const results = await redis.pipeline()
      .set(`${ns}counter`, 41)
      .incr(`${ns}counter`)
      .get(`${ns}counter`)
      .rpush(`${ns}list`, "a", "b", "c")
      .lrange(`${ns}list`, 0, -1)
      .hset(`${ns}hash`, { field: "value", n: 7 })
      .hgetall(`${ns}hash`)
      .ping()
      .exec();
    assert.deepEqual(results, [
      "OK",
      42,
      42,
      3,
      ["a", "b", "c"],
      2,
      { field: "value", n: 7 },
      "PONG",
    ]);
  } finally {
    await cleanup(ns);
  }
});

Deno.test("a failing command in a pipeline is reported without stopping the others", async () => {
  const ns = namespace();
  const redis = client({ enableAutoPipelining: false });
  try {
    const results = await redis.pipeline()
      .set(`${ns}text`, "not a number")
      .incr(`${ns}text`)
      .set(`${ns}after`, "still ran")
      .exec({ keepErrors: true });
    assert.equal(results[0].result, "OK");
    assert.match(results[1].error ?? "", /not an integer/);
    assert.equal(results[2].result, "OK");
    assert.equal(await redis.get(`${ns}after`), "still ran");
  } finally {
    await cleanup(ns);
  }
});

Deno.test("a multi-exec transaction runs its commands as one uninterrupted unit", async () => {
  const ns = namespace();
  const redis = client();
  try {
    // If commands from concurrent transactions interleaved, some GET would see a later INCR.
    const runs = await Promise.all(
      Array.from(
        { length: 25 },
        () => redis.multi().incr(`${ns}counter`).get<number>(`${ns}counter`).exec(),
      ),
    );
    for (const [incremented, read] of runs) assert.equal(read, incremented);
    assert.deepEqual(
      runs.map(([n]) => n).sort((a, b) => a - b),
      [...Array(25)].map((_, i) => i + 1),
    );
  } finally {
    await cleanup(ns);
  }
});

Deno.test("a transaction with a command Redis refuses while queueing is discarded whole", async () => {
  const ns = namespace();
  try {
    const res = await raw("/multi-exec", {
      body: JSON.stringify([["SET", `${ns}k`, "v"], ["INCR"]]),
    });
    assert.equal(res.status, 400);
    assert.match((await res.json()).error, /^EXECABORT/);
    assert.equal(await client().exists(`${ns}k`), 0);
  } finally {
    await cleanup(ns);
  }
});

Deno.test("concurrent commands are auto-pipelined into one request per kind", async () => {
  const ns = namespace();
  const redis = client();
  const pipelines = () => (redis as unknown as { pipelineCounter: number }).pipelineCounter;
  try {
    const writes = await Promise.all([
      redis.set(`${ns}a`, "1"),
      redis.set(`${ns}b`, "2"),
      redis.incr(`${ns}c`),
      redis.hset(`${ns}h`, { f: "v" }),
    ]);
    assert.deepEqual(writes, ["OK", "OK", 1, 1]);
    assert.equal(pipelines(), 1);

    const reads = await Promise.all([
      redis.get(`${ns}a`),
      redis.get(`${ns}b`),
      redis.get(`${ns}c`),
      redis.hget(`${ns}h`, "f"),
      redis.mget(`${ns}a`, `${ns}missing`),
    ]);
    assert.deepEqual(reads, [1, 2, 1, "v", [1, null]]);
    assert.equal(pipelines(), 2);
  } finally {
    await cleanup(ns);
  }
});

Deno.test("a wrong or missing token is refused with 401 and Upstash's error shape", async () => {
  await assert.rejects(
    client({ token: "not-the-token" }).get("any-key"),
    (error) => error instanceof errors.UpstashError && /WRONGPASS/.test(error.message),
  );
  for (const headers of [{ authorization: "Bearer not-the-token" }, { authorization: "" }]) {
    const res = await raw("/", { headers, body: JSON.stringify(["PING"]) });
    assert.equal(res.status, 401);
    assert.deepEqual(Object.keys(await res.json()), ["error"]);
  }
});

Deno.test("a Redis error in a single-command request surfaces as an UpstashError", async () => {
  const ns = namespace();
  const redis = client({ enableAutoPipelining: false });
  try {
    await redis.set(`${ns}text`, "abc");
    await assert.rejects(
      redis.incr(`${ns}text`),
      (error) =>
        error instanceof errors.UpstashError && /ERR value is not an integer/.test(error.message),
    );
  } finally {
    await cleanup(ns);
  }
});

Deno.test("a Redis error in an auto-pipelined request surfaces as an UpstashError", async () => {
  const ns = namespace();
  const redis = client();
  try {
    await redis.set(`${ns}text`, "abc");
    const [incr, get] = await Promise.allSettled([redis.incr(`${ns}text`), redis.get(`${ns}text`)]);
    assert.equal(incr.status, "rejected");
    assert.ok(incr.reason instanceof errors.UpstashError);
    assert.match(incr.reason.message, /ERR value is not an integer/);
    assert.deepEqual(get, { status: "fulfilled", value: "abc" });
  } finally {
    await cleanup(ns);
  }
});

Deno.test("a sliding-window ratelimit allows exactly N requests in a window, then refuses", async () => {
  const ns = namespace();
  const limit = 5;
  const WINDOW_MS = 3_600_000;
  const ratelimit = new Ratelimit({
    redis: client(),
    limiter: Ratelimit.slidingWindow(limit, "1 h"),
    prefix: `${ns}ratelimit`,
    // The in-memory block cache would answer the refusal without asking Redis at all.
    ephemeralCache: false,
  });
  try {
    // Crossing into the next window mid-test would carry over only a weighted share of the
    // earlier requests and let one more through, so start well inside a window: an hour long,
    // it leaves the requests below minutes even on a busy machine.
    const intoWindow = Date.now() % WINDOW_MS;
    if (intoWindow > WINDOW_MS - 60_000) await sleep(WINDOW_MS - intoWindow + 50);

    const outcomes = [];
    for (let i = 0; i < limit + 2; i++) {
      const res = await ratelimit.limit("user-1");
      await res.pending;
      outcomes.push({ success: res.success, remaining: res.remaining });
      assert.equal(res.limit, limit);
    }
    assert.deepEqual(outcomes, [
      { success: true, remaining: 4 },
      { success: true, remaining: 3 },
      { success: true, remaining: 2 },
      { success: true, remaining: 1 },
      { success: true, remaining: 0 },
      { success: false, remaining: 0 },
      { success: false, remaining: 0 },
    ]);
    assert.equal((await ratelimit.limit("user-2")).success, true);
  } finally {
    await cleanup(ns);
  }
});

Deno.test("a script with Upstash's allow-key-locking flag runs by its original SHA1", async () => {
  const ns = namespace();
  const redis = client({ enableAutoPipelining: false });
  const script = "#!lua flags=allow-key-locking\nreturn redis.call('INCRBY', KEYS[1], ARGV[1])";
  try {
    const sha = await sha1(script);
    assert.equal(await redis.scriptLoad(script), sha);
    assert.deepEqual(await redis.scriptExists(sha), [1]);
    assert.equal(await redis.evalsha(sha, [`${ns}n`], [2]), 2);
    assert.equal(await redis.eval(script, [`${ns}n`], [3]), 5);
  } finally {
    await cleanup(ns);
  }
});

Deno.test("path-style requests run commands for curl-like use", async () => {
  const ns = namespace();
  try {
    const set = await raw(`/set/${encodeURIComponent(`${ns}k`)}/a%20b`, { method: "GET" });
    assert.deepEqual(await set.json(), { result: "OK" });
    const get = await raw(`/get/${encodeURIComponent(`${ns}k`)}`, { method: "GET" });
    assert.deepEqual(await get.json(), { result: "a b" });
    const post = await raw(`/set/${encodeURIComponent(`${ns}j`)}?EX=100`, { body: '{"x":1}' });
    assert.deepEqual(await post.json(), { result: "OK" });
    assert.deepEqual(await client().get(`${ns}j`), { x: 1 });
    assert.ok((await client().ttl(`${ns}j`)) > 0);
  } finally {
    await cleanup(ns);
  }
});

Deno.test("a body that is not valid JSON is refused with 400 and an error message", async () => {
  const res = await raw("/", { body: '["GET", ' });
  assert.equal(res.status, 400);
  const body = await res.json();
  assert.deepEqual(Object.keys(body), ["error"]);
  assert.equal(typeof body.error, "string");
});

Deno.test(
  "a command sent while the local delay is on is held, and one sent after it is off overtakes it",
  async () => {
    const requestsBefore = await bridgeRequests();
    // Held far longer than the rest of the test takes, so only the order of answers is asserted.
    await setDelay(10_000);
    const held = new AbortController();
    let heldAnswered = false;
    const heldPing = raw("/", { body: JSON.stringify(["PING"]), signal: held.signal })
      .then(async (res) => {
        heldAnswered = true;
        await res.body?.cancel();
      })
      .catch((error) => {
        if (!held.signal.aborted) throw error;
      });
    try {
      // The delay applies once the bridge has the request: wait until it does.
      while (await bridgeRequests() === requestsBefore) await sleep(5);
    } finally {
      await setDelay(0);
    }
    assert.equal(await client().ping(), "PONG");
    assert.equal(heldAnswered, false, "the command sent under the delay is still held");
    held.abort();
    await heldPing;
  },
);
