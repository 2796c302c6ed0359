import postgres from "postgres";
import { startGateway } from "../local/gateway.ts";
import {
  LOCAL_ANON_KEY,
  LOCAL_DB_URL,
  LOCAL_JWT_SECRET,
  LOCAL_SUPABASE_URL,
} from "../local/keys.ts";
import { run } from "../local/process.ts";
import { ensureSigningKey, publicJwks, signUserToken } from "../local/signing-key.ts";
import { LOCAL_FUNCTION_ENV } from "../local/stack.ts";
import { ensureUser } from "../local/users.ts";
import { startOpenAiServer } from "../tests/openai_server.ts";
import {
  load,
  type LoadResult,
  rotatingTokensScript,
  UNIQUE,
  uniqueBodiesScript,
} from "./http-load.ts";
import {
  EXPECTED_PACKAGES,
  functionNames,
  FUNCTIONS_DIR,
  type GraphPart,
  type ModuleGraph,
  moduleGraph,
  packagesOnFirstUse,
} from "./module-graph.ts";
import { benchUsers, CONNECTIONS, resultRow, SECONDS } from "./support.ts";

/**
 * The real functions, one by one:
 *   - cold start of each (a fresh function process, from its start to its first response)
 *     against an empty function, and what each npm package costs a fresh process to import;
 *   - the module graph of each, and its npm packages against EXPECTED_PACKAGES;
 *   - a cached `profile` GET and a metered `analyze` (its model calls answered by the local
 *     OpenAI-compatible test server) under load, through a gateway process over
 *     supabase/functions, with the resident memory of that gateway and of its function
 *     processes while the load runs.
 * It needs the local stack running (`deno task bench` starts it); on its own,
 * `deno run -A bench/functions.ts` prints its section.
 */

const ROOT = new URL("..", import.meta.url).pathname;
const GATEWAY_SCRIPT = `${ROOT}local/gateway.ts`;
const SUPABASE_DIR = `${ROOT}supabase/`;
const FIXTURES_DIR = `${ROOT}bench/fixtures/`;
const WORK_DIR = `${ROOT}bench/.work`;
const EMPTY = "empty";
/**
 * The floor of a cold start with the npm packages the cached-GET path cannot do without, and none
 * of our modules (bench/fixtures/functions/skeleton-libraries).
 */
const FLOOR = "skeleton-libraries";
const FIXTURES = new Set([EMPTY, FLOOR]);
const label = (name: string) =>
  name === EMPTY
    ? "empty function"
    : name === FLOOR
    ? "same npm packages, none of our code"
    : `\`${name}\``;

const COLD_SAMPLES = 5;
const IMPORT_SAMPLES = 5;
const USERS = 200;
const PLAN = "bench_functions";
const EMAIL_LIKE = "bench-functions-%@bench.invalid";
const emailOf = (n: number) => `bench-functions-${n}@bench.invalid`;
/** The model name the bench's `analyze` asks for: its cache entries are found by it and removed. */
const MODEL = "bench-functions-model";
const RSS_SAMPLE_MS = 200;

const TARGET_COLD_RATIO = 1.5;
const TARGET_COLD_GET_RATIO = 2;
/** The function whose cached GET is timed from a fresh process: the path most requests take. */
const COLD_GET = "profile";
const COLD_GET_EMAIL = emailOf(USERS);
const TARGET_RSS_MB = 64;
const SUPABASE_LIMIT_MB = 256;

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const verdict = (ok: boolean) => (ok ? "met" : "**missed**");
const mb = (bytes: number) => (bytes / 1024 ** 2).toFixed(2);
const ms = (x: number) => x.toFixed(0);
const describe = (worst: { name: string; mib: number } | null, none = "no GC seen") =>
  worst ? `highest: \`${worst.name}\`, ${worst.mib.toFixed(1)} MiB` : none;

export function functionEnv(extra: Record<string, string> = {}): Record<string, string> {
  return { ...LOCAL_FUNCTION_ENV, ...Deno.env.toObject(), ...extra };
}

