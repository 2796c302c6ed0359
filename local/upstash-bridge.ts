/**
 * A local stand-in for Upstash's Redis REST API, in front of a real redis-server, so that
 * `@upstash/redis` and `@upstash/ratelimit` run unmodified in the local stack.
 *
 * Protocol, as the @upstash/redis 1.39 client expects it:
 * - `POST /` takes one command as a JSON array; `POST /pipeline` and `POST /multi-exec` take an
 *   array of them. Any path other than those is a command spelled as path segments
 *   (`/set/foo/bar`), with a POST body appended as the last argument and query parameters
 *   after it.
 * - Success is `200 {"result": ...}`; a failing single command or an aborted transaction is
 *   `400 {"error": "..."}`, which the client turns into an UpstashError. Pipelines and
 *   transactions answer `200` with one `{"result"}` or `{"error"}` per command.
 * - With `Upstash-Encoding: base64` every string in a result is base64 (bulk and simple
 *   strings, at any depth), except a top-level simple-string `OK`, which the client passes
 *   through as is. Integers and nulls stay JSON numbers and nulls; errors are never encoded.
 *
 * `GET /__local/stats` counts the command requests (round trips) and commands answered.
 * `POST /__local/delay {"ms": n}` makes every later command request wait n ms first, so tests
 * can simulate a slow Redis; `{"ms": 0}` turns it off.
 */

import { LOCAL_PORTS, LOCAL_UPSTASH_TOKEN } from "./keys.ts";
import {
  RedisConnectionError,
  RedisReplyError,
  RespClient,
  type RespReply,
  SimpleString,
} from "./resp.ts";

export interface UpstashBridgeOptions {
  hostname?: string;
  port: number;
  token: string;
  redisHostname?: string;
  redisPort: number;
}

export interface UpstashBridge {
  url: string;
  close(): Promise<void>;
}

type Command = string[];
type BridgeRequest =
  | { kind: "command"; command: Command }
  | { kind: "pipeline"; commands: Command[] }
  | { kind: "multi-exec"; commands: Command[] };

class BadRequest extends Error {}

// These change or block the state of a pooled connection that other requests share (or, like
// WATCH and DISCARD, are not offered by Upstash either); the transaction endpoint covers MULTI.
const UNSUPPORTED = new Set([
  "multi",
  "exec",
  "discard",
  "watch",
  "unwatch",
  "select",
  "hello",
  "auth",
  "quit",
  "reset",
  "client",
  "monitor",
  "subscribe",
  "psubscribe",
  "ssubscribe",
  "unsubscribe",
  "punsubscribe",
  "sunsubscribe",
  "blpop",
  "brpop",
  "brpoplpush",
  "blmove",
  "blmpop",
  "bzpopmin",
  "bzpopmax",
  "bzmpop",
  "wait",
  "waitaof",
  "shutdown",
]);

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export async function startUpstashBridge(opts: UpstashBridgeOptions): Promise<UpstashBridge> {
  const hostname = opts.hostname ?? "127.0.0.1";
  const redis = new RespClient({ hostname: opts.redisHostname, port: opts.redisPort });
  const scripts = new ScriptShim();
  let delayMs = 0;
  /** Command requests answered (HTTP round trips) and Redis commands run, for the benchmarks. */
  const stats = { requests: 0, commands: 0 };

  async function handle(req: Request): Promise<Response> {
    const url = new URL(req.url);
    if (!authorized(req, url, opts.token)) {
      return reply(401, { error: "WRONGPASS invalid or missing auth token" });
    }
    if (!["GET", "HEAD", "POST", "PUT"].includes(req.method)) {
      return reply(405, { error: `ERR method ${req.method} is not allowed` });
    }
    if (url.pathname === "/__local/delay") return setDelay(req);
    if (url.pathname === "/__local/stats") return reply(200, stats);

    let parsed: BridgeRequest;
    try {
      parsed = await parseRequest(req, url);
    } catch (error) {
      if (error instanceof BadRequest) return reply(400, { error: error.message });
      throw error;
    }
    stats.requests += 1;
    stats.commands += parsed.kind === "command" ? 1 : parsed.commands.length;
    if (delayMs > 0) await new Promise((resolve) => setTimeout(resolve, delayMs));

    const base64 = req.headers.get("upstash-encoding")?.toLowerCase() === "base64";
    try {
      return await execute(parsed, base64);
    } catch (error) {
      if (error instanceof RedisConnectionError) {
        return reply(503, { error: `ERR local Upstash bridge: ${error.message}` });
      }
      throw error;
    }
  }

  async function setDelay(req: Request): Promise<Response> {
    const body = await req.json().catch(() => undefined);
    const ms = body?.ms;
    if (req.method !== "POST" || typeof ms !== "number" || !(ms >= 0 && ms <= 600_000)) {
      return reply(400, { error: 'ERR expected POST with a JSON body like {"ms": 250}' });
    }
    delayMs = ms;
    return reply(200, { result: "OK" });
  }

  async function execute(parsed: BridgeRequest, base64: boolean): Promise<Response> {
    if (parsed.kind === "command") {
      const [result] = await run([parsed.command]);
      if (result instanceof RedisReplyError) return reply(400, { error: result.message });
      return reply(200, { result: toJson(result, base64, true) });
    }
    const results = await run(parsed.commands, parsed.kind === "multi-exec");
    // A command refused while queueing makes EXEC answer EXECABORT: the whole transaction is
    // discarded, which Upstash reports as one error rather than per-command results.
    if (results instanceof RedisReplyError) return reply(400, { error: results.message });
    return reply(200, results.map((result) => item(result, base64)));
  }

  async function run(commands: Command[]): Promise<RespReply[]>;
  async function run(commands: Command[], atomic: boolean): Promise<RespReply[] | RedisReplyError>;
  async function run(commands: Command[], atomic = false) {
    // In order, so an EVALSHA can use a script loaded earlier in the same request.
    const prepared: Prepared[] = [];
    for (const command of commands) prepared.push(await scripts.prepare(command));
    const fix = (replies: RespReply[]) => replies.map((r, i) => prepared[i].mapReply?.(r) ?? r);
    const batch = prepared.map((p) => p.command);
    if (!atomic) return fix(await redis.batch(batch));
    const replies = await redis.batch([["MULTI"], ...batch, ["EXEC"]]);
    const exec = replies[replies.length - 1];
    if (exec instanceof RedisReplyError) return exec;
    if (!Array.isArray(exec)) return new RedisReplyError("ERR transaction was aborted");
    return fix(exec);
  }

  const listening = Promise.withResolvers<void>();
  const onListen = () => listening.resolve();
  const server = Deno.serve({ hostname, port: opts.port, onListen }, async (req) => {
    try {
      return await handle(req);
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      return reply(500, { error: `ERR local Upstash bridge: ${message}` });
    }
  });

  await listening.promise;
  return {
    url: `http://${hostname.includes(":") ? `[${hostname}]` : hostname}:${server.addr.port}`,
    async close() {
      await server.shutdown();
      await redis.close();
    },
  };
}

