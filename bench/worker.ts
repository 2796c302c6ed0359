import { Redis } from "@upstash/redis";
import postgres from "postgres";
import { LOCAL_DB_URL } from "../local/keys.ts";
import { LOCAL_FUNCTION_ENV } from "../local/stack.ts";
import { parseConfig } from "../supabase/functions/_shared/config.ts";
import type { JobContext } from "../supabase/functions/_shared/jobs/job.ts";
import { JOB_HANDLERS } from "../supabase/functions/_shared/jobs/registry.ts";
import { runJobs } from "../supabase/functions/_shared/jobs/worker.ts";
import { startExpoPushServer } from "../tests/expo_push_server.ts";
import { startOpenAiServer } from "../tests/openai_server.ts";

/**
 * The background worker: jobs per second of `notify.send` (expo-server-sdk against the local
 * push server) and `ai.analyze` (the openai SDK against the local model server), run in process
 * by the same `runJobs` that `process-jobs` runs, and the queue's claim latency with 10,000 jobs
 * pending against an empty queue. Everything it adds is removed afterwards.
 */

const JOBS = Number(Deno.env.get("BENCH_WORKER_JOBS") ?? "300");
const PENDING = 10_000;
const CLAIMS = 200;
const CONCURRENCY = 16;

const ID_SQL = (g: string) => `('b7000000-0000-4000-8000-' || lpad(to_hex(${g}), 12, '0'))::uuid`;

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))];
}

async function drain(ctx: JobContext, type: string): Promise<number> {
  const started = performance.now();
  let done = 0;
  for (;;) {
    const run = await runJobs(ctx, JOB_HANDLERS, {
      worker: `bench:${crypto.randomUUID()}`,
      types: [type],
      batchSize: 1000,
      concurrency: CONCURRENCY,
      timeoutMs: 20_000,
    });
    done += run.succeeded;
    if (run.claimed === 0) break;
    if (run.failed + run.dead > 0) throw new Error(`${type}: ${JSON.stringify(run)}`);
  }
  if (done !== JOBS) throw new Error(`${type}: ${done} of ${JOBS} jobs succeeded`);
  return JOBS / ((performance.now() - started) / 1000);
}

async function claimLatencies(sql: postgres.Sql): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < CLAIMS; i++) {
    const started = performance.now();
    await sql`select id from public.claim_jobs(${`bench-claim-${i}`}, 1, 60, array['bench.claim'])`;
    times.push(performance.now() - started);
  }
  return times.sort((a, b) => a - b);
}

export async function workerBench(dbUrl = LOCAL_DB_URL): Promise<string> {
  const push = startExpoPushServer();
  const apiKey = `sk-bench-${crypto.randomUUID()}`;
  const model = startOpenAiServer(apiKey);
  // expo-server-sdk reads its host from the environment when it is first imported.
  Deno.env.set("EXPO_BASE_URL", push.url);
  const config = parseConfig({
    ...LOCAL_FUNCTION_ENV,
    OPENAI_API_KEY: apiKey,
    OPENAI_BASE_URL: `${model.url}/v1`,
    EXPO_BASE_URL: push.url,
  });
  const sql = postgres(dbUrl, { max: CONCURRENCY + 2, prepare: false, onnotice: () => {} });
  const redis = new Redis({
    url: config.UPSTASH_REDIS_REST_URL,
    token: config.UPSTASH_REDIS_REST_TOKEN,
  });
  const ctx: JobContext = {
    sql,
    redis,
    config,
    stripe: () => Promise.reject(new Error("no Stripe in this benchmark")),
  };
  const cleanUp = async () => {
    await sql`delete from public.background_jobs
               where type in ('notify.send', 'ai.analyze', 'bench.claim')
                 and (type = 'bench.claim' or payload ->> 'user_id' like 'b7000000-%')`;
    await sql`delete from auth.users where email like 'bench-worker-%@bench.invalid'`;
  };
  try {
    await cleanUp();
    await sql.unsafe(`
      insert into auth.users (id, aud, role, email, raw_app_meta_data, created_at, updated_at)
      select ${
      ID_SQL("g")
    }, 'authenticated', 'authenticated', 'bench-worker-' || g || '@bench.invalid',
             '{"provider":"email","bench":true}', now(), now()
        from generate_series(1, ${JOBS}) as g`);
    await sql.unsafe(`
      update public.profiles set settings = '{"notifications_enabled": true}'
       where id in (select ${ID_SQL("g")} from generate_series(1, ${JOBS}) as g)`);
    await sql.unsafe(`
      insert into public.devices (user_id, expo_push_token, platform)
      select ${ID_SQL("g")}, 'ExponentPushToken[bench-' || g || ']', 'ios'
        from generate_series(1, ${JOBS}) as g`);

    await sql.unsafe(`
      select public.enqueue_notification(${ID_SQL("g")}, 'billing.payment_failed', 'bench')
        from generate_series(1, ${JOBS}) as g`);
    const sendRate = await drain(ctx, "notify.send");

    await sql.unsafe(`
      select public.enqueue_background_analysis(
               'bench:' || g,
               jsonb_build_object(
                 'analysis_id', gen_random_uuid(), 'user_id', ${
      ID_SQL("g")
    }, 'request_id', 'bench-' || g,
                 'analysis_type', 'bench', 'input', jsonb_build_object('kind', 'text', 'text', 'bench ' || g),
                 'cache_key', 'bench:' || gen_random_uuid(), 'cache_owner', ${ID_SQL("g")},
                 'max_output_tokens', 300),
               'text', null, repeat('b', 64), null)
        from generate_series(1, ${JOBS}) as g`);
    const analyzeRate = await drain(ctx, "ai.analyze");

    const idle = await claimLatencies(sql);
    await sql.unsafe(`
      insert into public.background_jobs (type, payload)
      select 'bench.claim', '{}' from generate_series(1, ${PENDING})`);
    await sql`analyze public.background_jobs`;
    const loaded = await claimLatencies(sql);
    const ms = (value: number) => value.toFixed(2);
    return [
      "## Background worker: jobs per second and the queue's claim latency",
      "",
      `${JOBS} jobs of each type, run in process by \`runJobs\` (the worker of \`process-jobs\`), ` +
      `${CONCURRENCY} at a time; the push and model servers are the tests' local ones.`,
      "",
      "| job type | jobs/s |",
      "| --- | ---: |",
      `| \`notify.send\` (expo-server-sdk → local push server) | ${sendRate.toFixed(1)} |`,
      `| \`ai.analyze\` (openai SDK → local model server) | ${analyzeRate.toFixed(1)} |`,
      "",
      `Claim of one job (\`claim_jobs\`, ${CLAIMS} claims each):`,
      "",
      "| queue | p50 ms | p99 ms |",
      "| --- | ---: | ---: |",
      `| empty | ${ms(percentile(idle, 0.5))} | ${ms(percentile(idle, 0.99))} |`,
      `| ${PENDING.toLocaleString("en")} pending | ${ms(percentile(loaded, 0.5))} | ${
        ms(percentile(loaded, 0.99))
      } |`,
      "",
      `Ratio p50 at ${PENDING.toLocaleString("en")} pending / empty: ${
        (percentile(loaded, 0.5) / percentile(idle, 0.5)).toFixed(2)
      }; messages the push server accepted: ${push.messages.length}.`,
    ].join("\n");
  } finally {
    await cleanUp();
    await sql.end();
    await push.close();
    await model.close();
  }
}

if (import.meta.main) console.log(await workerBench(Deno.env.get("SUPABASE_DB_URL")));
