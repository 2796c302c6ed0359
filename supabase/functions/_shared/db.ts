import type postgres from "postgres";
import type { z } from "zod";
import type { Caller } from "./auth.ts";
import { config } from "./config.ts";

export type Sql = postgres.Sql;
export type Tx = postgres.TransactionSql;

type Driver = typeof postgres;
let driver: Promise<Driver> | undefined;

/**
 * postgres.js is imported on the first statement, not when the function boots: a warm cached GET
 * makes none, and the driver (with the node:net, node:tls and node:crypto it loads) is about a
 * fifth of a fresh process's first response on that path.
 */
function loadDriver(): Promise<Driver> {
  driver ??= import("postgres").then((module) => module.default).catch((error) => {
    driver = undefined;
    throw error;
  });
  return driver;
}

/**
 * A query, fragment or parameter made before the driver was loaded: made again on the real client
 * when awaited (a query) or when a statement that embeds it runs (a fragment, a parameter).
 * postgres.js queries are lazy too, so waiting for the driver changes no order of execution.
 */
class Deferred implements PromiseLike<unknown> {
  /** The statement's run: one, however many times it is awaited, as with postgres.js. */
  private run: Promise<unknown> | undefined;

  constructor(
    private readonly client: () => Promise<Sql>,
    readonly make: (real: Sql) => unknown,
  ) {}

  then<T = unknown, E = never>(
    fulfilled?: ((value: unknown) => T | PromiseLike<T>) | null,
    rejected?: ((reason: unknown) => E | PromiseLike<E>) | null,
  ): Promise<T | E> {
    this.run ??= this.client().then((real) => this.make(real));
    return this.run.then(fulfilled, rejected);
  }

  catch<E = never>(rejected: (reason: unknown) => E | PromiseLike<E>): Promise<unknown> {
    return this.then(undefined, rejected);
  }

  finally(done: () => void): Promise<unknown> {
    return this.then().finally(done);
  }
}

const onReal = (real: Sql, values: unknown[]) =>
  values.map((value) => value instanceof Deferred ? value.make(real) : value);

/**
 * A client whose driver loads on its first statement. It offers what this codebase uses of
 * postgres.js: tagged queries and helpers (`sql\`...\``, `sql(rows)`), `unsafe`, `json`, `begin`
 * and `end`; a transaction's `tx` is postgres.js's own.
 */
function lazyClient(connect: (driver: Driver) => Sql): Sql {
  let real: Sql | undefined;
  let connecting: Promise<Sql> | undefined;
  const ready = () =>
    connecting ??= loadDriver().then((load) => real = connect(load)).catch((error) => {
      connecting = undefined;
      throw error;
    });
  const later = (make: (real: Sql) => unknown) => new Deferred(ready, make);
  const query = (first: unknown, ...rest: unknown[]) => {
    const make = (on: Sql) => (on as (...args: unknown[]) => unknown)(first, ...onReal(on, rest));
    return real ? make(real) : later(make);
  };
  return Object.assign(query, {
    unsafe: (text: string, parameters?: unknown[]) => {
      const make = (on: Sql) => on.unsafe(text, parameters as postgres.ParameterOrJSON<never>[]);
      return real ? make(real) : later(make);
    },
    json: (value: unknown) =>
      real ? real.json(value as never) : later((on) => on.json(value as never)),
    begin: (...args: unknown[]) =>
      ready().then((on) => (on.begin as (...args: unknown[]) => unknown)(...args)),
    end: (options?: { timeout?: number }) =>
      connecting ? connecting.then((on) => on.end(options)) : Promise.resolve(),
  }) as unknown as Sql;
}

/**
 * Builds a client that is safe behind Supabase's transaction pooler: no prepared statements
 * (a pooled server connection may not hold them on the next transaction) and a small pool,
 * because every isolate opens its own. No connection is opened, nor the driver loaded, before the
 * first statement.
 */
export function createSql(url: string, options: {
  max: number;
  connectTimeoutMs: number;
  statementTimeoutMs: number;
  applicationName?: string;
}): Sql {
  return lazyClient((postgres) =>
    postgres(url, {
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
    })
  );
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
  const code = errorCode(error);
  return code !== undefined &&
    (UNREACHABLE.has(code) || code.startsWith("08") || code.startsWith("57P"));
}

/**
 * The SQLSTATE of an error Postgres raised (or postgres.js's code of a connection failure), read
 * from the error rather than by `instanceof`, which would need the driver loaded.
 */
export function errorCode(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "string" ? code : undefined;
}
