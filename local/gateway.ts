import { parse as parseToml } from "smol-toml";
import {
  type AuthVerifier,
  bearerToken,
  createAuthVerifier,
} from "../supabase/functions/_shared/auth.ts";
import { ApiError } from "../supabase/functions/_shared/errors.ts";
import { requestIdOf } from "../supabase/functions/_shared/common-headers.ts";
import { errorResponse, json } from "../supabase/functions/_shared/http.ts";
import { LISTENING_MARKER } from "./function-worker.ts";
import type { StorageServer } from "./storage-server.ts";

/**
 * The local functions gateway: what `supabase functions serve` and the hosted gateway do for
 * `/functions/v1/<name>`. Each function runs in its own Deno process (started on first request,
 * restarted when its files change), the `verify_jwt` setting of `config.toml` is honoured, and
 * the signing key's public half is published where supabase-js and the functions expect it.
 */

export interface GatewayOptions {
  hostname?: string;
  port: number;
  /** Absolute path of the folder holding one sub-folder per function. */
  functionsDir: string;
  /** The `config.toml` holding `[functions.<name>] verify_jwt`. */
  configPath: string;
  /** Environment of every function process, on top of the gateway's own. */
  env: Record<string, string>;
  jwks: { keys: unknown[] };
  jwtSecret: string;
  /** Expected `iss` of user tokens when `verify_jwt` is on. */
  issuer: string;
  /** Served at `/storage/v1`, as the Storage API is beside the functions on hosted Supabase. */
  storage?: StorageServer;
  /** Restart a function's process when its files (or `_shared`) change. */
  watch?: boolean;
  log?: (line: string) => void;
}

export interface Gateway {
  url: string;
  close(): Promise<void>;
}

interface Worker {
  process: Deno.ChildProcess;
  port: Promise<number>;
}

const WORKER_SCRIPT = new URL("./function-worker.ts", import.meta.url).pathname;
const FUNCTION_NAME = /^[a-z0-9][a-z0-9_-]*$/;
const HOP_BY_HOP = ["connection", "keep-alive", "transfer-encoding", "upgrade", "host"];

function readVerifyJwt(configPath: string): Map<string, boolean> {
  const toml = parseToml(Deno.readTextFileSync(configPath)) as {
    functions?: Record<string, { verify_jwt?: boolean }>;
  };
  return new Map(
    Object.entries(toml.functions ?? {}).map(([name, fn]) => [name, fn.verify_jwt ?? true]),
  );
}

