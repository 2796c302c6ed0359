import postgres from "postgres";
import { ensureDependencies } from "./dependencies.ts";
import { type Gateway, startGateway } from "./gateway.ts";
import {
  LOCAL_ANON_KEY,
  LOCAL_DB_URL,
  LOCAL_JWT_SECRET,
  LOCAL_PORTS,
  LOCAL_REPLICA_URL,
  LOCAL_SERVICE_ROLE_KEY,
  LOCAL_STATE_DIR,
  LOCAL_SUPABASE_URL,
  LOCAL_UPSTASH_TOKEN,
  LOCAL_UPSTASH_URL,
} from "./keys.ts";
import { LocalPostgres } from "./postgres.ts";
import { portInUse, processAlive, waitFor } from "./process.ts";
import { LocalRedis } from "./redis.ts";
import { ensureSigningKey, publicJwks, signUserToken } from "./signing-key.ts";
import { createStorageServer, type StorageServer } from "./storage-server.ts";
import { startUpstashBridge, type UpstashBridge } from "./upstash-bridge.ts";
import { ensureUser } from "./users.ts";

/**
 * The local stack, without Docker: Postgres 15 and Redis from Debian, the Upstash-REST bridge,
 * and the functions gateway, on the ports `supabase start` uses.
 *
 *   dev [--seed] [--replica]
 *                  start in the foreground; Ctrl-C stops everything it started; --seed loads
 *                  supabase/seed.sql (demo users and their history) after the migrations;
 *                  --replica (or LOCAL_REPLICA=1) adds a streaming read replica of Postgres on
 *                  LOCAL_REPLICA_PORT, which the functions read from (SUPABASE_DB_READ_URL)
 *   up [--seed] [--replica]
 *                  the same in the background; returns once health answers 200
 *   down           stops what `up` started
 *   redis          only Redis and the Upstash bridge, in the foreground, for use beside
 *                  `supabase start` + `supabase functions serve` (the CLI's Docker stack)
 *   token <email>  create that user if needed and print an access token for them
 */

const PROJECT_ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const PID_FILE = `${LOCAL_STATE_DIR}/stack.pid`;
const LOG_FILE = `${LOCAL_STATE_DIR}/stack.log`;
const HEALTH_URL = `${LOCAL_SUPABASE_URL}/functions/v1/health`;

/** What the functions read locally; any of it can be overridden from the environment. */
export const LOCAL_FUNCTION_ENV: Record<string, string> = {
  SUPABASE_URL: LOCAL_SUPABASE_URL,
  SUPABASE_ANON_KEY: LOCAL_ANON_KEY,
  SUPABASE_SERVICE_ROLE_KEY: LOCAL_SERVICE_ROLE_KEY,
  SUPABASE_DB_URL: LOCAL_DB_URL,
  JWT_SECRET: LOCAL_JWT_SECRET,
  UPSTASH_REDIS_REST_URL: LOCAL_UPSTASH_URL,
  UPSTASH_REDIS_REST_TOKEN: LOCAL_UPSTASH_TOKEN,
  ALLOWED_ORIGINS: "http://localhost:8081,http://127.0.0.1:8081,http://localhost:19006",
};

function functionEnv(replica = false): Record<string, string> {
  const env = { ...LOCAL_FUNCTION_ENV, ...Deno.env.toObject() };
  env.SUPABASE_URL = env.SUPABASE_URL.replace(/\/$/, "");
  // Set (even empty, as the test run sets it) it wins: an empty value means no read replica.
  if (replica) env.SUPABASE_DB_READ_URL ??= LOCAL_REPLICA_URL;
  return env;
}

/** Whether the stack runs a read replica: `--replica`, or LOCAL_REPLICA=1 in the environment. */
const replicaWanted = (args: string[]) =>
  args.includes("--replica") || Deno.env.get("LOCAL_REPLICA") === "1";

async function healthy(): Promise<boolean> {
  try {
    const response = await fetch(HEALTH_URL, { signal: AbortSignal.timeout(2_000) });
    await response.body?.cancel();
    return response.status === 200;
  } catch {
    return false;
  }
}

function readPid(): number | null {
  try {
    const pid = Number(Deno.readTextFileSync(PID_FILE).trim());
    return Number.isInteger(pid) && pid > 0 ? pid : null;
  } catch {
    return null;
  }
}