/** Resident memory of a process in MiB, from /proc; null once it is gone. */
async function rssMb(pid: number): Promise<number | null> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`).catch(() => "");
  const kb = status.match(/^VmRSS:\s+(\d+) kB/m)?.[1];
  return kb ? Number(kb) / 1024 : null;
}

/** The function processes a gateway in process `parent` runs, by function name. */
async function functionProcesses(parent: number): Promise<Map<string, number>> {
  const pids = (await run("pgrep", ["-P", String(parent)]).catch(() => "")).split("\n");
  const found = new Map<string, number>();
  for (const pid of pids.filter(Boolean).map(Number)) {
    const args = (await Deno.readTextFile(`/proc/${pid}/cmdline`).catch(() => "")).split("\0");
    const name = args.find((arg) => arg.endsWith("/index.ts"))?.split("/").at(-2);
    if (name) found.set(name, pid);
  }
  return found;
}

// ---- Cold start ------------------------------------------------------------------------------

interface ColdStart {
  ms: number[];
  status: number;
  rssMb: number[];
}

/**
 * One cold start: a gateway of its own (so no function process is running), one CORS preflight,
 * timed from the request (which starts the function's process) to the end of the response. A
 * preflight is answered by the function itself (`_shared/serve.ts`, before its handler's module
 * loads), with no database or Redis round trip, so what is timed is the process, what it loads
 * at boot and its first request, the same for every function. Then a GET with the anon key, which
 * the gateway lets through and the pipeline answers without a user (most refuse it at once), so
 * that the RSS read after it is of the function with its handler loaded.
 */
async function coldStart(dir: string, name: string, init: RequestInit = { method: "OPTIONS" }) {
  const gateway = await startGateway({
    port: 0,
    functionsDir: `${dir}functions`,
    configPath: `${dir}config.toml`,
    env: functionEnv(),
    jwks: publicJwks(await ensureSigningKey()),
    jwtSecret: LOCAL_JWT_SECRET,
    issuer: `${LOCAL_SUPABASE_URL}/auth/v1`,
    log: () => {},
  });
  try {
    const started = performance.now();
    const response = await fetch(`${gateway.url}/functions/v1/${name}`, init);
    await response.arrayBuffer();
    const elapsed = performance.now() - started;
    await (await fetch(`${gateway.url}/functions/v1/${name}`, {
      headers: { authorization: `Bearer ${LOCAL_ANON_KEY}` },
    })).arrayBuffer();
    const pid = (await functionProcesses(Deno.pid)).get(name);
    return { ms: elapsed, status: response.status, rssMb: pid ? await rssMb(pid) : null };
  } finally {
    await gateway.close();
  }
}

async function coldStarts(names: string[]): Promise<Map<string, ColdStart>> {
  const all = [EMPTY, FLOOR, ...names];
  const dirOf = (name: string) => (FIXTURES.has(name) ? FIXTURES_DIR : SUPABASE_DIR);
  // One start each first, unmeasured: it fills Deno's transpile and code caches, which every
  // later start then finds as a redeployed function would.
  for (const name of all) await coldStart(dirOf(name), name);
  const results = new Map<string, ColdStart>(all.map((n) => [n, { ms: [], status: 0, rssMb: [] }]));
  // Round by round, so that whatever else the machine does is spread over every function.
  for (let round = 0; round < COLD_SAMPLES; round++) {
    for (const name of all) {
      const sample = await coldStart(dirOf(name), name);
      const result = results.get(name)!;
      result.ms.push(sample.ms);
      result.status = sample.status;
      if (sample.rssMb !== null) result.rssMb.push(sample.rssMb);
    }
  }
  return results;
}

/**
 * The first response of a fresh process on the path most requests take: an authenticated `GET
 * profile` for a user whose profile is in the Redis cache (token check, with the JWKS fetched
 * once; profile cache and rate limit in one Upstash round trip), against the empty function
 * answering the same GET. Round by round, after one unmeasured start of each that also fills
 * the user's profile cache.
 */
async function coldCachedGets(sql: postgres.Sql): Promise<Map<string, ColdStart>> {
  const key = await ensureSigningKey();
  const { id } = await ensureUser(sql, COLD_GET_EMAIL);
  const token = await signUserToken(key, { id, email: COLD_GET_EMAIL }, {
    issuer: `${LOCAL_SUPABASE_URL}/auth/v1`,
  });
  const init = { headers: { authorization: `Bearer ${token}` } };
  const cases: [string, string][] = [
    [EMPTY, FIXTURES_DIR],
    [FLOOR, FIXTURES_DIR],
    [COLD_GET, SUPABASE_DIR],
  ];
  for (const [name, dir] of cases) await coldStart(dir, name, init);
  const results = new Map<string, ColdStart>(
    cases.map(([n]) => [n, { ms: [], status: 0, rssMb: [] }]),
  );
  for (let round = 0; round < COLD_SAMPLES; round++) {
    for (const [name, dir] of cases) {
      const sample = await coldStart(dir, name, init);
      const result = results.get(name)!;
      result.ms.push(sample.ms);
      result.status = sample.status;
    }
  }
  return results;
}

/**
 * What importing one npm package alone costs a fresh `deno run`: the median over
 * IMPORT_SAMPLES runs, less that of a run that imports nothing.
 */
async function importCosts(packages: string[]): Promise<Map<string, number>> {
  // Inside the project (bench/.work is git-ignored), so that its import map applies.
  await Deno.mkdir(WORK_DIR, { recursive: true });
  const dir = await Deno.makeTempDir({ dir: WORK_DIR });
  const cases = new Map<string, string>([
    ["(nothing)", ""],
    ...packages.map((p) => [p, `import "${p}";\n`] as [string, string]),
    [
      `all ${EXPECTED_PACKAGES.health.withHandler.length} of the pipeline's`,
      EXPECTED_PACKAGES.health.withHandler.map((p) => `import "${p}";\n`).join(""),
    ],
  ]);
  const times = new Map<string, number[]>([...cases.keys()].map((k) => [k, []]));
  try {
    const files = new Map<string, string>();
    for (const [label, code] of cases) {
      const file = `${dir}/${files.size}.ts`;
      await Deno.writeTextFile(file, code);
      files.set(label, file);
    }
    for (let round = 0; round <= IMPORT_SAMPLES; round++) {
      for (const [label, file] of files) {
        const started = performance.now();
        const output = await new Deno.Command(Deno.execPath(), {
          args: ["run", "--no-check", "--quiet", "-A", file],
          cwd: ROOT,
          stdout: "null",
          stderr: "piped",
        }).output();
        if (!output.success) {
          throw new Error(`importing ${label} failed: ${new TextDecoder().decode(output.stderr)}`);
        }
        // The first round fills the caches and is not counted.
        if (round > 0) times.get(label)!.push(performance.now() - started);
      }
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  const nothing = median(times.get("(nothing)")!);
  return new Map(
    [...times].filter(([label]) => label !== "(nothing)").map((
      [label, xs],
    ) => [label, median(xs) - nothing]),
  );
}

// ---- Load and memory -------------------------------------------------------------------------

/** Highest values seen, by process name. */
class Peaks extends Map<string, number> {
  keep(name: string, value: number | null) {
    if (value !== null) this.set(name, Math.max(this.get(name) ?? 0, value));
  }
}

/**
 * V8's own account of each process's heap, from the lines `--trace-gc` prints, e.g.
 * `[1234:0x55..]  4696 ms: Mark-Compact 36.3 (86.4) -> 17.4 (80.4) MB, ...` (in use and, in
 * brackets, committed: before -> after the collection); a function's lines come through the
 * gateway prefixed with `[name] `. What is in use right after a full (mark-compact) collection is
 * what the isolate really holds; the rest is garbage V8 had not needed to collect yet.
 */
class HeapWatch {
  readonly liveAfterFullGc = new Peaks();
  readonly committed = new Peaks();

  read(line: string) {
    const match = line.match(
      /^(?:\[([\w-]+)\] )?\[\d+:0x[0-9a-f]+\]\s+[\d.]+ ms: ([\w ()-]+?) [\d.]+ \(([\d.]+)\) -> ([\d.]+) \(([\d.]+)\) MB/,
    );
    if (!match) return;
    const [, name = "gateway", kind, committedBefore, after, committedAfter] = match;
    this.committed.keep(name, Math.max(Number(committedBefore), Number(committedAfter)));
    if (kind.includes("Mark-Compact")) this.liveAfterFullGc.keep(name, Number(after));
  }
}

export interface GatewayProcess {
  url: string;
  pid: number;
  close(): Promise<void>;
}

/**
 * `local/gateway.ts` in a process of its own, so that its memory is its own; `onLine` gets every
 * line it prints after its URL (its functions' output included).
 */
export async function gatewayProcess(
  env: Record<string, string>,
  onLine: (line: string) => void,
): Promise<GatewayProcess> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", GATEWAY_SCRIPT],
    cwd: ROOT,
    env,
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = "";
  while (!buffered.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) throw new Error("the gateway process exited before it listened");
    buffered += value;
  }
  const [first, ...rest] = buffered.split("\n");
  buffered = rest.join("\n");
  // Read to the end, so that a full pipe never blocks it.
  const drained = (async () => {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      const lines = (buffered + value).split("\n");
      buffered = lines.pop() ?? "";
      lines.forEach(onLine);
    }
  })();
  return {
    url: JSON.parse(first).gateway,
    pid: child.pid,
    async close() {
      child.kill("SIGTERM");
      await child.status;
      await drained.catch(() => {});
    },
  };
}