function authorized(req: Request, url: URL, token: string): boolean {
  const header = req.headers.get("authorization") ?? "";
  const bearer = /^Bearer\s+(.+)$/i.exec(header)?.[1]?.trim();
  return (bearer ?? url.searchParams.get("_token")) === token;
}

async function parseRequest(req: Request, url: URL): Promise<BridgeRequest> {
  const path = url.pathname.replace(/\/+$/, "");
  if (req.method === "POST" && (path === "" || path === "/pipeline" || path === "/multi-exec")) {
    let body: unknown;
    try {
      body = JSON.parse(await req.text());
    } catch {
      throw new BadRequest("ERR failed to parse command: request body is not valid JSON");
    }
    if (path === "") return { kind: "command", command: toCommand(body) };
    if (!Array.isArray(body) || body.length === 0) {
      throw new BadRequest("ERR expected a non-empty JSON array of commands");
    }
    return {
      kind: path === "/pipeline" ? "pipeline" : "multi-exec",
      commands: body.map(toCommand),
    };
  }

  // Path-style commands, as documented by Upstash for curl: /set/foo/bar, /get/foo.
  let args: string[];
  try {
    args = path.split("/").slice(1).map(decodeURIComponent);
  } catch {
    throw new BadRequest("ERR malformed percent-encoding in the URL path");
  }
  if (args.length === 0 || args[0] === "") throw new BadRequest("ERR no command given");
  if (req.method === "POST" || req.method === "PUT") {
    const body = await req.text();
    if (body !== "") args.push(body);
  }
  for (const [key, value] of url.searchParams) {
    if (key === "_token") continue;
    args.push(key);
    if (value !== "") args.push(value);
  }
  return { kind: "command", command: toCommand(args) };
}

function toCommand(value: unknown): Command {
  if (!Array.isArray(value) || value.length === 0 || typeof value[0] !== "string") {
    throw new BadRequest('ERR failed to parse command: expected a JSON array like ["GET", "key"]');
  }
  if (UNSUPPORTED.has(value[0].toLowerCase())) {
    throw new BadRequest(`ERR Command is not available: '${value[0]}'`);
  }
  // The client already stringifies objects; anything else is sent the way it would print.
  return value.map((arg) =>
    typeof arg === "string" ? arg : typeof arg === "object" ? JSON.stringify(arg) : String(arg)
  );
}

function item(result: RespReply, base64: boolean) {
  return result instanceof RedisReplyError
    ? { error: result.message }
    : { result: toJson(result, base64, true) };
}

function toJson(value: RespReply, base64: boolean, topLevel: boolean): unknown {
  if (value === null || typeof value === "number") return value;
  if (Array.isArray(value)) return value.map((v) => toJson(v, base64, false));
  // Errors nested in an array (a Lua table holding one) have no slot of their own in the JSON.
  const bytes = value instanceof RedisReplyError ? encoder.encode(value.message) : value;
  if (!base64) return decoder.decode(bytes);
  // The client hands a top-level "OK" back untouched but base64-decodes every string inside an
  // array, so only the top-level status reply may stay plain.
  if (topLevel && bytes instanceof SimpleString && isOk(bytes)) return "OK";
  return bytes.toBase64();
}