function fail(message: string): never {
  console.error(`error: ${message}`);
  Deno.exit(1);
}

function refuseTakenPorts(replica: boolean) {
  const taken = Object.entries(LOCAL_PORTS)
    .filter(([part]) => replica || part !== "replica")
    .filter(([, port]) => portInUse(port));
  if (taken.length === 0) return;
  const list = taken.map(([part, port]) => `${port} (${part})`).join(", ");
  const running = readPid();
  fail(
    running && processAlive(running)
      ? `the local stack is already running (pid ${running}); stop it with \`deno task down\``
      : `port ${list} already in use; stop whatever holds it (another local stack or a ` +
        `\`supabase start\`?) and try again`,
  );
}

function banner(replica: boolean): string {
  return [
    "",
    "Local stack is up.",
    `  Functions      ${LOCAL_SUPABASE_URL}/functions/v1/<name>`,
    `  SUPABASE_URL   ${LOCAL_SUPABASE_URL}`,
    `  JWKS           ${LOCAL_SUPABASE_URL}/auth/v1/.well-known/jwks.json`,
    `  Storage        ${LOCAL_SUPABASE_URL}/storage/v1`,
    `  Database       ${LOCAL_DB_URL}`,
    ...(replica ? [`  Read replica   ${LOCAL_REPLICA_URL}  (streaming, read-only)`] : []),
    `  Upstash REST   ${LOCAL_UPSTASH_URL}  (token: ${LOCAL_UPSTASH_TOKEN})`,
    `  JWT secret     ${LOCAL_JWT_SECRET}`,
    `  anon key       ${LOCAL_ANON_KEY}`,
    `  service_role   ${LOCAL_SERVICE_ROLE_KEY}`,
    "",
    "A signed-in user's token for curl:",
    `  TOKEN=$(deno task token you@example.com)`,
    `  curl -H "Authorization: Bearer $TOKEN" ${LOCAL_SUPABASE_URL}/functions/v1/health`,
    "",
  ].join("\n");
}

/** How often `dev` wakes the job worker: every minute, as pg_cron's `trigger-job-worker` does. */
const JOB_WORKER_INTERVAL_MS = 60_000;

/**
 * The local stand-in for pg_cron + pg_net (this stack has neither pg_net nor Vault): POSTs to
 * `process-jobs` with the service-role key every minute, one run at a time. Quiet unless a run
 * did work or failed. Returns what stops it.
 */
function startJobWorkerTrigger(serviceRoleKey: string): () => void {
  let running = false;
  const run = async () => {
    if (running) return;
    running = true;
    try {
      const response = await fetch(`${LOCAL_SUPABASE_URL}/functions/v1/process-jobs`, {
        method: "POST",
        headers: {
          authorization: `Bearer ${serviceRoleKey}`,
          "content-type": "application/json",
        },
        body: JSON.stringify({ source: "local-stack" }),
      });
      const text = await response.text();
      if (!response.ok) console.error(`job worker: ${response.status} ${text}`);
      else if (JSON.parse(text).claimed > 0) console.log(`job worker: ${text}`);
    } catch (error) {
      console.error(`job worker: ${error instanceof Error ? error.message : String(error)}`);
    } finally {
      running = false;
    }
  };
  const timer = setInterval(run, JOB_WORKER_INTERVAL_MS);
  return () => clearInterval(timer);
}

