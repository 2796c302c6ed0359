import type { Sql } from "./db.ts";
import { errorMessage, log } from "./log.ts";

/**
 * The record of every request, written after the response is sent: buffered and written in
 * batches, the write kept alive with `EdgeRuntime.waitUntil` where the runtime has it (a tracked
 * promise otherwise), and flushed when the isolate is about to stop.
 *
 * A request with a user gets its own `api_metrics` row. One without (health checks, refused
 * tokens, webhook deliveries) is only counted, per minute, function and status, in
 * `api_request_counts`: summed here first, then added to the row of that minute in one upsert,
 * so a flood of junk requests adds a row per minute, not per request.
 */

/**
 * What a signed-in request met on its way, written in its own row (null: not applicable), for
 * the cache hit rates and the Redis fallback share in `ops_cache_and_fallback`.
 */
export interface RequestSignals {
  profile_cache_hit: boolean | null;
  ai_cache_hit: boolean | null;
  redis_fallback: boolean | null;
}

export interface MetricRow extends RequestSignals {
  function_name: string;
  method: string;
  status: number;
  duration_ms: number;
  user_id: string | null;
  request_id: string;
  /** Whether the request counts as its user's activity (not a column: it moves last_active_at). */
  active: boolean;
}

const METRIC_COLUMNS = [
  "function_name",
  "method",
  "status",
  "duration_ms",
  "user_id",
  "request_id",
  "profile_cache_hit",
  "ai_cache_hit",
  "redis_fallback",
] as const satisfies readonly (keyof MetricRow)[];
const METRIC_COLUMN_LIST = METRIC_COLUMNS.join(", ");

const COUNT_COLUMNS = [
  "minute",
  "function_name",
  "status",
  "requests",
  "total_duration_ms",
  "max_duration_ms",
] as const satisfies readonly (keyof RequestCount)[];
const COUNT_COLUMN_LIST = COUNT_COLUMNS.join(", ");

/**
 * `profiles.last_active_at` moves at most once per user per this long: the flush names a user
 * to `touch_last_active` only when this isolate has not done so within it (the function checks
 * the same bound against the row, for the other isolates).
 */
const ACTIVE_STAMP_INTERVAL_MS = 5 * 60_000;
const MAX_STAMPED_USERS = 10_000;

/**
 * Rows per insert. A batch goes as one JSON parameter, not a parameter per value: binding 1,800
 * values (and reading back their 1,800 types) was about a tenth of a cached GET's CPU profile.
 */
const BATCH_SIZE = 200;
const FLUSH_DELAY_MS = 50;
const RETRY_DELAY_MS = 1_000;
/** While the database refuses rows (and counts) they are kept for the next flush, up to this many. */
const MAX_BUFFERED = 5_000;

declare const EdgeRuntime: { waitUntil(promise: Promise<unknown>): void } | undefined;

export function keepAlive(promise: Promise<unknown>) {
  if (typeof EdgeRuntime !== "undefined") EdgeRuntime.waitUntil(promise);
  else {
    pending.add(promise);
    promise.finally(() => pending.delete(promise));
  }
}

/** Requests without a user of one minute, function and status. */
interface RequestCount {
  minute: Date;
  function_name: string;
  status: number;
  requests: number;
  total_duration_ms: number;
  max_duration_ms: number;
}

const pending = new Set<Promise<unknown>>();
let buffer: MetricRow[] = [];
/** When this isolate last stamped each user's last_active_at (ms since the epoch). */
const stamped = new Map<string, number>();
let counts = new Map<string, RequestCount>();
let timer: ReturnType<typeof setTimeout> | undefined;
let writing: Promise<void> = Promise.resolve();

const countKey = (count: Pick<RequestCount, "minute" | "function_name" | "status">) =>
  `${count.minute.toISOString()} ${count.function_name} ${count.status}`;

function addCount(count: RequestCount) {
  const key = countKey(count);
  const known = counts.get(key);
  if (known) {
    known.requests += count.requests;
    known.total_duration_ms += count.total_duration_ms;
    known.max_duration_ms = Math.max(known.max_duration_ms, count.max_duration_ms);
  } else if (counts.size < MAX_BUFFERED) {
    counts.set(key, { ...count });
  }
}

/**
 * Adds the summed counts to their rows. In key order, so that isolates adding to the same rows
 * at once lock them in the same order and never deadlock.
 */