/**
 * `work`, while the peak RSS of the gateway process and of its function processes (those already
 * running: warm them first) is kept.
 */
async function keepingPeakRss<T>(gatewayPid: number, peaks: Peaks, work: () => Promise<T>) {
  const processes = [["gateway", gatewayPid], ...await functionProcesses(gatewayPid)] as const;
  let sampling = Promise.resolve();
  const timer = setInterval(() => {
    sampling = sampling.then(async () => {
      for (const [name, pid] of processes) peaks.keep(name, await rssMb(pid));
    });
  }, RSS_SAMPLE_MS);
  try {
    return await work();
  } finally {
    clearInterval(timer);
    await sampling;
  }
}

interface LoadRuns {
  profile: LoadResult;
  analyze: LoadResult;
  grant: LoadResult;
  /** Peak RSS in MiB during the runs, by process ("gateway" or the function's name). */
  rss: Peaks;
  heap: HeapWatch;
  modelCallsPerRequest: number;
  analysesFromCache: number;
  analysesStored: number;
}

async function cleanUp(sql: postgres.Sql) {
  await sql`delete from auth.users where email like ${EMAIL_LIKE}`;
  await sql`delete from public.ai_response_cache where model = ${MODEL}`;
  await sql`delete from public.plans where id = ${PLAN}`;
}

