import assert from "node:assert/strict";
import { waitFor } from "../local/process.ts";
import { createUser, database, fixtureGateway, stackTest } from "./support.ts";

/**
 * Every function request is recorded, failures included: a signed-in one as its own
 * api_metrics row, one without a user as a count of its minute (anonymous_metrics_test.ts); the
 * ops views read both.
 */

const gateway = await fixtureGateway();

stackTest(
  "a signed-in request leaves its own metrics row, and the operator views count the failed ones " +
    "without a user beside it",
  async () => {
    const user = await createUser("metrics");
    const sent = [
      { id: `metrics-ok-${crypto.randomUUID()}`, auth: true, method: "GET", status: 200 },
      { id: `metrics-401-${crypto.randomUUID()}`, auth: false, method: "GET", status: 401 },
      { id: `metrics-405-${crypto.randomUUID()}`, auth: true, method: "PUT", status: 405 },
    ];
    for (const request of sent) {
      const response = await fetch(`${gateway.url}/functions/v1/limited`, {
        method: request.method,
        headers: {
          "x-request-id": request.id,
          ...(request.auth ? { authorization: `Bearer ${user.token}` } : {}),
        },
      });
      await response.body?.cancel();
      assert.equal(response.status, request.status);
    }

    const sql = database();
    try {
      const ids = sent.map((request) => request.id);
      let rows: { request_id: string; status: number; user_id: string | null }[] = [];
      await waitFor("the metrics row", async () => {
        rows = await sql`select request_id, status, user_id::text from public.api_metrics
                        where request_id = any(${ids})`;
        return rows.length > 0;
      }, 10_000);
      assert.deepEqual([...rows], [{ request_id: sent[0].id, status: 200, user_id: user.id }]);

      await waitFor("the operator views", async () => {
        const [latency] = await sql`select * from public.ops_function_latency
                                   where function_name = 'limited'`;
        const [errors] = await sql`select * from public.ops_function_errors
                                  where function_name = 'limited'`;
        return latency?.requests >= 3 && errors?.client_errors >= 2;
      }, 10_000);
    } finally {
      await sql.end();
    }
  },
);
