import assert from "node:assert/strict";
import { waitFor } from "../local/process.ts";
import {
  atStartOfWindow,
  bridgeStats,
  changePlan,
  createUser,
  delayRedis,
  fixtureGateway,
  gatewayProcess,
  localRedis,
  stackTest,
  type TestUser,
} from "./support.ts";

/**
 * Per-minute limits by plan, enforced across instances, through Redis when it answers and
 * through Postgres when it does not. `limited` is a fixture function in the `ai` class.
 */

const gateway = await fixtureGateway();
/** A user whose only job is to start each gateway's function process before a counted burst. */
const warmUser = await createUser("warm");

interface Outcome {
  status: number;
  headers: Headers;
  // deno-lint-ignore no-explicit-any
  body: any;
}

async function call(user: TestUser, base = gateway.url): Promise<Outcome> {
  const response = await fetch(`${base}/functions/v1/limited`, {
    headers: { authorization: `Bearer ${user.token}` },
  });
  return { status: response.status, headers: response.headers, body: await response.json() };
}

function tally(outcomes: Outcome[]) {
  const allowed = outcomes.filter((o) => o.status === 200).length;
  const refused = outcomes.filter((o) => o.status === 429).length;
  return { allowed, refused, other: outcomes.length - allowed - refused };
}

stackTest(
  "a free user gets exactly 20 ai requests a minute, then 429 with Retry-After",
  async () => {
    await atStartOfWindow();
    const user = await createUser("free");
    const outcomes: Outcome[] = [];
    for (let i = 0; i < 22; i++) outcomes.push(await call(user));
    assert.deepEqual(tally(outcomes), { allowed: 20, refused: 2, other: 0 });

    const first = outcomes[0];
    assert.equal(first.headers.get("x-ratelimit-limit"), "20");
    assert.equal(first.headers.get("x-ratelimit-remaining"), "19");
    assert.ok(Number(first.headers.get("x-ratelimit-reset")) > Date.now() / 1000);

    const refused = outcomes[21];
    assert.equal(refused.body.error.code, "rate_limited");
    assert.ok(Number(refused.headers.get("retry-after")) >= 1);
    assert.equal(refused.headers.get("x-ratelimit-remaining"), "0");
    assert.equal(refused.body.error.request_id, refused.headers.get("x-request-id"));
  },
);

stackTest("a pro user gets the pro plan's 100 ai requests a minute", async () => {
  await atStartOfWindow();
  const user = await createUser("pro");
  await changePlan(user.id, "pro");
  const outcomes = await Promise.all(Array.from({ length: 110 }, () => call(user)));
  assert.deepEqual(tally(outcomes), { allowed: 100, refused: 10, other: 0 });
});

stackTest(
  "a burst of 200 parallel requests against a limit of 20 lets exactly 20 through",
  async () => {
    await atStartOfWindow();
    const user = await createUser("burst");
    const outcomes = await Promise.all(Array.from({ length: 200 }, () => call(user)));
    assert.deepEqual(tally(outcomes), { allowed: 20, refused: 180, other: 0 });
  },
);

stackTest("three gateway processes sharing one Redis admit the limit once in total", async () => {
  const gateways = await Promise.all([gatewayProcess(), gatewayProcess(), gatewayProcess()]);
  try {
    const user = await createUser("spread");
    await Promise.all(gateways.map((g) => call(warmUser, g.url)));
    await atStartOfWindow();
    const outcomes = await Promise.all(
      Array.from({ length: 60 }, (_, i) => call(user, gateways[i % 3].url)),
    );
    assert.deepEqual(tally(outcomes), { allowed: 20, refused: 40, other: 0 });
  } finally {
    await Promise.all(gateways.map((g) => g.close()));
  }
});

stackTest("with Redis stopped, two gateways still enforce the limit through Postgres", async () => {
  const gateways = await Promise.all([gatewayProcess(), gatewayProcess()]);
  try {
    await Promise.all(gateways.map((g) => call(warmUser, g.url)));
    const user = await createUser("fallback");
    await atStartOfWindow(30);
    await localRedis.stop();
    try {
      const outcomes = await Promise.all(
        Array.from({ length: 30 }, (_, i) => call(user, gateways[i % 2].url)),
      );
      assert.deepEqual(tally(outcomes), { allowed: 20, refused: 10, other: 0 });
      assert.ok(
        outcomes.filter((o) => o.status === 200).every((o) => o.body.source === "postgres"),
        "every decision came from Postgres",
      );
    } finally {
      await localRedis.start();
    }

    await waitFor("Redis to be used again", async () => {
      const outcome = await call(await createUser("after"), gateways[0].url);
      return outcome.status === 200 && outcome.body.source === "redis";
    }, 15_000);
  } finally {
    await Promise.all(gateways.map((g) => g.close()));
  }
});