async function loadRuns(sql: postgres.Sql): Promise<LoadRuns> {
  const apiKey = `sk-bench-${crypto.randomUUID()}`;
  const openai = startOpenAiServer(apiKey);
  const heap = new HeapWatch();
  const rss = new Peaks();
  const scripts: string[] = [];
  let gateway: GatewayProcess | undefined;
  try {
    // Users left by an interrupted run would carry profiles cached with another plan.
    await cleanUp(sql);
    const { ids, tokens } = await benchUsers(sql, PLAN, USERS, emailOf);
    const v8Flags = [Deno.env.get("DENO_V8_FLAGS"), "--trace-gc"].filter(Boolean).join(" ");
    gateway = await gatewayProcess(
      functionEnv({
        OPENAI_BASE_URL: `${openai.url}/v1`,
        OPENAI_API_KEY: apiKey,
        OPENAI_MODEL: MODEL,
        // Its Redis entries are not found by model to be removed, so they go by themselves.
        AI_CACHE_TTL_SECONDS: "600",
        DENO_V8_FLAGS: v8Flags,
      }),
      (line) => heap.read(line),
    );
    const profileUrl = `${gateway.url}/functions/v1/profile`;
    const analyzeUrl = `${gateway.url}/functions/v1/analyze`;
    const uploadsUrl = `${gateway.url}/functions/v1/uploads`;
    const grantBody = JSON.stringify({
      bucket: "user-uploads",
      content_type: "image/jpeg",
      size_bytes: 1,
      purpose: "bench",
    });
    const analyzeBody = JSON.stringify({
      analysis_type: "clarity",
      input: { kind: "text", text: `How clear is this benchmark text? ${UNIQUE}` },
    });
    scripts.push(await rotatingTokensScript(tokens, "GET"));
    scripts.push(await uniqueBodiesScript(tokens, "POST", analyzeBody));
    scripts.push(await uniqueBodiesScript(tokens, "POST", grantBody));

    // Warm every user's profile cache and both function processes (analyze's OpenAI SDK too).
    for (const [n, token] of tokens.entries()) {
      const headers = { authorization: `Bearer ${token}` };
      await (await fetch(profileUrl, { headers })).body?.cancel();
      if (n % 20 !== 0) continue;
      const granted = await fetch(uploadsUrl, { method: "POST", headers, body: grantBody });
      if (granted.status !== 201) {
        throw new Error(`uploads answered ${granted.status} while warming up`);
      }
      await granted.body?.cancel();
      const body = analyzeBody.replace(UNIQUE, `warm-${crypto.randomUUID()}`);
      const response = await fetch(analyzeUrl, { method: "POST", headers, body });
      if (!response.ok) throw new Error(`analyze answered ${response.status} while warming up`);
      await response.body?.cancel();
    }

    const profile = await keepingPeakRss(
      gateway.pid,
      rss,
      () => load(profileUrl, { connections: CONNECTIONS, seconds: SECONDS, script: scripts[0] }),
    );
    const grant = await keepingPeakRss(
      gateway.pid,
      rss,
      () => load(uploadsUrl, { connections: CONNECTIONS, seconds: SECONDS, script: scripts[2] }),
    );
    const callsBefore = openai.calls;
    const [{ before }] = await sql<{ before: number }[]>`
      select count(*)::int as before from public.analyses where user_id = any(${ids})`;
    const analyze = await keepingPeakRss(
      gateway.pid,
      rss,
      () => load(analyzeUrl, { connections: CONNECTIONS, seconds: SECONDS, script: scripts[1] }),
    );
    const [{ stored, fromCache }] = await sql<{ stored: number; fromCache: number }[]>`
      select count(*)::int as stored, (count(*) filter (where cached))::int as "fromCache"
        from public.analyses where user_id = any(${ids})`;
    return {
      profile,
      analyze,
      grant,
      rss,
      heap,
      modelCallsPerRequest: (openai.calls - callsBefore) / analyze.requests,
      analysesFromCache: fromCache,
      analysesStored: stored - before,
    };
  } finally {
    await gateway?.close();
    await openai.close();
    for (const script of scripts) await Deno.remove(script).catch(() => {});
    await cleanUp(sql);
  }
}

