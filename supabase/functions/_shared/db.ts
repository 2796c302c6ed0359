import postgres from "postgres";
import type { z } from "zod";
import type { Caller } from "./auth.ts";
import { config } from "./config.ts";

export type Sql = postgres.Sql;
export type Tx = postgres.TransactionSql;

/**
 * Builds a client that is safe behind Supabase's transaction pooler: no prepared statements
 * (a pooled server connection may not hold them on the next transaction) and a small pool,
 * because every isolate opens its own.
 */
export function createSql(url: string, options: {
  max: number;
  connectTimeoutMs: number;
  statementTimeoutMs: number;
  applicationName?: string;
}): Sql {
  return postgres(url, {
    prepare: false,
    max: options.max,
    connect_timeout: Math.ceil(options.connectTimeoutMs / 1000),
    idle_timeout: 20,
    max_lifetime: 60 * 30,
    connection: {
      statement_timeout: options.statementTimeoutMs,
      application_name: options.applicationName ?? "edge-function",
    },
    onnotice: () => {},
  });
}

/**
 * `json_build_object('field', alias.field, ...)` over the fields of a contract's object schema,
 * as SQL text: a reader of a row lists the columns of the shape it answers with from that shape,
 * so a column added to the table and to the contract reaches it with no other change. `computed`
 * gives the SQL of the fields that are not a column of `alias` (a nested object, say). The text
 * is made of the schema's own names only; embed it with `db.unsafe`.
 */
export function jsonObjectSql(
  schema: z.ZodObject,
  alias: string,
  computed: Record<string, string> = {},
): string {
  const fields = Object.keys(schema.shape).map((field) => {
    if (!/^[a-z_][a-z0-9_]*$/.test(field)) throw new Error(`not a column name: ${field}`);
    return `'${field}', ${computed[field] ?? `${alias}.${field}`}`;
  });
  return `json_build_object(${fields.join(", ")})`;
}

let client: Sql | undefined;

/** The isolate's one client, as the service role: for privileged work only. */
export function sql(): Sql {
  if (!client) {
    const c = config();
    client = createSql(c.SUPABASE_DB_URL, {
      max: c.DB_POOL_MAX,
      connectTimeoutMs: c.DB_CONNECT_TIMEOUT_MS,
      statementTimeoutMs: c.DB_STATEMENT_TIMEOUT_MS,
    });
  }
  return client;
}

/**
 * Runs `work` in a transaction as the calling user, the way PostgREST does: role `authenticated`
 * and the token's claims in `request.jwt.claims`, so row level security applies exactly as it
 * would to the app's direct queries.
 */
export function asUser<T>(
  db: Sql,
  caller: Extract<Caller, { kind: "user" }>,
  work: (tx: Tx) => Promise<T>,
): Promise<T> {
  return db.begin(async (tx) => {
    await tx`
      select set_config('role', 'authenticated', true),
             set_config('request.jwt.claims', ${JSON.stringify(caller.claims)}, true)`;
    return await work(tx);
  }) as Promise<T>;
}

/**
 * postgres.js's codes for a connection that failed, broke or was refused, and Postgres's for a
 * server that is shutting down, starting up or full (classes 08 and 57P, 53300), or that did not
 * answer within the statement timeout (57014, a locked or overloaded database): the database
 * could not be reached in time, which is an outage to retry after, not a fault of the request.
 */
const UNREACHABLE = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENOTFOUND",
  "CONNECT_TIMEOUT",
  "CONNECTION_CLOSED",
  "CONNECTION_DESTROYED",
  "CONNECTION_ENDED",
  "53300",
  "57014",
]);

export function isDatabaseUnreachable(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "string" &&
    (UNREACHABLE.has(code) || code.startsWith("08") || code.startsWith("57P"));
}