export function startGateway(options: GatewayOptions): Promise<Gateway> {
  const log = options.log ?? ((line: string) => console.log(line));
  const workers = new Map<string, Worker>();
  let verifyJwt = readVerifyJwt(options.configPath);
  let verifier: AuthVerifier | undefined;

  function functionExists(name: string): boolean {
    try {
      return Deno.statSync(`${options.functionsDir}/${name}/index.ts`).isFile;
    } catch {
      return false;
    }
  }

  async function pipeLines(
    stream: ReadableStream<Uint8Array>,
    name: string,
    onPort?: (port: number) => void,
  ) {
    const lines = stream.pipeThrough(new TextDecoderStream());
    let buffered = "";
    for await (const chunk of lines) {
      buffered += chunk;
      const parts = buffered.split("\n");
      buffered = parts.pop() ?? "";
      for (const line of parts) {
        if (onPort && line.includes(LISTENING_MARKER)) {
          onPort(JSON.parse(line)[LISTENING_MARKER]);
        } else if (line.trim()) {
          log(`[${name}] ${line}`);
        }
      }
    }
  }

  function startWorker(name: string): Worker {
    const process = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-net",
        "--allow-env",
        "--allow-read",
        "--allow-sys",
        "--no-check",
        "--quiet",
        WORKER_SCRIPT,
        `${options.functionsDir}/${name}/index.ts`,
      ],
      env: options.env,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const port = new Promise<number>((resolve, reject) => {
      pipeLines(process.stdout, name, resolve).catch(() => {});
      pipeLines(process.stderr, name).catch(() => {});
      process.status.then((status) => {
        reject(new Error(`function ${name} exited with code ${status.code} before listening`));
      });
    });
    const worker = { process, port };
    process.status.then(() => {
      if (workers.get(name) === worker) workers.delete(name);
    });
    return worker;
  }

  function worker(name: string): Worker {
    let found = workers.get(name);
    if (!found) {
      found = startWorker(name);
      workers.set(name, found);
    }
    return found;
  }

  function stopWorker(name: string) {
    const found = workers.get(name);
    if (!found) return;
    workers.delete(name);
    try {
      found.process.kill("SIGTERM");
    } catch {
      // Already gone.
    }
  }

  async function proxy(
    req: Request,
    name: string,
    rest: string,
    clientIp: string,
    requestId: string,
  ) {
    const port = await worker(name).port;
    const url = new URL(req.url);
    const headers = new Headers(req.headers);
    for (const header of HOP_BY_HOP) headers.delete(header);
    headers.set("x-forwarded-for", clientIp);
    headers.set("x-request-id", requestId);
    const upstream = await fetch(`http://127.0.0.1:${port}/${name}${rest}${url.search}`, {
      method: req.method,
      headers,
      body: req.body,
      redirect: "manual",
    });
    return new Response(upstream.body, { status: upstream.status, headers: upstream.headers });
  }

  async function handle(req: Request, info: Deno.ServeHandlerInfo<Deno.NetAddr>) {
    const url = new URL(req.url);
    if (url.pathname === "/auth/v1/.well-known/jwks.json") {
      return json(options.jwks, { headers: { "cache-control": "public, max-age=600" } });
    }
    if (options.storage && url.pathname.startsWith("/storage/v1/")) {
      return options.storage.handle(req, verifier!);
    }
    const match = url.pathname.match(/^\/functions\/v1\/([^/]+)(\/.*)?$/);
    const requestId = requestIdOf(req);
    const fail = (error: ApiError) => {
      const response = errorResponse(error, requestId);
      response.headers.set("x-request-id", requestId);
      return response;
    };
    if (!match || !FUNCTION_NAME.test(match[1]) || !functionExists(match[1])) {
      return fail(new ApiError("not_found", "no such function"));
    }
    const name = match[1];
    if (req.method !== "OPTIONS" && (verifyJwt.get(name) ?? true)) {
      const token = bearerToken(req);
      try {
        if (!token) throw new ApiError("unauthorized", "missing bearer token");
        await verifier!.verify(token);
      } catch (error) {
        return fail(
          error instanceof ApiError ? error : new ApiError("unauthorized", "invalid JWT"),
        );
      }
    }
    try {
      return await proxy(req, name, match[2] ?? "", info.remoteAddr.hostname, requestId);
    } catch (error) {
      log(`[gateway] ${name}: ${error instanceof Error ? error.message : String(error)}`);
      stopWorker(name);
      return fail(new ApiError("unavailable", `function ${name} is not available`));
    }
  }

  let watcher: Deno.FsWatcher | undefined;
  async function watchForChanges() {
    watcher = Deno.watchFs([options.functionsDir, options.configPath], { recursive: true });
    for await (const event of watcher) {
      for (const path of event.paths) {
        if (path === options.configPath) {
          verifyJwt = readVerifyJwt(options.configPath);
          continue;
        }
        const name = path.slice(options.functionsDir.length + 1).split("/")[0];
        // A shared module can be imported by any function, so all of them start afresh.
        const affected = name.startsWith("_") ? [...workers.keys()] : [name];
        for (const each of affected) {
          if (workers.has(each)) log(`[gateway] ${each} changed, reloading`);
          stopWorker(each);
        }
      }
    }
  }

  return new Promise((resolve) => {
    const server = Deno.serve({
      hostname: options.hostname ?? "127.0.0.1",
      port: options.port,
      onListen: ({ hostname, port }) => {
        verifier = createAuthVerifier({
          jwtSecret: options.jwtSecret,
          issuer: options.issuer,
          jwksUrl: `http://${hostname}:${port}/auth/v1/.well-known/jwks.json`,
        });
        if (options.watch) watchForChanges().catch(() => {});
        resolve({
          url: `http://${hostname}:${port}`,
          async close() {
            watcher?.close();
            const running = [...workers.values()];
            for (const name of [...workers.keys()]) stopWorker(name);
            await Promise.all(running.map((w) => w.process.status));
            await server.shutdown();
          },
        });
      },
    }, handle);
  });
}

/**
 * A gateway on its own, for tests that need several gateway processes sharing one Redis and one
 * database: `deno run -A local/gateway.ts --port 54331 [--functions-dir D] [--config C]`. The
 * functions read the environment this process was started with.
 */
if (import.meta.main) {
  const { ensureSigningKey, publicJwks } = await import("./signing-key.ts");
  const flag = (name: string) => {
    const index = Deno.args.indexOf(`--${name}`);
    return index >= 0 ? Deno.args[index + 1] : undefined;
  };
  const root = new URL("..", import.meta.url).pathname;
  const { LOCAL_SUPABASE_URL } = await import("./keys.ts");
  const supabaseUrl = (Deno.env.get("SUPABASE_URL") ?? LOCAL_SUPABASE_URL).replace(/\/$/, "");
  const gateway = await startGateway({
    port: Number(flag("port") ?? 0),
    functionsDir: flag("functions-dir") ?? `${root}supabase/functions`,
    configPath: flag("config") ?? `${root}supabase/config.toml`,
    env: {},
    jwks: publicJwks(await ensureSigningKey()),
    jwtSecret: Deno.env.get("JWT_SECRET") ?? "",
    issuer: `${supabaseUrl}/auth/v1`,
  });
  console.log(JSON.stringify({ gateway: gateway.url }));
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, async () => {
      await gateway.close();
      Deno.exit(0);
    });
  }
}