// ---- Report ----------------------------------------------------------------------------------

function loadSection(runs: LoadRuns): string[] {
  return [
    "### Load: a cached `profile` GET, an upload grant and a metered `analyze`",
    "",
    `Through a gateway process over supabase/functions; ${USERS} users on a plan whose limits and`,
    "quota never bind, each request carrying the next user's JWT. Every `analyze` body differs",
    "(no request is answered from the AI response cache), so each one takes a unit of usage,",
    "calls the model (the local OpenAI-compatible test server, in the benchmark's process) and",
    "stores the analysis.",
    "",
    "| endpoint | req/s | p50 ms | p99 ms | non-2xx |",
    "| --- | ---: | ---: | ---: | ---: |",
    resultRow("`GET profile` (cached profile)", runs.profile),
    resultRow("`POST uploads` (storage quota reserved, signed upload URL)", runs.grant),
    resultRow("`POST analyze` (metered, one model call)", runs.analyze),
    "",
    "Each grant reserves bytes of the storage quota in one statement and asks the stack's Storage",
    "(local/storage-server.ts, through the stack's gateway) for a signed upload URL.",
    "",
    `\`analyze\`: ${runs.modelCallsPerRequest.toFixed(2)} model calls per request, ` +
    `${runs.analysesStored} analyses stored, ${runs.analysesFromCache} of them from the cache.`,
  ];
}

interface MemoryReport {
  lines: string[];
  /** Highest RSS of a function process, idle or under load. */
  rss: { name: string; mib: number };
  /** Highest V8 heap of a function under load: in use after a full GC, and committed. */
  live: { name: string; mib: number } | null;
  committed: { name: string; mib: number } | null;
}

