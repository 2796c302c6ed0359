import assert from "node:assert/strict";
import { database, functionsGateway, processJobs, stackTest } from "./support.ts";

/**
 * Alerts end to end: evaluate_alert_rules (what pg_cron runs every minute) at instants the test
 * chooses, the `alert.notify` jobs it queues run by `process-jobs`, and a local webhook sink in
 * the place of Slack. Time is driven through `p_now`, on data of a minute nobody else writes to.
 */

// deno-lint-ignore no-explicit-any
type Message = any;

function webhookSink() {
  const messages: Message[] = [];
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, async (req) => {
    messages.push(await req.json());
    return new Response("ok");
  });
  return {
    messages,
    url: `http://127.0.0.1:${server.addr.port}/services/T000/B000/XXXX`,
    close: () => server.shutdown(),
  };
}

stackTest(
  "a rule that starts firing posts one message to the webhook, none while it keeps firing, and one when it resolves",
  async () => {
    const sink = webhookSink();
    const gateway = await functionsGateway({
      ALERT_WEBHOOK_URL: sink.url,
      ALERT_DASHBOARD_URL: "https://dashboard.example/project/test",
    });
    const sql = database();
    const rule = `test-${crypto.randomUUID().slice(0, 8)}`;
    const fn = `alert-test-${rule}`;
    // A whole minute in a year no other test writes to.
    const now = new Date(Date.UTC(2031, 2, 1 + Math.floor(Math.random() * 27), 12, 0));
    const at = (minutes: number) => new Date(now.getTime() + minutes * 60_000);
    const evaluate = async (minutes: number) => {
      const [row] = await sql<{ notified: string | null; firing: boolean }[]>`
        select notified, firing from public.evaluate_alert_rules(${at(minutes)}, array[${rule}])`;
      await processJobs(gateway.url);
      return row;
    };
    const mine = () => sink.messages.filter((m) => JSON.stringify(m).includes(rule));
    try {
      // Disabled: pg_cron's evaluation leaves it alone, only the named evaluation runs it.
      await sql`
        insert into public.alert_rules
          (name, metric, threshold, "window", min_requests, view_name, description, enabled)
        values (${rule}, 'error_rate', 0.05, interval '5 minutes', 20, 'ops_function_errors',
                'A function answers more than 5 % of its requests with a 5xx', false)`;
      await sql`
        insert into public.api_request_counts
          (minute, function_name, status, requests, total_duration_ms, max_duration_ms)
        values (${at(-1)}, ${fn}, 200, 18, 180, 20), (${at(-1)}, ${fn}, 500, 2, 20, 10)`;

      assert.deepEqual(await evaluate(0), { notified: "firing", firing: true });
      assert.equal(mine().length, 1, "one message when it starts firing");
      const [firing] = mine();
      assert.match(firing.text, /firing/);
      assert.match(firing.text, new RegExp(rule));
      const blocks = JSON.stringify(firing.blocks);
      assert.match(blocks, /\*Value\*\\n0\.1/);
      assert.match(blocks, /\*Threshold\*\\n0\.05/);
      assert.match(
        blocks,
        /https:\/\/dashboard\.example\/project\/test\/sql\/new\?content=select%20\*%20from%20public\.ops_function_errors/,
      );

      assert.deepEqual(await evaluate(1), { notified: null, firing: true });
      assert.deepEqual(await evaluate(3), { notified: null, firing: true });
      assert.equal(mine().length, 1, "nothing more while it keeps firing");

      assert.deepEqual(await evaluate(10), { notified: "resolved", firing: false });
      assert.equal(mine().length, 2, "one message when it resolves");
      assert.match(mine()[1].text, /resolved/);
    } finally {
      await sql`delete from public.api_request_counts where function_name = ${fn}`;
      await sql`delete from public.alert_rules where name = ${rule}`;
      await sql.end();
      await gateway.close();
      await sink.close();
    }
  },
);

stackTest("a webhook that refuses an alert leaves the job to be retried", async () => {
  const server = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen() {} },
    () => new Response("no", { status: 500 }),
  );
  const gateway = await functionsGateway({
    ALERT_WEBHOOK_URL: `http://127.0.0.1:${server.addr.port}/hook`,
  });
  const sql = database();
  const rule = `test-${crypto.randomUUID().slice(0, 8)}`;
  try {
    const [{ id }] = await sql<{ id: string }[]>`
      select public.enqueue_job('alert.notify', ${
      sql.json({
        rule,
        state: "firing",
        description: "test",
        metric: "dead_jobs",
        value: 1,
        threshold: 0,
        view: "background_jobs",
        firing_since: new Date().toISOString(),
        at: new Date().toISOString(),
      })
    }) as id`;
    await processJobs(gateway.url);
    const [job] = await sql`select status, attempts from public.background_jobs where id = ${id}`;
    assert.equal(job.status, "failed");
    assert.equal(job.attempts, 1);
  } finally {
    await sql`delete from public.background_jobs where payload->>'rule' = ${rule}`;
    await sql.end();
    await gateway.close();
    await server.shutdown();
  }
});
