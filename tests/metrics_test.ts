import assert from "node:assert/strict";
import { waitFor } from "../local/process.ts";
import { createUser, database, fixtureGateway, stackTest } from "./support.ts";

/** Every function request leaves one api_metrics row, failures included, read by the ops views. */

const gateway = await fixtureGateway();

stackTest(
  "requests leave metrics rows, failed ones too, and the operator views show them",
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
      await waitFor("metrics rows", async () => {
        rows = await sql`select request_id, status, user_id::text from public.api_metrics
                        where request_id = any(${ids})`;
        return rows.length === sent.length;
      }, 10_000);
      for (const request of sent) {
        const row = rows.find((r) => r.request_id === request.id);
        assert.equal(row?.status, request.status);
      }
      assert.equal(rows.find((r) => r.status === 200)?.user_id, user.id);

      const [latency] = await sql`select * from public.ops_function_latency
                                 where function_name = 'limited'`;
      assert.ok(latency.requests >= 3);
      const [errors] = await sql`select * from public.ops_function_errors
                                where function_name = 'limited'`;
      assert.ok(errors.client_errors >= 2);
    } finally {
      await sql.end();
    }
  },
);