function highest(entries: [string, number][]): { name: string; mib: number } | null {
  const [name, mib] = entries.sort(([, a], [, b]) => b - a)[0] ?? [];
  return name === undefined ? null : { name, mib };
}

function memorySection(cold: Map<string, ColdStart>, runs: LoadRuns, names: string[]) {
  const fixed = (x: number | undefined) => (x === undefined ? "" : x.toFixed(1));
  const idle = (name: string) => median(cold.get(name)!.rssMb);
  const empty = idle(EMPTY);
  const rssOf = (name: string) => Math.max(idle(name), runs.rss.get(name) ?? 0);
  const rows = [EMPTY, ...names].map((name) =>
    `| ${name === EMPTY ? "empty function" : `\`${name}\``} | ${idle(name).toFixed(1)} | ${
      fixed(runs.rss.get(name))
    } | ${(rssOf(name) - empty).toFixed(1)} | ${fixed(runs.heap.liveAfterFullGc.get(name))} | ${
      fixed(runs.heap.committed.get(name))
    } | ${name === EMPTY ? "" : verdict(rssOf(name) < TARGET_RSS_MB)} |`
  );
  const ofFunctions = (peaks: Map<string, number>) =>
    highest([...peaks].filter(([name]) => names.includes(name)));
  const report: MemoryReport = {
    rss: highest(names.map((name) => [name, rssOf(name)]))!,
    live: ofFunctions(runs.heap.liveAfterFullGc),
    committed: ofFunctions(runs.heap.committed),
    lines: [
      "### Resident memory",
      "",
      "RSS (VmRSS from /proc) of each function process with its handler loaded (after the",
      "preflight and a GET with the anon key, which loads it; median over the cold starts",
      `below) and, for \`profile\` and \`analyze\`, its peak during the ${CONNECTIONS}-`,
      `connection runs above (sampled every ${RSS_SAMPLE_MS} ms); the V8 heap of the processes`,
      "under load, from `--trace-gc`: the most in use right after a full collection (what the",
      "isolate holds) and the most committed. A function process is a whole Deno runtime, so its",
      "RSS includes what the empty function's shows, and a plain Deno process lets its heap grow",
      "with the allocation rate; the edge runtime caps each isolate instead, and its",
      `${SUPABASE_LIMIT_MB} MB limit is on the isolate.`,
      "",
      `| process | RSS MiB with the handler loaded | peak RSS MiB under load | RSS MiB above empty | V8 heap MiB in use after full GC | V8 heap MiB committed | RSS < ${TARGET_RSS_MB} MiB |`,
      "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
      `| gateway (local/gateway.ts, proxying) | | ${fixed(runs.rss.get("gateway"))} | | ${
        fixed(runs.heap.liveAfterFullGc.get("gateway"))
      } | ${fixed(runs.heap.committed.get("gateway"))} | |`,
      ...rows,
    ],
  };
  return report;
}

