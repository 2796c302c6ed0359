import { SUPABASE_CLI } from "./dependencies.ts";
import { LOCAL_PORTS } from "./keys.ts";
import { run } from "./process.ts";

/**
 * Debian's PostgreSQL 15 as the local database: its own cluster in the stack's git-ignored state
 * folder, run by pg_ctl as a daemon so that tests can stop and start it like any other part.
 */

const BIN = "/usr/lib/postgresql/15/bin";
const PLATFORM_SQL = new URL("./supabase-platform.sql", import.meta.url).pathname;
const PROJECT_ROOT = new URL("..", import.meta.url).pathname;
const SEED_SQL = `${PROJECT_ROOT}supabase/seed.sql`;

const isRoot = Deno.uid() === 0;

/** Postgres refuses to run as root, so on a root shell the cluster belongs to `postgres`. */
function asClusterOwner(command: string, args: string[]): [string, string[]] {
  return isRoot ? ["runuser", ["-u", "postgres", "--", command, ...args]] : [command, args];
}

/**
 * The `postgres` OS user must be able to walk down to the data folder. A checkout under a
 * private temp folder (mode 700) would stop it, so grant traversal (never listing) on the way.
 */
async function letClusterOwnerReach(dir: string) {
  if (!isRoot) return;
  let current = dir;
  while (current !== "/") {
    current = current.replace(/\/[^/]+\/?$/, "") || "/";
    const info = await Deno.stat(current);
    if (info.mode !== null && (info.mode & 0o001) === 0) {
      await Deno.chmod(current, info.mode | 0o001);
      console.log(`note: granted traversal (o+x) on ${current} so Postgres can reach its data`);
    }
  }
}

export class LocalPostgres {
  readonly dataDir: string;
  readonly logFile: string;

  /** `name` is the cluster's folder and log in the state folder: `replica` for the replica. */
  constructor(
    stateDir: string,
    readonly port: number = LOCAL_PORTS.postgres,
    name = "postgres",
  ) {
    this.dataDir = `${stateDir}/${name}`;
    this.logFile = `${stateDir}/${name}.log`;
  }

  get url(): string {
    return `postgresql://postgres:postgres@127.0.0.1:${this.port}/postgres`;
  }

  async initialised(): Promise<boolean> {
    try {
      await Deno.stat(`${this.dataDir}/PG_VERSION`);
      return true;
    } catch {
      return false;
    }
  }

  async init() {
    await Deno.mkdir(this.dataDir, { recursive: true, mode: 0o700 });
    await letClusterOwnerReach(this.dataDir);
    const pwfile = `${this.dataDir}.pw`;
    await Deno.writeTextFile(pwfile, "postgres\n");
    if (isRoot) {
      await run("chown", ["postgres:postgres", this.dataDir, pwfile]);
    }
    try {
      const [cmd, args] = asClusterOwner(`${BIN}/initdb`, [
        "--pgdata",
        this.dataDir,
        "--username",
        "postgres",
        `--pwfile=${pwfile}`,
        "--auth-host=scram-sha-256",
        "--auth-local=trust",
        "--encoding=UTF8",
        "--locale=C.UTF-8",
      ]);
      await run(cmd, args);
    } finally {
      await Deno.remove(pwfile);
    }
    // Settings the way hosted Supabase has them where it matters to the project: pg_cron and
    // pg_stat_statements preloaded, cron jobs running in the `postgres` database.
    await Deno.writeTextFile(
      `${this.dataDir}/postgresql.auto.conf`,
      [
        `port = ${this.port}`,
        `listen_addresses = '127.0.0.1'`,
        `unix_socket_directories = ''`,
        `shared_preload_libraries = 'pg_cron,pg_stat_statements'`,
        `cron.database_name = 'postgres'`,
        // Jobs run in background workers: over libpq they would need a socket or a password.
        `cron.use_background_workers = on`,
        `max_connections = 200`,
        `wal_level = logical`,
        `log_min_messages = warning`,
        `fsync = off`,
        `synchronous_commit = off`,
        `full_page_writes = off`,
        "",
      ].join("\n"),
      { append: true },
    );
  }

