import { createClient } from "@supabase/supabase-js";
import assert from "node:assert/strict";
import postgres from "postgres";
import { LOCAL_ANON_KEY } from "../local/keys.ts";
import { shellEnv, stackTest } from "./support.ts";

/**
 * `deno task up --seed` gives a fresh local database the demo users of supabase/seed.sql, one on
 * each plan with two months of history, and seeding again changes nothing.
 */

const STACK = new URL("../local/stack.ts", import.meta.url).pathname;

/** A stack of its own, on ports apart from the test run's, the dev stack's and other tests'. */
const PORTS = {
  LOCAL_GATEWAY_PORT: "26621",
  LOCAL_DB_PORT: "26622",
  LOCAL_BRIDGE_PORT: "28779",
  LOCAL_REDIS_PORT: "26680",
};

const DEMO_USERS = {
  "demo-free@example.com": "free",
  "demo-pro@example.com": "pro",
  "demo-team@example.com": "team",
};

async function stack(stateDir: string, ...args: string[]): Promise<string> {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--quiet", STACK, ...args],
    clearEnv: true,
    env: shellEnv({ ...PORTS, STACK_STATE_DIR: stateDir }),
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  assert.equal(code, 0, decoder.decode(stderr));
  return decoder.decode(stdout);
}

interface Counts {
  email: string;
  plan_id: string;
  analyses: number;
  months: number;
  messages: number;
  activities: number;
}

async function demoCounts(sql: postgres.Sql): Promise<Counts[]> {
  return await sql<Counts[]>`
    select u.email, p.plan_id,
           (select count(*)::int from public.analyses a where a.user_id = u.id) as analyses,
           (select count(distinct pg_catalog.date_trunc('month', a.created_at, 'UTC'))::int
              from public.analyses a where a.user_id = u.id) as months,
           (select count(*)::int from public.chat_messages m where m.user_id = u.id) as messages,
           (select count(*)::int from public.activities x where x.user_id = u.id) as activities
      from auth.users u join public.profiles p on p.id = u.id
     where u.email like 'demo-%@example.com'
     order by u.email`;
}

stackTest(
  "up --seed gives a fresh database a demo user on each plan with two months of history, once",
  async () => {
    const stateDir = await Deno.makeTempDir({ prefix: "seeded-stack-" });
    const sql = postgres(
      `postgresql://postgres:postgres@127.0.0.1:${PORTS.LOCAL_DB_PORT}/postgres`,
      { max: 1, onnotice: () => {} },
    );
    try {
      await stack(stateDir, "up", "--seed");
      const seeded = await demoCounts(sql);
      assert.deepEqual(
        Object.fromEntries(seeded.map((row) => [row.email, row.plan_id])),
        DEMO_USERS,
      );
      for (const row of seeded) {
        assert.ok(row.analyses > 0 && row.messages > 0 && row.activities > 0, row.email);
        assert.ok(row.months >= 2, `${row.email}'s analyses span ${row.months} month(s)`);
      }

      assert.match(await stack(stateDir, "up", "--seed"), /already running .*; seeded/);
      assert.deepEqual(await demoCounts(sql), seeded, "seeding twice changes nothing");

      const token = (await stack(stateDir, "token", "demo-pro@example.com")).trim();
      const app = createClient(`http://127.0.0.1:${PORTS.LOCAL_GATEWAY_PORT}`, LOCAL_ANON_KEY, {
        auth: { persistSession: false, autoRefreshToken: false },
        global: { headers: { Authorization: `Bearer ${token}` } },
      });
      const { data, error } = await app.functions.invoke("history?type=analyses&limit=100", {
        method: "GET",
      });
      assert.equal(error, null);
      const pro = seeded.find((row) => row.email === "demo-pro@example.com")!;
      assert.equal(data.items.length, pro.analyses, "history returns the seeded analyses");
    } finally {
      await sql.end();
      await stack(stateDir, "down").catch(() => {});
      await Deno.remove(stateDir, { recursive: true }).catch(() => {});
    }
  },
);