function coldSection(
  cold: Map<string, ColdStart>,
  costs: Map<string, number>,
  names: string[],
): {
  lines: string[];
  met: number;
  worst: { name: string; ratio: number };
  floorRatio: number;
} {
  const empty = median(cold.get(EMPTY)!.ms);
  const floor = median(cold.get(FLOOR)!.ms);
  let met = 0;
  let worst = { name: "", ratio: 0 };
  const rows = [EMPTY, FLOOR, ...names].map((name) => {
    const { ms: xs, status } = cold.get(name)!;
    const ratio = median(xs) / empty;
    if (!FIXTURES.has(name)) {
      if (ratio <= TARGET_COLD_RATIO) met++;
      if (ratio > worst.ratio) worst = { name, ratio };
    }
    return `| ${label(name)} | ${ms(median(xs))} | ${ms(Math.min(...xs))}–${
      ms(Math.max(...xs))
    } | ${status} | ${ratio.toFixed(2)}× | ${(median(xs) / floor).toFixed(2)}× | ${
      FIXTURES.has(name) ? "" : verdict(ratio <= TARGET_COLD_RATIO)
    } |`;
  });
  return {
    met,
    worst,
    floorRatio: floor / empty,
    lines: [
      "### Cold start",
      "",
      "From the request that starts a fresh function process (through a gateway of its own, so",
      "nothing is warm but Deno's caches on disk) to the end of its first response: a CORS",
      "preflight, which the function answers through the pipeline's configuration and CORS",
      `without any database or Redis round trip. Median of ${COLD_SAMPLES}, round by round. The`,
      "floor beside the empty function boots with the npm packages every function needs on its",
      "first cached GET (jose, @upstash/redis, @upstash/ratelimit, zod) and nothing of ours.",
      "",
      `| function | median ms | range ms | status | × empty | × floor | <= ${TARGET_COLD_RATIO}× empty |`,
      "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
      ...rows,
      "",
      "What importing each npm package alone adds to a fresh `deno run` (median of",
      `${IMPORT_SAMPLES}, less a run importing nothing): every function loads the pipeline's`,
      "four when it boots; `postgres` on the first statement (a cached GET makes none), `openai`",
      "and `stripe` on first use by the functions that call them, never at boot.",
      "",
      "| import | ms added to a fresh process |",
      "| --- | ---: |",
      ...[...costs].map(([label, cost]) =>
        `| ${label.startsWith("all") ? label : `\`${label}\``} | ${ms(cost)} |`
      ),
    ],
  };
}

function graphSection(
  graphs: Map<string, ModuleGraph>,
  names: string[],
): { lines: string[]; asExpected: string[] } {
  const asExpected: string[] = [];
  const rows = [EMPTY, ...names].map((name) => {
    const graph = graphs.get(name)!;
    const { boot, handler, full } = graph;
    const lazy = packagesOnFirstUse(graph);
    const expected = EXPECTED_PACKAGES[name];
    const ok = name === EMPTY ? full.packages.length === 0 : !!expected &&
      boot.packages.length === 0 &&
      handler.packages.join() === [...expected.withHandler].sort().join() &&
      lazy.join() === [...expected.onFirstUse].sort().join();
    if (ok && name !== EMPTY) asExpected.push(name);
    const size = (part: GraphPart) => mb(part.localBytes + part.npmBytes);
    return `| ${
      name === EMPTY ? "empty function" : `\`${name}\``
    } | ${boot.localModules} + ${boot.allPackages.length} | ${
      size(boot)
    } | ${handler.localModules} + ${handler.allPackages.length} | ${size(handler)} (${
      (handler.localBytes / 1024).toFixed(1)
    } KiB local) | ${size(full)} | ${handler.packages.join(", ") || "none"} | ${
      lazy.join(", ") || "none"
    } | ${name === EMPTY ? "" : verdict(ok)} |`;
  });
  return {
    asExpected,
    lines: [
      "### Module graphs",
      "",
      "From `deno info --json` of each `index.ts`: modules as local files + npm packages (with the",
      "packages those depend on), and their size, npm packages counted as `deno info` counts them",
      '(the package folder, on disk). "At boot" follows static imports only (what a preflight',
      'loads); "with the handler" adds the handler module `serve` imports on the first other',
      "request; the full graph adds what dynamic `import()`s of npm packages load on first use.",
      "The npm packages are checked against the list each function is expected to import",
      "(bench/module-graph.ts, also asserted by tests/module_graph_test.ts).",
      "",
      "| function | modules at boot | MiB at boot | modules with the handler | MiB with the handler | MiB in all | npm packages with the handler | on first use | only what it uses |",
      "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |",
      ...rows,
    ],
  };
}

export async function functionsBench(): Promise<string> {
  const names = await functionNames();
  const cold = await coldStarts(names);
  const costs = await importCosts([
    ...EXPECTED_PACKAGES.health.withHandler,
    "postgres",
    "openai",
    "stripe",
  ]);
  const graphs = new Map<string, ModuleGraph>();
  graphs.set(EMPTY, await moduleGraph(`${FIXTURES_DIR}functions/${EMPTY}/index.ts`));
  for (const name of names) graphs.set(name, await moduleGraph(`${FUNCTIONS_DIR}${name}/index.ts`));

  const sql = postgres(Deno.env.get("SUPABASE_DB_URL") ?? LOCAL_DB_URL, {
    max: 2,
    onnotice: () => {},
  });
  let coldGets: Map<string, ColdStart>;
  let runs: LoadRuns;
  try {
    coldGets = await coldCachedGets(sql);
    runs = await loadRuns(sql);
  } finally {
    await sql.end();
  }
  const coldGet = median(coldGets.get(COLD_GET)!.ms);
  const coldGetEmpty = median(coldGets.get(EMPTY)!.ms);
  const coldGetFloor = median(coldGets.get(FLOOR)!.ms);
  const coldGetRatio = coldGet / coldGetEmpty;

  const coldReport = coldSection(cold, costs, names);
  const memory = memorySection(cold, runs, names);
  const graph = graphSection(graphs, names);
  return [
    "## Functions: load, memory, cold start and module graphs",
    "",
    ...loadSection(runs),
    "",
    ...memory.lines,
    "",
    ...coldReport.lines,
    "",
    "### Cold start on the cached-GET path",
    "",
    `The same, but the first request is an authenticated \`GET ${COLD_GET}\` of a user whose`,
    "profile is in the Redis cache: the token check (with the JWKS fetched once, as a fresh",
    "isolate does), the profile cache and the rate limit in one Upstash round trip, the handler;",
    "against the empty function answering the same GET, and the floor doing that work with the",
    `same npm packages and none of our code. Median of ${COLD_SAMPLES}, round by round.`,
    "",
    "| function | median ms | range ms | status | × empty | × floor |",
    "| --- | ---: | ---: | ---: | ---: | ---: |",
    ...[EMPTY, FLOOR, COLD_GET].map((name) => {
      const { ms: xs, status } = coldGets.get(name)!;
      return `| ${name === COLD_GET ? `\`GET ${name}\`` : label(name)} | ${ms(median(xs))} | ${
        ms(Math.min(...xs))
      }–${ms(Math.max(...xs))} | ${status} | ${(median(xs) / coldGetEmpty).toFixed(2)}× | ${
        (median(xs) / coldGetFloor).toFixed(2)
      }× |`;
    }),
    "",
    ...graph.lines,
    "",
    "### Targets",
    "",
    "| target | measured | verdict |",
    "| --- | --- | --- |",
    `| each function's cold CORS preflight <= ${TARGET_COLD_RATIO}× the empty function's | ${coldReport.met} of ${names.length} (slowest: \`${coldReport.worst.name}\`, ${
      coldReport.worst.ratio.toFixed(2)
    }×; the npm packages' floor alone: ${coldReport.floorRatio.toFixed(2)}×) | ${
      verdict(coldReport.met === names.length)
    } |`,
    `| first response of a fresh process on the cached-GET path <= ${TARGET_COLD_GET_RATIO}× the empty function's | \`GET ${COLD_GET}\` ${
      ms(coldGet)
    } ms, ${coldGetRatio.toFixed(2)}× (the npm packages' floor alone: ${
      (coldGetFloor / coldGetEmpty).toFixed(2)
    }×) | ${verdict(coldGetRatio <= TARGET_COLD_GET_RATIO)} |`,
    `| no function imports a module it does not use | ${graph.asExpected.length} of ${names.length} import exactly their expected npm packages | ${
      verdict(graph.asExpected.length === names.length)
    } |`,
    `| function isolate well under Supabase's ${SUPABASE_LIMIT_MB} MB, aiming < ${TARGET_RSS_MB} MiB (V8 heap in use after a full GC, under load) | ${
      describe(memory.live, "no full GC seen")
    } | ${memory.live ? verdict(memory.live.mib < TARGET_RSS_MB) : "not measured"} |`,
    `| function isolate under Supabase's ${SUPABASE_LIMIT_MB} MB even with its heap uncapped (V8 heap committed, under load) | ${
      describe(memory.committed)
    } | ${memory.committed ? verdict(memory.committed.mib < SUPABASE_LIMIT_MB) : "not measured"} |`,
    `| function process < ${TARGET_RSS_MB} MiB (RSS of the whole Deno process) | ${
      describe(memory.rss)
    } | ${verdict(memory.rss.mib < TARGET_RSS_MB)} |`,
  ].join("\n");
}

if (import.meta.main) console.log(await functionsBench());