  /**
   * Makes this cluster a streaming replica of `primary`, as a hosted read replica is: a fresh
   * `pg_basebackup -R` (which writes `primary_conninfo` and `standby.signal`), on its own port.
   * Made anew at every start, so it never follows an older primary's history.
   */
  async replicate(primary: LocalPostgres) {
    await Deno.remove(this.dataDir, { recursive: true }).catch(() => {});
    await Deno.mkdir(this.dataDir, { recursive: true, mode: 0o700 });
    await letClusterOwnerReach(this.dataDir);
    if (isRoot) await run("chown", ["postgres:postgres", this.dataDir]);
    const [cmd, args] = asClusterOwner(`${BIN}/pg_basebackup`, [
      "--pgdata",
      this.dataDir,
      `--dbname=${primary.url}`,
      "--write-recovery-conf",
      "--wal-method=stream",
      "--checkpoint=fast",
    ]);
    await run(cmd, args);
    // The copied settings name the primary's port; the last line read wins.
    await Deno.writeTextFile(
      `${this.dataDir}/postgresql.auto.conf`,
      [`port = ${this.port}`, `hot_standby = on`, ""].join("\n"),
      { append: true },
    );
  }

  async start() {
    if (isRoot) {
      await run("touch", [this.logFile]).then(() => run("chown", ["postgres", this.logFile]));
    }
    const [cmd, args] = asClusterOwner(`${BIN}/pg_ctl`, [
      "--pgdata",
      this.dataDir,
      "--log",
      this.logFile,
      "--wait",
      "--timeout=60",
      "start",
    ]);
    await run(cmd, args);
  }

  async running(): Promise<boolean> {
    const [cmd, args] = asClusterOwner(`${BIN}/pg_ctl`, ["--pgdata", this.dataDir, "status"]);
    const { code } = await new Deno.Command(cmd, { args, stdout: "null", stderr: "null" })
      .output();
    return code === 0;
  }

  async stop() {
    if (!(await this.running())) return;
    const [cmd, args] = asClusterOwner(`${BIN}/pg_ctl`, [
      "--pgdata",
      this.dataDir,
      "--mode=fast",
      "--wait",
      "stop",
    ]);
    await run(cmd, args);
  }

  /** Runs a SQL file as the superuser, stopping at the first error. */
  async psqlFile(file: string) {
    await run("psql", [
      "--no-psqlrc",
      "--quiet",
      "-v",
      "ON_ERROR_STOP=1",
      "--dbname",
      this.url,
      "--file",
      file,
    ]);
  }

  /** The roles, schemas and auth functions hosted Supabase provides; see supabase-platform.sql. */
  async applyPlatform() {
    await this.psqlFile(PLATFORM_SQL);
  }

  /** Loads the demo data in `supabase/seed.sql`, as `supabase db reset` does; idempotent. */
  async seed() {
    await this.psqlFile(SEED_SQL);
  }

  /**
   * Applies `supabase/migrations` with the Supabase CLI, as `supabase db push` does in hosting;
   * `workdir` is the checkout whose migrations and config.toml the CLI reads.
   */
  async pushMigrations(workdir: string = PROJECT_ROOT) {
    await run(SUPABASE_CLI, [
      "db",
      "push",
      // v3 of the CLI spells `--db-url <url>` as `--remote=<url>`.
      `--remote=${this.url}`,
      "--yes",
      // A branch merged after a newer migration was applied here carries older timestamps;
      // locally they are applied rather than refused, as a fresh database would apply them.
      "--include-all",
      "--workdir",
      workdir,
    ], {
      // Without these the CLI looks up its telemetry host, which this machine cannot reach.
      env: {
        SUPABASE_TELEMETRY_DISABLED: "1",
        DO_NOT_TRACK: "1",
        SUPABASE_NO_UPDATE_NOTIFIER: "1",
        PGSSLMODE: "disable",
      },
    });
  }
}