async function dev(seed: boolean, replica: boolean) {
  await ensureDependencies();
  refuseTakenPorts(replica);
  await Deno.mkdir(LOCAL_STATE_DIR, { recursive: true });
  Deno.writeTextFileSync(PID_FILE, `${Deno.pid}\n`);

  const db = new LocalPostgres(LOCAL_STATE_DIR);
  const cache = new LocalRedis(LOCAL_STATE_DIR);
  const readReplica = replica
    ? new LocalPostgres(LOCAL_STATE_DIR, LOCAL_PORTS.replica, "replica")
    : undefined;
  let bridge: UpstashBridge | undefined;
  let gateway: Gateway | undefined;
  let storage: StorageServer | undefined;
  let stopJobWorkerTrigger: (() => void) | undefined;
  let stopping: Promise<void> | undefined;

  const stop = () =>
    stopping ??= (async () => {
      stopJobWorkerTrigger?.();
      await gateway?.close().catch(() => {});
      await storage?.close().catch(() => {});
      await bridge?.close().catch(() => {});
      await cache.stop().catch((e) => console.error(`redis: ${e.message}`));
      await readReplica?.stop().catch((e) => console.error(`replica: ${e.message}`));
      await db.stop().catch((e) => console.error(`postgres: ${e.message}`));
      await Deno.remove(PID_FILE).catch(() => {});
    })();
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, async () => {
      console.log(`\nstopping the local stack (${signal})...`);
      await stop();
      Deno.exit(0);
    });
  }

  try {
    const key = await ensureSigningKey();
    const fresh = !(await db.initialised());
    if (fresh) {
      console.log(`creating a Postgres 15 cluster in ${db.dataDir}`);
      await db.init();
    }
    await db.start();
    await db.applyPlatform();
    await db.pushMigrations();
    if (seed) await db.seed();
    console.log(`postgres ready, migrations applied${seed ? ", seed.sql loaded" : ""}`);
    if (readReplica) {
      await readReplica.stop().catch(() => {});
      await readReplica.replicate(db);
      await readReplica.start();
      console.log(`read replica streaming from postgres on port ${readReplica.port}`);
    }

    await cache.start();
    bridge = await startUpstashBridge({
      port: LOCAL_PORTS.upstashBridge,
      token: LOCAL_UPSTASH_TOKEN,
      redisPort: LOCAL_PORTS.redis,
    });
    console.log(`redis ready behind the Upstash bridge at ${bridge.url}`);

    const env = functionEnv(replica);
    storage = createStorageServer({
      dbUrl: env.SUPABASE_DB_URL,
      dataDir: `${LOCAL_STATE_DIR}/storage`,
      jwtSecret: env.JWT_SECRET,
    });
    gateway = await startGateway({
      port: LOCAL_PORTS.gateway,
      functionsDir: `${PROJECT_ROOT}/supabase/functions`,
      configPath: `${PROJECT_ROOT}/supabase/config.toml`,
      env,
      jwks: publicJwks(key),
      jwtSecret: env.JWT_SECRET,
      issuer: `${env.SUPABASE_URL}/auth/v1`,
      storage,
      watch: true,
    });
    await waitFor("health function", healthy, 60_000);
    stopJobWorkerTrigger = startJobWorkerTrigger(env.SUPABASE_SERVICE_ROLE_KEY);
    console.log(banner(replica));
  } catch (error) {
    console.error(`error: ${error instanceof Error ? error.message : String(error)}`);
    await stop();
    Deno.exit(1);
  }
}

