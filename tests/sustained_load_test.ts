import assert from "node:assert/strict";
import { waitFor } from "../local/process.ts";
import {
  appClient,
  changePlan,
  createUser,
  database,
  fixtureGateway,
  invoke,
  stackTest,
  type TestUser,
} from "./support.ts";

/**
 * A sustained load on loopback: 2,000 requests paced at 100 a second by 16 concurrent callers,
 * spread over 10 users, mixing the account functions (profile, usage, history, on the stack's
 * gateway) with a metered function (the `metered` fixture: one usage unit, the hot path of
 * analyze without the model). The users' plan lets every request through its per-minute limits;
 * its monthly quota runs out for half of them partway through. Nothing may fail on the server's
 * side, every request must leave exactly one metrics row, and every user's counter must have
 * grown by exactly the metered requests that were answered.
 */

const TOTAL = 2_000;
const PER_SECOND = 100;
const CONCURRENCY = 16;
const USERS = 10;
const QUOTA = 60;
/** Half the users start with this much of the quota spent, so the quota binds for them. */
const SPENT_BEFORE = 30;

type Kind = "profile" | "usage" | "history" | "metered";
const KINDS: Kind[] = ["profile", "usage", "history", "metered"];

interface Outcome {
  user: number;
  kind: Kind;
  requestId: string;
  status: number;
  echoedId: string | null;
}

const metered = await fixtureGateway();

function send(user: TestUser, kind: Kind, requestId: string) {
  const headers = { "x-request-id": requestId };
  switch (kind) {
    case "metered":
      return invoke(appClient(user.token, metered.url), "metered", { body: {}, headers });
    case "history":
      return invoke(appClient(user.token), "history?type=analyses", { method: "GET", headers });
    default:
      return invoke(appClient(user.token), kind, { method: "GET", headers });
  }
}

stackTest(
  "2,000 requests over 20 s from 10 users: no 5xx, one metrics row each, and usage counters " +
    "equal to the metered requests answered",
  async () => {
    const run = crypto.randomUUID().slice(0, 8);
    const plan = `test_load_${run}`;
    const sql = database();
    const users: TestUser[] = [];
    try {
      await sql`
        insert into public.plans
          (id, name, monthly_quota, ai_per_minute, general_per_minute, upload_per_minute)
        values (${plan}, 'Load test', ${QUOTA}, 100000, 100000, 100000)`;
      for (let i = 0; i < USERS; i++) {
        const user = await createUser(`load-${i}`);
        users.push(user);
        await sql`update public.profiles set usage_count = ${i < USERS / 2 ? 0 : SPENT_BEFORE}
                   where id = ${user.id}`;
        await changePlan(user.id, plan);
      }
      // Every function process started, so the clock runs on warm ones.
      const warm = await createUser("load-warm");
      users.push(warm);
      await changePlan(warm.id, plan);
      for (const kind of KINDS) {
        assert.ok((await send(warm, kind, `load-warm-${run}-${kind}`)).status < 500);
      }

      const outcomes: Outcome[] = [];
      let next = 0;
      const started = performance.now();
      const caller = async () => {
        for (;;) {
          const i = next++;
          if (i >= TOTAL) return;
          const due = started + (i * 1000) / PER_SECOND;
          const wait = due - performance.now();
          if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
          const user = i % USERS;
          const kind = KINDS[Math.floor(i / USERS) % KINDS.length];
          const requestId = `load-${run}-${i}`;
          const answer = await send(users[user], kind, requestId);
          outcomes.push({
            user,
            kind,
            requestId,
            status: answer.status,
            echoedId: answer.headers.get("x-request-id"),
          });
        }
      };
      await Promise.all(Array.from({ length: CONCURRENCY }, caller));
      const seconds = (performance.now() - started) / 1000;
      console.log(`${TOTAL} requests in ${seconds.toFixed(1)} s`);

      assert.equal(outcomes.length, TOTAL);
      const serverErrors = outcomes.filter((o) => o.status >= 500);
      assert.deepEqual(serverErrors, [], "no 5xx");
      for (const o of outcomes) {
        assert.equal(o.echoedId, o.requestId, "the request id comes back");
        const expected = o.kind === "metered" ? [200, 402] : [200];
        assert.ok(expected.includes(o.status), `${o.kind} answered ${o.status}`);
      }

      const ids = outcomes.map((o) => o.requestId);
      let rows: { request_id: string; rows: number }[] = [];
      await waitFor("a metrics row for every request", async () => {
        rows = await sql<{ request_id: string; rows: number }[]>`
          select request_id, count(*)::int as rows from public.api_metrics
           where request_id = any(${ids}) group by request_id`;
        return rows.length === TOTAL;
      }, 10_000);
      assert.deepEqual(rows.filter((row) => row.rows !== 1), [], "exactly one row per request");

      const counters = await sql<{ id: string; usage_count: number }[]>`
        select id, usage_count from public.profiles
         where id = any(${users.slice(0, USERS).map((user) => user.id)})`;
      for (let i = 0; i < USERS; i++) {
        const mine = outcomes.filter((o) => o.user === i && o.kind === "metered");
        const answered = mine.filter((o) => o.status === 200).length;
        const before = i < USERS / 2 ? 0 : SPENT_BEFORE;
        const counter = counters.find((row) => row.id === users[i].id)!.usage_count;
        assert.equal(counter - before, answered, `user ${i}: one unit per answered request`);
        if (before + mine.length > QUOTA) {
          assert.equal(counter, QUOTA, `user ${i} spent the whole quota`);
          assert.equal(mine.length - answered, before + mine.length - QUOTA, `user ${i}: 402s`);
        } else {
          assert.equal(answered, mine.length, `user ${i} was never refused`);
        }
      }
    } finally {
      if (users.length > 0) {
        await sql`delete from auth.users where id = any(${users.map((user) => user.id)})`;
      }
      await sql`delete from public.plans where id = ${plan}`;
      await sql.end();
      await metered.close();
    }
  },
);
