import { ensureDependencies } from "./dependencies.ts";
import { TEST_PORTS } from "./keys.ts";

/**
 * `deno task test`: starts the local stack from nothing (a throw-away state folder), runs the
 * pgTAP files with pg_prove as `supabase test db` would, then the Deno tests, stops the stack,
 * and ends with one line `N passed, N failed`.
 */

const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");

/**
 * The environment of the test run's stack and of the tests: its own ports (TEST_PORTS unless a
 * LOCAL_*_PORT variable says otherwise) and its own state folder (TEST_STATE_DIR, else
 * .local/test), so it runs beside a dev stack without touching it. The stack and the tests derive
 * every URL from these, as a dev stack does from its ports.
 */
export function testRunEnv(base: Record<string, string>): Record<string, string> {
  const ports = Object.entries(TEST_PORTS).map(([variable, port]) => [
    variable,
    base[variable] ?? String(port),
  ]);
  return {
    ...base,
    ...Object.fromEntries(ports),
    STACK_STATE_DIR: base.TEST_STATE_DIR ?? `${ROOT}/.local/test`,
    // The stack runs its read replica for the tests that prove routing to it
    // (read_replica_test.ts, each with a gateway of its own); the shared functions read the
    // primary, so tests that write straight into Postgres and read back never race replication.
    SUPABASE_DB_READ_URL: base.SUPABASE_DB_READ_URL ?? "",
  };
}

const env = testRunEnv(Deno.env.toObject());
const STATE_DIR = env.STACK_STATE_DIR;

interface Outcome {
  passed: number;
  failed: number;
}

/** Runs a command, showing its output as it comes, and returns that output. */
async function stream(
  command: string,
  args: string[],
  extraEnv: Record<string, string> = {},
): Promise<{ code: number; text: string }> {
  const child = new Deno.Command(command, {
    args,
    env: { ...env, NO_COLOR: "1", ...extraEnv },
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let text = "";
  const tee = async (
    source: ReadableStream<Uint8Array>,
    sink: { write(p: Uint8Array): unknown },
  ) => {
    const decoder = new TextDecoder();
    for await (const chunk of source) {
      text += decoder.decode(chunk, { stream: true });
      await sink.write(chunk);
    }
  };
  const stdout = Deno.stdout.writable.getWriter();
  const stderr = Deno.stderr.writable.getWriter();
  await Promise.all([tee(child.stdout, stdout), tee(child.stderr, stderr)]);
  stdout.releaseLock();
  stderr.releaseLock();
  const { code } = await child.status;
  return { code, text };
}

async function stack(command: "up" | "down"): Promise<boolean> {
  const args = ["run", "-A", `${ROOT}/local/stack.ts`, command];
  if (command === "up") args.push("--replica");
  const { code } = await stream(Deno.execPath(), args);
  return code === 0;
}

async function pgTap(): Promise<Outcome> {
  const { code, text } = await stream(
    "pg_prove",
    [
      "--host",
      "127.0.0.1",
      "--port",
      env.LOCAL_DB_PORT,
      "--username",
      "postgres",
      "--dbname",
      "postgres",
      "--ext",
      ".sql",
      "--recurse",
      "supabase/tests/database/",
    ],
    { PGPASSWORD: "postgres" },
  );
  const total = Number(text.match(/^Files=\d+, Tests=(\d+)/m)?.[1] ?? 0);
  const failed = [...text.matchAll(/Failed: (\d+)\)/g)].reduce((sum, m) => sum + Number(m[1]), 0);
  // A file that dies before its plan completes counts as one failure even if no test failed.
  const broken = code !== 0 && failed === 0 ? 1 : 0;
  return { passed: Math.max(total - failed, 0), failed: failed + broken };
}

async function denoTests(): Promise<Outcome> {
  const { code, text } = await stream(Deno.execPath(), [
    "test",
    "--allow-all",
    "tests/",
    "supabase/functions/",
  ]);
  const summary = text.match(/^(?:ok|FAILED) \| (\d+) passed(?: \(\d+ steps?\))? \| (\d+) failed/m);
  const passed = Number(summary?.[1] ?? 0);
  const failed = Number(summary?.[2] ?? 0);
  return { passed, failed: failed + (code !== 0 && failed === 0 ? 1 : 0) };
}

async function main(): Promise<number> {
  await ensureDependencies();
  await Deno.remove(STATE_DIR, { recursive: true }).catch(() => {});
  const outcomes: Outcome[] = [];
  if (!(await stack("up"))) {
    outcomes.push({ passed: 0, failed: 1 });
  } else {
    try {
      outcomes.push(await pgTap());
      outcomes.push(await denoTests());
    } finally {
      if (!(await stack("down"))) outcomes.push({ passed: 0, failed: 1 });
    }
  }
  const passed = outcomes.reduce((sum, o) => sum + o.passed, 0);
  const failed = outcomes.reduce((sum, o) => sum + o.failed, 0);
  console.log(`\n${passed} passed, ${failed} failed`);
  return failed === 0 ? 0 : 1;
}

if (import.meta.main) Deno.exit(await main());