stackTest(
  "with Redis answering only after 15 s, every decision comes from Postgres and the limit holds",
  async () => {
    const user = await createUser("slow");
    await call(warmUser);
    await atStartOfWindow(40);
    // Far longer than the 1 s Redis timeout: a decision that waited for Redis would come from it.
    await delayRedis(15_000);
    const outcomes: Outcome[] = [];
    try {
      for (let i = 0; i < 25; i++) {
        const outcome = await call(user);
        outcomes.push(outcome);
        if (outcome.status === 200) {
          assert.equal(outcome.body.source, "postgres", `decision ${i + 1} waited for Redis`);
        }
      }
    } finally {
      await delayRedis(0);
    }
    assert.deepEqual(tally(outcomes), { allowed: 20, refused: 5, other: 0 });
  },
);

stackTest(
  "a plan change made as the Stripe webhook makes it applies to the next request",
  async () => {
    const user = await createUser("upgrade");
    const before = await call(user);
    assert.equal(before.headers.get("x-ratelimit-limit"), "20");
    assert.equal(before.body.plan, "free");

    await changePlan(user.id, "pro");
    const after = await call(user);
    assert.equal(after.body.plan, "pro");
    assert.equal(after.headers.get("x-ratelimit-limit"), "100");
  },
);

stackTest("a warm rate-limited request costs exactly one Upstash round trip", async () => {
  // Earlier tests may have left this function process on its Postgres fallback for a moment.
  await waitFor("Redis to decide again", async () => {
    const outcome = await call(await createUser("redis-again"));
    return outcome.body.source === "redis";
  }, 15_000);
  const user = await createUser("round-trips");
  await call(user);
  await call(user);
  const before = await bridgeStats();
  for (let i = 0; i < 10; i++) assert.equal((await call(user)).status, 200);
  const after = await bridgeStats();
  assert.equal(after.requests - before.requests, 10);
});

stackTest(
  "a function without a user is limited by client address with the free plan's limit",
  async () => {
    await atStartOfWindow();
    const outcomes: { status: number; headers: Headers }[] = [];
    for (let i = 0; i < 22; i++) {
      const response = await fetch(`${gateway.url}/functions/v1/public-limited`);
      await response.body?.cancel();
      outcomes.push({ status: response.status, headers: response.headers });
    }
    assert.deepEqual(outcomes.map((o) => o.status), [...Array(20).fill(200), 429, 429]);
    assert.equal(outcomes[0].headers.get("x-ratelimit-limit"), "20");
    assert.ok(Number(outcomes[21].headers.get("retry-after")) >= 1);
  },
);

stackTest(
  "a user refused while Redis answered is refused from memory, and that refusal never counts as Redis being back",
  async () => {
    const lines: string[] = [];
    const own = await fixtureGateway({}, (line) => lines.push(line));
    try {
      await atStartOfWindow(40);
      const user = await createUser("blocked-retry");
      const outcomes: Outcome[] = [];
      for (let i = 0; i < 21; i++) outcomes.push(await call(user, own.url));
      assert.deepEqual(tally(outcomes), { allowed: 20, refused: 1, other: 0 });

      // While the block lasts a retry costs only its profile read: no rate-limit command.
      const before = await bridgeStats();
      for (let i = 0; i < 3; i++) assert.equal((await call(user, own.url)).status, 429);
      assert.equal((await bridgeStats()).commands - before.commands, 3);

      await delayRedis(15_000);
      try {
        const other = await call(await createUser("blocked-retry-other"), own.url);
        assert.equal(other.body.source, "postgres");
        // Past the 2 s after which one request tries Redis again: the blocked user's.
        await new Promise((resolve) => setTimeout(resolve, 2_100));
        assert.equal((await call(user, own.url)).status, 429);
        assert.ok(
          !lines.some((line) => line.includes("redis is back")),
          "a refusal from memory was taken as Redis answering",
        );
      } finally {
        await delayRedis(0);
      }
    } finally {
      await own.close();
    }
  },
);