async function writeCounts(sql: Sql): Promise<boolean> {
  const all = [...counts.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  counts = new Map();
  for (let start = 0; start < all.length; start += BATCH_SIZE) {
    const batch = all.slice(start, start + BATCH_SIZE).map(([, count]) => count);
    try {
      await sql`
        insert into public.api_request_counts (${sql.unsafe(COUNT_COLUMN_LIST)})
        select ${sql.unsafe(COUNT_COLUMN_LIST)}
          from jsonb_populate_recordset(null::public.api_request_counts, ${
        sql.json(batch as never)
      })
        on conflict (minute, function_name, status) do update
          set requests          = api_request_counts.requests + excluded.requests,
              total_duration_ms = api_request_counts.total_duration_ms + excluded.total_duration_ms,
              max_duration_ms   = greatest(api_request_counts.max_duration_ms,
                                           excluded.max_duration_ms)`;
    } catch (error) {
      for (const [, count] of all.slice(start)) addCount(count);
      log.warn("request counts write failed; kept for the next flush", {
        buffered: counts.size,
        error: errorMessage(error),
      });
      return false;
    }
  }
  return true;
}

/** Writes the rows in batches, then the counts; false when the database refused and both were kept. */
async function write(sql: Sql): Promise<boolean> {
  return await writeRows(sql) && await writeCounts(sql);
}

async function writeRows(sql: Sql): Promise<boolean> {
  while (buffer.length > 0) {
    const batch = buffer.splice(0, BATCH_SIZE);
    try {
      await sql`
        insert into public.api_metrics (${sql.unsafe(METRIC_COLUMN_LIST)})
        select ${sql.unsafe(METRIC_COLUMN_LIST)}
          from jsonb_populate_recordset(null::public.api_metrics, ${sql.json(batch as never)})`;
      await stampActive(sql, batch);
    } catch (error) {
      buffer = batch.concat(buffer).slice(-MAX_BUFFERED);
      log.warn("metrics write failed; rows kept for the next flush", {
        buffered: buffer.length,
        error: errorMessage(error),
      });
      return false;
    }
  }
  return true;
}

/**
 * Moves `last_active_at` of the batch's users that this isolate has not stamped lately, in one
 * statement with the flush, so that every signed-in request (reads too) counts as activity
 * without a write of its own. A failure is only logged: the next flush tries again.
 */
async function stampActive(sql: Sql, batch: MetricRow[]) {
  const now = Date.now();
  const users = batch.filter((row) => row.active).map((row) => row.user_id!);
  const due = [...new Set(users)].filter((id) =>
    now - (stamped.get(id) ?? 0) >= ACTIVE_STAMP_INTERVAL_MS
  );
  if (due.length === 0) return;
  if (stamped.size + due.length > MAX_STAMPED_USERS) stamped.clear();
  try {
    await sql`select public.touch_last_active(${due}::uuid[])`;
    for (const id of due) stamped.set(id, now);
  } catch (error) {
    log.warn("last_active_at not stamped", { users: due.length, error: errorMessage(error) });
  }
}

export interface Metrics {
  record(row: MetricRow): void;
  /** Writes whatever is buffered; resolves when it is in the database (or kept after a failure). */
  flush(): Promise<void>;
}

export function createMetrics(sql: () => Sql): Metrics {
  const flush = (): Promise<void> => {
    clearTimeout(timer);
    timer = undefined;
    writing = writing
      .then(() => write(sql()))
      .then((written) => {
        if (!written) timer ??= setTimeout(flush, RETRY_DELAY_MS);
      })
      .catch((error) => {
        log.error("metrics flush failed", {
          error: String(error),
          dropped: buffer.length + counts.size,
        });
        buffer = [];
        counts = new Map();
      });
    keepAlive(writing);
    return writing;
  };
  addEventListener("beforeunload", () => void flush());
  return {
    record(row) {
      if (row.user_id) buffer.push(row);
      else {
        addCount({
          minute: new Date(Math.floor(Date.now() / 60_000) * 60_000),
          function_name: row.function_name,
          status: row.status,
          requests: 1,
          total_duration_ms: row.duration_ms,
          max_duration_ms: row.duration_ms,
        });
      }
      if (buffer.length >= BATCH_SIZE) void flush();
      else timer ??= setTimeout(flush, FLUSH_DELAY_MS);
    },
    flush,
  };
}
