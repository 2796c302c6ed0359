import { commandExists, run } from "../local/process.ts";

/**
 * HTTP load from a second process: wrk, from Debian's packages, so that the load generator costs
 * the machine as little as possible and every endpoint is measured the same way.
 */

export interface LoadResult {
  requestsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  requests: number;
  non2xx: number;
}

export async function ensureWrk() {
  if (await commandExists("wrk")) return;
  const sudo = Deno.uid() === 0 ? [] : ["sudo", "--non-interactive"];
  const [command, ...args] = [...sudo, "apt-get", "install", "-y", "-qq", "wrk"];
  await run(command, args, { env: { DEBIAN_FRONTEND: "noninteractive" } });
}

function milliseconds(value: string, unit: string): number {
  const factor: Record<string, number> = { us: 0.001, ms: 1, s: 1000, m: 60_000 };
  return Number(value) * (factor[unit] ?? NaN);
}

export async function load(
  url: string,
  options: {
    connections?: number;
    seconds?: number;
    headers?: Record<string, string>;
    /** A wrk Lua script, for requests that vary (method, body, one token per user). */
    script?: string;
  } = {},
): Promise<LoadResult> {
  const headers = Object.entries(options.headers ?? {}).flatMap(([k, v]) => ["-H", `${k}: ${v}`]);
  const output = await run("wrk", [
    "--latency",
    "-t",
    "2",
    "-c",
    String(options.connections ?? 64),
    "-d",
    `${options.seconds ?? 10}s`,
    ...headers,
    ...(options.script ? ["-s", options.script] : []),
    url,
  ]);
  const latency = (percent: string) => {
    const match = output.match(new RegExp(`^\\s*${percent}%\\s+([\\d.]+)(us|ms|s|m)\\s*$`, "m"));
    return match ? milliseconds(match[1], match[2]) : NaN;
  };
  return {
    requestsPerSecond: Number(output.match(/Requests\/sec:\s+([\d.]+)/)?.[1] ?? NaN),
    p50Ms: latency("50"),
    p99Ms: latency("99"),
    requests: Number(output.match(/(\d+) requests in/)?.[1] ?? NaN),
    non2xx: Number(output.match(/Non-2xx or 3xx responses: (\d+)/)?.[1] ?? 0),
  };
}

/** A wrk script sending `method` with `body`, each request as the next of `tokens` in turn. */
export function rotatingTokensScript(
  tokens: string[],
  method: "GET" | "POST",
  body?: string,
): Promise<string> {
  return writeScript(tokens, method, body ? JSON.stringify(body) : "nil");
}

/** What `uniqueBodiesScript` replaces in a body. */
export const UNIQUE = "__UNIQUE__";

/**
 * Like `rotatingTokensScript`, but each `UNIQUE` in `body` becomes a string that no other
 * request carries, in any wrk thread or any other run: for endpoints that answer a repeated body
 * from a cache. Only letters, digits and dashes, so it fits inside a JSON string.
 */
export function uniqueBodiesScript(
  tokens: string[],
  method: "GET" | "POST",
  body: string,
): Promise<string> {
  // Each wrk thread runs the script in a Lua state of its own, numbered here by `setup`.
  const setup = `local threads = 0
setup = function(thread)
  threads = threads + 1
  thread:set("thread_number", threads)
end
`;
  const unique = `"${crypto.randomUUID()}-" .. thread_number .. "-" .. i`;
  return writeScript(
    tokens,
    method,
    `(string.gsub(${JSON.stringify(body)}, "${UNIQUE}", ${unique}))`,
    setup,
  );
}

async function writeScript(
  tokens: string[],
  method: "GET" | "POST",
  bodyLua: string,
  setup = "",
): Promise<string> {
  const path = await Deno.makeTempFile({ suffix: ".lua" });
  await Deno.writeTextFile(
    path,
    `local tokens = { ${tokens.map((t) => JSON.stringify(t)).join(", ")} }
local i = 0
${setup}request = function()
  i = i + 1
  local headers = { ["Authorization"] = "Bearer " .. tokens[(i % #tokens) + 1],
                    ["Content-Type"] = "application/json" }
  return wrk.format(${JSON.stringify(method)}, nil, headers, ${bodyLua})
end
`,
  );
  return path;
}