function isOk(bytes: Uint8Array): boolean {
  return bytes.length === 2 && bytes[0] === 0x4f && bytes[1] === 0x4b;
}

function reply(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json" },
  });
}

const KNOWN_SCRIPT_FLAGS = new Set([
  "no-writes",
  "allow-oom",
  "allow-stale",
  "no-cluster",
  "allow-cross-slot-keys",
]);

/**
 * @upstash/ratelimit's scripts start with `#!lua flags=allow-key-locking`, a flag only Upstash
 * knows; Redis 7 refuses the whole script over it. So the flag is dropped before a script
 * reaches Redis, and the SHA1 the library computed for the original text is translated to the
 * SHA1 of what Redis actually cached, so its EVALSHA-first strategy keeps hitting the cache.
 */
class ScriptShim {
  readonly #rewritten = new Map<string, Rewritten | null>();
  readonly #redisShaOf = new Map<string, string>();

  async prepare(command: Command): Promise<Prepared> {
    const [name, first, ...rest] = command;
    const lower = name.toLowerCase();
    if ((lower === "eval" || lower === "eval_ro") && first !== undefined) {
      const rewritten = await this.#rewrite(first);
      return { command: [name, rewritten?.script ?? first, ...rest] };
    }
    if ((lower === "evalsha" || lower === "evalsha_ro") && first !== undefined) {
      return { command: [name, this.#translate(first), ...rest] };
    }
    if (lower === "script" && first?.toLowerCase() === "load" && rest.length > 0) {
      const rewritten = await this.#rewrite(rest[0]);
      if (!rewritten) return { command };
      return {
        command: [name, first, rewritten.script, ...rest.slice(1)],
        // Report the SHA1 of the text the caller sent: that is the one it will EVALSHA.
        mapReply: (r) => r instanceof Uint8Array ? encoder.encode(rewritten.sha) : r,
      };
    }
    if (lower === "script" && first?.toLowerCase() === "exists") {
      return { command: [name, first, ...rest.map((sha) => this.#translate(sha))] };
    }
    return { command };
  }

  #translate(sha: string): string {
    return this.#redisShaOf.get(sha.toLowerCase()) ?? sha;
  }

  /** The Redis-acceptable form of a script, or null when Redis takes it as it is. */
  async #rewrite(original: string): Promise<Rewritten | null> {
    if (!original.startsWith("#!lua")) return null;
    const cached = this.#rewritten.get(original);
    if (cached !== undefined) return cached;
    const shebang = /^#!lua\b([^\n]*)/.exec(original);
    const flags = /\bflags=(\S*)/.exec(shebang?.[1] ?? "")?.[1].split(",").filter(Boolean) ?? [];
    let rewritten: Rewritten | null = null;
    if (shebang && !flags.every((flag) => KNOWN_SCRIPT_FLAGS.has(flag))) {
      const kept = flags.filter((flag) => KNOWN_SCRIPT_FLAGS.has(flag));
      const options = shebang[1].replace(
        /\s*\bflags=\S*/,
        kept.length ? ` flags=${kept.join(",")}` : "",
      );
      const script = `#!lua${options}${original.slice(shebang[0].length)}`;
      rewritten = { script, sha: await sha1(original) };
      this.#redisShaOf.set(rewritten.sha, await sha1(script));
    }
    this.#rewritten.set(original, rewritten);
    return rewritten;
  }
}

interface Prepared {
  command: Command;
  mapReply?: (reply: RespReply) => RespReply;
}

interface Rewritten {
  script: string;
  /** SHA1 of the original text, which is what clients compute and EVALSHA. */
  sha: string;
}

async function sha1(text: string): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-1", encoder.encode(text)));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

function parseFlags(args: string[]): Map<string, string> {
  const flags = new Map<string, string>();
  for (let i = 0; i < args.length; i++) {
    const match = /^--([^=]+)(?:=(.*))?$/.exec(args[i]);
    if (!match) throw new Error(`unexpected argument: ${args[i]}`);
    flags.set(match[1], match[2] ?? args[++i] ?? "");
  }
  return flags;
}

if (import.meta.main) {
  const flags = parseFlags(Deno.args);
  const redisHostname = flags.get("redis-hostname") ?? "127.0.0.1";
  const redisPort = Number(flags.get("redis-port") ?? LOCAL_PORTS.redis);
  const bridge = await startUpstashBridge({
    hostname: flags.get("hostname"),
    port: Number(flags.get("port") ?? LOCAL_PORTS.upstashBridge),
    token: flags.get("token") ?? LOCAL_UPSTASH_TOKEN,
    redisHostname,
    redisPort,
  });
  console.log(`upstash-bridge: ${bridge.url} -> redis ${redisHostname}:${redisPort}`);
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, () => bridge.close().finally(() => Deno.exit(0)));
  }
}
