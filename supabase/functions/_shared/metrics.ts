import type { Sql } from "./db.ts";
import { errorMessage, log } from "./log.ts";

/**
 * One `api_metrics` row per request, written after the response is sent: rows are buffered and
 * inserted in batches, the write kept alive with `EdgeRuntime.waitUntil` where the runtime has it
 * (a tracked promise otherwise), and flushed when the isolate is about to stop.
 */

export interface MetricRow {
  function_name: string;
  method: string;
  status: number;
  duration_ms: number;
  user_id: string | null;
  request_id: string;
}

const BATCH_SIZE = 200;
const FLUSH_DELAY_MS = 50;
const RETRY_DELAY_MS = 1_000;
/** While the database refuses rows they are kept for the next flush, up to this many. */
const MAX_BUFFERED = 5_000;

declare const EdgeRuntime: { waitUntil(promise: Promise<unknown>): void } | undefined;

export function keepAlive(promise: Promise<unknown>) {
  if (typeof EdgeRuntime !== "undefined") EdgeRuntime.waitUntil(promise);
  else {
    pending.add(promise);
    promise.finally(() => pending.delete(promise));
  }
}

const pending = new Set<Promise<unknown>>();
let buffer: MetricRow[] = [];
let timer: ReturnType<typeof setTimeout> | undefined;
let writing: Promise<void> = Promise.resolve();

/** Inserts the buffer in batches; false when the database refused and rows were kept. */
async function write(sql: Sql): Promise<boolean> {
  while (buffer.length > 0) {
    const batch = buffer.splice(0, BATCH_SIZE);
    try {
      await sql`insert into public.api_metrics ${
        sql(batch, "function_name", "method", "status", "duration_ms", "user_id", "request_id")
      }`;
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
        log.error("metrics flush failed", { error: String(error), dropped: buffer.length });
        buffer = [];
      });
    keepAlive(writing);
    return writing;
  };
  addEventListener("beforeunload", () => void flush());
  return {
    record(row) {
      buffer.push(row);
      if (buffer.length >= BATCH_SIZE) void flush();
      else timer ??= setTimeout(flush, FLUSH_DELAY_MS);
    },
    flush,
  };
}
