import type { Redis } from "@upstash/redis";
import { type Config, config } from "./config.ts";
import { createSql, isDatabaseUnreachable, type Sql, sql as primary } from "./db.ts";
import { errorMessage, log, type LogFields } from "./log.ts";
import { keepAlive } from "./metrics.ts";
import { askRedis } from "./redis.ts";
import { withTimeout } from "./timeout.ts";

/**
 * Reads that tolerate lag (history pages, activities, statistics, sync) go to the read replica
 * named by `DB_READ_URL` (hosted) or `SUPABASE_DB_READ_URL` (the local stack); everything that writes, meters or authorizes stays on the
 * primary. Without the setting every read is a primary read and nothing here costs anything.
 *
 * Read-your-writes: after a user's write (`markWritten`), that user's reads go to the primary
 * for `READ_AFTER_WRITE_MS`. The marker is a Redis key with that expiry, read by the pipeline
 * in the same round trip as the profile (`GETEX`, which the Upstash client pipelines with the
 * profile read and the rate limit), and remembered in this isolate too; when Redis cannot say,
 * the read goes to the primary.
 *
 * The replica is used only while it answers and its replay lag is within `MAX_REPLICA_LAG_MS`,
 * checked at most every `LAG_CHECK_INTERVAL_MS` in the background (the first check is waited
 * for, briefly). A read that finds it unreachable is retried on the primary at once. Each switch
 * is logged once.
 */

const LAG_CHECK_INTERVAL_MS = 5_000;
const LAG_CHECK_TIMEOUT_MS = 1_000;
const MAX_REMEMBERED_WRITERS = 10_000;

const writtenKey = (userId: string) => `written:${userId}`;

/** Until when (ms since the epoch) each user who wrote through this isolate reads the primary. */
const writers = new Map<string, number>();

let replica: Sql | undefined;
let usable = false;
let lastCheck = 0;
let checking: Promise<void> | undefined;

/** The replica's URL: `DB_READ_URL` where Supabase reserves the SUPABASE_ prefix (hosted). */
const replicaUrl = (c: Config) => c.DB_READ_URL ?? c.SUPABASE_DB_READ_URL;

export function replicaConfigured(c: Config = config()): boolean {
  return replicaUrl(c) !== undefined;
}

function replicaClient(c: Config): Sql {
  replica ??= createSql(replicaUrl(c)!, {
    max: c.DB_POOL_MAX,
    connectTimeoutMs: c.DB_CONNECT_TIMEOUT_MS,
    statementTimeoutMs: c.DB_STATEMENT_TIMEOUT_MS,
    applicationName: "edge-function-read",
  });
  return replica;
}

function setUsable(next: boolean, detail: LogFields) {
  if (next === usable) return;
  usable = next;
  if (next) log.info("read replica in use", detail);
  else log.warn("read replica not used; reading from the primary", detail);
}

/**
 * How far behind the replica is: nothing when it has replayed all it received, otherwise the age
 * of the last transaction it replayed.
 */
async function checkLag(c: Config) {
  lastCheck = Date.now();
  try {
    const db = replicaClient(c);
    const [row] = await withTimeout(
      db<{ lag_ms: number | null; in_recovery: boolean }[]>`
        select pg_is_in_recovery() as in_recovery,
               case when pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() then 0
                    else extract(epoch from now() - pg_last_xact_replay_timestamp()) * 1000
               end::float8 as lag_ms`,
      LAG_CHECK_TIMEOUT_MS,
      "read replica lag check",
    );
    const lagMs = row.lag_ms ?? 0;
    setUsable(lagMs <= c.MAX_REPLICA_LAG_MS, {
      lag_ms: Math.round(lagMs),
      max_lag_ms: c.MAX_REPLICA_LAG_MS,
    });
  } catch (error) {
    setUsable(false, { error: errorMessage(error) });
  }
}

/** Whether the replica may be read now; checks its lag when the last check is old. */
async function replicaUsable(c: Config): Promise<boolean> {
  if (Date.now() - lastCheck >= LAG_CHECK_INTERVAL_MS) {
    const checked = lastCheck !== 0;
    checking ??= checkLag(c).finally(() => (checking = undefined));
    // Only the very first check is waited for; later ones refresh the verdict for later reads.
    if (!checked) await checking;
    else keepAlive(checking);
  }
  return usable;
}

/**
 * Whether the user wrote within READ_AFTER_WRITE_MS, as the pipeline asks it alongside the
 * profile read; `true` when Redis cannot answer (the primary is always right).
 */
export async function wroteRecently(redis: Redis, userId: string): Promise<boolean> {
  const until = writers.get(userId);
  if (until !== undefined && until > Date.now()) return true;
  const marker = await askRedis("read-after-write marker", () => redis.getex(writtenKey(userId)));
  return marker !== null;
}

/** After a write by `userId`: their reads stay on the primary for READ_AFTER_WRITE_MS. */
export function markWritten(redis: Redis, userId: string): Promise<void> {
  const c = config();
  if (!replicaConfigured(c)) return Promise.resolve();
  if (writers.size >= MAX_REMEMBERED_WRITERS) writers.clear();
  writers.set(userId, Date.now() + c.READ_AFTER_WRITE_MS);
  const marking = askRedis(
    "read-after-write marker",
    () => redis.set(writtenKey(userId), 1, { px: c.READ_AFTER_WRITE_MS }),
  ).then(() => {});
  keepAlive(marking);
  return marking;
}

/**
 * Runs `work` on the replica when the user may read from it, else on the primary; a replica
 * that turns out unreachable is marked so and `work` runs again on the primary.
 */
export async function onReadClient<T>(
  recentWrite: Promise<boolean> | null,
  work: (db: Sql) => Promise<T>,
): Promise<T> {
  const c = config();
  if (!replicaConfigured(c) || !recentWrite || await recentWrite) return await work(primary());
  if (!(await replicaUsable(c))) return await work(primary());
  try {
    return await work(replicaClient(c));
  } catch (error) {
    if (!isDatabaseUnreachable(error)) throw error;
    setUsable(false, { error: errorMessage(error) });
    return await work(primary());
  }
}