async function up(seed: boolean, replica: boolean) {
  const running = readPid();
  if (running && processAlive(running) && await healthy()) {
    if (seed) await new LocalPostgres(LOCAL_STATE_DIR).seed();
    console.log(`the local stack is already running (pid ${running})${seed ? "; seeded" : ""}`);
    return;
  }
  await ensureDependencies();
  refuseTakenPorts(replica);
  await Deno.mkdir(LOCAL_STATE_DIR, { recursive: true });
  // setsid detaches the stack from this shell so it outlives `deno task up`; the shell's
  // redirection hands it the log file, so nothing it writes depends on this process.
  const quote = (value: string) => `'${value.replaceAll("'", `'\\''`)}'`;
  const command = [Deno.execPath(), "run", "-A", new URL(import.meta.url).pathname, "dev"]
    .concat(seed ? ["--seed"] : [], replica ? ["--replica"] : [])
    .map(quote).join(" ");
  const child = new Deno.Command("sh", {
    args: ["-c", `exec setsid ${command} > ${quote(LOG_FILE)} 2>&1 < /dev/null`],
  }).spawn();
  const exited = child.status.then((status) => status.code);
  const ready = await Promise.race([
    waitFor("the local stack", healthy, 180_000).then(() => true),
    exited.then(() => false),
  ]).catch(() => false);
  if (!ready) {
    const tail = Deno.readTextFileSync(LOG_FILE).trim().split("\n").slice(-30).join("\n");
    if (processAlive(child.pid)) Deno.kill(-child.pid, "SIGTERM");
    fail(`the local stack did not start; last lines of ${LOG_FILE}:\n${tail}`);
  }
  child.unref();
  console.log(banner(replica));
  console.log(
    `Running in the background (pid ${child.pid}, log ${LOG_FILE}); stop: deno task down`,
  );
  Deno.exit(0);
}

async function down() {
  const pid = readPid();
  if (!pid || !processAlive(pid)) {
    console.log("the local stack is not running");
    await Deno.remove(PID_FILE).catch(() => {});
    return;
  }
  Deno.kill(pid, "SIGTERM");
  try {
    await waitFor("the local stack to stop", () => Promise.resolve(!processAlive(pid)), 30_000);
  } catch {
    Deno.kill(-pid, "SIGKILL");
  }
  // The daemons belong to the stack even if its process died before stopping them.
  await new LocalRedis(LOCAL_STATE_DIR).stop().catch(() => {});
  await new LocalPostgres(LOCAL_STATE_DIR, LOCAL_PORTS.replica, "replica").stop().catch(() => {});
  await new LocalPostgres(LOCAL_STATE_DIR).stop().catch(() => {});
  await Deno.remove(PID_FILE).catch(() => {});
  console.log("the local stack is stopped");
}

/**
 * Redis and the Upstash bridge alone, for the Supabase CLI's own stack, which has neither. The
 * bridge listens on every interface: the functions run in a container under `supabase functions
 * serve` and reach it at `http://host.docker.internal:<bridge port>` (supabase/functions/
 * .env.example); its token is the well-known local one, so run it on a trusted network only.
 */
async function redisOnly() {
  await ensureDependencies();
  const taken = [LOCAL_PORTS.redis, LOCAL_PORTS.upstashBridge].filter((port) => portInUse(port));
  if (taken.length > 0) fail(`port ${taken.join(", ")} already in use`);
  const cache = new LocalRedis(LOCAL_STATE_DIR);
  await cache.start();
  const bridge = await startUpstashBridge({
    hostname: "0.0.0.0",
    port: LOCAL_PORTS.upstashBridge,
    token: LOCAL_UPSTASH_TOKEN,
    redisPort: LOCAL_PORTS.redis,
  }).catch(async (error) => {
    await cache.stop();
    throw error;
  });
  console.log(
    [
      "",
      "Redis is up behind the Upstash bridge (Ctrl-C stops both).",
      `  from this machine       http://127.0.0.1:${LOCAL_PORTS.upstashBridge}`,
      `  from functions serve    http://host.docker.internal:${LOCAL_PORTS.upstashBridge}`,
      `  token                   ${LOCAL_UPSTASH_TOKEN}`,
      "",
    ].join("\n"),
  );
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, async () => {
      await bridge.close().catch(() => {});
      await cache.stop().catch((e) => console.error(`redis: ${e.message}`));
      Deno.exit(0);
    });
  }
}

async function token(email: string | undefined) {
  if (!email || !email.includes("@")) fail("usage: deno task token <email>");
  const env = functionEnv();
  const sql = postgres(env.SUPABASE_DB_URL, { max: 1, onnotice: () => {} });
  try {
    const user = await ensureUser(sql, email);
    const key = await ensureSigningKey();
    console.log(
      await signUserToken(key, { id: user.id, email }, { issuer: `${env.SUPABASE_URL}/auth/v1` }),
    );
  } catch (error) {
    fail(
      `could not create a token (is the stack up? \`deno task up\`): ${
        error instanceof Error ? error.message : String(error)
      }`,
    );
  } finally {
    await sql.end();
  }
}

if (import.meta.main) {
  const [command, ...args] = Deno.args;
  switch (command) {
    case "dev":
      await dev(args.includes("--seed"), replicaWanted(args));
      break;
    case "up":
      await up(args.includes("--seed"), replicaWanted(args));
      break;
    case "down":
      await down();
      break;
    case "redis":
      await redisOnly();
      break;
    case "token":
      await token(args[0]);
      break;
    default:
      fail(
        "usage: stack.ts dev [--seed] [--replica] | up [--seed] [--replica] | down | redis | " +
          "token <email>",
      );
  }
}
